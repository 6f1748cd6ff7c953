//! `.cfs` images mounted the way users mount them: through `mount.chunkfs` called as mount(8)
//! calls it (`mount.chunkfs SOURCE TARGET -o OPTIONS`), through the real `mount -t chunkfs`
//! with `/sbin/mount.chunkfs` installed, and through fstab lines (`mount -T FSTAB`). The
//! every-corner tree, compared entry by entry with its source, on the kernel's EROFS and on the
//! FUSE reader, which must agree; `--align 512` images on the cluster layout; a block device as
//! SOURCE; concurrent random reads and mmap. Every mount is unmounted (by a guard when a test
//! fails) and nothing may be left: no mount, no loop device, no daemon.
//!
//! Needs root, /dev/fuse and a kernel EROFS with 48-bit extents (Linux 6.15+); skipped with a
//! message otherwise.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use chunkfs_format::cfs::write::{PackOptions, pack_dir};
use chunkfs_tests::mount::{
    Mounted, SbinHelper, assert_nothing_left, chunkfs_bin, describe, helper_in, output,
};
use chunkfs_tests::reads::random_reads_and_mmap;
use chunkfs_tests::require_mount;
use chunkfs_tests::tree::{compare_trees, make_every_corner_tree, pseudo_random};

/// The packed trees, shared by the tests of this file (read-only).
struct Fixture {
    dir: PathBuf,
    src: PathBuf,
    /// 48-bit extents, 4 KiB blocks.
    img: PathBuf,
    /// `--align 512`: the cluster layout.
    img512: PathBuf,
    helper: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = chunkfs_tests::scratch_dir("mount-cfs");
        let src = dir.join("src");
        make_every_corner_tree(&src).unwrap();
        std::fs::write(src.join("random-4m"), pseudo_random(4 << 20, 11)).unwrap();
        let img = dir.join("image.cfs");
        pack_dir(&src, &img, &PackOptions::default(), |_| {}).unwrap();
        let img512 = dir.join("image512.cfs");
        let aligned = PackOptions {
            align512: true,
            ..PackOptions::default()
        };
        pack_dir(&src, &img512, &aligned, |_| {}).unwrap();
        let helper = helper_in(&dir);
        Fixture {
            dir,
            src,
            img,
            img512,
            helper,
        }
    })
}

/// A fresh mount point under the fixture's directory.
fn mount_point(name: &str) -> PathBuf {
    let p = fixture().dir.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// `mount.chunkfs IMAGE TARGET -o OPTIONS`, as mount(8) runs it; panics unless it succeeds.
fn helper_mount(image: &Path, target: &Path, options: &str) -> Mounted {
    let f = fixture();
    let o = output(Command::new(&f.helper).arg(image).arg(target).args([
        "-o",
        &format!("{options},cachedir={}", f.dir.join("cache").display()),
    ]));
    assert!(
        o.status.success(),
        "mount.chunkfs {} {} -o {options}: {}",
        image.display(),
        target.display(),
        describe(&o)
    );
    Mounted::at(target)
}

/// The `/proc/self/mounts` line of the mount at `target`: (source, type, options).
fn mount_line(target: &Path) -> (String, String, String) {
    let t = target.to_string_lossy().replace(' ', "\\040");
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = text
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(1) == Some(t.as_str()))
        .unwrap_or_else(|| panic!("{} is not mounted", target.display()));
    let f: Vec<&str> = line.split(' ').collect();
    (f[0].to_owned(), f[2].to_owned(), f[3].to_owned())
}

