//! The FUSE reader daemon: the same binary, executed by [`super::fuse`] with `argv[0]` =
//! `@chunkfs-reader` (systemd's mark for root-storage daemons, which it leaves running at
//! shutdown) and a JSON spec naming descriptors it inherited. It forks once so that it is
//! nobody's child (its parent, the mount helper, reaps the intermediate process at once), starts
//! a new session, maps its files through the inherited descriptors (so it never depends on paths,
//! which matters after `switch_root`), mounts `/dev/fuse` itself, reports on the status pipe and
//! serves until the filesystem is unmounted.
//!
//! Status protocol (one line each): `pid N`, then `ok` or `error: MESSAGE`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use chunkfs_format::digest::Digest;
use chunkfs_reader::{Config, DigestSource, Reader};
use serde::{Deserialize, Serialize};

use super::{record, sys};

mod lazy_mount;

/// `argv[0]` of the daemon.
pub const ARGV0: &str = "@chunkfs-reader";
/// Where the daemon records its pid, by the mount's device number, for `chunkfs umount`.
pub const PID_DIR: &str = "/run/chunkfs/fuse";

/// An inherited descriptor and the name to use for it in messages.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdSpec {
    /// The descriptor number in the daemon.
    pub fd: i32,
    /// The file's name (for messages only).
    pub name: String,
}

/// A digest table inside an inherited file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableSpec {
    /// 0: the primary file; k: device file k.
    pub on: u16,
    /// Byte offset.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Expected sha256, hex.
    pub sha256: String,
    /// `DigestSource::device`.
    pub device: Option<u16>,
}

/// Everything the daemon needs, passed as `--spec JSON`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Spec {
    /// The write end of the status pipe.
    pub status_fd: i32,
    /// An `O_PATH` descriptor of the mount point.
    pub target: FdSpec,
    /// The mount source shown in the mount table.
    pub source: String,
    /// The primary device.
    pub primary: FdSpec,
    /// The extra devices.
    pub devices: Vec<FdSpec>,
    /// The digest tables.
    pub tables: Vec<TableSpec>,
    /// Chunk cache bytes.
    pub cache_bytes: Option<u64>,
    /// Worker threads.
    pub threads: Option<usize>,
    /// `allow_other`.
    pub allow_other: bool,
    /// Log failed requests.
    pub debug: bool,
    /// `MS_*` mount flags.
    pub ms_flags: u64,
    /// SELinux context options, passed to the kernel with the mount.
    pub security: Vec<(String, String)>,
    /// `record=FILE`: where to write the chunks reads need ([`super::record`]).
    #[serde(default)]
    pub record: Option<PathBuf>,
    /// A registry image whose devices are pack files of the local store, filled on first read
    /// (then `devices` and `tables` are empty).
    #[serde(default)]
    pub lazy: Option<LazyFds>,
}

/// What a lazy mount's daemon inherits besides the descriptor (docs/lazy.md §8).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LazyFds {
    /// A sealed memfd holding the [`crate::lazy::work::LazySpec`].
    pub spec: FdSpec,
    /// A sealed memfd holding credentials given on the command line, if any.
    pub creds: Option<FdSpec>,
    /// A sealed memfd holding the digest table the helper built from the image's checked
    /// metadata and the plan (every chunk, at its pack-file offset).
    pub tables: FdSpec,
    /// The table's sha256, hex.
    pub tables_sha256: String,
}

/// Largest digest table read (a 64-byte entry per chunk: 16 million chunks).
const TABLE_MAX: u64 = 1 << 30;

