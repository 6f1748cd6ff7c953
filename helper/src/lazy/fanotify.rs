//! The raw kernel interface of the lazy kernel path: a fanotify group of the pre-content class
//! (Linux 6.14+), inode marks for `FAN_PRE_ACCESS`, events parsed from the bytes the kernel
//! returns, responses, the capability probe, and the one EROFS ioctl the filler needs
//! (`FS_IOC_GETFSSYSFSPATH`, to drop a mount's cached compressed pages).
//!
//! The only module of [`crate::lazy`] with `unsafe`: each system call passes live, correctly
//! sized values, and every descriptor an event carries is owned exactly once. Event buffers
//! are parsed without trusting a length: every record is bounds-checked before it is read.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// The constants libc 0.2 does not define, from include/uapi/linux/fanotify.h (Linux 6.14+).
/// Pre-content access hook: a read (or write) of a marked file is about to happen.
pub const FAN_PRE_ACCESS: u64 = 0x0010_0000;
/// Info record type of the accessed byte range (`struct fanotify_event_info_range`).
const FAN_EVENT_INFO_TYPE_RANGE: u8 = 6;
/// `FAN_DENY_ERRNO(err)` = `FAN_DENY | (err & FAN_ERRNO_MASK) << FAN_ERRNO_SHIFT`.
const FAN_ERRNO_SHIFT: u32 = 24;
const FAN_ERRNO_MASK: u32 = 0xff;
/// `FANOTIFY_METADATA_VERSION` of every kernel since 4.20.
const METADATA_VERSION: u8 = 3;
/// `sizeof(struct fanotify_event_metadata)`.
const METADATA_LEN: usize = 24;
/// `sizeof(struct fanotify_event_info_header)`.
const INFO_HEADER_LEN: usize = 4;
/// `sizeof(struct fanotify_event_info_range)`.
const INFO_RANGE_LEN: usize = 24;
/// Permission events: the kernel waits for an answer to each.
const PERMISSION_EVENTS: u64 =
    libc::FAN_OPEN_PERM | libc::FAN_ACCESS_PERM | libc::FAN_OPEN_EXEC_PERM | FAN_PRE_ACCESS;

// include/uapi/linux/fs.h: `_IOR(0x15, 1, struct fs_sysfs_path)`, a 129-byte struct
// (`__u8 len; __u8 name[128]`), Linux 6.9+ (EROFS answers it since 6.10).
const FS_IOC_GETFSSYSFSPATH: libc::c_ulong = 0x8081_1501;

/// An answer to a permission event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// The access proceeds.
    Allow,
    /// The access fails with this errno (the kernel accepts EIO, ENOSPC, EBUSY, EAGAIN for
    /// pre-content events; EROFS reports EIO to its reader either way).
    Deny(i32),
}

impl Response {
    /// The `response` field of `struct fanotify_response`.
    pub fn encode(self) -> u32 {
        match self {
            Response::Allow => libc::FAN_ALLOW,
            Response::Deny(errno) => {
                libc::FAN_DENY | ((errno as u32 & FAN_ERRNO_MASK) << FAN_ERRNO_SHIFT)
            }
        }
    }
}

/// One event as the kernel reported it, before its descriptor is owned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEvent {
    /// The event mask (`FAN_PRE_ACCESS`, `FAN_Q_OVERFLOW`, ...).
    pub mask: u64,
    /// The descriptor the kernel opened for the event (negative: none).
    pub fd: RawFd,
    /// The process that caused it.
    pub pid: i32,
    /// The accessed range, `(offset, count)`, when the event carries one.
    pub range: Option<(u64, u64)>,
}

/// Whether an event of `mask` waits for an answer.
pub fn is_permission(mask: u64) -> bool {
    mask & PERMISSION_EVENTS != 0
}

impl RawEvent {
    /// Whether the kernel waits for an answer.
    pub fn is_permission(&self) -> bool {
        is_permission(self.mask)
    }
}

