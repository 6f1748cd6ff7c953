//! `chunkfs pull docker://...`: fetch a registry image whole into the local store and pin it,
//! so that it mounts offline (and, on the kernel path, with no daemon).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::HumanBytes;

use super::image_ref::ImageRef;
use super::registry_flags::{RegistryFlags, StoreFlag, parse_platform};
use super::registry_image::{self, Holdings};
use crate::Error;
use crate::progress::Progress;

/// Arguments of `chunkfs pull`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs pull docker://registry.example:5000/os/debian:12\n",
    "  chunkfs pull --store /srv/chunkfs --platform linux/arm64 docker://registry.example/app@sha256:HEX\n",
    "  chunkfs pull --cert-dir ./ca --creds user:secret docker://127.0.0.1:5000/test/app:v1\n",
    "  chunkfs rm docker://registry.example:5000/os/debian:12 && chunkfs gc --store\n\n",
    "Resolves the reference (the running platform's image of a multi-platform one, or\n",
    "--platform's), checks and keeps the manifest, config and metadata in the store, then\n",
    "fetches every chunk frame the image reads that the store does not hold yet: frames other\n",
    "images brought are shared, not fetched again. Every frame is checked against its sha256\n",
    "before it is stored. The image is then pinned: `chunkfs gc --store` keeps it until\n",
    "`chunkfs rm REF`, and it mounts with the registry gone. An interrupted pull leaves a\n",
    "consistent store; pulling again fetches only what is still missing.\n\n",
    "A bar shows progress on a terminal; the summary line (stdout) gives the bytes fetched,\n",
    "the bytes already in the store and the time taken. Credentials and TLS as skopeo finds\n",
    "them (docs/registry.md).\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The image: docker://HOST[:PORT]/REPO[:TAG] or docker://HOST[:PORT]/REPO@sha256:HEX.
    pub reference: String,
    /// For a multi-platform image: the platform to pull, OS/ARCH[/VARIANT] (default: the
    /// host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// The local store (`--store`).
    #[command(flatten)]
    pub store: StoreFlag,
    /// How to reach the registry.
    #[command(flatten, next_help_heading = "Registry")]
    pub registry: RegistryFlags,
}

/// Runs `chunkfs pull`.
pub fn run(args: &Args) -> Result<(), Error> {
    let reference =
        ImageRef::registry(&args.reference, "a registry image, docker://HOST/REPO:TAG")?;
    let platform = parse_platform(args.platform.as_deref())?;
    let started = Instant::now();
    let mut opened =
        registry_image::open(&reference, platform.as_ref(), &args.store, &args.registry)?;
    let plan = opened.plan_for_any_mount()?;
    let held = Holdings::of(&plan);
    let (done, total) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(held.missing)),
    );
    let bar = Progress::for_transfer("pulling", done.clone(), total.clone());
    let pulled = opened.store.pull(&plan, &opened.client, &mut |d, t| {
        done.store(d, Ordering::Relaxed);
        total.store(t, Ordering::Relaxed);
    });
    drop(bar);
    let report = pulled.map_err(|e| Error::from(e).about(&reference))?;
    let net = opened.client.stats();
    println!(
        "{}: pulled and pinned manifest {} (metadata {}): {} fetched ({} of chunk frames, {} requests); {} already in the store ({} shared with other images); {:.1} s",
        reference,
        opened.image.manifest_digest,
        opened.image.metadata_digest,
        HumanBytes(net.bytes),
        HumanBytes(report.fetched_bytes),
        net.requests,
        HumanBytes(held.present()),
        HumanBytes(held.shared),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
