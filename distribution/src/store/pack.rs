//! One pack of the store: its sparse file, its index and its state (docs/store.md §1, §3, §4),
//! and making ranges of it present.
//!
//! A [`Pack`] addresses bytes as the pack *file* does: the blob's byte `x` is at
//! `base() + x`, and the file is `file_len() = base() + blob_len()` bytes long. This is what a
//! descriptor's extents point at and what the kernel's events and the reader's `Device` ask for.
//!
//! [`Pack::ensure`] makes the frames covering a range present: the frames this process knows
//! present cost nothing; the others are claimed against the other threads of this process,
//! record-locked against other processes, read again from the state file (another process may
//! have filled them meanwhile), fetched in runs of adjacent frames (one request per run, at
//! most [`MAX_REQUEST`] bytes), each frame checked ([`super::check`]), written, marked
//! [`WRITTEN`], unlocked. So each frame is fetched once however many threads and processes
//! ask for it at the same time.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chunkfs_format::digest::Digest;

use super::check::check_frame;
use super::error::Error;
use super::proc;
use super::state::{ABSENT, SYNCED, StateFile, WRITTEN};
use super::stats::Counters;
use super::syncer;
use super::window::SLOT;
use crate::oci::pack::{PackEntry, PackIndex};
use crate::source::BlobSource;

/// Most bytes asked of the source in one request (adjacent frames are merged up to this).
pub const MAX_REQUEST: u64 = 4 << 20;

/// The page size frame writes split at (docs/lazy.md rule 7).
const PAGE: u64 = 4096;

/// One pack blob kept in the store, open.
pub struct Pack {
    digest: Digest,
    path: PathBuf,
    index: PackIndex,
    state: Arc<StateFile>,
    data: Arc<File>,
    counters: Arc<Counters>,
}

/// How much of a pack is present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FillState {
    /// Frames in the pack.
    pub frames: u64,
    /// Frames present (synced or written).
    pub present: u64,
    /// Of which written but not yet synced.
    pub unsynced: u64,
    /// Bytes of all frames.
    pub frame_bytes: u64,
    /// Bytes of the present frames.
    pub present_bytes: u64,
}

impl FillState {
    /// True if every frame is present.
    pub fn is_complete(&self) -> bool {
        self.present == self.frames
    }
}

/// Where frames go once checked: the pack file through the store's own descriptor, or a
/// descriptor the caller gives (the fanotify event's, whose writes raise no events).
#[derive(Clone, Copy)]
enum Sink<'a> {
    Own,
    File(&'a File),
}

impl std::fmt::Debug for Pack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pack")
            .field("digest", &self.digest)
            .field("path", &self.path)
            .field("base", &self.base())
            .field("frames", &self.index.entries.len())
            .finish()
    }
}

impl Pack {
    /// Opens the pack whose files are `path`, `path.state` and `path.index`: checks the state
    /// header against the index and the pack file's length, and repairs the state after a
    /// reboot (docs/store.md §4) before anyone reads.
    pub(crate) fn open(
        digest: Digest,
        path: &Path,
        counters: Arc<Counters>,
    ) -> Result<Pack, Error> {
        let state_path = with_ext(path, "state");
        let index_path = with_ext(path, "index");
        let state = StateFile::open(&state_path, SLOT)?;
        let header = *state.header();
        let tail =
            std::fs::read(&index_path).map_err(Error::io(&index_path, "reading the pack index"))?;
        let index = PackIndex::parse_tail(header.blob_len, &tail, &index_path)
            .map_err(|e| Error::corrupt(&index_path, e.to_string()))?;
        if index.entries.len() as u64 != header.frames {
            return Err(Error::corrupt(
                &state_path,
                format!(
                    "pack state lists {} frames, its index {}",
                    header.frames,
                    index.entries.len()
                ),
            ));
        }
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(Error::io(path, "opening the pack file"))?;
        let len = data
            .metadata()
            .map_err(Error::io(path, "reading the pack file"))?
            .len();
        let want = header.base + header.blob_len;
        if len != want {
            return Err(Error::corrupt(
                path,
                format!("pack file is {len} bytes, its state says {want}"),
            ));
        }
        let pack = Pack {
            digest,
            path: path.to_owned(),
            index,
            state,
            data: Arc::new(data),
            counters,
        };
        pack.repair_after_reboot()?;
        Ok(pack)
    }

