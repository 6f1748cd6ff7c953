//! `chunkfs verify LAYOUT[:TAG]`: every digest of a chunkfs image in a layout (docs/format.md
//! §7.5, §8); `chunkfs verify --oci LAYOUT`: every blob and every image of the whole layout.
//!
//! Opening the image checks `index.json`, the manifest, the config and the metadata blob against
//! their digests, the metadata's invariants, every pack's index checksum and that every chunk is
//! in a pack. Verification then hashes every pack blob whole against its digest and decompresses
//! every chunk and checks it against its own digest.
//!
//! [`verify_layout`] first follows every descriptor reachable from `index.json` (as `gc` does)
//! and checks that each blob exists with its size and sha256; then it verifies the chunks of
//! every tagged chunkfs image and the tar streams (and their diff_ids) of every tagged container
//! image.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::oci::read::{self, open_image};
use chunkfs_format::digest::{Digest, Hasher};
use chunkfs_format::unpack::ChunkSource;
use chunkfs_format::{Classify, ErrorClass};

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening the image failed (a small blob, a pack index, or the metadata is wrong).
    #[error(transparent)]
    Open(#[from] read::Error),
    /// A pack blob cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The blob.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A pack blob's content does not match its digest.
    #[error("{}: pack blob content has digest {actual}, not its name", path.display())]
    PackDigest {
        /// The blob.
        path: PathBuf,
        /// What it hashes to.
        actual: Digest,
    },
    /// A descriptor reachable from `index.json` names a blob that is missing, has another
    /// size or another digest, or a manifest or index that cannot be followed.
    #[error("{}: {problem}", dir.display())]
    Blob {
        /// The layout.
        dir: PathBuf,
        /// The blob and what is wrong with it.
        problem: String,
        /// The I/O error, when the blob could not be read.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A container image's layers are malformed or do not match their digests.
    #[error("{}: tag {tag:?}: {source}", dir.display())]
    Layers {
        /// The layout.
        dir: PathBuf,
        /// The tag.
        tag: String,
        /// What is wrong.
        source: Box<crate::tar::Error>,
    },
    /// The tagged container image cannot be opened.
    #[error(transparent)]
    TarImage(#[from] crate::oci::tar_image::Error),
    /// A chunk does not decode to its digest.
    #[error("{}: chunk {chunk}: {problem}", dir.display())]
    Chunk {
        /// The layout.
        dir: PathBuf,
        /// The chunk's number.
        chunk: usize,
        /// What is wrong.
        problem: String,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Open(e) => e.class(),
            Self::Io { source, .. } => source.class(),
            // A blob that exists but cannot be read is unreadable; a missing one, or one with
            // another size or digest, makes the layout incomplete.
            Self::Blob { source, .. } => source.as_ref().map_or(ErrorClass::Corrupt, |e| e.class()),
            Self::Layers { source, .. } => source.class(),
            Self::TarImage(e) => e.class(),
            Self::PackDigest { .. } | Self::Chunk { .. } => ErrorClass::Corrupt,
        }
    }
}

/// What was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The metadata digest.
    pub metadata_digest: Digest,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// Pack blobs hashed.
    pub packs: usize,
    /// Their bytes.
    pub pack_bytes: u64,
    /// Chunks decompressed and hashed.
    pub chunks: usize,
    /// Their decompressed bytes.
    pub chunk_bytes: u64,
}

/// Verifies the image `tag` (or the only image) of the layout `dir`; `done` counts verified
/// chunk bytes for a progress display.
pub fn verify_image(dir: &Path, tag: Option<&str>, done: &AtomicU64) -> Result<Report, Error> {
    let img = open_image(dir, tag)?;
    let mut pack_bytes = 0;
    for p in &img.packs {
        let io = |source| Error::Io {
            path: p.path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&p.path).map_err(io)?;
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let actual = h.finish();
        if actual != p.digest {
            return Err(Error::PackDigest {
                path: p.path.clone(),
                actual,
            });
        }
        pack_bytes += p.size;
    }
    let mut chunks = img.chunks().map_err(|e| Error::Chunk {
        dir: dir.to_owned(),
        chunk: 0,
        problem: e.to_string(),
    })?;
    let mut chunk_bytes = 0;
    for (i, c) in img.image.chunks.iter().enumerate() {
        chunks.read_chunk(i as u32).map_err(|e| Error::Chunk {
            dir: dir.to_owned(),
            chunk: i,
            problem: e.to_string(),
        })?;
        chunk_bytes += u64::from(c.size);
        done.fetch_add(u64::from(c.size), Ordering::Relaxed);
    }
    Ok(Report {
        metadata_digest: img.metadata_digest,
        manifest_digest: img.manifest.digest.clone(),
        packs: img.packs.len(),
        pack_bytes,
        chunks: img.image.chunks.len(),
        chunk_bytes,
    })
}

