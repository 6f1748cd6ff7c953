//! Load and soak (issue 6, item 4; root, /dev/fuse): a packed `.cfs` served by the FUSE reader
//! in its own process (this test binary re-executed as the daemon, as the mount helper runs it:
//! `Reader::mount_fd`, then `Reader::serve`) with a chunk cache far smaller than the data, and by
//! the kernel's EROFS. 32 threads mix whole-file reads, random `pread`s and metadata calls
//! (stat, readdir, readlink, xattrs) for a bounded time, checking every byte and attribute
//! against the source; meanwhile readers are SIGKILLed mid-read. The daemon's resident memory is
//! sampled throughout and must stay bounded. Finally the mount is detached (`umount -l`) under
//! load: open files keep working or fail cleanly, and the daemon exits by itself.
//!
//! `CHUNKFS_SOAK_SECS` sets the duration of each phase (default 8 s); the summary line reports
//! operations per second and the daemon's peak RSS.
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::cfs::write::{PackOptions, pack_dir};
use chunkfs_tests::corrupt::Rng;
use chunkfs_tests::tree::pseudo_random;
use nix::mount::{MntFlags, umount2};

/// Set in the re-executed test binary: `IMAGE\tMOUNTPOINT\tCACHE_BYTES`.
const DAEMON_ENV: &str = "CHUNKFS_SOAK_DAEMON";
/// The daemon's chunk cache: 8 MiB for ~40 MiB of chunks, so chunks are evicted constantly.
const CACHE_BYTES: u64 = 8 << 20;
/// Reader threads.
const THREADS: usize = 32;

