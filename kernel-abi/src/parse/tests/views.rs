//! The accessors on the standard image.

use super::*;
extern crate std;
use crate::parse::{Kind, MapKind, Mapping};
use crate::testkit::{BLK, CHUNKS};

#[test]
fn attributes() {
    let (img, lay) = build(&standard());
    let d = parse(&img).unwrap();
    let root = d.root();
    assert_eq!(root.nid(), lay.nid[n::ROOT]);
    assert_eq!(d.root_nid(), lay.nid[n::ROOT]);
    assert_eq!(root.kind(), Kind::Dir);
    assert_eq!(root.mode(), mode::S_IFDIR | 0o755);
    assert_eq!((root.mtime(), root.mtime_nsec()), (-86_400, 999_999_999));
    assert_eq!((root.uid(), root.gid(), root.nlink()), (100_000, 0, 3));
    let dev = d.inode(lay.nid[n::DEV]).unwrap();
    assert_eq!(
        (dev.kind(), dev.rdev(), dev.size(), dev.nlink()),
        (Kind::CharDevice, 0x0103, 0, 1)
    );
    let f = d.inode(lay.nid[n::FILE48]).unwrap();
    assert_eq!(
        (f.kind(), f.size(), f.nlink(), f.is_compressed()),
        (Kind::File, 300, 2, true)
    );
    // Compressed: st_blocks from the inode's block count (1 block of 4 KiB = 8 sectors).
    assert_eq!(f.blocks(), 8);
    let plain = d.inode(lay.nid[n::PLAIN]).unwrap();
    assert_eq!((plain.size(), plain.blocks()), (5500, 16));
    assert_eq!(d.block_size(), 4096);
    assert_eq!(d.inos(), standard().nodes.len() as u64);
    assert_eq!(d.packed().unwrap().nid(), lay.nid[n::PACKED]);
}

#[test]
fn bad_ids_never_panic() {
    let (img, _) = build(&standard());
    let d = parse(&img).unwrap();
    for nid in (0..img.len() as u64 / 32 + 10).chain([u64::MAX, 1 << 63, u64::MAX / 32]) {
        if let Some(i) = d.inode(nid) {
            let _ = (
                i.mode(),
                i.size(),
                i.blocks(),
                i.symlink_target(),
                i.lookup(b"x"),
                i.xattr(b"user.x"),
            );
            i.entries().into_iter().flatten().for_each(drop);
            i.xattrs().for_each(drop);
            for pos in [0, 1, 4095, 4096, i.size().saturating_sub(1), u64::MAX] {
                let _ = i.map(pos);
            }
        }
    }
}

#[test]
fn directories() {
    let (img, lay) = build(&standard());
    let d = parse(&img).unwrap();
    let root = d.root();
    let names: Vec<&[u8]> = root.entries().unwrap().map(|e| e.unwrap().name).collect();
    assert_eq!(
        names,
        [
            &b"."[..],
            b"..",
            b"a",
            b"dev",
            b"empty",
            b"file48",
            b"frag",
            b"full",
            b"hard",
            b"inline",
            b"link",
            b"sparse"
        ]
    );
    for (i, e) in root.entries().unwrap().enumerate() {
        let e = e.unwrap();
        assert_eq!(root.lookup(e.name), Some(e));
        // Resuming after an entry gives the next one.
        let next = root
            .entries_from(e.next_cookie)
            .unwrap()
            .next()
            .map(|n| n.unwrap().name);
        assert_eq!(next, names.get(i + 1).copied());
    }
    assert_eq!(
        root.lookup(b"file48").unwrap().nid,
        root.lookup(b"hard").unwrap().nid
    );
    assert!(
        root.lookup(b"missing").is_none()
            && root.lookup(b"").is_none()
            && root.lookup(b"zzz").is_none()
    );
    let a = d.inode(root.lookup(b"a").unwrap().nid).unwrap();
    assert_eq!(a.lookup(b"..").unwrap().nid, lay.nid[n::ROOT]);
    assert!(d.inode(lay.nid[n::INLINE]).unwrap().entries().is_none());
}

