//! The registry and store commands without a registry and without root: usage errors of
//! `docker://` references and of the registry flags, with their exit statuses; `gc --store`,
//! `verify --store`, `store config` and `rm docker://` on a store filled by the library from
//! a local layout; damaged store files named by `verify --store`.
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chunkfs_distribution::oci::read::open_image;
use chunkfs_distribution::source::LayoutSource;
use chunkfs_distribution::store::{ImageSpec, Store};
use chunkfs_format::digest::Digest;
use chunkfs_format::translate::ExtentLayout;

const BIN: &str = env!("CARGO_BIN_EXE_chunkfs");

fn chunkfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(BIN)
        .args(args.iter().map(|a| a.as_ref()))
        // No auth file of the machine's user is read.
        .env("HOME", "/nonexistent")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts a clean failure of ours: the exit code, one line on stderr naming `needle`.
fn fails(out: Output, code: i32, needle: &str) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    err
}

/// Asserts that clap refused the arguments (exit 2) with a message naming `needle`.
fn refused_by_clap(out: Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

#[test]
fn malformed_references_and_flags_are_usage_errors() {
    let s = chunkfs_tests::scratch_dir("cli-registry-usage");
    let store = s.join("store");
    let st = format!("--store={}", store.display());
    let image = s.join("x.cfs");
    for (args, needle) in [
        (vec!["pull", "docker://"], "repository name is missing"),
        (
            vec!["pull", "docker://127.0.0.1:5000/Test/app:v1"],
            "docker://127.0.0.1:5000/Test/app:v1",
        ),
        (vec!["pull", "docker://h.example/app:bad:tag"], "bad:tag"),
        (
            vec!["pull", "docker://h.example/app@sha256:12"],
            "sha256:12",
        ),
        (vec!["inspect", "docker://h.example/a b:v1"], "a b"),
        (vec!["verify", "docker://h.example:99999/app"], "99999"),
        (vec!["pack", "docker://h.example/"], "docker://h.example/"),
    ] {
        let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|s| s as _).collect();
        if args[0] == "pack" {
            a.push(&image);
        }
        if args[0] != "verify" {
            a.push(&st);
        }
        let err = fails(chunkfs(&a), 2, needle);
        assert!(err.contains("is not a registry reference"), "{err}");
    }
    // What a command does not take is refused by name.
    fails(
        chunkfs(&[&"pull", &image, &st]),
        2,
        "an image file; expected a registry image",
    );
    fails(
        chunkfs(&[&"unpack", &"docker://h.example/app:v1", &s.join("out")]),
        2,
        "docker://h.example/app:v1: an image in a registry; expected",
    );
    fails(
        chunkfs(&[&"pack", &s, &"docker://h.example/app:v1"]),
        2,
        "an image in a registry; expected a .cfs file or LAYOUT:TAG",
    );
    fails(
        chunkfs(&[&"descriptor", &"docker://h.example/app:v1", &s.join("d")]),
        2,
        "an image in a registry",
    );
    fails(
        chunkfs(&[&"gc", &"docker://h.example/app:v1"]),
        2,
        "or --store",
    );
    fails(
        chunkfs(&[&"verify", &st, &"docker://h.example/app:v1"]),
        2,
        "not both",
    );
    fails(chunkfs(&[&"gc", &s, &st]), 2, "not both");
    // `--store REF`: the reference taken for the directory is said so.
    refused_by_clap(
        chunkfs(&[&"pull", &"--store", &"docker://h.example/app:v1"]),
        "<REFERENCE>",
    );
    fails(
        chunkfs(&[&"gc", &"--store", &"docker://h.example/app:v1"]),
        2,
        "--store docker://h.example/app:v1: expected a directory",
    );
    fails(
        chunkfs(&[
            &"pull",
            &"--platform",
            &"linux",
            &"docker://h.example/app:v1",
            &st,
        ]),
        2,
        "--platform \"linux\"",
    );
    fails(
        chunkfs(&[&"inspect", &"--platform", &"linux/amd64", &image]),
        2,
        "apply to docker:// images",
    );
    // Flags clap refuses.
    refused_by_clap(
        chunkfs(&[&"pull", &"--tls-verify=no", &"docker://h.example/app:v1"]),
        "--tls-verify",
    );
    refused_by_clap(
        chunkfs(&[&"pull", &"--tls-verify=False", &"docker://h.example/app:v1"]),
        "--tls-verify",
    );
    refused_by_clap(
        chunkfs(&[
            &"pull",
            &"--creds",
            &"nopassword",
            &"docker://h.example/app:v1",
        ]),
        "USER:PASS",
    );
    refused_by_clap(
        chunkfs(&[&"pull", &"--insecure", &"docker://h.example/app:v1"]),
        "--insecure",
    );
    refused_by_clap(chunkfs(&[&"pull"]), "<REFERENCE>");
    refused_by_clap(
        chunkfs(&[&"store", &"config", &"--max-size", &"lots", &st]),
        "--max-size",
    );
    // Nothing above made a store.
    assert!(!store.exists());
    // Every registry command's help has examples and the exit statuses.
    for cmd in ["pull", "pack", "inspect", "verify", "gc", "rm"] {
        let help = ok(chunkfs(&[&cmd, &"--help"]));
        assert!(help.contains("docker://"), "{cmd}: {help}");
        assert!(
            help.contains("4 a registry could not be reached"),
            "{cmd}: {help}"
        );
        assert!(
            help.contains("Examples:") || help.contains("Example:"),
            "{cmd}"
        );
    }
    let help = ok(chunkfs(&[&"store", &"--help"]));
    assert!(
        help.contains("Examples:") && help.contains("Exit status"),
        "{help}"
    );
    let help = ok(chunkfs(&[&"store", &"config", &"--help"]));
    assert!(
        help.contains("--max-size") && help.contains("Exit status"),
        "{help}"
    );
    fs::remove_dir_all(&s).unwrap();
}

