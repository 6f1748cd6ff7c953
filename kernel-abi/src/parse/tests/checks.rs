//! One test per check: the standard image with one field corrupted gives exactly this error.

use super::*;
use crate::parse::hash::{crc32c, xxh32};
use crate::testkit::{BLK, CHUNKS, Data, Node};

fn std_img() -> (Vec<u8>, Layout) {
    build(&standard())
}

fn nid(lay: &Layout, node: usize) -> Option<u64> {
    Some(lay.nid[node])
}

#[test]
fn standard_image_parses() {
    let (img, _) = std_img();
    parse(&img).unwrap();
}

// ---- superblock ----

#[test]
fn superblock_checks() {
    let (good, _) = std_img();
    let sb = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut img = good.clone();
        f(&mut img);
        parse(&img).map(|_| ()).unwrap_err()
    };
    let e = |error| ParseError { nid: None, error };
    assert_eq!(
        sb(&|i| i[1024] ^= 1),
        e(AbiError::BadMagic { what: "superblock" })
    );
    assert_eq!(
        sb(&|i| i[1036] = 13),
        e(AbiError::BadField {
            field: "superblock blkszbits",
            value: 13
        })
    );
    assert_eq!(
        sb(&|i| i[1036] = 8),
        e(AbiError::BadField {
            field: "superblock blkszbits",
            value: 8
        })
    );
    assert_eq!(
        sb(&|i| i[1104] |= erofs::FEATURE_INCOMPAT_CHUNKED_FILE as u8),
        e(AbiError::UnknownIncompat(4))
    );
    assert_eq!(
        sb(&|i| i[1104] |= erofs::FEATURE_INCOMPAT_ZTAILPACKING as u8),
        e(AbiError::UnknownIncompat(0x10))
    );
    assert_eq!(
        sb(&|i| put32(i, 1104, 0x200 | 0x82)),
        e(AbiError::UnknownIncompat(0x200))
    );
    assert_eq!(
        sb(&|i| i.truncate(1100)),
        e(AbiError::Truncated { what: "superblock" })
    );
    assert_eq!(
        sb(&|i| i[1037] = 200),
        e(AbiError::BadField {
            field: "superblock sb_extslots",
            value: 200
        })
    );
    assert_eq!(
        sb(&|i| i[1114] = 1),
        e(AbiError::BadField {
            field: "superblock dirblkbits",
            value: 1
        })
    );
    assert_eq!(
        sb(&|i| put32(i, 1056, 1_000_000_000)),
        e(AbiError::BadField {
            field: "superblock fixed_nsec",
            value: 1_000_000_000
        })
    );
    let blocks = (good.len() as u64 / BLK) as u32;
    assert_eq!(
        sb(&|i| put32(i, 1064, blocks)),
        e(AbiError::OutOfRange {
            table: "superblock meta_blkaddr",
            index: blocks.into()
        })
    );
}

#[test]
fn superblock_checksum_is_verified_when_flagged() {
    let (mut img, _) = std_img();
    img[1032] |= erofs::FEATURE_COMPAT_SB_CHKSUM as u8;
    put32(&mut img, 1028, 0x1234_5678);
    assert_eq!(
        parse(&img).map(|_| ()),
        Err(ParseError {
            nid: None,
            error: AbiError::BadField {
                field: "superblock checksum",
                value: 0x1234_5678
            }
        })
    );
    // The right value: crc32c over the rest of the block with the field zeroed.
    put32(&mut img, 1028, 0);
    let crc = crc32c(!0, &img[1024..BLK as usize]);
    put32(&mut img, 1028, crc);
    parse(&img).unwrap();
}

#[test]
fn compression_config_checks() {
    let (good, _) = std_img();
    let e = |error| Err(ParseError { nid: None, error });
    let mut img = good.clone();
    put16(&mut img, 1108, 1 << compr::LZ4 | 1 << compr::ZSTD);
    assert_eq!(
        parse(&img).map(|_| ()),
        e(AbiError::Unsupported {
            what: "compression algorithms",
            value: 9
        })
    );
    let mut img = good.clone();
    put16(&mut img, 1152, 4);
    assert_eq!(
        parse(&img).map(|_| ()),
        e(AbiError::BadField {
            field: "zstd config size",
            value: 4
        })
    );
    let mut img = good.clone();
    img[1154] = 1;
    assert_eq!(
        parse(&img).map(|_| ()),
        e(AbiError::BadField {
            field: "zstd config format",
            value: 1
        })
    );
    let mut img = good.clone();
    img[1155] = 11;
    assert_eq!(
        parse(&img).map(|_| ()),
        e(AbiError::BadField {
            field: "zstd config windowlog",
            value: 11
        })
    );
}

