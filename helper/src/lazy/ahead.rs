//! Fetching ahead of sequential reads, in the background, for both readers of a lazy registry
//! mount (docs/lazy.md §8).
//!
//! Reads of a pack that continue each other (a file streamed, a tree read in storage order)
//! form a [`Stream`]. From the third read in a row, the stream keeps a window of the pack's next
//! bytes scheduled for fetching: as much as the stream has read so far, at most
//! [`AHEAD_MAX`], so that what a stream fetches and never reads (past the end of the file the
//! workload wanted) is at most what it did read, while a long stream (a read-all) soon has
//! megabytes in flight. The frames the mount reads in the window are fetched by a few
//! background threads ([`Pool`]) while the reader goes on; a read that reaches a frame still in
//! flight waits for that fetch (the store's claims) rather than asking again. A lone read (one
//! small file) schedules nothing.
//!
//! Request sizes grow with the stream ([`piece_for`]: a quarter of the window, from
//! [`PIECE_MIN`] to [`PIECE_MAX`]), and the window is scheduled in batches of one piece. Every
//! request costs a round trip plus the registry's own time (about 30 ms on a 20 ms link), during
//! which the link idles unless other requests are in flight: with [`THREADS`] requests of `P`
//! bytes in flight on a link of rate `B` and latency `L`, the throughput is about
//! `THREADS·P / (L + THREADS·P / B)`. Pieces of 512 KiB (what the window's batches gave before)
//! reach 0.76 of a 200 Mbit/s link at L = 30 ms; pieces of 4 MiB reach 0.97. A short stream
//! keeps small pieces: a reader that catches up with a piece in flight waits for all of it.

use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use chunkfs_distribution::store::{MAX_REQUEST, Pack};

/// The largest fetch-ahead window.
pub const AHEAD_MAX: u64 = 32 << 20;
/// The smallest request a stream's fetches ahead are cut into.
pub const PIECE_MIN: u64 = 256 << 10;
/// The largest: the store's request bound.
pub const PIECE_MAX: u64 = MAX_REQUEST;
/// How much a stream must have read before its window spills into the next packs (a pack
/// smaller than the largest window must not keep a read-all from spilling).
pub const SPILL_AFTER: u64 = 4 << 20;
/// How far past the previous read's end a read may start and still continue it (readahead of
/// several files, padding, frames the mount does not read).
const GAP: u64 = 1 << 20;
/// Streams followed at once per pack (a tree read in order reads the packed stream of small
/// files and the frames of large files, stored apart: two streams).
const STREAMS: usize = 4;
/// Background fetches at once per process.
pub const THREADS: usize = 4;
/// Fetches waiting for a thread; when it is full, the stream schedules the rest again later.
const QUEUE: usize = 64;

/// The request size of a stream whose window is `window` bytes: a quarter of it, so that four
/// requests are in flight, within [`PIECE_MIN`]..=[`PIECE_MAX`].
pub fn piece_for(window: u64) -> u64 {
    (window / 4).clamp(PIECE_MIN, PIECE_MAX)
}

/// What a stream asks for: the pack-file bytes to fetch now, in requests of at most `piece`
/// bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ahead {
    /// Pack-file bytes.
    pub bytes: Range<u64>,
    /// The largest request to cut them into.
    pub piece: u64,
    /// The stream's window: what it has read, at most the largest window.
    pub window: u64,
}

/// Reads of one pack file that continue each other, and how far ahead of them fetches were
/// scheduled.
#[derive(Debug, Default)]
pub struct Stream {
    /// A read started the stream (a default one continues nothing).
    live: bool,
    start: u64,
    /// Bytes read before `start` that count towards the window (a stream continued from the
    /// previous pack).
    carried: u64,
    next: u64,
    run: u32,
    scheduled: u64,
}

/// The streams of one pack file: a read continues the stream it is near, or replaces the
/// least recently used one.
#[derive(Debug)]
pub struct Streams {
    streams: Vec<(u64, Stream)>,
    clock: u64,
    /// The largest window ([`AHEAD_MAX`] but in tests).
    max: u64,
}

