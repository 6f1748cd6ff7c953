//! Keeping the store healthy: repair after a reboot, gc roots (pins, live mounts, dead
//! mounts), the size bound, windows, damaged files.
#![allow(clippy::unwrap_used)]

mod store_common;

use chunkfs_format::Classify as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chunkfs_distribution::source::LayoutSource;
use chunkfs_distribution::store::window::SLOT;
use chunkfs_distribution::store::{Config, ImageRecord, Store};
use chunkfs_format::ErrorClass;
use chunkfs_format::digest::Digest;
use chunkfs_format::translate::ExtentLayout;
use store_common::{
    TestImage, make_tree_seeded, pack, spawn_worker, test_dir, worker_args, worker_result,
};

/// Images `names` from separate layouts, sharing no chunk.
fn images(root: &Path, names: &[&str]) -> Vec<TestImage> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let tree = root.join(format!("tree-{name}"));
            make_tree_seeded(&tree, 0, i as u64 + 1);
            let layout = root.join(format!("layout-{name}"));
            pack(&tree, &layout, name, false);
            TestImage::open(&layout, name)
        })
        .collect()
}

fn state_path(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.state", p.display()))
}

fn put_blobs(store: &Store, img: &TestImage) {
    for b in &img.blobs {
        store.put_blob(b, &img.blob(b)).unwrap();
    }
}

/// The entry point of child processes: `lease STORE MANIFEST PACK...` writes a mount record
/// held by this (soon dead) process and keeps it.
#[test]
fn worker() {
    let Some(args) = worker_args() else {
        // Not a worker: the tests below start this one as their children.
        return;
    };
    assert_eq!(args[0], "lease");
    let store = Store::open(Path::new(&args[1])).unwrap();
    let record = ImageRecord {
        reference: "dead".into(),
        manifest: Digest::from_hex(&args[2]).unwrap(),
        blobs: vec![],
        packs: args[3..]
            .iter()
            .map(|h| Digest::from_hex(h).unwrap())
            .collect(),
        descriptor: None,
    };
    let id = store.lease(&record).unwrap().keep();
    println!("RESULT {id}");
}

#[test]
fn unsynced_frames_are_checked_again_after_a_reboot() {
    let tmp = test_dir();
    let img = &images(tmp.path(), &["a"])[0];
    let source = LayoutSource::new(&img.layout);
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (d, len) = img.packs[0];
    let pack = store.add_pack(&d, len, &source).unwrap();
    pack.ensure(pack.base()..pack.file_len(), &source).unwrap();
    let n = pack.entries().len();
    let path = pack.path().to_owned();
    let damaged = [3usize, n / 2];
    let offsets: Vec<u64> = damaged
        .iter()
        .map(|&i| pack.frame_range(i).unwrap().start + 1)
        .collect();
    drop(pack);
    drop(store); // syncs: every frame is in state 1

    // A previous boot wrote these frames and did not sync them; two never reached the disk.
    let sp = state_path(&path);
    let mut state = std::fs::read(&sp).unwrap();
    assert!(state[64..].iter().all(|&s| s == 1));
    state[40..56].copy_from_slice(b"an older boot id");
    state[64..].iter_mut().for_each(|s| *s = 2);
    let tmp_state = tmp.path().join("state.new");
    std::fs::write(&tmp_state, &state).unwrap();
    std::fs::rename(&tmp_state, &sp).unwrap(); // a new file, as after a reboot
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for &at in &offsets {
        f.write_all_at(&[0x42, 0x42], at).unwrap();
    }

    let store = Store::open(&tmp.path().join("store")).unwrap();
    let pack = store.pack(&d).unwrap().unwrap();
    let states = pack.states().unwrap();
    for (i, s) in states.iter().enumerate() {
        let want = if damaged.contains(&i) { 0 } else { 1 };
        assert_eq!(*s, want, "frame {i}");
    }
    assert_eq!(store.counters().repaired, n as u64);
    assert_ne!(&std::fs::read(&sp).unwrap()[40..56], b"an older boot id");
    assert!(store.verify().unwrap().is_ok());
    // Opened again in this boot: no second repair.
    drop(pack);
    let again = Store::open(&tmp.path().join("store")).unwrap();
    again.pack(&d).unwrap().unwrap();
    assert_eq!(again.counters().repaired, 0);
}

