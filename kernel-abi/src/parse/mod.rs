//! One-pass validation of a whole EROFS descriptor, and the views readers use afterwards
//! (docs/descriptor.md; the kernel's `fs/erofs` is the reference reader).
//!
//! [`Descriptor::parse_in`] checks, once: the superblock (magic, block size, incompatible
//! features, checksum), the compression configs, the device table, the packed inode and every
//! inode reachable from the root: nids in range, inodes and their xattr bodies inside the input
//! and not overlapping, xattr entries, directory blocks (entries sorted by name, names 1..=255
//! bytes without `/` or NUL, `.` and `..` naming the directory and its parent, file types matching
//! the targets' modes), no directory cycles or directories reachable twice, depth at most
//! [`MAX_DEPTH`], symlink targets, inline data not crossing a block, and compressed inodes' maps
//! (48-bit extents sorted and inside the file, clusters at most 1 MiB inside their device, only
//! zstd or stored data; lcluster indexes with consistent heads, deltas, block counts and block
//! addresses; fragments inside the packed inode).
//!
//! Afterwards [`Descriptor::root`] and [`Descriptor::inode`] give [`InodeView`]s whose accessors
//! never panic and never read outside the input, whatever nid they are given: a nid that was not
//! validated (not reachable from the root) is decoded with the same bounds checks, and any deeper
//! inconsistency makes the accessor return `None` or an error.

mod dir;
mod flat;
mod hash;
pub(crate) mod inode;
mod num;
mod sb;
mod walk;
mod xattr;
mod zmap;

pub use dir::{DirEntry, DirIter};
pub use inode::mode;
pub use sb::{DeviceInfo, KNOWN_INCOMPAT};
pub use walk::MAX_DEPTH;
pub use xattr::{Iter as XattrIter, Xattr};
pub use zmap::{MapKind, Mapping};

use crate::erofs;
use crate::error::{AbiError, ParseError};
use dir::Dir;
use flat::FlatLayout;
use inode::Inode;
use sb::Sb;
use zmap::ZMap;

/// A validated descriptor over its bytes `B` (a slice, a `Vec`, a memory map...): the whole
/// primary device, superblock at byte 1024.
#[derive(Clone, Debug)]
pub struct Descriptor<B> {
    bytes: B,
    sb: Sb,
    xattrs: bool,
}

impl<B: AsRef<[u8]>> Descriptor<B> {
    /// Bytes of scratch [`Descriptor::parse_in`] needs for `bytes`: a path stack for the walk and
    /// two bits per 32-byte inode slot (about 1/128 of the metadata area, plus 32 KiB).
    pub fn scratch_len(bytes: &[u8]) -> Result<usize, ParseError> {
        let sb = sb::parse(bytes)?;
        Ok(walk::scratch_len(&sb).ok_or(AbiError::Truncated { what: "scratch" })?)
    }

    /// Validates the whole descriptor in one pass, using `scratch` (at least
    /// [`Descriptor::scratch_len`] bytes; its contents are overwritten).
    pub fn parse_in(bytes: B, scratch: &mut [u8]) -> Result<Self, ParseError> {
        let mut sb = sb::parse(bytes.as_ref())?;
        let xattrs = walk::validate(bytes.as_ref(), &mut sb, scratch)?;
        Ok(Self { bytes, sb, xattrs })
    }

    /// Validates the whole descriptor in one pass, allocating the scratch it needs.
    #[cfg(feature = "alloc")]
    pub fn parse(bytes: B) -> Result<Self, ParseError> {
        let len = Self::scratch_len(bytes.as_ref())?;
        let mut scratch = alloc::vec::Vec::new();
        scratch
            .try_reserve_exact(len)
            .map_err(|_| AbiError::Truncated {
                what: "scratch (out of memory)",
            })?;
        scratch.resize(len, 0);
        Self::parse_in(bytes, &mut scratch)
    }

    /// The bytes the descriptor was parsed from.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// Gives the bytes back.
    pub fn into_inner(self) -> B {
        self.bytes
    }

