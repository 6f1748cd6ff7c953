//! Test helpers shared by every crate (feature `testkit`): the pseudo-random generator
//! [`XorShift64`], and a tiny EROFS writer: it lays out a small image exactly as the
//! kernel expects and records where everything went, so a test can corrupt one field or point
//! extents at frames of its own. Not a general writer: one directory block per directory, 4 KiB
//! blocks, everything in memory, and it panics on what it does not support.
#![allow(
    missing_docs,
    clippy::needless_range_loop,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::panic,
    clippy::new_without_default
)]

pub mod rng;

pub use rng::XorShift64;

use alloc::vec;
use alloc::vec::Vec;

use crate::erofs::{self, *};
use crate::le::{Le16, Le32, Le64};
use crate::pod::Pod;

pub const BLK: u64 = 4096;
/// The chunk region starts at block 1; metadata follows it.
pub const CHUNKS: u64 = BLK;

pub enum Data {
    /// Children (name, node index); `.` and `..` are added.
    Dir(Vec<(Vec<u8>, usize)>),
    /// FLAT_INLINE regular file or symlink content.
    Inline(Vec<u8>),
    /// FLAT_PLAIN content in data blocks (regular files, symlinks).
    Plain(Vec<u8>),
    /// FLAT_PLAIN without blocks (sparse).
    Sparse(u64),
    /// 48-bit extents: (plen, pstart, lstart).
    Extents {
        size: u64,
        recsz: u64,
        recs: Vec<(u32, u64, u64)>,
        fragment: bool,
    },
    /// Whole-file fragment.
    Whole { size: u64, off: u64 },
    /// Full lcluster indexes (raw 8-byte records), with the map header's advise and clusterbits.
    Full {
        size: u64,
        advise: u16,
        clusterbits: u8,
        algs: u8,
        indexes: Vec<[u8; 8]>,
    },
    /// Compact lcluster indexes: `bytes` is the raw index area right after the map header.
    Compact {
        size: u64,
        advise: u16,
        clusterbits: u8,
        algs: u8,
        bytes: Vec<u8>,
    },
    /// No data (devices, FIFOs, sockets).
    None,
}

pub struct Node {
    pub mode: u16,
    pub extended: bool,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub nsec: u32,
    pub rdev: u32,
    /// Inline xattrs: (index, suffix, value).
    pub xattrs: Vec<(u8, Vec<u8>, Vec<u8>)>,
    /// Indexes into `Builder::shared`.
    pub shared: Vec<usize>,
    pub data: Data,
}

impl Node {
    pub fn new(mode: u16, data: Data) -> Self {
        Node {
            mode,
            extended: false,
            nlink: 1,
            uid: 0,
            gid: 0,
            mtime: 0,
            nsec: 0,
            rdev: 0,
            xattrs: vec![],
            shared: vec![],
            data,
        }
    }
}

pub struct Builder {
    pub nodes: Vec<Node>,
    pub packed: Option<usize>,
    pub shared: Vec<(u8, Vec<u8>, Vec<u8>)>,
    /// Extra devices: (blocks, uniaddr).
    pub devices: Vec<(u32, u32)>,
    pub incompat: u32,
    pub compat: u32,
    pub name_filter: u32,
    /// Bytes of the chunk region at [`CHUNKS`]; `None`: one block of non-zero filler.
    pub chunks: Option<Vec<u8>>,
}

/// Where things went.
#[derive(Default, Debug)]
pub struct Layout {
    pub nid: Vec<u64>,
    /// Byte offset of each node's inode.
    pub pos: Vec<u64>,
    /// Byte offset of each node's data: dir / plain blocks, inline tail, or map header.
    pub data: Vec<u64>,
    /// Byte offset of the first extent record / lcluster index.
    pub recs: Vec<u64>,
    pub xattr_area: u64,
    pub devt: u64,
    /// Byte offset of the metadata area (nid 0).
    pub meta: u64,
}

pub fn xattr_body_len(n: &Node) -> usize {
    if n.xattrs.is_empty() && n.shared.is_empty() {
        return 0;
    }
    let mut len = 12 + 4 * n.shared.len();
    for (_, name, value) in &n.xattrs {
        len += (4 + name.len() + value.len()).next_multiple_of(4);
    }
    len
}

