//! The registry client against a real CNCF distribution registry (`docker-registry`) on
//! loopback with TLS from a test CA, in each auth mode (none, htpasswd, token): chunkfs images
//! that `chunkfs pack` wrote into a layout and `skopeo copy` pushed are resolved by tag and by
//! digest, their manifest, config and metadata fetched and checked, and ranges of their packs
//! fetched: the frames at those ranges decompress to chunks with the sha256 the pack index
//! names. Also: a wrong password, TLS without the CA, and a multi-platform index.
//!
//! Skips (saying why) when docker-registry, skopeo or openssl is missing.

// Fixtures outside #[test] functions too: a panic is how these tests fail.
#![allow(clippy::unwrap_used)]

use chunkfs_format::Classify as _;
use std::path::{Path, PathBuf};

use chunkfs_distribution::oci::layout::Layout;
use chunkfs_distribution::oci::media_type;
use chunkfs_distribution::oci::pack::{PackIndex, TRAILER_LEN, Trailer};
use chunkfs_distribution::oci::select::PlatformSpec;
use chunkfs_distribution::oci::spec::{self, ContentDescriptor, ImageConfig, Index, Platform};
use chunkfs_distribution::registry::{
    AuthEnv, Client, CredentialOptions, Credentials, ImageRef, Options,
};
use chunkfs_format::ErrorClass;
use chunkfs_format::compress::Decoder;
use chunkfs_format::digest::Digest;
use chunkfs_tests::registry::{AuthMode, TestRegistry, pack_into_layout};
use chunkfs_tests::require_registry;

/// A tree of a few files, one of 3 MiB of incompressible bytes (many chunks).
fn source_tree(dir: &Path, seed: u64) -> PathBuf {
    let src = dir.join(format!("src-{seed}"));
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), format!("host-{seed}\n")).unwrap();
    std::fs::write(
        src.join("big"),
        chunkfs_tests::tree::pseudo_random(3 << 20, seed),
    )
    .unwrap();
    std::fs::write(src.join("text"), "chunkfs ".repeat(100_000)).unwrap();
    src
}

/// The manifest descriptor `index.json` tags `tag` with.
fn tagged(layout: &Path, tag: &str) -> ContentDescriptor {
    Layout::open(layout)
        .unwrap()
        .read_index()
        .unwrap()
        .manifests
        .into_iter()
        .find(|d| d.ref_name() == Some(tag))
        .unwrap()
}

fn options(reg: &TestRegistry, creds: Option<(&str, &str)>) -> Options {
    Options {
        credentials: CredentialOptions {
            creds: creds.map(|(u, p)| Credentials {
                username: u.into(),
                password: p.into(),
            }),
            authfile: None,
            // Not the machine's auth files.
            env: AuthEnv::default(),
        },
        cert_dir: Some(reg.cert_dir()),
        tls_verify: true,
        plain_http: false,
        limits: Default::default(),
    }
}

fn pushed(scratch: &Path, mode: AuthMode) -> (TestRegistry, PathBuf) {
    let layout = scratch.join("layout");
    pack_into_layout(&source_tree(scratch, 1), &layout, "v1");
    let reg = TestRegistry::start(&scratch.join("registry"), mode);
    reg.push(&format!("oci:{}:v1", layout.display()), "test/app", "v1");
    (reg, layout)
}