#[test]
fn gc_keeps_what_pins_and_live_mounts_use_and_removes_the_rest() {
    let tmp = test_dir();
    let imgs = images(tmp.path(), &["pinned", "mounted", "onroot", "gone", "dead"]);
    let store_dir = tmp.path().join("store");
    let store = Store::open(&store_dir).unwrap();
    let mut plans = Vec::new();
    for img in &imgs {
        put_blobs(&store, img);
        let source = LayoutSource::new(&img.layout);
        plans.push(store.plan(&img.spec(ExtentLayout::Bit48), &source).unwrap());
    }
    let mut plans = plans.into_iter();
    // pinned: pulled (and its plan's lease dropped); its ref and descriptor kept.
    let mut pinned = plans.next().unwrap();
    pinned.lease_mut().set_descriptor(Digest([1; 32])).unwrap();
    store.put_descriptor(&Digest([1; 32]), b"erofs").unwrap();
    let src = LayoutSource::new(&imgs[0].layout);
    store.pull(&pinned, &src, &mut |_, _| {}).unwrap();
    drop(pinned);
    store
        .set_ref("localhost:5000/img/pinned:v1", &imgs[0].manifest)
        .unwrap();
    // mounted: its lease lives (this process).
    let mounted = plans.next().unwrap();
    // onroot: recorded as mounted on / (which exists) by a process that is gone.
    let mut onroot = plans.next().unwrap();
    let root_id = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
        .unwrap();
    onroot.lease_mut().set_mounted("/", root_id, 0).unwrap();
    let onroot_id = onroot.into_lease().keep();
    // gone: planned, then the plan dropped (its record goes with it).
    drop(plans.next().unwrap());
    store
        .set_ref("localhost:5000/img/gone:v1", &imgs[3].manifest)
        .unwrap();
    store.put_descriptor(&Digest([2; 32]), b"unused").unwrap();
    // dead: a record kept by a process that exited.
    drop(plans.next().unwrap());
    let dead = &imgs[4];
    let mut args = vec![
        "lease".to_string(),
        store_dir.display().to_string(),
        dead.manifest.to_hex(),
    ];
    args.extend(dead.packs.iter().map(|p| p.0.to_hex()));
    let dead_id = worker_result(spawn_worker(&args))[0].clone();
    let stale_tmp = store_dir.join("tmp/0.1.2.blob");
    std::fs::write(&stale_tmp, b"left by a crash").unwrap();

    let dry = store.gc(true).unwrap();
    assert!(!dry.removed.is_empty());
    assert!(
        dry.removed.iter().all(|p| p.exists()),
        "a dry run removes nothing"
    );
    let real = store.gc(false).unwrap();
    assert_eq!(dry, real, "the dry run lists what gc removes");
    assert!(real.removed.iter().all(|p| !p.exists()));

    let has_pack = |img: &TestImage| {
        img.packs
            .iter()
            .all(|(d, _)| store.pack(d).unwrap().is_some())
    };
    let no_pack = |img: &TestImage| {
        img.packs
            .iter()
            .all(|(d, _)| store.pack(d).unwrap().is_none())
    };
    assert!(has_pack(&imgs[0]) && has_pack(&imgs[1]) && has_pack(&imgs[2]));
    assert!(no_pack(&imgs[3]) && no_pack(&imgs[4]));
    for (img, kept) in imgs.iter().zip([true, true, true, false, false]) {
        for b in &img.blobs {
            assert_eq!(
                store.blob(b, 1 << 30).unwrap().is_some(),
                kept,
                "{}",
                img.reference
            );
        }
    }
    assert_eq!(
        store.resolve_ref("localhost:5000/img/pinned:v1").unwrap(),
        Some(imgs[0].manifest)
    );
    assert_eq!(
        store.resolve_ref("localhost:5000/img/gone:v1").unwrap(),
        None
    );
    assert!(store.descriptor_path(&Digest([1; 32])).exists());
    assert!(!store.descriptor_path(&Digest([2; 32])).exists());
    assert!(!stale_tmp.exists());
    assert!(!store_dir.join(format!("mounts/{dead_id}.json")).exists());
    assert!(store_dir.join(format!("mounts/{onroot_id}.json")).exists());
    assert!(
        store_dir
            .join(format!("mounts/{}.json", mounted.lease().id()))
            .exists()
    );

    // Windows: disjoint, never touching; a new pack takes the lowest freed slot.
    let mut windows: Vec<(u64, u64)> = store
        .pack_digests()
        .unwrap()
        .iter()
        .map(|d| {
            let p = store.pack(d).unwrap().unwrap();
            (p.base(), p.file_len())
        })
        .collect();
    windows.sort();
    assert!(windows.windows(2).all(|w| w[0].1 < w[1].0), "{windows:?}");
    let free = (1..)
        .map(|s| s * SLOT)
        .find(|b| windows.iter().all(|w| w.0 != *b))
        .unwrap();
    let (d, len) = imgs[3].packs[0];
    let p = store
        .add_pack(&d, len, &LayoutSource::new(&imgs[3].layout))
        .unwrap();
    assert_eq!(p.base(), free);

    // Once the mount is gone and the pin removed, everything goes.
    drop(mounted);
    store.release_mount(&onroot_id).unwrap();
    assert!(store.unpin(&imgs[0].manifest).unwrap());
    store.gc(false).unwrap();
    assert!(store.pack_digests().unwrap().is_empty());
    assert_eq!(store.stats().unwrap().blobs, 0);
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn a_damaged_record_stops_gc() {
    let tmp = test_dir();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    std::fs::write(tmp.path().join("store/pins/x.json"), b"{not json").unwrap();
    let e = store.gc(false).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Corrupt);
    assert!(
        e.to_string().contains("pins/x.json") && e.to_string().contains("removed nothing"),
        "{e}"
    );
    assert!(!store.verify().unwrap().is_ok());
}

