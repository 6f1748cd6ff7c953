//! `chunkfs unpack IMAGE DIR`: restore an image's tree.

use std::path::PathBuf;

use chunkfs_distribution::oci::read::open_image;
use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::unpack::unpack;

use super::image_ref::{ImageRef, Role};
use crate::Error;

/// Arguments of `chunkfs unpack`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Example:\n",
    "  chunkfs unpack image.cfs ./rootfs\n",
    "  chunkfs unpack layout:v1 ./rootfs      (a chunkfs image in an OCI layout)\n\n",
    "DIR is created if missing and must be empty otherwise. Every chunk is checked against its\n",
    "sha256 before it is written. Nothing is written outside DIR and no symlink of the image is\n",
    "followed. As non-root, owners, device nodes and trusted.*/security.* xattrs are skipped\n",
    "with one warning per kind; the exit status is still 0. If unpacking fails (a corrupt\n",
    "chunk, a full disk), what was created is removed again.\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The image to unpack (a .cfs, or LAYOUT[:TAG] holding a chunkfs image).
    pub image: PathBuf,
    /// The directory to create the tree in.
    pub dir: PathBuf,
}

/// Runs `chunkfs unpack`.
pub fn run(args: &Args) -> Result<(), Error> {
    let report = match ImageRef::resolve(&args.image, Role::Source)? {
        ImageRef::Layout { dir, tag } => {
            let img = open_image(&dir, tag.as_deref())?;
            let mut chunks = img
                .chunks()
                .map_err(|e| Error::from(e).about(dir.display()))?;
            unpack(&img.image, &mut chunks, &args.dir)?
        }
        r @ ImageRef::Docker(_) => {
            return Err(
                r.refuse("a .cfs or LAYOUT[:TAG] (`chunkfs pack docker://... image.cfs` first)")
            );
        }
        // Anything else is opened as a `.cfs`, whose error says what it is not.
        ImageRef::Cfs(_) | ImageRef::Dir(_) => {
            let cfs = Cfs::open(&args.image)?;
            let mut chunks = cfs.chunks()?;
            unpack(cfs.image(), &mut chunks, &args.dir)?
        }
    };
    for (kind, (count, first)) in &report.skipped {
        eprintln!(
            "chunkfs: warning: skipped {kind} for {count} entries (first: {})",
            first.display()
        );
    }
    Ok(())
}
