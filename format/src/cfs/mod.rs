//! The `.cfs` single-file image (docs/format.md §6): header, EROFS head area, chunk frames,
//! EROFS metadata area, metadata blob, chunk index.
//!
//! ```no_run
//! use chunkfs_format::cfs::{read::Cfs, write::{pack_dir, PackOptions}};
//! use std::path::Path;
//! let summary = pack_dir(Path::new("rootfs"), Path::new("image.cfs"), &PackOptions::default(), |_| {})?;
//! let cfs = Cfs::open(Path::new("image.cfs"))?;
//! assert_eq!(cfs.header().metadata_digest, summary.metadata_digest);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod header;
mod map;
pub mod read;
pub mod verify;
pub mod write;
