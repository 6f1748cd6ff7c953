//! cargo-fuzz entry of `oci_layout`: [`chunkfs_fuzz::targets::oci_layout::run`], which the regression
//! replay (`tests/replay.rs`) calls too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chunkfs_fuzz::targets::oci_layout::run(data));
