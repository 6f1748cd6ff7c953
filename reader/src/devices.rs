//! The device files, memory-mapped read-only. With `inflate`, the only module with `unsafe`.
//!
//! Mapping is sound as long as nobody truncates or rewrites an image while it is served: images
//! are immutable blobs (named by their digest). A file shortened underneath would make reads of
//! the lost pages fault (SIGBUS); every read is still bounds-checked against the length mapped.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use crate::device::{Device, DeviceError, slice};
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

/// A mapped file as a device: reads borrow the mapping.
pub(crate) struct MappedDevice {
    pub(crate) map: Map,
    pub(crate) path: std::path::PathBuf,
}

impl Device for MappedDevice {
    fn len(&self) -> u64 {
        self.map.as_ref().len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<std::borrow::Cow<'_, [u8]>, DeviceError> {
        slice(self.map.as_ref(), offset, len)
            .map(std::borrow::Cow::Borrowed)
            .ok_or_else(|| {
                DeviceError(format!(
                    "{}: range {offset}+{len} is past its end",
                    self.path.display()
                ))
            })
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// Maps `path` read-only.
pub(crate) fn map(path: &Path) -> Result<Map, OpenError> {
    let io = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = size_of(&file).map_err(io)?;
    if len == 0 {
        return Ok(Map::Empty);
    }
    let len = usize::try_from(len)
        .map_err(|_| io(std::io::Error::other("larger than the address space")))?;
    // SAFETY: the file is opened read-only and mapped private and read-only; images are never
    // modified while served (see the module comment), and all accesses are bounds-checked.
    let m = unsafe { MmapOptions::new().len(len).map(&file) }.map_err(io)?;
    // Chunks are read whole and mostly once; let the kernel read ahead.
    let _ = m.advise(memmap2::Advice::WillNeed);
    Ok(Map::Mapped(m))
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// Size in bytes of a regular file or of a block device (a `.cfs` written raw onto a
/// partition), whose `st_size` is 0.
fn size_of(file: &File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    if !meta.file_type().is_block_device() {
        return Ok(meta.len());
    }
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(std::io::Error::from)?;
    Ok(size)
}