/// What [`verify_layout`] checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayoutReport {
    /// Blobs reachable from `index.json`, each hashed once.
    pub blobs: usize,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Tags whose chunkfs image had every chunk decompressed and hashed.
    pub chunkfs_tags: Vec<String>,
    /// Tags whose container image had its layers' tar streams and diff_ids checked.
    pub container_tags: Vec<String>,
    /// Chunks decompressed and hashed (over all chunkfs tags).
    pub chunks: usize,
    /// Tags with no image for this machine's platform (multi-platform indexes): their blobs
    /// were hashed, their contents not checked further.
    pub other_platform_tags: Vec<String>,
}

/// Verifies the whole layout `dir`: every blob reachable from `index.json` (present, of the
/// size and sha256 its descriptors give; manifests and indexes followed, whatever wrote them),
/// then every tag: a chunkfs image's chunks, a container image's layers (tar streams and
/// diff_ids). `done` counts bytes hashed, for a progress display.
pub fn verify_layout(dir: &Path, done: &AtomicU64) -> Result<LayoutReport, Error> {
    use crate::oci::layout::{Layout, MANIFEST_MAX};
    let layout = Layout::open(dir).map_err(read::Error::from)?;
    let lock = crate::oci::lock::LayoutLock::shared(dir).map_err(read::Error::from)?;
    let bad = |problem: String, source: Option<std::io::Error>| Error::Blob {
        dir: dir.to_owned(),
        problem,
        source,
    };
    let index = layout.read_index().map_err(read::Error::from)?;
    let mut report = LayoutReport::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut queue = index.manifests.clone();
    while let Some(desc) = queue.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        let what = format!("blob {} ({})", desc.digest, desc.media_type);
        let path = layout
            .descriptor_path(&desc)
            .map_err(|e| bad(format!("{what}: {e}"), None))?;
        let expected = desc
            .sha256()
            .map_err(|e| bad(format!("{what}: {e}"), None))?;
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad(format!("{what} is missing"), None));
            }
            Err(e) => return Err(bad(format!("{what}: cannot open"), Some(e))),
        };
        let mut h = Hasher::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| bad(format!("{what}: cannot read"), Some(e)))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            len += n as u64;
            done.fetch_add(n as u64, Ordering::Relaxed);
        }
        if len != desc.size {
            return Err(bad(
                format!("{what} is {len} bytes, its descriptor says {}", desc.size),
                None,
            ));
        }
        let actual = h.finish();
        if actual != expected {
            return Err(bad(format!("{what} has digest {actual}"), None));
        }
        report.blobs += 1;
        report.blob_bytes += len;
        if crate::oci::gc::must_follow(&desc) {
            let raw = layout
                .read_blob(&desc, MANIFEST_MAX, "manifest")
                .map_err(read::Error::from)?;
            let doc: serde_json::Value = serde_json::from_slice(&raw)
                .map_err(|e| bad(format!("{what} is not JSON: {e}"), None))?;
            for child in crate::oci::gc::children(&doc) {
                let child: crate::oci::spec::ContentDescriptor =
                    serde_json::from_value(child.clone())
                        .map_err(|e| bad(format!("{what} holds a bad descriptor: {e}"), None))?;
                queue.push(child);
            }
        }
    }
    drop(lock);

    let tags = crate::oci::select::tags(&layout).map_err(read::Error::from)?;
    for tag in tags {
        let sel = match crate::oci::select::select(&layout, Some(&tag), None) {
            Ok(sel) => sel,
            Err(crate::oci::select::Error::NoPlatform { .. }) => {
                report.other_platform_tags.push(tag);
                continue;
            }
            Err(e) => return Err(read::Error::from(e).into()),
        };
        if sel.is_chunkfs() {
            let img = open_image(dir, Some(&tag))?;
            let mut chunks = img.chunks().map_err(|e| Error::Chunk {
                dir: dir.to_owned(),
                chunk: 0,
                problem: e.to_string(),
            })?;
            for i in 0..img.image.chunks.len() {
                chunks.read_chunk(i as u32).map_err(|e| Error::Chunk {
                    dir: dir.to_owned(),
                    chunk: i,
                    problem: format!("tag {tag:?}: {e}"),
                })?;
            }
            report.chunks += img.image.chunks.len();
            report.chunkfs_tags.push(tag);
        } else {
            let img = crate::oci::tar_image::open_tar_image(dir, Some(&tag), None)?;
            crate::tar::merge_layers(&img.layers).map_err(|e| Error::Layers {
                dir: dir.to_owned(),
                tag: tag.clone(),
                source: Box::new(e),
            })?;
            report.container_tags.push(tag);
        }
    }
    Ok(report)
}
