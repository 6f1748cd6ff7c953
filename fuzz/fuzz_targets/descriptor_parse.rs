//! cargo-fuzz entry of `descriptor_parse`: [`chunkfs_fuzz::targets::descriptor_parse::run`], which the regression
//! replay (`tests/replay.rs`) calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chunkfs_fuzz::targets::descriptor_parse::run(data));
