//! Files of the store: its directories, and files written whole under a temporary name in
//! `tmp/`, fsynced, renamed into place, the directory fsynced (a crash leaves the old file or
//! the new one, never a torn one). Temporary names carry the writer's pid and start time, so
//! `gc` can tell a stale temporary file (its writer is gone) from one being written.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chunkfs_format::partial::PARTIAL;

use super::error::Error;
use super::proc;

/// Creates `dir` and its missing parents, mode 0700.
pub(crate) fn create_dir(dir: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io(dir, "creating the directory"))
}

/// fsyncs a directory, so that a rename or unlink in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir, "syncing the directory"))
}

/// A temporary file in the store's `tmp/`, removed when dropped unless renamed into place.
pub(crate) struct TempFile {
    path: Option<PathBuf>,
    file: File,
}

impl TempFile {
    /// A new, empty temporary file in `tmp_dir` whose name says what it will become.
    pub(crate) fn new(tmp_dir: &Path, what: &str) -> Result<TempFile, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (pid, start) = proc::this_process();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = tmp_dir.join(format!("{pid}.{start}.{n}.{what}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(Error::io(&path, "creating a temporary file"))?;
        PARTIAL.track(&path);
        Ok(TempFile {
            path: Some(path),
            file,
        })
    }

    /// The open file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The temporary path (for messages).
    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// fsyncs the file and renames it to `dest` (replacing what is there), then fsyncs the
    /// destination directory.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<(), Error> {
        let tmp = self.path().to_owned();
        self.file
            .sync_all()
            .map_err(Error::io(&tmp, "syncing a temporary file"))?;
        fs::rename(&tmp, dest).map_err(Error::io(dest, "renaming a temporary file into place"))?;
        PARTIAL.untrack(&tmp);
        self.path = None;
        if let Some(parent) = dest.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = fs::remove_file(&p);
            PARTIAL.untrack(&p);
        }
    }
}

/// Writes `bytes` to `dest` atomically through a temporary file in `tmp_dir`.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<(), Error> {
    let what = dest
        .file_name()
        .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned());
    let mut tmp = TempFile::new(tmp_dir, &what)?;
    let path = tmp.path().to_owned();
    tmp.file
        .write_all(bytes)
        .map_err(Error::io(&path, "writing a temporary file"))?;
    tmp.persist(dest)
}

/// True if the temporary file named `name` was made by a process that no longer lives (or
/// does not follow our naming, so nothing of ours is writing it).
pub(crate) fn is_stale_temp(name: &str) -> bool {
    let mut parts = name.splitn(4, '.');
    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
    let start = parts.next().and_then(|s| s.parse::<u64>().ok());
    match (pid, start) {
        (Some(pid), Some(start)) => !proc::alive(pid, start),
        _ => true,
    }
}

/// Allocated bytes of a file (its blocks, not its length: packs are sparse), 0 if it is gone.
pub(crate) fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).map_or(0, |m| m.blocks().saturating_mul(512))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let tmp = crate::oci::test_dir();
        let t = tmp.path().join("tmp");
        create_dir(&t).unwrap();
        let dest = tmp.path().join("f");
        write_atomic(&t, &dest, b"one").unwrap();
        write_atomic(&t, &dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(fs::read_dir(&t).unwrap().count(), 0);
        // A temporary file dropped before it is persisted is removed.
        let f = TempFile::new(&t, "x").unwrap();
        let name = f.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(!is_stale_temp(&name), "{name} is ours and we live");
        drop(f);
        assert_eq!(fs::read_dir(&t).unwrap().count(), 0);
        assert!(is_stale_temp("0.5.0.blob"));
        assert!(is_stale_temp("garbage"));
    }
}
