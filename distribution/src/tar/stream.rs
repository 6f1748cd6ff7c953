//! A bounded, streaming reader of tar archives (ustar, GNU and PAX).
//!
//! Header fields are decoded by the `tar` crate's [`tar::Header`] and PAX records by
//! [`tar::PaxExtensions`]; this module owns the framing so that it can bound every extension
//! record it buffers (GNU long names, PAX headers), apply a PAX `size` that overrides the header
//! (files of 8 GiB and more), and name the byte offset of whatever it rejects. Entry types whose
//! data the Go archive/tar reader ignores (links, directories, devices, FIFOs) carry no data
//! here either, whatever their size field says, so chunkfs reads a layer exactly as docker and
//! containerd do.

use std::io::{self, Read};

/// Largest GNU long name or long link name accepted, in bytes.
pub const LONG_NAME_MAX: u64 = 64 * 1024;
/// Largest PAX extended header (local or global) accepted, in bytes.
pub const PAX_MAX: u64 = 1 << 20;
const BLOCK: u64 = 512;

/// Why the archive could not be read.
#[derive(Debug, thiserror::Error)]
#[error("at byte {offset} of the tar stream: {problem}")]
pub struct StreamError {
    /// Offset of the header (or data) being read.
    pub offset: u64,
    /// What is wrong.
    pub problem: String,
    /// The underlying I/O error, when there is one (a decompressor's complaint, a truncated file).
    #[source]
    pub source: Option<io::Error>,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of this many bytes.
    Regular {
        /// Length of the content.
        size: u64,
    },
    /// A hard link to an earlier path.
    HardLink(Vec<u8>),
    /// A symbolic link.
    Symlink(Vec<u8>),
    /// A character device.
    Char {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    Block {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A directory.
    Dir,
    /// A FIFO.
    Fifo,
}

/// One archive member, with its extension headers applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position among the archive's members, from 0 (extension headers do not count).
    pub index: u64,
    /// Offset of the member's own header in the (decompressed) stream: a stable id of the entry.
    pub offset: u64,
    /// The path as stored (GNU long name, else PAX `path`, else ustar prefix + name).
    pub path: Vec<u8>,
    /// Type and type-specific data.
    pub kind: EntryKind,
    /// The 12 permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Nanoseconds (from a PAX `mtime`).
    pub mtime_nsec: u32,
    /// `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Extension records waiting for the member they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
    first_offset: Option<u64>,
}

/// Reads the members of a tar stream one by one.
pub struct TarStream<R> {
    r: R,
    pos: u64,
    /// Data bytes of the current member not yet consumed, and the padding after them.
    remaining: u64,
    padding: u64,
    next_index: u64,
    done: bool,
}

impl<R: Read> TarStream<R> {
    /// A reader positioned at the start of an archive.
    pub fn new(r: R) -> Self {
        Self {
            r,
            pos: 0,
            remaining: 0,
            padding: 0,
            next_index: 0,
            done: false,
        }
    }

    /// Bytes consumed from the underlying reader.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The underlying reader, e.g. to drain what follows the end-of-archive marker.
    pub fn into_inner(self) -> R {
        self.r
    }

    fn err(&self, offset: u64, problem: impl Into<String>) -> StreamError {
        StreamError {
            offset,
            problem: problem.into(),
            source: None,
        }
    }

