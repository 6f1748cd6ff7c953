//! cargo-fuzz entry of `tar_layers`: [`chunkfs_fuzz::targets::tar_layers::run`], which the regression
//! replay (`tests/replay.rs`) calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chunkfs_fuzz::targets::tar_layers::run(data));