    /// The root directory.
    pub fn root(&self) -> InodeView<'_> {
        // Validated by `parse_in`, so this only fails if `B` changed its bytes since.
        self.inode(self.sb.root_nid)
            .unwrap_or_else(|| InodeView::empty_dir(self.bytes(), &self.sb))
    }

    /// The root directory's nid.
    pub fn root_nid(&self) -> u64 {
        self.sb.root_nid
    }

    /// The inode `nid`, or `None` if it does not decode. Never panics, whatever `nid` is.
    pub fn inode(&self, nid: u64) -> Option<InodeView<'_>> {
        let i = Inode::read(self.bytes(), &self.sb, nid).ok()?;
        Some(InodeView {
            bytes: self.bytes(),
            sb: &self.sb,
            i,
        })
    }

    /// The packed inode holding fragments, if the image has one.
    pub fn packed(&self) -> Option<InodeView<'_>> {
        self.inode(self.sb.packed_nid?)
    }

    /// Block size in bytes (512 to 4096).
    pub fn block_size(&self) -> u32 {
        1 << self.sb.blkszbits
    }

    /// Blocks of the primary device.
    pub fn primary_blocks(&self) -> u64 {
        self.sb.primary_blocks
    }

    /// Blocks of all devices (what the kernel reports as `f_blocks`).
    pub fn total_blocks(&self) -> u64 {
        self.sb.total_blocks
    }

    /// The superblock's inode count (for `statfs`).
    pub fn inos(&self) -> u64 {
        self.sb.inos
    }

    /// Whether any inode has extended attributes. A FUSE server may then stop the kernel from
    /// asking (`ls -l` asks for `security.selinux` of every file, and FUSE caches no xattrs).
    pub fn has_xattrs(&self) -> bool {
        self.xattrs
    }

    /// The superblock's incompatible feature bits.
    pub fn feature_incompat(&self) -> u32 {
        self.sb.incompat
    }

    /// Number of extra devices (device ids `1..=extra_devices()`).
    pub fn extra_devices(&self) -> u16 {
        self.sb.extra_devices
    }

    /// Extra device `id` (1-based, as in mappings).
    pub fn device(&self, id: u16) -> Option<DeviceInfo<'_>> {
        sb::device(self.bytes(), &self.sb, id.checked_sub(1)?)
    }
}

/// The type of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// FIFO.
    Fifo,
    /// Socket.
    Socket,
}

/// A decoded inode. Accessors read only inside the descriptor and never panic.
#[derive(Clone, Copy, Debug)]
pub struct InodeView<'a> {
    bytes: &'a [u8],
    sb: &'a Sb,
    i: Inode,
}

impl<'a> InodeView<'a> {
    fn empty_dir(bytes: &'a [u8], sb: &'a Sb) -> Self {
        let i = Inode {
            nid: sb.root_nid,
            pos: 0,
            body_end: 0,
            isize: 0,
            xattr_isize: 0,
            layout: erofs::INODE_FLAT_PLAIN,
            mode: mode::S_IFDIR,
            nlink: 2,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            ino: 0,
            startblk: None,
            rdev: 0,
            compressed_blocks: 0,
        };
        Self { bytes, sb, i }
    }

    /// The inode's nid (what the kernel reports as `st_ino` on 64-bit systems).
    pub fn nid(&self) -> u64 {
        self.i.nid
    }

    /// `st_mode`: type and permission bits.
    pub fn mode(&self) -> u16 {
        self.i.mode
    }

    /// The type.
    pub fn kind(&self) -> Kind {
        match self.i.file_type() {
            mode::S_IFDIR => Kind::Dir,
            mode::S_IFLNK => Kind::Symlink,
            mode::S_IFCHR => Kind::CharDevice,
            mode::S_IFBLK => Kind::BlockDevice,
            mode::S_IFIFO => Kind::Fifo,
            mode::S_IFSOCK => Kind::Socket,
            _ => Kind::File,
        }
    }

    /// Owner.
    pub fn uid(&self) -> u32 {
        self.i.uid
    }

    /// Group.
    pub fn gid(&self) -> u32 {
        self.i.gid
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.i.size
    }

    /// Modification time, seconds since the epoch (negative before 1970).
    pub fn mtime(&self) -> i64 {
        self.i.mtime
    }

    /// Nanoseconds of the modification time (below 10^9).
    pub fn mtime_nsec(&self) -> u32 {
        self.i.mtime_nsec
    }

    /// Link count.
    pub fn nlink(&self) -> u32 {
        self.i.nlink
    }