/// Everything a lazy mount needs, fetched and checked through `client`.
fn fetch_and_check(reg: &TestRegistry, client: &Client, layout: &Path) {
    let image = ImageRef::parse(&reg.reference("test/app", "v1")).unwrap();
    client.ping().unwrap();
    let want = tagged(layout, "v1");
    let by_tag = client.resolve(&image, None).unwrap();
    assert_eq!(by_tag.descriptor.digest, want.digest);
    assert!(by_tag.is_chunkfs());
    assert!(by_tag.index.is_none());
    let local = Layout::open(layout).unwrap();
    let blob = |d: &ContentDescriptor| std::fs::read(local.descriptor_path(d).unwrap()).unwrap();
    assert_eq!(by_tag.raw, blob(&want));
    let by_digest = client.resolve(&by_tag.reference, None).unwrap();
    assert_eq!(
        by_digest.reference.to_string(),
        format!("docker://{}/test/app@{}", reg.host(), want.digest)
    );
    assert_eq!(by_digest.raw, by_tag.raw);

    let manifest = &by_tag.manifest;
    let config = client.read_descriptor(&manifest.config, 1 << 20).unwrap();
    let config: ImageConfig = spec::from_json("config", &config).unwrap();
    assert_eq!(config.rootfs.diff_ids.len(), manifest.layers.len());
    let metadata = &manifest.layers[0];
    assert_eq!(metadata.media_type, media_type::METADATA);
    assert_eq!(
        client.read_descriptor(metadata, 64 << 20).unwrap(),
        blob(metadata)
    );

    // Ranges of every pack: the trailer, the index, and frames spread over the pack.
    let mut decoder = Decoder::new().unwrap();
    let mut frames = 0;
    for pack in &manifest.layers[1..] {
        assert_eq!(pack.media_type, media_type::PACK);
        let digest = pack.sha256().unwrap();
        let local_bytes = blob(pack);
        let tail = client
            .read_range(&digest, pack.size, pack.size - TRAILER_LEN..pack.size)
            .unwrap();
        assert_eq!(
            tail,
            local_bytes[local_bytes.len() - TRAILER_LEN as usize..]
        );
        let trailer = Trailer::decode(&tail.try_into().unwrap()).unwrap();
        let index_range = trailer.index_offset..trailer.index_offset + trailer.index_len;
        let index = client
            .read_range(&digest, pack.size, index_range.clone())
            .unwrap();
        assert_eq!(Digest::of(&index), trailer.index_sha256);
        let file = std::fs::File::open(local.descriptor_path(pack).unwrap()).unwrap();
        let entries = PackIndex::read(&file, Path::new("pack")).unwrap().entries;
        let step = (entries.len() / 7).max(1);
        for e in entries.iter().step_by(step) {
            let frame = client
                .read_range(
                    &digest,
                    pack.size,
                    e.offset..e.offset + u64::from(e.stored_len),
                )
                .unwrap();
            let chunk = decoder.decode(&frame, e.raw_len).unwrap();
            assert_eq!(Digest::of(&chunk), e.digest, "frame at {}", e.offset);
            frames += 1;
        }
        // The whole pack, streamed and checked.
        let mut out = Vec::new();
        let n = client
            .copy_blob(&digest, Some(pack.size), 256 << 20, &mut out)
            .unwrap();
        assert_eq!((n, &out), (pack.size, &local_bytes));
    }
    assert!(frames >= 3, "only {frames} frames checked");
    // The registry saw the ranges as ranges.
    let ranged = reg
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/") && r.status == 206)
        .count();
    assert!(
        ranged >= frames + 2,
        "{ranged} range answers in the log:\n{}",
        reg.log()
    );
    let stats = client.stats();
    assert!(
        stats.requests > 0 && stats.bytes > 0 && stats.errors == 0,
        "{stats:?}"
    );
    assert_eq!(stats.in_flight, 0);
}

#[test]
fn no_auth() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-none");
    let (reg, layout) = pushed(&s, AuthMode::None);
    let client = Client::new(
        &ImageRef::parse(&reg.reference("test/app", "v1")).unwrap(),
        options(&reg, None),
    )
    .unwrap();
    fetch_and_check(&reg, &client, &layout);
    assert_eq!(client.stats().auth_round_trips, 0);
    tls_checks(&reg, &s);
}

