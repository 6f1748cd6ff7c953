//! Fetching ahead of sequential reads, in the background, for both readers of a lazy registry
//! mount (docs/lazy.md §8).
//!
//! Reads of a pack that continue each other (a file streamed, a tree read in storage order)
//! form a [`Stream`]. From the third read in a row, the stream keeps a window of the pack's next
//! bytes scheduled for fetching, a window that doubles per read from [`AHEAD_MIN`] to
//! [`AHEAD_MAX`]; the frames the mount reads in it are fetched by a few background threads
//! ([`Pool`]), in pieces of at most [`PIECE`] so that several requests are in flight, while the
//! reader goes on. A read that reaches a frame still in flight waits for that fetch (the
//! store's claims) rather than asking again. A lone read (one small file) schedules nothing.
//! Over a 20 ms, 200 Mbit/s link a read-all is then bound by the link, not by one round trip
//! per read.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use chunkfs_distribution::store::Pack;

/// The first fetch-ahead window of a stream.
pub const AHEAD_MIN: u64 = 256 << 10;
/// The largest fetch-ahead window.
pub const AHEAD_MAX: u64 = 4 << 20;
/// Largest piece one background fetch asks for.
pub const PIECE: u64 = 1 << 20;
/// How far past the previous read's end a read may start and still continue it (readahead of
/// several files, padding, frames the mount does not read).
const GAP: u64 = 1 << 20;
/// Background fetches at once per process.
const THREADS: usize = 4;
/// Fetches waiting for a thread; more are dropped (reads fetch what they need anyway).
const QUEUE: usize = 64;

/// Reads of one pack file that continue each other, and how far ahead of them fetches were
/// scheduled.
#[derive(Debug, Default)]
pub struct Stream {
    next: u64,
    run: u32,
    window: u64,
    scheduled: u64,
}

impl Stream {
    /// Notes a read of `offset..end`; returns the bytes of the pack file to fetch in the
    /// background now, if any.
    pub fn advance(&mut self, offset: u64, end: u64) -> Option<Range<u64>> {
        let continues = self.next != 0
            && offset <= self.next.saturating_add(GAP)
            && offset.saturating_add(GAP) >= self.next;
        if !continues {
            *self = Stream {
                next: end,
                scheduled: end,
                ..Stream::default()
            };
            return None;
        }
        self.run = self.run.saturating_add(1);
        self.next = self.next.max(end);
        if self.run < 2 {
            return None;
        }
        self.window = self.window.saturating_mul(2).clamp(AHEAD_MIN, AHEAD_MAX);
        let from = self.scheduled.max(end);
        let to = end.saturating_add(self.window);
        if to <= from {
            return None;
        }
        self.scheduled = to;
        Some(from..to)
    }
}

/// The frames of `pack` in `bytes` that `is_used` marks, as runs of adjacent frames of at most
/// [`PIECE`] bytes: what the background fetches ask for.
pub fn pieces(pack: &Pack, is_used: &[bool], bytes: Range<u64>) -> Vec<Range<usize>> {
    let e = pack.entries();
    let mut out: Vec<Range<usize>> = Vec::new();
    for i in pack.frames_in(bytes) {
        if !is_used.get(i).copied().unwrap_or(false) {
            continue;
        }
        let Some(f) = e.get(i) else { continue };
        let end = f.offset + u64::from(f.stored_len);
        match out.last_mut() {
            Some(r)
                if r.end == i
                    && e.get(r.start)
                        .is_some_and(|s| end.saturating_sub(s.offset) <= PIECE) =>
            {
                r.end = i + 1;
            }
            _ => out.push(i..i + 1),
        }
    }
    out
}

type Job = Box<dyn FnOnce() + Send>;

/// The process's background fetch threads.
pub struct Pool {
    tx: crossbeam_channel::Sender<Job>,
}

impl Pool {
    /// The process's pool, started on first use.
    pub fn get() -> &'static Arc<Pool> {
        static POOL: OnceLock<Arc<Pool>> = OnceLock::new();
        POOL.get_or_init(|| {
            let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
            for k in 0..THREADS {
                let rx = rx.clone();
                // Without threads, jobs just wait in the queue and reads fetch on demand.
                let _ = std::thread::Builder::new()
                    .name(format!("chunkfs-ahead-{k}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    });
            }
            Arc::new(Pool { tx })
        })
    }

    /// Runs `job` on a background thread, unless the queue is full (then it is dropped).
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.tx.try_send(Box::new(job)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_schedule_a_doubling_window_from_their_third_read_on() {
        let mut s = Stream::default();
        // A lone read, and a read elsewhere: nothing.
        assert_eq!(s.advance(1 << 30, (1 << 30) + 4096), None);
        assert_eq!(s.advance(5 << 30, (5 << 30) + 4096), None);
        let base: u64 = 5 << 30;
        let mut at = base + 4096;
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(s.advance(at, at + 65536));
            at += 65536;
        }
        let end = |k: u64| base + 4096 + 65536 * (k + 1);
        assert_eq!(got[0], None, "the second read in a row");
        assert_eq!(got[1], Some(end(1)..end(1) + AHEAD_MIN));
        // Each later read schedules from where the last scheduling ended.
        assert_eq!(got[2], Some(end(1) + AHEAD_MIN..end(2) + 2 * AHEAD_MIN));
        assert_eq!(got[3], Some(end(2) + 2 * AHEAD_MIN..end(3) + 4 * AHEAD_MIN));
        assert_eq!(got[4], Some(end(3) + 4 * AHEAD_MIN..end(4) + 8 * AHEAD_MIN));
        assert_eq!(got[5], Some(end(4) + 8 * AHEAD_MIN..end(5) + AHEAD_MAX));
        // A jump starts over.
        assert_eq!(s.advance(at + 10 * GAP, at + 10 * GAP + 1), None);
    }
}
