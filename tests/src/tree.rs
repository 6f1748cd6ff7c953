//! A tree with every corner a root filesystem has, and a comparator that lists every difference
//! between two trees. Used by the pack/unpack round trip and by the mount tests.
//!
//! ```no_run
//! let dir = std::path::Path::new("/var/tmp/corner");
//! let made = chunkfs_tests::tree::make_every_corner_tree(dir).unwrap();
//! if !made.root_parts {
//!     eprintln!("not root: {}", made.skipped.join("; "));
//! }
//! chunkfs_tests::tree::compare_trees(dir, dir).unwrap();
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat};
use sha2::{Digest, Sha256};

pub use chunkfs_kernel_abi::testkit::XorShift64;

/// What [`make_every_corner_tree`] made.
#[derive(Debug, Clone)]
pub struct Made {
    /// True if the root-only parts (devices, trusted.* and security.capability xattrs, foreign
    /// owners) were made.
    pub root_parts: bool,
    /// What was left out and why (empty as root).
    pub skipped: Vec<String>,
    /// Size in bytes of the sparse file, whose holes must survive.
    pub sparse_len: u64,
}

/// An mtime before 1970 with nanoseconds.
pub const OLD_MTIME: (i64, i64) = (-1_234_567_890, 123_456_789);
/// An ordinary mtime with nanoseconds.
pub const MTIME: (i64, i64) = (1_700_000_000, 987_654_321);

