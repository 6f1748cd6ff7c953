//! Directory tree -> inodes (docs/format.md §3.2), feeding file contents to a [`Builder`].
//!
//! The walk opens everything relative to its parent directory's descriptor with `O_NOFOLLOW`,
//! never by path, and visits each directory's entries in bytewise name order, so the inode
//! numbering and the chunk order depend only on the tree, not on the order the file system
//! lists it in or on the path it is reached by. Inodes with several names (hard links) are
//! recognised by device and inode number and numbered at their first name.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};
use nix::unistd::{Whence, lseek};
use xattr::FileExt as _;

use crate::build::{BuildOutput, Builder, ChunkSink, FileId};
use crate::model::{
    DirEntry, FileData, FileLayout, Image, Inode, InodeIdx, InodeKind, Xattr, limits, mode,
};

/// Why a tree could not be scanned; always names the path.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct Error {
    /// The file or directory at fault.
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

/// What went wrong while scanning.
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
    /// The source is not a directory.
    #[error("is not a directory")]
    NotADirectory,
    /// The file changed while it was being read.
    #[error("changed while it was being packed ({0})")]
    Changed(&'static str),
    /// Something the format cannot represent.
    #[error("{0}")]
    Unsupported(String),
    /// The builder failed.
    #[error(transparent)]
    Build(#[from] crate::build::Error),
}

impl crate::Classify for ErrorKind {
    fn class(&self) -> crate::ErrorClass {
        use crate::ErrorClass as C;
        match self {
            // A source that is not a directory, or a file that changed under us, could not be
            // read as a tree (ENOTDIR, a torn read): an input failure.
            Self::Io { .. } | Self::NotADirectory | Self::Changed(_) => C::Io,
            Self::Unsupported(_) => C::Unsupported,
            Self::Build(e) => e.class(),
        }
    }
}

/// The scanned tree: inodes whose regular files still name builder files.
#[derive(Debug)]
pub struct Tree {
    inodes: Vec<Inode>,
    files: Vec<(InodeIdx, FileId)>,
}

impl Tree {
    /// Number of inodes.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// The image, once the build has finished.
    pub fn into_image<S>(mut self, out: &mut BuildOutput<S>) -> Image {
        for (inode, file) in self.files {
            if let InodeKind::File(f) = &mut self.inodes[inode as usize].kind {
                f.layout = out.take_layout(file);
            }
        }
        Image {
            chunks: std::mem::take(&mut out.chunks),
            packed_stream: std::mem::take(&mut out.packed_stream),
            inodes: self.inodes,
            prefetch: Vec::new(),
        }
    }
}

/// One directory being walked.
struct Frame {
    dir: Dir,
    path: PathBuf,
    inode: InodeIdx,
    names: std::vec::IntoIter<Vec<u8>>,
    entries: Vec<DirEntry>,
}

/// Walks the tree at `root`, giving every regular file's contents to `builder`. Entries whose
/// (device, inode number) is in `exclude` are left out (the image being written, when it lies
/// inside the tree).
pub fn scan<S: ChunkSink>(
    root: &Path,
    builder: &mut Builder<S>,
    exclude: &[(u64, u64)],
) -> Result<Tree, Error> {
    let err = |path: &Path, kind: ErrorKind| Error {
        path: path.to_owned(),
        kind,
    };
    let io = |path: &Path, op: &'static str, e: Errno| {
        err(
            path,
            ErrorKind::Io {
                op,
                source: e.into(),
            },
        )
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let fd = openat(nix::fcntl::AT_FDCWD, root, flags, Mode::empty()).map_err(|e| match e {
        Errno::ENOTDIR => err(root, ErrorKind::NotADirectory),
        e => io(root, "open", e),
    })?;
    let st = fstat(&fd).map_err(|e| io(root, "stat", e))?;
    let mut scanner = Scanner {
        builder,
        exclude,
        inodes: Vec::new(),
        files: Vec::new(),
        links: HashMap::new(),
        buf: vec![0u8; 1 << 20],
    };
    let root_file = File::from(fd.try_clone().map_err(|e| {
        err(
            root,
            ErrorKind::Io {
                op: "duplicate descriptor",
                source: e,
            },
        )
    })?);
    let xattrs = read_xattrs_fd(&root_file).map_err(|kind| err(root, kind))?;
    scanner
        .inodes
        .push(meta(&st, xattrs, InodeKind::Directory(Vec::new())));
    let mut stack = vec![open_frame(fd, root.to_owned(), 0)?];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.next() else {
            // `stack.last_mut()` was Some.
            let Some(done) = stack.pop() else { break };
            scanner.inodes[done.inode as usize].kind = InodeKind::Directory(done.entries);
            continue;
        };
        let path = frame.path.join(OsStr::from_bytes(&name));
        let inode = match scanner.entry(frame.dir.as_fd(), &name, &path)? {
            Entry::Excluded => continue,
            Entry::Done(inode) => inode,
            Entry::Directory(inode, fd) => {
                if stack.len() > limits::DEPTH_MAX {
                    return Err(err(
                        &path,
                        ErrorKind::Unsupported(format!(
                            "is nested deeper than {} directories",
                            limits::DEPTH_MAX
                        )),
                    ));
                }
                let new = open_frame(fd, path, inode)?;
                // Pushing invalidates `frame`, so record the entry first.
                if let Some(parent) = stack.last_mut() {
                    parent.entries.push(DirEntry { name, inode });
                }
                stack.push(new);
                continue;
            }
        };
        frame.entries.push(DirEntry { name, inode });
    }
    Ok(Tree {
        inodes: scanner.inodes,
        files: scanner.files,
    })
}