#[test]
fn device_table_checks() {
    let mut b = standard();
    let (img, _) = build(&b);
    let primary = (img.len() as u64 / BLK) as u32;
    b.devices = vec![(16, primary), (16, primary + 16)];
    let (good, lay) = build(&b);
    let d = parse(&good).unwrap();
    assert_eq!(d.extra_devices(), 2);
    assert_eq!(d.total_blocks(), u64::from(primary) + 32);
    assert_eq!(d.device(2).unwrap().uniaddr, u64::from(primary) + 16);
    assert!(d.device(0).is_none() && d.device(3).is_none());
    // Overlapping the primary device, or out of order.
    let mut img = good.clone();
    put32(&mut img, lay.devt as usize + 68, primary - 1);
    assert_eq!(
        parse(&img).map(|_| ()),
        Err(ParseError {
            nid: None,
            error: AbiError::Unsorted {
                table: "device table",
                index: 0
            }
        })
    );
    let mut img = good.clone();
    put32(&mut img, lay.devt as usize + 128 + 68, primary + 15);
    assert_eq!(
        parse(&img).map(|_| ()),
        Err(ParseError {
            nid: None,
            error: AbiError::Unsorted {
                table: "device table",
                index: 1
            }
        })
    );
    let mut img = good.clone();
    put16(&mut img, 1112, (good.len() / 128) as u16);
    assert_eq!(
        parse(&img).map(|_| ()),
        Err(ParseError {
            nid: None,
            error: AbiError::Truncated {
                what: "device table"
            }
        })
    );
}

// ---- inodes ----

#[test]
fn inode_checks() {
    let (good, lay) = std_img();
    let at = |node: usize| lay.pos[node] as usize;
    let check = |node: usize, f: &dyn Fn(&mut Vec<u8>), error: AbiError| {
        let mut img = good.clone();
        f(&mut img);
        expect(&img, nid(&lay, node), error);
    };
    check(
        n::INLINE,
        &|i| i[at(n::INLINE)] |= 1 << 5,
        AbiError::BadField {
            field: "inode format",
            value: (2 << 1 | 1 << 4 | 1 << 5) as u64,
        },
    );
    check(
        n::INLINE,
        &|i| put16(i, at(n::INLINE) + 4, 0o170644),
        AbiError::BadField {
            field: "inode mode",
            value: 0o170644,
        },
    );
    check(
        n::INLINE,
        &|i| put16(i, at(n::INLINE), 5 << 1 | 1 << 4),
        AbiError::BadField {
            field: "inode data layout",
            value: 5,
        },
    );
    check(
        n::A,
        &|i| put16(i, at(n::A), erofs::INODE_COMPRESSED_FULL << 1),
        AbiError::BadField {
            field: "inode data layout",
            value: 1,
        },
    );
    check(
        n::FILE48,
        &|i| put32(i, at(n::FILE48) + 40, 1_000_000_000),
        AbiError::BadField {
            field: "inode mtime_nsec",
            value: 1_000_000_000,
        },
    );
    check(
        n::FILE48,
        &|i| put32(i, at(n::FILE48) + 44, 0),
        AbiError::BadField {
            field: "inode nlink",
            value: 0,
        },
    );
    check(
        n::DEV,
        &|i| put32(i, at(n::DEV) + 8, 1),
        AbiError::BadField {
            field: "special file size",
            value: 1,
        },
    );
    check(
        n::LINK,
        &|i| put32(i, at(n::LINK) + 8, 0),
        AbiError::BadField {
            field: "symlink size",
            value: 0,
        },
    );
    check(
        n::LINK,
        &|i| put32(i, at(n::LINK) + 8, 4096),
        AbiError::BadField {
            field: "symlink size",
            value: 4096,
        },
    );
    check(
        n::INLINE,
        &|i| put16(i, at(n::INLINE) + 2, u16::MAX),
        AbiError::Truncated {
            what: "inode xattr body",
        },
    );
    // A compact directory with bit 4 ("dot omitted").
    check(
        n::A,
        &|i| put16(i, at(n::A), erofs::INODE_FLAT_INLINE << 1 | 1 << 4),
        AbiError::BadField {
            field: "directory format (dot omitted)",
            value: 0x14,
        },
    );
}

#[test]
fn nid_out_of_range() {
    let (mut img, lay) = std_img();
    let at = dirent(&img, &lay, n::ROOT, b"inline");
    put64(&mut img, at, 1 << 40);
    expect(
        &img,
        Some(1 << 40),
        AbiError::OutOfRange {
            table: "nid",
            index: 1 << 40,
        },
    );
}

#[test]
fn inline_data_must_not_cross_a_block() {
    let (mut img, lay) = std_img();
    // Claim more inline bytes than the rest of the inode's block holds.
    let room = BLK - lay.data[n::INLINE] % BLK;
    put32(&mut img, lay.pos[n::INLINE] as usize + 8, room as u32 + 1);
    expect(
        &img,
        nid(&lay, n::INLINE),
        AbiError::BadField {
            field: "inline data crossing a block",
            value: room + 1,
        },
    );
}

#[test]
fn flat_blocks_inside_the_primary_device() {
    let (mut img, lay) = std_img();
    let blocks = (img.len() as u64 / BLK) as u32;
    put32(&mut img, lay.pos[n::PLAIN] as usize + 16, blocks - 1);
    expect(
        &img,
        nid(&lay, n::PLAIN),
        AbiError::OutOfRange {
            table: "inode startblk",
            index: u64::from(blocks - 1),
        },
    );
}

