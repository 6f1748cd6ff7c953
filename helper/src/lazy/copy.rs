//! [`FileCopySource`]: fills a sparse file from a complete copy of the same file. What the
//! tests use, and an offline/debug mode (the store's registry-backed source replaces it).
//!
//! The file is filled in **units**: the chunk frames it holds (for a `.cfs`, from its index:
//! [`cfs_frames`]), or 4 KiB blocks when the frames are not known. A fill makes every unit
//! overlapping the asked range present, each written exactly (never the neighbouring bytes of
//! a shared block) and **tail first, head last**: the first write covers the unit from its
//! first page boundary on, the second the rest of its first page. A filler killed in between
//! leaves a frame without its header, which the kernel refuses (bad magic). A frame whose
//! header is present and whose tail reads as zeros is not always refused: Linux 6.18's EROFS
//! serves the zeros when it decodes only a prefix of the frame (docs/lazy.md, rule 7). Block
//! units cannot keep that promise (a block holds one frame's tail and the next one's header):
//! use them only where a filler never dies mid-read.
//!
//! Presence is learnt at start by comparing with the copy every unit that lies within the
//! sparse file's data extents (`SEEK_DATA`/`SEEK_HOLE`), and kept in memory after. Concurrent
//! fills of overlapping ranges each write the units they claimed and wait for the units another
//! fill claimed, so no unit is written twice at once and no fill returns before its whole range
//! is present.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::filler::{FillError, FillSource};

/// Block units, and the page size the tail-first writes split at.
const BLOCK: u64 = 4096;
/// The largest unit read into memory at once (frames are at most a few hundred KiB).
const MAX_UNIT: u64 = 16 << 20;

const ABSENT: u8 = 0;
const CLAIMED: u8 = 1;
const PRESENT: u8 = 2;

/// One sparse file and its complete copy.
#[derive(Debug)]
pub struct CopyPair<'a> {
    /// The sparse file's name, for messages.
    pub name: String,
    /// The sparse file, opened before any filler marked it (it is read to learn which units
    /// are present).
    pub sparse: &'a File,
    /// A complete copy of it, of the same length.
    pub copy: File,
    /// The byte ranges of the frames it holds, or `None` for 4 KiB blocks.
    pub frames: Option<Vec<Range<u64>>>,
}

/// Why a [`FileCopySource`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A file could not be examined or read.
    #[error("{name}: {source}")]
    Probe {
        /// The file.
        name: String,
        /// The error.
        source: io::Error,
    },
    /// The copy's length differs from the sparse file's.
    #[error("{name}: the copy is {copy} bytes long, the sparse file {sparse}")]
    Length {
        /// The sparse file.
        name: String,
        /// The copy's length.
        copy: u64,
        /// The sparse file's length.
        sparse: u64,
    },
    /// A frame list that is not a set of disjoint ranges inside the file.
    #[error(
        "{name}: frame {frame:?} is empty, overlaps another, is too long or ends past the file's {len} bytes"
    )]
    Frames {
        /// The sparse file.
        name: String,
        /// The offending frame.
        frame: Range<u64>,
        /// The file's length.
        len: u64,
    },
    /// The copy is not a `.cfs` whose frames could be listed.
    #[error("{0}")]
    Cfs(#[from] chunkfs_format::cfs::read::Error),
}

impl chunkfs_format::Classify for CopyError {
    /// The failure's class.
    fn class(&self) -> chunkfs_format::ErrorClass {
        match self {
            CopyError::Probe { .. } => chunkfs_format::ErrorClass::Io,
            CopyError::Length { .. } | CopyError::Frames { .. } => {
                chunkfs_format::ErrorClass::Usage
            }
            CopyError::Cfs(e) if e.is_io() => chunkfs_format::ErrorClass::Io,
            CopyError::Cfs(_) => chunkfs_format::ErrorClass::Corrupt,
        }
    }
}

