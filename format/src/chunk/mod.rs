//! Content-defined chunking (docs/format.md §2): FastCDC 2020 with the `fastcdc` crate's gear
//! table and normalisation level 1, fed incrementally.
//!
//! [`Chunker`] accepts bytes in pieces of any size and emits a chunk as soon as its end is
//! certain: a FastCDC cut depends only on the bytes from the chunk's start up to `max` bytes
//! later, so once `max` bytes are buffered the next cut is final. The cuts are therefore exactly
//! those of chunking the whole input at once, whatever the piece sizes.

use fastcdc::v2020::{self, Normalization};

/// The largest average chunk size of the packed stream ([`ChunkParams::packed`]).
pub const PACKED_AVG_MAX: u32 = 768 * 1024;

/// Chunk size bounds in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkParams {
    /// No cut before this many bytes (except at the end of the input).
    pub min: u32,
    /// Target average.
    pub avg: u32,
    /// Forced cut at this many bytes.
    pub max: u32,
}

impl ChunkParams {
    /// The packer's default (docs/format.md §2.3 gives the measurements behind it).
    pub const DEFAULT: Self = Self {
        min: 32 * 1024,
        avg: 128 * 1024,
        max: 512 * 1024,
    };

    /// The bounds of the packed stream's chunks, derived from these (docs/format.md §2.3): four
    /// times larger, `max` capped at the largest chunk a frame holds, `avg` at 512 KiB, `min` at
    /// half of `avg` (128/512/1020 KiB for the defaults). Small files are read whole and mostly
    /// in stream order, so a larger frame costs a random read little and compresses text and
    /// small binaries 5-10 % better than 128 KiB frames.
    pub fn packed(&self) -> Self {
        let even = |x: u32| x & !1;
        let max = even(
            self.max
                .saturating_mul(4)
                .min(crate::compress::CHUNK_FRAME_MAX),
        );
        // Below `max` whatever the input: 4 * avg < 4 * max, and 512 KiB < the capped `max`.
        let avg = even(self.avg.saturating_mul(4).min(PACKED_AVG_MAX));
        let min = even(self.min.saturating_mul(4).min(avg / 2));
        Self { min, avg, max }
    }

    /// Checks the bounds FastCDC and the format accept: even, ordered, `max` at most 1 MiB.
    pub fn validate(&self) -> Result<(), String> {
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=crate::compress::CHUNK_FRAME_MAX as usize).contains(&max)
            && min < avg
            && avg < max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes {min}/{avg}/{max} must be even, increasing, min >= 64, avg >= 256, max <= 1 MiB - 4 KiB"
            ))
        }
    }
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An incremental FastCDC chunker.
#[derive(Debug)]
pub struct Chunker {
    params: ChunkParams,
    masks: [u64; 4],
    buf: Vec<u8>,
    /// Start of the unemitted bytes in `buf`.
    start: usize,
}

