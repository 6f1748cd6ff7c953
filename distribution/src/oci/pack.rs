//! Pack blobs: chunk frames grouped into one OCI layer, with their index (docs/format.md §7.3).
//!
//! ```text
//! 0             frames, in chunk order, placed as in a .cfs chunk region (§4)
//! index_offset  digest table (§5): device 0, offsets relative to the blob
//!               zero padding
//! len - 64      trailer (64 bytes), len a multiple of 4096
//! ```
//! Trailer: `magic "CFSPACK1"`, `version: u32 = 1`, `flags: u32` (bit 0: every frame ends on a
//! 512-byte boundary), `index_offset: u64`, `index_len: u64`, `index_sha256: [u8; 32]`.
//!
//! [`PackSink`] writes an image's new chunks into new packs, cutting after a chunk when the pack
//! holds at least [`PACK_MIN`] bytes and the chunk's digest satisfies [`should_cut`], or when it
//! reaches [`PACK_MAX`]. The cut points are a function of the chunk sequence alone, so the same
//! image written into an empty layout always yields the same packs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chunkfs_kernel_abi::digest_table::{self, DIGEST_FLAG_ZSTD, DigestEntry, DigestTable};
use chunkfs_kernel_abi::{Le16, Le32, Le64, Pod};

use crate::oci::layout::{self, BlobWriter, Layout};
use crate::oci::media_type;
use crate::oci::spec::ContentDescriptor;
use chunkfs_format::digest::{Digest, Hasher};
use chunkfs_format::model::limits;
use chunkfs_format::{Classify, ErrorClass};

/// `magic` of the pack trailer.
pub const PACK_MAGIC: [u8; 8] = *b"CFSPACK1";
/// The pack version this crate writes and reads.
pub const PACK_VERSION: u32 = 1;
/// Trailer flag: every frame ends on a 512-byte boundary (`--align 512`, docs/format.md §4).
pub const FLAG_ALIGN512: u32 = 1;
/// Flags this crate understands; a pack with others is refused.
pub const KNOWN_FLAGS: u32 = FLAG_ALIGN512;
/// Length of the trailer in bytes.
pub const TRAILER_LEN: u64 = 64;
/// Every pack blob's length is a multiple of this (the kernel reads devices to their end).
pub const BLOB_ALIGN: u64 = 4096;
/// A pack is not cut before it holds this many bytes of frames.
pub const PACK_MIN: u64 = 16 << 20;
/// A pack is always cut once it holds this many bytes of frames.
pub const PACK_MAX: u64 = 64 << 20;
/// Past [`PACK_MIN`], a chunk of `len` stored bytes ends its pack with probability
/// `len / CUT_SPAN` (decided by its digest), so packs grow by ~16 MiB on average past the minimum,
/// whatever the frame sizes: ~32 MiB packs.
pub const CUT_SPAN: u64 = 16 << 20;
/// Largest stored frame (docs/format.md §4).
pub const FRAME_MAX: u32 = 1 << 20;
/// Largest pack index read, in bytes (about four million chunks).
pub const INDEX_MAX: u64 = 256 << 20;

