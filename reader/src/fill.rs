//! Page-cache fill for random reads: after a read that does not look sequential, a background
//! thread hands the kernel the rest of the verified chunk behind it (FUSE `NOTIFY_STORE`), so
//! that later reads in that chunk are page-cache hits instead of requests.
//!
//! Why: the kernel asks a FUSE filesystem for exactly the 4 KiB page of a random read, so every
//! further read in the same chunk was a round trip to the daemon, while the kernel's squashfs
//! fills the page cache with the whole block it decompressed. The daemon has decompressed and
//! verified the whole chunk anyway; copying it into the page cache costs a memory copy.
//!
//! Read-around ([`crate::Config::fill_around`]): the thread also loads the next extents of the
//! same file and stores them, as the kernel reads megabytes of an image around a page it misses.
//! A random read misses once per chunk, and each miss waits for a decompression and a sha256;
//! loaded on this thread, the chunks around it are ready, and in the page cache, when later reads
//! come, while the reading process waits for its own miss on the other core. Sparse reads of a
//! big file pay decompressions no read needs, on this thread only; chunks are verified as any
//! other, and none is fetched from a lazy device for it. Not while recording (`-o record`): the
//! reads of pages it stored never reach the daemon, so the list would miss their chunks.
//!
//! From a thread of its own: a store waits for pages the kernel has locked for reads still in
//! flight, which only the FUSE threads can answer. Requests are dropped when the thread is
//! behind; a store is an optimisation, never needed for a correct read.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
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
/// Extents remembered as stored by read-around, so that the next random reads nearby do not
/// store them again; forgotten all at once when full (a forgotten one is stored again, which
/// costs a copy).
const STORED_MAX: usize = 16 * 1024;

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

/// The bytes of a partial last page of an extent stored: the start of that page in the file
/// and the extent's bytes in it, for the page a store of the next extent completes.
type Tail = (u64, Vec<u8>);

/// Read-around still to do: the extent at file offset `at` of file `nid` (node id `ino`), and
/// `left - 1` more after it.
struct Around {
    ino: INodeNo,
    nid: u64,
    at: u64,
    tail: Option<Tail>,
    left: usize,
}

/// Read-around waiting behind reads; the oldest is dropped beyond this.
const AROUND_MAX: usize = 64;

/// What the thread does next.
enum Work {
    /// Store the extent a read was served from.
    Read(Job),
    /// Load and store an extent after it.
    Around(Around),
}

fn run(reader: &Weak<Reader>, rx: &Receiver<Job>, notifier: &OnceLock<Notifier>) {
    let mut stored = HashSet::new();
    let mut around: VecDeque<Around> = VecDeque::new();
    loop {
        // Reads' own extents first: read-around only while no read waits.
        let work = match rx.try_recv() {
            Ok(job) => Work::Read(job),
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => match around.pop_front() {
                Some(a) => Work::Around(a),
                None => match rx.recv() {
                    Ok(job) => Work::Read(job),
                    Err(_) => return,
                },
            },
        };
        let Some(reader) = reader.upgrade() else {
            return;
        };
        let Some(notifier) = notifier.get() else {
            continue;
        };
        let (ino, nid, extent, tail, left) = match work {
            Work::Read(job) => {
                let extent = reader.extent_bytes(job.nid, job.pos);
                let around = if reader.is_recording() {
                    0
                } else {
                    reader.config.fill_around
                };
                (job.ino, job.nid, extent, None, around)
            }
            Work::Around(a) => {
                if stored.contains(&(a.nid, a.at)) {
                    continue;
                }
                let extent = reader.extent_bytes_around(a.nid, a.at);
                (a.ino, a.nid, extent, a.tail, a.left.saturating_sub(1))
            }
        };
        let Some((start, chunk, len)) = extent else {
            continue;
        };
        let Some(bytes) = chunk.get(..len) else {
            continue;
        };
        let Some(size) = reader.descriptor().inode(nid).map(|i| i.size()) else {
            continue;
        };
        if !store(notifier, ino, start, bytes, size) {
            continue;
        }
        // The page across the boundary with the extent before, which neither fills whole.
        if let Some((at, page)) = tail.and_then(|t| boundary_page(t, start, bytes, size)) {
            let _ = notifier.store(ino, at, &page);
        }
        if stored.len() >= STORED_MAX {
            stored.clear();
        }
        stored.insert((nid, start));
        let end = start.saturating_add(len as u64);
        if left > 0 && end < size {
            if around.len() >= AROUND_MAX {
                around.pop_front();
            }
            around.push_back(Around {
                ino,
                nid,
                at: end,
                tail: partial_tail(start, bytes),
                left,
            });
        }
    }
}

