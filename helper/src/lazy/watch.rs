//! Noticing that a mount is gone, cheaply: a daemon of a lazy mount (the FUSE reader, the
//! filler) waits in [`wait_gone`] on `/proc/self/mountinfo`, which the kernel wakes (`POLLPRI`)
//! whenever the mount table changes, and checks once a second besides. A mount is gone when
//! its id is no longer in the table *and* its superblock is gone: a lazily detached mount
//! (`umount -l`) lives on until its last user leaves, and until then it must be served. The
//! superblock's end shows as its sysfs directory vanishing (`/sys/fs/erofs/NAME`), or for FUSE
//! as the connection aborted (`POLLERR` on `/dev/fuse`: [`fuse_aborted`]).

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether mount `id` is in this process's mount table.
pub fn is_mounted(id: u64) -> bool {
    crate::mount::mountinfo::read().is_ok_and(|all| all.iter().any(|m| m.id == id))
}

/// Whether the FUSE connection served through `fuse` (a `/dev/fuse` descriptor) was aborted:
/// its superblock is gone (the kernel answers `POLLERR` from then on).
pub fn fuse_aborted(fuse: BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fuse, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL)),
        Err(_) => false,
    }
}

/// Returns once mount `id` is gone from the mount table and `sysfs` (the superblock's sysfs
/// directory, if known) no longer exists, or once `stop` is set. Returns true if the mount is
/// gone.
pub fn wait_gone(id: u64, sysfs: Option<&Path>, stop: &AtomicBool) -> bool {
    wait_gone_with(id, &|| sysfs.is_some_and(Path::exists), stop)
}

/// [`wait_gone`], with `alive` telling whether the superblock still lives.
pub fn wait_gone_with(id: u64, alive: &dyn Fn() -> bool, stop: &AtomicBool) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut table = File::open("/proc/self/mountinfo").ok();
    let mut text = String::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        // Reading the table from its start also re-arms the POLLPRI wake-up.
        let listed = match &mut table {
            Some(f) => {
                text.clear();
                f.rewind().is_ok()
                    && f.read_to_string(&mut text).is_ok()
                    && crate::mount::mountinfo::parse(&text)
                        .iter()
                        .any(|m| m.id == id)
            }
            None => is_mounted(id),
        };
        if !listed && !alive() {
            return true;
        }
        match &table {
            Some(f) => {
                let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLPRI)];
                let _ = poll(&mut fds, PollTimeout::from(1000u16));
            }
            None => std::thread::sleep(std::time::Duration::from_secs(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_mount_is_gone_at_once_and_stop_ends_the_wait() {
        let stop = AtomicBool::new(false);
        assert!(wait_gone(u64::MAX, None, &stop));
        // The root mount is there: only `stop` ends the wait.
        let root = crate::mount::mountinfo::mounted_at(Path::new("/"))
            .ok()
            .flatten()
            .map(|m| m.id);
        if let Some(id) = root {
            stop.store(true, Ordering::Relaxed);
            assert!(!wait_gone(id, None, &stop));
        }
    }
}
