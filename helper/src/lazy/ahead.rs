//! Fetching ahead of sequential reads, in the background, for both readers of a lazy registry
//! mount (docs/lazy.md §8).
//!
//! Reads of a pack that continue each other (a file streamed, a tree read in storage order)
//! form a [`Stream`]. From the third read in a row, the stream keeps a window of the pack's next
//! bytes scheduled for fetching: as much as the stream has read so far, at most
//! [`AHEAD_MAX`], so that what a stream fetches and never reads (past the end of the file the
//! workload wanted) is at most what it did read, while a long stream (a read-all) soon has
//! megabytes in flight. It is scheduled in batches of half a window (at most 512 KiB): every
//! request costs a round trip. The frames the mount reads in the window are fetched by a few
//! background threads ([`Pool`]), in pieces of at most [`PIECE`] so that several requests are
//! in flight, while the reader goes on. A read that reaches a frame still in flight waits for
//! that fetch (the store's claims) rather than asking again. A lone read (one small file)
//! schedules nothing.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use chunkfs_distribution::store::Pack;

/// The largest fetch-ahead window.
pub const AHEAD_MAX: u64 = 8 << 20;
/// The largest batch of bytes a stream waits for before scheduling them.
const BATCH: u64 = 512 << 10;
/// Largest piece one background fetch asks for.
pub const PIECE: u64 = 1 << 20;
/// How far past the previous read's end a read may start and still continue it (readahead of
/// several files, padding, frames the mount does not read).
const GAP: u64 = 1 << 20;
/// Streams followed at once per pack (a tree read in order reads the packed stream of small
/// files and the frames of large files, stored apart: two streams).
const STREAMS: usize = 4;
/// Background fetches at once per process.
const THREADS: usize = 4;
/// Fetches waiting for a thread; more are dropped (reads fetch what they need anyway).
const QUEUE: usize = 64;

/// Reads of one pack file that continue each other, and how far ahead of them fetches were
/// scheduled.
#[derive(Debug, Default)]
pub struct Stream {
    start: u64,
    next: u64,
    run: u32,
    scheduled: u64,
}

/// The streams of one pack file: a read continues the stream it is near, or replaces the
/// least recently used one.
#[derive(Debug, Default)]
pub struct Streams {
    streams: Vec<(u64, Stream)>,
    clock: u64,
}

impl Streams {
    /// Notes a read of `offset..end`; returns the bytes of the pack file to fetch in the
    /// background now, if any.
    pub fn advance(&mut self, offset: u64, end: u64) -> Option<Range<u64>> {
        self.clock = self.clock.saturating_add(1);
        let k = match self
            .streams
            .iter()
            .position(|(_, s)| s.continued_by(offset))
        {
            Some(k) => k,
            None if self.streams.len() < STREAMS => {
                self.streams.push((0, Stream::default()));
                self.streams.len() - 1
            }
            None => self
                .streams
                .iter()
                .enumerate()
                .min_by_key(|(_, (used, _))| *used)
                .map_or(0, |(k, _)| k),
        };
        let (used, s) = self.streams.get_mut(k)?;
        *used = self.clock;
        s.advance(offset, end)
    }
}

impl Stream {
    fn continued_by(&self, offset: u64) -> bool {
        self.next != 0
            && offset <= self.next.saturating_add(GAP)
            && offset.saturating_add(GAP) >= self.next
    }

    /// Notes a read of `offset..end`; returns the bytes of the pack file to fetch in the
    /// background now, if any.
    pub fn advance(&mut self, offset: u64, end: u64) -> Option<Range<u64>> {
        let continues = self.continued_by(offset);
        if !continues {
            *self = Stream {
                start: offset,
                next: end,
                scheduled: end,
                run: 0,
            };
            return None;
        }
        self.run = self.run.saturating_add(1);
        self.next = self.next.max(end);
        // Concurrent readers (the kernel's readahead, FUSE threads) arrive a little out of
        // order: the stream spans everything read so far.
        self.start = self.start.min(offset);
        if self.run < 2 {
            return None;
        }
        let window = self.next.saturating_sub(self.start).min(AHEAD_MAX);
        let from = self.scheduled.max(end);
        let to = end.saturating_add(window);
        // Scheduled in batches of half a window (at most 512 KiB), not read by read: each
        // request costs a round trip, so they must be large to fill the link.
        if to.saturating_sub(from) < (window / 2).clamp(1, BATCH) {
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
    fn streams_schedule_what_they_read_from_their_third_read_on_in_batches() {
        let mut s = Stream::default();
        // A lone read, and a read elsewhere: nothing.
        assert_eq!(s.advance(1 << 30, (1 << 30) + 4096), None);
        let base: u64 = 5 << 30;
        assert_eq!(s.advance(base, base + 65536), None);
        let mut got = Vec::new();
        for k in 1..8u64 {
            got.push(s.advance(base + 65536 * k, base + 65536 * (k + 1)));
        }
        let end = |k: u64| base + 65536 * (k + 1);
        assert_eq!(got[0], None, "the second read in a row");
        // The third: as much as the 192 KiB read so far, after its end.
        assert_eq!(got[1], Some(end(2)..end(2) + 3 * 65536));
        // Then from where the last scheduling ended, once half a window is due.
        assert_eq!(got[2], Some(end(2) + 3 * 65536..end(3) + 4 * 65536));
        assert_eq!(got[3], None, "less than half a window due");
        assert!(got[4].is_some());
        // A long stream: at most AHEAD_MAX ahead.
        let far = base + (64 << 20);
        let mut last = None;
        for k in 0..64u64 {
            let at = base + (1 << 19) * (k + 1);
            if at < far {
                last = s.advance(at, at + (1 << 19)).or(last);
            }
        }
        let r = last.unwrap();
        assert!(r.end - (base + (1 << 19) * 65) <= AHEAD_MAX, "{r:?}");
        // A jump starts over.
        assert_eq!(s.advance(far + 10 * GAP, far + 10 * GAP + 1), None);
    }

    #[test]
    fn interleaved_streams_are_followed_apart() {
        let mut s = Streams::default();
        let (a, b) = (1u64 << 30, 3u64 << 30);
        let mut scheduled = [0; 2];
        for k in 0..8u64 {
            for (n, base) in [a, b].into_iter().enumerate() {
                let at = base + 65536 * k;
                scheduled[n] += usize::from(s.advance(at, at + 65536).is_some());
            }
        }
        assert!(
            scheduled[0] >= 3 && scheduled[0] == scheduled[1],
            "both streams fetch ahead: {scheduled:?}"
        );
    }
}
