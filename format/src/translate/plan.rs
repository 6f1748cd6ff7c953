//! Phase 1 decides every inode's on-disk shape and position (nid, data blocks); phase 2 asks the
//! encoders to write the bytes. Sizes never depend on positions, so one pass of each suffices.

use chunkfs_kernel_abi::erofs::{self, ISLOT_SIZE, PCLUSTER_MAX_SIZE};

use super::clusters::{self, ClusterPlan};
use super::ctx::{Ctx, Features, Frame, Geo, META_MAX, checked_add, round_up};
use super::descriptor::{BuiltDescriptor, Stats};
use super::dir;
use super::error::{Error, PACKED_INODE};
use super::extents::{self, Segment};
use super::inode::{self, Core, Times};
use super::layout::{ChunkLocation, DeviceLayout, ExtentLayout};
use super::superblock::{Head, HeadParams};
use super::xattr;
use super::zero_frame;
use crate::model::{FileLayout, Image, InodeKind};

/// Extra devices' address ranges start on multiples of this, so the primary device may grow
/// (e.g. by an appended digest table) without reaching them.
const DEVICE_ALIGN: u64 = 1 << 30;

/// What follows an inode core.
#[derive(Clone, Debug)]
pub(super) enum Data {
    /// Nothing (devices, fifos, sockets, empty files).
    None,
    /// Directory or symlink bytes: `size` bytes, the last `tail` of them inline after the inode
    /// (FLAT_INLINE) when `tail > 0`, else all in blocks (FLAT_PLAIN).
    Flat { size: u64, tail: u64 },
    /// Encoded extents (48-bit layout).
    Extents { count: u64, recsz: u64 },
    /// Full lcluster indexes (cluster layout).
    Clusters(ClusterPlan),
    /// The whole file is in the packed inode at this offset.
    Fragment { offset: u64 },
}

/// One inode's shape and position.
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub core: Core,
    pub xattr_isize: u64,
    pub data: Data,
    /// Bytes from the inode's start to the end of its record.
    pub record_len: u64,
    /// Byte offset of the inode in the metadata area.
    pub offset: u64,
    /// First data block (index within the metadata area) of a Flat inode's blocks.
    pub first_block: u64,
}

impl Node {
    pub fn nid(&self) -> u64 {
        self.offset / ISLOT_SIZE as u64
    }

    /// Blocks this inode needs outside its record.
    fn data_blocks(&self, blksz: u64) -> u64 {
        match self.data {
            Data::Flat { size, tail } => (size - tail).div_ceil(blksz),
            _ => 0,
        }
    }

    /// Whether the whole record must sit in one block (inline data may not cross a block).
    fn confined(&self) -> bool {
        matches!(self.data, Data::Flat { tail, .. } if tail > 0)
    }
}

/// Places records and blocks in the metadata area.
///
/// Inode records are packed in runs of contiguous blocks; data blocks are taken from the end
/// of the area. Both grow in visiting order, so an inode, its directory's blocks and its
/// siblings stay close together, and no block is padded except where a record must not cross.
struct Area {
    blksz: u64,
    /// Blocks allocated so far.
    end_blocks: u64,
    /// End (bytes) of the current run of inode blocks.
    run_end: u64,
    /// Next free byte in the current run.
    cursor: u64,
}

impl Area {
    fn place(&mut self, len: u64, core_len: u64, confined: bool) -> Result<u64, Error> {
        let blksz = self.blksz;
        let mut at = round_up(self.cursor, ISLOT_SIZE as u64)?;
        let need = if confined { len } else { core_len };
        if at % blksz + need > blksz {
            at = round_up(at, blksz)?;
        }
        let mut end = checked_add(at, len)?;
        if end > self.run_end {
            if self.run_end != self.end_blocks * blksz {
                // The run cannot grow: data blocks follow it. Start a new run at the end.
                at = self.end_blocks * blksz;
                end = checked_add(at, len)?;
            }
            self.end_blocks = end.div_ceil(blksz);
            self.run_end = self.end_blocks * blksz;
        }
        self.cursor = end;
        Ok(at)
    }

