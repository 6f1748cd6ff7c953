//! The filler: answers the kernel's pre-content events on sparse pack files by making the read
//! bytes present first (docs/lazy.md).
//!
//! One thread reads events from the fanotify group. An event for a range that is already
//! present (the source says so, without blocking) is answered at once from that thread; the
//! others go to a small pool of workers, so a slow fetch never holds up reads of present data
//! and several fills are in flight. A worker asks the [`FillSource`] to make the range present,
//! writing through the event's own descriptor (which raises no events), and answers `allow`,
//! or `deny` with EIO when the source fails: the read fails, the mount stays up, a later read
//! asks again. Every event has a deadline: a source that hangs gets its readers EIO when it
//! passes, never a reader blocked for good. When a file becomes complete its mark is removed
//! (marks cost an event per read, even of present data); when all are, [`Filler::run`]
//! returns and the mount is an ordinary kernel mount.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fanotify::{self, Event, FAN_PRE_ACCESS, Group, Response};
use super::replay;

/// What makes byte ranges of the filler's files present. Files are numbered in the order given
/// to [`Filler::new`].
pub trait FillSource: Send + Sync {
    /// Whether a read of `range` of `file` by process `pid` may proceed at once: every byte is
    /// present (or `pid` is itself writing the range, docs/store.md §6). Called on the
    /// event-reading thread: must not block.
    fn ready(&self, file: usize, range: Range<u64>, pid: i32) -> bool;

    /// Makes `range` of `file` present, writing the bytes through `out` only (an event's
    /// descriptor, or the filler's own descriptor opened before the file was marked: neither
    /// raises events). Writes whole frames, each exactly and tail first, so that a frame's
    /// header is never present without the rest of it (docs/lazy.md, rule 7). Returns once every
    /// byte of the range is present, or fails.
    fn fill(&self, file: usize, range: Range<u64>, pid: i32, out: &File) -> Result<(), FillError>;

    /// The ranges of `file` not yet present.
    fn absent(&self, file: usize) -> Vec<Range<u64>>;

    /// Whether every byte of `file` the mount may read is present.
    fn is_complete(&self, file: usize) -> bool;

    /// Sees every pre-content event on `file`, present bytes or not, before it is answered
    /// (`-o record=`, [`super::record`]). Called on the event-reading thread: must not block.
    fn note(&self, _file: usize, _range: &Range<u64>) {}
}

/// A fill that failed: the reader gets EIO.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FillError {
    /// The source's own data could not be read.
    #[error("{name}: cannot read bytes {range:?} of the copy: {source}")]
    Read {
        /// The file being filled.
        name: String,
        /// The bytes.
        range: Range<u64>,
        /// The error.
        source: io::Error,
    },
    /// The bytes could not be written into the file.
    #[error("{name}: cannot write bytes {range:?}: {source}")]
    Write {
        /// The file being filled.
        name: String,
        /// The bytes.
        range: Range<u64>,
        /// The error.
        source: io::Error,
    },
    /// The file number is not one of the source's.
    #[error("file {file} is not one of the fill source's files")]
    NoSuchFile {
        /// The number.
        file: usize,
    },
    /// Any other source's failure (a registry, a check).
    #[error("{source}")]
    Source {
        /// Its class.
        class: chunkfs_format::ErrorClass,
        /// The error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl chunkfs_format::Classify for FillError {
    /// The failure's class.
    fn class(&self) -> chunkfs_format::ErrorClass {
        match self {
            FillError::Source { class, .. } => *class,
            FillError::NoSuchFile { .. } => chunkfs_format::ErrorClass::Usage,
            _ => chunkfs_format::ErrorClass::Io,
        }
    }
}