#[test]
fn htpasswd_auth() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-htpasswd");
    let (reg, layout) = pushed(&s, AuthMode::Htpasswd);
    let image = ImageRef::parse(&reg.reference("test/app", "v1")).unwrap();
    let client = Client::new(&image, options(&reg, reg.credentials())).unwrap();
    fetch_and_check(&reg, &client, &layout);
    // One 401 taught the client Basic; every later request carried the credentials.
    assert_eq!(client.stats().auth_round_trips, 1);
    wrong_password(&reg, &image);
    let anonymous = Client::new(&image, options(&reg, None)).unwrap();
    let e = anonymous.resolve(&image, None).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Usage, "{e}");
    assert!(e.to_string().contains("requires credentials"), "{e}");
}

#[test]
fn token_auth() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-token");
    let (reg, layout) = pushed(&s, AuthMode::Token);
    let image = ImageRef::parse(&reg.reference("test/app", "v1")).unwrap();
    let before = reg.token_requests();
    let client = Client::new(&image, options(&reg, reg.credentials())).unwrap();
    fetch_and_check(&reg, &client, &layout);
    // One token for the repository's pull scope, cached for every later request.
    assert_eq!(reg.token_requests() - before, 1);
    wrong_password(&reg, &image);
    // The token server gives anonymous clients pull tokens.
    let anonymous = Client::new(&image, options(&reg, None)).unwrap();
    let resolved = anonymous.resolve(&image, None).unwrap();
    assert_eq!(resolved.descriptor.digest, tagged(&layout, "v1").digest);
}

fn wrong_password(reg: &TestRegistry, image: &ImageRef) {
    let client = Client::new(image, options(reg, Some(("chunkfs", "not-the-password")))).unwrap();
    let e = client.resolve(image, None).unwrap_err();
    let text = e.to_string();
    eprintln!("wrong password: {text}");
    assert_eq!(e.class(), ErrorClass::Usage, "{text}");
    assert!(text.contains(&reg.host()), "{text}");
    assert!(text.contains("rejected"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
}

/// TLS without the CA fails clearly; with tls_verify off it works.
fn tls_checks(reg: &TestRegistry, scratch: &Path) {
    let image = ImageRef::parse(&reg.reference("test/app", "v1")).unwrap();
    let empty = scratch.join("no-certs");
    std::fs::create_dir_all(&empty).unwrap();
    let mut o = options(reg, None);
    o.cert_dir = Some(empty);
    let e = Client::new(&image, o.clone()).unwrap().ping().unwrap_err();
    let text = e.to_string();
    eprintln!("without the CA: {text}");
    assert_eq!(e.class(), ErrorClass::Usage, "{text}");
    assert!(text.contains("TLS with 127.0.0.1:"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(text.contains("--cert-dir"), "{text}");
    o.tls_verify = false;
    Client::new(&image, o).unwrap().ping().unwrap();
}

#[test]
fn a_multi_platform_index_picks_the_platform() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-multi");
    let layout = s.join("layout");
    pack_into_layout(&source_tree(&s, 1), &layout, "amd");
    pack_into_layout(&source_tree(&s, 2), &layout, "arm");
    let entry = |tag: &str, arch: &str| {
        let mut d = tagged(&layout, tag);
        d.annotations.clear();
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
            extra: Default::default(),
        });
        d
    };
    let (amd, arm) = (entry("amd", "amd64"), entry("arm", "arm64"));
    let multi = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![amd.clone(), arm.clone()],
        extra: Default::default(),
    };
    let bytes = spec::to_json(&multi);
    let l = Layout::open(&layout).unwrap();
    l.put_blob(&bytes).unwrap();
    let mut index = l.read_index().unwrap();
    let mut d = ContentDescriptor::for_bytes(media_type::OCI_INDEX, &bytes);
    d.annotations
        .insert(chunkfs_distribution::oci::REF_NAME.into(), "multi".into());
    index.manifests.push(d);
    l.write_index(&index).unwrap();
    drop(l);

    let reg = TestRegistry::start(&s.join("registry"), AuthMode::None);
    reg.push_all(
        &format!("oci:{}:multi", layout.display()),
        "test/multi",
        "v1",
    );
    let image = ImageRef::parse(&reg.reference("test/multi", "v1")).unwrap();
    let client = Client::new(&image, options(&reg, None)).unwrap();
    let pick = |p: &str| client.resolve(&image, Some(&PlatformSpec::parse(p).unwrap()));
    let got = pick("linux/arm64").unwrap();
    assert_eq!(got.descriptor.digest, arm.digest);
    // skopeo --all may re-encode the index (so not our digest), but it lists both images.
    let pushed_index = spec::parse_index("index", &got.index.as_ref().unwrap().raw).unwrap();
    let listed: Vec<_> = pushed_index.manifests.iter().map(|d| &d.digest).collect();
    assert_eq!(listed, [&amd.digest, &arm.digest]);
    assert!(got.is_chunkfs());
    assert_eq!(pick("linux/amd64").unwrap().descriptor.digest, amd.digest);
    let e = pick("linux/s390x").unwrap_err();
    assert_eq!(e.class(), ErrorClass::Usage, "{e}");
    assert!(e.to_string().contains("linux/amd64, linux/arm64"), "{e}");
    // The metadata of the chosen image is its own.
    let arm_meta = &got.manifest.layers[0];
    let l = Layout::open(&layout).unwrap();
    assert_eq!(
        client.read_descriptor(arm_meta, 64 << 20).unwrap(),
        std::fs::read(l.descriptor_path(arm_meta).unwrap()).unwrap()
    );
}

