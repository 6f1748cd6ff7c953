//! Bad input to `mount.chunkfs`: a clear message naming the problem, mount(8)'s exit status
//! (1: bad invocation or permissions, 32: mount failure), and nothing left behind: no mount, no
//! loop device, no daemon.
//!
//! Needs root, /dev/fuse and a kernel EROFS with 48-bit extents; skipped with a message otherwise.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chunkfs_format::cfs::write::{PackOptions, pack_dir};
use chunkfs_tests::mount::{Mounted, assert_nothing_left, describe, helper_in, output};
use chunkfs_tests::require_mount;
use chunkfs_tests::tree::pseudo_random;

/// A scratch directory with a small image, the helper and a mount point; removed when dropped
/// unless something is still mounted or attached under it.
struct Setup {
    dir: PathBuf,
    helper: PathBuf,
    img: PathBuf,
    mnt: PathBuf,
}

fn setup(name: &str) -> Setup {
    let dir = chunkfs_tests::scratch_dir(name);
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("big"), pseudo_random(600_000, 1)).unwrap();
    std::fs::write(src.join("d/small"), b"small\n").unwrap();
    let img = dir.join("image.cfs");
    pack_dir(&src, &img, &PackOptions::default(), |_| {}).unwrap();
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let helper = helper_in(&dir);
    Setup {
        dir,
        helper,
        img,
        mnt,
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if chunkfs_tests::mount::leftovers(&self.dir).is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Setup {
    fn mount(&self, source: &Path, target: &Path, options: &str) -> Output {
        let mut c = Command::new(&self.helper);
        c.arg(source).arg(target);
        if !options.is_empty() {
            c.args(["-o", options]);
        }
        output(&mut c)
    }
}

/// Checks a refusal: exit status, a message containing every needle, nothing left.
fn refused(s: &Setup, o: &Output, code: i32, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(code), "{}", describe(o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("mount.chunkfs: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    let usage = err.contains("usage: ");
    assert!(usage || err.trim().lines().count() == 1, "one line: {err}");
    assert_nothing_left(&s.dir);
}

#[test]
fn bad_images_are_refused() {
    require_mount!();
    let s = setup("mount-errors-images");
    for reader in ["kernel", "fuse", "auto"] {
        let opts = format!("reader={reader}");
        let missing = s.dir.join("missing.cfs");
        let o = s.mount(&missing, &s.mnt, &opts);
        refused(&s, &o, 32, &["missing.cfs", "No such file"]);

        let junk = s.dir.join("junk.img");
        std::fs::write(&junk, pseudo_random(8192, 3)).unwrap();
        let o = s.mount(&junk, &s.mnt, &opts);
        refused(&s, &o, 32, &["junk.img", "not a chunkfs image"]);

        let cut = s.dir.join("cut.cfs");
        let bytes = std::fs::read(&s.img).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
        let o = s.mount(&cut, &s.mnt, &opts);
        refused(&s, &o, 32, &["cut.cfs", "truncated"]);

        let o = s.mount(&s.dir.join("src"), &s.mnt, &opts);
        refused(&s, &o, 1, &["a directory, not an image"]);

        let o = s.mount(Path::new("/dev/null"), &s.mnt, &opts);
        refused(&s, &o, 1, &["neither a regular file nor a block device"]);
    }
}

#[test]
fn bad_mount_points_are_refused() {
    require_mount!();
    let s = setup("mount-errors-targets");
    let o = s.mount(&s.img, &s.dir.join("nowhere"), "");
    refused(&s, &o, 32, &["mount point", "nowhere", "No such file"]);
    let o = s.mount(&s.img, &s.img, "");
    refused(&s, &o, 1, &["not a directory"]);

    // Already a mount point: refused, and the mount that is there stays.
    for reader in ["kernel", "fuse"] {
        let o = s.mount(&s.img, &s.mnt, &format!("reader={reader}"));
        assert!(o.status.success(), "{}", describe(&o));
        let first = Mounted::at(&s.mnt);
        for again in ["kernel", "fuse"] {
            let o = s.mount(&s.img, &s.mnt, &format!("reader={again}"));
            assert_eq!(o.status.code(), Some(32), "{}", describe(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("already a mount point"), "{err}");
        }
        assert_eq!(std::fs::read(s.mnt.join("d/small")).unwrap(), b"small\n");
        first.unmount();
        assert_nothing_left(&s.dir);
    }
}

#[test]
fn bad_options_are_refused() {
    require_mount!();
    let s = setup("mount-errors-options");
    for (opts, needles) in [
        ("frobnicate", &["frobnicate", "unknown option"][..]),
        ("reader=both", &["reader=both", "reader=auto"]),
        ("verify=some", &["verify=metadata"]),
        ("digest=sha256:1234", &["64 hexadecimal"]),
        ("cache=lots", &["cache=lots", "size"]),
        ("remount", &["not supported"]),
    ] {
        let o = s.mount(&s.img, &s.mnt, opts);
        refused(&s, &o, 1, needles);
    }
    // Unknown flags and missing arguments.
    let o = output(Command::new(&s.helper).arg(&s.img));
    refused(&s, &o, 1, &["usage: mount.chunkfs"]);
    let o = output(Command::new(&s.helper).arg(&s.img).arg(&s.mnt).arg("-q"));
    refused(&s, &o, 1, &["unknown flag -q"]);
    // Sloppy mode (mount -s) ignores what it does not know.
    let o =
        output(
            Command::new(&s.helper)
                .arg(&s.img)
                .arg(&s.mnt)
                .args(["-s", "-o", "frobnicate"]),
        );
    assert!(o.status.success(), "{}", describe(&o));
    Mounted::at(&s.mnt).unmount();
    assert_nothing_left(&s.dir);
}

/// A failure after loop devices were attached (the kernel refuses an option) detaches them; a
/// failure of the FUSE mount leaves no daemon.
#[test]
fn failures_after_setup_leave_nothing() {
    require_mount!();
    let s = setup("mount-errors-late");
    let o = s.mount(
        &s.img,
        &s.mnt,
        "reader=kernel,loop,context=system_u:object_r:x_t:s0",
    );
    refused(&s, &o, 32, &["refused", "context"]);
    let o = s.mount(
        &s.img,
        &s.mnt,
        "reader=fuse,context=system_u:object_r:x_t:s0",
    );
    refused(&s, &o, 32, &["FUSE"]);
}

#[test]
fn only_root_mounts() {
    require_mount!();
    let s = setup("mount-errors-user");
    let o = output(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&s.helper)
            .arg(&s.img)
            .arg(&s.mnt),
    );
    refused(&s, &o, 1, &["only root"]);
}