#[test]
fn symlink_target_without_nul() {
    let (mut img, lay) = std_img();
    img[lay.data[n::LINK] as usize + 2] = 0;
    expect(
        &img,
        nid(&lay, n::LINK),
        AbiError::BadField {
            field: "symlink target with NUL",
            value: 6,
        },
    );
}

#[test]
fn inodes_must_not_overlap() {
    let mut b = standard();
    // A file whose inline content is itself a valid empty-file inode, and an entry naming it.
    let mut fake = [0u8; 32];
    fake[0..2].copy_from_slice(&(1u16 << 4).to_le_bytes());
    fake[4..6].copy_from_slice(&(mode::S_IFREG | 0o644).to_le_bytes());
    let host = b.add(Node::new(
        mode::S_IFREG | 0o644,
        Data::Inline(fake.to_vec()),
    ));
    if let Data::Dir(c) = &mut b.nodes[n::ROOT].data {
        c.push((b"host".to_vec(), host));
        c.push((b"zz".to_vec(), host));
    }
    let (mut img, lay) = build(&b);
    parse(&img).unwrap();
    let at = dirent(&img, &lay, n::ROOT, b"zz");
    put64(&mut img, at, lay.nid[host] + 1);
    let slot = lay.nid[host] + 1;
    expect(
        &img,
        Some(slot),
        AbiError::BadField {
            field: "inodes overlapping at slot",
            value: slot,
        },
    );
}

// ---- xattrs ----

#[test]
fn xattr_checks() {
    let (good, lay) = std_img();
    // The inline node's body: 12-byte header, then one entry (security.selinux = "ctx").
    let entry = lay.pos[n::INLINE] as usize + 32 + 12;
    let check = |f: &dyn Fn(&mut Vec<u8>), error: AbiError| {
        let mut img = good.clone();
        f(&mut img);
        expect(&img, nid(&lay, n::INLINE), error);
    };
    check(
        &|i| i[entry + 1] = 5,
        AbiError::BadField {
            field: "xattr name index",
            value: 5,
        },
    );
    check(
        &|i| i[entry + 1] = 0x81,
        AbiError::BadField {
            field: "xattr name index",
            value: 0x81,
        },
    );
    check(
        &|i| i[entry + 1] = erofs::xattr_index::POSIX_ACL_DEFAULT,
        AbiError::BadField {
            field: "xattr name length",
            value: 7,
        },
    );
    check(
        &|i| put16(i, entry + 2, 100),
        AbiError::BadField {
            field: "xattr entry size",
            value: 112,
        },
    );
    check(
        &|i| i[entry + 6] = 0,
        AbiError::BadField {
            field: "xattr name",
            value: entry as u64,
        },
    );
    check(
        &|i| i[entry - 8] = 9,
        AbiError::BadField {
            field: "xattr shared count",
            value: 9,
        },
    );
    // Empty suffix on a prefix that needs one.
    check(
        &|i| i[entry] = 0,
        AbiError::BadField {
            field: "xattr name length",
            value: 0,
        },
    );
    // A shared id past the end of the input.
    let (good, lay) = std_img();
    let mut img = good.clone();
    put32(&mut img, lay.pos[n::ROOT] as usize + 64 + 12, u32::MAX / 2);
    expect(
        &img,
        nid(&lay, n::ROOT),
        AbiError::Truncated {
            what: "xattr entry",
        },
    );
}

#[test]
fn xattr_name_filter_must_not_hide_present_names() {
    let mut b = standard();
    b.compat |= erofs::FEATURE_COMPAT_XATTR_FILTER;
    let (img, _) = build(&b);
    parse(&img).unwrap();
    let h = |idx: u8, name: &[u8]| xxh32(name, 0x25BB_E08F + u32::from(idx)) & 31;
    let bit = h(erofs::xattr_index::SECURITY, b"selinux");
    b.name_filter = 1 << bit;
    let (img, lay) = build(&b);
    // Nodes are checked root first, then its leaves in name order: the first one with a name
    // hashing to that bit fails.
    let root_bits = [
        h(erofs::xattr_index::USER, b"root"),
        h(erofs::xattr_index::TRUSTED, b"shared"),
    ];
    let first = if root_bits.contains(&bit) {
        n::ROOT
    } else if h(erofs::xattr_index::POSIX_ACL_ACCESS, b"") == bit {
        n::FILE48
    } else {
        n::INLINE
    };
    expect(
        &img,
        nid(&lay, first),
        AbiError::BadField {
            field: "xattr name filter",
            value: 1 << bit,
        },
    );
}

// ---- directories ----

