//! `-o record=FILE` on a real FUSE mount, and what `chunkfs pack --prefetch` makes of the file
//! (docs/format.md §3.6): a small workload reads three files in a known order (not the order they
//! are stored in); the recording lists exactly those files' chunks in that order, and nothing
//! decompress-ahead loaded; SIGUSR1 writes a snapshot; the list goes into an image that keeps it
//! through `.cfs` <-> layout conversions and mounts on both readers; images without a list (the
//! golden written before the field existed) still mount, record and pack. Every mount is
//! unmounted by a guard, and nothing may be left.
//!
//! Needs root, /dev/fuse and a kernel EROFS with 48-bit extents (Linux 6.15+); skipped with a
//! message otherwise.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::digest::Digest;
use chunkfs_tests::chunks_of;
use chunkfs_tests::mount::{
    Mounted, assert_nothing_left, chunkfs_bin, describe, mountinfo_dev, output,
};
use chunkfs_tests::require_mount;
use chunkfs_tests::tree::{compare_trees, pseudo_random};

/// Files of the workload's tree, in the order they are stored (name order), with their sizes:
/// each at least 64 KiB, so each is chunked on its own (docs/format.md §2.2).
const FILES: [(&str, usize); 4] = [
    ("first", 700_000),
    ("second", 300_000),
    ("third", 500_000),
    ("unread", 600_000),
];

fn tree(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, (name, len)) in FILES.iter().enumerate() {
        std::fs::write(dir.join(name), pseudo_random(*len, 40 + i as u64)).unwrap();
    }
}