/// A malformed event buffer: the kernel never writes one, but the parser does not trust it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes left than the fixed metadata.
    #[error("fanotify event truncated: {left} bytes left, {METADATA_LEN} needed")]
    Truncated {
        /// Bytes left in the buffer.
        left: usize,
    },
    /// A metadata version this code does not know.
    #[error("fanotify event metadata version {0}, expected {METADATA_VERSION}")]
    Version(u8),
    /// `event_len` or `metadata_len` out of bounds.
    #[error("fanotify event length {event_len} (metadata {metadata_len}) with {left} bytes left")]
    Length {
        /// The event's length field.
        event_len: usize,
        /// The metadata length field.
        metadata_len: usize,
        /// Bytes left in the buffer.
        left: usize,
    },
    /// An info record whose length is out of bounds.
    #[error("fanotify info record of type {info_type} with length {len} ({left} bytes left)")]
    Info {
        /// The record's type.
        info_type: u8,
        /// Its length field.
        len: usize,
        /// Bytes left in the event.
        left: usize,
    },
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Parses the events of one `read(2)` of a fanotify group: each complete event, or the first
/// error (after which nothing more of the buffer can be trusted).
pub fn parse_events(mut buf: &[u8]) -> Vec<Result<RawEvent, ParseError>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        match parse_one(buf) {
            Ok((event, len)) => {
                out.push(Ok(event));
                buf = buf.get(len..).unwrap_or_default();
            }
            Err(e) => {
                out.push(Err(e));
                break;
            }
        }
    }
    out
}

/// One event at the start of `buf` and its length.
fn parse_one(buf: &[u8]) -> Result<(RawEvent, usize), ParseError> {
    let left = buf.len();
    if left < METADATA_LEN {
        return Err(ParseError::Truncated { left });
    }
    let truncated = ParseError::Truncated { left };
    let event_len = u32_at(buf, 0).ok_or(truncated)? as usize;
    let version = *buf.get(4).ok_or(truncated)?;
    let metadata_len = usize::from(u16_at(buf, 6).ok_or(truncated)?);
    if version != METADATA_VERSION {
        return Err(ParseError::Version(version));
    }
    if event_len > left || metadata_len < METADATA_LEN || metadata_len > event_len {
        return Err(ParseError::Length {
            event_len,
            metadata_len,
            left,
        });
    }
    let mask = u64_at(buf, 8).ok_or(truncated)?;
    let fd = u32_at(buf, 16).ok_or(truncated)? as i32;
    let pid = u32_at(buf, 20).ok_or(truncated)? as i32;
    let mut range = None;
    let mut info = buf.get(metadata_len..event_len).unwrap_or_default();
    while !info.is_empty() {
        let bad = |info_type: u8, len: usize, left: usize| ParseError::Info {
            info_type,
            len,
            left,
        };
        let left = info.len();
        if left < INFO_HEADER_LEN {
            return Err(bad(0, 0, left));
        }
        let info_type = *info.first().ok_or(bad(0, 0, left))?;
        let len = usize::from(u16_at(info, 2).ok_or(bad(info_type, 0, left))?);
        if len < INFO_HEADER_LEN || len > left {
            return Err(bad(info_type, len, left));
        }
        if info_type == FAN_EVENT_INFO_TYPE_RANGE {
            if len < INFO_RANGE_LEN {
                return Err(bad(info_type, len, left));
            }
            let offset = u64_at(info, 8).ok_or(bad(info_type, len, left))?;
            let count = u64_at(info, 16).ok_or(bad(info_type, len, left))?;
            range = Some((offset, count));
        }
        info = info.get(len..).unwrap_or_default();
    }
    Ok((
        RawEvent {
            mask,
            fd,
            pid,
            range,
        },
        event_len,
    ))
}

/// An event whose descriptor this process now owns (closed when dropped: answer first).
#[derive(Debug)]
pub struct Event {
    /// The event mask.
    pub mask: u64,
    /// The descriptor the kernel opened for it: reads and writes through it raise no events.
    pub fd: Option<OwnedFd>,
    /// The process that caused it.
    pub pid: i32,
    /// The accessed range, `(offset, count)`.
    pub range: Option<(u64, u64)>,
}