/// Numbers for docs/registry.md, not a timed test: `CHUNKFS_REGISTRY_MODE=none|htpasswd|token
/// cargo test -p chunkfs-tests --test registry_client measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_loopback() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-measure");
    let mode = match std::env::var("CHUNKFS_REGISTRY_MODE").as_deref() {
        Ok("none") => AuthMode::None,
        Ok("htpasswd") => AuthMode::Htpasswd,
        _ => AuthMode::Token,
    };
    let (reg, _) = pushed(&s, mode);
    let image = ImageRef::parse(&reg.reference("test/app", "v1")).unwrap();
    let t = std::time::Instant::now();
    let client = Client::new(&image, options(&reg, reg.credentials())).unwrap();
    let resolved = client.resolve(&image, None).unwrap();
    let meta = client
        .read_descriptor(&resolved.manifest.layers[0], 64 << 20)
        .unwrap();
    eprintln!(
        "cold resolve + metadata ({} bytes), {mode:?} auth, TLS: {:.1} ms, {} requests",
        meta.len(),
        t.elapsed().as_secs_f64() * 1e3,
        client.stats().requests
    );
    let pack = &resolved.manifest.layers[1];
    let digest = pack.sha256().unwrap();
    let t = std::time::Instant::now();
    let mut out = Vec::new();
    client
        .copy_blob(&digest, Some(pack.size), 256 << 20, &mut out)
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "whole pack streamed: {} bytes in {:.1} ms ({:.0} MiB/s)",
        pack.size,
        secs * 1e3,
        pack.size as f64 / secs / 1048576.0
    );
    for threads in [1u64, 8] {
        let per = 200u64;
        let t = std::time::Instant::now();
        std::thread::scope(|sc| {
            for i in 0..threads {
                let (client, digest) = (&client, &digest);
                sc.spawn(move || {
                    for j in 0..per {
                        let at = ((i * per + j) * 65536) % (pack.size - 65536);
                        client
                            .read_range(digest, pack.size, at..at + 65536)
                            .unwrap();
                    }
                });
            }
        });
        let secs = t.elapsed().as_secs_f64();
        let n = threads * per;
        eprintln!(
            "{n} ranges of 64 KiB from {threads} thread(s): {:.0} requests/s, {:.2} ms each on average",
            n as f64 / secs,
            secs * 1e3 / (n as f64 / threads as f64)
        );
    }
    eprintln!("{:?}", client.stats());
}
