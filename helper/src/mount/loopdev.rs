//! Read-only, self-detaching loop devices for the kernel path (docs/mount.chunkfs.8.md, "Loop
//! devices"). A device is configured with `LO_FLAGS_AUTOCLEAR`, so it detaches itself when its
//! last user closes it: the mount, once made, holds it; if the mount fails, dropping the
//! [`LoopDevice`] closes the last descriptor and the device goes away. No path can leak one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::sys;

/// Attempts at finding a free device: another process may take the one the kernel offered.
const ATTEMPTS: usize = 32;

/// A configured loop device, open until dropped.
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    _dev: File,
}

impl LoopDevice {
    /// Binds `backing` (opened read-only; `name` is recorded as its file name) to a free loop
    /// device.
    pub fn attach(backing: &File, name: &Path) -> io::Result<Self> {
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/loop-control")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/loop-control: {e}")))?;
        let flags = sys::LO_FLAGS_READ_ONLY | sys::LO_FLAGS_AUTOCLEAR;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let n = sys::loop_get_free(control.as_fd())
                .map_err(|e| io::Error::new(e.kind(), format!("LOOP_CTL_GET_FREE: {e}")))?;
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(dev) => dev,
                // The node may not exist yet (no devtmpfs) or was just taken and removed.
                Err(e) => {
                    last = Some(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
                    continue;
                }
            };
            match sys::loop_configure(
                dev.as_fd(),
                backing.as_fd(),
                flags,
                name.as_os_str().as_bytes(),
            ) {
                Ok(()) => return Ok(Self { path, _dev: dev }),
                // Taken by someone else between GET_FREE and CONFIGURE: ask again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("LOOP_CONFIGURE {}: {e}", path.display()),
                    ));
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free loop device")))
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
