//! Packs of made-up chunks for the store's unit tests, written into a layout that a
//! `LayoutSource` serves.

use std::path::Path;

use chunkfs_format::compress::Encoder;
use chunkfs_format::digest::Digest;
use chunkfs_format::model::ChunkInfo;

use crate::oci::layout::Layout;
use crate::oci::pack::PackWriter;

/// A pack written into a test layout.
#[allow(dead_code)]
pub(crate) struct TestPack {
    pub(crate) digest: Digest,
    pub(crate) len: u64,
    pub(crate) chunks: Vec<ChunkInfo>,
}

/// The bytes of made-up chunk `seed`: a few KiB to ~40 KiB, compressible or not by seed.
pub(crate) fn chunk(seed: u64) -> Vec<u8> {
    let len = 3000 + (seed * 7919 % 37_000) as usize;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if seed % 2 == 0 {
                (i % 251) as u8 ^ (x as u8 & 1)
            } else {
                x as u8
            }
        })
        .collect()
}

/// Writes a pack of the chunks `seeds` into the layout `dir` (created if needed).
pub(crate) fn make_pack(
    dir: &Path,
    seeds: impl IntoIterator<Item = u64>,
    align512: bool,
) -> TestPack {
    let layout = if Layout::is_layout(dir) {
        Layout::open(dir).unwrap()
    } else {
        Layout::create(dir).unwrap()
    };
    let mut enc = Encoder::new(3).unwrap();
    let mut w = PackWriter::new(&layout, align512).unwrap();
    let mut chunks = Vec::new();
    for seed in seeds {
        let body = chunk(seed);
        let frame = enc.encode(&body).unwrap();
        let info = ChunkInfo {
            digest: Digest::of(&body),
            size: body.len() as u32,
        };
        w.add_frame(&info.digest, info.size, &frame).unwrap();
        chunks.push(info);
    }
    let info = w.finish().unwrap();
    TestPack {
        digest: info.digest,
        len: info.size,
        chunks,
    }
}
