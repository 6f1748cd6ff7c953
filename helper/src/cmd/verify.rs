//! `chunkfs verify IMAGE`: check every digest and structure of a `.cfs`, an image in an OCI
//! layout or a registry; `chunkfs verify --store[=DIR]`: check the local store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chunkfs_distribution::oci::verify::{verify_image, verify_layout as verify_whole_layout};
use chunkfs_distribution::registry;
use chunkfs_distribution::store::Store;
use chunkfs_format::ErrorClass;
use indicatif::HumanBytes;

use super::image_ref::{ImageRef, Role};
use super::registry_flags::{RegistryFlags, StoreFlag, parse_platform};
use super::verify_remote;
use crate::Error;
use crate::progress::Progress;

/// Arguments of `chunkfs verify`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs verify image.cfs && echo intact\n",
    "  chunkfs verify layout:v1               (a chunkfs image in an OCI layout)\n",
    "  chunkfs verify --oci layout            (every blob and every image of a layout)\n",
    "  chunkfs verify docker://registry.example:5000/os/debian:12\n",
    "  chunkfs verify --store                 (the local store of registry images)\n\n",
    "Checks the header and its checksum, the metadata against its digest and the format's\n",
    "invariants, the chunk index against its digest and the metadata, the zero padding, the\n",
    "EROFS descriptor against the one re-derived from the metadata, and decompresses and\n",
    "hashes every chunk. On failure it names the region and the chunk or offset.\n\n",
    "With --oci, IMAGE is an OCI layout directory: every blob reachable from index.json\n",
    "(manifests and indexes followed, whatever tool wrote them) must exist with the size and\n",
    "sha256 its descriptors give; then every tag is checked: a chunkfs image's chunks are\n",
    "decompressed and hashed, a container image's tar layers parsed against their digests and\n",
    "diff_ids. LAYOUT:TAG checks that one image.\n\n",
    "docker://HOST/REPO[:TAG|@sha256:HEX] checks the image where it is, not the store's copy:\n",
    "it fetches the manifest, the config and the metadata blob whole (each checked against\n",
    "its digest, the metadata against the format's invariants), each pack's index from the\n",
    "pack's end, and then every chunk's frame by range requests (adjacent frames together, at\n",
    "most 4 MiB per request, --jobs in flight): about the image's stored size in all. Each\n",
    "frame is decompressed and hashed against its chunk's sha256. Nothing is written.\n\n",
    "--store[=DIR] checks the local store (default /var/lib/chunkfs): every blob against its\n",
    "digest, every pack's state header, index and length, every frame marked present\n",
    "(decompressed and hashed), and that every pin, mount record and ref reads. Each problem\n",
    "is printed naming its file (stdout); the exit status is 1 if there is any.\n\n",
    "Exit status: 0 ok (intact); 1 corrupt, incomplete or unsupported (a checksum or digest\n",
    "mismatch, a missing blob, a malformed structure: the message names the region, blob or\n",
    "chunk); 2 usage error (bad arguments, an ambiguous or unknown tag); 3 unreadable (the\n",
    "image, or a blob it names, could not be opened or read: missing file, permissions, I/O);\n",
    "4 a registry could not be reached."
))]
pub struct Args {
    /// The image: a .cfs, LAYOUT[:TAG] holding a chunkfs image, or
    /// docker://HOST/REPO[:TAG|@sha256:HEX] (or --store).
    #[arg(required_unless_present = "store")]
    pub image: Option<PathBuf>,
    /// Threads, or requests in flight for a registry image (0: one per CPU; 4 requests).
    #[arg(short, long, default_value_t = 0)]
    pub jobs: usize,
    /// IMAGE is an OCI layout: verify every blob and every tag (or LAYOUT:TAG, one image).
    #[arg(long)]
    pub oci: bool,
    /// For a multi-platform image in a registry: the platform, OS/ARCH[/VARIANT] (default:
    /// the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// The local store (`--store`).
    #[command(flatten)]
    pub store: StoreFlag,
    /// How to reach the registry.
    #[command(flatten, next_help_heading = "Registry")]
    pub registry: RegistryFlags,
}

/// Runs `chunkfs verify`.
pub fn run(args: &Args) -> Result<(), Error> {
    let path = match (&args.image, args.store.given()) {
        (None, true) if !args.oci => return verify_store(&args.store.open_existing()?),
        (Some(p), false) => p,
        _ => {
            return Err(Error::usage(
                "verify takes IMAGE or --store[=DIR] (the local store), not both (a registry image is checked in the registry, not in the store)",
            ));
        }
    };
    let image = ImageRef::resolve(path, Role::Source)?;
    if args.platform.is_some() && !matches!(image, ImageRef::Docker(_)) {
        return Err(Error::usage("--platform applies to docker:// images"));
    }
    if args.oci {
        return verify_layout(path, image);
    }
    match image {
        ImageRef::Layout { dir, tag } => verify_image_in_layout(path, &dir, tag.as_deref()),
        ImageRef::Docker(r) => verify_registry_image(args, &r),
        // Anything else is opened as a `.cfs`, whose error says what it is not.
        ImageRef::Cfs(_) | ImageRef::Dir(_) => verify_cfs(path, args.jobs),
    }
}

