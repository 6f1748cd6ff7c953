//! Fixtures for the tests that mount through `mount.chunkfs` / `chunkfs mount`: the built
//! binary, the helper invoked as mount(8) invokes it, a guard that always unmounts, and a check
//! that nothing (mount, loop device, daemon) was left behind.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

/// The `chunkfs` binary of this workspace (`target/<profile>/chunkfs`), rebuilt first when a
/// source file of the crates it is made of is newer than it (running one test file alone with
/// `cargo test -p chunkfs-tests` does not build it). `CHUNKFS_BIN` overrides.
pub fn chunkfs_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CHUNKFS_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("the test's own path");
        // target/<profile>/deps/<test> -> target/<profile>/chunkfs
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/<profile>/deps");
        let bin = profile_dir.join("chunkfs");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let newest = ["helper", "format", "distribution", "reader", "kernel-abi"]
            .iter()
            .filter_map(|c| newest_mtime(&root.join(c)))
            .max();
        if built.is_none() || newest > built {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut c = Command::new(cargo);
            c.args(["build", "-p", "chunkfs-helper", "--bin", "chunkfs"])
                .current_dir(&root);
            if profile_dir.file_name() == Some(OsStr::new("release")) {
                c.arg("--release");
            }
            let status = c.status().expect("run cargo build");
            assert!(status.success(), "cargo build -p chunkfs-helper failed");
        }
        bin
    })
    .clone()
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if let Ok(t) = m.modified() {
                newest = newest.max(Some(t));
            }
        }
    }
    newest
}

/// `DIR/mount.chunkfs`, a symlink to [`chunkfs_bin`]: the helper under the name mount(8)
/// runs it by.
pub fn helper_in(dir: &Path) -> PathBuf {
    let link = dir.join("mount.chunkfs");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(chunkfs_bin(), &link).expect("symlink mount.chunkfs");
    link
}

/// Runs `cmd`, returning its output (never panics on failure; callers check).
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The helper's stderr and exit code, for messages.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}; stderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

/// A mount made by a test, unmounted when dropped (lazily if busy), so that a failing test
/// never leaves it behind. Also waits for a FUSE daemon to exit.
#[derive(Debug)]
pub struct Mounted {
    /// The mount point.
    pub dir: PathBuf,
}

