//! Mounting straight from a registry, lazily (docs/mount.chunkfs.8.md "Registry images",
//! docs/lazy.md §8): a real CNCF distribution registry (`docker-registry`) on loopback with TLS
//! from a test CA, in every auth mode, serving images `chunkfs pack` wrote into a layout and
//! `skopeo copy` pushed; `chunkfs mount docker://...` with the FUSE reader and with the lazy
//! kernel path (EROFS on the store's sparse packs, filled by the fanotify filler).
//!
//! Needs root, FUSE, EROFS with 48-bit extents, fanotify pre-content events on /var/tmp, and
//! docker-registry, skopeo, openssl; tests print why they skip. Mounts are unmounted by guards
//! (also when a test fails); registries and proxies stop when dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chunkfs_tests::mount::{Mounted, chunkfs_bin, describe, output};
use chunkfs_tests::registry::{
    AuthMode, HttpProxy, PASSWORD, TestRegistry, USER, blob_ranges, chunkfs_mount, chunkfs_status,
    pack_into_layout, processes,
};
use chunkfs_tests::tree;

// ---------------------------------------------------------------------------------------------
// Fixture: the every-corner tree plus a few MB of varied files, packed into a layout once.
// ---------------------------------------------------------------------------------------------

struct Fixture {
    src: PathBuf,
    layout: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = chunkfs_tests::scratch_dir("registry-mount");
        let src = dir.join("src");
        tree::make_every_corner_tree(&src).unwrap();
        make_varied(&src.join("varied"), 0);
        let layout = dir.join("layout");
        pack_into_layout(&src, &layout, "v1");
        Fixture { src, layout }
    })
}

/// Compressible text, incompressible noise and small files: a few MB, varied by `seed`.
fn make_varied(dir: &Path, seed: u64) {
    fs::create_dir_all(dir.join("small")).unwrap();
    for i in 0..2u64 {
        let text: String = (0..20_000u64)
            .map(|j| format!("{i}:{j:06} lazy registry mount, line {}\n", j * 7 % 1000))
            .collect();
        fs::write(dir.join(format!("text-{i}.txt")), text).unwrap();
        fs::write(
            dir.join(format!("noise-{i}.bin")),
            tree::pseudo_random(1_200_000 + i as usize * 333, 100 + i + seed),
        )
        .unwrap();
    }
    for i in 0..80usize {
        let len = 100 + (i * 977) % 5000;
        fs::write(
            dir.join("small").join(format!("s{i:03}")),
            tree::pseudo_random(len, 1000 + i as u64 + seed),
        )
        .unwrap();
    }
}

/// A test's scratch directory: the registry, stores and mount points.
fn scratch(name: &str) -> PathBuf {
    chunkfs_tests::scratch_dir(&format!("regmount-{name}"))
}

/// A registry started in `dir/registry` with `mode`, serving the fixture's image as
/// `test/app:v1`.
fn serving_app(dir: &Path, mode: AuthMode, f: &Fixture) -> TestRegistry {
    let reg = TestRegistry::start(&dir.join("registry"), mode);
    reg.push(&format!("oci:{}:v1", f.layout.display()), "test/app", "v1");
    reg
}

fn mount_point(dir: &Path, name: &str) -> PathBuf {
    let m = dir.join(name);
    fs::create_dir_all(&m).unwrap();
    m
}

/// The options every mount of `reg` needs: the store, the CA, and the credentials as
/// `creds=` (or an auth file, with `authfile`).
fn base_options(reg: &TestRegistry, store: &Path, authfile: Option<&Path>) -> String {
    let mut o = format!(
        "store={},cert-dir={}",
        store.display(),
        reg.cert_dir().display()
    );
    if let Some((u, p)) = reg.credentials() {
        match authfile {
            Some(f) => {
                use base64::Engine as _;
                let auth = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                fs::write(
                    f,
                    format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
                )
                .unwrap();
                o.push_str(&format!(",authfile={}", f.display()));
            }
            None => o.push_str(&format!(",creds={u}:{p}")),
        }
    }
    o
}

/// Mounts `reference` at `mnt`, panicking with the helper's output on failure.
fn mount(reference: &str, mnt: &Path, options: &str) -> Mounted {
    let o = chunkfs_mount(reference, mnt, options);
    assert!(o.status.success(), "chunkfs mount: {}", describe(&o));
    eprintln!("{}", String::from_utf8_lossy(&o.stderr).trim());
    Mounted::at(mnt)
}

