//! Statistics of an image: what it holds, how much dedup and compression saved.

use serde::Serialize;

use crate::digest::Digest;
use crate::model::{FileLayout, Image, InodeKind, mode};

/// How many of the largest files [`Stats`] lists.
pub const LARGEST: usize = 10;

/// What an image holds. All byte counts are bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    /// `sha256:<hex>` of the metadata blob.
    pub metadata_digest: String,
    /// Size of the image file, if it is one file.
    pub image_bytes: Option<u64>,
    /// Regular files (inodes, not names).
    pub files: u64,
    /// Directories, the root included.
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Character and block devices.
    pub devices: u64,
    /// FIFOs and sockets.
    pub special: u64,
    /// Names beyond the first of inodes with several names.
    pub extra_hard_links: u64,
    /// Sum of regular file sizes (holes included), each inode once.
    pub file_bytes: u64,
    /// File bytes that are data, not holes (what would be stored without dedup).
    pub data_bytes: u64,
    /// Files stored in the packed stream.
    pub packed_files: u64,
    /// Length of the packed stream.
    pub packed_stream_bytes: u64,
    /// References to chunks (file extents plus packed stream positions).
    pub chunk_refs: u64,
    /// Distinct chunks.
    pub unique_chunks: u64,
    /// Uncompressed bytes of the distinct chunks.
    pub unique_bytes: u64,
    /// Bytes of the stored chunk frames, if known.
    pub stored_bytes: Option<u64>,
    /// `unique_bytes / stored_bytes`.
    pub compression_ratio: Option<f64>,
    /// `data_bytes - unique_bytes`: what storing identical data once saved.
    pub dedup_savings_bytes: u64,
    /// The largest files by size, largest first (paths from the root, first name).
    pub largest_files: Vec<LargeFile>,
    /// Chunks in the prefetch list (docs/format.md §3.6); 0 without one.
    pub prefetch_chunks: u64,
    /// Uncompressed bytes of the prefetch list's chunks.
    pub prefetch_bytes: u64,
    /// Bytes of the stored frames of the prefetch list's chunks, if known: what a lazy reader
    /// fetches for it.
    pub prefetch_stored_bytes: Option<u64>,
}

/// One entry of [`Stats::largest_files`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LargeFile {
    /// Path from the root, `/`-separated; non-UTF-8 bytes replaced.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// Computes the statistics of a validated image. `frame_lens` are the stored lengths of the
/// chunk frames, where known; `image_bytes` the size of the image file.
pub fn stats(
    image: &Image,
    metadata_digest: &Digest,
    frame_lens: Option<&[u32]>,
    image_bytes: Option<u64>,
) -> Stats {
    let mut s = Stats {
        metadata_digest: metadata_digest.to_oci(),
        image_bytes,
        files: 0,
        directories: 0,
        symlinks: 0,
        devices: 0,
        special: 0,
        extra_hard_links: 0,
        file_bytes: 0,
        data_bytes: 0,
        packed_files: 0,
        packed_stream_bytes: image.packed_stream_len(),
        chunk_refs: image.packed_stream.len() as u64,
        unique_chunks: image.chunks.len() as u64,
        unique_bytes: image.chunks.iter().map(|c| u64::from(c.size)).sum(),
        stored_bytes: frame_lens.map(|l| l.iter().map(|&n| u64::from(n)).sum()),
        compression_ratio: None,
        dedup_savings_bytes: 0,
        largest_files: Vec::new(),
        prefetch_chunks: image.prefetch.len() as u64,
        prefetch_bytes: image
            .prefetch
            .iter()
            .filter_map(|&c| image.chunks.get(c as usize))
            .map(|c| u64::from(c.size))
            .sum(),
        prefetch_stored_bytes: frame_lens.map(|l| {
            image
                .prefetch
                .iter()
                .filter_map(|&c| l.get(c as usize))
                .map(|&n| u64::from(n))
                .sum()
        }),
    };
    let mut largest: Vec<(u64, u32)> = Vec::new();
    for (i, inode) in image.inodes.iter().enumerate() {
        match &inode.kind {
            InodeKind::Directory(_) => s.directories += 1,
            InodeKind::File(f) => {
                s.files += 1;
                s.file_bytes += f.size;
                match &f.layout {
                    FileLayout::Packed(_) => {
                        s.packed_files += 1;
                        s.data_bytes += f.size;
                    }
                    FileLayout::Extents(xs) => {
                        s.chunk_refs += xs.len() as u64;
                        s.data_bytes += xs
                            .iter()
                            .map(|x| u64::from(image.chunks[x.chunk as usize].size))
                            .sum::<u64>();
                    }
                }
                largest.push((f.size, i as u32));
            }
            InodeKind::Symlink(_) => s.symlinks += 1,
            InodeKind::Device { .. } => s.devices += 1,
            InodeKind::Special => s.special += 1,
        }
    }
    let links = image.link_counts();
    s.extra_hard_links = image
        .inodes
        .iter()
        .zip(&links)
        .filter(|(n, _)| n.file_type() != mode::S_IFDIR)
        .map(|(_, &l)| u64::from(l.saturating_sub(1)))
        .sum();
    s.dedup_savings_bytes = s.data_bytes.saturating_sub(s.unique_bytes);
    s.compression_ratio = s
        .stored_bytes
        .filter(|&b| b > 0)
        .map(|b| s.unique_bytes as f64 / b as f64);
    largest.sort_unstable_by(|a, b| b.cmp(a));
    largest.truncate(LARGEST);
    let paths = first_paths(image, largest.iter().map(|&(_, i)| i));
    s.largest_files = largest
        .iter()
        .map(|&(size, i)| LargeFile {
            path: paths.get(&i).cloned().unwrap_or_default(),
            size,
        })
        .collect();
    s
}

