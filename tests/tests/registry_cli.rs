//! The `chunkfs` commands on registry images (`pull`, `pack`, `inspect`, `verify`, `rm`, `gc
//! --store`, `verify --store`) against a real CNCF distribution registry (`docker-registry`) on
//! loopback with TLS from a test CA, in each auth mode; images made by `chunkfs pack` (or
//! umoci) and pushed by `skopeo copy`. What the registry served is counted from its access log.
//!
//! Skips (saying why) when docker-registry, skopeo or openssl is missing; the tar-image test
//! also needs umoci and root.

// Fixtures outside #[test] functions too: a panic is how these tests fail.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chunkfs_distribution::oci::layout::Layout;
use chunkfs_distribution::oci::media_type;
use chunkfs_distribution::oci::read::open_image;
use chunkfs_distribution::oci::spec::{self, ContentDescriptor, Index, Platform};
use chunkfs_distribution::registry::{
    AuthEnv, Client, CredentialOptions, ImageRef, Limits, Options,
};
use chunkfs_distribution::remote;
use chunkfs_distribution::store::Store;
use chunkfs_format::digest::Digest;
use chunkfs_format::translate::ExtentLayout;
use chunkfs_tests::mount::chunkfs_bin;
use chunkfs_tests::oci::run;
use chunkfs_tests::registry::{AuthMode, LoggedRequest, TestRegistry, pack_into_layout};
use chunkfs_tests::require_registry;
use chunkfs_tests::tree::{compare_trees, pseudo_random, words};

/// What the store fetches from a pack's end first (distribution's `store::add::TAIL_GUESS`).
const TAIL_GUESS: u64 = 64 << 10;

/// A tree of a few files, most bytes in `big`; `variant` > 0 replaces one file and adds one,
/// so the variants share most chunks.
fn source_tree(dir: &Path, big: usize, variant: u64) -> PathBuf {
    let src = dir.join(format!("src-{variant}"));
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::create_dir_all(src.join("usr/share/doc")).unwrap();
    std::fs::write(src.join("etc/hostname"), format!("host-{variant}\n")).unwrap();
    std::fs::write(src.join("big"), pseudo_random(big, 1)).unwrap();
    std::fs::write(src.join("usr/share/doc/words"), words(400_000, 2)).unwrap();
    std::os::unix::fs::symlink("../../big", src.join("usr/share/link")).unwrap();
    std::fs::write(src.join("replaced"), pseudo_random(200_000, 10 + variant)).unwrap();
    if variant > 0 {
        std::fs::write(src.join("added"), pseudo_random(100_000, 20 + variant)).unwrap();
    }
    src
}

/// Runs `chunkfs` for a test registry: its CA, `creds` if given, the store, and no auth
/// file of the machine.
struct Cli {
    cert_dir: PathBuf,
    store: PathBuf,
    creds: Option<String>,
    home: PathBuf,
}

impl Cli {
    fn new(reg: &TestRegistry, scratch: &Path) -> Self {
        let home = scratch.join("home");
        std::fs::create_dir_all(&home).unwrap();
        Cli {
            cert_dir: reg.cert_dir(),
            store: scratch.join("store"),
            creds: reg.credentials().map(|(u, p)| format!("{u}:{p}")),
            home,
        }
    }

    fn command(&self, args: &[&dyn AsRef<OsStr>]) -> Command {
        let mut c = Command::new(chunkfs_bin());
        c.args(args.iter().map(|a| a.as_ref()))
            .arg("--cert-dir")
            .arg(&self.cert_dir)
            .env("HOME", &self.home)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DOCKER_CONFIG");
        let takes_store = args
            .first()
            .and_then(|a| a.as_ref().to_str())
            .is_some_and(|c| ["pull", "pack", "inspect"].contains(&c));
        if takes_store {
            c.arg(format!("--store={}", self.store.display()));
        }
        if let Some(creds) = &self.creds {
            c.arg("--creds").arg(creds);
        }
        c
    }

