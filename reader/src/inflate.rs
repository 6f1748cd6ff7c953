//! Decompressing a chunk frame and computing the sha256 of its content together.
//!
//! Why: a read that misses the cache waits for the whole chunk to be decompressed and hashed
//! before a byte is served. Done one after the other, a 1 MiB chunk of text costs about 0.7 ms of
//! zstd and 0.6 ms of sha256 on this project's machine, and random reads of large chunks (text
//! files and the packed stream's small files, cut into 512 KiB-1 MiB chunks; every chunk of a
//! `--best` image) paid both in turn while the other core idled. For a large chunk the frame is
//! now fed to zstd in steps, and a second thread hashes each step's output while zstd decodes the
//! next: the miss costs about the longer of the two instead of their sum. Small chunks are not
//! worth a thread and are done in turn.
//!
//! zstd decodes straight into the chunk's buffer (`ZSTD_d_stableOutBuffer`), so the hashing
//! thread reads bytes zstd has written and will not touch again, while zstd writes further on
//! (and reads back into the written part for its matches). Both sides see the buffer only through
//! a raw pointer until the threads are joined; that is the `unsafe` here.
//!
//! zstd's own content checksum (xxh64) is not checked: the sha256 of the same bytes is.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::mpsc;

use sha2::{Digest as _, Sha256};
use zstd::zstd_safe::zstd_sys;

use crate::error::ChunkError;

/// Chunks of at least this many bytes are hashed on a second thread while they decode (a thread
/// costs tens of microseconds; a 256 KiB chunk costs about 0.3 ms to decode and hash).
const OVERLAP_MIN: usize = 256 * 1024;
/// Compressed bytes given to zstd per step: each step's output goes to the hashing thread.
const STEP: usize = 32 * 1024;
/// zstd windows above 1 MiB are refused, as the kernel's zstd config allows no more.
const WINDOW_LOG_MAX: i32 = 20;

/// A decompression context configured for chunk frames.
struct Dctx(NonNull<zstd_sys::ZSTD_DCtx>);

impl Dctx {
    fn new() -> Result<Self, ChunkError> {
        // SAFETY: plain FFI; a null result is handled.
        let ptr = NonNull::new(unsafe { zstd_sys::ZSTD_createDCtx() })
            .ok_or_else(|| ChunkError::Decompress("out of memory".into()))?;
        let dctx = Dctx(ptr);
        use zstd_sys::ZSTD_dParameter as P;
        for (param, value) in [
            (P::ZSTD_d_windowLogMax, WINDOW_LOG_MAX),
            // ZSTD_d_stableOutBuffer: decode into the caller's buffer, which stays put.
            (P::ZSTD_d_experimentalParam2, 1),
            // ZSTD_d_forceIgnoreChecksum: the sha256 checks the content.
            (P::ZSTD_d_experimentalParam3, 1),
        ] {
            // SAFETY: the context is valid; setting a parameter only writes into it.
            check(unsafe { zstd_sys::ZSTD_DCtx_setParameter(dctx.0.as_ptr(), param, value) })?;
        }
        Ok(dctx)
    }

    /// Starts a new frame, whatever an earlier (possibly failed) one left behind.
    fn reset(&mut self) -> Result<(), ChunkError> {
        // SAFETY: the context is valid; a session reset keeps the parameters.
        check(unsafe {
            zstd_sys::ZSTD_DCtx_reset(
                self.0.as_ptr(),
                zstd_sys::ZSTD_ResetDirective::ZSTD_reset_session_only,
            )
        })
        .map(|_| ())
    }
}

impl Drop for Dctx {
    fn drop(&mut self) {
        // SAFETY: created by ZSTD_createDCtx and freed once.
        unsafe { zstd_sys::ZSTD_freeDCtx(self.0.as_ptr()) };
    }
}

thread_local! {
    static DCTX: RefCell<Option<Dctx>> = const { RefCell::new(None) };
}

/// `code` unless it is a zstd error, which becomes [`ChunkError::Decompress`].
fn check(code: usize) -> Result<usize, ChunkError> {
    // SAFETY: plain FFI on a number; the name is a static C string.
    if unsafe { zstd_sys::ZSTD_isError(code) } != 0 {
        let name = unsafe { std::ffi::CStr::from_ptr(zstd_sys::ZSTD_getErrorName(code)) };
        return Err(ChunkError::Decompress(name.to_string_lossy().into_owned()));
    }
    Ok(code)
}