/// Directory data: entries packed greedily into blocks, each block its entry table then its
/// names; every block but the last is padded to a whole block.
fn dir_bytes(entries: &[(Vec<u8>, u64, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = entries;
    while !rest.is_empty() {
        let mut n = 0;
        let mut used = 0;
        while n < rest.len() && used + 12 + rest[n].0.len() <= BLK as usize {
            used += 12 + rest[n].0.len();
            n += 1;
        }
        let (block, tail) = rest.split_at(n);
        let mut b = vec![0u8; 12 * block.len()];
        let mut names = Vec::new();
        for (i, (name, nid, ft)) in block.iter().enumerate() {
            let nameoff = (12 * block.len() + names.len()) as u16;
            b[i * 12..i * 12 + 8].copy_from_slice(&nid.to_le_bytes());
            b[i * 12 + 8..i * 12 + 10].copy_from_slice(&nameoff.to_le_bytes());
            b[i * 12 + 10] = *ft;
            names.extend_from_slice(name);
        }
        b.extend_from_slice(&names);
        if !tail.is_empty() {
            b.resize(BLK as usize, 0);
        }
        out.extend_from_slice(&b);
        rest = tail;
    }
    out
}

fn ft(mode: u16) -> u8 {
    crate::parse::inode::ftype_of_mode(mode)
}

impl Builder {
    /// Bytes of directory `i`'s data (only names matter, not nids).
    fn dir_len(&self, i: usize) -> usize {
        let Data::Dir(children) = &self.nodes[i].data else {
            return 0;
        };
        let mut e: Vec<(Vec<u8>, u64, u8)> =
            children.iter().map(|(n, _)| (n.clone(), 0, 0)).collect();
        e.push((b".".to_vec(), 0, 0));
        e.push((b"..".to_vec(), 0, 0));
        e.sort();
        dir_bytes(&e).len()
    }

    pub fn new() -> Self {
        Builder {
            nodes: vec![],
            packed: None,
            shared: vec![],
            devices: vec![],
            incompat: FEATURE_INCOMPAT_ZERO_PADDING
                | FEATURE_INCOMPAT_COMPR_CFGS
                | FEATURE_INCOMPAT_48BIT,
            compat: FEATURE_COMPAT_MTIME,
            name_filter: 0,
            chunks: None,
        }
    }

    pub fn add(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn inline_len(&self, i: usize) -> usize {
        match &self.nodes[i].data {
            Data::Dir(_) => match self.dir_len(i) {
                len if len <= BLK as usize => len,
                // Directories larger than a block live in data blocks.
                _ => 0,
            },
            Data::Inline(b) => b.len(),
            Data::Extents { recsz, recs, .. } => {
                // Header at the next 8-aligned offset, records aligned to their size.
                8 + 16 + recs.len() * *recsz as usize
            }
            Data::Whole { .. } => 16,
            Data::Full { indexes, .. } => 16 + 8 + 8 * indexes.len(),
            Data::Compact { bytes, .. } => 16 + bytes.len(),
            _ => 0,
        }
    }

    /// Builds the image. Directories are FLAT_INLINE (one block at most).
    pub fn build(&self) -> (Vec<u8>, Layout) {
        let n = self.nodes.len();
        let mut lay = Layout {
            nid: vec![0; n],
            pos: vec![0; n],
            data: vec![0; n],
            recs: vec![0; n],
            ..Layout::default()
        };
        let filler;
        let chunks = match &self.chunks {
            Some(c) => c.as_slice(),
            None => {
                filler = (0..BLK).map(|k| (k % 251) as u8 | 1).collect::<Vec<u8>>();
                filler.as_slice()
            }
        };
        let meta = CHUNKS + (chunks.len() as u64).next_multiple_of(BLK).max(BLK);
        lay.meta = meta;
        // Pass 1: positions. Each inode starts at a 32-byte slot; its inline part must not
        // cross a block, so it moves to the next block if needed.
        let mut at = meta;
        for i in 0..n {
            let node = &self.nodes[i];
            let isize = if node.extended { 64 } else { 32 };
            let body = isize + xattr_body_len(node) as u64;
            let total = body + self.inline_len(i) as u64;
            if (at % BLK) + total > BLK && total <= BLK {
                at = at.next_multiple_of(BLK);
            }
            lay.pos[i] = at;
            lay.nid[i] = (at - meta) / 32;
            at = (at + total).next_multiple_of(32);
        }
        let meta_end = at.next_multiple_of(BLK);
        // Data blocks for FLAT_PLAIN, then the shared xattr area, then the device table.
        let mut data_at = meta_end;
        let mut plain_pos = vec![0u64; n];
        for i in 0..n {
            let len = match &self.nodes[i].data {
                Data::Plain(b) => b.len(),
                Data::Dir(_) if self.dir_len(i) > BLK as usize => self.dir_len(i),
                _ => continue,
            };
            plain_pos[i] = data_at;
            data_at += (len as u64).next_multiple_of(BLK);
        }
        lay.xattr_area = data_at;
        let mut shared_off = vec![];
        let mut xa = Vec::new();
        for (idx, name, value) in &self.shared {
            shared_off.push(xa.len() as u32 / 4);
            xa.extend_from_slice(&[name.len() as u8, *idx]);
            xa.extend_from_slice(&(value.len() as u16).to_le_bytes());
            xa.extend_from_slice(name);
            xa.extend_from_slice(value);
            xa.resize(xa.len().next_multiple_of(4), 0);
        }
        lay.devt = (data_at + (xa.len() as u64).next_multiple_of(BLK)).next_multiple_of(BLK);
        let total = lay.devt + BLK;
        let mut img = vec![0u8; total as usize];
        img[CHUNKS as usize..CHUNKS as usize + chunks.len()].copy_from_slice(chunks);
        img[lay.xattr_area as usize..lay.xattr_area as usize + xa.len()].copy_from_slice(&xa);
        // Parents.
        let mut parent = vec![usize::MAX; n];
        parent[0] = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            if let Data::Dir(children) = &node.data {
                for (_, c) in children {
                    if parent[*c] == usize::MAX {
                        parent[*c] = i;
                    }
                }
            }
        }
        // Pass 2: inodes.
        for i in 0..n {
            let node = &self.nodes[i];
            let pos = lay.pos[i] as usize;
            let isize = if node.extended { 64 } else { 32 };
            let (layout, size, u, inline): (u16, u64, u64, Vec<u8>) = match &node.data {
                Data::Dir(children) => {
                    let mut e: Vec<(Vec<u8>, u64, u8)> = children
                        .iter()
                        .map(|(name, c)| (name.clone(), lay.nid[*c], ft(self.nodes[*c].mode)))
                        .collect();
                    e.push((b".".to_vec(), lay.nid[i], erofs::ft::DIR));
                    e.push((b"..".to_vec(), lay.nid[parent[i]], erofs::ft::DIR));
                    e.sort();
                    let b = dir_bytes(&e);
                    if b.len() > BLK as usize {
                        img[plain_pos[i] as usize..plain_pos[i] as usize + b.len()]
                            .copy_from_slice(&b);
                        (INODE_FLAT_PLAIN, b.len() as u64, plain_pos[i] / BLK, vec![])
                    } else {
                        (INODE_FLAT_INLINE, b.len() as u64, 0, b)
                    }
                }
                Data::Inline(b) => (INODE_FLAT_INLINE, b.len() as u64, 0, b.clone()),
                Data::Plain(b) => {
                    img[plain_pos[i] as usize..plain_pos[i] as usize + b.len()].copy_from_slice(b);
                    (INODE_FLAT_PLAIN, b.len() as u64, plain_pos[i] / BLK, vec![])
                }
                Data::Sparse(size) => (INODE_FLAT_PLAIN, *size, u64::MAX, vec![]),
                Data::None => (INODE_FLAT_PLAIN, 0, node.rdev.into(), vec![]),
                Data::Extents {
                    size,
                    recsz,
                    recs,
                    fragment,
                } => {
                    let code: u16 = match recsz {
                        4 => 0,
                        8 => 1,
                        16 => 2,
                        _ => 3,
                    };
                    let mut advise = Z_ADVISE_EXTENTS | code << 1;
                    if *fragment {
                        advise |= Z_ADVISE_FRAGMENT_PCLUSTER;
                    }
                    let mut h = MapHeader::zeroed();
                    h.fragmentoff_or_extents_lo = Le32::new(recs.len() as u32);
                    h.advise = Le16::new(advise);
                    let mut m = h.as_bytes().to_vec();
                    let body_end = pos as u64 + isize + xattr_body_len(node) as u64;
                    let hpos = body_end.next_multiple_of(8);
                    let rpos = (hpos + 8).next_multiple_of(*recsz);
                    m.resize((rpos - hpos) as usize, 0);
                    for (plen, pstart, lstart) in recs {
                        let mut r = [0u8; 32];
                        r[0..4].copy_from_slice(&plen.to_le_bytes());
                        r[4..8].copy_from_slice(&(*pstart as u32).to_le_bytes());
                        r[8..12].copy_from_slice(&((*pstart >> 32) as u32).to_le_bytes());
                        r[12..16].copy_from_slice(&(*lstart as u32).to_le_bytes());
                        r[16..20].copy_from_slice(&((*lstart >> 32) as u32).to_le_bytes());
                        m.extend_from_slice(&r[..*recsz as usize]);
                    }
                    lay.recs[i] = rpos;
                    let pad = vec![0u8; (hpos - body_end) as usize];
                    (INODE_COMPRESSED_FULL, *size, 1, [pad, m].concat())
                }
                Data::Whole { size, off } => {
                    let body_end = pos as u64 + isize + xattr_body_len(node) as u64;
                    let hpos = body_end.next_multiple_of(8);
                    let mut m = vec![0u8; (hpos - body_end) as usize];
                    m.extend_from_slice(&(off | 1 << 63).to_le_bytes());
                    (INODE_COMPRESSED_FULL, *size, 0, m)
                }
                Data::Full {
                    size,
                    advise,
                    clusterbits,
                    algs,
                    indexes,
                } => {
                    let body_end = pos as u64 + isize + xattr_body_len(node) as u64;
                    let hpos = body_end.next_multiple_of(8);
                    let mut m = vec![0u8; (hpos - body_end) as usize];
                    let mut h = MapHeader::zeroed();
                    h.advise = Le16::new(*advise);
                    h.algorithmtype = *algs;
                    h.clusterbits = *clusterbits;
                    m.extend_from_slice(h.as_bytes());
                    m.extend_from_slice(&[0u8; 8]);
                    lay.recs[i] = hpos + 16;
                    for x in indexes {
                        m.extend_from_slice(x);
                    }
                    (INODE_COMPRESSED_FULL, *size, 1, m)
                }
                Data::Compact {
                    size,
                    advise,
                    clusterbits,
                    algs,
                    bytes,
                } => {
                    let body_end = pos as u64 + isize + xattr_body_len(node) as u64;
                    let hpos = body_end.next_multiple_of(8);
                    let mut m = vec![0u8; (hpos - body_end) as usize];
                    let mut h = MapHeader::zeroed();
                    h.advise = Le16::new(*advise);
                    h.algorithmtype = *algs;
                    h.clusterbits = *clusterbits;
                    m.extend_from_slice(h.as_bytes());
                    lay.recs[i] = hpos + 8;
                    m.extend_from_slice(bytes);
                    (INODE_COMPRESSED_COMPACT, *size, 1, m)
                }
            };
            let xcount = xattr_body_len(node);
            let icount = if xcount == 0 {
                0
            } else {
                (xcount - 12) / 4 + 1
            } as u16;
            let format = (layout << I_DATALAYOUT_BIT)
                | if node.extended {
                    I_VERSION_EXTENDED
                } else {
                    1 << 4
                };
            if node.extended {
                let mut d = InodeExtended::zeroed();
                d.format = Le16::new(format);
                d.xattr_icount = Le16::new(icount);
                d.mode = Le16::new(node.mode);
                d.nb = Le16::new((u >> 32) as u16);
                d.size = Le64::new(size);
                d.u = Le32::new(u as u32);
                d.ino = Le32::new(i as u32);
                d.uid = Le32::new(node.uid);
                d.gid = Le32::new(node.gid);
                d.mtime = Le64::new(node.mtime);
                d.mtime_nsec = Le32::new(node.nsec);
                d.nlink = Le32::new(node.nlink);
                img[pos..pos + 64].copy_from_slice(d.as_bytes());
            } else {
                let mut d = InodeCompact::zeroed();
                // Directories keep nlink in `nb`; others use NLINK_1 and the address MSB.
                let dir = node.mode & 0o170000 == 0o040000;
                let format = if dir { format & !(1 << 4) } else { format };
                d.format = Le16::new(format);
                d.xattr_icount = Le16::new(icount);
                d.mode = Le16::new(node.mode);
                d.nb = Le16::new(if dir {
                    node.nlink as u16
                } else {
                    (u >> 32) as u16
                });
                d.size = Le32::new(size as u32);
                d.mtime = Le32::new(node.mtime as u32);
                d.u = Le32::new(u as u32);
                d.ino = Le32::new(i as u32);
                d.uid = Le16::new(node.uid as u16);
                d.gid = Le16::new(node.gid as u16);
                img[pos..pos + 32].copy_from_slice(d.as_bytes());
            }
            // Xattr body.
            let mut x = pos + isize as usize;
            if xcount > 0 {
                img[x..x + 4].copy_from_slice(&self.name_filter.to_le_bytes());
                img[x + 4] = node.shared.len() as u8;
                x += 12;
                for s in &node.shared {
                    img[x..x + 4].copy_from_slice(&shared_off[*s].to_le_bytes());
                    x += 4;
                }
                for (idx, name, value) in &node.xattrs {
                    img[x] = name.len() as u8;
                    img[x + 1] = *idx;
                    img[x + 2..x + 4].copy_from_slice(&(value.len() as u16).to_le_bytes());
                    img[x + 4..x + 4 + name.len()].copy_from_slice(name);
                    img[x + 4 + name.len()..x + 4 + name.len() + value.len()]
                        .copy_from_slice(value);
                    x += (4 + name.len() + value.len()).next_multiple_of(4);
                }
            }
            lay.data[i] = if plain_pos[i] != 0 {
                plain_pos[i]
            } else {
                x as u64
            };
            img[x..x + inline.len()].copy_from_slice(&inline);
            if matches!(
                node.data,
                Data::Extents { .. }
                    | Data::Whole { .. }
                    | Data::Full { .. }
                    | Data::Compact { .. }
            ) {
                lay.data[i] = (x as u64).next_multiple_of(8);
            }
        }
        // Superblock, zstd config, device table.
        let mut sb = SuperBlock::zeroed();
        sb.magic = Le32::new(SUPER_MAGIC);
        sb.feature_compat = Le32::new(self.compat);
        sb.blkszbits = 12;
        sb.inos = Le64::new(n as u64);
        sb.blocks_lo = Le32::new((total / BLK) as u32);
        sb.meta_blkaddr = Le32::new((meta / BLK) as u32);
        sb.xattr_blkaddr = Le32::new((lay.xattr_area / BLK) as u32);
        let mut incompat = self.incompat;
        if let Some(p) = self.packed {
            incompat |= FEATURE_INCOMPAT_FRAGMENTS;
            sb.packed_nid = Le64::new(lay.nid[p]);
        }
        if !self.devices.is_empty() {
            incompat |= FEATURE_INCOMPAT_DEVICE_TABLE;
            sb.extra_devices = Le16::new(self.devices.len() as u16);
            sb.devt_slotoff = Le16::new((lay.devt / 128) as u16);
            for (k, (blocks, uniaddr)) in self.devices.iter().enumerate() {
                let mut d = DeviceSlot::zeroed();
                d.tag[0] = b'd';
                d.blocks_lo = Le32::new(*blocks);
                d.uniaddr_lo = Le32::new(*uniaddr);
                let at = lay.devt as usize + 128 * k;
                img[at..at + 128].copy_from_slice(d.as_bytes());
            }
        }
        sb.feature_incompat = Le32::new(incompat);
        sb.available_compr_algs = Le16::new(1 << compr::ZSTD);
        sb.rootnid_2b_or_blocks_hi = Le16::new(0);
        sb.rootnid_8b = Le64::new(lay.nid[0]);
        img[1024..1024 + 144].copy_from_slice(sb.as_bytes());
        // zstd config right after the 128-byte superblock: length 6, format 0, windowlog 7.
        img[1152..1154].copy_from_slice(&6u16.to_le_bytes());
        img[1154..1160].copy_from_slice(&[0, 7, 0, 0, 0, 0]);
        (img, lay)
    }
}
