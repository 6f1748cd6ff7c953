//! Restoring an image's tree into a directory.
//!
//! Everything is created relative to an open descriptor of its parent with `*at` calls and
//! `O_NOFOLLOW`, so no path component the image creates is ever followed: a symlink in the
//! image cannot redirect a later write outside the target directory. Names are checked again
//! even though [`Image::validate`] guarantees them. Hard links are made with `linkat` from a
//! parent opened with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`.
//!
//! Order per inode: contents, owner, mode (after the owner, since `chown` clears setuid), xattrs
//! (after `chown`, which drops `security.capability`), mtime. Directories get their metadata
//! after their contents, so their mtime is the image's.
//!
//! As non-root, what needs privileges (owners, device nodes, `trusted.*` and `security.*`
//! xattrs) is skipped and counted in [`Report::skipped`], one entry per kind.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, futimens, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, ftruncate, linkat, symlinkat};
use xattr::FileExt as _;

use crate::model::{ChunkIdx, FileLayout, Image, Inode, InodeIdx, InodeKind, mode};

/// Where unpack gets checked chunk bytes from (a `.cfs`, an OCI layout).
pub trait ChunkSource {
    /// The uncompressed bytes of chunk `idx`, already checked against its digest.
    fn read_chunk(
        &mut self,
        idx: ChunkIdx,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>>;
}

/// Why unpacking failed; names the path being created.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct Error {
    /// The path at fault.
    pub path: PathBuf,
    /// What went wrong.
    #[source]
    pub kind: ErrorKind,
}

impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        self.kind.class()
    }
}

/// What went wrong while unpacking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A system call failed.
    #[error("cannot {op}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The target directory exists and is not empty.
    #[error("the target directory exists and is not empty")]
    NotEmpty,
    /// Reading a chunk failed.
    #[error("{0}")]
    Chunk(Box<dyn std::error::Error + Send + Sync>),
    /// The image breaks an invariant.
    #[error("the image is invalid: {0}")]
    Invalid(String),
}

impl crate::Classify for ErrorKind {
    fn class(&self) -> crate::ErrorClass {
        use crate::ErrorClass as C;
        match self {
            Self::Io { .. } => C::Io,
            Self::NotEmpty => C::Usage,
            // A chunk source reports chunks that do not check against their digest.
            Self::Chunk(_) | Self::Invalid(_) => C::Corrupt,
        }
    }
}

/// What was restored, and what was skipped for lack of privileges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Regular files created (hard links not counted).
    pub files: u64,
    /// Directories created, the target included.
    pub directories: u64,
    /// Other inodes created.
    pub others: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// Per kind of skipped operation: how many, and the first path it happened to.
    pub skipped: BTreeMap<&'static str, (u64, PathBuf)>,
}

/// Restores `image` into `dir`, which must not exist or be empty.
/// On failure (a corrupt chunk, a full disk) it removes what it created, best effort, so a
/// failed unpack leaves no partial tree.
pub fn unpack(image: &Image, chunks: &mut dyn ChunkSource, dir: &Path) -> Result<Report, Error> {
    image.validate().map_err(|e| Error {
        path: dir.to_owned(),
        kind: ErrorKind::Invalid(e.to_string()),
    })?;
    unpack_unvalidated(image, chunks, dir)
}

/// [`unpack`] without [`Image::validate`], for the fuzz target `unpack` only (feature
/// `fuzzing`), which checks that nothing is written outside `dir` whatever the metadata.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_unpack_unvalidated(
    image: &Image,
    chunks: &mut dyn ChunkSource,
    dir: &Path,
) -> Result<Report, Error> {
    unpack_unvalidated(image, chunks, dir)
}

/// [`unpack`] without [`Image::validate`]: its own checks (names, inode references, directories
/// named once, `*at` calls that never follow a symlink) must keep everything inside `dir` even
/// for metadata that breaks every invariant. Tests use it to prove exactly that.
fn unpack_unvalidated(
    image: &Image,
    chunks: &mut dyn ChunkSource,
    dir: &Path,
) -> Result<Report, Error> {
    let (root, created) = open_target(dir)?;
    let result = unpack_into(image, chunks, dir, root);
    if result.is_err() {
        remove_partial(dir, created);
    }
    result
}

/// Removes a failed unpack's output: `dir` itself if we created it, else its contents.
/// `remove_dir_all` does not follow symlinks; directories that already got a read-only mode
/// from the image are made writable first, or a non-root user could not empty them.
fn remove_partial(dir: &Path, created: bool) {
    make_writable(dir, created);
    if created {
        let _ = std::fs::remove_dir_all(dir);
    } else if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
        }
    }
}

