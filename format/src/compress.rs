//! Chunk frames (docs/format.md §4): every chunk is stored as one standalone zstd frame with its
//! content size in the header and the content checksum on, so that every byte a reader (the
//! kernel included) decodes carries a check.
//!
//! When zstd does not make a chunk smaller, the frame is built by hand from raw blocks: the same
//! header and checksum around the plain bytes.

/// zstd level used when the user does not choose one (docs/format.md §4.2 gives the measurements).
pub const DEFAULT_LEVEL: i32 = 9;
/// Lowest accepted level (zstd's negative "fast" levels are allowed).
pub const LEVEL_MIN: i32 = -7;
/// Highest accepted level.
pub const LEVEL_MAX: i32 = 22;
/// Largest frame in bytes (the kernel's limit on a compressed extent).
pub const FRAME_MAX: u32 = 1 << 20;
/// Largest chunk that fits in a frame even when stored raw.
pub const CHUNK_FRAME_MAX: u32 = FRAME_MAX - 4096;
/// log2 of the largest window a chunk frame may declare (1 MiB, the kernel's limit).
pub const WINDOW_LOG_MAX: u32 = 20;

const ZSTD_MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
/// Largest raw block zstd allows (`Block_Maximum_Size`).
const RAW_BLOCK_MAX: usize = 128 * 1024;

/// Why a chunk could not be encoded or a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The compression level is outside [`LEVEL_MIN`]..=[`LEVEL_MAX`].
    #[error("compression level {0} is outside {LEVEL_MIN}..={LEVEL_MAX}")]
    BadLevel(i32),
    /// A chunk to encode is empty or too large for a frame.
    #[error("chunk of {0} bytes is outside 1..={CHUNK_FRAME_MAX}")]
    BadChunkSize(usize),
    /// zstd itself failed.
    #[error("zstd: {0}")]
    Zstd(#[source] std::io::Error),
    /// The frame does not start with the zstd magic number.
    #[error("not a zstd frame (bad magic number)")]
    BadMagic,
    /// The frame ends inside its header or a block.
    #[error("frame is truncated")]
    Truncated,
    /// The frame header lacks something every chunk frame must have, or has what none may.
    #[error("frame header {0}")]
    BadHeader(&'static str),
    /// The frame declares a window larger than [`WINDOW_LOG_MAX`] allows.
    #[error("frame declares a window of {0} bytes, more than 1 MiB")]
    WindowTooLarge(u64),
    /// The frame declares a content size other than the chunk's size.
    #[error("frame declares {declared} bytes of content, the chunk has {expected}")]
    SizeMismatch {
        /// Content size in the frame header.
        declared: u64,
        /// Size the chunk index and metadata give.
        expected: u32,
    },
    /// The stored bytes hold more than the one frame.
    #[error("{0} bytes follow the frame")]
    TrailingBytes(usize),
    /// Decoding failed: corrupt block or checksum mismatch.
    #[error("frame is corrupt: {0}")]
    Corrupt(String),
}

impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        use crate::ErrorClass as C;
        match self {
            Self::BadLevel(_) | Self::BadChunkSize(_) => C::Usage,
            // Creating or configuring a zstd context failed: the machine, not the data.
            Self::Zstd(_) => C::Io,
            _ => C::Corrupt,
        }
    }
}

/// Chunks larger than this are compressed with the match tables zstd sizes for a chunk of this
/// size (docs/format.md §4.2): at level 9 and above it would double them for a 1 MiB input (to 2^21
/// entries, 11 MiB per encoder at level 9) for well under 1 % smaller frames.
pub const TABLE_SIZED_FOR: usize = 512 * 1024;
/// log2 of the hash and chain tables zstd picks at levels 9 and above for a [`TABLE_SIZED_FOR`]
/// input (zstd 1.5's `ZSTD_defaultCParameters`, window 2^19).
const TABLE_LOG_CAP: u32 = 20;
/// The lowest level whose tables zstd grows past [`TABLE_LOG_CAP`] for larger inputs.
const TABLE_CAP_FROM_LEVEL: i32 = 9;

