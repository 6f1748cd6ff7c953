//! The cluster layout (Linux 6.12+, no 48-bit extents; docs/descriptor.md §4.2): a file is cut
//! into logical clusters of `2^bits` bytes, each with a full 8-byte index. A chunk (a physical
//! cluster, "pcluster") begins in a HEAD lcluster at `clusterofs`; the lcluster after it is a
//! NONHEAD carrying the pcluster's block count (CBLKCNT); further NONHEADs point back to the head
//! and forward to the next one. A hole is a run of extents pointing at one shared all-zero frame.
//!
//! Kernels disagree on one corner: when the lcluster after a HEAD is not a NONHEAD, 6.12-era
//! kernels take the pcluster to be one *lcluster* long and later ones one *block*. We never
//! write that corner except where both readings agree (lcluster = block), and choose per file
//! the largest lcluster size for which that holes.

use chunkfs_kernel_abi::Pod;
use chunkfs_kernel_abi::erofs::{
    LclusterIndex, MapHeader, Z_ADVISE_BIG_PCLUSTER_1, Z_LCLUSTER_TYPE_HEAD1,
    Z_LCLUSTER_TYPE_NONHEAD, Z_LCLUSTER_TYPE_PLAIN, Z_LI_D0_CBLKCNT, Z_LI_PARTIAL_REF, compr,
};

use super::ctx::{Ctx, Frame, Geo, ZERO_FRAME_LEN};
use super::extents::Segment;

/// An inode's chosen lcluster size and index count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ClusterPlan {
    /// log2 of the lcluster size in bytes.
    pub bits: u8,
    /// Full indexes written.
    pub indexes: u64,
}

/// A pcluster reference: a whole chunk, or a piece of a hole (at most [`ZERO_FRAME_LEN`]).
#[derive(Clone, Copy, Debug)]
struct Piece {
    start: u64,
    len: u64,
    chunk: Option<u32>,
}

/// Cuts holes into equal pieces no longer than the zero frame decodes to.
fn pieces(segs: &[Segment]) -> Vec<Piece> {
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        if s.chunk.is_some() {
            out.push(Piece {
                start: s.start,
                len: s.len,
                chunk: s.chunk,
            });
            continue;
        }
        let n = s.len.div_ceil(ZERO_FRAME_LEN);
        for k in 0..n {
            // Equal cuts keep every piece long, so lclusters can stay large.
            let a = s.start + (u128::from(s.len) * u128::from(k) / u128::from(n)) as u64;
            let b = s.start + (u128::from(s.len) * u128::from(k + 1) / u128::from(n)) as u64;
            out.push(Piece {
                start: a,
                len: b - a,
                chunk: None,
            });
        }
    }
    out
}

fn blocks(p: &Piece, frames: &[Frame]) -> u32 {
    p.chunk.map_or(1, |c| frames[c as usize].blocks)
}

/// The first piece that cannot be described with lclusters of `2^bits` bytes (see the module
/// comment): each HEAD must be followed by a NONHEAD holding its block count, unless the
/// pcluster is one block and both kernel readings agree.
fn misfit(ps: &[Piece], frames: &[Frame], size: u64, bits: u8, blkbits: u8) -> Option<usize> {
    ps.iter().enumerate().position(|(i, p)| {
        let h = p.start >> bits;
        let one_block = blocks(p, frames) == 1;
        let ok = match ps.get(i + 1) {
            Some(next) => {
                let hn = next.start >> bits;
                hn >= h + 2 || (hn == h + 1 && one_block && bits == blkbits)
            }
            None => {
                let (k, r) = (size >> bits, size & ((1 << bits) - 1));
                // Beyond the last lcluster, kernels 6.15+ assume a one-block pcluster, and we
                // add an index there for older ones.
                k >= h + 2 || (k == h + 1 && r != 0) || one_block
            }
        };
        !ok
    })
}