#[test]
fn directory_checks() {
    let (good, lay) = std_img();
    let root = nid(&lay, n::ROOT);
    let check = |f: &dyn Fn(&mut Vec<u8>), error: AbiError| {
        let mut img = good.clone();
        f(&mut img);
        expect(&img, root, error);
    };
    let de = |name: &[u8]| dirent(&good, &lay, n::ROOT, name);
    let name_at = |name: &[u8]| {
        lay.data[n::ROOT] as usize
            + u16::from_le_bytes([good[de(name) + 8], good[de(name) + 9]]) as usize
    };
    let first = lay.data[n::ROOT] as usize;
    check(
        &|i| put16(i, first + 8, 13),
        AbiError::BadField {
            field: "dirent nameoff",
            value: 13,
        },
    );
    check(
        &|i| put16(i, first + 8, 4000),
        AbiError::BadField {
            field: "dirent nameoff",
            value: 4000,
        },
    );
    // "file48" -> "f/le48" or "\0ile48"; "hard" -> "zard" (out of order); equal offsets give an
    // empty name.
    check(
        &|i| i[name_at(b"file48") + 1] = b'/',
        AbiError::BadField {
            field: "dirent name",
            value: 6,
        },
    );
    check(
        &|i| i[name_at(b"file48")] = 0,
        AbiError::BadField {
            field: "dirent name",
            value: 6,
        },
    );
    check(
        &|i| i[name_at(b"hard")] = b'z',
        AbiError::Unsorted {
            table: "directory entries",
            index: 9,
        },
    );
    check(
        &|i| {
            put16(
                i,
                de(b"hard") + 8,
                u16::from_le_bytes([good[de(b"hard") + 20], good[de(b"hard") + 21]]),
            )
        },
        AbiError::BadField {
            field: "dirent name",
            value: 0,
        },
    );
    check(
        &|i| put64(i, de(b"."), lay.nid[n::A]),
        AbiError::BadField {
            field: "dirent `.`",
            value: lay.nid[n::A],
        },
    );
    check(
        &|i| put64(i, de(b".."), lay.nid[n::A]),
        AbiError::BadField {
            field: "dirent `..`",
            value: lay.nid[n::A],
        },
    );
    check(
        &|i| i[de(b"..") + 10] = erofs::ft::REG_FILE,
        AbiError::BadField {
            field: "dirent file type",
            value: lay.nid[n::ROOT],
        },
    );
    check(
        &|i| i[de(b"inline") + 10] = erofs::ft::SYMLINK,
        AbiError::BadField {
            field: "dirent file type",
            value: lay.nid[n::INLINE],
        },
    );
    check(
        &|i| i[de(b"inline") + 10] = 0,
        AbiError::BadField {
            field: "dirent file type",
            value: 0,
        },
    );
    check(
        &|i| i[de(b"inline") + 10] = 8,
        AbiError::BadField {
            field: "dirent file type",
            value: 8,
        },
    );
    check(
        &|i| put64(i, de(b"a"), lay.nid[n::ROOT]),
        AbiError::BadField {
            field: "dirent naming its own directory or the root",
            value: lay.nid[n::ROOT],
        },
    );
}

#[test]
fn directory_needs_dot_and_dotdot() {
    let (good, lay) = std_img();
    // In `a`, "." becomes "-", an entry for a regular file (and still sorts first).
    for (name, other) in [(&b"."[..], &b"-"[..]), (b"..", b".-")] {
        let mut img = good.clone();
        let de = dirent(&img, &lay, n::A, name);
        let at = lay.data[n::A] as usize + u16::from_le_bytes([img[de + 8], img[de + 9]]) as usize;
        img[at..at + other.len()].copy_from_slice(other);
        put64(&mut img, de, lay.nid[n::INLINE]);
        img[de + 10] = erofs::ft::REG_FILE;
        expect(
            &img,
            nid(&lay, n::A),
            AbiError::BadField {
                field: "directory without `.` or `..`",
                value: lay.nid[n::A],
            },
        );
    }
}

#[test]
fn subdirectory_file_type_must_match() {
    let (mut img, lay) = std_img();
    let at = dirent(&img, &lay, n::ROOT, b"a");
    img[at + 10] = erofs::ft::REG_FILE;
    // Validated as a leaf first: a directory where a file was announced.
    expect(
        &img,
        nid(&lay, n::A),
        AbiError::BadField {
            field: "directory as a leaf",
            value: lay.nid[n::A],
        },
    );
}

#[test]
fn directory_reachable_twice() {
    let mut b = standard();
    if let Data::Dir(c) = &mut b.nodes[n::ROOT].data {
        c.push((b"a2".to_vec(), n::A));
    }
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, n::A),
        AbiError::BadField {
            field: "directory reachable twice",
            value: lay.nid[n::A],
        },
    );
}

#[test]
fn directory_cycle() {
    // root -> a -> b, and b/x names a: its ".." (root) is not b, and it was visited.
    let mut b = standard();
    let sub = b.add(dir(0o755, &[(b"x", n::A)]));
    if let Data::Dir(c) = &mut b.nodes[n::A].data {
        c.push((b"b".to_vec(), sub));
    }
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, n::A),
        AbiError::BadField {
            field: "directory reachable twice",
            value: lay.nid[n::A],
        },
    );
}