    /// The pack blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The pack file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the blob's byte 0 is in the pack file.
    pub fn base(&self) -> u64 {
        self.state.header().base
    }

    /// The blob's length.
    pub fn blob_len(&self) -> u64 {
        self.state.header().blob_len
    }

    /// The pack file's length (`base + blob_len`, a multiple of 4096): the extra device's
    /// length in a descriptor.
    pub fn file_len(&self) -> u64 {
        self.base() + self.blob_len()
    }

    /// The frames of the pack's index, in blob order (offsets relative to the blob).
    pub fn entries(&self) -> &[PackEntry] {
        &self.index.entries
    }

    /// True if every frame ends on a 512-byte boundary (usable by the cluster layout).
    pub fn align512(&self) -> bool {
        self.index.align512()
    }

    /// The frames (index positions) whose bytes overlap `range` of the pack file.
    pub fn frames_in(&self, range: Range<u64>) -> Range<usize> {
        let base = self.base();
        let (a, b) = (
            range.start.saturating_sub(base),
            range.end.saturating_sub(base),
        );
        let e = &self.index.entries;
        let first = e.partition_point(|f| f.offset + u64::from(f.stored_len) <= a);
        let last = e.partition_point(|f| f.offset < b);
        first..last.max(first)
    }

    /// The pack-file range of frame `i`.
    pub fn frame_range(&self, i: usize) -> Option<Range<u64>> {
        let f = self.index.entries.get(i)?;
        let start = self.base() + f.offset;
        Some(start..start + u64::from(f.stored_len))
    }

