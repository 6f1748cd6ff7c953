//! The chunkfs FUSE reader: serves a validated EROFS descriptor (`chunkfs-kernel-abi`) over FUSE,
//! reading zstd chunk frames from the image or pack files and checking each chunk's sha256
//! against the digest table before any of its bytes are served.
//!
//! It knows nothing of Cap'n Proto, OCI or the `.cfs` container: its inputs are the descriptor,
//! the digest tables and the device files.
//!
//! ```no_run
//! use chunkfs_reader::{Config, DigestSource, Reader};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let table = std::fs::read("image.digests")?;
//! let config = Config::new("image.cfs", vec![], vec![DigestSource { bytes: table, device: Some(0) }]);
//! let mount = Reader::open(config)?.mount("/mnt".as_ref())?;
//! // ... the image is served until `mount` is dropped.
//! drop(mount);
//! # Ok(()) }
//! ```
//!
//! Verification: a read that needs a chunk whose frame has no digest entry, is malformed, fails
//! its zstd checksum, declares another size than the table, or decompresses to bytes with another
//! sha256 fails with EIO; everything else keeps working. Attributes, directories, symlinks and
//! xattrs come straight from the memory-mapped descriptor and match the kernel's EROFS.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cache;
mod chunk;
mod device;
mod devices;
mod digests;
mod error;
mod fill;
mod fs;
mod inflate;
mod mount;
mod prefetch;
mod reader;
mod record;

pub use cache::CacheStats;
pub use device::{Device, DeviceError, DeviceSpec};
pub use digests::DigestSource;
pub use error::{ChunkError, OpenError, ReadError};
pub use mount::MountHandle;
pub use reader::{Config, Reader};
pub use record::{Recording, write_prefetch_list};
