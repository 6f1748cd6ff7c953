//! The EROFS on-disk structures chunkfs emits (Linux `fs/erofs/erofs_fs.h`, docs/descriptor.md).
//!
//! Raw definitions only: no validation lives here (that is [`crate::parse`]). Field comments give
//! units; every struct has a compile-time size assertion.

use crate::le::{Le16, Le32, Le64};

/// Byte offset of the superblock in the primary device; bytes before it are free for a foreign header.
pub const SUPER_OFFSET: usize = 1024;
/// `erofs_super_block.magic`.
pub const SUPER_MAGIC: u32 = 0xE0F5_E1E2;
/// Size of one superblock extension slot in bytes.
pub const SB_EXTSLOT_SIZE: usize = 16;
/// Size of an inode slot: a nid counts these from the metadata area start.
pub const ISLOT_SIZE: usize = 32;
/// Longest name a dirent may carry.
pub const NAME_LEN: usize = 255;
/// Largest encoded (compressed) size of one physical cluster / extent, in bytes.
pub const PCLUSTER_MAX_SIZE: u32 = 1024 * 1024;
/// Largest decoded size of one physical cluster / extent, in bytes.
pub const PCLUSTER_MAX_DSIZE: u32 = 12 * 1024 * 1024;

/// `feature_compat`: the superblock checksum (crc32c) is valid.
pub const FEATURE_COMPAT_SB_CHKSUM: u32 = 0x0000_0001;
/// `feature_compat`: inodes carry their own mtime.
pub const FEATURE_COMPAT_MTIME: u32 = 0x0000_0002;
/// `feature_compat`: inline xattr bodies carry a name bloom filter.
pub const FEATURE_COMPAT_XATTR_FILTER: u32 = 0x0000_0004;

/// `feature_incompat`: compressed data is right-aligned behind zero padding (old layout).
pub const FEATURE_INCOMPAT_ZERO_PADDING: u32 = 0x0000_0001;
/// `feature_incompat`: per-algorithm configs follow the superblock.
pub const FEATURE_INCOMPAT_COMPR_CFGS: u32 = 0x0000_0002;
/// `feature_incompat`: physical clusters may span several blocks (same bit as COMPR_CFGS).
pub const FEATURE_INCOMPAT_BIG_PCLUSTER: u32 = 0x0000_0002;
/// `feature_incompat`: chunk-based (uncompressed, block-mapped) inodes exist.
pub const FEATURE_INCOMPAT_CHUNKED_FILE: u32 = 0x0000_0004;
/// `feature_incompat`: a device table lists extra devices.
pub const FEATURE_INCOMPAT_DEVICE_TABLE: u32 = 0x0000_0008;
/// `feature_incompat`: HEAD2 lclusters (a second algorithm) exist (same bit as DEVICE_TABLE).
pub const FEATURE_INCOMPAT_COMPR_HEAD2: u32 = 0x0000_0008;
/// `feature_incompat`: tail-packed inline compressed data.
pub const FEATURE_INCOMPAT_ZTAILPACKING: u32 = 0x0000_0010;
/// `feature_incompat`: fragments stored in a packed inode.
pub const FEATURE_INCOMPAT_FRAGMENTS: u32 = 0x0000_0020;
/// `feature_incompat`: physical clusters may be shared / partially referenced (same bit as FRAGMENTS).
pub const FEATURE_INCOMPAT_DEDUPE: u32 = 0x0000_0020;
/// `feature_incompat`: long xattr name prefixes.
pub const FEATURE_INCOMPAT_XATTR_PREFIXES: u32 = 0x0000_0040;
/// `feature_incompat`: 48-bit block addresses and byte-addressed encoded extents (Linux 6.15+).
pub const FEATURE_INCOMPAT_48BIT: u32 = 0x0000_0080;
/// `feature_incompat`: metadata in a metabox inode.
pub const FEATURE_INCOMPAT_METABOX: u32 = 0x0000_0100;

/// Inode data layout (`i_format` bits 1-3): plain blocks.
pub const INODE_FLAT_PLAIN: u16 = 0;
/// Inode data layout: compressed, full (8-byte) lcluster indexes or encoded extents.
pub const INODE_COMPRESSED_FULL: u16 = 1;
/// Inode data layout: plain blocks with the tail inline after the inode.
pub const INODE_FLAT_INLINE: u16 = 2;
/// Inode data layout: compressed with compact indexes.
pub const INODE_COMPRESSED_COMPACT: u16 = 3;
/// Inode data layout: chunk-based.
pub const INODE_CHUNK_BASED: u16 = 4;
/// `i_format` bit 0: extended (64-byte) inode.
pub const I_VERSION_EXTENDED: u16 = 1;
/// Shift of the data layout in `i_format`.
pub const I_DATALAYOUT_BIT: u16 = 1;
/// Mask of the data layout after shifting.
pub const I_DATALAYOUT_MASK: u16 = 7;