/// The byte ranges of the chunk frames of the `.cfs` at `path` (its checked index): the units
/// a descriptor over that `.cfs` reads.
pub fn cfs_frames(path: &Path) -> Result<Vec<Range<u64>>, CopyError> {
    let cfs = chunkfs_format::cfs::read::Cfs::open(path)?;
    Ok(cfs
        .locations()
        .iter()
        .map(|l| l.offset..l.offset + u64::from(l.stored_len))
        .collect())
}

#[derive(Debug)]
struct State {
    units: Vec<u8>,
    present: usize,
}

#[derive(Debug)]
struct CopyFile {
    name: String,
    copy: File,
    len: u64,
    /// Sorted, disjoint, non-empty.
    units: Vec<Range<u64>>,
    state: Mutex<State>,
    changed: Condvar,
}

/// Fills sparse files from complete copies (see the module documentation).
#[derive(Debug)]
pub struct FileCopySource {
    files: Vec<CopyFile>,
}

impl FileCopySource {
    /// One entry per file the filler serves, in the filler's order.
    pub fn new(pairs: Vec<CopyPair<'_>>) -> Result<Self, CopyError> {
        let mut files = Vec::with_capacity(pairs.len());
        for p in pairs {
            let probe = |source| CopyError::Probe {
                name: p.name.clone(),
                source,
            };
            let len = p.sparse.metadata().map_err(probe)?.len();
            let copy_len = p.copy.metadata().map_err(probe)?.len();
            if copy_len != len {
                return Err(CopyError::Length {
                    name: p.name,
                    copy: copy_len,
                    sparse: len,
                });
            }
            let units = match p.frames {
                Some(frames) => checked_frames(&p.name, frames, len)?,
                None => (0..len.div_ceil(BLOCK))
                    .map(|b| b * BLOCK..((b + 1) * BLOCK).min(len))
                    .collect(),
            };
            let state = present_units(p.sparse, &p.copy, len, &units).map_err(probe)?;
            let present = state.iter().filter(|&&s| s == PRESENT).count();
            files.push(CopyFile {
                name: p.name,
                copy: p.copy,
                len,
                units,
                state: Mutex::new(State {
                    units: state,
                    present,
                }),
                changed: Condvar::new(),
            });
        }
        Ok(Self { files })
    }

    fn file(&self, file: usize) -> Result<&CopyFile, FillError> {
        self.files.get(file).ok_or(FillError::NoSuchFile { file })
    }
}

/// Sorts and deduplicates `frames` and checks them: non-empty, disjoint, inside the file.
fn checked_frames(
    name: &str,
    mut frames: Vec<Range<u64>>,
    len: u64,
) -> Result<Vec<Range<u64>>, CopyError> {
    frames.sort_by_key(|r| (r.start, r.end));
    frames.dedup();
    let mut end = 0;
    for f in &frames {
        if f.start >= f.end || f.start < end || f.end > len || f.end - f.start > MAX_UNIT {
            return Err(CopyError::Frames {
                name: name.to_owned(),
                frame: f.clone(),
                len,
            });
        }
        end = f.end;
    }
    Ok(frames)
}

