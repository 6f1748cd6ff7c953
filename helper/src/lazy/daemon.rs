//! The filler daemon: the same binary, executed with `argv[0]` = `@chunkfs-filler` and a JSON
//! spec naming descriptors it inherited, as [`crate::mount::daemon`] is for the FUSE reader.
//! It marks the files, reports `marked` on its status pipe (the caller mounts only then: rule
//! 2), and serves events until every file is complete or it is told to stop (SIGTERM, SIGINT,
//! SIGHUP).
//!
//! Status protocol (one line each): `pid N`, then `marked` or `error: MESSAGE`.
//!
//! The spec stays generic: the files to fill, and which [`SourceSpec`] fills them. Today that is
//! a complete copy of each file ([`super::FileCopySource`]); the store's registry-backed source
//! becomes another variant.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::copy::{self, CopyPair, FileCopySource};
use super::filler::{self, Config, FillSource, Filler, PackFile};
use crate::mount::daemon::FdSpec;
use crate::mount::status_pipe::{self, Status};
use crate::mount::sys;

mod lazy_fill;

/// `argv[0]` of the daemon.
pub const ARGV0: &str = "@chunkfs-filler";

/// What fills the files.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSpec {
    /// A complete copy of each file, in the order of [`Spec::files`].
    Copy {
        /// The copies.
        copies: Vec<FdSpec>,
        /// Each copy is a `.cfs`: fill its chunk frames, each whole ([`super::copy::cfs_frames`]),
        /// rather than 4 KiB blocks (which a killed filler can leave half-written).
        #[serde(default)]
        cfs_frames: bool,
    },
    /// The pack files of a lazy registry mount, filled through the local store from the
    /// registry ([`super::StoreSource`]). The daemon opens the packs itself (before it marks
    /// them): [`Spec::files`] is empty.
    Store {
        /// A sealed memfd holding the [`super::work::LazySpec`].
        spec: FdSpec,
        /// A sealed memfd holding credentials given on the command line, if any.
        creds: Option<FdSpec>,
    },
}

/// Everything the daemon needs, passed as `--spec JSON`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Spec {
    /// The write end of the status pipe.
    pub status_fd: i32,
    /// The files to fill, opened by the caller *before* any filler marked them (read-write for
    /// `background`).
    pub files: Vec<FdSpec>,
    /// Open root directories of EROFS mounts that already read these files: their cached
    /// compressed pages are dropped once the files are marked (a filler taking over from one
    /// that died).
    #[serde(default)]
    pub mounts: Vec<FdSpec>,
    /// What fills them.
    pub source: SourceSpec,
    /// Fills in flight at most.
    pub workers: Option<usize>,
    /// Per-event deadline in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Also fill everything in the background.
    #[serde(default)]
    pub background: bool,
    /// Fork once so that the daemon is nobody's child (the caller reaps the intermediate).
    #[serde(default)]
    pub detach: bool,
    /// Log failed fills and a summary on stderr.
    #[serde(default)]
    pub log: bool,
    /// The read end of a pipe on which the caller writes `mounted ID SYSFS` once its mount
    /// exists (its id in the mount table, its directory under /sys/fs): the daemon then stops
    /// when that mount is gone ([`super::watch`]). End-of-file before that line (the mount
    /// failed, or the caller died) stops it.
    #[serde(default)]
    pub control_fd: Option<i32>,
}

