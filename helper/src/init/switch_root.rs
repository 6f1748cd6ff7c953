//! Handing over to the new root: move the API filesystems and /run into it, free the
//! initramfs's memory, make the new root `/`, and exec its init. This is what busybox's
//! `switch_root` does; the initial rootfs cannot be unmounted, so it is emptied instead.

use std::convert::Infallible;
use std::ffi::OsString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::sys::statfs::{FsType, TMPFS_MAGIC, statfs};
use nix::unistd::{chdir, chroot};

use super::console;

/// Mount points moved into the new root when it has a directory for them.
const MOVED: &[&str] = &["/dev", "/proc", "/sys", "/run"];
/// `RAMFS_MAGIC` from Linux `include/uapi/linux/magic.h` (nix does not name it).
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// The errors of [`switch_root`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The new root has no executable init; nothing was changed.
    #[error("{init} in the new root is missing or not executable: {reason}")]
    NoInit {
        /// The init path inside the new root.
        init: PathBuf,
        /// Why.
        reason: String,
    },
    /// A step of the switch failed.
    #[error("switching root failed at {step}: {errno}")]
    Step {
        /// What was being done.
        step: String,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
    /// exec of the new init failed (after the point of no return).
    #[error("cannot execute {init}: {source}")]
    Exec {
        /// The init.
        init: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Makes `new_root` the root and executes `init` (a path inside it) with `args`.
pub fn switch_root(new_root: &Path, init: &Path, args: &[OsString]) -> Result<Infallible, Error> {
    check_init(new_root, init)?;
    for &point in MOVED {
        let inside = new_root.join(point.trim_start_matches('/'));
        if inside.is_dir() {
            mount(
                Some(point),
                &inside,
                None::<&str>,
                MsFlags::MS_MOVE,
                None::<&str>,
            )
            .map_err(|errno| Error::Step {
                step: format!("moving {point} to {}", inside.display()),
                errno,
            })?;
        } else {
            console::say(format_args!(
                "the new root has no {point}; detaching the initramfs's"
            ));
            let _ = umount2(point, MntFlags::MNT_DETACH);
        }
    }
    empty_initramfs(new_root);
    chdir(new_root).map_err(|errno| Error::Step {
        step: format!("chdir {}", new_root.display()),
        errno,
    })?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(|errno| {
        Error::Step {
            step: "moving the new root onto /".into(),
            errno,
        }
    })?;
    chroot(".").map_err(|errno| Error::Step {
        step: "chroot".into(),
        errno,
    })?;
    chdir("/").map_err(|errno| Error::Step {
        step: "chdir /".into(),
        errno,
    })?;
    console::say(format_args!(
        "[{:.3}] starting {}",
        console::uptime_secs(),
        init.display()
    ));
    let source = std::process::Command::new(init)
        .arg0(init)
        .args(args)
        .exec();
    Err(Error::Exec {
        init: init.to_owned(),
        source,
    })
}

/// Resolves `init` inside `new_root` the way it will be resolved after the switch (absolute
/// symlinks such as `/sbin/init -> /lib/systemd/systemd` stay inside the new root) and checks
/// that it is an executable file, while going back is still possible.
fn check_init(new_root: &Path, init: &Path) -> Result<(), Error> {
    let fail = |reason: String| Error::NoInit {
        init: init.to_owned(),
        reason,
    };
    let root = fs::File::open(new_root).map_err(|e| fail(e.to_string()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(root.as_fd(), init, how).map_err(|errno| fail(errno.desc().to_owned()))?;
    let stat = fstat(&fd).map_err(|errno| fail(errno.desc().to_owned()))?;
    let file_type = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
    if file_type != SFlag::S_IFREG {
        return Err(fail("not a regular file".into()));
    }
    if Mode::from_bits_truncate(stat.st_mode).bits() & 0o111 == 0 {
        return Err(fail("no execute permission".into()));
    }
    Ok(())
}

/// Deletes the initramfs's files to give their memory back, staying on the initial rootfs's
/// filesystem (never descending into mounts such as the new root). Only ever done when `/` is
/// a tmpfs or ramfs, so a mistaken run elsewhere cannot wipe a disk. Failures only cost memory.
fn empty_initramfs(new_root: &Path) {
    let is_ramdisk = statfs("/").is_ok_and(|s| {
        let t = s.filesystem_type();
        t == TMPFS_MAGIC || t == RAMFS_MAGIC
    });
    let Ok(root_dev) = fs::symlink_metadata("/").map(|m| m.dev()) else {
        return;
    };
    if !is_ramdisk || std::process::id() != 1 {
        return;
    }
    remove_children(Path::new("/"), root_dev, new_root);
}

fn remove_children(dir: &Path, dev: u64, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev || path == keep {
            continue;
        }
        if meta.is_dir() {
            remove_children(&path, dev, keep);
            let _ = fs::remove_dir(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// An absolute symlink must resolve inside the new root, not in the initramfs: here it
    /// points at a path that exists only inside the fake root.
    #[test]
    fn init_is_resolved_inside_the_new_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("sbin")).unwrap();
        fs::create_dir_all(r.join("lib/chunkfs-test-only")).unwrap();
        let real = r.join("lib/chunkfs-test-only/init");
        fs::write(&real, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
        symlink("/lib/chunkfs-test-only/init", r.join("sbin/init")).unwrap();
        check_init(r, Path::new("/sbin/init")).unwrap();

        fs::set_permissions(&real, fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_init(r, Path::new("/sbin/init")).unwrap_err();
        assert!(err.to_string().contains("no execute permission"), "{err}");

        let err = check_init(r, Path::new("/bin/missing")).unwrap_err();
        assert!(err.to_string().contains("/bin/missing"), "{err}");

        let err = check_init(r, Path::new("/lib")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
