//! Compressed inodes: the map header, then either 48-bit encoded extents (byte-addressed,
//! Linux 6.15+) or the older per-lcluster indexes (full 8-byte or compact 2/4-byte), and
//! fragments in the packed inode (Linux `fs/erofs/zmap.c`).
//!
//! [`ZMap::map`] answers "what backs logical byte `pos`" in O(1) or O(log n) for validated inodes;
//! [`ZMap::validate`] walks every record once. Both share the decoding below, so a validated
//! inode maps exactly as it was checked.

use super::inode::Inode;
use super::num::{div_ceil_shift, le16, le32, le64, low_bits, read, round_up, shl, slice};
use super::sb::{Sb, resolve};
use crate::erofs::{self, MapHeader};
use crate::error::AbiError;

/// What backs one logical range of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First logical byte of the range.
    pub logical_start: u64,
    /// Length of the range in bytes (never 0).
    pub logical_len: u64,
    /// Where the bytes come from.
    pub kind: MapKind,
}

/// The source of a [`Mapping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// Zeros.
    Hole,
    /// Uncompressed bytes: logical byte `p` is at `offset + (p - logical_start)` of `device`.
    Raw {
        /// 0 for the primary device, `k` for the k-th extra device.
        device: u16,
        /// Byte offset in that device of the range's first byte.
        offset: u64,
    },
    /// One uncompressed block stored rotated (EROFS "interlaced"): logical byte `p` is at
    /// `offset + (p mod block size)` of `device`.
    Interlaced {
        /// 0 for the primary device, `k` for the k-th extra device.
        device: u16,
        /// Byte offset of the block in that device.
        offset: u64,
    },
    /// A compressed cluster `[offset, offset + len)` of `device`; its decompressed byte 0 is
    /// logical byte `logical_start`. The frame ends at `offset + len`; bytes before the frame's
    /// start (the old layout's zero padding) are zero.
    Encoded {
        /// 0 for the primary device, `k` for the k-th extra device.
        device: u16,
        /// Byte offset of the cluster in that device.
        offset: u64,
        /// Length of the cluster in bytes.
        len: u64,
        /// Compression algorithm (`erofs::compr`; always ZSTD after validation).
        algorithm: u8,
        /// Only a prefix of the decompressed data belongs to this range.
        partial: bool,
    },
    /// Bytes of the packed inode: logical byte `p` is packed byte `packed_offset + (p - logical_start)`.
    Fragment {
        /// Offset in the packed inode of the range's first byte.
        packed_offset: u64,
    },
}

/// Largest logical extent a kernel decompresses (`Z_EROFS_PCLUSTER_MAX_DSIZE`).
const MAX_DSIZE: u64 = erofs::PCLUSTER_MAX_DSIZE as u64;
/// Largest compressed cluster (`Z_EROFS_PCLUSTER_MAX_SIZE`).
const MAX_PSIZE: u64 = erofs::PCLUSTER_MAX_SIZE as u64;
/// Physical addresses in extents are 48-bit.
const PSTART_MAX: u64 = (1 << 48) - 1;
const PLEN_RESERVED: u32 = !(erofs::Z_EXTENT_PLEN_MASK
    | erofs::Z_EXTENT_PLEN_PARTIAL
    | (0xf << erofs::Z_EXTENT_PLEN_FMT_BIT));
const ZSTD_FMT: u32 = erofs::compr::ZSTD as u32 + 1;

const TYPE_PLAIN: u8 = erofs::Z_LCLUSTER_TYPE_PLAIN as u8;
const TYPE_HEAD1: u8 = erofs::Z_LCLUSTER_TYPE_HEAD1 as u8;
const TYPE_NONHEAD: u8 = erofs::Z_LCLUSTER_TYPE_NONHEAD as u8;
const TYPE_HEAD2: u8 = erofs::Z_LCLUSTER_TYPE_HEAD2 as u8;

fn bad(field: &'static str, value: u64) -> AbiError {
    AbiError::BadField { field, value }
}

