//! [`FileCopySource`]: fills a sparse file from a complete copy of the same file. What the
//! tests use, and an offline/debug mode (the store's registry-backed source replaces it).
//!
//! Presence is tracked per 4 KiB block, learnt at start from the sparse file's data extents
//! (`SEEK_DATA`/`SEEK_HOLE`: a block the kernel reports as data counts as present) and kept in
//! memory after: one byte per block. Concurrent fills of overlapping ranges each copy the
//! blocks they claimed and wait for the blocks another fill claimed, so no block is written
//! twice at once and no fill returns before its whole range is present.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::filler::{FillError, FillSource};

/// The unit of presence.
const BLOCK: u64 = 4096;
/// The largest single copy (read from the copy, then written).
const MAX_COPY: u64 = 1 << 20;

const ABSENT: u8 = 0;
const CLAIMED: u8 = 1;
const PRESENT: u8 = 2;

/// One sparse file and its complete copy.
#[derive(Debug)]
pub struct CopyPair<'a> {
    /// The sparse file's name, for messages.
    pub name: String,
    /// The sparse file (only probed for its data extents).
    pub sparse: &'a File,
    /// A complete copy of it, of the same length.
    pub copy: File,
}

/// Why a [`FileCopySource`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// `fstat` or `lseek` of a file failed.
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
}

impl CopyError {
    /// The failure's class.
    pub fn class(&self) -> chunkfs_format::ErrorClass {
        match self {
            CopyError::Probe { .. } => chunkfs_format::ErrorClass::Io,
            CopyError::Length { .. } => chunkfs_format::ErrorClass::Usage,
        }
    }
}

#[derive(Debug)]
struct Blocks {
    state: Vec<u8>,
    present: usize,
}

#[derive(Debug)]
struct CopyFile {
    name: String,
    copy: File,
    len: u64,
    blocks: Mutex<Blocks>,
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
            let state = present_blocks(p.sparse, len).map_err(probe)?;
            let present = state.iter().filter(|&&s| s == PRESENT).count();
            files.push(CopyFile {
                name: p.name,
                copy: p.copy,
                len,
                blocks: Mutex::new(Blocks { state, present }),
                changed: Condvar::new(),
            });
        }
        Ok(Self { files })
    }

    fn file(&self, file: usize) -> Result<&CopyFile, FillError> {
        self.files.get(file).ok_or(FillError::NoSuchFile { file })
    }
}

/// The number of blocks of a file of `len` bytes.
fn block_count(len: u64) -> usize {
    usize::try_from(len.div_ceil(BLOCK)).unwrap_or(usize::MAX)
}

/// The blocks `[first, end)` covering `range` of a file of `len` bytes.
fn blocks_of(range: &Range<u64>, len: u64) -> Range<usize> {
    let end = range.end.min(len);
    let start = range.start.min(end);
    let first = usize::try_from(start / BLOCK).unwrap_or(usize::MAX);
    let last = usize::try_from(end.div_ceil(BLOCK)).unwrap_or(usize::MAX);
    first..last.max(first)
}

/// One state per block: `PRESENT` where the file has data (the whole block), else `ABSENT`.
fn present_blocks(file: &File, len: u64) -> io::Result<Vec<u8>> {
    use nix::unistd::{Whence, lseek};
    let mut state = vec![ABSENT; block_count(len)];
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
        // Only blocks wholly inside the data extent (or ending at EOF) count.
        let first = data.div_ceil(BLOCK);
        let last = if hole == len {
            len.div_ceil(BLOCK)
        } else {
            hole / BLOCK
        };
        for b in first..last {
            if let Some(s) = usize::try_from(b).ok().and_then(|b| state.get_mut(b)) {
                *s = PRESENT;
            }
        }
        if hole <= data {
            break;
        }
        at = hole;
    }
    Ok(state)
}

impl CopyFile {
    fn lock(&self) -> MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies blocks `[first, end)` through `out`.
    fn copy_blocks(&self, blocks: Range<usize>, out: &File) -> Result<(), FillError> {
        let start = blocks.start as u64 * BLOCK;
        let end = (blocks.end as u64 * BLOCK).min(self.len);
        let mut buf = vec![0u8; usize::try_from((end - start).min(MAX_COPY)).unwrap_or(0)];
        let mut at = start;
        while at < end {
            let n = (end - at).min(MAX_COPY) as usize;
            let chunk = buf.get_mut(..n).unwrap_or_default();
            self.copy
                .read_exact_at(chunk, at)
                .map_err(|source| FillError::Read {
                    name: self.name.clone(),
                    range: at..at + n as u64,
                    source,
                })?;
            out.write_all_at(chunk, at)
                .map_err(|source| FillError::Write {
                    name: self.name.clone(),
                    range: at..at + n as u64,
                    source,
                })?;
            at += n as u64;
        }
        Ok(())
    }
}

impl FillSource for FileCopySource {
    fn ready(&self, file: usize, range: Range<u64>, _pid: i32) -> bool {
        let Ok(f) = self.file(file) else {
            return false;
        };
        let blocks = blocks_of(&range, f.len);
        let b = f.lock();
        b.state
            .get(blocks)
            .is_some_and(|s| s.iter().all(|&x| x == PRESENT))
    }