/// The chunk buffer's start, handed to the hashing thread.
#[derive(Clone, Copy)]
struct Base(*mut u8);
// SAFETY: the hashing thread only reads bytes zstd has finished writing (see the module comment)
// and is joined before the buffer is used otherwise.
unsafe impl Send for Base {}

/// Decompresses `frame`, which must hold exactly one frame of exactly `len` bytes of content,
/// and returns the content with its sha256.
pub(crate) fn decompress_hashed(
    frame: &[u8],
    len: usize,
) -> Result<(Vec<u8>, [u8; 32]), ChunkError> {
    let mut out: Vec<u8> = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|_| ChunkError::Decompress("out of memory".into()))?;
    let base = Base(out.as_mut_ptr());
    let (decoded, digest) = DCTX.with(|cell| {
        let mut cell = cell.borrow_mut();
        let dctx = match cell.as_mut() {
            Some(d) => d,
            None => cell.insert(Dctx::new()?),
        };
        dctx.reset()?;
        let in_turn = |dctx: &mut Dctx| {
            // Nobody hashes along: the whole frame in one step.
            let n = decode(dctx, frame, frame.len(), base, len, |_| {})?;
            // SAFETY: zstd wrote bytes [0, n) of the buffer, whose capacity is len >= n.
            let bytes = unsafe { std::slice::from_raw_parts(base.0, n) };
            Ok::<_, ChunkError>((n, Sha256::digest(bytes).into()))
        };
        if len < OVERLAP_MIN {
            return in_turn(dctx);
        }
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel::<usize>();
            // A thread the system refuses (Scope::spawn would panic) means hashing in turn.
            let Ok(hasher) = std::thread::Builder::new()
                .name("chunkfs-hash".into())
                .spawn_scoped(s, move || hash_as_written(base, &rx))
            else {
                return in_turn(dctx);
            };
            let decoded = decode(dctx, frame, STEP, base, len, |upto| {
                let _ = tx.send(upto);
            });
            drop(tx);
            let digest = hasher
                .join()
                .map_err(|_| ChunkError::Decompress("the hashing thread failed".into()))?;
            decoded.map(|n| (n, digest))
        })
    })?;
    if decoded != len {
        return Err(ChunkError::ContentSize {
            declared: Some(decoded as u64),
            expected: u32::try_from(len).unwrap_or(u32::MAX),
        });
    }
    // SAFETY: zstd initialised exactly `len` bytes, and no raw pointer into the buffer is used
    // any more (the hashing thread is joined).
    unsafe { out.set_len(len) };
    Ok((out, digest))
}

/// The sha256 of the buffer at `base`, hashed up to each length `rx` announces as written.
fn hash_as_written(base: Base, rx: &mpsc::Receiver<usize>) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut done = 0;
    while let Ok(upto) = rx.recv() {
        // SAFETY: zstd has written bytes [0, upto) and writes only past them from now on; the
        // buffer outlives this thread (joined in `decompress_hashed`).
        let part = unsafe { std::slice::from_raw_parts(base.0.add(done), upto - done) };
        h.update(part);
        done = upto;
    }
    h.finalize().into()
}

