//! The store's locks (docs/store.md §2, §4).
//!
//! - `store.lock`, `flock(2)`: shared while a process sets up an image (adds its packs and
//!   writes the record that makes them roots), exclusive while `gc` or eviction removes files.
//! - `alloc.lock`, `flock(2)`, exclusive while a pack is added (its window is allocated).
//! - POSIX record locks (`fcntl(F_SETLKW)`) on a pack state file's frame bytes while frames are
//!   fetched and written. They die with their process (no stale lock after a SIGKILL), and
//!   `F_GETLK` tells the fanotify filler which process holds them (docs/store.md §6). They do
//!   not exclude threads of one process: [`super::state`] adds an in-process lock.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, Flock, FlockArg, fcntl};

use super::error::Error;

/// A held `flock(2)` on one of the store's lock files; released when dropped.
#[derive(Debug)]
pub(crate) struct FileLock {
    _flock: Flock<File>,
}

impl FileLock {
    /// Takes the lock on `path` (creating the file), waiting while others hold it.
    pub(crate) fn take(path: &Path, exclusive: bool) -> Result<FileLock, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(Error::io(path, "opening the lock file"))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let mut file = file;
        loop {
            match Flock::lock(file, arg) {
                Ok(flock) => return Ok(FileLock { _flock: flock }),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(Error::Io {
                        path: path.to_owned(),
                        what: "locking",
                        source: errno.into(),
                    });
                }
            }
        }
    }
}

impl FileLock {
    /// Takes the exclusive lock on `path` if nobody holds it; `None` if someone does.
    pub(crate) fn try_take(path: &Path) -> Result<Option<FileLock>, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(Error::io(path, "opening the lock file"))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(Some(FileLock { _flock: flock })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(Error::Io {
                path: path.to_owned(),
                what: "locking",
                source: errno.into(),
            }),
        }
    }
}

/// A held write record lock on bytes `[start, start + len)` of a state file; released when
/// dropped. The file must stay open while it is held: closing any descriptor of the file in
/// this process would release every record lock the process holds on it (POSIX), which is why
/// state files are opened once per process ([`super::state`]).
pub(crate) struct RecordLock<'a> {
    file: &'a File,
    start: u64,
    len: u64,
}

fn flock_struct(kind: libc::c_int, start: u64, len: u64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start as libc::off_t,
        l_len: len as libc::off_t,
        l_pid: 0,
    }
}

impl<'a> RecordLock<'a> {
    /// Takes the write lock on `[start, start + len)` of `file`, waiting while another process
    /// holds any of it. `EDEADLK` (which the kernel also reports when two processes' threads
    /// merely wait on each other's different ranges) is retried after a short pause.
    pub(crate) fn write(file: &'a File, start: u64, len: u64) -> std::io::Result<RecordLock<'a>> {
        let fl = flock_struct(libc::F_WRLCK, start, len);
        let mut pause_ms = 1;
        loop {
            match fcntl(file, FcntlArg::F_SETLKW(&fl)) {
                Ok(_) => return Ok(RecordLock { file, start, len }),
                Err(Errno::EINTR) => {}
                Err(Errno::EDEADLK) => {
                    std::thread::sleep(std::time::Duration::from_millis(pause_ms));
                    pause_ms = (pause_ms * 2).min(50);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for RecordLock<'_> {
    fn drop(&mut self) {
        let fl = flock_struct(libc::F_UNLCK, self.start, self.len);
        // Unlocking a range we hold cannot fail short of a bad descriptor; the lock dies with
        // the process anyway.
        let _ = fcntl(self.file, FcntlArg::F_SETLK(&fl));
    }
}

/// The pid of a process other than this one that holds a record lock conflicting with a write
/// lock on `[start, start + len)` of `file`, if any (one of them if several do).
pub(crate) fn holder(file: &File, start: u64, len: u64) -> std::io::Result<Option<i32>> {
    let mut fl = flock_struct(libc::F_WRLCK, start, len);
    fcntl(file, FcntlArg::F_GETLK(&mut fl))?;
    Ok((i32::from(fl.l_type) != libc::F_UNLCK).then_some(fl.l_pid))
}