    /// Device number of a device inode, in the kernel's new encoding (`new_encode_dev`), 0 otherwise.
    pub fn rdev(&self) -> u32 {
        if matches!(self.kind(), Kind::CharDevice | Kind::BlockDevice) {
            self.i.rdev
        } else {
            0
        }
    }

    /// The on-disk 32-bit inode number (for 32-bit `stat`).
    pub fn ino(&self) -> u32 {
        self.i.ino
    }

    /// `st_blocks` (512-byte units) as the kernel reports it.
    pub fn blocks(&self) -> u64 {
        self.i.st_blocks(self.sb)
    }

    /// True if the data is compressed.
    pub fn is_compressed(&self) -> bool {
        self.i.is_compressed()
    }

    fn dir(&self) -> Option<Dir> {
        if !self.i.is_dir() || self.i.size == 0 {
            return None;
        }
        Dir::of(self.bytes, self.sb, self.i).ok()
    }

    /// Directory entries in on-disk (name) order, `.` and `..` included; `None` for non-directories.
    pub fn entries(&self) -> Option<DirIter<'a>> {
        self.entries_from(0)
    }

    /// Directory entries from a cookie returned in [`DirEntry::next_cookie`] (0: the first).
    pub fn entries_from(&self, cookie: u64) -> Option<DirIter<'a>> {
        Some(self.dir()?.entries_from(self.bytes, self.sb, cookie))
    }

    /// The entry called `name`, by binary search; `None` if absent or not a directory.
    pub fn lookup(&self, name: &[u8]) -> Option<DirEntry<'a>> {
        self.dir()?.lookup(self.bytes, self.sb, name)
    }

    /// A symlink's target, as up to two pieces to concatenate (whole blocks, then an inline tail).
    pub fn symlink_target(&self) -> Option<[&'a [u8]; 2]> {
        if self.kind() != Kind::Symlink {
            return None;
        }
        let flat = FlatLayout::of(self.bytes, self.sb, &self.i).ok()?;
        let (head, tail) = flat.pieces(self.bytes, &self.i)?;
        Some([head, tail])
    }

    /// Extended attributes: inline ones, then shared ones (the kernel's `listxattr` order).
    pub fn xattrs(&self) -> XattrIter<'a> {
        let body = xattr::Body::of(self.bytes, &self.i).ok().flatten();
        let body = body.unwrap_or_else(xattr::Body::empty);
        body.iter(self.bytes, self.sb)
    }

    /// The value of the xattr with the full name `name` (e.g. `b"user.foo"`).
    pub fn xattr(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.xattrs()
            .map_while(Result::ok)
            .find(|x| x.name_is(name))
            .map(|x| x.value)
    }

    /// What backs logical byte `pos` of a regular file: the whole range of the extent, cluster,
    /// hole or fragment holding it. `None` at or past the end, for non-files, or on corruption.
    pub fn map(&self, pos: u64) -> Option<Mapping> {
        if self.kind() != Kind::File || pos >= self.i.size {
            return None;
        }
        let m = if self.i.is_compressed() {
            let z = ZMap::of(self.bytes, self.sb, &self.i).ok()?;
            z.map(self.bytes, self.sb, pos).ok()?
        } else {
            let flat = FlatLayout::of(self.bytes, self.sb, &self.i).ok()?;
            match flat.head_pos {
                None => Mapping {
                    logical_start: 0,
                    logical_len: self.i.size,
                    kind: MapKind::Hole,
                },
                Some(offset) if pos < flat.head_len => Mapping {
                    logical_start: 0,
                    logical_len: flat.head_len,
                    kind: MapKind::Raw { device: 0, offset },
                },
                Some(_) => Mapping {
                    logical_start: flat.head_len,
                    logical_len: self.i.size.wrapping_sub(flat.head_len),
                    kind: MapKind::Raw {
                        device: 0,
                        offset: flat.tail_pos,
                    },
                },
            }
        };
        // Clamp to the file (a whole-file fragment maps "everything").
        let end = m
            .logical_start
            .checked_add(m.logical_len)
            .map_or(self.i.size, |e| e.min(self.i.size));
        let m = Mapping {
            logical_len: end.checked_sub(m.logical_start)?,
            ..m
        };
        (m.logical_start <= pos && pos < end).then_some(m)
    }
}

#[cfg(test)]
mod tests;