#[test]
fn symlinks_and_xattrs() {
    let (img, lay) = build(&standard());
    let d = parse(&img).unwrap();
    let link = d.inode(lay.nid[n::LINK]).unwrap();
    assert_eq!(link.symlink_target(), Some([&b""[..], b"target"]));
    let root = d.root();
    let names: Vec<(Vec<u8>, &[u8])> = root
        .xattrs()
        .map(|x| x.unwrap())
        .map(|x| ([x.prefix, x.suffix].concat(), x.value))
        .collect();
    assert_eq!(
        names,
        [
            (b"user.root".to_vec(), &b"1"[..]),
            (b"trusted.shared".to_vec(), &b"value"[..])
        ]
    );
    assert_eq!(root.xattr(b"trusted.shared"), Some(&b"value"[..]));
    assert_eq!(root.xattr(b"trusted.shared2"), None);
    assert_eq!(root.xattr(b"user."), None);
    let f = d.inode(lay.nid[n::FILE48]).unwrap();
    assert_eq!(f.xattr(b"system.posix_acl_access"), Some(&[2, 0, 0, 0][..]));
    assert_eq!(d.inode(lay.nid[n::EMPTY]).unwrap().xattrs().count(), 0);
    assert!(d.has_xattrs());
    // The same tree without any xattr (the root's shared one included).
    let mut b = standard();
    b.shared.clear();
    for node in &mut b.nodes {
        node.xattrs.clear();
        node.shared.clear();
    }
    let (img, _) = build(&b);
    assert!(!parse(&img).unwrap().has_xattrs());
}

#[test]
fn mappings() {
    let (img, lay) = build(&standard());
    let d = parse(&img).unwrap();
    let map = |node: usize, pos: u64| d.inode(lay.nid[node]).unwrap().map(pos);
    let enc = |offset: u64, len: u64, partial: bool| MapKind::Encoded {
        device: 0,
        offset,
        len,
        algorithm: compr::ZSTD,
        partial,
    };
    assert_eq!(
        map(n::FILE48, 0),
        Some(Mapping {
            logical_start: 0,
            logical_len: 100,
            kind: enc(CHUNKS, 100, false)
        })
    );
    assert_eq!(map(n::FILE48, 99).unwrap().logical_start, 0);
    assert_eq!(
        map(n::FILE48, 150),
        Some(Mapping {
            logical_start: 100,
            logical_len: 100,
            kind: MapKind::Hole
        })
    );
    assert_eq!(
        map(n::FILE48, 299),
        Some(Mapping {
            logical_start: 200,
            logical_len: 100,
            kind: enc(CHUNKS + 100, 50, true)
        })
    );
    assert_eq!(map(n::FILE48, 300), None);
    assert_eq!(
        map(n::FRAG, 3),
        Some(Mapping {
            logical_start: 0,
            logical_len: 10,
            kind: MapKind::Fragment { packed_offset: 5 }
        })
    );
    assert_eq!(
        map(n::INLINE, 4),
        Some(Mapping {
            logical_start: 0,
            logical_len: 5,
            kind: MapKind::Raw {
                device: 0,
                offset: lay.data[n::INLINE]
            }
        })
    );
    assert_eq!(
        map(n::PLAIN, 5000),
        Some(Mapping {
            logical_start: 0,
            logical_len: 5500,
            kind: MapKind::Raw {
                device: 0,
                offset: lay.data[n::PLAIN]
            }
        })
    );
    assert_eq!(
        map(n::SPARSE, 12345),
        Some(Mapping {
            logical_start: 0,
            logical_len: 1 << 20,
            kind: MapKind::Hole
        })
    );
    assert_eq!(map(n::EMPTY, 0), None);
    // Full indexes: [0, 8292) and [8292, 10000), both one block at block 1.
    assert_eq!(
        map(n::FULL, 8291),
        Some(Mapping {
            logical_start: 0,
            logical_len: 8292,
            kind: enc(BLK, BLK, false)
        })
    );
    assert_eq!(
        map(n::FULL, 8292),
        Some(Mapping {
            logical_start: 8292,
            logical_len: 10_000 - 8292,
            kind: enc(BLK, BLK, false)
        })
    );
    assert_eq!(map(n::FULL, 9999).unwrap().logical_start, 8292);
    assert_eq!(map(n::FULL, 4096).unwrap().logical_start, 0);
    assert_eq!(map(n::FULL, 0).unwrap().logical_start, 0);
    // Not files.
    assert_eq!(map(n::LINK, 0), None);
    assert_eq!(map(n::ROOT, 0), None);
}

