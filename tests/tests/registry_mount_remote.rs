//! `chunkfs_distribution::remote`, what every registry mount opens first, against a real
//! registry (docker-registry on loopback with TLS from a test CA): resolving by tag (blobs and
//! the ref kept in the store), by digest from the store with the registry gone, a tag falling
//! back to the store's recorded ref when the registry is unreachable, an ordinary tar image
//! refused with the `chunkfs pack` hint, and a plan that shares frames another image's pack
//! already holds.
//!
//! Skips (saying why) when docker-registry, skopeo, openssl or umoci is missing.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use chunkfs_distribution::registry::{AuthEnv, Client, CredentialOptions, ImageRef, Options};
use chunkfs_distribution::remote::{self, Error};
use chunkfs_distribution::store::Store;
use chunkfs_format::translate::ExtentLayout;
use chunkfs_format::{Classify, ErrorClass};
use chunkfs_tests::oci::run;
use chunkfs_tests::registry::{AuthMode, TestRegistry, pack_into_layout};
use chunkfs_tests::require_registry;

fn options(reg: &TestRegistry) -> Options {
    Options {
        credentials: CredentialOptions {
            creds: None,
            authfile: None,
            env: AuthEnv::default(),
        },
        cert_dir: Some(reg.cert_dir()),
        tls_verify: true,
        plain_http: false,
        limits: chunkfs_helper::lazy::work::lazy_limits(),
    }
}

fn tree(dir: &Path, seed: u64) -> PathBuf {
    let src = dir.join(format!("src-{seed}"));
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), format!("host-{seed}\n")).unwrap();
    std::fs::write(
        src.join("shared.bin"),
        chunkfs_tests::tree::pseudo_random(2 << 20, 1),
    )
    .unwrap();
    std::fs::write(
        src.join("own.bin"),
        chunkfs_tests::tree::pseudo_random(300_000, 100 + seed),
    )
    .unwrap();
    src
}

