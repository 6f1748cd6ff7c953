//! The FUSE path, helper side: hands the checked files to a reader daemon ([`super::daemon`],
//! this binary again) and returns once the daemon has mounted, or fails with nothing left
//! behind. The daemon outlives the helper; it exits when the filesystem is unmounted.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::cache;
use super::daemon::{self, FdSpec, LazyFds, Spec, TableSpec};
use super::options::Options;
use super::registry::RegistryPrepared;
use super::status_pipe::{self, Status};
use super::sys;
use super::verify::{Prepared, Primary};
use super::{Error, ErrorKind, Log};

/// How long the daemon may take to open, validate and mount.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts a reader daemon serving `p` at `target`; returns its pid once the mount exists.
pub fn mount(
    p: &Prepared,
    target: &Path,
    opts: &Options,
    exe: &Path,
    log: &Log,
) -> Result<i32, Error> {
    mount_with(p, None, target, opts, exe, log)
}

/// Starts a reader daemon serving the registry image `p` at `target`, its devices pack files
/// of the store filled on first read (docs/lazy.md §8); returns its pid once the mount exists.
pub fn mount_lazy(
    p: &Prepared,
    reg: &RegistryPrepared,
    target: &Path,
    opts: &Options,
    exe: &Path,
    log: &Log,
) -> Result<i32, Error> {
    mount_with(p, Some(reg), target, opts, exe, log)
}

