//! Directory blocks: `.`, `..` and the entries in byte order (the kernel binary-searches), each
//! block holding its dirents followed by their names, no name crossing a block
//! (docs/descriptor.md §3.4).

use chunkfs_kernel_abi::Pod;
use chunkfs_kernel_abi::erofs::{Dirent, ft};

use super::ctx::Ctx;
use crate::model::{DirEntry, Inode, InodeKind, mode};

const DIRENT: usize = core::mem::size_of::<Dirent>();

#[derive(Clone, Copy)]
enum Target {
    Dot,
    DotDot,
    Inode(u32),
}

/// The entries with `.` and `..` merged in at their byte-order places.
fn merged(entries: &[DirEntry]) -> impl Iterator<Item = (&[u8], Target)> {
    let dots: [(&[u8], Target); 2] = [(b".", Target::Dot), (b"..", Target::DotDot)];
    let mut dots = dots.into_iter().peekable();
    let mut rest = entries
        .iter()
        .map(|e| (e.name.as_slice(), Target::Inode(e.inode)))
        .peekable();
    std::iter::from_fn(move || match (dots.peek(), rest.peek()) {
        (Some(d), Some(r)) if d.0 < r.0 => dots.next(),
        (Some(_), None) => dots.next(),
        _ => rest.next(),
    })
}

/// Byte size of the directory: full blocks, then the used part of the last block.
pub(super) fn size(entries: &[DirEntry], blksz: u64) -> u64 {
    let (mut blocks, mut used) = (0u64, 0u64);
    for (name, _) in merged(entries) {
        let need = (DIRENT + name.len()) as u64;
        if used + need > blksz {
            blocks += 1;
            used = 0;
        }
        used += need;
    }
    blocks * blksz + used
}

fn file_type(ino: &Inode) -> u8 {
    match ino.kind {
        InodeKind::Directory(_) => ft::DIR,
        InodeKind::File(_) => ft::REG_FILE,
        InodeKind::Symlink(_) => ft::SYMLINK,
        InodeKind::Device { .. } if ino.file_type() == mode::S_IFBLK => ft::BLKDEV,
        InodeKind::Device { .. } => ft::CHRDEV,
        InodeKind::Special if ino.file_type() == mode::S_IFSOCK => ft::SOCK,
        InodeKind::Special => ft::FIFO,
    }
}

/// Writes directory `dir`'s blocks: all but an inline last block go to `meta` from block
/// `first_block` of the area; an inline last block goes to `inline` (its exact length).
pub(super) fn encode(
    ctx: &Ctx,
    dir: usize,
    entries: &[DirEntry],
    size: u64,
    meta: &mut [u8],
    first_block: u64,
    inline: &mut [u8],
) {
    let blksz = ctx.geo.blksz as usize;
    let nblocks = size.div_ceil(ctx.geo.blksz) as usize;
    let list: Vec<(&[u8], Target)> = merged(entries).collect();
    let mut start = 0usize;
    for b in 0..nblocks {
        // The same greedy split as `size`.
        let mut end = start;
        let mut used = 0usize;
        while end < list.len() && used + DIRENT + list[end].0.len() <= blksz {
            used += DIRENT + list[end].0.len();
            end += 1;
        }
        let block: &mut [u8] = if b + 1 == nblocks && !inline.is_empty() {
            inline
        } else {
            let at = (first_block as usize + b) * blksz;
            &mut meta[at..at + blksz]
        };
        let mut nameoff = (end - start) * DIRENT;
        for (k, &(name, target)) in list[start..end].iter().enumerate() {
            let (nid, ty) = match target {
                Target::Dot => (ctx.nids[dir], ft::DIR),
                Target::DotDot => (ctx.nids[ctx.parents[dir] as usize], ft::DIR),
                Target::Inode(c) => (
                    ctx.nids[c as usize],
                    file_type(&ctx.image.inodes[c as usize]),
                ),
            };
            let mut d = Dirent::zeroed();
            d.nid = nid.into();
            // Below the block size (at most 4096), so it fits 16 bits.
            d.nameoff = (nameoff as u16).into();
            d.file_type = ty;
            block[k * DIRENT..(k + 1) * DIRENT].copy_from_slice(d.as_bytes());
            block[nameoff..nameoff + name.len()].copy_from_slice(name);
            nameoff += name.len();
        }
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str) -> DirEntry {
        DirEntry {
            name: name.as_bytes().to_vec(),
            inode: 1,
        }
    }

    #[test]
    fn dots_merge_in_byte_order() {
        let entries = vec![e("-x"), e(".a"), e("a")];
        let names: Vec<&[u8]> = merged(&entries).map(|(n, _)| n).collect();
        assert_eq!(names, vec![&b"-x"[..], b".", b"..", b".a", b"a"]);
    }

    #[test]
    fn size_splits_blocks_without_crossing() {
        // 12 + 1, 12 + 2, then 40 entries of 12 + 20 = 32 bytes: 15 per 512-byte block after
        // the dots (27 + 15 * 32 = 507), then 16 per block.
        let entries: Vec<DirEntry> = (0..40).map(|i| e(&format!("{i:020}"))).collect();
        let s = size(&entries, 512);
        assert_eq!(s, 2 * 512 + 9 * 32);
    }
}
