//! Translation of an image's metadata into its EROFS descriptor (docs/descriptor.md).
//!
//! Input: a validated [`Image`], where each of its chunks is stored ([`ChunkLocation`]), and the
//! shape of the primary device ([`DeviceLayout`]). Output: the EROFS bytes to place in the primary
//! device ([`BuiltDescriptor`]). Deterministic: the same input gives the same bytes.
//!
//! ```
//! use chunkfs_format::model::{mode, Image, Inode, InodeKind};
//! use chunkfs_format::translate::{translate, ExtentLayout, DeviceLayout};
//! let root = Inode { mode: mode::S_IFDIR | 0o755, uid: 0, gid: 0, mtime_sec: 0, mtime_nsec: 0,
//!                    xattrs: vec![], kind: InodeKind::Directory(vec![]) };
//! let image = Image { chunks: vec![], packed_stream: vec![], inodes: vec![root] };
//! let layout = DeviceLayout { block_size_bits: 12, extents: ExtentLayout::Bit48, meta_offset: 4096, devices: vec![] };
//! let d = translate(&image, &[], &layout).unwrap();
//! let sb = d.superblock_area(d.min_primary_len()).unwrap();
//! assert_eq!(sb.len() as u64, d.head_end() - 1024);
//! ```
//!
//! The work is split by job: [`plan`](self) decides every inode's shape and position (nids,
//! blocks), then the encoders (`inode`, `xattr`, `dir`, `extents`, `clusters`) write the bytes,
//! and `superblock` writes the head area once the primary device's length is known.

mod clusters;
mod dir;
mod extents;
mod inode;
mod plan;
mod superblock;
mod xattr;
mod zero_frame;

use crate::model::{Image, ModelError};

pub use plan::Stats;

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
        let meta_offset =
            superblock::head_end(devices.len()).next_multiple_of(1u64 << block_size_bits.min(12));
        Self {
            block_size_bits,
            extents,
            meta_offset,
            devices,
        }
    }
}

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
    /// The primary device length passed to [`BuiltDescriptor::superblock_area`] does not fit.
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

/// Why [`BuiltDescriptor::write_standalone`] failed.
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

/// The standalone descriptor of `image` whose chunks are stored at `locations` on `devices`
/// (extra devices 1, 2, ...; no frame may be on the primary device), in the encoding `extents`.
/// The one recipe behind `chunkfs descriptor`, the mount of an OCI image or of a `.cfs` without
/// an embedded descriptor (`Cfs::standalone_descriptor`, `OciImage::standalone_descriptor`), and
/// any caller that places frames on devices of its own (a local store's pack files).
pub fn standalone(
    image: &Image,
    locations: &[ChunkLocation],
    devices: Vec<ExtraDevice>,
    extents: ExtentLayout,
) -> Result<BuiltDescriptor, Error> {
    translate(
        image,
        locations,
        &DeviceLayout::standalone(extents, devices),
    )
}