#[test]
fn every_corner_tree_through_both_readers_which_agree() {
    require_mount!();
    let f = fixture();
    let km = mount_point("mnt-kernel");
    let fm = mount_point("mnt-fuse");
    let kernel = helper_mount(&f.img, &km, "reader=kernel");
    let fuse = helper_mount(&f.img, &fm, "reader=fuse");
    let (source, fstype, opts) = mount_line(&km);
    assert_eq!(source, f.img.to_string_lossy(), "the image is the source");
    assert_eq!(fstype, "erofs");
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    let (source, fstype, opts) = mount_line(&fm);
    assert_eq!(source, f.img.to_string_lossy(), "the image is the source");
    assert_eq!(fstype, "fuse.chunkfs");
    assert!(opts.split(',').any(|o| o == "ro"), "{opts}");
    compare_trees(&f.src, &km).unwrap_or_else(|d| panic!("kernel mount differs:\n{d}"));
    compare_trees(&f.src, &fm).unwrap_or_else(|d| panic!("FUSE mount differs:\n{d}"));
    compare_trees(&km, &fm).unwrap_or_else(|d| panic!("the readers disagree:\n{d}"));
    kernel.unmount();
    fuse.unmount();
    assert_nothing_left(&km);
    assert_nothing_left(&fm);
}

#[test]
fn aligned_images_mount_through_the_cluster_layout() {
    require_mount!();
    let f = fixture();
    let km = mount_point("mnt-512-kernel");
    let fm = mount_point("mnt-512-fuse");
    let kernel = helper_mount(&f.img512, &km, "reader=kernel");
    let fuse = helper_mount(&f.img512, &fm, "reader=fuse");
    compare_trees(&f.src, &km).unwrap_or_else(|d| panic!("kernel, clusters:\n{d}"));
    compare_trees(&km, &fm).unwrap_or_else(|d| panic!("the readers disagree:\n{d}"));
    kernel.unmount();
    fuse.unmount();
    assert_nothing_left(&km);
    assert_nothing_left(&fm);
}

/// 8 threads reading random ranges of large files and of the sparse file, then whole-file
/// mmap reads, on both readers.
#[test]
fn eight_threads_of_random_reads_and_mmap_on_both_readers() {
    require_mount!();
    let f = fixture();
    for reader in ["kernel", "fuse"] {
        let m = mount_point(&format!("mnt-threads-{reader}"));
        let mounted = helper_mount(&f.img, &m, &format!("reader={reader}"));
        let files = ["random-4m", "usr/bin/noise", "usr/lib/medium", "var/sparse"]
            .iter()
            .map(|n| (m.join(n), std::fs::read(f.src.join(n)).unwrap()))
            .collect();
        random_reads_and_mmap(files, 8, 200, 300_000);
        mounted.unmount();
        assert_nothing_left(&m);
    }
}

/// A loop device made by the test (detached when dropped), standing for a partition that holds
/// a `.cfs` written raw.
struct TestLoop(PathBuf);

