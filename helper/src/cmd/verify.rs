//! `chunkfs verify IMAGE`: check every digest and structure.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::HumanBytes;

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
    if args.oci {
        return super::oci_pack::verify_layout(args);
    }
    if let Some(result) = super::oci_pack::verify(args) {
        return result;
    }
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let bar = Progress::start(None, move || (d.load(Ordering::Relaxed), String::new()));
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
