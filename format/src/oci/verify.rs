//! `chunkfs verify LAYOUT[:TAG]`: every digest of a chunkfs image in a layout (docs/format.md
//! §7.5, §8).
//!
//! Opening the image checks `index.json`, the manifest, the config and the metadata blob against
//! their digests, the metadata's invariants, every pack's index checksum and that every chunk is
//! in a pack. Verification then hashes every pack blob whole against its digest and decompresses
//! every chunk and checks it against its own digest.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{Digest, Hasher};
use crate::oci::read::{self, open_image};
use crate::unpack::ChunkSource;

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