/// Chooses the lcluster size for a file of `size` bytes with these segments.
pub(super) fn plan(
    segs: &[Segment],
    frames: &[Frame],
    size: u64,
    geo: Geo,
) -> Result<ClusterPlan, String> {
    // Even at the largest lcluster the index must fit the metadata area; checked before holes
    // are cut into pieces, so a huge sparse file cannot make us allocate per MiB of hole.
    if size / (64 * 1024) > geo.meta_max / 8 {
        return Err(format!(
            "a {size}-byte file needs more lcluster indexes than the metadata area may hold"
        ));
    }
    let ps = pieces(segs);
    // 6.12 reads 3 bits of h_clusterbits; `clusterofs` is 16 bits.
    let max_bits = (geo.blkbits + 7).min(16);
    for bits in (geo.blkbits..=max_bits).rev() {
        if misfit(&ps, frames, size, bits, geo.blkbits).is_none() {
            let last_head = ps.last().map_or(0, |p| p.start >> bits);
            let indexes = size.div_ceil(1 << bits).max(last_head + 2);
            return Ok(ClusterPlan { bits, indexes });
        }
    }
    let i = misfit(&ps, frames, size, geo.blkbits, geo.blkbits).unwrap_or(0);
    let p = ps[i];
    let what = if p.chunk.is_some() { "chunk" } else { "hole" };
    let after = match ps.get(i + 1) {
        Some(n) => format!("the next extent starts at byte {}", n.start),
        None => format!("the file ends at byte {size}"),
    };
    Err(format!(
        "the {what} at bytes {}..{} ({} blocks stored) is too short for the cluster layout: {after}, so no {}-byte logical cluster can hold its block count",
        p.start,
        p.start + p.len,
        blocks(&p, frames),
        geo.blksz
    ))
}

fn index(advise: u16, clusterofs: u16, u: [u8; 4]) -> LclusterIndex {
    let mut di = LclusterIndex::zeroed();
    di.advise = advise.into();
    di.clusterofs = clusterofs.into();
    di.u = u32::from_le_bytes(u).into();
    di
}

fn nonhead(d0: u64, d1: u64) -> Result<LclusterIndex, String> {
    let d0 = u16::try_from(d0).map_err(|_| "lcluster distance exceeds 16 bits")?;
    let d1 = u16::try_from(d1).map_err(|_| "lcluster distance exceeds 16 bits")?;
    let mut u = [0u8; 4];
    u[..2].copy_from_slice(&d0.to_le_bytes());
    u[2..].copy_from_slice(&d1.to_le_bytes());
    Ok(index(Z_LCLUSTER_TYPE_NONHEAD, 0, u))
}

