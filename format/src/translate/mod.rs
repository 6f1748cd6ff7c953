//! Translation of an image's metadata into its EROFS descriptor (docs/descriptor.md).
//!
//! Input: a validated [`Image`](crate::model::Image), where each of its chunks is stored ([`ChunkLocation`]), and the
//! shape of the primary device ([`Layout`]). Output: the EROFS bytes to place in the primary
//! device. Deterministic: the same input gives the same bytes.

/// Where one chunk's frame is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    /// 0 for the primary device, `k` for the k-th extra device.
    pub device: u16,
    /// Byte offset of the zstd frame in that device.
    pub offset: u64,
    /// Length of the frame in bytes.
    pub stored_len: u32,
}

/// How compressed extents are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentLayout {
    /// Byte-addressed encoded extents (EROFS 48BIT, Linux 6.15+).
    Bit48,
    /// Block-aligned clusters with zero padding (Linux 6.12+); frames must end on a block boundary.
    Clusters,
}

/// An extra device (an OCI pack blob), in device-table order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraDevice {
    /// Tag stored in the device slot (at most 64 bytes), e.g. the blob digest.
    pub tag: Vec<u8>,
    /// Length in bytes, a multiple of 4096.
    pub len: u64,
}

/// The shape of the primary device the descriptor will live in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// log2 of the EROFS block size: 12 for [`ExtentLayout::Bit48`], 9 for clusters of 512 bytes.
    pub block_size_bits: u8,
    /// Extent encoding.
    pub extents: ExtentLayout,
    /// Byte offset in the primary device where the metadata area will be written (block aligned,
    /// at or after the end of the head area).
    pub meta_offset: u64,
    /// Extra devices, in order (device ids 1, 2, ...).
    pub devices: Vec<ExtraDevice>,
}
