//! An OCI image layout directory: `oci-layout`, `index.json` and `blobs/sha256/<hex>`
//! (docs/format.md §7.1).
//!
//! Crash safety: every file is written under a temporary name in the layout directory, fsynced
//! and renamed into place, and the directory is fsynced; blobs are always complete before
//! `index.json` names them, and `index.json` is replaced atomically. A crash therefore leaves the
//! previous or the new `index.json` and at worst some unreferenced blobs or temporary files,
//! which `gc` removes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::oci::spec::{self, ContentDescriptor, Index, LayoutMarker, SpecError};
use chunkfs_format::digest::{Digest, Hasher};
use chunkfs_format::partial::PARTIAL;
use chunkfs_format::{Classify, ErrorClass};

/// Name of the layout marker file.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// Name of the index file.
pub const INDEX_FILE: &str = "index.json";
/// Prefix of temporary files in the layout directory; `gc` removes leftovers.
pub const TEMP_PREFIX: &str = ".chunkfs-tmp-";
/// The layout version chunkfs writes.
pub const LAYOUT_VERSION: &str = "1.0.0";
/// Largest `index.json` read, in bytes.
pub const INDEX_MAX: u64 = 64 << 20;
/// Largest manifest or index blob read, in bytes (registries refuse manifests above 4 MiB).
pub const MANIFEST_MAX: u64 = 4 << 20;

