//! What the caller describes: where each chunk's frame is stored ([`ChunkLocation`]), the extra
//! devices ([`ExtraDevice`]), the extent encoding ([`ExtentLayout`]) and the shape of the primary
//! device the descriptor will live in ([`DeviceLayout`]).

use chunkfs_kernel_abi::erofs::DeviceSlot;

use super::error::Error;

/// Device table start: the first 128-byte slot after the superblock and the zstd config.
pub(super) const DEVT_OFFSET: u64 = 1280;
/// Bytes of one device-table slot.
pub(super) const DEVT_SLOT: u64 = core::mem::size_of::<DeviceSlot>() as u64;

/// End of the head area with `devices` extra devices: 4096, or past a large device table.
pub(super) fn head_end(devices: usize) -> u64 {
    let n = devices as u64;
    if n == 0 {
        4096
    } else {
        (DEVT_OFFSET + n * DEVT_SLOT).next_multiple_of(4096)
    }
}

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

impl ExtentLayout {
    /// log2 of the EROFS block size a descriptor of this encoding is written with: 4 KiB blocks
    /// for 48-bit extents, 512-byte blocks for clusters (every frame a whole number of them).
    pub fn block_size_bits(self) -> u8 {
        match self {
            Self::Bit48 => 12,
            Self::Clusters => 9,
        }
    }

    /// The default encoding for frames that do (`aligned512`) or do not all end on 512-byte
    /// boundaries: clusters when the frames allow it (Linux 6.12+ reads them; 48-bit extents
    /// need 6.15+). What `.cfs` images embed.
    pub fn for_frames(aligned512: bool) -> Self {
        if aligned512 {
            Self::Clusters
        } else {
            Self::Bit48
        }
    }

    /// `requested` if given, else the default [`for_frames`](Self::for_frames); refuses
    /// clusters for frames that are not aligned.
    pub fn choose(aligned512: bool, requested: Option<Self>) -> Result<Self, Error> {
        match requested {
            Some(Self::Clusters) if !aligned512 => Err(Error::Unaligned),
            Some(extents) => Ok(extents),
            None => Ok(Self::for_frames(aligned512)),
        }
    }
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
pub struct DeviceLayout {
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

impl DeviceLayout {
    /// A descriptor embedded in the image file that holds the frames (a `.cfs`): its metadata
    /// area at `meta_offset`, after the frames; no extra devices.
    pub fn embedded(extents: ExtentLayout, meta_offset: u64) -> Self {
        Self {
            block_size_bits: extents.block_size_bits(),
            extents,
            meta_offset,
            devices: Vec::new(),
        }
    }

    /// A standalone descriptor file (the primary device holds the descriptor only): the
    /// metadata area right after the head area, every frame on one of `devices`.
    pub fn standalone(extents: ExtentLayout, devices: Vec<ExtraDevice>) -> Self {
        let block_size_bits = extents.block_size_bits();
        let meta_offset = head_end(devices.len()).next_multiple_of(1u64 << block_size_bits.min(12));
        Self {
            block_size_bits,
            extents,
            meta_offset,
            devices,
        }
    }
}
