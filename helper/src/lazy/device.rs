//! [`StoreDevice`]: an extra device of the FUSE reader backed by a pack file of the local
//! store, filled from the registry on first read (docs/lazy.md §8). `read_at` makes the frames
//! of the range present (`Pack::ensure`: fetched, checked, written, adjacent frames in one
//! request), then reads them from the pack file. The reader checks every chunk against the
//! digest table the helper built from the image's checked metadata, whatever the device gave.
//!
//! A network failure fails the read (the reader answers EIO) and leaves nothing cached: the
//! next read asks again. Sequential reads (a file streamed: the kernel's readahead makes the
//! reader read its chunks in storage order) fetch ahead ([`Stream`]): from the third read in a
//! row that continues the one before, a window of the next frames the mount reads, doubling up
//! to [`AHEAD_MAX`], is fetched with the frames asked for, in the same request. The reader's
//! own decompress-ahead is off for lazy mounts (it would fetch eight chunks after every small
//! file read).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use chunkfs_distribution::source::BlobSource;
use chunkfs_distribution::store::Pack;
use chunkfs_reader::{Device, DeviceError};

/// The first fetch-ahead window of a sequential stream.
pub const AHEAD_MIN: u64 = 256 << 10;
/// The largest fetch-ahead window.
pub const AHEAD_MAX: u64 = 2 << 20;
/// How far past the previous read's end a read may start and still continue it (frames of
/// files read out of order by the decompress-ahead thread, padding).
const GAP: u64 = 1 << 20;

/// A stream of reads of one pack file: where the last read ended, how many reads in a row
/// continued the one before, and how far ahead it fetches now. Reads that continue each other
/// (within [`GAP`]) from the third on fetch ahead a window that doubles per read, from
/// [`AHEAD_MIN`] to [`AHEAD_MAX`]; a read elsewhere starts a new stream with no window. A lone
/// small-file read so fetches only its own frames.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    next: u64,
    run: u32,
    window: u64,
}

impl Stream {
    /// Notes a read of `offset..end`; returns how many bytes of frames after it to fetch too.
    pub(crate) fn advance(&mut self, offset: u64, end: u64) -> u64 {
        let continues = self.next != 0
            && offset <= self.next.saturating_add(GAP)
            && offset.saturating_add(GAP) >= self.next;
        if continues {
            self.run = self.run.saturating_add(1);
            self.next = self.next.max(end);
        } else {
            self.run = 0;
            self.window = 0;
            self.next = end;
        }
        if self.run >= 2 {
            self.window = self.window.saturating_mul(2).clamp(AHEAD_MIN, AHEAD_MAX);
        }
        self.window
    }
}

/// Frames `frames` of `pack` and the frames right after them that `is_used` marks (adjacent,
/// all used), up to `window` bytes more.
pub(crate) fn with_ahead(
    pack: &Pack,
    is_used: &[bool],
    frames: Range<usize>,
    window: u64,
) -> Range<usize> {
    if frames.is_empty() {
        return frames;
    }
    let e = pack.entries();
    let mut end = frames.end;
    let mut bytes = 0u64;
    while bytes < window {
        match (e.get(end), is_used.get(end)) {
            (Some(f), Some(true)) => {
                bytes = bytes.saturating_add(u64::from(f.stored_len));
                end += 1;
            }
            _ => break,
        }
    }
    frames.start..end
}

/// A pack of the store as a lazily filled device (see the module documentation).
pub struct StoreDevice {
    pack: Arc<Pack>,
    source: Arc<dyn BlobSource>,
    /// `is_used[i]`: the mount reads frame `i` (fetch-ahead never fetches other frames).
    is_used: Vec<bool>,
    stream: Mutex<Stream>,
}

impl std::fmt::Debug for StoreDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDevice")
            .field("pack", &self.pack.digest())
            .finish()
    }
}

impl StoreDevice {
    /// `pack`, of which the mount reads frames `used`, filled from `source`.
    pub fn new(pack: Arc<Pack>, used: &[usize], source: Arc<dyn BlobSource>) -> Self {
        let mut is_used = vec![false; pack.entries().len()];
        for &f in used {
            if let Some(u) = is_used.get_mut(f) {
                *u = true;
            }
        }
        Self {
            pack,
            source,
            is_used,
            stream: Mutex::new(Stream::default()),
        }
    }
}

impl Device for StoreDevice {
    fn len(&self) -> u64 {
        self.pack.file_len()
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>, DeviceError> {
        let name = || format!("pack {}", self.pack.digest());
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.pack.file_len())
            .ok_or_else(|| {
                DeviceError(format!(
                    "{}: bytes {offset}+{len} are past its end",
                    name()
                ))
            })?;
        let n = usize::try_from(len)
            .map_err(|_| DeviceError(format!("{}: a read of {len} bytes", name())))?;
        let frames = self.pack.frames_in(offset..end);
        let window = self
            .stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .advance(offset, end);
        let ahead = with_ahead(&self.pack, &self.is_used, frames.clone(), window);
        let ensured = if ahead.end > frames.end {
            // A frame ahead that fails (a hostile registry) must not fail this read.
            self.pack
                .ensure_frames_of(ahead, &*self.source)
                .or_else(|_| self.pack.ensure(offset..end, &*self.source))
        } else {
            self.pack.ensure(offset..end, &*self.source)
        };
        ensured.map_err(|e| DeviceError(e.to_string()))?;
        let mut buf = vec![0u8; n];
        self.pack
            .read_at(&mut buf, offset)
            .map_err(|e| DeviceError(e.to_string()))?;
        Ok(Cow::Owned(buf))
    }

    fn name(&self) -> String {
        format!("{} (pack {})", self.pack.path().display(), self.pack.digest())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_fetch_ahead_from_their_third_read_on() {
        let mut s = Stream::default();
        // A lone read, and a read elsewhere: no window.
        assert_eq!(s.advance(1 << 30, (1 << 30) + 4096), 0);
        assert_eq!(s.advance(5 << 30, (5 << 30) + 4096), 0);
        // Reads that continue each other: the third opens the window, which then doubles.
        let mut at = 5 << 30;
        let mut windows = Vec::new();
        for _ in 0..6 {
            at += 4096;
            windows.push(s.advance(at, at + 65536));
            at += 65536;
        }
        assert_eq!(
            windows,
            [0, AHEAD_MIN, AHEAD_MIN * 2, AHEAD_MIN * 4, AHEAD_MAX, AHEAD_MAX]
        );
        // A jump starts over.
        assert_eq!(s.advance(at + 10 * GAP, at + 10 * GAP + 1), 0);
    }
}