/// Version-2 `security.capability` granting `cap_net_raw` (bit 13), effective.
const CAP_NET_RAW: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Builds the tree in `dir` (created; must not exist or be empty): regular, empty, small,
/// duplicate and sparse (64 MiB) files; directories (empty, deep, sticky, setgid); symlinks
/// (one with a 4095-byte target); hard links across directories; a FIFO and a socket; as root,
/// character and block devices and foreign 32-bit owners; setuid/setgid/sticky modes; mtimes
/// with nanoseconds, before 1970 too; xattrs in user.* (and, as root, trusted.* and
/// security.capability) on files and directories; a non-UTF-8 name, a 255-byte name, a name
/// with a newline.
pub fn make_every_corner_tree(dir: &Path) -> std::io::Result<Made> {
    let root = nix::unistd::geteuid().is_root();
    let mut skipped = Vec::new();
    if !root {
        skipped.push(
            "device nodes, trusted.* and security.capability xattrs and foreign owners need root"
                .to_string(),
        );
    }
    fs::create_dir_all(dir)?;
    let p = |rel: &[u8]| dir.join(OsStr::from_bytes(rel));

    // Directories.
    for d in [
        &b"etc"[..],
        b"usr",
        b"usr/bin",
        b"usr/lib",
        b"var",
        b"var/empty",
        b"tmp",
        b"sgid",
        b"other",
    ] {
        fs::create_dir_all(p(d))?;
    }
    let mut deep = p(b"deep");
    for i in 0..100 {
        deep.push(format!("d{i}"));
    }
    fs::create_dir_all(&deep)?;
    write(&deep.join("bottom"), b"at the bottom\n")?;

    // Regular files: empty, small, duplicate, medium, large, incompressible.
    write(&p(b"etc/empty"), b"")?;
    write(&p(b"etc/hostname"), b"chunkfs\n")?;
    write(&p(b"etc/hostname.copy"), b"chunkfs\n")?;
    for i in 0..50u32 {
        write(
            &p(format!("usr/lib/small-{i:02}").as_bytes()),
            format!("small file {i}\n")
                .repeat(i as usize + 1)
                .as_bytes(),
        )?;
    }
    let medium: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i % 1000).to_le_bytes())
        .collect();
    write(&p(b"usr/lib/medium"), &medium)?;
    let noise = pseudo_random(3 << 20, 7);
    write(&p(b"usr/bin/noise"), &noise)?;
    write(&p(b"other/noise.dup"), &noise)?;

    // Sparse: data at the start, in the middle and at the end of 64 MiB.
    let sparse_len = 64u64 << 20;
    {
        let f = File::create(p(b"var/sparse"))?;
        f.write_all_at(&pseudo_random(100_000, 1), 0)?;
        f.write_all_at(&pseudo_random(70_000, 2), 20 << 20)?;
        f.write_all_at(b"the end", sparse_len - 7)?;
        f.set_len(sparse_len)?;
    }

    // Names.
    write(&p(b"other/caf\xe9-latin1"), b"non-UTF-8 name\n")?;
    write(&p(&[b'n'; 255]), b"255-byte name\n")?;
    write(&p(b"other/new\nline"), b"newline in the name\n")?;
    write(&p(b"other/ space "), b"spaces\n")?;

    // Symlinks.
    std::os::unix::fs::symlink("../etc/hostname", p(b"usr/hostname-link"))?;
    let long_target: Vec<u8> = b"long/".iter().copied().cycle().take(4095).collect();
    std::os::unix::fs::symlink(OsStr::from_bytes(&long_target), p(b"other/long-link"))?;
    std::os::unix::fs::symlink("/nonexistent/absolute", p(b"other/dangling"))?;

    // Hard links across directories, one of them a symlink.
    fs::hard_link(p(b"etc/hostname"), p(b"usr/bin/hostname-hard"))?;
    fs::hard_link(p(b"etc/hostname"), p(b"var/hostname-hard2"))?;
    fs::hard_link(p(b"other/dangling"), p(b"etc/dangling-hard"))?;

    // Special files.
    mknod(
        &p(b"tmp/fifo"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o640),
        0,
    )?;
    mknod(
        &p(b"tmp/socket"),
        SFlag::S_IFSOCK,
        Mode::from_bits_truncate(0o755),
        0,
    )?;
    if root {
        mknod(
            &p(b"tmp/null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 3),
        )?;
        mknod(
            &p(b"tmp/loop-ish"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            makedev(7, 1_048_575),
        )?;
        mknod(
            &p(b"tmp/bigmajor"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            makedev(4000, 70_000),
        )?;
    }

    // Owners before modes (chown clears setuid) and xattrs (chown drops security.capability).
    if root {
        chown(&p(b"usr/bin/noise"), 4_000_000_000, 3_000_000_000)?;
        chown(&p(b"var"), 65_534, 65_534)?;
        chown(&p(b"usr/hostname-link"), 1000, 1001)?;
        chown(&p(b"tmp/fifo"), 12345, 54321)?;
    }
    chmod(&p(b"usr/bin/noise"), 0o4755)?;
    chmod(&p(b"usr/lib/medium"), 0o2711)?;
    chmod(&p(b"sgid"), 0o2775)?;
    chmod(&p(b"tmp"), 0o1777)?;
    chmod(&p(b"var/empty"), 0o555)?;
    chmod(&p(b"etc/hostname"), 0o600)?;
    chmod(
        &p(b"other/caf\xe9-latin1"),
        0o4000 | 0o2000 | 0o1000 | 0o644,
    )?;
    if root {
        chmod(&p(b"etc/empty"), 0o000)?;
    }

    // Xattrs.
    xattr::set(p(b"etc/hostname"), "user.comment", b"the host's name")?;
    xattr::set(p(b"etc/hostname"), "user.empty", b"")?;
    xattr::set(p(b"usr/lib/medium"), "user.binary", &[0, 1, 2, 255, 0])?;
    xattr::set(p(b"usr/lib/medium"), "user.big", &vec![b'x'; 4000])?;
    xattr::set(p(b"usr"), "user.dir", b"on a directory")?;
    xattr::set(dir, "user.root", b"on the root")?;
    if root {
        xattr::set(p(b"var"), "trusted.overlay.opaque", b"y")?;
        xattr::set(p(b"usr/bin/noise"), "security.capability", &CAP_NET_RAW)?;
        xattr::set(p(b"usr/hostname-link"), "trusted.symlink", b"on a symlink")?;
        xattr::set(p(b"tmp/null"), "trusted.dev", b"on a device")?;
    }

    // Mtimes last, directories after their contents (deepest first).
    let mut all = Vec::new();
    walk(dir, &mut all)?;
    all.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
    for (i, (path, _)) in all.iter().enumerate() {
        let (sec, nsec) = if i % 3 == 0 {
            OLD_MTIME
        } else {
            (MTIME.0 + i as i64, MTIME.1 - i as i64)
        };
        set_mtime(path, sec, nsec)?;
    }
    set_mtime(dir, OLD_MTIME.0, OLD_MTIME.1)?;
    Ok(Made {
        root_parts: root,
        skipped,
        sparse_len,
    })
}

/// The every-corner tree ([`make_every_corner_tree`], which must be made whole: as root) plus,
/// under `more/`, what the EROFS translation has corners for: many small files (fragments, some
/// identical), a directory of thousands of entries, 100 levels of nesting, large device
/// numbers, xattrs in every namespace (a POSIX ACL and an SELinux label where supported),
/// 4095-byte symlinks, hard links of a symlink, sub-block and 64 MiB sparse files with leading
/// and trailing holes, 32-bit owners, times before 1970 and far in the future.
pub fn make_descriptor_corner_tree(dir: &Path) -> std::io::Result<Made> {
    let made = make_every_corner_tree(dir)?;
    if !made.root_parts {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            made.skipped.join("; "),
        ));
    }
    let top = fs::symlink_metadata(dir)?;
    add_more_corners(&dir.join("more"))?;
    // Adding `more/` touched the top directory's mtime: put the shared tree's back.
    set_mtime(dir, top.mtime(), top.mtime_nsec())?;
    Ok(made)
}

