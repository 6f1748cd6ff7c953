//! Two images sharing most chunks, from two different places (their own packs, as two
//! registries would serve them): the second fetches only what the first did not bring.
#![allow(clippy::unwrap_used)]

mod store_common;

use std::collections::HashSet;

use chunkfs_distribution::source::LayoutSource;
use chunkfs_distribution::store::{ChunkSource, Store};
use chunkfs_format::compress::Decoder;
use chunkfs_format::digest::Digest;
use chunkfs_format::translate::ExtentLayout;
use store_common::{TestImage, make_tree, pack, test_dir};

#[test]
fn the_second_image_reuses_present_frames_and_fetches_the_difference() {
    let tmp = test_dir();
    let (ta, tb) = (tmp.path().join("ta"), tmp.path().join("tb"));
    make_tree(&ta, 0);
    make_tree(&tb, 1);
    pack(&ta, &tmp.path().join("la"), "a", false);
    pack(&tb, &tmp.path().join("lb"), "b", false);
    let (a, b) = (
        TestImage::open(&tmp.path().join("la"), "a"),
        TestImage::open(&tmp.path().join("lb"), "b"),
    );
    let (sa, sb) = (LayoutSource::new(&a.layout), LayoutSource::new(&b.layout));
    assert!(
        a.packs.iter().all(|p| !b.packs.contains(p)),
        "separate packs"
    );

    let store = Store::open(&tmp.path().join("store")).unwrap();
    let plan_a = store.plan(&a.spec(ExtentLayout::Bit48), &sa).unwrap();
    store.pull(&plan_a, &sa, &mut |_, _| {}).unwrap();

    let in_a: HashSet<Digest> = a.chunks.iter().map(|c| c.digest).collect();
    let plan_b = store.plan(&b.spec(ExtentLayout::Bit48), &sb).unwrap();
    let shared = b.chunks.iter().filter(|c| in_a.contains(&c.digest)).count();
    assert!(
        shared * 10 > b.chunks.len() * 7,
        "{shared} of {} chunks shared",
        b.chunks.len()
    );
    assert_eq!(plan_b.stats.shared as usize, shared);
    for (c, src) in b.chunks.iter().zip(&plan_b.sources) {
        let want = if in_a.contains(&c.digest) {
            ChunkSource::Shared
        } else {
            ChunkSource::Fetch
        };
        assert_eq!(*src, want, "{}", c.digest);
    }
    // Devices in order of first use: a's pack serves the first (shared) chunk.
    assert!(
        plan_b
            .devices
            .iter()
            .any(|p| a.packs.iter().any(|(d, _)| d == p.digest()))
    );
    assert!(
        plan_b
            .devices
            .iter()
            .any(|p| b.packs.iter().any(|(d, _)| d == p.digest()))
    );

    // The difference: distinct new chunks' frames, and exactly those bytes are fetched.
    let mut new_frames = HashSet::new();
    let mut want_bytes = 0u64;
    for (loc, src) in plan_b.locations.iter().zip(&plan_b.sources) {
        if *src == ChunkSource::Fetch && new_frames.insert((loc.device, loc.offset)) {
            want_bytes += u64::from(loc.stored_len);
        }
    }
    assert_eq!(plan_b.missing_bytes, want_bytes);
    let before = sb.stats();
    let report = store.pull(&plan_b, &sb, &mut |_, _| {}).unwrap();
    assert_eq!(report.needed_bytes, want_bytes);
    assert_eq!(
        sb.stats().bytes - before.bytes,
        want_bytes,
        "only the difference fetched"
    );
    let b_frames: u64 = b.packs.iter().map(|p| p.1).sum();
    assert!(want_bytes * 3 < b_frames, "{want_bytes} of {b_frames}");

    // Every chunk of b reads back from where the plan put it.
    let mut dec = Decoder::new().unwrap();
    for (c, loc) in b.chunks.iter().zip(&plan_b.locations) {
        let mut frame = vec![0u8; loc.stored_len as usize];
        plan_b.devices[usize::from(loc.device) - 1]
            .read_at(&mut frame, loc.offset)
            .unwrap();
        assert_eq!(Digest::of(&dec.decode(&frame, c.size).unwrap()), c.digest);
    }
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn unaligned_frames_are_not_shared_with_a_cluster_layout_image() {
    let tmp = test_dir();
    let t = tmp.path().join("t");
    make_tree(&t, 0);
    pack(&t, &tmp.path().join("la"), "a", false);
    pack(&t, &tmp.path().join("lb"), "b", true);
    let (a, b) = (
        TestImage::open(&tmp.path().join("la"), "a"),
        TestImage::open(&tmp.path().join("lb"), "b"),
    );
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let sa = LayoutSource::new(&a.layout);
    let plan_a = store.plan(&a.spec(ExtentLayout::Bit48), &sa).unwrap();
    store.pull(&plan_a, &sa, &mut |_, _| {}).unwrap();
    let sb = LayoutSource::new(&b.layout);
    // The same chunks: a 48-bit descriptor may read them from a's packs...
    let bit48 = store.plan(&b.spec(ExtentLayout::Bit48), &sb).unwrap();
    assert_eq!(bit48.stats.shared as usize, b.chunks.len());
    assert_eq!(bit48.missing_bytes, 0);
    // ...the cluster layout may not: their frames do not end on 512-byte boundaries.
    let clusters = store.plan(&b.spec(ExtentLayout::Clusters), &sb).unwrap();
    assert_eq!(clusters.stats.shared, 0);
    assert_eq!(clusters.stats.fetch as usize, b.chunks.len());
}