#[test]
fn depth_is_bounded() {
    let mut b = Builder::new();
    b.add(dir(0o755, &[(b"d", 1)]));
    let depth = crate::parse::MAX_DEPTH + 1;
    for k in 1..=depth {
        let children: &[(&[u8], usize)] = if k < depth { &[(b"d", k + 1)] } else { &[] };
        b.add(dir(0o755, children));
    }
    let (img, lay) = build(&b);
    let deepest = lay.nid[depth];
    expect(
        &img,
        Some(deepest),
        AbiError::BadField {
            field: "directory depth",
            value: 2049,
        },
    );
    // One level less is fine.
    let mut b2 = Builder::new();
    b2.add(dir(0o755, &[(b"d", 1)]));
    for k in 1..depth {
        let children: &[(&[u8], usize)] = if k < depth - 1 { &[(b"d", k + 1)] } else { &[] };
        b2.add(dir(0o755, children));
    }
    parse(&build(&b2).0).unwrap();
}

// ---- 48-bit extents ----

fn ext_img(recs: Vec<(u32, u64, u64)>, size: u64) -> (Vec<u8>, Layout) {
    let mut b = standard();
    b.nodes[n::FILE48].data = Data::Extents {
        size,
        recsz: 16,
        recs,
        fragment: false,
    };
    build(&b)
}

#[test]
fn extent_checks() {
    let f = n::FILE48;
    let check = |recs: Vec<(u32, u64, u64)>, size: u64, error: AbiError| {
        let (img, lay) = ext_img(recs, size);
        expect(&img, nid(&lay, f), error);
    };
    check(
        vec![(ZSTD | 10, CHUNKS, 0), (ZSTD | 10, CHUNKS, 0)],
        100,
        AbiError::Unsorted {
            table: "extents",
            index: 1,
        },
    );
    check(
        vec![(ZSTD | 10, CHUNKS, 50), (ZSTD | 10, CHUNKS, 20)],
        100,
        AbiError::Unsorted {
            table: "extents",
            index: 1,
        },
    );
    check(
        vec![(ZSTD | 10, CHUNKS, 0), (ZSTD | 10, CHUNKS, 100)],
        100,
        AbiError::OutOfRange {
            table: "extent lstart",
            index: 1,
        },
    );
    check(
        vec![(ZSTD | ((1 << 20) + 1), CHUNKS, 0)],
        100,
        AbiError::Unsupported {
            what: "extent larger than 1 MiB",
            value: (1 << 20) + 1,
        },
    );
    check(
        vec![(ZSTD | 1 << 22 | 10, CHUNKS, 0)],
        100,
        AbiError::BadField {
            field: "extent plen",
            value: u64::from(ZSTD | 1 << 22 | 10),
        },
    );
    check(
        vec![(ZSTD, CHUNKS, 0)],
        100,
        AbiError::BadField {
            field: "extent plen",
            value: u64::from(ZSTD),
        },
    );
    check(
        vec![(1 << 28 | 10, CHUNKS, 0)],
        100,
        AbiError::Unsupported {
            what: "extent format",
            value: 1,
        },
    );
    check(
        vec![(10, CHUNKS, 0)],
        100,
        AbiError::BadField {
            field: "uncompressed cluster shorter than its range",
            value: 10,
        },
    );
    check(
        vec![(ZSTD | 10, CHUNKS, 0)],
        13 << 20,
        AbiError::Unsupported {
            what: "extent decompressing to more than 12 MiB",
            value: 13 << 20,
        },
    );
    let (img, _) = ext_img(vec![], 1);
    let end = img.len() as u64;
    check(
        vec![(ZSTD | 10, end - 5, 0)],
        100,
        AbiError::OutOfRange {
            table: "physical address",
            index: end - 5,
        },
    );
    check(
        vec![(ZSTD | 10, 1 << 48, 0)],
        100,
        AbiError::OutOfRange {
            table: "extent pstart",
            index: 1 << 48,
        },
    );
    // Stored extents, holes and a leading hole are fine.
    parse(&ext_img(vec![(100, CHUNKS, 0)], 100).0).unwrap();
    parse(&ext_img(vec![(0, 0, 0), (ZSTD | 5, CHUNKS, 50)], 100).0).unwrap();
    parse(&ext_img(vec![(ZSTD | 5, CHUNKS, 50)], 100).0).unwrap();
}

#[test]
fn extent_header_checks() {
    let (good, lay) = std_img();
    let h = lay.data[n::FILE48] as usize;
    let f = nid(&lay, n::FILE48);
    let mut img = good.clone();
    put16(
        &mut img,
        h + 4,
        erofs::Z_ADVISE_EXTENTS | 2 << 1 | erofs::Z_ADVISE_INLINE_PCLUSTER,
    );
    expect(
        &img,
        f,
        AbiError::Unsupported {
            what: "map header advise",
            value: 0x0d,
        },
    );
    let mut img = good.clone();
    put32(&mut img, h, 1 << 30);
    expect(&img, f, AbiError::Truncated { what: "extents" });
    let mut img = good.clone();
    img[1104] &= !(erofs::FEATURE_INCOMPAT_48BIT as u8);
    // The packed inode is checked first.
    expect(
        &img,
        nid(&lay, n::PACKED),
        AbiError::BadField {
            field: "encoded extents without the 48bit feature",
            value: 5,
        },
    );
    let mut img = good.clone();
    put16(&mut img, 1108, 0);
    expect(
        &img,
        nid(&lay, n::PACKED),
        AbiError::BadField {
            field: "zstd extent without the zstd config",
            value: u64::from(ZSTD | 64),
        },
    );
}

