//! The one validation pass: every inode reachable from the root (and the packed inode), each
//! checked once, in a depth-first walk that keeps its path and visited set in caller scratch.
//!
//! Cycles and directories reachable twice: every directory's `..` must name the directory it was
//! reached from, and no entry other than `.` may name the directory itself or the root, so a
//! directory can only be reached twice through two entries of its own parent. The visited set
//! (one "head" bit per inode slot) catches exactly that, and makes hard links cost one check.
//! A second "claimed" bit per slot marks the bytes of every validated inode (inode, xattrs,
//! inline data, map records): inodes may not overlap, which bounds the whole pass by the input
//! size even for hostile images.

use super::dir::Dir;
use super::flat::FlatLayout;
use super::inode::{Inode, ftype_of_mode, mode};
use super::num::round_up;
use super::sb::Sb;
use super::xattr::Body;
use super::zmap::ZMap;
use crate::erofs::{self, ISLOT_SIZE};

const _: () = assert!(ISLOT_SIZE == 32);
use crate::error::{AbiError, ParseError};

/// Deepest directory nesting accepted (the root is depth 0), as `docs/format.md` §3.5.
pub const MAX_DEPTH: usize = 2048;
const FRAME_SIZE: usize = 16;
const STACK_BYTES: usize = (MAX_DEPTH + 1) * FRAME_SIZE;

/// Bytes of scratch [`validate`] needs: the path stack and two bits per inode slot.
pub(crate) fn scratch_len(sb: &Sb) -> Option<usize> {
    let bits = usize::try_from(sb.nid_count).ok()?.checked_mul(2)?;
    STACK_BYTES.checked_add(bits.div_ceil(8))
}

struct Scratch<'s> {
    stack: &'s mut [u8],
    depth: usize,
    bits: &'s mut [u8],
    /// Whether some validated inode has an xattr body.
    xattrs: bool,
}

impl Scratch<'_> {
    fn bit(&self, n: u64) -> bool {
        let byte = usize::try_from(n / 8).ok().and_then(|b| self.bits.get(b));
        byte.is_some_and(|b| b & (1 << (n % 8)) != 0)
    }

    fn set(&mut self, n: u64) {
        if let Some(b) = usize::try_from(n / 8)
            .ok()
            .and_then(|b| self.bits.get_mut(b))
        {
            *b |= 1 << (n % 8);
        }
    }

    fn is_head(&self, nid: u64) -> bool {
        nid.checked_mul(2).is_some_and(|n| self.bit(n))
    }

    /// Marks `nid` validated and the slots of `[i.pos, end)` as its own.
    fn claim(&mut self, sb: &Sb, i: &Inode, end: u64) -> Result<(), AbiError> {
        let slot = |p: u64| p.wrapping_sub(sb.meta_start) / 32;
        let last = round_up(end, ISLOT_SIZE as u64)
            .map(slot)
            .ok_or(AbiError::Truncated { what: "inode" })?;
        for s in slot(i.pos)..last {
            let n = s.wrapping_mul(2);
            if self.bit(n.wrapping_add(1)) {
                return Err(AbiError::BadField {
                    field: "inodes overlapping at slot",
                    value: s,
                });
            }
            self.set(n.wrapping_add(1));
        }
        self.set(i.nid.wrapping_mul(2));
        Ok(())
    }

    fn push(&mut self, nid: u64) -> Result<(), AbiError> {
        let at = self.depth.wrapping_mul(FRAME_SIZE);
        let frame = self.stack.get_mut(at..at.wrapping_add(FRAME_SIZE));
        let frame = frame.ok_or(AbiError::BadField {
            field: "directory depth",
            value: self.depth as u64,
        })?;
        let (n, c) = frame.split_at_mut(8);
        n.copy_from_slice(&nid.to_le_bytes());
        c.copy_from_slice(&0u64.to_le_bytes());
        self.depth = self.depth.wrapping_add(1);
        Ok(())
    }

    fn frame(&self, depth: usize) -> Option<(u64, u64)> {
        let at = depth.checked_mul(FRAME_SIZE)?;
        let f = self.stack.get(at..at.checked_add(FRAME_SIZE)?)?;
        let nid = u64::from_le_bytes(f.get(..8)?.try_into().ok()?);
        let cookie = u64::from_le_bytes(f.get(8..)?.try_into().ok()?);
        Some((nid, cookie))
    }

    fn set_cookie(&mut self, depth: usize, cookie: u64) {
        let at = depth.wrapping_mul(FRAME_SIZE).wrapping_add(8);
        if let Some(c) = self.stack.get_mut(at..at.wrapping_add(8)) {
            c.copy_from_slice(&cookie.to_le_bytes());
        }
    }
}

