//! A `.cfs` image: open it (header, metadata, chunk index), read every chunk, verify it whole
//! (padding, EROFS descriptor re-derived), inspect it, and unpack it when it verifies.
//! The header's digests are recomputed first so that mutations reach the regions behind them.

use std::sync::atomic::AtomicU64;

use chunkfs_format::cfs::read::Cfs;

/// Runs one input, as the fuzz target `cfs_open` does; panics on a bug.
pub fn run(data: &[u8]) {
    let mut bytes = data.to_vec();
    crate::fix_cfs_digests(&mut bytes);
    let dir = crate::fresh_dir("cfs");
    let path = dir.join("image.cfs");
    crate::write(&path, &bytes);
    let Ok(cfs) = Cfs::open(&path) else {
        return;
    };
    let _ = chunkfs_format::inspect::dump(cfs.image());
    let mut decoder = chunkfs_format::compress::Decoder::new().expect("zstd context");
    for i in 0..cfs.image().chunks.len() {
        let _ = cfs.read_chunk(i as u32, &mut decoder);
    }
    let verified = chunkfs_format::cfs::verify::verify_cfs(&path, 1, &AtomicU64::new(0)).is_ok();
    if verified {
        let target = dir.join("out");
        if let Ok(mut chunks) = cfs.chunks() {
            let _ = chunkfs_format::unpack::unpack(cfs.image(), &mut chunks, &target);
        }
        crate::assert_only(&dir, &["image.cfs", "out"]);
    }
}
