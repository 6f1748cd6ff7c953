//! The kernel path: the kernel's own EROFS mounts the descriptor, no daemon. Mounted with the
//! new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`: no one-page limit on the option
//! string, and the kernel's own error messages), file-backed when that is safe, else on
//! read-only, self-detaching loop devices.
//!
//! Loop devices are used when:
//! - there are several extra devices, or one and the primary device also holds data (the
//!   cluster layout's zero frame): Linux's file-backed EROFS merges reads of adjacent ranges on
//!   *different* files (docs/descriptor.md §5), so each file must be its own block device, and a
//!   file-backed primary refuses block-device extras (EINVAL): all of them become loop devices;
//! - a file is on tmpfs, or the descriptor had to stay in memory: file-backed mounts refuse
//!   them (ENOTBLK);
//! - the kernel has no file-backed mounts (ENOTBLK: Linux before 6.12);
//! - the `loop` option asks for it.
//!
//! A `.cfs` (no extra devices) on a disk filesystem is always mounted file-backed; one on a block
//! device is mounted from the block device itself.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::cache;
use super::loopdev::LoopDevice;
use super::options::Options;
use super::sys;
use super::verify::{Prepared, Primary};
use super::{Error, ErrorKind, Log};

/// What the kernel mount used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelMount {
    /// The loop devices made for it (they detach themselves at unmount).
    pub loops: Vec<PathBuf>,
    /// True if the kernel reads the files directly (a file-backed mount).
    pub file_backed: bool,
    /// The descriptor file in the cache directory, for images whose descriptor is built at
    /// mount time.
    pub descriptor: Option<PathBuf>,
    /// The fanotify filler filling the pack files (a lazy registry mount), by pid.
    pub filler: Option<i32>,
}

/// A file or block device the kernel opens.
struct Dev {
    path: PathBuf,
    file: File,
    block: bool,
    /// Only reachable through a descriptor (a memfd): must go on a loop device.
    anonymous: bool,
}

/// Mounts `p` at `target` with the kernel's EROFS.
pub fn mount(p: &Prepared, target: &Path, opts: &Options, log: &Log) -> Result<KernelMount, Error> {
    let mut info = KernelMount::default();
    let io =
        |what: &Path, e: io::Error| Error::new(ErrorKind::Io, format!("{}: {e}", what.display()));
    let primary = match &p.primary {
        Primary::Image(b) => Dev {
            path: b.path.clone(),
            file: b.file.try_clone().map_err(|e| io(&b.path, e))?,
            block: b.block,
            anonymous: false,
        },
        Primary::Built { bytes, digest } => match cache::store(&opts.cachedir, bytes, digest) {
            Ok((path, file)) => {
                log.info(format_args!("descriptor: {}", path.display()));
                info.descriptor = Some(path.clone());
                Dev {
                    path,
                    file,
                    block: false,
                    anonymous: false,
                }
            }
            Err(e) => {
                log.info(format_args!(
                    "{e}; keeping the descriptor in memory (on a loop device) instead; set cachedir= to a directory on a disk filesystem to avoid this"
                ));
                let file = cache::memfd(c"chunkfs-descriptor", bytes)
                    .map_err(|e| Error::new(ErrorKind::Io, format!("memfd: {e}")))?;
                Dev {
                    path: PathBuf::from("memfd:chunkfs-descriptor"),
                    file,
                    block: false,
                    anonymous: true,
                }
            }
        },
    };
    let mut devices = Vec::with_capacity(p.devices.len());
    for b in &p.devices {
        devices.push(Dev {
            path: b.path.clone(),
            file: b.file.try_clone().map_err(|e| io(&b.path, e))?,
            block: b.block,
            anonymous: false,
        });
    }

    let mut loop_reason = loop_reason(p, &primary, &devices, opts);
    if let (true, Some(why)) = (p.file_backed_only, &loop_reason) {
        return Err(lazy_needs_files(p, why));
    }
    if loop_reason.is_none() && primary.block {
        log.info(format_args!(
            "mounting the block device {}",
            primary.path.display()
        ));
    }
    loop {
        let result = match &loop_reason {
            None if !primary.block => {
                log.info(format_args!("file-backed mount (no loop device)"));
                attempt(p, &primary, &devices, false, target, opts, log)
            }
            None => attempt(p, &primary, &devices, false, target, opts, log),
            Some(why) => {
                log.info(format_args!("loop devices: {why}"));
                attempt(p, &primary, &devices, true, target, opts, log)
            }
        };
        match result {
            Ok(loops) => {
                info.file_backed = loop_reason.is_none() && !primary.block;
                info.loops = loops;
                return Ok(info);
            }
            // Linux before 6.12 (or without CONFIG_EROFS_FS_BACKED_BY_FILE) wants a block device.
            Err(Failure::Kernel { errno, .. }) if errno == libc::ENOTBLK && p.file_backed_only => {
                return Err(lazy_needs_files(
                    p,
                    "the kernel refused a file-backed mount (ENOTBLK: no file-backed EROFS, before Linux 6.12)",
                ));
            }
            Err(Failure::Kernel { errno, .. })
                if errno == libc::ENOTBLK && loop_reason.is_none() && !primary.block =>
            {
                loop_reason = Some(
                    "the kernel refused a file-backed mount (ENOTBLK: no file-backed EROFS, before Linux 6.12)".into(),
                );
            }
            Err(f) => return Err(f.into_error(&p.display, target)),
        }
    }
}

