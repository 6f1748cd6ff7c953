//! Telling an OCI reference, an image file and a directory apart on the command line
//! (docs/format.md §7.7).
//!
//! 1. `oci:PATH` or `oci:PATH:TAG` is always a layout (skopeo's spelling).
//! 2. A string that names an existing path is that path: a directory holding `oci-layout` is a
//!    layout without a tag, any other directory is a source tree, anything else is a file.
//! 3. Otherwise `PATH:TAG`, where `TAG` is a valid tag, is a layout and a tag, unless, as a
//!    destination, the whole string ends in `.cfs` (then it is a file).
//! 4. Anything else is a file.

use std::path::{Path, PathBuf};

/// Whether the string names what is read or what is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read from (`pack SRC`, `mount SRC`).
    Source,
    /// Written to (`pack SRC DEST`).
    Destination,
}

/// What a command-line image argument names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// An OCI layout directory and optionally a tag.
    Oci {
        /// The layout directory.
        dir: PathBuf,
        /// The tag (`org.opencontainers.image.ref.name`).
        tag: Option<String>,
    },
    /// A `.cfs` image file (or a block device holding one).
    File(PathBuf),
    /// A directory tree to pack.
    Dir(PathBuf),
}

/// True if `s` is a valid OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-';
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| ok(c))
}

/// Splits `PATH:TAG` at the last colon when the suffix is a valid tag and the path is not empty.
fn split_tag(s: &str) -> Option<(&str, &str)> {
    let (path, tag) = s.rsplit_once(':')?;
    (!path.is_empty() && is_valid_tag(tag)).then_some((path, tag))
}

impl Reference {
    /// Classifies `s` by the rules of the module documentation.
    pub fn parse(s: &str, role: Role) -> Self {
        if let Some(rest) = s.strip_prefix("oci:") {
            return match split_tag(rest) {
                Some((dir, tag)) if !Path::new(rest).exists() => Self::Oci {
                    dir: dir.into(),
                    tag: Some(tag.into()),
                },
                _ => Self::Oci {
                    dir: rest.into(),
                    tag: None,
                },
            };
        }
        let path = Path::new(s);
        if path.exists() {
            return if path.is_dir() {
                if crate::oci::layout::Layout::is_layout(path) {
                    Self::Oci {
                        dir: path.into(),
                        tag: None,
                    }
                } else {
                    Self::Dir(path.into())
                }
            } else {
                Self::File(path.into())
            };
        }
        if role == Role::Destination && s.ends_with(".cfs") {
            return Self::File(path.into());
        }
        match split_tag(s) {
            Some((dir, tag)) => Self::Oci {
                dir: dir.into(),
                tag: Some(tag.into()),
            },
            None => Self::File(path.into()),
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Oci { dir, tag: Some(t) } => write!(f, "{}:{t}", dir.display()),
            Self::Oci { dir, tag: None } => write!(f, "{}", dir.display()),
            Self::File(p) | Self::Dir(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert!(is_valid_tag("latest"));
        assert!(is_valid_tag("v1.2_3-rc"));
        assert!(!is_valid_tag(".hidden"));
        assert!(!is_valid_tag("a/b"));
        assert!(!is_valid_tag(""));
        assert!(!is_valid_tag(&"a".repeat(129)));
    }

    #[test]
    fn classification() {
        let tmp = crate::oci::test_dir();
        let root = tmp.path();
        let tree = root.join("tree");
        std::fs::create_dir(&tree).unwrap();
        let file = root.join("img.cfs");
        std::fs::write(&file, b"x").unwrap();
        let layout = root.join("layout");
        crate::oci::layout::Layout::create(&layout).unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_owned();

        assert_eq!(
            Reference::parse(&s(&tree), Role::Source),
            Reference::Dir(tree.clone())
        );
        assert_eq!(
            Reference::parse(&s(&file), Role::Source),
            Reference::File(file.clone())
        );
        assert_eq!(
            Reference::parse(&s(&layout), Role::Source),
            Reference::Oci {
                dir: layout.clone(),
                tag: None
            }
        );
        assert_eq!(
            Reference::parse(&format!("{}:v1", s(&layout)), Role::Source),
            Reference::Oci {
                dir: layout.clone(),
                tag: Some("v1".into())
            }
        );
        let new = root.join("new");
        assert_eq!(
            Reference::parse(&format!("{}:v1", s(&new)), Role::Destination),
            Reference::Oci {
                dir: new.clone(),
                tag: Some("v1".into())
            }
        );
        let cfs_dest = format!("{}:v1.cfs", s(&new));
        assert_eq!(
            Reference::parse(&cfs_dest, Role::Destination),
            Reference::File(cfs_dest.clone().into())
        );
        assert_eq!(
            Reference::parse(&format!("oci:{}:v1.cfs", s(&new)), Role::Destination),
            Reference::Oci {
                dir: new.clone(),
                tag: Some("v1.cfs".into())
            }
        );
        assert_eq!(
            Reference::parse(&s(&new), Role::Destination),
            Reference::File(new.clone())
        );
        assert_eq!(
            Reference::parse(&format!("oci:{}", s(&layout)), Role::Source),
            Reference::Oci {
                dir: layout,
                tag: None
            }
        );
    }
}
