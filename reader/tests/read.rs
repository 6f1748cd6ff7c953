//! Reads through `Reader` without FUSE: content, verification failures, concurrency, the cache.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use chunkfs_reader::{ChunkError, OpenError, ReadError, Reader};

fn parent() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn nid_of(r: &Reader, name: &str) -> u64 {
    r.descriptor().root().lookup(name.as_bytes()).unwrap().nid
}

fn read_all(r: &Reader, name: &str) -> Result<Vec<u8>, ReadError> {
    let nid = nid_of(r, name);
    let size = r.descriptor().inode(nid).unwrap().size();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let part = r.read(nid, pos, 65_536)?;
        assert!(!part.is_empty());
        pos += part.len() as u64;
        out.extend(part);
    }
    Ok(out)
}

#[test]
fn reads_every_kind_of_extent() {
    let img = common::build(parent());
    let r = Reader::open(img.config()).unwrap();
    for name in ["big", "frag", "onpack", "zeros"] {
        assert_eq!(read_all(&r, name).unwrap(), img.expected(name), "{name}");
    }
    // Ranges across extent boundaries, and past the end.
    let big = nid_of(&r, "big");
    let exp = img.expected("big");
    for (off, len) in [
        (0, 1),
        (204_700, 1000),
        (204_800 + 999, 3),
        (204_800 + 1000, 500),
        (10, 300_000),
    ] {
        let got = r.read(big, off, len).unwrap();
        let end = (off as usize + len as usize).min(exp.len());
        assert_eq!(got, exp[off as usize..end], "{off}+{len}");
    }
    assert!(r.read(big, exp.len() as u64, 10).unwrap().is_empty());
    assert!(r.read(big, u64::MAX, u32::MAX).unwrap().is_empty());
    // Inline data has no digest: never served.
    assert!(matches!(
        read_all(&r, "small"),
        Err(ReadError::Unverifiable { .. })
    ));
    // Not a file.
    assert!(matches!(
        r.read(r.descriptor().root_nid(), 0, 1),
        Err(ReadError::NotFile(_))
    ));
    assert!(matches!(r.read(u64::MAX, 0, 1), Err(ReadError::NoInode(_))));
}

/// Writes a modified copy of the image and opens it.
fn open_with(
    img: &common::Image,
    edit: impl FnOnce(&mut Vec<u8>),
    entries: Option<Vec<chunkfs_kernel_abi::digest_table::DigestEntry>>,
) -> Reader {
    let mut bytes = img.image.clone();
    edit(&mut bytes);
    std::fs::write(&img.primary, &bytes).unwrap();
    let mut config = img.config();
    if let Some(e) = entries {
        config.digests[0].bytes = common::table(&e);
    }
    Reader::open(config).unwrap()
}

fn chunk_error(r: Result<Vec<u8>, ReadError>) -> ChunkError {
    match r {
        Err(ReadError::Chunk { error, .. }) => error,
        other => panic!("expected a chunk error, got {other:?}"),
    }
}

#[test]
fn a_corrupt_chunk_fails_only_the_reads_that_need_it() {
    let img = common::build(parent());
    let (a_off, a_len) = img.frames[0];
    // A byte in the middle of frame A: zstd's checksum (or the sha256) refuses it.
    let r = open_with(&img, |b| b[(a_off as usize) + a_len / 2] ^= 0x40, None);
    let big = nid_of(&r, "big");
    let err = chunk_error(r.read(big, 0, 10));
    assert!(
        matches!(err, ChunkError::Decompress(_) | ChunkError::Digest),
        "{err:?}"
    );
    // The hole and chunk B after it still read; so do the other files.
    let exp = img.expected("big").to_vec();
    assert_eq!(r.read(big, 204_800, 1500).unwrap(), exp[204_800..]);
    assert_eq!(read_all(&r, "frag").unwrap(), img.expected("frag"));
    // And the error repeats (errors are not cached as data).
    assert!(r.read(big, 100, 1).is_err());
}

#[test]
fn each_verification_failure_is_reported() {
    let img = common::build(parent());
    let big = |r: &Reader| r.read(nid_of(r, "big"), 0, 100);
    // Wrong sha256.
    let mut e = img.entries.clone();
    e[0].sha256[0] ^= 1;
    assert_eq!(
        chunk_error(big(&open_with(&img, |_| (), Some(e)))),
        ChunkError::Digest
    );
    // The table's length disagrees with the frame header's content size.
    let mut e = img.entries.clone();
    e[0].raw_len = (e[0].raw_len.get() - 1).into();
    assert!(matches!(
        chunk_error(big(&open_with(&img, |_| (), Some(e)))),
        ChunkError::ContentSize { .. }
    ));
    // No entry for the frame (and it is not a frame of zeros).
    let e = img.entries[1..].to_vec();
    assert_eq!(
        chunk_error(big(&open_with(&img, |_| (), Some(e)))),
        ChunkError::NoDigest
    );
    // An entry that is not a zstd frame.
    let mut e = img.entries.clone();
    e[0].flags = 0.into();
    assert_eq!(
        chunk_error(big(&open_with(&img, |_| (), Some(e)))),
        ChunkError::NotZstd(0)
    );
    // The frame's magic broken: zstd refuses it before the digest is even computed.
    let (a_off, _) = img.frames[0];
    let r = open_with(&img, |b| b[a_off as usize] ^= 1, None);
    assert!(matches!(
        chunk_error(big(&r)),
        ChunkError::ContentSize { declared: None, .. }
    ));
    // Without its digest entry, a frame of data is not taken for a frame of zeros.
    let e = img.entries[1..].to_vec();
    let r = open_with(&img, |_| (), Some(e));
    assert_eq!(
        chunk_error(r.read(nid_of(&r, "big"), 0, 1)),
        ChunkError::NoDigest
    );
}