fn reader_of(mnt: &Path) -> String {
    chunkfs_status(mnt)["record"]["reader"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn daemon_pid(mnt: &Path) -> i32 {
    chunkfs_status(mnt)["record"]["daemon_pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .expect("a daemon serves the mount")
}

fn fstype(mnt: &Path) -> String {
    chunkfs_tests::mount::mountinfo_dev(mnt).fstype
}

/// Every regular file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(dir.join(&rel)).unwrap().flatten() {
            let ty = e.file_type().unwrap();
            let r = rel.join(e.file_name());
            if ty.is_dir() {
                stack.push(r);
            } else if ty.is_file() {
                out.push(r);
            }
        }
    }
    out.sort();
    out
}

/// Reads `rel` through the mount and compares it with the source: `Ok(true)` exact, `Ok(false)`
/// the read failed (EIO or another error), `Err` wrong bytes.
fn read_exact_or_fail(src: &Path, mnt: &Path, rel: &Path) -> Result<bool, String> {
    let want = fs::read(src.join(rel)).unwrap();
    let mut got = Vec::new();
    match fs::File::open(mnt.join(rel)).and_then(|mut f| f.read_to_end(&mut got)) {
        Err(_) => Ok(false),
        Ok(_) if got == want => Ok(true),
        Ok(_) if got.len() != want.len() => Err(format!(
            "{}: {} bytes read, {} expected",
            rel.display(),
            got.len(),
            want.len()
        )),
        Ok(_) => {
            let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            Err(format!("{}: WRONG BYTE at {at}", rel.display()))
        }
    }
}

/// A few reads at random offsets of every file, each exact or failed, never wrong: the number
/// exact and the failed ones (what, and the error).
fn partial_reads(src: &Path, mnt: &Path, seed: u64) -> (usize, Vec<String>) {
    let mut rng = tree::XorShift64::new(seed);
    let (mut ok, mut failed) = (0, Vec::new());
    for rel in files(src) {
        let want = fs::read(src.join(&rel)).unwrap();
        if want.is_empty() {
            continue;
        }
        let f = match fs::File::open(mnt.join(&rel)) {
            Ok(f) => f,
            Err(e) => {
                failed.push(format!("{}: open: {e}", rel.display()));
                continue;
            }
        };
        for _ in 0..2 {
            let at = rng.next_u64() as usize % want.len();
            let len = (1 + rng.next_u64() as usize % 70_000).min(want.len() - at);
            let mut buf = vec![0u8; len];
            match f.read_exact_at(&mut buf, at as u64) {
                Ok(()) => {
                    assert!(
                        buf == want[at..at + len],
                        "{}: WRONG BYTES at {at}+{len}",
                        rel.display()
                    );
                    ok += 1;
                }
                Err(e) => failed.push(format!("{} at {at}+{len}: {e}", rel.display())),
            }
        }
    }
    (ok, failed)
}

// ---------------------------------------------------------------------------------------------
// Every auth mode, both readers.
// ---------------------------------------------------------------------------------------------

