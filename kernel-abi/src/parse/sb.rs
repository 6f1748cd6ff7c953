//! The superblock, the compression configs that follow it, and the device table
//! (docs/descriptor.md; Linux `fs/erofs/super.c`).

use super::hash::crc32c;
use super::num::{le16, read, round_up, shl, slice};
use crate::erofs::{self, DeviceSlot, SuperBlock, ZstdCfgs};
use crate::error::AbiError;

/// Incompatible features this reader implements; anything else is refused.
pub const KNOWN_INCOMPAT: u32 = erofs::FEATURE_INCOMPAT_ZERO_PADDING
    | erofs::FEATURE_INCOMPAT_COMPR_CFGS
    | erofs::FEATURE_INCOMPAT_DEVICE_TABLE
    | erofs::FEATURE_INCOMPAT_FRAGMENTS
    | erofs::FEATURE_INCOMPAT_48BIT;

/// Largest zstd window log the kernel accepts (1 MiB).
const ZSTD_MAX_WINDOWLOG: u8 = 20 - 10;

/// The superblock fields readers use, decoded and checked once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sb {
    pub blkszbits: u8,
    pub meta_start: u64,
    pub xattr_start: u64,
    pub root_nid: u64,
    pub packed_nid: Option<u64>,
    /// Size of the packed inode, filled in once it is validated.
    pub packed_size: u64,
    pub epoch: i64,
    pub fixed_nsec: u32,
    pub primary_blocks: u64,
    /// Bytes of the primary device a reference may address: its declared size, within the input.
    pub primary_len: u64,
    pub total_blocks: u64,
    pub inos: u64,
    pub incompat: u32,
    pub compat: u32,
    pub extra_devices: u16,
    pub devt_start: u64,
    pub algs: u16,
    /// Number of 32-byte inode slots between `meta_start` and the end of the input.
    pub nid_count: u64,
}

impl Sb {
    pub fn blksz(&self) -> u64 {
        1u64 << (self.blkszbits & 63)
    }

    pub fn has(&self, incompat: u32) -> bool {
        self.incompat & incompat != 0
    }

    /// Byte offset of inode `nid`, if the nid addresses a slot inside the input.
    pub fn nid_pos(&self, nid: u64) -> Option<u64> {
        if nid >= self.nid_count {
            return None;
        }
        self.meta_start
            .checked_add(nid.checked_mul(erofs::ISLOT_SIZE as u64)?)
    }

    /// `blocks` blocks in bytes.
    pub fn blocks_to_bytes(&self, blocks: u64) -> Option<u64> {
        shl(blocks, u32::from(self.blkszbits))
    }
}

/// One extra device, decoded.
#[derive(Clone, Copy, Debug)]
pub struct DeviceInfo<'a> {
    /// The slot's tag (chunkfs: the blob digest as text, NUL padded).
    pub tag: &'a [u8; 64],
    /// Size in blocks.
    pub blocks: u64,
    /// First block of the device in the unified address space.
    pub uniaddr: u64,
}

pub(crate) fn device<'a>(bytes: &'a [u8], sb: &Sb, index: u16) -> Option<DeviceInfo<'a>> {
    if index >= sb.extra_devices {
        return None;
    }
    let off = sb
        .devt_start
        .checked_add(u64::from(index).checked_mul(128)?)?;
    let slot = read::<DeviceSlot>(bytes, off)?;
    let tag: &[u8; 64] = slice(bytes, off, 64)?.try_into().ok()?;
    let wide = sb.has(erofs::FEATURE_INCOMPAT_48BIT);
    let hi = |v: u16| if wide { u64::from(v) << 32 } else { 0 };
    Some(DeviceInfo {
        tag,
        blocks: u64::from(slot.blocks_lo.get()) | hi(slot.blocks_hi.get()),
        uniaddr: u64::from(slot.uniaddr_lo.get()) | hi(slot.uniaddr_hi.get()),
    })
}

