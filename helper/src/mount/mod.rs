//! Mounting chunkfs images: the library behind `mount.chunkfs`, `chunkfs mount|umount` and the
//! boot init (docs/mount.chunkfs.8.md).
//!
//! ```no_run
//! use chunkfs_helper::mount::{mount_image, Options};
//! let opts = Options::parse("reader=auto,verify=metadata", false)?;
//! let info = mount_image("/images/root.cfs", "/mnt".as_ref(), &opts)?;
//! println!("{} mounted by {:?}: {}", info.source, info.reader, info.reason);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The boot init mounts a root image the same way: `mount_image_with(source, "/newroot", &opts,
//! &ctl)` with `opts` built from `chunkfs.reader=`, `chunkfs.verify=` and `chunkfs.digest=`
//! (`Options { reader, verify, digest, ..Options::default() }`) and `ctl.log` on the console.
//! A FUSE root is served by a daemon that is this binary again (`/proc/self/exe`, i.e. `/init`)
//! under `argv[0]` = `@chunkfs-reader` ([`daemon`]): `main` must hand such a process to
//! [`daemon::main`] before anything else. The daemon is adopted by PID 1, maps everything through
//! descriptors before the mount returns, and so keeps serving after `switch_root`.
//!
//! One job per module: [`options`] (the `-o` string), [`source`] (what SOURCE names),
//! [`verify`] (the checks before a mount, and what they yield), [`features`] (what the kernel
//! offers; `reader=auto`), [`kernel`] (the kernel's EROFS, file-backed or on [`loopdev`] loop
//! devices, through the new mount API in [`sys`]), [`cache`] (descriptors built at mount time),
//! [`fuse`] and [`daemon`] (the FUSE reader as a daemon; [`record`]: its `record=FILE`),
//! [`umount`], [`mountinfo`].

pub mod cache;
pub mod daemon;
pub mod features;
pub mod fuse;
pub mod kernel;
pub mod loopdev;
pub mod mountinfo;
pub mod options;
pub mod record;
pub mod registry;
pub mod source;
pub(crate) mod status_pipe;
pub(crate) mod sys;
pub mod umount;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chunkfs_format::digest::Digest;
use chunkfs_format::{Classify, ErrorClass};

pub use options::{Options, Prefetch, Pull, ReaderChoice, RegistryOptions, VerifyLevel};
pub use source::Source;
pub use umount::{Unmounted, unmount};

/// The class of a failed mount, for exit statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad arguments or options.
    Usage,
    /// Not permitted (mounting needs root).
    Permission,
    /// The image or the mount point does not exist.
    NotFound,
    /// SOURCE is not a chunkfs image.
    NotAnImage,
    /// The image is damaged: a digest, a structure or a chunk does not check.
    Corrupt,
    /// The image is not the one `digest=` pins.
    Mismatch,
    /// The image needs something this program or kernel does not have.
    Unsupported,
    /// The mount point is busy or already a mount point.
    Busy,
    /// The kernel or the FUSE daemon refused the mount.
    Mount,
    /// A file could not be read or written.
    Io,
    /// A registry could not be reached or did not answer in time.
    Network,
}

impl ErrorKind {
    /// The kind of a library error of class `class` met while mounting.
    pub fn of(class: ErrorClass) -> Self {
        match class {
            ErrorClass::Usage => Self::Usage,
            ErrorClass::Io => Self::Io,
            ErrorClass::Unsupported => Self::Unsupported,
            ErrorClass::Network => Self::Network,
            _ => Self::Corrupt,
        }
    }

    /// The class of this kind, which decides `chunkfs mount`'s exit status
    /// (`crate::error::exit_status`).
    pub fn class(self) -> ErrorClass {
        match self {
            Self::Usage | Self::Permission | Self::Busy => ErrorClass::Usage,
            Self::NotFound | Self::Io => ErrorClass::Io,
            Self::NotAnImage | Self::Corrupt | Self::Mismatch => ErrorClass::Corrupt,
            // The kernel or the daemon refusing an image is reported like an unsupported one.
            Self::Unsupported | Self::Mount => ErrorClass::Unsupported,
            Self::Network => ErrorClass::Network,
        }
    }
}