/// Levels whose optimal parser (zstd's `btopt`) gets [`OPT_MIN_MATCH`].
const OPT_TUNED: std::ops::RangeInclusive<i32> = 16..=17;
/// Minimum match length at [`OPT_TUNED`] levels (zstd: 3 for inputs up to 256 KiB, 5 and 4
/// above, where ELF code loses most).
const OPT_MIN_MATCH: u32 = 3;
/// log2 of the hash table at [`OPT_TUNED`] levels, whatever the chunk size (zstd: up to 2^22
/// entries). The optimal parser finds its matches in the binary tree (the chain table); the
/// hash table only seeds each search, and a small one stays in the CPU's cache.
const OPT_HASH_LOG: u32 = 17;

/// Levels whose lazy match finder (zstd's `lazy2`) gets [`LAZY_MIN_MATCH`] and
/// [`LAZY_SEARCH_LOG`] (the default level among them).
const LAZY_TUNED: std::ops::RangeInclusive<i32> = 9..=12;
/// Minimum match length at [`LAZY_TUNED`] levels (zstd: 5 for inputs above 256 KiB).
const LAZY_MIN_MATCH: u32 = 4;
/// log2 of the match candidates searched at [`LAZY_TUNED`] levels (zstd: 4 to 6).
const LAZY_SEARCH_LOG: u32 = 6;

/// zstd level of the frames of chunks whose bytes look incompressible ([`looks_incompressible`]).
const FAST_LEVEL: i32 = 1;
/// A chunk looks incompressible when the chance that two of its bytes drawn at random are equal
/// is at most `1 / FLAT_BYTES`: its byte histogram is nearly flat (Rényi entropy of order 2 at
/// least log2(239) = 7.9 bits per byte), as in compressed archives, images and ciphertext.
const FLAT_BYTES: u64 = 239;

/// Encodes chunks into frames; one per worker thread (it owns its zstd contexts).
pub struct Encoder {
    ctx: zstd::bulk::Compressor<'static>,
    level: i32,
    /// Whether the table caps are set on `ctx` now.
    capped: bool,
    /// At [`FAST_LEVEL`], for chunks that look incompressible; `None` when `level` is as fast.
    fast: Option<zstd::bulk::Compressor<'static>>,
}

impl Encoder {
    /// An encoder at `level`.
    pub fn new(level: i32) -> Result<Self, Error> {
        if !(LEVEL_MIN..=LEVEL_MAX).contains(&level) {
            return Err(Error::BadLevel(level));
        }
        let mut ctx = frame_context(level)?;
        use zstd::zstd_safe::{CParameter, ParamSwitch};
        // A block split where the data changes character (code and tables in an ELF file) gets
        // entropy tables of its own: 2 % smaller ELF frames for 1.5x the time at level 9 (zstd
        // splits by itself from level 16 on). docs/format.md §4.2 has the measurements.
        ctx.set_parameter(CParameter::UseBlockSplitter(ParamSwitch::Enable))
            .map_err(Error::Zstd)?;
        if OPT_TUNED.contains(&level) {
            // 5 % smaller ELF frames of 1 MiB and 1 % smaller text frames; as fast on text.
            ctx.set_parameter(CParameter::MinMatch(OPT_MIN_MATCH))
                .map_err(Error::Zstd)?;
            // The same frames within 0.01 % in 0.67-0.70x the time (docs/format.md §4.2).
            ctx.set_parameter(CParameter::HashLog(OPT_HASH_LOG))
                .map_err(Error::Zstd)?;
        }
        if LAZY_TUNED.contains(&level) {
            // Shorter matches and a deeper search: 1-2 % smaller text frames.
            ctx.set_parameter(CParameter::MinMatch(LAZY_MIN_MATCH))
                .map_err(Error::Zstd)?;
            ctx.set_parameter(CParameter::SearchLog(LAZY_SEARCH_LOG))
                .map_err(Error::Zstd)?;
        }
        let fast = if level > FAST_LEVEL {
            Some(frame_context(FAST_LEVEL)?)
        } else {
            None
        };
        Ok(Self {
            ctx,
            level,
            capped: false,
            fast,
        })
    }

    /// Caps the match tables for chunks above [`TABLE_SIZED_FOR`], lifts the caps (0: zstd's
    /// choice for the input size) otherwise.
    fn size_tables(&mut self, chunk_len: usize) -> Result<(), Error> {
        use zstd::zstd_safe::CParameter;
        let cap = self.level >= TABLE_CAP_FROM_LEVEL && chunk_len > TABLE_SIZED_FOR;
        if cap != self.capped {
            let log = if cap { TABLE_LOG_CAP } else { 0 };
            if !OPT_TUNED.contains(&self.level) {
                self.ctx
                    .set_parameter(CParameter::HashLog(log))
                    .map_err(Error::Zstd)?;
            }
            self.ctx
                .set_parameter(CParameter::ChainLog(log))
                .map_err(Error::Zstd)?;
            self.capped = cap;
        }
        Ok(())
    }

