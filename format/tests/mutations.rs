//! Damaged inputs never panic: thousands of random byte mutations of each parsed structure
//! (metadata message, chunk frame, header with a recomputed checksum, chunk index) must give an
//! error or a value that passes validation, never a panic or a hang. A poor man's fuzzer that
//! runs in every `cargo test`.
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails

use chunkfs_format::cfs::header::Header;
use chunkfs_format::compress::{Decoder, Encoder};
use chunkfs_format::digest::Digest;
use chunkfs_format::model::{
    ChunkInfo, DirEntry, Extent, FileData, FileLayout, Image, Inode, InodeKind, Xattr, mode,
};
use chunkfs_format::translate::ChunkLocation;
use chunkfs_kernel_abi::digest_table::DigestTable;

use chunkfs_kernel_abi::testkit::XorShift64 as Rng;

/// Flips, sets or overwrites 1 to 4 bytes.
fn mutate(rng: &mut Rng, bytes: &mut [u8]) {
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(bytes.len() as u64) as usize;
        bytes[i] = match rng.below(4) as usize {
            0 => bytes[i] ^ (1 << rng.below(8)),
            1 => 0xff,
            2 => 0,
            _ => rng.next_u64() as u8,
        };
    }
}

fn sample_image() -> Image {
    let chunk = |s: &[u8], size| ChunkInfo {
        digest: Digest::of(s),
        size,
    };
    let meta = |m: u32, kind| Inode {
        mode: m,
        uid: 1,
        gid: 2,
        mtime_sec: -3,
        mtime_nsec: 4,
        xattrs: vec![],
        kind,
    };
    let mut file = meta(
        mode::S_IFREG | 0o644,
        InodeKind::File(FileData {
            size: 300,
            layout: FileLayout::Extents(vec![
                Extent {
                    offset: 0,
                    chunk: 0,
                },
                Extent {
                    offset: 100,
                    chunk: 1,
                },
            ]),
        }),
    );
    file.xattrs = vec![Xattr {
        name: b"user.a".to_vec(),
        value: b"b".to_vec(),
    }];
    Image {
        chunks: vec![chunk(b"a", 100), chunk(b"b", 200), chunk(b"c", 50)],
        packed_stream: vec![2],
        inodes: vec![
            meta(
                mode::S_IFDIR | 0o755,
                InodeKind::Directory(vec![
                    DirEntry {
                        name: b"d".to_vec(),
                        inode: 1,
                    },
                    DirEntry {
                        name: b"f".to_vec(),
                        inode: 2,
                    },
                    DirEntry {
                        name: b"l".to_vec(),
                        inode: 3,
                    },
                ]),
            ),
            meta(
                mode::S_IFDIR | 0o700,
                InodeKind::Directory(vec![
                    DirEntry {
                        name: b"hard".to_vec(),
                        inode: 2,
                    },
                    DirEntry {
                        name: b"p".to_vec(),
                        inode: 4,
                    },
                ]),
            ),
            file,
            meta(mode::S_IFLNK | 0o777, InodeKind::Symlink(b"f".to_vec())),
            meta(
                mode::S_IFREG | 0o600,
                InodeKind::File(FileData {
                    size: 20,
                    layout: FileLayout::Packed(10),
                }),
            ),
        ],
        prefetch: Vec::new(),
    }
}

#[test]
fn mutated_metadata_decodes_to_an_error_or_a_validated_image() {
    let image = sample_image();
    image.validate().unwrap();
    let raw = chunkfs_format::schema::codec::encode(&image).unwrap();
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    let (mut decoded, mut valid) = (0, 0);
    for _ in 0..20_000 {
        let mut words = capnp::Word::allocate_zeroed_vec(raw.len() / 8);
        let bytes = capnp::Word::words_to_bytes_mut(&mut words);
        bytes.copy_from_slice(&raw);
        mutate(&mut rng, bytes);
        if let Ok(img) = chunkfs_format::schema::codec::decode(bytes) {
            decoded += 1;
            if img.validate().is_ok() {
                valid += 1;
                // What validation accepts, the consumers must handle without panicking.
                let _ = chunkfs_format::inspect::dump(&img);
                let _ = chunkfs_format::inspect::stats(&img, &Digest::default(), None, None);
                let _ = img.link_counts();
            }
        }
    }
    // The mutations reach both the decoder's and the validator's checks.
    assert!(
        decoded > 1000 && valid < decoded,
        "decoded {decoded}, valid {valid}"
    );
}