/// Why an image was not mounted (or unmounted): a complete message naming the file and the
/// problem. Nothing was left mounted, attached or running.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    errno: Option<i32>,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            errno: None,
        }
    }

    fn with_errno(mut self, errno: i32) -> Self {
        self.errno = Some(errno);
        self
    }

    /// A library error met while mounting: its class decides the kind; `context` follows its
    /// message (e.g. "refusing to mount it").
    pub fn from_library(e: &(impl Classify + std::fmt::Display), context: &str) -> Self {
        let message = if context.is_empty() {
            e.to_string()
        } else {
            format!("{e}; {context}")
        };
        Self::new(ErrorKind::of(e.class()), message)
    }

    /// Its class.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The kernel's error number, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        self.kind.class()
    }
}

/// Progress and decisions, on stderr when enabled (`-v`, or the `debug` option).
#[derive(Clone, Debug)]
pub struct Log {
    enabled: bool,
    prefix: String,
}

impl Log {
    /// A log printing `prefix: message` lines when `enabled`.
    pub fn new(prefix: impl Into<String>, enabled: bool) -> Self {
        Self {
            enabled,
            prefix: prefix.into(),
        }
    }

    /// Prints one line when enabled.
    pub fn info(&self, message: std::fmt::Arguments<'_>) {
        if self.enabled {
            eprintln!("{}: {message}", self.prefix);
        }
    }
}

/// How a mount request is run, besides its `-o` options.
#[derive(Clone, Debug)]
pub struct Control {
    /// Do everything but the mount itself (mount(8)'s `-f`).
    pub fake: bool,
    /// The log.
    pub log: Log,
    /// The program to run as the FUSE reader daemon (default: this program, `/proc/self/exe`).
    pub daemon_exe: Option<PathBuf>,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            fake: false,
            log: Log::new("chunkfs", false),
            daemon_exe: None,
        }
    }
}

/// Which reader serves a mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReaderUsed {
    /// The kernel's EROFS.
    Kernel(kernel::KernelMount),
    /// The FUSE reader daemon with this pid.
    Fuse {
        /// The daemon's process id.
        pid: i32,
    },
    /// None: a fake mount (`-f`).
    None,
}