impl Mounted {
    /// Takes charge of the mount at `dir`.
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Unmounts with `chunkfs umount` (which waits for the daemon); panics on failure.
    ///
    /// Retries for a second while the mount is busy: a process that another test thread is
    /// starting holds copies of this process's descriptors, files on the mount included,
    /// until it has executed its program.
    pub fn unmount(self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let o = output(Command::new(chunkfs_bin()).arg("umount").arg(&self.dir));
            if o.status.success() {
                break;
            }
            let busy = String::from_utf8_lossy(&o.stderr).contains("EBUSY");
            assert!(
                busy && Instant::now() < deadline,
                "chunkfs umount: {}",
                describe(&o)
            );
            eprintln!("{}: busy, retrying", self.dir.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::mem::forget(self);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let plain = Command::new(chunkfs_bin())
            .arg("umount")
            .arg(&self.dir)
            .output();
        if !plain.is_ok_and(|o| o.status.success()) {
            let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// What a test may leave behind in the system: mounts of anything under `scratch` or from it,
/// loop devices backed by a file under it, reader daemons whose command line names it.
pub fn leftovers(scratch: &Path) -> Vec<String> {
    let s = scratch.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for line in std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
    {
        if line.contains(&s) {
            found.push(format!("mount: {line}"));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/block") {
        for e in dir.flatten() {
            let backing = e.path().join("loop/backing_file");
            if let Ok(b) = std::fs::read_to_string(&backing) {
                if b.contains(&s) {
                    found.push(format!(
                        "loop device {}: {}",
                        e.file_name().to_string_lossy(),
                        b.trim()
                    ));
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.starts_with("@chunkfs-reader") && text.contains(&s) {
                found.push(format!(
                    "daemon {}: {}",
                    e.file_name().to_string_lossy(),
                    text.chars().take(200).collect::<String>()
                ));
            }
        }
    }
    found
}

/// Panics unless nothing is left behind under `scratch` (waiting up to 3 s for loop devices
/// and daemons that are on their way out).
pub fn assert_nothing_left(scratch: &Path) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = leftovers(scratch);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("left behind:\n{}", left.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the scratch directories earlier test processes left (`NAME-PID` of a process that is
/// gone, with nothing mounted or attached under it): shared fixtures live as long as their test
/// process, which exits without dropping them, and a killed test drops nothing.
pub fn sweep_dead_scratch() {
    let base = Path::new("/var/tmp/chunkfs-tests");
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    for e in dir.flatten() {
        let file_name = e.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let path = e.path();
        if !Path::new(&format!("/proc/{pid}")).exists() && leftovers(&path).is_empty() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// Returns from the calling test, saying why, when mount tests cannot run here.
#[macro_export]
macro_rules! require_mount {
    () => {
        if let Some(why) = $crate::mount::cannot_mount() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Why a mount test cannot run here, if it cannot.
pub fn cannot_mount() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.contains("erofs") {
        return Some("no EROFS in this kernel".into());
    }
    if !Path::new("/sys/fs/erofs/features/48bit").exists() {
        return Some("this kernel's EROFS has no 48-bit extents (Linux 6.15+)".into());
    }
    None
}

/// `/sbin/mount.chunkfs` pointing at [`chunkfs_bin`] while the guard lives, for tests that run
/// the real mount(8): serialised between processes by a lock, and the previous link (or its
/// absence) restored when dropped.
pub struct SbinHelper {
    previous: Option<PathBuf>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Where mount(8) looks for the helper.
pub const SBIN_HELPER: &str = "/sbin/mount.chunkfs";

impl SbinHelper {
    /// Installs the link (waiting for other tests that hold it).
    pub fn install() -> Self {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/lock/chunkfs-sbin-helper.lock")
            .expect("open the lock file");
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("lock /run/lock/chunkfs-sbin-helper.lock");
        let previous = std::fs::read_link(SBIN_HELPER).ok();
        assert!(
            previous.is_some() || !Path::new(SBIN_HELPER).exists(),
            "{SBIN_HELPER} exists and is not a symlink: not replacing it"
        );
        let tmp = PathBuf::from(format!("{SBIN_HELPER}.test-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(chunkfs_bin(), &tmp).expect("symlink");
        std::fs::rename(&tmp, SBIN_HELPER).expect("install /sbin/mount.chunkfs");
        Self {
            previous,
            _lock: lock,
        }
    }
}

impl Drop for SbinHelper {
    fn drop(&mut self) {
        match &self.previous {
            Some(p) => {
                let tmp = PathBuf::from(format!("{SBIN_HELPER}.test-{}", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                if std::os::unix::fs::symlink(p, &tmp).is_ok() {
                    let _ = std::fs::rename(&tmp, SBIN_HELPER);
                }
            }
            None => {
                let _ = std::fs::remove_file(SBIN_HELPER);
            }
        }
    }
}

/// The `/proc/self/mountinfo` entry of the topmost mount at `target` (panics if none).
pub fn mountinfo_dev(target: &Path) -> MountLine {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = target.to_string_lossy().replace(' ', "\\040");
    text.lines()
        .rev()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.get(4) != Some(&want.as_str()) {
                return None;
            }
            let (major, minor) = l.get(2)?.split_once(':')?;
            Some(MountLine {
                dev: (major.parse().ok()?, minor.parse().ok()?),
                fstype: r.first()?.to_string(),
                source: r.get(1)?.to_string(),
                options: r.get(2).unwrap_or(&"").to_string(),
            })
        })
        .unwrap_or_else(|| panic!("{} is not mounted", target.display()))
}

/// A mount as mountinfo shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    /// Device numbers (major 7: a loop device; 0: anonymous, e.g. file-backed EROFS or FUSE).
    pub dev: (u32, u32),
    /// Filesystem type.
    pub fstype: String,
    /// Source.
    pub source: String,
    /// The filesystem's own options (`ro,cache_strategy=...` for EROFS).
    pub options: String,
}
