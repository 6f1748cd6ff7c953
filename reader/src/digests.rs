//! The digest tables of all devices: where each chunk frame is and the sha256 of its content.

use chunkfs_kernel_abi::digest_table::{DIGEST_FLAG_ZSTD, DigestEntry, DigestTable};

use crate::error::OpenError;

/// One digest table as given to [`crate::Config`].
#[derive(Clone, Debug)]
pub struct DigestSource {
    /// The table bytes (`kernel_abi::digest_table` format).
    pub bytes: Vec<u8>,
    /// The device the table describes, whatever device ids its entries carry (an OCI pack
    /// blob's index lists its frames as device 0); `None` if the entries carry the real ids.
    pub device: Option<u16>,
}

struct Table {
    bytes: Vec<u8>,
    /// For a per-device table: (the device, the id its entries use).
    device: Option<(u16, u16)>,
}

/// Lookups across all tables.
pub(crate) struct Digests {
    tables: Vec<Table>,
}

impl Digests {
    pub fn new(sources: Vec<DigestSource>) -> Result<Self, OpenError> {
        let mut tables = Vec::with_capacity(sources.len());
        for (index, s) in sources.into_iter().enumerate() {
            let t = DigestTable::parse(&s.bytes)
                .map_err(|source| OpenError::DigestTable { index, source })?;
            let device = match s.device {
                None => None,
                Some(device) => {
                    let id = t.entry(0).map_or(device, |e| e.device.get());
                    if t.iter().any(|e| e.device.get() != id) {
                        return Err(OpenError::MixedDevices { index, device });
                    }
                    Some((device, id))
                }
            };
            tables.push(Table {
                bytes: s.bytes,
                device,
            });
        }
        Ok(Self { tables })
    }

    /// The frame that ends exactly at `end` and starts in `[start, end)` on `device`: the whole
    /// cluster (48-bit extents) or its zero-padded tail (cluster layout).
    pub fn frame_in(&self, device: u16, start: u64, end: u64) -> Option<DigestEntry> {
        self.tables.iter().find_map(|t| {
            let id = match t.device {
                Some((d, id)) if d == device => id,
                Some(_) => return None,
                None => device,
            };
            let view = DigestTable::view(&t.bytes).ok()?;
            let e = view.first_at_or_after(id, start)?;
            let (off, len) = (e.offset.get(), u64::from(e.stored_len.get()));
            (e.device.get() == id && off < end && off.checked_add(len) == Some(end)).then_some(*e)
        })
    }

    /// The entry of the data starting exactly at `offset` of `device`.
    pub fn frame_at(&self, device: u16, offset: u64) -> Option<DigestEntry> {
        self.tables.iter().find_map(|t| {
            let id = match t.device {
                Some((d, id)) if d == device => id,
                Some(_) => return None,
                None => device,
            };
            DigestTable::view(&t.bytes).ok()?.find(id, offset).copied()
        })
    }

    /// The first zstd frame of `device` starting at or after `offset`: the frame stored next.
    pub fn next_frame(&self, device: u16, offset: u64) -> Option<DigestEntry> {
        self.tables
            .iter()
            .filter_map(|t| {
                let id = match t.device {
                    Some((d, id)) if d == device => id,
                    Some(_) => return None,
                    None => device,
                };
                let e = DigestTable::view(&t.bytes)
                    .ok()?
                    .first_at_or_after(id, offset)?;
                (e.device.get() == id && e.flags.get() & DIGEST_FLAG_ZSTD != 0).then_some(*e)
            })
            .min_by_key(|e| e.offset.get())
    }

    /// Number of entries in all tables.
    pub fn len(&self) -> usize {
        self.tables
            .iter()
            .filter_map(|t| DigestTable::view(&t.bytes).ok())
            .map(|v| v.len())
            .sum()
    }
}