#[test]
fn every_auth_mode_mounts_lazily_on_both_readers() {
    chunkfs_tests::require_lazy_registry!();
    let f = fixture();
    let pack_len: u64 = fs::read_dir(f.layout.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .max()
        .unwrap();
    for mode in [AuthMode::None, AuthMode::Htpasswd, AuthMode::Token] {
        let dir = scratch(&format!("auth-{mode:?}"));
        let reg = serving_app(&dir, mode, f);
        for reader in ["fuse", "kernel"] {
            eprintln!("--- {mode:?}, reader={reader}");
            let store = dir.join(format!("store-{reader}"));
            let mnt = mount_point(&dir, &format!("mnt-{reader}"));
            // The token mode finds its credentials in an auth file; htpasswd gets creds=.
            let authfile = (mode == AuthMode::Token).then(|| dir.join("auth.json"));
            let opts = format!(
                "{},reader={reader}",
                base_options(&reg, &store, authfile.as_deref())
            );
            let m = mount(&reg.reference("test/app", "v1"), &mnt, &opts);
            let before = reg.settled_requests();
            match reader {
                "fuse" => {
                    assert_eq!(fstype(&mnt), "fuse.chunkfs");
                    assert_eq!(reader_of(&mnt), "fuse");
                }
                _ => {
                    assert_eq!(fstype(&mnt), "erofs", "/proc/mounts shows erofs");
                    assert_eq!(reader_of(&mnt), "kernel+filler");
                    assert!(
                        processes("@chunkfs-reader", &mnt.display().to_string()).is_empty(),
                        "no FUSE daemon serves the kernel path"
                    );
                    let mounts = fs::read_to_string("/proc/mounts").unwrap();
                    let line = mounts
                        .lines()
                        .find(|l| l.contains(&mnt.display().to_string()))
                        .unwrap();
                    assert!(
                        line.starts_with("docker://") && line.contains(" erofs "),
                        "{line}"
                    );
                }
            }
            // One small file: its chunk's frames only, not the pack.
            let small = Path::new("varied/small/s007");
            assert_eq!(read_exact_or_fail(&f.src, &mnt, small), Ok(true));
            let after = reg.settled_requests();
            let (n, bytes) = blob_ranges(&reg.requests()[before..after]);
            eprintln!("one small file: {n} range requests, {bytes} bytes (pack: {pack_len})");
            assert!(
                (1..=3).contains(&n),
                "{n} range requests for one small file"
            );
            assert!(
                bytes < 512 << 10 && bytes * 8 < pack_len,
                "{bytes} bytes for one small file"
            );
            tree::compare_trees(&f.src, &mnt).unwrap_or_else(|d| panic!("{reader}: {d}"));
            let st = chunkfs_status(&mnt);
            eprintln!("status: {}", st["stats"]);
            assert!(
                st["packs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["present"] == p["frames"]),
                "every frame present after the read-all: {}",
                st["packs"]
            );
            let pid = st["record"]["daemon_pid"].as_i64();
            m.unmount();
            if let Some(pid) = pid {
                assert!(
                    !Path::new(&format!("/proc/{pid}")).exists()
                        || fs::read(format!("/proc/{pid}/cmdline"))
                            .unwrap_or_default()
                            .is_empty(),
                    "the daemon {pid} is gone after chunkfs umount"
                );
            }
        }
        if mode == AuthMode::Token {
            assert!(reg.token_requests() > 0, "tokens were asked for");
        }
        drop(reg);
        let _ = fs::remove_dir_all(&dir);
    }
}

// ---------------------------------------------------------------------------------------------
// The filler killed mid-read, then restarted on the same mount.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_killed_filler_gives_eio_never_wrong_bytes_and_refill_heals_the_mount() {
    chunkfs_tests::require_lazy_registry!();
    let f = fixture();
    let dir = scratch("kill-filler");
    let reg = serving_app(&dir, AuthMode::None, f);
    // A slow link, so that the kill lands mid-read.
    let proxy = HttpProxy::start(&reg);
    let store = dir.join("store");
    let mnt = mount_point(&dir, "mnt");
    let opts = format!("store={},plain-http,reader=kernel", store.display());
    let m = mount(&proxy.reference("test/app", "v1"), &mnt, &opts);
    // EROFS keeps no compressed pages of its own on a lazy mount: zeros a dead filler let
    // through would stay there, and its drop_caches did not always reach them (docs/lazy.md
    // rule 8).
    let line = chunkfs_tests::mount::mountinfo_dev(&mnt);
    assert!(
        line.options
            .split(',')
            .any(|o| o == "cache_strategy=disabled"),
        "{line:?}"
    );
    proxy.set_delay(Duration::from_millis(300));
    let filler = daemon_pid(&mnt);
    let all = files(&f.src);
    let (src, mnt2) = (f.src.clone(), mnt.clone());
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        for rel in &all {
            match read_exact_or_fail(&src, &mnt2, rel) {
                Ok(true) => ok += 1,
                Ok(false) => failed += 1,
                Err(wrong) => panic!("{wrong}"),
            }
            let _ = first_tx.send(());
        }
        (ok, failed)
    });
    // Killed once the read-all is under way (a frame fetched and read), long before it ends.
    first_rx.recv().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(filler),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (ok, failed) = reader.join().unwrap();
    eprintln!("read-all across the kill: {ok} exact, {failed} failed");
    assert!(
        failed > 0,
        "reads after the kill fail (the kill came too late?)"
    );
    let (pok, pfailed) = partial_reads(&f.src, &mnt, 7);
    eprintln!(
        "partial reads with no filler: {pok} exact, {} failed",
        pfailed.len()
    );
    assert!(!pfailed.is_empty());
    let st = chunkfs_status(&mnt);
    assert_eq!(st["daemon_alive"], false, "{st}");

    proxy.set_delay(Duration::ZERO);
    let o = output(Command::new(chunkfs_bin()).args(["refill", "-v"]).arg(&mnt));
    assert!(o.status.success(), "chunkfs refill: {}", describe(&o));
    assert_ne!(daemon_pid(&mnt), filler);
    let (pok, pfailed) = partial_reads(&f.src, &mnt, 8);
    assert!(
        pfailed.is_empty(),
        "after the refill every partial read is exact ({pok}); these failed: {pfailed:#?}"
    );
    tree::compare_trees(&f.src, &mnt).unwrap();
    let refilled = daemon_pid(&mnt);
    m.unmount();
    assert!(
        !processes("@chunkfs-filler", "").contains(&refilled),
        "the new filler is gone after chunkfs umount"
    );
    drop((proxy, reg));
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Two images sharing most chunks: the second fetches the difference.
// ---------------------------------------------------------------------------------------------

