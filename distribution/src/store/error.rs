//! Why a store operation failed. Every message names the file, pack or blob concerned and what
//! is wrong with it; [`Error::class`] tells the caller what kind of failure it is (a FUSE reader
//! answers EIO to a `Network` error and asks again on the next read).

use std::io;
use std::ops::Range;
use std::path::PathBuf;

use chunkfs_format::ErrorClass;
use chunkfs_format::digest::Digest;

use crate::source::SourceError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the store could not be read, written, created or removed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`reading the pack state`, `writing frames`, ...).
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A file of the store is damaged: its structure, a limit or a digest does not check.
    #[error("{}: {problem}", path.display())]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The source could not give the bytes of a blob (a network failure: ask again later).
    #[error("fetching bytes {}..{} of blob {blob} from {from}: {source}", range.start, range.end)]
    Fetch {
        /// The blob.
        blob: Digest,
        /// The byte range of the blob asked for.
        range: Range<u64>,
        /// The source's name.
        from: String,
        /// What the source said.
        source: SourceError,
    },
    /// Bytes the source served do not check: a frame's header, decompression, checksum,
    /// length or sha256 is wrong, or a pack's index is malformed. Nothing of them was stored.
    #[error("{from}: pack {pack}: {problem}; nothing of it was stored")]
    BadData {
        /// The pack blob.
        pack: Digest,
        /// The source's name.
        from: String,
        /// What is wrong (names the frame, its offset and its digest).
        problem: String,
    },
    /// A blob fetched or stored does not match its digest, or is larger than allowed.
    #[error("blob {digest} from {from}: {problem}")]
    BadBlob {
        /// The blob's digest.
        digest: Digest,
        /// Where it came from (a source's name or a file).
        from: String,
        /// What is wrong.
        problem: String,
    },
    /// An image's manifest, metadata and packs disagree (a chunk in none of its packs, a
    /// length that differs, a pack known here with another length).
    #[error("{what}: {problem}")]
    Image {
        /// The image (manifest digest or reference).
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// The caller asked for something malformed (a range past a pack's end, a bad name).
    #[error("{0}")]
    Usage(String),
    /// The image needs something the store cannot give it (e.g. 512-byte-aligned frames for
    /// the cluster layout when its packs are not aligned).
    #[error("{0}")]
    Unsupported(String),
    /// `gc` found a record it must follow damaged, and removed nothing.
    #[error("{}: {problem}; gc removed nothing", path.display())]
    Roots {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The class of the failure: `Network` when the source failed (retrying may succeed), `Corrupt`
/// for bytes or files that do not check, `Io` for local file errors.
impl chunkfs_format::Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Io { .. } => ErrorClass::Io,
            Error::CorruptFile { .. }
            | Error::BadData { .. }
            | Error::BadBlob { .. }
            | Error::Image { .. }
            | Error::Roots { .. } => ErrorClass::Corrupt,
            Error::Fetch { source, .. } => source.class(),
            Error::Usage(_) => ErrorClass::Usage,
            Error::Unsupported(_) => ErrorClass::Unsupported,
        }
    }
}

impl Error {
    /// An [`Error::Io`] maker for `map_err`.
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        what: &'static str,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, what, source }
    }

    /// An [`Error::CorruptFile`].
    pub(crate) fn corrupt(path: impl Into<PathBuf>, problem: impl Into<String>) -> Error {
        Error::CorruptFile {
            path: path.into(),
            problem: problem.into(),
        }
    }
}