fn chunkfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    output(Command::new(chunkfs_bin()).args(args.iter().map(|a| a.as_ref())))
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", describe(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// `chunkfs mount -v -o OPTIONS IMAGE TARGET`; the guard and the helper's stderr.
fn mount(image: &Path, target: &Path, options: &str) -> (Mounted, String) {
    std::fs::create_dir_all(target).unwrap();
    let o = chunkfs(&[&"mount", &"-v", &"-o", &options, &image, &target]);
    assert!(
        o.status.success(),
        "chunkfs mount -o {options} {}: {}",
        image.display(),
        describe(&o)
    );
    (
        Mounted::at(target),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The FUSE daemon serving `target` (its pid file, by the mount's device).
fn daemon_pid(target: &Path) -> i32 {
    let dev = mountinfo_dev(target).dev;
    let text = std::fs::read_to_string(format!("/run/chunkfs/fuse/{}:{}", dev.0, dev.1)).unwrap();
    text.trim().parse().unwrap()
}

/// Asserts that `recorded` holds each of `files`' chunks, file after file. Within one file the
/// order is the kernel's: its readahead sends a file's next window while the daemon's threads
/// still serve the current one, so two chunks of one file may be recorded either way round.
fn assert_files_in_order(recorded: &[Digest], files: &[(&str, Vec<Digest>)]) {
    let want: usize = files.iter().map(|(_, c)| c.len()).sum();
    assert_eq!(recorded.len(), want, "{recorded:?}");
    let mut at = 0;
    for (name, chunks) in files {
        let mut got = recorded[at..at + chunks.len()].to_vec();
        let mut chunks = chunks.clone();
        got.sort();
        chunks.sort();
        assert_eq!(got, chunks, "{name}'s chunks at {at} of {recorded:?}");
        at += chunks.len();
    }
}

/// Reads the list at `path` once it names `n` chunks (a snapshot is written asynchronously).
fn wait_for_list(path: &Path, n: usize) -> Vec<Digest> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = chunkfs_format::prefetch::read(path).unwrap_or_default();
        if list.len() >= n || Instant::now() > deadline {
            return list;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_recorded_workload_becomes_the_image_prefetch_list() {
    require_mount!();
    let s = chunkfs_tests::scratch_dir("prefetch-record");
    let src = s.join("src");
    tree(&src);
    let image = s.join("image.cfs");
    ok(chunkfs(&[&"pack", &src, &image]));
    let meta = Cfs::open(&image).unwrap().image().clone();
    let chunks = |name| chunks_of(&meta, name);
    assert!(chunks("first").len() >= 2, "{:?}", chunks("first"));

    // The workload: third, first, second (not the stored order), whole files.
    let trace = s.join("trace.txt");
    let mnt = s.join("mnt");
    let (m, log) = mount(&image, &mnt, &format!("record={}", trace.display()));
    assert!(log.contains("using the FUSE reader"), "{log}");
    assert_eq!(mountinfo_dev(&mnt).fstype, "fuse.chunkfs");
    // Written when the mount starts: empty, but a list.
    assert_eq!(chunkfs_format::prefetch::read(&trace).unwrap(), vec![]);
    assert_eq!(
        std::fs::read(mnt.join("third")).unwrap(),
        std::fs::read(src.join("third")).unwrap()
    );
    // A snapshot on SIGUSR1: third's chunks, and none of the chunks stored after them that
    // decompress-ahead loaded meanwhile (unread's).
    let pid = daemon_pid(&mnt);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    assert_files_in_order(
        &wait_for_list(&trace, chunks("third").len()),
        &[("third", chunks("third"))],
    );
    for name in ["first", "second"] {
        assert_eq!(
            std::fs::read(mnt.join(name)).unwrap(),
            std::fs::read(src.join(name)).unwrap()
        );
    }
    // Read again: already recorded.
    std::fs::read(mnt.join("third")).unwrap();
    m.unmount();
    let recorded = chunkfs_format::prefetch::read(&trace).unwrap();
    let order = ["third", "first", "second"].map(|n| (n, chunks(n)));
    assert_files_in_order(&recorded, &order);
    let want = recorded.clone();

    // Into the image: every recorded chunk is the image's.
    let with = s.join("with.cfs");
    let out = ok(chunkfs(&[&"pack", &"--prefetch", &trace, &src, &with]));
    assert!(
        out.contains(&format!(
            "prefetch list: {} chunks; skipped 0 digests",
            want.len()
        )),
        "{out}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&ok(chunkfs(&[&"inspect", &"--json", &with]))).unwrap();
    assert_eq!(stats["prefetch_chunks"].as_u64(), Some(want.len() as u64));
    let with_meta = Cfs::open(&with).unwrap().image().clone();
    let listed: Vec<Digest> = with_meta
        .prefetch
        .iter()
        .map(|&c| with_meta.chunks[c as usize].digest)
        .collect();
    assert_eq!(listed, want);
    // .cfs -> layout -> .cfs keeps it and the metadata digest.
    let layout = format!("oci:{}:t", s.join("layout").display());
    let back = s.join("back.cfs");
    ok(chunkfs(&[&"pack", &with, &layout]));
    ok(chunkfs(&[&"pack", &layout, &back]));
    assert_eq!(
        Cfs::open(&back).unwrap().header().metadata_digest,
        Cfs::open(&with).unwrap().header().metadata_digest
    );
    // The image with a list mounts on both readers (from the layout too), as the tree.
    for (i, (source, options)) in [
        (with.display().to_string(), "reader=kernel"),
        (with.display().to_string(), "reader=fuse"),
        (layout.clone(), "reader=auto"),
    ]
    .into_iter()
    .enumerate()
    {
        let target = s.join(format!("check{i}"));
        let (m, _) = mount(Path::new(&source), &target, options);
        compare_trees(&src, &target).unwrap_or_else(|d| panic!("{source} {options}:\n{d}"));
        m.unmount();
    }
    assert_nothing_left(&s);
    let _ = std::fs::remove_dir_all(&s);
}

#[test]
fn an_image_without_a_list_mounts_records_and_takes_one() {
    require_mount!();
    let s = chunkfs_tests::scratch_dir("prefetch-old");
    // Written before the prefetch list existed, and pinned byte for byte since.
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/v1-basic.cfs");
    let meta = Cfs::open(&golden).unwrap().image().clone();
    assert!(meta.prefetch.is_empty());
    let trace = s.join("trace.txt");
    let kernel = s.join("kernel");
    let (k, _) = mount(&golden, &kernel, "reader=kernel");
    let fuse = s.join("fuse");
    let (f, _) = mount(&golden, &fuse, &format!("record={}", trace.display()));
    compare_trees(&kernel, &fuse).unwrap_or_else(|d| panic!("the readers disagree:\n{d}"));
    f.unmount();
    k.unmount();
    let recorded = chunkfs_format::prefetch::read(&trace).unwrap();
    // The comparison read every file, so every chunk of the image, each once.
    let mut sorted = recorded.clone();
    sorted.sort();
    let mut all: Vec<Digest> = meta.chunks.iter().map(|c| c.digest).collect();
    all.sort();
    assert_eq!(sorted, all);

    // The old image converts, and takes the recorded list on the way.
    let layout = format!("oci:{}:t", s.join("layout").display());
    let out = ok(chunkfs(&[&"pack", &"--prefetch", &trace, &golden, &layout]));
    assert!(
        out.contains(&format!("prefetch list: {} chunks", recorded.len())),
        "{out}"
    );
    let plain_layout = format!("oci:{}:plain", s.join("layout").display());
    ok(chunkfs(&[&"pack", &golden, &plain_layout]));
    let back = s.join("back.cfs");
    ok(chunkfs(&[&"pack", &plain_layout, &back]));
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&golden).unwrap()
    );
    let listed = s.join("listed.cfs");
    ok(chunkfs(&[&"pack", &layout, &listed]));
    assert_eq!(
        Cfs::open(&listed).unwrap().image().prefetch.len(),
        recorded.len()
    );
    assert_nothing_left(&s);
    let _ = std::fs::remove_dir_all(&s);
}

#[test]
fn record_refuses_the_kernel_reader_and_an_unwritable_file_and_survives_sigterm() {
    require_mount!();
    let s = chunkfs_tests::scratch_dir("prefetch-refuse");
    let src = s.join("src");
    tree(&src);
    let image = s.join("image.cfs");
    ok(chunkfs(&[&"pack", &src, &image]));
    let mnt = s.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let trace = s.join("trace.txt");
    for (options, code, needle) in [
        (
            format!("reader=kernel,record={}", trace.display()),
            2,
            "needs the FUSE reader",
        ),
        (
            format!("record={}", s.join("no/such/dir/trace.txt").display()),
            1,
            "cannot write it",
        ),
    ] {
        let o = chunkfs(&[&"mount", &"-o", &options, &image, &mnt]);
        let _guard = o.status.success().then(|| Mounted::at(&mnt));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{options}: {err}");
        assert!(err.contains(needle), "{options}: {err}");
        assert!(!trace.exists());
        assert_nothing_left(&s);
    }

    // SIGTERM ends the daemon as before, but writes the list first.
    let (m, _) = mount(&image, &mnt, &format!("record={}", trace.display()));
    std::fs::read(mnt.join("second")).unwrap();
    let pid = daemon_pid(&mnt);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let meta = Cfs::open(&image).unwrap().image().clone();
    let second = chunks_of(&meta, "second");
    assert_files_in_order(&wait_for_list(&trace, second.len()), &[("second", second)]);
    drop(m);
    assert_nothing_left(&s);
    let _ = std::fs::remove_dir_all(&s);
}