impl Default for Streams {
    fn default() -> Self {
        Self::new(AHEAD_MAX)
    }
}

impl Streams {
    /// No streams yet; windows of at most `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            streams: Vec::new(),
            clock: 0,
            max: max.max(1),
        }
    }

    /// Notes a read of `offset..end`; returns what to fetch in the background now, if anything.
    pub fn advance(&mut self, offset: u64, end: u64) -> Option<Ahead> {
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
        let max = self.max;
        let (used, s) = self.streams.get_mut(k)?;
        *used = self.clock;
        s.advance(offset, end, max)
    }

    /// The fetch of the bytes from `at` on, scheduled by one of the streams, could not be
    /// queued: that stream schedules them again at its next read.
    pub fn unschedule(&mut self, at: u64) {
        for (_, s) in &mut self.streams {
            if s.next <= at.saturating_add(GAP) && at < s.scheduled {
                s.scheduled = at.max(s.next);
            }
        }
    }
}

impl Streams {
    /// A stream arriving from the previous pack with a window of `window` bytes: makes sure
    /// bytes `at..upto` are scheduled, by a stream that reads at `at` continue (carrying that
    /// window); returns the part not scheduled before.
    pub fn seed(&mut self, at: u64, upto: u64, window: u64) -> Option<Range<u64>> {
        let window = window.min(self.max);
        self.clock = self.clock.saturating_add(1);
        let k = match self.streams.iter().position(|(_, s)| s.continued_by(at)) {
            Some(k) => k,
            None => {
                let fresh = Stream {
                    live: true,
                    start: at,
                    carried: window,
                    next: at,
                    run: 2,
                    scheduled: at,
                };
                if self.streams.len() < STREAMS {
                    self.streams.push((0, fresh));
                    self.streams.len() - 1
                } else {
                    let k = self
                        .streams
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (used, _))| *used)
                        .map_or(0, |(k, _)| k);
                    if let Some(slot) = self.streams.get_mut(k) {
                        slot.1 = fresh;
                    }
                    k
                }
            }
        };
        let (used, s) = self.streams.get_mut(k)?;
        *used = self.clock;
        let from = s.scheduled.max(at);
        if upto <= from {
            return None;
        }
        s.scheduled = upto;
        Some(from..upto)
    }
}

impl Stream {
    fn continued_by(&self, offset: u64) -> bool {
        self.live
            && offset <= self.next.saturating_add(GAP)
            && offset.saturating_add(GAP) >= self.next
    }

    /// Notes a read of `offset..end`; returns what to fetch in the background now, if
    /// anything, with a window of at most `max` bytes.
    pub fn advance(&mut self, offset: u64, end: u64, max: u64) -> Option<Ahead> {
        let continues = self.continued_by(offset);
        if !continues {
            *self = Stream {
                live: true,
                start: offset,
                carried: 0,
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
        let read = self
            .next
            .saturating_sub(self.start)
            .saturating_add(self.carried);
        let window = read.min(max);
        let piece = piece_for(window);
        let from = self.scheduled.max(end);
        let to = end.saturating_add(window);
        // Scheduled in batches of a piece (half the window while it is small), not read by
        // read: each request costs a round trip, so they must be large to fill the link.
        if to.saturating_sub(from) < piece.min(window / 2).max(1) {
            return None;
        }
        self.scheduled = to;
        Some(Ahead {
            bytes: from..to,
            piece,
            window,
        })
    }
}

/// The frames of `pack` in `bytes` that `is_used` marks, as runs of adjacent frames of at most
/// `max` bytes (a frame larger than that alone): what the background fetches ask for.
pub fn pieces(pack: &Pack, is_used: &[bool], bytes: Range<u64>, max: u64) -> Vec<Range<usize>> {
    let used = pack
        .frames_in(bytes)
        .filter(|&i| is_used.get(i).copied().unwrap_or(false));
    super::work::runs(pack, used, max)
}

/// Makes frames present: how a reader's background fetches reach the store.
pub trait Fetch: Send + Sync + 'static {
    /// Makes frames `frames` of device `device` present (errors are left for the reads that
    /// need them).
    fn fetch(&self, device: usize, frames: Range<usize>);
}

/// Background fetches of one device: pack-file bytes, in requests of at most `piece` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The device (pack) in the mount's order.
    pub device: usize,
    /// Pack-file bytes.
    pub bytes: Range<u64>,
    /// The largest request to cut them into.
    pub piece: u64,
}