    fn io_err(&self, offset: u64, what: &str, e: io::Error) -> StreamError {
        let problem = if e.kind() == io::ErrorKind::UnexpectedEof {
            format!("the stream ends inside {what} (truncated archive, or a size that lies)")
        } else {
            format!("cannot read {what}: {e}")
        };
        StreamError {
            offset,
            problem,
            source: Some(e),
        }
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean end of stream before the first byte.
    fn read_block(&mut self, buf: &mut [u8], what: &str) -> Result<bool, StreamError> {
        let start = self.pos;
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(self.io_err(start, what, io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => {
                    got += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(start, what, e)),
            }
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<(), StreamError> {
        let start = self.pos;
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            match self.r.read(&mut buf[..k]) {
                Ok(0) => return Err(self.io_err(start, what, io::ErrorKind::UnexpectedEof.into())),
                Ok(m) => {
                    n -= m as u64;
                    self.pos += m as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(start, what, e)),
            }
        }
        Ok(())
    }

    /// Reads an extension record's data (bounded by `max`) and its padding.
    fn read_record(
        &mut self,
        size: u64,
        max: u64,
        offset: u64,
        what: &str,
    ) -> Result<Vec<u8>, StreamError> {
        if size > max {
            return Err(self.err(
                offset,
                format!("{what} of {size} bytes exceeds the limit of {max}"),
            ));
        }
        let mut data = vec![0u8; size as usize];
        if size > 0 && !self.read_block(&mut data, what)? {
            return Err(self.io_err(offset, what, io::ErrorKind::UnexpectedEof.into()));
        }
        self.skip(pad(size), what)?;
        Ok(data)
    }

    /// Skips whatever is left of the current member's data.
    fn finish_current(&mut self) -> Result<(), StreamError> {
        let (rem, padding) = (self.remaining, self.padding);
        self.remaining = 0;
        self.padding = 0;
        self.skip(rem + padding, "file data")
    }

    /// The next member, or `None` at the end of the archive. Unread data of the previous member
    /// is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, StreamError> {
        if self.done {
            return Ok(None);
        }
        self.finish_current()?;
        let mut pending = Pending::default();
        loop {
            let offset = self.pos;
            let mut block = [0u8; BLOCK as usize];
            if !self.read_block(&mut block, "a header")? {
                if pending.first_offset.is_some() {
                    return Err(self.err(
                        offset,
                        "the archive ends after extension headers, before the member they describe",
                    ));
                }
                // A missing end-of-archive marker is tolerated, as Go's archive/tar does.
                self.done = true;
                return Ok(None);
            }
            if block.iter().all(|&b| b == 0) {
                if pending.first_offset.is_some() {
                    return Err(self.err(
                        offset,
                        "end-of-archive marker right after extension headers",
                    ));
                }
                self.done = true;
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            check_checksum(&block).map_err(|p| self.err(offset, p))?;
            let size = header
                .entry_size()
                .map_err(|e| self.err(offset, format!("bad size field: {e}")))?;
            let ty = header.entry_type().as_byte();
            match ty {
                b'L' | b'K' => {
                    let what = if ty == b'L' {
                        "GNU long name"
                    } else {
                        "GNU long link name"
                    };
                    let mut data = self.read_record(size, LONG_NAME_MAX, offset, what)?;
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    let slot = if ty == b'L' {
                        &mut pending.long_name
                    } else {
                        &mut pending.long_link
                    };
                    if slot.replace(data).is_some() {
                        return Err(self.err(offset, format!("two {what} headers for one member")));
                    }
                    pending.first_offset.get_or_insert(offset);
                }
                b'x' | b'X' => {
                    let data = self.read_record(size, PAX_MAX, offset, "PAX extended header")?;
                    if pending.pax.replace(data).is_some() {
                        return Err(self.err(offset, "two PAX extended headers for one member"));
                    }
                    pending.first_offset.get_or_insert(offset);
                }
                b'g' => {
                    // Global PAX headers (e.g. git-archive's comment) carry nothing chunkfs uses.
                    self.read_record(size, PAX_MAX, offset, "PAX global header")?;
                }
                _ => return self.member(header, offset, size, pending).map(Some),
            }
        }
    }

    fn member(
        &mut self,
        header: &tar::Header,
        offset: u64,
        header_size: u64,
        pending: Pending,
    ) -> Result<Entry, StreamError> {
        let ty = header.entry_type().as_byte();
        // A GNU long name wins over a PAX path, as in Go's archive/tar and the tar crate.
        let (has_long_name, has_long_link) =
            (pending.long_name.is_some(), pending.long_link.is_some());
        let mut path = pending
            .long_name
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let mut link = pending
            .long_link
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let old = header.as_old();
        // Empty numeric fields read as 0, as in Go's archive/tar.
        let field = |raw: &[u8], v: io::Result<u64>, what: &str| -> Result<u64, StreamError> {
            if raw.iter().all(|&b| b == 0 || b == b' ') {
                return Ok(0);
            }
            v.map_err(|e| self.err(offset, format!("bad {what} field: {e}")))
        };
        let mode = field(&old.mode, header.mode().map(u64::from), "mode")? as u32 & 0o7777;
        let mut uid = field(&old.uid, header.uid(), "uid")?;
        let mut gid = field(&old.gid, header.gid(), "gid")?;
        let mtime = field(&old.mtime, header.mtime(), "mtime")?;
        let mut mtime_sec =
            i64::try_from(mtime).map_err(|_| self.err(offset, "mtime out of range"))?;
        let mut mtime_nsec = 0;
        let mut size = header_size;
        let mut xattrs = Vec::new();
        if let Some(pax) = &pending.pax {
            for rec in tar::PaxExtensions::new(pax) {
                let rec =
                    rec.map_err(|e| self.err(offset, format!("malformed PAX record: {e}")))?;
                let (key, value) = (rec.key_bytes(), rec.value_bytes());
                let num = |what: &str| -> Result<u64, StreamError> {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| {
                            self.err(
                                offset,
                                format!("bad PAX {what} {:?}", String::from_utf8_lossy(value)),
                            )
                        })
                };
                match key {
                    b"path" if !has_long_name => path = value.to_vec(),
                    b"linkpath" if !has_long_link => link = Some(value.to_vec()),
                    b"size" => size = num("size")?,
                    b"uid" => uid = num("uid")?,
                    b"gid" => gid = num("gid")?,
                    b"mtime" => {
                        (mtime_sec, mtime_nsec) = parse_pax_time(value).ok_or_else(|| {
                            self.err(
                                offset,
                                format!("bad PAX mtime {:?}", String::from_utf8_lossy(value)),
                            )
                        })?
                    }
                    _ if key.starts_with(b"SCHILY.xattr.") => {
                        xattrs.push((key[b"SCHILY.xattr.".len()..].to_vec(), value.to_vec()))
                    }
                    _ if key.starts_with(b"GNU.sparse.") => {
                        return Err(self.err(offset, "GNU sparse files are not supported"));
                    }
                    _ => {}
                }
            }
        }
        let uid = u32::try_from(uid)
            .map_err(|_| self.err(offset, format!("uid {uid} does not fit in 32 bits")))?;
        let gid = u32::try_from(gid)
            .map_err(|_| self.err(offset, format!("gid {gid} does not fit in 32 bits")))?;
        let dev = |h: &tar::Header| -> Result<(u32, u32), StreamError> {
            let major = h
                .device_major()
                .map_err(|e| self.err(offset, format!("bad device major: {e}")))?
                .unwrap_or(0);
            let minor = h
                .device_minor()
                .map_err(|e| self.err(offset, format!("bad device minor: {e}")))?
                .unwrap_or(0);
            Ok((major, minor))
        };
        let need_link = |link: Option<Vec<u8>>| {
            link.filter(|l| !l.is_empty())
                .ok_or_else(|| self.err(offset, "link entry without a target"))
        };
        let kind = match ty {
            b'0' | b'\0' | b'7' if ty == b'\0' && path.ends_with(b"/") => EntryKind::Dir,
            b'0' | b'\0' | b'7' => EntryKind::Regular { size },
            b'1' => EntryKind::HardLink(need_link(link)?),
            b'2' => EntryKind::Symlink(need_link(link)?),
            b'3' => {
                let (major, minor) = dev(header)?;
                EntryKind::Char { major, minor }
            }
            b'4' => {
                let (major, minor) = dev(header)?;
                EntryKind::Block { major, minor }
            }
            b'5' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            b'S' => return Err(self.err(offset, "GNU sparse files are not supported")),
            other => {
                return Err(self.err(
                    offset,
                    format!("unsupported entry type {:?}", other as char),
                ));
            }
        };
        // Go's archive/tar gives header-only types no data; so do we.
        let data_len = if matches!(kind, EntryKind::Regular { .. }) {
            size
        } else {
            0
        };
        self.remaining = data_len;
        self.padding = pad(data_len);
        if path.is_empty() {
            return Err(self.err(offset, "entry with an empty path"));
        }
        let index = self.next_index;
        self.next_index += 1;
        Ok(Entry {
            index,
            offset,
            path,
            kind,
            mode,
            uid,
            gid,
            mtime_sec,
            mtime_nsec,
            xattrs,
        })
    }

    /// Reads the current member's data; returns 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let k = self.remaining.min(buf.len() as u64) as usize;
        let start = self.pos;
        loop {
            match self.r.read(&mut buf[..k]) {
                Ok(0) => {
                    return Err(self.io_err(
                        start,
                        "file data",
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                Ok(n) => {
                    self.remaining -= n as u64;
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(start, "file data", e)),
            }
        }
    }

    /// The current member's data as a reader; errors carry the [`StreamError`] inside.
    pub fn data(&mut self) -> DataReader<'_, R> {
        DataReader { stream: self }
    }
}

/// Reads the current member's data.
pub struct DataReader<'a, R> {
    stream: &'a mut TarStream<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read_data(buf).map_err(io::Error::other)
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Checks the header checksum (unsigned, or the signed sum some old writers used).
fn check_checksum(block: &[u8; BLOCK as usize]) -> Result<(), String> {
    let field = &block[148..156];
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|b| *b != b' ')
        .collect();
    let stored = std::str::from_utf8(&text)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 8).ok())
        .ok_or("header checksum field is not octal (not a tar archive?)")?;
    let mut unsigned = 0u32;
    let mut signed = 0i32;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i32::from(b as i8);
    }
    if stored == unsigned || i64::from(stored) == i64::from(signed) {
        Ok(())
    } else {
        Err(format!(
            "header checksum mismatch (stored {stored}, computed {unsigned}): corrupt or not a tar archive"
        ))
    }
}

