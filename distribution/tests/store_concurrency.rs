//! Many threads and processes filling the same pack: each frame is fetched once, and fillers
//! SIGKILLed at random moments leave a store that verifies. Child processes are this test
//! binary running its `worker` test (see store_common::spawn_worker).
#![allow(clippy::unwrap_used)]

mod store_common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use chunkfs_distribution::source::LayoutSource;
use chunkfs_distribution::store::{Pack, Store};
use chunkfs_format::digest::Digest;
use store_common::{
    KillOnDrop, TestImage, make_tree, pack, spawn_worker, test_dir, worker_args, worker_result,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Windows of 1 to 6 frames covering every frame, in a shuffled order.
fn shuffled_windows(frames: usize, seed: u64) -> Vec<std::ops::Range<usize>> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    let mut i = 0;
    while i < frames {
        let len = 1 + rng.below(6);
        let end = (i + len).min(frames);
        // Overlap the previous window sometimes.
        out.push(i.saturating_sub(rng.below(3))..end);
        i = end;
    }
    for k in (1..out.len()).rev() {
        out.swap(k, rng.below(k + 1));
    }
    out
}

fn range_of(p: &Pack, w: &std::ops::Range<usize>) -> std::ops::Range<u64> {
    p.frame_range(w.start).unwrap().start..p.frame_range(w.end - 1).unwrap().end
}

fn setup() -> (tempfile::TempDir, TestImage, Digest, u64) {
    let tmp = test_dir();
    make_tree(&tmp.path().join("tree"), 0);
    pack(
        &tmp.path().join("tree"),
        &tmp.path().join("layout"),
        "a",
        false,
    );
    let img = TestImage::open(&tmp.path().join("layout"), "a");
    let (d, len) = img.packs[0];
    let store = Store::open(&tmp.path().join("store")).unwrap();
    store
        .add_pack(&d, len, &LayoutSource::new(&img.layout))
        .unwrap();
    (tmp, img, d, len)
}

/// The entry point of child processes.
#[test]
fn worker() {
    let Some(args) = worker_args() else {
        // Not a worker: the tests below start this one as their children.
        return;
    };
    let store = Store::open(Path::new(&args[1])).unwrap();
    let source = LayoutSource::new(Path::new(&args[2]));
    let pack = store
        .pack(&Digest::from_hex(&args[3]).unwrap())
        .unwrap()
        .unwrap();
    match args[0].as_str() {
        "fill" => {
            let (seed, threads): (u64, u64) = (args[4].parse().unwrap(), args[5].parse().unwrap());
            source.set_delay(Duration::from_millis(args[6].parse().unwrap()));
            let go = Path::new(&args[7]);
            while !go.exists() {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (pack, source) = (&pack, &source);
                    s.spawn(move || {
                        for w in shuffled_windows(pack.entries().len(), seed * 100 + t) {
                            pack.ensure(range_of(pack, &w), source).unwrap();
                        }
                    });
                }
            });
            let s = source.stats();
            println!("RESULT {} {}", s.bytes, s.requests);
        }
        "hold" => {
            let (first, last): (usize, usize) =
                (args[4].parse().unwrap(), args[5].parse().unwrap());
            source.set_delay(Duration::from_millis(args[6].parse().unwrap()));
            pack.ensure(range_of(&pack, &(first..last)), &source)
                .unwrap();
            println!("RESULT {}", std::process::id());
        }
        other => panic!("unknown worker command {other}"),
    }
}

#[test]
fn sixteen_threads_fetch_each_frame_once() {
    let (tmp, img, d, _) = setup();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let pack = store.pack(&d).unwrap().unwrap();
    let source = LayoutSource::new(&img.layout);
    source.set_delay(Duration::from_millis(1));
    let n = pack.entries().len();
    let mut union = HashSet::new();
    let mut windows = Vec::new();
    for t in 0..16u64 {
        // Each thread asks for a random third of the pack, overlapping the others.
        let w: Vec<_> = shuffled_windows(n, t + 7)
            .into_iter()
            .filter(|w| w.start % 3 == (t % 3) as usize || t == 15)
            .collect();
        for r in &w {
            union.extend(r.clone());
        }
        windows.push(w);
    }
    std::thread::scope(|s| {
        for w in &windows {
            let (pack, source) = (&pack, &source);
            s.spawn(move || {
                for r in w {
                    pack.ensure(range_of(pack, r), source).unwrap();
                }
            });
        }
    });
    let want: u64 = union
        .iter()
        .map(|&i| u64::from(pack.entries()[i].stored_len))
        .sum();
    assert_eq!(source.stats().bytes, want, "each frame fetched once");
    assert_eq!(store.counters().frames_fetched, union.len() as u64);
    assert!(store.counters().waits > 0 || store.counters().hits > 0);
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
}

