//! A small image with real zstd chunk frames and digest tables, built with the kernel-abi testkit.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chunkfs_kernel_abi::digest_table::{self, DIGEST_FLAG_ZSTD, DigestEntry};
use chunkfs_kernel_abi::erofs::{self, compr};
use chunkfs_kernel_abi::parse::mode;
use chunkfs_kernel_abi::testkit::{BLK, Builder, CHUNKS, Data, Node};
use chunkfs_kernel_abi::{Le16, Le32, Le64, Pod};
use chunkfs_reader::{Config, DigestSource};
use sha2::{Digest, Sha256};

pub const ZSTD: u32 = (compr::ZSTD as u32 + 1) << erofs::Z_EXTENT_PLEN_FMT_BIT;
pub const PARTIAL: u32 = erofs::Z_EXTENT_PLEN_PARTIAL;

/// Deterministic test data: compressible but not trivial.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut r = chunkfs_kernel_abi::testkit::XorShift64::from_seed(seed);
    (0..len)
        .map(|i| {
            let x = r.next_u64();
            if i % 7 < 3 {
                b'a' + (i % 13) as u8
            } else {
                x as u8
            }
        })
        .collect()
}

pub fn frame(raw: &[u8]) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    c.include_checksum(true).unwrap();
    c.include_contentsize(true).unwrap();
    c.compress(raw).unwrap()
}

pub fn entry(offset: u64, device: u16, frame: &[u8], raw: &[u8]) -> DigestEntry {
    DigestEntry {
        offset: Le64::new(offset),
        device: Le16::new(device),
        flags: Le16::new(DIGEST_FLAG_ZSTD),
        stored_len: Le32::new(frame.len() as u32),
        raw_len: Le32::new(raw.len() as u32),
        reserved: Le32::new(0),
        reserved2: Le64::new(0),
        sha256: Sha256::digest(raw).into(),
    }
}

pub fn table(entries: &[DigestEntry]) -> Vec<u8> {
    let mut t = digest_table::header(entries.len() as u64)
        .as_bytes()
        .to_vec();
    for e in entries {
        t.extend_from_slice(e.as_bytes());
    }
    t
}

/// The test image and everything needed to check reads.
pub struct Image {
    pub dir: tempfile::TempDir,
    pub primary: PathBuf,
    pub pack: PathBuf,
    /// Expected content of each file by name.
    pub files: Vec<(&'static str, Vec<u8>)>,
    /// Digest entries of device 0 and of the pack (device 1, listed as device 0 like a pack blob).
    pub entries: Vec<DigestEntry>,
    pub pack_entries: Vec<DigestEntry>,
    /// Offsets of the frames of chunks a, b, c in the image and d in the pack.
    pub frames: Vec<(u64, usize)>,
    pub image: Vec<u8>,
}

impl Image {
    pub fn config(&self) -> Config {
        let mut c = Config::new(
            &self.primary,
            vec![self.pack.clone()],
            vec![
                DigestSource {
                    bytes: table(&self.entries),
                    device: Some(0),
                },
                DigestSource {
                    bytes: table(&self.pack_entries),
                    device: Some(1),
                },
            ],
        );
        c.cache_bytes = 64 << 20;
        c
    }

