//! End-to-end tests of `chunkfs pack/unpack/inspect/verify` through the binary.
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chunkfs_tests::tree::{
    compare_trees, copy_tree_reversed, make_every_corner_tree, pseudo_random,
};

const BIN: &str = env!("CARGO_BIN_EXE_chunkfs");

fn chunkfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(BIN)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts a clean failure: the exit code, one line on stderr naming `needle`, no panic.
fn fails(out: Output, code: i32, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    err
}

fn inspect_json(image: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(chunkfs(&[&"inspect", &"--json", &image]))).unwrap()
}

/// No file named `name` and no temporary file in `dir`.
fn assert_no_output(dir: &Path, name: &str) {
    let left: Vec<_> = fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.to_string_lossy().contains(name)),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

#[test]
fn every_corner_survives_pack_verify_unpack() {
    let s = chunkfs_tests::scratch_dir("cli-roundtrip");
    let src = s.join("src");
    let made = make_every_corner_tree(&src).unwrap();
    if !made.root_parts {
        eprintln!("not root, so the tree lacks: {}", made.skipped.join("; "));
    }
    let image = s.join("image.cfs");
    let out = ok(chunkfs(&[&"pack", &src, &image]));
    assert!(out.contains("metadata sha256:"), "{out}");
    ok(chunkfs(&[&"verify", &image]));
    let stats = inspect_json(&image);
    // The 64 MiB sparse file costs only its data.
    assert!(stats["image_bytes"].as_u64().unwrap() < 8 << 20, "{stats}");
    let dst = s.join("dst");
    let out = chunkfs(&[&"unpack", &image, &dst]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if made.root_parts {
        assert!(
            out.stderr.is_empty(),
            "warnings as root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Err(diff) = compare_trees(&src, &dst) {
        panic!("the unpacked tree differs:\n{diff}");
    }
    // A second unpack into a non-empty directory is refused.
    fails(chunkfs(&[&"unpack", &image, &dst]), 2, "not empty");
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn unpack_as_non_root_skips_with_one_warning_per_kind() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to make a tree with devices and foreign owners");
        return;
    }
    let s = chunkfs_tests::scratch_dir("cli-nonroot");
    fs::set_permissions(&s, fs::Permissions::from_mode(0o777)).unwrap();
    let src = s.join("src");
    make_every_corner_tree(&src).unwrap();
    let image = s.join("image.cfs");
    ok(chunkfs(&[&"pack", &src, &image]));
    let dst = s.join("dst");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "unpack",
        ])
        .arg(&image)
        .arg(&dst)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for kind in ["owners", "device nodes", "trusted.*", "security.*"] {
        assert_eq!(
            err.lines().filter(|l| l.contains(kind)).count(),
            1,
            "want one warning about {kind}: {err}"
        );
    }
    assert_eq!(
        fs::read(dst.join("usr/bin/noise")).unwrap(),
        fs::read(src.join("usr/bin/noise")).unwrap()
    );
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn identical_data_is_stored_once_and_an_insertion_adds_few_chunks() {
    let s = chunkfs_tests::scratch_dir("cli-dedup");
    let src = s.join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    let data = pseudo_random(3 << 20, 42);
    fs::write(src.join("one"), &data).unwrap();
    let one = s.join("one.cfs");
    ok(chunkfs(&[&"pack", &src, &one]));
    let base = inspect_json(&one);

    fs::write(src.join("a/b/two"), &data).unwrap();
    let two = s.join("two.cfs");
    ok(chunkfs(&[&"pack", &src, &two]));
    let twice = inspect_json(&two);
    assert_eq!(twice["unique_chunks"], base["unique_chunks"], "{twice}");
    assert_eq!(
        twice["dedup_savings_bytes"].as_u64(),
        Some(3 << 20),
        "{twice}"
    );
    let stored = |v: &serde_json::Value| v["stored_bytes"].as_u64().unwrap();
    assert_eq!(stored(&twice), stored(&base));

    let mut edited = data.clone();
    edited.splice(1000..1000, *b"INSERT");
    fs::write(src.join("a/edited"), &edited).unwrap();
    let three = s.join("three.cfs");
    ok(chunkfs(&[&"pack", &src, &three]));
    let more = inspect_json(&three);
    let added = more["unique_chunks"].as_u64().unwrap() - base["unique_chunks"].as_u64().unwrap();
    assert!(added <= 2, "6 inserted bytes added {added} chunks: {more}");
    assert!(stored(&more) - stored(&base) < 600_000, "{more}");
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn many_small_files_make_few_chunks() {
    let s = chunkfs_tests::scratch_dir("cli-small");
    let src = s.join("src");
    for d in 0..40 {
        let dir = src.join(format!("dir{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            let n = d * 1000 + f;
            fs::write(
                dir.join(format!("f{f:03}")),
                format!("file {n}: {}\n", "x".repeat(n % 700)),
            )
            .unwrap();
        }
    }
    let image = s.join("small.cfs");
    ok(chunkfs(&[&"pack", &src, &image]));
    let stats = inspect_json(&image);
    assert_eq!(stats["files"], 40_000);
    assert_eq!(stats["packed_files"], 40_000);
    // About 14 MB of small files in chunks of 128 KiB on average.
    let chunks = stats["unique_chunks"].as_u64().unwrap();
    assert!(chunks < 300, "{chunks} chunks for 40,000 small files");
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn images_are_byte_identical_whatever_the_threads_order_and_location() {
    let s = chunkfs_tests::scratch_dir("cli-repro");
    let src = s.join("src");
    make_every_corner_tree(&src).unwrap();
    let copy = s.join("elsewhere/reversed");
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    copy_tree_reversed(&src, &copy).unwrap();
    compare_trees(&src, &copy).unwrap();

    let images: Vec<PathBuf> = (0..4).map(|i| s.join(format!("{i}.cfs"))).collect();
    ok(chunkfs(&[&"pack", &"--jobs", &"1", &src, &images[0]]));
    ok(chunkfs(&[&"pack", &"--jobs", &"7", &src, &images[1]]));
    ok(chunkfs(&[&"pack", &"--jobs", &"3", &copy, &images[2]]));
    // Relative paths from another working directory.
    let out = Command::new(BIN)
        .current_dir(s.join("elsewhere"))
        .args(["pack", "reversed", "../3.cfs"])
        .output()
        .unwrap();
    ok(out);
    let first = fs::read(&images[0]).unwrap();
    for other in &images[1..] {
        assert!(
            fs::read(other).unwrap() == first,
            "{} differs from {}",
            other.display(),
            images[0].display()
        );
    }
    // The aligned layout is reproducible too, and its frames end on 512-byte boundaries.
    let a1 = s.join("a1.cfs");
    let a2 = s.join("a2.cfs");
    ok(chunkfs(&[
        &"pack", &"--align", &"512", &"-j", &"1", &src, &a1,
    ]));
    ok(chunkfs(&[
        &"pack", &"--align", &"512", &"-j", &"5", &copy, &a2,
    ]));
    assert!(fs::read(&a1).unwrap() == fs::read(&a2).unwrap());
    ok(chunkfs(&[&"verify", &a1]));
    let cfs = chunkfs_format::cfs::read::Cfs::open(&a1).unwrap();
    assert!(
        cfs.locations()
            .iter()
            .all(|l| (l.offset + u64::from(l.stored_len)) % 512 == 0)
    );
    fs::remove_dir_all(&s).unwrap();
}

/// A way to damage an image's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

/// A small valid image to damage.
fn small_image(s: &Path) -> (PathBuf, Vec<u8>) {
    let src = s.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), pseudo_random(700_000, 5)).unwrap();
    fs::write(src.join("small"), b"hello").unwrap();
    let image = s.join("good.cfs");
    ok(chunkfs(&[&"pack", &src, &image]));
    let bytes = fs::read(&image).unwrap();
    (image, bytes)
}

#[test]
fn damaged_images_fail_cleanly_naming_the_problem() {
    let s = chunkfs_tests::scratch_dir("cli-damage");
    let (_, good) = small_image(&s);
    let header = chunkfs_format::cfs::header::Header::parse(&good).unwrap();
    let cfs = chunkfs_format::cfs::read::Cfs::open(&s.join("good.cfs")).unwrap();
    let (frame_offset, frame) = cfs.frame(1).unwrap();
    let frame_mid = frame_offset + frame.len() as u64 / 2;

    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "truncated",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)),
            "truncated",
        ),
        (
            "tiny",
            Box::new(|b: &mut Vec<u8>| b.truncate(100)),
            "shorter than the 1024-byte header",
        ),
        (
            "magic",
            Box::new(|b: &mut Vec<u8>| b[1] = b'X'),
            "not a chunkfs image",
        ),
        (
            "header",
            Box::new(|b: &mut Vec<u8>| b[40] ^= 0x10),
            "header checksum mismatch",
        ),
        (
            "future",
            Box::new(|b: &mut Vec<u8>| b[8] = 2),
            "version 2.0 is not supported",
        ),
        (
            "metadata",
            Box::new(move |b: &mut Vec<u8>| b[header.metadata.offset as usize + 3] ^= 1),
            "metadata: sha256 mismatch",
        ),
        (
            "index",
            Box::new(move |b: &mut Vec<u8>| b[header.index.offset as usize + 40] ^= 1),
            "chunk index: sha256 mismatch",
        ),
    ];
    for (name, damage, needle) in &cases {
        let mut bytes = good.clone();
        damage(&mut bytes);
        let path = s.join(format!("{name}.cfs"));
        fs::write(&path, &bytes).unwrap();
        for cmd in ["verify", "inspect"] {
            let err = fails(chunkfs(&[&cmd, &path]), 1, needle);
            assert!(err.contains(&format!("{name}.cfs")), "{err}");
        }
        let dst = s.join(format!("{name}.out"));
        fails(chunkfs(&[&"unpack", &path, &dst]), 1, needle);
        assert!(
            !dst.exists(),
            "unpack of a corrupt image created {}",
            dst.display()
        );
    }

    // A flipped byte inside a chunk frame: found by verify (naming chunk and offset) and by
    // unpack when it reads the chunk; inspect does not read frames.
    let mut bytes = good.clone();
    bytes[frame_mid as usize] ^= 0x01;
    let path = s.join("chunk.cfs");
    fs::write(&path, &bytes).unwrap();
    fails(
        chunkfs(&[&"verify", &path]),
        1,
        &format!("chunk 1 (frame at byte {frame_offset})"),
    );
    ok(chunkfs(&[&"inspect", &path]));
    fails(
        chunkfs(&[&"unpack", &path, &s.join("chunk.out")]),
        1,
        "chunk 1",
    );
    assert!(
        !s.join("chunk.out").exists(),
        "a failed unpack left its output"
    );
    // Into an existing empty directory: emptied again, kept.
    let existing = s.join("existing");
    fs::create_dir(&existing).unwrap();
    fails(chunkfs(&[&"unpack", &path, &existing]), 1, "chunk 1");
    assert_eq!(fs::read_dir(&existing).unwrap().count(), 0);

    // A non-zero byte in padding.
    let mut bytes = good.clone();
    let last = bytes.len() - 1;
    bytes[last] = 1;
    let path = s.join("padding.cfs");
    fs::write(&path, &bytes).unwrap();
    fails(
        chunkfs(&[&"verify", &path]),
        1,
        "padding after the chunk index: non-zero byte",
    );

    fails(
        chunkfs(&[&"verify", &s.join("missing.cfs")]),
        3,
        "missing.cfs: cannot open",
    );
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn bad_pack_inputs_fail_cleanly_without_output() {
    let s = chunkfs_tests::scratch_dir("cli-badpack");
    let src = s.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("ok"), b"fine").unwrap();

    fails(
        chunkfs(&[&"pack", &s.join("nonexistent"), &s.join("x.cfs")]),
        3,
        "nonexistent: cannot open: No such file or directory",
    );
    assert_no_output(&s, "x.cfs");
    fails(
        chunkfs(&[&"pack", &src.join("ok"), &s.join("x.cfs")]),
        3,
        "is not a directory",
    );
    assert_no_output(&s, "x.cfs");
    fails(
        chunkfs(&[&"pack", &src, &s.join("no/such/dir/x.cfs")]),
        3,
        "directory",
    );
    fails(chunkfs(&[&"pack", &src, &s]), 3, "is a directory");

    // An unreadable file: as root, pack as an unprivileged user; otherwise a mode-0 file is
    // unreadable to us already.
    let secret = src.join("secret");
    fs::write(&secret, b"no peeking").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    let out_dir = s.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o777)).unwrap();
    for d in [&s, &src] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dest = out_dir.join("x.cfs");
    let out = if nix::unistd::geteuid().is_root() {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                BIN,
                "pack",
            ])
            .arg(&src)
            .arg(&dest)
            .output()
            .unwrap()
    } else {
        Command::new(BIN)
            .arg("pack")
            .arg(&src)
            .arg(&dest)
            .output()
            .unwrap()
    };
    fails(out, 3, "secret: cannot open: Permission denied");
    assert_no_output(&out_dir, "x.cfs");

    // Usage errors.
    assert_eq!(chunkfs(&[&"pack"]).status.code(), Some(2));
    assert_eq!(
        chunkfs(&[&"pack", &"--align", &"4096", &src, &s.join("y.cfs")])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        chunkfs(&[&"pack", &"-l", &"99", &src, &s.join("y.cfs")])
            .status
            .code(),
        Some(2)
    );
    assert_no_output(&s, "y.cfs");
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn an_interrupted_pack_leaves_no_partial_file() {
    let s = chunkfs_tests::scratch_dir("cli-interrupt");
    let (src, out) = (s.join("src"), s.join("out"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&out).unwrap();
    // Slow enough (incompressible data, the slowest level, one thread) to be caught mid-way.
    fs::write(src.join("big"), pseudo_random(32 << 20, 7)).unwrap();
    let child = Command::new(BIN)
        .args(["pack", "-l", "19", "--jobs", "1"])
        .arg(&src)
        .arg(out.join("x.cfs"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while fs::read_dir(&out).unwrap().next().is_none() {
        assert!(
            started.elapsed().as_secs() < 60,
            "no temporary file appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let done = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(130), "stderr: {err}");
    assert!(err.contains("stopped by SIGINT; 1 unfinished"), "{err}");
    assert_no_output(&out, "x.cfs");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn an_image_inside_its_source_tree_is_left_out() {
    let s = chunkfs_tests::scratch_dir("cli-inside");
    fs::write(s.join("file"), b"content").unwrap();
    ok(chunkfs(&[&"pack", &s, &s.join("self.cfs")]));
    // Packing again sees the previous image but must not include it, nor its own temp file.
    ok(chunkfs(&[&"pack", &s, &s.join("self.cfs")]));
    let stats = inspect_json(&s.join("self.cfs"));
    assert_eq!(stats["files"], 1, "{stats}");
    fs::remove_dir_all(&s).unwrap();
}

/// `initramfs` exits with the documented statuses too: an output that cannot be written is an
/// I/O failure (3), a binary that cannot be /init is a usage error (2); neither leaves a file.
#[test]
fn initramfs_exit_statuses_tell_an_unwritable_output_from_a_bad_binary() {
    let s = chunkfs_tests::scratch_dir("cli-initramfs");
    fs::write(s.join("file"), b"not a directory").unwrap();
    for out in [s.join("no/such/dir/initrd.img"), s.join("file/initrd.img")] {
        let err = fails(
            chunkfs(&[&"initramfs", &"--zstd-level", &"0", &out]),
            3,
            "cannot write",
        );
        assert!(err.contains(&*out.to_string_lossy()), "{err}");
    }
    // The test binary is dynamically linked: no kernel could run it as PID 1.
    let out = s.join("initrd.img");
    fails(
        chunkfs(&[&"initramfs", &"--binary", &BIN, &"--zstd-level", &"0", &out]),
        2,
        "not a statically linked executable",
    );
    assert_no_output(&s, "initrd");
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn every_command_has_help_with_an_example_and_exit_codes() {
    for cmd in ["pack", "unpack", "inspect", "verify", "initramfs"] {
        let help = ok(chunkfs(&[&cmd, &"--help"]));
        assert!(help.contains(&format!("chunkfs {cmd} ")), "{cmd}: {help}");
        assert!(help.contains("Exit status: 0 ok"), "{cmd}: {help}");
    }
}