    /// Makes the frames overlapping `range` (pack-file offsets) present, fetching the missing
    /// ones from `source` and writing them through the store's own descriptor. Returns once
    /// they are present; the caller then reads them ([`Pack::read_at`]). An error leaves the
    /// frames it concerns absent; asking again retries.
    ///
    /// ```no_run
    /// # use chunkfs_distribution::store::Store;
    /// # use chunkfs_distribution::source::LayoutSource;
    /// # let store = Store::open("/var/lib/chunkfs".as_ref())?;
    /// # let source = LayoutSource::new("/srv/layout".as_ref());
    /// # let digest = chunkfs_format::digest::Digest([0; 32]);
    /// // A reader's extra device: bytes [offset, offset + len) of the pack file.
    /// let pack = store.pack(&digest)?.expect("added by the mount's plan");
    /// let (offset, len) = (pack.base() + 4096, 65536);
    /// pack.ensure(offset..offset + len, &source)?; // Network errors: EIO, retry later
    /// let mut buf = vec![0; len as usize];
    /// pack.read_at(&mut buf, offset)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ensure(&self, range: Range<u64>, source: &dyn BlobSource) -> Result<(), Error> {
        self.ensure_frames(self.checked_frames(range)?, source, Sink::Own)
    }

    /// [`Pack::ensure`], writing the frames only through `sink`, an open descriptor of this
    /// pack file (the fanotify filler's event descriptor, whose writes raise no events). A
    /// filler process writes marked packs only this way and never reads them itself: its own
    /// accesses would raise events to itself (docs/store.md §6).
    pub fn ensure_with(
        &self,
        range: Range<u64>,
        source: &dyn BlobSource,
        sink: &File,
    ) -> Result<(), Error> {
        self.ensure_frames(self.checked_frames(range)?, source, Sink::File(sink))
    }

    /// Makes frames `frames` present (index positions).
    pub fn ensure_frames_of(
        &self,
        frames: Range<usize>,
        source: &dyn BlobSource,
    ) -> Result<(), Error> {
        if frames.end > self.index.entries.len() {
            return Err(Error::Usage(format!(
                "{}: frames {}..{} of {}",
                self.path.display(),
                frames.start,
                frames.end,
                self.index.entries.len()
            )));
        }
        self.ensure_frames(frames, source, Sink::Own)
    }

    /// Reads `buf.len()` bytes at `offset` of the pack file, which must be present: every
    /// frame the range overlaps (holes and padding between frames read as zeros).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        let end = offset.saturating_add(buf.len() as u64);
        let frames = self.checked_frames(offset..end)?;
        if frames.clone().any(|i| !self.state.known_present(i)) {
            self.state.read(frames.clone())?;
            if let Some(i) = frames.clone().find(|&i| !self.state.known_present(i)) {
                return Err(Error::Usage(format!(
                    "{}: bytes {offset}..{end} read while frame {i} is absent",
                    self.path.display()
                )));
            }
        }
        self.data
            .read_exact_at(buf, offset)
            .map_err(Error::io(&self.path, "reading the pack file"))
    }

    /// Whether every frame of `frames` (index positions) is present: from what this process
    /// knows, reading the state file only when some are not known present yet. Cheap enough
    /// for a fanotify filler's event thread (one `pread` of a few bytes at most); a mount
    /// asks it for the frames it reads, which may be fewer than the pack's.
    pub fn all_present(&self, frames: &[usize]) -> Result<bool, Error> {
        let unknown: Vec<usize> = frames
            .iter()
            .copied()
            .filter(|&i| !self.state.known_present(i))
            .collect();
        let (Some(&a), Some(&b)) = (unknown.iter().min(), unknown.iter().max()) else {
            return Ok(true);
        };
        if b >= self.index.entries.len() {
            return Err(Error::Usage(format!(
                "{}: frame {b} of {}",
                self.path.display(),
                self.index.entries.len()
            )));
        }
        self.state.read(a..b + 1)?;
        Ok(unknown.iter().all(|&i| self.state.known_present(i)))
    }

    /// The pids of other processes holding record locks on the frames overlapping `range`
    /// (pack-file offsets), i.e. writing them now. A fanotify filler answers an event for a
    /// range at once when the process that raised it is one of them (docs/store.md §6).
    pub fn lock_holders(&self, range: Range<u64>) -> Result<Vec<i32>, Error> {
        let mut pids = BTreeSet::new();
        for i in self.frames_in(range) {
            if let Some(pid) = self.state.holder(i)? {
                pids.insert(pid);
            }
        }
        Ok(pids.into_iter().collect())
    }

    /// The pack-file ranges of the frames still absent, adjacent frames merged, read from the
    /// state file (a restarted filler drops the cached pages of these; none left: complete).
    pub fn absent_ranges(&self) -> Result<Vec<Range<u64>>, Error> {
        let states = self.state.read(0..self.index.entries.len())?;
        let mut out: Vec<Range<u64>> = Vec::new();
        for (i, &s) in states.iter().enumerate() {
            if s != ABSENT {
                continue;
            }
            let Some(r) = self.frame_range(i) else {
                continue;
            };
            match out.last_mut() {
                Some(last) if i > 0 && states[i - 1] == ABSENT => last.end = r.end,
                _ => out.push(r),
            }
        }
        Ok(out)
    }

    /// How much of the pack is present, read from the state file.
    pub fn fill_state(&self) -> Result<FillState, Error> {
        let states = self.state.read(0..self.index.entries.len())?;
        let mut f = FillState {
            frames: states.len() as u64,
            ..FillState::default()
        };
        for (s, e) in states.iter().zip(&self.index.entries) {
            f.frame_bytes += u64::from(e.stored_len);
            if *s != ABSENT {
                f.present += 1;
                f.present_bytes += u64::from(e.stored_len);
            }
            f.unsynced += u64::from(*s == WRITTEN);
        }
        Ok(f)
    }

    /// The state of every frame, read from the state file (0 absent, 1 synced, 2 written).
    pub fn states(&self) -> Result<Vec<u8>, Error> {
        self.state.read(0..self.index.entries.len())
    }

    /// `fdatasync`s the pack file and marks the frames written so far synced.
    pub fn sync(&self) -> Result<(), Error> {
        syncer::sync_pack(&self.state, &self.data)
    }

    /// Checks every present frame's bytes against its index entry; returns the frames that do
    /// not check, with what is wrong.
    pub fn check_present(&self) -> Result<Vec<(usize, String)>, Error> {
        let states = self.state.read(0..self.index.entries.len())?;
        let mut bad = Vec::new();
        for (i, (s, e)) in states.iter().zip(&self.index.entries).enumerate() {
            if *s == ABSENT {
                continue;
            }
            if let Err(problem) = self.check_stored(e) {
                bad.push((i, problem));
            }
        }
        Ok(bad)
    }

    /// Touches the state file's modification time: the pack was just used (eviction is least
    /// recently used first).
    pub(crate) fn touch(&self) -> Result<(), Error> {
        self.state
            .file()
            .set_modified(std::time::SystemTime::now())
            .map_err(Error::io(self.state.path(), "touching the pack state"))
    }

    fn check_stored(&self, e: &PackEntry) -> Result<(), String> {
        let mut frame = vec![0u8; e.stored_len as usize];
        self.data
            .read_exact_at(&mut frame, self.base() + e.offset)
            .map_err(|err| format!("cannot read: {err}"))?;
        check_frame(&frame, e)
    }

    fn checked_frames(&self, range: Range<u64>) -> Result<Range<usize>, Error> {
        if range.start > range.end || range.end > self.file_len() {
            return Err(Error::Usage(format!(
                "{}: bytes {}..{} are not inside the pack file's {} bytes",
                self.path.display(),
                range.start,
                range.end,
                self.file_len()
            )));
        }
        Ok(self.frames_in(range))
    }

    fn ensure_frames(
        &self,
        frames: Range<usize>,
        source: &dyn BlobSource,
        sink: Sink<'_>,
    ) -> Result<(), Error> {
        let mut fetched_any = false;
        loop {
            let mut wanted: Vec<usize> = frames
                .clone()
                .filter(|&i| !self.state.known_present(i))
                .collect();
            if let (Some(&a), Some(&b)) = (wanted.first(), wanted.last()) {
                // Another process may have filled them: the state file says.
                self.state.read(a..b + 1)?;
                wanted.retain(|&i| !self.state.known_present(i));
            }
            if wanted.is_empty() {
                if !fetched_any {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            let (claim, busy) = self.state.claim(&wanted);
            if !claim.frames().is_empty() {
                fetched_any = true;
                self.fill(claim.frames(), source, sink)?;
            }
            drop(claim);
            if !busy.is_empty() {
                self.counters.waits.fetch_add(1, Ordering::Relaxed);
                self.state.wait_released(&busy);
            }
        }
    }

    /// Fills the claimed frames `mine` (ascending): per group of adjacent frames within
    /// [`MAX_REQUEST`], lock, re-read, fetch the runs still absent, check, write, mark.
    fn fill(&self, mine: &[usize], source: &dyn BlobSource, sink: Sink<'_>) -> Result<(), Error> {
        let e = &self.index.entries;
        let mut i = 0;
        while i < mine.len() {
            let first = mine[i];
            let mut j = i + 1;
            while j < mine.len()
                && mine[j] == mine[j - 1] + 1
                && e[mine[j]].offset + u64::from(e[mine[j]].stored_len) - e[first].offset
                    <= MAX_REQUEST
            {
                j += 1;
            }
            let group = first..mine[j - 1] + 1;
            i = j;
            let _lock = self.state.lock_frames(group.clone())?;
            let states = self.state.read(group.clone())?;
            let mut k = 0;
            while k < states.len() {
                if states[k] != ABSENT {
                    k += 1;
                    continue;
                }
                let run = states[k..].iter().take_while(|&&s| s == ABSENT).count();
                let frames = group.start + k..group.start + k + run;
                self.fetch_run(frames, source, sink)?;
                k += run;
            }
        }
        Ok(())
    }

    /// Fetches frames `run` (adjacent, absent, locked by us) in one request, checks every one,
    /// writes them and marks them written. Nothing is written unless all check.
    fn fetch_run(
        &self,
        run: Range<usize>,
        source: &dyn BlobSource,
        sink: Sink<'_>,
    ) -> Result<(), Error> {
        let e = &self.index.entries[run.clone()];
        let (Some(first), Some(last)) = (e.first(), e.last()) else {
            return Ok(());
        };
        let range = first.offset..last.offset + u64::from(last.stored_len);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let got = source.read_range(&self.digest, self.blob_len(), range.clone());
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        let bytes = got.map_err(|source_err| {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            Error::Fetch {
                blob: self.digest,
                range: range.clone(),
                from: source.name(),
                source: source_err,
            }
        })?;
        self.counters
            .fetched_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let bad = |problem: String| {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            Error::BadData {
                pack: self.digest,
                from: source.name(),
                problem,
            }
        };
        if bytes.len() as u64 != range.end - range.start {
            return Err(bad(format!(
                "asked for bytes {}..{}, got {} bytes",
                range.start,
                range.end,
                bytes.len()
            )));
        }
        let frame_of = |f: &PackEntry| {
            let at = (f.offset - range.start) as usize;
            &bytes[at..at + f.stored_len as usize]
        };
        for (k, f) in e.iter().enumerate() {
            check_frame(frame_of(f), f).map_err(|p| {
                bad(format!(
                    "frame {} at {} (chunk {}): {p}",
                    run.start + k,
                    f.offset,
                    f.digest
                ))
            })?;
        }
        for f in e {
            let at = self.base() + f.offset;
            let bytes = frame_of(f);
            // Tail first, head last (docs/lazy.md rule 7): a writer killed between the two
            // writes leaves a frame without its header, which the kernel's EROFS always
            // refuses; a header present without the rest of its frame is not always refused.
            // The head write stays within one page, which a SIGKILL cannot tear.
            let split = usize::try_from((at / PAGE + 1) * PAGE - at)
                .unwrap_or(bytes.len())
                .min(bytes.len());
            let (head, tail) = bytes.split_at(split);
            for (part, offset) in [(tail, at + split as u64), (head, at)] {
                if part.is_empty() {
                    continue;
                }
                match sink {
                    Sink::Own => self.data.write_all_at(part, offset),
                    Sink::File(file) => file.write_all_at(part, offset),
                }
                .map_err(Error::io(&self.path, "writing frames into the pack file"))?;
            }
        }
        self.state.write(run.start, &vec![WRITTEN; run.len()])?;
        for i in run.clone() {
            self.state.mark_present(i);
        }
        self.counters
            .frames_fetched
            .fetch_add(run.len() as u64, Ordering::Relaxed);
        syncer::note(&self.state, &self.data);
        Ok(())
    }

    /// After a reboot (the state's boot id is not this boot's), checks every frame in state 2
    /// and sets it to 1 or 0, under a lock on the whole state file; then records this boot.
    fn repair_after_reboot(&self) -> Result<(), Error> {
        let mut checked = self
            .state
            .boot_checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *checked {
            return Ok(());
        }
        let boot =
            proc::boot_id().map_err(Error::io("/proc/sys/kernel/random/boot_id", "reading"))?;
        if self.state.header().boot_id != boot {
            let _all = self.state.lock_all()?;
            let mut hb = [0u8; super::state::HEADER_LEN as usize];
            self.state
                .file()
                .read_exact_at(&mut hb, 0)
                .map_err(Error::io(self.state.path(), "reading the pack state"))?;
            let mut header = *self.state.header();
            header.boot_id.copy_from_slice(&hb[40..56]);
            if header.boot_id != boot {
                // Not `read`: it would note the unchecked frames present in this process.
                let states = self.state.read_raw(0..self.index.entries.len())?;
                for (i, s) in states.iter().enumerate() {
                    if *s != WRITTEN {
                        continue;
                    }
                    let good = self.check_stored(&self.index.entries[i]).is_ok();
                    self.state.write(i, &[if good { SYNCED } else { ABSENT }])?;
                    self.counters.repaired.fetch_add(1, Ordering::Relaxed);
                }
                header.boot_id = boot;
                self.state.write_header(&header)?;
            }
        }
        *checked = true;
        Ok(())
    }
}

/// `path` with `.ext` appended (`HEX` -> `HEX.state`).
pub(crate) fn with_ext(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}
