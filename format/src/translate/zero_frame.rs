//! The all-zero zstd frame that holes point at in the cluster layout (docs/descriptor.md §4.2).
//!
//! Built by hand from RLE blocks (RFC 8878 §3.1.1.2) rather than by a compressor, so its bytes
//! never change with the zstd library version: the descriptor must be re-derivable bit for bit.

use super::plan::ZERO_FRAME_LEN;

const MAGIC: u32 = 0xFD2F_B528;
/// Largest block of a frame (RFC 8878 `Block_Maximum_Size`).
const BLOCK_MAX: u64 = 128 * 1024;

/// The frame: single segment, 4-byte content size, RLE blocks of zeros, content checksum.
pub(super) fn frame() -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&MAGIC.to_le_bytes());
    // Frame_Header_Descriptor: FCS 4 bytes (2 << 6), single segment (1 << 5), checksum (1 << 2).
    f.push(0b1010_0100);
    f.extend_from_slice(&(ZERO_FRAME_LEN as u32).to_le_bytes());
    let blocks = ZERO_FRAME_LEN / BLOCK_MAX;
    for b in 0..blocks {
        let last = u32::from(b + 1 == blocks);
        // Block_Header: last flag, type 1 (RLE), size = repetitions.
        let header = last | (1 << 1) | ((BLOCK_MAX as u32) << 3);
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0);
    }
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for _ in 0..ZERO_FRAME_LEN / ZEROS.len() as u64 {
        h.update(&ZEROS);
    }
    // The frame stores the low 32 bits of XXH64 of the content.
    let checksum = h.digest() as u32;
    f.extend_from_slice(&checksum.to_le_bytes());
    f
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
