//! A writer for the "newc" cpio format, the one the kernel unpacks into its initial rootfs
//! (Linux `Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Every header is 110 ASCII bytes: the magic `070701` and thirteen 8-digit hex fields, then
//! the NUL-terminated name padded to a multiple of 4, then the data padded to a multiple of 4.
//! The archive ends with an entry named `TRAILER!!!`. Fields the kernel ignores for our use
//! (device numbers of the archive's origin, checksum) are written as zero, and inode numbers
//! are assigned in write order, so the same entries always give the same bytes.

use std::io::{self, Write};

/// Magic of a newc header without checksum.
const MAGIC: &[u8; 6] = b"070701";
/// Size of a newc header in bytes.
const HEADER_LEN: usize = 110;
/// Name of the end-of-archive entry.
const TRAILER: &str = "TRAILER!!!";

/// What a cpio entry is, with the payload its kind needs.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// A directory.
    Dir,
    /// A regular file with its whole content.
    File(&'a [u8]),
    /// A symbolic link with its target.
    Symlink(&'a [u8]),
    /// A character device.
    CharDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

/// The errors of [`Writer`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying writer failed.
    #[error("cannot write the cpio archive: {0}")]
    Io(#[from] io::Error),
    /// A name or a file does not fit the format's 32-bit fields.
    #[error("cpio entry {name:?} is too large for the newc format ({len} bytes)")]
    TooLarge {
        /// The entry's name.
        name: String,
        /// The offending length.
        len: u64,
    },
    /// A name that the kernel would not unpack as meant.
    #[error("cpio entry name {0:?} is not a relative path without `.`, `..` or empty parts")]
    BadName(String),
}

impl chunkfs_format::Classify for Error {
    fn class(&self) -> chunkfs_format::ErrorClass {
        match self {
            Self::Io(e) => e.class(),
            Self::TooLarge { .. } => chunkfs_format::ErrorClass::Unsupported,
            Self::BadName(_) => chunkfs_format::ErrorClass::Usage,
        }
    }
}

/// Writes newc entries to `W`, tracking the offset for padding.
pub struct Writer<W: Write> {
    out: W,
    offset: u64,
    next_ino: u32,
}

impl<W: Write> Writer<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            offset: 0,
            next_ino: 1,
        }
    }

    /// Appends one entry. `name` is relative to the archive's root (`bin/sh`, no leading `/`);
    /// `perm` holds the permission bits (the file type comes from `kind`); `mtime` is in
    /// seconds since the epoch. Owner is root.
    pub fn append(
        &mut self,
        name: &str,
        perm: u32,
        mtime: u32,
        kind: Kind<'_>,
    ) -> Result<(), Error> {
        check_name(name)?;
        let (type_bits, data, rdev) = match kind {
            Kind::Dir => (libc::S_IFDIR, &[][..], (0, 0)),
            Kind::File(data) => (libc::S_IFREG, data, (0, 0)),
            Kind::Symlink(target) => (libc::S_IFLNK, target, (0, 0)),
            Kind::CharDev { major, minor } => (libc::S_IFCHR, &[][..], (major, minor)),
        };
        let nlink = if matches!(kind, Kind::Dir) { 2 } else { 1 };
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        self.entry(
            name,
            ino,
            type_bits | (perm & 0o7777),
            nlink,
            mtime,
            data,
            rdev,
        )
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> Result<W, Error> {
        self.entry(TRAILER, 0, 0, 1, 0, &[], (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        mtime: u32,
        data: &[u8],
        (rdev_major, rdev_minor): (u32, u32),
    ) -> Result<(), Error> {
        let size_field = u32::try_from(data.len()).map_err(|_| Error::TooLarge {
            name: name.to_owned(),
            len: data.len() as u64,
        })?;
        self.header(
            name,
            ino,
            mode,
            nlink,
            mtime,
            size_field,
            (rdev_major, rdev_minor),
        )?;
        self.put(data)?;
        self.pad()
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        mtime: u32,
        size_field: u32,
        (rdev_major, rdev_minor): (u32, u32),
    ) -> Result<(), Error> {
        let name_len = name.len() + 1;
        let name_field = u32::try_from(name_len).map_err(|_| Error::TooLarge {
            name: name.to_owned(),
            len: name_len as u64,
        })?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        for field in [
            ino, mode, 0, 0, nlink, mtime, size_field, 0, 0, rdev_major, rdev_minor, name_field, 0,
        ] {
            header.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.put(&header)?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    /// Appends a regular file of `len` bytes read from `data`, without holding it in memory
    /// (for an embedded image). Fails if `data` ends early.
    pub fn append_reader(
        &mut self,
        name: &str,
        perm: u32,
        mtime: u32,
        len: u64,
        data: &mut impl io::Read,
    ) -> Result<(), Error> {
        check_name(name)?;
        let size_field = u32::try_from(len).map_err(|_| Error::TooLarge {
            name: name.to_owned(),
            len,
        })?;
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        self.header(
            name,
            ino,
            libc::S_IFREG | (perm & 0o7777),
            1,
            mtime,
            size_field,
            (0, 0),
        )?;
        let copied = io::copy(&mut io::Read::take(&mut *data, len), &mut self.out)?;
        self.offset += copied;
        if copied != len {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: expected {len} bytes, got {copied}"),
            )));
        }
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<(), Error> {
        let fill = (4 - self.offset % 4) % 4;
        self.put(&[0; 3][..fill as usize])
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    let bad = name.is_empty()
        || name == TRAILER
        || name.contains('\0')
        || name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(Error::BadName(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.append("bin", 0o755, 7, Kind::Dir).unwrap();
        w.append("bin/hello", 0o755, 7, Kind::File(b"hello world\n"))
            .unwrap();
        w.append("bin/sh", 0o777, 7, Kind::Symlink(b"hello"))
            .unwrap();
        w.append("dev", 0o755, 7, Kind::Dir).unwrap();
        w.append(
            "dev/console",
            0o600,
            7,
            Kind::CharDev { major: 5, minor: 1 },
        )
        .unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn layout_is_padded_and_ends_with_trailer() {
        let bytes = sample();
        assert_eq!(&bytes[..6], MAGIC);
        // 110-byte header, "bin\0", then 2 bytes of padding to offset 116.
        assert_eq!(&bytes[110..114], b"bin\0");
        assert_eq!(&bytes[114..116], &[0, 0]);
        assert_eq!(&bytes[116..122], MAGIC);
        assert_eq!(bytes.len() % 4, 0);
        let tail = String::from_utf8_lossy(&bytes[bytes.len() - 16..]);
        assert!(tail.contains("TRAILER!!!"), "{tail:?}");
    }

    #[test]
    fn same_entries_same_bytes() {
        assert_eq!(sample(), sample());
    }

    #[test]
    fn rejects_bad_names() {
        let mut w = Writer::new(Vec::new());
        for name in ["", "/abs", "a//b", "a/../b", "./a", "TRAILER!!!", "a/"] {
            assert!(
                matches!(w.append(name, 0o644, 0, Kind::Dir), Err(Error::BadName(_))),
                "{name}"
            );
        }
    }

    /// GNU cpio is the independent reader: it must list exactly what was written.
    #[test]
    fn gnu_cpio_reads_it() {
        let Ok(mut child) = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        else {
            eprintln!("skipping: cpio(1) is not installed");
            return;
        };
        child.stdin.take().unwrap().write_all(&sample()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 5, "{listing}");
        assert!(
            lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" bin"),
            "{listing}"
        );
        assert!(
            lines[1].starts_with("-rwxr-xr-x") && lines[1].contains(" 12 "),
            "{listing}"
        );
        assert!(
            lines[2].starts_with("lrwxrwxrwx") && lines[2].ends_with("bin/sh -> hello"),
            "{listing}"
        );
        assert!(
            lines[4].starts_with("crw-------") && lines[4].contains("5,"),
            "{listing}"
        );
    }
}
