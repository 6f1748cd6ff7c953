//! Chunk index encoding and checking (docs/format.md §5): the digest table of
//! `chunkfs_kernel_abi::digest_table` built from located chunks, and the check that a parsed
//! table agrees with an image's chunk list.

use chunkfs_kernel_abi::digest_table::{self, DIGEST_FLAG_ZSTD, DigestEntry, DigestTable};
use chunkfs_kernel_abi::{Le16, Le32, Le64, Pod};

use crate::model::{ChunkIdx, ChunkInfo};
use crate::translate::ChunkLocation;

/// Why a chunk index does not describe an image's chunks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The table itself is malformed.
    #[error("{0}")]
    Table(#[from] chunkfs_kernel_abi::AbiError),
    /// Entry count differs from the metadata's chunk count.
    #[error("it has {entries} entries, the metadata lists {chunks} chunks")]
    Count {
        /// Entries in the table.
        entries: usize,
        /// Chunks in the metadata.
        chunks: usize,
    },
    /// An entry disagrees with its chunk or lies outside the region.
    #[error("entry {chunk}: {problem}")]
    Entry {
        /// The chunk.
        chunk: ChunkIdx,
        /// What is wrong.
        problem: String,
    },
}

impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Corrupt
    }
}

/// Encodes the table whose entry `i` is chunk `i`, stored at `locations[i]`. Entries must be in
/// `(device, offset)` order, which holds when frames are written in chunk order.
pub fn encode(chunks: &[ChunkInfo], locations: &[ChunkLocation]) -> Vec<u8> {
    let mut out = Vec::with_capacity(digest_table::encoded_len(chunks.len()));
    out.extend_from_slice(digest_table::header(chunks.len() as u64).as_bytes());
    for (c, loc) in chunks.iter().zip(locations) {
        let entry = DigestEntry {
            offset: Le64::new(loc.offset),
            device: Le16::new(loc.device),
            flags: Le16::new(DIGEST_FLAG_ZSTD),
            stored_len: Le32::new(loc.stored_len),
            raw_len: Le32::new(c.size),
            reserved: Le32::new(0),
            reserved2: Le64::new(0),
            sha256: c.digest.0,
        };
        out.extend_from_slice(entry.as_bytes());
    }
    out
}

/// Checks that entry `i` of `table` is chunk `i` of `chunks` (same digest and size), on device
/// `device`, with its frame inside `[start, end)`.
pub fn check(
    table: &DigestTable,
    chunks: &[ChunkInfo],
    device: u16,
    start: u64,
    end: u64,
) -> Result<(), Error> {
    if table.len() != chunks.len() {
        return Err(Error::Count {
            entries: table.len(),
            chunks: chunks.len(),
        });
    }
    for (i, (e, c)) in table.iter().zip(chunks).enumerate() {
        let bad = |problem: String| Error::Entry {
            chunk: i as ChunkIdx,
            problem,
        };
        if e.sha256 != c.digest.0 {
            return Err(bad("its sha256 differs from the metadata's".into()));
        }
        if e.raw_len.get() != c.size {
            return Err(bad(format!(
                "size {} differs from the metadata's {}",
                e.raw_len.get(),
                c.size
            )));
        }
        if e.device.get() != device {
            return Err(bad(format!("names device {}", e.device.get())));
        }
        if e.flags.get() != DIGEST_FLAG_ZSTD {
            return Err(bad(format!("has unknown flags {:#x}", e.flags.get())));
        }
        let (off, len) = (e.offset.get(), u64::from(e.stored_len.get()));
        if off < start
            || off.saturating_add(len) > end
            || len > u64::from(crate::compress::FRAME_MAX)
        {
            return Err(bad(format!(
                "frame [{off}, +{len}) is outside the chunk region [{start}, {end}) or too long"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn encodes_what_the_parser_accepts_and_checks_agreement() {
        let chunks = vec![
            ChunkInfo {
                digest: Digest::of(b"a"),
                size: 10,
            },
            ChunkInfo {
                digest: Digest::of(b"b"),
                size: 20,
            },
        ];
        let locs = vec![
            ChunkLocation {
                device: 0,
                offset: 4096,
                stored_len: 5,
            },
            ChunkLocation {
                device: 0,
                offset: 4101,
                stored_len: 7,
            },
        ];
        let bytes = encode(&chunks, &locs);
        let table = DigestTable::parse(&bytes).unwrap();
        check(&table, &chunks, 0, 4096, 4108).unwrap();
        assert!(matches!(
            check(&table, &chunks, 0, 4096, 4107),
            Err(Error::Entry { chunk: 1, .. })
        ));
        let mut swapped = chunks.clone();
        swapped.swap(0, 1);
        assert!(matches!(
            check(&table, &swapped, 0, 4096, 4108),
            Err(Error::Entry { chunk: 0, .. })
        ));
        assert!(matches!(
            check(&table, &chunks[..1], 0, 4096, 4108),
            Err(Error::Count { .. })
        ));
    }
}