#[test]
fn unreadable_auth_file_and_unreachable_registry() {
    let s = chunkfs_tests::scratch_dir("cli-registry-net");
    let st = format!("--store={}", s.join("store").display());
    // A named auth file that does not exist is an input that cannot be read.
    fails(
        chunkfs(&[
            &"pull",
            &"--authfile",
            &s.join("auth.json"),
            &"docker://127.0.0.1:1/test/app:v1",
            &st,
        ]),
        3,
        "auth.json",
    );
    // Nothing listens on port 1: after the retries, exit 4 naming the reference.
    let started = std::time::Instant::now();
    let err = fails(
        chunkfs(&[&"verify", &"docker://127.0.0.1:1/test/app:v1"]),
        4,
        "docker://127.0.0.1:1/test/app",
    );
    assert!(err.contains("127.0.0.1:1"), "{err}");
    eprintln!("unreachable registry reported in {:?}", started.elapsed());
    // pull: the store has no copy to fall back on.
    fails(
        chunkfs(&[&"pull", &"docker://127.0.0.1:1/test/app:v1", &st]),
        4,
        "chunkfs pull",
    );
    fs::remove_dir_all(&s).unwrap();
}

/// A tree of a few hundred KB; `variant` changes one file.
fn tree(dir: &Path, variant: u64) -> PathBuf {
    let root = dir.join(format!("tree{variant}"));
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), format!("box{variant}\n")).unwrap();
    fs::write(
        root.join("shared"),
        chunkfs_tests::tree::pseudo_random(400_000, 1),
    )
    .unwrap();
    fs::write(
        root.join("own"),
        chunkfs_tests::tree::pseudo_random(300_000, 100 + variant),
    )
    .unwrap();
    root
}

/// What the library's store needs of an image tagged `tag` in `layout`, with `reference`.
struct LocalImage {
    reference: String,
    manifest: Digest,
    blobs: Vec<Digest>,
    packs: Vec<(Digest, u64)>,
    chunks: Vec<chunkfs_format::model::ChunkInfo>,
}

