//! `chunkfs verify docker://...`: a chunkfs image in a registry checked where it is, by HTTP
//! range requests, without the local store (whose copies of frames would hide what the
//! registry serves) and without a temporary copy on disk.
//!
//! Checked: the manifest against its digest (and its shape: config, metadata, packs), the
//! config against its digest (and that it is an image config), the metadata blob against its
//! digest and the format's invariants, each pack's index (its trailer and checksum, fetched from
//! the pack's end), that every chunk of the metadata is in one of the image's packs, and every
//! chunk's frame: fetched (adjacent frames in one request of at most 4 MiB, several requests
//! in flight), decompressed and hashed against the chunk's sha256.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chunkfs_distribution::oci::pack::{PackEntry, PackIndex, TRAILER_LEN};
use chunkfs_distribution::oci::read::{self, CONFIG_MAX, METADATA_BLOB_MAX};
use chunkfs_distribution::oci::select::PlatformSpec;
use chunkfs_distribution::oci::spec::{self, ImageConfig};
use chunkfs_distribution::registry::{Client, ImageRef};
use chunkfs_format::ErrorClass;
use chunkfs_format::compress::Decoder;
use chunkfs_format::digest::Digest;

use crate::Error;

/// Bytes one request fetches at most: a run of adjacent frames.
const RUN_MAX: u64 = 4 << 20;
/// Bytes fetched from a pack's end first: the trailer and, for most packs, the whole index.
const TAIL_GUESS: u64 = 256 << 10;
/// Requests in flight when `--jobs 0`.
const DEFAULT_JOBS: usize = 4;
/// The most requests in flight.
const MAX_JOBS: usize = 16;

/// What was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The manifest's digest.
    pub manifest_digest: Digest,
    /// The metadata digest.
    pub metadata_digest: Digest,
    /// Pack indexes checked.
    pub packs: usize,
    /// Frames fetched, decompressed and hashed.
    pub frames: usize,
    /// Their decompressed bytes.
    pub chunk_bytes: u64,
    /// Their stored bytes.
    pub frame_bytes: u64,
}

/// One pack layer and its index.
struct Pack {
    digest: Digest,
    len: u64,
    entries: Vec<PackEntry>,
}

