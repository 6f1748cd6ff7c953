//! Adding a pack to the store (docs/store.md §2, §3): its tail (index, padding, trailer) is
//! fetched by range and checked (docs/format.md §7.3); a window is allocated under
//! `alloc.lock`; the index, the sparse pack file and the state file are written, the state
//! file last: a pack exists once its state file does (gc removes it first).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chunkfs_format::digest::Digest;

use super::error::Error;
use super::files::{TempFile, write_atomic};
use super::pack::{Pack, with_ext};
use super::state::{Header, StateFile};
use super::window::{self, SLOT};
use super::{Store, proc};
use crate::oci::pack::{PackIndex, TRAILER_LEN};
use crate::source::BlobSource;

/// Largest pack blob the store takes: far above what chunkfs writes (64 MiB of frames and their
/// index, docs/format.md §7.4), low enough that a manifest claiming an absurd length is refused
/// before a file or a window is made for it.
pub const PACK_BLOB_MAX: u64 = 4 << 30;

/// Bytes fetched from a pack's end in the first request: the trailer and, for most packs,
/// the whole index (a second request fetches the rest of a larger one). An index takes about
/// 67 bytes a frame: 64 KiB hold the index of a pack of up to ~950 frames (a bookworm image's
/// packs have 8-41 KB of index); more would cost every mount bandwidth (each of its packs' tails
/// shares the link) for frames it discards.
pub const TAIL_GUESS: u64 = 64 << 10;

impl Store {
    /// The pack `digest` of `blob_len` bytes: the one in the store, or added now with its index
    /// fetched from `source` by range. A pack already here with another length is refused.
    pub fn add_pack(
        &self,
        digest: &Digest,
        blob_len: u64,
        source: &dyn BlobSource,
    ) -> Result<Arc<Pack>, Error> {
        if let Some(p) = self.pack(digest)? {
            return same_len(p, blob_len);
        }
        let tail = self.fetch_tail(digest, blob_len, source)?;
        let where_ = Path::new(&format!("{}: pack {digest}", source.name())).to_owned();
        let index =
            PackIndex::parse_tail(blob_len, &tail, &where_).map_err(|e| Error::BadData {
                pack: *digest,
                from: source.name(),
                problem: format!("its index: {e}"),
            })?;
        let _alloc = self.lock_alloc()?;
        if let Some(p) = self.pack(digest)? {
            return same_len(p, blob_len);
        }
        let first = window::allocate(&self.windows_in_use()?, window::slots_for(blob_len));
        let base = first
            .checked_mul(SLOT)
            .filter(|b| b.checked_add(blob_len).is_some())
            .ok_or_else(|| Error::Usage(format!("no window left for pack {digest}")))?;
        let path = self.pack_path(digest);
        let tmp = self.tmp_dir();
        write_atomic(&tmp, &with_ext(&path, "index"), &tail)?;
        let file = TempFile::new(&tmp, "pack")?;
        file.file()
            .set_len(base + blob_len)
            .map_err(Error::io(file.path(), "sizing a pack file"))?;
        file.persist(&path)?;
        let header = Header {
            base,
            blob_len,
            frames: index.entries.len() as u64,
            boot_id: proc::boot_id()
                .map_err(Error::io("/proc/sys/kernel/random/boot_id", "reading"))?,
        };
        StateFile::create(&tmp, &with_ext(&path, "state"), &header)?;
        match self.pack(digest)? {
            Some(p) => Ok(p),
            None => Err(Error::corrupt(&path, "pack vanished while it was added")),
        }
    }

    /// The windows of every pack, as `(first slot, slot count)`; damaged state files are
    /// skipped (a pack that cannot be opened is in no new mount).
    pub(crate) fn windows_in_use(&self) -> Result<Vec<(u64, u64)>, Error> {
        let mut used = Vec::new();
        for d in self.pack_digests()? {
            let path = with_ext(&self.pack_path(&d), "state");
            if let Ok(state) = StateFile::open(&path, SLOT) {
                let h = state.header();
                used.push((h.base / SLOT, window::slots_for(h.blob_len)));
            }
        }
        Ok(used)
    }

    /// The tail of pack `digest`: its last [`TAIL_GUESS`] bytes, and the rest of the index
    /// in a second request if the trailer says it starts earlier.
    fn fetch_tail(
        &self,
        digest: &Digest,
        blob_len: u64,
        source: &dyn BlobSource,
    ) -> Result<Vec<u8>, Error> {
        let bad = |problem: String| Error::BadData {
            pack: *digest,
            from: source.name(),
            problem,
        };
        if !(TRAILER_LEN..=PACK_BLOB_MAX).contains(&blob_len) {
            return Err(bad(format!(
                "length {blob_len} is outside what a pack may be ({TRAILER_LEN}..={PACK_BLOB_MAX})"
            )));
        }
        let start = blob_len.saturating_sub(TAIL_GUESS);
        let mut tail = self.fetch(digest, blob_len, start..blob_len, source)?;
        let mut trailer = [0u8; TRAILER_LEN as usize];
        let at = tail.len().saturating_sub(TRAILER_LEN as usize);
        trailer.copy_from_slice(tail.get(at..).unwrap_or_default());
        let where_ = Path::new(&format!("{}: pack {digest}", source.name())).to_owned();
        let tail_start = PackIndex::tail_start(blob_len, &trailer, &where_)
            .map_err(|e| bad(format!("its trailer: {e}")))?;
        if tail_start < start {
            let mut head = self.fetch(digest, blob_len, tail_start..start, source)?;
            head.extend_from_slice(&tail);
            tail = head;
        } else {
            tail.drain(..(tail_start - start) as usize);
        }
        Ok(tail)
    }

    fn fetch(
        &self,
        digest: &Digest,
        blob_len: u64,
        range: std::ops::Range<u64>,
        source: &dyn BlobSource,
    ) -> Result<Vec<u8>, Error> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let bytes = source
            .read_range(digest, blob_len, range.clone())
            .map_err(|e| {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Error::Fetch {
                    blob: *digest,
                    range: range.clone(),
                    from: source.name(),
                    source: e,
                }
            })?;
        self.counters
            .fetched_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if bytes.len() as u64 != range.end - range.start {
            return Err(Error::BadData {
                pack: *digest,
                from: source.name(),
                problem: format!(
                    "asked for bytes {}..{}, got {} bytes",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
    }
}

fn same_len(p: Arc<Pack>, blob_len: u64) -> Result<Arc<Pack>, Error> {
    if p.blob_len() != blob_len {
        return Err(Error::Image {
            what: format!("pack {}", p.digest()),
            problem: format!(
                "the store has it with {} bytes, the image says {blob_len}",
                p.blob_len()
            ),
        });
    }
    Ok(p)
}
