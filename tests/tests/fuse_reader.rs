//! The FUSE reader, really mounted (root and /dev/fuse needed; skipped with a message otherwise):
//! contents and attributes against the kernel's EROFS mount of the same image, 8 threads of
//! random reads plus mmap reads, and a corrupt chunk failing only its file while the mount stays up.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../../reader/tests/common.rs"]
mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chunkfs_reader::Reader;

/// Why these tests cannot run here, if they cannot.
fn skip() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    None
}

macro_rules! require_root {
    () => {
        if let Some(why) = skip() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Temporary files on a disk filesystem (file-backed EROFS refuses tmpfs).
fn scratch() -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).to_path_buf();
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A kernel EROFS mount, always unmounted (lazily if busy).
struct KernelMount(PathBuf);

impl KernelMount {
    fn new(image: &Path, devices: &[PathBuf], at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let opts: Vec<String> = devices
            .iter()
            .map(|d| format!("device={}", d.display()))
            .collect();
        let opts = opts.join(",");
        nix::mount::mount(
            Some(image),
            at,
            Some("erofs"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("kernel mount of {}: {e}", image.display()));
        KernelMount(at.to_path_buf())
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        if nix::mount::umount(&self.0).is_err() {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn fuse_mount(img: &common::Image, at: &Path) -> chunkfs_reader::MountHandle {
    std::fs::create_dir_all(at).unwrap();
    let mut config = img.config();
    config.threads = 8;
    Reader::open(config).unwrap().mount(at).unwrap()
}

/// `stat` fields both mounts must agree on, and the xattrs.
fn describe(p: &Path) -> String {
    let m = std::fs::symlink_metadata(p).unwrap();
    let mut s = format!(
        "ino={} mode={:o} nlink={} uid={} gid={} size={} blocks={} mtime={}.{} rdev={} blksize={}",
        m.ino(),
        m.mode(),
        m.nlink(),
        m.uid(),
        m.gid(),
        m.size(),
        m.blocks(),
        m.mtime(),
        m.mtime_nsec(),
        m.rdev(),
        m.blksize()
    );
    if m.file_type().is_symlink() {
        s += &format!(" -> {:?}", std::fs::read_link(p).unwrap());
    }
    for (name, value) in xattrs(p) {
        s += &format!(" {name}={value:?}");
    }
    s
}

/// All xattrs of `p` (not following symlinks), in listing order.
fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    #[allow(unsafe_code)]
    // SAFETY: valid NUL-terminated path and a buffer of the length passed.
    let n = unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(
        n >= 0,
        "llistxattr {p:?}: {}",
        std::io::Error::last_os_error()
    );
    names.truncate(n as usize);
    let mut out = vec![];
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 65536];
        #[allow(unsafe_code)]
        // SAFETY: as above.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(
            n >= 0,
            "lgetxattr {p:?} {cname:?}: {}",
            std::io::Error::last_os_error()
        );
        value.truncate(n as usize);
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    out
}

fn tree(root: &Path) -> Vec<(String, String)> {
    let mut out = vec![(".".into(), describe(root))];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, describe(&p)));
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn agrees_with_the_kernel_mount() {
    require_root!();
    let img = common::build(&scratch());
    let km = img.dir.path().join("kernel");
    let fm = img.dir.path().join("fuse");
    let _k = KernelMount::new(&img.primary, std::slice::from_ref(&img.pack), &km);
    let f = fuse_mount(&img, &fm);
    assert_eq!(tree(&km), tree(&fm));
    for (name, expected) in &img.files {
        let via_kernel = std::fs::read(km.join(name));
        if *name == "small" {
            // Inline data no digest covers: the kernel serves it, the verifying reader refuses.
            assert_eq!(via_kernel.unwrap(), *expected);
            assert_eq!(
                std::fs::read(fm.join(name)).unwrap_err().raw_os_error(),
                Some(libc::EIO)
            );
            continue;
        }
        assert_eq!(via_kernel.unwrap(), *expected, "kernel {name}");
        assert_eq!(
            std::fs::read(fm.join(name)).unwrap(),
            *expected,
            "fuse {name}"
        );
    }
    let sk = nix::sys::statvfs::statvfs(&km).unwrap();
    let sf = nix::sys::statvfs::statvfs(&fm).unwrap();
    assert_eq!(
        (sk.blocks(), sk.block_size(), sk.files_free(), sk.name_max()),
        (sf.blocks(), sf.block_size(), sf.files_free(), sf.name_max())
    );
    f.unmount().unwrap();
}

#[test]
fn eight_threads_of_random_reads_and_mmap() {
    require_root!();
    let img = common::build(&scratch());
    let fm = img.dir.path().join("fuse");
    let mount = fuse_mount(&img, &fm);
    let files = ["big", "frag", "onpack", "zeros"]
        .iter()
        .map(|n| (fm.join(n), img.expected(n).to_vec()))
        .collect();
    chunkfs_tests::reads::random_reads_and_mmap(files, 8, 300, 150_000);
    mount.unmount().unwrap();
}

#[test]
fn a_flipped_byte_fails_only_its_file_and_the_mount_stays_up() {
    require_root!();
    let img = common::build(&scratch());
    // Flip a byte in the middle of chunk A's frame (used by "big" only).
    let (a_off, a_len) = img.frames[0];
    let mut bytes = img.image.clone();
    bytes[a_off as usize + a_len / 2] ^= 0x01;
    std::fs::write(&img.primary, &bytes).unwrap();
    let fm = img.dir.path().join("fuse");
    let mount = fuse_mount(&img, &fm);
    // The corrupt chunk: EIO, every time.
    for _ in 0..3 {
        let err = std::fs::read(fm.join("big")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
    }
    // The part of "big" after chunk A is fine.
    let mut f = File::open(fm.join("big")).unwrap();
    f.seek(SeekFrom::Start(204_800)).unwrap();
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, img.expected("big")[204_800..]);
    drop(f);
    // Other files, and the tree, still work.
    for name in ["frag", "onpack", "zeros"] {
        assert_eq!(
            std::fs::read(fm.join(name)).unwrap(),
            img.expected(name),
            "{name}"
        );
    }
    assert_eq!(std::fs::read_dir(&fm).unwrap().count(), 8);
    mount.unmount().unwrap();
}

#[test]
fn serve_on_a_descriptor_mounted_by_the_caller() {
    require_root!();
    let img = common::build(&scratch());
    let fm = img.dir.path().join("fuse");
    std::fs::create_dir_all(&fm).unwrap();
    let reader = Reader::open(img.config()).unwrap();
    let fd = reader.mount_fd(&fm).unwrap();
    // Unmounts even if an assertion below fails.
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let guard = Unmount(fm.clone());
    let server = std::thread::spawn(move || reader.serve(fd));
    assert_eq!(
        std::fs::read(fm.join("onpack")).unwrap(),
        img.expected("onpack")
    );
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.contains(" fuse.chunkfs ") && l.contains(fm.to_str().unwrap())),
        "{mounts}"
    );
    nix::mount::umount(&fm).unwrap();
    drop(guard);
    server.join().unwrap().unwrap();
}