/// Verifies the image `reference` names (`platform`'s in a multi-platform image) with `jobs`
/// requests in flight (0: a default); `done` counts checked chunk bytes for a progress bar,
/// `total` is set to the bytes to check once they are known.
pub fn verify(
    client: &Client,
    reference: &ImageRef,
    platform: Option<&PlatformSpec>,
    jobs: usize,
    done: &AtomicU64,
    total: &AtomicU64,
) -> Result<Report, Error> {
    let name = reference.to_string();
    let corrupt = |what: String| Error::new(ErrorClass::Corrupt, format!("{name}: {what}"));
    let resolved = client.resolve(reference, platform)?;
    let manifest = &resolved.manifest;
    let manifest_digest = resolved
        .descriptor
        .sha256()
        .map_err(|e| corrupt(format!("manifest: {e}")))?;
    if !resolved.is_chunkfs() {
        let layers: Vec<&str> = manifest
            .layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect();
        return Err(Error::new(
            ErrorClass::Unsupported,
            format!(
                "{name}: not a chunkfs image (its layers are {}); an ordinary image's layers are checked when it is converted: `chunkfs pack {name} IMAGE.cfs`",
                layers.join(", ")
            ),
        ));
    }
    read::check_manifest(manifest)
        .map_err(|p| corrupt(format!("manifest {manifest_digest}: {p}")))?;
    let config = client.read_descriptor(&manifest.config, CONFIG_MAX)?;
    spec::from_json::<ImageConfig>("config", &config)
        .map_err(|e| corrupt(format!("config {}: {e}", manifest.config.digest)))?;
    let meta = &manifest.layers[0];
    let blob = client.read_descriptor(meta, METADATA_BLOB_MAX)?;
    let metadata_digest = Digest::of(&blob);
    let image = chunkfs_format::schema::codec::decode_blob(&blob)
        .map_err(|e| corrupt(format!("metadata blob {metadata_digest}: {e}")))?;
    drop(blob);
    image
        .validate()
        .map_err(|e| corrupt(format!("metadata blob {metadata_digest}: {e}")))?;

    let mut packs = Vec::with_capacity(manifest.layers.len() - 1);
    for layer in &manifest.layers[1..] {
        let digest = layer
            .sha256()
            .map_err(|e| corrupt(format!("manifest {manifest_digest}: {e}")))?;
        let index = fetch_index(client, &name, &digest, layer.size)?;
        packs.push(Pack {
            digest,
            len: layer.size,
            entries: index.entries,
        });
    }

    // The frame each chunk is read from: the first of the image's packs that lists it.
    let mut where_: HashMap<(Digest, u32), (usize, usize)> = HashMap::new();
    for (k, p) in packs.iter().enumerate() {
        for (i, e) in p.entries.iter().enumerate() {
            where_.entry((e.digest, e.raw_len)).or_insert((k, i));
        }
    }
    let mut needed: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); packs.len()];
    for (n, c) in image.chunks.iter().enumerate() {
        let &(k, i) = where_.get(&(c.digest, c.size)).ok_or_else(|| {
            corrupt(format!(
                "chunk {n} ({}, {} bytes) is in none of its packs",
                c.digest, c.size
            ))
        })?;
        needed[k].insert(i);
    }
    let runs = runs(&packs, &needed);
    let (frames, chunk_bytes, frame_bytes) = runs.iter().fold((0, 0, 0), |(f, c, s), (k, r)| {
        let e = &packs[*k].entries[r.clone()];
        (
            f + e.len(),
            c + e.iter().map(|e| u64::from(e.raw_len)).sum::<u64>(),
            s + e.iter().map(|e| u64::from(e.stored_len)).sum::<u64>(),
        )
    });
    total.store(chunk_bytes, Ordering::Relaxed);
    check_runs(client, &name, &packs, runs, jobs, done)?;
    Ok(Report {
        manifest_digest,
        metadata_digest,
        packs: packs.len(),
        frames,
        chunk_bytes,
        frame_bytes,
    })
}

/// The index of pack `digest` (`len` bytes), fetched from its end: the last [`TAIL_GUESS`]
/// bytes, and the rest of a larger index in a second request.
fn fetch_index(client: &Client, name: &str, digest: &Digest, len: u64) -> Result<PackIndex, Error> {
    let corrupt = |what: String| {
        Error::new(
            ErrorClass::Corrupt,
            format!("{name}: pack {digest}: {what}"),
        )
    };
    if len < TRAILER_LEN {
        return Err(corrupt(format!("{len} bytes, too short to be a pack")));
    }
    let path = PathBuf::from(format!("{name}: pack {digest}"));
    let start = len.saturating_sub(TAIL_GUESS);
    let mut tail = client.read_range(digest, len, start..len)?;
    let at = tail.len().saturating_sub(TRAILER_LEN as usize);
    let trailer: [u8; TRAILER_LEN as usize] = tail
        .get(at..)
        .and_then(|t| t.try_into().ok())
        .ok_or_else(|| corrupt("no trailer".into()))?;
    let tail_start = PackIndex::tail_start(len, &trailer, &path).map_err(Error::from)?;
    if tail_start < start {
        let mut head = client.read_range(digest, len, tail_start..start)?;
        head.extend_from_slice(&tail);
        tail = head;
    } else {
        tail.drain(..(tail_start - start) as usize);
    }
    Ok(PackIndex::parse_tail(len, &tail, &path)?)
}

