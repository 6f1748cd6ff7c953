//! The FUSE filesystem: every request is answered from the validated descriptor (attributes,
//! directories, links, xattrs) or the verified chunk cache (file data).
//!
//! Inode numbers: `st_ino` is the nid, as the kernel's EROFS reports it on 64-bit systems, so
//! both mounts show the same numbers. FUSE node ids equal `st_ino` (fuser sends `attr.ino` as the
//! node id), except that the root's node id is 1 and that nids 0 and 1, which FUSE reserves, are
//! served as `u64::MAX - nid` (the only inodes whose `st_ino` differs from the kernel's).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chunkfs_kernel_abi::parse::{InodeView, Kind};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, Notifier, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::fill::Filler;
use crate::prefetch::Prefetcher;
use crate::reader::{Access, Shared};

/// The image never changes: attributes and entries may be cached for as long as the kernel likes.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Largest read or readahead asked of the kernel.
const MAX_IO: u32 = 1 << 20;

pub(crate) struct Fs {
    pub reader: Shared,
    /// Decompress-ahead for sequential reads (`None` when disabled).
    prefetch: Option<Prefetcher>,
    /// Page-cache fill after random reads (`None` when disabled).
    fill: Option<Filler>,
    /// The kernel may skip OPEN / OPENDIR (answering ENOSYS once makes it stop sending them and
    /// keep the page cache, as FOPEN_KEEP_CACHE would): a round trip less per open file.
    pub no_open: bool,
    pub no_opendir: bool,
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

impl Fs {
    /// The filesystem for `reader`; `notifier` is set once the FUSE session exists.
    pub fn new(reader: Shared, notifier: Arc<OnceLock<Notifier>>) -> Self {
        let depth = reader.config.prefetch_chunks;
        let prefetch = (depth > 0).then(|| Prefetcher::start(&reader, depth));
        let fill = reader
            .config
            .fill_random_reads
            .then(|| Filler::start(&reader, notifier));
        Fs {
            reader,
            prefetch,
            fill,
            no_open: false,
            no_opendir: false,
        }
    }

    fn root(&self) -> u64 {
        self.reader.descriptor().root_nid()
    }

    fn nid(&self, ino: INodeNo) -> u64 {
        match ino.0 {
            1 => self.root(),
            n if n >= u64::MAX - 1 => u64::MAX - n,
            n => n,
        }
    }

    /// `st_ino` of inode `nid`: the nid, moved out of FUSE's reserved ids 0 and 1.
    fn st_ino(&self, nid: u64) -> u64 {
        if nid < 2 && nid != self.root() {
            u64::MAX - nid
        } else {
            nid
        }
    }

    fn inode(&self, ino: INodeNo) -> Result<InodeView<'_>, Errno> {
        self.reader
            .descriptor()
            .inode(self.nid(ino))
            .ok_or(Errno::ENOENT)
    }

    fn attr(&self, i: &InodeView<'_>) -> FileAttr {
        let t = time(i.mtime(), i.mtime_nsec());
        FileAttr {
            ino: INodeNo(self.st_ino(i.nid())),
            size: i.size(),
            blocks: i.blocks(),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: kind(i.kind()),
            perm: i.mode() & 0o7777,
            nlink: i.nlink(),
            uid: i.uid(),
            gid: i.gid(),
            rdev: i.rdev(),
            blksize: self.reader.descriptor().block_size(),
            flags: 0,
        }
    }

    /// Runs a request body, turning a panic into EIO so that no request takes the daemon down.
    fn guard<T>(&self, what: &str, f: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
        let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
            eprintln!("chunkfs: internal error in {what}");
            Err(Errno::EIO)
        });
        if let Err(e) = &r {
            if self.reader.config.debug && *e != Errno::ENOENT && *e != Errno::ENODATA {
                eprintln!("chunkfs: {what}: {e:?}");
            }
        }
        r
    }
}

fn time(sec: i64, nsec: u32) -> SystemTime {
    let nanos = Duration::from_nanos(nsec.into());
    if sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(sec as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + nanos
    }
}

