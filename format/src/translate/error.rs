//! Why a translation failed.

use crate::model::ModelError;

/// Why an image could not be translated. Each variant names what was refused and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image metadata breaks an invariant of docs/format.md §3.4.
    #[error("invalid image metadata: {0}")]
    Model(#[from] ModelError),
    /// The number of chunk locations differs from the number of chunks.
    #[error("{got} chunk locations given for {expected} chunks")]
    ChunkCount {
        /// Chunks in the image.
        expected: usize,
        /// Locations given.
        got: usize,
    },
    /// A chunk's location cannot be described.
    #[error("chunk {chunk}: {problem}")]
    Chunk {
        /// Index of the chunk.
        chunk: u32,
        /// What is wrong.
        problem: String,
    },
    /// The layout is inconsistent (block size, offsets, devices).
    #[error("layout: {0}")]
    DeviceLayout(String),
    /// An inode cannot be expressed in EROFS with this layout.
    #[error("inode {inode}: {problem}")]
    Inode {
        /// Index of the inode (`u32::MAX` for the packed inode of small files).
        inode: u32,
        /// What cannot be expressed.
        problem: String,
    },
    /// The descriptor would exceed an address or size limit of EROFS.
    #[error("the descriptor is too large: {0}")]
    TooLarge(String),
    /// The cluster layout was asked for frames that do not all end on 512-byte boundaries.
    #[error(
        "the cluster layout needs chunk frames that end on 512-byte boundaries (an image packed with --align 512)"
    )]
    Unaligned,
    /// The primary device length passed to [`BuiltDescriptor::superblock_area`](super::BuiltDescriptor::superblock_area) does not fit.
    #[error("primary device length {len}: {problem}")]
    PrimaryLen {
        /// The length given.
        len: u64,
        /// What is wrong with it.
        problem: String,
    },
}

impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        use crate::ErrorClass as C;
        match self {
            Self::Model(_) | Self::ChunkCount { .. } | Self::Chunk { .. } => C::Corrupt,
            Self::DeviceLayout(_) | Self::PrimaryLen { .. } | Self::Unaligned => C::Usage,
            // Valid metadata that EROFS (or this layout) cannot express.
            Self::Inode { .. } | Self::TooLarge(_) => C::Unsupported,
        }
    }
}

/// Why [`BuiltDescriptor::write_standalone`](super::BuiltDescriptor::write_standalone) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandaloneError {
    /// Some frames are in the primary device, which a standalone file does not contain.
    #[error(
        "chunk frames are placed in the primary device; a standalone descriptor needs them on extra devices"
    )]
    FramesInPrimary,
    /// The superblock area could not be built.
    #[error(transparent)]
    Translate(Error),
    /// Writing failed.
    #[error("cannot write the descriptor: {0}")]
    Io(#[source] std::io::Error),
}

impl crate::Classify for StandaloneError {
    fn class(&self) -> crate::ErrorClass {
        match self {
            Self::FramesInPrimary => crate::ErrorClass::Usage,
            Self::Translate(e) => e.class(),
            Self::Io(e) => e.class(),
        }
    }
}

/// Index used in [`Error::Inode`] for the packed inode (it has no index in the image).
pub const PACKED_INODE: u32 = u32::MAX;