#[test]
fn extents_on_extra_devices() {
    let mut b = standard();
    let (img, _) = build(&b);
    let primary = img.len() as u64 / BLK;
    b.devices = vec![(4, primary as u32)];
    let dev = primary * BLK;
    b.nodes[n::FILE48].data = Data::Extents {
        size: 300,
        recsz: 32,
        recs: vec![(ZSTD | 100, dev + 10, 0)],
        fragment: false,
    };
    let (img, _) = build(&b);
    let d = parse(&img).unwrap();
    let file = d.root().lookup(b"file48").unwrap();
    let m = d.inode(file.nid).unwrap().map(0).unwrap();
    assert_eq!(
        m.kind,
        crate::parse::MapKind::Encoded {
            device: 1,
            offset: 10,
            len: 100,
            algorithm: compr::ZSTD,
            partial: false
        }
    );
    // Crossing the device's end.
    b.nodes[n::FILE48].data = Data::Extents {
        size: 300,
        recsz: 32,
        recs: vec![(ZSTD | 100, dev + 4 * BLK - 50, 0)],
        fragment: false,
    };
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, n::FILE48),
        AbiError::OutOfRange {
            table: "physical address",
            index: dev + 4 * BLK - 50,
        },
    );
}

// ---- fragments ----

#[test]
fn fragment_checks() {
    let mut b = standard();
    b.nodes[n::FRAG].data = Data::Whole { size: 10, off: 91 };
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, n::FRAG),
        AbiError::OutOfRange {
            table: "packed inode",
            index: 91,
        },
    );
    // A tail fragment: [0, 40) compressed, [40, 100) at packed offset 30 (plen = offset LSB).
    b.nodes[n::FRAG].data = Data::Extents {
        size: 100,
        recsz: 16,
        recs: vec![(ZSTD | 10, CHUNKS, 0), (30, 0, 40)],
        fragment: true,
    };
    let (img, _) = build(&b);
    parse(&img).unwrap();
    b.nodes[n::FRAG].data = Data::Extents {
        size: 100,
        recsz: 16,
        recs: vec![(ZSTD | 10, CHUNKS, 0), (41, 0, 40)],
        fragment: true,
    };
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, n::FRAG),
        AbiError::OutOfRange {
            table: "packed inode",
            index: 41,
        },
    );
    // No packed inode.
    let mut b = standard();
    b.packed = None;
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, n::FRAG),
        AbiError::BadField {
            field: "fragment without a packed inode",
            value: lay.nid[n::FRAG],
        },
    );
    // The packed inode must be a regular file.
    let mut b = standard();
    b.packed = Some(n::LINK);
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, n::LINK),
        AbiError::BadField {
            field: "packed inode mode",
            value: u64::from(mode::S_IFLNK | 0o777),
        },
    );
}

// ---- lcluster indexes ----

fn full_img(size: u64, advise: u16, idx: Vec<[u8; 8]>) -> (Vec<u8>, Layout) {
    let mut b = standard();
    b.incompat |= erofs::FEATURE_INCOMPAT_BIG_PCLUSTER;
    b.nodes[n::FULL].data = Data::Full {
        size,
        advise,
        clusterbits: 0,
        algs: compr::ZSTD,
        indexes: idx,
    };
    build(&b)
}