/// Runs the daemon from its command line (`@chunkfs-filler --spec JSON`); never returns.
pub fn main() -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let spec = match args.as_slice() {
        [flag, json] if flag == "--spec" => serde_json::from_str::<Spec>(json).ok(),
        _ => None,
    };
    let Some(spec) = spec else {
        eprintln!("{ARGV0}: internal process of chunkfs mount; not for direct use");
        std::process::exit(2);
    };
    if spec.detach {
        // Right after exec this process has one thread, so forking is safe.
        match sys::fork_single_threaded() {
            Ok(Some(_)) => std::process::exit(0),
            Ok(None) => {}
            Err(e) => {
                eprintln!("{ARGV0}: fork: {e}");
                std::process::exit(1);
            }
        }
        let _ = nix::unistd::setsid();
    }
    let mut keep = vec![spec.status_fd];
    keep.extend(spec.files.iter().map(|f| f.fd));
    keep.extend(spec.mounts.iter().map(|f| f.fd));
    keep.extend(spec.control_fd);
    match &spec.source {
        SourceSpec::Copy { copies, .. } => keep.extend(copies.iter().map(|f| f.fd)),
        SourceSpec::Store { spec, creds } => {
            keep.push(spec.fd);
            keep.extend(creds.as_ref().map(|c| c.fd));
        }
    }
    sys::close_fds_except(&keep);
    // Every event in flight holds a descriptor until it is answered.
    crate::raise_fd_limit();
    let mut status = match sys::take_inherited_fd(spec.status_fd) {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("{ARGV0}: status pipe: {e}");
            std::process::exit(1);
        }
    };
    let _ = writeln!(status, "pid {}", std::process::id());
    // Blocked before any thread starts, so that every thread inherits the mask and only the
    // waiting thread sees the signals.
    let mut signals = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGUSR1,
    ] {
        signals.add(s);
    }
    let _ = signals.thread_block();
    let (filler, lazy, recording) = match start(&spec) {
        Ok(f) => f,
        Err(message) => {
            let _ = writeln!(status, "error: {}", message.replace('\n', " "));
            std::process::exit(1);
        }
    };
    let _ = writeln!(status, "marked");
    drop(status);
    let _ = nix::unistd::chdir("/");
    let stop = filler.stop_handle();
    {
        let (stop, recording) = (stop.clone(), recording.clone());
        let _ = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                while let Ok(signal) = signals.wait() {
                    // SIGUSR1: a snapshot of the recording (`record=`), as the FUSE reader's.
                    if signal != nix::sys::signal::Signal::SIGUSR1 {
                        stop.stop();
                        return;
                    }
                    if let Some(r) = &recording {
                        r.write_logged("SIGUSR1");
                    }
                }
            });
    }
    let lazy = lazy.map(|l| l.start(&stop));
    let unmounted = Arc::new(AtomicBool::new(false));
    if let Some(fd) = spec.control_fd {
        match sys::take_inherited_fd(fd) {
            Ok(control) => watch_control(File::from(control), stop.clone(), unmounted.clone()),
            Err(e) => {
                eprintln!("{ARGV0}: control pipe: {e}");
                stop.stop();
            }
        }
    }
    let result = filler.run();
    let code = match &result {
        Ok(stats) => {
            if spec.log {
                eprintln!("{ARGV0}: {}", summary(stats));
            }
            0
        }
        Err(e) => {
            eprintln!("{ARGV0}: {e}");
            1
        }
    };
    // Before the exit `chunkfs umount` waits for: the list is there when it returns. A filler
    // stopped before any read (the kernel refused the mount, which the FUSE reader then
    // records) leaves the empty list it wrote at start alone.
    match &recording {
        Some(r) if unmounted.load(Ordering::SeqCst) => r.write_logged("unmounted"),
        Some(r) if !r.is_empty() => r.write_logged("stopped"),
        _ => {}
    }
    if let Some(l) = lazy {
        let why = if unmounted.load(Ordering::SeqCst) {
            "unmounted"
        } else if result.is_ok() && l.all_complete() {
            "complete"
        } else {
            "stopped"
        };
        l.end(why);
    }
    std::process::exit(code)
}

/// Reads `mounted ID SYSFS` from the control pipe, then stops the filler once that mount is
/// gone (setting `unmounted`); stops it at once on end-of-file before that line.
fn watch_control(control: File, stop: filler::StopHandle, unmounted: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(
                &mut std::io::BufReader::new(control.take(4096)),
                &mut line,
            );
            let mut words = line.split_whitespace();
            let (Some("mounted"), Some(Ok(id))) =
                (words.next(), words.next().map(str::parse::<u64>))
            else {
                stop.stop();
                return;
            };
            let sysfs = words
                .next()
                .filter(|s| !s.is_empty() && !s.contains(".."))
                .map(|s| Path::new("/sys/fs").join(s));
            let never = AtomicBool::new(false);
            if super::watch::wait_gone(id, sysfs.as_deref(), &never) {
                unmounted.store(true, Ordering::SeqCst);
                stop.stop();
            }
        });
}

/// The statistics as one line of `name=value` pairs.
pub fn summary(s: &filler::Stats) -> String {
    format!(
        "events={} at_once={} filled={} failed={} timed_out={} bytes_requested={} completed={}",
        s.events, s.at_once, s.filled, s.failed, s.timed_out, s.bytes_requested, s.completed
    )
}

fn take(f: &FdSpec) -> Result<File, String> {
    sys::take_inherited_fd(f.fd)
        .map(File::from)
        .map_err(|e| format!("{}: {e}", f.name))
}

/// What [`start`] returns: the marked filler, a lazy mount's parts and its recording.
type StartedParts = (
    Filler,
    Option<lazy_fill::Opened>,
    Option<Arc<super::record::Recording>>,
);