impl Chunker {
    /// A chunker with `params` (which must pass [`ChunkParams::validate`]).
    pub fn new(params: ChunkParams) -> Self {
        let (mask_s, mask_l) = v2020::select_masks(params.avg as usize, Normalization::Level1);
        Self {
            params,
            masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Bytes pushed but not yet emitted.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Feeds `data`; calls `emit` with every chunk whose end is now certain.
    pub fn push<E>(
        &mut self,
        data: &[u8],
        emit: &mut impl FnMut(Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let max = self.params.max as usize;
        let mut data = data;
        while !data.is_empty() {
            // Buffer at most two chunks' worth at a time so memory stays bounded however
            // large the pieces are.
            let room = (2 * max).saturating_sub(self.pending()).max(max);
            let (now, later) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(now);
            data = later;
            while self.pending() >= max {
                self.cut_one(emit)?;
            }
            self.compact();
        }
        Ok(())
    }

    /// Ends the input: emits the remaining bytes as the last chunks and resets the chunker.
    pub fn finish<E>(&mut self, emit: &mut impl FnMut(Vec<u8>) -> Result<(), E>) -> Result<(), E> {
        while self.pending() > 0 {
            self.cut_one(emit)?;
        }
        self.buf.clear();
        self.start = 0;
        Ok(())
    }

    fn cut_one<E>(&mut self, emit: &mut impl FnMut(Vec<u8>) -> Result<(), E>) -> Result<(), E> {
        let p = self.params;
        let [mask_s, mask_l, mask_s_ls, mask_l_ls] = self.masks;
        let window = &self.buf[self.start..];
        let (_, len) = v2020::cut(
            window,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            mask_s,
            mask_l,
            mask_s_ls,
            mask_l_ls,
        );
        let len = len.clamp(1, window.len());
        let chunk = window[..len].to_vec();
        self.start += len;
        emit(chunk)
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Chunks a whole buffer at once (tests and tools).
pub fn chunk_all(params: ChunkParams, data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut c = Chunker::new(params);
    let mut emit = |v: Vec<u8>| -> Result<(), ()> {
        out.push(v);
        Ok(())
    };
    // Infallible: `emit` never fails.
    let _ = c.push(data, &mut emit);
    let _ = c.finish(&mut emit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut r = chunkfs_kernel_abi::testkit::XorShift64::new(seed | 1);
        (0..len).map(|_| r.next_u64() as u8).collect()
    }

    const SMALL: ChunkParams = ChunkParams {
        min: 2048,
        avg: 8192,
        max: 32768,
    };

    #[test]
    fn chunks_respect_bounds_and_concatenate_back() {
        let data = noise(1_000_000, 1);
        let chunks = chunk_all(SMALL, &data);
        assert!(
            chunks.len() > 60 && chunks.len() < 400,
            "{} chunks",
            chunks.len()
        );
        for c in &chunks[..chunks.len() - 1] {
            assert!(
                c.len() >= SMALL.min as usize && c.len() <= SMALL.max as usize,
                "{}",
                c.len()
            );
        }
        assert_eq!(chunks.concat(), data);
    }

    #[test]
    fn piece_sizes_do_not_change_the_cuts() {
        let data = noise(500_000, 2);
        let whole = chunk_all(SMALL, &data);
        for piece in [1usize, 7, 4096, 100_000] {
            let mut got = Vec::new();
            let mut c = Chunker::new(SMALL);
            let mut emit = |v: Vec<u8>| -> Result<(), ()> {
                got.push(v);
                Ok(())
            };
            for p in data.chunks(piece) {
                c.push(p, &mut emit).unwrap();
            }
            c.finish(&mut emit).unwrap();
            assert_eq!(got, whole, "piece size {piece}");
        }
        // Same as the fastcdc crate's own slice chunker.
        let reference: Vec<usize> = v2020::FastCDC::new(&data, 2048, 8192, 32768)
            .map(|c| c.length)
            .collect();
        assert_eq!(whole.iter().map(Vec::len).collect::<Vec<_>>(), reference);
    }

    #[test]
    fn an_insertion_changes_few_chunks() {
        let data = noise(2_000_000, 3);
        let mut edited = data.clone();
        edited.splice(100..100, *b"hello!");
        let a: std::collections::HashSet<Vec<u8>> = chunk_all(SMALL, &data).into_iter().collect();
        let b = chunk_all(SMALL, &edited);
        let new = b.iter().filter(|c| !a.contains(*c)).count();
        assert!(new <= 2, "{new} new chunks of {}", b.len());
    }

    /// The byte-at-a-time algorithm of docs/format.md §2.1, written from the document.
    fn documented_cut(data: &[u8], p: ChunkParams) -> usize {
        let (gear, _) = v2020::get_gear_with_seed(0);
        let b = (f64::from(p.avg)).log2().round() as usize;
        let (mask_s, mask_l) = (v2020::MASKS[b + 1], v2020::MASKS[b - 1]);
        let (min, avg, max) = (p.min as usize, p.avg as usize, p.max as usize);
        let r = data.len();
        if r <= min {
            return r;
        }
        let n = r.min(max);
        let center = avg.min(n);
        let mut h = 0u64;
        for i in min..2 * (n / 2) {
            h = (h << 1).wrapping_add(gear[data[i] as usize]);
            let mask = if i < center { mask_s } else { mask_l };
            if h & mask == 0 {
                return i;
            }
        }
        n
    }

    #[test]
    fn the_documented_algorithm_gives_the_same_cuts() {
        let (gear, _) = v2020::get_gear_with_seed(0);
        assert_eq!((gear[0], gear[1]), (0x3b5d3c7d207e37dc, 0x784d68ba91123086));
        for (params, seed) in [(SMALL, 11), (ChunkParams::DEFAULT, 12)] {
            let data = noise(3_000_001, seed);
            let mut expected = Vec::new();
            let mut pos = 0;
            while pos < data.len() {
                let len = documented_cut(&data[pos..], params);
                expected.push(len);
                pos += len;
            }
            let got: Vec<usize> = chunk_all(params, &data).iter().map(Vec::len).collect();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn packed_stream_params_are_four_times_larger_and_valid() {
        assert_eq!(
            ChunkParams::DEFAULT.packed(),
            ChunkParams {
                min: 128 * 1024,
                avg: 512 * 1024,
                max: 1_044_480,
            }
        );
        for (min, avg, max) in [
            (64, 256, 1024),
            (2048, 8192, 32768),
            (65536, 262_144, 1_040_384),
            (1_000_000, 1_020_000, 1_044_480),
        ] {
            let p = ChunkParams { min, avg, max };
            p.validate().unwrap();
            let packed = p.packed();
            packed.validate().unwrap();
            assert!(packed.max >= p.max && packed.avg >= p.avg.min(packed.max / 2));
        }
    }

    #[test]
    fn default_params_are_valid_and_bad_ones_refused() {
        ChunkParams::DEFAULT.validate().unwrap();
        assert!(
            ChunkParams {
                min: 10,
                avg: 8192,
                max: 32768
            }
            .validate()
            .is_err()
        );
        assert!(
            ChunkParams {
                min: 4096,
                avg: 8193,
                max: 32768
            }
            .validate()
            .is_err()
        );
        assert!(
            ChunkParams {
                min: 4096,
                avg: 8192,
                max: 2 << 20
            }
            .validate()
            .is_err()
        );
    }
}