#[test]
fn resolve_by_tag_by_digest_offline_and_tar_images_refused() {
    require_registry!();
    let dir = chunkfs_tests::scratch_dir("regmount-remote");
    let mut reg = TestRegistry::start(&dir.join("registry"), AuthMode::None);
    let layout = dir.join("layout");
    pack_into_layout(&tree(&dir, 1), &layout, "v1");
    reg.push(&format!("oci:{}:v1", layout.display()), "test/app", "v1");
    let store = Store::open(&dir.join("store")).unwrap();
    let by_tag = ImageRef::parse(&reg.reference("test/app", "v1")).unwrap();
    let client = Client::new(&by_tag, options(&reg)).unwrap();

    // By tag: resolved by the registry; manifest, config and metadata kept; the tag recorded.
    let image = remote::open(&store, &client, &by_tag, None).unwrap();
    assert!(image.offline.is_none());
    assert_eq!(image.pinned.digest(), Some(&image.manifest_digest));
    assert_eq!(image.blobs.len(), 3, "{:?}", image.blobs);
    for b in &image.blobs {
        assert!(store.blob(b, 64 << 20).unwrap().is_some(), "{b} kept");
    }
    let key = format!("{}/test/app:v1", reg.host());
    assert_eq!(
        store.resolve_ref(&key).unwrap(),
        Some(image.manifest_digest)
    );
    assert!(!image.image.chunks.is_empty());
    assert_eq!(image.packs.len(), 1);
    let requests = reg.settled_requests();

    // By digest, from the store: no request at all.
    let by_digest = by_tag.with_digest(image.manifest_digest);
    let again = remote::open(&store, &client, &by_digest, None).unwrap();
    assert_eq!(again.metadata_digest, image.metadata_digest);
    assert!(again.offline.is_none());
    assert_eq!(
        reg.settled_requests(),
        requests,
        "a digest the store has needs no network"
    );
    drop(again);

    // The registry gone: a digest still opens; a tag falls back to the recorded ref, saying
    // why; a tag never resolved has nothing to fall back to.
    reg.stop();
    remote::open(&store, &client, &by_digest, None).unwrap();
    let offline = remote::open(&store, &client, &by_tag, None).unwrap();
    let why = offline.offline.clone().unwrap();
    eprintln!("offline: {why}");
    assert!(why.contains(&image.manifest_digest.to_string()), "{why}");
    assert_eq!(offline.manifest_digest, image.manifest_digest);
    let never = ImageRef::parse(&reg.reference("test/app", "v9")).unwrap();
    let e = remote::open(&store, &client, &never, None).unwrap_err();
    assert!(matches!(e, Error::Offline { .. }), "{e}");
    assert_eq!(e.class(), ErrorClass::Network);
    assert!(e.to_string().contains("chunkfs pull"), "{e}");
    drop((image, offline));
    reg.restart();

    // An ordinary tar image (umoci) is refused, with the conversion named.
    if std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("umoci").is_file()))
    {
        let tar = dir.join("tar-layout");
        let bundle = dir.join("bundle");
        let img = format!("{}:t", tar.display());
        run(Command::new("umoci").args(["init", "--layout"]).arg(&tar));
        run(Command::new("umoci").args(["new", "--image", &img]));
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &img])
            .arg(&bundle));
        std::fs::write(bundle.join("rootfs/hello"), b"hello\n").unwrap();
        run(Command::new("umoci")
            .args(["repack", "--image", &img])
            .arg(&bundle));
        reg.push(&format!("oci:{img}"), "test/tar", "t");
        let tar_ref = ImageRef::parse(&reg.reference("test/tar", "t")).unwrap();
        let tar_client = Client::new(&tar_ref, options(&reg)).unwrap();
        let e = remote::open(&store, &tar_client, &tar_ref, None).unwrap_err();
        eprintln!("tar image: {e}");
        assert!(matches!(e, Error::NotChunkfs { .. }), "{e}");
        assert_eq!(e.class(), ErrorClass::Unsupported);
        assert!(e.to_string().contains("chunkfs pack docker://"), "{e}");
    } else {
        eprintln!("umoci is not installed: the tar image case is skipped");
    }
    drop(reg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plan_reads_chunks_present_in_another_images_pack() {
    require_registry!();
    let dir = chunkfs_tests::scratch_dir("regmount-remote-plan");
    let reg = TestRegistry::start(&dir.join("registry"), AuthMode::None);
    for seed in [1u64, 2] {
        let layout = dir.join(format!("layout-{seed}"));
        pack_into_layout(&tree(&dir, seed), &layout, "v1");
        reg.push(
            &format!("oci:{}:v1", layout.display()),
            &format!("test/app{seed}"),
            "v1",
        );
    }
    let store = Store::open(&dir.join("store")).unwrap();
    let first = ImageRef::parse(&reg.reference("test/app1", "v1")).unwrap();
    let c1 = Client::new(&first, options(&reg)).unwrap();
    let mut a = remote::open(&store, &c1, &first, None).unwrap();
    let plan = a.plan(&store, &c1, ExtentLayout::Bit48).unwrap();
    assert_eq!(plan.stats.fetch as usize, a.image.chunks.len());
    store.pull(&plan, &c1, &mut |_, _| {}).unwrap();
    drop(plan);

    let second = ImageRef::parse(&reg.reference("test/app2", "v1")).unwrap();
    let c2 = Client::new(&second, options(&reg)).unwrap();
    let mut b = remote::open(&store, &c2, &second, None).unwrap();
    let plan = b.plan(&store, &c2, ExtentLayout::Bit48).unwrap();
    eprintln!(
        "second plan: {:?}, {} bytes to fetch",
        plan.stats, plan.missing_bytes
    );
    assert!(plan.stats.shared > 0, "{:?}", plan.stats);
    assert!(plan.stats.fetch > 0, "{:?}", plan.stats);
    assert_eq!(plan.devices.len(), 2, "its own pack and the first image's");
    assert!(
        plan.missing_bytes < 400_000,
        "only the chunks of own.bin and etc/hostname: {}",
        plan.missing_bytes
    );
    drop(reg);
    let _ = std::fs::remove_dir_all(&dir);
}