/// The streams of a mount's packs and what their reads call for, without the packs (no I/O):
/// [`Follower`]'s scheduling.
///
/// A stream that has read at least [`SPILL_AFTER`] (a read-all, or a large file) and whose
/// window runs past the last frame its pack's mount reads continues into the next packs: what
/// is left of its window is scheduled from the first used frame of the next pack that has
/// any, and a stream is left there, carrying the window, for the reads that arrive (a tree
/// walk reads the packs one after another, each from its start: without this, every pack's
/// stream started again with small requests, the reader waiting at each one). Packs are in the order the image's chunk list first uses them, which is the order
/// a tree walk reads them: a read-all then keeps the link busy across packs instead of
/// draining it at each pack's end and ramping up again at the next one's start. What this
/// fetches and nobody reads is at most one window, after a stream that read at least as much.
#[derive(Debug)]
pub struct Plan {
    /// Per device: pack-file bytes from its first used frame's start to its last one's end.
    used: Vec<Option<Range<u64>>>,
    streams: Vec<Mutex<Streams>>,
}

impl Plan {
    /// Devices whose used frames span `used` (`None`: the mount reads none), windows of at
    /// most `max` bytes.
    pub fn new(used: Vec<Option<Range<u64>>>, max: u64) -> Self {
        let streams = used.iter().map(|_| Mutex::new(Streams::new(max))).collect();
        Self { used, streams }
    }

    fn streams(&self, device: usize) -> Option<std::sync::MutexGuard<'_, Streams>> {
        self.streams
            .get(device)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Notes a read of `read` (pack-file bytes) of `device`; returns the fetches ahead it
    /// calls for, in order (this device's, then the next devices' a full window spills
    /// into). They count as scheduled: give back what could not be queued with
    /// [`Plan::unschedule`].
    pub fn read(&self, device: usize, read: Range<u64>) -> Vec<Batch> {
        let Some(ahead) = self
            .streams(device)
            .and_then(|mut s| s.advance(read.start, read.end))
        else {
            return Vec::new();
        };
        // How far the window reaches past the pack's last used frame: into the next packs.
        let mut beyond = match self.used.get(device) {
            Some(Some(used)) if ahead.window >= SPILL_AFTER => {
                ahead.bytes.end.saturating_sub(used.end)
            }
            _ => 0,
        };
        let mut out = vec![Batch {
            device,
            bytes: ahead.bytes,
            piece: ahead.piece,
        }];
        for next in device + 1..self.used.len() {
            if beyond == 0 {
                break;
            }
            let Some(Some(used)) = self.used.get(next) else {
                continue;
            };
            let upto = used.start.saturating_add(beyond).min(used.end);
            beyond = beyond.saturating_sub(used.end - used.start);
            if let Some(bytes) = self
                .streams(next)
                .and_then(|mut s| s.seed(used.start, upto, ahead.window))
            {
                out.push(Batch {
                    device: next,
                    bytes,
                    piece: ahead.piece,
                });
            }
        }
        out
    }

    /// The fetches of `batch` from pack-file byte `at` on could not be queued: the stream
    /// that scheduled them schedules them again at its next read.
    pub fn unschedule(&self, batch: &Batch, at: u64) {
        if let Some(mut s) = self.streams(batch.device) {
            s.unschedule(at.max(batch.bytes.start));
        }
    }
}

