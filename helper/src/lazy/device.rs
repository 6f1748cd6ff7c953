//! [`StoreDevice`]: an extra device of the FUSE reader backed by a pack file of the local
//! store, filled from the registry on first read (docs/lazy.md §8). `read_at` makes the frames
//! of the range present (`Pack::ensure`: fetched, checked, written, adjacent frames in one
//! request), then reads them from the pack file. The reader checks every chunk against the
//! digest table the helper built from the image's checked metadata, whatever the device gave.
//!
//! A network failure fails the read (the reader answers EIO) and leaves nothing cached: the
//! next read asks again. Sequential reads (a file streamed: the kernel's readahead makes the
//! reader read its chunks in storage order) fetch ahead in the background ([`ahead`]). The
//! reader's own decompress-ahead is off for lazy mounts (it would fetch eight chunks after
//! every small file read).

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use chunkfs_distribution::source::BlobSource;
use chunkfs_distribution::store::Pack;
use chunkfs_reader::{Device, DeviceError};

use super::ahead;

/// A pack of the store as a lazily filled device (see the module documentation).
pub struct StoreDevice {
    pack: Arc<Pack>,
    source: Arc<dyn BlobSource>,
    /// `is_used[i]`: the mount reads frame `i` (fetch-ahead never fetches other frames).
    is_used: Vec<bool>,
    stream: Mutex<ahead::Streams>,
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
            stream: Mutex::new(ahead::Streams::default()),
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
                DeviceError(format!("{}: bytes {offset}+{len} are past its end", name()))
            })?;
        let n = usize::try_from(len)
            .map_err(|_| DeviceError(format!("{}: a read of {len} bytes", name())))?;
        let scheduled = self
            .stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .advance(offset, end);
        if let Some(bytes) = scheduled {
            let pool = ahead::Pool::get();
            for piece in ahead::pieces(&self.pack, &self.is_used, bytes) {
                let (pack, source) = (self.pack.clone(), self.source.clone());
                // Errors are left for the reads that need the frames.
                pool.submit(move || {
                    let _ = pack.ensure_frames_of(piece, &*source);
                });
            }
        }
        self.pack
            .ensure(offset..end, &*self.source)
            .map_err(|e| DeviceError(e.to_string()))?;
        let mut buf = vec![0u8; n];
        self.pack
            .read_at(&mut buf, offset)
            .map_err(|e| DeviceError(e.to_string()))?;
        Ok(Cow::Owned(buf))
    }

    fn name(&self) -> String {
        format!(
            "{} (pack {})",
            self.pack.path().display(),
            self.pack.digest()
        )
    }
}