/// The frame bytes of `layout`'s image `tag` whose chunks `other` does not have.
fn new_frame_bytes(layout: &Path, tag: &str, other: &Path, other_tag: &str) -> u64 {
    use chunkfs_distribution::oci::read::open_image;
    let a = open_image(other, Some(other_tag)).unwrap();
    let have: std::collections::HashSet<_> = a.image.chunks.iter().map(|c| c.digest).collect();
    let b = open_image(layout, Some(tag)).unwrap();
    let mut total = 0u64;
    for (i, c) in b.image.chunks.iter().enumerate() {
        if !have.contains(&c.digest) {
            total += u64::from(b.locations[i].stored_len);
        }
    }
    total
}

#[test]
fn a_second_image_sharing_most_chunks_fetches_only_the_difference() {
    chunkfs_tests::require_lazy_registry!();
    let f = fixture();
    let dir = scratch("share");
    // The second image: the same tree plus a few files, packed on its own (its own pack holds
    // every chunk; the store has most of them already, in the first image's pack).
    let src2 = dir.join("src2");
    copy_tree(&f.src, &src2);
    fs::create_dir_all(src2.join("added")).unwrap();
    for i in 0..3u64 {
        fs::write(
            src2.join(format!("added/new-{i}.bin")),
            tree::pseudo_random(200_000, 777 + i),
        )
        .unwrap();
    }
    let layout2 = dir.join("layout2");
    pack_into_layout(&src2, &layout2, "v2");
    let expected = new_frame_bytes(&layout2, "v2", &f.layout, "v1");
    let reg = TestRegistry::start(&dir.join("registry"), AuthMode::Htpasswd);
    reg.push(&format!("oci:{}:v1", f.layout.display()), "test/base", "v1");
    reg.push(&format!("oci:{}:v2", layout2.display()), "test/more", "v2");
    let store = dir.join("store");
    let mnt = mount_point(&dir, "mnt");
    for (reader, repo, tag, src) in [
        ("fuse", "test/base", "v1", f.src.as_path()),
        ("kernel", "test/more", "v2", src2.as_path()),
    ] {
        let opts = format!("{},reader={reader}", base_options(&reg, &store, None));
        let m = mount(&reg.reference(repo, tag), &mnt, &opts);
        let before = reg.settled_requests();
        tree::compare_trees(src, &mnt).unwrap();
        let after = reg.settled_requests();
        let (n, bytes) = blob_ranges(&reg.requests()[before..after]);
        eprintln!("{repo}:{tag} ({reader}): read-all fetched {bytes} bytes in {n} requests");
        if tag == "v2" {
            let plan = &chunkfs_status(&mnt)["record"]["plan"];
            eprintln!("plan of the second image: {plan}; new frames: {expected} bytes");
            assert!(plan["shared"].as_u64().unwrap() > 0, "{plan}");
            assert!(
                bytes >= expected && bytes <= expected + expected / 10 + (64 << 10),
                "the second image fetched {bytes} bytes; its new chunks' frames are {expected}"
            );
        }
        m.unmount();
    }
    drop(reg);
    let _ = fs::remove_dir_all(&dir);
}

fn copy_tree(src: &Path, dst: &Path) {
    let o = output(Command::new("cp").arg("-a").arg(src).arg(dst));
    assert!(o.status.success(), "cp -a: {}", describe(&o));
}