fn at(nid: u64) -> impl Fn(AbiError) -> ParseError {
    move |error| ParseError {
        nid: Some(nid),
        error,
    }
}

/// Validates the packed inode, then every inode reachable from the root.
/// Returns whether some inode has extended attributes (an xattr body).
pub(crate) fn validate(bytes: &[u8], sb: &mut Sb, scratch: &mut [u8]) -> Result<bool, ParseError> {
    let need = scratch_len(sb).ok_or(AbiError::Truncated { what: "scratch" })?;
    let scratch = scratch
        .get_mut(..need)
        .ok_or(AbiError::Truncated { what: "scratch" })?;
    scratch.fill(0);
    let (stack, bits) = scratch.split_at_mut(STACK_BYTES);
    let mut s = Scratch {
        stack,
        depth: 0,
        bits,
        xattrs: false,
    };
    if let Some(packed) = sb.packed_nid {
        let i = validate_leaf(bytes, sb, &mut s, packed)?;
        if i.file_type() != mode::S_IFREG {
            return Err(at(packed)(AbiError::BadField {
                field: "packed inode mode",
                value: i.mode.into(),
            }));
        }
        sb.packed_size = i.size;
    }
    let sb = &*sb;
    let root = sb.root_nid;
    validate_dir(bytes, sb, &mut s, root, root)?;
    s.push(root).map_err(at(root))?;
    while let Some(depth) = s.depth.checked_sub(1) {
        let (nid, cookie) = s
            .frame(depth)
            .ok_or(AbiError::Truncated { what: "scratch" })?;
        let dir = Inode::read(bytes, sb, nid)
            .and_then(|i| Dir::of(bytes, sb, i))
            .map_err(at(nid))?;
        let mut next = None;
        for e in dir.entries_from(bytes, sb, cookie) {
            let e = e.map_err(at(nid))?;
            if e.file_type == erofs::ft::DIR && e.name != b"." && e.name != b".." {
                next = Some(e);
                break;
            }
        }
        match next {
            Some(e) => {
                s.set_cookie(depth, e.next_cookie);
                if s.is_head(e.nid) {
                    return Err(at(e.nid)(AbiError::BadField {
                        field: "directory reachable twice",
                        value: e.nid,
                    }));
                }
                validate_dir(bytes, sb, &mut s, e.nid, nid)?;
                s.push(e.nid).map_err(at(e.nid))?;
            }
            None => s.depth = depth,
        }
    }
    Ok(s.xattrs)
}

/// Checks the xattr body and the data of a non-directory inode and claims its bytes.
fn validate_leaf(
    bytes: &[u8],
    sb: &Sb,
    s: &mut Scratch<'_>,
    nid: u64,
) -> Result<Inode, ParseError> {
    let i = Inode::read(bytes, sb, nid).map_err(at(nid))?;
    check_leaf(bytes, sb, s, &i).map_err(at(nid))?;
    Ok(i)
}

