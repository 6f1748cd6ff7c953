//! Filling packs of a real image (packed by the format crate into an OCI layout, served by a
//! LayoutSource): what is fetched, how it is checked, how a plan's locations read back.
#![allow(clippy::unwrap_used)]

mod store_common;

use chunkfs_distribution::source::{BlobSource, LayoutSource};
use chunkfs_distribution::store::{ChunkSource, Store};
use chunkfs_format::Classify as _;
use chunkfs_format::ErrorClass;
use chunkfs_format::compress::Decoder;
use chunkfs_format::digest::Digest;
use chunkfs_format::translate::ExtentLayout;
use std::os::unix::fs::FileExt;
use store_common::{TestImage, make_tree, pack, test_dir};

fn image(align512: bool) -> (tempfile::TempDir, TestImage) {
    let tmp = test_dir();
    make_tree(&tmp.path().join("tree"), 0);
    pack(
        &tmp.path().join("tree"),
        &tmp.path().join("layout"),
        "a",
        align512,
    );
    let img = TestImage::open(&tmp.path().join("layout"), "a");
    (tmp, img)
}

#[test]
fn scattered_ranges_fetch_only_their_frames_in_merged_requests() {
    let (tmp, img) = image(false);
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let source = LayoutSource::new(&img.layout);
    let (digest, len) = img.packs[0];
    let pack = store.add_pack(&digest, len, &source).unwrap();
    let n = pack.entries().len();
    assert!(n > 100, "{n} frames");
    let bytes_of = |frames: std::ops::Range<usize>| -> u64 {
        pack.entries()[frames]
            .iter()
            .map(|e| u64::from(e.stored_len))
            .sum()
    };
    let range_of = |frames: std::ops::Range<usize>| {
        pack.frame_range(frames.start).unwrap().start..pack.frame_range(frames.end - 1).unwrap().end
    };

    let start = source.stats();
    // Frames 10..14 in one range, 60 alone, 90..92 by a range touching them by a byte each.
    pack.ensure(range_of(10..14), &source).unwrap();
    pack.ensure(range_of(60..61), &source).unwrap();
    let r = range_of(90..92);
    pack.ensure(r.end - 1 - 1..r.end - 1, &source).unwrap();
    pack.ensure(r.start..r.start + 1, &source).unwrap();
    let s = source.stats();
    assert_eq!(s.requests - start.requests, 4, "one request per run");
    assert_eq!(
        s.bytes - start.bytes,
        bytes_of(10..14) + bytes_of(60..61) + bytes_of(90..92),
        "only the frames asked for"
    );
    let states = pack.states().unwrap();
    let present: Vec<usize> = (0..n).filter(|&i| states[i] != 0).collect();
    assert_eq!(present, vec![10, 11, 12, 13, 60, 90, 91]);

    // Two adjacent runs asked for together: one request spanning both and the gap.
    let before = source.stats();
    pack.ensure(range_of(14..60), &source).unwrap();
    let s = source.stats();
    assert_eq!(
        (s.requests - before.requests, s.bytes - before.bytes),
        (1, bytes_of(14..60))
    );
}

