//! Checking a chunk frame before it is stored or trusted (docs/format.md §4.5): its length is
//! exactly the stored length, its header obeys §4.1 (no dictionary, content size equal to the
//! chunk's, checksum on, window at most 1 MiB), it decompresses with a 1 MiB window limit and a
//! good content checksum to exactly the chunk's length, and the result's sha256 is the chunk's
//! digest.

use std::cell::RefCell;

use chunkfs_format::compress::Decoder;
use chunkfs_format::digest::Digest;

use crate::oci::pack::PackEntry;

thread_local! {
    /// One zstd context per thread (decoders are not shared).
    static DECODER: RefCell<Option<Decoder>> = const { RefCell::new(None) };
}

/// Checks that `frame` is the frame of the chunk `entry` names; the error says what is wrong.
pub(crate) fn check_frame(frame: &[u8], entry: &PackEntry) -> Result<(), String> {
    if frame.len() != entry.stored_len as usize {
        return Err(format!(
            "{} bytes where the frame has {}",
            frame.len(),
            entry.stored_len
        ));
    }
    let data = DECODER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let decoder = match &mut *cell {
            Some(d) => d,
            slot => slot.insert(Decoder::new().map_err(|e| e.to_string())?),
        };
        decoder
            .decode(frame, entry.raw_len)
            .map_err(|e| e.to_string())
    })?;
    if Digest::of(&data) != entry.digest {
        return Err("does not decompress to its chunk (sha256 differs)".into());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chunkfs_format::compress::Encoder;

    #[test]
    fn good_frames_pass_and_every_damage_is_named() {
        let chunk: Vec<u8> = (0..50_000u32).map(|i| (i % 97) as u8).collect();
        let frame = Encoder::new(3).unwrap().encode(&chunk).unwrap();
        let entry = PackEntry {
            digest: Digest::of(&chunk),
            offset: 0,
            stored_len: frame.len() as u32,
            raw_len: chunk.len() as u32,
        };
        check_frame(&frame, &entry).unwrap();
        assert!(
            check_frame(&frame[1..], &entry)
                .unwrap_err()
                .contains("bytes")
        );
        let mut bad = frame.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x10;
        assert!(check_frame(&bad, &entry).is_err());
        let mut wrong = entry;
        wrong.digest = Digest([1; 32]);
        assert!(check_frame(&frame, &wrong).unwrap_err().contains("sha256"));
        let mut short = entry;
        short.raw_len -= 1;
        assert!(check_frame(&frame, &short).unwrap_err().contains("content"));
        assert!(check_frame(&vec![0; frame.len()], &entry).is_err());
    }
}
