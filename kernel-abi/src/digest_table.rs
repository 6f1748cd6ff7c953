//! chunkfs's digest table: the sha256 of every physical chunk frame, keyed by device and offset
//! (docs/descriptor.md, "Digest table").
//!
//! The same table is the chunk index of a `.cfs` (all entries on device 0) and the index at the
//! end of an OCI pack blob. Layout: one [`DigestTableHeader`], then `count` entries of
//! `entry_size` bytes, each beginning with a [`DigestEntry`], sorted by `(device, offset)`.

use crate::error::AbiError;
use crate::le::{Le16, Le32, Le64};
use crate::pod::Pod;

/// `DigestTableHeader.magic`.
pub const DIGEST_TABLE_MAGIC: [u8; 8] = *b"CFSDGST1";
/// The table version this crate writes and reads.
pub const DIGEST_TABLE_VERSION: u32 = 1;
/// `DigestEntry.flags` bit 0: the frame is a zstd frame (always set in version 1).
pub const DIGEST_FLAG_ZSTD: u16 = 1;

/// Header of a digest table, 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DigestTableHeader {
    /// [`DIGEST_TABLE_MAGIC`].
    pub magic: [u8; 8],
    /// [`DIGEST_TABLE_VERSION`]; a reader refuses a larger one.
    pub version: Le32,
    /// Bytes per entry, at least `size_of::<DigestEntry>()`; extra bytes are ignored.
    pub entry_size: Le32,
    /// Number of entries.
    pub count: Le64,
    /// Zero.
    pub reserved: Le64,
}
const _: () = assert!(core::mem::size_of::<DigestTableHeader>() == 32);

/// One physical chunk frame, 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DigestEntry {
    /// Byte offset of the frame within its device.
    pub offset: Le64,
    /// 0 for the primary device, `k` for the k-th extra device (EROFS device id).
    pub device: Le16,
    /// `DIGEST_FLAG_*` bits.
    pub flags: Le16,
    /// Length of the stored frame in bytes.
    pub stored_len: Le32,
    /// Length of the decompressed chunk in bytes.
    pub raw_len: Le32,
    /// Zero.
    pub reserved: Le32,
    /// Zero.
    pub reserved2: Le64,
    /// sha256 of the decompressed chunk.
    pub sha256: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<DigestEntry>() == 64);

/// A validated digest table: entries sorted by `(device, offset)`, frames not overlapping.
#[derive(Clone, Copy, Debug)]
pub struct DigestTable<'a> {
    entries: &'a [u8],
    entry_size: usize,
    count: usize,
}

impl<'a> DigestTable<'a> {
    /// Parses and validates a whole table; `bytes` may extend past its end.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, AbiError> {
        const WHAT: &str = "digest table";
        let table = Self::view(bytes)?;
        let mut prev_end: Option<(u16, u64)> = None;
        for i in 0..table.count {
            let e = table.entry(i).ok_or(AbiError::Truncated { what: WHAT })?;
            let (dev, off, len) = (
                e.device.get(),
                e.offset.get(),
                u64::from(e.stored_len.get()),
            );
            if len == 0 || e.raw_len.get() == 0 {
                return Err(AbiError::BadField {
                    field: "digest entry length",
                    value: i as u64,
                });
            }
            let end = off.checked_add(len).ok_or(AbiError::OutOfRange {
                table: WHAT,
                index: i as u64,
            })?;
            if let Some((pdev, pend)) = prev_end {
                if dev < pdev || (dev == pdev && off < pend) {
                    return Err(AbiError::Unsorted {
                        table: WHAT,
                        index: i as u64,
                    });
                }
            }
            prev_end = Some((dev, end));
        }
        Ok(table)
    }

    /// Views a table already checked by [`DigestTable::parse`], checking only its header and
    /// length (O(1)). On bytes that were never parsed, lookups may give wrong answers but never
    /// panic or read out of bounds.
    pub fn view(bytes: &'a [u8]) -> Result<Self, AbiError> {
        const WHAT: &str = "digest table";
        let (hdr, rest) =
            DigestTableHeader::ref_from_prefix(bytes).ok_or(AbiError::Truncated { what: WHAT })?;
        if hdr.magic != DIGEST_TABLE_MAGIC {
            return Err(AbiError::BadMagic { what: WHAT });
        }
        let version = hdr.version.get();
        if version != DIGEST_TABLE_VERSION {
            return Err(AbiError::UnknownVersion {
                what: WHAT,
                version,
            });
        }
        let entry_size = hdr.entry_size.get() as usize;
        if entry_size < core::mem::size_of::<DigestEntry>() || entry_size > 4096 {
            return Err(AbiError::BadField {
                field: "digest table entry size",
                value: entry_size as u64,
            });
        }
        let count =
            usize::try_from(hdr.count.get()).map_err(|_| AbiError::Truncated { what: WHAT })?;
        let len = count
            .checked_mul(entry_size)
            .ok_or(AbiError::Truncated { what: WHAT })?;
        let entries = rest.get(..len).ok_or(AbiError::Truncated { what: WHAT })?;
        Ok(Self {
            entries,
            entry_size,
            count,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the table occupies, header included.
    pub fn byte_len(&self) -> usize {
        // Cannot overflow: `parse` checked that the entries are inside the input.
        core::mem::size_of::<DigestTableHeader>().saturating_add(self.entries.len())
    }

    /// Entry `i`, or `None` past the end.
    pub fn entry(&self, i: usize) -> Option<&'a DigestEntry> {
        let start = i.checked_mul(self.entry_size)?;
        let end = start.checked_add(core::mem::size_of::<DigestEntry>())?;
        self.entries.get(start..end).and_then(DigestEntry::ref_from)
    }

    /// The entry of the frame that starts exactly at `(device, offset)`, by binary search.
    pub fn find(&self, device: u16, offset: u64) -> Option<&'a DigestEntry> {
        self.first_at_or_after(device, offset)
            .filter(|e| (e.device.get(), e.offset.get()) == (device, offset))
    }

    /// The first entry at or after `(device, offset)` in table order, by binary search: the frame
    /// that starts at `offset` or, if none does, the next one (e.g. behind zero padding).
    pub fn first_at_or_after(&self, device: u16, offset: u64) -> Option<&'a DigestEntry> {
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = lo.wrapping_add(hi.wrapping_sub(lo) / 2);
            let e = self.entry(mid)?;
            if (e.device.get(), e.offset.get()) < (device, offset) {
                lo = mid.wrapping_add(1);
            } else {
                hi = mid;
            }
        }
        self.entry(lo)
    }

    /// All entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a DigestEntry> + 'a {
        let t = *self;
        (0..t.count).filter_map(move |i| t.entry(i))
    }
}