    fn run(&self, args: &[&dyn AsRef<OsStr>]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a store command (`verify --store`, `gc --store`, `rm`) on this store.
    fn store_cmd(&self, args: &[&str]) -> Output {
        Command::new(chunkfs_bin())
            .args(args)
            .arg(format!("--store={}", self.store.display()))
            .output()
            .unwrap()
    }
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

/// A clean failure: the exit status, one line on stderr naming every one of `needles`.
fn fails(out: Output, code: i32, needles: &[&str]) -> String {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in {err:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    err
}

/// The manifest digest `tag` has in `layout`.
fn manifest_of(layout: &Path, tag: &str) -> String {
    Layout::open(layout)
        .unwrap()
        .read_index()
        .unwrap()
        .manifests
        .into_iter()
        .find(|d| d.ref_name() == Some(tag))
        .unwrap()
        .digest
}

/// The metadata digest of an image (a `.cfs` or `LAYOUT:TAG`), from `chunkfs inspect --json`.
fn metadata_of(image: &dyn AsRef<OsStr>) -> String {
    let out = ok(Command::new(chunkfs_bin())
        .args(["inspect", "--json"])
        .arg(image)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["metadata_digest"].as_str().unwrap().to_owned()
}

/// Frame bytes of the chunks of `tag` in `layout` (each distinct chunk once), those of chunks
/// not in `except`, and the bytes the store fetches from its packs' ends to read their indexes.
fn frame_bytes(layout: &Path, tag: &str, except: &HashSet<Digest>) -> (u64, u64, u64) {
    let img = open_image(layout, Some(tag)).unwrap();
    let all = img.locations.iter().map(|l| u64::from(l.stored_len)).sum();
    let new = img
        .image
        .chunks
        .iter()
        .zip(&img.locations)
        .filter(|(c, _)| !except.contains(&c.digest))
        .map(|(_, l)| u64::from(l.stored_len))
        .sum();
    let tails = img.packs.iter().map(|p| p.size.min(TAIL_GUESS)).sum();
    (all, new, tails)
}

fn chunk_digests(layout: &Path, tag: &str) -> HashSet<Digest> {
    let img = open_image(layout, Some(tag)).unwrap();
    img.image.chunks.iter().map(|c| c.digest).collect()
}

/// Requests logged since `mark` (an earlier `requests().len()`).
fn since(reg: &TestRegistry, mark: usize) -> Vec<LoggedRequest> {
    reg.requests().split_off(mark)
}

/// Body bytes of the range answers (206) among `requests`.
fn range_bytes(requests: &[LoggedRequest]) -> u64 {
    requests
        .iter()
        .filter(|r| r.status == 206)
        .map(|r| r.bytes)
        .sum()
}

#[test]
fn pull_fetches_only_what_is_missing_and_the_image_plans_offline() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-cli-pull");
    let (la, lb) = (s.join("layout-a"), s.join("layout-b"));
    pack_into_layout(&source_tree(&s, 3 << 20, 0), &la, "v1");
    pack_into_layout(&source_tree(&s, 3 << 20, 1), &lb, "v1");
    let reg = TestRegistry::start(&s.join("registry"), AuthMode::None);
    reg.push(&format!("oci:{}:v1", la.display()), "test/app", "a");
    reg.push(&format!("oci:{}:v1", lb.display()), "test/app", "b");
    let cli = Cli::new(&reg, &s);
    let (ref_a, ref_b) = (
        reg.reference("test/app", "a"),
        reg.reference("test/app", "b"),
    );
    let manifest_a = manifest_of(&la, "v1");

    // The first pull fetches every frame (and each pack's tail, for its index); piped, it
    // prints no progress, only its summary.
    let mark = reg.requests().len();
    let out = cli.run(&[&"pull", &ref_a]);
    assert!(
        out.stderr.is_empty(),
        "progress while piped: {}",
        text(&out.stderr)
    );
    let summary = ok(out);
    eprintln!("{summary}");
    assert!(
        summary.contains(&format!("pulled and pinned manifest {manifest_a}")),
        "{summary}"
    );
    let (all_a, _, tails_a) = frame_bytes(&la, "v1", &HashSet::new());
    assert_eq!(range_bytes(&since(&reg, mark)), all_a + tails_a);
    let store = Store::open(&cli.store).unwrap();
    let pins = store.pins().unwrap();
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].manifest.to_string(), manifest_a);

    // A second pull fetches nothing but the manifest.
    let mark = reg.requests().len();
    let summary = ok(cli.run(&[&"pull", &ref_a]));
    assert!(summary.contains("(0 B of chunk frames"), "{summary}");
    let again = since(&reg, mark);
    assert!(
        again.iter().all(|r| !r.path.contains("/blobs/")),
        "{again:?}"
    );

    // A related image fetches only the frames of the chunks the first one lacks.
    let mark = reg.requests().len();
    let summary = ok(cli.run(&[&"pull", &ref_b]));
    eprintln!("{summary}");
    let (all_b, new_b, tails_b) = frame_bytes(&lb, "v1", &chunk_digests(&la, "v1"));
    let fetched = range_bytes(&since(&reg, mark));
    eprintln!("related image: {fetched} bytes fetched of {all_b} frame bytes ({new_b} new)");
    assert_eq!(fetched, new_b + tails_b);
    assert!(
        new_b * 4 < all_b,
        "{new_b} of {all_b}: the images share little"
    );
    assert!(!summary.contains("(0 B shared"), "{summary}");
    ok(cli.store_cmd(&["verify"]));

    // The registry stops: both images plan from the store alone, nothing to fetch.
    drop(reg);
    for reference in [&ref_a, &ref_b] {
        let image = ImageRef::parse(reference).unwrap();
        let options = Options {
            credentials: CredentialOptions {
                env: AuthEnv::default(),
                ..CredentialOptions::default()
            },
            cert_dir: Some(s.join("registry/pki/client")),
            limits: Limits {
                retries: 0,
                ..Limits::default()
            },
            ..Options::default()
        };
        let client = Client::new(&image, options).unwrap();
        let mut opened = remote::open(&store, &client, &image, None).unwrap();
        assert!(opened.offline.is_some(), "{reference}: not offline?");
        let plan = opened.plan(&store, &client, ExtentLayout::Bit48).unwrap();
        assert_eq!(
            (plan.missing_bytes, plan.stats.fetch),
            (0, 0),
            "{reference}"
        );
    }
    drop(store);
}

#[test]
fn offline_after_pull_and_registry_down() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-cli-offline");
    let layout = s.join("layout");
    let tree = source_tree(&s, 1 << 20, 0);
    pack_into_layout(&tree, &layout, "v1");
    let reg = TestRegistry::start(&s.join("registry"), AuthMode::None);
    reg.push(&format!("oci:{}:v1", layout.display()), "test/app", "v1");
    let cli = Cli::new(&reg, &s);
    let reference = reg.reference("test/app", "v1");
    let never = reg.reference("test/app", "never-pulled");
    ok(cli.run(&[&"pull", &reference]));
    let host = reg.host();
    drop(reg);

