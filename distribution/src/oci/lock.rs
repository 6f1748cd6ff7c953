//! The layout lock: `flock(2)` on `.chunkfs.lock` in the layout directory (docs/format.md §7.6).
//!
//! Writers (pack into a layout, `rm`) and `gc` hold it exclusively; readers that open an image
//! hold it shared until they have opened every blob they need, so `gc` cannot remove a blob
//! between the moment a reader reads `index.json` and the moment it opens the blob. Other tools
//! (skopeo, umoci) ignore the file. The lock is advisory and released when the value is dropped
//! or the process dies.

use chunkfs_format::{Classify, ErrorClass};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Name of the lock file in the layout directory.
pub const LOCK_FILE: &str = ".chunkfs.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot lock the layout: {source}", path.display())]
pub struct Error {
    /// The lock file.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        ErrorClass::Io
    }
}

/// A held layout lock.
#[derive(Debug)]
pub struct LayoutLock {
    _flock: Option<Flock<File>>,
}

impl LayoutLock {
    /// Takes the exclusive lock, creating `dir` and the lock file if needed; blocks while
    /// another process holds the lock.
    pub fn exclusive(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| Error {
                path: path.clone(),
                source,
            })?;
        lock(file, FlockArg::LockExclusive, &path)
    }

    /// Takes the shared lock. A layout on a read-only file system, or one the caller may not
    /// write, cannot be modified by anyone else either, so there the lock is skipped.
    pub fn shared(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(LOCK_FILE);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(f) => f,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
                ) =>
            {
                match File::open(&path) {
                    Ok(f) => f,
                    Err(_) => return Ok(Self { _flock: None }),
                }
            }
            Err(source) => return Err(Error { path, source }),
        };
        lock(file, FlockArg::LockShared, &path)
    }

    /// Tries to take the exclusive lock without waiting; `None` if someone holds it.
    pub fn try_exclusive(dir: &Path) -> Result<Option<Self>, Error> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| Error {
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => Ok(Some(Self { _flock: Some(f) })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(Error {
                path,
                source: io::Error::from(errno),
            }),
        }
    }
}

fn lock(mut file: File, arg: FlockArg, path: &Path) -> Result<LayoutLock, Error> {
    loop {
        match Flock::lock(file, arg) {
            Ok(f) => return Ok(LayoutLock { _flock: Some(f) }),
            Err((f, nix::errno::Errno::EINTR)) => file = f,
            Err((_, errno)) => {
                return Err(Error {
                    path: path.to_owned(),
                    source: io::Error::from(errno),
                });
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn exclusive_excludes_and_is_released_on_drop() {
        let tmp = crate::oci::test_dir();
        let held = LayoutLock::exclusive(tmp.path()).unwrap();
        assert!(LayoutLock::try_exclusive(tmp.path()).unwrap().is_none());
        let (tx, rx) = mpsc::channel();
        let dir = tmp.path().to_owned();
        let waiter = std::thread::spawn(move || {
            let _l = LayoutLock::exclusive(&dir).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "second writer got the lock while it was held"
        );
        drop(held);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("second writer never got the lock");
        waiter.join().unwrap();
        assert!(LayoutLock::try_exclusive(tmp.path()).unwrap().is_some());
    }

    #[test]
    fn shared_excludes_exclusive_but_not_shared() {
        let tmp = crate::oci::test_dir();
        let a = LayoutLock::shared(tmp.path()).unwrap();
        let _b = LayoutLock::shared(tmp.path()).unwrap();
        assert!(LayoutLock::try_exclusive(tmp.path()).unwrap().is_none());
        drop(a);
        drop(_b);
        assert!(LayoutLock::try_exclusive(tmp.path()).unwrap().is_some());
    }
}
