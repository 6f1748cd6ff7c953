//! Choosing kernel modules for the initramfs: a name is looked up in the kernel's
//! `modules.dep` (written by `depmod`), its dependencies are resolved depth first, and the
//! result is a load order in which every module comes after all it needs. Names listed in
//! `modules.builtin` need nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The errors of [`resolve`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A module index file could not be read.
    #[error("cannot read {path}: {source}{hint}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
        /// Advice when the index was simply never generated.
        hint: &'static str,
    },
    /// A line of `modules.dep` that is not `path: dep dep ...`.
    #[error("{path}:{line}: not a modules.dep line")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A module that was asked for by name is neither a module nor built in.
    #[error("kernel module {name:?} is neither in {dir}/modules.dep nor built in")]
    Unknown {
        /// The module name.
        name: String,
        /// The module directory.
        dir: PathBuf,
    },
    /// A dependency that `modules.dep` names but does not describe.
    #[error("{dir}/modules.dep: {module} depends on {dep}, which has no entry")]
    DanglingDep {
        /// The module directory.
        dir: PathBuf,
        /// The module with the dependency.
        module: String,
        /// The missing dependency's path.
        dep: String,
    },
}

/// How much a requested module matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Fail when the kernel has no such module.
    Required,
    /// Skip it silently when the kernel has no such module (e.g. a driver for hardware the
    /// kernel was built without).
    IfPresent,
}

/// The outcome of [`resolve`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Module files relative to the module directory, in load order.
    pub load_order: Vec<String>,
    /// Requested names that are built into the kernel.
    pub builtin: Vec<String>,
    /// Requested names with [`Need::IfPresent`] that the kernel does not have.
    pub absent: Vec<String>,
}

/// The canonical name of a module: `-` and `_` are the same to the kernel.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a file path such as `kernel/fs/fuse/fuse.ko.xz`.
pub fn name_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.find(".ko").map_or(file, |end| &file[..end]);
    canonical_name(stem)
}

/// Resolves `wanted` against the module directory `dir` (`/lib/modules/RELEASE`).
pub fn resolve(dir: &Path, wanted: &[(String, Need)]) -> Result<Selection, Error> {
    let dep_path = dir.join("modules.dep");
    let dep_text = read(&dep_path, " (run `depmod -b ROOT RELEASE` to create it)")?;
    let deps = parse_dep(&dep_path, &dep_text)?;
    let builtin_path = dir.join("modules.builtin");
    let builtin: BTreeSet<String> = match fs::read_to_string(&builtin_path) {
        Ok(text) => text.lines().map(name_of_path).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
        Err(source) => {
            return Err(Error::Read {
                path: builtin_path,
                source,
                hint: "",
            });
        }
    };
    let by_name: BTreeMap<String, &str> = deps
        .keys()
        .map(|path| (name_of_path(path), path.as_str()))
        .collect();

    let mut selection = Selection::default();
    let mut done = BTreeSet::new();
    for (name, need) in wanted {
        let name = canonical_name(name);
        if let Some(path) = by_name.get(&name) {
            visit(dir, &deps, path, &mut done, &mut selection.load_order)?;
        } else if builtin.contains(&name) {
            selection.builtin.push(name);
        } else if *need == Need::IfPresent {
            selection.absent.push(name);
        } else {
            return Err(Error::Unknown {
                name,
                dir: dir.to_owned(),
            });
        }
    }
    Ok(selection)
}

/// Appends `path` after its dependencies. `modules.dep` lists the whole transitive closure of
/// each module, but in no order we rely on: each dependency is visited through its own line.
/// `done` also stops cycles, which `depmod` refuses to write anyway.
fn visit(
    dir: &Path,
    deps: &BTreeMap<String, Vec<String>>,
    path: &str,
    done: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) -> Result<(), Error> {
    if !done.insert(path.to_owned()) {
        return Ok(());
    }
    let Some(needs) = deps.get(path) else {
        return Err(Error::DanglingDep {
            dir: dir.to_owned(),
            module: path.to_owned(),
            dep: path.to_owned(),
        });
    };
    for dep in needs {
        if !deps.contains_key(dep) {
            return Err(Error::DanglingDep {
                dir: dir.to_owned(),
                module: path.to_owned(),
                dep: dep.clone(),
            });
        }
        visit(dir, deps, dep, done, order)?;
    }
    order.push(path.to_owned());
    Ok(())
}

fn parse_dep(path: &Path, text: &str) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let mut deps = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((module, needs)) = line.split_once(':') else {
            return Err(Error::Syntax {
                path: path.to_owned(),
                line: index + 1,
            });
        };
        let needs = needs.split_whitespace().map(str::to_owned).collect();
        deps.insert(module.trim().to_owned(), needs);
    }
    Ok(deps)
}

fn read(path: &Path, hint: &'static str) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
        hint,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/fs/erofs/erofs.ko.xz: kernel/lib/libcrc32c.ko.xz\n\
             kernel/lib/libcrc32c.ko.xz: kernel/crypto/crc32c-generic.ko.xz\n\
             kernel/crypto/crc32c-generic.ko.xz:\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/fs/broken.ko: kernel/fs/nowhere.ko\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("modules.builtin"),
            "kernel/fs/fuse/fuse.ko\n",
        )
        .unwrap();
        dir
    }

    fn want(names: &[&str], need: Need) -> Vec<(String, Need)> {
        names.iter().map(|n| (n.to_string(), need)).collect()
    }

    #[test]
    fn dependencies_come_first() {
        let dir = fixture();
        let got = resolve(
            dir.path(),
            &want(&["virtio-blk", "erofs", "virtio_ring"], Need::Required),
        )
        .unwrap();
        assert_eq!(
            got.load_order,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/crypto/crc32c-generic.ko.xz",
                "kernel/lib/libcrc32c.ko.xz",
                "kernel/fs/erofs/erofs.ko.xz",
            ]
        );
    }

    #[test]
    fn builtin_and_absent() {
        let dir = fixture();
        let got = resolve(dir.path(), &want(&["fuse", "nonesuch"], Need::IfPresent)).unwrap();
        assert!(got.load_order.is_empty());
        assert_eq!(got.builtin, ["fuse"]);
        assert_eq!(got.absent, ["nonesuch"]);
        let err = resolve(dir.path(), &want(&["nonesuch"], Need::Required)).unwrap_err();
        assert!(
            matches!(err, Error::Unknown { ref name, .. } if name == "nonesuch"),
            "{err}"
        );
    }

    #[test]
    fn dangling_dependency_is_an_error() {
        let dir = fixture();
        let err = resolve(dir.path(), &want(&["broken"], Need::Required)).unwrap_err();
        assert!(err.to_string().contains("nowhere.ko"), "{err}");
    }

    #[test]
    fn missing_index_says_how_to_make_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(dir.path(), &want(&["fuse"], Need::Required)).unwrap_err();
        assert!(err.to_string().contains("depmod"), "{err}");
    }
}
