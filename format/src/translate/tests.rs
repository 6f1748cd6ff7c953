//! Unit tests of the whole translation: shapes, determinism, refusals. The kernel proof (real
//! mounts) lives in `tests/tests/kernel_erofs.rs`.

use chunkfs_kernel_abi::Pod;
use chunkfs_kernel_abi::erofs::{self, Dirent, InodeCompact, InodeExtended, SuperBlock};

use super::*;
use crate::digest::Digest;
use crate::model::{
    ChunkInfo, DirEntry, Extent, FileData, FileLayout, Image, Inode, InodeKind, Xattr, mode,
};

fn inode(m: u32, kind: InodeKind) -> Inode {
    Inode {
        mode: m,
        uid: 0,
        gid: 0,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 0,
        xattrs: vec![],
        kind,
    }
}

fn entry(name: &str, inode: u32) -> DirEntry {
    DirEntry {
        name: name.as_bytes().to_vec(),
        inode,
    }
}

/// root { a: file of 2 chunks with a hole between, d/ { s -> "target", small: packed } , h: a again }
fn sample() -> Image {
    Image {
        chunks: vec![
            ChunkInfo {
                digest: Digest::of(b"0"),
                size: 40_000,
            },
            ChunkInfo {
                digest: Digest::of(b"1"),
                size: 30_000,
            },
            ChunkInfo {
                digest: Digest::of(b"2"),
                size: 5000,
            },
        ],
        packed_stream: vec![2],
        inodes: vec![
            inode(
                mode::S_IFDIR | 0o755,
                InodeKind::Directory(vec![entry("a", 1), entry("d", 2), entry("h", 1)]),
            ),
            inode(
                mode::S_IFREG | 0o644,
                InodeKind::File(FileData {
                    size: 200_000,
                    layout: FileLayout::Extents(vec![
                        Extent {
                            offset: 0,
                            chunk: 0,
                        },
                        Extent {
                            offset: 100_000,
                            chunk: 1,
                        },
                    ]),
                }),
            ),
            inode(
                mode::S_IFDIR | 0o700,
                InodeKind::Directory(vec![entry("s", 3), entry("small", 4)]),
            ),
            inode(
                mode::S_IFLNK | 0o777,
                InodeKind::Symlink(b"target".to_vec()),
            ),
            Inode {
                uid: 100_000,
                mtime_nsec: 5,
                xattrs: vec![Xattr {
                    name: b"user.k".to_vec(),
                    value: b"v".to_vec(),
                }],
                ..inode(
                    mode::S_IFREG | 0o600,
                    InodeKind::File(FileData {
                        size: 100,
                        layout: FileLayout::Packed(10),
                    }),
                )
            },
        ],
        prefetch: Vec::new(),
    }
}

fn bit48() -> DeviceLayout {
    DeviceLayout {
        block_size_bits: 12,
        extents: ExtentLayout::Bit48,
        meta_offset: 1 << 20,
        devices: vec![],
    }
}

fn locations(aligned: bool) -> Vec<ChunkLocation> {
    // Frames back to back from 4096, or each ending on a 512-byte boundary.
    let lens = [20_001u32, 15_000, 3000];
    let mut at = 4096u64;
    lens.iter()
        .map(|&l| {
            let off = if aligned {
                (at + u64::from(l)).next_multiple_of(512) - u64::from(l)
            } else {
                at
            };
            at = off + u64::from(l);
            ChunkLocation {
                device: 0,
                offset: off,
                stored_len: l,
            }
        })
        .collect()
}

fn read_sb(d: &BuiltDescriptor) -> SuperBlock {
    let area = d.superblock_area(d.min_primary_len()).unwrap();
    let mut sb = SuperBlock::zeroed();
    let n = 128;
    let mut bytes = sb.as_bytes().to_vec();
    bytes[..n].copy_from_slice(&area[..n]);
    sb = SuperBlock::read_at(&bytes, 0).unwrap();
    sb
}