/// Decodes the one frame of `frame` into the `cap` bytes at `base`, `step` bytes of input at a
/// time, calling `written` with the bytes written so far after each step that wrote some.
/// Returns the content length.
fn decode(
    dctx: &mut Dctx,
    frame: &[u8],
    step: usize,
    base: Base,
    cap: usize,
    mut written: impl FnMut(usize),
) -> Result<usize, ChunkError> {
    let mut input = zstd_sys::ZSTD_inBuffer {
        src: frame.as_ptr().cast(),
        size: 0,
        pos: 0,
    };
    let mut output = zstd_sys::ZSTD_outBuffer {
        dst: base.0.cast(),
        size: cap,
        pos: 0,
    };
    loop {
        input.size = input.size.saturating_add(step.max(1)).min(frame.len());
        let before = output.pos;
        // SAFETY: the context is valid; `input` describes bytes of `frame`, `output` the buffer
        // of `cap` bytes at `base`, which zstd writes from `output.pos` on.
        let left = check(unsafe {
            zstd_sys::ZSTD_decompressStream(dctx.0.as_ptr(), &mut output, &mut input)
        })?;
        if output.pos > before {
            written(output.pos);
        }
        if left == 0 {
            // The frame is complete: nothing may follow it.
            if input.pos != frame.len() {
                return Err(ChunkError::Decompress(format!(
                    "{} bytes follow the frame",
                    frame.len() - input.pos
                )));
            }
            return Ok(output.pos);
        }
        if input.pos == frame.len() && output.pos == before {
            // All input given, the frame unfinished and no progress: it is truncated (or its
            // content is larger than the chunk).
            return Err(ChunkError::Decompress(if output.pos == cap {
                "the frame holds more than the chunk's length".into()
            } else {
                "the frame is truncated".into()
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chunkfs_kernel_abi::testkit::XorShift64;

    /// `len` bytes of words from a small vocabulary: compressible, not trivially.
    fn text(len: usize, seed: u64) -> Vec<u8> {
        const WORDS: [&[u8]; 8] = [
            b"chunk ", b"frame ", b"extent ", b"inode\n", b"zstd ", b"sha256 ", b"erofs ", b"0x1f ",
        ];
        let mut rng = XorShift64::new(seed | 1);
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(WORDS[rng.below(8) as usize]);
        }
        out.truncate(len);
        out
    }

    fn frame(data: &[u8]) -> Vec<u8> {
        let mut c = zstd::bulk::Compressor::new(9).unwrap();
        c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .unwrap();
        c.compress(data).unwrap()
    }

    #[test]
    fn small_and_large_chunks_decode_with_their_sha256() {
        // Below, at and above the size that takes a second thread, and a frame of raw blocks.
        for len in [1, 4096, OVERLAP_MIN - 1, OVERLAP_MIN, 1 << 20] {
            let data = text(len, len as u64);
            let (out, digest) = decompress_hashed(&frame(&data), len).unwrap();
            assert_eq!(out, data, "{len} bytes");
            assert_eq!(
                digest,
                <[u8; 32]>::from(Sha256::digest(&data)),
                "{len} bytes"
            );
        }
        let noise: Vec<u8> = (0..700_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let (out, digest) = decompress_hashed(&frame(&noise), noise.len()).unwrap();
        assert_eq!(out, noise);
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&noise)));
    }

    #[test]
    fn bad_frames_fail_and_leave_the_context_usable() {
        let data = text(600_000, 7);
        let good = frame(&data);
        let mut cases: Vec<(&str, Vec<u8>, usize)> = vec![
            ("truncated", good[..good.len() / 2].to_vec(), data.len()),
            (
                "cut before its checksum",
                good[..good.len() - 4].to_vec(),
                data.len(),
            ),
            (
                "followed by bytes",
                [good.as_slice(), b"tail"].concat(),
                data.len(),
            ),
            ("longer than the chunk", good.clone(), data.len() - 1),
            ("not zstd", data[..4096].to_vec(), 4096),
            ("empty", Vec::new(), 10),
        ];
        let mut flipped = good.clone();
        flipped[good.len() / 3] ^= 0x5a;
        cases.push(("with a flipped byte", flipped, data.len()));
        for (what, bytes, len) in cases {
            // A flipped byte may still decode, to other bytes: the digest shows it.
            match decompress_hashed(&bytes, len) {
                Ok((out, digest)) => assert!(
                    out != data && digest != <[u8; 32]>::from(Sha256::digest(&data)),
                    "{what}: decoded to the original"
                ),
                Err(e) => assert!(!e.to_string().is_empty(), "{what}"),
            }
            // The thread's context starts the next frame afresh.
            let (out, _) = decompress_hashed(&good, data.len()).unwrap();
            assert_eq!(out, data, "after a frame {what}");
        }
    }

    #[test]
    fn whatever_a_damaged_frame_decodes_to_its_digest_is_of_those_bytes() {
        let data = text(700_000, 11);
        let good = frame(&data);
        let mut rng = XorShift64::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next_u64();
        for round in 0..300 {
            let mut bad = good.clone();
            match round % 3 {
                0 => {
                    let at = (next() as usize) % bad.len();
                    bad[at] ^= 1 << (next() % 8);
                }
                1 => bad.truncate((next() as usize) % bad.len()),
                _ => {
                    for _ in 0..8 {
                        let at = (next() as usize) % bad.len();
                        bad[at] = next() as u8;
                    }
                }
            }
            let len = if round % 7 == 0 {
                (next() as usize) % (2 * data.len())
            } else {
                data.len()
            };
            if let Ok((out, digest)) = decompress_hashed(&bad, len) {
                assert_eq!(out.len(), len, "round {round}");
                assert_eq!(
                    digest,
                    <[u8; 32]>::from(Sha256::digest(&out)),
                    "round {round}"
                );
            }
        }
    }
}
