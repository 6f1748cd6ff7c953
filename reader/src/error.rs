//! Errors of opening an image and of reading from it.

use std::io;
use std::path::PathBuf;

use chunkfs_kernel_abi::{AbiError, ParseError};

/// Why [`crate::Reader::open`] refused its inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A device file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The descriptor failed validation.
    #[error("{path}: invalid EROFS descriptor: {source}")]
    Descriptor {
        /// The primary device.
        path: PathBuf,
        /// What is wrong, and in which inode.
        source: ParseError,
    },
    /// A digest table failed validation.
    #[error("digest table {index}: {source}")]
    DigestTable {
        /// Position of the table in [`crate::Config::digests`].
        index: usize,
        /// What is wrong.
        source: AbiError,
    },
    /// A digest table given for one device lists frames of several devices.
    #[error("digest table {index} is for device {device} but lists several device ids")]
    MixedDevices {
        /// Position of the table in [`crate::Config::digests`].
        index: usize,
        /// The device it was given for.
        device: u16,
    },
    /// The number of extra device files differs from the descriptor's device table.
    #[error("the descriptor has {expected} extra devices, {given} device files were given")]
    DeviceCount {
        /// Extra devices in the descriptor.
        expected: u16,
        /// Device files given.
        given: usize,
    },
    /// A device file is shorter than the descriptor says.
    #[error("{path}: {len} bytes, but the descriptor needs {need}")]
    DeviceTooSmall {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The length the descriptor declares.
        need: u64,
    },
}

/// Why a chunk could not be served. Clone, so that every reader waiting for the same chunk gets
/// the same answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// No digest table entry for a frame ending at the cluster's end (and it is not a frame of zeros).
    #[error("no digest for the frame")]
    NoDigest,
    /// The frame or its zero padding lies outside its device file.
    #[error("frame outside its device")]
    OutOfDevice,
    /// The device could not return the frame's bytes (e.g. a registry that cannot be reached).
    #[error("{0}")]
    Device(String),
    /// The bytes before the frame in its cluster are not zero.
    #[error("non-zero padding before the frame")]
    Padding,
    /// The digest entry's encoding differs from the extent's (zstd frame vs stored bytes).
    #[error("digest entry flags {0:#x} do not match the extent's encoding")]
    NotZstd(u16),
    /// The frame header's content size differs from the digest table's length.
    #[error("frame declares {declared:?} bytes, the digest table {expected}")]
    ContentSize {
        /// The frame header's content size, if any.
        declared: Option<u64>,
        /// The digest table's decompressed length.
        expected: u32,
    },
    /// zstd refused the frame (bad data or checksum).
    #[error("zstd: {0}")]
    Decompress(String),
    /// The decompressed bytes do not have the recorded sha256.
    #[error("sha256 mismatch")]
    Digest,
    /// The chunk is shorter than the extent that uses it.
    #[error("chunk of {len} bytes is shorter than its extent ({need})")]
    Short {
        /// Decompressed length.
        len: usize,
        /// Bytes the extent needs.
        need: u64,
    },
}

/// Why a read failed. Every variant maps to `EIO` except the ones about the request itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No inode with this nid.
    #[error("no inode {0}")]
    NoInode(u64),
    /// Not a regular file.
    #[error("inode {0} is not a regular file")]
    NotFile(u64),
    /// The inode's data map could not be decoded at this position.
    #[error("inode {nid}: no mapping for byte {pos}")]
    Map {
        /// The inode.
        nid: u64,
        /// The logical position.
        pos: u64,
    },
    /// Uncompressed data that no digest covers: never served.
    #[error("inode {nid}: unverifiable uncompressed data at byte {pos}")]
    Unverifiable {
        /// The inode.
        nid: u64,
        /// The logical position.
        pos: u64,
    },
    /// A chunk failed verification.
    #[error("inode {nid}: chunk at device {device} offset {offset}: {error}")]
    Chunk {
        /// The inode.
        nid: u64,
        /// The device of the cluster.
        device: u16,
        /// The cluster's offset in the device.
        offset: u64,
        /// What is wrong.
        error: ChunkError,
    },
}

impl ReadError {
    /// The errno to report.
    pub fn errno(&self) -> i32 {
        match self {
            Self::NoInode(_) => libc::ENOENT,
            Self::NotFile(_) => libc::EISDIR,
            _ => libc::EIO,
        }
    }
}
