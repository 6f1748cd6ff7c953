//! `chunkfs descriptor` through the binary: output file, options, dump and clean failures. The
//! kernel mount of what it writes is tested in `tests/tests/kernel_erofs.rs`.
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_chunkfs");

/// A scratch directory removed when the test ends, passed or failed.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        Self(chunkfs_tests::scratch_dir(name))
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn chunkfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(BIN)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(out: Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

fn packed(dir: &Path, align: bool) -> std::path::PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    // 170 kB: above the packed stream's 128 KiB, so the file has zstd extents of its own.
    fs::write(src.join("d/file"), "hello descriptor\n".repeat(10_000)).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    std::os::unix::fs::symlink("d/file", src.join("link")).unwrap();
    let image = dir.join(if align { "a.cfs" } else { "i.cfs" });
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"pack"];
    if align {
        args.extend([&"--align" as &dyn AsRef<std::ffi::OsStr>, &"512"]);
    }
    args.extend([&src as &dyn AsRef<std::ffi::OsStr>, &image]);
    ok(chunkfs(&args));
    image
}

#[test]
fn writes_a_standalone_descriptor_and_prints_its_device_option() {
    let tmp = Scratch::new("descriptor-write");
    let image = packed(&tmp, false);
    let out = tmp.join("image.erofs");
    let text = ok(chunkfs(&[&"descriptor", &image, &out]));
    let abs = fs::canonicalize(&image).unwrap();
    assert!(
        text.contains(&format!("device={}", abs.display())),
        "{text}"
    );
    assert!(text.contains("48-bit"), "{text}");
    let bytes = fs::read(&out).unwrap();
    assert_eq!(bytes.len() % 4096, 0);
    assert_eq!(&bytes[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
    // Deterministic: a second run writes the same bytes.
    ok(chunkfs(&[&"descriptor", &image, &out]));
    assert_eq!(fs::read(&out).unwrap(), bytes);
    let names: Vec<String> = fs::read_dir(&*tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(".tmp-")),
        "left a temporary file: {names:?}"
    );
}

#[test]
fn dumps_and_chooses_the_layout_from_the_image() {
    let tmp = Scratch::new("descriptor-dump");
    let image = packed(&tmp, true);
    let dump = ok(chunkfs(&[&"descriptor", &"--dump", &image]));
    assert!(
        dump.contains("zero_padding compr_cfgs/big_pcluster"),
        "{dump}"
    );
    assert_eq!(
        dump.lines().filter(|l| l.contains(" nid=")).count(),
        5,
        "{dump}"
    );
    assert!(dump.contains("/link nid="), "{dump}");
    assert!(dump.contains(" -> d/file"), "{dump}");
    assert!(dump.lines().any(|l| l.contains("zstd dev1@")), "{dump}");
    assert!(dump.lines().any(|l| l.contains("fragment @")), "{dump}");
    let out = tmp.join("b48.erofs");
    let text = ok(chunkfs(&[
        &"descriptor",
        &"--extents",
        &"48bit",
        &image,
        &out,
    ]));
    assert!(text.contains("48-bit"), "{text}");
}

#[test]
fn refuses_cleanly() {
    let tmp = Scratch::new("descriptor-refuse");
    let image = packed(&tmp, false);
    fails(chunkfs(&[&"descriptor", &image]), 2, "--dump");
    fails(
        chunkfs(&[
            &"descriptor",
            &"--extents",
            &"clusters",
            &image,
            &tmp.join("x"),
        ]),
        2,
        "--align 512",
    );
    fails(
        chunkfs(&[&"descriptor", &tmp.join("missing.cfs"), &tmp.join("x")]),
        3,
        "missing.cfs",
    );
    let junk = tmp.join("junk.cfs");
    fs::write(&junk, vec![7u8; 8192]).unwrap();
    fails(
        chunkfs(&[&"descriptor", &junk, &tmp.join("x")]),
        1,
        "junk.cfs",
    );
    assert!(!tmp.join("x").exists());
}

#[test]
fn describes_an_oci_image_with_its_pack_blobs_as_devices() {
    let tmp = Scratch::new("descriptor-oci");
    let src = tmp.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("file"), "oci descriptor\n".repeat(9000)).unwrap();
    let reference = format!("oci:{}:v1", tmp.join("layout").display());
    ok(chunkfs(&[&"pack", &src, &reference]));
    let out = tmp.join("v1.erofs");
    let text = ok(chunkfs(&[&"descriptor", &reference, &out]));
    let blobs = fs::canonicalize(tmp.join("layout/blobs/sha256")).unwrap();
    assert!(
        text.contains(&format!("device={}/", blobs.display())),
        "{text}"
    );
    let dump = ok(chunkfs(&[&"descriptor", &"--dump", &reference]));
    assert!(dump.contains("device 1: "), "{dump}");
    assert!(dump.lines().any(|l| l.contains("zstd dev1@")), "{dump}");
    fails(
        chunkfs(&[
            &"descriptor",
            &format!("oci:{}:nope", tmp.join("layout").display()),
            &out,
        ]),
        2,
        "nope",
    );
    fails(chunkfs(&[&"descriptor", &src, &out]), 2, "chunkfs pack");
}