#[test]
fn processes_fetch_each_frame_once() {
    let (tmp, img, d, _) = setup();
    let go = tmp.path().join("go");
    let children: Vec<KillOnDrop> = (0..4u64)
        .map(|seed| {
            KillOnDrop(Some(spawn_worker(&[
                "fill".into(),
                tmp.path().join("store").display().to_string(),
                img.layout.display().to_string(),
                d.to_hex(),
                (seed + 1).to_string(),
                "4".into(),
                "1".into(),
                go.display().to_string(),
            ])))
        })
        .collect();
    std::fs::write(&go, b"").unwrap();
    let mut bytes = 0u64;
    for mut c in children {
        let r = worker_result(c.0.take().unwrap());
        bytes += r[0].parse::<u64>().unwrap();
    }
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let pack = store.pack(&d).unwrap().unwrap();
    let total: u64 = pack.entries().iter().map(|e| u64::from(e.stored_len)).sum();
    assert_eq!(
        bytes, total,
        "4 processes of 4 threads fetched each frame once"
    );
    assert!(pack.fill_state().unwrap().is_complete());
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
}

#[test]
fn fillers_killed_mid_fill_leave_a_store_that_verifies() {
    let (tmp, img, d, len) = setup();
    let mut rng = Rng(0x5eed);
    let go = tmp.path().join("go");
    std::fs::write(&go, b"").unwrap();
    let store_dir = tmp.path().join("store");
    let source = LayoutSource::new(&img.layout);
    let mut partial_rounds = 0;
    for round in 0..6u64 {
        let store = Store::open(&store_dir).unwrap();
        let pack = store.add_pack(&d, len, &source).unwrap();
        let frames = pack.entries().len();
        let children: Vec<KillOnDrop> = (0..3u64)
            .map(|k| {
                KillOnDrop(Some(spawn_worker(&[
                    "fill".into(),
                    store_dir.display().to_string(),
                    img.layout.display().to_string(),
                    d.to_hex(),
                    (round * 10 + k + 1).to_string(),
                    "2".into(),
                    "5".into(),
                    go.display().to_string(),
                ])))
            })
            .collect();
        // Kill them once a random share (up to half) of the frames is present: mid-fill, far
        // enough from the end that the fills cannot complete while they are being killed.
        let target = 5 + rng.below(frames / 2 - 5) as u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while pack.fill_state().unwrap().present < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        for mut c in children {
            let mut child = c.0.take().unwrap();
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
        let v = store.verify().unwrap();
        assert!(v.is_ok(), "round {round}: {:?}", v.problems);
        let fill = store.pack(&d).unwrap().unwrap().fill_state().unwrap();
        if fill.present > 0 && !fill.is_complete() {
            partial_rounds += 1;
        }
        if round < 5 {
            // Start the next round from an empty pack (nothing pins this one).
            store.gc(false).unwrap();
            assert!(store.pack(&d).unwrap().is_none());
        }
    }
    assert!(
        partial_rounds >= 5,
        "only {partial_rounds} rounds were killed mid-fill"
    );
    // Whatever the killed fillers left, the pack completes and every frame checks.
    let store = Store::open(&store_dir).unwrap();
    let pack = store.pack(&d).unwrap().unwrap();
    pack.ensure(pack.base()..pack.file_len(), &source).unwrap();
    assert!(pack.fill_state().unwrap().is_complete());
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    assert_eq!(v.frames, pack.entries().len() as u64);
}

#[test]
fn lock_holders_name_the_process_writing_frames() {
    let (tmp, img, d, _) = setup();
    let mut child = KillOnDrop(Some(spawn_worker(&[
        "hold".into(),
        tmp.path().join("store").display().to_string(),
        img.layout.display().to_string(),
        d.to_hex(),
        "5".into(),
        "8".into(),
        "1500".into(),
    ])));
    let pid = child.0.as_ref().unwrap().id() as i32;
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let pack = store.pack(&d).unwrap().unwrap();
    let r = range_of(&pack, &(6..7));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = pack.lock_holders(r.clone()).unwrap();
        if !seen.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        seen,
        vec![pid],
        "the child holds frames 5..8 while it fetches them"
    );
    assert!(
        pack.lock_holders(range_of(&pack, &(9..10)))
            .unwrap()
            .is_empty()
    );
    // An ensure of the same frames waits for the child and fetches nothing.
    let source = LayoutSource::new(&img.layout);
    pack.ensure(r, &source).unwrap();
    assert_eq!(source.stats().requests, 0);
    let r = worker_result(child.0.take().unwrap());
    assert_eq!(r[0], pid.to_string());
}