/// The data extents of `file` (`SEEK_DATA`/`SEEK_HOLE`), sorted.
fn data_extents(file: &File, len: u64) -> io::Result<Vec<Range<u64>>> {
    use nix::unistd::{Whence, lseek};
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < len {
        let from = i64::try_from(at).map_err(|_| io::Error::other("offset out of range"))?;
        let data = match lseek(file.as_fd(), from, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(file.as_fd(), data, Whence::SeekHole)?;
        let data = u64::try_from(data).unwrap_or(len);
        let hole = u64::try_from(hole).unwrap_or(len).min(len);
        if hole <= data {
            break;
        }
        out.push(data..hole);
        at = hole;
    }
    Ok(out)
}

/// One state per unit: `PRESENT` where the unit lies within data extents and its bytes equal
/// the copy's (a frame torn by a killed filler, or one only partly written through a shared
/// block, is absent), else `ABSENT`.
fn present_units(
    sparse: &File,
    copy: &File,
    len: u64,
    units: &[Range<u64>],
) -> io::Result<Vec<u8>> {
    let extents = data_extents(sparse, len)?;
    let mut state = vec![ABSENT; units.len()];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut e = 0;
    for (k, u) in units.iter().enumerate() {
        while extents.get(e).is_some_and(|x| x.end <= u.start) {
            e += 1;
        }
        let inside = extents
            .get(e)
            .is_some_and(|x| x.start <= u.start && u.end <= x.end);
        if !inside {
            continue;
        }
        let n = usize::try_from(u.end - u.start).map_err(|_| io::Error::other("unit too long"))?;
        a.resize(n, 0);
        b.resize(n, 0);
        sparse.read_exact_at(&mut a, u.start)?;
        copy.read_exact_at(&mut b, u.start)?;
        if a == b {
            if let Some(s) = state.get_mut(k) {
                *s = PRESENT;
            }
        }
    }
    Ok(state)
}

impl CopyFile {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The units overlapping `range` (clamped to the file).
    fn units_of(&self, range: &Range<u64>) -> Range<usize> {
        let end = range.end.min(self.len);
        let start = range.start.min(end);
        if start >= end {
            return 0..0;
        }
        let first = self.units.partition_point(|u| u.end <= start);
        let last = self.units.partition_point(|u| u.start < end);
        first..last.max(first)
    }

    /// Writes unit `k` through `out`: from its first page boundary to its end, then its first
    /// page (see the module documentation).
    fn write_unit(&self, k: usize, out: &File) -> Result<(), FillError> {
        let Some(u) = self.units.get(k) else {
            return Ok(());
        };
        let n = usize::try_from(u.end - u.start).unwrap_or(0);
        let mut buf = vec![0u8; n];
        self.copy
            .read_exact_at(&mut buf, u.start)
            .map_err(|source| FillError::Read {
                name: self.name.clone(),
                range: u.clone(),
                source,
            })?;
        let split = (u.start / BLOCK + 1) * BLOCK;
        let head = usize::try_from(split.min(u.end) - u.start)
            .unwrap_or(n)
            .min(n);
        let (first, rest) = buf.split_at(head);
        let write = |bytes: &[u8], at: u64| {
            out.write_all_at(bytes, at)
                .map_err(|source| FillError::Write {
                    name: self.name.clone(),
                    range: at..at + bytes.len() as u64,
                    source,
                })
        };
        if !rest.is_empty() {
            write(rest, split)?;
        }
        write(first, u.start)
    }
}

impl FillSource for FileCopySource {
    fn ready(&self, file: usize, range: Range<u64>, _pid: i32) -> bool {
        let Ok(f) = self.file(file) else {
            return false;
        };
        let units = f.units_of(&range);
        let s = f.lock();
        s.units
            .get(units)
            .is_some_and(|u| u.iter().all(|&x| x == PRESENT))
    }

    fn fill(&self, file: usize, range: Range<u64>, _pid: i32, out: &File) -> Result<(), FillError> {
        let f = self.file(file)?;
        let units = f.units_of(&range);
        loop {
            let mut claimed: Vec<usize> = Vec::new();
            let mut waiting = false;
            {
                let mut s = f.lock();
                for k in units.clone() {
                    match s.units.get(k).copied() {
                        Some(ABSENT) => {
                            if let Some(x) = s.units.get_mut(k) {
                                *x = CLAIMED;
                            }
                            claimed.push(k);
                        }
                        Some(CLAIMED) => waiting = true,
                        _ => {}
                    }
                }
                if claimed.is_empty() {
                    if !waiting {
                        return Ok(());
                    }
                    // Another fill holds some units: wait for it to finish or fail, then look
                    // again (a failed fill leaves them absent for this one to claim).
                    let _unused = f.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
            }
            let mut result = Ok(());
            let mut done = 0;
            for &k in &claimed {
                result = f.write_unit(k, out);
                if result.is_err() {
                    break;
                }
                done += 1;
            }
            {
                let mut s = f.lock();
                for (i, &k) in claimed.iter().enumerate() {
                    let to = if i < done { PRESENT } else { ABSENT };
                    if let Some(x) = s.units.get_mut(k) {
                        *x = to;
                    }
                }
                s.present += done;
            }
            f.changed.notify_all();
            result?;
        }
    }

    fn absent(&self, file: usize) -> Vec<Range<u64>> {
        let Ok(f) = self.file(file) else {
            return Vec::new();
        };
        let s = f.lock();
        let mut out: Vec<Range<u64>> = Vec::new();
        for (u, &st) in f.units.iter().zip(&s.units) {
            if st == PRESENT {
                continue;
            }
            match out.last_mut() {
                Some(r) if r.end == u.start => r.end = u.end,
                _ => out.push(u.clone()),
            }
        }
        out
    }

    fn is_complete(&self, file: usize) -> bool {
        self.file(file)
            .map(|f| {
                let s = f.lock();
                s.present == s.units.len()
            })
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096 + 1) as u8).collect()
    }

    fn pair(dir: &Path, len: usize, present: &[Range<u64>]) -> (File, File, Vec<u8>) {
        let data = data(len);
        let copy_path = dir.join("copy");
        std::fs::write(&copy_path, &data).unwrap();
        let sparse = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("sparse"))
            .unwrap();
        sparse.set_len(len as u64).unwrap();
        for r in present {
            sparse
                .write_all_at(&data[r.start as usize..r.end as usize], r.start)
                .unwrap();
        }
        (sparse, File::open(&copy_path).unwrap(), data)
    }

    fn source(sparse: &File, copy: File, frames: Option<Vec<Range<u64>>>) -> FileCopySource {
        FileCopySource::new(vec![CopyPair {
            name: "sparse".into(),
            sparse,
            copy,
            frames,
        }])
        .unwrap()
    }

    fn contents(f: &File, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn blocks_fill_only_what_is_asked_and_complete() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let len = 10 * 4096 + 100;
        let (sparse, copy, data) = pair(dir.path(), len, &[4096..8192, 4096..8192]);
        let src = source(&sparse, copy, None);
        assert!(src.ready(0, 4096..8192, 0));
        assert_eq!(src.absent(0)[0], 0..4096);
        assert!(!src.ready(0, 0..1, 0));
        src.fill(0, 5000..9000, 1, &sparse).unwrap();
        assert!(src.ready(0, 4096..3 * 4096, 0));
        assert!(!src.is_complete(0));
        assert_eq!(contents(&sparse, len)[8192..12288], data[8192..12288]);
        // The tail block ends at EOF; ranges past EOF are clamped.
        src.fill(0, len as u64 - 1..len as u64 + 500, 1, &sparse)
            .unwrap();
        assert!(src.ready(0, 10 * 4096..len as u64, 0));
        for r in src.absent(0) {
            src.fill(0, r, 1, &sparse).unwrap();
        }
        assert!(src.is_complete(0));
        assert!(src.absent(0).is_empty());
        assert_eq!(contents(&sparse, len), data);
    }

    #[test]
    fn frames_are_written_exactly_and_whole() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let len = 40_000;
        let (sparse, copy, data) = pair(dir.path(), len, &[]);
        // Frames sharing blocks, a gap, one frame inside one block.
        let frames = vec![100..5000, 5000..9000, 9000..20_000, 30_000..30_100];
        let src = source(&sparse, copy, Some(frames));
        // A read of bytes 4096..8192 needs the first two frames, whole.
        src.fill(0, 4096..8192, 1, &sparse).unwrap();
        let got = contents(&sparse, len);
        assert_eq!(got[100..9000], data[100..9000]);
        // Nothing outside them: not the gap before, not the next frame's bytes.
        assert!(got[..100].iter().all(|&b| b == 0));
        assert!(got[9000..].iter().all(|&b| b == 0));
        assert!(src.ready(0, 100..9000, 0));
        assert!(!src.ready(0, 8000..9001, 0));
        // Bytes in no frame need nothing.
        assert!(src.ready(0, 25_000..26_000, 0));
        assert_eq!(src.absent(0), vec![9000..20_000, 30_000..30_100]);
        for r in src.absent(0) {
            src.fill(0, r, 1, &sparse).unwrap();
        }
        assert!(src.is_complete(0));
    }

    #[test]
    fn presence_is_checked_against_the_copy_at_start() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let len = 6 * 4096;
        // Frame 0..5000 whole; frame 5000..9000 inside data blocks (its neighbours' writes
        // allocated them) but never written: it must be absent; frame 9000..12288 torn.
        let (sparse, copy, data) = pair(dir.path(), len, &[0..5000, 8192..8292]);
        sparse.write_all_at(&data[9000..10000], 9000).unwrap();
        let src = source(&sparse, copy, Some(vec![0..5000, 5000..9000, 9000..12288]));
        assert!(src.ready(0, 0..5000, 0));
        assert!(!src.ready(0, 5000..9000, 0));
        assert!(!src.ready(0, 9000..12288, 0));
        assert_eq!(src.absent(0), vec![5000..12288]);
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn bad_frame_lists_are_refused() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        for frames in [
            vec![0..10, 5..20],
            vec![0..0],
            vec![100..9000],
            vec![8000..8193],
        ] {
            let (sparse, copy, _) = pair(dir.path(), 8192, &[]);
            let e = FileCopySource::new(vec![CopyPair {
                name: "sparse".into(),
                sparse: &sparse,
                copy,
                frames: Some(frames.clone()),
            }])
            .unwrap_err();
            assert!(matches!(e, CopyError::Frames { .. }), "{frames:?}: {e}");
        }
    }

    #[test]
    fn a_failed_copy_leaves_the_units_absent() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let len = 8 * 4096;
        let (sparse, copy, _) = pair(dir.path(), len, &[]);
        let copy_path = dir.path().join("copy");
        let src = source(&sparse, copy, None);
        // The copy shrinks under the source: the read fails, nothing is marked present.
        File::options()
            .write(true)
            .open(&copy_path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let e = src.fill(0, 0..len as u64, 1, &sparse).unwrap_err();
        assert!(matches!(e, FillError::Read { .. }), "{e}");
        assert!(!src.ready(0, 4096..8192, 0));
        assert!(src.fill(0, 0..4096, 1, &sparse).is_ok());
        assert!(src.ready(0, 0..4096, 0));
        assert_eq!(src.absent(0), vec![4096..len as u64]);
    }

    #[test]
    fn concurrent_overlapping_fills_each_return_with_their_range_present() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let len = 256 * 4096;
        let (sparse, copy, data) = pair(dir.path(), len, &[]);
        let frames: Vec<Range<u64>> = (0..len as u64 / 7000)
            .map(|i| i * 7000..(i + 1) * 7000)
            .collect();
        let src = source(&sparse, copy, Some(frames));
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (src, sparse) = (&src, &sparse);
                s.spawn(move || {
                    for k in 0..32u64 {
                        let start = (t * 13 + k * 29) % 250 * 4096 + t;
                        let r = start..start + 5 * 4096;
                        src.fill(0, r.clone(), 1, sparse).unwrap();
                        assert!(src.ready(0, r, 0));
                    }
                });
            }
        });
        for r in src.absent(0) {
            src.fill(0, r, 1, &sparse).unwrap();
        }
        assert!(src.is_complete(0));
        let got = contents(&sparse, len);
        let covered = (len as u64 / 7000 * 7000) as usize;
        assert_eq!(got[..covered], data[..covered]);
    }

    #[test]
    fn lengths_must_match() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let (sparse, _, _) = pair(dir.path(), 8192, &[]);
        std::fs::write(dir.path().join("short"), b"x").unwrap();
        let e = FileCopySource::new(vec![CopyPair {
            name: "sparse".into(),
            sparse: &sparse,
            copy: File::open(dir.path().join("short")).unwrap(),
            frames: None,
        }])
        .unwrap_err();
        assert!(matches!(e, CopyError::Length { copy: 1, .. }), "{e}");
    }
}
