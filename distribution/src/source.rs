//! Where the bytes of a remote image's blobs come from: the seam between the registry client
//! (`registry/`), which fetches them, and the local store (`store/`), which checks and keeps
//! them. Tests put a local directory or a hostile server behind it.

use std::ops::Range;

use chunkfs_format::ErrorClass;
use chunkfs_format::digest::Digest;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct SourceError {
    /// Network (retry later), Corrupt (the server sent bytes that do not check), Usage, ...
    pub class: ErrorClass,
    /// What went wrong, naming the blob, the server and the range.
    pub what: String,
}

impl SourceError {
    /// An error of class `class`.
    pub fn new(class: ErrorClass, what: impl Into<String>) -> Self {
        SourceError {
            class,
            what: what.into(),
        }
    }
}

impl chunkfs_format::Classify for SourceError {
    fn class(&self) -> ErrorClass {
        self.class
    }
}

/// A place that serves the blobs of one image's repository by digest.
pub trait BlobSource: Send + Sync {
    /// Exactly the bytes `range` of the blob `blob` (whose length is `blob_len`), or an error:
    /// never fewer, more or other bytes than the server claims for that range. The caller checks
    /// the frames inside against their digests.
    fn read_range(
        &self,
        blob: &Digest,
        blob_len: u64,
        range: Range<u64>,
    ) -> Result<Vec<u8>, SourceError>;

    /// The whole blob `blob`, at most `max_len` bytes, checked against its digest.
    fn read_blob(&self, blob: &Digest, max_len: u64) -> Result<Vec<u8>, SourceError>;

    /// A short name for messages: `docker://host/repo`, a directory, ...
    fn name(&self) -> String;
}

/// Counters of a [`LayoutSource`]: what was asked of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Requests made (ranges and whole blobs), failed ones included.
    pub requests: u64,
    /// Bytes served.
    pub bytes: u64,
    /// The largest answer, in bytes.
    pub largest: u64,
}

/// A [`BlobSource`] over the blobs of a local OCI image layout (`DIR/blobs/sha256/HEX`): for
/// tests and offline use. It counts what it serves and, for tests, can be told to fail or to
/// damage its answers.
///
/// ```
/// use chunkfs_distribution::source::{BlobSource, LayoutSource};
/// let source = LayoutSource::new("/var/lib/images".as_ref());
/// source.fail_next(1); // the next request fails with a Network error
/// assert_eq!(source.stats().requests, 0);
/// assert_eq!(source.name(), "oci:/var/lib/images");
/// ```
#[derive(Debug)]
pub struct LayoutSource {
    dir: std::path::PathBuf,
    requests: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    largest: std::sync::atomic::AtomicU64,
    faults: std::sync::Mutex<Faults>,
}

/// Failures a test asked a [`LayoutSource`] for.
#[derive(Debug, Default)]
struct Faults {
    fail: u64,
    corrupt: u64,
    delay: std::time::Duration,
}

impl LayoutSource {
    /// A source serving the blobs of the layout in `dir`.
    pub fn new(dir: &std::path::Path) -> Self {
        LayoutSource {
            dir: dir.to_owned(),
            requests: Default::default(),
            bytes: Default::default(),
            largest: Default::default(),
            faults: Default::default(),
        }
    }

    /// What was asked so far.
    pub fn stats(&self) -> SourceStats {
        use std::sync::atomic::Ordering::Relaxed;
        SourceStats {
            requests: self.requests.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            largest: self.largest.load(Relaxed),
        }
    }

    /// The next `n` requests fail with a `Network` error (a registry that went away).
    pub fn fail_next(&self, n: u64) {
        self.faults().fail = n;
    }

    /// The next `n` requests answer with one byte changed (a registry serving wrong bytes).
    pub fn corrupt_next(&self, n: u64) {
        self.faults().corrupt = n;
    }

    /// Every request first sleeps `delay` (a slow registry, so tests can act mid-fetch).
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.faults().delay = delay;
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a request and applies the faults asked for: `Ok(true)` to damage the answer.
    fn begin(&self, what: &str) -> Result<bool, SourceError> {
        use std::sync::atomic::Ordering::Relaxed;
        self.requests.fetch_add(1, Relaxed);
        let (fail, corrupt, delay) = {
            let mut f = self.faults();
            let fail = f.fail > 0;
            let corrupt = !fail && f.corrupt > 0;
            if fail {
                f.fail -= 1;
            } else if corrupt {
                f.corrupt -= 1;
            }
            (fail, corrupt, f.delay)
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if fail {
            return Err(SourceError::new(
                ErrorClass::Network,
                format!("{}: {what}: injected failure", self.name()),
            ));
        }
        Ok(corrupt)
    }

    fn finish(&self, mut bytes: Vec<u8>, damage: bool) -> Vec<u8> {
        use std::sync::atomic::Ordering::Relaxed;
        if damage {
            let mid = bytes.len() / 2;
            if let Some(b) = bytes.get_mut(mid) {
                *b ^= 0x55;
            }
        }
        self.bytes.fetch_add(bytes.len() as u64, Relaxed);
        self.largest.fetch_max(bytes.len() as u64, Relaxed);
        bytes
    }

    fn open(&self, blob: &Digest) -> Result<(std::fs::File, u64, std::path::PathBuf), SourceError> {
        let path = self.dir.join("blobs/sha256").join(blob.to_hex());
        let file = std::fs::File::open(&path)
            .map_err(|e| SourceError::new(ErrorClass::Io, format!("{}: {e}", path.display())))?;
        let len = file
            .metadata()
            .map_err(|e| SourceError::new(ErrorClass::Io, format!("{}: {e}", path.display())))?
            .len();
        Ok((file, len, path))
    }
}

impl BlobSource for LayoutSource {
    fn read_range(
        &self,
        blob: &Digest,
        blob_len: u64,
        range: Range<u64>,
    ) -> Result<Vec<u8>, SourceError> {
        let what = format!("blob {blob} bytes {}..{}", range.start, range.end);
        let damage = self.begin(&what)?;
        let (file, len, path) = self.open(blob)?;
        if len != blob_len {
            return Err(SourceError::new(
                ErrorClass::Corrupt,
                format!("{}: {len} bytes, {blob_len} expected", path.display()),
            ));
        }
        if range.start > range.end || range.end > len {
            return Err(SourceError::new(
                ErrorClass::Usage,
                format!("{}: {what} is not inside its {len} bytes", path.display()),
            ));
        }
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, range.start)
            .map_err(|e| SourceError::new(ErrorClass::Io, format!("{}: {e}", path.display())))?;
        Ok(self.finish(buf, damage))
    }

    fn read_blob(&self, blob: &Digest, max_len: u64) -> Result<Vec<u8>, SourceError> {
        let damage = self.begin(&format!("blob {blob}"))?;
        let (file, len, path) = self.open(blob)?;
        if len > max_len {
            return Err(SourceError::new(
                ErrorClass::Corrupt,
                format!("{}: {len} bytes, more than {max_len}", path.display()),
            ));
        }
        let mut buf = Vec::with_capacity(len as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, max_len), &mut buf)
            .map_err(|e| SourceError::new(ErrorClass::Io, format!("{}: {e}", path.display())))?;
        if Digest::of(&buf) != *blob {
            return Err(SourceError::new(
                ErrorClass::Corrupt,
                format!("{}: does not match its digest", path.display()),
            ));
        }
        Ok(self.finish(buf, damage))
    }

    fn name(&self) -> String {
        format!("oci:{}", self.dir.display())
    }
}