fn add_more_corners(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    fs::create_dir_all(root)?;
    let d = |p: &str| -> std::io::Result<PathBuf> {
        let q = root.join(p);
        fs::create_dir_all(&q)?;
        Ok(q)
    };
    // Regular files: empty, tiny, small (packed), medium, large, incompressible, shared chunks.
    write(&root.join("empty"), b"")?;
    write(&root.join("one"), b"x")?;
    write(&root.join("medium.txt"), &words(100_000, 1))?;
    let large = [words(1_500_000, 2), pseudo_random(700_000, 3)].concat();
    write(&root.join("large.bin"), &large)?;
    write(&root.join("large-copy.bin"), &large)?;
    let prefix_shared = [&large[..600_000], &pseudo_random(50_000, 4)[..]].concat();
    write(&root.join("prefix-shared.bin"), &prefix_shared)?;
    write(&root.join("random.bin"), &pseudo_random(1 << 20, 5))?;
    write(&root.join("exactly-8192"), &words(8192, 6))?;
    // Sparse: 64 MiB with data at 0, 10 MiB and the end; leading and trailing holes.
    write_sparse(
        &root.join("sparse-64m"),
        64 << 20,
        &[(0, 4096), (10 << 20, 100_000), ((64 << 20) - 8192, 8192)],
    )?;
    write_sparse(
        &root.join("sparse-holes-around"),
        64 << 20,
        &[(20 << 20, 300_000)],
    )?;
    write_sparse(&root.join("sparse-only-hole"), 5 << 20, &[])?;
    // Many small files through fragments, some identical.
    let small = d("small")?;
    for i in 0..3000u64 {
        let len = (1 + (i * 7919) % 6000) as usize;
        let content = match (i % 10, i % 3) {
            (0, _) => words(len, 42),
            (_, 0) => pseudo_random(len, 100 + i),
            _ => words(len, 100 + i),
        };
        write(&small.join(format!("f{i:05}")), &content)?;
    }
    // A directory with thousands of entries (many blocks), long and odd names.
    let big = d("big-dir")?;
    for i in 0..5000 {
        let name = format!(
            "entry-with-a-rather-long-name-{i:06}-{}",
            "x".repeat(i % 40)
        );
        write(&big.join(name), b"")?;
    }
    let names = d("names")?;
    write(
        &names.join(OsStr::from_bytes(b"non-utf8-\xff\xfe\x80")),
        b"bytes",
    )?;
    write(&names.join("n".repeat(255)), b"long")?;
    write(&names.join("-dash-sorts-before-dot"), b"")?;
    write(&names.join(".hidden"), b"")?;
    write(&names.join("\u{e9}t\u{e9}"), b"")?;
    // Deep nesting.
    let mut deep = d("deep")?;
    for i in 0..100 {
        deep.push(format!("{}", i % 10));
    }
    fs::create_dir_all(&deep)?;
    write(&deep.join("bottom"), b"deep file")?;
    // Symlinks: short, dangling, the longest possible target.
    let links = d("links")?;
    symlink("../medium.txt", links.join("to-medium"))?;
    symlink("/nonexistent/dangling", links.join("dangling"))?;
    symlink("t".repeat(4095), links.join("long-4095"))?;
    symlink("m".repeat(3000), links.join("mid-3000"))?;
    // Devices, fifo, socket.
    let dev = d("dev")?;
    make_node(&dev.join("null"), SFlag::S_IFCHR, 0o666, (1, 3))?;
    make_node(&dev.join("sda"), SFlag::S_IFBLK, 0o660, (8, 0))?;
    make_node(
        &dev.join("big-numbers"),
        SFlag::S_IFCHR,
        0o600,
        (300, 70_000),
    )?;
    make_node(&dev.join("fifo"), SFlag::S_IFIFO, 0o644, (0, 0))?;
    drop(std::os::unix::net::UnixListener::bind(dev.join("socket"))?);
    // Hard links across directories (file, small file, symlink: `link` never follows it).
    let (ha, hb) = (d("hard/a")?, d("hard/b")?);
    write(&ha.join("file"), &words(50_000, 7))?;
    fs::hard_link(ha.join("file"), hb.join("same-file"))?;
    fs::hard_link(ha.join("file"), root.join("hard/third-name"))?;
    write(&ha.join("small"), b"small and linked")?;
    fs::hard_link(ha.join("small"), hb.join("small-too"))?;
    symlink("target", ha.join("sym"))?;
    fs::hard_link(ha.join("sym"), hb.join("sym-link"))?;
    // Xattrs in every namespace, on files, directories and symlinks.
    let x = d("xattrs")?;
    let f = x.join("file");
    write(&f, b"with xattrs")?;
    xattr::set(&f, "user.comment", b"hello")?;
    xattr::set(&f, "user.empty", b"")?;
    xattr::set(&f, "trusted.overlay.opaque", b"y")?;
    xattr::set(&f, "user.big", &pseudo_random(3000, 8))?;
    xattr::set(&f, "security.capability", &CAP_NET_RAW)?;
    // Where the file system takes them.
    let _ = xattr::set(&f, "security.selinux", b"system_u:object_r:bin_t:s0\0");
    xattr::set(&x, "user.on-dir", b"dir")?;
    let many = x.join("many");
    write(&many, b"")?;
    for i in 0..40 {
        xattr::set(
            &many,
            format!("user.k{i:02}"),
            format!("value {i}").as_bytes(),
        )?;
    }
    symlink("file", x.join("sym"))?;
    xattr::set(x.join("sym"), "trusted.on-symlink", b"s")?;
    // POSIX ACL user::rw-, user:1000:r--, group::r--, mask::r--, other::--- (where supported):
    // version 2, then (tag, perm, id) entries sorted by tag.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    let _ = xattr::set(&f, "system.posix_acl_access", &acl);
    // Owners and modes: 32-bit ids, setuid/setgid/sticky (owners first: chown clears setuid).
    let own = d("owners")?;
    for (name, uid, gid, m) in [
        ("big-ids", 100_000u32, 4_000_000_000u32, 0o640),
        ("suid", 0, 0, 0o4755),
        ("sgid", 1, 2, 0o2711),
        ("zero-mode", 65535, 65535, 0),
    ] {
        let p = own.join(name);
        write(&p, name.as_bytes())?;
        chown(&p, uid, gid)?;
        chmod(&p, m)?;
    }
    let sticky = d("owners/sticky")?;
    chmod(&sticky, 0o1777)?;
    chown(&sticky, 4_294_967_294, 12345)?;
    // Times: mostly nanoseconds; pre-1970, far future, exact seconds. Directories last.
    let times = d("times")?;
    for (name, sec, nsec) in [
        ("pre-1970", -100_000_000i64, 500_000_000i64),
        ("epoch-0", 0, 0),
        ("far-future", 1 << 33, 999_999_999),
        ("whole-second", 1_600_000_000, 0),
    ] {
        let p = times.join(name);
        write(&p, name.as_bytes())?;
        set_mtime(&p, sec, nsec)?;
    }
    set_mtime(&links.join("to-medium"), 1_234_567_890, 123_456_789)?;
    // Directories get distinct nanosecond mtimes after their contents are complete.
    let mut dirs = vec![(root.to_path_buf(), fs::symlink_metadata(root)?)];
    walk(root, &mut dirs)?;
    dirs.retain(|(_, m)| m.is_dir());
    dirs.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (p, _)) in dirs.iter().rev().enumerate() {
        set_mtime(
            p,
            1_500_000_000 + i as i64,
            (i as i64 * 7_777_777) % 1_000_000_000,
        )?;
    }
    Ok(())
}

