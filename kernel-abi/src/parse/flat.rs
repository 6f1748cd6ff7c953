//! Uncompressed (FLAT_PLAIN / FLAT_INLINE) data: whole blocks at `startblk` in the primary device,
//! and for FLAT_INLINE the last partial block right after the inode and its xattrs.

use super::inode::Inode;
use super::num::{div_ceil_shift, low_bits, slice};
use super::sb::{Sb, resolve};
use crate::erofs;
use crate::error::AbiError;

/// Where an uncompressed inode's bytes are: a run of whole blocks and an inline tail.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlatLayout {
    /// Byte offset in the primary device of logical byte 0, or `None` for a sparse inode.
    pub head_pos: Option<u64>,
    /// Logical bytes served from `head_pos`.
    pub head_len: u64,
    /// Byte offset of the inline tail (logical bytes `head_len..size`).
    pub tail_pos: u64,
}

impl FlatLayout {
    /// Checks the layout of a flat inode: blocks inside the primary device, inline tail inside
    /// its block (the kernel refuses tails that cross a block boundary).
    pub fn of(bytes: &[u8], sb: &Sb, i: &Inode) -> Result<Self, AbiError> {
        let blksz = sb.blksz();
        let nblocks = div_ceil_shift(i.size, sb.blkszbits.into()).ok_or(AbiError::BadField {
            field: "inode size",
            value: i.size,
        })?;
        let inline = i.layout == erofs::INODE_FLAT_INLINE;
        let head_blocks = if inline {
            nblocks.saturating_sub(1)
        } else {
            nblocks
        };
        let head_bytes = sb.blocks_to_bytes(head_blocks).ok_or(AbiError::BadField {
            field: "inode size",
            value: i.size,
        })?;
        let head_len = head_bytes.min(i.size);
        let head_pos = match i.startblk {
            Some(blk) if head_blocks > 0 => {
                let pa = sb.blocks_to_bytes(blk).ok_or(AbiError::OutOfRange {
                    table: "inode startblk",
                    index: blk,
                })?;
                let (device, off) =
                    resolve(bytes, sb, pa, head_bytes).map_err(|_| AbiError::OutOfRange {
                        table: "inode startblk",
                        index: blk,
                    })?;
                if device != 0 {
                    return Err(AbiError::OutOfRange {
                        table: "inode startblk",
                        index: blk,
                    });
                }
                Some(off)
            }
            Some(_) => Some(0),
            None if i.file_type() == super::inode::mode::S_IFREG => None,
            None => {
                return Err(AbiError::BadField {
                    field: "inode startblk",
                    value: u64::MAX,
                });
            }
        };
        let tail_len = i.size.wrapping_sub(head_len);
        if tail_len > 0 {
            let in_block = low_bits(i.body_end, sb.blkszbits.into());
            if in_block.checked_add(tail_len).is_none_or(|e| e > blksz) {
                return Err(AbiError::BadField {
                    field: "inline data crossing a block",
                    value: tail_len,
                });
            }
            slice(bytes, i.body_end, tail_len).ok_or(AbiError::Truncated {
                what: "inline data",
            })?;
        }
        Ok(Self {
            head_pos,
            head_len,
            tail_pos: i.body_end,
        })
    }

    /// The contiguous run of bytes holding logical offset `pos`, from `pos` to the end of the run.
    /// `None` past the end, or inside a sparse inode.
    pub fn run<'a>(&self, bytes: &'a [u8], i: &Inode, pos: u64) -> Option<&'a [u8]> {
        if pos >= i.size {
            return None;
        }
        if pos < self.head_len {
            let start = self.head_pos?.checked_add(pos)?;
            slice(bytes, start, self.head_len.wrapping_sub(pos))
        } else {
            let start = self.tail_pos.checked_add(pos.wrapping_sub(self.head_len))?;
            slice(bytes, start, i.size.wrapping_sub(pos))
        }
    }

    /// The whole content as at most two pieces (blocks, inline tail). `None` for sparse inodes.
    pub fn pieces<'a>(&self, bytes: &'a [u8], i: &Inode) -> Option<(&'a [u8], &'a [u8])> {
        let head = if self.head_len == 0 {
            &[][..]
        } else {
            slice(bytes, self.head_pos?, self.head_len)?
        };
        let tail = slice(bytes, self.tail_pos, i.size.checked_sub(self.head_len)?)?;
        Some((head, tail))
    }

    /// Logical block `b` (the last one may be short): the unit directory entries live in.
    pub fn block<'a>(&self, bytes: &'a [u8], sb: &Sb, i: &Inode, b: u64) -> Option<&'a [u8]> {
        let start = sb.blocks_to_bytes(b)?;
        let run = self.run(bytes, i, start)?;
        run.get(..usize::try_from(sb.blksz()).ok()?.min(run.len()))
    }
}