#[test]
fn lcluster_checks() {
    let check = |size: u64, advise: u16, idx: Vec<[u8; 8]>, error: AbiError| {
        let (img, lay) = full_img(size, advise, idx);
        expect(&img, nid(&lay, n::FULL), error);
    };
    let big = erofs::Z_ADVISE_BIG_PCLUSTER_1;
    check(
        10_000,
        0,
        vec![nonhead(1, 1), nonhead(1, 1), head(1, 0, 1)],
        AbiError::BadField {
            field: "first lcluster is not a head",
            value: 0,
        },
    );
    check(
        10_000,
        0,
        vec![head(1, 5, 1), nonhead(1, 1), head(1, 0, 1)],
        AbiError::BadField {
            field: "lcluster clusterofs",
            value: 5,
        },
    );
    check(
        10_000,
        0,
        vec![head(1, 0, 1), nonhead(2, 1), head(1, 0, 1)],
        AbiError::BadField {
            field: "lcluster delta[0]",
            value: 2,
        },
    );
    check(
        10_000,
        0,
        vec![head(1, 0, 1), nonhead(1, 1), head(1, 4096, 1)],
        AbiError::BadField {
            field: "lcluster clusterofs",
            value: 4096,
        },
    );
    check(
        10_000,
        0,
        vec![head(1, 0, 1), nonhead(1, 3), head(1, 0, 1)],
        AbiError::BadField {
            field: "lcluster delta[1]",
            value: 2,
        },
    );
    check(
        10_000,
        0,
        vec![head(1, 0, 1), nonhead(1 | 1 << 11, 1), head(1, 0, 1)],
        AbiError::BadField {
            field: "CBLKCNT without big pclusters",
            value: 1,
        },
    );
    check(
        10_000,
        0,
        vec![head(1, 0, 1 << 30), nonhead(1, 1), head(1, 0, 1)],
        AbiError::OutOfRange {
            table: "lcluster block address",
            index: 1 << 30,
        },
    );
    check(
        10_000,
        0,
        vec![head(1, 0, 1), nonhead(1, 1), head(3, 0, 1)],
        AbiError::Unsupported {
            what: "compression algorithm",
            value: 0,
        },
    );
    check(
        10_000,
        erofs::Z_ADVISE_INLINE_PCLUSTER,
        vec![head(1, 0, 1)],
        AbiError::Unsupported {
            what: "map header advise",
            value: 8,
        },
    );
    // Big pclusters: the first NONHEAD holds the block count.
    let (img, _) = full_img(
        10_000,
        big,
        vec![head(1, 0, 1), nonhead(1 << 11 | 1, 1), head(1, 100, 1)],
    );
    parse(&img).unwrap();
    check(
        10_000,
        big,
        vec![head(1, 0, 1), nonhead(1, 1), head(1, 100, 1)],
        AbiError::BadField {
            field: "missing CBLKCNT",
            value: 1,
        },
    );
    // A trailing head at exactly the end only terminates the previous pcluster.
    let (img, _) = full_img(
        8192 + 100,
        0,
        vec![head(1, 0, 1), nonhead(1, 1), head(1, 100, 1)],
    );
    parse(&img).unwrap();
    // Truncated index array.
    check(
        400_000_000,
        0,
        vec![head(1, 0, 1)],
        AbiError::Truncated {
            what: "lcluster indexes",
        },
    );
}

// ---- compact lcluster indexes ----

/// `[HEAD1 0, NONHEAD (d1 1)] [HEAD1 100, -]`, 4-byte packs, both heads at block 1.
fn compact_bytes() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x2001_1000u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0x0000_1064u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

fn compact_img(advise: u16, clusterbits: u8, bytes: Vec<u8>) -> (Vec<u8>, Layout) {
    let mut b = standard();
    b.incompat |= erofs::FEATURE_INCOMPAT_BIG_PCLUSTER;
    b.nodes[n::FULL].data = Data::Compact {
        size: 10_000,
        advise,
        clusterbits,
        algs: compr::ZSTD,
        bytes,
    };
    build(&b)
}

#[test]
fn compact_indexes_map_like_full_ones() {
    use crate::parse::{MapKind, Mapping};
    let (img, lay) = compact_img(0, 0, compact_bytes());
    let d = parse(&img).unwrap();
    let f = d.inode(lay.nid[n::FULL]).unwrap();
    let enc = MapKind::Encoded {
        device: 0,
        offset: BLK,
        len: BLK,
        algorithm: compr::ZSTD,
        partial: false,
    };
    assert_eq!(
        f.map(5000),
        Some(Mapping {
            logical_start: 0,
            logical_len: 8292,
            kind: enc
        })
    );
    assert_eq!(
        f.map(8292),
        Some(Mapping {
            logical_start: 8292,
            logical_len: 10_000 - 8292,
            kind: enc
        })
    );
}

#[test]
fn compact_index_checks() {
    let check = |advise: u16, clusterbits: u8, bytes: Vec<u8>, error: AbiError| {
        let (img, lay) = compact_img(advise, clusterbits, bytes);
        expect(&img, nid(&lay, n::FULL), error);
    };
    let big1 = erofs::Z_ADVISE_BIG_PCLUSTER_1;
    check(
        big1,
        0,
        compact_bytes(),
        AbiError::BadField {
            field: "compact big pcluster head1/head2",
            value: 2,
        },
    );
    check(
        0,
        3,
        compact_bytes(),
        AbiError::BadField {
            field: "map header clusterbits",
            value: 3,
        },
    );
    let mut nonhead_first = compact_bytes();
    nonhead_first[0..4].copy_from_slice(&0x2001_2001u32.to_le_bytes());
    check(
        0,
        0,
        nonhead_first,
        AbiError::BadField {
            field: "first lcluster is not a head",
            value: 0,
        },
    );
    // A head's block address past every device.
    let mut far = compact_bytes();
    far[4..8].copy_from_slice(&0x00FF_FFFFu32.to_le_bytes());
    check(
        0,
        0,
        far,
        AbiError::OutOfRange {
            table: "lcluster block address",
            index: 0x0100_0000,
        },
    );
    // An index area past the end of the input is caught before anything is decoded.
    let mut b = standard();
    b.nodes[n::FULL].data = Data::Compact {
        size: 4_000_000_000,
        advise: 0,
        clusterbits: 0,
        algs: compr::ZSTD,
        bytes: compact_bytes(),
    };
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, n::FULL),
        AbiError::Truncated {
            what: "lcluster indexes",
        },
    );
}