/// Why a pack could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A layout error (writing the blob).
    #[error(transparent)]
    Layout(#[from] layout::Error),
    /// An I/O error on a pack blob.
    #[error("{}: {source}", path.display())]
    Io {
        /// The blob.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The pack is malformed.
    #[error("{}: pack blob is corrupt: {problem}", path.display())]
    Corrupt {
        /// The blob.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A frame handed to the writer breaks the frame rules.
    #[error("chunk {digest}: frame of {len} bytes is empty or larger than {FRAME_MAX}")]
    BadFrame {
        /// The chunk.
        digest: Digest,
        /// The frame's length.
        len: usize,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Layout(e) => e.class(),
            Self::Io { source, .. } => source.class(),
            Self::Corrupt { .. } | Self::BadFrame { .. } => ErrorClass::Corrupt,
        }
    }
}

/// True if a pack holding `pack_len` bytes of frames ends after the chunk `digest`, whose frame
/// is `frame_len` bytes: past [`PACK_MIN`], when the digest's first 8 bytes (little-endian), as
/// a fraction of 2^64, fall below `frame_len / CUT_SPAN`; always at [`PACK_MAX`].
pub fn should_cut(pack_len: u64, digest: &Digest, frame_len: u64) -> bool {
    if pack_len >= PACK_MAX {
        return true;
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.0[..8]);
    let threshold = (u128::from(frame_len) << 64) / u128::from(CUT_SPAN);
    pack_len >= PACK_MIN && u128::from(u64::from_le_bytes(first)) < threshold
}

/// Where a frame of `len` bytes goes when the previous frame ended at `pos` (docs/format.md §4):
/// right after it, or with `align512` right-aligned in the next 512-byte-aligned cluster.
pub fn frame_start(pos: u64, len: u64, align512: bool) -> u64 {
    if !align512 {
        return pos;
    }
    let cluster = pos.div_ceil(512) * 512;
    cluster + (512 - len % 512) % 512
}

/// The decoded trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Where the digest table starts (= end of the frame region).
    pub index_offset: u64,
    /// Length of the digest table.
    pub index_len: u64,
    /// sha256 of the digest table.
    pub index_sha256: Digest,
}

impl Trailer {
    /// The 64 trailer bytes.
    pub fn encode(&self) -> [u8; TRAILER_LEN as usize] {
        let mut b = [0u8; TRAILER_LEN as usize];
        b[0..8].copy_from_slice(&PACK_MAGIC);
        b[8..12].copy_from_slice(&PACK_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.index_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.index_len.to_le_bytes());
        b[32..64].copy_from_slice(&self.index_sha256.0);
        b
    }

    /// Decodes and checks magic, version and flags.
    pub fn decode(b: &[u8; TRAILER_LEN as usize]) -> Result<Self, String> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        if b[0..8] != PACK_MAGIC {
            return Err("bad trailer magic (not a chunkfs pack)".into());
        }
        let version = u32_at(8);
        if version != PACK_VERSION {
            return Err(format!("unknown pack version {version}"));
        }
        let flags = u32_at(12);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(format!("unknown pack flags {:#x}", flags & !KNOWN_FLAGS));
        }
        let mut sha = [0u8; 32];
        sha.copy_from_slice(&b[32..64]);
        Ok(Self {
            flags,
            index_offset: u64_at(16),
            index_len: u64_at(24),
            index_sha256: Digest(sha),
        })
    }
}

/// One pack being written.
pub struct PackWriter {
    blob: BlobWriter,
    entries: Vec<DigestEntry>,
    pos: u64,
    align512: bool,
}

/// A finished pack blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackInfo {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's length.
    pub size: u64,
    /// Number of frames in it.
    pub chunks: usize,
    /// Whether the blob was new to the layout.
    pub new: bool,
}

impl PackInfo {
    /// The layer descriptor of this pack.
    pub fn descriptor(&self) -> ContentDescriptor {
        ContentDescriptor::new(media_type::PACK, self.digest, self.size)
    }
}

impl PackWriter {
    /// Starts a pack in `layout`.
    pub fn new(layout: &Layout, align512: bool) -> Result<Self, Error> {
        Ok(Self {
            blob: layout.blob_writer()?,
            entries: Vec::new(),
            pos: 0,
            align512,
        })
    }

    /// Bytes of frames (and their padding) written so far.
    pub fn frames_len(&self) -> u64 {
        self.pos
    }