    fn alloc_blocks(&mut self, n: u64) -> Result<u64, Error> {
        let first = self.end_blocks;
        self.end_blocks = checked_add(first, n)?;
        Ok(first)
    }

    fn len(&self) -> u64 {
        self.end_blocks * self.blksz
    }
}

/// Translates: checks the layout and the frames, plans every inode's shape ([`shapes`]), places
/// the records and blocks ([`place_all`]), checks the limits the placement must meet, gives the
/// extra devices their addresses, has the encoders write the bytes ([`encode_all`]), and builds
/// the head area.
pub(super) fn build(
    image: &Image,
    chunks: &[ChunkLocation],
    layout: &DeviceLayout,
    meta_max: u64,
) -> Result<BuiltDescriptor, Error> {
    let head = HeadParams::check(layout)?;
    let blksz = 1u64 << layout.block_size_bits;
    let geo = Geo {
        blkbits: layout.block_size_bits,
        blksz,
        layout: layout.extents,
        meta_blkaddr: layout.meta_offset / blksz,
        meta_max: meta_max.min(META_MAX),
    };
    let frames = check_frames(chunks, layout, head.end(), geo)?;
    let times = Times::choose(image, layout.extents);
    let mut stats = Stats::default();

    let mut shaped = shapes(image, &frames, geo, &times, &mut stats)?;
    let placed = place_all(image, &mut shaped, blksz)?;
    stats.padding_bytes = placed.padding_bytes;
    let meta_end = check_placement(layout, geo, &placed, &shaped.nodes)?;

    // Device addresses, now that the primary device's data end is known.
    let primary_frames = frames.iter().any(|f| f.device == 0);
    let frames_end = frames
        .iter()
        .filter(|f| f.device == 0)
        .map(|f| f.offset + u64::from(f.stored_len))
        .max()
        .unwrap_or(0);
    let primary_data_end = meta_end.max(frames_end);
    let bases = device_bases(layout, primary_data_end, geo)?;

    let meta = encode_all(image, &frames, &bases, geo, &shaped, &placed, &mut stats)?;

    let features = Features {
        compressed: shaped.nodes.iter().any(|n| {
            matches!(
                n.data,
                Data::Extents { .. } | Data::Clusters(_) | Data::Fragment { .. }
            )
        }),
        fragments: shaped.packed,
        dedupe: layout.extents == ExtentLayout::Clusters && (shaped.any_hole || shaped.shared),
    };
    let root_nid = shaped.nodes[0].nid();
    let packed_nid = match shaped.nodes.last() {
        Some(n) if shaped.packed => n.nid(),
        _ => 0,
    };
    let head = Head::new(
        head,
        geo,
        &features,
        &times,
        image.inodes.len() as u64,
        root_nid,
        packed_nid,
        bases,
        uuid_of(&meta),
    );
    stats.root_nid = root_nid;
    stats.packed_nid = packed_nid;
    stats.meta_bytes = placed.meta_len;
    Ok(BuiltDescriptor {
        meta,
        meta_offset: layout.meta_offset,
        head,
        primary_data_end,
        primary_frames,
        stats,
    })
}

/// Every inode's shape, before anything is placed.
struct Shaped {
    /// One per inode of the image, then the packed inode if there is one.
    nodes: Vec<Node>,
    /// Whether the last node is the packed inode of small files.
    packed: bool,
    /// Whether some file has a hole (the cluster layout then needs the zero frame).
    any_hole: bool,
    /// Whether some chunk is used by several extents.
    shared: bool,
}