#[test]
fn mutated_frames_are_refused_or_decode_to_the_declared_size() {
    let mut rng = Rng::new(42);
    let mut enc = Encoder::new(3).unwrap();
    let mut dec = Decoder::new().unwrap();
    let text: Vec<u8> = (0..5000u32).flat_map(|i| (i % 97).to_le_bytes()).collect();
    let noise: Vec<u8> = (0..20_000).map(|_| rng.next_u64() as u8).collect();
    for data in [text, noise] {
        let frame = enc.encode(&data).unwrap();
        for _ in 0..3000 {
            let mut f = frame.clone();
            mutate(&mut rng, &mut f);
            let cut = if rng.below(10) == 0 {
                rng.below(f.len() as u64) as usize
            } else {
                f.len()
            };
            if let Ok(out) = dec.decode(&f[..cut], data.len() as u32) {
                assert_eq!(out.len(), data.len());
            }
        }
    }
}

#[test]
fn mutated_headers_with_valid_checksums_are_checked_field_by_field() {
    let good = Header {
        version_minor: 0,
        incompat: 0,
        compat: 0,
        image_len: 8192,
        erofs_block_size: 4096,
        chunk_count: 1,
        metadata_raw_len: 64,
        erofs_head: chunkfs_format::cfs::header::Region {
            offset: 1024,
            len: 0,
        },
        chunks: chunkfs_format::cfs::header::Region {
            offset: 4096,
            len: 100,
        },
        erofs_meta: chunkfs_format::cfs::header::Region {
            offset: 4096 + 4096,
            len: 0,
        },
        metadata: chunkfs_format::cfs::header::Region {
            offset: 8192,
            len: 0,
        },
        index: chunkfs_format::cfs::header::Region {
            offset: 8192,
            len: 96,
        },
        metadata_digest: Digest::default(),
        erofs_digest: Digest::default(),
        index_digest: Digest::default(),
    };
    let bytes = good.encode();
    let mut rng = Rng::new(7);
    for _ in 0..20_000 {
        let mut b = bytes;
        // Mutate only the fields, then fix the checksum so the field checks are reached.
        let n = 1 + rng.below(4) as usize;
        for _ in 0..n {
            let i = rng.below(240) as usize;
            b[i] = rng.next_u64() as u8;
        }
        let sum = Digest::of(&b[..992]);
        b[992..].copy_from_slice(&sum.0);
        if let Ok(h) = Header::parse(&b) {
            // Whatever parses has its regions in order and inside the image.
            let mut end = 1024;
            for (_, r) in h.regions() {
                assert!(r.offset >= end && r.end() <= h.image_len);
                end = r.end();
            }
        }
    }
}

#[test]
fn mutated_chunk_indexes_are_refused_or_consistent() {
    let chunks: Vec<ChunkInfo> = (0..20u32)
        .map(|i| ChunkInfo {
            digest: Digest::of(&i.to_le_bytes()),
            size: 1000 + i,
        })
        .collect();
    let locations: Vec<ChunkLocation> = (0..20u64)
        .map(|i| ChunkLocation {
            device: 0,
            offset: 4096 + i * 600,
            stored_len: 500,
        })
        .collect();
    let table = chunkfs_format::digest_table::encode(&chunks, &locations);
    let mut rng = Rng::new(99);
    for _ in 0..20_000 {
        let mut t = table.clone();
        mutate(&mut rng, &mut t);
        if let Ok(parsed) = DigestTable::parse(&t) {
            if chunkfs_format::digest_table::check(&parsed, &chunks, 0, 4096, 4096 + 20 * 600)
                .is_ok()
            {
                for (e, (c, l)) in parsed.iter().zip(chunks.iter().zip(&locations)) {
                    assert_eq!(e.sha256, c.digest.0);
                    assert!(
                        e.offset.get() >= 4096
                            && e.offset.get() + u64::from(e.stored_len.get()) <= 4096 + 20 * 600,
                        "{l:?}"
                    );
                }
            }
        }
    }
}