    /// Number of frames written so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no frame was written yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends one chunk's frame; returns its offset in the blob.
    pub fn add_frame(&mut self, digest: &Digest, raw_len: u32, frame: &[u8]) -> Result<u64, Error> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&l| l > 0 && l <= FRAME_MAX);
        let (Some(len), true) = (len, raw_len > 0 && raw_len <= limits::CHUNK_MAX) else {
            return Err(Error::BadFrame {
                digest: *digest,
                len: frame.len(),
            });
        };
        let start = frame_start(self.pos, u64::from(len), self.align512);
        self.write_zeros(start - self.pos)?;
        self.write(frame)?;
        self.entries.push(DigestEntry {
            offset: Le64::new(start),
            device: Le16::new(0),
            flags: Le16::new(DIGEST_FLAG_ZSTD),
            stored_len: Le32::new(len),
            raw_len: Le32::new(raw_len),
            reserved: Le32::new(0),
            reserved2: Le64::new(0),
            sha256: digest.0,
        });
        self.pos = start + u64::from(len);
        Ok(start)
    }

    /// Writes the index, padding and trailer and stores the blob under its digest.
    pub fn finish(mut self) -> Result<PackInfo, Error> {
        let mut index = Vec::with_capacity(digest_table::encoded_len(self.entries.len()));
        index.extend_from_slice(digest_table::header(self.entries.len() as u64).as_bytes());
        for e in &self.entries {
            index.extend_from_slice(e.as_bytes());
        }
        let index_offset = self.pos;
        self.write(&index)?;
        let end = self.pos + TRAILER_LEN;
        let total = end.div_ceil(BLOB_ALIGN) * BLOB_ALIGN;
        self.write_zeros(total - end)?;
        let trailer = Trailer {
            flags: if self.align512 { FLAG_ALIGN512 } else { 0 },
            index_offset,
            index_len: index.len() as u64,
            index_sha256: Digest::of(&index),
        };
        self.write(&trailer.encode())?;
        let chunks = self.entries.len();
        let (digest, size, new) = self.blob.finish()?;
        Ok(PackInfo {
            digest,
            size,
            chunks,
            new,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.blob.write_all(bytes).map_err(|source| Error::Io {
            path: self.blob.temp_path().to_owned(),
            source,
        })?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn write_zeros(&mut self, mut n: u64) -> Result<(), Error> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.write(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

/// Writes an image's new chunks into new packs, cut at content-defined boundaries.
pub struct PackSink {
    layout: Layout,
    align512: bool,
    current: Option<PackWriter>,
    current_digests: Vec<Digest>,
    done: Vec<(PackInfo, Vec<Digest>)>,
}

impl PackSink {
    /// A sink writing into `layout`.
    pub fn new(layout: &Layout, align512: bool) -> Self {
        Self {
            layout: layout.clone(),
            align512,
            current: None,
            current_digests: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Appends the next new chunk's frame (chunks must arrive in chunk-number order); returns
    /// its offset in its pack.
    pub fn write_frame(
        &mut self,
        digest: &Digest,
        raw_len: u32,
        frame: &[u8],
    ) -> Result<u64, Error> {
        let pack = match &mut self.current {
            Some(p) => p,
            None => self
                .current
                .insert(PackWriter::new(&self.layout, self.align512)?),
        };
        let offset = pack.add_frame(digest, raw_len, frame)?;
        let cut = should_cut(pack.frames_len(), digest, frame.len() as u64);
        self.current_digests.push(*digest);
        if cut {
            self.close()?;
        }
        Ok(offset)
    }

    fn close(&mut self) -> Result<(), Error> {
        if let Some(p) = self.current.take() {
            let info = p.finish()?;
            self.done
                .push((info, std::mem::take(&mut self.current_digests)));
        }
        Ok(())
    }

    /// Closes the last pack; returns every pack written, in order, with its chunks' digests.
    pub fn finish(mut self) -> Result<Vec<(PackInfo, Vec<Digest>)>, Error> {
        self.close()?;
        Ok(self.done)
    }
}

/// The builder's sink: new chunks go into new packs. The returned location is provisional
/// (device 0, the offset inside its pack): a chunk's device in an image is its pack's layer
/// position, known only when the manifest is written, and readers recompute locations from the
/// manifest ([`crate::oci::read`]).
impl chunkfs_format::build::ChunkSink for PackSink {
    fn write_frame(
        &mut self,
        _idx: chunkfs_format::model::ChunkIdx,
        chunk: &chunkfs_format::model::ChunkInfo,
        frame: &[u8],
    ) -> io::Result<chunkfs_format::translate::ChunkLocation> {
        let offset = PackSink::write_frame(self, &chunk.digest, chunk.size, frame)
            .map_err(io::Error::other)?;
        Ok(chunkfs_format::translate::ChunkLocation {
            device: 0,
            offset,
            stored_len: frame.len() as u32,
        })
    }
}

/// One frame listed in a pack's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    /// sha256 of the decompressed chunk.
    pub digest: Digest,
    /// Offset of the frame in the blob.
    pub offset: u64,
    /// Length of the frame.
    pub stored_len: u32,
    /// Length of the decompressed chunk.
    pub raw_len: u32,
}

/// A pack's validated index.
#[derive(Clone, Debug)]
pub struct PackIndex {
    /// The pack's trailer.
    pub trailer: Trailer,
    /// Frames in offset order.
    pub entries: Vec<PackEntry>,
}

impl PackIndex {
    /// True if every frame ends on a 512-byte boundary.
    pub fn align512(&self) -> bool {
        self.trailer.flags & FLAG_ALIGN512 != 0
    }

    /// Reads and validates the index of the pack blob `file` (at `path`, for messages):
    /// trailer, zero padding, index checksum, digest table, every frame inside the frame region,
    /// the alignment the trailer claims, no digest twice.
    pub fn read(file: &File, path: &Path) -> Result<Self, Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let size = file.metadata().map_err(io)?.len();
        if size < TRAILER_LEN {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                problem: format!("length {size} is not a positive multiple of {BLOB_ALIGN}"),
            });
        }
        let mut tb = [0u8; TRAILER_LEN as usize];
        file.read_exact_at(&mut tb, size - TRAILER_LEN)
            .map_err(io)?;
        let tail_start = Self::tail_start(size, &tb, path)?;
        let mut tail = vec![0u8; (size - tail_start) as usize];
        file.read_exact_at(&mut tail, tail_start).map_err(io)?;
        Self::parse_tail(size, &tail, path)
    }

    /// Where the tail (index, padding, trailer) of a pack blob of `blob_len` bytes starts,
    /// given its last 64 bytes `trailer`: checks the length, the trailer's magic, version and
    /// flags, that the index lies inside the blob and that the tail is within the size limit.
    /// What lets a caller fetch the tail by range before [`PackIndex::parse_tail`].
    pub fn tail_start(
        blob_len: u64,
        trailer: &[u8; TRAILER_LEN as usize],
        path: &Path,
    ) -> Result<u64, Error> {
        let corrupt = |problem: String| Error::Corrupt {
            path: path.to_owned(),
            problem,
        };
        if blob_len < BLOB_ALIGN || blob_len % BLOB_ALIGN != 0 {
            return Err(corrupt(format!(
                "length {blob_len} is not a positive multiple of {BLOB_ALIGN}"
            )));
        }
        let trailer = Trailer::decode(trailer).map_err(corrupt)?;
        let tail_end = blob_len - TRAILER_LEN;
        let index_end = trailer
            .index_offset
            .checked_add(trailer.index_len)
            .filter(|&e| e <= tail_end);
        if index_end.is_none() {
            return Err(corrupt(format!(
                "index {}+{} runs past the trailer at {tail_end}",
                trailer.index_offset, trailer.index_len
            )));
        }
        if tail_end - trailer.index_offset > INDEX_MAX + BLOB_ALIGN {
            return Err(corrupt(format!(
                "index of {} bytes exceeds the limit of {INDEX_MAX}",
                tail_end - trailer.index_offset
            )));
        }
        Ok(trailer.index_offset)
    }

    /// Validates the tail of a pack blob of `blob_len` bytes: `tail` is the blob's bytes from
    /// its index to its end (index, zero padding, trailer), as [`PackIndex::tail_start`] locates
    /// them. Same checks as [`PackIndex::read`].
    pub fn parse_tail(blob_len: u64, tail: &[u8], path: &Path) -> Result<Self, Error> {
        let corrupt = |problem: String| Error::Corrupt {
            path: path.to_owned(),
            problem,
        };
        let trailer_at = tail
            .len()
            .checked_sub(TRAILER_LEN as usize)
            .ok_or_else(|| corrupt(format!("tail of {} bytes has no trailer", tail.len())))?;
        let mut tb = [0u8; TRAILER_LEN as usize];
        tb.copy_from_slice(&tail[trailer_at..]);
        let tail_start = Self::tail_start(blob_len, &tb, path)?;
        if blob_len - tail_start != tail.len() as u64 {
            return Err(corrupt(format!(
                "tail of {} bytes given, the trailer puts the index at {tail_start} of {blob_len}",
                tail.len()
            )));
        }
        let trailer = Trailer::decode(&tb).map_err(corrupt)?;
        let (index, padding) = tail[..trailer_at].split_at(trailer.index_len as usize);
        if padding.len() as u64 >= BLOB_ALIGN || padding.iter().any(|&b| b != 0) {
            return Err(corrupt(
                "padding between index and trailer is not zero or too long".into(),
            ));
        }
        let mut h = Hasher::new();
        h.update(index);
        if h.finish() != trailer.index_sha256 {
            return Err(corrupt("index checksum does not match the trailer".into()));
        }
        let table = DigestTable::parse(index).map_err(|e| corrupt(format!("index: {e}")))?;
        if table.byte_len() != index.len() {
            return Err(corrupt(format!(
                "index is {} bytes, its table {}",
                index.len(),
                table.byte_len()
            )));
        }
        let align512 = trailer.flags & FLAG_ALIGN512 != 0;
        let mut entries = Vec::with_capacity(table.len());
        let mut seen = HashMap::with_capacity(table.len());
        for (i, e) in table.iter().enumerate() {
            let (off, stored, raw) = (e.offset.get(), e.stored_len.get(), e.raw_len.get());
            let end = off.saturating_add(u64::from(stored));
            if e.device.get() != 0 || end > trailer.index_offset {
                return Err(corrupt(format!(
                    "index entry {i} points outside the frame region"
                )));
            }
            if e.flags.get() & DIGEST_FLAG_ZSTD == 0
                || stored > FRAME_MAX
                || raw > limits::CHUNK_MAX
            {
                return Err(corrupt(format!(
                    "index entry {i} has flags {:#x}, frame length {stored}, chunk length {raw}",
                    e.flags.get()
                )));
            }
            if align512 && end % 512 != 0 {
                return Err(corrupt(format!(
                    "index entry {i} does not end on a 512-byte boundary"
                )));
            }
            let digest = Digest(e.sha256);
            if seen.insert(digest, i).is_some() {
                return Err(corrupt(format!("chunk {digest} is listed twice")));
            }
            entries.push(PackEntry {
                digest,
                offset: off,
                stored_len: stored,
                raw_len: raw,
            });
        }
        Ok(Self { trailer, entries })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fake_chunk(i: u32) -> (Digest, Vec<u8>) {
        let body: Vec<u8> = (0..(100 + i * 37)).map(|b| (b ^ i) as u8).collect();
        (Digest::of(&body), body)
    }

    #[test]
    fn frame_start_follows_the_alignment_rule() {
        assert_eq!(frame_start(100, 50, false), 100);
        assert_eq!(frame_start(0, 512, true), 0);
        assert_eq!(frame_start(0, 100, true), 412);
        assert_eq!(frame_start(512, 600, true), 512 + 424);
        assert_eq!(frame_start(513, 1, true), 1024 + 511);
    }

    #[test]
    fn written_pack_reads_back() {
        for align in [false, true] {
            let tmp = crate::oci::test_dir();
            let layout = Layout::create(&tmp.path().join("l")).unwrap();
            let mut w = PackWriter::new(&layout, align).unwrap();
            let chunks: Vec<_> = (0..20).map(fake_chunk).collect();
            let mut offsets = Vec::new();
            for (d, body) in &chunks {
                offsets.push(w.add_frame(d, body.len() as u32 * 3, body).unwrap());
            }
            let info = w.finish().unwrap();
            assert_eq!(info.size % BLOB_ALIGN, 0);
            let path = layout.blob_path(&info.digest);
            let file = File::open(&path).unwrap();
            let index = PackIndex::read(&file, &path).unwrap();
            assert_eq!(index.align512(), align);
            assert_eq!(index.entries.len(), 20);
            for ((e, (d, body)), off) in index.entries.iter().zip(&chunks).zip(&offsets) {
                assert_eq!(e.digest, *d);
                assert_eq!(e.offset, *off);
                let mut got = vec![0u8; e.stored_len as usize];
                file.read_exact_at(&mut got, e.offset).unwrap();
                assert_eq!(&got, body);
                if align {
                    assert_eq!((e.offset + u64::from(e.stored_len)) % 512, 0);
                }
            }
        }
    }

    #[test]
    fn corrupt_packs_are_refused() {
        let tmp = crate::oci::test_dir();
        let layout = Layout::create(&tmp.path().join("l")).unwrap();
        let mut w = PackWriter::new(&layout, false).unwrap();
        for i in 0..5 {
            let (d, body) = fake_chunk(i);
            w.add_frame(&d, 1000, &body).unwrap();
        }
        let info = w.finish().unwrap();
        let path = layout.blob_path(&info.digest);
        let good = std::fs::read(&path).unwrap();
        let bad_path = tmp.path().join("bad");
        let check = |bytes: &[u8], what: &str| {
            std::fs::write(&bad_path, bytes).unwrap();
            let f = File::open(&bad_path).unwrap();
            let err = PackIndex::read(&f, &bad_path).expect_err(what);
            assert!(matches!(err, Error::Corrupt { .. }), "{what}: {err}");
        };
        let n = good.len();
        let idx_off = {
            let mut x = [0u8; 8];
            x.copy_from_slice(&good[n - 48..n - 40]);
            u64::from_le_bytes(x) as usize
        };
        let mut m = good.clone();
        m[n - 64] ^= 1;
        check(&m, "magic");
        let mut m = good.clone();
        m[idx_off + 40] ^= 1;
        check(&m, "index byte");
        let mut m = good.clone();
        m[n - 70] = 1;
        check(&m, "padding");
        check(&good[..n - 4096], "truncated");
        check(&good[..n - 1], "odd length");
        let mut m = good.clone();
        m[n - 48..n - 40].copy_from_slice(&u64::MAX.to_le_bytes());
        check(&m, "index offset");
        let mut m = good.clone();
        m[n - 52] = 2;
        check(&m, "unknown flag");
    }

    #[test]
    fn sink_cuts_deterministically_by_content() {
        let low = Digest([0; 32]);
        let mut high = Digest([0xff; 32]);
        assert!(!should_cut(PACK_MIN - 1, &low, 30_000));
        assert!(should_cut(PACK_MIN, &low, 30_000));
        assert!(!should_cut(PACK_MIN, &high, 30_000));
        assert!(should_cut(PACK_MAX, &high, 30_000));
        // A digest at 1/1000 of the range cuts after a 20 KiB frame but not after a 10 KiB one.
        high.0[..8].copy_from_slice(&(u64::MAX / 1000).to_le_bytes());
        assert!(should_cut(PACK_MIN, &high, 20_000));
        assert!(!should_cut(PACK_MIN, &high, 10_000));
        // On random digests the mean extra length past the minimum is about CUT_SPAN.
        let (mut extra, mut packs, mut len) = (0u64, 0u64, PACK_MIN);
        for i in 0u32..200_000 {
            len += 40_000;
            if should_cut(len, &Digest::of(&i.to_le_bytes()), 40_000) {
                extra += len - PACK_MIN;
                packs += 1;
                len = PACK_MIN;
            }
        }
        let mean = extra / packs;
        assert!(
            mean > CUT_SPAN / 2 && mean < CUT_SPAN * 3 / 2,
            "mean extra {mean} over {packs} packs"
        );
    }

    #[test]
    fn sink_writes_one_pack_for_a_small_image_and_refuses_bad_frames() {
        let tmp = crate::oci::test_dir();
        let layout = Layout::create(&tmp.path().join("l")).unwrap();
        let mut sink = PackSink::new(&layout, false);
        for i in 0..10 {
            let (d, body) = fake_chunk(i);
            sink.write_frame(&d, 500, &body).unwrap();
        }
        assert!(sink.write_frame(&Digest([1; 32]), 10, &[]).is_err());
        let packs = sink.finish().unwrap();
        assert_eq!(packs.len(), 1);
        assert_eq!(packs[0].0.chunks, 10);
        assert_eq!(packs[0].1.len(), 10);
        assert!(packs[0].0.new);
    }
}
