//! Unit tests: a good image built by `builder`, then one field corrupted per test, each expecting
//! the exact error; and the accessors on the good image.

mod checks;
mod prop;
mod views;

use alloc::vec;
use alloc::vec::Vec;

use crate::testkit::{Builder, CHUNKS, Data, Layout, Node};

use crate::erofs::{self, compr};
use crate::error::{AbiError, ParseError};
use crate::parse::Descriptor;
use crate::parse::inode::mode;

pub const ZSTD: u32 = (compr::ZSTD as u32 + 1) << erofs::Z_EXTENT_PLEN_FMT_BIT;

/// Node indexes of the standard image.
pub mod n {
    pub const ROOT: usize = 0;
    pub const A: usize = 1;
    pub const EMPTY: usize = 2;
    pub const FILE48: usize = 3;
    pub const FRAG: usize = 4;
    pub const INLINE: usize = 5;
    pub const LINK: usize = 6;
    pub const DEV: usize = 7;
    pub const PLAIN: usize = 8;
    pub const PACKED: usize = 9;
    pub const SPARSE: usize = 10;
    pub const FULL: usize = 11;
}

pub fn dir(mode_bits: u16, children: &[(&[u8], usize)]) -> Node {
    let mut d = Node::new(
        mode::S_IFDIR | mode_bits,
        Data::Dir(children.iter().map(|(n, i)| (n.to_vec(), *i)).collect()),
    );
    d.nlink = 2;
    d
}

/// The standard image: every inode kind and data layout the parser knows.
pub fn standard() -> Builder {
    let mut b = Builder::new();
    let mut root = dir(
        0o755,
        &[
            (b"a", n::A),
            (b"empty", n::EMPTY),
            (b"file48", n::FILE48),
            (b"frag", n::FRAG),
            (b"hard", n::FILE48),
            (b"inline", n::INLINE),
            (b"link", n::LINK),
            (b"dev", n::DEV),
            (b"sparse", n::SPARSE),
            (b"full", n::FULL),
        ],
    );
    root.extended = true;
    root.nlink = 3;
    root.mtime = (-86_400i64) as u64;
    root.nsec = 999_999_999;
    root.uid = 100_000;
    root.xattrs = vec![(erofs::xattr_index::USER, b"root".to_vec(), b"1".to_vec())];
    root.shared = vec![0];
    b.shared.push((
        erofs::xattr_index::TRUSTED,
        b"shared".to_vec(),
        b"value".to_vec(),
    ));
    b.add(root);
    b.add(dir(0o700, &[(b"plain", n::PLAIN)]));
    b.add(Node::new(mode::S_IFREG | 0o644, Data::Plain(vec![])));
    let mut f = Node::new(
        mode::S_IFREG | 0o644,
        Data::Extents {
            size: 300,
            recsz: 16,
            recs: vec![
                (ZSTD | 100, CHUNKS, 0),
                (0, 0, 100),
                (ZSTD | erofs::Z_EXTENT_PLEN_PARTIAL | 50, CHUNKS + 100, 200),
            ],
            fragment: false,
        },
    );
    f.extended = true;
    f.nlink = 2;
    f.xattrs = vec![(
        erofs::xattr_index::POSIX_ACL_ACCESS,
        vec![],
        vec![2, 0, 0, 0],
    )];
    b.add(f);
    b.add(Node::new(
        mode::S_IFREG | 0o600,
        Data::Whole { size: 10, off: 5 },
    ));
    let mut inline = Node::new(mode::S_IFREG | 0o644, Data::Inline(b"hello".to_vec()));
    inline.xattrs = vec![(
        erofs::xattr_index::SECURITY,
        b"selinux".to_vec(),
        b"ctx".to_vec(),
    )];
    b.add(inline);
    b.add(Node::new(
        mode::S_IFLNK | 0o777,
        Data::Inline(b"target".to_vec()),
    ));
    let mut dev = Node::new(mode::S_IFCHR | 0o644, Data::None);
    dev.rdev = 0x0103;
    b.add(dev);
    b.add(Node::new(
        mode::S_IFREG | 0o644,
        Data::Plain(b"plain data ".repeat(500)),
    ));
    b.add(Node::new(
        mode::S_IFREG | 0o644,
        Data::Extents {
            size: 100,
            recsz: 16,
            recs: vec![(ZSTD | 64, CHUNKS + 200, 0)],
            fragment: false,
        },
    ));
    b.packed = Some(n::PACKED);
    b.add(Node::new(mode::S_IFREG | 0o644, Data::Sparse(1 << 20)));
    b.add(Node::new(mode::S_IFREG | 0o644, full_data()));
    b
}

/// 3 lclusters of 4 KiB: a one-block zstd pcluster [0, 4096 + 100), then one from 4196 to the end.
pub fn full_data() -> Data {
    Data::Full {
        size: 10_000,
        advise: 0,
        clusterbits: 0,
        algs: compr::ZSTD,
        indexes: vec![head(1, 0, 1), nonhead(1, 1), head(1, 100, 1)],
    }
}

pub fn head(ty: u16, clusterofs: u16, blkaddr: u32) -> [u8; 8] {
    let mut x = [0u8; 8];
    x[0..2].copy_from_slice(&ty.to_le_bytes());
    x[2..4].copy_from_slice(&clusterofs.to_le_bytes());
    x[4..8].copy_from_slice(&blkaddr.to_le_bytes());
    x
}

pub fn nonhead(d0: u16, d1: u16) -> [u8; 8] {
    let mut x = [0u8; 8];
    x[0..2].copy_from_slice(&erofs::Z_LCLUSTER_TYPE_NONHEAD.to_le_bytes());
    x[4..6].copy_from_slice(&d0.to_le_bytes());
    x[6..8].copy_from_slice(&d1.to_le_bytes());
    x
}

pub fn parse(img: &[u8]) -> Result<Descriptor<&[u8]>, ParseError> {
    let mut scratch = vec![0u8; Descriptor::<&[u8]>::scratch_len(img)?];
    Descriptor::parse_in(img, &mut scratch)
}

pub fn build(b: &Builder) -> (Vec<u8>, Layout) {
    b.build()
}

/// Parses, expecting `error` found in `nid`.
#[track_caller]
pub fn expect(img: &[u8], nid: Option<u64>, error: AbiError) {
    assert_eq!(parse(img).map(|_| ()), Err(ParseError { nid, error }));
}

/// Byte offset of the dirent `name` in node `dir`'s (single) block.
pub fn dirent(img: &[u8], lay: &Layout, dir: usize, name: &[u8]) -> usize {
    let block = &img[lay.data[dir] as usize..];
    let count = u16::from_le_bytes([block[8], block[9]]) as usize / 12;
    for i in 0..count {
        let off = u16::from_le_bytes([block[i * 12 + 8], block[i * 12 + 9]]) as usize;
        if block[off..].starts_with(name)
            && (i + 1 == count
                || u16::from_le_bytes([block[i * 12 + 20], block[i * 12 + 21]]) as usize
                    == off + name.len())
        {
            return lay.data[dir] as usize + i * 12;
        }
    }
    panic!("no dirent {name:?}");
}

pub fn put16(img: &mut [u8], at: usize, v: u16) {
    img[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put32(img: &mut [u8], at: usize, v: u32) {
    img[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put64(img: &mut [u8], at: usize, v: u64) {
    img[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