/// Phase 1: the shape of every inode (core form, xattr body, what follows), and of the packed
/// inode, which is a regular file over the packed stream's chunks in order.
fn shapes(
    image: &Image,
    frames: &[Frame],
    geo: Geo,
    times: &Times,
    stats: &mut Stats,
) -> Result<Shaped, Error> {
    let links = image.link_counts();
    let mut nodes = Vec::with_capacity(image.inodes.len() + 1);
    let mut any_hole = false;
    let mut shared = false;
    let mut frame_uses = vec![0u8; frames.len()];
    for (i, ino) in image.inodes.iter().enumerate() {
        let idx = i as u32;
        let xattr_isize = xattr::ibody_size(&ino.xattrs).map_err(|p| Error::Inode {
            inode: idx,
            problem: p,
        })?;
        let size = match &ino.kind {
            InodeKind::Directory(entries) => dir::size(entries, geo.blksz),
            InodeKind::Symlink(target) => target.len() as u64,
            InodeKind::File(f) => f.size,
            InodeKind::Device { .. } | InodeKind::Special => 0,
        };
        let core = Core::choose(ino, idx, size, links[i], times);
        let data = match &ino.kind {
            InodeKind::Directory(_) | InodeKind::Symlink(_) => {
                flat(size, geo.blksz, core.len() + xattr_isize)
            }
            InodeKind::File(f) if f.size == 0 => Data::None,
            InodeKind::File(f) => match &f.layout {
                FileLayout::Packed(off) => {
                    stats.fragments += 1;
                    Data::Fragment { offset: *off }
                }
                FileLayout::Extents(list) => {
                    for x in list {
                        let u = &mut frame_uses[x.chunk as usize];
                        shared |= *u > 0;
                        *u = u.saturating_add(1);
                    }
                    let segs = extents::segments(image, list, f.size);
                    any_hole |= geo.layout == ExtentLayout::Clusters
                        && segs.iter().any(|s| s.chunk.is_none());
                    compressed(&segs, f.size, frames, geo, idx)?
                }
            },
            InodeKind::Device { .. } | InodeKind::Special => Data::None,
        };
        nodes.push(node(core, xattr_isize, data)?);
    }
    let packed = stats.fragments > 0;
    if packed {
        let segs = packed_segments(image);
        let size = segs.last().map_or(0, |s| s.start + s.len);
        let data = compressed(&segs, size, frames, geo, PACKED_INODE)?;
        let core = Core::packed(size, times, image.inodes.len() as u32);
        nodes.push(node(core, 0, data)?);
    }
    Ok(Shaped {
        nodes,
        packed,
        any_hole,
        shared,
    })
}

/// What follows the core of a file of `size` bytes made of `segs`: extent records or lcluster
/// indexes, by layout.
fn compressed(
    segs: &[Segment],
    size: u64,
    frames: &[Frame],
    geo: Geo,
    inode: u32,
) -> Result<Data, Error> {
    Ok(match geo.layout {
        ExtentLayout::Bit48 => Data::Extents {
            count: extents::record_count(segs),
            recsz: extents::record_size(size),
        },
        ExtentLayout::Clusters => Data::Clusters(
            clusters::plan(segs, frames, size, geo)
                .map_err(|problem| Error::Inode { inode, problem })?,
        ),
    })
}

/// Where everything went in the metadata area.
struct Placed {
    /// The block of the zero frame, if a hole needs it.
    zero_block: Option<u64>,
    /// Length of the metadata area.
    meta_len: u64,
    /// Bytes of it that hold nothing.
    padding_bytes: u64,
}

