//! Full verification of a `.cfs` (docs/format.md §8): everything [`Cfs::open`] checks, plus the
//! zero padding between regions and frames, the EROFS areas against their digest and against
//! the descriptor re-derived from the metadata, and every chunk frame decoded and hashed.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cfs::header::Region;
use crate::cfs::read::{Cfs, Error, ErrorKind};
use crate::compress::Decoder;
use crate::digest::{Digest, Hasher};
use crate::model::ChunkIdx;
use crate::translate::{DeviceLayout, ExtentLayout, translate_within};

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The image's identity.
    pub metadata_digest: Digest,
    /// Chunks decoded and hashed.
    pub chunks: usize,
    /// Uncompressed bytes hashed.
    pub chunk_bytes: u64,
    /// Whether the image has an EROFS descriptor (checked if so).
    pub erofs: bool,
}

/// Everything [`verify_cfs`] checks except the chunk frames, on an opened image: the zero
/// padding between and after regions and frames, and the EROFS areas against their digest and
/// against the descriptor re-derived from the (verified) metadata and chunk index. What a mount
/// must check before handing the `.cfs` to a reader that trusts its descriptor.
pub fn check_structure(cfs: &Cfs) -> Result<(), Error> {
    let path = cfs.path();
    let fail = |kind| Error {
        path: path.to_owned(),
        kind,
    };
    let corrupt = |region: &'static str| fail(ErrorKind::Digest { region });
    let h = cfs.header();

    // Padding: between frames, after the last frame, before the EROFS area, after the index.
    let mut gaps: Vec<(&'static str, Region)> = Vec::new();
    let mut pos = h.chunks.offset;
    for loc in cfs.locations() {
        gaps.push((
            "chunk region padding",
            Region {
                offset: pos,
                len: loc.offset - pos,
            },
        ));
        pos = loc.offset + u64::from(loc.stored_len);
    }
    if pos != h.chunks.end() {
        return Err(fail(ErrorKind::Index(crate::digest_table::Error::Entry {
            chunk: cfs.image().chunks.len() as ChunkIdx,
            problem: format!(
                "the chunk region ends at {}, its last frame at {pos}",
                h.chunks.end()
            ),
        })));
    }
    gaps.push((
        "padding before the EROFS metadata area",
        Region {
            offset: h.chunks.end(),
            len: h.erofs_meta.offset - h.chunks.end(),
        },
    ));
    if !h.has_erofs() {
        gaps.push((
            "EROFS head area",
            Region {
                offset: 1024,
                len: 3072,
            },
        ));
    }
    gaps.push((
        "padding after the chunk index",
        Region {
            offset: h.index.end(),
            len: h.image_len - h.index.end(),
        },
    ));
    for (what, gap) in gaps {
        if let Some(i) = cfs.region(gap).iter().position(|&b| b != 0) {
            return Err(fail(ErrorKind::NotZero {
                region: what,
                offset: gap.offset + i as u64,
            }));
        }
    }

    // EROFS: the stored bytes must match their digest and the descriptor re-derived from the
    // (already verified) metadata and chunk index.
    let mut hasher = Hasher::new();
    hasher.update(cfs.region(h.erofs_head));
    hasher.update(cfs.region(h.erofs_meta));
    if hasher.finish() != h.erofs_digest {
        return Err(corrupt("EROFS areas"));
    }
    check_descriptor(cfs)
}

/// The EROFS descriptor embedded in `cfs` (head and metadata areas) against the one re-derived
/// from its checked metadata and chunk index, byte for byte: what a mount checks before the
/// kernel parses the descriptor. The derived metadata area may not be longer than the stored
/// one, so metadata declaring huge sparse files cannot make it build more than the image holds.
/// An image without an embedded descriptor passes.
pub fn check_descriptor(cfs: &Cfs) -> Result<(), Error> {
    let fail = |kind| Error {
        path: cfs.path().to_owned(),
        kind,
    };
    let h = cfs.header();
    if !h.has_erofs() {
        return Ok(());
    }
    let block = u64::from(h.erofs_block_size);
    if h.erofs_meta.offset != h.chunks.end().next_multiple_of(block) {
        return Err(fail(ErrorKind::Header(
            crate::cfs::header::HeaderError::BadField {
                field: "erofs_meta",
                problem: "does not start at the first block after the chunk region".into(),
            },
        )));
    }
    let layout =
        DeviceLayout::embedded(ExtentLayout::for_frames(block == 512), h.erofs_meta.offset);
    let derived = translate_within(cfs.image(), &cfs.locations(), &layout, h.erofs_meta.len)
        .map_err(|e| fail(ErrorKind::Erofs(e.to_string())))?;
    let derived_head = derived
        .superblock_area(h.image_len)
        .map_err(|e| fail(ErrorKind::Erofs(e.to_string())))?;
    for (what, stored, expected) in [
        (
            "EROFS metadata area",
            cfs.region(h.erofs_meta),
            derived.meta_area(),
        ),
        (
            "EROFS head area",
            cfs.region(h.erofs_head),
            derived_head.as_slice(),
        ),
    ] {
        if stored != expected {
            let at = stored
                .iter()
                .zip(expected)
                .position(|(a, b)| a != b)
                .unwrap_or(stored.len().min(expected.len()));
            return Err(fail(ErrorKind::Erofs(format!(
                "{what} differs from the descriptor re-derived from the metadata at byte {at} of the area"
            ))));
        }
    }
    Ok(())
}

/// Verifies the image at `path` with `jobs` threads (0: one per CPU). `done_bytes` counts the
/// chunk bytes checked so far, for a progress display.
pub fn verify_cfs(path: &Path, jobs: usize, done_bytes: &AtomicU64) -> Result<Report, Error> {
    let cfs = Cfs::open(path)?;
    check_structure(&cfs)?;
    let fail = |kind| Error {
        path: path.to_owned(),
        kind,
    };
    let h = cfs.header();

    // Every chunk, in parallel; the lowest failing chunk is reported.
    let jobs = if jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        jobs
    };
    let n = cfs.image().chunks.len();
    let next = AtomicU64::new(0);
    let first_bad = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| -> Result<(), Error> {
                    let mut decoder = Decoder::new().map_err(|e| {
                        fail(ErrorKind::Chunk {
                            chunk: 0,
                            offset: 0,
                            problem: e.into(),
                        })
                    })?;
                    loop {
                        // Batches of 64 keep the counter cheap and the order roughly ascending.
                        let start = next.fetch_add(64, Ordering::Relaxed) as usize;
                        if start >= n {
                            return Ok(());
                        }
                        for idx in start..(start + 64).min(n) {
                            let data = cfs.read_chunk(idx as ChunkIdx, &mut decoder)?;
                            done_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        let mut worst: Option<Error> = None;
        for w in workers {
            let result = w.join().unwrap_or_else(|_| {
                Err(fail(ErrorKind::Erofs(
                    "a verification thread panicked".into(),
                )))
            });
            if let Err(e) = result {
                let key = |e: &Error| match e.kind {
                    ErrorKind::Chunk { chunk, .. } => chunk,
                    _ => 0,
                };
                if worst.as_ref().is_none_or(|w| key(&e) < key(w)) {
                    worst = Some(e);
                }
            }
        }
        worst
    });
    if let Some(e) = first_bad {
        return Err(e);
    }
    Ok(Report {
        metadata_digest: h.metadata_digest,
        chunks: n,
        chunk_bytes: cfs.image().chunks.iter().map(|c| u64::from(c.size)).sum(),
        erofs: h.has_erofs(),
    })
}