/// Walks everything reachable through the accessors (what a FUSE reader would do).
fn exercise(d: &Descriptor<&[u8]>) -> usize {
    let mut seen = 0;
    let mut stack = vec![d.root_nid()];
    while let Some(nid) = stack.pop() {
        let Some(i) = d.inode(nid) else { continue };
        seen += 1;
        let _ = (i.symlink_target(), i.xattr(b"user.root"), i.blocks());
        i.xattrs().for_each(drop);
        let mut pos = 0;
        while let Some(m) = i.map(pos) {
            pos = m.logical_start + m.logical_len;
        }
        for e in i.entries().into_iter().flatten().map_while(Result::ok) {
            let _ = i.lookup(e.name);
            if e.name != b"." && e.name != b".." && seen < 10_000 {
                stack.push(e.nid);
            }
        }
    }
    seen
}

#[test]
fn random_corruption_never_panics() {
    let (good, lay) = build(&standard());
    assert!(exercise(&parse(&good).unwrap()) > 10);
    let mut rng = crate::testkit::XorShift64::new(0x9E37_79B9_7F4A_7C15);
    let mut rnd = move || rng.next_u64();
    let meta = 1024..lay.devt as usize + 256;
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut img = good.clone();
        for _ in 0..1 + rnd() % 4 {
            let at = meta.start + (rnd() as usize) % meta.len();
            img[at] ^= 1 << (rnd() % 8);
        }
        match parse(&img) {
            Ok(d) => {
                exercise(&d);
                ok += 1;
            }
            Err(_) => refused += 1,
        }
    }
    // Both outcomes happen (most flips land in padding or data the walk never reads).
    assert!(ok > 0 && refused > 100, "ok {ok} refused {refused}");
}

#[test]
fn directories_of_many_blocks() {
    // 3000 entries with names of varying length: many blocks, binary search across them.
    let mut b = Builder::new();
    b.add(dir(0o755, &[]));
    let file = b.add(Node::new(mode::S_IFREG | 0o644, Data::Plain(vec![])));
    let names: Vec<Vec<u8>> = (0..3000u32)
        .map(|k| std::format!("f{k:05}{}", "x".repeat((k % 40) as usize)).into_bytes())
        .collect();
    b.nodes[0].data = Data::Dir(names.iter().map(|n| (n.clone(), file)).collect());
    b.nodes[file].extended = true;
    b.nodes[file].nlink = 3000;
    let (img, lay) = build(&b);
    let d = parse(&img).unwrap();
    let root = d.root();
    assert!(root.size() > 20 * 4096, "{}", root.size());
    let listed: Vec<&[u8]> = root
        .entries()
        .unwrap()
        .map(|e| e.unwrap().name)
        .filter(|n| *n != b"." && *n != b"..")
        .collect();
    assert_eq!(listed, names.iter().map(Vec::as_slice).collect::<Vec<_>>());
    for n in &names {
        assert_eq!(root.lookup(n).unwrap().nid, lay.nid[file], "{n:?}");
    }
    for missing in [
        &b"a"[..],
        b"f",
        b"f00000x",
        b"f99999",
        b"g",
        b"f01500xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    ] {
        assert!(root.lookup(missing).is_none(), "{missing:?}");
    }
    // Resuming from every cookie continues in order.
    let mut cookie = 0;
    let mut count = 0;
    while let Some(e) = root.entries_from(cookie).unwrap().next() {
        cookie = e.unwrap().next_cookie;
        count += 1;
    }
    assert_eq!(count, 3002);
    // Out of order across a block boundary is caught.
    let mut img2 = img.clone();
    let last_block = lay.data[0] as usize + 4096;
    // The first name of the second block: make it sort before the last of the first block.
    let nameoff = u16::from_le_bytes([img2[last_block + 8], img2[last_block + 9]]) as usize;
    img2[last_block + nameoff] = b'e';
    assert!(matches!(
        parse(&img2),
        Err(ParseError {
            error: AbiError::Unsorted { .. },
            ..
        })
    ));
}