/// `size` bytes with data only at the given `(offset, length)` pieces; holes elsewhere.
fn write_sparse(path: &Path, size: u64, pieces: &[(u64, usize)]) -> std::io::Result<()> {
    let f = File::create(path)?;
    for (k, &(at, len)) in pieces.iter().enumerate() {
        let seed = 1000 + k as u64;
        let data = if k % 2 == 0 {
            words(len, seed)
        } else {
            pseudo_random(len, seed)
        };
        f.write_all_at(&data, at)?;
    }
    f.set_len(size)
}

/// A device node, FIFO or socket `kind` with permissions `perm` and device numbers `rdev`.
pub fn make_node(path: &Path, kind: SFlag, perm: u32, rdev: (u64, u64)) -> std::io::Result<()> {
    mknod(
        path,
        kind,
        Mode::from_bits_truncate(perm),
        makedev(rdev.0, rdev.1),
    )?;
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    File::create(path)?.write_all(data)
}

fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Sets the owner of `path`, not following a symlink.
pub fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// Sets the mtime (and atime) of `path` to `sec`.`nsec`, not following a symlink.
pub fn set_mtime(path: &Path, sec: i64, nsec: i64) -> std::io::Result<()> {
    let t = TimeSpec::new(sec, nsec);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

/// Deterministic incompressible bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    XorShift64::from_seed(seed).bytes(len)
}