fn open_frame(fd: OwnedFd, path: PathBuf, inode: InodeIdx) -> Result<Frame, Error> {
    let io = |op, e: Errno| Error {
        path: path.clone(),
        kind: ErrorKind::Io {
            op,
            source: e.into(),
        },
    };
    let mut dir = Dir::from_fd(fd).map_err(|e| io("read directory", e))?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry.map_err(|e| io("read directory", e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    if names.len() > limits::DIR_ENTRIES_MAX {
        return Err(Error {
            path,
            kind: ErrorKind::Unsupported(format!(
                "has {} entries, more than {}",
                names.len(),
                limits::DIR_ENTRIES_MAX
            )),
        });
    }
    names.sort_unstable();
    Ok(Frame {
        dir,
        path,
        inode,
        names: names.into_iter(),
        entries: Vec::new(),
    })
}

enum Entry {
    Excluded,
    Done(InodeIdx),
    Directory(InodeIdx, OwnedFd),
}

struct Scanner<'b, S: ChunkSink> {
    builder: &'b mut Builder<S>,
    exclude: &'b [(u64, u64)],
    inodes: Vec<Inode>,
    files: Vec<(InodeIdx, FileId)>,
    /// (device, inode number) of inodes with several names.
    links: HashMap<(u64, u64), InodeIdx>,
    buf: Vec<u8>,
}

impl<S: ChunkSink> Scanner<'_, S> {
    /// Records the entry `name` of the directory `dir`; a new directory is returned open.
    fn entry(&mut self, dir: BorrowedFd, name: &[u8], path: &Path) -> Result<Entry, Error> {
        let err = |kind| Error {
            path: path.to_owned(),
            kind,
        };
        let io = |op, e: Errno| {
            err(ErrorKind::Io {
                op,
                source: e.into(),
            })
        };
        let st = fstatat(dir, OsStr::from_bytes(name), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| io("stat", e))?;
        let ty = st.st_mode & mode::S_IFMT;
        let key = (st.st_dev, st.st_ino);
        if self.exclude.contains(&key) {
            return Ok(Entry::Excluded);
        }
        if ty != mode::S_IFDIR && st.st_nlink > 1 {
            if let Some(&inode) = self.links.get(&key) {
                return Ok(Entry::Done(inode));
            }
        }
        if self.inodes.len() >= limits::INODES_MAX {
            return Err(err(ErrorKind::Unsupported(format!(
                "the tree has more than {} inodes",
                limits::INODES_MAX
            ))));
        }
        let inode = self.inodes.len() as InodeIdx;
        let nofollow = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let (kind, xattrs, dir_fd) = match ty {
            mode::S_IFDIR => {
                let fd = openat(
                    dir,
                    OsStr::from_bytes(name),
                    nofollow | OFlag::O_DIRECTORY,
                    Mode::empty(),
                )
                .map_err(|e| io("open", e))?;
                let file = File::from(fd);
                same_inode(&file, &st).map_err(err)?;
                let xattrs = read_xattrs_fd(&file).map_err(err)?;
                (
                    InodeKind::Directory(Vec::new()),
                    xattrs,
                    Some(OwnedFd::from(file)),
                )
            }
            mode::S_IFREG => {
                // O_NONBLOCK: if the file was swapped for a FIFO since fstatat, opening must not
                // hang; same_inode then refuses it. Reads of regular files ignore the flag.
                let flags = nofollow | OFlag::O_NONBLOCK;
                let fd = openat(dir, OsStr::from_bytes(name), flags, Mode::empty())
                    .map_err(|e| io("open", e))?;
                let file = File::from(fd);
                same_inode(&file, &st).map_err(err)?;
                let xattrs = read_xattrs_fd(&file).map_err(err)?;
                let id = self.read_file(&file, &st, name).map_err(err)?;
                self.files.push((inode, id));
                let size = st.st_size as u64;
                (
                    InodeKind::File(FileData {
                        size,
                        layout: FileLayout::Extents(Vec::new()),
                    }),
                    xattrs,
                    None,
                )
            }
            mode::S_IFLNK => {
                let target =
                    readlinkat(dir, OsStr::from_bytes(name)).map_err(|e| io("read symlink", e))?;
                let target = target.as_bytes().to_vec();
                if target.is_empty() || target.len() > limits::SYMLINK_MAX {
                    return Err(err(ErrorKind::Unsupported(format!(
                        "symlink target of {} bytes is outside 1..={}",
                        target.len(),
                        limits::SYMLINK_MAX
                    ))));
                }
                (
                    InodeKind::Symlink(target),
                    read_xattrs_at(dir, name).map_err(err)?,
                    None,
                )
            }
            mode::S_IFCHR | mode::S_IFBLK => {
                let (major, minor) = (
                    nix::sys::stat::major(st.st_rdev),
                    nix::sys::stat::minor(st.st_rdev),
                );
                (
                    InodeKind::Device {
                        major: major as u32,
                        minor: minor as u32,
                    },
                    read_xattrs_at(dir, name).map_err(err)?,
                    None,
                )
            }
            mode::S_IFIFO | mode::S_IFSOCK => (
                InodeKind::Special,
                read_xattrs_at(dir, name).map_err(err)?,
                None,
            ),
            other => {
                return Err(err(ErrorKind::Unsupported(format!(
                    "has unknown file type {other:o}"
                ))));
            }
        };
        self.inodes.push(meta(&st, xattrs, kind));
        if ty != mode::S_IFDIR && st.st_nlink > 1 {
            self.links.insert(key, inode);
        }
        Ok(match dir_fd {
            Some(fd) => Entry::Directory(inode, fd),
            None => Entry::Done(inode),
        })
    }

    /// Gives a regular file's data segments to the builder, with its name (which groups small
    /// files of one name in the packed stream).
    fn read_file(&mut self, file: &File, st: &FileStat, name: &[u8]) -> Result<FileId, ErrorKind> {
        let size = st.st_size as u64;
        let io = |op, source| ErrorKind::Io { op, source };
        self.builder.begin_named_file(size, name)?;
        // Only a file with fewer blocks than bytes can have holes; asking costs two syscalls.
        let maybe_sparse =
            size >= self.builder_small_max() && (st.st_blocks as u64).saturating_mul(512) < size;
        let mut pos = 0u64;
        while pos < size {
            let (data, hole) = if maybe_sparse {
                match lseek(file.as_fd(), pos as i64, Whence::SeekData) {
                    Ok(d) => {
                        let h = lseek(file.as_fd(), d, Whence::SeekHole)
                            .map_err(|e| io("find holes", e.into()))?;
                        (d as u64, (h as u64).min(size))
                    }
                    // No data after `pos`: the rest is a hole.
                    Err(Errno::ENXIO) => break,
                    Err(e) => return Err(io("find holes", e.into())),
                }
            } else {
                (pos, size)
            };
            let mut off = data;
            while off < hole {
                let want = ((hole - off) as usize).min(self.buf.len());
                let n = match file.read_at(&mut self.buf[..want], off) {
                    Ok(0) => return Err(ErrorKind::Changed("it became shorter")),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io("read", e)),
                };
                self.builder.write(off, &self.buf[..n])?;
                off += n as u64;
            }
            pos = hole.max(pos + 1);
        }
        let after = fstat(file.as_fd()).map_err(|e| io("stat", e.into()))?;
        if after.st_size != st.st_size
            || after.st_mtime != st.st_mtime
            || after.st_mtime_nsec != st.st_mtime_nsec
        {
            return Err(ErrorKind::Changed("size or mtime differ after reading"));
        }
        Ok(self.builder.end_file()?)
    }

    fn builder_small_max(&self) -> u64 {
        self.builder.options().small_file_max
    }
}

