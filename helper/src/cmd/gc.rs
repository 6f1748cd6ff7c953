//! `chunkfs gc LAYOUT [--dry-run]`: remove the blobs no tag reaches.

use std::path::PathBuf;

use chunkfs_distribution::oci::gc;
use indicatif::HumanBytes;

use super::image_ref::{ImageRef, Role};
use crate::Error;

/// Arguments of `chunkfs gc`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs rm layout:old && chunkfs gc layout\n",
    "  chunkfs gc --dry-run layout\n\n",
    "Follows every manifest and index that index.json reaches (whatever tool wrote them) and\n",
    "removes every other blob and chunkfs's leftover temporary files. A blob still reachable is\n",
    "never removed; if a manifest cannot be read, nothing is removed. Holds the layout's lock:\n",
    "safe against concurrent chunkfs writers, but do not run it while another tool (skopeo,\n",
    "umoci) writes into the same layout.\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// List what would be removed; remove nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// Runs `chunkfs gc`.
pub fn run(args: &Args) -> Result<(), Error> {
    let dir = match ImageRef::resolve(&args.layout, Role::Source) {
        ImageRef::Layout { dir, tag: None } => dir,
        ImageRef::Layout { tag: Some(_), .. } => {
            return Err(Error::usage(
                "gc takes a layout directory, not a tag (use chunkfs rm LAYOUT:TAG to untag)",
            ));
        }
        // gc's own error says that it is not a layout.
        ImageRef::Cfs(_) | ImageRef::Dir(_) => args.layout.clone(),
    };
    let report = gc::gc(&dir, args.dry_run)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    if args.dry_run {
        for (digest, len) in &report.removed {
            println!("{verb} {digest} ({})", HumanBytes(*len));
        }
    }
    println!(
        "{}: {verb} {} blobs and {} temporary files, {} freed; {} blobs ({}) kept",
        dir.display(),
        report.removed.len(),
        report.temp_files,
        HumanBytes(report.freed_bytes),
        report.kept,
        HumanBytes(report.kept_bytes)
    );
    Ok(())
}