/// Why the filler could not start or keep running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `fanotify_init` failed.
    #[error("cannot create a fanotify group for pre-content events: {source}")]
    Init {
        /// The error.
        source: io::Error,
    },
    /// A file could not be examined or its cached pages dropped.
    #[error("{name}: {source}")]
    File {
        /// The file.
        name: String,
        /// The error.
        source: io::Error,
    },
    /// A file could not be marked.
    #[error("{name}: cannot mark it for pre-content events: {source}")]
    Mark {
        /// The file.
        name: String,
        /// The error.
        source: io::Error,
    },
    /// The cached compressed pages of a mount could not be dropped.
    #[error("{mount}: cannot drop the EROFS mount's cached compressed pages: {source}")]
    DropCaches {
        /// The mount.
        mount: String,
        /// The error.
        source: io::Error,
    },
    /// Reading events, polling or starting a thread failed.
    #[error("fanotify filler: {what}: {source}")]
    Run {
        /// The step.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl chunkfs_format::Classify for Error {
    /// The failure's class.
    fn class(&self) -> chunkfs_format::ErrorClass {
        let unsupported = |e: &io::Error| {
            matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | libc::EPERM)
            )
        };
        match self {
            Error::Init { source } | Error::Mark { source, .. } if unsupported(source) => {
                chunkfs_format::ErrorClass::Unsupported
            }
            _ => chunkfs_format::ErrorClass::Io,
        }
    }
}

/// How the filler runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Fills in flight at most (worker threads).
    pub workers: usize,
    /// How long a reader may wait for its range before it gets EIO.
    pub deadline: Duration,
    /// Return from [`Filler::run`] once every file is complete.
    pub exit_when_complete: bool,
    /// Also fill every absent range in the background, a few pieces at a time, until every
    /// file is complete.
    pub background: bool,
    /// Ranges `(file, range)` to fill in the background first, in this order, once each (the
    /// prefetch replay of a lazy mount).
    pub prefetch: Vec<(usize, Range<u64>)>,
    /// Print failed fills and other trouble on stderr.
    pub log: bool,
    /// Keep every file marked, complete or not, and run until stopped: every read raises an
    /// event the source [notes](FillSource::note) (`-o record=`).
    pub keep_marked: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            workers: 4,
            deadline: Duration::from_secs(60),
            exit_when_complete: true,
            background: false,
            prefetch: Vec::new(),
            log: false,
            keep_marked: false,
        }
    }
}

/// A file to fill: opened read-write *before* it is marked (so that writes through it raise no
/// events of this filler), of its final length.
#[derive(Debug)]
pub struct PackFile {
    /// Its name, for messages.
    pub name: String,
    /// The open file.
    pub file: File,
}

/// What the filler did, counted since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events read.
    pub events: u64,
    /// Permission events answered at once (their range was present).
    pub at_once: u64,
    /// Events answered after a successful fill.
    pub filled: u64,
    /// Events denied because the source failed.
    pub failed: u64,
    /// Events denied because their deadline passed.
    pub timed_out: u64,
    /// Bytes of all event ranges.
    pub bytes_requested: u64,
    /// Files that became complete and were unmarked.
    pub completed: usize,
}

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    at_once: AtomicU64,
    filled: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    bytes_requested: AtomicU64,
    completed: AtomicUsize,
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            events: l(&self.events),
            at_once: l(&self.at_once),
            filled: l(&self.filled),
            failed: l(&self.failed),
            timed_out: l(&self.timed_out),
            bytes_requested: l(&self.bytes_requested),
            completed: self.completed.load(Ordering::Relaxed),
        }
    }
}

struct FileState {
    name: String,
    file: File,
    dev: u64,
    ino: u64,
    len: u64,
    complete: AtomicBool,
}

/// A permission event waiting for its fill.
struct Job {
    id: u64,
    file: usize,
    range: Range<u64>,
    pid: i32,
    /// The event's descriptor: open until the job is dropped, so its number (which the answer
    /// names) cannot be reused before the answer is written.
    out: File,
    answered: AtomicBool,
    deadline: Instant,
}

struct Shared {
    group: Group,
    files: Vec<FileState>,
    source: Arc<dyn FillSource>,
    config: Config,
    stop: AtomicBool,
    /// Written to wake the event loop (stop, a file completed).
    wake_w: OwnedFd,
    wake_r: OwnedFd,
    counters: Counters,
    pending: Mutex<HashMap<u64, Arc<Job>>>,
    /// Fills that missed their deadline and have not ended, by job: new events for ranges
    /// overlapping them fail at once instead of waiting for another deadline (the kernel asks
    /// again for the same range several times per read: readahead, then the page itself).
    stalled: Mutex<HashMap<u64, (usize, Range<u64>)>>,
}

/// Stops a running [`Filler`] from another thread (or a signal-handling thread), and reads its
/// statistics meanwhile.
#[derive(Clone)]
pub struct StopHandle {
    shared: Arc<Shared>,
}

