//! Recording the chunks reads need, in the order they first need them: the prefetch list a mount
//! with `-o record=FILE` writes (docs/format.md §3.6, "Prefetch list files"), which `chunkfs pack
//! --prefetch FILE` puts into an image.
//!
//! Only reads are recorded, when they ask for a chunk (from the cache or not, whether its load
//! then succeeds or not): decompress-ahead ([`crate::prefetch`]) loads the chunks stored next,
//! and recording those would write the image's storage order instead of the workload's.
//! Chunks are named by the sha256 of the digest table entry behind them; data without an entry
//! (the descriptor's zero frame) is not recorded. Memory is bounded by the digest tables: one
//! entry per distinct digest. When recording is off the read path pays one `Option` check.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chunkfs_kernel_abi::parse::{MapKind, Mapping};

use crate::digests::Digests;

/// The chunks recorded so far, in first-read order, and the digests among them.
#[derive(Default)]
struct Order {
    seen: HashSet<[u8; 32]>,
    digests: Vec<[u8; 32]>,
}

/// Shared by the reader, which notes reads, and the [`Recording`] handles that write them out.
#[derive(Default)]
pub(crate) struct Recorder {
    order: Mutex<Order>,
    /// Most entries kept: the number of digest table entries (each chunk is recorded once).
    limit: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Records the chunk behind mapping `m` if no read needed it before.
    pub(crate) fn note(&self, m: &Mapping, digests: &Digests) {
        let entry = match m.kind {
            MapKind::Encoded {
                device,
                offset,
                len,
                ..
            } => digests.frame_in(device, offset, offset.saturating_add(len)),
            MapKind::Raw { device, offset } | MapKind::Interlaced { device, offset } => {
                digests.frame_at(device, offset)
            }
            _ => None,
        };
        let Some(entry) = entry else {
            return;
        };
        let mut o = lock(&self.order);
        if o.digests.len() < self.limit && o.seen.insert(entry.sha256) {
            o.digests.push(entry.sha256);
        }
    }
}

/// A handle on what a [`crate::Reader`] records ([`crate::Reader::record`]); clones share it,
/// and it stays valid after the reader is mounted or dropped.
#[derive(Clone)]
pub struct Recording(pub(crate) Arc<Recorder>);

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("chunks", &self.len())
            .finish()
    }
}

impl Recording {
    /// Chunks recorded so far.
    pub fn len(&self) -> usize {
        lock(&self.0.order).digests.len()
    }

    /// True before the first read of a chunk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sha256 of each chunk recorded so far, in the order reads first needed them.
    pub fn digests(&self) -> Vec<[u8; 32]> {
        lock(&self.0.order).digests.clone()
    }

    /// The recording as a prefetch list file: a `#` comment line, then `sha256:HEX` per chunk.
    pub fn to_text(&self) -> String {
        render(&self.digests())
    }

    /// Writes the recording to `path` ([`write_prefetch_list`]). Returns the number of chunks
    /// written.
    pub fn write(&self, path: &Path) -> std::io::Result<usize> {
        let digests = self.digests();
        write_prefetch_list(path, &digests)?;
        Ok(digests.len())
    }
}

/// Writes a prefetch list file naming `digests` to `path` atomically (a temporary file in the
/// same directory, synced, then renamed over `path`): a reader of `path` sees a whole list, the
/// old one or the new. Shared by every recorder (the FUSE reader's and the lazy kernel path's).
pub fn write_prefetch_list(path: &Path, digests: &[[u8; 32]]) -> std::io::Result<()> {
    /// Makes the temporary file names of concurrent writes distinct.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result =
        write_synced(&tmp, render(digests).as_bytes()).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    // Makes the rename durable; the list is already complete under its name.
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

/// The text of a prefetch list file naming `digests`.
fn render(digests: &[[u8; 32]]) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "# chunkfs prefetch list (docs/format.md §3.6): {} chunks in the order reads first needed them\n",
        digests.len()
    );
    text.reserve(digests.len().saturating_mul(72));
    for d in digests {
        text.push_str("sha256:");
        for b in d {
            let _ = write!(text, "{b:02x}");
        }
        text.push('\n');
    }
    text
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
