//! `chunkfs umount TARGET`: unmounts a chunkfs mount (either reader) and waits until nothing of
//! it is left: the FUSE daemon has exited, the loop devices have detached themselves, a lazy
//! registry mount's filler has stopped, its record in the store is released and its status
//! files under /run/chunkfs/lazy are removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, umount2};

use super::daemon;
use super::mountinfo;
use super::{Error, ErrorKind, Log};
use crate::lazy::status;

/// How long to wait for the daemon and the loop devices to go away.
const WAIT: Duration = Duration::from_secs(10);

/// What was unmounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmounted {
    /// The mount point.
    pub target: PathBuf,
    /// Its source as the mount table showed it.
    pub source: String,
    /// `erofs` or `fuse.chunkfs`.
    pub fstype: String,
    /// The FUSE daemon that exited, if any.
    pub daemon: Option<i32>,
}

/// Unmounts the chunkfs mount at `target`; with `lazy`, detaches it even if busy (then the
/// daemon and loop devices go away when its last user does, and are not waited for).
pub fn unmount(target: &Path, lazy: bool, log: &Log) -> Result<Unmounted, Error> {
    let target = std::fs::canonicalize(target)
        .map_err(|e| Error::new(ErrorKind::NotFound, format!("{}: {e}", target.display())))?;
    let m = mountinfo::mounted_at(&target)
        .map_err(|e| Error::new(ErrorKind::Io, format!("/proc/self/mountinfo: {e}")))?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Usage,
                format!("{}: not a mount point", target.display()),
            )
        })?;
    if m.fstype != "erofs" && m.fstype != "fuse.chunkfs" {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "{}: not a chunkfs mount ({} from {})",
                target.display(),
                m.fstype,
                m.source
            ),
        ));
    }
    let daemon = (m.fstype == "fuse.chunkfs")
        .then(|| daemon::recorded_pid(m.dev))
        .flatten();
    let registry = status::MountRecord::of_mount(m.id);
    let loop_dev = (m.dev.0 == 7).then(|| format!("loop{}", m.dev.1));
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    umount2(&target, flags).map_err(|e| {
        let kind = match e {
            nix::errno::Errno::EBUSY => ErrorKind::Busy,
            nix::errno::Errno::EPERM => ErrorKind::Permission,
            _ => ErrorKind::Mount,
        };
        let hint = if e == nix::errno::Errno::EBUSY {
            " (files are open or a process is inside it; `chunkfs umount -l` detaches it now and finishes when they are gone)"
        } else {
            ""
        };
        Error::new(
            kind,
            format!("cannot unmount {}: {e}{hint}", target.display()),
        )
    })?;
    log.info(format_args!(
        "unmounted {} ({})",
        target.display(),
        m.source
    ));
    if !lazy {
        let deadline = Instant::now() + WAIT;
        if let Some(pid) = daemon {
            while daemon::is_daemon(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if daemon::is_daemon(pid) {
                return Err(Error::new(
                    ErrorKind::Mount,
                    format!(
                        "{} is unmounted but its FUSE reader daemon (pid {pid}) is still running after {} s",
                        target.display(),
                        WAIT.as_secs()
                    ),
                ));
            }
            log.info(format_args!("the FUSE reader daemon (pid {pid}) exited"));
        }
        if let Some(name) = loop_dev {
            let backing = PathBuf::from(format!("/sys/block/{name}/loop/backing_file"));
            while backing.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(r) = &registry {
            end_lazy(r, deadline, log)?;
        }
    }
    Ok(Unmounted {
        target,
        source: m.source,
        fstype: m.fstype,
        daemon,
    })
}

/// After a lazy registry mount is unmounted: its filler (if one still runs) stopped and waited
/// for, its record in the store released, its status files removed.
fn end_lazy(r: &status::MountRecord, deadline: Instant, log: &Log) -> Result<(), Error> {
    if let Some(pid) = r
        .daemon_pid
        .filter(|&p| r.reader != "fuse" && status::daemon_alive(p))
    {
        // It notices the unmount by itself; SIGTERM makes it sure and prompt.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        while status::daemon_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if status::daemon_alive(pid) {
            return Err(Error::new(
                ErrorKind::Mount,
                format!(
                    "{} is unmounted but its filler (pid {pid}) is still running after {} s",
                    r.mount_point.display(),
                    WAIT.as_secs()
                ),
            ));
        }
        log.info(format_args!("the filler (pid {pid}) exited"));
    }
    if let Ok(store) = chunkfs_distribution::store::Store::open(&r.store) {
        let _ = store.release_mount(&r.id);
    }
    status::remove(&r.id);
    Ok(())
}