/// Bytes needed to encode a table of `count` entries.
pub const fn encoded_len(count: usize) -> usize {
    let entries = count.saturating_mul(core::mem::size_of::<DigestEntry>());
    entries.saturating_add(core::mem::size_of::<DigestTableHeader>())
}

/// The header of a table of `count` entries of the standard size.
pub fn header(count: u64) -> DigestTableHeader {
    DigestTableHeader {
        magic: DIGEST_TABLE_MAGIC,
        version: Le32::new(DIGEST_TABLE_VERSION),
        entry_size: Le32::new(core::mem::size_of::<DigestEntry>() as u32),
        count: Le64::new(count),
        reserved: Le64::new(0),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn entry(device: u16, offset: u64, len: u32, tag: u8) -> DigestEntry {
        DigestEntry {
            offset: Le64::new(offset),
            device: Le16::new(device),
            flags: Le16::new(DIGEST_FLAG_ZSTD),
            stored_len: Le32::new(len),
            raw_len: Le32::new(len * 2),
            reserved: Le32::new(0),
            reserved2: Le64::new(0),
            sha256: [tag; 32],
        }
    }

    fn encode(entries: &[DigestEntry]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(header(entries.len() as u64).as_bytes());
        for e in entries {
            out.extend_from_slice(e.as_bytes());
        }
        out
    }

    #[test]
    fn parses_and_finds() {
        let bytes = encode(&[
            entry(0, 4096, 100, 1),
            entry(0, 4196, 50, 2),
            entry(1, 0, 10, 3),
        ]);
        let t = DigestTable::parse(&bytes).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.byte_len(), bytes.len());
        assert_eq!(t.find(0, 4196).unwrap().sha256, [2; 32]);
        assert_eq!(t.find(1, 0).unwrap().sha256, [3; 32]);
        assert!(t.find(0, 4197).is_none());
        assert_eq!(t.first_at_or_after(0, 4100).unwrap().sha256, [2; 32]);
        assert_eq!(t.first_at_or_after(0, 5000).unwrap().sha256, [3; 32]);
        assert!(t.first_at_or_after(1, 1).is_none());
        assert_eq!(DigestTable::view(&bytes).unwrap().len(), 3);
    }

    #[test]
    fn refuses_overlap_disorder_truncation_and_bad_magic() {
        let overlap = encode(&[entry(0, 0, 100, 1), entry(0, 99, 1, 2)]);
        assert!(matches!(
            DigestTable::parse(&overlap),
            Err(AbiError::Unsorted { index: 1, .. })
        ));
        let disorder = encode(&[entry(1, 0, 1, 1), entry(0, 10, 1, 2)]);
        assert!(matches!(
            DigestTable::parse(&disorder),
            Err(AbiError::Unsorted { .. })
        ));
        let good = encode(&[entry(0, 0, 1, 1)]);
        assert!(matches!(
            DigestTable::parse(&good[..good.len() - 1]),
            Err(AbiError::Truncated { .. })
        ));
        let mut magic = good.clone();
        magic[0] ^= 1;
        assert!(matches!(
            DigestTable::parse(&magic),
            Err(AbiError::BadMagic { .. })
        ));
        let mut huge = good.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(DigestTable::parse(&huge).is_err());
    }
}
