//! Pack state files (`packs/sha256/HEX.state`, docs/store.md §4): a 64-byte header, then one
//! byte per frame of the pack's index, in index order: [`ABSENT`], [`SYNCED`] or [`WRITTEN`].
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CFSSTAT1` |
//! | 8 | 4 | version, 1 |
//! | 12 | 4 | flags, 0 (a reader refuses others) |
//! | 16 | 8 | base: where the blob's byte 0 is in the pack file (a multiple of the slot size) |
//! | 24 | 8 | the blob's length |
//! | 32 | 8 | frame count |
//! | 40 | 16 | boot id of the boot whose processes last wrote frames (repair, §4) |
//! | 56 | 8 | reserved, 0 |
//!
//! Every process opens a state file once ([`StateFile::open`] keeps a process-wide table):
//! POSIX record locks belong to the process and closing *any* descriptor of the file would
//! release them all. The same object carries this process's in-process lock (which frames a
//! thread is filling) and its cache of frames known present (a present frame stays present
//! for the rest of the boot, so the cache never goes stale).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use super::error::Error;
use super::files::TempFile;
use super::lock::{self, RecordLock};

/// Length of the header.
pub const HEADER_LEN: u64 = 64;
/// `magic` of a state file.
pub const MAGIC: [u8; 8] = *b"CFSSTAT1";
/// The version this crate writes and reads.
pub const VERSION: u32 = 1;
/// State of a frame not in the pack file (a hole, or bytes nobody vouches for).
pub const ABSENT: u8 = 0;
/// State of a frame checked, written and synced to disk.
pub const SYNCED: u8 = 1;
/// State of a frame checked and written, not yet known to be on disk (in this boot's page
/// cache; repaired after a reboot).
pub const WRITTEN: u8 = 2;
/// Most frames a state file may list (a pack index of `oci::pack::INDEX_MAX` bytes).
pub const FRAMES_MAX: u64 = crate::oci::pack::INDEX_MAX / 64;

/// The decoded header of a state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Offset of the blob's byte 0 in the pack file.
    pub base: u64,
    /// The blob's length.
    pub blob_len: u64,
    /// Number of frames.
    pub frames: u64,
    /// Boot id of the boot whose processes last wrote frames.
    pub boot_id: [u8; 16],
}

impl Header {
    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.base.to_le_bytes());
        b[24..32].copy_from_slice(&self.blob_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.frames.to_le_bytes());
        b[40..56].copy_from_slice(&self.boot_id);
        b
    }

    /// Decodes and checks a header: magic, version, flags, reserved bytes, a base that is a
    /// positive multiple of `slot`, a blob length that is a positive multiple of 4096, a frame
    /// count within [`FRAMES_MAX`].
    pub fn decode(b: &[u8; HEADER_LEN as usize], slot: u64) -> Result<Header, String> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        if b[0..8] != MAGIC {
            return Err("bad magic (not a chunkfs pack state file)".into());
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(format!("unknown state file version {version}"));
        }
        if u32_at(12) != 0 || u64_at(56) != 0 {
            return Err("unknown flags or non-zero reserved bytes".into());
        }
        let (base, blob_len, frames) = (u64_at(16), u64_at(24), u64_at(32));
        if base == 0 || base % slot != 0 {
            return Err(format!("base {base} is not a positive multiple of {slot}"));
        }
        if blob_len == 0 || blob_len % crate::oci::pack::BLOB_ALIGN != 0 {
            return Err(format!(
                "blob length {blob_len} is not a positive multiple of 4096"
            ));
        }
        if frames > FRAMES_MAX || base.checked_add(blob_len).is_none() {
            return Err(format!(
                "{frames} frames or window {base}+{blob_len} out of range"
            ));
        }
        let mut boot_id = [0u8; 16];
        boot_id.copy_from_slice(&b[40..56]);
        Ok(Header {
            base,
            blob_len,
            frames,
            boot_id,
        })
    }
}

/// A pack's state file, open once per process.
pub(crate) struct StateFile {
    path: PathBuf,
    file: File,
    dev_ino: (u64, u64),
    header: Header,
    /// Frames this process knows present (state 1 or 2).
    present: Vec<AtomicBool>,
    /// Frames a thread of this process is filling.
    claimed: Mutex<HashSet<usize>>,
    released: Condvar,
    /// Whether the boot id was checked (and the file repaired if needed) in this process.
    pub(crate) boot_checked: Mutex<bool>,
}

/// State files open in this process, by path.
static OPEN: Mutex<Option<HashMap<PathBuf, Weak<StateFile>>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves data that is still consistent (sets and
    // tables updated in one step).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StateFile {
    /// The state file at `path`, opened once per process: the open one if it is still the
    /// file at `path`, else opened, its header checked against `slot` and its length.
    pub(crate) fn open(path: &Path, slot: u64) -> Result<Arc<StateFile>, Error> {
        let mut table = lock(&OPEN);
        let table = table.get_or_insert_with(HashMap::new);
        if let Some(open) = table.get(path).and_then(Weak::upgrade) {
            // stat by path opens nothing, so it cannot drop this process's record locks.
            let now = std::fs::metadata(path).map_err(Error::io(path, "reading the pack state"))?;
            if (now.dev(), now.ino()) == open.dev_ino {
                return Ok(open);
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(Error::io(path, "opening the pack state"))?;
        let meta = file
            .metadata()
            .map_err(Error::io(path, "reading the pack state"))?;
        let mut hb = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut hb, 0).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                Error::corrupt(path, "pack state file is shorter than its header")
            }
            _ => Error::io(path, "reading the pack state")(e),
        })?;
        let header = Header::decode(&hb, slot)
            .map_err(|p| Error::corrupt(path, format!("pack state file: {p}")))?;
        if meta.len() != HEADER_LEN + header.frames {
            return Err(Error::corrupt(
                path,
                format!(
                    "pack state file is {} bytes, its header says {} frames",
                    meta.len(),
                    header.frames
                ),
            ));
        }
        let state = Arc::new(StateFile {
            path: path.to_owned(),
            file,
            dev_ino: (meta.dev(), meta.ino()),
            header,
            present: (0..header.frames).map(|_| AtomicBool::new(false)).collect(),
            claimed: Mutex::new(HashSet::new()),
            released: Condvar::new(),
            boot_checked: Mutex::new(false),
        });
        if table.len() > 64 {
            table.retain(|_, w| w.strong_count() > 0);
        }
        table.insert(path.to_owned(), Arc::downgrade(&state));
        Ok(state)
    }

    /// Creates the state file `dest` of a pack with `header.frames` frames, all absent.
    pub(crate) fn create(tmp_dir: &Path, dest: &Path, header: &Header) -> Result<(), Error> {
        let tmp = TempFile::new(tmp_dir, "state")?;
        let io = Error::io(tmp.path(), "writing a pack state file");
        tmp.file()
            .write_all_at(&header.encode(), 0)
            .and_then(|()| tmp.file().set_len(HEADER_LEN + header.frames))
            .map_err(io)?;
        tmp.persist(dest)
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The header as read at open.
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// The open file (for the pack file's modification time and the repair).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The states of `frames`, read from the file (checked: 0, 1 or 2), and noted in the
    /// present cache.
    pub(crate) fn read(&self, frames: Range<usize>) -> Result<Vec<u8>, Error> {
        let states = self.read_raw(frames.clone())?;
        for (i, &s) in states.iter().enumerate() {
            if s != ABSENT {
                self.mark_present(frames.start + i);
            }
        }
        Ok(states)
    }

    /// The states of `frames`, read from the file and checked, not noted anywhere.
    pub(crate) fn read_raw(&self, frames: Range<usize>) -> Result<Vec<u8>, Error> {
        let len = frames.end.saturating_sub(frames.start);
        let mut states = vec![0u8; len];
        self.file
            .read_exact_at(&mut states, HEADER_LEN + frames.start as u64)
            .map_err(Error::io(&self.path, "reading the pack state"))?;
        if let Some(i) = states.iter().position(|&s| s > WRITTEN) {
            return Err(Error::corrupt(
                &self.path,
                format!(
                    "pack state file: frame {} has state {}",
                    frames.start + i,
                    states[i]
                ),
            ));
        }
        Ok(states)
    }

    /// Writes the states of frames `first..first + values.len()`.
    pub(crate) fn write(&self, first: usize, values: &[u8]) -> Result<(), Error> {
        self.file
            .write_all_at(values, HEADER_LEN + first as u64)
            .map_err(Error::io(&self.path, "writing the pack state"))
    }

    /// Replaces the header (the repair records the new boot id).
    pub(crate) fn write_header(&self, header: &Header) -> Result<(), Error> {
        self.file
            .write_all_at(&header.encode(), 0)
            .and_then(|()| self.file.sync_data())
            .map_err(Error::io(&self.path, "writing the pack state header"))
    }

    /// Takes the record lock on the state bytes of `frames` (waiting for other processes).
    pub(crate) fn lock_frames(&self, frames: Range<usize>) -> Result<RecordLock<'_>, Error> {
        let len = frames.end.saturating_sub(frames.start) as u64;
        RecordLock::write(&self.file, HEADER_LEN + frames.start as u64, len)
            .map_err(Error::io(&self.path, "locking frames of the pack state"))
    }

    /// Takes the record lock on the whole file, header included (the repair after a reboot).
    pub(crate) fn lock_all(&self) -> Result<RecordLock<'_>, Error> {
        RecordLock::write(&self.file, 0, HEADER_LEN + self.header.frames)
            .map_err(Error::io(&self.path, "locking the pack state"))
    }

    /// The pid of another process holding a record lock on frame `frame`'s state byte.
    pub(crate) fn holder(&self, frame: usize) -> Result<Option<i32>, Error> {
        lock::holder(&self.file, HEADER_LEN + frame as u64, 1).map_err(Error::io(
            &self.path,
            "asking who locks frames of the pack state",
        ))
    }

    /// True if this process knows frame `i` present.
    pub(crate) fn known_present(&self, i: usize) -> bool {
        self.present
            .get(i)
            .is_some_and(|p| p.load(Ordering::Acquire))
    }

    /// Notes frame `i` present.
    pub(crate) fn mark_present(&self, i: usize) {
        if let Some(p) = self.present.get(i) {
            p.store(true, Ordering::Release);
        }
    }

    /// Claims, for the calling thread, the frames of `wanted` no other thread of this process
    /// is filling. Returns the claim and the frames other threads are filling.
    pub(crate) fn claim(&self, wanted: &[usize]) -> (Claim<'_>, Vec<usize>) {
        let mut claimed = lock(&self.claimed);
        let (busy, mine): (Vec<usize>, Vec<usize>) =
            wanted.iter().partition(|f| claimed.contains(f));
        claimed.extend(mine.iter().copied());
        (
            Claim {
                state: self,
                frames: mine,
            },
            busy,
        )
    }

    /// Waits until no thread of this process fills any frame of `busy` (or a second passes:
    /// the caller checks again anyway).
    pub(crate) fn wait_released(&self, busy: &[usize]) {
        let claimed = lock(&self.claimed);
        let _ = self
            .released
            .wait_timeout_while(claimed, Duration::from_secs(1), |c| {
                busy.iter().any(|f| c.contains(f))
            });
    }
}

/// Frames a thread of this process is filling; released when dropped.
pub(crate) struct Claim<'a> {
    state: &'a StateFile,
    frames: Vec<usize>,
}

impl Claim<'_> {
    /// The claimed frames, ascending as they were asked for.
    pub(crate) fn frames(&self) -> &[usize] {
        &self.frames
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.frames.is_empty() {
            return;
        }
        let mut claimed = lock(&self.state.claimed);
        for f in &self.frames {
            claimed.remove(f);
        }
        self.state.released.notify_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SLOT: u64 = 128 << 20;

    fn header() -> Header {
        Header {
            base: SLOT * 3,
            blob_len: 8192,
            frames: 5,
            boot_id: [7; 16],
        }
    }

    #[test]
    fn header_round_trips_and_damage_is_refused() {
        let h = header();
        let b = h.encode();
        assert_eq!(Header::decode(&b, SLOT).unwrap(), h);
        for (at, what) in [
            (0, "magic"),
            (8, "version"),
            (12, "flags"),
            (60, "reserved"),
        ] {
            let mut m = b;
            m[at] ^= 1;
            assert!(Header::decode(&m, SLOT).is_err(), "{what}");
        }
        let mut m = b;
        m[16..24].copy_from_slice(&(SLOT + 1).to_le_bytes());
        assert!(Header::decode(&m, SLOT).unwrap_err().contains("base"));
        let mut m = b;
        m[24..32].copy_from_slice(&4000u64.to_le_bytes());
        assert!(
            Header::decode(&m, SLOT)
                .unwrap_err()
                .contains("blob length")
        );
    }

    #[test]
    fn open_once_per_process_and_states_checked() {
        let tmp = crate::oci::test_dir();
        let t = tmp.path().join("tmp");
        std::fs::create_dir(&t).unwrap();
        let path = tmp.path().join("x.state");
        StateFile::create(&t, &path, &header()).unwrap();
        let a = StateFile::open(&path, SLOT).unwrap();
        let b = StateFile::open(&path, SLOT).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.read(0..5).unwrap(), vec![0; 5]);
        a.write(1, &[WRITTEN, SYNCED]).unwrap();
        assert_eq!(a.read(0..5).unwrap(), vec![0, 2, 1, 0, 0]);
        assert!(a.known_present(1) && a.known_present(2) && !a.known_present(3));
        a.write(4, &[9]).unwrap();
        let err = a.read(0..5).unwrap_err().to_string();
        assert!(
            err.contains("x.state") && err.contains("frame 4 has state 9"),
            "{err}"
        );

        // A replaced file is opened anew.
        StateFile::create(&t, &path, &header()).unwrap();
        let c = StateFile::open(&path, SLOT).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));

        // A truncated file is refused with its name.
        drop((a, b, c));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(HEADER_LEN + 2)
            .unwrap();
        let err = StateFile::open(&path, SLOT).err().unwrap().to_string();
        assert!(err.contains("x.state") && err.contains("5 frames"), "{err}");
    }

    #[test]
    fn claims_exclude_threads() {
        let tmp = crate::oci::test_dir();
        let t = tmp.path().join("tmp");
        std::fs::create_dir(&t).unwrap();
        let path = tmp.path().join("y.state");
        StateFile::create(&t, &path, &header()).unwrap();
        let s = StateFile::open(&path, SLOT).unwrap();
        let (c1, busy) = s.claim(&[0, 1, 2]);
        assert!(busy.is_empty());
        let (c2, busy) = s.claim(&[2, 3]);
        assert_eq!((c2.frames(), busy.as_slice()), (&[3][..], &[2][..]));
        std::thread::scope(|sc| {
            let waiter = sc.spawn(|| {
                s.wait_released(&[2]);
                s.claim(&[2]).0.frames().to_vec()
            });
            std::thread::sleep(Duration::from_millis(50));
            drop(c1);
            assert_eq!(waiter.join().unwrap(), vec![2]);
        });
    }
}
