//! Decompress-ahead for sequential reads: while the kernel consumes one chunk, a background
//! thread loads (decompresses and verifies) the chunks stored after it into the cache.
//!
//! Why: one process reading through a tree waits for each FUSE request in turn, so with
//! decompression and hashing done on demand they sit on its critical path while other cores
//! idle. Chunks are stored in the order a tree walk reads them (files in inode order, small files
//! in the packed stream in the same order), so "the frames stored next" is what the reader will
//! ask for next, across files. Measurements: docs/performance.md.
//!
//! Only reads that look sequential give a hint (a read from offset 0, as every small file is
//! read, or a readahead-sized one); random reads do not, so they cost no extra decompression.
//! Hints are dropped when the thread is behind: prefetching never blocks a request.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Weak};

use crate::reader::{Access, Reader};

/// Hints waiting for the thread; more are dropped.
const QUEUE: usize = 64;

/// The handle the FUSE layer gives hints to; the thread ends when it is dropped.
pub(crate) struct Prefetcher {
    tx: Option<SyncSender<(u64, u64)>>,
}

impl Prefetcher {
    /// Starts the thread, which keeps `depth` chunks ahead. It holds the reader weakly, so it
    /// never keeps an unmounted image alive.
    pub fn start(reader: &Arc<Reader>, depth: usize) -> Self {
        let (tx, rx) = sync_channel(QUEUE);
        let weak = Arc::downgrade(reader);
        let spawned = std::thread::Builder::new()
            .name("chunkfs-prefetch".into())
            .spawn(move || run(&weak, &rx, depth));
        // Without the thread, reads work as before: hints just go nowhere.
        Prefetcher {
            tx: spawned.ok().map(|_| tx),
        }
    }

    /// Hints that bytes `[offset, offset + size)` of inode `nid` were just read.
    pub fn hint(&self, nid: u64, offset: u64, size: u32) {
        if Access::of(offset, size) != Access::Sequential {
            return;
        }
        if let Some(tx) = &self.tx {
            // A full queue (the thread is behind) or a finished thread just drops the hint.
            let _ = tx.try_send((nid, offset.saturating_add(size.into())));
        }
    }
}

fn run(reader: &Weak<Reader>, rx: &Receiver<(u64, u64)>, depth: usize) {
    let mut last = None;
    while let Ok((nid, end)) = rx.recv() {
        let Some(reader) = reader.upgrade() else {
            return;
        };
        let chunks = reader.chunks_after(nid, end, depth);
        // Many small files share a packed chunk: each hints at the same chunks ahead.
        if chunks.is_empty() || chunks.first() == last.as_ref() {
            continue;
        }
        last = chunks.first().copied();
        for c in chunks.into_iter().skip(1) {
            reader.preload(c);
        }
    }
}
