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
use std::sync::Arc;

use chunkfs_distribution::source::BlobSource;
use chunkfs_distribution::store::Pack;
use chunkfs_reader::{Device, DeviceError};

use super::ahead;

/// A pack of the store as a lazily filled device (see the module documentation).
pub struct StoreDevice {
    pack: Arc<Pack>,
    source: Arc<dyn BlobSource>,
    /// The mount's fetch-ahead, shared by its devices; this one is device `device` there.
    ahead: Arc<ahead::Follower>,
    device: usize,
}

impl std::fmt::Debug for StoreDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDevice")
            .field("pack", &self.pack.digest())
            .finish()
    }
}

/// Background fetches through the store's own descriptors.
struct OwnFetch {
    packs: Vec<Arc<Pack>>,
    source: Arc<dyn BlobSource>,
}

impl ahead::Fetch for OwnFetch {
    fn fetch(&self, device: usize, frames: std::ops::Range<usize>) {
        if let Some(p) = self.packs.get(device) {
            let _ = p.ensure_frames_of(frames, &*self.source);
        }
    }
}

impl StoreDevice {
    /// The devices of a mount: `packs` in device order, of which the mount reads frames
    /// `used` (index positions, per pack), filled from `source`, with one fetch-ahead for all
    /// (a read-all continues from one pack into the next).
    pub fn for_packs(
        packs: &[Arc<Pack>],
        used: &[Vec<usize>],
        source: Arc<dyn BlobSource>,
    ) -> Vec<StoreDevice> {
        let fetch = Arc::new(OwnFetch {
            packs: packs.to_vec(),
            source: source.clone(),
        });
        let ahead = Arc::new(ahead::Follower::new(
            packs
                .iter()
                .zip(used)
                .map(|(p, u)| (p.clone(), u.as_slice()))
                .collect(),
            fetch,
        ));
        packs
            .iter()
            .enumerate()
            .map(|(device, pack)| StoreDevice {
                pack: pack.clone(),
                source: source.clone(),
                ahead: ahead.clone(),
                device,
            })
            .collect()
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
        self.ahead.read(self.device, offset..end);
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
