//! Sixteen lazy mounts of four related images, into one store at once, half on the FUSE
//! reader and half on the lazy kernel path, each reading its whole tree while the daemons of
//! some of them are SIGKILLed at random moments: no read ever returns a wrong byte (reads of
//! a mount whose daemon died fail), every mount unmounts, and the store verifies afterwards
//! (`Store::verify`, what `chunkfs verify --store` runs).
//!
//! Needs root, FUSE, EROFS with 48-bit extents, fanotify pre-content events on /var/tmp,
//! docker-registry, skopeo and openssl; skips saying why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use chunkfs_tests::mount::{Mounted, describe};
use chunkfs_tests::registry::{
    AuthMode, HttpProxy, TestRegistry, chunkfs_mount, chunkfs_status, pack_into_layout, processes,
};
use chunkfs_tests::tree;

const MOUNTS: usize = 16;
const IMAGES: usize = 4;

/// Image `i`: files every image has, and files of its own.
fn make_tree(dir: &Path, i: usize) {
    fs::create_dir_all(dir.join("common/small")).unwrap();
    fs::create_dir_all(dir.join("own")).unwrap();
    for k in 0..3u64 {
        fs::write(
            dir.join(format!("common/big-{k}.bin")),
            tree::pseudo_random(700_000, 10 + k),
        )
        .unwrap();
    }
    for k in 0..40usize {
        fs::write(
            dir.join(format!("common/small/f{k:02}")),
            tree::words(200 + k * 97, 50 + k as u64),
        )
        .unwrap();
    }
    fs::write(
        dir.join("own/data.bin"),
        tree::pseudo_random(400_000, 1000 + i as u64),
    )
    .unwrap();
    fs::write(dir.join("own/name"), format!("image {i}\n")).unwrap();
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(dir.join(&rel)).unwrap().flatten() {
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(r);
            } else {
                out.push(r);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn sixteen_lazy_mounts_into_one_store_with_daemons_killed() {
    chunkfs_tests::require_lazy_registry!();
    let dir = chunkfs_tests::scratch_dir("regmount-stress");
    let reg = TestRegistry::start(&dir.join("registry"), AuthMode::None);
    let mut srcs = Vec::new();
    for i in 0..IMAGES {
        let src = dir.join(format!("src-{i}"));
        make_tree(&src, i);
        // Two layouts of two tags each: images share packs within a layout and chunks
        // across them.
        let layout = dir.join(format!("layout-{}", i % 2));
        let tag = format!("v{i}");
        pack_into_layout(&src, &layout, &tag);
        reg.push(&format!("oci:{}:{tag}", layout.display()), "test/app", &tag);
        srcs.push(src);
    }
    // A little latency, so that reads are in flight when daemons die.
    let proxy = HttpProxy::start(&reg);
    proxy.set_delay(Duration::from_millis(15));
    let store = dir.join("store");
    let wrong = Arc::new(AtomicUsize::new(0));
    let (exact, failed, killed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let start = Arc::new(Barrier::new(MOUNTS));
    let threads: Vec<_> = (0..MOUNTS)
        .map(|k| {
            let (src, store, dir) = (srcs[k % IMAGES].clone(), store.clone(), dir.clone());
            let reference = proxy.reference("test/app", &format!("v{}", k % IMAGES));
            let (wrong, exact, failed, killed, start) = (
                wrong.clone(),
                exact.clone(),
                failed.clone(),
                killed.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                let mnt = dir.join(format!("mnt-{k}"));
                fs::create_dir_all(&mnt).unwrap();
                let reader = if k % 2 == 0 { "fuse" } else { "kernel" };
                let opts = format!("store={},plain-http,reader={reader}", store.display());
                start.wait();
                let o = chunkfs_mount(&reference, &mnt, &opts);
                assert!(o.status.success(), "mount {k}: {}", describe(&o));
                let m = Mounted::at(&mnt);
                let pid = chunkfs_status(&mnt)["record"]["daemon_pid"].as_i64();
                // Every third mount loses its daemon a random moment into its read-all.
                let victim = (k % 3 == 0).then_some(pid).flatten();
                let killer = victim.map(|pid| {
                    let delay = Duration::from_millis(50 + (k as u64 * 137) % 900);
                    std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
                        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok()
                    })
                });
                for rel in files(&src) {
                    let want = fs::read(src.join(&rel)).unwrap();
                    let mut got = Vec::new();
                    match fs::File::open(mnt.join(&rel)).and_then(|mut f| f.read_to_end(&mut got)) {
                        Ok(_) if got == want => exact.fetch_add(1, Ordering::SeqCst),
                        Ok(_) => {
                            eprintln!("mount {k}: {}: WRONG BYTES", rel.display());
                            wrong.fetch_add(1, Ordering::SeqCst)
                        }
                        Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
                if let Some(t) = killer {
                    if t.join().unwrap() {
                        killed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                drop(m);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    eprintln!(
        "{MOUNTS} mounts: {} files exact, {} failed, {} wrong; {} daemons killed",
        exact.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        wrong.load(Ordering::SeqCst),
        killed.load(Ordering::SeqCst)
    );
    assert_eq!(wrong.load(Ordering::SeqCst), 0, "no wrong byte");
    assert!(exact.load(Ordering::SeqCst) > 0);
    for k in 0..MOUNTS {
        let mnt = dir.join(format!("mnt-{k}"));
        assert!(
            !fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .contains(&mnt.display().to_string()),
            "mount {k} is gone"
        );
    }
    let dirname = dir.display().to_string();
    assert!(processes("@chunkfs-reader", &dirname).is_empty());
    let s = chunkfs_distribution::store::Store::open(&store).unwrap();
    let report = s.verify().unwrap();
    eprintln!(
        "store: {} packs, {} present frames checked, {} blobs, {} records",
        report.packs, report.frames, report.blobs, report.records
    );
    assert!(report.is_ok(), "{:#?}", report.problems);
    assert!(report.frames > 0);
    drop((proxy, reg));
    let _ = fs::remove_dir_all(&dir);
}
