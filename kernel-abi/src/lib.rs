//! On-disk types of the chunkfs descriptor: the EROFS metadata chunkfs emits, and chunkfs's digest
//! table, with one-pass validation (`docs/descriptor.md`).
//!
//! `#![no_std]` and dependency-free so that a kernel-side or other-language reader can vendor it.
//!
//! ```
//! use chunkfs_kernel_abi::erofs::{SuperBlock, SUPER_MAGIC};
//! use chunkfs_kernel_abi::Pod;
//! let mut sb = SuperBlock::zeroed();
//! sb.magic = SUPER_MAGIC.into();
//! assert_eq!(sb.as_bytes().len(), 144);
//! ```
#![no_std]

pub mod digest_table;
pub mod erofs;
mod error;
pub mod le;
mod pod;

pub use error::AbiError;
pub use le::{Le16, Le32, Le64};
pub use pod::Pod;