/// Runs of adjacent needed frames, per pack, each at most [`RUN_MAX`] bytes from its first
/// frame's start to its last frame's end (a single larger frame is a run of its own).
fn runs(packs: &[Pack], needed: &[BTreeSet<usize>]) -> Vec<(usize, Range<usize>)> {
    let mut out = Vec::new();
    for (k, frames) in needed.iter().enumerate() {
        let e = &packs[k].entries;
        let mut current: Option<Range<usize>> = None;
        for &i in frames {
            let end = e[i].offset + u64::from(e[i].stored_len);
            match &mut current {
                Some(r) if r.end == i && end - e[r.start].offset <= RUN_MAX => r.end = i + 1,
                _ => {
                    if let Some(r) = current.replace(i..i + 1) {
                        out.push((k, r));
                    }
                }
            }
        }
        if let Some(r) = current {
            out.push((k, r));
        }
    }
    out
}

/// Fetches every run and checks each frame in it, `jobs` requests in flight; the first
/// failure stops the others.
fn check_runs(
    client: &Client,
    name: &str,
    packs: &[Pack],
    runs: Vec<(usize, Range<usize>)>,
    jobs: usize,
    done: &AtomicU64,
) -> Result<(), Error> {
    let threads = match jobs {
        0 => DEFAULT_JOBS,
        n => n.min(MAX_JOBS),
    };
    let queue = Mutex::new(runs.into_iter());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut decoder = None;
                while !failed.load(Ordering::Relaxed) {
                    let next = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .next();
                    let Some((k, frames)) = next else { return };
                    let result = check_run(client, name, &packs[k], frames, &mut decoder, done);
                    if let Err(e) = result {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Fetches frames `frames` of `pack` in one request and checks each against its chunk.
fn check_run(
    client: &Client,
    name: &str,
    pack: &Pack,
    frames: Range<usize>,
    decoder: &mut Option<Decoder>,
    done: &AtomicU64,
) -> Result<(), Error> {
    let e = &pack.entries[frames];
    let (Some(first), Some(last)) = (e.first(), e.last()) else {
        return Ok(());
    };
    let start = first.offset;
    let bytes = client.read_range(
        &pack.digest,
        pack.len,
        start..last.offset + u64::from(last.stored_len),
    )?;
    let decoder = match decoder {
        Some(d) => d,
        None => decoder.insert(Decoder::new().map_err(Error::from)?),
    };
    for entry in e {
        let bad = |problem: String| {
            Error::new(
                ErrorClass::Corrupt,
                format!(
                    "{name}: pack {}: the frame at {} (chunk {}, {} bytes): {problem}",
                    pack.digest, entry.offset, entry.digest, entry.raw_len
                ),
            )
        };
        let at = (entry.offset - start) as usize;
        let frame = bytes
            .get(at..at + entry.stored_len as usize)
            .ok_or_else(|| bad("outside the bytes fetched".into()))?;
        let data = decoder
            .decode(frame, entry.raw_len)
            .map_err(|e| bad(e.to_string()))?;
        let got = Digest::of(&data);
        if got != entry.digest {
            return Err(bad(format!("decompresses to bytes with sha256 {got}")));
        }
        done.fetch_add(u64::from(entry.raw_len), Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, stored_len: u32) -> PackEntry {
        PackEntry {
            digest: Digest::default(),
            offset,
            stored_len,
            raw_len: stored_len,
        }
    }

    #[test]
    fn runs_merge_adjacent_needed_frames_up_to_the_limit() {
        let mb = 1 << 20;
        let pack = Pack {
            digest: Digest::default(),
            len: 0,
            entries: vec![
                entry(0, 1000),
                entry(1000, 1000),
                entry(2000, 1000),
                entry(3000, mb),
                entry(3000 + u64::from(mb), 3 * mb),
                entry(3000 + 4 * u64::from(mb), 5 * mb),
            ],
        };
        let needed: BTreeSet<usize> = [0, 2, 3, 4, 5].into_iter().collect();
        let got = runs(std::slice::from_ref(&pack), &[needed]);
        // 1 is not needed; 2..5 span 4 MiB + 1000 bytes: 4 starts a new run; 5 alone is
        // larger than the limit.
        assert_eq!(got, vec![(0, 0..1), (0, 2..4), (0, 4..5), (0, 5..6)]);
    }
}
