//! The corruption matrix (issue 6, item 3) through the kernel's EROFS (root): every damaged copy
//! of a packed `.cfs` (`chunkfs_tests::corrupt::cfs_cases`, 48-bit and `--align 512`) that
//! passes the checks a mount makes first (`Cfs::open`, `verify::check_structure`: everything
//! but the chunk frames) is mounted with `mount(2)` on the file, and every entry is compared
//! with the source: attributes and symlink targets exactly, each file's bytes exactly or a read
//! error. The kernel checks no sha256: what stops a damaged frame is zstd's content checksum
//! (docs/descriptor.md §8), and this test shows it does for every damaged frame tried.
//! Images that fail the checks are never handed to the kernel (the mount helper refuses them,
//! naming the region; `helper/tests/corruption.rs` checks the messages).
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::cfs::write::{PackOptions, pack_dir};
use chunkfs_tests::corrupt::{Content, Expected, cfs_cases, expected_contents, make_matrix_tree};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// A mount undone when dropped (lazily if busy), even when the test fails.
struct Mounted(PathBuf);

impl Mounted {
    fn erofs(image: &Path, dir: &Path) -> Result<Self, String> {
        mount(
            Some(image),
            dir,
            Some("erofs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .map_err(|e| format!("mount: {e}"))?;
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if umount2(&self.0, MntFlags::empty()).is_err() {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
}

/// Compares the mounted tree with the source; returns (files read, files failing to read).
fn compare(root: &Path, expected: &[(PathBuf, Expected)]) -> Result<(usize, usize), String> {
    let (mut read, mut eio) = (0, 0);
    for (rel, want) in expected {
        let p = root.join(rel);
        let m = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", rel.display()))?;
        let got = (m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec() as u32);
        let wanted = (want.mode, want.uid, want.gid, want.mtime.0, want.mtime.1);
        if got != wanted {
            return Err(format!(
                "{}: attributes {got:?}, want {wanted:?}",
                rel.display()
            ));
        }
        match &want.content {
            Content::Dir => {}
            Content::Symlink(t) => {
                let target = fs::read_link(&p).map_err(|e| e.to_string())?;
                if target.as_os_str().as_encoded_bytes() != t.as_slice() {
                    return Err(format!("{}: symlink target {target:?}", rel.display()));
                }
            }
            Content::File(bytes) => {
                if m.size() != want.size || m.nlink() as u32 != want.nlink {
                    return Err(format!("{}: size or link count differs", rel.display()));
                }
                match fs::read(&p) {
                    Ok(b) if b == *bytes => read += 1,
                    Ok(b) => {
                        return Err(format!(
                            "{}: the kernel served {} bytes that differ from the source",
                            rel.display(),
                            b.len()
                        ));
                    }
                    Err(_) => eio += 1,
                }
            }
        }
    }
    Ok((read, eio))
}

fn matrix(align512: bool) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting needs root");
        return;
    }
    let s = chunkfs_tests::scratch_dir(if align512 {
        "corruption-mount-a512"
    } else {
        "corruption-mount"
    });
    let src = s.join("src");
    make_matrix_tree(&src).unwrap();
    let good_path = s.join("good.cfs");
    let options = PackOptions {
        align512,
        ..PackOptions::default()
    };
    pack_dir(&src, &good_path, &options, |_| {}).unwrap();
    let good = fs::read(&good_path).unwrap();
    let expected = expected_contents(&src);
    let per_region = std::env::var("CHUNKFS_CORRUPTION_PER_REGION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let cases = cfs_cases(&good, per_region, if align512 { 512 } else { 48 });
    let image = s.join("image.cfs");
    let mnt = s.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let (mut mounted, mut refused, mut read, mut eio) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for case in &cases {
        fs::write(&image, &case.bytes).unwrap();
        let checked = Cfs::open(&image).map_err(|e| e.to_string()).and_then(|c| {
            chunkfs_format::cfs::verify::check_structure(&c).map_err(|e| e.to_string())
        });
        if checked.is_err() {
            refused += 1;
            continue;
        }
        let m = match Mounted::erofs(&image, &mnt) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{}: passed the checks, but {e}", case.name));
                continue;
            }
        };
        mounted += 1;
        match compare(&mnt, &expected) {
            Ok((r, e)) => {
                read += r;
                eio += e;
                if case.regions.contains(&"chunk frame") && e == 0 {
                    problems.push(format!("{}: no file failed to read", case.name));
                }
            }
            Err(e) => problems.push(format!("{}: {e}", case.name)),
        }
        drop(m);
    }
    eprintln!(
        "kernel corruption matrix ({}): {} cases, {refused} refused by the mount checks, \
         {mounted} mounted: {read} files read identical, {eio} read errors",
        if align512 { "--align 512" } else { "48-bit" },
        cases.len()
    );
    let _ = fs::remove_dir_all(&s);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        mounted > 0,
        "nothing passed the mount checks: the matrix tested nothing"
    );
}

#[test]
fn the_kernel_serves_damaged_images_exactly_or_fails_the_read() {
    matrix(false);
}

#[test]
fn the_kernel_serves_damaged_aligned_images_exactly_or_fails_the_read() {
    matrix(true);
}
