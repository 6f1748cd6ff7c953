//! Inputs the fuzz targets (`fuzz/fuzz_targets/`) found, replayed as they reached the library:
//! each once crashed a target or broke its oracle and must now give the outcome named here.
//! The files are the committed regression inputs of `fuzz/regressions/TARGET/`, which
//! `fuzz/tests/replay.rs` also runs through the targets themselves.
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails

use chunkfs_format::schema::codec;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A metadata blob holding `raw` as the `metadata_translate` target builds it.
fn blob(raw: &[u8]) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(1).unwrap();
    c.include_contentsize(true).unwrap();
    c.compress(raw).unwrap()
}

/// metadata_translate: a chunk's data word had bits set outside the `size` field. Cap'n Proto's
/// canonical check cannot see them, so the message decoded to the same image as the clean one
/// with a different metadata digest (two encodings of one metadata).
#[test]
fn metadata_with_bits_outside_its_fields_is_not_canonical() {
    let raw = fixture("metadata_translate/bits-outside-fields.capnp");
    assert!(
        matches!(
            codec::decode_blob(&blob(&raw)),
            Err(codec::Error::NotCanonical)
        ),
        "{:?}",
        codec::decode_blob(&blob(&raw))
    );
    // The same message with those bits cleared is the writer's encoding, and decodes.
    let mut clean = raw.clone();
    clean[69] = 0;
    let image = codec::decode_blob(&blob(&clean)).unwrap();
    assert_eq!(codec::encode(&image).unwrap(), clean);
}
