//! `chunkfs rm LAYOUT:TAG`: untag an image.

use std::path::Path;

use chunkfs_distribution::oci::gc;

use super::image_ref::{ImageRef, Role};
use crate::Error;

/// Arguments of `chunkfs rm`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Example:\n",
    "  chunkfs rm layout:v1 && chunkfs gc layout\n\n",
    "Removes the tag from index.json; its blobs stay until `chunkfs gc` (blobs other tags use\n",
    "always stay).\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// LAYOUT:TAG (or oci:LAYOUT:TAG).
    pub reference: String,
}

/// Runs `chunkfs rm`.
pub fn run(args: &Args) -> Result<(), Error> {
    let ImageRef::Layout {
        dir,
        tag: Some(tag),
    } = ImageRef::resolve(Path::new(&args.reference), Role::Source)
    else {
        return Err(Error::usage(format!(
            "{}: expected LAYOUT:TAG",
            args.reference
        )));
    };
    let n = gc::remove_tag(&dir, &tag)?;
    println!(
        "{}: removed tag {tag} ({n} index entries); `chunkfs gc {}` frees its blobs",
        dir.display(),
        dir.display()
    );
    Ok(())
}
