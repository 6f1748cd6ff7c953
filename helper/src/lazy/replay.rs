//! Filling ranges in the background, in a given order, a few at a time: the prefetch replay
//! (`-o prefetch=`: the frames of the chunks an image reads first, in first-read order) and
//! the background pull (`-o pull=background`: every frame the mount reads), for the FUSE
//! reader's lazy devices and for the fanotify filler alike (docs/lazy.md §8).
//!
//! Ranges are taken in order by [`THREADS`] workers, so several requests are in flight while
//! the earliest ranges still come first. A range that fails is left for a later round when
//! `retry` is set (the background pull retries until it is done or stopped, backing off while
//! the registry is unreachable); the prefetch replay tries each range once (reads fetch what
//! it missed).

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Ranges filled at once.
pub const THREADS: usize = 4;
/// Largest range given to one fill (the store's request bound).
pub const PIECE: u64 = chunkfs_distribution::store::MAX_REQUEST;

/// A range of one of the mount's pack files (by position), whole frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The file (device) index.
    pub file: usize,
    /// Pack-file byte range.
    pub range: Range<u64>,
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Ranges filled.
    pub done: usize,
    /// Ranges that failed in the last round (0 when everything was filled).
    pub failed: usize,
    /// Rounds after the first.
    pub retries: u32,
}

/// Fills `items` with `fill` on `threads` threads, earliest first; with `retry`, again and
/// again (with backoff) until every item is filled or `stop` is set. `log` hears failures.
pub fn run(
    items: &[Item],
    threads: usize,
    retry: bool,
    stop: &AtomicBool,
    fill: &(dyn Fn(&Item) -> Result<(), String> + Sync),
    log: &(dyn Fn(&str) + Sync),
) -> Outcome {
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut out = Outcome::default();
    loop {
        let next = AtomicUsize::new(0);
        let tried = AtomicUsize::new(0);
        let failed = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads.clamp(1, 16).min(pending.len().max(1)) {
                s.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let (Some(&i), false) = (pending.get(k), stop.load(Ordering::Relaxed))
                        else {
                            return;
                        };
                        let Some(item) = items.get(i) else { return };
                        tried.fetch_add(1, Ordering::Relaxed);
                        match fill(item) {
                            Ok(()) => {}
                            Err(e) => {
                                log(&format!("file {} bytes {:?}: {e}", item.file, item.range));
                                failed
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .push(i);
                            }
                        }
                    }
                });
            }
        });
        let mut failed = failed
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failed.sort_unstable();
        out.done += tried.into_inner().saturating_sub(failed.len());
        out.failed = failed.len();
        pending = failed;
        if pending.is_empty() || !retry || stop.load(Ordering::Relaxed) {
            return out;
        }
        out.retries = out.retries.saturating_add(1);
        let pause = Duration::from_millis(250u64 << out.retries.min(5));
        let until = Instant::now() + pause;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `ranges` of file `file` cut into items of at most [`PIECE`] bytes (a caller whose ranges
/// are whole frames gives whole frames: a fill makes every frame a piece overlaps present).
pub fn pieces(file: usize, ranges: &[Range<u64>]) -> Vec<Item> {
    let mut out = Vec::new();
    for r in ranges {
        let mut at = r.start;
        while at < r.end {
            let end = at.saturating_add(PIECE).min(r.end);
            out.push(Item {
                file,
                range: at..end,
            });
            at = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn items_in_order_failures_retried_until_done() {
        let items = pieces(0, &[0..10 << 20, 20 << 20..21 << 20]);
        assert_eq!(items.len(), 4);
        assert_eq!(items[2].range, 8 << 20..10 << 20);
        let stop = AtomicBool::new(false);
        let seen = Mutex::new(Vec::new());
        let failures = AtomicUsize::new(2);
        let fill = |i: &Item| {
            seen.lock().unwrap().push(i.range.start);
            if i.range.start == 4 << 20
                && failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                    .is_ok()
            {
                return Err("registry down".into());
            }
            Ok(())
        };
        let out = run(&items, 1, true, &stop, &fill, &|_| {});
        assert_eq!(
            out,
            Outcome {
                done: 4,
                failed: 0,
                retries: 2
            }
        );
        let seen = seen.into_inner().unwrap();
        assert_eq!(&seen[..4], &[0, 4 << 20, 8 << 20, 20 << 20]);
        assert_eq!(seen.len(), 6);

        // Without retry a failure is left; a stop ends the run at once.
        let out = run(&items, 3, false, &stop, &|_| Err("no".into()), &|_| {});
        assert_eq!((out.done, out.failed), (0, 4));
        stop.store(true, Ordering::SeqCst);
        let out = run(&items, 2, true, &stop, &|_| Err("no".into()), &|_| {});
        assert_eq!(out.done, 0);
    }
}
