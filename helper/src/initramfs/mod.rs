//! Building the initramfs that boots a chunkfs root: a newc cpio archive (optionally zstd
//! compressed) holding the static `chunkfs` binary as `/init`, the kernel modules it needs in
//! load order, optionally a busybox for a debug shell, and optionally an embedded image.
//!
//! The archive is deterministic: entries are sorted, owned by root, and carry one fixed mtime.
//! An embedded image goes into a second, uncompressed cpio archive appended to the first (the
//! kernel unpacks concatenated archives), so an already compressed `.cfs` is not compressed
//! again and is written without being held in memory.
//!
//! ```no_run
//! use chunkfs_helper::initramfs::{build, Compression, Spec};
//! let spec = Spec {
//!     binary: "target/static/chunkfs".into(),
//!     modules: None,
//!     busybox: None,
//!     embed: None,
//!     compression: Compression::Zstd(19),
//!     mtime: 0,
//! };
//! let mut out = std::fs::File::create("initrd.img")?;
//! let report = build(&spec, &mut out)?;
//! println!("{} entries", report.entries);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cpio;
pub mod elf;
pub mod modules;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cpio::Kind;

/// Where the init finds an image embedded in the initramfs (`chunkfs.root=embedded`).
pub const EMBEDDED_IMAGE: &str = "chunkfs/root.cfs";
/// The file listing the modules to load, in order, relative to the initramfs root. One path
/// per line, relative to `lib/modules/RELEASE/`, prefixed by `? ` when a load failure is
/// expected (soft dependencies); the first line is `release RELEASE`.
pub const MODULE_LIST: &str = "etc/chunkfs/modules";
/// Modules an initramfs gets unless told otherwise: what a chunkfs root can need (FUSE for the
/// reader, EROFS for the kernel path, overlay for `chunkfs.overlay`, loop for images in files,
/// ext4 for an image file on a partition) and a virtual machine's disk driver. Missing ones
/// are skipped. Each module costs boot time (ext4 alone ~1 s under QEMU's TCG), so other disk
/// drivers and filesystems are added with `--module`.
pub const DEFAULT_MODULES: &[&str] = &[
    "fuse",
    "erofs",
    "overlay",
    "loop",
    "virtio_pci",
    "virtio_blk",
    "ext4",
];

/// How the main archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain cpio.
    None,
    /// One zstd frame at this level (the kernel needs `CONFIG_RD_ZSTD`).
    Zstd(i32),
}

/// Modules to take from a kernel's module directory.
#[derive(Debug, Clone)]
pub struct ModuleSource {
    /// `/lib/modules/RELEASE` of the target kernel (with `modules.dep`).
    pub dir: PathBuf,
    /// Module names and whether each must exist.
    pub wanted: Vec<(String, modules::Need)>,
}

/// What goes into the initramfs.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The statically linked `chunkfs` binary; it becomes `/init`.
    pub binary: PathBuf,
    /// Kernel modules to include, if any.
    pub modules: Option<ModuleSource>,
    /// A static busybox for the debug shell (`chunkfs.debug`), if any.
    pub busybox: Option<PathBuf>,
    /// An image to embed as [`EMBEDDED_IMAGE`].
    pub embed: Option<PathBuf>,
    /// Compression of the main archive.
    pub compression: Compression,
    /// The mtime of every entry, seconds since the epoch.
    pub mtime: u32,
}

/// What [`build`] put in.
#[derive(Debug, Default)]
pub struct Report {
    /// Number of entries in the archive(s).
    pub entries: usize,
    /// The modules included, in load order.
    pub modules: Vec<String>,
    /// Requested modules the kernel has built in.
    pub builtin: Vec<String>,
    /// Requested optional modules the kernel does not have.
    pub absent: Vec<String>,
    /// The kernel release of the modules, if any.
    pub release: Option<String>,
    /// Bytes written.
    pub bytes: u64,
}

