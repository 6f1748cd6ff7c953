//! Inode cores: the compact (32-byte) form where it loses nothing, the extended (64-byte) form
//! otherwise (docs/descriptor.md §3).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use chunkfs_kernel_abi::Pod;
use chunkfs_kernel_abi::erofs::{
    I_DATALAYOUT_BIT, I_VERSION_EXTENDED, InodeCompact, InodeExtended,
};

use super::layout::ExtentLayout;
use crate::model::{Image, Inode, InodeKind, mode};

/// The superblock's time base for compact inodes.
///
/// Linux 6.15+ gives a compact inode `epoch + i_mtime` seconds and `fixed_nsec`; older kernels
/// (6.12, the cluster layout's target) give every compact inode exactly `epoch`/`fixed_nsec`
/// (their `build_time`). The cluster layout therefore only uses compact inodes whose mtime is
/// exactly the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Times {
    pub epoch: i64,
    pub fixed_nsec: u32,
    exact: bool,
}

impl Times {
    /// Picks the base that lets the most inodes be compact: for the 48-bit layout the most
    /// common nanosecond value and the earliest second with it; for the cluster layout the most
    /// common (second, nanosecond) pair. Ties go to the smallest value, so the choice is a
    /// function of the image alone. Times before 1970 are never the base.
    pub fn choose(image: &Image, layout: ExtentLayout) -> Self {
        let exact = layout == ExtentLayout::Clusters;
        let mut counts: HashMap<(i64, u32), u64, BuildHasherDefault<MixHasher>> =
            HashMap::with_capacity_and_hasher(
                if exact { image.inodes.len() } else { 1024 },
                BuildHasherDefault::default(),
            );
        for ino in image.inodes.iter().filter(|i| i.mtime_sec >= 0) {
            let key = if exact {
                (ino.mtime_sec, ino.mtime_nsec)
            } else {
                (0, ino.mtime_nsec)
            };
            *counts.entry(key).or_default() += 1;
        }
        let best = counts
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(k, _)| k);
        let Some((sec, nsec)) = best else {
            return Self {
                epoch: 0,
                fixed_nsec: 0,
                exact,
            };
        };
        let epoch = if exact {
            sec
        } else {
            image
                .inodes
                .iter()
                .filter(|i| i.mtime_sec >= 0 && i.mtime_nsec == nsec)
                .map(|i| i.mtime_sec)
                .min()
                .unwrap_or(0)
        };
        Self {
            epoch,
            fixed_nsec: nsec,
            exact,
        }
    }

    /// The compact inode's `i_mtime` for this time, if a compact inode can carry it exactly.
    fn compact(&self, sec: i64, nsec: u32) -> Option<u32> {
        if nsec != self.fixed_nsec {
            return None;
        }
        let delta = i128::from(sec) - i128::from(self.epoch);
        if self.exact {
            return (delta == 0).then_some(0);
        }
        u32::try_from(delta).ok()
    }
}

/// A fast hasher for small integer keys (no DoS concern: keys come from one image).
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 31)
    }
}

/// An inode core, decided but not yet written.
#[derive(Clone, Debug)]
pub(super) struct Core {
    pub extended: bool,
    mode: u16,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u32,
    mtime_sec: i64,
    mtime_nsec: u32,
    /// `i_mtime` of the compact form.
    compact_mtime: u32,
    ino: u32,
}

impl Core {
    /// The core of image inode `index`; compact when every field fits.
    pub fn choose(inode: &Inode, index: u32, size: u64, nlink: u32, times: &Times) -> Self {
        let compact_mtime = times.compact(inode.mtime_sec, inode.mtime_nsec);
        let fits = compact_mtime.is_some()
            && u16::try_from(inode.uid).is_ok()
            && u16::try_from(inode.gid).is_ok()
            && u16::try_from(nlink).is_ok()
            && u32::try_from(size).is_ok();
        Self {
            extended: !fits,
            // Cannot truncate: the model validated mode against S_IFMT | 0o7777.
            mode: inode.mode as u16,
            uid: inode.uid,
            gid: inode.gid,
            size,
            nlink,
            mtime_sec: inode.mtime_sec,
            mtime_nsec: inode.mtime_nsec,
            compact_mtime: compact_mtime.unwrap_or(0),
            // A stable 32-bit number for 32-bit stat(2): the image index + 1.
            ino: index.wrapping_add(1),
        }
    }

    /// The packed inode of small files: a regular file only the kernel sees.
    pub fn packed(size: u64, times: &Times, index: u32) -> Self {
        Self {
            extended: u32::try_from(size).is_err(),
            mode: (mode::S_IFREG | 0o600) as u16,
            uid: 0,
            gid: 0,
            size,
            nlink: 1,
            mtime_sec: times.epoch,
            mtime_nsec: times.fixed_nsec,
            compact_mtime: 0,
            ino: index.wrapping_add(1),
        }
    }

    /// Bytes of the core.
    pub fn len(&self) -> u64 {
        if self.extended { 64 } else { 32 }
    }

    pub fn is_dir(&self) -> bool {
        u32::from(self.mode) & mode::S_IFMT == mode::S_IFDIR
    }

    /// Writes the core into `out` (exactly [`len`](Self::len) bytes).
    pub fn encode(&self, out: &mut [u8], datalayout: u16, xattr_isize: u64, u: u32) {
        let icount = if xattr_isize == 0 {
            0
        } else {
            ((xattr_isize - 12) / 4 + 1) as u16
        };
        let format = datalayout << I_DATALAYOUT_BIT;
        if self.extended {
            let mut c = InodeExtended::zeroed();
            c.format = (format | I_VERSION_EXTENDED).into();
            c.xattr_icount = icount.into();
            c.mode = self.mode.into();
            c.size = self.size.into();
            c.u = u.into();
            c.ino = self.ino.into();
            c.uid = self.uid.into();
            c.gid = self.gid.into();
            c.mtime = (self.mtime_sec as u64).into();
            c.mtime_nsec = self.mtime_nsec.into();
            c.nlink = self.nlink.into();
            out.copy_from_slice(c.as_bytes());
        } else {
            // `choose` made compact only inodes whose fields fit these widths.
            let mut c = InodeCompact::zeroed();
            c.format = format.into();
            c.xattr_icount = icount.into();
            c.mode = self.mode.into();
            c.nb = (self.nlink as u16).into();
            c.size = (self.size as u32).into();
            c.mtime = self.compact_mtime.into();
            c.u = u.into();
            c.ino = self.ino.into();
            c.uid = (self.uid as u16).into();
            c.gid = (self.gid as u16).into();
            out.copy_from_slice(c.as_bytes());
        }
    }
}

/// `i_u` of an inode without data: the device number of a device (Linux `new_encode_dev`).
pub(super) fn special_u(image: &Image, index: u32) -> Result<u32, String> {
    let Some(ino) = image.inodes.get(index as usize) else {
        return Ok(0);
    };
    match ino.kind {
        InodeKind::Device { major, minor } => {
            if major >= 1 << 12 || minor >= 1 << 20 {
                return Err(format!(
                    "device number {major}:{minor} does not fit Linux's 12-bit major and 20-bit minor"
                ));
            }
            Ok((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
        }
        _ => Ok(0),
    }
}