/// Where a unified physical byte range lives: `(device, offset within the device)`.
///
/// Addresses below the primary device's size are on device 0; the others must fall wholly inside
/// one extra device's unified range (`parse_devices` checked the ranges are sorted and disjoint).
pub(crate) fn resolve(bytes: &[u8], sb: &Sb, pa: u64, len: u64) -> Result<(u16, u64), AbiError> {
    let oob = AbiError::OutOfRange {
        table: "physical address",
        index: pa,
    };
    let end = pa.checked_add(len).ok_or(oob)?;
    let primary_end = sb.blocks_to_bytes(sb.primary_blocks).ok_or(oob)?;
    if pa < primary_end {
        return if end <= sb.primary_len {
            Ok((0, pa))
        } else {
            Err(oob)
        };
    }
    // Binary search for the last device starting at or before `pa`.
    let (mut lo, mut hi) = (0u16, sb.extra_devices);
    while lo < hi {
        let mid = lo.wrapping_add(hi.wrapping_sub(lo) / 2);
        let dev = device(bytes, sb, mid).ok_or(oob)?;
        let start = sb.blocks_to_bytes(dev.uniaddr).ok_or(oob)?;
        if start <= pa {
            lo = mid.wrapping_add(1);
        } else {
            hi = mid;
        }
    }
    let index = lo.checked_sub(1).ok_or(oob)?;
    let dev = device(bytes, sb, index).ok_or(oob)?;
    let start = sb.blocks_to_bytes(dev.uniaddr).ok_or(oob)?;
    let dev_len = sb.blocks_to_bytes(dev.blocks).ok_or(oob)?;
    let off = pa.wrapping_sub(start);
    if off.checked_add(len).ok_or(oob)? > dev_len {
        return Err(oob);
    }
    Ok((index.checked_add(1).ok_or(oob)?, off))
}

/// Decodes and checks the superblock, the compression configs and the device table.
pub(crate) fn parse(bytes: &[u8]) -> Result<Sb, AbiError> {
    const WHAT: &str = "superblock";
    let raw: SuperBlock =
        read(bytes, erofs::SUPER_OFFSET as u64).ok_or(AbiError::Truncated { what: WHAT })?;
    if raw.magic.get() != erofs::SUPER_MAGIC {
        return Err(AbiError::BadMagic { what: WHAT });
    }
    let blkszbits = raw.blkszbits;
    if !(9..=12).contains(&blkszbits) {
        return Err(AbiError::BadField {
            field: "superblock blkszbits",
            value: blkszbits.into(),
        });
    }
    let incompat = raw.feature_incompat.get();
    if incompat & !KNOWN_INCOMPAT != 0 {
        return Err(AbiError::UnknownIncompat(incompat & !KNOWN_INCOMPAT));
    }
    let compat = raw.feature_compat.get();
    // At most 128 + 255 * 16: no overflow.
    let sb_size = u64::from(raw.sb_extslots)
        .wrapping_mul(erofs::SB_EXTSLOT_SIZE as u64)
        .wrapping_add(128);
    // The kernel reads the superblock from one page.
    let sb_end = sb_size.wrapping_add(erofs::SUPER_OFFSET as u64);
    if sb_end > 4096 || sb_end > bytes.len() as u64 {
        return Err(AbiError::BadField {
            field: "superblock sb_extslots",
            value: raw.sb_extslots.into(),
        });
    }
    if compat & erofs::FEATURE_COMPAT_SB_CHKSUM != 0 {
        check_checksum(bytes, blkszbits, raw.checksum.get())?;
    }
    if raw.dirblkbits != 0 {
        return Err(AbiError::BadField {
            field: "superblock dirblkbits",
            value: raw.dirblkbits.into(),
        });
    }
    let wide = incompat & erofs::FEATURE_INCOMPAT_48BIT != 0;
    let mut primary_blocks = u64::from(raw.blocks_lo.get());
    let root_nid = if wide && raw.rootnid_8b.get() != 0 {
        primary_blocks |= u64::from(raw.rootnid_2b_or_blocks_hi.get()) << 32;
        raw.rootnid_8b.get()
    } else {
        u64::from(raw.rootnid_2b_or_blocks_hi.get())
    };
    let bad = |field: &'static str, value: u64| AbiError::BadField { field, value };
    let meta_start = shl(raw.meta_blkaddr.get().into(), blkszbits.into()).ok_or(bad(
        "superblock meta_blkaddr",
        raw.meta_blkaddr.get().into(),
    ))?;
    let xattr_start = shl(raw.xattr_blkaddr.get().into(), blkszbits.into()).ok_or(bad(
        "superblock xattr_blkaddr",
        raw.xattr_blkaddr.get().into(),
    ))?;
    let len = bytes.len() as u64;
    if meta_start >= len {
        return Err(AbiError::OutOfRange {
            table: "superblock meta_blkaddr",
            index: raw.meta_blkaddr.get().into(),
        });
    }
    let primary_bytes =
        shl(primary_blocks, blkszbits.into()).ok_or(bad("superblock blocks", primary_blocks))?;
    let packed = raw.packed_nid.get();
    let packed_nid =
        (incompat & erofs::FEATURE_INCOMPAT_FRAGMENTS != 0 && packed != 0).then_some(packed);
    let fixed_nsec = raw.fixed_nsec.get();
    if fixed_nsec >= 1_000_000_000 {
        return Err(bad("superblock fixed_nsec", fixed_nsec.into()));
    }
    let mut sb = Sb {
        blkszbits,
        meta_start,
        xattr_start,
        root_nid,
        packed_nid,
        packed_size: 0,
        epoch: raw.epoch.get() as i64,
        fixed_nsec,
        primary_blocks,
        primary_len: primary_bytes.min(len),
        total_blocks: primary_blocks,
        inos: raw.inos.get(),
        incompat,
        compat,
        extra_devices: 0,
        devt_start: 0,
        algs: 0,
        nid_count: len.wrapping_sub(meta_start) / 32,
    };
    if incompat & erofs::FEATURE_INCOMPAT_COMPR_CFGS != 0 {
        sb.algs = raw.available_compr_algs.get();
        parse_cfgs(bytes, sb.algs, sb_end)?;
    }
    if incompat & erofs::FEATURE_INCOMPAT_DEVICE_TABLE != 0 {
        sb.extra_devices = raw.extra_devices.get();
        sb.devt_start = u64::from(raw.devt_slotoff.get()) * 128;
        parse_devices(bytes, &mut sb)?;
    }
    Ok(sb)
}