/// `chunkfs verify --store[=DIR]`: every problem on its own line, then the summary.
fn verify_store(store: &Store) -> Result<(), Error> {
    let root = store.root().display();
    let r = store
        .verify()
        .map_err(|e| Error::from(e).about(format!("store {root}")))?;
    for p in &r.problems {
        println!("{p}");
    }
    let checked = format!(
        "{} blobs, {} packs ({} present frames decompressed and hashed), {} records",
        r.blobs, r.packs, r.frames, r.records
    );
    if !r.is_ok() {
        return Err(Error::new(
            ErrorClass::Corrupt,
            format!(
                "store {root}: {} problem(s) (listed on stdout), the first: {}",
                r.problems.len(),
                r.problems[0]
            ),
        ));
    }
    println!("store {root}: ok: {checked}");
    Ok(())
}

/// `chunkfs verify docker://...`.
fn verify_registry_image(args: &Args, r: &registry::ImageRef) -> Result<(), Error> {
    let platform = parse_platform(args.platform.as_deref())?;
    let client = args.registry.client(r)?;
    let (done, total) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let bar = Progress::for_transfer("verifying", done.clone(), total.clone());
    let result = verify_remote::verify(&client, r, platform.as_ref(), args.jobs, &done, &total);
    drop(bar);
    let report = result?;
    let net = client.stats();
    println!(
        "{r}: ok: manifest {}, config and metadata {} checked, {} pack indexes, {} chunks ({}, {} stored) fetched, decompressed and hashed; {} in {} requests",
        report.manifest_digest,
        report.metadata_digest,
        report.packs,
        report.frames,
        HumanBytes(report.chunk_bytes),
        HumanBytes(report.frame_bytes),
        HumanBytes(net.bytes),
        net.requests
    );
    Ok(())
}

/// `chunkfs verify IMAGE.cfs`.
fn verify_cfs(path: &Path, jobs: usize) -> Result<(), Error> {
    let (done, bar) = progress();
    let report = chunkfs_format::cfs::verify::verify_cfs(path, jobs, &done);
    drop(bar);
    let report = report?;
    println!(
        "{}: ok: {} chunks ({}) decompressed and hashed, EROFS descriptor {}, metadata {}",
        path.display(),
        report.chunks,
        HumanBytes(report.chunk_bytes),
        if report.erofs { "matches" } else { "absent" },
        report.metadata_digest
    );
    Ok(())
}

/// A progress bar over a byte counter the verification advances.
fn progress() -> (Arc<AtomicU64>, Option<Progress>) {
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let bar = Progress::start(None, move || (d.load(Ordering::Relaxed), String::new()));
    (done, bar)
}

/// `chunkfs verify LAYOUT[:TAG]`: one chunkfs image in a layout.
fn verify_image_in_layout(path: &Path, dir: &Path, tag: Option<&str>) -> Result<(), Error> {
    let (done, bar) = progress();
    let result = verify_image(dir, tag, &done);
    drop(bar);
    let r = result?;
    println!(
        "{}: ok: manifest {}, {} pack blobs ({}) hashed, {} chunks ({}) decompressed and hashed, metadata {}",
        path.display(),
        r.manifest_digest,
        r.packs,
        HumanBytes(r.pack_bytes),
        r.chunks,
        HumanBytes(r.chunk_bytes),
        r.metadata_digest
    );
    Ok(())
}

/// `chunkfs verify --oci LAYOUT[:TAG]`: the whole layout, or one tag of it.
fn verify_layout(path: &Path, image: ImageRef) -> Result<(), Error> {
    let dir = match image {
        ImageRef::Layout {
            dir,
            tag: Some(tag),
        } => {
            return verify_image_in_layout(path, &dir, Some(&tag));
        }
        ImageRef::Layout { dir, tag: None } | ImageRef::Dir(dir) => dir,
        ImageRef::Cfs(f) if !f.exists() => {
            return Err(Error::io(format!(
                "{}: no such layout directory",
                f.display()
            )));
        }
        other @ (ImageRef::Cfs(_) | ImageRef::Docker(_)) => {
            return Err(other.refuse("an OCI layout directory (or LAYOUT:TAG) with --oci"));
        }
    };
    let (done, bar) = progress();
    let result = verify_whole_layout(&dir, &done);
    drop(bar);
    let r = result?;
    let list = |tags: &[String]| {
        if tags.is_empty() {
            "none".to_owned()
        } else {
            tags.join(", ")
        }
    };
    println!(
        "{}: ok: {} blobs ({}) hashed; chunkfs images: {} ({} chunks decompressed and hashed); container images: {}{}",
        dir.display(),
        r.blobs,
        HumanBytes(r.blob_bytes),
        list(&r.chunkfs_tags),
        r.chunks,
        list(&r.container_tags),
        if r.other_platform_tags.is_empty() {
            String::new()
        } else {
            format!(
                "; blobs only (no image for this platform): {}",
                list(&r.other_platform_tags)
            )
        }
    );
    Ok(())
}