/// Gives every directory under `dir` mode 0700 (`dir` itself too if `top`: not a directory the
/// user made), walking with one descriptor per level and never following a symlink. Best effort.
fn make_writable(dir: &Path, top: bool) {
    use nix::dir::{Dir, Type};
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let subdirs = |d: &mut Dir, chmod: bool| -> Vec<Vec<u8>> {
        if chmod {
            let _ = fchmod(&*d, Mode::from_bits_truncate(0o700));
        }
        d.iter()
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_bytes();
                name != b"." && name != b".." && e.file_type().is_none_or(|t| t == Type::Directory)
            })
            .map(|e| e.file_name().to_bytes().to_vec())
            .collect()
    };
    let top_chmod = top;
    let Ok(mut top) = Dir::open(dir, flags, Mode::empty()) else {
        return;
    };
    let names = subdirs(&mut top, top_chmod);
    let mut stack = vec![(top, names)];
    while let Some((parent, names)) = stack.last_mut() {
        let Some(name) = names.pop() else {
            stack.pop();
            continue;
        };
        // Entries of unknown type that are not directories fail here with ENOTDIR.
        if let Ok(mut d) = Dir::openat(&*parent, OsStr::from_bytes(&name), flags, Mode::empty()) {
            let names = subdirs(&mut d, true);
            stack.push((d, names));
        }
    }
}

fn unpack_into(
    image: &Image,
    chunks: &mut dyn ChunkSource,
    dir: &Path,
    root: OwnedFd,
) -> Result<Report, Error> {
    // Validated metadata always has one; unvalidated metadata may have no inode at all.
    if !matches!(
        image.inodes.first().map(|i| &i.kind),
        Some(InodeKind::Directory(_))
    ) {
        return Err(Error {
            path: dir.to_owned(),
            kind: ErrorKind::Invalid("the root (inode 0) is missing or not a directory".into()),
        });
    }
    let mut u = Unpacker {
        image,
        chunks,
        root: root
            .try_clone()
            .map_err(|e| io_err(dir, "duplicate descriptor", e))?,
        report: Report {
            directories: 1,
            ..Report::default()
        },
        name_of: vec![None; image.inodes.len()],
        created: vec![false; image.inodes.len()],
        skipped: vec![false; image.inodes.len()],
        packed: Packed::new(image),
        links: image.link_counts(),
    };
    // One path, pushed and popped with the walk, so memory stays proportional to the depth
    // times one name, not to the depth squared (2048 levels of 255-byte names).
    let mut path = dir.to_owned();
    let mut stack: Vec<DirFrame> = vec![DirFrame {
        fd: root,
        inode: 0,
        next: 0,
    }];
    while let Some(top) = stack.last_mut() {
        let InodeKind::Directory(entries) = &image.inodes[top.inode as usize].kind else {
            return Err(Error {
                path,
                kind: ErrorKind::Invalid("a directory entry stack holds a non-directory".into()),
            });
        };
        let Some(entry) = entries.get(top.next) else {
            let Some(done) = stack.pop() else {
                break;
            };
            u.finish_dir(&done.fd, done.inode, &path)?;
            path.pop();
            continue;
        };
        let at = (top.inode, top.next as u32);
        top.next += 1;
        let name = entry.name.as_slice();
        if name.is_empty()
            || name.contains(&b'/')
            || name.contains(&0)
            || name == b"."
            || name == b".."
        {
            return Err(Error {
                path: path.join(OsStr::from_bytes(name)),
                kind: ErrorKind::Invalid("unsafe entry name".into()),
            });
        }
        path.push(OsStr::from_bytes(name));
        let child = entry.inode;
        match u.create(top.fd.as_fd(), name, child, &path, at)? {
            Some(fd) => stack.push(DirFrame {
                fd,
                inode: child,
                next: 0,
            }),
            None => {
                path.pop();
            }
        }
    }
    Ok(u.report)
}

/// A directory being filled: its descriptor, inode, and next entry.
struct DirFrame {
    fd: OwnedFd,
    inode: InodeIdx,
    next: usize,
}

/// Where a name is: the directory inode holding the entry, and the entry's position.
type NameAt = (InodeIdx, u32);

/// Longest relative path handed to one `openat2` call (the kernel's limit is PATH_MAX, 4096).
const PATH_STEP: usize = 3072;

fn io_err(path: &Path, op: &'static str, e: std::io::Error) -> Error {
    Error {
        path: path.to_owned(),
        kind: ErrorKind::Io { op, source: e },
    }
}

