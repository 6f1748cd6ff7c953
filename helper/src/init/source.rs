//! Finding the root image named by `chunkfs.root`: a block device, a file on a partition
//! (mounted read-only here), or the image embedded in the initramfs.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MsFlags, mount};
use nix::sys::statfs::{TMPFS_MAGIC, statfs};

use super::cmdline::RootSpec;
use super::{console, device};
use crate::initramfs::EMBEDDED_IMAGE;

/// Where a partition holding the image file is mounted.
pub const PARTITION_MOUNT: &str = "/run/chunkfs/part";
/// Where an embedded image is kept once out of the initramfs (a ramfs: see [`embedded`]).
pub const EMBEDDED_MOUNT: &str = "/run/chunkfs/embedded";

/// The root image, ready to be verified and mounted.
#[derive(Debug, Clone)]
pub struct Image {
    /// A block device or a regular file.
    pub path: PathBuf,
    /// Whether `path` is a block device.
    pub is_block: bool,
    /// Its size in bytes (for a block device: the device's size, which may exceed the image).
    pub len: u64,
}

/// The errors of [`locate`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No root was named and none is embedded.
    #[error("no chunkfs.root= on the kernel command line and no image embedded in the initramfs")]
    NoRoot,
    /// The device never appeared.
    #[error(transparent)]
    Timeout(#[from] device::Timeout),
    /// No filesystem the kernel knows could mount the partition.
    #[error("cannot mount {device} read-only with any of the kernel's filesystems ({tried})")]
    Partition {
        /// The partition.
        device: PathBuf,
        /// The types tried, with their errors.
        tried: String,
    },
    /// A file or device could not be opened, read or set up.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The named image is not a regular file or block device.
    #[error("{0} is neither a regular file nor a block device")]
    NotAnImage(PathBuf),
}

/// Resolves `spec` (or the embedded image when `spec` is `None`) to an [`Image`].
pub fn locate(spec: Option<&RootSpec>, timeout: Duration) -> Result<Image, Error> {
    let embedded_path = Path::new("/").join(EMBEDDED_IMAGE);
    match spec {
        Some(RootSpec::Device(dev)) => {
            device::wait_for_block(dev, timeout)?;
            open(dev)
        }
        Some(RootSpec::FileOnDevice { device: dev, path }) => {
            device::wait_for_block(dev, timeout)?;
            mount_partition(dev, Path::new(PARTITION_MOUNT))?;
            let relative = path.strip_prefix("/").unwrap_or(path);
            open(&Path::new(PARTITION_MOUNT).join(relative))
        }
        Some(RootSpec::Embedded) => embedded(&embedded_path),
        None if embedded_path.exists() => embedded(&embedded_path),
        None => Err(Error::NoRoot),
    }
}

fn open(path: &Path) -> Result<Image, Error> {
    let io_err = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let file_type = file.metadata().map_err(io_err)?.file_type();
    if !file_type.is_file() && !file_type.is_block_device() {
        return Err(Error::NotAnImage(path.to_owned()));
    }
    // SEEK_END gives a block device's size too, without an ioctl.
    let len = file.seek(SeekFrom::End(0)).map_err(io_err)?;
    Ok(Image {
        path: path.to_owned(),
        is_block: file_type.is_block_device(),
        len,
    })
}

/// Mounts `device` read-only on `target`, trying each block-device filesystem the kernel has
/// (`/proc/filesystems` lines without `nodev`), as mount(8) does without `-t`.
fn mount_partition(device: &Path, target: &Path) -> Result<(), Error> {
    fs::create_dir_all(target).map_err(|source| Error::Io {
        path: target.to_owned(),
        source,
    })?;
    let types = fs::read_to_string("/proc/filesystems").map_err(|source| Error::Io {
        path: "/proc/filesystems".into(),
        source,
    })?;
    let mut tried = Vec::new();
    for fstype in types
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(str::trim)
    {
        // fuseblk needs a daemon; it is never what a boot partition is.
        if fstype.is_empty() || fstype == "fuseblk" {
            continue;
        }
        match mount(
            Some(device),
            target,
            Some(fstype),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            None::<&str>,
        ) {
            Ok(()) => {
                console::debug(format_args!(
                    "mounted {} as {fstype} on {}",
                    device.display(),
                    target.display()
                ));
                return Ok(());
            }
            Err(errno) => tried.push(format!("{fstype}: {}", errno.desc())),
        }
    }
    let tried = if tried.is_empty() {
        "none available".to_owned()
    } else {
        tried.join(", ")
    };
    Err(Error::Partition {
        device: device.to_owned(),
        tried,
    })
}

/// The embedded image. The initramfs is unpacked into a tmpfs when the kernel can (no `root=`
/// on its command line), and file-backed EROFS mounts refuse files on tmpfs, so the image is
/// copied into a ramfs under /run, where it also stays visible after the switch of root (the
/// initramfs's own files are deleted then). The copy in the initramfs is removed at once to
/// give its memory back.
fn embedded(path: &Path) -> Result<Image, Error> {
    let on_tmpfs = statfs("/").is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC);
    if !on_tmpfs {
        return open(path);
    }
    let dir = Path::new(EMBEDDED_MOUNT);
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    mount(
        Some("ramfs"),
        dir,
        Some("ramfs"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some("mode=0700"),
    )
    .map_err(|errno| Error::Io {
        path: dir.to_owned(),
        source: errno.into(),
    })?;
    let copy = dir.join("root.cfs");
    fs::copy(path, &copy).map_err(io_err(&copy))?;
    fs::remove_file(path).map_err(io_err(path))?;
    console::debug(format_args!(
        "embedded image moved to ramfs at {}",
        copy.display()
    ));
    open(&copy)
}
