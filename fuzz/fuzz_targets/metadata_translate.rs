//! cargo-fuzz entry of `metadata_translate`: [`chunkfs_fuzz::targets::metadata_translate::run`], which the regression
//! replay (`tests/replay.rs`) calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chunkfs_fuzz::targets::metadata_translate::run(data));
