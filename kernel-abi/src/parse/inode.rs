//! Decoding one on-disk inode (compact or extended) and the checks that need nothing but the inode
//! itself: format bits, mode, layout, and that the inode and its xattr body lie inside the input.

use super::num::{le16, read, round_up, shl};
use super::sb::Sb;
use crate::erofs::{self, InodeCompact, InodeExtended};
use crate::error::AbiError;

/// File-type bits of `st_mode`.
pub mod mode {
    /// Mask of the type bits.
    pub const S_IFMT: u16 = 0o170000;
    /// Socket.
    pub const S_IFSOCK: u16 = 0o140000;
    /// Symbolic link.
    pub const S_IFLNK: u16 = 0o120000;
    /// Regular file.
    pub const S_IFREG: u16 = 0o100000;
    /// Block device.
    pub const S_IFBLK: u16 = 0o060000;
    /// Directory.
    pub const S_IFDIR: u16 = 0o040000;
    /// Character device.
    pub const S_IFCHR: u16 = 0o020000;
    /// FIFO.
    pub const S_IFIFO: u16 = 0o010000;
}

/// `i_format` bits this reader understands (version, layout, NLINK_1 / DOT_OMITTED).
const I_ALL: u16 = 0x1f;
const I_NLINK_1: u16 = 1 << 4;
/// All-ones block address: a FLAT_PLAIN inode without data blocks (a sparse file).
const NULL_ADDR_48: u64 = (1 << 48) - 1;
const NULL_ADDR_32: u64 = (1 << 32) - 1;

/// Longest symlink target the kernel follows (`PATH_MAX - 1`).
pub(crate) const SYMLINK_MAX: u64 = 4095;

/// One decoded inode. Every field is plain data; positions are checked to be inside the input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Inode {
    pub nid: u64,
    /// Byte offset of the on-disk inode.
    pub pos: u64,
    /// End of the inode and its inline xattr body: where inline data or the map header starts.
    pub body_end: u64,
    /// 32 or 64.
    pub isize: u64,
    pub xattr_isize: u64,
    pub layout: u16,
    pub mode: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ino: u32,
    /// FLAT layouts: the first data block, or `None` for a FLAT_PLAIN inode without blocks.
    pub startblk: Option<u64>,
    /// Devices: the on-disk (new-style encoded) device number.
    pub rdev: u32,
    /// Compressed layouts: blocks the compressed data occupies (for `st_blocks`).
    pub compressed_blocks: u64,
}