/// The errors of [`build`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The binary would not run as PID 1 without a dynamic loader.
    #[error(
        "{0} is not a statically linked executable (build chunkfs with `tools/lib/boot-build.sh`)"
    )]
    NotStatic(PathBuf),
    /// The binary is not an ELF file we can check.
    #[error("{path}: {source}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: elf::Error,
    },
    /// The module directory has no usable release name.
    #[error("{0}: cannot tell the kernel release from this module directory's name")]
    Release(PathBuf),
    /// Resolving modules failed.
    #[error(transparent)]
    Modules(#[from] modules::Error),
    /// Writing the archive failed.
    #[error(transparent)]
    Cpio(#[from] cpio::Error),
    /// Compressing failed.
    #[error("zstd compression failed: {0}")]
    Compress(io::Error),
}

impl chunkfs_format::Classify for Error {
    fn class(&self) -> chunkfs_format::ErrorClass {
        use chunkfs_format::ErrorClass as C;
        match self {
            Self::Read { source, .. } | Self::Compress(source) => source.class(),
            // The binary or module directory given cannot make a bootable initramfs.
            Self::NotStatic(_) | Self::Elf { .. } | Self::Release(_) => C::Usage,
            Self::Modules(e) => e.class(),
            Self::Cpio(e) => e.class(),
        }
    }
}

/// One archive entry before sorting.
enum Content {
    Dir,
    File { data: Vec<u8>, perm: u32 },
    Symlink(String),
    CharDev(u32, u32),
}

/// Builds the initramfs described by `spec` into `out`.
pub fn build(spec: &Spec, out: &mut impl Write) -> Result<Report, Error> {
    let mut report = Report::default();
    let mut tree: BTreeMap<String, Content> = BTreeMap::new();
    for dir in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "etc",
        "etc/chunkfs",
        "newroot",
    ] {
        tree.insert(dir.to_owned(), Content::Dir);
    }
    tree.insert("dev/console".into(), Content::CharDev(5, 1));
    tree.insert("dev/null".into(), Content::CharDev(1, 3));

    let binary = read(&spec.binary)?;
    match elf::is_static(&binary) {
        Ok(true) => {}
        Ok(false) => return Err(Error::NotStatic(spec.binary.clone())),
        Err(source) => {
            return Err(Error::Elf {
                path: spec.binary.clone(),
                source,
            });
        }
    }
    tree.insert(
        "bin/chunkfs".into(),
        Content::File {
            data: binary,
            perm: 0o755,
        },
    );
    tree.insert("init".into(), Content::Symlink("bin/chunkfs".into()));
    tree.insert(
        "sbin/mount.chunkfs".into(),
        Content::Symlink("../bin/chunkfs".into()),
    );

    if let Some(busybox) = &spec.busybox {
        tree.insert(
            "bin/busybox".into(),
            Content::File {
                data: read(busybox)?,
                perm: 0o755,
            },
        );
        tree.insert("bin/sh".into(), Content::Symlink("busybox".into()));
    }

    if let Some(source) = &spec.modules {
        add_modules(source, &mut tree, &mut report)?;
    }

    let mut counter = CountingWriter {
        inner: out,
        bytes: 0,
    };
    write_main(&tree, spec, &mut counter)?;
    report.entries = tree.len();
    if let Some(image) = &spec.embed {
        // The kernel looks for the next archive's magic only at 4-byte aligned offsets and
        // skips zeros in between.
        let fill = (4 - counter.bytes % 4) % 4;
        counter
            .write_all(&[0; 3][..fill as usize])
            .map_err(cpio::Error::Io)?;
        write_embedded(image, spec.mtime, &mut counter)?;
        report.entries += 2;
    }
    report.bytes = counter.bytes;
    Ok(report)
}

fn add_modules(
    source: &ModuleSource,
    tree: &mut BTreeMap<String, Content>,
    report: &mut Report,
) -> Result<(), Error> {
    let release = source
        .dir
        .file_name()
        .and_then(|name| name.to_str())
        .filter(|name| !name.is_empty() && !name.contains(char::is_whitespace))
        .ok_or_else(|| Error::Release(source.dir.clone()))?
        .to_owned();
    let selection = modules::resolve(&source.dir, &source.wanted)?;
    let base = format!("lib/modules/{release}");
    let mut list = format!("release {release}\n");
    for rel in &selection.load_order {
        let data = read(&source.dir.join(rel))?;
        let path = format!("{base}/{rel}");
        add_parents(tree, &path);
        tree.insert(path, Content::File { data, perm: 0o644 });
        if selection.optional.contains(rel) {
            list.push_str("? ");
        }
        list.push_str(rel);
        list.push('\n');
    }
    tree.insert(
        MODULE_LIST.into(),
        Content::File {
            data: list.into_bytes(),
            perm: 0o644,
        },
    );
    report.modules = selection.load_order;
    report.builtin = selection.builtin;
    report.absent = selection.absent;
    report.release = Some(release);
    Ok(())
}

fn add_parents(tree: &mut BTreeMap<String, Content>, path: &str) {
    let mut end = 0;
    while let Some(slash) = path[end..].find('/') {
        end += slash;
        tree.entry(path[..end].to_owned()).or_insert(Content::Dir);
        end += 1;
    }
}

