//! What an image argument names: the one resolver behind every command's SOURCE and DEST
//! (`pack`, `unpack`, `inspect`, `verify`, `descriptor`, `gc`, `rm`, `pull`), by the rules of
//! docs/format.md §7.7, plus a registry's `docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`
//! (docs/registry.md §3).
//!
//! Each kind of reference is one [`ImageRef`] variant: the compiler lists every command that
//! must decide what to do with a new one, and a command that does not take a kind answers
//! with [`ImageRef::refuse`].

use std::fmt;
use std::path::{Path, PathBuf};

use chunkfs_distribution::oci::reference::Reference;
pub use chunkfs_distribution::oci::reference::Role;
use chunkfs_distribution::registry::{self, reference::SCHEME};

use crate::Error;

/// What a command-line image argument names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// A `.cfs` image file (or a block device holding one); also anything that names no
    /// directory or layout, so the command's own error says what is wrong with it.
    Cfs(PathBuf),
    /// A directory tree (what `pack` reads).
    Dir(PathBuf),
    /// An OCI image layout, and the tag of one image in it.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The tag, when given.
        tag: Option<String>,
    },
    /// An image in a registry (`docker://...`).
    Docker(registry::ImageRef),
}

impl ImageRef {
    /// What `arg` names when it is read (`Role::Source`) or written (`Role::Destination`). A
    /// malformed `docker://` reference is a usage error saying what is wrong with it.
    pub fn resolve(arg: &Path, role: Role) -> Result<Self, Error> {
        // A non-UTF-8 path cannot be spelled as a reference: it is that path.
        let Some(s) = arg.to_str() else {
            return Ok(if arg.is_dir() {
                Self::Dir(arg.to_owned())
            } else {
                Self::Cfs(arg.to_owned())
            });
        };
        if s.starts_with(SCHEME) {
            return registry::ImageRef::parse(s)
                .map(Self::Docker)
                .map_err(|e| registry::Error::from(e).into());
        }
        Ok(match Reference::parse(s, role) {
            Reference::Oci { dir, tag } => Self::Layout { dir, tag },
            Reference::File(path) => Self::Cfs(path),
            Reference::Dir(path) => Self::Dir(path),
        })
    }

    /// The registry reference `arg` must be, for commands that take nothing else (`pull`);
    /// `takes` says what they take.
    pub fn registry(arg: &str, takes: &str) -> Result<registry::ImageRef, Error> {
        match Self::resolve(Path::new(arg), Role::Source)? {
            Self::Docker(r) => Ok(r),
            other => Err(other.refuse(takes)),
        }
    }

    /// True for a reference into an OCI layout.
    pub fn is_layout(&self) -> bool {
        matches!(self, Self::Layout { .. })
    }

    /// True for an image in a registry.
    pub fn is_registry(&self) -> bool {
        matches!(self, Self::Docker(_))
    }

    /// The usage error of a command that does not take this kind of reference: `takes` says
    /// what it takes instead.
    pub fn refuse(&self, takes: &str) -> Error {
        Error::usage(format!("{self}: {}; expected {takes}", self.kind()))
    }

    /// What kind of reference this is, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Self::Cfs(_) => "an image file",
            Self::Dir(_) => "a directory",
            Self::Layout { tag: Some(_), .. } => "an image in an OCI layout",
            Self::Layout { tag: None, .. } => "an OCI layout",
            Self::Docker(_) => "an image in a registry",
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Layout { dir, tag: Some(t) } => write!(f, "{}:{t}", dir.display()),
            Self::Layout { dir, tag: None } => write!(f, "{}", dir.display()),
            Self::Cfs(p) | Self::Dir(p) => write!(f, "{}", p.display()),
            Self::Docker(r) => write!(f, "{r}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_resolves_and_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = tmp.path().join("layout");
        std::fs::create_dir_all(&layout).unwrap();
        std::fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let tagged = PathBuf::from(format!("{}:v1", layout.display()));
        for (arg, role, want) in [
            (tree.clone(), Role::Source, ImageRef::Dir(tree.clone())),
            (
                layout.clone(),
                Role::Source,
                ImageRef::Layout {
                    dir: layout.clone(),
                    tag: None,
                },
            ),
            (
                tagged.clone(),
                Role::Source,
                ImageRef::Layout {
                    dir: layout.clone(),
                    tag: Some("v1".into()),
                },
            ),
            (
                tmp.path().join("new.cfs"),
                Role::Destination,
                ImageRef::Cfs(tmp.path().join("new.cfs")),
            ),
        ] {
            let got = ImageRef::resolve(&arg, role).unwrap();
            assert_eq!(got, want, "{}", arg.display());
            assert_eq!(got.to_string(), arg.display().to_string());
        }
        let e = ImageRef::Dir(tree.clone()).refuse("an image");
        assert_eq!(e.class(), chunkfs_format::ErrorClass::Usage);
        assert!(
            e.to_string().contains("a directory; expected an image"),
            "{e}"
        );
    }

    #[test]
    fn registry_references() {
        for (arg, shown) in [
            (
                "docker://127.0.0.1:5000/test/app:v1",
                "docker://127.0.0.1:5000/test/app:v1",
            ),
            (
                "docker://debian",
                "docker://docker.io/library/debian:latest",
            ),
        ] {
            let got = ImageRef::resolve(Path::new(arg), Role::Source).unwrap();
            assert!(matches!(got, ImageRef::Docker(_)), "{got:?}");
            assert_eq!(got.to_string(), shown);
            assert_eq!(ImageRef::registry(arg, "x").unwrap().to_string(), shown);
        }
        for bad in [
            "docker://",
            "docker://host:5000/Upper/case:v1",
            "docker://h/r:bad tag",
            "docker://h/r@sha256:abc",
        ] {
            let e = ImageRef::resolve(Path::new(bad), Role::Source).unwrap_err();
            assert_eq!(e.class(), chunkfs_format::ErrorClass::Usage, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = ImageRef::registry("image.cfs", "a docker:// reference").unwrap_err();
        assert!(
            e.to_string()
                .contains("image.cfs: an image file; expected a docker:// reference"),
            "{e}"
        );
    }
}