fn check_checksum(bytes: &[u8], blkszbits: u8, expected: u32) -> Result<(), AbiError> {
    let blksz = 1u64 << blkszbits;
    // As the kernel: the rest of the superblock's block, or one block when blocks are small.
    let len = if blksz > erofs::SUPER_OFFSET as u64 {
        blksz.wrapping_sub(erofs::SUPER_OFFSET as u64)
    } else {
        blksz
    };
    let block = slice(bytes, erofs::SUPER_OFFSET as u64, len).ok_or(AbiError::Truncated {
        what: "superblock block",
    })?;
    let (head, rest) = block.split_at(4);
    let crc = crc32c(crc32c(!0, head), &[0; 4]);
    let crc = crc32c(crc, rest.get(4..).unwrap_or(&[]));
    if crc != expected {
        return Err(AbiError::BadField {
            field: "superblock checksum",
            value: expected.into(),
        });
    }
    Ok(())
}

/// The per-algorithm configs: for each available algorithm, a `Le16` length and that many bytes,
/// each record 4-byte aligned. Only zstd is implemented.
fn parse_cfgs(bytes: &[u8], algs: u16, sb_end: u64) -> Result<(), AbiError> {
    if algs & !(1 << erofs::compr::ZSTD) != 0 {
        return Err(AbiError::Unsupported {
            what: "compression algorithms",
            value: algs.into(),
        });
    }
    if algs == 0 {
        return Ok(());
    }
    let trunc = AbiError::Truncated {
        what: "compression configs",
    };
    let off = round_up(sb_end, 4).ok_or(trunc)?;
    let size = le16(bytes, off).ok_or(trunc)?;
    if usize::from(size) < core::mem::size_of::<ZstdCfgs>() {
        return Err(AbiError::BadField {
            field: "zstd config size",
            value: size.into(),
        });
    }
    let cfg: ZstdCfgs = read(bytes, off.wrapping_add(2)).ok_or(trunc)?;
    slice(bytes, off.wrapping_add(2), size.into()).ok_or(trunc)?;
    if cfg.format != 0 {
        return Err(AbiError::BadField {
            field: "zstd config format",
            value: cfg.format.into(),
        });
    }
    if cfg.windowlog > ZSTD_MAX_WINDOWLOG {
        return Err(AbiError::BadField {
            field: "zstd config windowlog",
            value: cfg.windowlog.into(),
        });
    }
    Ok(())
}

/// Every device slot inside the input, with unified ranges after the primary device, sorted and
/// disjoint, so that [`resolve`] can binary-search them.
fn parse_devices(bytes: &[u8], sb: &mut Sb) -> Result<(), AbiError> {
    const WHAT: &str = "device table";
    let table_len = u64::from(sb.extra_devices) * 128;
    slice(bytes, sb.devt_start, table_len).ok_or(AbiError::Truncated { what: WHAT })?;
    let mut next_free = sb.primary_blocks;
    let mut total = sb.primary_blocks;
    for i in 0..sb.extra_devices {
        let dev = device(bytes, sb, i).ok_or(AbiError::Truncated { what: WHAT })?;
        let oob = AbiError::OutOfRange {
            table: WHAT,
            index: i.into(),
        };
        if dev.uniaddr < next_free {
            return Err(AbiError::Unsorted {
                table: WHAT,
                index: i.into(),
            });
        }
        next_free = dev.uniaddr.checked_add(dev.blocks).ok_or(oob)?;
        sb.blocks_to_bytes(next_free).ok_or(oob)?;
        total = total.checked_add(dev.blocks).ok_or(oob)?;
    }
    sb.total_blocks = total;
    Ok(())
}
