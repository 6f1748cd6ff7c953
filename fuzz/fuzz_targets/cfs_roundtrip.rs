//! cargo-fuzz entry of `cfs_roundtrip`: [`chunkfs_fuzz::targets::cfs_roundtrip::run`], which the regression
//! replay (`tests/replay.rs`) calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chunkfs_fuzz::targets::cfs_roundtrip::run(data));
