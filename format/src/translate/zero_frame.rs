//! The all-zero zstd frame that holes point at in the cluster layout (docs/descriptor.md §4.2).
//!
//! Built by hand from RLE blocks (RFC 8878 §3.1.1.2, `compress::rle_frame`) rather than by a
//! compressor, so its bytes never change with the zstd library version: the descriptor must be
//! re-derivable bit for bit.

use super::ctx::ZERO_FRAME_LEN;

/// The frame: single segment, content size, RLE blocks of zeros, content checksum.
pub(super) fn frame() -> Vec<u8> {
    crate::compress::rle_frame(0, ZERO_FRAME_LEN)
}

/// Writes the frame right-aligned in block `block` of the metadata area (zeros before it are
/// skipped by the kernel's decompressor).
pub(super) fn write(meta: &mut [u8], block: u64, blksz: u64) {
    let f = frame();
    let end = ((block + 1) * blksz) as usize;
    meta[end - f.len()..end].copy_from_slice(&f);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_decodes_to_zeros_with_a_valid_checksum() {
        let f = frame();
        assert!(f.len() < 512);
        let out = zstd::bulk::decompress(&f, ZERO_FRAME_LEN as usize).unwrap();
        assert_eq!(out.len() as u64, ZERO_FRAME_LEN);
        assert!(out.iter().all(|&b| b == 0));
        let mut bad = f.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(zstd::bulk::decompress(&bad, ZERO_FRAME_LEN as usize).is_err());
    }
}
