//! `-o record=FILE` on the lazy kernel path of a registry mount (docs/lazy.md §8,
//! docs/mount.chunkfs.8.md): the fanotify filler records the frames the kernel reads from the
//! store's pack files, in first-touch order, as the FUSE recorder's prefetch list. A workload
//! reads three files in an order that is not the stored one; after the unmount the list names
//! their chunks in that order (the kernel's forward readahead may add chunks stored after the
//! ones read); `chunkfs pack --prefetch` takes the list, and a fresh mount of that image has
//! those frames fetched before any read: the workload's reads wait for no fill.
//!
//! Needs root, EROFS with 48-bit extents, fanotify pre-content events on /var/tmp, and
//! docker-registry, skopeo, openssl; skipped with a message otherwise. Mounts are unmounted by
//! guards, also when a test fails; the registry stops when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chunkfs_format::digest::Digest;
use chunkfs_tests::chunks_of;
use chunkfs_tests::mount::{Mounted, chunkfs_bin, describe, output};
use chunkfs_tests::registry::{
    AuthMode, TestRegistry, chunkfs_mount, chunkfs_status, pack_into_layout,
};
use chunkfs_tests::tree::pseudo_random;

/// The tree's files in stored (name) order, each at least 64 KiB so it is chunked on its own.
const FILES: [(&str, usize); 4] = [
    ("first", 1_500_000),
    ("second", 900_000),
    ("third", 1_200_000),
    ("unread", 1_000_000),
];

/// The workload: not the stored order.
const WORKLOAD: [&str; 3] = ["third", "first", "second"];

fn mount(reference: &str, mnt: &Path, options: &str) -> (Mounted, String) {
    std::fs::create_dir_all(mnt).unwrap();
    let o = chunkfs_mount(reference, mnt, options);
    assert!(o.status.success(), "chunkfs mount: {}", describe(&o));
    (
        Mounted::at(mnt),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Reads the workload's files from `mnt`, checking their bytes.
fn run_workload(mnt: &Path) {
    for name in WORKLOAD {
        let i = FILES.iter().position(|(n, _)| *n == name).unwrap();
        let got = std::fs::read(mnt.join(name)).unwrap();
        assert!(
            got == pseudo_random(FILES[i].1, 70 + i as u64),
            "{name}: wrong bytes"
        );
    }
}

/// Frames present in the mount's packs, by `chunkfs status`.
fn present(mnt: &Path) -> u64 {
    chunkfs_status(mnt)["packs"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["present"].as_u64()).sum())
        .unwrap_or(0)
}

#[test]
fn the_kernel_path_records_what_the_kernel_reads_and_the_list_prefetches_it() {
    chunkfs_tests::require_lazy_registry!();
    let dir = chunkfs_tests::scratch_dir("lazy-record");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for (i, (name, len)) in FILES.iter().enumerate() {
        std::fs::write(src.join(name), pseudo_random(*len, 70 + i as u64)).unwrap();
    }
    let layout = dir.join("layout");
    pack_into_layout(&src, &layout, "v1");
    let image = chunkfs_distribution::oci::read::open_image(&layout, Some("v1"))
        .unwrap()
        .image;
    let reg = TestRegistry::start(&dir.join("registry"), AuthMode::None);
    reg.push(&format!("oci:{}:v1", layout.display()), "test/rec", "v1");
    let base = |store: &str| {
        format!(
            "store={},cert-dir={},reader=kernel",
            dir.join(store).display(),
            reg.cert_dir().display()
        )
    };

    // Record the workload on the kernel path.
    let list = dir.join("kernel.list");
    let mnt = dir.join("mnt-record");
    let (m, log) = mount(
        &reg.reference("test/rec", "v1"),
        &mnt,
        &format!("{},record={}", base("store-1"), list.display()),
    );
    assert!(log.contains("kernel+filler"), "{log}");
    assert_eq!(
        chunkfs_tests::mount::mountinfo_dev(&mnt).fstype,
        "erofs",
        "{log}"
    );
    // Written empty at mount time: an unwritable FILE fails the mount, not the unmount.
    assert!(
        chunkfs_format::prefetch::read(&list).unwrap().is_empty(),
        "{log}"
    );
    run_workload(&mnt);
    m.unmount();
    let recorded = chunkfs_format::prefetch::read(&list).unwrap();
    eprintln!("recorded {} chunks", recorded.len());

    // Every listed chunk is one of the image's; every chunk of the workload's files is there.
    // The kernel reads whole pages of the pack files and frames are not page-aligned, so a
    // file's first or last frame may be touched by a read of its neighbour in the pack (the
    // filler made it present then: the list must name it there). The frames inside each file
    // are touched by its own reads only: those are in first-read order.
    let all: HashSet<Digest> = image.chunks.iter().map(|c| c.digest).collect();
    assert!(recorded.iter().all(|d| all.contains(d)), "{recorded:?}");
    let listed: HashSet<Digest> = recorded.iter().copied().collect();
    let inside: Vec<Digest> = WORKLOAD
        .iter()
        .flat_map(|n| {
            let c = chunks_of(&image, n);
            assert!(c.len() >= 4, "{n}: {c:?}");
            assert!(
                c.iter().all(|d| listed.contains(d)),
                "{n} is not all listed"
            );
            c[1..c.len() - 1].to_vec()
        })
        .collect();
    let wanted: HashSet<Digest> = inside.iter().copied().collect();
    let in_order: Vec<Digest> = recorded
        .iter()
        .copied()
        .filter(|d| wanted.contains(d))
        .collect();
    assert_eq!(
        in_order, inside,
        "the workload's chunks in first-read order"
    );

    // The list goes into an image; its lazy kernel mount fetches those frames before any read.
    let o = output(
        Command::new(chunkfs_bin())
            .arg("pack")
            .arg("--prefetch")
            .arg(&list)
            .arg(&src)
            .arg(format!("oci:{}:v2", layout.display())),
    );
    assert!(
        o.status.success(),
        "chunkfs pack --prefetch: {}",
        describe(&o)
    );
    reg.push(&format!("oci:{}:v2", layout.display()), "test/rec", "v2");
    let mnt = dir.join("mnt-replay");
    let (m, log) = mount(&reg.reference("test/rec", "v2"), &mnt, &base("store-2"));
    assert!(log.contains("prefetch:"), "{log}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while present(&mnt) < recorded.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the prefetch did not arrive: {}",
            chunkfs_status(&mnt)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    run_workload(&mnt);
    // Every read found its frames present: the filler answered each event at once, none
    // waited for a fill. (The fetch-ahead of the sequential reads may fetch the frames of
    // `unread` meanwhile; no read waits for them.) The counters are published every second.
    std::thread::sleep(Duration::from_millis(1500));
    let st = chunkfs_status(&mnt);
    let filler = &st["stats"]["filler"];
    assert!(filler["events"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(filler["filled"], 0, "reads waited for fills: {st}");
    assert_eq!(filler["failed"], 0, "{st}");
    m.unmount();
    drop(reg);
    let _ = std::fs::remove_dir_all(&dir);
}