/// Takes the inherited descriptors, builds the source, marks the files and drops the mounts'
/// caches.
fn start(spec: &Spec) -> Result<StartedParts, String> {
    let mut files = spec
        .files
        .iter()
        .map(|f| {
            Ok(PackFile {
                name: f.name.clone(),
                file: take(f)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut lazy = None;
    let mut recording = None;
    let mut prefetch = Vec::new();
    let mut background = spec.background;
    let source: Arc<dyn FillSource> = match &spec.source {
        SourceSpec::Store { spec: work, creds } => {
            let mut opened = lazy_fill::open(take(work)?, creds.as_ref().map(take).transpose()?)?;
            files = opened.files()?;
            prefetch = opened.prefetch();
            background |= opened.spec.background;
            let mut source = opened.source()?;
            recording = opened.recording()?;
            if let Some(r) = &recording {
                source = Arc::new(super::record::RecordingSource::new(source, r.clone()));
            }
            lazy = Some(opened);
            source
        }
        SourceSpec::Copy { copies, cfs_frames } => {
            if copies.len() != files.len() {
                return Err(format!("{} copies for {} files", copies.len(), files.len()));
            }
            let pairs = files
                .iter()
                .zip(copies)
                .map(|(f, c)| {
                    let copy = take(c)?;
                    let frames = cfs_frames
                        .then(|| {
                            let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
                            copy::cfs_frames(Path::new(&path))
                                .map_err(|e| format!("{}: {e}", c.name).replace(&path, &c.name))
                        })
                        .transpose()?;
                    Ok(CopyPair {
                        name: f.name.clone(),
                        sparse: &f.file,
                        copy,
                        frames,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            Arc::new(FileCopySource::new(pairs).map_err(|e| e.to_string())?)
        }
    };
    let mut config = Config {
        background,
        prefetch,
        log: spec.log,
        keep_marked: recording.is_some(),
        ..Config::default()
    };
    if let Some(w) = spec.workers {
        config.workers = w;
    }
    if let Some(ms) = spec.deadline_ms {
        config.deadline = Duration::from_millis(ms);
    }
    let filler = Filler::new(files, source, config).map_err(|e| e.to_string())?;
    for m in &spec.mounts {
        let root = take(m)?;
        filler::drop_erofs_caches(&root, &m.name).map_err(|e| e.to_string())?;
    }
    Ok((filler, lazy, recording))
}

/// Why a filler daemon could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A descriptor, the pipe or the spec could not be made.
    #[error("starting the filler daemon: {what}: {source}")]
    Setup {
        /// The step.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The daemon reported an error.
    #[error("the filler daemon failed: {0}")]
    Failed(String),
    /// The daemon exited (or closed its status pipe) without marking.
    #[error("the filler daemon exited before marking its files")]
    Exited,
    /// The daemon did not report within the timeout (it was killed).
    #[error("the filler daemon did not mark its files within {0:?}; killed it")]
    TimedOut(Duration),
}

impl chunkfs_format::Classify for StartError {
    /// The failure's class.
    fn class(&self) -> chunkfs_format::ErrorClass {
        chunkfs_format::ErrorClass::Io
    }
}

/// A daemon whose files are marked.
#[derive(Debug)]
pub struct Started {
    /// The daemon's pid.
    pub pid: i32,
    /// The child process, when it was not detached (`wait` or kill it); `None` when detached.
    pub child: Option<Child>,
}

/// What [`start_daemon`] hands to the daemon besides its files.
#[derive(Debug)]
pub struct DaemonOptions<'a> {
    /// Root directories of mounts already reading the files (see [`Spec::mounts`]).
    pub mounts: Vec<(&'a File, String)>,
    /// Complete copies of the files, in their order ([`SourceSpec::Copy`]).
    pub copies: Vec<(&'a File, String)>,
    /// The copies are `.cfs` files: fill whole chunk frames.
    pub cfs_frames: bool,
    /// Fills in flight at most.
    pub workers: Option<usize>,
    /// Per-event deadline.
    pub deadline: Option<Duration>,
    /// Fill everything in the background too.
    pub background: bool,
    /// Detach from the caller (the mount helper does; tests keep a child to kill).
    pub detach: bool,
    /// Log on the daemon's stderr (inherited; else /dev/null).
    pub log: bool,
    /// Fill the files from a registry through the store instead of from copies (then `files`
    /// is empty and `copies` unused): the memfds of the spec and of the credentials.
    pub store: Option<(&'a File, Option<&'a File>)>,
    /// The read end of the control pipe ([`Spec::control_fd`]).
    pub control: Option<&'a File>,
}

/// How long a daemon may take to mark its files.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts `exe` as a filler daemon for `files` (opened by the caller, before anything marked
/// them) and returns once they are marked: mount after this.
pub fn start_daemon(
    exe: &Path,
    files: &[(&File, String)],
    opts: &DaemonOptions<'_>,
) -> Result<Started, StartError> {
    let setup = |what: &str, source: std::io::Error| StartError::Setup {
        what: what.to_owned(),
        source,
    };
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| setup("pipe", e.into()))?;
    let spec_of = |list: &[(&File, String)]| -> Vec<FdSpec> {
        list.iter()
            .map(|(f, name)| FdSpec {
                fd: f.as_raw_fd(),
                name: name.clone(),
            })
            .collect()
    };
    let source = match opts.store {
        Some((spec, creds)) => SourceSpec::Store {
            spec: FdSpec {
                fd: spec.as_raw_fd(),
                name: "the lazy mount's spec".into(),
            },
            creds: creds.map(|c| FdSpec {
                fd: c.as_raw_fd(),
                name: "the registry credentials".into(),
            }),
        },
        None => SourceSpec::Copy {
            copies: spec_of(&opts.copies),
            cfs_frames: opts.cfs_frames,
        },
    };
    let spec = Spec {
        status_fd: status_w.as_raw_fd(),
        files: spec_of(files),
        mounts: spec_of(&opts.mounts),
        source,
        workers: opts.workers,
        deadline_ms: opts
            .deadline
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        background: opts.background,
        detach: opts.detach,
        log: opts.log,
        control_fd: opts.control.map(|f| f.as_raw_fd()),
    };
    let json = serde_json::to_string(&spec).map_err(|e| setup("spec", std::io::Error::other(e)))?;
    let mut keep = vec![status_w.as_raw_fd()];
    for list in [files, &opts.mounts[..], &opts.copies[..]] {
        keep.extend(list.iter().map(|(f, _)| f.as_raw_fd()));
    }
    if let Some((spec, creds)) = opts.store {
        keep.push(spec.as_raw_fd());
        keep.extend(creds.map(|c| c.as_raw_fd()));
    }
    keep.extend(opts.control.map(|f| f.as_raw_fd()));
    let mut cmd = Command::new(exe);
    std::os::unix::process::CommandExt::arg0(&mut cmd, ARGV0);
    cmd.arg("--spec")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if opts.log {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    let mut child = sys::spawn_keeping(&mut cmd, &keep)
        .map_err(|e| setup(&format!("cannot run {}", exe.display()), e))?;
    // Only the daemon may hold the write end, so that its exit is seen as end-of-file.
    drop(status_w);
    let child = if opts.detach {
        let _ = child.wait();
        None
    } else {
        Some(child)
    };
    let (pid, outcome) = status_pipe::read(status_r, "marked", READY_TIMEOUT);
    let fail = |e: StartError, child: Option<Child>| {
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        } else if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        Err(e)
    };
    match (outcome, pid) {
        (Status::Ready, Some(pid)) => Ok(Started { pid, child }),
        (Status::Ready, None) => fail(StartError::Exited, child),
        (Status::Failed(m), _) => fail(StartError::Failed(m), child),
        (Status::Exited, _) => fail(StartError::Exited, child),
        (Status::TimedOut, _) => fail(StartError::TimedOut(READY_TIMEOUT), child),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spec_round_trips_and_defaults() {
        let spec = Spec {
            status_fd: 3,
            files: vec![FdSpec {
                fd: 4,
                name: "/store/packs/a".into(),
            }],
            mounts: vec![],
            source: SourceSpec::Copy {
                copies: vec![FdSpec {
                    fd: 5,
                    name: "/images/a".into(),
                }],
                cfs_frames: true,
            },
            workers: Some(2),
            deadline_ms: Some(1500),
            background: false,
            detach: true,
            log: false,
            control_fd: Some(6),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains(r#""kind":"copy""#), "{json}");
        assert_eq!(serde_json::from_str::<Spec>(&json).unwrap(), spec);
        let minimal = r#"{"status_fd":3,"files":[],"source":{"kind":"copy","copies":[]},
            "workers":null,"deadline_ms":null}"#;
        let s: Spec = serde_json::from_str(minimal).unwrap();
        assert!(!s.background && !s.detach && s.mounts.is_empty());
    }
}
