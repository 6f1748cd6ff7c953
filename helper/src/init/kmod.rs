//! Loading the kernel modules the initramfs carries, in the order `chunkfs initramfs` resolved
//! from `modules.dep` (listed in [`crate::initramfs::MODULE_LIST`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};

use super::console;

/// `MODULE_INIT_COMPRESSED_FILE` (Linux 6.4+): the kernel decompresses the module itself.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// The errors of [`load_listed`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The module list could not be read.
    #[error("cannot read the module list {path}: {source}")]
    List {
        /// The list file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The list does not start with `release NAME`.
    #[error("{0}: the first line must be `release KERNEL-RELEASE`")]
    Syntax(PathBuf),
}

/// What [`load_listed`] did.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Modules newly loaded.
    pub loaded: usize,
    /// Modules that were already there.
    pub present: usize,
    /// Modules that failed, with the reason (reported, not fatal: the mount that needs them
    /// fails with its own message).
    pub failed: Vec<(String, Errno)>,
    /// Set when the modules are for another kernel release and were not loaded.
    pub wrong_release: Option<String>,
}

/// Loads every module in the list at `list` (paths relative to `modules_root/RELEASE`). A
/// missing list means the initramfs has no modules.
pub fn load_listed(
    list: &Path,
    modules_root: &Path,
    running_release: &str,
) -> Result<Loaded, Error> {
    let text = match std::fs::read_to_string(list) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(source) => {
            return Err(Error::List {
                path: list.to_owned(),
                source,
            });
        }
    };
    let mut lines = text.lines();
    let release = lines
        .next()
        .and_then(|line| line.strip_prefix("release "))
        .ok_or_else(|| Error::Syntax(list.to_owned()))?;
    let mut outcome = Loaded::default();
    if release != running_release {
        outcome.wrong_release = Some(release.to_owned());
        return Ok(outcome);
    }
    let dir = modules_root.join(release);
    for line in lines.filter(|line| !line.is_empty()) {
        let (rel, optional) = match line.strip_prefix("? ") {
            Some(rel) => (rel, true),
            None => (line, false),
        };
        match load_one(&dir.join(rel)) {
            Ok(()) => {
                outcome.loaded += 1;
                console::debug(format_args!("module {rel}"));
            }
            Err(Errno::EEXIST) => outcome.present += 1,
            Err(errno) if optional => {
                console::debug(format_args!("optional module {rel}: {errno}"))
            }
            Err(errno) => outcome.failed.push((rel.to_owned(), errno)),
        }
    }
    Ok(outcome)
}

fn load_one(path: &Path) -> Result<(), Errno> {
    let file =
        File::open(path).map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
    let compressed = path
        .extension()
        .is_some_and(|ext| ext == "xz" || ext == "zst" || ext == "gz");
    let flags = if compressed {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    finit_module(&file, c"", flags)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn missing_list_means_nothing_to_do() {
        let got = load_listed(
            Path::new("/nonexistent/list"),
            Path::new("/lib/modules"),
            "6.1",
        )
        .unwrap();
        assert_eq!(got.loaded + got.present + got.failed.len(), 0);
    }

    #[test]
    fn other_release_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("modules");
        std::fs::write(&list, "release 1.2.3-test\nkernel/fs/fuse/fuse.ko\n").unwrap();
        let got = load_listed(&list, dir.path(), "6.18.0").unwrap();
        assert_eq!(got.wrong_release.as_deref(), Some("1.2.3-test"));
        assert_eq!(got.loaded, 0);
        std::fs::write(&list, "kernel/fs/fuse/fuse.ko\n").unwrap();
        assert!(matches!(
            load_listed(&list, dir.path(), "6.18.0"),
            Err(Error::Syntax(_))
        ));
    }
}