/// Placement: the zero frame (if any hole needs it), then the root, then each directory's
/// blocks followed by its children's records, in the image's depth-first order; the packed
/// inode last. Sets every node's offset and first block.
fn place_all(image: &Image, shaped: &mut Shaped, blksz: u64) -> Result<Placed, Error> {
    let nodes = &mut shaped.nodes;
    let mut area = Area {
        blksz,
        end_blocks: 0,
        run_end: 0,
        cursor: 0,
    };
    let zero_block = if shaped.any_hole {
        Some(area.alloc_blocks(1)?)
    } else {
        // Slot 0 stays empty: st_ino is the nid, and 0 is no inode number.
        area.place(ISLOT_SIZE as u64, ISLOT_SIZE as u64, false)?;
        None
    };
    let mut placed = vec![false; nodes.len()];
    place(&mut area, nodes, 0, &mut placed)?;
    for (i, ino) in image.inodes.iter().enumerate() {
        let InodeKind::Directory(entries) = &ino.kind else {
            continue;
        };
        let n = nodes[i].data_blocks(blksz);
        if n > 0 {
            nodes[i].first_block = area.alloc_blocks(n)?;
        }
        for e in entries {
            place(&mut area, nodes, e.inode as usize, &mut placed)?;
        }
    }
    if shaped.packed {
        let last = nodes.len() - 1;
        place(&mut area, nodes, last, &mut placed)?;
    }
    let meta_len = area.len();
    let used: u64 = nodes
        .iter()
        .map(|n| n.record_len + n.data_blocks(blksz) * blksz)
        .sum::<u64>()
        + if zero_block.is_some() {
            blksz
        } else {
            ISLOT_SIZE as u64
        };
    Ok(Placed {
        zero_block,
        meta_len,
        padding_bytes: meta_len.saturating_sub(used),
    })
}

/// The limits the placement must meet: the caller's bound on the metadata area, 32-bit block
/// addresses, and (cluster layout) a root nid of 16 bits. Returns the metadata area's end.
fn check_placement(
    layout: &DeviceLayout,
    geo: Geo,
    placed: &Placed,
    nodes: &[Node],
) -> Result<u64, Error> {
    let meta_len = placed.meta_len;
    if meta_len > geo.meta_max {
        return Err(Error::TooLarge(format!(
            "the metadata area would be {meta_len} bytes"
        )));
    }
    let meta_end = checked_add(layout.meta_offset, meta_len)?;
    if (meta_end / geo.blksz) > u64::from(u32::MAX) {
        return Err(Error::TooLarge(
            "metadata blocks lie beyond 32-bit block addresses".into(),
        ));
    }
    let root_nid = nodes[0].nid();
    if layout.extents == ExtentLayout::Clusters && root_nid > u64::from(u16::MAX) {
        return Err(Error::TooLarge(format!(
            "root nid {root_nid} does not fit 16 bits"
        )));
    }
    Ok(meta_end)
}

/// Phase 2: the metadata area's bytes, every node written by its encoder.
fn encode_all(
    image: &Image,
    frames: &[Frame],
    bases: &[u64],
    geo: Geo,
    shaped: &Shaped,
    placed: &Placed,
    stats: &mut Stats,
) -> Result<Vec<u8>, Error> {
    // `check_placement` bounded the length by `meta_max`, at most 4 GiB.
    let mut meta = vec![0u8; placed.meta_len as usize];
    if let Some(b) = placed.zero_block {
        zero_frame::write(&mut meta, b, geo.blksz);
    }
    let parents = parents(image);
    let nids: Vec<u64> = shaped.nodes.iter().map(Node::nid).collect();
    let ctx = Ctx {
        image,
        frames,
        bases,
        geo,
        nids: &nids,
        zero_block: placed.zero_block,
        parents: &parents,
    };
    let nodes = &shaped.nodes;
    for (i, n) in nodes.iter().enumerate() {
        let is_packed = shaped.packed && i == nodes.len() - 1;
        encode_node(&ctx, n, &mut meta, i, is_packed, stats)?;
    }
    Ok(meta)
}