    fn fill(&self, file: usize, range: Range<u64>, _pid: i32, out: &File) -> Result<(), FillError> {
        let f = self.file(file)?;
        let blocks = blocks_of(&range, f.len);
        loop {
            // Claim the absent blocks of the range, in runs.
            let mut runs: Vec<Range<usize>> = Vec::new();
            let mut waiting = false;
            {
                let mut b = f.lock();
                for i in blocks.clone() {
                    match b.state.get(i).copied() {
                        Some(ABSENT) => {
                            if let Some(s) = b.state.get_mut(i) {
                                *s = CLAIMED;
                            }
                            match runs.last_mut() {
                                Some(r) if r.end == i => r.end = i + 1,
                                _ => runs.push(i..i + 1),
                            }
                        }
                        Some(CLAIMED) => waiting = true,
                        _ => {}
                    }
                }
                if runs.is_empty() {
                    if !waiting {
                        return Ok(());
                    }
                    // Another fill holds some blocks: wait for it to finish or fail, then
                    // look again (a failed fill leaves them absent for this one to claim).
                    let _unused = f
                        .changed
                        .wait(b)
                        .unwrap_or_else(|p| p.into_inner());
                    continue;
                }
            }
            let mut result = Ok(());
            let mut done = 0;
            for r in &runs {
                result = f.copy_blocks(r.clone(), out);
                if result.is_err() {
                    break;
                }
                done += 1;
            }
            {
                let mut b = f.lock();
                for (k, r) in runs.iter().enumerate() {
                    let to = if k < done { PRESENT } else { ABSENT };
                    for i in r.clone() {
                        if let Some(s) = b.state.get_mut(i) {
                            *s = to;
                        }
                    }
                    if to == PRESENT {
                        b.present += r.len();
                    }
                }
            }
            f.changed.notify_all();
            result?;
        }
    }

    fn absent(&self, file: usize) -> Vec<Range<u64>> {
        let Ok(f) = self.file(file) else {
            return Vec::new();
        };
        let b = f.lock();
        let mut out: Vec<Range<u64>> = Vec::new();
        for (i, &s) in b.state.iter().enumerate() {
            if s == PRESENT {
                continue;
            }
            let start = i as u64 * BLOCK;
            let end = (start + BLOCK).min(f.len);
            match out.last_mut() {
                Some(r) if r.end == start => r.end = end,
                _ => out.push(start..end),
            }
        }
        out
    }

    fn is_complete(&self, file: usize) -> bool {
        self.file(file)
            .map(|f| {
                let b = f.lock();
                b.present == b.state.len()
            })
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pair(dir: &std::path::Path, len: usize, present: &[Range<u64>]) -> (File, File, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let copy_path = dir.join("copy");
        std::fs::write(&copy_path, &data).unwrap();
        let sparse_path = dir.join("sparse");
        let sparse = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&sparse_path)
            .unwrap();
        sparse.set_len(len as u64).unwrap();
        for r in present {
            sparse
                .write_all_at(&data[r.start as usize..r.end as usize], r.start)
                .unwrap();
        }
        sparse.sync_all().unwrap();
        (sparse, File::open(&copy_path).unwrap(), data)
    }

    #[test]
    fn fills_only_what_is_asked_and_completes() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let len = 10 * 4096 + 100;
        let present = [4096..8192, 4096..8192];
        let (sparse, copy, data) = pair(dir.path(), len, &present);
        let src = FileCopySource::new(vec![CopyPair {
            name: "sparse".into(),
            sparse: &sparse,
            copy,
        }])
        .unwrap();
        // Block 1 was present at start (if the filesystem keeps holes).
        let holes = src.absent(0).len() > 1;
        if holes {
            assert!(src.ready(0, 4096..8192, 0));
            assert_eq!(src.absent(0)[0], 0..4096);
        }
        assert!(!src.ready(0, 0..1, 0));
        src.fill(0, 5000..9000, 1, &sparse).unwrap();
        assert!(src.ready(0, 4096..3 * 4096, 0));
        assert!(!src.is_complete(0));
        let mut got = vec![0u8; 4096];
        sparse.read_exact_at(&mut got, 8192).unwrap();
        assert_eq!(got, data[8192..12288]);
        // The tail block ends at EOF.
        src.fill(0, len as u64 - 1..len as u64 + 500, 1, &sparse)
            .unwrap();
        assert!(src.ready(0, 10 * 4096..len as u64, 0));
        for r in src.absent(0) {
            src.fill(0, r, 1, &sparse).unwrap();
        }
        assert!(src.is_complete(0));
        assert!(src.absent(0).is_empty());
        let mut all = vec![0u8; len];
        sparse.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(all, data);
    }

    #[test]
    fn a_failed_copy_leaves_the_blocks_absent() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let len = 8 * 4096;
        let (sparse, copy, _) = pair(dir.path(), len, &[]);
        let copy_path = dir.path().join("copy");
        let src = FileCopySource::new(vec![CopyPair {
            name: "sparse".into(),
            sparse: &sparse,
            copy,
        }])
        .unwrap();
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
        assert_eq!(src.absent(0).len(), 1);
        assert!(src.fill(0, 0..4096, 1, &sparse).is_ok());
        assert!(src.ready(0, 0..4096, 0));
    }

    #[test]
    fn concurrent_overlapping_fills_each_return_with_their_range_present() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let len = 256 * 4096;
        let (sparse, copy, data) = pair(dir.path(), len, &[]);
        let src = FileCopySource::new(vec![CopyPair {
            name: "sparse".into(),
            sparse: &sparse,
            copy,
        }])
        .unwrap();
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
        let mut all = vec![0u8; len];
        sparse.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(all, data);
        assert!(src.is_complete(0));
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
        }])
        .unwrap_err();
        assert!(matches!(e, CopyError::Length { copy: 1, .. }), "{e}");
    }
}
