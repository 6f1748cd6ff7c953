//! What SOURCE names: a `.cfs` file, a block device holding one, an image in an OCI layout
//! (`oci:DIR[:TAG]`, `DIR:TAG`, or a layout directory holding one image), by the rules of
//! docs/format.md §7.7, or an image in a registry (`docker://HOST[:PORT]/REPO:TAG` or
//! `...@sha256:HEX`, docs/registry.md), mounted lazily through the local store.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use chunkfs_distribution::oci::reference::{Reference, Role};
use chunkfs_distribution::registry::ImageRef;

use super::{Error, ErrorKind};

/// A resolved SOURCE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A `.cfs` image: a regular file or a block device (absolute path).
    Cfs {
        /// The file or device.
        path: PathBuf,
        /// Whether it is a block device.
        block: bool,
    },
    /// An image in an OCI layout.
    Oci {
        /// The layout directory (absolute path).
        dir: PathBuf,
        /// The tag, if one was given.
        tag: Option<String>,
    },
    /// An image in a registry, mounted lazily through the local store.
    Registry {
        /// The reference as parsed.
        reference: ImageRef,
    },
}

impl Source {
    /// Resolves `spec` as given on the command line or in fstab.
    pub fn resolve(spec: &str) -> Result<Self, Error> {
        if spec.is_empty() {
            return Err(Error::new(ErrorKind::Usage, "the image (SOURCE) is empty"));
        }
        if spec.starts_with("docker://") {
            let reference =
                ImageRef::parse(spec).map_err(|e| Error::new(ErrorKind::Usage, e.to_string()))?;
            return Ok(Self::Registry { reference });
        }
        match Reference::parse(spec, Role::Source) {
            Reference::File(path) => {
                let meta = std::fs::metadata(&path).map_err(|e| {
                    let kind = if e.kind() == std::io::ErrorKind::NotFound {
                        ErrorKind::NotFound
                    } else {
                        ErrorKind::Io
                    };
                    Error::new(kind, format!("{spec}: cannot use the image: {e}"))
                })?;
                let block = meta.file_type().is_block_device();
                if !block && !meta.is_file() {
                    return Err(Error::new(
                        ErrorKind::Usage,
                        format!("{spec}: neither a regular file nor a block device"),
                    ));
                }
                Ok(Self::Cfs {
                    path: absolute(&path)?,
                    block,
                })
            }
            Reference::Oci { dir, tag } => {
                if !dir.is_dir() {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("{spec}: no such image file or OCI layout directory"),
                    ));
                }
                Ok(Self::Oci {
                    dir: absolute(&dir)?,
                    tag,
                })
            }
            Reference::Dir(dir) => Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "{}: a directory, not an image: `chunkfs pack` it first",
                    dir.display()
                ),
            )),
        }
    }

    /// What `/proc/mounts` shows as the mount's source: the image's path, `oci:DIR[:TAG]`, or
    /// the registry reference (`docker://HOST/REPO:TAG`).
    pub fn display(&self) -> String {
        match self {
            Self::Registry { reference } => reference.to_string(),
            Self::Cfs { path, .. } => path.display().to_string(),
            Self::Oci { dir, tag: Some(t) } => format!("oci:{}:{t}", dir.display()),
            Self::Oci { dir, tag: None } => format!("oci:{}", dir.display()),
        }
    }
}

/// The canonical absolute path (symlinks resolved), so the mount table names the real file.
fn absolute(p: &Path) -> Result<PathBuf, Error> {
    std::fs::canonicalize(p).map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_layouts_and_refusals() {
        let dir = std::env::temp_dir().join(format!("chunkfs-source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("layout")).unwrap();
        std::fs::write(dir.join("layout/oci-layout"), b"{}").unwrap();
        std::fs::write(dir.join("img.cfs"), b"x").unwrap();
        let d = std::fs::canonicalize(&dir).unwrap();

        let s = Source::resolve(dir.join("img.cfs").to_str().unwrap()).unwrap();
        assert_eq!(
            s,
            Source::Cfs {
                path: d.join("img.cfs"),
                block: false
            }
        );
        assert_eq!(s.display(), d.join("img.cfs").display().to_string());

        let spec = format!("{}:v1", dir.join("layout").display());
        let s = Source::resolve(&spec).unwrap();
        assert_eq!(
            s.display(),
            format!("oci:{}:v1", d.join("layout").display())
        );
        let s = Source::resolve(&format!("oci:{}", dir.join("layout").display())).unwrap();
        assert!(matches!(s, Source::Oci { tag: None, .. }));

        let e = Source::resolve(dir.join("missing.cfs").to_str().unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = Source::resolve(&format!("{}/nolayout:v1", dir.display())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = Source::resolve(dir.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("a directory, not an image"), "{e}");
        let e = Source::resolve("/dev/null").unwrap_err();
        assert!(e.to_string().contains("neither"), "{e}");
        let s = Source::resolve("docker://127.0.0.1:5000/test/app:v1").unwrap();
        assert!(matches!(s, Source::Registry { .. }));
        assert_eq!(s.display(), "docker://127.0.0.1:5000/test/app:v1");
        let e = Source::resolve("docker://").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