/// Writes the map header and indexes of an inode at `iloc` whose core and xattrs take `x`
/// bytes; returns the blocks of its non-hole data (for `st_blocks`).
pub(super) fn encode(
    ctx: &Ctx,
    segs: &[Segment],
    plan: &ClusterPlan,
    meta: &mut [u8],
    iloc: u64,
    x: u64,
) -> Result<u64, String> {
    let geo = ctx.geo;
    let bits = plan.bits;
    let lmask = (1u64 << bits) - 1;
    let h = (iloc + x).next_multiple_of(8) as usize;
    let mut header = MapHeader::zeroed();
    header.advise = Z_ADVISE_BIG_PCLUSTER_1.into();
    header.algorithmtype = compr::ZSTD;
    header.clusterbits = bits - geo.blkbits;
    meta[h..h + 8].copy_from_slice(header.as_bytes());
    let base = h + 16;
    let mut put = |lcn: u64, di: LclusterIndex| {
        let at = base + lcn as usize * 8;
        meta[at..at + 8].copy_from_slice(di.as_bytes());
    };

    let ps = pieces(segs);
    let size = ps.last().map_or(0, |p| p.start + p.len);
    let (k, r) = (size >> bits, size & lmask);
    let mut data = 0u64;
    for (i, p) in ps.iter().enumerate() {
        let head = p.start >> bits;
        let n = blocks(p, ctx.frames);
        let (pblk, partial) = match p.chunk {
            Some(c) => {
                let f = &ctx.frames[c as usize];
                data += p.len;
                (ctx.frame_addr(f) / geo.blksz, false)
            }
            // `plan` ran with holes present, so the zero block exists.
            None => (
                ctx.meta_block(ctx.zero_block.unwrap_or(0)),
                p.len < ZERO_FRAME_LEN,
            ),
        };
        let pblk =
            u32::try_from(pblk).map_err(|_| format!("block address {pblk} exceeds 32 bits"))?;
        let advise = Z_LCLUSTER_TYPE_HEAD1 | if partial { Z_LI_PARTIAL_REF } else { 0 };
        put(
            head,
            index(advise, (p.start & lmask) as u16, pblk.to_le_bytes()),
        );
        let (next_head, nonhead_end) = match ps.get(i + 1) {
            Some(next) => (next.start >> bits, next.start >> bits),
            None if k >= head + 2 && r != 0 => (k, k),
            None => (k, plan.indexes),
        };
        for j in head + 1..nonhead_end {
            let d0 = if j == head + 1 {
                u64::from(Z_LI_D0_CBLKCNT) | u64::from(n)
            } else {
                (j - head).min(u64::from(Z_LI_D0_CBLKCNT) - 1)
            };
            put(j, nonhead(d0, next_head.saturating_sub(j).max(1))?);
        }
        if i + 1 == ps.len() && k >= head + 2 && r != 0 {
            // A dummy head at EOF ends the last pcluster exactly at the file size, as mkfs does.
            put(k, index(Z_LCLUSTER_TYPE_PLAIN, r as u16, [0; 4]));
        }
    }
    Ok(data.div_ceil(geo.blksz))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::ExtentLayout;

    fn geo() -> Geo {
        Geo {
            blkbits: 9,
            blksz: 512,
            layout: ExtentLayout::Clusters,
            meta_blkaddr: 8,
            meta_max: crate::translate::META_MAX,
        }
    }

    fn frame(blocks: u32) -> Frame {
        Frame {
            device: 0,
            offset: 4096,
            stored_len: blocks * 512,
            blocks,
        }
    }

    fn seg(start: u64, len: u64, chunk: u32) -> Segment {
        Segment {
            start,
            len,
            chunk: Some(chunk),
        }
    }

    #[test]
    fn largest_lcluster_that_keeps_heads_two_apart() {
        // Chunks of 20000 and 70000 bytes: 8 KiB lclusters put heads at 0 and 2.
        let frames = [frame(10), frame(30)];
        let segs = [seg(0, 20000, 0), seg(20000, 70000, 1)];
        let p = plan(&segs, &frames, 90000, geo()).unwrap();
        assert_eq!(p.bits, 13);
        assert_eq!(p.indexes, 90000u64.div_ceil(8192));
    }

    #[test]
    fn tiny_tail_forces_small_lclusters_or_is_refused() {
        // A 700-byte final chunk whose frame needs 2 blocks: EOF must lie past the lcluster after
        // its head. Head at 50000 >> 10 = 48, EOF 50700 >> 10 = 49 with a remainder: 1 KiB works,
        // 2 KiB (head 24, EOF 24) does not.
        let frames = [frame(20), frame(2)];
        let segs = [seg(0, 50000, 0), seg(50000, 700, 1)];
        assert_eq!(plan(&segs, &frames, 50700, geo()).unwrap().bits, 10);
        // 300 bytes starting on a block boundary end in the head's own block at every size.
        let segs = [seg(0, 50176, 0), seg(50176, 300, 1)];
        assert!(plan(&segs, &frames, 50476, geo()).is_err());
        // The same tail with a one-block frame is fine (16 KiB: heads at 0 and 3).
        let frames = [frame(20), frame(1)];
        assert_eq!(plan(&segs, &frames, 50476, geo()).unwrap().bits, 14);
    }

    #[test]
    fn holes_are_cut_into_equal_pieces() {
        let segs = [Segment {
            start: 0,
            len: 3 * ZERO_FRAME_LEN + 10,
            chunk: None,
        }];
        let ps = pieces(&segs);
        assert_eq!(ps.len(), 4);
        assert!(
            ps.iter()
                .all(|p| p.len >= (3 * ZERO_FRAME_LEN + 10) / 4 && p.len <= ZERO_FRAME_LEN)
        );
        assert_eq!(
            ps.iter().map(|p| p.len).sum::<u64>(),
            3 * ZERO_FRAME_LEN + 10
        );
    }
}