/// Runs the daemon from its command line (`@chunkfs-reader --spec JSON`); never returns.
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
    // Right after exec this process has one thread, so forking is safe. The intermediate exits
    // at once; the mount helper waits for it, and the daemon is adopted by init.
    match sys::fork_single_threaded() {
        Ok(Some(_)) => std::process::exit(0),
        Ok(None) => {}
        Err(e) => {
            eprintln!("{ARGV0}: fork: {e}");
            std::process::exit(1);
        }
    }
    let _ = nix::unistd::setsid();
    let mut keep = vec![spec.status_fd, spec.target.fd, spec.primary.fd];
    keep.extend(spec.devices.iter().map(|d| d.fd));
    if let Some(l) = &spec.lazy {
        keep.extend([l.spec.fd, l.tables.fd]);
        keep.extend(l.creds.as_ref().map(|c| c.fd));
    }
    sys::close_fds_except(&keep);
    let mut status = match sys::take_inherited_fd(spec.status_fd) {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("{ARGV0}: status pipe: {e}");
            std::process::exit(1);
        }
    };
    let _ = writeln!(status, "pid {}", std::process::id());
    if spec.record.is_some() {
        // Before any thread starts, so that only the recorder's thread sees them.
        let _ = record::block_signals();
    }
    let code = match start(&spec) {
        Ok(Started {
            reader,
            fuse,
            pidfile,
            recorder,
            lazy,
        }) => {
            let _ = writeln!(status, "ok");
            drop(status);
            let _ = nix::unistd::chdir("/");
            if let Some(r) = &recorder {
                r.handle_signals();
            }
            // The watcher polls a copy of the connection's descriptor for its end.
            let lazy = lazy.map(|l| l.start(pidfile.clone(), fuse.try_clone().ok()));
            let r = reader.serve(fuse);
            if let Some(rec) = &recorder {
                rec.write_logged("unmounted");
            }
            if let Some(p) = pidfile {
                let _ = std::fs::remove_file(p);
            }
            if let Some(l) = lazy {
                l.end("unmounted");
            }
            match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{ARGV0}: serving {}: {e}", spec.source);
                    1
                }
            }
        }
        Err(message) => {
            let _ = writeln!(status, "error: {}", message.replace('\n', " "));
            1
        }
    };
    std::process::exit(code)
}

/// Names `/proc/self/fd/N` paths in a message after the files they stand for.
fn rename_fds(message: String, spec: &Spec) -> String {
    std::iter::once(&spec.primary)
        .chain(&spec.devices)
        .fold(message, |m, f| {
            m.replace(&format!("/proc/self/fd/{}", f.fd), &f.name)
        })
}

/// What [`start`] returns.
struct Started {
    reader: Reader,
    /// The `/dev/fuse` descriptor.
    fuse: OwnedFd,
    /// The pid file.
    pidfile: Option<PathBuf>,
    /// The recorder (`record=`).
    recorder: Option<record::Recorder>,
    /// For a lazy mount, what runs beside the reader.
    lazy: Option<lazy_mount::Serving>,
}

/// Opens the reader, starts recording if asked, mounts, records the pid.
fn start(spec: &Spec) -> Result<Started, String> {
    let take = |f: &FdSpec| {
        sys::take_inherited_fd(f.fd)
            .map(File::from)
            .map_err(|e| format!("{}: {e}", f.name))
    };
    let target = take(&spec.target)?;
    let primary = take(&spec.primary)?;
    let devices = spec
        .devices
        .iter()
        .map(take)
        .collect::<Result<Vec<_>, _>>()?;
    let lazy = spec.lazy.as_ref().map(lazy_mount::open).transpose()?;
    let mut tables = Vec::with_capacity(spec.tables.len() + 1);
    if let Some(l) = &lazy {
        tables.push(l.tables.clone());
    }
    for t in &spec.tables {
        let (file, name) = match usize::from(t.on).checked_sub(1) {
            None => (&primary, &spec.primary.name),
            Some(k) => match (devices.get(k), spec.devices.get(k)) {
                (Some(f), Some(s)) => (f, &s.name),
                _ => {
                    return Err(format!(
                        "digest table on device {} that was not given",
                        t.on
                    ));
                }
            },
        };
        tables.push(DigestSource {
            bytes: read_table(file, name, t)?,
            device: t.device,
        });
    }
    let fd_path = |f: &File| PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    let mut config = Config::new(
        fd_path(&primary),
        devices.iter().map(fd_path).collect(),
        tables,
    );
    if let Some(l) = &lazy {
        config.devices = l.devices();
        // Decompress-ahead would fetch the eight frames stored after every small file read;
        // the lazy devices fetch ahead of sequential streams themselves.
        config.prefetch_chunks = 0;
    }
    if let Some(c) = spec.cache_bytes {
        config.cache_bytes = c;
    }
    if let Some(t) = spec.threads {
        config.threads = t;
    }
    config.allow_other = spec.allow_other;
    config.debug = spec.debug;
    let mut reader = Reader::open(config).map_err(|e| rename_fds(e.to_string(), spec))?;
    let recorder = match &spec.record {
        Some(path) => Some(record::Recorder::start(&mut reader, path)?),
        None => None,
    };
    // The reader mapped its own descriptors: the inherited ones are no longer needed.
    drop(primary);
    drop(devices);
    let fuse = mount_fuse(spec, &target)?;
    let pidfile = record_pid(spec);
    let lazy = lazy.map(|l| l.mounted(spec));
    Ok(Started {
        reader,
        fuse,
        pidfile,
        recorder,
        lazy,
    })
}