impl Drop for TestLoop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn a_block_device_holding_an_image_on_both_readers() {
    require_mount!();
    let f = fixture();
    // A "partition" 1 MiB longer than the image.
    let disk = f.dir.join("disk.img");
    std::fs::copy(&f.img, &disk).unwrap();
    let len = std::fs::metadata(&disk).unwrap().len();
    File::options()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(len + (1 << 20))
        .unwrap();
    let o = output(
        Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(&disk),
    );
    assert!(o.status.success(), "losetup: {}", describe(&o));
    let dev = TestLoop(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    for reader in ["kernel", "fuse"] {
        let m = mount_point(&format!("mnt-blockdev-{reader}"));
        let mounted = helper_mount(&dev.0, &m, &format!("reader={reader}"));
        let (source, _, _) = mount_line(&m);
        assert_eq!(Path::new(&source), dev.0, "the device is the source");
        compare_trees(&f.src, &m).unwrap_or_else(|d| panic!("{reader} on {:?}:\n{d}", dev.0));
        mounted.unmount();
        assert_nothing_left(&m);
    }
}

/// With `-o loop`, and for an image on tmpfs (which file-backed mounts refuse), the kernel path
/// reads through a loop device; the device detaches itself at unmount.
#[test]
fn loop_devices_when_asked_or_on_tmpfs_and_gone_after_unmount() {
    require_mount!();
    let f = fixture();
    let on_shm =
        Path::new("/dev/shm").join(format!("chunkfs-mount-test-{}.cfs", std::process::id()));
    std::fs::copy(&f.img512, &on_shm).unwrap();
    for (image, options) in [(&f.img, "reader=kernel,loop"), (&on_shm, "reader=kernel")] {
        let m = mount_point("mnt-loop");
        let mounted = helper_mount(image, &m, options);
        let (source, fstype, _) = mount_line(&m);
        assert!(
            source.starts_with("/dev/loop"),
            "{options}: source {source}"
        );
        assert_eq!(fstype, "erofs");
        let backing =
            std::fs::read_to_string(format!("/sys/block/{}/loop/backing_file", &source[5..]))
                .unwrap();
        assert_eq!(Path::new(backing.trim()), image.as_path());
        compare_trees(&f.src, &m).unwrap_or_else(|d| panic!("{options}:\n{d}"));
        mounted.unmount();
        assert!(
            !Path::new(&format!("/sys/block/{}/loop/backing_file", &source[5..])).exists(),
            "{source} is still attached after unmount"
        );
    }
    std::fs::remove_file(&on_shm).unwrap();
}

/// The real mount(8) finds `/sbin/mount.chunkfs`, and umount(8) leaves no daemon behind.
#[test]
fn mount_t_chunkfs_and_fstab_lines() {
    require_mount!();
    let f = fixture();
    let _helper = SbinHelper::install();
    for reader in ["kernel", "fuse"] {
        let m = mount_point(&format!("mnt-mount8-{reader}"));
        let o = output(
            Command::new("mount")
                .args(["-t", "chunkfs", "-o", &format!("reader={reader}")])
                .arg(&f.img)
                .arg(&m),
        );
        assert!(o.status.success(), "mount -t chunkfs: {}", describe(&o));
        let guard = Mounted::at(&m);
        assert_eq!(mount_line(&m).0, f.img.to_string_lossy());
        compare_trees(&f.src, &m).unwrap_or_else(|d| panic!("mount -t chunkfs {reader}:\n{d}"));
        let o = output(Command::new("umount").arg(&m));
        assert!(o.status.success(), "umount: {}", describe(&o));
        std::mem::forget(guard);
        assert_nothing_left(&m);
    }

    // fstab: mount(8) reads the line, drops what it handles itself (noauto, x-*) and passes
    // the rest to the helper.
    let km = mount_point("mnt-fstab-kernel");
    let fm = mount_point("mnt-fstab-fuse");
    let fstab = f.dir.join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# test fstab\n{img} {km} chunkfs ro,noauto,nodev,reader=kernel,x-test.note=1 0 0\n\
             {img} {fm} chunkfs defaults,nosuid,reader=fuse,cache=32M,cachedir={cache} 0 0\n",
            img = f.img.display(),
            km = km.display(),
            fm = fm.display(),
            cache = f.dir.join("cache").display()
        ),
    )
    .unwrap();
    for (m, fstype, flag) in [(&km, "erofs", "nodev"), (&fm, "fuse.chunkfs", "nosuid")] {
        let o = output(Command::new("mount").arg("-T").arg(&fstab).arg(m));
        assert!(
            o.status.success(),
            "mount -T fstab {}: {}",
            m.display(),
            describe(&o)
        );
        let guard = Mounted::at(m);
        let (source, t, opts) = mount_line(m);
        assert_eq!(source, f.img.to_string_lossy());
        assert_eq!(t, fstype);
        assert!(opts.split(',').any(|o| o == flag), "{flag} not in {opts}");
        compare_trees(&f.src, m).unwrap_or_else(|d| panic!("fstab {fstype}:\n{d}"));
        guard.unmount();
        assert_nothing_left(m);
    }
}