/// Stores the whole pages of the extent at file offset `start` of file `ino` (`size` bytes);
/// false when the kernel refused (an evicted inode, an unmounted session).
fn store(notifier: &Notifier, ino: INodeNo, start: u64, bytes: &[u8], size: u64) -> bool {
    let Some((first, range)) = whole_pages(start, bytes.len(), size) else {
        return true;
    };
    let mut at = first;
    for piece in bytes[range].chunks(PIECE) {
        if notifier.store(ino, at, piece).is_err() {
            return false;
        }
        at += piece.len() as u64;
    }
    true
}

/// The partial last page of the extent at file offset `start` with `bytes`: none when the
/// extent ends on a page boundary or covers no page start.
fn partial_tail(start: u64, bytes: &[u8]) -> Option<Tail> {
    let end = start.checked_add(bytes.len() as u64)?;
    let first = end - end % PAGE;
    if first == end || first < start {
        return None;
    }
    let skip = usize::try_from(first - start).ok()?;
    Some((first, bytes.get(skip..)?.to_vec()))
}

/// The page completed by the extent at file offset `start` with `bytes`, after `tail` of the
/// extent before it, in a file of `size` bytes: its file offset and bytes, when the two make a
/// whole page (or the file's last page).
fn boundary_page(tail: Tail, start: u64, bytes: &[u8], size: u64) -> Option<(u64, Vec<u8>)> {
    let (first, mut page) = tail;
    if first.checked_add(page.len() as u64)? != start {
        return None;
    }
    let last = first.checked_add(PAGE)?.min(size);
    let take = usize::try_from(last.checked_sub(start)?).ok()?;
    page.extend_from_slice(bytes.get(..take)?);
    Some((first, page))
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

    #[test]
    fn the_page_across_two_extents_is_assembled_from_both() {
        let a: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..9000u32).map(|i| (i % 7) as u8).collect();
        // a covers 1000..6000, b 6000..15000: the page 4096..8192 takes 1904 bytes of a.
        let tail = partial_tail(1000, &a).unwrap();
        assert_eq!(tail, (4096, a[3096..].to_vec()));
        let (at, page) = boundary_page(tail.clone(), 6000, &b, 1 << 20).unwrap();
        assert_eq!(at, 4096);
        assert_eq!(page.len(), 4096);
        assert_eq!(page[..1904], a[3096..]);
        assert_eq!(page[1904..], b[..2192]);
        // The file ends inside b's first page: the page stops there.
        let (_, last) = boundary_page(tail.clone(), 6000, &b, 7000).unwrap();
        assert_eq!(last.len(), 7000 - 4096);
        // Not adjacent, or b too short for the rest of the page: nothing.
        assert_eq!(boundary_page(tail.clone(), 6001, &b, 1 << 20), None);
        assert_eq!(boundary_page(tail, 6000, &b[..100], 1 << 20), None);
        // An extent ending on a page, or inside the page it starts in: no tail.
        assert_eq!(partial_tail(0, &a[..4096]), None);
        assert_eq!(partial_tail(5000, &a[..1000]), None);
    }
}