// ---------------------------------------------------------------------------------------------
// The registry stopped mid-read.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_stopped_registry_fails_reads_with_eio_and_they_recover_when_it_returns() {
    chunkfs_tests::require_lazy_registry!();
    let f = fixture();
    let dir = scratch("stopped");
    let mut reg = serving_app(&dir, AuthMode::Token, f);
    for reader in ["fuse", "kernel"] {
        let store = dir.join(format!("store-{reader}"));
        let mnt = mount_point(&dir, &format!("mnt-{reader}"));
        let opts = format!("{},reader={reader}", base_options(&reg, &store, None));
        let m = mount(&reg.reference("test/app", "v1"), &mnt, &opts);
        assert_eq!(
            read_exact_or_fail(&f.src, &mnt, Path::new("varied/text-0.txt")),
            Ok(true)
        );
        reg.stop();
        let t = Instant::now();
        let r = read_exact_or_fail(&f.src, &mnt, Path::new("varied/noise-1.bin"));
        eprintln!(
            "{reader}: a read with the registry down: {r:?} after {:?}",
            t.elapsed()
        );
        assert_eq!(r, Ok(false), "EIO while the registry is down");
        assert!(fs::read_dir(&mnt).is_ok(), "the mount stays up");
        let st = chunkfs_status(&mnt);
        assert_eq!(st["daemon_alive"], true);
        reg.restart();
        // The filler fails reads at once for a quarter of a second after the registry failed
        // one (the kernel asks several times per read): a read then succeeds.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            read_exact_or_fail(&f.src, &mnt, Path::new("varied/noise-1.bin")),
            Ok(true),
            "the same read succeeds once the registry is back"
        );
        // Unmounting with the registry down is prompt.
        reg.stop();
        let t = Instant::now();
        m.unmount();
        let took = t.elapsed();
        eprintln!("{reader}: umount with the registry down took {took:?}");
        assert!(took < Duration::from_secs(5), "umount took {took:?}");
        reg.restart();
    }
    drop(reg);
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// A hostile registry serving wrong bytes for ranges.
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_bytes_from_the_registry_are_never_served() {
    chunkfs_tests::require_lazy_registry!();
    let f = fixture();
    let dir = scratch("hostile");
    let reg = serving_app(&dir, AuthMode::None, f);
    let proxy = HttpProxy::start(&reg);
    for reader in ["fuse", "kernel"] {
        let store = dir.join(format!("store-{reader}"));
        let mnt = mount_point(&dir, &format!("mnt-{reader}"));
        let opts = format!("store={},plain-http,reader={reader}", store.display());
        proxy.set_corrupt(false);
        let m = mount(&proxy.reference("test/app", "v1"), &mnt, &opts);
        proxy.set_corrupt(true);
        let mut failed = 0;
        for rel in files(&f.src).into_iter().step_by(4) {
            match read_exact_or_fail(&f.src, &mnt, &rel) {
                Ok(true) => {}
                Ok(false) => failed += 1,
                Err(wrong) => panic!("{reader}: {wrong}"),
            }
        }
        eprintln!("{reader}, every range damaged: {failed} of the files read failed");
        assert!(failed > 0);
        // The daemon publishes its counters within a second.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let st = chunkfs_status(&mnt);
            if st["stats"]["store"]["errors"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "no error counted: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }
        proxy.set_corrupt(false);
        tree::compare_trees(&f.src, &mnt).unwrap();
        m.unmount();
        // Nothing damaged was stored.
        let s = chunkfs_distribution::store::Store::open(&store).unwrap();
        let report = s.verify().unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
    }
    drop((proxy, reg));
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// A complete image mounts offline, on the kernel path, with no daemon.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_pulled_image_mounts_offline_on_the_kernel_path_with_no_daemon() {
    chunkfs_tests::require_lazy_registry!();
    let f = fixture();
    let dir = scratch("offline");
    let mut reg = serving_app(&dir, AuthMode::Htpasswd, f);
    let store_dir = dir.join("store");
    {
        // Store::pull through the library, as `chunkfs pull` does.
        use chunkfs_distribution::registry::{Client, CredentialOptions, Credentials, ImageRef};
        let reference = ImageRef::parse(&reg.reference("test/app", "v1")).unwrap();
        let client = Client::new(
            &reference,
            chunkfs_distribution::registry::Options {
                credentials: CredentialOptions {
                    creds: Some(Credentials {
                        username: USER.into(),
                        password: PASSWORD.into(),
                    }),
                    ..CredentialOptions::default()
                },
                cert_dir: Some(reg.cert_dir()),
                ..chunkfs_distribution::registry::Options::default()
            },
        )
        .unwrap();
        let store = chunkfs_distribution::store::Store::open(&store_dir).unwrap();
        let mut image =
            chunkfs_distribution::remote::open(&store, &client, &reference, None).unwrap();
        let plan = image
            .plan(
                &store,
                &client,
                chunkfs_format::translate::ExtentLayout::Bit48,
            )
            .unwrap();
        let report = store.pull(&plan, &client, &mut |_, _| {}).unwrap();
        eprintln!("pulled: {report:?}");
    }
    reg.stop();
    let mnt = mount_point(&dir, "mnt");
    // No credentials, no registry: everything comes from the store. Through mount(8), from
    // an fstab line.
    let _helper = chunkfs_tests::mount::SbinHelper::install();
    let fstab = dir.join("fstab");
    fs::write(
        &fstab,
        format!(
            "{} {} chunkfs ro,noauto,_netdev,store={},cert-dir={} 0 0\n",
            reg.reference("test/app", "v1"),
            mnt.display(),
            store_dir.display(),
            reg.cert_dir().display()
        ),
    )
    .unwrap();
    let o = output(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt));
    assert!(o.status.success(), "mount -T fstab: {}", describe(&o));
    let m = Mounted::at(&mnt);
    assert_eq!(fstype(&mnt), "erofs");
    assert_eq!(
        chunkfs_tests::mount::mountinfo_dev(&mnt).source,
        reg.reference("test/app", "v1")
    );
    let st = chunkfs_status(&mnt);
    assert_eq!(st["record"]["reader"], "kernel", "{st}");
    assert!(st["record"]["daemon_pid"].is_null(), "{st}");
    assert!(st["record"]["offline"].is_string(), "{st}");
    assert!(processes("@chunkfs-reader", &mnt.display().to_string()).is_empty());
    tree::compare_trees(&f.src, &mnt).unwrap();
    m.unmount();
    drop(reg);
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Prefetch replay and background pull.
// ---------------------------------------------------------------------------------------------

#[test]
fn prefetch_list_and_background_pull_fill_the_mount_without_reads() {
    chunkfs_tests::require_lazy_registry!();
    let f = fixture();
    let dir = scratch("prefetch");
    let reg = serving_app(&dir, AuthMode::None, f);
    let image = chunkfs_distribution::oci::read::open_image(&f.layout, Some("v1")).unwrap();
    // The chunks of one file, as a recorded list would name them (plus an unknown digest).
    let list = dir.join("prefetch.list");
    let mut text = String::from("# first reads\nsha256:");
    text.push_str(&"ab".repeat(32));
    text.push('\n');
    for c in image.image.chunks.iter().take(5) {
        text.push_str(&format!("{}\n", c.digest.to_oci()));
    }
    fs::write(&list, text).unwrap();
    for reader in ["fuse", "kernel"] {
        let store = dir.join(format!("store-{reader}"));
        let mnt = mount_point(&dir, &format!("mnt-{reader}"));
        let opts = format!(
            "{},reader={reader},prefetch={},pull=background",
            base_options(&reg, &store, None),
            list.display()
        );
        let m = mount(&reg.reference("test/app", "v1"), &mnt, &opts);
        // Without any read, every frame arrives.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = chunkfs_status(&mnt);
            let packs = st["packs"].as_array().cloned().unwrap_or_default();
            if !packs.is_empty() && packs.iter().all(|p| p["present"] == p["frames"]) {
                eprintln!("{reader}: complete: {}", st["stats"]);
                break;
            }
            assert!(Instant::now() < deadline, "{reader}: not complete: {st}");
            std::thread::sleep(Duration::from_millis(200));
        }
        if reader == "kernel" {
            // The filler unmarks and exits once every pack is complete.
            let deadline = Instant::now() + Duration::from_secs(10);
            while chunkfs_status(&mnt)["daemon_alive"] == true {
                assert!(Instant::now() < deadline, "the filler did not exit");
                std::thread::sleep(Duration::from_millis(100));
            }
            let st = chunkfs_status(&mnt);
            assert_eq!(st["stats"]["ended"], "complete", "{st}");
        }
        let before = reg.settled_requests();
        tree::compare_trees(&f.src, &mnt).unwrap();
        assert_eq!(
            blob_ranges(&reg.requests()[before..]).0,
            0,
            "reads fetch nothing"
        );
        m.unmount();
    }
    drop(reg);
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// digest= pins the image; verify=full fetches it all (no pin); a refused mount leaves nothing.
// ---------------------------------------------------------------------------------------------

#[test]
fn digest_pins_and_verify_full() {
    chunkfs_tests::require_lazy_registry!();
    let f = fixture();
    let dir = scratch("pin");
    let reg = serving_app(&dir, AuthMode::None, f);
    let store = dir.join("store");
    let mnt = mount_point(&dir, "mnt");
    let base = base_options(&reg, &store, None);
    let wrong = format!("{base},digest=sha256:{}", "00".repeat(32));
    let o = chunkfs_mount(&reg.reference("test/app", "v1"), &mnt, &wrong);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("DIGEST MISMATCH"),
        "{}",
        describe(&o)
    );
    assert!(
        fs::read_dir(store.join("mounts")).unwrap().next().is_none(),
        "a refused mount leaves no record in the store"
    );
    chunkfs_tests::mount::assert_nothing_left(&dir);

    let image = chunkfs_distribution::oci::read::open_image(&f.layout, Some("v1")).unwrap();
    let pinned = format!(
        "{base},verify=full,digest={}",
        image.metadata_digest.to_oci()
    );
    let o = chunkfs_mount(&reg.reference("test/app", "v1"), &mnt, &pinned);
    assert!(o.status.success(), "{}", describe(&o));
    let m = Mounted::at(&mnt);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("verify=full: fetched"), "{stderr}");
    assert!(
        fs::read_dir(store.join("pins")).unwrap().next().is_none(),
        "verify=full does not pin the image"
    );
    let st = chunkfs_status(&mnt);
    assert_eq!(
        st["record"]["reader"], "kernel",
        "complete: no daemon: {st}"
    );
    let before = reg.settled_requests();
    tree::compare_trees(&f.src, &mnt).unwrap();
    assert_eq!(blob_ranges(&reg.requests()[before..]).0, 0);
    m.unmount();
    drop(reg);
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Measurements (not a timed test).
// ---------------------------------------------------------------------------------------------