/// `chunkfs mount` and `chunkfs umount` (the CLI, not the helper), with -v telling the choice.
#[test]
fn chunkfs_mount_and_umount_cli() {
    require_mount!();
    let f = fixture();
    let m = mount_point("mnt-cli");
    let o = output(
        Command::new(chunkfs_bin())
            .args(["mount", "-v"])
            .arg(&f.img)
            .arg(&m),
    );
    assert!(o.status.success(), "chunkfs mount: {}", describe(&o));
    let guard = Mounted::at(&m);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("reader=kernel: the kernel's EROFS has every feature"),
        "{err}"
    );
    assert!(err.contains("file-backed"), "{err}");
    compare_trees(&f.src, &m).unwrap();
    std::mem::forget(guard);
    let o = output(Command::new(chunkfs_bin()).args(["umount", "-v"]).arg(&m));
    assert!(o.status.success(), "chunkfs umount: {}", describe(&o));
    assert_nothing_left(&m);
    let o = output(Command::new(chunkfs_bin()).arg("umount").arg(&m));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a mount point"));
}

/// A copy of `image` as written before `.cfs` files embedded their EROFS descriptor (head and
/// metadata areas absent and zeroed).
fn without_descriptor(image: &Path, name: &str) -> PathBuf {
    use chunkfs_format::cfs::header::{Header, Region};
    let mut bytes = std::fs::read(image).unwrap();
    let mut h = Header::parse(&bytes[..1024]).unwrap();
    let meta = h.erofs_meta;
    bytes[meta.offset as usize..(meta.offset + meta.len) as usize].fill(0);
    bytes[1024..4096].fill(0);
    h.erofs_head = Region {
        offset: 1024,
        len: 0,
    };
    h.erofs_meta = Region {
        offset: meta.offset,
        len: 0,
    };
    h.erofs_digest = chunkfs_format::digest::Digest::of(b"");
    bytes[..1024].copy_from_slice(&h.encode());
    let p = fixture().dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Such an image mounts through a descriptor built at mount time, with the image as its extra
/// device; in the cluster layout, holes read the zero frame from the descriptor, so both go on
/// loop devices (the file-backed merge bug).
#[test]
fn an_image_without_an_embedded_descriptor_mounts_through_a_built_one() {
    require_mount!();
    let f = fixture();
    for (image, name, loops) in [
        (&f.img, "legacy.cfs", false),
        (&f.img512, "legacy512.cfs", true),
    ] {
        let legacy = without_descriptor(image, name);
        // verify checks the EROFS descriptor when there is one, and accepts its absence (it
        // used to re-derive one anyway and refuse the image).
        let o = output(Command::new(chunkfs_bin()).arg("verify").arg(&legacy));
        assert!(o.status.success(), "verify {name}: {}", describe(&o));
        let said = String::from_utf8_lossy(&o.stdout);
        assert!(said.contains("EROFS descriptor absent"), "{said}");
        for reader in ["kernel", "fuse"] {
            let m = mount_point(&format!("mnt-{name}-{reader}"));
            let mounted = helper_mount(&legacy, &m, &format!("reader={reader}"));
            let (source, _, _) = mount_line(&m);
            if reader == "kernel" {
                // The kernel opens the source path, so the mount table names what it opened:
                // the built descriptor, or its loop device.
                let e = chunkfs_tests::mount::mountinfo_dev(&m);
                assert_eq!(e.dev.0 == 7, loops, "{name}: {e:?}");
                let expected = if loops { "/dev/loop" } else { "/cache/" };
                assert!(source.contains(expected), "{name}: source {source}");
            } else {
                assert_eq!(source, legacy.to_string_lossy());
            }
            compare_trees(&f.src, &m).unwrap_or_else(|d| panic!("{name}, {reader}:\n{d}"));
            mounted.unmount();
            assert_nothing_left(&m);
        }
    }
}