/// Why a layout operation failed; every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a file of the layout.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The directory has no `oci-layout` file.
    #[error("{}: not an OCI image layout (no oci-layout file)", dir.display())]
    NotALayout {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory exists, is not a layout and is not empty, so chunkfs will not write into it.
    #[error("{}: exists, is not empty and is not an OCI image layout", dir.display())]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// `oci-layout` names a version chunkfs does not know.
    #[error("{}: unsupported imageLayoutVersion {version:?}", path.display())]
    Version {
        /// The marker file.
        path: PathBuf,
        /// The version found.
        version: String,
    },
    /// A document or descriptor is malformed.
    #[error("{}: {source}", path.display())]
    Spec {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: SpecError,
    },
    /// `index.json` is missing: the layout is incomplete (not unreadable).
    #[error("{}: index.json is missing", dir.display())]
    MissingIndex {
        /// The layout.
        dir: PathBuf,
    },
    /// A blob is missing.
    #[error("{}: blob {digest} is missing", path.display())]
    MissingBlob {
        /// Where it should be.
        path: PathBuf,
        /// Its digest.
        digest: String,
    },
    /// A blob's length differs from its descriptor.
    #[error("{}: blob is {actual} bytes, its descriptor says {expected}", path.display())]
    SizeMismatch {
        /// The blob file.
        path: PathBuf,
        /// Size in the descriptor.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// A blob's sha256 differs from its name.
    #[error("{}: content has digest {actual}, not the {expected} it is named by", path.display())]
    DigestMismatch {
        /// The blob file.
        path: PathBuf,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// A blob is larger than chunkfs reads for its kind.
    #[error("{}: {size} bytes is more than the {limit} allowed for a {what}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
        /// What kind of document it is.
        what: &'static str,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Io { source, .. } => source.class(),
            // chunkfs will not write into a directory that is not a layout and holds files.
            Self::NotEmpty { .. } => ErrorClass::Usage,
            // A directory named as a layout without the oci-layout marker: a damaged layout (a
            // missing directory is an I/O error).
            Self::NotALayout { .. } => ErrorClass::Corrupt,
            Self::Version { .. } => ErrorClass::Unsupported,
            Self::Spec { source, .. } => source.class(),
            // A layout whose index or blobs are missing is incomplete, not unreadable.
            Self::MissingIndex { .. }
            | Self::MissingBlob { .. }
            | Self::SizeMismatch { .. }
            | Self::DigestMismatch { .. }
            | Self::TooLarge { .. } => ErrorClass::Corrupt,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// An OCI image layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens an existing layout, checking its `oci-layout` marker.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let marker = dir.join(OCI_LAYOUT_FILE);
        let bytes = match fs::read(&marker) {
            Ok(b) => b,
            // A missing directory is an I/O error; a directory without the marker is not a layout.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => {
                return Err(io_err(dir)(e));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotALayout {
                    dir: dir.to_owned(),
                });
            }
            Err(e) => return Err(io_err(&marker)(e)),
        };
        let m: LayoutMarker =
            spec::from_json(OCI_LAYOUT_FILE, &bytes).map_err(|source| Error::Spec {
                path: marker.clone(),
                source,
            })?;
        if !m.image_layout_version.starts_with("1.") {
            return Err(Error::Version {
                path: marker,
                version: m.image_layout_version,
            });
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// True if `dir` holds an `oci-layout` marker.
    pub fn is_layout(dir: &Path) -> bool {
        dir.join(OCI_LAYOUT_FILE).is_file()
    }

    /// Opens the layout in `dir`, creating it (and `dir`) if needed. Refuses a directory that
    /// holds anything but a layout, so a typo never scatters blobs into an unrelated directory.
    /// Call with the layout's exclusive lock held ([`crate::oci::lock::LayoutLock`]).
    pub fn create(dir: &Path) -> Result<Self, Error> {
        if Self::is_layout(dir) {
            return Self::open(dir);
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let name = entry.map_err(io_err(dir))?.file_name();
            let name = name.to_string_lossy();
            if name != crate::oci::lock::LOCK_FILE && !name.starts_with(TEMP_PREFIX) {
                return Err(Error::NotEmpty {
                    dir: dir.to_owned(),
                });
            }
        }
        let layout = Self {
            dir: dir.to_owned(),
        };
        let blobs = layout.blobs_dir();
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        layout.write_index(&Index::default())?;
        let marker = spec::to_json(&LayoutMarker {
            image_layout_version: LAYOUT_VERSION.into(),
        });
        // The marker goes last: a layout is only recognised once it is complete.
        layout.replace_file(OCI_LAYOUT_FILE, &marker)?;
        Ok(layout)
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `blobs/sha256`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    /// Where the blob with this digest lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.to_hex())
    }

    /// Where the blob a descriptor names lives; refuses digests other than sha256.
    pub fn descriptor_path(&self, desc: &ContentDescriptor) -> Result<PathBuf, Error> {
        let digest = desc.sha256().map_err(|source| Error::Spec {
            path: self.dir.join(INDEX_FILE),
            source,
        })?;
        Ok(self.blob_path(&digest))
    }

    /// Reads and parses `index.json`.
    pub fn read_index(&self) -> Result<Index, Error> {
        let path = self.dir.join(INDEX_FILE);
        let bytes = match read_bounded(&path, INDEX_MAX, "index.json") {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingIndex {
                    dir: self.dir.clone(),
                });
            }
            other => other?,
        };
        spec::parse_index(INDEX_FILE, &bytes).map_err(|source| Error::Spec { path, source })
    }

    /// Replaces `index.json` atomically.
    pub fn write_index(&self, index: &Index) -> Result<(), Error> {
        self.replace_file(INDEX_FILE, &spec::to_json(index))
    }

    /// Reads a small blob (a manifest, config or metadata blob) in full, checking its size
    /// against the descriptor and `limit`, and its sha256 against its name.
    pub fn read_blob(
        &self,
        desc: &ContentDescriptor,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, Error> {
        let path = self.descriptor_path(desc)?;
        let digest = desc.sha256().map_err(|source| Error::Spec {
            path: path.clone(),
            source,
        })?;
        if desc.size > limit {
            return Err(Error::TooLarge {
                path,
                size: desc.size,
                limit,
                what,
            });
        }
        let bytes = match read_bounded(&path, limit, what) {
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingBlob {
                    path,
                    digest: desc.digest.clone(),
                });
            }
            other => other?,
        };
        if bytes.len() as u64 != desc.size {
            return Err(Error::SizeMismatch {
                path,
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                path,
                expected: digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Opens a large blob (a layer or pack) for streaming, checking that its length matches
    /// the descriptor. The caller verifies the digest while reading, if it needs to.
    pub fn open_blob(&self, desc: &ContentDescriptor) -> Result<(File, PathBuf), Error> {
        let path = self.descriptor_path(desc)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingBlob {
                    path,
                    digest: desc.digest.clone(),
                });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len != desc.size {
            return Err(Error::SizeMismatch {
                path,
                expected: desc.size,
                actual: len,
            });
        }
        Ok((file, path))
    }

    /// Starts writing a blob under a temporary name.
    pub fn blob_writer(&self) -> Result<BlobWriter, Error> {
        let (file, tmp) = self.temp_file()?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            hasher: Hasher::new(),
            len: 0,
            blobs: self.blobs_dir(),
        })
    }

    /// Stores `bytes` as a blob; returns its digest and whether it was new.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<(Digest, bool), Error> {
        let digest = Digest::of(bytes);
        if holds(&self.blob_path(&digest), &digest) {
            return Ok((digest, false));
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_err(&w.tmp))?;
        let (d, _, new) = w.finish()?;
        Ok((d, new))
    }

    /// Writes `name` in the layout directory atomically (temporary file, fsync, rename, fsync
    /// of the directory).
    fn replace_file(&self, name: &str, bytes: &[u8]) -> Result<(), Error> {
        let (mut file, tmp) = self.temp_file()?;
        let guard = TempGuard(Some(tmp.clone()));
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        let dest = self.dir.join(name);
        fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        PARTIAL.untrack(&tmp);
        guard.disarm();
        sync_dir(&self.dir)
    }

    fn temp_file(&self) -> Result<(File, PathBuf), Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{TEMP_PREFIX}{}-{nanos}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        PARTIAL.track(&path);
        Ok((file, path))
    }
}

