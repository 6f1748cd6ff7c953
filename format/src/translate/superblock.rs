//! The head area from byte 1024: superblock, zstd config, device table (docs/descriptor.md §2).
//! Written last, because the primary device's length is only known at the end.

use chunkfs_kernel_abi::Pod;
use chunkfs_kernel_abi::erofs::{
    DeviceSlot, FEATURE_COMPAT_MTIME, FEATURE_INCOMPAT_48BIT, FEATURE_INCOMPAT_COMPR_CFGS,
    FEATURE_INCOMPAT_DEVICE_TABLE, FEATURE_INCOMPAT_FRAGMENTS, FEATURE_INCOMPAT_ZERO_PADDING,
    SUPER_MAGIC, SUPER_OFFSET, SuperBlock, ZstdCfgs, compr,
};

use super::ctx::{Features, Geo};
use super::error::Error;
use super::inode::Times;
use super::layout::{DEVT_OFFSET, DEVT_SLOT, DeviceLayout, ExtentLayout, head_end};

/// Bytes of the superblock we write (no extension slots).
const SB_LEN: usize = 128;
/// zstd windows are at most 1 MiB (docs/format.md §4): windowlog 20, stored minus 10.
const ZSTD_WINDOWLOG: u8 = 20 - 10;

/// The layout's head-area requirements, checked before anything else is built.
#[derive(Clone, Debug)]
pub(super) struct HeadParams {
    end: u64,
    devices: Vec<(Vec<u8>, u64)>,
}

impl HeadParams {
    pub fn check(layout: &DeviceLayout) -> Result<Self, Error> {
        let bits = layout.block_size_bits;
        if !(9..=12).contains(&bits) {
            return Err(Error::DeviceLayout(format!(
                "block size 2^{bits} is outside 512..=4096 bytes"
            )));
        }
        let blksz = 1u64 << bits;
        if layout.devices.len() >= usize::from(u16::MAX) {
            return Err(Error::DeviceLayout(format!(
                "{} extra devices exceed the device table's 16-bit count",
                layout.devices.len()
            )));
        }
        let end = head_end(layout.devices.len());
        if layout.meta_offset % blksz != 0 || layout.meta_offset < end {
            return Err(Error::DeviceLayout(format!(
                "metadata offset {} is not block aligned or lies inside the head area (ends at {end})",
                layout.meta_offset
            )));
        }
        for (k, d) in layout.devices.iter().enumerate() {
            if d.tag.len() > 64 {
                return Err(Error::DeviceLayout(format!(
                    "device {} tag of {} bytes exceeds 64",
                    k + 1,
                    d.tag.len()
                )));
            }
            if d.len % 4096 != 0 {
                return Err(Error::DeviceLayout(format!(
                    "device {} length {} is not a multiple of 4096",
                    k + 1,
                    d.len
                )));
            }
        }
        Ok(Self {
            end,
            devices: layout
                .devices
                .iter()
                .map(|d| (d.tag.clone(), d.len))
                .collect(),
        })
    }

    pub fn end(&self) -> u64 {
        self.end
    }
}

/// Everything of the head area but the primary device's length.
#[derive(Clone, Debug)]
pub(super) struct Head {
    sb: SuperBlock,
    params: HeadParams,
    geo: Geo,
    compressed: bool,
    bases: Vec<u64>,
}

