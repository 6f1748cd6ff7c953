//! Container image layers (docs/format.md §7.8): one or more tar streams (plain, gzip or zstd,
//! separated by `chunkfs_fuzz::SEPARATOR`), bottom first. Pass 1 merges their headers, pass 2
//! streams the surviving contents (whose lengths must be what pass 1 recorded), and the merged
//! tree must convert into metadata that passes `Image::validate`.

use chunkfs_distribution::tar::layer::LayerInput;
use chunkfs_distribution::tar::{feed_contents, merge_layers};
use chunkfs_format::digest::Digest;
use chunkfs_format::model::{ChunkInfo, Extent, FileLayout, Image};

/// Runs one input, as the fuzz target `tar_layers` does; panics on a bug.
pub fn run(data: &[u8]) {
    let docs = crate::split(data);
    if docs.len() > 16 {
        return;
    }
    let dir = crate::fresh_dir("layers");
    let layers: Vec<LayerInput> = docs
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let path = dir.join(format!("layer{i}"));
            crate::write(&path, bytes);
            LayerInput {
                path,
                digest: Digest(crate::sha256(bytes)),
                size: bytes.len() as u64,
                diff_id: None,
            }
        })
        .collect();
    let Ok(tree) = merge_layers(&layers) else {
        return;
    };
    let mut sizes = std::collections::HashMap::new();
    let fed = feed_contents(&layers, &tree, |node, data, size| {
        let n = std::io::copy(data, &mut std::io::sink())?;
        assert_eq!(
            n, size,
            "pass 2 delivered another length than pass 1 recorded"
        );
        sizes.insert(node, n);
        Ok::<_, std::io::Error>(())
    });
    if fed.is_err() {
        return;
    }
    // Every file with content becomes one chunk of its size (empty files: no extent), as the
    // packer would produce, so the metadata can be validated whole.
    let mut chunks = Vec::new();
    let inodes = tree.to_inodes(|node, size| {
        if size == 0 {
            return FileLayout::Extents(vec![]);
        }
        assert_eq!(
            sizes.get(&node),
            Some(&size),
            "a file's content was not fed"
        );
        let pieces = size.div_ceil(1 << 20);
        let mut extents = Vec::new();
        for k in 0..pieces {
            let len = (size - k * (1 << 20)).min(1 << 20) as u32;
            extents.push(Extent {
                offset: k << 20,
                chunk: chunks.len() as u32,
            });
            chunks.push(ChunkInfo {
                digest: Digest([k as u8; 32]),
                size: len,
            });
        }
        FileLayout::Extents(extents)
    });
    let image = Image {
        chunks,
        packed_stream: vec![],
        inodes,
        prefetch: Vec::new(),
    };
    if let Err(e) = image.validate() {
        // Depth is the only limit the merge leaves to validation.
        assert!(
            matches!(
                e,
                chunkfs_format::model::ModelError::TooMany {
                    what: "directory depth",
                    ..
                }
            ),
            "merged tree converts into invalid metadata: {e}"
        );
    }
}
