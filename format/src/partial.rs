//! Output files still being written, so that an interrupted command can remove them.
//!
//! Every writer creates its output under a temporary name and renames it into place when it is
//! complete; its `Drop` removes the temporary file when it fails. A signal ends the process
//! without running destructors, so writers also record their temporary files in [`PARTIAL`]
//! and the binary's signal handler calls [`PartialFiles::remove_all`] before it exits.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The temporary files of this process's writers.
pub static PARTIAL: PartialFiles = PartialFiles::new();

/// A list of temporary files to remove if the process is interrupted.
#[derive(Debug)]
pub struct PartialFiles(Mutex<Vec<PathBuf>>);

impl PartialFiles {
    /// An empty list.
    pub const fn new() -> Self {
        PartialFiles(Mutex::new(Vec::new()))
    }

    fn files(&self) -> MutexGuard<'_, Vec<PathBuf>> {
        // A writer that panicked while holding the lock left a list that is still correct.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `path` as a temporary file to remove if the process is interrupted.
    pub fn track(&self, path: &Path) {
        self.files().push(path.to_owned());
    }

    /// Forgets `path`: it was renamed into place or removed.
    pub fn untrack(&self, path: &Path) {
        let mut files = self.files();
        if let Some(i) = files.iter().rposition(|p| p == path) {
            files.swap_remove(i);
        }
    }

    /// Removes every temporary file still recorded; returns how many were removed.
    pub fn remove_all(&self) -> usize {
        let mut files = self.files();
        let removed = files
            .iter()
            .filter(|p| std::fs::remove_file(p).is_ok())
            .count();
        files.clear();
        removed
    }
}

impl Default for PartialFiles {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn removes_what_is_tracked_and_nothing_untracked() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tmp"), dir.path().join("b.tmp"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let partial = PartialFiles::new();
        partial.track(&a);
        partial.track(&b);
        partial.untrack(&b);
        assert_eq!(partial.remove_all(), 1);
        assert!(!a.exists());
        assert!(b.exists());
        assert_eq!(partial.remove_all(), 0);
    }
}