#[test]
fn bit48_descriptor_has_expected_shape() {
    let img = sample();
    let d = translate(&img, &locations(false), &bit48()).unwrap();
    let sb = read_sb(&d);
    assert_eq!(sb.magic.get(), erofs::SUPER_MAGIC);
    assert_eq!(sb.blkszbits, 12);
    assert_eq!(
        sb.feature_incompat.get(),
        erofs::FEATURE_INCOMPAT_48BIT
            | erofs::FEATURE_INCOMPAT_COMPR_CFGS
            | erofs::FEATURE_INCOMPAT_FRAGMENTS
    );
    assert_eq!(sb.meta_blkaddr.get(), 256);
    let root = sb.rootnid_8b.get();
    assert_eq!(root, 1, "slot 0 stays empty, the root comes first");
    assert_eq!(d.stats().root_nid, root);
    assert_ne!(sb.packed_nid.get(), 0);
    assert_eq!(sb.inos.get(), 5);
    // The root is a compact FLAT_INLINE directory whose inline dirents start with "." -> itself.
    let meta = d.meta_area();
    let at = root as usize * 32;
    let c = InodeCompact::read_at(meta, at).unwrap();
    assert_eq!(c.format.get(), erofs::INODE_FLAT_INLINE << 1);
    assert_eq!(u32::from(c.mode.get()), mode::S_IFDIR | 0o755);
    assert_eq!(c.nb.get(), 3, "root links: 2 + subdirectory d");
    let de = Dirent::read_at(meta, at + 32).unwrap();
    assert_eq!(de.nid.get(), root);
    assert_eq!(de.nameoff.get(), 5 * 12);
    // The packed file is extended (32-bit uid, nanoseconds) with a fragment map header.
    let stats = d.stats();
    assert_eq!(stats.fragments, 1);
    assert_eq!(stats.inodes_extended, 1);
    assert_eq!(
        stats.extent_records,
        2 + 2 + 1,
        "a: chunk, hole, chunk, hole; packed: one chunk"
    );
}

#[test]
fn output_is_deterministic_and_uuid_follows_content() {
    let img = sample();
    let a = translate(&img, &locations(false), &bit48()).unwrap();
    let b = translate(&img, &locations(false), &bit48()).unwrap();
    assert_eq!(a.meta_area(), b.meta_area());
    assert_eq!(
        a.superblock_area(1 << 21).unwrap(),
        b.superblock_area(1 << 21).unwrap()
    );
    let mut other = img.clone();
    other.inodes[3].kind = InodeKind::Symlink(b"elsewhere".to_vec());
    let c = translate(&other, &locations(false), &bit48()).unwrap();
    assert_ne!(read_sb(&a).uuid, read_sb(&c).uuid);
}

#[test]
fn extended_inode_keeps_what_compact_would_lose() {
    let img = sample();
    let d = translate(&img, &locations(false), &bit48()).unwrap();
    // Find the extended inode: the packed small file (uid 100000, 5 ns).
    let meta = d.meta_area();
    let found = (0..meta.len() / 32)
        .filter_map(|slot| InodeExtended::read_at(meta, slot * 32))
        .find(|e| e.format.get() & 1 == 1 && e.uid.get() == 100_000);
    let e = found.expect("extended inode present");
    assert_eq!(e.mtime_nsec.get(), 5);
    assert_eq!(e.mtime.get(), 1_700_000_000);
    assert_eq!(e.size.get(), 100);
    // 12-byte header + one 8-byte entry: icount = 1 + 8 / 4.
    assert_eq!(e.xattr_icount.get(), 3);
}

#[test]
fn clusters_layout_uses_zero_frame_and_block_aligned_frames() {
    let img = sample();
    let layout = DeviceLayout {
        block_size_bits: 9,
        extents: ExtentLayout::Clusters,
        meta_offset: 1 << 20,
        devices: vec![],
    };
    let d = translate(&img, &locations(true), &layout).unwrap();
    let sb = read_sb(&d);
    assert_eq!(
        sb.feature_incompat.get(),
        erofs::FEATURE_INCOMPAT_ZERO_PADDING
            | erofs::FEATURE_INCOMPAT_COMPR_CFGS
            | erofs::FEATURE_INCOMPAT_FRAGMENTS
    );
    assert_eq!(sb.rootnid_2b_or_blocks_hi.get() as u64, d.stats().root_nid);
    assert_eq!(d.stats().root_nid, 512 / 32, "block 0 holds the zero frame");
    assert!(d.stats().lcluster_indexes > 0);
    // Frames not ending on a block boundary are refused.
    assert!(matches!(
        translate(&img, &locations(false), &layout),
        Err(Error::Chunk { .. })
    ));
}