    pub fn expected(&self, name: &str) -> &[u8] {
        &self.files.iter().find(|(n, _)| *n == name).unwrap().1
    }
}

/// A POSIX ACL in the xattr format: user::rw-, user:1000:r--, group::r--, mask::r--, other::r--.
pub fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Builds the image in a temporary directory under `parent`:
/// - `big`: chunk A (200 KiB), a 1000-byte hole, then the first 500 bytes of chunk B (partial);
/// - `frag`: 3000 bytes at offset 1000 of the packed inode (whose data is chunk C);
/// - `onpack`: chunk D, stored on the extra device (a pack blob);
/// - `zeros`: an extent over a frame of zeros that has no digest (the descriptor's hole frame);
/// - `small`: inline text, served from the descriptor (unverifiable: refused);
/// - `link`, `null` (a character device), `sub/again` (a hard link of `frag`), xattrs in every
///   namespace (inline and shared) and a POSIX ACL on `big`.
pub fn build(parent: &Path) -> Image {
    let a = data(1, 200 * 1024);
    let b = data(2, 800);
    let c = data(3, 10_000);
    let d = data(4, 70_000);
    let (fa, fb, fc, fd) = (frame(&a), frame(&b), frame(&c), frame(&d));
    let fz = frame(&vec![0u8; 4096]);
    // Chunk region: A, B, C back to back (48-bit extents address bytes), then the zero frame.
    let mut chunks = Vec::new();
    let mut frames = Vec::new();
    for f in [&fa, &fb, &fc, &fz] {
        frames.push((CHUNKS + chunks.len() as u64, f.len()));
        chunks.extend_from_slice(f);
    }
    let entries = vec![
        entry(frames[0].0, 0, &fa, &a),
        entry(frames[1].0, 0, &fb, &b),
        entry(frames[2].0, 0, &fc, &c),
    ];
    let mut bld = Builder::new();
    bld.chunks = Some(chunks);
    let root = bld.add(Node::new(mode::S_IFDIR | 0o755, Data::Dir(vec![])));
    let ext = |recs: Vec<(u32, u64, u64)>, size: u64| Data::Extents {
        size,
        recsz: 16,
        recs,
        fragment: false,
    };
    let big_size = a.len() as u64 + 1000 + 500;
    let big = bld.add(Node::new(
        mode::S_IFREG | 0o644,
        ext(
            vec![
                (ZSTD | fa.len() as u32, frames[0].0, 0),
                (0, 0, a.len() as u64),
                (
                    ZSTD | PARTIAL | fb.len() as u32,
                    frames[1].0,
                    a.len() as u64 + 1000,
                ),
            ],
            big_size,
        ),
    ));
    let frag = bld.add(Node::new(
        mode::S_IFREG | 0o644,
        Data::Whole {
            size: 3000,
            off: 1000,
        },
    ));
    let packed = bld.add(Node::new(
        mode::S_IFREG | 0o644,
        ext(
            vec![(ZSTD | fc.len() as u32, frames[2].0, 0)],
            c.len() as u64,
        ),
    ));
    bld.packed = Some(packed);
    let small = bld.add(Node::new(
        mode::S_IFREG | 0o644,
        Data::Inline(b"inline".to_vec()),
    ));
    let zeros = bld.add(Node::new(
        mode::S_IFREG | 0o644,
        ext(
            vec![(ZSTD | PARTIAL | fz.len() as u32, frames[3].0, 0)],
            3000,
        ),
    ));
    // The pack: 4 KiB of padding, then frame D; device 1 follows the primary in unified space.
    let mut pack = vec![0u8; 4096];
    let d_off = pack.len() as u64;
    pack.extend_from_slice(&fd);
    pack.resize(pack.len().next_multiple_of(4096), 0);
    let onpack = bld.add(Node::new(mode::S_IFREG | 0o644, Data::None));
    // Attributes and xattrs for comparing with a kernel mount.
    {
        use erofs::xattr_index::*;
        let n = &mut bld.nodes[big];
        n.extended = true;
        (n.uid, n.gid, n.mtime, n.nsec) = (100_000, 200_000, 1_700_000_000, 123_456_789);
        n.xattrs = vec![
            (USER, b"color".to_vec(), b"red".to_vec()),
            (TRUSTED, b"t".to_vec(), b"x".to_vec()),
            (
                SECURITY,
                b"selinux".to_vec(),
                b"system_u:object_r:bin_t:s0\0".to_vec(),
            ),
            (POSIX_ACL_ACCESS, vec![], acl()),
        ];
        bld.shared
            .push((USER, b"shared".to_vec(), b"value".to_vec()));
        bld.nodes[frag].shared = vec![0];
        bld.nodes[onpack].shared = vec![0];
        bld.nodes[onpack].xattrs = vec![(USER, b"own".to_vec(), vec![7; 300])];
        bld.nodes[zeros].mtime = (-1_000_000i64) as u64;
        bld.nodes[zeros].extended = true;
    }
    let link = bld.add(Node::new(
        mode::S_IFLNK | 0o777,
        Data::Inline(b"big".to_vec()),
    ));
    let mut null = Node::new(mode::S_IFCHR | 0o666, Data::None);
    null.rdev = 0x0103;
    let null = bld.add(null);
    // `sub`: a hard link to `frag` and 1500 more names for `small`: a directory of many blocks.
    let mut sub_entries = vec![(b"again".to_vec(), frag)];
    sub_entries.extend((0..1500).map(|k| {
        (
            format!("name-{k:04}-{}", "z".repeat(k % 30)).into_bytes(),
            small,
        )
    }));
    let sub = bld.add(Node::new(mode::S_IFDIR | 0o750, Data::Dir(sub_entries)));
    bld.nodes[sub].nlink = 2;
    bld.nodes[root].nlink = 3;
    bld.nodes[frag].extended = true;
    bld.nodes[frag].nlink = 2;
    bld.nodes[root].data = Data::Dir(vec![
        (b"big".to_vec(), big),
        (b"frag".to_vec(), frag),
        (b"link".to_vec(), link),
        (b"null".to_vec(), null),
        (b"onpack".to_vec(), onpack),
        (b"small".to_vec(), small),
        (b"sub".to_vec(), sub),
        (b"zeros".to_vec(), zeros),
    ]);
    // Device 1 follows the primary device in the unified address space: lay out once to learn
    // the primary's size, then point the extent there (which does not change any size).
    bld.nodes[onpack].data = ext(vec![(ZSTD | fd.len() as u32, 0, 0)], d.len() as u64);
    bld.devices = vec![((pack.len() as u64 / BLK) as u32, 0)];
    let primary_blocks = bld.build().0.len() as u64 / BLK;
    bld.devices[0].1 = primary_blocks as u32;
    bld.nodes[onpack].data = ext(
        vec![(ZSTD | fd.len() as u32, primary_blocks * BLK + d_off, 0)],
        d.len() as u64,
    );
    let (image, _) = bld.build();
    assert_eq!(
        image.len() as u64 / BLK,
        primary_blocks,
        "adding a node must not grow the image"
    );
    let mut big_content = a.clone();
    big_content.extend(std::iter::repeat_n(0, 1000));
    big_content.extend_from_slice(&b[..500]);
    let dir = tempfile::Builder::new()
        .prefix("chunkfs-reader-")
        .tempdir_in(parent)
        .unwrap();
    let primary = dir.path().join("image.erofs");
    let pack_path = dir.path().join("pack0");
    std::fs::write(&primary, &image).unwrap();
    std::fs::write(&pack_path, &pack).unwrap();
    Image {
        dir,
        primary,
        pack: pack_path,
        files: vec![
            ("big", big_content),
            ("frag", c[1000..4000].to_vec()),
            ("onpack", d.clone()),
            ("zeros", vec![0; 3000]),
            ("small", b"inline".to_vec()),
        ],
        entries,
        pack_entries: vec![entry(d_off, 0, &fd, &d)],
        frames: vec![frames[0], frames[1], frames[2], (d_off, fd.len())],
        image,
    }
}