/// Opens `dir`, creating it if missing (then the flag is true); refuses a non-empty one.
fn open_target(dir: &Path) -> Result<(OwnedFd, bool), Error> {
    let created = match std::fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut entries =
                std::fs::read_dir(dir).map_err(|e| io_err(dir, "read the target directory", e))?;
            if entries.next().is_some() {
                return Err(Error {
                    path: dir.to_owned(),
                    kind: ErrorKind::NotEmpty,
                });
            }
            false
        }
        Err(e) => return Err(io_err(dir, "create the target directory", e)),
    };
    let fd = openat(
        nix::fcntl::AT_FDCWD,
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(dir, "open the target directory", e.into()))?;
    Ok((fd, created))
}

struct Unpacker<'a> {
    image: &'a Image,
    chunks: &'a mut dyn ChunkSource,
    root: OwnedFd,
    report: Report,
    /// For a directory, its name; for a non-directory with several names, its first one.
    name_of: Vec<Option<NameAt>>,
    /// Directories created so far (each may be named once only).
    created: Vec<bool>,
    /// Inodes not created (device nodes as non-root), so their other names are skipped too.
    skipped: Vec<bool>,
    packed: Packed,
    links: Vec<u32>,
}

impl Unpacker<'_> {
    /// Creates entry `name` (found at `at`) of the directory `dir`; returns a new directory's
    /// descriptor.
    fn create(
        &mut self,
        dir: BorrowedFd,
        name: &[u8],
        child: InodeIdx,
        path: &Path,
        at: NameAt,
    ) -> Result<Option<OwnedFd>, Error> {
        let Some(inode) = self.image.inodes.get(child as usize) else {
            return Err(Error {
                path: path.to_owned(),
                kind: ErrorKind::Invalid(format!(
                    "entry names inode {child}, which does not exist"
                )),
            });
        };
        let io = |op, e: Errno| io_err(path, op, e.into());
        let cname = OsStr::from_bytes(name);
        if inode.is_dir() {
            // A directory named twice (a cycle, or a hard-linked directory) would be walked
            // again and again.
            if child == 0 || std::mem::replace(&mut self.created[child as usize], true) {
                return Err(Error {
                    path: path.to_owned(),
                    kind: ErrorKind::Invalid("directory is named more than once".into()),
                });
            }
            self.name_of[child as usize] = Some(at);
        } else {
            if self.skipped[child as usize] {
                return Ok(None);
            }
            if let Some(first) = self.name_of[child as usize] {
                return self.link(first, dir, cname, path).map(|()| None);
            }
            if self.links[child as usize] > 1 {
                self.name_of[child as usize] = Some(at);
            }
        }
        let nofollow = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match &inode.kind {
            InodeKind::Directory(_) => {
                mkdirat(dir, cname, Mode::from_bits_truncate(0o700))
                    .map_err(|e| io("create directory", e))?;
                let fd = openat(
                    dir,
                    cname,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | nofollow,
                    Mode::empty(),
                )
                .map_err(|e| io("open directory", e))?;
                self.report.directories += 1;
                return Ok(Some(fd));
            }
            InodeKind::File(f) => {
                let fd = openat(
                    dir,
                    cname,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | nofollow,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| io("create file", e))?;
                let file = File::from(fd);
                self.write_contents(&file, f.size, &f.layout, path)?;
                ftruncate(&file, f.size as i64).map_err(|e| io("set the size", e))?;
                self.report.files += 1;
                self.apply_fd(&file, inode, path)?;
                return Ok(None);
            }
            InodeKind::Symlink(target) => {
                symlinkat(OsStr::from_bytes(target), dir, cname)
                    .map_err(|e| io("create symlink", e))?;
            }
            InodeKind::Device { major, minor } => {
                let kind = if inode.file_type() == mode::S_IFBLK {
                    SFlag::S_IFBLK
                } else {
                    SFlag::S_IFCHR
                };
                let dev = nix::sys::stat::makedev(u64::from(*major), u64::from(*minor));
                match mknodat(dir, cname, kind, Mode::from_bits_truncate(0o600), dev) {
                    Ok(()) => {}
                    Err(Errno::EPERM) => {
                        self.skip("device nodes (need root)", path);
                        self.skipped[child as usize] = true;
                        return Ok(None);
                    }
                    Err(e) => return Err(io("create device node", e)),
                }
            }
            InodeKind::Special => {
                let kind = if inode.file_type() == mode::S_IFSOCK {
                    SFlag::S_IFSOCK
                } else {
                    SFlag::S_IFIFO
                };
                mknodat(dir, cname, kind, Mode::from_bits_truncate(0o600), 0)
                    .map_err(|e| io("create node", e))?;
            }
        }
        self.report.others += 1;
        self.apply_at(dir, cname, inode, path)?;
        Ok(None)
    }

    /// The name at `at`.
    fn name_at(&self, at: NameAt) -> Option<&[u8]> {
        match &self.image.inodes.get(at.0 as usize)?.kind {
            InodeKind::Directory(entries) => Some(&entries.get(at.1 as usize)?.name),
            _ => None,
        }
    }

    /// Hard-links `name` in `dir` to the inode first created at `first`. The first name's
    /// directory is opened from the target's root, beneath it and without following symlinks,
    /// in steps of at most [`PATH_STEP`] bytes (deep trees have paths longer than PATH_MAX).
    fn link(&self, first: NameAt, dir: BorrowedFd, name: &OsStr, path: &Path) -> Result<(), Error> {
        let invalid = |problem: &str| Error {
            path: path.to_owned(),
            kind: ErrorKind::Invalid(problem.into()),
        };
        let old_name = self
            .name_at(first)
            .ok_or_else(|| invalid("a hard link's first name is not in a directory"))?;
        // The first name's directory's components, innermost first.
        let mut components: Vec<&[u8]> = Vec::new();
        let mut d = first.0;
        while d != 0 {
            let at = self.name_of[d as usize]
                .filter(|_| components.len() <= crate::model::limits::DEPTH_MAX)
                .ok_or_else(|| invalid("a hard link's first name is not below the root"))?;
            components.push(
                self.name_at(at)
                    .ok_or_else(|| invalid("a directory's name is not in a directory"))?,
            );
            d = at.0;
        }
        let io = |op, e: Errno| io_err(path, op, e.into());
        let mut parent: Option<OwnedFd> = None;
        let mut rest = components.into_iter().rev().peekable();
        while rest.peek().is_some() {
            let mut step = PathBuf::new();
            let mut len = 0;
            while let Some(c) = rest.next_if(|c| len == 0 || len + c.len() < PATH_STEP) {
                len += c.len() + 1;
                step.push(OsStr::from_bytes(c));
            }
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_BENEATH
                        | ResolveFlag::RESOLVE_NO_SYMLINKS
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS,
                );
            let from = parent.as_ref().map_or(self.root.as_fd(), |p| p.as_fd());
            parent = Some(
                openat2(from, &step, how).map_err(|e| io("open the first name's directory", e))?,
            );
        }
        let from = parent.as_ref().map_or(self.root.as_fd(), |p| p.as_fd());
        linkat(
            from,
            OsStr::from_bytes(old_name),
            dir,
            name,
            AtFlags::empty(),
        )
        .map_err(|e| io("create hard link", e))
    }

    fn write_contents(
        &mut self,
        file: &File,
        size: u64,
        layout: &FileLayout,
        path: &Path,
    ) -> Result<(), Error> {
        let chunk_err = |e| Error {
            path: path.to_owned(),
            kind: ErrorKind::Chunk(e),
        };
        let write = |data: &[u8], at: u64| {
            file.write_all_at(data, at)
                .map_err(|e| io_err(path, "write", e))
        };
        match layout {
            FileLayout::Extents(extents) => {
                for x in extents {
                    let data = self.chunks.read_chunk(x.chunk).map_err(chunk_err)?;
                    write(&data, x.offset)?;
                    self.report.bytes += data.len() as u64;
                }
            }
            FileLayout::Packed(offset) => {
                let mut done = 0u64;
                while done < size {
                    let (data, skip) = self
                        .packed
                        .chunk_at(offset + done, self.image, self.chunks)
                        .map_err(chunk_err)?;
                    let take = (data.len() - skip).min((size - done) as usize);
                    write(&data[skip..skip + take], done)?;
                    done += take as u64;
                }
                self.report.bytes += size;
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs, mtime of an open file or directory.
    fn apply_fd(&mut self, fd: &File, inode: &Inode, path: &Path) -> Result<(), Error> {
        match fchown(
            fd,
            Some(Uid::from_raw(inode.uid)),
            Some(Gid::from_raw(inode.gid)),
        ) {
            Ok(()) => {}
            Err(Errno::EPERM) => self.skip("owners (need root)", path),
            Err(e) => return Err(io_err(path, "set the owner", e.into())),
        }
        fchmod(fd, Mode::from_bits_truncate(inode.mode & mode::PERM_MASK))
            .map_err(|e| io_err(path, "set the mode", e.into()))?;
        for x in &inode.xattrs {
            let name = OsStr::from_bytes(&x.name);
            if let Err(e) = fd.set_xattr(name, &x.value) {
                self.xattr_failed(&x.name, e, path)?;
            }
        }
        let mtime = TimeSpec::new(inode.mtime_sec, i64::from(inode.mtime_nsec));
        futimens(fd, &TimeSpec::UTIME_OMIT, &mtime)
            .map_err(|e| io_err(path, "set the mtime", e.into()))
    }

    /// Owner, mode, xattrs, mtime of a symlink, device or special file, without following it.
    fn apply_at(
        &mut self,
        dir: BorrowedFd,
        name: &OsStr,
        inode: &Inode,
        path: &Path,
    ) -> Result<(), Error> {
        match fchownat(
            dir,
            name,
            Some(Uid::from_raw(inode.uid)),
            Some(Gid::from_raw(inode.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => {}
            Err(Errno::EPERM) => self.skip("owners (need root)", path),
            Err(e) => return Err(io_err(path, "set the owner", e.into())),
        }
        if inode.file_type() != mode::S_IFLNK {
            // We just created this entry and it is not a symlink, so following cannot happen.
            fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(inode.mode & mode::PERM_MASK),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| io_err(path, "set the mode", e.into()))?;
        }
        if !inode.xattrs.is_empty() {
            // The parent's descriptor in /proc resolves to the directory itself; `lsetxattr`
            // does not follow the final component.
            let proc_path = Path::new("/proc/self/fd")
                .join(dir.as_raw_fd().to_string())
                .join(name);
            for x in &inode.xattrs {
                if let Err(e) = xattr::set(&proc_path, OsStr::from_bytes(&x.name), &x.value) {
                    self.xattr_failed(&x.name, e, path)?;
                }
            }
        }
        let mtime = TimeSpec::new(inode.mtime_sec, i64::from(inode.mtime_nsec));
        utimensat(
            dir,
            name,
            &TimeSpec::UTIME_OMIT,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_err(path, "set the mtime", e.into()))
    }

    fn xattr_failed(&mut self, name: &[u8], e: std::io::Error, path: &Path) -> Result<(), Error> {
        let kind = match e.raw_os_error() {
            Some(libc::EPERM) if name.starts_with(b"trusted.") => "trusted.* xattrs (need root)",
            Some(libc::EPERM) if name.starts_with(b"security.") => "security.* xattrs (need root)",
            Some(libc::ENOTSUP) => "xattrs the target file system does not support",
            _ => return Err(io_err(path, "set an xattr", e)),
        };
        self.skip(kind, path);
        Ok(())
    }

    fn finish_dir(&mut self, fd: &OwnedFd, inode: InodeIdx, path: &Path) -> Result<(), Error> {
        let file = File::from(
            fd.try_clone()
                .map_err(|e| io_err(path, "duplicate descriptor", e))?,
        );
        self.apply_fd(&file, &self.image.inodes[inode as usize], path)
    }

    fn skip(&mut self, kind: &'static str, path: &Path) {
        self.report
            .skipped
            .entry(kind)
            .or_insert_with(|| (0, path.to_owned()))
            .0 += 1;
    }
}

/// Random access to the packed stream, keeping the last chunk read (small files are unpacked
/// in stream order, so most reads hit it).
struct Packed {
    /// Start offset of each packed-stream position.
    starts: Vec<u64>,
    cached: Option<(usize, Vec<u8>)>,
}

impl Packed {
    fn new(image: &Image) -> Self {
        let mut pos = 0u64;
        let starts = image
            .packed_stream
            .iter()
            .map(|&c| {
                let start = pos;
                let size = image.chunks.get(c as usize).map_or(0, |c| c.size);
                pos = pos.saturating_add(u64::from(size));
                start
            })
            .collect();
        Self {
            starts,
            cached: None,
        }
    }

    /// The packed chunk holding stream byte `offset`, and `offset`'s position in it.
    fn chunk_at(
        &mut self,
        offset: u64,
        image: &Image,
        chunks: &mut dyn ChunkSource,
    ) -> Result<(&[u8], usize), Box<dyn std::error::Error + Send + Sync>> {
        // Image::validate checked that packed ranges lie inside the stream.
        let pos = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        if self.cached.as_ref().is_none_or(|(p, _)| *p != pos) {
            let chunk = *image
                .packed_stream
                .get(pos)
                .ok_or("packed stream offset outside the stream")?;
            let data = chunks.read_chunk(chunk)?;
            self.cached = Some((pos, data));
        }
        let skip = (offset - self.starts[pos]) as usize;
        match &self.cached {
            Some((_, data)) if skip < data.len() => Ok((data, skip)),
            _ => Err("packed stream offset outside its chunk".into()),
        }
    }
}

#[cfg(test)]
mod tests;