/// Dirent file types (`erofs_dirent.file_type`, same values as the kernel's `FT_*`).
pub mod ft {
    /// Unknown.
    pub const UNKNOWN: u8 = 0;
    /// Regular file.
    pub const REG_FILE: u8 = 1;
    /// Directory.
    pub const DIR: u8 = 2;
    /// Character device.
    pub const CHRDEV: u8 = 3;
    /// Block device.
    pub const BLKDEV: u8 = 4;
    /// FIFO.
    pub const FIFO: u8 = 5;
    /// Socket.
    pub const SOCK: u8 = 6;
    /// Symbolic link.
    pub const SYMLINK: u8 = 7;
}

/// Xattr name indexes (`erofs_xattr_entry.e_name_index`).
pub mod xattr_index {
    /// `user.`
    pub const USER: u8 = 1;
    /// `system.posix_acl_access`
    pub const POSIX_ACL_ACCESS: u8 = 2;
    /// `system.posix_acl_default`
    pub const POSIX_ACL_DEFAULT: u8 = 3;
    /// `trusted.`
    pub const TRUSTED: u8 = 4;
    /// `lustre.`
    pub const LUSTRE: u8 = 5;
    /// `security.`
    pub const SECURITY: u8 = 6;
    /// Bit 7 set: the low bits index a long name prefix.
    pub const LONG_PREFIX: u8 = 0x80;
}

/// Compression algorithm numbers (`h_algorithmtype`, extent `plen` format minus one).
pub mod compr {
    /// LZ4.
    pub const LZ4: u8 = 0;
    /// LZMA (MicroLZMA).
    pub const LZMA: u8 = 1;
    /// Raw DEFLATE.
    pub const DEFLATE: u8 = 2;
    /// Zstandard.
    pub const ZSTD: u8 = 3;
}

/// `z_erofs_map_header.h_advise` bit 0 for COMPRESSED_FULL inodes: encoded extents follow.
pub const Z_ADVISE_EXTENTS: u16 = 0x0001;
/// `h_advise` bit 0 for COMPRESSED_COMPACT inodes: 2-byte compacted indexes.
pub const Z_ADVISE_COMPACTED_2B: u16 = 0x0001;
/// `h_advise`: HEAD1 pclusters may span several blocks.
pub const Z_ADVISE_BIG_PCLUSTER_1: u16 = 0x0002;
/// `h_advise`: HEAD2 pclusters may span several blocks.
pub const Z_ADVISE_BIG_PCLUSTER_2: u16 = 0x0004;
/// `h_advise`: the tail pcluster is inline after the inode.
pub const Z_ADVISE_INLINE_PCLUSTER: u16 = 0x0008;
/// `h_advise`: uncompressed (PLAIN / format 0) clusters of one block are stored rotated by the
/// logical start's offset in its block.
pub const Z_ADVISE_INTERLACED_PCLUSTER: u16 = 0x0010;
/// `h_advise`: the file's tail is a fragment in the packed inode.
pub const Z_ADVISE_FRAGMENT_PCLUSTER: u16 = 0x0020;
/// `h_advise` bits 1-2 (with EXTENTS): record size is `4 << value` bytes.
pub const Z_ADVISE_EXTRECSZ_BIT: u16 = 1;
/// Mask of the record size code after shifting.
pub const Z_ADVISE_EXTRECSZ_MASK: u16 = 3;
/// Bit 63 of the 8-byte map header: the whole file is a fragment at the offset in bits 0-62.
pub const Z_FRAGMENT_INODE_BIT: u32 = 63;

/// Encoded extent `plen` bit 27: the extent uses only a prefix of the decoded cluster.
pub const Z_EXTENT_PLEN_PARTIAL: u32 = 1 << 27;
/// Encoded extent `plen` bits 28-31: 0 stored as is, otherwise algorithm + 1.
pub const Z_EXTENT_PLEN_FMT_BIT: u32 = 28;
/// Encoded extent `plen` bits 0-20: the encoded length in bytes (0: a hole).
pub const Z_EXTENT_PLEN_MASK: u32 = (PCLUSTER_MAX_SIZE << 1) - 1;

/// Lcluster index type: literal (uncompressed) lcluster.
pub const Z_LCLUSTER_TYPE_PLAIN: u16 = 0;
/// Lcluster index type: head of a pcluster, algorithm 1.
pub const Z_LCLUSTER_TYPE_HEAD1: u16 = 1;
/// Lcluster index type: inside a pcluster.
pub const Z_LCLUSTER_TYPE_NONHEAD: u16 = 2;
/// Lcluster index type: head of a pcluster, algorithm 2.
pub const Z_LCLUSTER_TYPE_HEAD2: u16 = 3;
/// Mask of the lcluster type in `di_advise`.
pub const Z_LI_LCLUSTER_TYPE_MASK: u16 = 3;
/// `di_advise` (HEAD, full indexes only): the pcluster is referenced only partially.
pub const Z_LI_PARTIAL_REF: u16 = 1 << 15;
/// `delta[0]` of the first NONHEAD lcluster: holds the pcluster's block count.
pub const Z_LI_D0_CBLKCNT: u16 = 1 << 11;

