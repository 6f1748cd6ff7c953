//! Mounting the root image read-only, and the optional tmpfs overlay over it.
//!
//! A chunkfs image is mounted by the same library as `mount.chunkfs` ([`crate::mount`]): the
//! kernel's EROFS when it has what the image needs, else the FUSE reader. The FUSE reader is a
//! daemon, this binary again under `argv[0]` = `@chunkfs-reader`, started from `/proc/self/exe`
//! while the initramfs still exists. It maps the image through descriptors opened before the
//! mount returns and never uses a path again, so it keeps serving after `switch_root` has emptied
//! the initramfs; the `@` tells systemd to leave it running at shutdown.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use super::cmdline::{Cmdline, FsType, ReaderChoice};
use super::source::Image;
use super::{console, verify};
use crate::mount::{self, Control, Log, MountInfo, Options, ReaderUsed};

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
    /// The mount library refused the chunkfs image or could not mount it; its message names
    /// the image and the problem.
    #[error("cannot mount the root image: {0}")]
    Chunkfs(#[from] mount::Error),
}

/// Mounts `image` read-only so that the new root ends up at `new_root`: directly, or as the
/// lower layer of a tmpfs overlay with `chunkfs.overlay=tmpfs`. For a chunkfs image, returns
/// what the mount library did.
pub fn mount_root(
    image: &Image,
    cmdline: &Cmdline,
    new_root: &Path,
) -> Result<Option<MountInfo>, Error> {
    let image_target = if cmdline.overlay {
        Path::new(LOWER)
    } else {
        new_root
    };
    mkdir(image_target)?;
    let info = match cmdline.fstype {
        FsType::Chunkfs => Some(mount_chunkfs(image, cmdline, image_target)?),
        FsType::Erofs => mount_plain(image, "erofs", image_target).map(|()| None)?,
        FsType::Squashfs => mount_plain(image, "squashfs", image_target).map(|()| None)?,
    };
    console::debug(format_args!(
        "{} mounted on {}",
        image.path.display(),
        image_target.display()
    ));
    if cmdline.overlay {
        mount_overlay(image_target, new_root)?;
    }
    Ok(info)
}

/// The mount options the kernel command line asks for.
pub fn chunkfs_options(cmdline: &Cmdline) -> Options {
    Options {
        reader: match cmdline.reader {
            ReaderChoice::Auto => mount::ReaderChoice::Auto,
            ReaderChoice::Kernel => mount::ReaderChoice::Kernel,
            ReaderChoice::Fuse => mount::ReaderChoice::Fuse,
        },
        verify: verify::chunkfs_level(cmdline.verify, cmdline.digest.is_some()),
        digest: cmdline.digest.map(|d| chunkfs_format::digest::Digest(d.0)),
        ..Options::default()
    }
}

fn mount_chunkfs(image: &Image, cmdline: &Cmdline, target: &Path) -> Result<MountInfo, Error> {
    let ctl = Control {
        log: Log::new("chunkfs-init", cmdline.debug),
        ..Control::default()
    };
    let source = image.path.to_string_lossy();
    let info = mount::mount_image_with(&source, target, &chunkfs_options(cmdline), &ctl)?;
    let (checked, chunks) = info.chunks_checked;
    let hashed = info
        .timings
        .iter()
        .find(|(what, _)| what.starts_with("every chunk"))
        .map(|(_, d)| format!(" in {:.2} s", d.as_secs_f64()))
        .unwrap_or_default();
    console::say(format_args!(
        "[{:.3}] metadata sha256:{} checked, {checked} of {chunks} chunks hashed{hashed}",
        console::uptime_secs(),
        info.metadata_digest.to_hex()
    ));
    match &info.reader {
        ReaderUsed::Kernel(k) => {
            let how = match (k.loops.len(), k.file_backed) {
                (0, true) => ", file-backed".to_owned(),
                (0, false) => String::new(),
                (n, _) => format!(", on {n} loop device(s)"),
            };
            console::say(format_args!(
                "root served by the kernel's EROFS{how} ({})",
                info.reason
            ));
        }
        ReaderUsed::Fuse { pid } => console::say(format_args!(
            "root served by the FUSE reader, {} pid {pid} ({})",
            mount::daemon::ARGV0,
            info.reason
        )),
        ReaderUsed::None => {}
    }
    Ok(info)
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