fn check_leaf(bytes: &[u8], sb: &Sb, s: &mut Scratch<'_>, i: &Inode) -> Result<(), AbiError> {
    if let Some(body) = Body::of(bytes, i)? {
        body.validate(bytes, sb)?;
        s.xattrs = true;
    }
    let end = match i.file_type() {
        mode::S_IFDIR => {
            return Err(AbiError::BadField {
                field: "directory as a leaf",
                value: i.nid,
            });
        }
        mode::S_IFREG | mode::S_IFLNK if i.is_compressed() => {
            let z = ZMap::of(bytes, sb, i)?;
            z.validate(bytes, sb, i.size)?;
            z.end(i).ok_or(AbiError::Truncated {
                what: "map records",
            })?
        }
        ty @ (mode::S_IFREG | mode::S_IFLNK) => {
            let flat = FlatLayout::of(bytes, sb, i)?;
            if ty == mode::S_IFLNK {
                let (head, tail) = flat.pieces(bytes, i).ok_or(AbiError::Truncated {
                    what: "symlink target",
                })?;
                if head.iter().chain(tail).any(|&b| b == 0) {
                    return Err(AbiError::BadField {
                        field: "symlink target with NUL",
                        value: i.size,
                    });
                }
            }
            inline_end(i, &flat)
        }
        // Devices, FIFOs and sockets have no data (`Inode::read` checked their size is 0).
        _ => i.body_end,
    };
    s.claim(sb, i, end)
}

/// End of an uncompressed inode's metadata: its inline tail, if any.
fn inline_end(i: &Inode, flat: &FlatLayout) -> u64 {
    i.body_end
        .saturating_add(i.size.saturating_sub(flat.head_len))
}

/// Checks a directory inode and all its entries (names, order, `.` and `..`, types), validating
/// the non-directory children on the way. Subdirectories are validated when the walk enters them.
/// Errors name the directory, or the child whose own checks failed.
fn validate_dir(
    bytes: &[u8],
    sb: &Sb,
    s: &mut Scratch<'_>,
    nid: u64,
    parent: u64,
) -> Result<(), ParseError> {
    let here = at(nid);
    let i = Inode::read(bytes, sb, nid).map_err(&here)?;
    if !i.is_dir() {
        let field = "directory inode mode";
        return Err(here(AbiError::BadField {
            field,
            value: i.mode.into(),
        }));
    }
    if let Some(body) = Body::of(bytes, &i).map_err(&here)? {
        body.validate(bytes, sb).map_err(&here)?;
        s.xattrs = true;
    }
    let dir = Dir::of(bytes, sb, i).map_err(&here)?;
    s.claim(sb, &i, inline_end(&i, &dir.flat)).map_err(&here)?;
    let (mut dot, mut dotdot) = (false, false);
    let mut prev: Option<&[u8]> = None;
    for (index, e) in (0u64..).zip(dir.entries_from(bytes, sb, 0)) {
        let e = e.map_err(&here)?;
        if prev.is_some_and(|p| p >= e.name) {
            return Err(here(AbiError::Unsorted {
                table: "directory entries",
                index,
            }));
        }
        prev = Some(e.name);
        let bad = |field: &'static str, value: u64| Err(here(AbiError::BadField { field, value }));
        if !(erofs::ft::REG_FILE..=erofs::ft::SYMLINK).contains(&e.file_type) {
            return bad("dirent file type", e.file_type.into());
        }
        match e.name {
            b"." | b".." => {
                let (want, seen, field) = if e.name == b"." {
                    (nid, &mut dot, "dirent `.`")
                } else {
                    (parent, &mut dotdot, "dirent `..`")
                };
                if e.nid != want {
                    return bad(field, e.nid);
                }
                if e.file_type != erofs::ft::DIR {
                    return bad("dirent file type", e.nid);
                }
                *seen = true;
            }
            _ if e.nid == nid || e.nid == sb.root_nid => {
                return bad("dirent naming its own directory or the root", e.nid);
            }
            _ => {
                let child = if e.file_type == erofs::ft::DIR || s.is_head(e.nid) {
                    Inode::read(bytes, sb, e.nid).map_err(at(e.nid))?
                } else {
                    validate_leaf(bytes, sb, s, e.nid)?
                };
                if ftype_of_mode(child.mode) != e.file_type {
                    return bad("dirent file type", e.nid);
                }
            }
        }
    }
    if !dot || !dotdot {
        return Err(here(AbiError::BadField {
            field: "directory without `.` or `..`",
            value: nid,
        }));
    }
    Ok(())
}