/// `tools/shape-proxy` in front of `port`: 20 ms round trips, 200 Mbit/s each way.
struct Shaped {
    child: std::process::Child,
    port: u16,
}

impl Shaped {
    fn start(port: u16, rtt_ms: u32, mbit: u32) -> Shaped {
        let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let me = listen.local_addr().unwrap().port();
        drop(listen);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/shape-proxy");
        let child = Command::new("python3")
            .arg(script)
            .args(["--listen", &format!("127.0.0.1:{me}")])
            .args(["--target", &format!("127.0.0.1:{port}")])
            .args(["--rtt-ms", &rtt_ms.to_string(), "--mbit", &mbit.to_string()])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", me)).is_err() {
            assert!(Instant::now() < deadline, "shape-proxy did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Shaped { child, port: me }
    }
}

impl Drop for Shaped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drop_caches() {
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Reads every file under `dir`; returns the bytes read.
fn read_all(dir: &Path) -> u64 {
    let mut total = 0;
    for rel in files(dir) {
        let mut buf = Vec::new();
        if let Ok(mut f) = fs::File::open(dir.join(&rel)) {
            total += f.read_to_end(&mut buf).unwrap_or(0) as u64;
        }
    }
    total
}

/// A tree `chroot DIR /bin/true` runs in, plus /usr/lib/python3.* as bulk (a realistic image
/// of which a command reads a few percent).
fn chroot_tree(dir: &Path) {
    for (from, to) in [
        ("/usr/bin/true", "bin/true"),
        ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libc.so.6",
        ),
    ] {
        let dst = dir.join(to);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(fs::canonicalize(from).unwrap(), &dst).unwrap();
    }
    let py = fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python3."))
        });
    if let Some(py) = py {
        fs::create_dir_all(dir.join("usr/lib")).unwrap();
        let o = output(
            Command::new("cp")
                .arg("-a")
                .arg(&py)
                .arg(dir.join("usr/lib")),
        );
        assert!(o.status.success(), "{}", describe(&o));
    }
}