fn kind(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

fn ftype(t: u8) -> FileType {
    use chunkfs_kernel_abi::erofs::ft;
    match t {
        ft::DIR => FileType::Directory,
        ft::SYMLINK => FileType::Symlink,
        ft::CHRDEV => FileType::CharDevice,
        ft::BLKDEV => FileType::BlockDevice,
        ft::FIFO => FileType::NamedPipe,
        ft::SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

/// The xattr protocol: size 0 asks for the length; a too-small buffer is ERANGE.
fn reply_xattr(reply: ReplyXattr, size: u32, data: Result<Vec<u8>, Errno>) {
    match data {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each capability only if the kernel offers it.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_ASYNC_READ;
        for flag in wanted.iter() {
            let _ = config.add_capabilities(flag);
        }
        self.no_open = config
            .add_capabilities(InitFlags::FUSE_NO_OPEN_SUPPORT)
            .is_ok();
        self.no_opendir = config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
        // Ask for big reads: as much readahead as the kernel allows, up to 1 MiB.
        if let Err(max) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.guard("lookup", || {
            let dir = self.inode(parent)?;
            if dir.kind() != Kind::Dir {
                return Err(Errno::ENOTDIR);
            }
            let e = dir.lookup(name.as_bytes()).ok_or(Errno::ENOENT)?;
            let child = self.reader.descriptor().inode(e.nid).ok_or(Errno::EIO)?;
            Ok(self.attr(&child))
        });
        // fuser sends `attr.ino` as the node id: the entry is never the root (the walk refuses
        // entries naming it), so node id and `st_ino` agree.
        match r {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.guard("getattr", || Ok(self.attr(&self.inode(ino)?))) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self.guard("readlink", || {
            let [a, b] = self.inode(ino)?.symlink_target().ok_or(Errno::EINVAL)?;
            Ok([a, b].concat())
        });
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            return reply.error(Errno::ENOSYS);
        }
        let r = self.guard("open", || {
            if flags.acc_mode() != OpenAccMode::O_RDONLY {
                return Err(Errno::EROFS);
            }
            match self.inode(ino)?.kind() {
                Kind::Dir => Err(Errno::EISDIR),
                _ => Ok(()),
            }
        });
        match r {
            // The page cache stays valid across opens: the file never changes.
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        // The reply is sent from inside the read, straight from the cached chunk when it can.
        let mut reply = Some(reply);
        let r = self.guard("read", || {
            let nid = self.nid(ino);
            self.reader
                .read_with(nid, offset, size, |data| reply.take().map(|r| r.data(data)))
                .map_err(|e| {
                    eprintln!("chunkfs: {e}");
                    errno(e.errno())
                })
        });
        match (r, reply.take()) {
            (Err(e), Some(reply)) => reply.error(e),
            (Ok(_), _) => {
                if let Some(p) = &self.prefetch {
                    p.hint(self.nid(ino), offset, size);
                }
                if let Some(f) = &self.fill {
                    if Access::of(offset, size) == Access::Random {
                        f.offer(ino, self.nid(ino), offset);
                    }
                }
            }
            _ => {}
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            return reply.error(Errno::ENOSYS);
        }
        match self.guard("opendir", || match self.inode(ino)?.kind() {
            Kind::Dir => Ok(()),
            _ => Err(Errno::ENOTDIR),
        }) {
            Ok(()) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.guard("readdir", || {
            let dir = self.inode(ino)?;
            for e in dir.entries_from(offset).ok_or(Errno::ENOTDIR)? {
                let e = e.map_err(|_| Errno::EIO)?;
                let ino = INodeNo(self.st_ino(e.nid));
                if reply.add(
                    ino,
                    e.next_cookie,
                    ftype(e.file_type),
                    OsStr::from_bytes(e.name),
                ) {
                    break;
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.guard("readdirplus", || {
            let dir = self.inode(ino)?;
            for e in dir.entries_from(offset).ok_or(Errno::ENOTDIR)? {
                let e = e.map_err(|_| Errno::EIO)?;
                let child = self.reader.descriptor().inode(e.nid).ok_or(Errno::EIO)?;
                // The node id sent is `attr.ino`; the kernel links no node for `.` and `..`, so
                // the root may appear there with its `st_ino`.
                let attr = self.attr(&child);
                if reply.add(
                    attr.ino,
                    e.next_cookie,
                    OsStr::from_bytes(e.name),
                    &TTL,
                    &attr,
                    Generation(0),
                ) {
                    break;
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let d = self.reader.descriptor();
        let bsize = d.block_size();
        reply.statfs(
            d.total_blocks(),
            0,
            0,
            u64::MAX,
            u64::MAX - d.inos(),
            bsize,
            255,
            bsize,
        );
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // FUSE caches no xattrs, and `ls -l` asks for `security.selinux` of every entry: an
        // image without any makes the kernel stop asking (getxattr then fails with EOPNOTSUPP,
        // where the kernel's EROFS says ENODATA; listxattr still answers, with empty lists).
        if !self.reader.descriptor().has_xattrs() {
            return reply.error(Errno::ENOSYS);
        }
        let r = self.guard("getxattr", || {
            let name = name.as_bytes();
            if name.starts_with(b"trusted.") && req.uid() != 0 {
                return Err(Errno::ENODATA);
            }
            Ok(self.inode(ino)?.xattr(name).ok_or(Errno::ENODATA)?.to_vec())
        });
        reply_xattr(reply, size, r);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.guard("listxattr", || {
            let mut out = Vec::new();
            for x in self.inode(ino)?.xattrs() {
                let x = x.map_err(|_| Errno::EIO)?;
                // As the kernel: trusted.* is listed only for the privileged.
                if x.prefix == b"trusted." && req.uid() != 0 {
                    continue;
                }
                out.extend_from_slice(x.prefix);
                out.extend_from_slice(x.suffix);
                out.push(0);
            }
            Ok(out)
        });
        reply_xattr(reply, size, r);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions).
        reply.ok();
    }
}