/// Refuses an entry replaced between `fstatat` and `open`.
fn same_inode(file: &File, st: &FileStat) -> Result<(), ErrorKind> {
    let now = fstat(file.as_fd()).map_err(|e| ErrorKind::Io {
        op: "stat",
        source: e.into(),
    })?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(ErrorKind::Changed("it was replaced"));
    }
    Ok(())
}

fn meta(st: &FileStat, xattrs: Vec<Xattr>, kind: InodeKind) -> Inode {
    Inode {
        mode: st.st_mode & (mode::S_IFMT | mode::PERM_MASK),
        uid: st.st_uid,
        gid: st.st_gid,
        mtime_sec: st.st_mtime,
        mtime_nsec: st.st_mtime_nsec as u32,
        xattrs,
        kind,
    }
}

/// Xattrs of an open file or directory, sorted by name.
fn read_xattrs_fd(file: &File) -> Result<Vec<Xattr>, ErrorKind> {
    let names = match file.list_xattr() {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(source) => {
            return Err(ErrorKind::Io {
                op: "list xattrs",
                source,
            });
        }
    };
    let mut out = Vec::new();
    for name in names {
        // Removed between list and get: skip it.
        let Some(value) = file.get_xattr(&name).map_err(|source| ErrorKind::Io {
            op: "read xattr",
            source,
        })?
        else {
            continue;
        };
        out.push(Xattr {
            name: name.as_bytes().to_vec(),
            value,
        });
    }
    finish_xattrs(out)
}