impl Head {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        params: HeadParams,
        geo: Geo,
        f: &Features,
        times: &Times,
        inos: u64,
        root_nid: u64,
        packed_nid: u64,
        bases: Vec<u64>,
        uuid: [u8; 16],
    ) -> Self {
        let mut sb = SuperBlock::zeroed();
        sb.magic = SUPER_MAGIC.into();
        sb.feature_compat = FEATURE_COMPAT_MTIME.into();
        sb.blkszbits = geo.blkbits;
        sb.inos = inos.into();
        sb.epoch = (times.epoch as u64).into();
        sb.fixed_nsec = times.fixed_nsec.into();
        // `plan` checked the metadata area's blocks fit 32 bits.
        sb.meta_blkaddr = (geo.meta_blkaddr as u32).into();
        sb.uuid = uuid;
        sb.volume_name[..7].copy_from_slice(b"chunkfs");
        let mut incompat = 0;
        if f.compressed {
            incompat |= FEATURE_INCOMPAT_COMPR_CFGS;
            sb.available_compr_algs = (1u16 << compr::ZSTD).into();
        }
        match geo.layout {
            ExtentLayout::Bit48 => {
                incompat |= FEATURE_INCOMPAT_48BIT;
                sb.rootnid_8b = root_nid.into();
            }
            ExtentLayout::Clusters => {
                if f.compressed {
                    incompat |= FEATURE_INCOMPAT_ZERO_PADDING;
                }
                // `plan` checked the root nid fits 16 bits.
                sb.rootnid_2b_or_blocks_hi = (root_nid as u16).into();
            }
        }
        if f.fragments || f.dedupe {
            // One bit: FRAGMENTS and DEDUPE (partially referenced, shared pclusters).
            incompat |= FEATURE_INCOMPAT_FRAGMENTS;
        }
        if !params.devices.is_empty() {
            incompat |= FEATURE_INCOMPAT_DEVICE_TABLE;
            sb.extra_devices = (params.devices.len() as u16).into();
            sb.devt_slotoff = ((DEVT_OFFSET / DEVT_SLOT) as u16).into();
        }
        sb.feature_incompat = incompat.into();
        sb.packed_nid = packed_nid.into();
        Self {
            sb,
            params,
            geo,
            compressed: f.compressed,
            bases,
        }
    }

    pub fn end(&self) -> u64 {
        self.params.end
    }

    pub fn layout(&self) -> ExtentLayout {
        self.geo.layout
    }

    pub fn device_base(&self, device: u16) -> Option<u64> {
        if device == 0 {
            return None;
        }
        self.bases.get(usize::from(device)).copied()
    }

    pub fn max_primary_len(&self) -> u64 {
        match self.bases.get(1) {
            Some(&b) => b,
            None => match self.geo.layout {
                ExtentLayout::Bit48 => (1u64 << 48) << self.geo.blkbits,
                ExtentLayout::Clusters => (u64::from(u32::MAX) + 1) << self.geo.blkbits,
            },
        }
    }

    /// Bytes of `1024..end()` for a primary device of `primary_len` bytes (checked by the caller).
    pub fn encode(&self, primary_len: u64) -> Vec<u8> {
        let mut out = vec![0u8; (self.params.end - SUPER_OFFSET as u64) as usize];
        let mut sb = self.sb;
        let blocks = primary_len >> self.geo.blkbits;
        sb.blocks_lo = (blocks as u32).into();
        if self.geo.layout == ExtentLayout::Bit48 {
            sb.rootnid_2b_or_blocks_hi = ((blocks >> 32) as u16).into();
        }
        out[..SB_LEN].copy_from_slice(&sb.as_bytes()[..SB_LEN]);
        if self.compressed {
            let cfg = ZstdCfgs {
                format: 0,
                windowlog: ZSTD_WINDOWLOG,
                reserved: [0; 4],
            };
            out[SB_LEN..SB_LEN + 2]
                .copy_from_slice(&(core::mem::size_of::<ZstdCfgs>() as u16).to_le_bytes());
            out[SB_LEN + 2..SB_LEN + 8].copy_from_slice(cfg.as_bytes());
        }
        for (k, (tag, len)) in self.params.devices.iter().enumerate() {
            let mut slot = DeviceSlot::zeroed();
            slot.tag[..tag.len()].copy_from_slice(tag);
            let blocks = len >> self.geo.blkbits;
            let uniaddr = self.bases[k + 1] >> self.geo.blkbits;
            slot.blocks_lo = (blocks as u32).into();
            slot.uniaddr_lo = (uniaddr as u32).into();
            if self.geo.layout == ExtentLayout::Bit48 {
                slot.blocks_hi = ((blocks >> 32) as u16).into();
                slot.uniaddr_hi = ((uniaddr >> 32) as u16).into();
            }
            let at = (DEVT_OFFSET - SUPER_OFFSET as u64 + k as u64 * DEVT_SLOT) as usize;
            out[at..at + DEVT_SLOT as usize].copy_from_slice(slot.as_bytes());
        }
        out
    }
}
