//! chunkfs's digest table: the sha256 of every physical chunk frame, keyed by device and offset
//! (docs/descriptor.md, "Digest table").
//!
//! The same table is the chunk index of a `.cfs` (all entries on device 0) and the index at the
//! end of an OCI pack blob. Layout: one [`DigestTableHeader`], then `count` entries of
//! `entry_size` bytes, each beginning with a [`DigestEntry`], sorted by `(device, offset)`.

use crate::le::{Le16, Le32, Le64};

/// `DigestTableHeader.magic`.
pub const DIGEST_TABLE_MAGIC: [u8; 8] = *b"CFSDGST1";
/// The table version this crate writes and reads.
pub const DIGEST_TABLE_VERSION: u32 = 1;
/// `DigestEntry.flags` bit 0: the frame is a zstd frame (always set in version 1).
pub const DIGEST_FLAG_ZSTD: u16 = 1;

/// Header of a digest table, 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DigestTableHeader {
    /// [`DIGEST_TABLE_MAGIC`].
    pub magic: [u8; 8],
    /// [`DIGEST_TABLE_VERSION`]; a reader refuses a larger one.
    pub version: Le32,
    /// Bytes per entry, at least `size_of::<DigestEntry>()`; extra bytes are ignored.
    pub entry_size: Le32,
    /// Number of entries.
    pub count: Le64,
    /// Zero.
    pub reserved: Le64,
}
const _: () = assert!(core::mem::size_of::<DigestTableHeader>() == 32);

/// One physical chunk frame, 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DigestEntry {
    /// Byte offset of the frame within its device.
    pub offset: Le64,
    /// 0 for the primary device, `k` for the k-th extra device (EROFS device id).
    pub device: Le16,
    /// `DIGEST_FLAG_*` bits.
    pub flags: Le16,
    /// Length of the stored frame in bytes.
    pub stored_len: Le32,
    /// Length of the decompressed chunk in bytes.
    pub raw_len: Le32,
    /// Zero.
    pub reserved: Le32,
    /// Zero.
    pub reserved2: Le64,
    /// sha256 of the decompressed chunk.
    pub sha256: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<DigestEntry>() == 64);

