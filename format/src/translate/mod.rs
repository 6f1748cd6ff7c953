//! Translation of an image's metadata into its EROFS descriptor (docs/descriptor.md).
//!
//! Input: a validated [`Image`], where each of its chunks is stored ([`ChunkLocation`]), and the
//! shape of the primary device ([`DeviceLayout`]). Output: the EROFS bytes to place in the primary
//! device ([`BuiltDescriptor`]). Deterministic: the same input gives the same bytes.
//!
//! ```
//! use chunkfs_format::model::{mode, Image, Inode, InodeKind};
//! use chunkfs_format::translate::{translate, ExtentLayout, DeviceLayout};
//! let root = Inode { mode: mode::S_IFDIR | 0o755, uid: 0, gid: 0, mtime_sec: 0, mtime_nsec: 0,
//!                    xattrs: vec![], kind: InodeKind::Directory(vec![]) };
//! let image = Image { chunks: vec![], packed_stream: vec![], inodes: vec![root], prefetch: vec![] };
//! let layout = DeviceLayout { block_size_bits: 12, extents: ExtentLayout::Bit48, meta_offset: 4096, devices: vec![] };
//! let d = translate(&image, &[], &layout).unwrap();
//! let sb = d.superblock_area(d.min_primary_len()).unwrap();
//! assert_eq!(sb.len() as u64, d.head_end() - 1024);
//! ```
//!
//! The work is split by job: `layout` is what the caller describes, `plan` decides every
//! inode's shape and position (nids, blocks), then the encoders (`inode`, `xattr`, `dir`,
//! `extents`, `clusters`, `zero_frame`) write the bytes from what `ctx` hands them, and
//! `superblock` writes the head area once the primary device's length is known (`descriptor`).
//! Dependencies point one way: the encoders import `ctx` and `layout`, never `plan` or this
//! module (`tools/module-rings format/src/translate` checks it).

mod clusters;
mod ctx;
mod descriptor;
mod dir;
mod error;
mod extents;
mod inode;
mod layout;
mod plan;
mod superblock;
mod xattr;
mod zero_frame;

use crate::model::Image;

pub use ctx::META_MAX;
pub use descriptor::{BuiltDescriptor, Stats};
pub use error::{Error, PACKED_INODE, StandaloneError};
pub use layout::{ChunkLocation, DeviceLayout, ExtentLayout, ExtraDevice};

/// The standalone descriptor of `image` whose chunks are stored at `locations` on `devices`
/// (extra devices 1, 2, ...; no frame may be on the primary device), in the encoding `extents`.
/// The one recipe behind `chunkfs descriptor`, the mount of an OCI image or of a `.cfs` without
/// an embedded descriptor (`Cfs::standalone_descriptor`, `OciImage::standalone_descriptor`), and
/// any caller that places frames on devices of its own (a local store's pack files).
pub fn standalone(
    image: &Image,
    locations: &[ChunkLocation],
    devices: Vec<ExtraDevice>,
    extents: ExtentLayout,
) -> Result<BuiltDescriptor, Error> {
    translate(
        image,
        locations,
        &DeviceLayout::standalone(extents, devices),
    )
}

/// The `device=` mount options for these device paths, in device-table order.
pub fn device_options<P: AsRef<std::path::Path>>(paths: &[P]) -> String {
    paths
        .iter()
        .map(|p| format!("device={}", p.as_ref().display()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Translates a validated image into its EROFS descriptor.
///
/// `chunks[i]` is where the frame of `image.chunks[i]` is stored. The result is deterministic.
pub fn translate(
    image: &Image,
    chunks: &[ChunkLocation],
    layout: &DeviceLayout,
) -> Result<BuiltDescriptor, Error> {
    translate_within(image, chunks, layout, META_MAX)
}

/// [`translate`], refusing (before allocating it) a metadata area longer than `meta_max`
/// bytes. Callers that know how long the area must be (`verify` of a `.cfs`, which compares it
/// with the stored one) pass that length, so that metadata declaring huge sparse files cannot
/// make them allocate more than the image holds.
pub fn translate_within(
    image: &Image,
    chunks: &[ChunkLocation],
    layout: &DeviceLayout,
    meta_max: u64,
) -> Result<BuiltDescriptor, Error> {
    image.validate()?;
    if chunks.len() != image.chunks.len() {
        return Err(Error::ChunkCount {
            expected: image.chunks.len(),
            got: chunks.len(),
        });
    }
    plan::build(image, chunks, layout, meta_max)
}

#[cfg(test)]
mod tests;