/// A fanotify group of the pre-content class. Closing it answers every event still pending
/// with "allow": the readers then read holes as zeros (docs/lazy.md, rule 4).
#[derive(Debug)]
pub struct Group {
    fd: OwnedFd,
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

impl Group {
    /// `fanotify_init(FAN_CLASS_PRE_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDWR |
    /// O_LARGEFILE | O_CLOEXEC)`: event descriptors are opened read-write so the filler can
    /// write the missing bytes through them.
    pub fn new() -> io::Result<Group> {
        let flags = libc::FAN_CLASS_PRE_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
        let event_flags = (libc::O_RDWR | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint;
        // SAFETY: plain integer arguments.
        let fd = unsafe { libc::fanotify_init(flags, event_flags) };
        if fd < 0 {
            return Err(last_error());
        }
        // SAFETY: the kernel just returned this descriptor; nobody else owns it.
        Ok(Group {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn mark_raw(
        &self,
        flags: libc::c_uint,
        dirfd: RawFd,
        path: Option<&CString>,
    ) -> io::Result<()> {
        let path_ptr = path.map_or(std::ptr::null(), |p| p.as_ptr());
        // SAFETY: `path_ptr` is NULL (the object is `dirfd` itself) or a NUL-terminated string
        // alive for the call; the other arguments are integers.
        let r = unsafe {
            libc::fanotify_mark(self.fd.as_raw_fd(), flags, FAN_PRE_ACCESS, dirfd, path_ptr)
        };
        if r < 0 { Err(last_error()) } else { Ok(()) }
    }

    /// Adds an inode mark for `FAN_PRE_ACCESS` on the open file `file`. Only descriptors
    /// opened *after* this raise events: the kernel decides at open time (rule 2).
    pub fn mark(&self, file: BorrowedFd<'_>) -> io::Result<()> {
        self.mark_raw(libc::FAN_MARK_ADD, file.as_raw_fd(), None)
    }

    /// Adds an inode mark for `FAN_PRE_ACCESS` on `path` (the capability probe).
    pub fn mark_path(&self, path: &Path) -> io::Result<()> {
        self.mark_raw(libc::FAN_MARK_ADD, libc::AT_FDCWD, Some(&cpath(path)?))
    }

    /// Removes the mark of `file`: its reads raise no more events (rule 3).
    pub fn unmark(&self, file: BorrowedFd<'_>) -> io::Result<()> {
        self.mark_raw(libc::FAN_MARK_REMOVE, file.as_raw_fd(), None)
    }

    /// Reads the queued events into `buf` (at least 4 KiB) and takes ownership of their
    /// descriptors. `Ok(empty)` when nothing is queued (the group is non-blocking). A
    /// malformed record ends the batch with its error; the events before it are returned.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<(Vec<Event>, Option<ParseError>)> {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which is live and
        // writable for the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = last_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok((Vec::new(), None)),
                _ => Err(e),
            };
        }
        let n = usize::try_from(n).unwrap_or(0).min(buf.len());
        let mut events = Vec::new();
        let mut error = None;
        for parsed in parse_events(buf.get(..n).unwrap_or_default()) {
            match parsed {
                Ok(raw) => {
                    let fd = (raw.fd >= 0).then(|| {
                        // SAFETY: the kernel installed this descriptor in our table for this
                        // event, and each event of the buffer is parsed (and owned) once.
                        unsafe { OwnedFd::from_raw_fd(raw.fd) }
                    });
                    events.push(Event {
                        mask: raw.mask,
                        fd,
                        pid: raw.pid,
                        range: raw.range,
                    });
                }
                Err(e) => error = Some(e),
            }
        }
        Ok((events, error))
    }

    /// Answers the permission event whose descriptor is `event_fd` (still open).
    pub fn respond(&self, event_fd: RawFd, response: Response) -> io::Result<()> {
        let r = libc::fanotify_response {
            fd: event_fd,
            response: response.encode(),
        };
        let size = std::mem::size_of::<libc::fanotify_response>();
        // SAFETY: `r` is a fully initialised `struct fanotify_response` of `size` bytes that
        // outlives the call; the kernel only reads it.
        let n = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&r as *const libc::fanotify_response).cast(),
                size,
            )
        };
        if n < 0 {
            Err(last_error())
        } else if usize::try_from(n).ok() != Some(size) {
            Err(io::Error::other("short write of a fanotify response"))
        } else {
            Ok(())
        }
    }
}

