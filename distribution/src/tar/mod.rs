//! Converting ordinary container images (tar layers) into a chunkfs tree (docs/format.md §7.8).
//!
//! Two passes over the layers, bottom first:
//! 1. [`merge_layers`] streams every layer's tar headers into an in-memory [`merge::Tree`]
//!    (paths and metadata only), applying whiteouts, opaque directories, hard links and
//!    replacements, and recording for each surviving regular file which layer and member hold
//!    its bytes. Every blob's digest and every config diff_id is checked at the end of its layer.
//! 2. [`feed_contents`] streams the layers again and hands exactly the surviving contents, in
//!    archive order (layer by layer), to a callback (the packer), checking the digests again.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use chunkfs_distribution::tar::{merge_layers, feed_contents, layer::LayerInput};
//! let layers: Vec<LayerInput> = vec![/* from the manifest */];
//! let tree = merge_layers(&layers)?;
//! feed_contents(&layers, &tree, |node, data, size| {
//!     let mut buf = Vec::new();
//!     std::io::Read::read_to_end(data, &mut buf)?;
//!     assert_eq!(buf.len() as u64, size);
//!     Ok::<_, std::io::Error>(())
//! })?;
//! # let _ = tree.inode_order(); Ok(()) }
//! ```

pub mod layer;
pub mod merge;
pub mod stream;

use std::io::Read;

use chunkfs_format::digest::Digest;
use chunkfs_format::{Classify, ErrorClass};
use layer::{LayerError, LayerInput, LayerStream};
use merge::{NodeId, Tree};
use stream::EntryKind;

/// Why a layer could not be converted; every variant names the layer (position and digest).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The layer blob is unreadable, malformed or does not match its digests.
    #[error("layer {position} ({digest}): {source}")]
    Layer {
        /// Position of the layer, from 1 (bottom).
        position: usize,
        /// The layer's digest.
        digest: Digest,
        /// What is wrong.
        source: Box<LayerError>,
    },
    /// One member of the layer is refused.
    #[error("layer {position} ({digest}): entry {index} {path:?} (at byte {offset}): {problem}")]
    Entry {
        /// Position of the layer, from 1 (bottom).
        position: usize,
        /// The layer's digest.
        digest: Digest,
        /// The member's position in the archive, from 0.
        index: u64,
        /// The member's path, lossily decoded.
        path: String,
        /// Offset of the member's header in the uncompressed stream.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// The consumer of pass 2 failed.
    #[error("layer {position} ({digest}): entry {path:?}: {source}")]
    Consumer {
        /// Position of the layer, from 1 (bottom).
        position: usize,
        /// The layer's digest.
        digest: Digest,
        /// The member's path.
        path: String,
        /// The class of the consumer's error.
        class: ErrorClass,
        /// The consumer's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Layer { source, .. } => source.class(),
            Self::Entry { .. } => ErrorClass::Corrupt,
            Self::Consumer { class, .. } => *class,
        }
    }
}

fn layer_err(i: usize, l: &LayerInput) -> impl Fn(LayerError) -> Error + '_ {
    move |source| Error::Layer {
        position: i + 1,
        digest: l.digest,
        source: Box::new(source),
    }
}

/// Pass 1: applies the layers' headers, bottom first, to a new tree.
pub fn merge_layers(layers: &[LayerInput]) -> Result<Tree, Error> {
    let mut tree = Tree::new();
    for (i, l) in layers.iter().enumerate() {
        let err = layer_err(i, l);
        let mut s = LayerStream::open(l).map_err(&err)?;
        while let Some(e) = s.next_entry().map_err(&err)? {
            tree.apply(i, &e).map_err(|problem| Error::Entry {
                position: i + 1,
                digest: l.digest,
                index: e.index,
                path: String::from_utf8_lossy(&e.path).into_owned(),
                offset: e.offset,
                problem,
            })?;
        }
        s.finish().map_err(&err)?;
    }
    Ok(tree)
}

/// Pass 2: streams the layers again and calls `consume(node, data, size)` for every surviving
/// regular file with content, in layer order and archive order within a layer. Reading `data`
/// fails with [`std::io::ErrorKind::InvalidData`] when the layer is corrupt, so a consumer's
/// error keeps the class of what went wrong.
pub fn feed_contents<F, E>(layers: &[LayerInput], tree: &Tree, mut consume: F) -> Result<(), Error>
where
    F: FnMut(NodeId, &mut dyn Read, u64) -> Result<(), E>,
    E: std::error::Error + Classify + Send + Sync + 'static,
{
    let wanted = tree.wanted_contents();
    let mut next = 0;
    for (i, l) in layers.iter().enumerate() {
        // Layers that supply nothing were fully checked in pass 1.
        if wanted.get(next).is_none_or(|(w, _)| w.layer != i) {
            continue;
        }
        let err = layer_err(i, l);
        let mut s = LayerStream::open(l).map_err(&err)?;
        while let Some(e) = s.next_entry().map_err(&err)? {
            let Some(&(want, node)) = wanted.get(next) else {
                break;
            };
            if want.layer != i || want.offset != e.offset {
                continue;
            }
            next += 1;
            let path = String::from_utf8_lossy(&e.path).into_owned();
            let EntryKind::Regular { size } = e.kind else {
                return Err(Error::Entry {
                    position: i + 1,
                    digest: l.digest,
                    index: e.index,
                    path,
                    offset: e.offset,
                    problem: "changed between the two passes".into(),
                });
            };
            consume(node, &mut s, size).map_err(|source| Error::Consumer {
                position: i + 1,
                digest: l.digest,
                path,
                class: source.class(),
                source: Box::new(source),
            })?;
        }
        s.finish().map_err(&err)?;
    }
    if let Some((want, _)) = wanted.get(next) {
        let l = &layers[want.layer.min(layers.len().saturating_sub(1))];
        return Err(Error::Entry {
            position: want.layer + 1,
            digest: l.digest,
            index: 0,
            path: String::new(),
            offset: want.offset,
            problem: "the member holding this file's content was not found in the second pass"
                .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