impl LocalImage {
    /// A `reference` ending in `@` gets the manifest's digest.
    fn open(layout: &Path, tag: &str, reference: &str) -> Self {
        let img = open_image(layout, Some(tag)).unwrap();
        let manifest = Digest::from_oci(&img.manifest.digest).unwrap();
        LocalImage {
            reference: match reference.strip_suffix('@') {
                Some(r) => format!("{r}@{manifest}"),
                None => reference.into(),
            },
            manifest,
            blobs: vec![manifest, img.metadata_digest],
            packs: img.packs.iter().map(|p| (p.digest, p.size)).collect(),
            chunks: img.image.chunks.clone(),
        }
    }

    /// Stores its blobs and plans it; `pull`: fetches every frame and pins it.
    fn add(&self, store: &Store, layout: &Path, pull: bool) {
        let source = LayoutSource::new(layout);
        let setup = store.setup().unwrap();
        for b in &self.blobs {
            let bytes = fs::read(layout.join("blobs/sha256").join(b.to_hex())).unwrap();
            store.put_blob(b, &bytes).unwrap();
        }
        let spec = ImageSpec {
            reference: &self.reference,
            manifest: self.manifest,
            blobs: &self.blobs,
            packs: &self.packs,
            chunks: &self.chunks,
            extents: ExtentLayout::Bit48,
        };
        let plan = store.plan(&spec, &source).unwrap();
        drop(setup);
        if pull {
            store.pull(&plan, &source, &mut |_, _| {}).unwrap();
        } else {
            // Half the frames, as a mount that read some files would leave them.
            for p in &plan.devices {
                p.ensure(p.base()..p.base() + p.blob_len() / 2, &source)
                    .unwrap();
            }
        }
    }
}