#[test]
fn the_size_bound_evicts_unused_packs_least_recently_used_first() {
    let tmp = test_dir();
    let imgs = images(tmp.path(), &["old", "recent", "kept", "new"]);
    let mut store = Store::open(&tmp.path().join("store")).unwrap();
    let mut usage = Vec::new();
    for img in &imgs[..3] {
        let source = LayoutSource::new(&img.layout);
        let plan = store.plan(&img.spec(ExtentLayout::Bit48), &source).unwrap();
        store.pull(&plan, &source, &mut |_, _| {}).unwrap();
        usage.push(store.stats().unwrap().disk_bytes);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Only "kept" stays pinned.
    assert!(store.unpin(&imgs[0].manifest).unwrap());
    assert!(store.unpin(&imgs[1].manifest).unwrap());
    let total = store.stats().unwrap().disk_bytes;
    // A bound that "old" alone makes the store exceed: it goes, "recent" stays.
    let old_bytes = usage[0];
    store.set_max_size(Some(total - old_bytes / 2));
    let evicted = store.enforce_bound().unwrap();
    assert_eq!(
        evicted,
        imgs[0].packs.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    assert!(store.stats().unwrap().disk_bytes <= total - old_bytes / 2);
    // A tiny bound: everything unpinned goes, before "new" is planned; "kept" stays.
    store.write_config(Config { max_size: Some(1) }).unwrap();
    assert_eq!(
        Store::open(&tmp.path().join("store"))
            .unwrap()
            .config()
            .max_size,
        Some(1)
    );
    let source = LayoutSource::new(&imgs[3].layout);
    let plan = store
        .plan(&imgs[3].spec(ExtentLayout::Bit48), &source)
        .unwrap();
    assert!(
        imgs[1]
            .packs
            .iter()
            .all(|(d, _)| store.pack(d).unwrap().is_none())
    );
    assert!(
        imgs[2]
            .packs
            .iter()
            .all(|(d, _)| store.pack(d).unwrap().is_some())
    );
    // The planned image's packs are protected by its record while it is pulled.
    store.pull(&plan, &source, &mut |_, _| {}).unwrap();
    assert!(imgs[3].packs.iter().all(|(d, _)| {
        store
            .pack(d)
            .unwrap()
            .unwrap()
            .fill_state()
            .unwrap()
            .is_complete()
    }));
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn damaged_state_files_are_named_and_reported() {
    let tmp = test_dir();
    let img = &images(tmp.path(), &["a"])[0];
    let source = LayoutSource::new(&img.layout);
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (d, len) = img.packs[0];
    let pack = store.add_pack(&d, len, &source).unwrap();
    let sp = state_path(pack.path());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sp)
        .unwrap()
        .write_all_at(&[7], 64 + 3)
        .unwrap();
    let e = pack.states().unwrap_err();
    assert_eq!(e.class(), ErrorClass::Corrupt);
    assert!(
        e.to_string().contains(&sp.display().to_string())
            && e.to_string().contains("frame 3 has state 7"),
        "{e}"
    );
    let e = pack
        .ensure(pack.frame_range(3).unwrap(), &source)
        .unwrap_err();
    assert!(e.to_string().contains(".state"), "{e}");
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].path, sp);
    drop(pack);
    // A state file cut short.
    let bytes = std::fs::read(&sp).unwrap();
    let new = tmp.path().join("short");
    std::fs::write(&new, &bytes[..bytes.len() - 1]).unwrap();
    std::fs::rename(&new, &sp).unwrap();
    let e = store.pack(&d).unwrap_err();
    assert!(
        e.to_string().contains(&sp.display().to_string()) && e.to_string().contains("frames"),
        "{e}"
    );
}
