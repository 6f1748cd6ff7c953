//! A file's logical segments (chunks and holes), and their 48-bit encoded extent records
//! (docs/descriptor.md §4.1): one record per chunk, plen = frame length | (zstd + 1) << 28,
//! pstart = the frame's byte address in the unified device space; a hole is a record with plen 0.

use chunkfs_kernel_abi::Pod;
use chunkfs_kernel_abi::erofs::{
    MapHeader, Z_ADVISE_EXTENTS, Z_ADVISE_EXTRECSZ_BIT, Z_EXTENT_PLEN_FMT_BIT, compr,
};

use super::ctx::Ctx;
use crate::model::{ChunkIdx, Extent, Image};

/// A logical range of a file: a whole chunk, or a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    pub start: u64,
    pub len: u64,
    pub chunk: Option<ChunkIdx>,
}

/// Splits a file of `size` bytes into chunk and hole segments covering `0..size`.
pub(super) fn segments(image: &Image, extents: &[Extent], size: u64) -> Vec<Segment> {
    let mut out = Vec::with_capacity(extents.len() + 1);
    let mut at = 0u64;
    for x in extents {
        if x.offset > at {
            out.push(Segment {
                start: at,
                len: x.offset - at,
                chunk: None,
            });
        }
        let len = u64::from(image.chunks[x.chunk as usize].size);
        out.push(Segment {
            start: x.offset,
            len,
            chunk: Some(x.chunk),
        });
        at = x.offset + len;
    }
    if at < size {
        out.push(Segment {
            start: at,
            len: size - at,
            chunk: None,
        });
    }
    out
}

/// Records for these segments: a leading hole needs none (offsets before the first record
/// read as zeros).
pub(super) fn record_count(segs: &[Segment]) -> u64 {
    segs.iter()
        .filter(|s| !(s.start == 0 && s.chunk.is_none()))
        .count() as u64
}

/// 16-byte records hold a 32-bit logical start; files of 4 GiB and more need 32-byte ones.
pub(super) fn record_size(file_size: u64) -> u64 {
    if file_size > u64::from(u32::MAX) {
        32
    } else {
        16
    }
}

/// Writes the map header and records of an inode at `iloc` whose core and xattrs take `x`
/// bytes; returns the blocks of its non-hole data (for `st_blocks`, docs/descriptor.md §4).
pub(super) fn encode(
    ctx: &Ctx,
    segs: &[Segment],
    recsz: u64,
    count: u64,
    meta: &mut [u8],
    iloc: u64,
    x: u64,
) -> u64 {
    let h = (iloc + x).next_multiple_of(8);
    let mut header = MapHeader::zeroed();
    header.fragmentoff_or_extents_lo = (count as u32).into();
    let code: u16 = if recsz == 32 { 3 } else { 2 };
    header.advise = (Z_ADVISE_EXTENTS | (code << Z_ADVISE_EXTRECSZ_BIT)).into();
    // With EXTENTS, bytes 6..8 are the count's high 16 bits.
    let hi = ((count >> 32) as u16).to_le_bytes();
    header.algorithmtype = hi[0];
    header.clusterbits = hi[1];
    meta[h as usize..h as usize + 8].copy_from_slice(header.as_bytes());
    let mut at = (h + 8).next_multiple_of(recsz) as usize;
    let mut data = 0u64;
    for s in segs {
        if s.start == 0 && s.chunk.is_none() {
            continue;
        }
        let mut rec = [0u8; 32];
        if let Some(c) = s.chunk {
            let f = &ctx.frames[c as usize];
            let plen = f.stored_len | (u32::from(compr::ZSTD) + 1) << Z_EXTENT_PLEN_FMT_BIT;
            let pstart = ctx.frame_addr(f);
            rec[0..4].copy_from_slice(&plen.to_le_bytes());
            rec[4..12].copy_from_slice(&pstart.to_le_bytes());
            data += s.len;
        }
        // A hole keeps plen and pstart zero.
        rec[12..20].copy_from_slice(&s.start.to_le_bytes());
        meta[at..at + recsz as usize].copy_from_slice(&rec[..recsz as usize]);
        at += recsz as usize;
    }
    data.div_ceil(ctx.geo.blksz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::model::ChunkInfo;

    #[test]
    fn segments_cover_the_file_with_holes_between_chunks() {
        let image = Image {
            chunks: vec![
                ChunkInfo {
                    digest: Digest::of(b"a"),
                    size: 10,
                },
                ChunkInfo {
                    digest: Digest::of(b"b"),
                    size: 5,
                },
            ],
            packed_stream: vec![],
            inodes: vec![],
            prefetch: Vec::new(),
        };
        let xs = [
            Extent {
                offset: 4,
                chunk: 0,
            },
            Extent {
                offset: 14,
                chunk: 1,
            },
            Extent {
                offset: 30,
                chunk: 0,
            },
        ];
        let segs = segments(&image, &xs, 50);
        let spans: Vec<(u64, u64, bool)> = segs
            .iter()
            .map(|s| (s.start, s.len, s.chunk.is_some()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (0, 4, false),
                (4, 10, true),
                (14, 5, true),
                (19, 11, false),
                (30, 10, true),
                (40, 10, false)
            ]
        );
        assert_eq!(record_count(&segs), 5);
        assert_eq!(record_size(50), 16);
        assert_eq!(record_size(1 << 32), 32);
    }
}
