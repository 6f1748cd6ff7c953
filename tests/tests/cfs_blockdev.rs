//! A `.cfs` read from a block device (a loop device), whose size exceeds the image: readers must
//! go by the header's `image_len`. Needs root and loop devices.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU64;

use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::cfs::write::{PackOptions, pack_dir};
use chunkfs_tests::tree::{compare_trees, make_every_corner_tree};

/// A loop device, detached when dropped, even if the test fails.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Self {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(file)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn an_image_on_a_larger_block_device_reads_to_its_length() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: loop devices need root");
        return;
    }
    let s = chunkfs_tests::scratch_dir("blockdev");
    let src = s.join("src");
    make_every_corner_tree(&src).unwrap();
    let image = s.join("image.cfs");
    let summary = pack_dir(&src, &image, &PackOptions::default(), |_| {}).unwrap();
    // The device is 1 MiB longer than the image, as a partition usually is.
    let padded = s.join("device.img");
    fs::copy(&image, &padded).unwrap();
    let len = fs::metadata(&padded).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&padded)
        .unwrap()
        .set_len(len + (1 << 20))
        .unwrap();

    let dev = Loop::attach(&padded);
    let cfs = Cfs::open(&dev.0).unwrap();
    assert_eq!(cfs.header().image_len, summary.image_len);
    assert_eq!(cfs.bytes().len() as u64, summary.image_len);
    let report = chunkfs_format::cfs::verify::verify_cfs(&dev.0, 2, &AtomicU64::new(0)).unwrap();
    assert_eq!(report.metadata_digest, summary.metadata_digest);
    let out = s.join("out");
    let mut chunks = cfs.chunks().unwrap();
    chunkfs_format::unpack::unpack(cfs.image(), &mut chunks, &out).unwrap();
    drop(chunks);
    drop(cfs);
    drop(dev);
    compare_trees(&src, &out).unwrap();
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn an_image_longer_than_its_device_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: loop devices need root");
        return;
    }
    let s = chunkfs_tests::scratch_dir("blockdev-short");
    let src = s.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("f"),
        chunkfs_tests::tree::pseudo_random(300_000, 1),
    )
    .unwrap();
    let image = s.join("image.cfs");
    pack_dir(&src, &image, &PackOptions::default(), |_| {}).unwrap();
    let cut = s.join("cut.img");
    let bytes = fs::read(&image).unwrap();
    fs::write(&cut, &bytes[..bytes.len() - 4096]).unwrap();
    let dev = Loop::attach(&cut);
    let err = Cfs::open(&dev.0).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    drop(dev);
    fs::remove_dir_all(&s).unwrap();
}
