//! Directories: flat data cut into blocks; each block holds `erofs_dirent`s, then their names,
//! sorted by name across the whole directory (Linux `fs/erofs/dir.c`, `namei.c`).

use super::flat::FlatLayout;
use super::inode::Inode;
use super::num::{div_ceil_shift, le16, le64};
use super::sb::Sb;
use crate::erofs::NAME_LEN;
use crate::error::AbiError;

const DIRENT_SIZE: usize = 12;

/// One directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// The name: 1 to 255 bytes, no `/` and no NUL.
    pub name: &'a [u8],
    /// The target inode.
    pub nid: u64,
    /// The target's type (`erofs::ft`).
    pub file_type: u8,
    /// Opaque position just after this entry: pass it to [`InodeView::entries_from`](super::InodeView::entries_from) to resume.
    pub next_cookie: u64,
}

/// The entries of one directory block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DirBlock<'a> {
    data: &'a [u8],
    count: usize,
}

impl<'a> DirBlock<'a> {
    /// Checks the block's header: the first name offset gives the entry count and lies inside.
    pub fn parse(data: &'a [u8]) -> Result<Self, AbiError> {
        // The first entry's name offset (after its 8-byte nid) is also the size of the entry table.
        let nameoff0 = le16(data, 8).ok_or(AbiError::Truncated {
            what: "directory block",
        })?;
        let n = usize::from(nameoff0);
        if n < DIRENT_SIZE || n % DIRENT_SIZE != 0 || n >= data.len() {
            return Err(AbiError::BadField {
                field: "dirent nameoff",
                value: nameoff0.into(),
            });
        }
        Ok(Self {
            data,
            count: n / DIRENT_SIZE,
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Entry `i`: its nid, file type and name. Names run to the next entry's name, the last one
    /// to the first NUL or the block's end.
    pub fn entry(&self, i: usize) -> Result<(u64, u8, &'a [u8]), AbiError> {
        let bad = |v: u64| AbiError::BadField {
            field: "dirent nameoff",
            value: v,
        };
        let base = i
            .checked_mul(DIRENT_SIZE)
            .filter(|_| i < self.count)
            .ok_or(bad(i as u64))?;
        let base = base as u64;
        let nid = le64(self.data, base).ok_or(bad(base))?;
        let nameoff = le16(self.data, base.wrapping_add(8)).ok_or(bad(base))?;
        let file_type = *self
            .data
            .get(base.wrapping_add(10) as usize)
            .ok_or(bad(base))?;
        let start = usize::from(nameoff);
        let name = if i.wrapping_add(1) < self.count {
            let next = le16(
                self.data,
                base.wrapping_add(DIRENT_SIZE as u64).wrapping_add(8),
            )
            .ok_or(bad(base))?;
            self.data
                .get(start..usize::from(next))
                .ok_or(bad(nameoff.into()))?
        } else {
            let rest = self.data.get(start..).ok_or(bad(nameoff.into()))?;
            rest.get(..rest.iter().position(|&b| b == 0).unwrap_or(rest.len()))
                .unwrap_or(rest)
        };
        if start < self.count.wrapping_mul(DIRENT_SIZE) {
            return Err(bad(nameoff.into()));
        }
        if name.is_empty() || name.len() > NAME_LEN || name.iter().any(|&b| b == b'/' || b == 0) {
            return Err(AbiError::BadField {
                field: "dirent name",
                value: name.len() as u64,
            });
        }
        Ok((nid, file_type, name))
    }
}

/// A directory inode with its data layout checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dir {
    pub inode: Inode,
    pub flat: FlatLayout,
    pub nblocks: u64,
}

impl Dir {
    pub fn of(bytes: &[u8], sb: &Sb, inode: Inode) -> Result<Self, AbiError> {
        let flat = FlatLayout::of(bytes, sb, &inode)?;
        let nblocks = div_ceil_shift(inode.size, sb.blkszbits.into())
            .filter(|&n| n <= u64::from(u32::MAX))
            .ok_or(AbiError::BadField {
                field: "directory size",
                value: inode.size,
            })?;
        Ok(Self {
            inode,
            flat,
            nblocks,
        })
    }

    pub fn block<'a>(&self, bytes: &'a [u8], sb: &Sb, b: u64) -> Result<DirBlock<'a>, AbiError> {
        let data = self
            .flat
            .block(bytes, sb, &self.inode, b)
            .ok_or(AbiError::Truncated {
                what: "directory block",
            })?;
        DirBlock::parse(data)
    }

    /// Entries from `cookie` (0: the first) in on-disk order. Stops at the first malformed block.
    pub fn entries_from<'a>(&self, bytes: &'a [u8], sb: &'a Sb, cookie: u64) -> DirIter<'a> {
        DirIter {
            bytes,
            sb,
            dir: *self,
            block: cookie >> 16,
            index: (cookie & 0xffff) as usize,
            current: None,
        }
    }

    /// Binary search for `name`: first over blocks by their first name, then inside the block.
    pub fn lookup<'a>(&self, bytes: &'a [u8], sb: &Sb, name: &[u8]) -> Option<DirEntry<'a>> {
        let (mut lo, mut hi) = (0u64, self.nblocks);
        let mut found = None;
        while lo < hi {
            let mid = lo.wrapping_add(hi.wrapping_sub(lo) / 2);
            let block = self.block(bytes, sb, mid).ok()?;
            let (_, _, first) = block.entry(0).ok()?;
            if first <= name {
                found = Some((mid, block));
                lo = mid.wrapping_add(1);
            } else {
                hi = mid;
            }
        }
        let (b, block) = found?;
        let (mut lo, mut hi) = (0usize, block.len());
        while lo < hi {
            let mid = lo.wrapping_add(hi.wrapping_sub(lo) / 2);
            let (nid, file_type, n) = block.entry(mid).ok()?;
            match n.cmp(name) {
                core::cmp::Ordering::Equal => {
                    return Some(DirEntry {
                        name: n,
                        nid,
                        file_type,
                        next_cookie: cookie(b, mid.wrapping_add(1)),
                    });
                }
                core::cmp::Ordering::Less => lo = mid.wrapping_add(1),
                core::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }
}

fn cookie(block: u64, index: usize) -> u64 {
    block.wrapping_shl(16) | index as u64
}

/// Iterator over a directory's entries.
#[derive(Clone, Debug)]
pub struct DirIter<'a> {
    bytes: &'a [u8],
    sb: &'a Sb,
    dir: Dir,
    block: u64,
    index: usize,
    current: Option<DirBlock<'a>>,
}

impl<'a> Iterator for DirIter<'a> {
    type Item = Result<DirEntry<'a>, AbiError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.block >= self.dir.nblocks {
                return None;
            }
            let block = match self.current {
                Some(b) => b,
                None => match self.dir.block(self.bytes, self.sb, self.block) {
                    Ok(b) => *self.current.insert(b),
                    Err(e) => {
                        self.block = self.dir.nblocks;
                        return Some(Err(e));
                    }
                },
            };
            if self.index >= block.len() {
                self.block = self.block.wrapping_add(1);
                self.index = 0;
                self.current = None;
                continue;
            }
            let i = self.index;
            self.index = i.wrapping_add(1);
            return Some(match block.entry(i) {
                Ok((nid, file_type, name)) => Ok(DirEntry {
                    name,
                    nid,
                    file_type,
                    next_cookie: cookie(self.block, i.wrapping_add(1)),
                }),
                Err(e) => {
                    self.block = self.dir.nblocks;
                    Err(e)
                }
            });
        }
    }
}
