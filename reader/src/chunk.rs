//! Loading one chunk: find its digest entry, check the frame header's content size against it,
//! decompress into a buffer of exactly that size, and check the sha256 before anything is served.

use std::sync::Arc;

use chunkfs_kernel_abi::digest_table::DIGEST_FLAG_ZSTD;
use sha2::{Digest as _, Sha256};
use zstd::zstd_safe;

use crate::cache::Chunk;
use crate::device::Device;
use crate::digests::Digests;
use crate::error::ChunkError;
use crate::inflate;

/// Largest decompressed chunk accepted (the kernel's limit for one extent).
pub(crate) const MAX_RAW: u64 = 12 << 20;

/// Decompresses `frame`, which must declare `len` bytes of content, into exactly `len` bytes,
/// and returns them with their sha256.
fn decompress_exact(frame: &[u8], len: u64) -> Result<(Vec<u8>, [u8; 32]), ChunkError> {
    let declared = zstd_safe::get_frame_content_size(frame).ok().flatten();
    let expected = u32::try_from(len).unwrap_or(u32::MAX);
    if declared != Some(len) || len > MAX_RAW {
        return Err(ChunkError::ContentSize { declared, expected });
    }
    let len = usize::try_from(len).map_err(|_| ChunkError::ContentSize { declared, expected })?;
    inflate::decompress_hashed(frame, len)
}

/// Loads the chunk of the cluster `[start, start + len)` of `device` (id `device_id`).
///
/// The frame is the digest entry ending at the cluster's end; bytes between the cluster start and
/// the frame (the cluster layout's padding) must be zero, as the kernel skips only zeros. A
/// cluster without a digest entry is accepted only if it is a frame of zeros (the descriptor's
/// hole frame), which needs no digest.
pub(crate) fn load(
    digests: &Digests,
    device_id: u16,
    device: &dyn Device,
    start: u64,
    len: u64,
) -> Result<Chunk, ChunkError> {
    let end = start.checked_add(len).ok_or(ChunkError::OutOfDevice)?;
    let cluster = read(device, start, len)?;
    let Some(entry) = digests.frame_in(device_id, start, end) else {
        return zero_frame(&cluster);
    };
    let pad = usize::try_from(entry.offset.get().saturating_sub(start))
        .map_err(|_| ChunkError::OutOfDevice)?;
    let (padding, frame) = cluster
        .split_at_checked(pad)
        .ok_or(ChunkError::OutOfDevice)?;
    if padding.iter().any(|&b| b != 0) {
        return Err(ChunkError::Padding);
    }
    let flags = entry.flags.get();
    if flags & DIGEST_FLAG_ZSTD == 0 {
        return Err(ChunkError::NotZstd(flags));
    }
    let raw_len = entry.raw_len.get();
    let (out, sha256) = decompress_exact(frame, raw_len.into())?;
    if sha256 != entry.sha256 {
        return Err(ChunkError::Digest);
    }
    Ok(Arc::new(out))
}

/// Bytes `[start, start + len)` of `device`; a device that cannot return them fails the chunk.
fn read(
    device: &dyn Device,
    start: u64,
    len: u64,
) -> Result<std::borrow::Cow<'_, [u8]>, ChunkError> {
    match start.checked_add(len) {
        Some(end) if end <= device.len() => {}
        _ => return Err(ChunkError::OutOfDevice),
    }
    device
        .read_at(start, len)
        .map_err(|e| ChunkError::Device(e.0))
}

/// A cluster without a digest: serve it only if it holds a zstd frame whose content is all zeros.
fn zero_frame(cluster: &[u8]) -> Result<Chunk, ChunkError> {
    let at = cluster
        .iter()
        .position(|&b| b != 0)
        .ok_or(ChunkError::NoDigest)?;
    let frame = cluster.get(at..).ok_or(ChunkError::NoDigest)?;
    let declared = zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .ok_or(ChunkError::NoDigest)?;
    let (out, _) = decompress_exact(frame, declared).map_err(|_| ChunkError::NoDigest)?;
    if out.iter().any(|&b| b != 0) {
        return Err(ChunkError::NoDigest);
    }
    Ok(Arc::new(out))
}

/// Loads uncompressed data starting at `start` of a device: it is served only if a digest entry
/// (without the zstd flag) starts exactly there, and then only the bytes it covers, checked.
pub(crate) fn load_raw(
    digests: &Digests,
    device_id: u16,
    device: &dyn Device,
    start: u64,
) -> Result<Chunk, ChunkError> {
    let entry = digests
        .frame_at(device_id, start)
        .ok_or(ChunkError::NoDigest)?;
    let flags = entry.flags.get();
    let len = entry.stored_len.get();
    if flags & DIGEST_FLAG_ZSTD != 0 || entry.raw_len.get() != len {
        return Err(ChunkError::NotZstd(flags));
    }
    // Bounded like decompressed chunks: the copy is cached whole.
    if u64::from(len) > MAX_RAW {
        return Err(ChunkError::ContentSize {
            declared: Some(len.into()),
            expected: len,
        });
    }
    let bytes = read(device, start, len.into())?;
    if Sha256::digest(&bytes).as_slice() != entry.sha256 {
        return Err(ChunkError::Digest);
    }
    Ok(Arc::new(bytes.into_owned()))
}
