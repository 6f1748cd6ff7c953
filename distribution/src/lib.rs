//! Moving chunkfs images between places: OCI image layouts on disk (docs/format.md §7),
//! conversion of ordinary container images whose layers are tar archives (§7.8), and, built on
//! them, the registry client and the local chunk store that lazily mounted images share
//! (docs/registry.md). The image itself (model, chunking, frames, `.cfs`, descriptor) is
//! `chunkfs-format`'s; this crate only stores, finds and fetches it.
//!
//! ```no_run
//! use chunkfs_distribution::oci::read::open_image;
//! let image = open_image("/var/lib/images".as_ref(), Some("v1"))?;
//! println!("{} chunks in {} packs", image.image.chunks.len(), image.packs.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod oci;
pub mod registry;
pub mod remote;
pub mod source;
pub mod store;
pub mod tar;
