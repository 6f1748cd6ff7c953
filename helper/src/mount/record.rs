//! `-o record=FILE` in the FUSE reader daemon: the reader's recording of the chunks reads need
//! (`chunkfs_reader::Recording`) written to FILE as a prefetch list (docs/format.md §3.6) when the
//! mount starts (empty: this checks FILE can be written before anything is mounted), on SIGUSR1
//! (a snapshot while the workload runs), and when the daemon exits: on unmount, or on SIGTERM or
//! SIGINT, which still end it as before. Each write replaces FILE atomically.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use chunkfs_reader::{Reader, Recording};
use nix::sys::signal::{SigSet, Signal};

/// The signals the recording daemon handles: a snapshot, or the last write before it exits.
const SIGNALS: [Signal; 3] = [Signal::SIGUSR1, Signal::SIGTERM, Signal::SIGINT];

/// Blocks the signals [`Recorder::start`]'s thread waits for. Call before any thread starts:
/// threads inherit the mask, and one that did not block them would die of them.
pub fn block_signals() -> nix::Result<()> {
    signal_set().thread_block()
}

fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in SIGNALS {
        set.add(s);
    }
    set
}

/// A reader's recording and the file it goes to.
#[derive(Clone, Debug)]
pub struct Recorder {
    recording: Recording,
    path: PathBuf,
    /// Writes one at a time, so a late snapshot never replaces the final list.
    writing: Arc<Mutex<()>>,
}

impl Recorder {
    /// Turns recording on in `reader` and writes the (empty) list to `path`, so a path that
    /// cannot be written fails the mount instead of the unmount.
    pub fn start(reader: &mut Reader, path: &Path) -> Result<Self, String> {
        let r = Self {
            recording: reader.record(),
            path: path.to_owned(),
            writing: Arc::new(Mutex::new(())),
        };
        r.write()
            .map_err(|e| format!("record={}: cannot write it: {e}", path.display()))?;
        Ok(r)
    }

    /// Writes the list as recorded so far; returns the number of chunks.
    pub fn write(&self) -> std::io::Result<usize> {
        let _one = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        self.recording.write(&self.path)
    }

    /// Writes the list, reporting a failure on standard error (the daemon's, which is the
    /// helper's with `debug`).
    pub fn write_logged(&self, why: &str) {
        log_written(super::daemon::ARGV0, why, &self.path, self.write());
    }

    /// Starts the thread that answers the signals [`block_signals`] blocked: SIGUSR1 writes a
    /// snapshot; SIGTERM and SIGINT write the list and end the process (128 + the signal, as
    /// the default action's status would read in a shell).
    pub fn handle_signals(&self) {
        let me = self.clone();
        let set = signal_set();
        let spawned = std::thread::Builder::new()
            .name("record-signals".into())
            .spawn(move || {
                while let Ok(signal) = set.wait() {
                    if signal == Signal::SIGUSR1 {
                        me.write_logged("SIGUSR1");
                    } else {
                        me.write_logged(signal.as_str());
                        std::process::exit(128 + signal as i32);
                    }
                }
            });
        if spawned.is_err() {
            // Without the waiting thread the signals keep their default effect.
            let _ = set.thread_unblock();
        }
    }
}

/// Reports, as daemon `argv0`, the outcome of writing a recording to `path` on standard error
/// (the daemon's, which is the helper's with `debug`): shared by the FUSE daemon's recorder and
/// the filler's.
pub(crate) fn log_written(argv0: &str, why: &str, path: &Path, result: std::io::Result<usize>) {
    match result {
        Ok(n) => eprintln!("{argv0}: {why}: recorded {n} chunks in {}", path.display()),
        Err(e) => eprintln!(
            "{argv0}: {why}: cannot write the recording to {}: {e}",
            path.display()
        ),
    }
}