/// The `device=` mount options for these device paths, in device-table order.
pub fn device_options<P: AsRef<std::path::Path>>(paths: &[P]) -> String {
    paths
        .iter()
        .map(|p| format!("device={}", p.as_ref().display()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Index used in [`Error::Inode`] for the packed inode (it has no index in the image).
pub const PACKED_INODE: u32 = u32::MAX;

/// The EROFS descriptor of an image: the metadata area, and everything needed to write the
/// superblock area once the primary device's final length is known.
#[derive(Clone, Debug)]
pub struct BuiltDescriptor {
    meta: Vec<u8>,
    meta_offset: u64,
    head: superblock::Head,
    primary_data_end: u64,
    primary_frames: bool,
    stats: Stats,
}

impl BuiltDescriptor {
    /// The metadata area: write it at [`meta_offset`](Self::meta_offset) of the primary device.
    pub fn meta_area(&self) -> &[u8] {
        &self.meta
    }

    /// Byte offset of the metadata area in the primary device (from the layout).
    pub fn meta_offset(&self) -> u64 {
        self.meta_offset
    }

    /// End of the superblock area: the bytes of [`superblock_area`](Self::superblock_area)
    /// cover `1024..head_end()` of the primary device. 4096 unless the device table is large.
    pub fn head_end(&self) -> u64 {
        self.head.end()
    }

    /// Smallest valid primary device length: past the metadata area and every frame stored in
    /// the primary device, rounded up to 4096.
    pub fn min_primary_len(&self) -> u64 {
        // Cannot overflow: `translate` checked that this fits below the extra devices' range.
        self.primary_data_end.div_ceil(4096).saturating_mul(4096)
    }

    /// Largest valid primary device length: with extra devices, the primary must end below the
    /// first device's address range; without, only the block address limit applies.
    pub fn max_primary_len(&self) -> u64 {
        self.head.max_primary_len()
    }

    /// The bytes of `1024..head_end()`: superblock, compression configs and device table, for a
    /// primary device of `primary_len` bytes (a multiple of 4096, at least
    /// [`min_primary_len`](Self::min_primary_len)).
    pub fn superblock_area(&self, primary_len: u64) -> Result<Vec<u8>, Error> {
        if primary_len % 4096 != 0 {
            return Err(Error::PrimaryLen {
                len: primary_len,
                problem: "not a multiple of 4096 (the kernel reads whole pages)".into(),
            });
        }
        if primary_len < self.min_primary_len() {
            return Err(Error::PrimaryLen {
                len: primary_len,
                problem: format!(
                    "shorter than the {} bytes the descriptor needs",
                    self.min_primary_len()
                ),
            });
        }
        if primary_len > self.max_primary_len() {
            return Err(Error::PrimaryLen {
                len: primary_len,
                problem: format!(
                    "reaches past {} bytes, where the extra devices' addresses begin",
                    self.max_primary_len()
                ),
            });
        }
        Ok(self.head.encode(primary_len))
    }

    /// The unified byte address where extra device `k` (1-based) begins, as extents see it.
    pub fn device_base(&self, device: u16) -> Option<u64> {
        self.head.device_base(device)
    }

    /// The extent encoding the descriptor uses.
    pub fn extent_layout(&self) -> ExtentLayout {
        self.head.layout()
    }

    /// Counts and sizes of what was emitted.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Writes a standalone descriptor file: zeros, the superblock area, the metadata area and
    /// zero padding to a multiple of 4096 ([`min_primary_len`](Self::min_primary_len) bytes).
    /// Only for layouts whose frames all live on extra devices ([`DeviceLayout::standalone`]).
    pub fn write_standalone(&self, w: &mut impl std::io::Write) -> Result<u64, StandaloneError> {
        if self.primary_frames {
            return Err(StandaloneError::FramesInPrimary);
        }
        let len = self.min_primary_len();
        let head = self
            .superblock_area(len)
            .map_err(StandaloneError::Translate)?;
        let zeros = [0u8; 4096];
        let mut put = |bytes: &[u8]| w.write_all(bytes).map_err(StandaloneError::Io);
        put(&zeros[..1024])?;
        put(&head)?;
        let mut at = 1024 + head.len() as u64;
        while at < self.meta_offset {
            let n = (self.meta_offset - at).min(4096) as usize;
            put(&zeros[..n])?;
            at += n as u64;
        }
        put(&self.meta)?;
        at += self.meta.len() as u64;
        put(&zeros[..(len - at) as usize])?;
        Ok(len)
    }
}

/// Translates a validated image into its EROFS descriptor.
///
/// `chunks[i]` is where the frame of `image.chunks[i]` is stored. The result is deterministic.
pub fn translate(
    image: &Image,
    chunks: &[ChunkLocation],
    layout: &DeviceLayout,
) -> Result<BuiltDescriptor, Error> {
    translate_within(image, chunks, layout, META_MAX)
}

/// Largest metadata area [`translate`] builds (docs/format.md §3.5): 4 GiB, what a tree of
/// tens of millions of inodes or, in the cluster layout, a 32 TiB sparse file needs.
pub const META_MAX: u64 = plan::META_MAX;

/// [`translate`], refusing (before allocating it) a metadata area longer than `meta_max`
/// bytes. Callers that know how long the area must be (`verify` of a `.cfs`, which compares it
/// with the stored one) pass that length, so that metadata declaring huge sparse files cannot
/// make them allocate more than the image holds.
pub fn translate_within(
    image: &Image,
    chunks: &[ChunkLocation],
    layout: &DeviceLayout,
    meta_max: u64,
) -> Result<BuiltDescriptor, Error> {
    image.validate()?;
    if chunks.len() != image.chunks.len() {
        return Err(Error::ChunkCount {
            expected: image.chunks.len(),
            got: chunks.len(),
        });
    }
    plan::build(image, chunks, layout, meta_max)
}

#[cfg(test)]
mod tests;