/// Deterministic compressible bytes: words of a small vocabulary, chosen at random.
pub fn words(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&[u8]; 6] = [b"chunk ", b"frame ", b"erofs ", b"kernel ", b"zstd ", b"\n"];
    let mut rng = XorShift64::from_seed(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(WORDS[(rng.next_u64() % 6) as usize]);
    }
    out.truncate(len);
    out
}

/// Every entry below `dir` (not `dir` itself), with its metadata.
fn walk(dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        let is_dir = meta.is_dir();
        out.push((path.clone(), meta));
        if is_dir {
            walk(&path, out)?;
        }
    }
    Ok(())
}

/// What the comparator records of one entry.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    size: Option<u64>,
    mtime: (i64, i64),
    rdev: Option<(u64, u64)>,
    link_target: Option<Vec<u8>>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    sha256: Option<String>,
    nlink: Option<u64>,
    /// For regular files: true if less than half the size is allocated.
    sparse: Option<bool>,
}

/// Compares two trees entry by entry: type, mode, owner, size, mtime with nanoseconds, device
/// numbers, symlink targets, xattrs, content sha256, link counts (of everything but
/// directories, which file systems count differently), sparseness, and hard-link groups.
/// Returns every difference, one per line.
pub fn compare_trees(a: &Path, b: &Path) -> Result<(), String> {
    compare(a, b, false)
}