impl AsFd for Group {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Why the lazy kernel path cannot be used here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Why {
    /// fanotify groups of the permission classes need `CAP_SYS_ADMIN`.
    #[error("not root: fanotify permission events need CAP_SYS_ADMIN")]
    NotRoot,
    /// The kernel was built without fanotify.
    #[error("this kernel has no fanotify (CONFIG_FANOTIFY)")]
    NoFanotify,
    /// The kernel has no permission events (CONFIG_FANOTIFY_ACCESS_PERMISSIONS unset).
    #[error("this kernel has no fanotify permission events (CONFIG_FANOTIFY_ACCESS_PERMISSIONS)")]
    NoPermissionEvents,
    /// `FAN_PRE_ACCESS` is unknown: before Linux 6.14.
    #[error("this kernel has no fanotify pre-content events (FAN_PRE_ACCESS, Linux 6.14+)")]
    KernelTooOld,
    /// The filesystem does not allow pre-content marks (tmpfs, for example).
    #[error(
        "{dir}: this filesystem does not allow fanotify pre-content marks (tmpfs does not; ext4, xfs, btrfs do)"
    )]
    FilesystemRefuses {
        /// The directory probed.
        dir: String,
    },
    /// Something else failed.
    #[error("{what}: {source}")]
    Other {
        /// The step.
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl chunkfs_format::Classify for Why {
    /// The failure's class: everything but an I/O error means "not supported here".
    fn class(&self) -> chunkfs_format::ErrorClass {
        match self {
            Why::Other { .. } => chunkfs_format::ErrorClass::Io,
            _ => chunkfs_format::ErrorClass::Unsupported,
        }
    }
}

/// Whether a filler can mark files in directory `dir` (where the pack files live): root, a
/// kernel with pre-content events, a filesystem that allows them. Marks `dir` itself for a
/// moment (a directory mark without `FAN_EVENT_ON_CHILD` affects no file in it).
pub fn supported(dir: &Path) -> Result<(), Why> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Why::NotRoot);
    }
    let group = Group::new().map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSYS) => Why::NoFanotify,
        Some(libc::EINVAL) => Why::NoPermissionEvents,
        Some(libc::EPERM) => Why::NotRoot,
        _ => Why::Other {
            what: "fanotify_init".into(),
            source: e,
        },
    })?;
    group.mark_path(dir).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => Why::KernelTooOld,
        Some(libc::EOPNOTSUPP) => Why::FilesystemRefuses {
            dir: dir.display().to_string(),
        },
        _ => Why::Other {
            what: format!("fanotify_mark {}", dir.display()),
            source: e,
        },
    })
}

/// The filesystem's directory under `/sys/fs` (e.g. `erofs/erofs-142`) from
/// `FS_IOC_GETFSSYSFSPATH` on any open file or directory of it.
pub fn sysfs_path(of: BorrowedFd<'_>) -> io::Result<String> {
    let mut buf = [0u8; 129];
    // SAFETY: the ioctl writes at most `sizeof(struct fs_sysfs_path)` = 129 bytes into the
    // live 129-byte buffer.
    let r = unsafe { libc::ioctl(of.as_raw_fd(), FS_IOC_GETFSSYSFSPATH, buf.as_mut_ptr()) };
    if r < 0 {
        return Err(last_error());
    }
    let len = usize::from(buf[0]).min(128);
    let name = buf.get(1..1 + len).unwrap_or_default();
    let name = std::str::from_utf8(name)
        .map_err(|_| io::Error::other("FS_IOC_GETFSSYSFSPATH: a name that is not UTF-8"))?;
    if name.is_empty() || name.contains("..") || name.starts_with('/') {
        return Err(io::Error::other(format!(
            "FS_IOC_GETFSSYSFSPATH: unexpected name {name:?}"
        )));
    }
    Ok(name.to_owned())
}

