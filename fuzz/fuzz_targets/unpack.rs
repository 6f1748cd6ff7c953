//! cargo-fuzz entry of `unpack`: [`chunkfs_fuzz::targets::unpack::run`], which the regression
//! replay (`tests/replay.rs`) calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chunkfs_fuzz::targets::unpack::run(data));