fn read_table(file: &File, name: &str, t: &TableSpec) -> Result<Vec<u8>, String> {
    if t.len > TABLE_MAX {
        return Err(format!(
            "{name}: digest table of {} bytes is too large",
            t.len
        ));
    }
    let mut bytes = vec![0u8; t.len as usize];
    file.read_exact_at(&mut bytes, t.offset)
        .map_err(|e| format!("{name}: cannot read the digest table: {e}"))?;
    if Digest::of(&bytes).to_hex() != t.sha256 {
        return Err(format!(
            "{name}: the digest table changed since it was checked; refusing to serve it"
        ));
    }
    Ok(bytes)
}

/// `mount(2)` of a FUSE filesystem on the target, served through the returned descriptor.
fn mount_fuse(spec: &Spec, target: &File) -> Result<OwnedFd, String> {
    use nix::fcntl::{OFlag, open};
    use nix::mount::MsFlags;
    use nix::sys::stat::Mode;
    let at = PathBuf::from(format!("/proc/self/fd/{}", target.as_raw_fd()));
    let root_mode = target
        .metadata()
        .map_err(|e| format!("{}: {e}", spec.target.name))?
        .mode()
        & libc::S_IFMT;
    let fuse = open("/dev/fuse", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("/dev/fuse: {e}"))?;
    let mut data = format!(
        "fd={},rootmode={root_mode:o},user_id={},group_id={},default_permissions",
        fuse.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if spec.allow_other {
        data.push_str(",allow_other");
    }
    for (k, v) in &spec.security {
        data.push_str(&format!(",{k}=\"{v}\""));
    }
    let flags = MsFlags::from_bits_truncate(libc::c_ulong::try_from(spec.ms_flags).unwrap_or(0));
    nix::mount::mount(
        Some(spec.source.as_str()),
        &at,
        Some("fuse.chunkfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| format!("cannot mount FUSE on {}: {e}", spec.target.name))?;
    Ok(fuse)
}

/// Writes `PID_DIR/MAJ:MIN` (the mount's device) holding this process's pid; best effort. The
/// device comes from the mount table: a `stat` of the mount point would wait for this very
/// process to answer.
fn record_pid(spec: &Spec) -> Option<PathBuf> {
    let target = Path::new(&spec.target.name);
    let m = super::mountinfo::read()
        .ok()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == target && m.fstype == "fuse.chunkfs")?;
    let path = Path::new(PID_DIR).join(format!("{}:{}", m.dev.0, m.dev.1));
    std::fs::create_dir_all(PID_DIR).ok()?;
    std::fs::write(&path, format!("{}\n", std::process::id())).ok()?;
    Some(path)
}

/// The pid recorded for the FUSE mount with device `dev`, if that process is still a reader
/// daemon.
pub fn recorded_pid(dev: (u32, u32)) -> Option<i32> {
    let path = Path::new(PID_DIR).join(format!("{}:{}", dev.0, dev.1));
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    let pid: i32 = s.trim().parse().ok()?;
    is_daemon(pid).then_some(pid)
}

/// Whether process `pid` exists (and is not a zombie) and is a reader daemon.
pub fn is_daemon(pid: i32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // A zombie has an empty command line.
    cmdline.split(|&b| b == 0).next() == Some(ARGV0.as_bytes())
}
