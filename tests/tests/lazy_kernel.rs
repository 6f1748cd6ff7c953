//! The kernel's lazy path (docs/lazy.md): the kernel's own EROFS mounts a standalone descriptor
//! (`chunkfs descriptor`) whose one extra device is a *sparse* file of the `.cfs`'s length with
//! no data, and the fanotify filler (`lazy::Filler`, in-process or as the `@chunkfs-filler`
//! daemon) fills it from the complete `.cfs` as the kernel reads it.
//!
//! Needs root, EROFS with 48-bit extents (Linux 6.15+) and fanotify pre-content events (Linux
//! 6.14+) on /var/tmp's filesystem; tests print why they skip. Every mount is detached and every
//! filler stopped or killed by guards, also when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chunkfs_helper::lazy::copy::cfs_frames;
use chunkfs_helper::lazy::daemon::{DaemonOptions, start_daemon};
use chunkfs_helper::lazy::{
    Config, CopyPair, FileCopySource, FillError, FillSource, Filler, PackFile, Stats, StopHandle,
};
use chunkfs_tests::mount::{cannot_mount, chunkfs_bin, describe, output};
use chunkfs_tests::tree;

// ---------------------------------------------------------------------------------------------
// Fixture: the every-corner tree plus a few MB of varied files, packed once per test binary.
// ---------------------------------------------------------------------------------------------

struct Fixture {
    src: PathBuf,
    image: PathBuf,
    desc: PathBuf,
    image_len: u64,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = chunkfs_tests::scratch_dir("lazy-kernel");
        let src = dir.join("src");
        tree::make_every_corner_tree(&src).unwrap();
        make_varied(&src.join("varied"));
        pack(&dir, src)
    })
}

/// Packs `src` into `dir/image.cfs` and writes its standalone descriptor `dir/image.erofs`.
fn pack(dir: &Path, src: PathBuf) -> Fixture {
    let image = dir.join("image.cfs");
    let desc = dir.join("image.erofs");
    let o = output(
        Command::new(chunkfs_bin())
            .arg("pack")
            .arg(&src)
            .arg(&image),
    );
    assert!(o.status.success(), "chunkfs pack: {}", describe(&o));
    let o = output(
        Command::new(chunkfs_bin())
            .arg("descriptor")
            .arg(&image)
            .arg(&desc),
    );
    assert!(o.status.success(), "chunkfs descriptor: {}", describe(&o));
    let image_len = fs::metadata(&image).unwrap().len();
    eprintln!(
        "fixture: {} bytes of .cfs, {} bytes of descriptor",
        image_len,
        fs::metadata(&desc).unwrap().len()
    );
    Fixture {
        src,
        image,
        desc,
        image_len,
    }
}

/// Compressible text, incompressible noise, small files and a half-zero file: a few MB.
fn make_varied(dir: &Path) {
    fs::create_dir_all(dir.join("small")).unwrap();
    for i in 0..2u64 {
        let text: String = (0..24_000u64)
            .map(|j| {
                format!(
                    "{i}:{j:06} lazy kernel fill of a sparse pack, line {}\n",
                    j * 7 % 1000
                )
            })
            .collect();
        fs::write(dir.join(format!("text-{i}.txt")), text).unwrap();
        fs::write(
            dir.join(format!("noise-{i}.bin")),
            tree::pseudo_random(1_500_000 + i as usize * 333, 100 + i),
        )
        .unwrap();
    }
    for i in 0..120usize {
        let len = 100 + (i * 977) % 5000;
        fs::write(
            dir.join("small").join(format!("s{i:03}")),
            tree::pseudo_random(len, 1000 + i as u64),
        )
        .unwrap();
    }
    let mut half = vec![0u8; 1 << 20];
    half.extend(tree::pseudo_random(1 << 20, 9));
    fs::write(dir.join("half-zero.bin"), half).unwrap();
}

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if let Some(why) = cannot_mount() {
        return Some(why);
    }
    chunkfs_helper::lazy::supported(Path::new("/var/tmp"))
        .err()
        .map(|w| w.to_string())
}