impl StopHandle {
    /// Asks the filler to stop: events still waiting are denied with EIO, the files are
    /// unmarked, and [`Filler::run`] returns. Reads of absent frames after that see holes
    /// (zeros, which the kernel refuses as long as frames are written whole and tail first):
    /// stop a filler only when its mount is gone or a new filler takes over.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake();
    }

    /// What the filler did so far.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

/// A fanotify filler whose files are marked (see the module documentation).
pub struct Filler {
    shared: Arc<Shared>,
}

impl Filler {
    /// Creates the group, marks every file that is not complete, and drops the cached pages of
    /// every absent range (a filler that died left zero pages there, rule 4). Mount after this
    /// returns: only descriptors opened after the mark raise events (rule 2). For a mount that
    /// already exists (a filler taking over from one that died), call [`drop_erofs_caches`]
    /// too, before [`Filler::run`].
    pub fn new(
        files: Vec<PackFile>,
        source: Arc<dyn FillSource>,
        config: Config,
    ) -> Result<Filler, Error> {
        let group = Group::new().map_err(|source| Error::Init { source })?;
        let mut states = Vec::with_capacity(files.len());
        for (i, f) in files.into_iter().enumerate() {
            let meta = f.file.metadata().map_err(|source| Error::File {
                name: f.name.clone(),
                source,
            })?;
            let complete = source.is_complete(i);
            if !complete || config.keep_marked {
                group.mark(f.file.as_fd()).map_err(|source| Error::Mark {
                    name: f.name.clone(),
                    source,
                })?;
            }
            // After the mark, so that no read can cache a hole again unseen.
            for r in source.absent(i) {
                drop_cached(&f.file, &r).map_err(|source| Error::File {
                    name: f.name.clone(),
                    source,
                })?;
            }
            states.push(FileState {
                name: f.name,
                file: f.file,
                dev: meta.dev(),
                ino: meta.ino(),
                len: meta.len(),
                complete: AtomicBool::new(complete),
            });
        }
        let (wake_r, wake_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| Error::Run {
                    what: "pipe",
                    source: e.into(),
                })?;
        let mut config = config;
        config.workers = config.workers.clamp(1, 64);
        Ok(Filler {
            shared: Arc::new(Shared {
                group,
                files: states,
                source,
                config,
                stop: AtomicBool::new(false),
                wake_w,
                wake_r,
                counters: Counters::default(),
                pending: Mutex::new(HashMap::new()),
                stalled: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A handle that stops [`Filler::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// What the filler did so far.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Serves events until stopped, or until every file is complete (with
    /// `exit_when_complete`). Returns what it did.
    pub fn run(self) -> Result<Stats, Error> {
        let shared = self.shared;
        let (tx, rx) = crossbeam_channel::unbounded::<Arc<Job>>();
        for k in 0..shared.config.workers {
            let (s, rx) = (Arc::clone(&shared), rx.clone());
            std::thread::Builder::new()
                .name(format!("filler-{k}"))
                .spawn(move || s.worker(&rx))
                .map_err(|source| Error::Run {
                    what: "starting a worker thread",
                    source,
                })?;
        }
        drop(rx);
        if shared.config.background || !shared.config.prefetch.is_empty() {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("filler-background".into())
                .spawn(move || s.background())
                .map_err(|source| Error::Run {
                    what: "starting the background thread",
                    source,
                })?;
        }
        let result = shared.event_loop(&tx);
        // Workers stuck in a source that hangs are left behind: their events were answered
        // (denied at their deadline, or now), and they find nothing more to do.
        shared.stop.store(true, Ordering::SeqCst);
        drop(tx);
        shared.shut_down();
        result.map(|()| shared.counters.snapshot())
    }
}

/// `posix_fadvise(DONTNEED)` of `range`: drops clean cached pages (zeros read while no filler
/// answered) so the next read goes to the file and raises an event.
fn drop_cached(file: &File, range: &Range<u64>) -> io::Result<()> {
    let (Ok(start), Ok(len)) = (
        i64::try_from(range.start),
        i64::try_from(range.end.saturating_sub(range.start)),
    ) else {
        return Ok(());
    };
    nix::fcntl::posix_fadvise(
        file.as_fd(),
        start,
        len,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(io::Error::from)
}

/// Drops the EROFS mount's cached compressed pages and in-memory pclusters
/// (`/sys/fs/erofs/<id>/drop_caches` = 3, Linux 6.13+): after a filler died, zeros it let
/// through stay cached there and fail every later read of the same extents, however present
/// the bytes now are (docs/lazy.md). `mount_root` is any open file or directory of the mount.
pub fn drop_erofs_caches(mount_root: &File, name: &str) -> Result<(), Error> {
    let fail = |source| Error::DropCaches {
        mount: name.to_owned(),
        source,
    };
    let sysfs = fanotify::sysfs_path(mount_root.as_fd()).map_err(fail)?;
    if !sysfs.starts_with("erofs/") {
        return Err(fail(io::Error::other(format!(
            "not an EROFS mount (its sysfs directory is /sys/fs/{sysfs})"
        ))));
    }
    std::fs::write(format!("/sys/fs/{sysfs}/drop_caches"), b"3").map_err(fail)
}

impl Shared {
    fn wake(&self) {
        let _ = nix::unistd::write(&self.wake_w, &[1u8]);
    }

    fn log(&self, message: std::fmt::Arguments<'_>) {
        if self.config.log {
            eprintln!("chunkfs-filler: {message}");
        }
    }

    fn all_complete(&self) -> bool {
        self.files.iter().all(|f| f.complete.load(Ordering::SeqCst))
    }

    fn respond(&self, fd: i32, r: Response) {
        match self.group.respond(fd, r) {
            Ok(()) => {}
            // Already answered (the group forgot it): nothing to do.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                self.log(format_args!("answer {r:?} to event fd {fd}: {e}"));
                // A kernel that refuses the errno still takes a plain deny; the reader must
                // never be left waiting.
                if matches!(r, Response::Deny(_)) {
                    let _ = self.group.respond(fd, Response::Deny(0));
                }
            }
        }
    }

    /// Answers a job once (a worker and the deadline may race).
    fn answer(&self, job: &Job, r: Response) -> bool {
        if job.answered.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.respond(job.out.as_raw_fd(), r);
        true
    }

    fn event_loop(&self, tx: &crossbeam_channel::Sender<Arc<Job>>) -> Result<(), Error> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut buf = vec![0u8; 64 * 1024];
        let mut next_id = 0u64;
        let mut checked = Instant::now();
        loop {
            // Fills that answered no event (a source's own fetch-ahead, another process) can
            // complete a file too: look once a second.
            if checked.elapsed() >= Duration::from_secs(1) {
                checked = Instant::now();
                for i in 0..self.files.len() {
                    self.check_complete(i);
                }
            }
            if self.stop.load(Ordering::SeqCst)
                || (self.config.exit_when_complete
                    && !self.config.keep_marked
                    && self.all_complete())
            {
                return Ok(());
            }
            let timeout = self.next_deadline().map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1))
            });
            let ms = u16::try_from(timeout.as_millis().saturating_add(1)).unwrap_or(u16::MAX);
            let mut fds = [
                PollFd::new(self.group.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.wake_r.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(Error::Run {
                        what: "poll",
                        source: e.into(),
                    });
                }
            }
            let mut drain = [0u8; 64];
            while matches!(nix::unistd::read(&self.wake_r, &mut drain), Ok(n) if n > 0) {}
            loop {
                let (events, bad) = self.group.read(&mut buf).map_err(|source| Error::Run {
                    what: "reading events",
                    source,
                })?;
                if let Some(e) = bad {
                    self.log(format_args!("{e}"));
                }
                if events.is_empty() {
                    break;
                }
                for e in events {
                    self.handle(e, &mut next_id, tx);
                }
            }
            self.expire();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.values().map(|j| j.deadline).min()
    }

    /// Denies, with EIO, every event whose deadline passed.
    fn expire(&self) {
        let now = Instant::now();
        let expired: Vec<Arc<Job>> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<u64> = pending
                .values()
                .filter(|j| j.deadline <= now)
                .map(|j| j.id)
                .collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        for job in expired {
            self.stalled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.id, (job.file, job.range.clone()));
            if self.answer(&job, Response::Deny(libc::EIO)) {
                self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                self.log(format_args!(
                    "{}: bytes {:?} not filled within {:?}; the reader got EIO",
                    self.files.get(job.file).map_or("?", |f| f.name.as_str()),
                    job.range,
                    self.config.deadline
                ));
            }
        }
    }

    /// The file an event's descriptor refers to.
    fn file_of(&self, fd: &OwnedFd) -> Option<usize> {
        let st = nix::sys::stat::fstat(fd).ok()?;
        self.files
            .iter()
            .position(|f| f.dev == st.st_dev as u64 && f.ino == st.st_ino as u64)
    }

    fn handle(&self, e: Event, next_id: &mut u64, tx: &crossbeam_channel::Sender<Arc<Job>>) {
        self.counters.events.fetch_add(1, Ordering::Relaxed);
        let Some(fd) = e.fd else {
            if e.mask & libc::FAN_Q_OVERFLOW != 0 {
                self.log(format_args!("the event queue overflowed"));
            }
            return;
        };
        let raw = fanotify::RawEvent {
            mask: e.mask,
            fd: fd.as_raw_fd(),
            pid: e.pid,
            range: e.range,
        };
        if !fanotify::is_permission(e.mask) {
            return;
        }
        let allow = |why: &str| {
            self.counters.at_once.fetch_add(1, Ordering::Relaxed);
            if !why.is_empty() {
                self.log(format_args!("{raw}: allowed ({why})"));
            }
            self.respond(fd.as_raw_fd(), Response::Allow);
        };
        if e.mask & FAN_PRE_ACCESS == 0 {
            return allow("not a pre-content event");
        }
        let Some(file) = self.file_of(&fd) else {
            return allow("not one of our files");
        };
        let Some(state) = self.files.get(file) else {
            return allow("");
        };
        // No range: the whole file (an access the kernel could not bound).
        let range = match e.range {
            Some((offset, count)) => offset..offset.saturating_add(count).min(state.len),
            None => 0..state.len,
        };
        self.source.note(file, &range);
        self.counters
            .bytes_requested
            .fetch_add(range.end.saturating_sub(range.start), Ordering::Relaxed);
        if range.start >= range.end
            || state.complete.load(Ordering::SeqCst)
            || self.source.ready(file, range.clone(), e.pid)
        {
            return allow("");
        }
        if self.stalls(file, &range) {
            self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            return self.respond(fd.as_raw_fd(), Response::Deny(libc::EIO));
        }
        *next_id += 1;
        let job = Arc::new(Job {
            id: *next_id,
            file,
            range,
            pid: e.pid,
            out: File::from(fd),
            answered: AtomicBool::new(false),
            deadline: Instant::now() + self.config.deadline,
        });
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.id, Arc::clone(&job));
        if let Err(crossbeam_channel::SendError(job)) = tx.send(job) {
            self.answer(&job, Response::Deny(libc::EIO));
        }
    }

    /// Whether a fill of an overlapping range of `file` missed its deadline and still runs.
    fn stalls(&self, file: usize, range: &Range<u64>) -> bool {
        let stalled = self.stalled.lock().unwrap_or_else(|p| p.into_inner());
        stalled
            .values()
            .any(|(f, r)| *f == file && r.start < range.end && range.start < r.end)
    }

    fn worker(&self, rx: &crossbeam_channel::Receiver<Arc<Job>>) {
        while let Ok(job) = rx.recv() {
            self.run_job(&job);
            self.stalled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&job.id);
        }
    }

    fn run_job(&self, job: &Job) {
        // After a stop, the jobs left are answered by `shut_down`.
        if job.answered.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) {
            return;
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.source
                .fill(job.file, job.range.clone(), job.pid, &job.out)
        }));
        let name = self.files.get(job.file).map_or("?", |f| f.name.as_str());
        let response = match result {
            Ok(Ok(())) => {
                self.counters.filled.fetch_add(1, Ordering::Relaxed);
                Response::Allow
            }
            Ok(Err(e)) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.log(format_args!("{name}: bytes {:?}: {e}", job.range));
                Response::Deny(libc::EIO)
            }
            Err(_) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.log(format_args!(
                    "{name}: bytes {:?}: the source panicked",
                    job.range
                ));
                Response::Deny(libc::EIO)
            }
        };
        if !self.answer(job, response) && response == Response::Allow {
            // Too late for this reader, but the bytes are there for the next one.
            self.log(format_args!(
                "{name}: bytes {:?} filled after their deadline",
                job.range
            ));
        }
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job.id);
        if response == Response::Allow {
            self.check_complete(job.file);
        }
    }

    /// Unmarks `file` once its source says it is complete.
    fn check_complete(&self, file: usize) {
        let Some(state) = self.files.get(file) else {
            return;
        };
        if state.complete.load(Ordering::SeqCst) || !self.source.is_complete(file) {
            return;
        }
        if state.complete.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.config.keep_marked {
            self.log(format_args!("{}: complete; kept marked", state.name));
            return;
        }
        if let Err(e) = self.group.unmark(state.file.as_fd()) {
            self.log(format_args!("{}: unmark: {e}", state.name));
        }
        self.counters.completed.fetch_add(1, Ordering::Relaxed);
        self.log(format_args!("{}: complete; unmarked", state.name));
        self.wake();
    }

    /// The background work, through the filler's own descriptors: the prefetch ranges once,
    /// in order ([`Config::prefetch`]); then, with [`Config::background`], every absent range,
    /// a few pieces at a time, again and again (backing off) until every file is complete or
    /// the filler stops.
    fn background(&self) {
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        let fill = |item: &replay::Item| -> Result<(), String> {
            let state = self
                .files
                .get(item.file)
                .ok_or_else(|| format!("no file {}", item.file))?;
            if state.complete.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.source
                .fill(item.file, item.range.clone(), pid, &state.file)
                .map_err(|e| e.to_string())?;
            self.check_complete(item.file);
            Ok(())
        };
        let log = |m: &str| self.log(format_args!("background fill: {m}"));
        if !self.config.prefetch.is_empty() {
            let items: Vec<replay::Item> = self
                .config
                .prefetch
                .iter()
                .map(|(file, range)| replay::Item {
                    file: *file,
                    range: range.clone(),
                })
                .collect();
            let out = replay::run(&items, replay::THREADS, false, &self.stop, &fill, &log);
            self.log(format_args!(
                "prefetch: {} ranges filled, {} failed",
                out.done, out.failed
            ));
        }
        if !self.config.background {
            return;
        }
        while !self.stop.load(Ordering::SeqCst) && !self.all_complete() {
            let items: Vec<replay::Item> = self
                .files
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.complete.load(Ordering::SeqCst))
                .flat_map(|(i, _)| replay::pieces(i, &self.source.absent(i)))
                .collect();
            if !items.is_empty() {
                replay::run(&items, replay::THREADS, true, &self.stop, &fill, &log);
            }
            for i in 0..self.files.len() {
                self.check_complete(i);
            }
            if items.is_empty() && !self.all_complete() {
                // Nothing absent, yet not complete: the source disagrees with itself; do not
                // spin.
                self.log(format_args!(
                    "background fill: nothing absent, yet incomplete"
                ));
                return;
            }
        }
    }

    /// After the loop: unmark what is still marked, then answer every event still waiting
    /// (queued or in a worker): allow where the range is present, EIO elsewhere. Closing the
    /// group would allow them all, and their readers would read holes.
    fn shut_down(&self) {
        for f in &self.files {
            if !f.complete.load(Ordering::SeqCst) || self.config.keep_marked {
                let _ = self.group.unmark(f.file.as_fd());
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok((events, _)) = self.group.read(&mut buf) {
            if events.is_empty() {
                break;
            }
            for e in events {
                let Some(fd) = &e.fd else { continue };
                let r = match (self.file_of(fd), e.range) {
                    (Some(file), range) => {
                        let len = self.files.get(file).map_or(0, |f| f.len);
                        let range = range.map_or(0..len, |(o, c)| o..o.saturating_add(c).min(len));
                        if self.source.ready(file, range, e.pid) {
                            Response::Allow
                        } else {
                            Response::Deny(libc::EIO)
                        }
                    }
                    (None, _) => Response::Allow,
                };
                if fanotify::is_permission(e.mask) {
                    self.respond(fd.as_raw_fd(), r);
                }
            }
        }
        let pending: Vec<Arc<Job>> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, j)| j)
            .collect();
        for job in pending {
            let r = if self.source.ready(job.file, job.range.clone(), job.pid) {
                Response::Allow
            } else {
                Response::Deny(libc::EIO)
            };
            self.answer(&job, r);
        }
    }
}
