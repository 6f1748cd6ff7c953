//! `chunkfs refill MOUNTPOINT`: starts a new filler for a lazy kernel mount whose filler died
//! (killed, crashed): until then, reads of frames not yet present fail with EIO (never wrong
//! bytes). The new filler opens the same packs, marks them, drops the EROFS mount's cached
//! compressed pages (docs/lazy.md rule 8) and serves the same mount: no remount, open files
//! stay open (docs/lazy.md §8).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;

use crate::Error;
use crate::lazy::daemon::{DaemonOptions, start_daemon};
use crate::lazy::status::{self, MountRecord};
use crate::lazy::work::{self, LazySpec};
use crate::mount::{Options, mountinfo};

/// Arguments of `chunkfs refill`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs refill /mnt\n",
    "  chunkfs refill -o authfile=/root/auth.json /mnt\n\n",
    "For a registry image mounted on the kernel path with a filler (`chunkfs status` says\n",
    "`kernel+filler`, daemon DEAD). Credentials given at mount time with creds= are not kept:\n",
    "give them again (-o creds=USER:PASS or authfile=FILE) if the registry needs them.\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The mount point of the lazy kernel mount.
    pub target: PathBuf,
    /// Registry options: creds=USER:PASS, authfile=FILE (others as at mount time).
    #[arg(short = 'o', long = "options", value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Tell what is done.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Runs `chunkfs refill`.
pub fn run(args: &Args) -> Result<(), Error> {
    let opts = Options::parse(&args.options.join(","), false)
        .map_err(|e| Error::usage(format!("refill: {e}")))?;
    let target = std::fs::canonicalize(&args.target)
        .map_err(|e| Error::io(format!("{}: {e}", args.target.display())))?;
    let m = mountinfo::mounted_at(&target)
        .map_err(|e| Error::io(format!("/proc/self/mountinfo: {e}")))?
        .ok_or_else(|| Error::usage(format!("{}: not a mount point", target.display())))?;
    let mut record = MountRecord::of_mount(m.id).ok_or_else(|| {
        Error::usage(format!(
            "{}: not a lazy registry mount (no record under {})",
            target.display(),
            status::DIR
        ))
    })?;
    if m.fstype != "erofs" || record.reader == "fuse" {
        return Err(Error::usage(format!(
            "{}: served by the FUSE reader, which has no filler; remount it",
            target.display()
        )));
    }
    if let Some(pid) = record.daemon_pid.filter(|&p| status::daemon_alive(p)) {
        return Err(Error::usage(format!(
            "{}: its filler (pid {pid}) is running",
            target.display()
        )));
    }
    let mut registry = record.registry.clone();
    if opts.registry.authfile.is_some() {
        registry.authfile = opts.registry.authfile.clone();
    }
    let spec = LazySpec {
        id: record.id.clone(),
        store: record.store.clone(),
        reference: record.pinned.clone(),
        registry,
        packs: record.packs.clone(),
        used: record.used.clone(),
        prefetch: Vec::new(),
        background: record.background,
        // A new filler does not take over a recording: the list was the old one's.
        record: None,
    };
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what}: {e}"));
    let spec_file = spec.to_memfd().map_err(|e| io("memfd", e))?;
    let creds = opts
        .registry
        .creds
        .as_ref()
        .map(work::credentials_memfd)
        .transpose()
        .map_err(|e| io("memfd", e))?;
    let root = File::open(&target).map_err(|e| io(&target.display().to_string(), e))?;
    let sysfs = crate::lazy::fanotify::sysfs_path(root.as_fd()).unwrap_or_default();
    let (control_r, control_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("pipe", e.into()))?;
    let (control_r, mut control_w) = (File::from(control_r), File::from(control_w));
    let exe = PathBuf::from("/proc/self/exe");
    let started = start_daemon(
        &exe,
        &[],
        &DaemonOptions {
            mounts: vec![(&root, target.display().to_string())],
            copies: Vec::new(),
            cfs_frames: false,
            workers: None,
            deadline: Some(std::time::Duration::from_secs(30)),
            background: false,
            detach: true,
            log: false,
            store: Some((&spec_file, creds.as_ref())),
            control: Some(&control_r),
        },
    )
    .map_err(|e| Error::new(chunkfs_format::ErrorClass::Io, e.to_string()))?;
    drop(control_r);
    let _ = writeln!(control_w, "mounted {} {sysfs}", m.id);
    record.daemon_pid = Some(started.pid);
    record
        .write()
        .map_err(|e| io(&status::record_path(&record.id).display().to_string(), e))?;
    if args.verbose {
        eprintln!(
            "chunkfs refill: {}: a new filler (pid {}) serves it; EROFS's cached pages dropped",
            target.display(),
            started.pid
        );
    }
    Ok(())
}
