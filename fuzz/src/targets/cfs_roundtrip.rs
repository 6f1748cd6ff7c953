//! Valid metadata of any shape, end to end: the input is a flags byte (bit 0: `--align 512`)
//! and raw Cap'n Proto metadata. Valid metadata gets generated chunk contents (its digests are
//! replaced by theirs), is written as a `.cfs` by the real writer, and then: `verify` must pass;
//! after the mount checks, the FUSE reader library must serve every file exactly as the model
//! says (chunks at their offsets, holes as zeros, small files from the packed stream); `unpack`
//! must write exactly those bytes when it succeeds.

use std::sync::atomic::AtomicU64;

use chunkfs_format::build::ChunkSink;
use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::cfs::write::CfsWriter;
use chunkfs_format::digest::Digest;
use chunkfs_format::model::{FileLayout, Image, InodeKind};
use chunkfs_reader::{Config, DigestSource, Reader};

/// Chunk bytes the harness makes up: distinct per chunk, partly compressible.
fn chunk_data(i: usize, size: u32) -> Vec<u8> {
    let mut r = chunkfs_kernel_abi::testkit::XorShift64::new(
        (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    (0..size)
        .map(|k| {
            let x = r.next_u64();
            if k % 4 == 0 {
                x as u8
            } else {
                (i as u8).wrapping_add(k as u8 % 5)
            }
        })
        .collect()
}

/// What every regular file of the model holds: `(inode, bytes)`.
fn contents(image: &Image, data: &[Vec<u8>]) -> Vec<(usize, Vec<u8>)> {
    let packed: Vec<u8> = image
        .packed_stream
        .iter()
        .flat_map(|&c| data[c as usize].iter().copied())
        .collect();
    image
        .inodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.kind {
            InodeKind::File(f) => {
                let mut bytes = vec![0u8; f.size as usize];
                match &f.layout {
                    FileLayout::Extents(xs) => {
                        for x in xs {
                            let d = &data[x.chunk as usize];
                            bytes[x.offset as usize..x.offset as usize + d.len()]
                                .copy_from_slice(d);
                        }
                    }
                    FileLayout::Packed(off) => {
                        bytes.copy_from_slice(&packed[*off as usize..(*off + f.size) as usize])
                    }
                }
                Some((i, bytes))
            }
            _ => None,
        })
        .collect()
}

/// The path of inode `idx` at its first name, as components.
fn paths(image: &Image) -> Vec<Option<Vec<Vec<u8>>>> {
    let mut out: Vec<Option<Vec<Vec<u8>>>> = vec![None; image.inodes.len()];
    out[0] = Some(vec![]);
    let mut stack = vec![0usize];
    while let Some(d) = stack.pop() {
        let InodeKind::Directory(entries) = &image.inodes[d].kind else {
            continue;
        };
        let base = out[d].clone().unwrap_or_default();
        for e in entries {
            let c = e.inode as usize;
            if out[c].is_none() {
                let mut p = base.clone();
                p.push(e.name.clone());
                out[c] = Some(p);
                stack.push(c);
            }
        }
    }
    out
}

/// Runs one input, as the fuzz target `cfs_roundtrip` does; panics on a bug.
pub fn run(input: &[u8]) {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let Some(mut image) = crate::decode_raw_metadata(rest) else {
        return;
    };
    // Bounded runs: a few MiB of chunks, files the harness can hold in memory.
    let total: u64 = image.chunks.iter().map(|c| u64::from(c.size)).sum();
    let files: u64 = image
        .inodes
        .iter()
        .map(|n| match &n.kind {
            InodeKind::File(f) => f.size,
            _ => 0,
        })
        .fold(0u64, u64::saturating_add);
    if total > 8 << 20 || files > 64 << 20 || image.inodes.len() > 10_000 {
        return;
    }
    let data: Vec<Vec<u8>> = image
        .chunks
        .iter()
        .enumerate()
        .map(|(i, c)| chunk_data(i, c.size.min(1 << 20)))
        .collect();
    for (c, d) in image.chunks.iter_mut().zip(&data) {
        c.digest = Digest::of(d);
    }
    if image.validate().is_err() {
        return;
    }
    let dir = crate::fresh_dir("roundtrip");
    let path = dir.join("image.cfs");
    let align512 = flags & 1 != 0;
    let (writer, mut sink) = CfsWriter::create(&path, align512).expect("create the image");
    let mut encoder = chunkfs_format::compress::Encoder::new(1).expect("encoder");
    let mut locations = Vec::new();
    for (i, (chunk, d)) in image.chunks.iter().zip(&data).enumerate() {
        let frame = encoder.encode(d).expect("encode a chunk");
        locations.push(Some(
            sink.write_frame(i as u32, chunk, &frame)
                .expect("write a frame"),
        ));
    }
    // The writer may refuse what EROFS cannot express (e.g. cluster-layout corners).
    if writer.finish(sink, &image, &locations).is_err() {
        return;
    }
    if let Ok(bytes) = std::fs::read(&path) {
        crate::save(&path, &bytes);
    }
    if let Err(e) = chunkfs_format::cfs::verify::verify_cfs(&path, 1, &AtomicU64::new(0)) {
        panic!("verify refuses what the writer wrote: {e}");
    }
    let expected = contents(&image, &data);

    // The FUSE reader, as a mount hands it the image.
    let cfs = Cfs::open(&path).expect("open");
    chunkfs_format::cfs::verify::check_structure(&cfs).expect("mount checks");
    let index = cfs.region(cfs.header().index).to_vec();
    let mut config = Config::new(
        &path,
        vec![],
        vec![DigestSource {
            bytes: index,
            device: None,
        }],
    );
    config.cache_bytes = 2 << 20;
    let reader = Reader::open(config).expect("the reader opens a verified image");
    let desc = reader.descriptor();
    let paths = paths(&image);
    for (idx, bytes) in &expected {
        let Some(components) = &paths[*idx] else {
            continue;
        };
        let mut node = desc.root();
        for c in components {
            let e = node.lookup(c).expect("a path of the model resolves");
            node = desc.inode(e.nid).expect("a listed nid decodes");
        }
        assert_eq!(node.size(), bytes.len() as u64, "inode {idx}: size");
        let mut got = Vec::with_capacity(bytes.len());
        while got.len() < bytes.len() {
            let chunk = reader
                .read(node.nid(), got.len() as u64, 1 << 20)
                .unwrap_or_else(|e| panic!("inode {idx}: read at {}: {e}", got.len()));
            assert!(!chunk.is_empty(), "inode {idx}: short read");
            got.extend_from_slice(&chunk);
        }
        assert!(got == *bytes, "inode {idx}: the reader served other bytes");
    }

    // unpack: when it succeeds (xattrs the file system refuses may stop it), exact bytes.
    let out = dir.join("out");
    let mut chunks = cfs.chunks().expect("chunks");
    if chunkfs_format::unpack::unpack(cfs.image(), &mut chunks, &out).is_ok() {
        for (idx, bytes) in &expected {
            let Some(components) = &paths[*idx] else {
                continue;
            };
            let mut p = out.clone();
            for c in components {
                p.push(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(c));
            }
            if p.as_os_str().len() > 3000 {
                continue; // past PATH_MAX: not reachable by a path from here
            }
            let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(got == *bytes, "{}: unpack wrote other bytes", p.display());
        }
    }
    crate::assert_only(&dir, &["image.cfs", "out"]);
}