fn secs() -> u64 {
    std::env::var("CHUNKFS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// Not a test of its own: the daemon, when this binary is re-executed with [`DAEMON_ENV`].
#[test]
fn soak_daemon() {
    let Some(spec) = std::env::var_os(DAEMON_ENV) else {
        return;
    };
    let spec = spec.into_string().unwrap();
    let mut parts = spec.split('\t');
    let (image, mnt, cache) = (
        PathBuf::from(parts.next().unwrap()),
        PathBuf::from(parts.next().unwrap()),
        parts.next().unwrap().parse::<u64>().unwrap(),
    );
    // The checks a mount makes, then the chunk index as the digest table.
    let cfs = Cfs::open(&image).unwrap();
    chunkfs_format::cfs::verify::check_structure(&cfs).unwrap();
    let index = cfs.region(cfs.header().index).to_vec();
    drop(cfs);
    let mut config = chunkfs_reader::Config::new(
        &image,
        vec![],
        vec![chunkfs_reader::DigestSource {
            bytes: index,
            device: None,
        }],
    );
    config.cache_bytes = cache;
    let reader = chunkfs_reader::Reader::open(config).unwrap();
    let fd = reader.mount_fd(&mnt).unwrap();
    println!("ready");
    reader.serve(fd).unwrap();
    println!("served");
}

/// The daemon process; unmounts (lazily if busy) and reaps it when dropped.
struct Daemon {
    child: Child,
    mnt: PathBuf,
}

impl Daemon {
    fn start(image: &Path, mnt: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "soak_daemon", "--nocapture", "--test-threads=1"])
            .env(
                DAEMON_ENV,
                format!("{}\t{}\t{CACHE_BYTES}", image.display(), mnt.display()),
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let daemon = Self {
            child,
            mnt: mnt.to_owned(),
        };
        // libtest prints the test's name first, on the same line.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim_end().ends_with("ready") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the daemon did not report ready within 60 s");
        daemon
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the daemon to exit; true if it exited successfully.
    fn wait_exit(&mut self, limit: Duration) -> Option<bool> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if umount2(&self.mnt, MntFlags::empty()).is_err() {
            let _ = umount2(&self.mnt, MntFlags::MNT_DETACH);
        }
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A kernel EROFS mount, always unmounted (lazily if busy).
struct KernelMount(PathBuf);

impl Drop for KernelMount {
    fn drop(&mut self) {
        if umount2(&self.0, MntFlags::empty()).is_err() {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
}

/// What the source tree holds, in memory.
struct Source {
    files: Vec<(PathBuf, Vec<u8>)>,
    dirs: BTreeMap<PathBuf, Vec<String>>,
    symlinks: Vec<(PathBuf, PathBuf)>,
    meta: BTreeMap<PathBuf, (u32, u64, i64)>,
    xattr_file: PathBuf,
}

/// ~45 MB: incompressible and compressible multi-chunk files, 400 small files, a sparse
/// file, symlinks, a user xattr.
fn make_tree(dir: &Path) -> Source {
    fs::create_dir_all(dir.join("big")).unwrap();
    for i in 0..4 {
        fs::write(
            dir.join(format!("big/random-{i}")),
            pseudo_random(4 << 20, 100 + i),
        )
        .unwrap();
    }
    for i in 0..2u32 {
        let text: Vec<u8> = (0..400_000u32)
            .flat_map(|n| format!("{i}: line {n}, some words repeat\n").into_bytes())
            .take(6 << 20)
            .collect();
        fs::write(dir.join(format!("big/text-{i}")), text).unwrap();
    }
    for d in 0..20 {
        let sub = dir.join(format!("small/d{d:02}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..20u64 {
            let n = (d * 20 + f) as usize;
            fs::write(
                sub.join(format!("f{f:02}")),
                pseudo_random(1 + n * 37 % 20_000, n as u64),
            )
            .unwrap();
        }
    }
    {
        let f = fs::File::create(dir.join("sparse")).unwrap();
        f.write_all_at(&pseudo_random(300_000, 9), 2 << 20).unwrap();
        f.write_all_at(&pseudo_random(200_000, 10), 11 << 20)
            .unwrap();
        f.set_len(16 << 20).unwrap();
    }
    std::os::unix::fs::symlink("big/text-0", dir.join("link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", dir.join("dangling")).unwrap();
    xattr::set(dir.join("big/text-1"), "user.soak", b"xattr value").unwrap();

    let mut src = Source {
        files: vec![],
        dirs: BTreeMap::new(),
        symlinks: vec![],
        meta: BTreeMap::new(),
        xattr_file: PathBuf::from("big/text-1"),
    };
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names = Vec::new();
        for e in fs::read_dir(dir.join(&rel)).unwrap().flatten() {
            let name = e.file_name().into_string().unwrap();
            let r = rel.join(&name);
            let m = fs::symlink_metadata(dir.join(&r)).unwrap();
            src.meta.insert(r.clone(), (m.mode(), m.size(), m.mtime()));
            if m.is_dir() {
                stack.push(r);
            } else if m.file_type().is_symlink() {
                src.symlinks
                    .push((r.clone(), fs::read_link(dir.join(&r)).unwrap()));
            } else {
                src.files.push((r.clone(), fs::read(dir.join(&r)).unwrap()));
            }
            names.push(name);
        }
        names.sort();
        src.dirs.insert(rel, names);
    }
    // Largest first: the killed readers and the lazy unmount use the first few.
    src.files
        .sort_by_key(|(p, d)| (std::cmp::Reverse(d.len()), p.clone()));
    src
}

/// Counters of one phase.
#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    bytes: AtomicU64,
}

/// Drops the page cache of one file (only its pages, not the machine's), so that reads reach
/// the reader instead of being served from memory.
fn forget(path: &Path) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    if let Ok(f) = fs::File::open(path) {
        let _ = posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }
}

/// One operation chosen at random: a whole file, a random range, or metadata.
fn one_op(rng: &mut Rng, root: &Path, src: &Source, counts: &Counts) -> Result<(), String> {
    let pick = rng.below(100);
    if pick < 35 {
        let (rel, want) = &src.files[rng.below(src.files.len() as u64) as usize];
        if rng.below(2) == 0 {
            forget(&root.join(rel));
        }
        let got = fs::read(root.join(rel)).map_err(|e| format!("read {}: {e}", rel.display()))?;
        if got != *want {
            return Err(format!("{}: whole-file read differs", rel.display()));
        }
        counts.bytes.fetch_add(got.len() as u64, Ordering::Relaxed);
    } else if pick < 75 {
        let (rel, want) = &src.files[rng.below(src.files.len() as u64) as usize];
        let f =
            fs::File::open(root.join(rel)).map_err(|e| format!("open {}: {e}", rel.display()))?;
        if rng.below(2) == 0 {
            forget(&root.join(rel));
        }
        for _ in 0..4 {
            let at = rng.below(want.len() as u64 + 1);
            let len = 1 + rng.below(256 << 10) as usize;
            let mut buf = vec![0u8; len];
            let n = f
                .read_at(&mut buf, at)
                .map_err(|e| format!("pread {} at {at}: {e}", rel.display()))?;
            let end = (at as usize + len).min(want.len());
            if buf[..n] != want[at as usize..end] {
                return Err(format!("{}: {len} bytes at {at} differ", rel.display()));
            }
            counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    } else if pick < 85 {
        let (rel, names) = src
            .dirs
            .iter()
            .nth(rng.below(src.dirs.len() as u64) as usize)
            .unwrap();
        let mut got: Vec<String> = fs::read_dir(root.join(rel))
            .map_err(|e| format!("readdir {}: {e}", rel.display()))?
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        got.sort();
        if got != *names {
            return Err(format!("{}: listing differs", rel.display()));
        }
    } else if pick < 95 {
        let (rel, &(mode, size, mtime)) = src
            .meta
            .iter()
            .nth(rng.below(src.meta.len() as u64) as usize)
            .unwrap();
        let m = fs::symlink_metadata(root.join(rel))
            .map_err(|e| format!("stat {}: {e}", rel.display()))?;
        let dir = m.is_dir();
        if m.mode() != mode || m.mtime() != mtime || (!dir && m.size() != size) {
            return Err(format!("{}: stat differs", rel.display()));
        }
    } else if pick < 98 {
        let (rel, target) = &src.symlinks[rng.below(src.symlinks.len() as u64) as usize];
        if fs::read_link(root.join(rel)).map_err(|e| e.to_string())? != *target {
            return Err(format!("{}: symlink target differs", rel.display()));
        }
    } else {
        let v = xattr::get(root.join(&src.xattr_file), "user.soak").map_err(|e| e.to_string())?;
        if v.as_deref() != Some(&b"xattr value"[..]) {
            return Err("xattr differs".into());
        }
    }
    counts.ops.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// What one load phase did.
struct Load {
    ops: u64,
    bytes: u64,
    killed: u64,
    failures: Vec<String>,
}

/// Runs [`THREADS`] readers on `root` for `secs`, SIGKILLing a `cat` mid-read now and then.
fn load(root: &Path, src: &Source, secs: u64) -> Load {
    let counts = Counts::default();
    let failures = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let killed = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (counts, failures, stop) = (&counts, &failures, &stop);
            s.spawn(move || {
                let mut rng = Rng::new(0x9E37_79B9 + t as u64);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Err(e) = one_op(&mut rng, root, src, counts) {
                        failures.lock().unwrap().push(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
        // Readers killed mid-read: the daemon must not notice beyond the aborted requests.
        let mut rng = Rng::new(77);
        let killed = &killed;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let (rel, _) = &src.files[rng.below(4) as usize];
            let mut cat = Command::new("cat")
                .arg(root.join(rel))
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(5 + rng.below(60)));
            if cat.kill().is_ok() {
                killed.fetch_add(1, Ordering::Relaxed);
            }
            let _ = cat.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    Load {
        ops: counts.ops.load(Ordering::Relaxed),
        bytes: counts.bytes.load(Ordering::Relaxed),
        killed: killed.load(Ordering::Relaxed),
        failures: failures.into_inner().unwrap(),
    }
}

/// Resident and peak resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Lazily unmounts `mnt` while 8 threads read through open files: each read returns the
/// source's bytes or an error, never other bytes, and nothing hangs.
fn detach_under_load(root: &Path, src: &Source) -> Vec<String> {
    let failures = Mutex::new(Vec::new());
    let started = Arc::new(std::sync::Barrier::new(9));
    std::thread::scope(|s| {
        for t in 0..8 {
            let (failures, started) = (&failures, started.clone());
            s.spawn(move || {
                let (rel, want) = &src.files[t % 6];
                let f = fs::File::open(root.join(rel)).unwrap();
                started.wait();
                let mut at = 0usize;
                let t0 = Instant::now();
                while at < want.len() && t0.elapsed() < Duration::from_secs(30) {
                    let mut buf = vec![0u8; 64 << 10];
                    match f.read_at(&mut buf, at as u64) {
                        Ok(0) => break,
                        Ok(n) => {
                            if buf[..n] != want[at..at + n] {
                                failures.lock().unwrap().push(format!(
                                    "{}: bytes at {at} differ after umount -l",
                                    rel.display()
                                ));
                                return;
                            }
                            at += n;
                        }
                        Err(_) => return,
                    }
                }
            });
        }
        started.wait();
        std::thread::sleep(Duration::from_millis(30));
        umount2(root, MntFlags::MNT_DETACH).unwrap();
    });
    failures.into_inner().unwrap()
}

fn setup(name: &str) -> Option<(PathBuf, PathBuf, Source)> {
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: needs root and /dev/fuse");
        return None;
    }
    let s = chunkfs_tests::scratch_dir(name);
    let src = make_tree(&s.join("src"));
    let image = s.join("image.cfs");
    pack_dir(&s.join("src"), &image, &PackOptions::default(), |_| {}).unwrap();
    let mnt = s.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    Some((s, image, src))
}

#[test]
fn fuse_reader_survives_32_threads_killed_readers_and_a_lazy_unmount() {
    if std::env::var_os(DAEMON_ENV).is_some() {
        return;
    }
    let Some((s, image, src)) = setup("soak-fuse") else {
        return;
    };
    let mnt = s.join("mnt");
    let mut daemon = Daemon::start(&image, &mnt);
    let pid = daemon.pid();
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some((rss, _)) = rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let t = Instant::now();
    let Load {
        ops,
        bytes,
        killed,
        failures,
    } = load(&mnt, &src, secs());
    let elapsed = t.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let hwm = rss_kib(pid).map_or(0, |(_, hwm)| hwm);
    eprintln!(
        "soak (FUSE reader, {CACHE_BYTES} B cache, {THREADS} threads): {ops} operations in {elapsed:.1} s \
         ({:.0} ops/s, {:.1} MB/s), {killed} readers killed mid-read, daemon RSS peak {} KiB \
         sampled, VmHWM {hwm} KiB",
        ops as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
        peak.load(Ordering::Relaxed)
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ops > 0);
    // Bounded: the cache, a chunk or two in flight per FUSE worker, FUSE buffers, the mapped
    // image's resident pages (file-backed, reclaimable) and the test binary itself.
    let image_kib = fs::metadata(&image).unwrap().len() / 1024;
    assert!(
        hwm < 96 * 1024 + image_kib,
        "the daemon's peak RSS is {hwm} KiB for a {} KiB cache",
        CACHE_BYTES / 1024
    );
    // Still serving after all that.
    assert_eq!(fs::read(mnt.join(&src.files[0].0)).unwrap(), src.files[0].1);

    let failures = detach_under_load(&mnt, &src);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(20)),
        Some(true),
        "the daemon did not exit cleanly after the lazy unmount"
    );
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&mnt.display().to_string()), "{mounts}");
    drop(daemon);
    let _ = fs::remove_dir_all(&s);
}

#[test]
fn kernel_erofs_survives_32_threads_killed_readers_and_a_lazy_unmount() {
    if std::env::var_os(DAEMON_ENV).is_some() {
        return;
    }
    let Some((s, image, src)) = setup("soak-kernel") else {
        return;
    };
    let mnt = s.join("mnt");
    let cfs = Cfs::open(&image).unwrap();
    chunkfs_format::cfs::verify::check_structure(&cfs).unwrap();
    drop(cfs);
    nix::mount::mount(
        Some(&image),
        &mnt,
        Some("erofs"),
        nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    let guard = KernelMount(mnt.clone());
    let t = Instant::now();
    let Load {
        ops,
        bytes,
        killed,
        failures,
    } = load(&mnt, &src, secs());
    let elapsed = t.elapsed().as_secs_f64();
    eprintln!(
        "soak (kernel EROFS, {THREADS} threads): {ops} operations in {elapsed:.1} s ({:.0} ops/s, {:.1} MB/s), {killed} readers killed mid-read",
        ops as f64 / elapsed,
        bytes as f64 / elapsed / 1e6
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let failures = detach_under_load(&mnt, &src);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(guard);
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&mnt.display().to_string()), "{mounts}");
    let _ = fs::remove_dir_all(&s);
}