#[test]
fn refusals_are_typed() {
    let img = sample();
    assert!(matches!(
        translate(&img, &locations(false)[..2], &bit48()),
        Err(Error::ChunkCount {
            expected: 3,
            got: 2
        })
    ));
    let mut bad_ns = img.clone();
    bad_ns.inodes[4].xattrs[0].name = b"system.nfs4_acl".to_vec();
    assert!(matches!(
        translate(&bad_ns, &locations(false), &bit48()),
        Err(Error::Inode { inode: 4, .. })
    ));
    let mut dev = img.clone();
    dev.inodes[3] = inode(
        mode::S_IFCHR | 0o600,
        InodeKind::Device {
            major: 5000,
            minor: 1,
        },
    );
    assert!(matches!(
        translate(&dev, &locations(false), &bit48()),
        Err(Error::Inode { inode: 3, .. })
    ));
    let inside_head = DeviceLayout {
        meta_offset: 2048,
        ..bit48()
    };
    assert!(matches!(
        translate(&img, &locations(false), &inside_head),
        Err(Error::DeviceLayout(_))
    ));
    let mut locs = locations(false);
    locs[0].stored_len = 2 << 20;
    assert!(matches!(
        translate(&img, &locs, &bit48()),
        Err(Error::Chunk { chunk: 0, .. })
    ));
    let d = translate(&img, &locations(false), &bit48()).unwrap();
    assert!(matches!(
        d.superblock_area(d.min_primary_len() + 100),
        Err(Error::PrimaryLen { .. })
    ));
    assert!(matches!(
        d.superblock_area(4096),
        Err(Error::PrimaryLen { .. })
    ));
}

#[test]
fn extra_devices_get_disjoint_aligned_ranges() {
    let img = sample();
    let layout = DeviceLayout {
        devices: vec![
            ExtraDevice {
                tag: b"pack0".to_vec(),
                len: 1 << 20,
            },
            ExtraDevice {
                tag: b"pack1".to_vec(),
                len: 8192,
            },
        ],
        meta_offset: 4096,
        ..bit48()
    };
    let locs = vec![
        ChunkLocation {
            device: 1,
            offset: 0,
            stored_len: 20_001,
        },
        ChunkLocation {
            device: 2,
            offset: 0,
            stored_len: 5000,
        },
        ChunkLocation {
            device: 1,
            offset: 20_001,
            stored_len: 3000,
        },
    ];
    let d = translate(&img, &locs, &layout).unwrap();
    let b1 = d.device_base(1).unwrap();
    let b2 = d.device_base(2).unwrap();
    assert!(b1 >= d.min_primary_len() && b1 % (1 << 30) == 0);
    assert!(b2 >= b1 + (1 << 20));
    let area = d.superblock_area(d.min_primary_len()).unwrap();
    // Device table at byte 1280: slot 0's tag.
    assert_eq!(&area[1280 - 1024..1280 - 1024 + 5], b"pack0");
    let sb = read_sb(&d);
    assert_eq!(sb.extra_devices.get(), 2);
    assert_ne!(
        sb.feature_incompat.get() & erofs::FEATURE_INCOMPAT_DEVICE_TABLE,
        0
    );
    // A frame past its device's end is refused.
    let mut bad = locs.clone();
    bad[1].offset = 8000;
    assert!(matches!(
        translate(&img, &bad, &layout),
        Err(Error::Chunk { chunk: 1, .. })
    ));
}

#[test]
fn huge_sparse_file_is_refused_in_the_cluster_layout_without_allocating() {
    let mut img = sample();
    img.inodes[1].kind = InodeKind::File(FileData {
        size: 1 << 60,
        layout: FileLayout::Extents(vec![Extent {
            offset: 0,
            chunk: 0,
        }]),
    });
    let layout = DeviceLayout {
        block_size_bits: 9,
        extents: ExtentLayout::Clusters,
        meta_offset: 1 << 20,
        devices: vec![],
    };
    assert!(matches!(
        translate(&img, &locations(true), &layout),
        Err(Error::Inode { inode: 1, .. })
    ));
    // The 48-bit layout needs one record for the hole, whatever its length.
    let d = translate(&img, &locations(false), &bit48()).unwrap();
    assert_eq!(d.stats().extent_records, 2 + 1);
}
