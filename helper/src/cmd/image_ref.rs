//! What an image argument names: the one resolver behind every command's SOURCE and DEST
//! (`pack`, `unpack`, `verify`, `descriptor`, `gc`, `rm`), by the rules of docs/format.md §7.7.
//!
//! A new kind of reference (a registry's `docker://HOST/REPO:TAG`) is one more [`ImageRef`]
//! variant here; the compiler then lists every command that must decide what to do with it,
//! and a command that does not take it answers with [`ImageRef::refuse`].

use std::fmt;
use std::path::{Path, PathBuf};

use chunkfs_distribution::oci::reference::Reference;
pub use chunkfs_distribution::oci::reference::Role;

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
}

impl ImageRef {
    /// What `arg` names when it is read (`Role::Source`) or written (`Role::Destination`).
    pub fn resolve(arg: &Path, role: Role) -> Self {
        // A non-UTF-8 path cannot be spelled as a reference: it is that path.
        let Some(s) = arg.to_str() else {
            return if arg.is_dir() {
                Self::Dir(arg.to_owned())
            } else {
                Self::Cfs(arg.to_owned())
            };
        };
        match Reference::parse(s, role) {
            Reference::Oci { dir, tag } => Self::Layout { dir, tag },
            Reference::File(path) => Self::Cfs(path),
            Reference::Dir(path) => Self::Dir(path),
        }
    }

    /// True for a reference into an OCI layout.
    pub fn is_layout(&self) -> bool {
        matches!(self, Self::Layout { .. })
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
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Layout { dir, tag: Some(t) } => write!(f, "{}:{t}", dir.display()),
            Self::Layout { dir, tag: None } => write!(f, "{}", dir.display()),
            Self::Cfs(p) | Self::Dir(p) => write!(f, "{}", p.display()),
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
            let got = ImageRef::resolve(&arg, role);
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
}
