//! Property test: random trees written by the testkit parse, and every accessor gives back
//! what was written (names in order, kinds, sizes, link targets, xattrs, extents).

extern crate std;

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::parse::{Kind, MapKind};
use crate::testkit::BLK;

#[derive(Clone, Debug)]
enum M {
    Dir(BTreeMap<Vec<u8>, M>),
    /// Sorted extent records: (lstart, compressed length or 0 for a hole, offset in the chunk
    /// region, partial); size.
    File(Vec<(u64, u32, u64, bool)>, u64),
    Inline(Vec<u8>),
    Link(Vec<u8>),
    Dev(u32),
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    // Any bytes but '/' and NUL, including '.', '-' and non-UTF-8; never "." or "..".
    proptest::collection::vec(
        prop_oneof![Just(b'.'), Just(b'-'), 0x30u8..0x7a, 0x80u8..=0xff],
        1..10,
    )
    .prop_filter("not a dot entry", |n| n != b"." && n != b"..")
}

fn leaf() -> impl Strategy<Value = M> {
    prop_oneof![
        (
            1u64..100_000,
            proptest::collection::vec((0u64..1000, 0u32..3000, 0u64..1000, any::<bool>()), 0..5)
        )
            .prop_map(|(size, mut recs)| {
                recs.sort_by_key(|r| r.0);
                recs.dedup_by_key(|r| r.0);
                let recs = recs
                    .into_iter()
                    .map(|(l, len, off, partial)| {
                        (l * size / 1000, len.min((BLK - off) as u32), off, partial)
                    })
                    .collect::<Vec<_>>();
                let mut recs: Vec<_> = recs.into_iter().filter(|r| r.0 < size).collect();
                recs.dedup_by_key(|r| r.0);
                M::File(recs, size)
            }),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(M::Inline),
        proptest::collection::vec(1u8..=255, 1..300).prop_map(M::Link),
        any::<u32>().prop_map(M::Dev),
    ]
}

fn tree() -> impl Strategy<Value = M> {
    leaf().prop_recursive(4, 40, 8, |inner| {
        proptest::collection::btree_map(name(), inner, 0..8).prop_map(M::Dir)
    })
}

/// Adds `m` to the builder; returns its node index.
fn add(b: &mut Builder, m: &M) -> usize {
    match m {
        M::Dir(children) => {
            let i = b.add(dir(0o755, &[]));
            let kids: Vec<(Vec<u8>, usize)> = children
                .iter()
                .map(|(n, c)| (n.clone(), add(b, c)))
                .collect();
            b.nodes[i].data = Data::Dir(kids);
            i
        }
        M::File(recs, size) => {
            let recs = recs
                .iter()
                .map(|&(l, len, off, partial)| match len {
                    0 => (0, 0, l),
                    len => (
                        ZSTD | if partial {
                            erofs::Z_EXTENT_PLEN_PARTIAL
                        } else {
                            0
                        } | len,
                        CHUNKS + off,
                        l,
                    ),
                })
                .collect();
            let mut n = Node::new(
                mode::S_IFREG | 0o644,
                Data::Extents {
                    size: *size,
                    recsz: 16,
                    recs,
                    fragment: false,
                },
            );
            n.xattrs = vec![(
                erofs::xattr_index::USER,
                b"size".to_vec(),
                size.to_le_bytes().to_vec(),
            )];
            b.add(n)
        }
        M::Inline(bytes) => b.add(Node::new(
            mode::S_IFREG | 0o600,
            Data::Inline(bytes.clone()),
        )),
        M::Link(t) => b.add(Node::new(mode::S_IFLNK | 0o777, Data::Inline(t.clone()))),
        M::Dev(rdev) => {
            let mut n = Node::new(mode::S_IFBLK | 0o600, Data::None);
            n.rdev = *rdev;
            b.add(n)
        }
    }
}

fn check(d: &Descriptor<&[u8]>, nid: u64, m: &M) -> Result<(), TestCaseError> {
    let i = d.inode(nid).unwrap();
    match m {
        M::Dir(children) => {
            prop_assert_eq!(i.kind(), Kind::Dir);
            let entries: Vec<_> = i
                .entries()
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.name != b"." && e.name != b"..")
                .collect();
            prop_assert_eq!(entries.len(), children.len());
            for (e, (name, child)) in entries.iter().zip(children) {
                prop_assert_eq!(e.name, name.as_slice());
                prop_assert_eq!(i.lookup(name).map(|l| l.nid), Some(e.nid));
                check(d, e.nid, child)?;
            }
        }
        M::File(recs, size) => {
            prop_assert_eq!((i.kind(), i.size()), (Kind::File, *size));
            prop_assert_eq!(i.xattr(b"user.size"), Some(&size.to_le_bytes()[..]));
            for (k, &(l, len, off, partial)) in recs.iter().enumerate() {
                let end = recs.get(k + 1).map_or(*size, |r| r.0);
                for pos in [l, end - 1, (l + end) / 2] {
                    let m = i.map(pos).unwrap();
                    prop_assert_eq!((m.logical_start, m.logical_len), (l, end - l));
                    let want = match len {
                        0 => MapKind::Hole,
                        len => MapKind::Encoded {
                            device: 0,
                            offset: CHUNKS + off,
                            len: len.into(),
                            algorithm: 3,
                            partial,
                        },
                    };
                    prop_assert_eq!(m.kind, want);
                }
            }
            if let Some(first) = recs.first().filter(|r| r.0 > 0) {
                prop_assert_eq!(i.map(0).unwrap().kind, MapKind::Hole);
                prop_assert_eq!(i.map(first.0 - 1).unwrap().logical_len, first.0);
            }
        }
        M::Inline(bytes) => {
            prop_assert_eq!((i.kind(), i.size()), (Kind::File, bytes.len() as u64));
        }
        M::Link(t) => {
            let [a, b] = i.symlink_target().unwrap();
            prop_assert_eq!([a, b].concat(), t.clone());
        }
        M::Dev(rdev) => {
            prop_assert_eq!((i.kind(), i.rdev()), (Kind::BlockDevice, *rdev));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_parse_and_read_back(children in proptest::collection::btree_map(name(), tree(), 0..10)) {
        let root = M::Dir(children);
        let mut b = Builder::new();
        add(&mut b, &root);
        let (img, _) = b.build();
        let d = parse(&img).map_err(|e| TestCaseError::fail(std::format!("{e}")))?;
        check(&d, d.root_nid(), &root)?;
    }
}
