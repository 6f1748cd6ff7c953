//! [`StoreDevice`]: an extra device of the FUSE reader backed by a pack file of the local
//! store, filled from the registry on first read (docs/lazy.md §8). `read_at` makes the frames
//! of the range present (`Pack::ensure`: fetched, checked, written, adjacent frames in one
//! request), then reads them from the pack file. The reader checks every chunk against the
//! digest table the helper built from the image's checked metadata, whatever the device gave.
//!
//! A network failure fails the read (the reader answers EIO) and leaves nothing cached: the
//! next read asks again. Sequential reads (a file streamed, or the reader's own decompress-ahead
//! of the frames stored next) fetch ahead: each read that continues the previous one doubles a
//! window, up to [`AHEAD_MAX`], of the next frames the mount reads, fetched with the frames
//! asked for, in the same request.

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

/// Where the last read ended and how far ahead the stream fetches now.
#[derive(Debug, Default)]
struct Stream {
    next: u64,
    window: u64,
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

    /// The fetch-ahead window for a read of `offset..end`, and the stream advanced past it.
    fn window(&self, offset: u64, end: u64) -> u64 {
        let mut s = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let continues = offset <= s.next.saturating_add(GAP) && offset.saturating_add(GAP) >= s.next;
        s.window = if continues && s.next != 0 {
            (s.window.saturating_mul(2)).clamp(AHEAD_MIN, AHEAD_MAX)
        } else {
            0
        };
        s.next = if continues { s.next.max(end) } else { end };
        s.window
    }

    /// The frames to make present for a read of `frames`: those, and the used frames right
    /// after them (adjacent, all used) up to `window` bytes more.
    fn with_ahead(&self, frames: Range<usize>, window: u64) -> Range<usize> {
        let e = self.pack.entries();
        let mut end = frames.end;
        let mut bytes = 0u64;
        while bytes < window {
            match (e.get(end), self.is_used.get(end)) {
                (Some(f), Some(true)) => {
                    bytes = bytes.saturating_add(u64::from(f.stored_len));
                    end += 1;
                }
                _ => break,
            }
        }
        frames.start..end
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
        let window = self.window(offset, end);
        let ahead = self.with_ahead(frames.clone(), window);
        let ensured = if !frames.is_empty() && ahead.end > frames.end {
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