fn write_main(
    tree: &BTreeMap<String, Content>,
    spec: &Spec,
    out: &mut impl Write,
) -> Result<(), Error> {
    // Sorted paths put every directory before its contents, as the kernel's unpacker needs.
    let mut archive = Vec::new();
    let mut writer = cpio::Writer::new(&mut archive);
    for (name, content) in tree {
        let (perm, kind) = match content {
            Content::Dir => (0o755, Kind::Dir),
            Content::File { data, perm } => (*perm, Kind::File(data)),
            Content::Symlink(target) => (0o777, Kind::Symlink(target.as_bytes())),
            Content::CharDev(major, minor) => (
                0o600,
                Kind::CharDev {
                    major: *major,
                    minor: *minor,
                },
            ),
        };
        writer.append(name, perm, spec.mtime, kind)?;
    }
    writer.finish()?;
    match spec.compression {
        Compression::None => out.write_all(&archive).map_err(cpio::Error::Io)?,
        Compression::Zstd(level) => {
            let mut encoder =
                zstd::stream::Encoder::new(&mut *out, level).map_err(Error::Compress)?;
            // The kernel's zstd unpacker needs no dictionary and no long mode; the checksum
            // catches a damaged initramfs before the kernel runs anything from it.
            encoder.include_checksum(true).map_err(Error::Compress)?;
            encoder
                .set_pledged_src_size(Some(archive.len() as u64))
                .map_err(Error::Compress)?;
            encoder.write_all(&archive).map_err(Error::Compress)?;
            encoder.finish().map_err(Error::Compress)?;
        }
    }
    Ok(())
}

fn write_embedded(image: &Path, mtime: u32, out: &mut impl Write) -> Result<(), Error> {
    let read_err = |source| Error::Read {
        path: image.to_owned(),
        source,
    };
    let mut file = fs::File::open(image).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    let mut writer = cpio::Writer::new(out);
    writer.append("chunkfs", 0o755, mtime, Kind::Dir)?;
    writer.append_reader(EMBEDDED_IMAGE, 0o444, mtime, len, &mut file)?;
    writer.finish()?;
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// A static executable to stand in for chunkfs; busybox-static is one.
    fn static_binary() -> Option<PathBuf> {
        let path = PathBuf::from("/bin/busybox");
        let bytes = fs::read(&path).ok()?;
        elf::is_static(&bytes).ok()?.then_some(path)
    }

    fn cpio_list(archive: &[u8]) -> Vec<String> {
        let mut child = Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cpio(1) runs");
        child.stdin.take().unwrap().write_all(archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn archive_has_init_modules_and_embedded_image_and_is_deterministic() {
        let Some(binary) = static_binary() else {
            eprintln!("skipping: no static /bin/busybox to stand in for chunkfs");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let moddir = dir.path().join("6.1.0-test");
        fs::create_dir_all(moddir.join("kernel/fs/fuse")).unwrap();
        fs::write(moddir.join("kernel/fs/fuse/fuse.ko"), b"fuse module").unwrap();
        fs::write(moddir.join("modules.dep"), "kernel/fs/fuse/fuse.ko:\n").unwrap();
        let image = dir.path().join("root.cfs");
        fs::write(&image, vec![7u8; 5000]).unwrap();
        let spec = Spec {
            binary,
            modules: Some(ModuleSource {
                dir: moddir,
                wanted: vec![("fuse".into(), modules::Need::Required)],
            }),
            busybox: None,
            embed: Some(image),
            compression: Compression::Zstd(3),
            mtime: 1,
        };
        let mut first = Vec::new();
        let report = build(&spec, &mut first).unwrap();
        assert_eq!(report.bytes, first.len() as u64);
        assert_eq!(report.modules, ["kernel/fs/fuse/fuse.ko"]);
        let mut second = Vec::new();
        build(&spec, &mut second).unwrap();
        assert_eq!(first, second);

        // The kernel's layout: a zstd frame, zero fill to 4 bytes, then a plain cpio archive.
        let main_len = zstd::zstd_safe::find_frame_compressed_size(&first).unwrap();
        let main = zstd::decode_all(&first[..main_len]).unwrap();
        let names = cpio_list(&main);
        for expected in [
            "init",
            "bin/chunkfs",
            "dev/console",
            "sbin/mount.chunkfs",
            "etc/chunkfs/modules",
            "lib/modules/6.1.0-test/kernel/fs/fuse/fuse.ko",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let rest_start = main_len.next_multiple_of(4);
        assert!(first[main_len..rest_start].iter().all(|&b| b == 0));
        assert_eq!(cpio_list(&first[rest_start..]), ["chunkfs", EMBEDDED_IMAGE]);
    }
}