impl Inode {
    /// Decodes inode `nid`. Does not look at its data, directory entries or xattr entries.
    pub fn read(bytes: &[u8], sb: &Sb, nid: u64) -> Result<Self, AbiError> {
        let pos = sb.nid_pos(nid).ok_or(AbiError::OutOfRange {
            table: "nid",
            index: nid,
        })?;
        let trunc = AbiError::Truncated { what: "inode" };
        let format = le16(bytes, pos).ok_or(trunc)?;
        if format & !I_ALL != 0 {
            return Err(AbiError::BadField {
                field: "inode format",
                value: format.into(),
            });
        }
        let layout = (format >> erofs::I_DATALAYOUT_BIT) & erofs::I_DATALAYOUT_MASK;
        let extended = format & erofs::I_VERSION_EXTENDED != 0;
        let mut i = if extended {
            let d: InodeExtended = read(bytes, pos).ok_or(trunc)?;
            Inode {
                nid,
                pos,
                body_end: 0,
                isize: 64,
                xattr_isize: xattr_ibody_size(d.xattr_icount.get()),
                layout,
                mode: d.mode.get(),
                nlink: d.nlink.get(),
                uid: d.uid.get(),
                gid: d.gid.get(),
                size: d.size.get(),
                mtime: d.mtime.get() as i64,
                mtime_nsec: d.mtime_nsec.get(),
                ino: d.ino.get(),
                startblk: Some(u64::from(d.u.get()) | u64::from(d.nb.get()) << 32),
                rdev: d.u.get(),
                compressed_blocks: u64::from(d.u.get()) | u64::from(d.nb.get()) << 32,
            }
        } else {
            let d: InodeCompact = read(bytes, pos).ok_or(trunc)?;
            let is_dir = d.mode.get() & mode::S_IFMT == mode::S_IFDIR;
            // For non-directories bit 4 means "nlink is 1, `nb` holds the address MSB"; for
            // directories it would mean "no `.` entry", which chunkfs never writes.
            let nlink1 = format & I_NLINK_1 != 0;
            if is_dir && nlink1 {
                return Err(AbiError::BadField {
                    field: "directory format (dot omitted)",
                    value: format.into(),
                });
            }
            let (nlink, hi) = if nlink1 {
                (1, u64::from(d.nb.get()))
            } else {
                (u32::from(d.nb.get()), 0)
            };
            let mtime = sb
                .epoch
                .checked_add(d.mtime.get().into())
                .ok_or(AbiError::BadField {
                    field: "inode mtime",
                    value: d.mtime.get().into(),
                })?;
            Inode {
                nid,
                pos,
                body_end: 0,
                isize: 32,
                xattr_isize: xattr_ibody_size(d.xattr_icount.get()),
                layout,
                mode: d.mode.get(),
                nlink,
                uid: d.uid.get().into(),
                gid: d.gid.get().into(),
                size: d.size.get().into(),
                mtime,
                mtime_nsec: sb.fixed_nsec,
                ino: d.ino.get(),
                startblk: Some(u64::from(d.u.get()) | hi << 32),
                rdev: d.u.get(),
                compressed_blocks: u64::from(d.u.get()) | hi << 32,
            }
        };
        i.body_end = pos
            .checked_add(i.isize)
            .and_then(|e| e.checked_add(i.xattr_isize))
            .filter(|&e| e <= bytes.len() as u64)
            .ok_or(AbiError::Truncated {
                what: "inode xattr body",
            })?;
        if i.mtime_nsec >= 1_000_000_000 {
            return Err(AbiError::BadField {
                field: "inode mtime_nsec",
                value: i.mtime_nsec.into(),
            });
        }
        if i.nlink == 0 {
            return Err(AbiError::BadField {
                field: "inode nlink",
                value: 0,
            });
        }
        let ty = i.mode & mode::S_IFMT;
        let flat = matches!(layout, erofs::INODE_FLAT_PLAIN | erofs::INODE_FLAT_INLINE);
        let compressed = matches!(
            layout,
            erofs::INODE_COMPRESSED_FULL | erofs::INODE_COMPRESSED_COMPACT
        );
        match ty {
            mode::S_IFREG if flat || compressed => {}
            mode::S_IFDIR | mode::S_IFLNK if flat => {}
            mode::S_IFCHR | mode::S_IFBLK | mode::S_IFIFO | mode::S_IFSOCK if flat => {
                if i.size != 0 {
                    return Err(AbiError::BadField {
                        field: "special file size",
                        value: i.size,
                    });
                }
                if matches!(ty, mode::S_IFIFO | mode::S_IFSOCK) {
                    i.rdev = 0;
                }
            }
            mode::S_IFREG
            | mode::S_IFDIR
            | mode::S_IFLNK
            | mode::S_IFCHR
            | mode::S_IFBLK
            | mode::S_IFIFO
            | mode::S_IFSOCK => {
                return Err(AbiError::BadField {
                    field: "inode data layout",
                    value: layout.into(),
                });
            }
            _ => {
                return Err(AbiError::BadField {
                    field: "inode mode",
                    value: i.mode.into(),
                });
            }
        }
        if !matches!(ty, mode::S_IFREG | mode::S_IFDIR | mode::S_IFLNK) || !flat {
            i.startblk = None;
        } else if layout == erofs::INODE_FLAT_PLAIN {
            // As the kernel: the address MSB exists only when `nb` is not the link count.
            let mask = if extended || format & I_NLINK_1 != 0 {
                NULL_ADDR_48
            } else {
                NULL_ADDR_32
            };
            if i.startblk.is_some_and(|b| b & mask == mask) {
                i.startblk = None;
            }
        }
        if !compressed {
            i.compressed_blocks = 0;
        }
        if ty == mode::S_IFLNK && !(1..=SYMLINK_MAX).contains(&i.size) {
            return Err(AbiError::BadField {
                field: "symlink size",
                value: i.size,
            });
        }
        Ok(i)
    }

    pub fn file_type(&self) -> u16 {
        self.mode & mode::S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == mode::S_IFDIR
    }

    pub fn is_compressed(&self) -> bool {
        matches!(
            self.layout,
            erofs::INODE_COMPRESSED_FULL | erofs::INODE_COMPRESSED_COMPACT
        )
    }

    /// `st_blocks` as the kernel reports it: compressed blocks for compressed inodes, otherwise
    /// the size rounded up to whole blocks, in 512-byte units.
    pub fn st_blocks(&self, sb: &Sb) -> u64 {
        let shift = u32::from(sb.blkszbits).saturating_sub(9);
        if self.is_compressed() {
            shl(self.compressed_blocks, shift).unwrap_or(u64::MAX)
        } else {
            round_up(self.size, sb.blksz()).map_or(u64::MAX, |r| r >> 9)
        }
    }
}

/// Bytes of an inline xattr body holding `icount` 4-byte units (0: no body).
fn xattr_ibody_size(icount: u16) -> u64 {
    match icount {
        0 => 0,
        // At most 12 + 4 * 65534: no overflow.
        n => u64::from(n)
            .wrapping_sub(1)
            .wrapping_mul(4)
            .wrapping_add(12),
    }
}

/// The dirent file type (`erofs::ft`) matching a mode's type bits.
pub(crate) fn ftype_of_mode(m: u16) -> u8 {
    match m & mode::S_IFMT {
        mode::S_IFREG => erofs::ft::REG_FILE,
        mode::S_IFDIR => erofs::ft::DIR,
        mode::S_IFCHR => erofs::ft::CHRDEV,
        mode::S_IFBLK => erofs::ft::BLKDEV,
        mode::S_IFIFO => erofs::ft::FIFO,
        mode::S_IFSOCK => erofs::ft::SOCK,
        mode::S_IFLNK => erofs::ft::SYMLINK,
        _ => erofs::ft::UNKNOWN,
    }
}
