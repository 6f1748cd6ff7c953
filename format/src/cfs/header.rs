//! The `.cfs` header (docs/format.md §6.1): the first 1024 bytes of the file.
//!
//! [`Header::parse`] checks everything that can be checked without reading further: magic,
//! version, feature bits, the header's own sha256, and that the regions are in order, aligned
//! and inside `image_len`.

use crate::digest::Digest;

/// Bytes 0..8.
pub const MAGIC: [u8; 8] = *b"\x89CFS\r\n\x1a\n";
/// Major version written and understood; a reader refuses any other.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version written; a reader accepts any.
pub const VERSION_MINOR: u16 = 0;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 1024;
/// Start of the EROFS head area (the EROFS superblock is always at byte 1024).
pub const EROFS_HEAD_OFFSET: u64 = 1024;
/// Start of the chunk region.
pub const CHUNKS_OFFSET: u64 = 4096;
/// `image_len` and every region a reader maps are multiples of this.
pub const IMAGE_ALIGN: u64 = 4096;
/// Incompatible feature bits understood by this reader (none are defined in 1.0).
pub const INCOMPAT_KNOWN: u64 = 0;
/// Compatible feature: frames end on 512-byte boundaries (`--align 512`, the EROFS cluster layout).
pub const COMPAT_ALIGN512: u64 = 1;
/// Offset of the header's own sha256, which covers bytes 0..992.
const CHECKSUM_OFFSET: usize = HEADER_LEN - 32;

/// A byte range of the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Region {
    /// One past the last byte (cannot overflow in a parsed header).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// The decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Minor version (informative; newer minors only add compatible things).
    pub version_minor: u16,
    /// Incompatible feature bits.
    pub incompat: u64,
    /// Compatible feature bits.
    pub compat: u64,
    /// Length of the image in bytes, a multiple of 4096; bytes after it (a block device's rest)
    /// are not part of the image.
    pub image_len: u64,
    /// EROFS block size in bytes: 4096, or 512 with [`COMPAT_ALIGN512`].
    pub erofs_block_size: u32,
    /// Number of chunks (entries of the chunk index).
    pub chunk_count: u64,
    /// Decompressed length of the metadata blob.
    pub metadata_raw_len: u64,
    /// EROFS superblock area, `[1024, 4096)`, or empty when the image has no descriptor.
    pub erofs_head: Region,
    /// Chunk frames, from 4096.
    pub chunks: Region,
    /// EROFS metadata area, block aligned; empty when the image has no descriptor.
    pub erofs_meta: Region,
    /// The metadata blob.
    pub metadata: Region,
    /// The chunk index (digest table).
    pub index: Region,
    /// sha256 of the metadata blob: the image's identity.
    pub metadata_digest: Digest,
    /// sha256 of the EROFS head area followed by the EROFS metadata area.
    pub erofs_digest: Digest,
    /// sha256 of the chunk index.
    pub index_digest: Digest,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer than 1024 bytes.
    #[error("the file is shorter than the 1024-byte header")]
    Truncated,
    /// Not a chunkfs image.
    #[error("not a chunkfs image (bad magic number)")]
    BadMagic,
    /// A major version this reader does not know.
    #[error(
        "image format version {major}.{minor} is not supported (this reader knows {VERSION_MAJOR}.x)"
    )]
    UnknownVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The header's sha256 does not match.
    #[error("header checksum mismatch (the header is corrupt)")]
    Checksum,
    /// Incompatible features this reader does not know.
    #[error("image uses incompatible features {0:#x} this reader does not know")]
    UnknownIncompat(u64),
    /// A field is out of range.
    #[error("header field {field} is invalid: {problem}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl crate::Classify for HeaderError {
    fn class(&self) -> crate::ErrorClass {
        match self {
            Self::UnknownVersion { .. } | Self::UnknownIncompat(_) => {
                crate::ErrorClass::Unsupported
            }
            _ => crate::ErrorClass::Corrupt,
        }
    }
}

