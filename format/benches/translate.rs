//! Translation time for a synthetic image of 100,000 inodes (docs/descriptor.md §7).
//!
//! `cargo bench -p chunkfs-format --bench translate` prints the median of several runs for each
//! extent layout. The target is well under 100 ms.

use std::time::{Duration, Instant};

use chunkfs_format::digest::Digest;
use chunkfs_format::model::{
    ChunkInfo, DirEntry, Extent, FileData, FileLayout, Image, Inode, InodeKind, Xattr, mode,
};
use chunkfs_format::translate::{ChunkLocation, DeviceLayout, ExtentLayout, translate};

/// 2,000 directories of 49 entries: 60 % small packed files, 30 % chunked files of 1-4 chunks
/// (some sparse), 10 % symlinks; some xattrs, a spread of mtimes with nanoseconds.
fn synthetic(inodes: usize) -> (Image, Vec<u32>) {
    let per_dir = 49usize;
    let dirs = inodes / (per_dir + 1);
    let mut image = Image::default();
    let mut chunk_stored = Vec::new();
    let mut rng = chunkfs_kernel_abi::testkit::XorShift64::new(0x1234_5678_9abc_def0);
    let mut rnd = move || rng.next_u64();
    let base = |r: u64, kind: InodeKind, m: u32| Inode {
        mode: m,
        uid: (r % 3) as u32 * 1000,
        gid: 0,
        mtime_sec: 1_700_000_000 + (r % 1_000_000) as i64,
        mtime_nsec: if r % 4 == 0 {
            0
        } else {
            (r % 1_000_000_000) as u32
        },
        xattrs: if r % 17 == 0 {
            vec![Xattr {
                name: b"security.selinux".to_vec(),
                value: b"system_u:object_r:usr_t:s0\0".to_vec(),
            }]
        } else {
            vec![]
        },
        kind,
    };
    image
        .inodes
        .push(base(1, InodeKind::Directory(vec![]), mode::S_IFDIR | 0o755));
    let mut packed_len = 0u64;
    let mut root_entries = Vec::new();
    for d in 0..dirs {
        let dir_idx = image.inodes.len() as u32;
        root_entries.push(DirEntry {
            name: format!("dir{d:05}").into_bytes(),
            inode: dir_idx,
        });
        image.inodes.push(base(
            rnd(),
            InodeKind::Directory(vec![]),
            mode::S_IFDIR | 0o755,
        ));
        let mut entries = Vec::with_capacity(per_dir);
        for f in 0..per_dir {
            let r = rnd();
            let idx = image.inodes.len() as u32;
            let kind = match r % 10 {
                0..=5 => {
                    let size = 1 + r % 8000;
                    let file = InodeKind::File(FileData {
                        size,
                        layout: FileLayout::Packed(packed_len),
                    });
                    packed_len += size;
                    (file, mode::S_IFREG | 0o644)
                }
                6..=8 => {
                    let n = 1 + (r >> 8) % 4;
                    let mut extents = Vec::new();
                    let mut at = 0u64;
                    for _ in 0..n {
                        let size = 16_384 + (rnd() % 200_000) as u32;
                        let c = image.chunks.len() as u32;
                        image.chunks.push(ChunkInfo {
                            digest: Digest([c as u8; 32]),
                            size,
                        });
                        chunk_stored.push(size / 3 + 100);
                        extents.push(Extent {
                            offset: at,
                            chunk: c,
                        });
                        at += u64::from(size) + if r % 50 == 0 { 1 << 20 } else { 0 };
                    }
                    (
                        InodeKind::File(FileData {
                            size: at,
                            layout: FileLayout::Extents(extents),
                        }),
                        mode::S_IFREG | 0o755,
                    )
                }
                _ => (
                    InodeKind::Symlink(
                        format!("../dir{:05}/file{f:03}", (r >> 20) as usize % dirs).into_bytes(),
                    ),
                    mode::S_IFLNK | 0o777,
                ),
            };
            image.inodes.push(base(r, kind.0, kind.1));
            entries.push(DirEntry {
                name: format!("file{f:03}").into_bytes(),
                inode: idx,
            });
        }
        image.inodes[dir_idx as usize].kind = InodeKind::Directory(entries);
    }
    image.inodes[0].kind = InodeKind::Directory(root_entries);
    // The packed stream: chunks of 64 KiB over `packed_len` bytes.
    let mut at = 0u64;
    while at < packed_len {
        let size = (packed_len - at).min(65_536) as u32;
        let c = image.chunks.len() as u32;
        image.chunks.push(ChunkInfo {
            digest: Digest([c as u8; 32]),
            size,
        });
        chunk_stored.push(size / 4 + 100);
        image.packed_stream.push(c);
        at += u64::from(size);
    }
    image.validate().expect("synthetic image is valid");
    (image, chunk_stored)
}

fn locations(stored: &[u32], align: u64) -> (Vec<ChunkLocation>, u64) {
    let mut at = 4096u64;
    let locs = stored
        .iter()
        .map(|&len| {
            let off = (at + u64::from(len)).next_multiple_of(align) - u64::from(len);
            at = off + u64::from(len);
            ChunkLocation {
                device: 0,
                offset: off,
                stored_len: len,
            }
        })
        .collect();
    (locs, at.next_multiple_of(4096))
}

fn main() {
    let (image, stored) = synthetic(100_000);
    println!(
        "synthetic image: {} inodes, {} chunks, {} packed chunks",
        image.inodes.len(),
        image.chunks.len(),
        image.packed_stream.len()
    );
    for (name, extents, bits, align) in [
        (
            "48-bit extents, 4 KiB blocks",
            ExtentLayout::Bit48,
            12u8,
            1u64,
        ),
        ("clusters, 512 B blocks", ExtentLayout::Clusters, 9, 512),
    ] {
        let (locs, end) = locations(&stored, align);
        let layout = DeviceLayout {
            block_size_bits: bits,
            extents,
            meta_offset: end,
            devices: vec![],
        };
        let mut times: Vec<Duration> = Vec::new();
        let mut meta = 0;
        for _ in 0..9 {
            let t = Instant::now();
            let d = translate(&image, &locs, &layout).expect("translate");
            let sb = d.superblock_area(d.min_primary_len()).expect("superblock");
            times.push(t.elapsed());
            meta = d.meta_area().len() + sb.len();
            std::hint::black_box(&d);
        }
        times.sort();
        println!(
            "{name}: median {:.1} ms (min {:.1} ms) for {} inodes; metadata {} bytes",
            ms(times[times.len() / 2]),
            ms(times[0]),
            image.inodes.len(),
            meta
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