    /// The frame of `chunk`: zstd-compressed, or raw blocks when that is not larger.
    pub fn encode(&mut self, chunk: &[u8]) -> Result<Vec<u8>, Error> {
        if chunk.is_empty() || chunk.len() > CHUNK_FRAME_MAX as usize {
            return Err(Error::BadChunkSize(chunk.len()));
        }
        let raw_len = raw_frame_len(chunk.len());
        let mut out = Vec::with_capacity(raw_len);
        // Already compressed data gains nothing from a slow match search (zstd 17 spends 40 ms
        // on a 1 MiB chunk of a .deb to find nothing), but may still hold a repeat or skewed
        // literals: the fast level finds those.
        let flat = self.fast.is_some() && looks_incompressible(chunk);
        if !flat {
            self.size_tables(chunk.len())?;
        }
        let ctx = match (flat, self.fast.as_mut()) {
            (true, Some(fast)) => fast,
            _ => &mut self.ctx,
        };
        // A compressed frame that would not be smaller than the raw one is useless: stop early.
        match ctx.compress_to_buffer(chunk, &mut out) {
            Ok(n) if n < raw_len => {
                out.truncate(n);
                // Frames wait in the packer's queue: hold their size, not the chunk's.
                out.shrink_to_fit();
                Ok(out)
            }
            _ => Ok(raw_frame(chunk)),
        }
    }
}

/// A zstd context at `level` making chunk frames: content size and checksum on, window at most
/// 1 MiB.
fn frame_context(level: i32) -> Result<zstd::bulk::Compressor<'static>, Error> {
    let mut ctx = zstd::bulk::Compressor::new(level).map_err(Error::Zstd)?;
    use zstd::zstd_safe::CParameter;
    ctx.set_parameter(CParameter::ChecksumFlag(true))
        .map_err(Error::Zstd)?;
    ctx.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(Error::Zstd)?;
    // zstd shrinks the window to the (known) source size anyway; the cap keeps the 1 MiB
    // promise whatever the chunk size.
    ctx.set_parameter(CParameter::WindowLog(WINDOW_LOG_MAX))
        .map_err(Error::Zstd)?;
    Ok(ctx)
}

/// Whether `chunk`'s byte histogram is nearly flat (see [`FLAT_BYTES`]): a pure function of the
/// bytes, in integers, so the frame chosen is too.
fn looks_incompressible(chunk: &[u8]) -> bool {
    let mut counts = [0u64; 256];
    for &b in chunk {
        counts[usize::from(b)] += 1;
    }
    let n = chunk.len() as u64;
    // Chunks are at most 1 MiB: the sums stay far below 2^64.
    let pairs: u64 = counts.iter().map(|c| c * c).sum();
    pairs * FLAT_BYTES <= n * n
}

/// Length of the raw-block frame of a chunk of `len` bytes.
fn raw_frame_len(len: usize) -> usize {
    let blocks = len.div_ceil(RAW_BLOCK_MAX).max(1);
    4 + 1 + fcs_field_len(len as u64) + blocks * 3 + len + 4
}

/// Bytes of the Frame_Content_Size field of a single-segment frame of `len` bytes.
fn fcs_field_len(len: u64) -> usize {
    if len < 256 {
        1
    } else if len < 65_536 + 256 {
        2
    } else if len <= u64::from(u32::MAX) {
        4
    } else {
        8
    }
}

/// A zstd frame of raw blocks holding `chunk`: incompressible chunks are stored so.
fn raw_frame(chunk: &[u8]) -> Vec<u8> {
    let mut f = FrameWriter::new(chunk.len() as u64, raw_frame_len(chunk.len()));
    for block in chunk.chunks(RAW_BLOCK_MAX) {
        f.raw_block(block);
    }
    f.finish()
}

/// A zstd frame of `len` copies of `byte` in RLE blocks: a few bytes per 128 KiB.
pub(crate) fn rle_frame(byte: u8, len: u64) -> Vec<u8> {
    let mut f = FrameWriter::new(len, 64);
    let mut left = len;
    while left > 0 {
        let n = left.min(RAW_BLOCK_MAX as u64);
        // At most RAW_BLOCK_MAX: fits usize.
        f.rle_block(byte, n as usize);
        left -= n;
    }
    f.finish()
}