#[test]
#[ignore = "a measurement: CHUNKFS_BIN=target/release/chunkfs cargo test -p chunkfs-tests --test registry_mount measure -- --ignored --nocapture"]
fn measure_lazy_mounts() {
    chunkfs_tests::require_lazy_registry!();
    let dir = scratch("measure");
    let src = dir.join("src");
    chroot_tree(&src);
    let layout = dir.join("layout");
    pack_into_layout(&src, &layout, "v1");
    let pack_bytes: u64 = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .filter(|&l| l > 1 << 20)
        .sum();
    let reg = TestRegistry::start(&dir.join("registry"), AuthMode::None);
    reg.push(&format!("oci:{}:v1", layout.display()), "test/os", "v1");
    let shaped = Shaped::start(reg.port(), 20, 200);
    let links = [
        ("loopback", reg.host()),
        (
            "20 ms RTT, 200 Mbit/s",
            format!("127.0.0.1:{}", shaped.port),
        ),
    ];
    eprintln!("image: {} bytes of packs", pack_bytes);
    let mut n = 0;
    for (link, host) in &links {
        for reader in ["kernel", "fuse"] {
            let mut times = Vec::new();
            let mut chroot_bytes = Vec::new();
            for _ in 0..3 {
                n += 1;
                let store = dir.join(format!("store-{n}"));
                let mnt = mount_point(&dir, &format!("mnt-{n}"));
                let opts = format!(
                    "store={},cert-dir={},reader={reader}",
                    store.display(),
                    reg.cert_dir().display()
                );
                let t = Instant::now();
                let o = chunkfs_mount(&format!("docker://{host}/test/os:v1"), &mnt, &opts);
                times.push(t.elapsed().as_secs_f64() * 1e3);
                assert!(o.status.success(), "{}", describe(&o));
                let m = Mounted::at(&mnt);
                let before = reg.settled_requests();
                let o = output(Command::new("chroot").arg(&mnt).arg("/bin/true"));
                assert!(o.status.success(), "chroot: {}", describe(&o));
                let after = reg.settled_requests();
                chroot_bytes.push(blob_ranges(&reg.requests()[before..after]));
                m.unmount();
                let _ = fs::remove_dir_all(&store);
            }
            eprintln!(
                "{link}, {reader}: mount {:.0} {:.0} {:.0} ms; chroot /bin/true fetched {:?} (requests, bytes)",
                times[0], times[1], times[2], chroot_bytes
            );
        }
    }
    // Cold read-all over the shaped link: lazily, then the same image complete in the store.
    let host = &links[1].1;
    for reader in ["kernel", "fuse"] {
        n += 1;
        let store = dir.join(format!("store-{n}"));
        let mnt = mount_point(&dir, &format!("mnt-{n}"));
        let opts = format!(
            "store={},cert-dir={},reader={reader}",
            store.display(),
            reg.cert_dir().display()
        );
        let o = chunkfs_mount(&format!("docker://{host}/test/os:v1"), &mnt, &opts);
        assert!(o.status.success(), "{}", describe(&o));
        let m = Mounted::at(&mnt);
        drop_caches();
        let t = Instant::now();
        let bytes = read_all(&mnt);
        let lazy = t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(1200));
        eprintln!(
            "{reader} after the read-all: {}",
            chunkfs_status(&mnt)["stats"]
        );
        m.unmount();
        // Complete now: mounted again it needs no daemon (kernel) or fetches nothing (FUSE).
        let o = chunkfs_mount(&format!("docker://{host}/test/os:v1"), &mnt, &opts);
        assert!(o.status.success(), "{}", describe(&o));
        let m = Mounted::at(&mnt);
        drop_caches();
        let t = Instant::now();
        read_all(&mnt);
        let complete = t.elapsed().as_secs_f64();
        m.unmount();
        let link = pack_bytes as f64 / (200e6 / 8.0);
        eprintln!(
            "read-all ({reader}, {bytes} bytes of files): lazily over the link {lazy:.2} s ({:.1} MB/s of packs), complete {complete:.2} s; the link's raw time for the packs {link:.2} s (lazy/raw {:.2})",
            pack_bytes as f64 / lazy / 1e6,
            lazy / link
        );
    }
    // What a pull (four requests of up to 4 MiB in flight) gets from the same link.
    {
        use chunkfs_distribution::registry::{Client, ImageRef};
        let reference = ImageRef::parse(&format!("docker://{host}/test/os:v1")).unwrap();
        let client = Client::new(
            &reference,
            chunkfs_distribution::registry::Options {
                cert_dir: Some(reg.cert_dir()),
                ..chunkfs_distribution::registry::Options::default()
            },
        )
        .unwrap();
        let store = chunkfs_distribution::store::Store::open(&dir.join("store-pull")).unwrap();
        let mut image =
            chunkfs_distribution::remote::open(&store, &client, &reference, None).unwrap();
        let plan = image
            .plan(
                &store,
                &client,
                chunkfs_format::translate::ExtentLayout::Bit48,
            )
            .unwrap();
        let t = Instant::now();
        let r = store.pull(&plan, &client, &mut |_, _| {}).unwrap();
        let took = t.elapsed().as_secs_f64();
        eprintln!(
            "pull over the link: {} bytes in {} requests, {took:.2} s ({:.1} MB/s)",
            r.fetched_bytes,
            r.requests,
            r.fetched_bytes as f64 / took / 1e6
        );
    }
    drop((shaped, reg));
    let _ = fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Unmounting while a read waits for a slow fetch.
