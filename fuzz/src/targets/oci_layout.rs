//! An OCI image layout (docs/format.md §7): the input is `index.json`, then blobs, separated by
//! `chunkfs_fuzz::SEPARATOR`; `@k`/`#k` in a document become blob k's digest and size, so the
//! fuzzer can keep references valid. Blobs are stored under their real digests. Then the layout
//! is opened every way the tools open one: as a chunkfs image (manifest, config, metadata, pack
//! indexes, every chunk, `verify`), and as an ordinary container image (config, diff_ids, the
//! layers' tar headers merged).

use std::sync::atomic::AtomicU64;

use chunkfs_distribution::oci::layout::Layout;
use chunkfs_distribution::oci::select::{PlatformSpec, select};
use chunkfs_format::unpack::ChunkSource;

/// Runs one input, as the fuzz target `oci_layout` does; panics on a bug.
pub fn run(data: &[u8]) {
    let docs = crate::split(data);
    if docs.len() > 64 {
        return;
    }
    let docs = crate::resolve_placeholders(&docs);
    let dir = crate::fresh_dir("layout");
    crate::write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    crate::write(&dir.join("index.json"), &docs[0]);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs dir");
    for blob in &docs[1..] {
        crate::write(&blobs.join(crate::hex(&crate::sha256(blob))), blob);
    }

    if let Ok(layout) = Layout::open(&dir) {
        let _ = chunkfs_distribution::oci::select::tags(&layout);
        let amd64 = PlatformSpec::parse("linux/amd64").expect("platform");
        let _ = select(&layout, None, Some(&amd64));
    }
    if let Ok(img) = chunkfs_distribution::oci::read::open_image(&dir, None) {
        let _ = img.extra_devices();
        if let Ok(mut chunks) = img.chunks() {
            for i in 0..img.image.chunks.len() {
                let _ = chunks.read_chunk(i as u32);
            }
        }
        drop(img);
        let _ = chunkfs_distribution::oci::verify::verify_image(&dir, None, &AtomicU64::new(0));
    }
    let amd64 = PlatformSpec::parse("linux/amd64").expect("platform");
    if let Ok(img) = chunkfs_distribution::oci::tar_image::open_tar_image(&dir, None, Some(&amd64))
    {
        if let Ok(tree) = chunkfs_distribution::tar::merge_layers(&img.layers) {
            let _ = tree.to_inodes(|_, _| chunkfs_format::model::FileLayout::Extents(vec![]));
        }
    }
}