/// A successful mount.
#[derive(Clone, Debug)]
pub struct MountInfo {
    /// The source as the mount table shows it.
    pub source: String,
    /// The mount point (canonical).
    pub target: PathBuf,
    /// Who serves it.
    pub reader: ReaderUsed,
    /// Why that reader.
    pub reason: String,
    /// The image's metadata digest.
    pub metadata_digest: Digest,
    /// Chunks hashed before mounting (`verify=full`), of all chunks.
    pub chunks_checked: (usize, usize),
    /// The steps and their durations.
    pub timings: Vec<(&'static str, Duration)>,
}

/// Mounts the image `source` (a `.cfs`, a block device holding one, or `oci:DIR[:TAG]`) read-only
/// at `target` with the default [`Control`].
pub fn mount_image(source: &str, target: &Path, options: &Options) -> Result<MountInfo, Error> {
    mount_image_with(source, target, options, &Control::default())
}

/// Mounts the image `source` at `target`: checks the mount point, resolves and verifies the
/// image, chooses the reader and mounts. Returns once the mount is ready to serve; on failure
/// nothing is left mounted, attached or running.
pub fn mount_image_with(
    source: &str,
    target: &Path,
    options: &Options,
    ctl: &Control,
) -> Result<MountInfo, Error> {
    let log = Log::new(ctl.log.prefix.clone(), ctl.log.enabled || options.debug);
    for note in &options.notes {
        log.info(format_args!("{note}"));
    }
    let start = Instant::now();
    if !nix::unistd::geteuid().is_root() && !ctl.fake {
        return Err(Error::new(
            ErrorKind::Permission,
            "only root can mount chunkfs images",
        ));
    }
    let target = check_target(target)?;
    let source = Source::resolve(source)?;
    if let Source::Registry { reference } = &source {
        let prepared = registry::prepare(reference, options, &log)?;
        for (what, d) in &prepared.timings {
            log.info(format_args!("{what}: {:.1} ms", d.as_secs_f64() * 1e3));
        }
        return registry::mount(prepared, &target, options, ctl, &log, start);
    }
    if !options.registry.is_default() {
        log.info(format_args!(
            "the options of docker:// sources (store=, creds=, prefetch=, ...) do not apply to {}",
            source.display()
        ));
    }
    let (reader, note) = options
        .image_reader()
        .map_err(|e| Error::new(ErrorKind::Usage, e.to_string()))?;
    if let Some(note) = note {
        log.info(format_args!("{note}"));
    }
    let prepared = verify::prepare(&source, options)?;
    for (what, d) in &prepared.timings {
        log.info(format_args!("{what}: {:.1} ms", d.as_secs_f64() * 1e3));
    }
    let caps = features::KernelCaps::probe();
    let decision = features::decide(reader, &caps, prepared.incompat)
        .map_err(|m| Error::new(ErrorKind::Unsupported, m))?;
    log.info(format_args!(
        "reader={}: {}",
        if decision.kernel { "kernel" } else { "fuse" },
        decision.reason
    ));
    if decision.kernel && (options.cache_bytes.is_some() || options.threads.is_some()) {
        log.info(format_args!(
            "cache= and threads= apply to the FUSE reader only"
        ));
    }
    let mut info = MountInfo {
        source: prepared.display.clone(),
        target: target.clone(),
        reader: ReaderUsed::None,
        reason: decision.reason.clone(),
        metadata_digest: prepared.metadata_digest,
        chunks_checked: (prepared.chunks_checked, prepared.chunks),
        timings: prepared.timings.clone(),
    };
    if ctl.fake {
        log.info(format_args!("-f: not mounting"));
        return Ok(info);
    }
    let t = Instant::now();
    let exe = ctl.daemon_exe.clone().unwrap_or_else(fuse::default_exe);
    let fuse_mount = |why: &str| -> Result<ReaderUsed, Error> {
        if !caps.fuse {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{why}, and the kernel has no FUSE (/dev/fuse, fuse in /proc/filesystems)"),
            ));
        }
        let pid = fuse::mount(&prepared, &target, options, &exe, &log)?;
        Ok(ReaderUsed::Fuse { pid })
    };
    info.reader = if decision.kernel {
        match kernel::mount(&prepared, &target, options, &log) {
            Ok(k) => ReaderUsed::Kernel(k),
            Err(e) if decision.fallback && e.kind() == ErrorKind::Mount => {
                log.info(format_args!("{e}; using the FUSE reader instead"));
                info.reason = format!("the kernel refused the mount: {e}");
                fuse_mount("the kernel refused the mount").map_err(|f| {
                    Error::new(
                        f.kind(),
                        format!("{e}; and the FUSE reader failed too: {f}"),
                    )
                })?
            }
            Err(e) => return Err(e),
        }
    } else {
        fuse_mount(&decision.reason)?
    };
    info.timings.push(("mounted", t.elapsed()));
    log.info(format_args!(
        "{} mounted on {} in {:.1} ms",
        info.source,
        target.display(),
        start.elapsed().as_secs_f64() * 1e3
    ));
    // The mount holds its files now: release the layout's lock.
    drop(prepared);
    Ok(info)
}

/// The mount point: an existing directory that is not already a mount point.
fn check_target(target: &Path) -> Result<PathBuf, Error> {
    let canon = std::fs::canonicalize(target).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        Error::new(kind, format!("mount point {}: {e}", target.display()))
    })?;
    if !canon.is_dir() {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("mount point {}: not a directory", target.display()),
        ));
    }
    if let Some(m) = mountinfo::mounted_at(&canon)
        .map_err(|e| Error::new(ErrorKind::Io, format!("/proc/self/mountinfo: {e}")))?
    {
        return Err(Error::new(
            ErrorKind::Busy,
            format!(
                "mount point {}: already a mount point ({} from {}); unmount it first",
                target.display(),
                m.fstype,
                m.source
            ),
        ));
    }
    Ok(canon)
}