impl Header {
    /// The 1024 header bytes, checksum included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
        b[10..12].copy_from_slice(&self.version_minor.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.incompat.to_le_bytes());
        b[24..32].copy_from_slice(&self.compat.to_le_bytes());
        b[32..40].copy_from_slice(&self.image_len.to_le_bytes());
        b[40..44].copy_from_slice(&self.erofs_block_size.to_le_bytes());
        b[48..56].copy_from_slice(&self.chunk_count.to_le_bytes());
        b[56..64].copy_from_slice(&self.metadata_raw_len.to_le_bytes());
        for (i, r) in self.regions().iter().enumerate() {
            let at = 64 + 16 * i;
            b[at..at + 8].copy_from_slice(&r.1.offset.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&r.1.len.to_le_bytes());
        }
        b[144..176].copy_from_slice(&self.metadata_digest.0);
        b[176..208].copy_from_slice(&self.erofs_digest.0);
        b[208..240].copy_from_slice(&self.index_digest.0);
        let sum = Digest::of(&b[..CHECKSUM_OFFSET]);
        b[CHECKSUM_OFFSET..].copy_from_slice(&sum.0);
        b
    }

    /// The regions in file order, with their names.
    pub fn regions(&self) -> [(&'static str, Region); 5] {
        [
            ("EROFS head area", self.erofs_head),
            ("chunk region", self.chunks),
            ("EROFS metadata area", self.erofs_meta),
            ("metadata", self.metadata),
            ("chunk index", self.index),
        ]
    }

    /// True if the image carries an EROFS descriptor.
    pub fn has_erofs(&self) -> bool {
        self.erofs_head.len > 0
    }

    /// Parses and checks the first 1024 bytes of an image.
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let b: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(HeaderError::Truncated)?;
        if b[0..8] != MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let u16_at = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(v)
        };
        let digest_at = |at: usize| {
            let mut v = [0u8; 32];
            v.copy_from_slice(&b[at..at + 32]);
            Digest(v)
        };
        let (major, minor) = (u16_at(8), u16_at(10));
        if major != VERSION_MAJOR {
            return Err(HeaderError::UnknownVersion { major, minor });
        }
        if Digest::of(&b[..CHECKSUM_OFFSET]) != digest_at(CHECKSUM_OFFSET) {
            return Err(HeaderError::Checksum);
        }
        let bad = |field, problem: String| HeaderError::BadField { field, problem };
        if u32_at(12) as usize != HEADER_LEN {
            return Err(bad(
                "header_len",
                format!("{} is not {HEADER_LEN}", u32_at(12)),
            ));
        }
        let incompat = u64_at(16);
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(HeaderError::UnknownIncompat(incompat & !INCOMPAT_KNOWN));
        }
        let region = |i: usize| Region {
            offset: u64_at(64 + 16 * i),
            len: u64_at(64 + 16 * i + 8),
        };
        let h = Header {
            version_minor: minor,
            incompat,
            compat: u64_at(24),
            image_len: u64_at(32),
            erofs_block_size: u32_at(40),
            chunk_count: u64_at(48),
            metadata_raw_len: u64_at(56),
            erofs_head: region(0),
            chunks: region(1),
            erofs_meta: region(2),
            metadata: region(3),
            index: region(4),
            metadata_digest: digest_at(144),
            erofs_digest: digest_at(176),
            index_digest: digest_at(208),
        };
        h.check().map_err(|(field, problem)| bad(field, problem))?;
        Ok(h)
    }

    /// The layout invariants of §6.1.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.image_len % IMAGE_ALIGN != 0 || self.image_len < CHUNKS_OFFSET {
            return Err((
                "image_len",
                format!(
                    "{} is not a multiple of 4096 of at least 4096",
                    self.image_len
                ),
            ));
        }
        let block = u64::from(self.erofs_block_size);
        if block != 4096 && block != 512 {
            return Err((
                "erofs_block_size",
                format!("{block} is neither 4096 nor 512"),
            ));
        }
        if self.erofs_head
            != (Region {
                offset: EROFS_HEAD_OFFSET,
                len: CHUNKS_OFFSET - EROFS_HEAD_OFFSET,
            })
            && self.erofs_head
                != (Region {
                    offset: EROFS_HEAD_OFFSET,
                    len: 0,
                })
        {
            return Err((
                "erofs_head",
                format!("{:?} is not [1024, 4096) or empty at 1024", self.erofs_head),
            ));
        }
        if self.chunks.offset != CHUNKS_OFFSET {
            return Err((
                "chunks",
                format!("starts at {}, not 4096", self.chunks.offset),
            ));
        }
        if self.erofs_meta.offset % block != 0 {
            return Err((
                "erofs_meta",
                format!(
                    "offset {} is not a multiple of the block size {block}",
                    self.erofs_meta.offset
                ),
            ));
        }
        if self.has_erofs() != (self.erofs_meta.len > 0) {
            return Err((
                "erofs_meta",
                "the EROFS head and metadata areas must both be present or both absent".into(),
            ));
        }
        let mut prev_end = EROFS_HEAD_OFFSET;
        for (name, r) in self.regions() {
            let end = r
                .offset
                .checked_add(r.len)
                .ok_or(("regions", format!("{name} end overflows")))?;
            if r.offset < prev_end || end > self.image_len {
                return Err((
                    "regions",
                    format!(
                        "{name} [{}, {end}) overlaps the previous region or passes image_len {}",
                        r.offset, self.image_len
                    ),
                ));
            }
            prev_end = end;
        }
        let index_len = self
            .chunk_count
            .checked_mul(64)
            .and_then(|n| n.checked_add(32));
        if index_len != Some(self.index.len) {
            return Err((
                "index",
                format!(
                    "{} bytes cannot hold {} entries",
                    self.index.len, self.chunk_count
                ),
            ));
        }
        if self.metadata.len == 0
            || self.metadata_raw_len == 0
            || self.metadata_raw_len > crate::model::limits::METADATA_MAX
        {
            return Err((
                "metadata",
                format!(
                    "{} stored / {} decompressed bytes are out of range",
                    self.metadata.len, self.metadata_raw_len
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Header {
        Header {
            version_minor: VERSION_MINOR,
            incompat: 0,
            compat: COMPAT_ALIGN512,
            image_len: 3 * 4096,
            erofs_block_size: 512,
            chunk_count: 2,
            metadata_raw_len: 800,
            erofs_head: Region {
                offset: 1024,
                len: 3072,
            },
            chunks: Region {
                offset: 4096,
                len: 1000,
            },
            erofs_meta: Region {
                offset: 5120,
                len: 512,
            },
            metadata: Region {
                offset: 5632,
                len: 300,
            },
            index: Region {
                offset: 5932,
                len: 160,
            },
            metadata_digest: Digest::of(b"m"),
            erofs_digest: Digest::of(b"e"),
            index_digest: Digest::of(b"i"),
        }
    }

    #[test]
    fn round_trips() {
        let h = sample();
        assert_eq!(Header::parse(&h.encode()).unwrap(), h);
    }

    #[test]
    fn refuses_what_it_must() {
        let h = sample();
        let mut b = h.encode();
        b[100] ^= 1;
        assert_eq!(Header::parse(&b), Err(HeaderError::Checksum));
        let mut b = h.encode();
        b[0] = b'X';
        assert_eq!(Header::parse(&b), Err(HeaderError::BadMagic));
        assert_eq!(
            Header::parse(&h.encode()[..1000]),
            Err(HeaderError::Truncated)
        );
        let mut b = h.encode();
        b[8] = 2;
        assert_eq!(
            Header::parse(&b),
            Err(HeaderError::UnknownVersion { major: 2, minor: 0 })
        );
        let mut future = h.clone();
        future.incompat = 1 << 40;
        assert_eq!(
            Header::parse(&future.encode()),
            Err(HeaderError::UnknownIncompat(1 << 40))
        );
        let mut newer = h.clone();
        newer.version_minor = 7;
        newer.compat |= 1 << 63;
        assert_eq!(Header::parse(&newer.encode()).unwrap(), newer);
        for broken in [
            Header {
                image_len: 4097,
                ..h.clone()
            },
            Header {
                erofs_block_size: 1024,
                ..h.clone()
            },
            Header {
                erofs_meta: Region {
                    offset: 5000,
                    len: 512,
                },
                ..h.clone()
            },
            Header {
                metadata: Region {
                    offset: 5632,
                    len: 10_000,
                },
                ..h.clone()
            },
            Header {
                index: Region {
                    offset: 5700,
                    len: 160,
                },
                ..h.clone()
            },
            Header {
                chunk_count: 3,
                ..h.clone()
            },
            Header {
                chunks: Region {
                    offset: 0,
                    len: 1000,
                },
                ..h.clone()
            },
            Header {
                metadata: Region {
                    offset: u64::MAX,
                    len: 2,
                },
                ..h.clone()
            },
        ] {
            assert!(
                matches!(
                    Header::parse(&broken.encode()),
                    Err(HeaderError::BadField { .. })
                ),
                "{broken:?}"
            );
        }
    }
}
