//! Mounting the root image read-only, and the optional tmpfs overlay over it.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use super::cmdline::Cmdline;
use super::console;
use super::source::Image;

/// Where the read-only image is mounted when an overlay goes on top of it.
pub const LOWER: &str = "/run/chunkfs/lower";
/// The tmpfs that holds the overlay's upper and work directories.
pub const OVERLAY_RW: &str = "/run/chunkfs/rw";

/// The errors of [`mount_root`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// mount(2) failed.
    #[error("cannot mount {what} on {target}: {errno}{hint}")]
    Mount {
        /// What was being mounted.
        what: String,
        /// The mount point.
        target: PathBuf,
        /// The kernel's answer.
        errno: nix::errno::Errno,
        /// What usually causes it.
        hint: &'static str,
    },
    /// A mount point could not be made.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Mounting chunkfs images waits for the mount library.
    #[error("{0}: mounting a chunkfs image is not available in this build yet")]
    Unsupported(PathBuf),
}

/// Mounts `image` read-only so that the new root ends up at `new_root`: directly, or as the
/// lower layer of a tmpfs overlay with `chunkfs.overlay=tmpfs`.
pub fn mount_root(image: &Image, cmdline: &Cmdline, new_root: &Path) -> Result<(), Error> {
    let image_target = if cmdline.overlay {
        Path::new(LOWER)
    } else {
        new_root
    };
    mkdir(image_target)?;
    match cmdline.fstype.kernel_name() {
        Some(fstype) => mount_plain(image, fstype, image_target)?,
        None => return Err(Error::Unsupported(image.path.clone())),
    }
    console::debug(format_args!(
        "{} mounted on {}",
        image.path.display(),
        image_target.display()
    ));
    if cmdline.overlay {
        mount_overlay(image_target, new_root)?;
    }
    Ok(())
}

fn mount_plain(image: &Image, fstype: &str, target: &Path) -> Result<(), Error> {
    let hint = match (fstype, image.is_block) {
        ("squashfs", false) => " (squashfs needs a block device)",
        ("erofs", false) => {
            " (a file-backed EROFS mount needs Linux 6.12+ and the file not on tmpfs)"
        }
        _ => " (is the filesystem's module in the initramfs?)",
    };
    mount(
        Some(&image.path),
        target,
        Some(fstype),
        MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|errno| Error::Mount {
        what: format!("{} ({fstype})", image.path.display()),
        target: target.to_owned(),
        errno,
        hint,
    })
}

fn mount_overlay(lower: &Path, new_root: &Path) -> Result<(), Error> {
    let rw = Path::new(OVERLAY_RW);
    mkdir(rw)?;
    mount(
        Some("tmpfs"),
        rw,
        Some("tmpfs"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
    .map_err(|errno| Error::Mount {
        what: "tmpfs".into(),
        target: rw.to_owned(),
        errno,
        hint: "",
    })?;
    let upper = rw.join("upper");
    let work = rw.join("work");
    mkdir(&upper)?;
    mkdir(&work)?;
    mkdir(new_root)?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        new_root,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|errno| Error::Mount {
        what: "overlay".into(),
        target: new_root.to_owned(),
        errno,
        hint: " (is overlay.ko in the initramfs?)",
    })
}

fn mkdir(path: &Path) -> Result<(), Error> {
    fs::create_dir_all(path).map_err(|source| Error::Dir {
        path: path.to_owned(),
        source,
    })
}
