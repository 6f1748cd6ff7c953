//! The result of a translation: the metadata area, and the head area once the primary
//! device's length is known; written whole as a standalone descriptor file.

use super::error::{Error, StandaloneError};
use super::layout::ExtentLayout;
use super::superblock;

/// Counts and sizes of what a translation emitted (for reports and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inodes written in the 32-byte compact form (the packed inode included).
    pub inodes_compact: u64,
    /// Inodes written in the 64-byte extended form.
    pub inodes_extended: u64,
    /// Directories whose last block is inline after the inode.
    pub dirs_inline: u64,
    /// Directories stored in whole blocks only.
    pub dirs_plain: u64,
    /// Blocks of directory entries outside inodes.
    pub dir_blocks: u64,
    /// Symlinks whose target is inline.
    pub symlinks_inline: u64,
    /// Symlinks stored in blocks.
    pub symlinks_plain: u64,
    /// Encoded extent records written (48-bit layout).
    pub extent_records: u64,
    /// Logical cluster indexes written (cluster layout).
    pub lcluster_indexes: u64,
    /// Files stored whole in the packed inode.
    pub fragments: u64,
    /// Bytes of inline xattr bodies.
    pub xattr_bytes: u64,
    /// Nid of the root directory.
    pub root_nid: u64,
    /// Nid of the packed inode, 0 if there is none.
    pub packed_nid: u64,
    /// Length of the metadata area in bytes.
    pub meta_bytes: u64,
    /// Bytes of the metadata area that hold nothing (alignment and records kept within a block).
    pub padding_bytes: u64,
    /// The lcluster size chosen for the most file bytes (cluster layout), as log2.
    pub lcluster_bits_hist: [u64; 8],
}

/// The EROFS descriptor of an image: the metadata area, and everything needed to write the
/// superblock area once the primary device's final length is known.
#[derive(Clone, Debug)]
pub struct BuiltDescriptor {
    pub(super) meta: Vec<u8>,
    pub(super) meta_offset: u64,
    pub(super) head: superblock::Head,
    pub(super) primary_data_end: u64,
    pub(super) primary_frames: bool,
    pub(super) stats: Stats,
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
    /// Only for layouts whose frames all live on extra devices ([`DeviceLayout::standalone`](super::DeviceLayout::standalone)).
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
