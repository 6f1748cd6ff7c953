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

    /// The class of the failure.
    pub fn class(&self) -> ErrorClass {
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