#[test]
fn store_gc_verify_config_and_unpin() {
    let s = chunkfs_tests::scratch_dir("cli-store");
    let (la, lb) = (s.join("layout-a"), s.join("layout-b"));
    ok(chunkfs(&[
        &"pack",
        &tree(&s, 1),
        &format!("oci:{}:v1", la.display()),
    ]));
    ok(chunkfs(&[
        &"pack",
        &tree(&s, 2),
        &format!("oci:{}:v1", lb.display()),
    ]));
    // inspect of an image in a layout: its manifest, and the statistics a .cfs gets.
    let tagged = format!("{}:v1", la.display());
    let v: serde_json::Value =
        serde_json::from_str(&ok(chunkfs(&[&"inspect", &"--json", &tagged]))).unwrap();
    let img = open_image(&la, Some("v1")).unwrap();
    assert_eq!(
        v["metadata_digest"],
        img.metadata_digest.to_string().as_str()
    );
    assert_eq!(v["manifest_digest"], img.manifest.digest.as_str());
    assert_eq!(v["unique_chunks"], img.image.chunks.len());
    let frames: u64 = img.locations.iter().map(|l| u64::from(l.stored_len)).sum();
    assert_eq!(v["stored_bytes"], frames);
    drop(img);
    let out = ok(chunkfs(&[&"inspect", &tagged]));
    assert!(
        out.contains(&format!("image:            {tagged}")),
        "{out}"
    );
    assert!(out.contains("manifest:         sha256:"), "{out}");

    let dir = s.join("store");
    let store = Store::open(&dir).unwrap();
    let a = LocalImage::open(&la, "v1", "docker://127.0.0.1:5000/test/app@");
    let b = LocalImage::open(&lb, "v1", "oci:b");
    a.add(&store, &la, true);
    b.add(&store, &lb, false);
    let st = format!("--store={}", dir.display());

    let out = ok(chunkfs(&[&"verify", &st]));
    assert!(out.contains(": ok: "), "{out}");
    assert!(
        out.contains(&format!("{} packs", a.packs.len() + b.packs.len())),
        "{out}"
    );
    let out = ok(chunkfs(&[&"store", &"config", &st]));
    assert!(out.contains("max-size:    none"), "{out}");
    assert!(out.contains("pins:        1"), "{out}");

    // gc keeps the pinned image and frees the other one (its plan's record died with it).
    let b_pack = dir.join("packs/sha256").join(b.packs[0].0.to_hex());
    let a_pack = dir.join("packs/sha256").join(a.packs[0].0.to_hex());
    let dry = ok(chunkfs(&[&"gc", &st, &"--dry-run"]));
    assert!(
        dry.contains(&format!("would remove {}", b_pack.display())),
        "{dry}"
    );
    assert!(!dry.contains(&a.packs[0].0.to_hex()), "{dry}");
    assert!(b_pack.exists(), "a dry run removed {}", b_pack.display());
    let out = ok(chunkfs(&[&"gc", &"--store", &dir]));
    assert!(
        out.contains(&format!("removed 2 blobs, {} packs", b.packs.len())),
        "{out}"
    );
    assert!(
        out.contains(&format!("{} packs kept", a.packs.len())),
        "{out}"
    );
    assert!(!b_pack.exists() && a_pack.exists());
    let out = ok(chunkfs(&[&"gc", &st]));
    assert!(out.contains("removed nothing"), "{out}");

    let out = ok(chunkfs(&[&"store", &"config", &st, &"--max-size", &"64M"]));
    assert!(
        out.contains("max-size:    64.00 MiB (67108864 bytes)"),
        "{out}"
    );
    assert_eq!(Store::open(&dir).unwrap().config().max_size, Some(64 << 20));
    ok(chunkfs(&[&"store", &"config", &st, &"--max-size", &"none"]));
    assert_eq!(Store::open(&dir).unwrap().config().max_size, None);

    // Damage: a byte of a present frame, and a blob. verify names both files and exits 1.
    let entry = store.pack(&a.packs[0].0).unwrap().unwrap().entries()[1];
    let pack = store.pack(&a.packs[0].0).unwrap().unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a_pack)
        .unwrap();
    let at = pack.base() + entry.offset + u64::from(entry.stored_len) / 2;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    drop(f);
    let blob = dir.join("blobs/sha256").join(a.blobs[1].to_hex());
    let mut bytes = fs::read(&blob).unwrap();
    bytes[0] ^= 1;
    fs::write(&blob, bytes).unwrap();
    let out = chunkfs(&[&"verify", &st]);
    let err = fails(
        Output {
            status: out.status,
            stdout: Vec::new(),
            stderr: out.stderr.clone(),
        },
        1,
        "2 problem(s)",
    );
    assert!(err.contains(&blob.display().to_string()), "{err}");
    let listed = text(&out.stdout);
    assert!(
        listed.contains(&format!("{}: frame 1 at", a_pack.display())),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("{}: ", blob.display())),
        "{listed}"
    );
    // gc does not remove what a pin names, damaged or not.
    ok(chunkfs(&[&"gc", &st]));
    assert!(a_pack.exists() && blob.exists());

    // rm docker:// finds the pin through the store's ref, offline.
    store
        .set_ref("127.0.0.1:5000/test/app:v1", &a.manifest)
        .unwrap();
    fails(
        chunkfs(&[&"rm", &"docker://127.0.0.1:5000/test/app:v2", &st]),
        2,
        "not pulled into the store",
    );
    fails(
        chunkfs(&[&"rm", &"docker://127.0.0.1:5000/other/app:v1", &st]),
        2,
        "not pulled",
    );
    let out = ok(chunkfs(&[
        &"rm",
        &"docker://127.0.0.1:5000/test/app:v1",
        &st,
    ]));
    assert!(
        out.contains(&format!("unpinned manifest {}", a.manifest)),
        "{out}"
    );
    assert!(store.pins().unwrap().is_empty());
    fails(
        chunkfs(&[&"rm", &"docker://127.0.0.1:5000/test/app:v1", &st]),
        2,
        "not pinned",
    );
    let out = ok(chunkfs(&[&"gc", &st]));
    assert!(!a_pack.exists(), "{out}");
    assert!(store.pack_digests().unwrap().is_empty());
    ok(chunkfs(&[&"verify", &st]));
    fails(
        chunkfs(&[
            &"verify",
            &format!("--store={}", s.join("nostore").display()),
        ]),
        3,
        "no chunkfs store there",
    );
    drop(store);
    fs::remove_dir_all(&s).unwrap();
}