fn node(core: Core, xattr_isize: u64, data: Data) -> Result<Node, Error> {
    let x = core.len() + xattr_isize;
    let too_large = |what: &str| {
        Error::TooLarge(format!(
            "{what} of {} entries",
            match &data {
                Data::Extents { count, .. } => *count,
                Data::Clusters(p) => p.indexes,
                _ => 0,
            }
        ))
    };
    let record_len = match &data {
        Data::None => x,
        Data::Flat { tail, .. } => x + tail,
        Data::Extents { count, recsz } => {
            let start = round_up(round_up(x, 8)? + 8, *recsz)?;
            count
                .checked_mul(*recsz)
                .and_then(|b| b.checked_add(start))
                .ok_or_else(|| too_large("extent list"))?
        }
        Data::Clusters(p) => p
            .indexes
            .checked_mul(8)
            .and_then(|b| b.checked_add(round_up(x, 8).ok()? + 16))
            .ok_or_else(|| too_large("lcluster index"))?,
        Data::Fragment { .. } => round_up(x, 8)? + 8,
    };
    Ok(Node {
        core,
        xattr_isize,
        data,
        record_len,
        offset: 0,
        first_block: 0,
    })
}

/// Directory or symlink shape: inline the last block's bytes if they fit in one block with the
/// inode; otherwise everything goes to blocks.
fn flat(size: u64, blksz: u64, header: u64) -> Data {
    if size == 0 {
        return Data::Flat { size, tail: 0 };
    }
    let tail = size - (size.div_ceil(blksz) - 1) * blksz;
    Data::Flat {
        size,
        tail: if header + tail <= blksz { tail } else { 0 },
    }
}

fn place(area: &mut Area, nodes: &mut [Node], i: usize, placed: &mut [bool]) -> Result<(), Error> {
    if placed[i] {
        return Ok(());
    }
    placed[i] = true;
    let n = &nodes[i];
    let (len, core_len, confined) = (n.record_len, n.core.len(), n.confined());
    nodes[i].offset = area.place(len, core_len, confined)?;
    // Directories get their blocks with their own entries; a symlink's go right after it.
    let is_dir = nodes[i].core.is_dir();
    let blocks = nodes[i].data_blocks(area.blksz);
    if blocks > 0 && !is_dir {
        nodes[i].first_block = area.alloc_blocks(blocks)?;
    }
    Ok(())
}

fn check_frames(
    chunks: &[ChunkLocation],
    layout: &DeviceLayout,
    head_end: u64,
    geo: Geo,
) -> Result<Vec<Frame>, Error> {
    let mut out = Vec::with_capacity(chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        let bad = |problem: String| Error::Chunk {
            chunk: i as u32,
            problem,
        };
        if c.stored_len == 0 || c.stored_len > PCLUSTER_MAX_SIZE {
            return Err(bad(format!(
                "frame length {} is outside 1..={PCLUSTER_MAX_SIZE}",
                c.stored_len
            )));
        }
        let end = c
            .offset
            .checked_add(u64::from(c.stored_len))
            .ok_or_else(|| bad("frame end overflows".into()))?;
        if c.device == 0 {
            if c.offset < head_end || end > layout.meta_offset {
                return Err(bad(format!(
                    "frame {}..{end} in the primary device is not between the head area (ends {head_end}) and the metadata area (starts {})",
                    c.offset, layout.meta_offset
                )));
            }
        } else {
            let dev = layout
                .devices
                .get(usize::from(c.device) - 1)
                .ok_or_else(|| {
                    bad(format!(
                        "device {} is not in the layout's {} extra devices",
                        c.device,
                        layout.devices.len()
                    ))
                })?;
            if end > dev.len {
                return Err(bad(format!(
                    "frame {}..{end} lies past the end of device {} ({} bytes)",
                    c.offset, c.device, dev.len
                )));
            }
        }
        let blocks = end.div_ceil(geo.blksz) - c.offset / geo.blksz;
        if geo.layout == ExtentLayout::Clusters {
            if end % geo.blksz != 0 {
                return Err(bad(format!(
                    "frame ends at {end}, not on a {}-byte block boundary (cluster layout)",
                    geo.blksz
                )));
            }
            if blocks * geo.blksz > u64::from(PCLUSTER_MAX_SIZE)
                || blocks >= u64::from(erofs::Z_LI_D0_CBLKCNT)
            {
                return Err(bad(format!(
                    "frame covers {blocks} blocks, more than one cluster may"
                )));
            }
        }
        out.push(Frame {
            device: c.device,
            offset: c.offset,
            stored_len: c.stored_len,
            blocks: blocks as u32,
        });
    }
    Ok(out)
}