macro_rules! require_lazy {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// One case: a fresh sparse device, a mount point, guards.
// ---------------------------------------------------------------------------------------------

struct Case {
    dir: PathBuf,
    /// The complete `.cfs` and the descriptor over it.
    image: PathBuf,
    desc: PathBuf,
    sparse_path: PathBuf,
    /// Opened before any filler marks it: reading it raises no events.
    sparse: File,
    mnt: PathBuf,
}

fn case(name: &str) -> Case {
    case_of(name, fixture())
}

fn case_of(name: &str, f: &Fixture) -> Case {
    let dir = chunkfs_tests::scratch_dir(&format!("lazy-{name}"));
    let sparse_path = dir.join("pack.cfs");
    let sparse = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&sparse_path)
        .unwrap();
    sparse.set_len(f.image_len).unwrap();
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).unwrap();
    Case {
        dir,
        image: f.image.clone(),
        desc: f.desc.clone(),
        sparse_path,
        sparse,
        mnt,
    }
}

impl Drop for Case {
    /// Removes the case's files; its mount and filler guards, made after it, are gone by then.
    fn drop(&mut self) {
        if mount_types(&self.mnt).is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A kernel EROFS mount, detached when dropped.
struct Mount {
    dir: PathBuf,
    mounted: bool,
}

impl Mount {
    /// Mounts the fixture's descriptor file-backed with the case's sparse file as its device.
    fn lazy(c: &Case) -> Mount {
        Self::with_device(c, &c.sparse_path)
    }

    /// Mounts the case's descriptor with `device` as its device.
    fn with_device(c: &Case, device: &Path) -> Mount {
        let mnt = &c.mnt;
        nix::mount::mount(
            Some(&c.desc),
            mnt,
            Some("erofs"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("device={}", device.display()).as_str()),
        )
        .unwrap_or_else(|e| panic!("mount erofs on {}: {e}", mnt.display()));
        Mount {
            dir: mnt.to_owned(),
            mounted: true,
        }
    }

    /// A plain `umount(2)`; returns how long it took.
    fn unmount(mut self) -> Duration {
        let t = Instant::now();
        nix::mount::umount2(&self.dir, nix::mount::MntFlags::empty())
            .unwrap_or_else(|e| panic!("umount {}: {e}", self.dir.display()));
        self.mounted = false;
        t.elapsed()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The `@chunkfs-filler` daemon as a child of the test, killed when dropped.
struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    fn start(c: &Case, background: bool, mounts: &[&Path]) -> Daemon {
        let image = File::open(&c.image).unwrap();
        let roots: Vec<File> = mounts.iter().map(|m| File::open(m).unwrap()).collect();
        let opts = DaemonOptions {
            mounts: roots
                .iter()
                .zip(mounts)
                .map(|(f, m)| (f, m.display().to_string()))
                .collect(),
            copies: vec![(&image, c.image.display().to_string())],
            cfs_frames: true,
            workers: None,
            deadline: Some(Duration::from_secs(20)),
            background,
            detach: false,
            log: true,
            store: None,
            control: None,
        };
        let started = start_daemon(
            &chunkfs_bin(),
            &[(&c.sparse, c.sparse_path.display().to_string())],
            &opts,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(started.child.is_some());
        Daemon {
            child: started.child,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and returns the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("a running daemon");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        c.wait().unwrap()
    }

    /// Waits up to `timeout` for the daemon to exit on its own.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut()?;
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// A source whose behaviour a test switches: fill from the copy, fail, or hang.
// ---------------------------------------------------------------------------------------------

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

struct Switchable {
    inner: FileCopySource,
    mode: AtomicU8,
    fills: AtomicU64,
    released: Mutex<bool>,
    release: Condvar,
}

impl Switchable {
    fn new(c: &Case) -> Arc<Self> {
        let inner = FileCopySource::new(vec![CopyPair {
            name: c.sparse_path.display().to_string(),
            sparse: &c.sparse,
            copy: File::open(&c.image).unwrap(),
            frames: Some(cfs_frames(&c.image).unwrap()),
        }])
        .unwrap();
        Arc::new(Self {
            inner,
            mode: AtomicU8::new(OK),
            fills: AtomicU64::new(0),
            released: Mutex::new(false),
            release: Condvar::new(),
        })
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// Lets every hung fill return (with an error).
    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.release.notify_all();
    }
}

impl FillSource for Switchable {
    fn ready(&self, file: usize, range: std::ops::Range<u64>, pid: i32) -> bool {
        self.inner.ready(file, range, pid)
    }

    fn fill(
        &self,
        file: usize,
        range: std::ops::Range<u64>,
        pid: i32,
        out: &File,
    ) -> Result<(), FillError> {
        self.fills.fetch_add(1, Ordering::SeqCst);
        let down = |what: &str| FillError::Source {
            class: chunkfs_format::ErrorClass::Network,
            source: what.into(),
        };
        match self.mode.load(Ordering::SeqCst) {
            FAIL => Err(down("the registry is down (test)")),
            HANG => {
                let mut released = self.released.lock().unwrap();
                while !*released {
                    released = self.release.wait(released).unwrap();
                }
                Err(down("released (test)"))
            }
            _ => self.inner.fill(file, range, pid, out),
        }
    }

    fn absent(&self, file: usize) -> Vec<std::ops::Range<u64>> {
        self.inner.absent(file)
    }

    fn is_complete(&self, file: usize) -> bool {
        self.inner.is_complete(file)
    }
}

/// A filler running on a thread of the test; stopped (and its hung fills released) on drop.
struct InProcess {
    stop: StopHandle,
    source: Arc<Switchable>,
    thread: Option<JoinHandle<Result<Stats, chunkfs_helper::lazy::filler::Error>>>,
}

impl InProcess {
    fn start(c: &Case, deadline: Duration) -> InProcess {
        let source = Switchable::new(c);
        let filler = Filler::new(
            vec![PackFile {
                name: c.sparse_path.display().to_string(),
                file: c.sparse.try_clone().unwrap(),
            }],
            Arc::clone(&source) as Arc<dyn FillSource>,
            Config {
                deadline,
                log: true,
                ..Config::default()
            },
        )
        .unwrap();
        let stop = filler.stop_handle();
        let thread = Some(std::thread::spawn(move || filler.run()));
        InProcess {
            stop,
            source,
            thread,
        }
    }

    fn stats(&self) -> Stats {
        self.stop.stats()
    }

    fn finish(mut self) -> Stats {
        self.source.release();
        self.stop.stop();
        let t = self.thread.take().unwrap();
        t.join().unwrap().unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.source.release();
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading and checking.
// ---------------------------------------------------------------------------------------------

/// The regular files below `root`, relative, sorted.
fn regular_files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                walk(root, &p, out);
            } else if m.is_file() {
                out.push(p.strip_prefix(root).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn read_whole(p: &Path) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(p)?.read_to_end(&mut v)?;
    Ok(v)
}

/// Bytes of the file that hold data (`SEEK_DATA`/`SEEK_HOLE`).
fn filled(f: &File) -> u64 {
    use nix::unistd::{Whence, lseek};
    let len = f.metadata().unwrap().len() as i64;
    let (mut at, mut total) = (0i64, 0u64);
    while at < len {
        let Ok(d) = lseek(f.as_fd(), at, Whence::SeekData) else {
            break;
        };
        let h = lseek(f.as_fd(), d, Whence::SeekHole).unwrap();
        total += (h - d) as u64;
        at = h;
    }
    total
}

/// The first byte of `f` that holds data, if any.
fn first_data(f: &File) -> Option<u64> {
    nix::unistd::lseek(f.as_fd(), 0, nix::unistd::Whence::SeekData)
        .ok()
        .map(|d| d as u64)
}

/// What a pass of reads saw.
#[derive(Debug, Default)]
struct Seen {
    exact: usize,
    failed: usize,
    wrong: Vec<String>,
}

/// Reads every regular file of the mount whole and compares it with the source.
fn read_pass(src: &Path, mnt: &Path, files: &[PathBuf], pause: Duration) -> Seen {
    let mut seen = Seen::default();
    for rel in files {
        let want = fs::read(src.join(rel)).unwrap();
        match read_whole(&mnt.join(rel)) {
            Ok(got) if got == want => seen.exact += 1,
            Ok(got) => seen.wrong.push(describe_difference(rel, &got, &want)),
            Err(_) => seen.failed += 1,
        }
        std::thread::sleep(pause);
    }
    seen
}

/// Where and how `got` differs from `want`.
fn describe_difference(rel: &Path, got: &[u8], want: &[u8]) -> String {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let last = got.iter().zip(want).rposition(|(a, b)| a != b);
    let zeros = match (first, last) {
        (Some(a), Some(b)) => got[a..=b].iter().all(|&x| x == 0),
        _ => false,
    };
    format!(
        "{}: {} bytes read, {} expected; bytes {first:?}..={last:?} differ{}",
        rel.display(),
        got.len(),
        want.len(),
        if zeros { " (zeros)" } else { "" }
    )
}

/// Small reads at pseudo-random offsets of every file (partial extents: what leaves cached
/// compressed pages in EROFS), compared with the source.
fn random_reads(src: &Path, mnt: &Path, files: &[PathBuf], seed: u64) -> Seen {
    let mut seen = Seen::default();
    let mut x = seed | 1;
    for rel in files {
        let want = fs::read(src.join(rel)).unwrap();
        if want.is_empty() {
            continue;
        }
        let Ok(f) = File::open(mnt.join(rel)) else {
            seen.failed += 1;
            continue;
        };
        let _ = nix::fcntl::posix_fadvise(
            f.as_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
        );
        for _ in 0..6 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % want.len() as u64) as usize;
            let n = 512.min(want.len() - at);
            let mut buf = vec![0u8; n];
            match f.read_exact_at(&mut buf, at as u64) {
                Ok(()) if buf == want[at..at + n] => seen.exact += 1,
                Ok(()) => seen
                    .wrong
                    .push(format!("{}: bytes at {at} differ", rel.display())),
                Err(_) => seen.failed += 1,
            }
        }
    }
    seen
}

/// The mount's line in /proc/mounts: its type and whether anything FUSE is mounted there.
fn mount_types(mnt: &Path) -> Vec<String> {
    let m = mnt.to_string_lossy().into_owned();
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(1) == Some(&m.as_str())).then(|| f.get(2).unwrap_or(&"").to_string())
        })
        .collect()
}

fn mmap(f: &File) -> memmap2::Mmap {
    #[allow(unsafe_code)]
    // SAFETY: the file is on a read-only mount and nothing modifies it while mapped.
    unsafe {
        memmap2::Mmap::map(f).unwrap()
    }
}

fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

/// The happy path through the real daemon: nothing is filled by mounting, a read fills only its
/// frames, mmap reads fault in lazily, every entry of the tree reads back exactly, the mount is
/// the kernel's EROFS with no FUSE anywhere, and once every frame was read the filler unmarks
/// the pack and exits while the mount keeps reading.
#[test]
fn a_lazily_filled_mount_reads_exactly_and_fills_only_what_is_read() {
    require_lazy!();
    let f = fixture();
    let c = case("exact");
    let mut daemon = Daemon::start(&c, false, &[]);
    let m = Mount::lazy(&c);
    assert_eq!(mount_types(&c.mnt), vec!["erofs".to_string()]);
    assert_eq!(filled(&c.sparse), 0, "mounting fetched data");
    // Metadata is local: listing the whole tree fetches nothing either.
    let files = regular_files(&c.mnt);
    assert_eq!(files, regular_files(&f.src));
    assert_eq!(filled(&c.sparse), 0, "walking the tree fetched data");

    // One 3 MiB incompressible file: about its own size is filled, nothing else.
    let noise = Path::new("usr/bin/noise");
    let want = fs::read(f.src.join(noise)).unwrap();
    assert!(read_whole(&c.mnt.join(noise)).unwrap() == want);
    let after_one = filled(&c.sparse);
    eprintln!(
        "reading {} ({} bytes) filled {after_one} of {} bytes",
        noise.display(),
        want.len(),
        f.image_len
    );
    assert!(
        after_one >= want.len() as u64 && after_one <= want.len() as u64 + (1 << 20),
        "{after_one} bytes filled for a {}-byte file",
        want.len()
    );

    // mmap, pages touched out of order, of a file nothing read yet.
    let medium = Path::new("usr/lib/medium");
    let want = fs::read(f.src.join(medium)).unwrap();
    let file = File::open(c.mnt.join(medium)).unwrap();
    let map = mmap(&file);
    map.advise(memmap2::Advice::Random).unwrap();
    let pages = want.len().div_ceil(4096);
    for k in 0..pages {
        let p = (k * 7919) % pages * 4096;
        assert_eq!(map[p], want[p], "mmap byte {p}");
    }
    assert!(map[..] == want[..], "the mapping differs from the source");
    drop((map, file));
    assert!(filled(&c.sparse) > after_one);

    // Everything, entry by entry.
    tree::compare_trees(&f.src, &c.mnt).unwrap_or_else(|d| panic!("{d}"));
    let total = filled(&c.sparse);
    eprintln!(
        "after reading everything: {total} of {} bytes filled",
        f.image_len
    );
    // The .cfs header and metadata are never read through the descriptor: still holes.
    assert!(first_data(&c.sparse).unwrap() >= 4096);
    assert!(total < f.image_len);
    assert_eq!(mount_types(&c.mnt), vec!["erofs".to_string()]);
    let fuse = fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !fuse
            .lines()
            .any(|l| l.contains(&*c.dir.to_string_lossy()) && l.contains("fuse")),
        "a FUSE mount under the case directory"
    );
    // Every frame was read: the filler unmarked the pack and exited by itself, and the mount
    // keeps reading with no filler at all.
    let status = daemon
        .wait_exit(Duration::from_secs(30))
        .expect("the filler did not exit once every frame was present");
    assert!(status.success(), "the filler daemon exited with {status}");
    let seen = read_pass(&f.src, &c.mnt, &files, Duration::ZERO);
    assert!(seen.wrong.is_empty() && seen.failed == 0, "{seen:?}");
    m.unmount();
}

/// The filler SIGKILLed in the middle of a read-all: every read fails or returns exact bytes,
/// never wrong ones; a new filler (dropping the mount's cached compressed pages) heals the same
/// mount, which need not be remade.
#[test]
fn a_killed_filler_never_serves_wrong_bytes_and_a_new_one_heals_the_mount() {
    require_lazy!();
    let f = fixture();
    let c = case("kill");
    let mut daemon = Daemon::start(&c, false, &[]);
    let m = Mount::lazy(&c);
    let files = regular_files(&f.src);
    let reader = {
        let (src, mnt, files) = (f.src.clone(), c.mnt.clone(), files.clone());
        std::thread::spawn(move || read_pass(&src, &mnt, &files, Duration::from_millis(3)))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while filled(&c.sparse) < 1 << 20 && Instant::now() < deadline && !reader.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill();
    let killed_at = filled(&c.sparse);
    let first = reader.join().unwrap();
    eprintln!("killed at {killed_at} bytes filled; read-all pass: {first:?}");
    assert!(first.wrong.is_empty(), "wrong bytes: {:#?}", first.wrong);
    assert!(
        first.failed > 0,
        "nothing failed: the filler died after the reads"
    );
    assert_eq!(mount_types(&c.mnt), vec!["erofs".to_string()]);
    // Partial reads of every file with no filler: errors, never wrong bytes. (These are what
    // leave zeros in EROFS's cache of compressed pages.)
    let partial = random_reads(&f.src, &c.mnt, &files, 7);
    eprintln!("partial reads with no filler: {partial:?}");
    assert!(
        partial.wrong.is_empty(),
        "wrong bytes: {:#?}",
        partial.wrong
    );
    assert!(partial.failed > 0);

    // A new filler for the same mount: it drops the holes' cached pages and the mount's cached
    // compressed pages, and every file reads exactly again.
    let _daemon2 = Daemon::start(&c, false, &[&c.mnt]);
    let healed = random_reads(&f.src, &c.mnt, &files, 7);
    assert!(healed.wrong.is_empty() && healed.failed == 0, "{healed:?}");
    tree::compare_trees(&f.src, &c.mnt).unwrap_or_else(|d| panic!("{d}"));
    m.unmount();
}

/// A source that fails: reads fail with EIO, the mount stays up, and once the source recovers
/// the same reads (whole files and partial ones) succeed on the same mount.
#[test]
fn a_failing_source_gives_eio_and_reads_succeed_once_it_recovers() {
    require_lazy!();
    let f = fixture();
    let c = case("fail");
    let filler = InProcess::start(&c, Duration::from_secs(20));
    let m = Mount::lazy(&c);
    let files = regular_files(&f.src);
    filler.source.set(FAIL);
    let e = read_whole(&c.mnt.join("usr/bin/noise")).unwrap_err();
    assert_eq!(errno_of(&e), Some(libc::EIO), "{e}");
    let during = random_reads(&f.src, &c.mnt, &files, 3);
    assert!(during.wrong.is_empty(), "{:#?}", during.wrong);
    // Only reads of holes (the sparse 64 MiB file) need no frame.
    assert!(during.failed > 0 && during.exact < 10, "{during:?}");
    assert_eq!(mount_types(&c.mnt), vec!["erofs".to_string()]);
    let stats = filler.stats();
    assert!(stats.failed > 0, "{stats:?}");
    assert_eq!(filled(&c.sparse), 0);

    filler.source.set(OK);
    let after = random_reads(&f.src, &c.mnt, &files, 3);
    assert!(after.wrong.is_empty() && after.failed == 0, "{after:?}");
    tree::compare_trees(&f.src, &c.mnt).unwrap_or_else(|d| panic!("{d}"));
    m.unmount();
    let stats = filler.finish();
    eprintln!("failing then recovered source: {stats:?}");
    assert!(stats.filled > 0);
}

/// A source that hangs: the reader gets EIO once the deadline passes, reads of present data are
/// answered meanwhile (a slow fill holds up only its own readers), and `umount` returns at once
/// after.
#[test]
fn a_hung_source_gives_eio_after_the_deadline_and_umount_is_prompt() {
    require_lazy!();
    let f = fixture();
    let c = case("hang");
    let deadline = Duration::from_secs(3);
    let filler = InProcess::start(&c, deadline);
    let m = Mount::lazy(&c);
    let present = c.mnt.join("varied/text-1.txt");
    let want = fs::read(f.src.join("varied/text-1.txt")).unwrap();
    assert!(read_whole(&present).unwrap() == want);
    filler.source.set(HANG);
    let t = Instant::now();
    let hung = {
        let p = c.mnt.join("varied/text-0.txt");
        std::thread::spawn(move || (read_whole(&p), t.elapsed()))
    };
    while filler.source.fills.load(Ordering::SeqCst) == 0 || filler.stats().events == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // While that reader waits: forget the present file's pages in the mount (its own and the
    // cached compressed ones), so reading it again goes to the pack and raises events, which
    // are answered at once.
    let before = filler.stats().at_once;
    let file = File::open(&present).unwrap();
    nix::fcntl::posix_fadvise(
        file.as_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .unwrap();
    drop(file);
    chunkfs_helper::lazy::filler::drop_erofs_caches(&File::open(&c.mnt).unwrap(), "mnt").unwrap();
    assert!(read_whole(&present).unwrap() == want);
    assert!(
        !hung.is_finished(),
        "the hung read returned before the present one"
    );
    assert!(filler.stats().at_once > before, "{:?}", filler.stats());
    let (r, waited) = hung.join().unwrap();
    let e = r.unwrap_err();
    eprintln!("hung source: the reader got {e} after {waited:?}");
    assert_eq!(errno_of(&e), Some(libc::EIO), "{e}");
    // One deadline, not one per attempt: the kernel's retries of a range whose fill already
    // missed its deadline fail at once.
    assert!(
        waited >= deadline.mul_f64(0.9) && waited < deadline.mul_f64(2.0),
        "{waited:?}"
    );
    assert!(filler.stats().timed_out > 0);
    let took = m.unmount();
    assert!(took < Duration::from_secs(5), "umount took {took:?}");
    let stats = filler.finish();
    eprintln!("hung source: {stats:?}");
}

/// SIGTERM stops the daemon at once with status 0; reads of what it had not filled then fail,
/// never return wrong bytes, and what it had filled still reads.
#[test]
fn a_terminated_filler_exits_cleanly_and_leaves_no_wrong_bytes() {
    require_lazy!();
    let f = fixture();
    let c = case("term");
    let mut daemon = Daemon::start(&c, false, &[]);
    let m = Mount::lazy(&c);
    let medium = Path::new("usr/lib/medium");
    let want = fs::read(f.src.join(medium)).unwrap();
    assert!(read_whole(&c.mnt.join(medium)).unwrap() == want);
    let t = Instant::now();
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let files = regular_files(&f.src);
    let seen = read_pass(&f.src, &c.mnt, &files, Duration::ZERO);
    assert!(seen.wrong.is_empty(), "{:#?}", seen.wrong);
    assert!(seen.failed > 0, "{seen:?}");
    assert!(read_whole(&c.mnt.join(medium)).unwrap() == want);
    m.unmount();
}

/// With background filling and no reader, the daemon fills every frame, unmarks, exits by
/// itself, and the mount reads with no filler: an ordinary kernel mount.
#[test]
fn a_background_filler_completes_the_pack_and_exits() {
    require_lazy!();
    let f = fixture();
    let c = case("complete");
    let mut daemon = Daemon::start(&c, true, &[]);
    let m = Mount::lazy(&c);
    let status = daemon
        .wait_exit(Duration::from_secs(120))
        .expect("the filler did not exit after filling everything");
    assert!(status.success(), "{status}");
    // Every frame is now in the sparse file, byte for byte; nothing else was written.
    let image = fs::read(&f.image).unwrap();
    let frames = cfs_frames(&f.image).unwrap();
    let mut frame_bytes = 0;
    for r in &frames {
        let mut got = vec![0u8; (r.end - r.start) as usize];
        c.sparse.read_exact_at(&mut got, r.start).unwrap();
        assert!(
            got == image[r.start as usize..r.end as usize],
            "frame {r:?} differs"
        );
        frame_bytes += r.end - r.start;
    }
    assert!(first_data(&c.sparse).unwrap() >= 4096);
    eprintln!(
        "{} frames, {frame_bytes} bytes; {} bytes allocated of {}",
        frames.len(),
        filled(&c.sparse),
        f.image_len
    );
    // No filler: reads need no events.
    tree::compare_trees(&f.src, &c.mnt).unwrap_or_else(|d| panic!("{d}"));
    m.unmount();
}

/// Writes into the case's sparse file, for every frame of the fixture, the part of it that
/// `part(index, frame, first page boundary)` names.
fn write_frame_parts(
    c: &Case,
    part: impl Fn(usize, &std::ops::Range<u64>, u64) -> std::ops::Range<u64>,
) {
    let f = fixture();
    let image = fs::read(&f.image).unwrap();
    for (k, r) in cfs_frames(&f.image).unwrap().into_iter().enumerate() {
        let split = ((r.start / 4096 + 1) * 4096).min(r.end);
        let p = part(k, &r, split);
        if p.start < p.end {
            c.sparse
                .write_all_at(&image[p.start as usize..p.end as usize], p.start)
                .unwrap();
        }
    }
}

/// What a filler killed between the two writes of every frame leaves (each frame written tail
/// first, its first page's part missing): the kernel refuses every such frame, no file reads
/// wrong bytes. This is why fills write tail first.
#[test]
fn frames_missing_their_head_are_refused_by_the_kernel() {
    if let Some(why) = cannot_mount() {
        eprintln!("skipped: {why}");
        return;
    }
    let f = fixture();
    let c = case("headless");
    write_frame_parts(&c, |_, r, split| split..r.end);
    let m = Mount::lazy(&c);
    let files = regular_files(&f.src);
    let whole = read_pass(&f.src, &c.mnt, &files, Duration::ZERO);
    let partial = random_reads(&f.src, &c.mnt, &files, 11);
    eprintln!("frames without their head: {whole:?}; partial reads {partial:?}");
    assert!(whole.wrong.is_empty(), "{:#?}", whole.wrong);
    assert!(partial.wrong.is_empty(), "{:#?}", partial.wrong);
    assert!(whole.failed > 0 && partial.failed > 0);
    m.unmount();
}

/// The reverse: every other frame has its first page's part but not the rest (the others are
/// whole). Linux 6.18's EROFS serves
/// some such reads with zeros and no error (a small file in the packed stream whose bytes end
/// early in a frame: the kernel decodes only that prefix and never reaches the checksum), which
/// is why a fill must never leave a frame's head without its tail (docs/lazy.md, rule 7).
/// Ignored: it fails while the kernel does this; run with `--ignored` to check a new kernel.
#[test]
#[ignore = "fails on Linux 6.18: EROFS serves zeros for a frame prefix whose tail is missing"]
fn kernel_refuses_frames_missing_their_tail() {
    if let Some(why) = cannot_mount() {
        eprintln!("skipped: {why}");
        return;
    }
    let f = fixture();
    let c = case("tailless");
    write_frame_parts(&c, |k, r, split| {
        if k % 2 == 0 {
            r.clone()
        } else {
            r.start..split
        }
    });
    let m = Mount::lazy(&c);
    let files = regular_files(&f.src);
    let whole = read_pass(&f.src, &c.mnt, &files, Duration::ZERO);
    let partial = random_reads(&f.src, &c.mnt, &files, 11);
    eprintln!("frames without their tail: {whole:?}; partial reads {partial:?}");
    m.unmount();
    assert!(whole.wrong.is_empty(), "{:#?}", whole.wrong);
    assert!(partial.wrong.is_empty(), "{:#?}", partial.wrong);
}

/// Read-all time of a lazily filled mount against the same descriptor on the complete file, and
/// the filler's events (for docs/lazy.md; not a timed test). `CHUNKFS_LAZY_TREE=DIR` measures
/// DIR instead of the test tree.
#[test]
#[ignore = "a measurement: cargo test -p chunkfs-tests --test lazy_kernel -- measure --ignored --nocapture"]
fn measure_read_all() {
    require_lazy!();
    let own;
    let f = match std::env::var_os("CHUNKFS_LAZY_TREE") {
        Some(tree) => {
            own = pack(
                &chunkfs_tests::scratch_dir("lazy-measure"),
                PathBuf::from(tree),
            );
            &own
        }
        None => fixture(),
    };
    let files = regular_files(&f.src);
    let read_all = |mnt: &Path| {
        let t = Instant::now();
        let mut bytes = 0usize;
        for rel in &files {
            bytes += read_whole(&mnt.join(rel)).unwrap().len();
        }
        (t.elapsed(), bytes)
    };
    let drop_cache = |p: &Path| {
        let file = File::open(p).unwrap();
        nix::fcntl::posix_fadvise(
            file.as_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap();
    };
    let mut rows: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut row = |k, t: Duration| {
        rows.entry(k)
            .or_default()
            .push(format!("{:.3}", t.as_secs_f64()))
    };
    for run in 0..3 {
        let c = case_of(&format!("measure-{run}"), f);
        drop_cache(&f.image);
        let m = Mount::with_device(&c, &f.image);
        let (t, bytes) = read_all(&c.mnt);
        row("A complete .cfs, cold", t);
        m.unmount();
        let m = Mount::with_device(&c, &f.image);
        let (t, _) = read_all(&c.mnt);
        row("B complete .cfs, warm", t);
        m.unmount();
        drop_cache(&f.image);
        let filler = InProcess::start(&c, Duration::from_secs(60));
        let m = Mount::lazy(&c);
        let (t, lazy_bytes) = read_all(&c.mnt);
        assert_eq!(bytes, lazy_bytes);
        row("C lazy fill, copy cold", t);
        m.unmount();
        let stats = filler.finish();
        // Complete, unmarked, no filler: an ordinary mount of the filled file.
        let m = Mount::lazy(&c);
        let (t, _) = read_all(&c.mnt);
        row("D filled file, no filler, warm", t);
        m.unmount();
        eprintln!(
            "run {run}: {bytes} bytes in {} files, .cfs {} bytes; filler {stats:?}",
            files.len(),
            f.image_len
        );
    }
    for (k, v) in rows {
        eprintln!("{k:34} {}", v.join(" "));
    }
}