fn mount_with(
    p: &Prepared,
    reg: Option<&RegistryPrepared>,
    target: &Path,
    opts: &Options,
    exe: &Path,
    log: &Log,
) -> Result<i32, Error> {
    let io = |what: &str, e: std::io::Error| Error::new(ErrorKind::Io, format!("{what}: {e}"));
    let primary_file: File = match &p.primary {
        Primary::Image(b) => b
            .file
            .try_clone()
            .map_err(|e| io(&b.path.display().to_string(), e))?,
        Primary::Built { bytes, .. } => {
            cache::memfd(c"chunkfs-descriptor", bytes).map_err(|e| io("memfd", e))?
        }
    };
    let primary_name = match &p.primary {
        Primary::Image(b) => b.path.display().to_string(),
        Primary::Built { .. } => format!("the EROFS descriptor of {}", p.display),
    };
    // A lazy image's devices are opened by the daemon through the store.
    let devices: Vec<File> = match reg {
        Some(_) => Vec::new(),
        None => p
            .devices
            .iter()
            .map(|b| {
                b.file
                    .try_clone()
                    .map_err(|e| io(&b.path.display().to_string(), e))
            })
            .collect::<Result<_, _>>()?,
    };
    let lazy_files = match reg {
        Some(r) => Some((
            r.spec.to_memfd().map_err(|e| io("memfd", e))?,
            r.credentials
                .as_ref()
                .map(crate::lazy::work::credentials_memfd)
                .transpose()
                .map_err(|e| io("memfd", e))?,
            cache::memfd(c"chunkfs-digest-table", &r.tables).map_err(|e| io("memfd", e))?,
        )),
        None => None,
    };
    let target_fd: OwnedFd = nix::fcntl::open(
        target,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io(&target.display().to_string(), e.into()))?;
    let (status_r, status_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("pipe", e.into()))?;

    let spec = Spec {
        status_fd: status_w.as_raw_fd(),
        target: FdSpec {
            fd: target_fd.as_raw_fd(),
            name: target.display().to_string(),
        },
        source: p.display.clone(),
        primary: FdSpec {
            fd: primary_file.as_raw_fd(),
            name: primary_name,
        },
        devices: devices
            .iter()
            .zip(&p.devices)
            .map(|(f, b)| FdSpec {
                fd: f.as_raw_fd(),
                name: b.path.display().to_string(),
            })
            .collect(),
        tables: p
            .digests
            .iter()
            .map(|d| TableSpec {
                on: d.on,
                offset: d.offset,
                len: d.len,
                sha256: d.sha256.to_hex(),
                device: d.device,
            })
            .collect(),
        cache_bytes: opts.cache_bytes,
        threads: opts.threads,
        allow_other: opts.allow_other,
        debug: opts.debug,
        ms_flags: opts.ms_flags().bits(),
        security: opts.security.clone(),
        record: opts.record.clone(),
        lazy: lazy_files
            .as_ref()
            .zip(reg)
            .map(|((spec, creds, tables), r)| LazyFds {
                spec: FdSpec {
                    fd: spec.as_raw_fd(),
                    name: "the lazy mount's spec".into(),
                },
                creds: creds.as_ref().map(|c| FdSpec {
                    fd: c.as_raw_fd(),
                    name: "the registry credentials".into(),
                }),
                tables: FdSpec {
                    fd: tables.as_raw_fd(),
                    name: "the digest table".into(),
                },
                tables_sha256: chunkfs_format::digest::Digest::of(&r.tables).to_hex(),
            }),
    };
    let json = serde_json::to_string(&spec).map_err(|e| io("spec", std::io::Error::other(e)))?;
    let mut keep = vec![
        status_w.as_raw_fd(),
        target_fd.as_raw_fd(),
        primary_file.as_raw_fd(),
    ];
    keep.extend(devices.iter().map(|f| f.as_raw_fd()));
    if let Some((spec, creds, tables)) = &lazy_files {
        keep.extend([spec.as_raw_fd(), tables.as_raw_fd()]);
        keep.extend(creds.as_ref().map(|c| c.as_raw_fd()));
    }

    let mut cmd = Command::new(exe);
    std::os::unix::process::CommandExt::arg0(&mut cmd, daemon::ARGV0);
    cmd.arg("--spec")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // With `debug` the daemon logs failed reads to the helper's stderr (which it then keeps
    // open: a caller capturing that stderr sees end-of-file only when the daemon exits).
    cmd.stderr(if opts.debug {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
    log.info(format_args!(
        "starting the FUSE reader daemon ({})",
        exe.display()
    ));
    let mut child = sys::spawn_keeping(&mut cmd, &keep)
        .map_err(|e| io(&format!("cannot run {}", exe.display()), e))?;
    // Only the daemon may hold the write end, so that its exit is seen as end-of-file.
    drop(status_w);
    drop((primary_file, devices, target_fd, lazy_files));
    let intermediate = child.wait();

    let (pid, outcome) = status_pipe::read(status_r, "ok", READY_TIMEOUT);
    match outcome {
        Status::Ready => match pid {
            Some(pid) => Ok(pid),
            None => Err(Error::new(
                ErrorKind::Mount,
                "the FUSE reader daemon gave no pid",
            )),
        },
        Status::Failed(message) => Err(Error::new(ErrorKind::Mount, message)),
        Status::Exited => Err(Error::new(
            ErrorKind::Mount,
            format!(
                "the FUSE reader daemon ({}) exited before mounting ({})",
                exe.display(),
                match intermediate {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                }
            ),
        )),
        Status::TimedOut => {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // It may have mounted without reporting: take that mount away.
            detach_if_ours(target, &p.display);
            Err(Error::new(
                ErrorKind::Mount,
                format!(
                    "the FUSE reader daemon did not become ready within {} s; killed it",
                    READY_TIMEOUT.as_secs()
                ),
            ))
        }
    }
}

/// Lazily unmounts a FUSE chunkfs mount of `source` at `target`, if there is one.
fn detach_if_ours(target: &Path, source: &str) {
    if let Ok(Some(m)) = super::mountinfo::mounted_at(target) {
        if m.fstype == "fuse.chunkfs" && m.source == source {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The executable to start as the daemon: this program.
pub fn default_exe() -> PathBuf {
    PathBuf::from("/proc/self/exe")
}