/// A decoded map header.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ZMap {
    /// The whole file is a fragment at this offset of the packed inode.
    Whole { off: u64 },
    /// 48-bit encoded extents.
    Extents(Extents),
    /// Per-lcluster indexes.
    Lclusters(Lclusters),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Extents {
    size: u64,
    /// Bytes per record: 4, 8, 16 or 32.
    recsz: u64,
    /// Byte offset of record 0.
    pos: u64,
    count: u64,
    /// The last record is a tail fragment.
    fragment: bool,
    /// Stored records of one aligned block are interlaced.
    interlaced: bool,
    /// Records of 4 and 8 bytes cover one lcluster each.
    lclusterbits: u32,
    /// 4-byte records: physical address of record 0 (the others follow back to back).
    pa_base: u64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Lclusters {
    size: u64,
    compact: bool,
    advise: u16,
    /// PLAIN pclusters are interlaced.
    interlaced: bool,
    lclusterbits: u32,
    algs: [u8; 2],
    /// The header's fragment offset (low 32 bits; full indexes add the tail head's block << 32).
    fragment: Option<u64>,
    /// Full indexes: offset of index 0. Compact: `ebase`.
    base: u64,
    compacted_4b_initial: u64,
    compacted_2b: u64,
    /// Number of lclusters.
    nlc: u64,
}

/// One decoded lcluster index.
#[derive(Clone, Copy, Debug)]
struct Lc {
    ty: u8,
    clusterofs: u64,
    delta0: u64,
    /// Full indexes: distance to the next head (compact indexes do not store it per lcluster).
    delta1: Option<u64>,
    pblk: u64,
    /// First NONHEAD of a big pcluster: its compressed block count.
    cblks: Option<u64>,
    partial: bool,
}

impl ZMap {
    pub fn of(bytes: &[u8], sb: &Sb, i: &Inode) -> Result<Self, AbiError> {
        let hpos = round_up(i.body_end, 8).ok_or(AbiError::Truncated { what: "map header" })?;
        let h: MapHeader = read(bytes, hpos).ok_or(AbiError::Truncated { what: "map header" })?;
        let has_packed = sb.packed_nid.is_some_and(|p| p != i.nid);
        if h.clusterbits & 0x80 != 0 {
            if !has_packed {
                return Err(bad("fragment without a packed inode", i.nid));
            }
            let off =
                le64(bytes, hpos).ok_or(AbiError::Truncated { what: "map header" })? ^ (1 << 63);
            return Ok(Self::Whole { off });
        }
        let advise = h.advise.get();
        let fragment = advise & erofs::Z_ADVISE_FRAGMENT_PCLUSTER != 0;
        let interlaced = advise & erofs::Z_ADVISE_INTERLACED_PCLUSTER != 0;
        if fragment && !has_packed {
            return Err(bad("fragment without a packed inode", i.nid));
        }
        let lclusterbits = u32::from(sb.blkszbits).wrapping_add(u32::from(h.clusterbits & 15));
        let hend = hpos.wrapping_add(8);
        if i.layout == erofs::INODE_COMPRESSED_FULL && advise & erofs::Z_ADVISE_EXTENTS != 0 {
            if !sb.has(erofs::FEATURE_INCOMPAT_48BIT) {
                return Err(bad(
                    "encoded extents without the 48bit feature",
                    advise.into(),
                ));
            }
            let known = erofs::Z_ADVISE_EXTENTS
                | (erofs::Z_ADVISE_EXTRECSZ_MASK << erofs::Z_ADVISE_EXTRECSZ_BIT)
                | erofs::Z_ADVISE_FRAGMENT_PCLUSTER
                | erofs::Z_ADVISE_INTERLACED_PCLUSTER;
            if advise & !known != 0 {
                return Err(AbiError::Unsupported {
                    what: "map header advise",
                    value: advise.into(),
                });
            }
            let recsz =
                4u64 << ((advise >> erofs::Z_ADVISE_EXTRECSZ_BIT) & erofs::Z_ADVISE_EXTRECSZ_MASK);
            let mut pos = round_up(hend, recsz).ok_or(AbiError::Truncated { what: "extents" })?;
            let mut pa_base = 0;
            let count = if recsz <= 8 {
                if lclusterbits > 23 {
                    return Err(bad("map header clusterbits", h.clusterbits.into()));
                }
                if recsz == 4 {
                    pa_base = le64(bytes, pos).ok_or(AbiError::Truncated { what: "extents" })?;
                    pos = pos.wrapping_add(8);
                }
                div_ceil_shift(i.size, lclusterbits).ok_or(bad("inode size", i.size))?
            } else {
                u64::from(h.fragmentoff_or_extents_lo.get())
                    | u64::from(le16(bytes, hpos.wrapping_add(6)).unwrap_or(0)) << 32
            };
            let len = count
                .checked_mul(recsz)
                .ok_or(AbiError::Truncated { what: "extents" })?;
            slice(bytes, pos, len).ok_or(AbiError::Truncated { what: "extents" })?;
            return Ok(Self::Extents(Extents {
                size: i.size,
                recsz,
                pos,
                count,
                fragment,
                interlaced,
                lclusterbits,
                pa_base,
            }));
        }
        let compact = i.layout == erofs::INODE_COMPRESSED_COMPACT;
        let big = erofs::Z_ADVISE_BIG_PCLUSTER_1 | erofs::Z_ADVISE_BIG_PCLUSTER_2;
        let mut known =
            big | erofs::Z_ADVISE_FRAGMENT_PCLUSTER | erofs::Z_ADVISE_INTERLACED_PCLUSTER;
        if compact {
            known |= erofs::Z_ADVISE_COMPACTED_2B;
        }
        if advise & !known != 0 {
            return Err(AbiError::Unsupported {
                what: "map header advise",
                value: advise.into(),
            });
        }
        if advise & big != 0 && !sb.has(erofs::FEATURE_INCOMPAT_BIG_PCLUSTER) {
            return Err(bad(
                "big pcluster without the superblock feature",
                advise.into(),
            ));
        }
        if compact
            && (advise & erofs::Z_ADVISE_BIG_PCLUSTER_1 != 0)
                != (advise & erofs::Z_ADVISE_BIG_PCLUSTER_2 != 0)
        {
            return Err(bad("compact big pcluster head1/head2", advise.into()));
        }
        let algs = [h.algorithmtype & 15, h.algorithmtype >> 4];
        if algs.iter().any(|&a| a > erofs::compr::ZSTD) {
            return Err(AbiError::Unsupported {
                what: "compression algorithm",
                value: h.algorithmtype.into(),
            });
        }
        if lclusterbits > if compact { 14 } else { 16 } {
            return Err(bad("map header clusterbits", h.clusterbits.into()));
        }
        let nlc = div_ceil_shift(i.size, lclusterbits).ok_or(bad("inode size", i.size))?;
        let fragment = fragment.then(|| u64::from(h.fragmentoff_or_extents_lo.get()));
        let mut lc = Lclusters {
            size: i.size,
            compact,
            advise,
            interlaced,
            lclusterbits,
            algs,
            fragment,
            base: hend.wrapping_add(if compact { 0 } else { 8 }),
            compacted_4b_initial: 0,
            compacted_2b: 0,
            nlc,
        };
        if compact {
            let totalidx =
                div_ceil_shift(i.size, sb.blkszbits.into()).ok_or(bad("inode size", i.size))?;
            lc.compacted_4b_initial = (32u64.wrapping_sub(lc.base % 32) / 4) & 7;
            if advise & erofs::Z_ADVISE_COMPACTED_2B != 0 && lc.compacted_4b_initial < totalidx {
                lc.compacted_2b = totalidx.wrapping_sub(lc.compacted_4b_initial) & !15;
            }
        }
        // Every index must be inside the input: this bounds the work of `validate`.
        if nlc > 0 {
            let (last, _) = lc.index_pos(nlc.wrapping_sub(1))?;
            slice(bytes, last, 4).ok_or(AbiError::Truncated {
                what: "lcluster indexes",
            })?;
        }
        Ok(Self::Lclusters(lc))
    }

    /// The mapping of logical byte `pos` (`pos < size`).
    pub fn map(&self, bytes: &[u8], sb: &Sb, pos: u64) -> Result<Mapping, AbiError> {
        match self {
            Self::Whole { off } => Ok(Mapping {
                logical_start: 0,
                logical_len: u64::MAX,
                kind: MapKind::Fragment {
                    packed_offset: *off,
                },
            }),
            Self::Extents(e) => e.map(bytes, sb, pos),
            Self::Lclusters(l) => l.map(bytes, sb, pos),
        }
    }

    /// Checks every extent or lcluster of the file, in one pass.
    pub fn validate(&self, bytes: &[u8], sb: &Sb, size: u64) -> Result<(), AbiError> {
        match self {
            Self::Whole { off } => check_fragment(sb, *off, size),
            Self::Extents(e) => e.validate(bytes, sb),
            Self::Lclusters(l) => l.validate(bytes, sb),
        }
    }

    /// End of the map metadata (for the overlap check).
    pub fn end(&self, i: &Inode) -> Option<u64> {
        match self {
            Self::Whole { .. } => round_up(i.body_end, 8)?.checked_add(8),
            Self::Extents(e) => e.pos.checked_add(e.count.checked_mul(e.recsz)?),
            Self::Lclusters(l) => match l.nlc.checked_sub(1) {
                None => round_up(i.body_end, 8)?.checked_add(8),
                Some(last) => {
                    let (p, shift) = l.index_pos(last).ok()?;
                    let pack: u64 = if l.compact && shift == 1 { 32 } else { 8 };
                    Some(p.checked_add(pack)? & !pack.wrapping_sub(1))
                }
            },
        }
    }
}

fn check_fragment(sb: &Sb, off: u64, len: u64) -> Result<(), AbiError> {
    match off.checked_add(len) {
        Some(end) if end <= sb.packed_size => Ok(()),
        _ => Err(AbiError::OutOfRange {
            table: "packed inode",
            index: off,
        }),
    }
}

/// The mapping of an encoded extent record with `plen` and `pstart`, covering `[la, end)`.
/// The mapping of uncompressed data of `len` bytes at `pa` (resolved to `device`, `offset`)
/// covering `llen` logical bytes: shifted (as is) or, for interlaced inodes and whole aligned
/// blocks, rotated.
fn plain_kind(
    sb: &Sb,
    interlaced: bool,
    (device, offset): (u16, u64),
    pa: u64,
    len: u64,
    llen: u64,
) -> Result<MapKind, AbiError> {
    if llen > len {
        return Err(bad("uncompressed cluster shorter than its range", len));
    }
    if interlaced && low_bits(pa | len, sb.blkszbits.into()) == 0 {
        if len != sb.blksz() {
            return Err(AbiError::Unsupported {
                what: "interlaced cluster of several blocks",
                value: len,
            });
        }
        return Ok(MapKind::Interlaced { device, offset });
    }
    Ok(MapKind::Raw { device, offset })
}

fn extent_kind(
    bytes: &[u8],
    sb: &Sb,
    interlaced: bool,
    plen: u32,
    pstart: u64,
    la: u64,
    end: u64,
) -> Result<MapKind, AbiError> {
    let len = u64::from(plen & erofs::Z_EXTENT_PLEN_MASK);
    if len == 0 {
        if plen != 0 {
            return Err(bad("extent plen", plen.into()));
        }
        return Ok(MapKind::Hole);
    }
    if plen & PLEN_RESERVED != 0 {
        return Err(bad("extent plen", plen.into()));
    }
    if len > MAX_PSIZE {
        return Err(AbiError::Unsupported {
            what: "extent larger than 1 MiB",
            value: len,
        });
    }
    let llen = end.wrapping_sub(la);
    if llen > MAX_DSIZE {
        return Err(AbiError::Unsupported {
            what: "extent decompressing to more than 12 MiB",
            value: llen,
        });
    }
    if pstart > PSTART_MAX {
        return Err(AbiError::OutOfRange {
            table: "extent pstart",
            index: pstart,
        });
    }
    let (device, offset) = resolve(bytes, sb, pstart, len)?;
    match plen >> erofs::Z_EXTENT_PLEN_FMT_BIT {
        0 => plain_kind(sb, interlaced, (device, offset), pstart, len, llen),
        ZSTD_FMT if sb.algs & (1 << erofs::compr::ZSTD) != 0 => Ok(MapKind::Encoded {
            device,
            offset,
            len,
            algorithm: erofs::compr::ZSTD,
            partial: plen & erofs::Z_EXTENT_PLEN_PARTIAL != 0,
        }),
        ZSTD_FMT => Err(bad("zstd extent without the zstd config", plen.into())),
        fmt => Err(AbiError::Unsupported {
            what: "extent format",
            value: fmt.into(),
        }),
    }
}

/// One decoded extent record.
#[derive(Clone, Copy, Debug)]
struct Rec {
    k: u64,
    plen: u32,
    pa: u64,
    la: u64,
}

impl Extents {
    /// Record `k`. 4- and 8-byte records have no lstart (it is `k << lclusterbits`) and 4-byte
    /// records no pstart (the caller accumulates it).
    fn record(&self, bytes: &[u8], k: u64) -> Result<Rec, AbiError> {
        let trunc = AbiError::Truncated { what: "extents" };
        let at = self
            .pos
            .checked_add(k.checked_mul(self.recsz).ok_or(trunc)?)
            .ok_or(trunc)?;
        let plen = le32(bytes, at).ok_or(trunc)?;
        if self.recsz <= 8 {
            let pa = if self.recsz == 8 {
                u64::from(le32(bytes, at.wrapping_add(4)).ok_or(trunc)?)
            } else {
                0
            };
            return Ok(Rec {
                k,
                plen,
                pa,
                la: shl(k, self.lclusterbits).ok_or(trunc)?,
            });
        }
        let pa = u64::from(le32(bytes, at.wrapping_add(4)).ok_or(trunc)?)
            | u64::from(le32(bytes, at.wrapping_add(8)).ok_or(trunc)?) << 32;
        let mut la = u64::from(le32(bytes, at.wrapping_add(12)).ok_or(trunc)?);
        if self.recsz == 32 {
            la |= u64::from(le32(bytes, at.wrapping_add(16)).ok_or(trunc)?) << 32;
        }
        Ok(Rec { k, plen, pa, la })
    }

    /// The mapping of record `r` covering `[r.la, end)`.
    fn kind(&self, bytes: &[u8], sb: &Sb, r: Rec, end: u64) -> Result<MapKind, AbiError> {
        if self.fragment && r.k.wrapping_add(1) == self.count {
            // As the kernel: the last record's plen (and pstart, when the record has one) hold
            // the fragment offset.
            let mut off = u64::from(r.plen);
            if self.recsz > 4 {
                if r.pa > u64::from(u32::MAX) {
                    return Err(bad("fragment offset", r.pa));
                }
                off |= r.pa << 32;
            }
            check_fragment(sb, off, end.wrapping_sub(r.la))?;
            return Ok(MapKind::Fragment { packed_offset: off });
        }
        extent_kind(bytes, sb, self.interlaced, r.plen, r.pa, r.la, end)
    }

    fn map(&self, bytes: &[u8], sb: &Sb, pos: u64) -> Result<Mapping, AbiError> {
        if self.recsz <= 8 {
            let mut r = self.record(bytes, pos >> (self.lclusterbits & 63))?;
            if self.recsz == 4 {
                r.pa = self.pa_base;
                for j in 0..r.k {
                    let p = self.record(bytes, j)?.plen;
                    r.pa =
                        r.pa.checked_add(u64::from(p & erofs::Z_EXTENT_PLEN_MASK))
                            .ok_or(bad("extent pstart", r.pa))?;
                }
            }
            let end =
                r.la.saturating_add(1 << (self.lclusterbits & 63))
                    .min(self.size);
            let kind = self.kind(bytes, sb, r, end)?;
            return Ok(Mapping {
                logical_start: r.la,
                logical_len: end.wrapping_sub(r.la),
                kind,
            });
        }
        // The last record starting at or before `pos`.
        let (mut lo, mut hi) = (0u64, self.count);
        let mut next_start = self.size;
        while lo < hi {
            let mid = lo.wrapping_add(hi.wrapping_sub(lo) / 2);
            let la = self.record(bytes, mid)?.la;
            if la <= pos {
                lo = mid.wrapping_add(1);
            } else {
                next_start = next_start.min(la);
                hi = mid;
            }
        }
        let Some(k) = lo.checked_sub(1) else {
            return Ok(Mapping {
                logical_start: 0,
                logical_len: next_start,
                kind: MapKind::Hole,
            });
        };
        let r = self.record(bytes, k)?;
        if k.wrapping_add(1) < self.count {
            next_start = self.record(bytes, k.wrapping_add(1))?.la;
        }
        if r.la >= next_start {
            return Err(AbiError::Unsorted {
                table: "extents",
                index: k,
            });
        }
        let kind = self.kind(bytes, sb, r, next_start)?;
        Ok(Mapping {
            logical_start: r.la,
            logical_len: next_start.wrapping_sub(r.la),
            kind,
        })
    }

    fn validate(&self, bytes: &[u8], sb: &Sb) -> Result<(), AbiError> {
        let mut pa4 = self.pa_base;
        let mut prev: Option<Rec> = None;
        for k in 0..self.count {
            let mut r = self.record(bytes, k)?;
            if self.recsz == 4 {
                r.pa = pa4;
                pa4 = pa4
                    .checked_add(u64::from(r.plen & erofs::Z_EXTENT_PLEN_MASK))
                    .ok_or(bad("extent pstart", pa4))?;
            }
            if r.la >= self.size {
                return Err(AbiError::OutOfRange {
                    table: "extent lstart",
                    index: k,
                });
            }
            if let Some(p) = prev {
                if r.la <= p.la {
                    return Err(AbiError::Unsorted {
                        table: "extents",
                        index: k,
                    });
                }
                self.kind(bytes, sb, p, r.la)?;
            }
            prev = Some(r);
        }
        match prev {
            Some(p) => self.kind(bytes, sb, p, self.size).map(|_| ()),
            None if self.fragment => Err(bad("tail fragment without an extent", 0)),
            None => Ok(()),
        }
    }
}

impl Lclusters {
    fn unit(&self) -> u64 {
        1u64 << (self.lclusterbits & 63)
    }

    /// Byte position of lcluster `lcn`'s index and the log2 of its amortized size (compact).
    fn index_pos(&self, lcn: u64) -> Result<(u64, u32), AbiError> {
        let oob = AbiError::Truncated {
            what: "lcluster indexes",
        };
        if !self.compact {
            return Ok((
                self.base
                    .checked_add(lcn.checked_mul(8).ok_or(oob)?)
                    .ok_or(oob)?,
                3,
            ));
        }
        let mut pos = self.base;
        let mut lcn = lcn;
        let mut shift = 2;
        if lcn >= self.compacted_4b_initial {
            pos = pos
                .checked_add(self.compacted_4b_initial.wrapping_mul(4))
                .ok_or(oob)?;
            lcn = lcn.wrapping_sub(self.compacted_4b_initial);
            if lcn < self.compacted_2b {
                shift = 1;
            } else {
                pos = pos
                    .checked_add(self.compacted_2b.checked_mul(2).ok_or(oob)?)
                    .ok_or(oob)?;
                lcn = lcn.wrapping_sub(self.compacted_2b);
            }
        }
        Ok((
            pos.checked_add(lcn.checked_mul(1 << shift).ok_or(oob)?)
                .ok_or(oob)?,
            shift,
        ))
    }

    fn decode(&self, bytes: &[u8], lcn: u64) -> Result<Lc, AbiError> {
        let trunc = AbiError::Truncated {
            what: "lcluster indexes",
        };
        if lcn >= self.nlc {
            return Err(AbiError::OutOfRange {
                table: "lcluster",
                index: lcn,
            });
        }
        let (pos, shift) = self.index_pos(lcn)?;
        let lc = if self.compact {
            self.decode_compact(bytes, pos, shift)?
        } else {
            let advise = le16(bytes, pos).ok_or(trunc)?;
            let ty = (advise & erofs::Z_LI_LCLUSTER_TYPE_MASK) as u8;
            let clusterofs = u64::from(le16(bytes, pos.wrapping_add(2)).ok_or(trunc)?);
            let u = le32(bytes, pos.wrapping_add(4)).ok_or(trunc)?;
            if ty == TYPE_NONHEAD {
                let d0 = u64::from(u & 0xffff);
                let mut lc = Lc {
                    ty,
                    clusterofs: self.unit(),
                    delta0: d0,
                    delta1: Some(u64::from(u >> 16)),
                    pblk: 0,
                    cblks: None,
                    partial: false,
                };
                if d0 & u64::from(erofs::Z_LI_D0_CBLKCNT) != 0 {
                    if self.advise
                        & (erofs::Z_ADVISE_BIG_PCLUSTER_1 | erofs::Z_ADVISE_BIG_PCLUSTER_2)
                        == 0
                    {
                        return Err(bad("CBLKCNT without big pclusters", lcn));
                    }
                    lc.cblks = Some(d0 & !u64::from(erofs::Z_LI_D0_CBLKCNT));
                    lc.delta0 = 1;
                }
                lc
            } else {
                Lc {
                    ty,
                    clusterofs,
                    delta0: 0,
                    delta1: None,
                    pblk: u.into(),
                    cblks: None,
                    partial: advise & erofs::Z_LI_PARTIAL_REF != 0,
                }
            }
        };
        if lc.ty != TYPE_NONHEAD && lc.clusterofs >= self.unit() {
            return Err(bad("lcluster clusterofs", lc.clusterofs));
        }
        Ok(lc)
    }

    /// Compact indexes, as the kernel's `z_erofs_load_compact_lcluster`: lclusters come in packs
    /// of 2 (4 bytes each) or 16 (2 bytes each) sharing a trailing 32-bit block address.
    // Every quantity here is bounded by the pack (at most 16 lclusters of 14 bits in 32 bytes),
    // `lo` by 14 bits and `nblk` by 16 * 2^11, so plain arithmetic cannot overflow.
    #[allow(clippy::arithmetic_side_effects)]
    fn decode_compact(&self, bytes: &[u8], pos: u64, shift: u32) -> Result<Lc, AbiError> {
        let trunc = AbiError::Truncated {
            what: "lcluster indexes",
        };
        let vcnt: u64 = match shift {
            2 if self.lclusterbits <= 14 => 2,
            1 if self.lclusterbits <= 12 => 16,
            _ => {
                return Err(AbiError::Unsupported {
                    what: "compact index lcluster size",
                    value: self.lclusterbits.into(),
                });
            }
        };
        let pack = vcnt << shift;
        let lobits = self.lclusterbits.max(12);
        let encodebits = ((pack - 4) * 8) / vcnt;
        let start = pos & !(pack - 1);
        let data = slice(bytes, start, pack).ok_or(trunc)?;
        let i0 = (pos - start) >> shift;
        let at = |i: u64| -> Result<(u64, u8), AbiError> {
            let bit = encodebits * i;
            let v = u64::from(le32(data, bit / 8).ok_or(trunc)?) >> (bit % 8);
            Ok((v & ((1 << lobits) - 1), ((v >> lobits) & 3) as u8))
        };
        let (lo, ty) = at(i0)?;
        let big = self.advise & erofs::Z_ADVISE_BIG_PCLUSTER_1 != 0;
        let cblkcnt = u64::from(erofs::Z_LI_D0_CBLKCNT);
        if ty == TYPE_NONHEAD {
            let mut lc = Lc {
                ty,
                clusterofs: self.unit(),
                delta0: lo,
                delta1: None,
                pblk: 0,
                cblks: None,
                partial: false,
            };
            if lo & cblkcnt != 0 {
                if !big {
                    return Err(bad("CBLKCNT without big pclusters", lo));
                }
                lc.cblks = Some(lo & !cblkcnt);
                lc.delta0 = 1;
            } else if i0 + 1 == vcnt {
                // The last lcluster of a pack stores delta[1]; delta[0] follows from the one before.
                let (plo, pty) = if i0 == 0 {
                    (0, TYPE_PLAIN)
                } else {
                    at(i0 - 1)?
                };
                let d = if pty != TYPE_NONHEAD {
                    0
                } else if plo & cblkcnt != 0 {
                    1
                } else {
                    plo
                };
                lc.delta0 = d + 1;
            }
            return Ok(lc);
        }
        // Count the pclusters (or their blocks) before this head within the pack.
        let mut i = i0 as i64;
        let mut nblk: u64 = if big { 0 } else { 1 };
        while i > 0 {
            i -= 1;
            let (lo, ty) = at(i as u64)?;
            if !big {
                if ty == TYPE_NONHEAD {
                    i -= lo as i64;
                }
                if i >= 0 {
                    nblk += 1;
                }
            } else if ty == TYPE_NONHEAD {
                if lo & cblkcnt != 0 {
                    i -= 1;
                    nblk += lo & !cblkcnt;
                    continue;
                }
                if lo <= 1 {
                    return Err(bad("compact lcluster delta", lo));
                }
                i -= lo as i64 - 2;
            } else {
                nblk += 1;
            }
        }
        let base = u64::from(le32(data, pack - 4).ok_or(trunc)?);
        let pblk = base + nblk;
        if pblk > u64::from(u32::MAX) {
            return Err(bad("lcluster block address", pblk));
        }
        Ok(Lc {
            ty,
            clusterofs: lo,
            delta0: 0,
            delta1: None,
            pblk,
            cblks: None,
            partial: false,
        })
    }

    /// The head lcluster of the pcluster holding logical byte `pos`.
    fn head_of(&self, bytes: &[u8], pos: u64) -> Result<(u64, Lc), AbiError> {
        let lcn = pos >> (self.lclusterbits & 63);
        let endoff = low_bits(pos, self.lclusterbits);
        let m = self.decode(bytes, lcn)?;
        let mut dist = match m.ty {
            TYPE_NONHEAD => m.delta0,
            _ if endoff >= m.clusterofs => return Ok((lcn, m)),
            _ => 1,
        };
        let mut lcn = lcn;
        // A validated inode needs one step; the bound keeps corrupt ones from looping.
        for _ in 0..=(MAX_DSIZE >> (self.lclusterbits & 63)) {
            lcn = lcn
                .checked_sub(dist)
                .filter(|_| dist > 0)
                .ok_or(bad("lcluster lookback distance", dist))?;
            let m = self.decode(bytes, lcn)?;
            if m.ty != TYPE_NONHEAD {
                return Ok((lcn, m));
            }
            dist = m.delta0;
        }
        Err(bad("lcluster lookback distance", dist))
    }

    /// The logical start of the pcluster following the one headed at `head`, or the file size.
    fn next_head(&self, bytes: &[u8], head: u64) -> Result<u64, AbiError> {
        let mut lcn = head;
        for _ in 0..=(MAX_DSIZE >> (self.lclusterbits & 63)).wrapping_add(1) {
            lcn = lcn.wrapping_add(1);
            if lcn >= self.nlc {
                return Ok(self.size);
            }
            let m = self.decode(bytes, lcn)?;
            if m.ty != TYPE_NONHEAD {
                return shl(lcn, self.lclusterbits)
                    .and_then(|v| v.checked_add(m.clusterofs))
                    .map(|la| la.min(self.size))
                    .ok_or(bad("lcluster", lcn));
            }
        }
        Err(AbiError::Unsupported {
            what: "extent decompressing to more than 12 MiB",
            value: head,
        })
    }

    /// The mapping of the pcluster headed at lcluster `lcn` covering `[la, end)`.
    fn extent(
        &self,
        bytes: &[u8],
        sb: &Sb,
        lcn: u64,
        h: &Lc,
        la: u64,
        end: u64,
    ) -> Result<MapKind, AbiError> {
        let llen = end
            .checked_sub(la)
            .filter(|&l| l > 0)
            .ok_or(bad("lcluster clusterofs", h.clusterofs))?;
        if llen > MAX_DSIZE {
            return Err(AbiError::Unsupported {
                what: "extent decompressing to more than 12 MiB",
                value: llen,
            });
        }
        if let Some(off) = self.fragment.filter(|_| end == self.size) {
            let off = if self.compact {
                off
            } else {
                off | h.pblk << 32
            };
            check_fragment(sb, off, llen)?;
            return Ok(MapKind::Fragment { packed_offset: off });
        }
        let big = match h.ty {
            TYPE_HEAD1 => self.advise & erofs::Z_ADVISE_BIG_PCLUSTER_1 != 0,
            _ => self.advise & erofs::Z_ADVISE_BIG_PCLUSTER_2 != 0,
        };
        let next = lcn.wrapping_add(1);
        let cblks = if !big || shl(next, self.lclusterbits).is_none_or(|v| v >= self.size) {
            1
        } else {
            let n = self.decode(bytes, next)?;
            match (n.ty, n.cblks) {
                (TYPE_NONHEAD, Some(c)) if c > 0 => c,
                (TYPE_NONHEAD, _) => return Err(bad("missing CBLKCNT", next)),
                _ => 1,
            }
        };
        let pa = sb.blocks_to_bytes(h.pblk).ok_or(AbiError::OutOfRange {
            table: "lcluster block address",
            index: h.pblk,
        })?;
        let plen = sb
            .blocks_to_bytes(cblks)
            .ok_or(bad("compressed block count", cblks))?;
        if plen > MAX_PSIZE {
            return Err(AbiError::Unsupported {
                what: "extent larger than 1 MiB",
                value: plen,
            });
        }
        let (device, offset) = resolve(bytes, sb, pa, plen).map_err(|_| AbiError::OutOfRange {
            table: "lcluster block address",
            index: h.pblk,
        })?;
        match h.ty {
            TYPE_PLAIN => plain_kind(sb, self.interlaced, (device, offset), pa, plen, llen),
            _ => {
                let [head1, head2] = self.algs;
                let alg = if h.ty == TYPE_HEAD2 { head2 } else { head1 };
                if alg != erofs::compr::ZSTD {
                    return Err(AbiError::Unsupported {
                        what: "compression algorithm",
                        value: alg.into(),
                    });
                }
                if sb.algs & (1 << erofs::compr::ZSTD) == 0 {
                    return Err(bad("zstd pcluster without the zstd config", lcn));
                }
                Ok(MapKind::Encoded {
                    device,
                    offset,
                    len: plen,
                    algorithm: alg,
                    partial: h.partial,
                })
            }
        }
    }

    fn map(&self, bytes: &[u8], sb: &Sb, pos: u64) -> Result<Mapping, AbiError> {
        let (lcn, h) = self.head_of(bytes, pos)?;
        let la = shl(lcn, self.lclusterbits)
            .and_then(|v| v.checked_add(h.clusterofs))
            .ok_or(bad("lcluster", lcn))?;
        let end = self.next_head(bytes, lcn)?;
        let kind = self.extent(bytes, sb, lcn, &h, la, end)?;
        Ok(Mapping {
            logical_start: la,
            logical_len: end.wrapping_sub(la),
            kind,
        })
    }

    fn validate(&self, bytes: &[u8], sb: &Sb) -> Result<(), AbiError> {
        // The current pcluster's head (lcn, index, logical start), and how far its NONHEADs'
        // delta[1] reach: at most to the next head (the kernel follows them as a chain).
        let mut head: Option<(u64, Lc, u64)> = None;
        let mut reach = 0u64;
        for lcn in 0..self.nlc {
            let m = self.decode(bytes, lcn)?;
            if m.ty == TYPE_NONHEAD {
                let (hlcn, _, _) = head.ok_or(bad("first lcluster is not a head", lcn))?;
                // delta[0] may stop short of the head (mkfs caps it below CBLKCNT); the kernel
                // then follows the chain, every step landing inside the same pcluster.
                let back = lcn.wrapping_sub(hlcn);
                let ok = match m.cblks {
                    Some(_) => back == 1,
                    None => (1..=back).contains(&m.delta0),
                };
                if !ok {
                    return Err(bad("lcluster delta[0]", m.delta0));
                }
                if let Some(d1) = m.delta1 {
                    reach = reach.max(lcn.saturating_add(d1));
                }
                continue;
            }
            if lcn == 0 && m.clusterofs != 0 {
                return Err(bad("lcluster clusterofs", m.clusterofs));
            }
            if reach > lcn {
                return Err(bad("lcluster delta[1]", reach.wrapping_sub(lcn)));
            }
            let la = shl(lcn, self.lclusterbits)
                .and_then(|v| v.checked_add(m.clusterofs))
                .ok_or(bad("lcluster", lcn))?;
            if let Some((hlcn, h, hla)) = head {
                self.extent(bytes, sb, hlcn, &h, hla, la.min(self.size))?;
            }
            // mkfs ends some files with a head at exactly the end of the file: it only
            // terminates the previous pcluster.
            head = (la < self.size).then_some((lcn, m, la));
            reach = 0;
        }
        if let Some((hlcn, h, hla)) = head {
            self.extent(bytes, sb, hlcn, &h, hla, self.size)?;
        }
        Ok(())
    }
}