/// Parses a PAX time: `[-]seconds[.fraction]`.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nsec = 0u32;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nsec += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    if !neg {
        return Some((secs, nsec));
    }
    // -1.25 is 1.25 s before the epoch: seconds -2, nanoseconds 0.75e9.
    if nsec == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nsec))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(crate) fn header(path: &str, ty: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        h
    }

    fn entries(bytes: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>, StreamError> {
        let mut s = TarStream::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = s.next_entry()? {
            let mut data = Vec::new();
            s.data().read_to_end(&mut data).map_err(|e| StreamError {
                offset: 0,
                problem: e.to_string(),
                source: None,
            })?;
            out.push((e, data));
        }
        Ok(out)
    }

    #[test]
    fn reads_what_the_tar_crate_writes() {
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header("dir/", tar::EntryType::Directory, 0), &[][..])
            .unwrap();
        b.append(
            &header("dir/file", tar::EntryType::Regular, 5),
            &b"hello"[..],
        )
        .unwrap();
        let long = format!("dir/{}", "n".repeat(300));
        let mut h = header("x", tar::EntryType::Regular, 3);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let mut h = header("x", tar::EntryType::Symlink, 0);
        b.append_link(&mut h, "dir/link", "t".repeat(200)).unwrap();
        b.append_pax_extensions([
            ("SCHILY.xattr.user.k", &b"v\0bin"[..]),
            ("mtime", b"1700000000.123456789"),
            ("uid", b"70000"),
        ])
        .unwrap();
        b.append(&header("dir/pax", tar::EntryType::Regular, 2), &b"hi"[..])
            .unwrap();
        let bytes = b.into_inner().unwrap();
        let got = entries(&bytes).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].0.kind, EntryKind::Dir);
        assert_eq!(
            (got[1].0.path.as_slice(), got[1].1.as_slice()),
            (&b"dir/file"[..], &b"hello"[..])
        );
        assert_eq!(got[2].0.path, long.as_bytes());
        assert_eq!(got[2].1, b"abc");
        assert_eq!(
            got[3].0.kind,
            EntryKind::Symlink("t".repeat(200).into_bytes())
        );
        let pax = &got[4].0;
        assert_eq!(pax.xattrs, vec![(b"user.k".to_vec(), b"v\0bin".to_vec())]);
        assert_eq!(
            (pax.mtime_sec, pax.mtime_nsec, pax.uid),
            (1_700_000_000, 123_456_789, 70000)
        );
        assert_eq!(got[4].1, b"hi");
        assert_eq!(
            got.iter().map(|g| g.0.index).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn pax_size_overrides_the_header() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"7"[..])]).unwrap();
        // The header says 0; the data really is 7 bytes (as Go writes files of 8 GiB and more).
        let mut raw = b.get_ref().clone();
        let h = header("big", tar::EntryType::Regular, 0);
        raw.extend_from_slice(h.as_bytes());
        let mut data = b"7 bytes".to_vec();
        data.resize(512, 0);
        raw.extend_from_slice(&data);
        raw.extend_from_slice(&[0u8; 1024]);
        let got = entries(&raw).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, b"7 bytes");
    }

    #[test]
    fn truncation_bad_checksums_and_huge_records_are_errors() {
        let mut b = tar::Builder::new(Vec::new());
        b.append(
            &header("f", tar::EntryType::Regular, 1000),
            &[7u8; 1000][..],
        )
        .unwrap();
        let bytes = b.into_inner().unwrap();
        let err = entries(&bytes[..700]).unwrap_err();
        assert!(err.problem.contains("truncated"), "{err}");
        let err = entries(&bytes[..100]).unwrap_err();
        assert!(err.problem.contains("header"), "{err}");

        let mut bad = bytes.clone();
        bad[0] ^= 1;
        let err = entries(&bad).unwrap_err();
        assert!(err.problem.contains("checksum"), "{err}");

        let mut huge = header(
            "././@LongLink",
            tar::EntryType::GNULongName,
            LONG_NAME_MAX + 1,
        )
        .as_bytes()
        .to_vec();
        huge.extend_from_slice(&[b'a'; 512]);
        let err = entries(&huge).unwrap_err();
        assert!(err.problem.contains("exceeds the limit"), "{err}");

        let orphan = header("././@LongLink", tar::EntryType::GNULongName, 3)
            .as_bytes()
            .to_vec();
        let mut orphan = orphan;
        orphan.extend_from_slice(&[b'a'; 512]);
        orphan.extend_from_slice(&[0; 1024]);
        let err = entries(&orphan).unwrap_err();
        assert!(err.problem.contains("extension headers"), "{err}");

        let garbage = vec![0x41u8; 2048];
        assert!(entries(&garbage).is_err());
    }

    #[test]
    fn header_only_types_have_no_data() {
        let mut raw = header("d/", tar::EntryType::Directory, 512)
            .as_bytes()
            .to_vec();
        raw.extend_from_slice(header("f", tar::EntryType::Regular, 0).as_bytes());
        raw.extend_from_slice(&[0; 1024]);
        let got = entries(&raw).unwrap();
        assert_eq!(
            got.len(),
            2,
            "the directory's size field must not swallow the next header"
        );
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"1.0000000019"), Some((1, 1)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b""), None);
    }
}
