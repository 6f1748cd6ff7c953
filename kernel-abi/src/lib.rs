//! On-disk types of the chunkfs descriptor: the EROFS metadata chunkfs emits, and chunkfs's digest
//! table, with one-pass validation (`docs/descriptor.md`).
//!
//! `#![no_std]` and dependency-free so that a kernel-side or other-language reader can vendor it.
//! [`Descriptor::parse_in`] validates a whole descriptor in one pass with a caller-provided scratch
//! buffer; with the `alloc` feature [`Descriptor::parse`] allocates it.
//!
//! ```
//! use chunkfs_kernel_abi::erofs::{SuperBlock, SUPER_MAGIC};
//! use chunkfs_kernel_abi::Pod;
//! let mut sb = SuperBlock::zeroed();
//! sb.magic = SUPER_MAGIC.into();
//! assert_eq!(sb.as_bytes().len(), 144);
//! ```
#![no_std]
// Every offset and length comes from untrusted bytes: arithmetic is checked and slices are taken
// with `get`, never by indexing.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::panic
)]
#![cfg_attr(
    test,
    allow(
        clippy::arithmetic_side_effects,
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::panic
    )
)]

#[cfg(any(feature = "alloc", feature = "testkit", test))]
extern crate alloc;

pub mod digest_table;
pub mod erofs;
mod error;
pub mod le;
pub mod parse;
mod pod;
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod testkit;

pub use error::{AbiError, ParseError};
pub use le::{Le16, Le32, Le64};
pub use parse::Descriptor;
pub use pod::Pod;