#[test]
fn corrupt_bytes_store_nothing_and_a_later_ensure_succeeds() {
    let (tmp, img) = image(false);
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let source = LayoutSource::new(&img.layout);
    let (digest, len) = img.packs[0];
    let pack = store.add_pack(&digest, len, &source).unwrap();
    let r = pack.frame_range(20).unwrap().start..pack.frame_range(29).unwrap().end;
    source.corrupt_next(1);
    let e = pack.ensure(r.clone(), &source).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Corrupt);
    let msg = e.to_string();
    assert!(
        msg.contains(&digest.to_string()) && msg.contains("frame"),
        "{msg}"
    );
    assert!(pack.states().unwrap()[20..29].iter().all(|&s| s == 0));
    let mut raw = vec![0xEEu8; (r.end - r.start) as usize];
    std::fs::File::open(pack.path())
        .unwrap()
        .read_exact_at(&mut raw, r.start)
        .unwrap();
    assert!(raw.iter().all(|&b| b == 0), "nothing may be written");

    source.fail_next(2);
    for _ in 0..2 {
        assert_eq!(
            pack.ensure(r.clone(), &source).unwrap_err().class(),
            ErrorClass::Network
        );
    }
    pack.ensure(r.clone(), &source).unwrap();
    assert!(pack.states().unwrap()[20..29].iter().all(|&s| s != 0));
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn a_plan_reads_back_every_chunk_and_a_pull_completes_it() {
    let (tmp, img) = image(false);
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    store.set_max_size(None);
    let source = LayoutSource::new(&img.layout);
    for b in &img.blobs {
        store.put_blob(b, &img.blob(b)).unwrap();
    }
    let plan = store.plan(&img.spec(ExtentLayout::Bit48), &source).unwrap();
    assert_eq!(plan.devices.len(), img.packs.len());
    assert_eq!(plan.locations.len(), img.chunks.len());
    assert!(plan.sources.iter().all(|s| *s == ChunkSource::Fetch));
    let frame_bytes: u64 = plan
        .devices
        .iter()
        .flat_map(|p| p.entries())
        .map(|e| u64::from(e.stored_len))
        .sum();
    assert_eq!(
        plan.missing_bytes, frame_bytes,
        "a fresh image uses every frame of its packs"
    );
    let devices = plan.extra_devices();
    assert_eq!(devices[0].tag, img.packs[0].0.to_hex().into_bytes());
    assert_eq!(devices[0].len, plan.devices[0].base() + img.packs[0].1);

    // Half the chunks read lazily, as a reader would.
    let mut dec = Decoder::new().unwrap();
    for (i, (c, loc)) in img
        .chunks
        .iter()
        .zip(&plan.locations)
        .enumerate()
        .step_by(2)
    {
        let pack = &plan.devices[usize::from(loc.device) - 1];
        let r = loc.offset..loc.offset + u64::from(loc.stored_len);
        pack.ensure(r.clone(), &source).unwrap();
        let mut frame = vec![0u8; loc.stored_len as usize];
        pack.read_at(&mut frame, loc.offset).unwrap();
        let data = dec.decode(&frame, c.size).unwrap();
        assert_eq!(Digest::of(&data), c.digest, "chunk {i}");
    }
    let left = plan.absent_ranges().unwrap();
    assert!(!left[0].is_empty());

    let mut seen = Vec::new();
    let before = source.stats();
    let report = store
        .pull(&plan, &source, &mut |done, total| seen.push((done, total)))
        .unwrap();
    let s = source.stats();
    assert_eq!(report.fetched_bytes, s.bytes - before.bytes);
    assert!(report.needed_bytes > 0 && report.needed_bytes < frame_bytes);
    assert_eq!(
        report.fetched_bytes, report.needed_bytes,
        "only the missing frames"
    );
    assert_eq!(seen.first(), Some(&(0, report.needed_bytes)));
    assert_eq!(
        seen.last(),
        Some(&(report.needed_bytes, report.needed_bytes))
    );
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(plan.absent_ranges().unwrap().iter().all(Vec::is_empty));
    assert!(
        plan.devices
            .iter()
            .all(|p| p.fill_state().unwrap().is_complete())
    );
    assert_eq!(store.pins().unwrap().len(), 1);
    assert_eq!(store.pins().unwrap()[0].manifest, img.manifest);

    // Every chunk reads back, and the store verifies.
    for (c, loc) in img.chunks.iter().zip(&plan.locations) {
        let mut frame = vec![0u8; loc.stored_len as usize];
        plan.devices[usize::from(loc.device) - 1]
            .read_at(&mut frame, loc.offset)
            .unwrap();
        assert_eq!(Digest::of(&dec.decode(&frame, c.size).unwrap()), c.digest);
    }
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    let frames: usize = plan.devices.iter().map(|p| p.entries().len()).sum();
    assert_eq!(v.frames, frames as u64, "every frame checked");

    // Mounted again (offline: a source that fails everything), the plan needs nothing.
    drop(plan);
    let dead = LayoutSource::new(&tmp.path().join("gone"));
    dead.fail_next(u64::MAX);
    let again = store.plan(&img.spec(ExtentLayout::Bit48), &dead).unwrap();
    assert_eq!(again.missing_bytes, 0);
    assert!(again.sources.iter().all(|s| *s == ChunkSource::Own));
    assert_eq!(dead.stats().requests, 0);
    assert_eq!(
        dead.name(),
        format!("oci:{}", tmp.path().join("gone").display())
    );
}

#[test]
fn the_cluster_layout_needs_aligned_packs() {
    let (tmp, img) = image(false);
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let source = LayoutSource::new(&img.layout);
    let e = store
        .plan(&img.spec(ExtentLayout::Clusters), &source)
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Unsupported, "{e}");

    let (tmp2, aligned) = image(true);
    let store = Store::open(&tmp2.path().join("store")).unwrap();
    let source = LayoutSource::new(&aligned.layout);
    let plan = store
        .plan(&aligned.spec(ExtentLayout::Clusters), &source)
        .unwrap();
    for loc in &plan.locations {
        assert_eq!((loc.offset + u64::from(loc.stored_len)) % 512, 0);
    }
}

#[test]
fn a_chunk_in_none_of_the_packs_is_refused() {
    let (tmp, img) = image(false);
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let source = LayoutSource::new(&img.layout);
    let mut chunks = img.chunks.clone();
    chunks[3].digest = Digest([9; 32]);
    let mut spec = img.spec(ExtentLayout::Bit48);
    spec.chunks = &chunks;
    let e = store.plan(&spec, &source).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Corrupt);
    assert!(e.to_string().contains("chunk 3"), "{e}");
    let mut chunks = img.chunks.clone();
    chunks[4].size += 1;
    spec.chunks = &chunks;
    let e = store.plan(&spec, &source).unwrap_err();
    assert!(e.to_string().contains("chunk 4"), "{e}");
}