    // Pulled: pull, inspect and pack work with the registry down (a warning says so).
    let out = cli.run(&[&"pull", &reference]);
    let err = text(&out.stderr);
    assert!(err.contains("warning") && err.contains(&host), "{err}");
    assert!(ok(out).contains("(0 B of chunk frames"));
    let inspected = ok(cli.run(&[&"inspect", &reference]));
    assert!(inspected.contains("pinned"), "{inspected}");
    let out_cfs = s.join("offline.cfs");
    ok(cli.run(&[&"pack", &reference, &out_cfs]));
    assert_eq!(
        metadata_of(&out_cfs),
        metadata_of(&format!("{}:v1", layout.display()))
    );
    ok(Command::new(chunkfs_bin())
        .arg("verify")
        .arg(&out_cfs)
        .output()
        .unwrap());

    // Never pulled, or checked in the registry itself: exit 4 naming the registry.
    fails(cli.run(&[&"pull", &never]), 4, &[&host, "chunkfs pull"]);
    fails(cli.run(&[&"verify", &reference]), 4, &[&host]);

    // rm unpins offline; gc then frees everything; the store verifies throughout.
    ok(cli.store_cmd(&["verify"]));
    let out = ok(cli.store_cmd(&["rm", &reference]));
    assert!(out.contains("unpinned manifest"), "{out}");
    let out = ok(cli.store_cmd(&["gc"]));
    assert!(
        out.contains("packs") && out.contains("0 packs kept"),
        "{out}"
    );
    ok(cli.store_cmd(&["verify"]));
    assert!(
        Store::open(&cli.store)
            .unwrap()
            .pack_digests()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_interrupted_pull_leaves_a_store_that_verifies() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-cli-sigint");
    let layout = s.join("layout");
    pack_into_layout(&source_tree(&s, 32 << 20, 0), &layout, "v1");
    let reg = TestRegistry::start(&s.join("registry"), AuthMode::None);
    reg.push(&format!("oci:{}:v1", layout.display()), "test/app", "v1");
    // 2 MiB/s per connection: each request of the pull (4 in flight, up to 4 MiB each) takes
    // about 2 s, so the first signal lands after the first round of requests and before the
    // second, and the second signal while the pull is still fetching.
    let slow = Throttle::start(&reg.host(), 2 << 20);
    let reference = format!("docker://127.0.0.1:{}/test/app:v1", slow.port);
    let cli = Cli::new(&reg, &s);
    let (all, _, tails) = frame_bytes(&layout, "v1", &HashSet::new());
    let mut present = Vec::new();
    for delay_ms in [3200, 1000] {
        let child = cli
            .command(&[&"pull", &reference])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{:?}: {err}", out.status);
        assert!(err.contains("stopped by SIGINT"), "{err}");
        ok(cli.store_cmd(&["verify"]));
        let stats = Store::open(&cli.store).unwrap().stats().unwrap();
        eprintln!(
            "SIGINT after {delay_ms} ms: {} of {all} frame bytes present",
            stats.present_bytes
        );
        present.push(stats.present_bytes);
    }
    // Each interrupted pull kept what it had fetched and checked; the first left some to do.
    assert!(present[0] > 0 && present[0] < all, "{present:?} of {all}");
    assert!(present[1] >= present[0], "{present:?}");
    assert!(Store::open(&cli.store).unwrap().pins().unwrap().is_empty());
    let mark = reg.requests().len();
    let summary = ok(cli.run(&[&"pull", &reference]));
    let fetched = range_bytes(&since(&reg, mark));
    eprintln!("the last pull fetched {fetched} bytes: {summary}");
    // Only what was still missing (and no pack tail: the packs were added before).
    assert_eq!(fetched, all - present[1], "tails would be {tails}");
    ok(cli.store_cmd(&["verify"]));
    let store = Store::open(&cli.store).unwrap();
    assert_eq!(store.pins().unwrap().len(), 1);
    let image = ImageRef::parse(&reference).unwrap();
    let client = Client::new(&image, options(&reg)).unwrap();
    let mut opened = remote::open(&store, &client, &image, None).unwrap();
    let plan = opened.plan(&store, &client, ExtentLayout::Bit48).unwrap();
    assert_eq!(plan.missing_bytes, 0);
}

/// A TCP proxy on 127.0.0.1 that passes answers on at `rate` bytes per second per connection.
struct Throttle {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Throttle {
    fn start(upstream: &str, rate: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let (Ok(down), Ok(up)) = (conn, TcpStream::connect(&upstream)) else {
                        continue;
                    };
                    let (down2, up2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                    std::thread::spawn(move || pump(down, up, None));
                    std::thread::spawn(move || pump(up2, down2, Some(rate)));
                }
            })
        };
        Throttle {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies `from` to `to` until either closes, at most `rate` bytes per second.
fn pump(mut from: TcpStream, mut to: TcpStream, rate: Option<u64>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(rate) = rate {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = from.shutdown(std::net::Shutdown::Read);
}

fn options(reg: &TestRegistry) -> Options {
    Options {
        credentials: CredentialOptions {
            env: AuthEnv::default(),
            ..CredentialOptions::default()
        },
        cert_dir: Some(reg.cert_dir()),
        ..Options::default()
    }
}

#[test]
fn pack_inspect_and_verify_with_basic_auth() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-cli-pack");
    let tree = s.join("tree");
    chunkfs_tests::tree::make_every_corner_tree(&tree).unwrap();
    let direct = s.join("direct.cfs");
    ok(Command::new(chunkfs_bin())
        .arg("pack")
        .arg(&tree)
        .arg(&direct)
        .output()
        .unwrap());
    let metadata = metadata_of(&direct);
    let layout = s.join("layout");
    pack_into_layout(&tree, &layout, "v1");
    let reg = TestRegistry::start(&s.join("registry"), AuthMode::Htpasswd);
    reg.push(&format!("oci:{}:v1", layout.display()), "test/app", "v1");
    let cli = Cli::new(&reg, &s);
    let reference = reg.reference("test/app", "v1");
    let manifest = manifest_of(&layout, "v1");

    // Before anything is fetched, inspect says the store holds none of it.
    let v: serde_json::Value =
        serde_json::from_str(&ok(cli.run(&[&"inspect", &"--json", &reference]))).unwrap();
    assert_eq!(v["metadata_digest"], metadata.as_str());
    assert_eq!(v["manifest_digest"], manifest.as_str());
    assert_eq!(v["store"]["present_bytes"], 0);
    assert!(v["store"]["missing_bytes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["store"]["pinned"], false);

    // docker:// -> .cfs: the same metadata digest as packing the tree, and the same tree.
    let out_cfs = s.join("out.cfs");
    let out = ok(cli.run(&[&"pack", &reference, &out_cfs]));
    assert!(out.contains(&metadata), "{out}");
    assert_eq!(metadata_of(&out_cfs), metadata);
    ok(Command::new(chunkfs_bin())
        .arg("verify")
        .arg(&out_cfs)
        .output()
        .unwrap());
    let unpacked = s.join("unpacked");
    ok(Command::new(chunkfs_bin())
        .arg("unpack")
        .arg(&out_cfs)
        .arg(&unpacked)
        .output()
        .unwrap());
    compare_trees(&tree, &unpacked).unwrap_or_else(|d| panic!("differs:\n{d}"));
    // docker:// -> layout.
    let l2 = s.join("layout2");
    ok(cli.run(&[&"pack", &reference, &format!("oci:{}:copy", l2.display())]));
    assert_eq!(metadata_of(&format!("{}:copy", l2.display())), metadata);
    ok(Command::new(chunkfs_bin())
        .arg("verify")
        .arg(format!("{}:copy", l2.display()))
        .output()
        .unwrap());

    // pack fetched the frames into the store (not pinned): inspect says so.
    let v: serde_json::Value =
        serde_json::from_str(&ok(cli.run(&[&"inspect", &"--json", &reference]))).unwrap();
    assert_eq!(v["store"]["missing_bytes"], 0, "{v}");
    assert_eq!(v["store"]["present_bytes"], v["stored_bytes"], "{v}");
    let text_form = ok(cli.run(&[&"inspect", &reference]));
    assert!(
        text_form.contains(&format!("manifest:         {manifest}")),
        "{text_form}"
    );
    assert!(text_form.contains("in the store:     "), "{text_form}");

    let out = ok(cli.run(&[&"verify", &reference]));
    assert!(out.contains(": ok: ") && out.contains(&metadata), "{out}");

    // Wrong or missing credentials, a tag that does not exist, TLS without the CA.
    let host = reg.host();
    let mut wrong = Cli::new(&reg, &s);
    wrong.creds = Some("chunkfs:not-the-password".into());
    let err = fails(wrong.run(&[&"pull", &reference]), 2, &[&host, "rejected"]);
    assert!(!err.contains("not-the-password"), "{err}");
    wrong.creds = None;
    fails(
        wrong.run(&[&"verify", &reference]),
        2,
        &[&host, "credentials"],
    );
    fails(
        cli.run(&[&"pull", &reg.reference("test/app", "nosuch")]),
        2,
        &["test/app", "nosuch", "404"],
    );
    let no_ca = Command::new(chunkfs_bin())
        .args([
            "inspect",
            "--creds",
            "chunkfs:test-password-1",
            "--cert-dir",
        ])
        .arg(s.join("home"))
        .arg(format!("--store={}", cli.store.display()))
        .arg(&reference)
        .output()
        .unwrap();
    fails(no_ca, 2, &[&host, "--cert-dir"]);
    let insecure = Command::new(chunkfs_bin())
        .args([
            "verify",
            "--tls-verify=false",
            "--creds",
            "chunkfs:test-password-1",
        ])
        .arg(&reference)
        .output()
        .unwrap();
    ok(insecure);
}

#[test]
fn verify_and_pull_refuse_a_registry_that_serves_a_corrupt_frame() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-cli-corrupt");
    let layout = s.join("layout");
    pack_into_layout(&source_tree(&s, 1 << 20, 0), &layout, "v1");
    let reg = TestRegistry::start(&s.join("registry"), AuthMode::None);
    reg.push(&format!("oci:{}:v1", layout.display()), "test/app", "v1");
    let cli = Cli::new(&reg, &s);
    let reference = reg.reference("test/app", "v1");
    ok(cli.run(&[&"verify", &reference]));

    // One byte in the middle of a frame of the registry's copy of the pack.
    let img = open_image(&layout, Some("v1")).unwrap();
    let pack = &img.packs[0];
    let file = std::fs::File::open(&pack.path).unwrap();
    let index = chunkfs_distribution::oci::pack::PackIndex::read(&file, &pack.path).unwrap();
    let e = index.entries[index.entries.len() / 2];
    let hex = pack.digest.to_hex();
    let data = s
        .join("registry/storage/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let at = (e.offset + u64::from(e.stored_len) / 2) as usize;
    bytes[at] ^= 0x10;
    std::fs::write(&data, bytes).unwrap();

    fails(
        cli.run(&[&"verify", &reference]),
        1,
        &[
            &format!("pack {}", pack.digest),
            &format!("frame at {}", e.offset),
        ],
    );
    // pull refuses the frame and stores nothing of it; the store stays sound, nothing pinned.
    fails(
        cli.run(&[&"pull", &reference]),
        1,
        &[&pack.digest.to_string()],
    );
    ok(cli.store_cmd(&["verify"]));
    assert!(Store::open(&cli.store).unwrap().pins().unwrap().is_empty());
}

#[test]
fn a_tar_image_from_the_registry_converts_to_its_tree_with_token_auth() {
    require_registry!();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: umoci images with owners need root");
        return;
    }
    let s = chunkfs_tests::scratch_dir("registry-cli-tar");
    let layout = umoci_image(&s);
    let reg = TestRegistry::start(&s.join("registry"), AuthMode::Token);
    reg.push(&format!("oci:{}:t", layout.display()), "test/tar", "t");
    let reference = reg.reference("test/tar", "t");
    // Anonymous pulls get tokens; the user's credentials too.
    let mut cli = Cli::new(&reg, &s);
    cli.creds = None;
    let expected = s.join("reference");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&expected));
    let out_cfs = s.join("out/tar.cfs");
    std::fs::create_dir_all(s.join("out")).unwrap();
    let out = ok(cli.run(&[&"pack", &reference, &out_cfs]));
    assert!(out.contains("container image in a registry"), "{out}");
    let unpacked = s.join("unpacked");
    ok(Command::new(chunkfs_bin())
        .arg("unpack")
        .arg(&out_cfs)
        .arg(&unpacked)
        .output()
        .unwrap());
    compare_trees(&expected.join("rootfs"), &unpacked)
        .unwrap_or_else(|d| panic!("differs from umoci's unpack:\n{d}"));
    let left: Vec<_> = std::fs::read_dir(s.join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["tar.cfs"], "temporary files left next to the output");

    let cli = Cli::new(&reg, &s);
    let l2 = s.join("layout2");
    ok(cli.run(&[&"pack", &reference, &format!("oci:{}:conv", l2.display())]));
    assert_eq!(
        metadata_of(&format!("{}:conv", l2.display())),
        metadata_of(&out_cfs)
    );
    // A tar image where a chunkfs image is needed.
    fails(
        cli.run(&[&"pull", &reference]),
        1,
        &["not a chunkfs image", "chunkfs pack"],
    );
    fails(
        cli.run(&[&"verify", &reference]),
        1,
        &["not a chunkfs image"],
    );
    let mut wrong = Cli::new(&reg, &s);
    wrong.creds = Some("chunkfs:wrong".into());
    fails(wrong.run(&[&"inspect", &reference]), 2, &["rejected"]);
}

/// A two-layer image made with umoci: the second layer deletes a file and changes another.
fn umoci_image(s: &Path) -> PathBuf {
    let layout = s.join("umoci");
    let bundle = s.join("bundle");
    let image = format!("{}:t", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let root = bundle.join("rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/deleted"), b"bye").unwrap();
    std::fs::write(root.join("big"), pseudo_random(1 << 20, 4)).unwrap();
    std::os::unix::fs::symlink("big", root.join("link")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--refresh-bundle", "--image", &image])
        .arg(&bundle));
    std::fs::remove_file(root.join("etc/deleted")).unwrap();
    std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/bash\n").unwrap();
    std::fs::hard_link(root.join("big"), root.join("big-link")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--refresh-bundle", "--image", &image])
        .arg(&bundle));
    layout
}

#[test]
fn platform_picks_from_a_multi_platform_index() {
    require_registry!();
    let s = chunkfs_tests::scratch_dir("registry-cli-multi");
    let layout = s.join("layout");
    pack_into_layout(&source_tree(&s, 1 << 20, 0), &layout, "amd");
    pack_into_layout(&source_tree(&s, 1 << 20, 1), &layout, "arm");
    let entry = |tag: &str, arch: &str| {
        let mut d = Layout::open(&layout)
            .unwrap()
            .read_index()
            .unwrap()
            .manifests
            .into_iter()
            .find(|d| d.ref_name() == Some(tag))
            .unwrap();
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
    let multi = spec::to_json(&Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests: vec![amd, arm.clone()],
        extra: Default::default(),
    });
    let l = Layout::open(&layout).unwrap();
    l.put_blob(&multi).unwrap();
    let mut index = l.read_index().unwrap();
    let mut d = ContentDescriptor::for_bytes(media_type::OCI_INDEX, &multi);
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
    let cli = Cli::new(&reg, &s);
    let reference = reg.reference("test/multi", "v1");

    let v: serde_json::Value = serde_json::from_str(&ok(cli.run(&[
        &"inspect",
        &"--json",
        &"--platform",
        &"linux/arm64",
        &reference,
    ])))
    .unwrap();
    assert_eq!(v["manifest_digest"], arm.digest.as_str());
    assert_eq!(
        v["metadata_digest"],
        metadata_of(&format!("{}:arm", layout.display())).as_str()
    );
    let out = ok(cli.run(&[&"pull", &"--platform", &"linux/arm64", &reference]));
    assert!(out.contains(&arm.digest), "{out}");
    ok(cli.run(&[&"verify", &"--platform", &"linux/arm64", &reference]));
    fails(
        cli.run(&[&"pull", &"--platform", &"linux/s390x", &reference]),
        2,
        &["linux/s390x", "linux/amd64, linux/arm64"],
    );
}