/// The EROFS superblock, 144 bytes at [`SUPER_OFFSET`] (with one extension slot).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SuperBlock {
    /// [`SUPER_MAGIC`].
    pub magic: Le32,
    /// crc32c of the superblock block from byte 1024 with this field zeroed (if SB_CHKSUM).
    pub checksum: Le32,
    /// `FEATURE_COMPAT_*` bits.
    pub feature_compat: Le32,
    /// log2 of the block size in bytes (9..=12).
    pub blkszbits: u8,
    /// Superblock size is `128 + sb_extslots * 16` bytes.
    pub sb_extslots: u8,
    /// Root nid without 48BIT; blocks count MSB with 48BIT.
    pub rootnid_2b_or_blocks_hi: Le16,
    /// Number of inodes (for statfs).
    pub inos: Le64,
    /// Base seconds for compact inodes' mtime.
    pub epoch: Le64,
    /// Nanoseconds for compact inodes.
    pub fixed_nsec: Le32,
    /// Blocks in the primary device (LSB).
    pub blocks_lo: Le32,
    /// Block address where nid 0 lives.
    pub meta_blkaddr: Le32,
    /// Block address of the shared xattr area.
    pub xattr_blkaddr: Le32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume name, NUL padded.
    pub volume_name: [u8; 16],
    /// `FEATURE_INCOMPAT_*` bits; a reader refuses unknown ones.
    pub feature_incompat: Le32,
    /// Bitmap of compression algorithms used (with COMPR_CFGS).
    pub available_compr_algs: Le16,
    /// Number of devices besides the primary.
    pub extra_devices: Le16,
    /// Device table byte offset divided by the slot size (128).
    pub devt_slotoff: Le16,
    /// log2 of the directory block size minus blkszbits (0).
    pub dirblkbits: u8,
    /// Number of long xattr name prefixes.
    pub xattr_prefix_count: u8,
    /// Start of the long xattr prefixes.
    pub xattr_prefix_start: Le32,
    /// Nid of the packed inode holding fragments.
    pub packed_nid: Le64,
    /// Reserved for the xattr name filter.
    pub xattr_filter_reserved: u8,
    /// Index of the inode-sharing xattr prefix.
    pub ishare_xattr_prefix_id: u8,
    /// Zero.
    pub reserved: [u8; 2],
    /// Seconds added to `epoch` for the build time.
    pub build_time: Le32,
    /// Root nid with 48BIT.
    pub rootnid_8b: Le64,
    /// Zero.
    pub reserved2: Le64,
    /// Nid of the metabox inode (METABOX).
    pub metabox_nid: Le64,
    /// Zero.
    pub reserved3: Le64,
}
const _: () = assert!(core::mem::size_of::<SuperBlock>() == 144);

/// One slot of the device table, 128 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DeviceSlot {
    /// Free-form tag (chunkfs: the blob's digest as text, NUL padded).
    pub tag: [u8; 64],
    /// Blocks in this device (LSB).
    pub blocks_lo: Le32,
    /// First block of this device in the unified address space (LSB).
    pub uniaddr_lo: Le32,
    /// Blocks in this device (MSB).
    pub blocks_hi: Le16,
    /// First block in the unified address space (MSB).
    pub uniaddr_hi: Le16,
    /// Zero.
    pub reserved: [u8; 52],
}
const _: () = assert!(core::mem::size_of::<DeviceSlot>() == 128);

/// 32-byte compact inode.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InodeCompact {
    /// Bit 0: 0 (compact); bits 1-3: data layout; bit 4: nlink is 1 (non-dirs) / dot omitted (dirs).
    pub format: Le16,
    /// Inline xattr size: 0, or 12 + 4 * (count - 1) bytes.
    pub xattr_icount: Le16,
    /// `S_IF*` | permission bits.
    pub mode: Le16,
    /// nlink, or startblk/blocks MSB when the NLINK_1 bit is set.
    pub nb: Le16,
    /// Size in bytes.
    pub size: Le32,
    /// Seconds relative to the superblock epoch.
    pub mtime: Le32,
    /// Start block, rdev, compressed block count or chunk info, by layout.
    pub u: Le32,
    /// 32-bit inode number for stat(2).
    pub ino: Le32,
    /// Owner.
    pub uid: Le16,
    /// Group.
    pub gid: Le16,
    /// Zero.
    pub reserved: Le32,
}
const _: () = assert!(core::mem::size_of::<InodeCompact>() == 32);