/// [`compare_trees`], and directories' link counts too (2 + subdirectories), which a
/// descriptor must reproduce exactly.
pub fn compare_trees_strictly(a: &Path, b: &Path) -> Result<(), String> {
    compare(a, b, true)
}

fn compare(a: &Path, b: &Path, dir_links: bool) -> Result<(), String> {
    let (ea, ga) = snapshot(a, dir_links).map_err(|e| format!("{}: {e}", a.display()))?;
    let (eb, gb) = snapshot(b, dir_links).map_err(|e| format!("{}: {e}", b.display()))?;
    let mut diffs = Vec::new();
    let show = |rel: &[u8]| String::from_utf8_lossy(rel).into_owned();
    for (rel, x) in &ea {
        match eb.get(rel) {
            None => diffs.push(format!("/{}: only in {}", show(rel), a.display())),
            Some(y) if x != y => {
                let mut what = Vec::new();
                macro_rules! field {
                    ($f:ident) => {
                        if x.$f != y.$f {
                            what.push(format!("{} {:?} != {:?}", stringify!($f), x.$f, y.$f));
                        }
                    };
                }
                field!(uid);
                field!(gid);
                field!(size);
                field!(mtime);
                field!(rdev);
                field!(sha256);
                field!(nlink);
                field!(sparse);
                if x.mode != y.mode {
                    what.push(format!("mode {:o} != {:o}", x.mode, y.mode));
                }
                if x.link_target != y.link_target {
                    what.push("symlink target differs".into());
                }
                if x.xattrs != y.xattrs {
                    let names = |m: &BTreeMap<Vec<u8>, Vec<u8>>| {
                        m.keys().map(|k| show(k)).collect::<Vec<_>>()
                    };
                    what.push(format!(
                        "xattrs differ: {:?} vs {:?}",
                        names(&x.xattrs),
                        names(&y.xattrs)
                    ));
                }
                diffs.push(format!("/{}: {}", show(rel), what.join(", ")));
            }
            Some(_) => {}
        }
    }
    for rel in eb.keys().filter(|k| !ea.contains_key(*k)) {
        diffs.push(format!("/{}: only in {}", show(rel), b.display()));
    }
    if ga != gb {
        let fmt = |g: &BTreeSet<Vec<Vec<u8>>>| {
            g.iter()
                .map(|set| set.iter().map(|p| show(p)).collect::<Vec<_>>().join(" = "))
                .collect::<Vec<_>>()
        };
        diffs.push(format!(
            "hard-link groups differ: {:?} vs {:?}",
            fmt(&ga),
            fmt(&gb)
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

type Snapshot = (BTreeMap<Vec<u8>, Entry>, BTreeSet<Vec<Vec<u8>>>);

fn snapshot(root: &Path, dir_links: bool) -> std::io::Result<Snapshot> {
    let mut list = vec![(root.to_owned(), fs::symlink_metadata(root)?)];
    walk(root, &mut list)?;
    let mut entries = BTreeMap::new();
    let mut groups: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    for (path, m) in list {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .as_os_str()
            .as_bytes()
            .to_vec();
        let ty = m.mode() & 0o170000;
        let is_file = ty == 0o100000;
        let is_dev = ty == 0o020000 || ty == 0o060000;
        let mut xattrs = BTreeMap::new();
        for name in xattr::list(&path)? {
            if let Some(v) = xattr::get(&path, &name)? {
                xattrs.insert(name.as_bytes().to_vec(), v);
            }
        }
        let sha256 = if is_file {
            let mut h = Sha256::new();
            std::io::copy(&mut File::open(&path)?, &mut HashWriter(&mut h))?;
            Some(hex::encode(h.finalize()))
        } else {
            None
        };
        if !m.is_dir() {
            groups
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        entries.insert(
            rel,
            Entry {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: (is_file || ty == 0o120000).then_some(m.size()),
                mtime: (m.mtime(), m.mtime_nsec()),
                rdev: is_dev.then(|| {
                    (
                        nix::sys::stat::major(m.rdev()),
                        nix::sys::stat::minor(m.rdev()),
                    )
                }),
                link_target: (ty == 0o120000)
                    .then(|| fs::read_link(&path).map(|t| t.as_os_str().as_bytes().to_vec()))
                    .transpose()?,
                xattrs,
                sha256,
                nlink: (dir_links || !m.is_dir()).then_some(m.nlink()),
                sparse: is_file.then(|| m.size() > 1 << 20 && m.blocks() * 512 < m.size() / 2),
            },
        );
    }
    let groups = groups.into_values().filter(|g| g.len() > 1).map(|mut g| {
        g.sort();
        g
    });
    Ok((entries, groups.collect()))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copies the tree `src` to `dst` (which must not exist), creating every directory's entries in
/// reverse name order, so a scanner that depended on creation or listing order would see a
/// different tree. Keeps everything [`compare_trees`] compares, holes included.
pub fn copy_tree_reversed(src: &Path, dst: &Path) -> std::io::Result<()> {
    let mut links = BTreeMap::new();
    fs::create_dir(dst)?;
    copy_dir_reversed(src, dst, &mut links)?;
    copy_attrs(src, dst, &fs::symlink_metadata(src)?)
}

fn copy_dir_reversed(
    src: &Path,
    dst: &Path,
    links: &mut BTreeMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    for name in names {
        let (s, d) = (src.join(&name), dst.join(&name));
        let m = fs::symlink_metadata(&s)?;
        let ty = m.mode() & 0o170000;
        if ty != 0o040000 && m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                fs::hard_link(first, &d)?;
                continue;
            }
            links.insert((m.dev(), m.ino()), d.clone());
        }
        match ty {
            0o040000 => {
                fs::create_dir(&d)?;
                copy_dir_reversed(&s, &d, links)?;
            }
            0o100000 => copy_sparse(&s, &d, m.size())?,
            0o120000 => std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?,
            _ => {
                let kind = SFlag::from_bits_truncate(ty);
                mknod(&d, kind, Mode::from_bits_truncate(0o600), m.rdev())?;
            }
        }
        copy_attrs(&s, &d, &m)?;
    }
    Ok(())
}

/// Copies the data segments of a file, leaving its holes holes.
fn copy_sparse(src: &Path, dst: &Path, size: u64) -> std::io::Result<()> {
    use nix::unistd::{Whence, lseek};
    let (from, to) = (File::open(src)?, File::create(dst)?);
    let mut pos = 0i64;
    while (pos as u64) < size {
        let data = match lseek(&from, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(&from, data, Whence::SeekHole)?;
        let mut buf = vec![0u8; (hole - data) as usize];
        from.read_exact_at(&mut buf, data as u64)?;
        to.write_all_at(&buf, data as u64)?;
        pos = hole;
    }
    to.set_len(size)
}

/// Owner, mode, xattrs and mtime, in the order that keeps them all.
fn copy_attrs(src: &Path, dst: &Path, m: &fs::Metadata) -> std::io::Result<()> {
    let is_link = m.mode() & 0o170000 == 0o120000;
    chown(dst, m.uid(), m.gid())?;
    if !is_link {
        chmod(dst, m.mode() & 0o7777)?;
    }
    for name in xattr::list(src)? {
        if let Some(v) = xattr::get(src, &name)? {
            xattr::set(dst, &name, &v)?;
        }
    }
    set_mtime(dst, m.mtime(), m.mtime_nsec())
}