/// The fetch-ahead of one mount: its packs in device order, the frames the mount reads from
/// each, and their streams ([`Plan`]); the fetches go to the process's [`Pool`].
pub struct Follower {
    /// Per device: the pack and `is_used[i]` (the mount reads frame `i`; nothing else is ever
    /// fetched).
    packs: Vec<(Arc<Pack>, Vec<bool>)>,
    plan: Plan,
    fetch: Arc<dyn Fetch>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("packs", &self.packs.len())
            .finish()
    }
}

impl Follower {
    /// The packs of a mount, in device order, each with the frames the mount reads from it
    /// (index positions), fetched by `fetch`.
    pub fn new(packs: Vec<(Arc<Pack>, &[usize])>, fetch: Arc<dyn Fetch>) -> Self {
        let mut spans = Vec::with_capacity(packs.len());
        let packs = packs
            .into_iter()
            .map(|(pack, used)| {
                let mut is_used = vec![false; pack.entries().len()];
                for &f in used {
                    if let Some(u) = is_used.get_mut(f) {
                        *u = true;
                    }
                }
                let first = is_used.iter().position(|&u| u);
                let last = is_used.iter().rposition(|&u| u);
                spans.push(match (first, last) {
                    (Some(a), Some(b)) => match (pack.frame_range(a), pack.frame_range(b)) {
                        (Some(a), Some(b)) => Some(a.start..b.end),
                        _ => None,
                    },
                    _ => None,
                });
                (pack, is_used)
            })
            .collect();
        Self {
            packs,
            plan: Plan::new(spans, AHEAD_MAX),
            fetch,
        }
    }

    /// Notes a read of `read` (pack-file bytes) of device `device` and queues on the
    /// process's [`Pool`] the fetches ahead it calls for. Never blocks on the network.
    pub fn read(&self, device: usize, read: Range<u64>) {
        let batches = self.plan.read(device, read);
        let pool = Pool::get();
        for (k, batch) in batches.iter().enumerate() {
            let Some((pack, is_used)) = self.packs.get(batch.device) else {
                continue;
            };
            for frames in pieces(pack, is_used, batch.bytes.clone(), batch.piece) {
                let at = pack.frame_range(frames.start).map_or(0, |r| r.start);
                let (fetch, device) = (Arc::clone(&self.fetch), batch.device);
                if !pool.submit(move || fetch.fetch(device, frames)) {
                    // The queue is full: this batch from here on and the later ones are
                    // scheduled again at their streams' next reads.
                    self.plan.unschedule(batch, at);
                    for later in batches.iter().skip(k + 1) {
                        self.plan.unschedule(later, later.bytes.start);
                    }
                    return;
                }
            }
        }
    }
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

    /// Runs `job` on a background thread, unless the queue is full (then it is dropped and
    /// false returned).
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.tx.try_send(Box::new(job)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_schedule_what_they_read_from_their_third_read_on_in_batches() {
        let mut s = Streams::new(AHEAD_MAX);
        // A lone read, and a read elsewhere: nothing.
        assert_eq!(s.advance(1 << 30, (1 << 30) + 4096), None);
        let base: u64 = 5 << 30;
        assert_eq!(s.advance(base, base + 65536), None);
        let mut got = Vec::new();
        for k in 1..8u64 {
            got.push(
                s.advance(base + 65536 * k, base + 65536 * (k + 1))
                    .map(|a| a.bytes),
            );
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
                last = s.advance(at, at + (1 << 19)).map(|a| a.bytes).or(last);
            }
        }
        let r = last.unwrap();
        assert!(r.end - (base + (1 << 19) * 65) <= AHEAD_MAX, "{r:?}");
        // A jump starts over.
        assert_eq!(s.advance(far + 10 * GAP, far + 10 * GAP + 1), None);
    }