/// Reads a whole file that must not exceed `limit` bytes.
fn read_bounded(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, Error> {
    let file = File::open(path).map_err(io_err(path))?;
    let size = file.metadata().map_err(io_err(path))?.len();
    if size > limit {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            size,
            limit,
            what,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // `take` guards against a file that grows while it is read.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit,
            what,
        });
    }
    Ok(bytes)
}

/// True if `path` is a regular file whose sha256 is `digest`.
fn holds(path: &Path, digest: &Digest) -> bool {
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let mut h = Hasher::new();
    io::copy(&mut file, &mut h).is_ok() && h.finish() == *digest
}

/// fsyncs a directory so that renames into it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Removes a temporary file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(&p);
            PARTIAL.untrack(&p);
        }
    }
}

/// A blob being written: hashed as it is written, renamed to its digest by [`BlobWriter::finish`].
/// Dropped unfinished, it removes its temporary file.
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    hasher: Hasher,
    len: u64,
    blobs: PathBuf,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The temporary file's path, for error messages.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// fsyncs the blob and renames it to its digest; returns the digest, the length and whether
    /// the blob was new (an identical blob already present is kept and the copy dropped).
    pub fn finish(mut self) -> Result<(Digest, u64, bool), Error> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io_err(&self.tmp)(io::Error::other("blob writer already finished")))?;
        let digest = std::mem::take(&mut self.hasher).finish();
        let dest = self.blobs.join(digest.to_hex());
        // An existing blob is kept only if it is intact; a damaged one is replaced.
        if holds(&dest, &digest) {
            drop(file);
            let _ = fs::remove_file(&self.tmp);
            PARTIAL.untrack(&self.tmp);
            return Ok((digest, self.len, false));
        }
        file.sync_all().map_err(io_err(&self.tmp))?;
        drop(file);
        fs::rename(&self.tmp, &dest).map_err(io_err(&dest))?;
        PARTIAL.untrack(&self.tmp);
        sync_dir(&self.blobs)?;
        Ok((digest, self.len, true))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
            PARTIAL.untrack(&self.tmp);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::oci::media_type;

    use crate::oci::test_dir as tempdir;

    #[test]
    fn create_put_read_round_trip() {
        let tmp = tempdir();
        let dir = tmp.path().join("l");
        let layout = Layout::create(&dir).unwrap();
        assert!(Layout::is_layout(&dir));
        assert!(layout.read_index().unwrap().manifests.is_empty());
        let (d, new) = layout.put_blob(b"hello").unwrap();
        assert!(new);
        assert!(!layout.put_blob(b"hello").unwrap().1);
        let desc = ContentDescriptor::for_bytes(media_type::OCI_CONFIG, b"hello");
        assert_eq!(layout.read_blob(&desc, 100, "config").unwrap(), b"hello");
        assert_eq!(
            layout.blob_path(&d),
            dir.join("blobs/sha256").join(d.to_hex())
        );
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(TEMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn read_blob_checks_size_digest_and_limit() {
        let tmp = tempdir();
        let layout = Layout::create(&tmp.path().join("l")).unwrap();
        let (d, _) = layout.put_blob(b"hello").unwrap();
        let mut desc = ContentDescriptor::for_bytes(media_type::OCI_CONFIG, b"hello");
        desc.size = 4;
        assert!(matches!(
            layout.read_blob(&desc, 100, "config"),
            Err(Error::SizeMismatch { .. })
        ));
        desc.size = 5;
        assert!(matches!(
            layout.read_blob(&desc, 4, "config"),
            Err(Error::TooLarge { .. })
        ));
        fs::write(layout.blob_path(&d), b"jello").unwrap();
        let err = layout.read_blob(&desc, 100, "config").unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        let missing = ContentDescriptor::for_bytes(media_type::OCI_CONFIG, b"other");
        assert!(matches!(
            layout.read_blob(&missing, 100, "config"),
            Err(Error::MissingBlob { .. })
        ));
    }

    #[test]
    fn refuses_non_empty_foreign_directory() {
        let tmp = tempdir();
        fs::write(tmp.path().join("precious"), b"x").unwrap();
        assert!(matches!(
            Layout::create(tmp.path()),
            Err(Error::NotEmpty { .. })
        ));
        assert!(matches!(
            Layout::open(tmp.path()),
            Err(Error::NotALayout { .. })
        ));
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let tmp = tempdir();
        let layout = Layout::create(&tmp.path().join("l")).unwrap();
        let mut w = layout.blob_writer().unwrap();
        w.write_all(b"partial").unwrap();
        let tmp_path = w.temp_path().to_owned();
        drop(w);
        assert!(!tmp_path.exists());
    }
}