/// Builds a zstd frame by hand (RFC 8878 §3.1.1): single segment, content size declared,
/// content checksum, raw or RLE blocks. Its bytes never change with the zstd library's version,
/// which a descriptor that must be re-derived bit for bit needs (the zero frame of holes), and
/// a raw frame stores an incompressible chunk at its size plus a few bytes.
struct FrameWriter {
    out: Vec<u8>,
    hasher: xxhash_rust::xxh64::Xxh64,
    /// Content bytes not yet in a block; the block that brings it to 0 is the last.
    left: u64,
}

impl FrameWriter {
    /// Starts a frame of `content_size` bytes, reserving `capacity` bytes.
    fn new(content_size: u64, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(&ZSTD_MAGIC);
        let fcs_len = fcs_field_len(content_size);
        let fcs_flag: u8 = match fcs_len {
            1 => 0,
            2 => 1,
            4 => 2,
            _ => 3,
        };
        // Frame_Header_Descriptor: FCS flag (bits 7-6), Single_Segment (bit 5), checksum (bit 2).
        out.push((fcs_flag << 6) | (1 << 5) | (1 << 2));
        let fcs = if fcs_len == 2 {
            content_size - 256
        } else {
            content_size
        };
        out.extend_from_slice(&fcs.to_le_bytes()[..fcs_len]);
        Self {
            out,
            hasher: xxhash_rust::xxh64::Xxh64::new(0),
            left: content_size,
        }
    }

    /// Block_Header: Last_Block (bit 0), Block_Type (bits 1-2), Block_Size (bits 3-23).
    fn block_header(&mut self, block_type: u32, content: usize) {
        self.left = self.left.saturating_sub(content as u64);
        let last = u32::from(self.left == 0);
        let header = last | (block_type << 1) | ((content as u32) << 3);
        self.out.extend_from_slice(&header.to_le_bytes()[..3]);
    }

    /// A raw block: `bytes` (at most 128 KiB) as they are.
    fn raw_block(&mut self, bytes: &[u8]) {
        self.block_header(0, bytes.len());
        self.out.extend_from_slice(bytes);
        self.hasher.update(bytes);
    }

    /// An RLE block: `byte` repeated `count` times (at most 128 KiB).
    fn rle_block(&mut self, byte: u8, count: usize) {
        self.block_header(1, count);
        self.out.push(byte);
        let run = [byte; 4096];
        let mut left = count;
        while left > 0 {
            let n = left.min(run.len());
            self.hasher.update(&run[..n]);
            left -= n;
        }
    }

    /// The frame, ending with the low 32 bits of the content's XXH64.
    fn finish(mut self) -> Vec<u8> {
        let checksum = self.hasher.digest() as u32;
        self.out.extend_from_slice(&checksum.to_le_bytes());
        self.out
    }
}

/// What a chunk frame's header declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame_Content_Size.
    pub content_size: u64,
    /// Window size in bytes (the content size for single-segment frames).
    pub window_size: u64,
    /// Length of the header, magic included.
    pub header_len: usize,
}

/// Parses and checks the header of a chunk frame: magic, no dictionary, content size present,
/// checksum on, window at most 1 MiB.
pub fn parse_header(frame: &[u8]) -> Result<FrameHeader, Error> {
    if frame.get(..4).ok_or(Error::Truncated)? != ZSTD_MAGIC {
        return Err(Error::BadMagic);
    }
    let fhd = *frame.get(4).ok_or(Error::Truncated)?;
    let fcs_flag = fhd >> 6;
    let single_segment = fhd & (1 << 5) != 0;
    if fhd & (1 << 3) != 0 {
        return Err(Error::BadHeader("has the reserved bit set"));
    }
    if fhd & (1 << 2) == 0 {
        return Err(Error::BadHeader("has no content checksum"));
    }
    if fhd & 0b11 != 0 {
        return Err(Error::BadHeader("names a dictionary"));
    }
    let mut pos = 5usize;
    let mut window_size = 0u64;
    if !single_segment {
        let wd = *frame.get(pos).ok_or(Error::Truncated)?;
        pos += 1;
        let exponent = u32::from(wd >> 3);
        let window_log = 10 + exponent;
        let base = 1u64 << window_log;
        window_size = base + (base / 8) * u64::from(wd & 7);
    }
    let fcs_len = match (fcs_flag, single_segment) {
        (0, false) => return Err(Error::BadHeader("has no content size")),
        (0, true) => 1,
        (1, _) => 2,
        (2, _) => 4,
        _ => 8,
    };
    let field = frame.get(pos..pos + fcs_len).ok_or(Error::Truncated)?;
    let mut bytes = [0u8; 8];
    bytes[..fcs_len].copy_from_slice(field);
    let mut content_size = u64::from_le_bytes(bytes);
    if fcs_len == 2 {
        content_size += 256;
    }
    pos += fcs_len;
    if single_segment {
        window_size = content_size;
    }
    if window_size > 1 << WINDOW_LOG_MAX {
        return Err(Error::WindowTooLarge(window_size));
    }
    Ok(FrameHeader {
        content_size,
        window_size,
        header_len: pos,
    })
}