impl fmt::Display for RawEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mask {:#x} pid {} fd {}", self.mask, self.pid, self.fd)?;
        if let Some((o, c)) = self.range {
            write!(f, " range {o}+{c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn metadata(event_len: u32, metadata_len: u16, mask: u64, fd: i32, pid: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&event_len.to_ne_bytes());
        b.push(METADATA_VERSION);
        b.push(0);
        b.extend_from_slice(&metadata_len.to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&fd.to_ne_bytes());
        b.extend_from_slice(&pid.to_ne_bytes());
        b
    }

    fn range_record(offset: u64, count: u64) -> Vec<u8> {
        let mut b = vec![FAN_EVENT_INFO_TYPE_RANGE, 0];
        b.extend_from_slice(&(INFO_RANGE_LEN as u16).to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&offset.to_ne_bytes());
        b.extend_from_slice(&count.to_ne_bytes());
        b
    }

    fn event(mask: u64, fd: i32, pid: i32, range: Option<(u64, u64)>) -> Vec<u8> {
        let info = range.map(|(o, c)| range_record(o, c)).unwrap_or_default();
        let len = (METADATA_LEN + info.len()) as u32;
        let mut b = metadata(len, METADATA_LEN as u16, mask, fd, pid);
        b.extend(info);
        b
    }

    #[test]
    fn deny_errno_encoding_matches_the_uapi_macro() {
        // FAN_DENY_ERRNO(EIO) = 0x02 | 5 << 24
        assert_eq!(Response::Deny(libc::EIO).encode(), 0x0500_0002);
        assert_eq!(Response::Allow.encode(), 1);
    }

    #[test]
    fn events_with_and_without_ranges() {
        let mut buf = event(FAN_PRE_ACCESS, 7, 42, Some((4096, 131072)));
        buf.extend(event(FAN_PRE_ACCESS, 8, 43, None));
        // An unknown info record is skipped.
        let mut other = vec![99u8, 0];
        other.extend_from_slice(&8u16.to_ne_bytes());
        other.extend_from_slice(&[0; 4]);
        let mut third = metadata(
            (METADATA_LEN + other.len() + INFO_RANGE_LEN) as u32,
            METADATA_LEN as u16,
            FAN_PRE_ACCESS,
            9,
            44,
        );
        third.extend(other);
        third.extend(range_record(1, 2));
        buf.extend(third);
        let events: Vec<RawEvent> = parse_events(&buf).into_iter().map(|e| e.unwrap()).collect();
        assert_eq!(
            events,
            vec![
                RawEvent {
                    mask: FAN_PRE_ACCESS,
                    fd: 7,
                    pid: 42,
                    range: Some((4096, 131072))
                },
                RawEvent {
                    mask: FAN_PRE_ACCESS,
                    fd: 8,
                    pid: 43,
                    range: None
                },
                RawEvent {
                    mask: FAN_PRE_ACCESS,
                    fd: 9,
                    pid: 44,
                    range: Some((1, 2))
                },
            ]
        );
        assert!(events[0].is_permission());
        assert!(
            !RawEvent {
                mask: libc::FAN_Q_OVERFLOW,
                fd: -1,
                pid: 0,
                range: None
            }
            .is_permission()
        );
    }

    #[test]
    fn hostile_lengths_are_errors_not_panics() {
        let good = event(FAN_PRE_ACCESS, 7, 42, Some((0, 1)));
        // Truncated anywhere.
        for cut in 1..good.len() {
            let r = parse_events(&good[..cut]);
            assert!(r.last().unwrap().is_err(), "cut at {cut}");
        }
        // event_len beyond the buffer, below the metadata, zero.
        for event_len in [0u32, 8, 23, good.len() as u32 + 1, u32::MAX] {
            let mut b = good.clone();
            b[..4].copy_from_slice(&event_len.to_ne_bytes());
            assert!(parse_events(&b)[0].is_err(), "event_len {event_len}");
        }
        // metadata_len beyond event_len or below the struct.
        for metadata_len in [0u16, 23, good.len() as u16 + 1, u16::MAX] {
            let mut b = good.clone();
            b[6..8].copy_from_slice(&metadata_len.to_ne_bytes());
            assert!(parse_events(&b)[0].is_err(), "metadata_len {metadata_len}");
        }
        // Info record lengths: zero (would loop forever), short, beyond the event.
        for info_len in [0u16, 3, 8, 25, u16::MAX] {
            let mut b = good.clone();
            b[METADATA_LEN + 2..METADATA_LEN + 4].copy_from_slice(&info_len.to_ne_bytes());
            assert!(parse_events(&b)[0].is_err(), "info len {info_len}");
        }
        // A wrong version.
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(parse_events(&b)[0], Err(ParseError::Version(2)));
        // Garbage of every length never panics.
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = parse_events(&bytes);
        }
    }
}