/// Unified byte address of each device: 0 for the primary, then each extra device on the next
/// [`DEVICE_ALIGN`] boundary past the previous one.
fn device_bases(layout: &DeviceLayout, primary_data_end: u64, geo: Geo) -> Result<Vec<u64>, Error> {
    let mut bases = vec![0u64];
    let mut end = primary_data_end;
    let limit: u64 = match geo.layout {
        ExtentLayout::Bit48 => 1 << 48,
        ExtentLayout::Clusters => (u64::from(u32::MAX) + 1) << geo.blkbits,
    };
    for (k, d) in layout.devices.iter().enumerate() {
        let base = round_up(end, DEVICE_ALIGN)?;
        end = checked_add(base, d.len)?;
        if end > limit {
            return Err(Error::TooLarge(format!(
                "extra device {} would end at unified address {end}, past {limit}",
                k + 1
            )));
        }
        bases.push(base);
    }
    Ok(bases)
}

fn encode_node(
    ctx: &Ctx,
    n: &Node,
    meta: &mut [u8],
    i: usize,
    is_packed: bool,
    stats: &mut Stats,
) -> Result<(), Error> {
    let at = n.offset as usize;
    let idx = if is_packed { PACKED_INODE } else { i as u32 };
    let (layout, u) = match &n.data {
        Data::None => (
            erofs::INODE_FLAT_PLAIN,
            inode::special_u(ctx.image, idx).map_err(|p| Error::Inode {
                inode: idx,
                problem: p,
            })?,
        ),
        Data::Flat { tail, .. } => {
            let start = if n.data_blocks(ctx.geo.blksz) > 0 {
                ctx.meta_block(n.first_block)
            } else {
                0
            };
            (
                if *tail > 0 {
                    erofs::INODE_FLAT_INLINE
                } else {
                    erofs::INODE_FLAT_PLAIN
                },
                u32::try_from(start)
                    .map_err(|_| Error::TooLarge("a block address exceeds 32 bits".into()))?,
            )
        }
        Data::Extents { .. } | Data::Clusters(_) | Data::Fragment { .. } => {
            (erofs::INODE_COMPRESSED_FULL, 0)
        }
    };
    if n.core.extended {
        stats.inodes_extended += 1;
    } else {
        stats.inodes_compact += 1;
    }
    let ino = if is_packed {
        None
    } else {
        Some(&ctx.image.inodes[i])
    };
    let body_at = at + n.core.len() as usize;
    if let Some(ino) = ino {
        xattr::encode(
            &ino.xattrs,
            &mut meta[body_at..body_at + n.xattr_isize as usize],
        );
        stats.xattr_bytes += n.xattr_isize;
    }
    let payload = body_at + n.xattr_isize as usize;
    let mut compressed_blocks = 0u64;
    match &n.data {
        Data::None => {}
        Data::Flat { size, tail } => {
            let blksz = ctx.geo.blksz as usize;
            let mut inline = vec![0u8; *tail as usize];
            match &ctx.image.inodes[i].kind {
                InodeKind::Directory(entries) => {
                    dir::encode(ctx, i, entries, *size, meta, n.first_block, &mut inline);
                    if *tail > 0 {
                        stats.dirs_inline += 1
                    } else {
                        stats.dirs_plain += 1
                    }
                    stats.dir_blocks += n.data_blocks(ctx.geo.blksz);
                }
                InodeKind::Symlink(target) => {
                    let in_blocks = target.len() - inline.len();
                    let b = n.first_block as usize * blksz;
                    meta[b..b + in_blocks].copy_from_slice(&target[..in_blocks]);
                    inline.copy_from_slice(&target[in_blocks..]);
                    if *tail > 0 {
                        stats.symlinks_inline += 1
                    } else {
                        stats.symlinks_plain += 1
                    }
                }
                _ => {}
            }
            meta[payload..payload + inline.len()].copy_from_slice(&inline);
        }
        Data::Extents { count, recsz } => {
            let segs = node_segments(ctx, i, is_packed);
            compressed_blocks = extents::encode(
                ctx,
                &segs,
                *recsz,
                *count,
                meta,
                n.offset,
                n.core.len() + n.xattr_isize,
            );
            stats.extent_records += count;
        }
        Data::Clusters(plan) => {
            let segs = node_segments(ctx, i, is_packed);
            compressed_blocks = clusters::encode(
                ctx,
                &segs,
                plan,
                meta,
                n.offset,
                n.core.len() + n.xattr_isize,
            )
            .map_err(|p| Error::Inode {
                inode: idx,
                problem: p,
            })?;
            stats.lcluster_indexes += plan.indexes;
            stats.lcluster_bits_hist[usize::from(plan.bits - ctx.geo.blkbits).min(7)] += 1;
        }
        Data::Fragment { offset } => {
            let h = round_up(n.core.len() + n.xattr_isize, 8)? as usize + at;
            meta[h..h + 8]
                .copy_from_slice(&((1u64 << erofs::Z_FRAGMENT_INODE_BIT) | offset).to_le_bytes());
        }
    }
    let u = if matches!(n.data, Data::Extents { .. } | Data::Clusters(_)) {
        u32::try_from(compressed_blocks).unwrap_or(u32::MAX)
    } else {
        u
    };
    n.core.encode(
        &mut meta[at..at + n.core.len() as usize],
        layout,
        n.xattr_isize,
        u,
    );
    Ok(())
}

