//! Page-cache fill for random reads: after a read that does not look sequential, a background
//! thread hands the kernel the rest of the verified chunk behind it (FUSE `NOTIFY_STORE`), so
//! that later reads in that chunk are page-cache hits instead of requests.
//!
//! Why: the kernel asks a FUSE filesystem for exactly the 4 KiB page of a random read, so every
//! further read in the same chunk was a round trip to the daemon, while the kernel's squashfs
//! fills the page cache with the whole block it decompressed. The daemon has decompressed and
//! verified the whole chunk anyway; copying it into the page cache costs a memory copy.
//!
//! From a thread of its own: a store waits for pages the kernel has locked for reads still in
//! flight, which only the FUSE threads can answer. Requests are dropped when the thread is
//! behind; a store is an optimisation, never needed for a correct read.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock, Weak};

use fuser::{INodeNo, Notifier};

use crate::reader::Reader;

/// Stores waiting for the thread; more are dropped.
const QUEUE: usize = 32;
/// Largest piece of one notification.
const PIECE: usize = 256 * 1024;
/// The kernel marks a page of the cache valid only when a store fills it from its start (or up
/// to the end of the file), so stores cover whole pages.
const PAGE: u64 = 4096;

/// A file range to push: file `nid` (FUSE node id `ino`), the chunk holding byte `pos`.
struct Job {
    ino: INodeNo,
    nid: u64,
    pos: u64,
}

/// The handle the FUSE layer offers random reads to; the thread ends when it is dropped.
pub(crate) struct Filler {
    tx: Option<SyncSender<Job>>,
}

impl Filler {
    /// Starts the thread. `notifier` is set once the session exists; until then offers are
    /// ignored. The reader is held weakly, so it never keeps an unmounted image alive.
    pub fn start(reader: &Arc<Reader>, notifier: Arc<OnceLock<Notifier>>) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        let weak = Arc::downgrade(reader);
        let spawned = std::thread::Builder::new()
            .name("chunkfs-fill".into())
            .spawn(move || run(&weak, &rx, &notifier));
        Filler {
            tx: spawned.ok().map(|_| tx),
        }
    }

    /// Offers the chunk holding byte `pos` of file `nid` (node id `ino`) to the page cache.
    pub fn offer(&self, ino: INodeNo, nid: u64, pos: u64) {
        if let Some(tx) = &self.tx {
            // A full queue (the thread is behind) or a finished thread drops the offer.
            let _ = tx.try_send(Job { ino, nid, pos });
        }
    }
}

fn run(reader: &Weak<Reader>, rx: &Receiver<Job>, notifier: &OnceLock<Notifier>) {
    while let Ok(job) = rx.recv() {
        let Some(reader) = reader.upgrade() else {
            return;
        };
        let Some(notifier) = notifier.get() else {
            continue;
        };
        let Some((start, chunk, len)) = reader.extent_bytes(job.nid, job.pos) else {
            continue;
        };
        let Some(bytes) = chunk.get(..len) else {
            continue;
        };
        let Some(size) = reader.descriptor().inode(job.nid).map(|i| i.size()) else {
            continue;
        };
        let Some((first, range)) = whole_pages(start, bytes.len(), size) else {
            continue;
        };
        let mut at = first;
        for piece in bytes[range].chunks(PIECE) {
            // An evicted inode (ENOENT) or an unmounted session: nothing to fill.
            if notifier.store(job.ino, at, piece).is_err() {
                break;
            }
            at += piece.len() as u64;
        }
    }
}

/// The part of the extent at file offset `start` of `len` bytes, in a file of `size` bytes, that
/// covers whole pages (the last one may end at the end of the file): its file offset and its
/// range within the extent's bytes.
fn whole_pages(start: u64, len: usize, size: u64) -> Option<(u64, std::ops::Range<usize>)> {
    let end = start.checked_add(len as u64)?.min(size);
    let first = start.checked_next_multiple_of(PAGE)?;
    let last = if end == size { end } else { end - end % PAGE };
    if first >= last {
        return None;
    }
    let skip = usize::try_from(first - start).ok()?;
    let take = usize::try_from(last - first).ok()?;
    Some((first, skip..skip + take))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_pages_or_the_file_tail_are_stored() {
        // An extent from 1000 to 20000 of a long file: pages 4096..16384.
        assert_eq!(
            whole_pages(1000, 19_000, 1 << 20),
            Some((4096, 3096..15384))
        );
        // Ending at the end of the file: the partial last page too.
        assert_eq!(whole_pages(8192, 5000, 13_192), Some((8192, 0..5000)));
        // Page-aligned on both sides.
        assert_eq!(whole_pages(0, 8192, 1 << 20), Some((0, 0..8192)));
        // Nothing whole inside.
        assert_eq!(whole_pages(100, 3000, 1 << 20), None);
        // Clamped to the file's size.
        assert_eq!(whole_pages(0, 10_000, 6000), Some((0, 0..6000)));
    }
}
