//! The device files, memory-mapped read-only. The only module with `unsafe`.
//!
//! Mapping is sound as long as nobody truncates or rewrites an image while it is served: images
//! are immutable blobs (named by their digest). A file shortened underneath would make reads of
//! the lost pages fault (SIGBUS); every read is still bounds-checked against the length mapped.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::OpenError;

/// One mapped file (empty files cannot be mapped).
#[derive(Debug)]
pub(crate) enum Map {
    Mapped(Mmap),
    Empty,
}

impl AsRef<[u8]> for Map {
    fn as_ref(&self) -> &[u8] {
        match self {
            Map::Mapped(m) => m,
            Map::Empty => &[],
        }
    }
}

/// Maps `path` read-only.
pub(crate) fn map(path: &Path) -> Result<Map, OpenError> {
    let io = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return Ok(Map::Empty);
    }
    // SAFETY: the file is opened read-only and mapped private and read-only; images are never
    // modified while served (see the module comment), and all accesses are bounds-checked.
    let m = unsafe { Mmap::map(&file) }.map_err(io)?;
    // Chunks are read whole and mostly once; let the kernel read ahead.
    let _ = m.advise(memmap2::Advice::WillNeed);
    Ok(Map::Mapped(m))
}
