//! The fuzz targets' entry points: each takes one input as libFuzzer hands it over. The
//! binaries in `fuzz_targets/` only call them, and `tests/replay.rs` runs every committed
//! regression input (`regressions/TARGET/*`) through the same function.

pub mod cfs_open;
pub mod cfs_roundtrip;
pub mod descriptor_parse;
pub mod metadata_translate;
pub mod oci_layout;
pub mod tar_layers;
pub mod unpack;

/// The entry point of each target, by name.
pub const ALL: &[(&str, fn(&[u8]))] = &[
    ("cfs_open", cfs_open::run),
    ("cfs_roundtrip", cfs_roundtrip::run),
    ("descriptor_parse", descriptor_parse::run),
    ("metadata_translate", metadata_translate::run),
    ("oci_layout", oci_layout::run),
    ("tar_layers", tar_layers::run),
    ("unpack", unpack::run),
];
