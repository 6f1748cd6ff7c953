//! cargo-fuzz entry of `cfs_open`: [`chunkfs_fuzz::targets::cfs_open::run`], which the regression
//! replay (`tests/replay.rs`) calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chunkfs_fuzz::targets::cfs_open::run(data));