/// Paths of the first names of `wanted` inodes, by a depth-first walk in name order (the order
/// that numbers inodes, docs/format.md §3.2).
fn first_paths(
    image: &Image,
    wanted: impl Iterator<Item = u32>,
) -> std::collections::HashMap<u32, String> {
    let mut want: std::collections::HashSet<u32> = wanted.collect();
    let mut out = std::collections::HashMap::new();
    // (directory, its path, next entry)
    let mut stack: Vec<(u32, String, usize)> = vec![(0, String::new(), 0)];
    while let Some((dir, path, next)) = stack.last_mut() {
        let InodeKind::Directory(entries) = &image.inodes[*dir as usize].kind else {
            break;
        };
        let Some(e) = entries.get(*next) else {
            stack.pop();
            continue;
        };
        *next += 1;
        let child = format!("{path}/{}", String::from_utf8_lossy(&e.name));
        if image.inodes[e.inode as usize].is_dir() {
            stack.push((e.inode, child, 0));
        } else if want.remove(&e.inode) {
            out.insert(e.inode, child);
            if want.is_empty() {
                break;
            }
        }
    }
    out
}

/// A complete, deterministic text rendering of an image's metadata, one item per line: the
/// chunks, the packed stream, and every inode with all its fields. Used by golden tests and
/// for debugging; two images with equal dumps have equal metadata.
pub fn dump(image: &Image) -> String {
    use std::fmt::Write;
    let bytes = |b: &[u8]| b.escape_ascii().to_string();
    let mut o = String::new();
    let _ = writeln!(o, "chunks {}", image.chunks.len());
    for (i, c) in image.chunks.iter().enumerate() {
        let _ = writeln!(o, "  chunk {i} {} size {}", c.digest, c.size);
    }
    let _ = writeln!(o, "packed stream {:?}", image.packed_stream);
    // Only with a list, so dumps of images without one read as they always did.
    if !image.prefetch.is_empty() {
        let _ = writeln!(o, "prefetch {:?}", image.prefetch);
    }
    let _ = writeln!(o, "inodes {}", image.inodes.len());
    for (i, n) in image.inodes.iter().enumerate() {
        let _ = write!(
            o,
            "  inode {i} mode {:o} uid {} gid {} mtime {}.{:09}",
            n.mode, n.uid, n.gid, n.mtime_sec, n.mtime_nsec
        );
        match &n.kind {
            InodeKind::Directory(entries) => {
                let _ = writeln!(o, " directory {}", entries.len());
                for e in entries {
                    let _ = writeln!(o, "    entry \"{}\" -> {}", bytes(&e.name), e.inode);
                }
            }
            InodeKind::File(f) => match &f.layout {
                FileLayout::Packed(off) => {
                    let _ = writeln!(o, " file size {} packed at {off}", f.size);
                }
                FileLayout::Extents(xs) => {
                    let list: Vec<String> = xs
                        .iter()
                        .map(|x| format!("{}:{}", x.offset, x.chunk))
                        .collect();
                    let _ = writeln!(o, " file size {} extents [{}]", f.size, list.join(" "));
                }
            },
            InodeKind::Symlink(t) => {
                let _ = writeln!(o, " symlink \"{}\"", bytes(t));
            }
            InodeKind::Device { major, minor } => {
                let _ = writeln!(o, " device {major}:{minor}");
            }
            InodeKind::Special => {
                let _ = writeln!(o, " special");
            }
        }
        for x in &n.xattrs {
            let _ = writeln!(
                o,
                "    xattr \"{}\" = \"{}\"",
                bytes(&x.name),
                bytes(&x.value)
            );
        }
    }
    o
}
