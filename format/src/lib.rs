//! The chunkfs image format (docs/format.md): the metadata model and its Cap'n Proto encoding,
//! content-defined chunking, zstd chunk frames, the `.cfs` single-file container, OCI image
//! layouts, and translation of an image into its EROFS descriptor (docs/descriptor.md).

pub mod build;
pub mod cfs;
pub mod chunk;
pub mod compress;
pub mod digest;
pub mod index;
pub mod inspect;
pub mod model;
pub mod oci;
pub mod scan;
pub mod schema;
pub mod tar;
pub mod translate;
pub mod unpack;
pub mod verify;