/// 64-byte extended inode.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InodeExtended {
    /// Bit 0: 1 (extended); bits 1-3: data layout.
    pub format: Le16,
    /// Inline xattr size: 0, or 12 + 4 * (count - 1) bytes.
    pub xattr_icount: Le16,
    /// `S_IF*` | permission bits.
    pub mode: Le16,
    /// Start block or block count MSB (48BIT).
    pub nb: Le16,
    /// Size in bytes.
    pub size: Le64,
    /// Start block, rdev, compressed block count or chunk info, by layout.
    pub u: Le32,
    /// 32-bit inode number for stat(2).
    pub ino: Le32,
    /// Owner.
    pub uid: Le32,
    /// Group.
    pub gid: Le32,
    /// Seconds since the epoch (two's complement: before 1970 is negative).
    pub mtime: Le64,
    /// Nanoseconds.
    pub mtime_nsec: Le32,
    /// Link count.
    pub nlink: Le32,
    /// Zero.
    pub reserved2: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<InodeExtended>() == 64);

/// Header of an inode's inline xattr body, 12 bytes, followed by shared ids and entries.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XattrIbodyHeader {
    /// Bloom filter of names (bit set: absent), with XATTR_FILTER.
    pub name_filter: Le32,
    /// Number of shared xattr ids that follow.
    pub shared_count: u8,
    /// Zero.
    pub reserved2: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<XattrIbodyHeader>() == 12);

/// Xattr entry header, 4 bytes, followed by the name suffix and the value, padded to 4.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XattrEntry {
    /// Length of the name suffix after the prefix.
    pub name_len: u8,
    /// Prefix index ([`xattr_index`]).
    pub name_index: u8,
    /// Length of the value in bytes.
    pub value_size: Le16,
}
const _: () = assert!(core::mem::size_of::<XattrEntry>() == 4);

/// Directory entry, 12 bytes; a directory block holds entries, then their names.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Dirent {
    /// Target inode's nid.
    pub nid: Le64,
    /// Byte offset of the name within the directory block.
    pub nameoff: Le16,
    /// [`ft`] type of the target.
    pub file_type: u8,
    /// Zero.
    pub reserved: u8,
}
const _: () = assert!(core::mem::size_of::<Dirent>() == 12);

/// zstd algorithm config that follows the superblock (after a `Le16` length of 6).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ZstdCfgs {
    /// Zero.
    pub format: u8,
    /// Largest window as log2 minus 10.
    pub windowlog: u8,
    /// Zero.
    pub reserved: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<ZstdCfgs>() == 6);

/// Map header of a compressed inode, 8 bytes at the first 8-aligned offset after inode + xattrs.
///
/// With [`Z_ADVISE_EXTENTS`] the first 4 bytes are the extent count LSB and the last 2 its MSB;
/// with bit 63 set the whole 8 bytes are a fragment offset (see [`Z_FRAGMENT_INODE_BIT`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MapHeader {
    /// Fragment offset, inline data size, or extent count LSB.
    pub fragmentoff_or_extents_lo: Le32,
    /// `Z_ADVISE_*` bits.
    pub advise: Le16,
    /// Algorithm types (bits 0-3 HEAD1, 4-7 HEAD2), or extent count MSB with EXTENTS.
    pub algorithmtype: u8,
    /// Bits 0-3: lcluster bits minus blkszbits; bit 7: whole file is a fragment.
    pub clusterbits: u8,
}
const _: () = assert!(core::mem::size_of::<MapHeader>() == 8);

/// An encoded extent record (48BIT), 32 bytes at most; a record size code may truncate it to 16.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Extent {
    /// Bits 0-20 encoded length (0: hole), bit 27 partial, bits 28-31 format.
    pub plen: Le32,
    /// Physical byte address (LSB) in the unified device space.
    pub pstart_lo: Le32,
    /// Physical byte address (MSB).
    pub pstart_hi: Le32,
    /// Logical byte offset (LSB).
    pub lstart_lo: Le32,
    /// Logical byte offset (MSB), in 32-byte records only.
    pub lstart_hi: Le32,
    /// Zero.
    pub reserved: [u8; 12],
}
const _: () = assert!(core::mem::size_of::<Extent>() == 32);

/// A full (non-compact) lcluster index, 8 bytes per logical cluster (old layout).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LclusterIndex {
    /// Bits 0-1: lcluster type; bit 15: partial reference (HEAD).
    pub advise: Le16,
    /// Where decompressed data of the head starts within this lcluster.
    pub clusterofs: Le16,
    /// HEAD: block address of the pcluster; NONHEAD: two `Le16` deltas (to head, to next head).
    pub u: Le32,
}
const _: () = assert!(core::mem::size_of::<LclusterIndex>() == 8);