#[test]
fn a_pack_device_must_be_long_enough() {
    let img = common::build(parent());
    let mut c = img.config();
    c.digests[0].bytes[0] ^= 1;
    assert!(matches!(
        Reader::open(c),
        Err(OpenError::DigestTable { index: 0, .. })
    ));
    let mut c = img.config();
    c.devices.clear();
    assert!(matches!(
        Reader::open(c),
        Err(OpenError::DeviceCount {
            expected: 1,
            given: 0
        })
    ));
    std::fs::write(&img.pack, vec![0u8; 4096]).unwrap();
    assert!(matches!(
        Reader::open(img.config()),
        Err(OpenError::DeviceTooSmall { .. })
    ));
}

#[test]
fn concurrent_reads_load_each_chunk_once() {
    let img = common::build(parent());
    let r = Arc::new(Reader::open(img.config()).unwrap());
    let names = ["big", "frag", "onpack", "zeros"];
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let r = r.clone();
            let files: Vec<(u64, Vec<u8>)> = names
                .iter()
                .map(|n| (nid_of(&r, n), img.expected(n).to_vec()))
                .collect();
            std::thread::spawn(move || {
                let mut x = t.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
                for _ in 0..400 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let (nid, exp) = &files[(x % files.len() as u64) as usize];
                    let off = (x >> 8) % exp.len() as u64;
                    let len = ((x >> 40) % 70_000) as u32 + 1;
                    let got = r.read(*nid, off, len).unwrap();
                    let end = (off as usize + len as usize).min(exp.len());
                    assert_eq!(got, exp[off as usize..end]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Five distinct clusters (A, B, C, D, zeros), each decompressed once.
    assert_eq!(r.cache_stats().loads, 5);
}

#[test]
fn preloading_follows_the_stored_order_of_chunks() {
    let img = common::build(parent());
    let r = Reader::open(img.config()).unwrap();
    // After a byte of chunk A (file `big`): B, then C (the packed inode's chunk) follow it in
    // the image; the zero frame after them has no digest entry, so the walk stops there.
    assert_eq!(r.preload_after(nid_of(&r, "big"), 1, 4), 2);
    assert_eq!(r.cache_stats().loads, 2);
    // The small file `frag` lives in C: nothing with a digest is stored after it on device 0.
    assert_eq!(r.preload_after(nid_of(&r, "frag"), 3000, 4), 0);
    // Preloaded chunks are served from the cache, and correctly.
    assert_eq!(read_all(&r, "frag").unwrap(), img.expected("frag"));
    assert_eq!(r.cache_stats().loads, 2);
    // Not a regular file, or nothing read yet: nothing to preload.
    assert_eq!(r.preload_after(nid_of(&r, "sub"), 1, 4), 0);
    assert_eq!(r.preload_after(nid_of(&r, "big"), 0, 4), 0);
}

/// A device whose bytes come from elsewhere (a registry, through the store): it can fail for a
/// while, or return bytes other than the pack's.
struct Remote {
    bytes: Vec<u8>,
    /// 0: serve, 1: fail, 2: flip a byte of what is served.
    mode: std::sync::atomic::AtomicU8,
    reads: std::sync::atomic::AtomicUsize,
}

impl chunkfs_reader::Device for Remote {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<std::borrow::Cow<'_, [u8]>, chunkfs_reader::DeviceError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.reads.fetch_add(1, SeqCst);
        let range = offset as usize..(offset + len) as usize;
        match self.mode.load(SeqCst) {
            1 => Err(chunkfs_reader::DeviceError("registry unreachable".into())),
            2 => {
                let mut v = self.bytes[range].to_vec();
                let mid = v.len() / 2;
                v[mid] ^= 1;
                Ok(std::borrow::Cow::Owned(v))
            }
            _ => Ok(std::borrow::Cow::Borrowed(&self.bytes[range])),
        }
    }

    fn name(&self) -> String {
        "remote pack".into()
    }
}

#[test]
fn a_device_that_fails_fails_its_reads_until_it_serves_again_and_wrong_bytes_never_pass() {
    use std::sync::atomic::Ordering::SeqCst;
    let img = common::build(parent());
    let remote = Arc::new(Remote {
        bytes: std::fs::read(&img.pack).unwrap(),
        mode: 1.into(),
        reads: 0.into(),
    });
    let mut config = img.config();
    config.devices = vec![chunkfs_reader::DeviceSpec::Custom(remote.clone())];
    let r = Reader::open(config).unwrap();
    // Failing: the read that needs the device fails with its message; others are unaffected.
    match chunk_error(read_all(&r, "onpack")) {
        ChunkError::Device(m) => assert!(m.contains("unreachable"), "{m}"),
        other => panic!("expected a device error, got {other:?}"),
    }
    assert_eq!(read_all(&r, "big").unwrap(), img.expected("big"));
    // Wrong bytes: refused by the digest, never served, not cached.
    remote.mode.store(2, SeqCst);
    assert!(read_all(&r, "onpack").is_err());
    // Serving again: the failures were not cached, the read now succeeds, and once.
    remote.mode.store(0, SeqCst);
    assert_eq!(read_all(&r, "onpack").unwrap(), img.expected("onpack"));
    let reads = remote.reads.load(SeqCst);
    assert_eq!(read_all(&r, "onpack").unwrap(), img.expected("onpack"));
    assert_eq!(
        remote.reads.load(SeqCst),
        reads,
        "the verified chunk is cached"
    );
}