// ---- the remaining checks ----

#[test]
fn root_must_be_a_directory() {
    let (mut img, lay) = std_img();
    put64(&mut img, 1136, lay.nid[n::INLINE]);
    expect(
        &img,
        nid(&lay, n::INLINE),
        AbiError::BadField {
            field: "directory inode mode",
            value: u64::from(mode::S_IFREG | 0o644),
        },
    );
}

#[test]
fn big_pclusters_need_the_superblock_feature() {
    // BIG_PCLUSTER shares its bit with COMPR_CFGS: an image without it.
    let mut b = Builder::new();
    b.incompat = erofs::FEATURE_INCOMPAT_ZERO_PADDING;
    b.add(dir(0o755, &[(b"full", 1)]));
    b.add(Node::new(
        mode::S_IFREG | 0o644,
        Data::Full {
            size: 10_000,
            advise: erofs::Z_ADVISE_BIG_PCLUSTER_1,
            clusterbits: 0,
            algs: compr::ZSTD,
            indexes: vec![head(1, 0, 1), nonhead(1 << 11 | 1, 1), head(1, 100, 1)],
        },
    ));
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, 1),
        AbiError::BadField {
            field: "big pcluster without the superblock feature",
            value: 2,
        },
    );
}

#[test]
fn cluster_sizes_are_bounded() {
    // A big pcluster of 300 blocks (1.2 MiB) is more than the kernel decompresses.
    let (img, lay) = full_img(
        10_000,
        erofs::Z_ADVISE_BIG_PCLUSTER_1,
        vec![head(1, 0, 1), nonhead(1 << 11 | 300, 1), head(1, 100, 1)],
    );
    expect(
        &img,
        nid(&lay, n::FULL),
        AbiError::Unsupported {
            what: "extent larger than 1 MiB",
            value: 300 * BLK,
        },
    );
    // An uncompressed (PLAIN) pcluster of one block cannot back 8292 bytes.
    let (img, lay) = full_img(
        10_000,
        0,
        vec![head(0, 0, 1), nonhead(1, 1), head(1, 100, 1)],
    );
    expect(
        &img,
        nid(&lay, n::FULL),
        AbiError::BadField {
            field: "uncompressed cluster shorter than its range",
            value: BLK,
        },
    );
    // 4- and 8-byte extent records cover one lcluster each: at most 8 MiB.
    let mut b = standard();
    b.nodes[n::FILE48].data = Data::Extents {
        size: 100,
        recsz: 8,
        recs: vec![(ZSTD | 10, CHUNKS, 0)],
        fragment: false,
    };
    let (mut img, lay) = build(&b);
    img[lay.data[n::FILE48] as usize + 7] = 12;
    expect(
        &img,
        nid(&lay, n::FILE48),
        AbiError::BadField {
            field: "map header clusterbits",
            value: 12,
        },
    );
}

#[test]
fn compact_mtime_must_not_overflow() {
    let (mut img, lay) = std_img();
    put64(&mut img, 1048, i64::MAX as u64);
    put32(&mut img, lay.pos[n::INLINE] as usize + 12, 1);
    // The packed inode (compact, mtime 0) is fine; the first compact inode with a mtime fails.
    expect(
        &img,
        nid(&lay, n::INLINE),
        AbiError::BadField {
            field: "inode mtime",
            value: 1,
        },
    );
}

#[test]
fn directories_need_data_blocks() {
    let (mut img, lay) = std_img();
    // `a` as FLAT_PLAIN with the all-ones ("no blocks") address.
    put16(
        &mut img,
        lay.pos[n::A] as usize,
        erofs::INODE_FLAT_PLAIN << 1,
    );
    put32(&mut img, lay.pos[n::A] as usize + 16, u32::MAX);
    expect(
        &img,
        nid(&lay, n::A),
        AbiError::BadField {
            field: "inode startblk",
            value: u64::MAX,
        },
    );
}

#[test]
fn tail_fragment_checks() {
    let mut b = standard();
    b.nodes[n::FRAG].data = Data::Extents {
        size: 100,
        recsz: 16,
        recs: vec![],
        fragment: true,
    };
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, n::FRAG),
        AbiError::BadField {
            field: "tail fragment without an extent",
            value: 0,
        },
    );
    // The fragment offset is plen | pstart << 32: a pstart of 32 bits or more cannot be one.
    b.nodes[n::FRAG].data = Data::Extents {
        size: 100,
        recsz: 16,
        recs: vec![(30, 1 << 32, 0)],
        fragment: true,
    };
    let (img, lay) = build(&b);
    expect(
        &img,
        nid(&lay, n::FRAG),
        AbiError::BadField {
            field: "fragment offset",
            value: 1 << 32,
        },
    );
}