/// Decodes chunk frames; owns a zstd context, so keep one per thread.
pub struct Decoder {
    ctx: zstd::bulk::Decompressor<'static>,
}

impl Decoder {
    /// A decoder that refuses windows above 1 MiB.
    pub fn new() -> Result<Self, Error> {
        let mut ctx = zstd::bulk::Decompressor::new().map_err(Error::Zstd)?;
        ctx.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(WINDOW_LOG_MAX))
            .map_err(Error::Zstd)?;
        Ok(Self { ctx })
    }

    /// Decodes the frame of a chunk of `expected_len` bytes. The header is checked before any
    /// allocation; the content checksum is verified by zstd. The caller checks the sha256.
    pub fn decode(&mut self, frame: &[u8], expected_len: u32) -> Result<Vec<u8>, Error> {
        let header = parse_header(frame)?;
        if header.content_size != u64::from(expected_len) {
            return Err(Error::SizeMismatch {
                declared: header.content_size,
                expected: expected_len,
            });
        }
        let frame_len = zstd::zstd_safe::find_frame_compressed_size(frame)
            .map_err(|code| Error::Corrupt(zstd::zstd_safe::get_error_name(code).to_string()))?;
        if frame_len != frame.len() {
            return Err(Error::TrailingBytes(frame.len().saturating_sub(frame_len)));
        }
        let mut out = Vec::with_capacity(expected_len as usize);
        let n = self
            .ctx
            .decompress_to_buffer(frame, &mut out)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        if n != expected_len as usize {
            return Err(Error::SizeMismatch {
                declared: n as u64,
                expected: expected_len,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut r = chunkfs_kernel_abi::testkit::XorShift64::new(seed | 1);
        (0..len).map(|_| r.next_u64() as u8).collect()
    }

    #[test]
    fn compressible_chunks_round_trip_as_zstd_frames() {
        let mut enc = Encoder::new(DEFAULT_LEVEL).unwrap();
        let mut dec = Decoder::new().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let frame = enc.encode(&data).unwrap();
        assert!(frame.len() < data.len() / 10);
        let h = parse_header(&frame).unwrap();
        assert_eq!(h.content_size, data.len() as u64);
        // zstd fits the window to the chunk, so small chunks need small windows.
        assert!(h.window_size <= 256 * 1024, "window {}", h.window_size);
        assert_eq!(dec.decode(&frame, data.len() as u32).unwrap(), data);
    }

    /// The hand-built frames are byte for byte what they were when images were first written
    /// with them: descriptors and frames already stored must be re-derivable.
    #[test]
    fn hand_built_frames_keep_their_bytes() {
        for (n, len, sha256) in [
            (
                1usize,
                14,
                "494e839d811f7d7bec248a9d603c126dd7563aa70cc642acb600a46f59b0cbe8",
            ),
            (
                255,
                268,
                "4ebaef5ef1216b9dc6ccde2ea10da2e25255c1f38b0bf02bbb47612a00b92f5f",
            ),
            (
                256,
                270,
                "d6e43402347db5d4734031604d5604fd3f010a0b6064470fbb3da8e8bf56107c",
            ),
            (
                65791,
                65805,
                "be91a8fee790c216bd46136da5524e91485abf31e98bb71f80c31762dbdd34d2",
            ),
            (
                65792,
                65808,
                "3c692c22914086bd57670853fe26a366e040439b41691ea0ebce4d12f20d8dea",
            ),
            (
                300_000,
                300_022,
                "5ce7adfdcd011a7da99ba21b3b4e52a550a570f57bd74633de0cfbba2277c704",
            ),
        ] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let f = raw_frame(&data);
            assert_eq!(
                (f.len(), crate::digest::Digest::of(&f).to_hex()),
                (len, sha256.into())
            );
            assert_eq!(zstd::bulk::decompress(&f, n).unwrap(), data);
        }
        let zeros = rle_frame(0, 1 << 20);
        assert_eq!(
            crate::digest::Digest::of(&zeros).to_hex(),
            "dd31b3fa6bb8601710cbde2c625660763bf38adc5255501e3d3a681cc0e4e1a4"
        );
        let sevens = rle_frame(7, 300_000);
        assert_eq!(
            zstd::bulk::decompress(&sevens, 300_000).unwrap(),
            vec![7u8; 300_000]
        );
    }

    #[test]
    fn incompressible_chunks_become_raw_frames_zstd_accepts() {
        let mut enc = Encoder::new(3).unwrap();
        let mut dec = Decoder::new().unwrap();
        for len in [
            1usize,
            255,
            256,
            65_791,
            65_792,
            131_072,
            131_073,
            CHUNK_FRAME_MAX as usize,
        ] {
            let data = noise(len, len as u64);
            let frame = enc.encode(&data).unwrap();
            assert_eq!(frame.len(), raw_frame_len(len), "len {len}");
            assert_eq!(parse_header(&frame).unwrap().content_size, len as u64);
            // The reference decoder agrees with ours.
            assert_eq!(
                zstd::bulk::decompress(&frame, len).unwrap(),
                data,
                "len {len}"
            );
            assert_eq!(dec.decode(&frame, len as u32).unwrap(), data);
        }
    }

    #[test]
    fn flat_chunks_take_the_fast_level_and_keep_their_repeats() {
        let half = noise(300_000, 11);
        assert!(looks_incompressible(&half));
        let text: Vec<u8> = b"fn main() { println!(\"hello\"); }\n"
            .iter()
            .cycle()
            .take(300_000)
            .copied()
            .collect();
        assert!(!looks_incompressible(&text));
        assert!(!looks_incompressible(&vec![0u8; 4096]));
        // Noise twice over: flat bytes, but the second half repeats the first.
        let twice = [half.clone(), half].concat();
        assert!(looks_incompressible(&twice));
        let mut enc = Encoder::new(17).unwrap();
        let frame = enc.encode(&twice).unwrap();
        assert!(frame.len() < twice.len() * 6 / 10, "{}", frame.len());
        assert_eq!(
            Decoder::new().unwrap().decode(&frame, 600_000).unwrap(),
            twice
        );
        // The fast level's frame, not the slow one's.
        let mut fast = frame_context(FAST_LEVEL).unwrap();
        assert_eq!(frame, fast.compress(&twice).unwrap());
    }

    #[test]
    fn frames_are_deterministic() {
        let data = noise(100_000, 7).iter().map(|b| b & 7).collect::<Vec<_>>();
        let a = Encoder::new(9).unwrap().encode(&data).unwrap();
        let b = Encoder::new(9).unwrap().encode(&data).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn damaged_frames_are_refused() {
        let mut enc = Encoder::new(3).unwrap();
        let mut dec = Decoder::new().unwrap();
        for data in [vec![b'a'; 50_000], noise(50_000, 3)] {
            let frame = enc.encode(&data).unwrap();
            assert!(matches!(
                dec.decode(&frame, 49_999),
                Err(Error::SizeMismatch { .. })
            ));
            assert!(matches!(
                dec.decode(&frame[..frame.len() - 1], 50_000),
                Err(Error::Corrupt(_))
            ));
            let mut extra = frame.clone();
            extra.push(0);
            assert!(matches!(
                dec.decode(&extra, 50_000),
                Err(Error::TrailingBytes(1))
            ));
            let mut flipped = frame.clone();
            let last = flipped.len() - 6;
            flipped[last] ^= 0x40;
            assert!(dec.decode(&flipped, 50_000).is_err());
            let mut magic = frame.clone();
            magic[0] ^= 1;
            assert!(matches!(dec.decode(&magic, 50_000), Err(Error::BadMagic)));
        }
        assert!(matches!(
            dec.decode(&[0x28, 0xb5], 1),
            Err(Error::Truncated)
        ));
        assert!(matches!(enc.encode(&[]), Err(Error::BadChunkSize(0))));
        assert!(matches!(Encoder::new(99), Err(Error::BadLevel(99))));
    }
}