    #[test]
    fn requests_grow_with_the_stream_and_batches_are_a_piece() {
        assert_eq!(piece_for(0), PIECE_MIN);
        assert_eq!(piece_for(4 << 20), 1 << 20);
        assert_eq!(piece_for(AHEAD_MAX), PIECE_MAX);
        let mut s = Streams::new(AHEAD_MAX);
        let base: u64 = 3 << 30;
        let read = 128u64 << 10;
        let mut asked = Vec::new();
        for k in 0..400u64 {
            let at = base + read * k;
            if let Some(a) = s.advance(at, at + read) {
                // Never further ahead than the window, never more than AHEAD_MAX.
                assert!(a.bytes.end <= at + read + AHEAD_MAX, "{a:?}");
                assert!(
                    a.bytes.end - (at + read) <= read * (k + 1),
                    "{a:?} at read {k}"
                );
                assert_eq!(a.piece, piece_for(((k + 1) * read).min(AHEAD_MAX)));
                asked.push(a);
            }
        }
        // Contiguous: everything after the third read is scheduled exactly once.
        for w in asked.windows(2) {
            assert_eq!(w[0].bytes.end, w[1].bytes.start);
        }
        // A long stream asks in batches of at least a whole (largest) piece.
        let late: Vec<_> = asked.iter().filter(|a| a.piece == PIECE_MAX).collect();
        assert!(late.len() > 5, "{}", late.len());
        assert!(
            late.iter()
                .all(|a| a.bytes.end - a.bytes.start >= PIECE_MAX),
            "{late:?}"
        );
    }

