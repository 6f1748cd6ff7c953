//! `chunkfs verify IMAGE`: check every digest and structure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chunkfs_distribution::oci::verify::{verify_image, verify_layout as verify_whole_layout};
use indicatif::HumanBytes;

use super::image_ref::{ImageRef, Role};
use crate::Error;
use crate::progress::Progress;

/// Arguments of `chunkfs verify`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs verify image.cfs && echo intact\n",
    "  chunkfs verify layout:v1               (a chunkfs image in an OCI layout)\n",
    "  chunkfs verify --oci layout            (every blob and every image of a layout)\n\n",
    "Checks the header and its checksum, the metadata against its digest and the format's\n",
    "invariants, the chunk index against its digest and the metadata, the zero padding, the\n",
    "EROFS descriptor against the one re-derived from the metadata, and decompresses and\n",
    "hashes every chunk. On failure it names the region and the chunk or offset.\n\n",
    "With --oci, IMAGE is an OCI layout directory: every blob reachable from index.json\n",
    "(manifests and indexes followed, whatever tool wrote them) must exist with the size and\n",
    "sha256 its descriptors give; then every tag is checked: a chunkfs image's chunks are\n",
    "decompressed and hashed, a container image's tar layers parsed against their digests and\n",
    "diff_ids. LAYOUT:TAG checks that one image.\n\n",
    "Exit status: 0 ok (intact); 1 corrupt, incomplete or unsupported (a checksum or digest\n",
    "mismatch, a missing blob, a malformed structure: the message names the region, blob or\n",
    "chunk); 2 usage error (bad arguments, an ambiguous or unknown tag); 3 unreadable (the\n",
    "image, or a blob it names, could not be opened or read: missing file, permissions, I/O)."
))]
pub struct Args {
    /// The image (a .cfs, or LAYOUT[:TAG] holding a chunkfs image).
    pub image: PathBuf,
    /// Threads (0: one per CPU).
    #[arg(short, long, default_value_t = 0)]
    pub jobs: usize,
    /// IMAGE is an OCI layout: verify every blob and every tag (or LAYOUT:TAG, one image).
    #[arg(long)]
    pub oci: bool,
}

/// Runs `chunkfs verify`.
pub fn run(args: &Args) -> Result<(), Error> {
    let image = ImageRef::resolve(&args.image, Role::Source);
    if args.oci {
        return verify_layout(args, image);
    }
    match image {
        ImageRef::Layout { dir, tag } => verify_image_in_layout(args, &dir, tag.as_deref()),
        // Anything else is opened as a `.cfs`, whose error says what it is not.
        ImageRef::Cfs(_) | ImageRef::Dir(_) => verify_cfs(args),
    }
}

/// `chunkfs verify IMAGE.cfs`.
fn verify_cfs(args: &Args) -> Result<(), Error> {
    let (done, bar) = progress();
    let report = chunkfs_format::cfs::verify::verify_cfs(&args.image, args.jobs, &done);
    drop(bar);
    let report = report?;
    println!(
        "{}: ok: {} chunks ({}) decompressed and hashed, EROFS descriptor {}, metadata {}",
        args.image.display(),
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
fn verify_image_in_layout(args: &Args, dir: &Path, tag: Option<&str>) -> Result<(), Error> {
    let (done, bar) = progress();
    let result = verify_image(dir, tag, &done);
    drop(bar);
    let r = result?;
    println!(
        "{}: ok: manifest {}, {} pack blobs ({}) hashed, {} chunks ({}) decompressed and hashed, metadata {}",
        args.image.display(),
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
fn verify_layout(args: &Args, image: ImageRef) -> Result<(), Error> {
    let dir = match image {
        ImageRef::Layout {
            dir,
            tag: Some(tag),
        } => {
            return verify_image_in_layout(args, &dir, Some(&tag));
        }
        ImageRef::Layout { dir, tag: None } | ImageRef::Dir(dir) => dir,
        ImageRef::Cfs(f) if !f.exists() => {
            return Err(Error::io(format!(
                "{}: no such layout directory",
                f.display()
            )));
        }
        other @ ImageRef::Cfs(_) => {
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