/// A lazy mount's pack files would have to go on loop devices, whose reads raise no fanotify
/// events: the filler could not fill them.
fn lazy_needs_files(p: &Prepared, why: &str) -> Error {
    Error::new(
        ErrorKind::Mount,
        format!(
            "{}: the lazy kernel path needs a file-backed mount, but {why}",
            p.display
        ),
    )
}

fn loop_reason(p: &Prepared, primary: &Dev, devices: &[Dev], opts: &Options) -> Option<String> {
    let on_tmpfs = std::iter::once(primary)
        .chain(devices)
        .find(|d| !d.block && !d.anonymous && cache::on_tmpfs(&d.path));
    if opts.force_loop {
        Some("the loop option".into())
    } else if primary.anonymous {
        Some("the descriptor is in memory".into())
    } else if devices.len() >= 2 && !p.disjoint_devices {
        Some(format!(
            "{} extra devices: file-backed EROFS would merge reads across them (Linux bug, docs/descriptor.md §5)",
            devices.len()
        ))
    } else if !devices.is_empty() && p.data_in_primary {
        Some(
            "data on the descriptor and on its device: file-backed EROFS would merge reads across them (Linux bug, docs/descriptor.md §5)"
                .into(),
        )
    } else if let Some(d) = on_tmpfs {
        Some(format!(
            "{} is on tmpfs, where file-backed mounts are refused",
            d.path.display()
        ))
    } else if devices.iter().any(|d| d.block != primary.block) {
        Some("block devices and regular files mixed".into())
    } else {
        None
    }
}

/// Why one attempt failed.
enum Failure {
    /// A step before the kernel was asked (loop devices, paths).
    Setup(Error),
    /// The kernel refused: the step, its errno and its log lines.
    Kernel {
        step: &'static str,
        errno: i32,
        message: String,
    },
}

impl Failure {
    fn into_error(self, display: &str, target: &Path) -> Error {
        match self {
            Failure::Setup(e) => e,
            Failure::Kernel {
                step,
                errno,
                message,
            } => {
                let kind = if matches!(errno, libc::EPERM | libc::EACCES) {
                    ErrorKind::Permission
                } else {
                    ErrorKind::Mount
                };
                Error::new(
                    kind,
                    format!(
                        "the kernel's EROFS refused to mount {display} on {} ({step}): {message}",
                        target.display()
                    ),
                )
                .with_errno(errno)
            }
        }
    }
}

/// One mount attempt: file-backed, or with every regular file on a loop device. Returns the
/// loop devices used (which the mount now holds).
fn attempt(
    p: &Prepared,
    primary: &Dev,
    devices: &[Dev],
    use_loops: bool,
    target: &Path,
    opts: &Options,
    log: &Log,
) -> Result<Vec<PathBuf>, Failure> {
    let mut loops = Vec::new();
    let mut as_path = |d: &Dev| -> Result<PathBuf, Failure> {
        if use_loops && !d.block {
            let l = LoopDevice::attach(&d.file, &d.path).map_err(|e| {
                Failure::Setup(Error::new(
                    ErrorKind::Mount,
                    format!("cannot attach {} to a loop device: {e}", d.path.display()),
                ))
            })?;
            log.info(format_args!(
                "{} on {}",
                d.path.display(),
                l.path().display()
            ));
            let path = l.path().to_owned();
            loops.push(l);
            Ok(path)
        } else {
            Ok(d.path.clone())
        }
    };
    let source = as_path(primary)?;
    let device_paths = devices
        .iter()
        .map(&mut as_path)
        .collect::<Result<Vec<_>, _>>()?;
    let result = mount_fs(p, &source, &device_paths, target, opts, log);
    // On failure the loop devices are dropped here, their last descriptors close and they
    // detach themselves; on success the mount holds them.
    let paths = loops.iter().map(|l| l.path().to_owned()).collect();
    drop(loops);
    result.map(|()| paths)
}

fn cstr(s: &OsStr) -> Result<CString, Failure> {
    CString::new(s.as_bytes()).map_err(|_| {
        Failure::Setup(Error::new(
            ErrorKind::Usage,
            format!("{:?}: a path with a NUL byte", s),
        ))
    })
}

