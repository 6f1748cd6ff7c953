//! Read-only mapping of an image file or block device: the one module of the crate with
//! `unsafe` (the mmap and the `BLKGETSIZE64` ioctl).
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;

use memmap2::{Mmap, MmapOptions};

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// Size in bytes of a regular file or block device.
pub fn size_of(file: &File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        let mut size = 0u64;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`.
        unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(std::io::Error::from)?;
        Ok(size)
    } else {
        Ok(meta.len())
    }
}

/// Maps the first `len` bytes of `file` read-only. `len` must not exceed [`size_of`]`(file)`.
///
/// The mapping is shared: if another process truncates the file while it is mapped, reading
/// the lost pages raises SIGBUS. chunkfs never writes to an image after renaming it into
/// place, and images are read-only inputs.
pub fn map(file: &File, len: u64) -> std::io::Result<Mmap> {
    let len = usize::try_from(len)
        .map_err(|_| std::io::Error::other("image larger than the address space"))?;
    // SAFETY: the mapping is read-only; the caller checked `len` against the file's size, and
    // the file is not modified by this process while mapped (see above for other processes).
    unsafe { MmapOptions::new().len(len).map(file) }
}
