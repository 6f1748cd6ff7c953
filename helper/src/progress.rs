//! Progress display on stderr, only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// A bar or spinner refreshed from counters by a background thread; dropped, it disappears.
pub struct Progress {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows a bar if stderr is a terminal. `render` turns the counters into (position, message).
    pub fn start(
        total: Option<u64>,
        render: impl Fn() -> (u64, String) + Send + 'static,
    ) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template("{bar:30} {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {binary_bytes} {binary_bytes_per_sec} {elapsed} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        Some(Self::drive(bar, move |b| {
            let (pos, msg) = render();
            b.set_position(pos);
            b.set_message(msg);
        }))
    }

    /// A transfer's bar if stderr is a terminal: bytes done of `total` (either may change as
    /// the transfer learns more), rate and time left, after `what` (`pulling`, `fetching`).
    pub fn for_transfer(what: &str, done: Arc<AtomicU64>, total: Arc<AtomicU64>) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::new(total.load(Ordering::Relaxed)).with_style(
            ProgressStyle::with_template(
                "{prefix} {bar:30} {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(what.to_owned());
        Some(Self::drive(bar, move |b| {
            b.set_length(total.load(Ordering::Relaxed));
            b.set_position(done.load(Ordering::Relaxed));
        }))
    }

    /// Refreshes `bar` with `update` ten times a second from a thread of its own.
    fn drive(bar: ProgressBar, update: impl Fn(&ProgressBar) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bar.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                update(&b);
                b.tick();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            bar,
            stop,
            thread: Some(thread),
        }
    }

    /// A spinner for a build's counters.
    pub fn for_build(progress: Arc<chunkfs_format::build::Progress>) -> Option<Self> {
        Self::start(None, move || {
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            (
                load(&progress.bytes_in),
                format!(
                    "{} chunks ({} distinct), {} stored",
                    load(&progress.chunk_refs),
                    load(&progress.unique_chunks),
                    HumanBytes(load(&progress.stored_bytes))
                ),
            )
        })
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}