// ---------------------------------------------------------------------------------------------

#[test]
fn umount_with_a_fetch_in_flight_never_hangs() {
    chunkfs_tests::require_lazy_registry!();
    let f = fixture();
    let dir = scratch("inflight");
    let reg = serving_app(&dir, AuthMode::None, f);
    let proxy = HttpProxy::start(&reg);
    for reader in ["fuse", "kernel"] {
        let store = dir.join(format!("store-{reader}"));
        let mnt = mount_point(&dir, &format!("mnt-{reader}"));
        let opts = format!("store={},plain-http,reader={reader}", store.display());
        proxy.set_delay(Duration::ZERO);
        let m = mount(&proxy.reference("test/app", "v1"), &mnt, &opts);
        let daemon = daemon_pid(&mnt);
        proxy.set_delay(Duration::from_secs(3));
        let (src, mnt2) = (f.src.clone(), mnt.clone());
        let reading = std::thread::spawn(move || {
            read_exact_or_fail(&src, &mnt2, Path::new("varied/noise-0.bin"))
        });
        std::thread::sleep(Duration::from_millis(500));
        // A process is inside: a plain unmount is refused at once, not hung.
        let t = Instant::now();
        let o = output(Command::new(chunkfs_bin()).arg("umount").arg(&mnt));
        eprintln!("{reader}: umount with a read in flight: {}", describe(&o));
        assert!(!o.status.success());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // Detached: returns at once; the read still gets its answer.
        let t = Instant::now();
        let o = output(Command::new(chunkfs_bin()).args(["umount", "-l"]).arg(&mnt));
        assert!(o.status.success(), "umount -l: {}", describe(&o));
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        std::mem::forget(m);
        let r = reading.join().unwrap();
        eprintln!("{reader}: the read across the detach: {r:?}");
        assert!(r.is_ok(), "never wrong bytes: {r:?}");
        // Its last user gone, the daemon ends.
        let deadline = Instant::now() + Duration::from_secs(10);
        while chunkfs_helper::lazy::status::daemon_alive(daemon) {
            assert!(
                Instant::now() < deadline,
                "{reader}: daemon {daemon} still running"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop((proxy, reg));
    let _ = fs::remove_dir_all(&dir);
}
