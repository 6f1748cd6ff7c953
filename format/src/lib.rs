//! The chunkfs image format (docs/format.md): the metadata model and its Cap'n Proto encoding,
//! content-defined chunking, zstd chunk frames, the `.cfs` single-file container, and
//! translation of an image into its EROFS descriptor (docs/descriptor.md). Moving images
//! (OCI layouts, tar images, registries, the local store) is `chunkfs-distribution`'s job.
//!
//! ```no_run
//! use chunkfs_format::cfs::{read::Cfs, write::{pack_dir, PackOptions}};
//! use std::path::Path;
//!
//! // Pack a directory into a .cfs, then open it (header, metadata and index are checked)
//! // and read a chunk (its sha256 is checked).
//! pack_dir(Path::new("rootfs"), Path::new("image.cfs"), &PackOptions::default(), |_| {})?;
//! let cfs = Cfs::open(Path::new("image.cfs"))?;
//! let mut decoder = chunkfs_format::compress::Decoder::new()?;
//! let first = cfs.read_chunk(0, &mut decoder)?;
//! println!("{} inodes, first chunk {} bytes", cfs.image().inodes.len(), first.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod build;
pub mod cfs;
pub mod chunk;
pub mod compress;
pub mod digest;
pub mod digest_table;
pub mod error_class;
pub mod inspect;
pub mod model;
pub mod partial;
pub mod prefetch;
pub mod scan;
pub mod schema;
pub mod translate;
pub mod unpack;

pub use error_class::{Classify, ErrorClass};
