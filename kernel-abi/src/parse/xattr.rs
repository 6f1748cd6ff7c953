//! Extended attributes: an inode's inline body (header, shared ids, entries) and the shared xattr
//! area (Linux `fs/erofs/xattr.c`).

use super::hash::xxh32;
use super::inode::Inode;
use super::num::{le32, read, round_up, slice};
use super::sb::Sb;
use crate::erofs::{self, XattrEntry, XattrIbodyHeader, xattr_index};
use crate::error::AbiError;

const FILTER_SEED: u32 = 0x25BB_E08F;
/// Longest full xattr name (prefix included), as the VFS allows.
const NAME_MAX: usize = 255;

/// The name prefix of a short prefix index, and whether the suffix must be empty (ACLs).
pub(crate) fn prefix(index: u8) -> Option<(&'static [u8], bool)> {
    Some(match index {
        xattr_index::USER => (b"user.", false),
        xattr_index::POSIX_ACL_ACCESS => (b"system.posix_acl_access", true),
        xattr_index::POSIX_ACL_DEFAULT => (b"system.posix_acl_default", true),
        xattr_index::TRUSTED => (b"trusted.", false),
        xattr_index::SECURITY => (b"security.", false),
        _ => return None,
    })
}

/// One extended attribute: full name = `prefix` followed by `suffix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xattr<'a> {
    /// Name index (`erofs::xattr_index`).
    pub index: u8,
    /// The namespace prefix, e.g. `b"user."`.
    pub prefix: &'static [u8],
    /// The rest of the name.
    pub suffix: &'a [u8],
    /// The value.
    pub value: &'a [u8],
}

impl Xattr<'_> {
    /// Length of the full name.
    pub fn name_len(&self) -> usize {
        self.prefix.len().saturating_add(self.suffix.len())
    }

    /// True if the full name equals `name`.
    pub fn name_is(&self, name: &[u8]) -> bool {
        name.strip_prefix(self.prefix) == Some(self.suffix)
    }
}

/// Decodes the entry at `pos`; returns it and its size including padding.
fn entry(bytes: &[u8], pos: u64) -> Result<(Xattr<'_>, u64), AbiError> {
    let trunc = AbiError::Truncated {
        what: "xattr entry",
    };
    let e: XattrEntry = read(bytes, pos).ok_or(trunc)?;
    let (prefix, empty_suffix) = prefix(e.name_index).ok_or(AbiError::BadField {
        field: "xattr name index",
        value: e.name_index.into(),
    })?;
    let name_len = u64::from(e.name_len);
    if empty_suffix != (name_len == 0)
        || prefix.len().saturating_add(usize::from(e.name_len)) > NAME_MAX
    {
        return Err(AbiError::BadField {
            field: "xattr name length",
            value: name_len,
        });
    }
    let value_len = u64::from(e.value_size.get());
    let suffix = slice(bytes, pos.wrapping_add(4), name_len).ok_or(trunc)?;
    let value = slice(bytes, pos.wrapping_add(4).wrapping_add(name_len), value_len).ok_or(trunc)?;
    // Names end at the first NUL for the VFS; an embedded one would make two names equal.
    if suffix.contains(&0) {
        return Err(AbiError::BadField {
            field: "xattr name",
            value: pos,
        });
    }
    // At most 4 + 255 + 65535: no overflow.
    let size = round_up(name_len.wrapping_add(value_len).wrapping_add(4), 4).ok_or(trunc)?;
    Ok((
        Xattr {
            index: e.name_index,
            prefix,
            suffix,
            value,
        },
        size,
    ))
}

/// The inline body of an inode: where its shared ids and inline entries are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Body {
    pub name_filter: u32,
    shared_pos: u64,
    shared_count: u64,
    entries_pos: u64,
    entries_end: u64,
}

impl Body {
    /// A body without xattrs.
    pub fn empty() -> Self {
        Self {
            name_filter: 0,
            shared_pos: 0,
            shared_count: 0,
            entries_pos: 0,
            entries_end: 0,
        }
    }

    /// `None` if the inode has no xattr body.
    pub fn of(bytes: &[u8], i: &Inode) -> Result<Option<Self>, AbiError> {
        if i.xattr_isize == 0 {
            return Ok(None);
        }
        let start = i.pos.wrapping_add(i.isize);
        let h: XattrIbodyHeader =
            read(bytes, start).ok_or(AbiError::Truncated { what: "xattr body" })?;
        let shared_count = u64::from(h.shared_count);
        let shared_pos = start.wrapping_add(12);
        let entries_pos = shared_pos.wrapping_add(shared_count * 4);
        // `Inode::read` checked that the body ends inside the input.
        if entries_pos > i.body_end {
            return Err(AbiError::BadField {
                field: "xattr shared count",
                value: shared_count,
            });
        }
        Ok(Some(Self {
            name_filter: h.name_filter.get(),
            shared_pos,
            shared_count,
            entries_pos,
            entries_end: i.body_end,
        }))
    }

    /// All xattrs, inline ones first, then shared ones (the kernel's order). Yields an error and stops at the first
    /// malformed entry.
    pub fn iter<'a>(&self, bytes: &'a [u8], sb: &Sb) -> Iter<'a> {
        Iter {
            bytes,
            xattr_start: sb.xattr_start,
            body: *self,
            shared_done: 0,
            pos: self.entries_pos,
            failed: false,
        }
    }

    /// Checks every entry: known prefixes, sizes, inline entries exactly filling the body, shared
    /// entries inside the input, and (with the name filter feature) that no present name has
    /// its filter bit set, since the kernel would then report it absent.
    pub fn validate(&self, bytes: &[u8], sb: &Sb) -> Result<(), AbiError> {
        let filter = sb.compat & erofs::FEATURE_COMPAT_XATTR_FILTER != 0;
        for x in self.iter(bytes, sb) {
            let x = x?;
            if filter {
                let bit = xxh32(x.suffix, FILTER_SEED.wrapping_add(x.index.into())) & 31;
                if self.name_filter & (1 << bit) != 0 {
                    return Err(AbiError::BadField {
                        field: "xattr name filter",
                        value: self.name_filter.into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Iterator over an inode's xattrs.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    bytes: &'a [u8],
    xattr_start: u64,
    body: Body,
    shared_done: u64,
    pos: u64,
    failed: bool,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Result<Xattr<'a>, AbiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = if self.pos < self.body.entries_end {
            entry(self.bytes, self.pos).and_then(|(x, size)| {
                self.pos = self.pos.wrapping_add(size);
                if self.pos > self.body.entries_end {
                    Err(AbiError::BadField {
                        field: "xattr entry size",
                        value: size,
                    })
                } else {
                    Ok(x)
                }
            })
        } else if self.shared_done < self.body.shared_count {
            let id_pos = self
                .body
                .shared_pos
                .wrapping_add(self.shared_done.wrapping_mul(4));
            self.shared_done = self.shared_done.wrapping_add(1);
            le32(self.bytes, id_pos)
                .ok_or(AbiError::Truncated {
                    what: "xattr shared id",
                })
                .and_then(|id| {
                    let pos = self.xattr_start.checked_add(u64::from(id) * 4);
                    let pos = pos.ok_or(AbiError::OutOfRange {
                        table: "shared xattr",
                        index: id.into(),
                    })?;
                    entry(self.bytes, pos).map(|(x, _)| x)
                })
        } else {
            return None;
        };
        self.failed = r.is_err();
        Some(r)
    }
}