/// Xattrs of a symlink, device, FIFO or socket, which cannot be opened for reading: through the
/// parent's descriptor in /proc, without following the entry itself.
fn read_xattrs_at(dir: BorrowedFd, name: &[u8]) -> Result<Vec<Xattr>, ErrorKind> {
    let path = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(OsStr::from_bytes(name));
    let names = match xattr::list(&path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(source) => {
            return Err(ErrorKind::Io {
                op: "list xattrs",
                source,
            });
        }
    };
    let mut out = Vec::new();
    for name in names {
        let Some(value) = xattr::get(&path, &name).map_err(|source| ErrorKind::Io {
            op: "read xattr",
            source,
        })?
        else {
            continue;
        };
        out.push(Xattr {
            name: name.as_bytes().to_vec(),
            value,
        });
    }
    finish_xattrs(out)
}

fn finish_xattrs(mut xattrs: Vec<Xattr>) -> Result<Vec<Xattr>, ErrorKind> {
    xattrs.sort();
    let mut total = 0usize;
    for x in &xattrs {
        if x.name.len() > limits::XATTR_NAME_MAX || x.value.len() > limits::XATTR_VALUE_MAX {
            return Err(ErrorKind::Unsupported(format!(
                "xattr {} has a {}-byte name and a {}-byte value; the format allows {} and {}",
                String::from_utf8_lossy(&x.name),
                x.name.len(),
                x.value.len(),
                limits::XATTR_NAME_MAX,
                limits::XATTR_VALUE_MAX
            )));
        }
        total += x.name.len() + x.value.len();
    }
    if xattrs.len() > limits::XATTRS_PER_INODE_MAX || total > limits::XATTR_BYTES_PER_INODE_MAX {
        return Err(ErrorKind::Unsupported(format!(
            "{} xattrs of {total} bytes exceed the format's limits",
            xattrs.len()
        )));
    }
    Ok(xattrs)
}