    #[test]
    fn what_could_not_be_queued_is_scheduled_again() {
        let mut s = Streams::default();
        let base: u64 = 2 << 30;
        let read = 256u64 << 10;
        let mut last = None;
        for k in 0..8u64 {
            let at = base + read * k;
            last = s.advance(at, at + read).or(last);
        }
        let a = last.unwrap();
        // The queue was full from the middle of that batch on.
        let cut = a.bytes.start + (a.bytes.end - a.bytes.start) / 2;
        s.unschedule(cut);
        let at = base + read * 8;
        let again = s.advance(at, at + read).unwrap();
        assert_eq!(again.bytes.start, cut, "{again:?}");
        // Another pack's offsets, far away, change nothing.
        s.unschedule(base + (1 << 30));
        let at = base + read * 9;
        if let Some(b) = s.advance(at, at + read) {
            assert!(b.bytes.start >= again.bytes.end, "{b:?}");
        }
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

    /// Reads `len`-byte pieces of `device` in order over `range`; every batch asked for.
    fn read_through(plan: &Plan, device: usize, range: Range<u64>, len: u64) -> Vec<Batch> {
        let mut out = Vec::new();
        let mut at = range.start;
        while at < range.end {
            out.extend(plan.read(device, at..(at + len).min(range.end)));
            at += len;
        }
        out
    }

    #[test]
    fn a_full_window_spills_into_the_next_used_packs_at_most_a_window() {
        let max: u64 = 4 << 20;
        let spans = vec![
            Some(4096..(10 << 20)),
            None,
            Some(8192..8192 + (1 << 20)),
            Some(4096..(64 << 20)),
        ];
        let plan = Plan::new(spans.clone(), max);
        let got = read_through(&plan, 0, 4096..(10 << 20), 128 << 10);
        let spilled: Vec<&Batch> = got.iter().filter(|b| b.device != 0).collect();
        assert!(
            spilled.iter().all(|b| b.device == 2 || b.device == 3),
            "{spilled:?}"
        );
        // Device 2 whole (1 MiB, less than the window), then device 3 from its start.
        let two: Vec<_> = spilled.iter().filter(|b| b.device == 2).collect();
        for w in two.windows(2) {
            assert_eq!(w[0].bytes.end, w[1].bytes.start);
        }
        assert_eq!(
            two.first().map(|b| b.bytes.start)..two.last().map(|b| b.bytes.end),
            Some(8192)..Some(8192 + (1 << 20))
        );
        let three: Vec<_> = spilled.iter().filter(|b| b.device == 3).collect();
        assert_eq!(three.first().map(|b| b.bytes.start), Some(4096));
        let total: u64 = spilled.iter().map(|b| b.bytes.end - b.bytes.start).sum();
        assert!(total > 0 && total <= max, "{total} bytes spilled");
        // Contiguous on device 3: nothing asked twice.
        for w in three.windows(2) {
            assert_eq!(w[0].bytes.end, w[1].bytes.start);
        }
        let seeded = three.last().map_or(4096, |b| b.bytes.end);

        // The reads arriving at device 3 continue the seeded stream, with a full window at once,
        // from where the seeding ended.
        let next = plan.read(3, 4096..4096 + (128 << 10));
        assert_eq!(next.len(), 1, "{next:?}");
        assert_eq!(next[0].device, 3);
        assert!(next[0].bytes.start >= seeded, "{next:?} after {seeded}");
        assert_eq!(next[0].bytes.end, 4096 + (128 << 10) + max);
        assert_eq!(next[0].piece, piece_for(max));
    }

    #[test]
    fn a_short_stream_stays_in_its_pack() {
        let plan = Plan::new(vec![Some(0..(1 << 20)), Some(0..(1 << 20))], AHEAD_MAX);
        // A 1 MiB file streamed to the end: its window runs past the pack's used bytes, but it
        // read less than a whole window.
        let got = read_through(&plan, 0, 0..(1 << 20), 64 << 10);
        assert!(!got.is_empty());
        assert!(got.iter().all(|b| b.device == 0), "{got:?}");
        // A lone read and a device that does not exist ask for nothing.
        assert!(plan.read(1, 4096..8192).is_empty());
        assert!(plan.read(7, 0..4096).is_empty());
    }

    #[test]
    fn a_spilled_batch_that_could_not_be_queued_is_asked_for_again() {
        let max: u64 = SPILL_AFTER;
        let plan = Plan::new(vec![Some(0..(6 << 20)), Some(0..(8 << 20))], max);
        let got = read_through(&plan, 0, 0..(6 << 20), 128 << 10);
        let spilled = got.iter().find(|b| b.device == 1).cloned();
        let spilled = spilled.expect("a read-all spills");
        assert_eq!(spilled.bytes.start, 0);
        plan.unschedule(&spilled, spilled.bytes.start);
        // The device's first reads schedule from their own end again (the seeded stream
        // continues, its bytes no longer counted as asked for).
        let again = plan.read(1, 0..(128 << 10));
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].bytes, (128 << 10)..(128 << 10) + max);
    }

    #[test]
    fn packs_smaller_than_the_largest_window_spill_carrying_the_streams_window() {
        // A read-all of 24 MiB packs never reads a whole 32 MiB window in one pack.
        let plan = Plan::new(vec![Some(0..(24 << 20)), Some(0..(24 << 20))], AHEAD_MAX);
        let got = read_through(&plan, 0, 0..(24 << 20), 128 << 10);
        let spilled: Vec<&Batch> = got.iter().filter(|b| b.device == 1).collect();
        let total: u64 = spilled.iter().map(|b| b.bytes.end - b.bytes.start).sum();
        assert!((SPILL_AFTER..24 << 20).contains(&total), "{total} bytes");
        let end = spilled.last().map_or(0, |b| b.bytes.end);
        // The next pack's reads continue the seeded stream: what they ask for starts where the
        // spill ended, and reaches no further than the window the stream had (not the largest).
        let next = read_through(&plan, 1, 0..(8 << 20), 128 << 10);
        assert_eq!(next.first().map(|b| b.bytes.start), Some(end), "{next:?}");
        let reach = next.first().map_or(0, |b| b.bytes.end);
        assert!(reach <= (8 << 20) + (24 << 20), "{next:?}");
        // A stream that read less than SPILL_AFTER stays in its pack.
        let plan = Plan::new(vec![Some(0..(3 << 20)), Some(0..(3 << 20))], AHEAD_MAX);
        let got = read_through(&plan, 0, 0..(3 << 20), 128 << 10);
        assert!(got.iter().all(|b| b.device == 0), "{got:?}");
    }
}
