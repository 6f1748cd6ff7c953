//! Choosing kernel modules for the initramfs: a name is looked up in the kernel's
//! `modules.dep` (written by `depmod`), its dependencies are resolved depth first, and the
//! result is a load order in which every module comes after all it needs. Names listed in
//! `modules.builtin` need nothing. Soft dependencies (`modules.softdep` `pre:`, e.g. erofs's
//! libcrc32c wants a `crc32c` implementation, found through `modules.alias`) are included
//! too, marked optional: without modprobe in the initramfs nobody would load them on demand.

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

impl chunkfs_format::Classify for Error {
    fn class(&self) -> chunkfs_format::ErrorClass {
        use chunkfs_format::ErrorClass as C;
        match self {
            Self::Read { source, .. } => source.class(),
            Self::Unknown { .. } => C::Usage,
            Self::Syntax { .. } | Self::DanglingDep { .. } => C::Corrupt,
        }
    }
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
    /// The subset of `load_order` that only soft dependencies asked for (load failures of
    /// these are expected, e.g. a CPU-specific crc32c).
    pub optional: BTreeSet<String>,
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
    let by_name: BTreeMap<String, String> = deps
        .keys()
        .map(|path| (name_of_path(path), path.clone()))
        .collect();
    let index = Index {
        dir,
        softdeps: parse_softdeps(&read_optional(&dir.join("modules.softdep"))?),
        aliases: parse_aliases(&read_optional(&dir.join("modules.alias"))?),
        deps,
        by_name,
    };

    let mut selection = Selection::default();
    let mut done = BTreeSet::new();
    for (name, need) in wanted {
        let name = canonical_name(name);
        if let Some(path) = index.by_name.get(&name) {
            index.visit(path, false, &mut done, &mut selection)?;
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

struct Index<'a> {
    dir: &'a Path,
    deps: BTreeMap<String, Vec<String>>,
    by_name: BTreeMap<String, String>,
    softdeps: BTreeMap<String, Vec<String>>,
    aliases: BTreeMap<String, Vec<String>>,
}

impl Index<'_> {
    /// Appends `path` after its soft and hard dependencies. `modules.dep` lists the whole
    /// transitive closure of each module, but in no order we rely on: each dependency is
    /// visited through its own line. `done` also stops cycles.
    fn visit(
        &self,
        path: &str,
        optional: bool,
        done: &mut BTreeSet<String>,
        selection: &mut Selection,
    ) -> Result<(), Error> {
        if !done.insert(path.to_owned()) {
            if !optional {
                selection.optional.remove(path);
            }
            return Ok(());
        }
        let dangling = |dep: &str| Error::DanglingDep {
            dir: self.dir.to_owned(),
            module: path.to_owned(),
            dep: dep.to_owned(),
        };
        let needs = self.deps.get(path).ok_or_else(|| dangling(path))?;
        for soft in self.softdeps.get(&name_of_path(path)).into_iter().flatten() {
            for target in self.candidates(soft) {
                self.visit(&target, true, done, selection)?;
            }
        }
        for dep in needs {
            if !self.deps.contains_key(dep) {
                return Err(dangling(dep));
            }
            self.visit(dep, optional, done, selection)?;
        }
        selection.load_order.push(path.to_owned());
        if optional {
            selection.optional.insert(path.to_owned());
        }
        Ok(())
    }

    /// Module files for a soft dependency, which names a module or an alias.
    fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(path) = self.by_name.get(&canonical_name(name)) {
            return vec![path.clone()];
        }
        let names = self
            .aliases
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        names
            .iter()
            .filter_map(|n| self.by_name.get(n).cloned())
            .collect()
    }
}

/// `softdep MODULE pre: A B post: C`: the `pre:` names of each module.
fn parse_softdeps(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut softdeps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("softdep") {
            continue;
        }
        let Some(module) = words.next() else { continue };
        let mut in_pre = false;
        for word in words {
            match word {
                "pre:" => in_pre = true,
                "post:" => in_pre = false,
                name if in_pre => softdeps
                    .entry(canonical_name(module))
                    .or_default()
                    .push(name.to_owned()),
                _ => {}
            }
        }
    }
    softdeps
}

/// `alias NAME MODULE`, exact names only (wildcard aliases are for hardware ids).
fn parse_aliases(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("alias"), Some(alias), Some(module)) =
            (words.next(), words.next(), words.next())
        {
            if !alias.contains(['*', '?', '[']) {
                aliases
                    .entry(alias.to_owned())
                    .or_default()
                    .push(canonical_name(module));
            }
        }
    }
    for modules in aliases.values_mut() {
        modules.sort();
        modules.dedup();
    }
    aliases
}

fn read_optional(path: &Path) -> Result<String, Error> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(Error::Read {
            path: path.to_owned(),
            source,
            hint: "",
        }),
    }
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
             kernel/fs/broken.ko: kernel/fs/nowhere.ko\n\
             kernel/fs/ext4/ext4.ko:\n\
             kernel/arch/x86/crypto/crc32c-intel.ko:\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("modules.softdep"),
            "# comment\nsoftdep ext4 pre: crypto-crc32c post: foo\nsoftdep libcrc32c pre: crc32c\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("modules.alias"),
            "alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\nalias pci:v*d* virtio_pci\n",
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
    fn soft_dependencies_are_optional_and_first() {
        let dir = fixture();
        let got = resolve(dir.path(), &want(&["ext4", "erofs"], Need::Required)).unwrap();
        assert_eq!(
            got.load_order,
            [
                "kernel/crypto/crc32c-generic.ko.xz",
                "kernel/arch/x86/crypto/crc32c-intel.ko",
                "kernel/fs/ext4/ext4.ko",
                "kernel/lib/libcrc32c.ko.xz",
                "kernel/fs/erofs/erofs.ko.xz",
            ]
        );
        // crc32c-generic is also a hard dependency of libcrc32c in this fixture, but it was
        // first reached as a soft one; crc32c-intel is only ever soft.
        assert!(
            got.optional
                .contains("kernel/arch/x86/crypto/crc32c-intel.ko")
        );
        assert!(!got.optional.contains("kernel/fs/ext4/ext4.ko"));
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
