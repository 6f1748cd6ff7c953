//! What the planner hands every encoder: the geometry ([`Geo`]), the validated frames
//! ([`Frame`]), the inodes' nids and the devices' addresses ([`Ctx`]). A leaf: the encoders and
//! the planner import it, it imports neither.

use super::error::Error;
use super::layout::ExtentLayout;
use crate::model::Image;

/// Largest metadata area [`translate`](super::translate) builds (docs/format.md §3.5): 4 GiB,
/// what a tree of tens of millions of inodes or, in the cluster layout, a 32 TiB sparse file
/// needs (a million inodes need about 150 MB).
pub const META_MAX: u64 = 4 << 30;

/// Decoded length of the all-zero frame that holes point at in the cluster layout.
pub(super) const ZERO_FRAME_LEN: u64 = 1 << 20;

/// Geometry shared by every encoder.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geo {
    pub blkbits: u8,
    pub blksz: u64,
    pub layout: ExtentLayout,
    pub meta_blkaddr: u64,
    /// Largest metadata area the caller accepts (at most [`META_MAX`]).
    pub meta_max: u64,
}

/// A chunk frame, validated.
#[derive(Clone, Copy, Debug)]
pub(super) struct Frame {
    pub device: u16,
    pub offset: u64,
    pub stored_len: u32,
    /// Blocks covering the frame (cluster layout: the pcluster length).
    pub blocks: u32,
}

/// Which optional EROFS features the descriptor uses.
pub(super) struct Features {
    pub compressed: bool,
    pub fragments: bool,
    pub dedupe: bool,
}

/// Everything an encoder needs to resolve references.
pub(super) struct Ctx<'a> {
    pub image: &'a Image,
    pub frames: &'a [Frame],
    pub bases: &'a [u64],
    pub geo: Geo,
    /// Nid of each inode (the packed inode last).
    pub nids: &'a [u64],
    pub zero_block: Option<u64>,
    /// Parent of each directory (the root is its own parent); 0 for other inodes.
    pub parents: &'a [u32],
}

impl Ctx<'_> {
    /// Unified byte address of a frame.
    pub fn frame_addr(&self, f: &Frame) -> u64 {
        self.bases[usize::from(f.device)] + f.offset
    }

    /// Absolute block address of a block of the metadata area.
    pub fn meta_block(&self, b: u64) -> u64 {
        self.geo.meta_blkaddr + b
    }
}

pub(super) fn checked_add(a: u64, b: u64) -> Result<u64, Error> {
    a.checked_add(b)
        .ok_or_else(|| Error::TooLarge("a metadata offset overflows 64 bits".into()))
}

pub(super) fn round_up(v: u64, to: u64) -> Result<u64, Error> {
    v.checked_next_multiple_of(to)
        .ok_or_else(|| Error::TooLarge("a metadata offset overflows 64 bits".into()))
}