/// The packed inode's segments: the packed stream's chunks, one after another.
fn packed_segments(image: &Image) -> Vec<Segment> {
    let mut at = 0u64;
    image
        .packed_stream
        .iter()
        .map(|&c| {
            let len = u64::from(image.chunks[c as usize].size);
            let s = Segment {
                start: at,
                len,
                chunk: Some(c),
            };
            at += len;
            s
        })
        .collect()
}

fn node_segments(ctx: &Ctx, i: usize, is_packed: bool) -> Vec<Segment> {
    if is_packed {
        return packed_segments(ctx.image);
    }
    match &ctx.image.inodes[i].kind {
        InodeKind::File(f) => match &f.layout {
            FileLayout::Extents(list) => extents::segments(ctx.image, list, f.size),
            FileLayout::Packed(_) => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The parent of every directory; the model guarantees each directory has exactly one name.
fn parents(image: &Image) -> Vec<u32> {
    let mut p = vec![0u32; image.inodes.len()];
    for (i, ino) in image.inodes.iter().enumerate() {
        if let InodeKind::Directory(entries) = &ino.kind {
            for e in entries {
                p[e.inode as usize] = i as u32;
            }
        }
    }
    p
}

/// A volume UUID derived from the metadata area: the same image gets the same UUID, a different
/// tree a different one. Not a digest: integrity comes from elsewhere (docs/descriptor.md §6).
fn uuid_of(meta: &[u8]) -> [u8; 16] {
    let mut u = [0u8; 16];
    let h = xxhash_rust::xxh64::xxh64(meta, 0);
    u[..8].copy_from_slice(&h.to_le_bytes());
    let mut tail = [0u8; 16];
    tail[..8].copy_from_slice(&h.to_le_bytes());
    tail[8..].copy_from_slice(&(meta.len() as u64).to_le_bytes());
    u[8..].copy_from_slice(&xxhash_rust::xxh64::xxh64(&tail, 0x6368_756e_6b66_7331).to_le_bytes());
    // RFC 9562 version 8 (custom), variant 10.
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}