fn mount_fs(
    p: &Prepared,
    source: &Path,
    devices: &[PathBuf],
    target: &Path,
    opts: &Options,
    log: &Log,
) -> Result<(), Failure> {
    let fs = sys::fsopen(c"erofs").map_err(|e| kernel("fsopen erofs", None, &e))?;
    let fsfd = fs.as_fd();
    let step = |name: &'static str, r: io::Result<()>| r.map_err(|e| kernel(name, Some(fsfd), &e));
    for d in devices {
        step(
            "device=",
            sys::fsconfig_string(fsfd, c"device", &cstr(d.as_os_str())?),
        )?;
    }
    step("ro", sys::fsconfig_flag(fsfd, c"ro"))?;
    if p.file_backed_only {
        // A lazy mount: EROFS must not keep compressed pages of its own. Reads a dead filler
        // let through decode zeros, and EROFS kept them in that cache, failing the same reads
        // after a new filler had made the bytes present; its `drop_caches` cannot drop a page
        // some CPU still holds (1 refill in 32 kept 2 reads failing). The pack files' page
        // cache holds the same bytes anyway (docs/lazy.md rule 8).
        step(
            "cache_strategy=disabled",
            sys::fsconfig_string(fsfd, c"cache_strategy", c"disabled"),
        )?;
    }
    for (k, v) in &opts.security {
        let (k, v) = (cstr(OsStr::new(k))?, cstr(OsStr::new(v))?);
        step("security option", sys::fsconfig_string(fsfd, &k, &v))?;
    }
    // The mount table shows the source string verbatim: show the image's name when it differs
    // from the file the kernel opens (an OCI reference rather than a cache file or loop device).
    let alias = (p.display.as_str() != source.as_os_str().to_string_lossy())
        .then(|| {
            SourceAlias::create(
                &p.display,
                source,
                &[&opts.cachedir, Path::new("/run/chunkfs")],
            )
        })
        .flatten();
    match &alias {
        Some(a) => {
            log.info(format_args!("mount source shown as {}", p.display));
            let shown = cstr(OsStr::new(&p.display))?;
            let dir = a.dir.clone();
            let r = std::thread::scope(|s| {
                s.spawn(|| -> io::Result<()> {
                    // A private working directory for this thread only, so the kernel resolves
                    // the relative source name against the alias directory.
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
                    nix::unistd::chdir(&dir)?;
                    sys::fsconfig_string(fsfd, c"source", &shown)?;
                    sys::fsconfig_create(fsfd)
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the mounting thread panicked")))
            });
            step("create", r)?;
        }
        None => {
            step(
                "source",
                sys::fsconfig_string(fsfd, c"source", &cstr(source.as_os_str())?),
            )?;
            step("create", sys::fsconfig_create(fsfd))?;
        }
    }
    drop(alias);
    let mnt =
        sys::fsmount(fsfd, opts.mount_attrs()).map_err(|e| kernel("fsmount", Some(fsfd), &e))?;
    sys::move_mount(mnt.as_fd(), &cstr(target.as_os_str())?)
        .map_err(|e| kernel("move_mount", Some(fsfd), &e))
}

fn kernel(step: &'static str, fs: Option<BorrowedFd<'_>>, e: &io::Error) -> Failure {
    let mut message = e.to_string();
    let lines = fs.map(read_log).unwrap_or_default();
    if !lines.is_empty() {
        message = format!("{message}: {}", lines.join("; "));
    }
    Failure::Kernel {
        step,
        errno: e.raw_os_error().unwrap_or(0),
        message,
    }
}

/// The messages the kernel queued on a filesystem context ("e erofs: ...").
fn read_log(fs: BorrowedFd<'_>) -> Vec<String> {
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while lines.len() < 32 {
        match nix::unistd::read(fs, &mut buf) {
            Ok(n) if n > 0 => {
                lines.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
            }
            _ => break,
        }
    }
    lines
}

/// A directory holding a symlink whose relative path is the name to show in the mount table
/// (e.g. `oci:/srv/layout:v1` is the directory `oci:`, then `srv`, then the symlink
/// `layout:v1`), pointing at the file the kernel must open. Removed when dropped.
struct SourceAlias {
    dir: PathBuf,
}

impl SourceAlias {
    fn create(shown: &str, real: &Path, bases: &[&Path]) -> Option<Self> {
        // Empty components (`docker://host/...`) resolve as one slash does.
        let parts: Vec<&str> = shown.split('/').filter(|c| !c.is_empty()).collect();
        let usable = !shown.starts_with('/')
            && !shown.ends_with('/')
            && shown.len() < 3000
            && !shown.contains('\0')
            && !parts.is_empty()
            && parts
                .iter()
                .all(|c| *c != "." && *c != ".." && c.len() < 256);
        if !usable {
            return None;
        }
        bases.iter().find_map(|base| {
            let dir = base.join(format!(
                ".source-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            ));
            let link = parts.iter().fold(dir.clone(), |d, c| d.join(c));
            let made = (|| {
                std::fs::create_dir_all(link.parent()?).ok()?;
                std::os::unix::fs::symlink(real, &link).ok()
            })();
            match made {
                Some(()) => Some(Self { dir }),
                None => {
                    let _ = std::fs::remove_dir_all(&dir);
                    None
                }
            }
        })
    }
}

impl Drop for SourceAlias {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
