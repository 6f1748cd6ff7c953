//! The corruption matrix (issue 6, item 3) for everything that needs no mount: each damaged
//! copy of a packed `.cfs` (`chunkfs_tests::corrupt::cfs_cases`) goes through
//!
//! - `chunkfs verify`: exit 1 naming a damaged region (exit 0 only for bytes after the image);
//! - `chunkfs unpack`: exit 1 leaving nothing behind, or exit 0 with exactly the source tree;
//!   it must fail whenever the damage is in bytes it depends on (header, metadata, index,
//!   frames), and may succeed when the damage is in bytes it never reads (EROFS areas, padding);
//! - the FUSE reader's library as a mount hands it the image: the checks a mount makes first
//!   (`Cfs::open`, `verify::check_structure`) refuse it naming a region, or every file read
//!   through `Reader::read` is either an error (EIO) or exactly the source's bytes.
//!
//! The same for OCI layouts: each blob deleted, altered or truncated, `index.json` naming a
//! missing manifest or damaged, through `verify --oci`, `verify LAYOUT:TAG` and `unpack`.
//!
//! `CHUNKFS_CORRUPTION_PER_REGION` (default 12) sets how many random positions and lengths are
//! tried per region; the kernel's EROFS mount of the same cases is in
//! `tests/tests/corruption_mount.rs` (root).
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use chunkfs_format::cfs::header::Header;
use chunkfs_format::cfs::read::Cfs;
use chunkfs_reader::{Config, DigestSource, Reader};
use chunkfs_tests::corrupt::{
    Case, Content, Expected, cfs_cases, expected_contents, make_matrix_tree,
};
use chunkfs_tests::tree::compare_trees;

const BIN: &str = env!("CARGO_BIN_EXE_chunkfs");

/// A scratch directory removed when the test ends, passed or failed.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        Self(chunkfs_tests::scratch_dir(name))
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn chunkfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(BIN)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap()
}

fn per_region() -> usize {
    std::env::var("CHUNKFS_CORRUPTION_PER_REGION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// Counts of outcomes, for the summary line.
#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    verify_refused: usize,
    unpack_refused: usize,
    unpack_identical: usize,
    mount_refused: usize,
    served_files: usize,
    eio_files: usize,
}

/// Regions whose bytes unpack depends on: damage there must make it fail.
const UNPACK_READS: [&str; 4] = ["header", "metadata", "chunk index", "chunk frame"];

/// Runs one case through verify, unpack and the reader; returns what is wrong, if anything.
fn check_case(
    case: &Case,
    src: &Path,
    expected: &[(PathBuf, Expected)],
    dir: &Path,
    tally: &Mutex<Tally>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let path = dir.join("image.cfs");
    fs::write(&path, &case.bytes).unwrap();
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    // verify
    let v = chunkfs(&[&"verify", &"-j1", &path]);
    let err = stderr(&v);
    if case.needles.is_empty() {
        if !v.status.success() {
            problems.push(format!("verify refused an intact image: {err}"));
        }
    } else if v.status.code() != Some(1) {
        problems.push(format!("verify exited {:?}: {err}", v.status.code()));
    } else if !case.needles.iter().any(|n| err.contains(n)) {
        problems.push(format!("verify names none of {:?}: {err}", case.needles));
    } else if err.trim_end().lines().count() != 1 || err.contains("panicked") {
        problems.push(format!("verify's message is not one clean line: {err}"));
    }

    // unpack
    let out = dir.join("out");
    let u = chunkfs(&[&"unpack", &path, &out]);
    let must_fail = case
        .regions
        .iter()
        .any(|r| UNPACK_READS.contains(r) || *r == "truncation");
    let (mut unpack_refused, mut unpack_identical) = (false, false);
    match u.status.code() {
        Some(0) => match compare_trees(src, &out) {
            Ok(()) if must_fail => problems.push("unpack succeeded on damaged data".into()),
            Ok(()) => unpack_identical = true,
            Err(diff) => problems.push(format!("unpack wrote a different tree:\n{diff}")),
        },
        Some(1) => {
            unpack_refused = true;
            if out.exists() {
                problems.push("a failed unpack left its target behind".into());
            }
            if stderr(&u).contains("panicked") {
                problems.push(format!("unpack panicked: {}", stderr(&u)));
            }
        }
        other => problems.push(format!("unpack exited {other:?}: {}", stderr(&u))),
    }
    let _ = fs::remove_dir_all(&out);
    // Nothing but the image (and the removed target) in the case's directory.
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    if left.len() != 1 {
        problems.push(format!("unpack left files next to its target: {left:?}"));
    }

    // The reader, after the checks a mount makes.
    let (mount_refused, served, eio) = match mount_checks(&path) {
        Err(e) => {
            if !case.needles.is_empty() && !case.needles.iter().any(|n| e.contains(n)) {
                problems.push(format!(
                    "the mount checks name none of {:?}: {e}",
                    case.needles
                ));
            }
            if case.needles.is_empty() {
                problems.push(format!("the mount checks refused an intact image: {e}"));
            }
            (true, 0, 0)
        }
        Ok(index) => match read_all(&path, index, expected) {
            Ok((served, eio)) => (false, served, eio),
            Err(e) => {
                problems.push(e);
                (false, 0, 0)
            }
        },
    };
    let mut t = tally.lock().unwrap();
    t.cases += 1;
    t.verify_refused += usize::from(v.status.code() == Some(1));
    t.unpack_refused += usize::from(unpack_refused);
    t.unpack_identical += usize::from(unpack_identical);
    t.mount_refused += usize::from(mount_refused);
    t.served_files += served;
    t.eio_files += eio;
    problems
}

/// What a mount checks before serving a `.cfs` (docs/descriptor.md §8): header, metadata and
/// chunk index digests and invariants, padding, and the embedded descriptor against the one
/// derived from the metadata. Returns the chunk index, the reader's digest table.
fn mount_checks(path: &Path) -> Result<Vec<u8>, String> {
    let cfs = Cfs::open(path).map_err(|e| e.to_string())?;
    chunkfs_format::cfs::verify::check_structure(&cfs).map_err(|e| e.to_string())?;
    Ok(cfs.region(cfs.header().index).to_vec())
}

/// Reads every expected file and symlink through the reader; returns (files served, files
/// failed with an error), or what was served wrong.
fn read_all(
    path: &Path,
    index: Vec<u8>,
    expected: &[(PathBuf, Expected)],
) -> Result<(usize, usize), String> {
    let config = Config::new(
        path,
        vec![],
        vec![DigestSource {
            bytes: index,
            device: None,
        }],
    );
    read_all_with(config, expected)
}

/// [`read_all`] for any reader configuration.
fn read_all_with(
    mut config: Config,
    expected: &[(PathBuf, Expected)],
) -> Result<(usize, usize), String> {
    config.cache_bytes = 1 << 20;
    let reader = Reader::open(config).map_err(|e| format!("Reader::open after the checks: {e}"))?;
    let desc = reader.descriptor();
    let (mut served, mut eio) = (0, 0);
    for (rel, want) in expected {
        let mut node = desc.root();
        for c in rel.iter() {
            let e = node
                .lookup(c.as_encoded_bytes())
                .ok_or_else(|| format!("{}: not found in the descriptor", rel.display()))?;
            node = desc
                .inode(e.nid)
                .ok_or_else(|| format!("{}: nid {} does not decode", rel.display(), e.nid))?;
        }
        let attrs = (
            u32::from(node.mode()),
            node.uid(),
            node.gid(),
            node.size(),
            (node.mtime(), node.mtime_nsec()),
            node.nlink(),
        );
        let want_attrs = (
            want.mode, want.uid, want.gid, want.size, want.mtime, want.nlink,
        );
        // Directory sizes and link counts are the descriptor's own, not the source's.
        let comparable = |a: (u32, u32, u32, u64, (i64, u32), u32)| match want.content {
            Content::Dir => (a.0, a.1, a.2, 0, a.4, 0),
            _ => a,
        };
        if comparable(attrs) != comparable(want_attrs) {
            return Err(format!(
                "{}: attributes {attrs:?}, the source has {want_attrs:?}",
                rel.display()
            ));
        }
        match &want.content {
            Content::Dir => {}
            Content::Symlink(target) => {
                let got = node.symlink_target().map(|[a, b]| [a, b].concat());
                if got.as_ref() != Some(target) {
                    return Err(format!("{}: symlink target {got:?}", rel.display()));
                }
            }
            Content::File(bytes) => {
                let mut got = Vec::new();
                let mut failed = false;
                while (got.len() as u64) < node.size() {
                    match reader.read(node.nid(), got.len() as u64, 128 << 10) {
                        Ok(b) if b.is_empty() => break,
                        Ok(b) => got.extend_from_slice(&b),
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    eio += 1;
                } else if got != *bytes {
                    return Err(format!(
                        "{}: the reader served {} bytes that differ from the source",
                        rel.display(),
                        got.len()
                    ));
                } else {
                    served += 1;
                }
            }
        }
    }
    Ok((served, eio))
}

fn matrix(align512: bool) {
    let s = Scratch::new(if align512 {
        "corruption-a512"
    } else {
        "corruption"
    });
    let src = s.join("src");
    make_matrix_tree(&src).unwrap();
    let image = s.join("good.cfs");
    let mut pack = Command::new(BIN);
    pack.arg("pack");
    if align512 {
        pack.args(["--align", "512"]);
    }
    let out = pack.arg(&src).arg(&image).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = fs::read(&image).unwrap();
    Header::parse(&good).unwrap();
    let expected = expected_contents(&src);
    let cases = cfs_cases(&good, per_region(), if align512 { 512 } else { 48 });
    run_matrix(
        &s,
        &cases,
        &format!(
            "corruption matrix ({})",
            if align512 { "--align 512" } else { "48-bit" }
        ),
        |case, dir, tally| {
            check_case(case, &src, &expected, dir, tally)
                .into_iter()
                .map(|p| format!("{}: {p}", case.name))
                .collect()
        },
    );
}

/// Checks every case on two worker threads, each in its own scratch directory under `s`, and
/// fails with every problem found (`check` names the case in each); prints the tally under
/// `label`.
fn run_matrix<C: Sync>(
    s: &Path,
    cases: &[C],
    label: &str,
    check: impl Fn(&C, &Path, &Mutex<Tally>) -> Vec<String> + Sync,
) {
    let tally = Mutex::new(Tally::default());
    let problems = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for worker in 0..2 {
            let (tally, problems, next, check) = (&tally, &problems, &next, &check);
            scope.spawn(move || {
                let dir = s.join(format!("w{worker}"));
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    fs::create_dir_all(&dir).unwrap();
                    problems.lock().unwrap().extend(check(case, &dir, tally));
                    fs::remove_dir_all(&dir).unwrap();
                }
            });
        }
    });
    let t = tally.into_inner().unwrap();
    eprintln!("{label}: {t:?}");
    let problems = problems.into_inner().unwrap();
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(t.cases, cases.len());
}

#[test]
fn corrupted_images_are_refused_naming_the_region_or_served_exactly() {
    matrix(false);
}

#[test]
fn corrupted_aligned_images_are_refused_naming_the_region_or_served_exactly() {
    matrix(true);
}

/// One damaged copy of a layout.
struct OciCase {
    name: String,
    /// The tags whose images read damaged bytes (all tags when `index.json` is damaged).
    hits: Vec<&'static str>,
    /// True if unpack and readers may not notice (a flipped byte of a pack may lie in the
    /// padding between frames, which nothing reads).
    may_pass: bool,
    /// `verify --oci` must name this (the blob's digest, the file).
    needle: String,
    damage: Box<dyn Fn(&Path) + Send + Sync>,
}

/// The blobs of the layout `dir` and the tags whose manifests reach them.
fn blob_users(dir: &Path, tags: &[&'static str]) -> Vec<(String, bool, Vec<&'static str>)> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let hex = |d: &serde_json::Value| d["digest"].as_str().unwrap()[7..].to_owned();
    let mut users: std::collections::BTreeMap<String, (bool, Vec<&'static str>)> =
        Default::default();
    for m in index["manifests"].as_array().unwrap() {
        let tag = m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap();
        let tag = *tags.iter().find(|t| **t == tag).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(hex(m))).unwrap())
                .unwrap();
        let mut reached = vec![(hex(m), false), (hex(&manifest["config"]), false)];
        for l in manifest["layers"].as_array().unwrap() {
            reached.push((hex(l), l["mediaType"] == "application/vnd.chunkfs.pack.v1"));
        }
        for (b, pack) in reached {
            let e = users.entry(b).or_default();
            e.0 = pack;
            e.1.push(tag);
        }
    }
    users
        .into_iter()
        .map(|(b, (pack, tags))| (b, pack, tags))
        .collect()
}

fn oci_cases(dir: &Path, tags: &[&'static str]) -> Vec<OciCase> {
    let mut cases: Vec<OciCase> = Vec::new();
    for (hex, pack, users) in blob_users(dir, tags) {
        let short = hex[..12].to_owned();
        let path = move |d: &Path| d.join("blobs/sha256").join(&hex);
        let len = fs::metadata(path(dir)).unwrap().len();
        let p = path.clone();
        cases.push(OciCase {
            name: format!("blob {short} deleted"),
            hits: users.clone(),
            may_pass: false,
            needle: short.clone(),
            damage: Box::new(move |d| fs::remove_file(p(d)).unwrap()),
        });
        for at in [0, len / 3, len / 2, len - 1] {
            let p = path.clone();
            cases.push(OciCase {
                name: format!("blob {short} byte {at} flipped"),
                hits: users.clone(),
                may_pass: pack,
                needle: short.clone(),
                damage: Box::new(move |d| {
                    let mut b = fs::read(p(d)).unwrap();
                    b[at as usize] ^= 0x20;
                    fs::write(p(d), b).unwrap();
                }),
            });
        }
        let p = path.clone();
        cases.push(OciCase {
            name: format!("blob {short} truncated to {}", len / 2),
            hits: users.clone(),
            may_pass: false,
            needle: short.clone(),
            damage: Box::new(move |d| {
                let f = fs::OpenOptions::new().write(true).open(p(d)).unwrap();
                f.set_len(len / 2).unwrap();
            }),
        });
        let p = path.clone();
        cases.push(OciCase {
            name: format!("blob {short} one byte longer"),
            hits: users.clone(),
            may_pass: false,
            needle: short.clone(),
            damage: Box::new(move |d| {
                let mut b = fs::read(p(d)).unwrap();
                b.push(0);
                fs::write(p(d), b).unwrap();
            }),
        });
    }
    let all: Vec<&'static str> = tags.to_vec();
    let first = tags[0];
    cases.push(OciCase {
        name: format!("index.json names a missing manifest for {first}"),
        hits: vec![first],
        may_pass: false,
        needle: "0".repeat(64),
        damage: Box::new(move |d| {
            let p = d.join("index.json");
            let mut index: serde_json::Value =
                serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            for m in index["manifests"].as_array_mut().unwrap() {
                if m["annotations"]["org.opencontainers.image.ref.name"] == first {
                    m["digest"] = format!("sha256:{}", "0".repeat(64)).into();
                }
            }
            fs::write(&p, serde_json::to_vec(&index).unwrap()).unwrap();
        }),
    });
    cases.push(OciCase {
        name: "index.json cut in half".into(),
        hits: all.clone(),
        may_pass: false,
        needle: "index.json".into(),
        damage: Box::new(|d| {
            let p = d.join("index.json");
            let b = fs::read(&p).unwrap();
            fs::write(&p, &b[..b.len() / 2]).unwrap();
        }),
    });
    cases.push(OciCase {
        name: "index.json deleted".into(),
        hits: all.clone(),
        may_pass: false,
        needle: "index.json".into(),
        damage: Box::new(|d| fs::remove_file(d.join("index.json")).unwrap()),
    });
    cases.push(OciCase {
        name: "oci-layout deleted".into(),
        hits: all,
        may_pass: false,
        needle: "oci-layout".into(),
        damage: Box::new(|d| fs::remove_file(d.join("oci-layout")).unwrap()),
    });
    cases
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            fs::copy(e.path(), &t).unwrap();
        }
    }
}

/// What a mount of `dir:tag` does: open the image (every small blob and pack index checked),
/// translate its descriptor with the packs as devices, and serve it with the packs' indexes
/// as digest tables. Returns (files served, files failed), or an error naming why the mount
/// was refused (Ok(Err)) or what was served wrong (Err).
fn oci_read_all(
    dir: &Path,
    tag: &str,
    expected: &[(PathBuf, Expected)],
    scratch: &Path,
) -> Result<Result<(usize, usize), String>, String> {
    use chunkfs_distribution::oci::pack::PackIndex;
    let img = match chunkfs_distribution::oci::read::open_image(dir, Some(tag)) {
        Ok(img) => img,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let d = img
        .standalone_descriptor(None)
        .map_err(|e| format!("translate after open_image: {e}"))?;
    let desc = scratch.join("descriptor");
    let mut bytes = Vec::new();
    d.write_standalone(&mut bytes).unwrap();
    fs::write(&desc, bytes).unwrap();
    let mut digests = Vec::new();
    for (k, p) in img.packs.iter().enumerate() {
        let f = fs::File::open(&p.path).unwrap();
        let index = PackIndex::read(&f, &p.path).map_err(|e| e.to_string())?;
        let mut table = vec![0u8; index.trailer.index_len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut table, index.trailer.index_offset)
            .unwrap();
        digests.push(DigestSource {
            bytes: table,
            device: Some(k as u16 + 1),
        });
    }
    let devices = img.packs.iter().map(|p| p.path.clone()).collect();
    drop(img);
    read_all_with(Config::new(&desc, devices, digests), expected).map(Ok)
}

/// A tag, its source tree and what the tree holds.
type Source = (&'static str, PathBuf, Vec<(PathBuf, Expected)>);

/// Runs one damaged layout through verify --oci, verify LAYOUT:TAG, unpack and the reader.
fn check_oci_case(
    case: &OciCase,
    good: &Path,
    sources: &[Source],
    work: &Path,
    tally: &Mutex<Tally>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let layout = work.join("layout");
    copy_dir(good, &layout);
    (case.damage)(&layout);
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let clean = |o: &Output, what: &str, problems: &mut Vec<String>| {
        let err = stderr(o);
        if err.contains("panicked") || err.trim_end().lines().count() != 1 {
            problems.push(format!("{what}: not one clean line: {err}"));
        }
    };
    let v = chunkfs(&[&"verify", &"--oci", &layout]);
    if v.status.code() != Some(1) {
        problems.push(format!(
            "verify --oci exited {:?}: {}",
            v.status.code(),
            stderr(&v)
        ));
    }
    clean(&v, "verify --oci", &mut problems);
    if !stderr(&v).contains(&case.needle) {
        problems.push(format!(
            "verify --oci does not name {}: {}",
            case.needle,
            stderr(&v)
        ));
    }
    let mut t = Tally::default();
    for (tag, src, expected) in sources {
        let hit = case.hits.contains(tag);
        let reference = format!("{}:{tag}", layout.display());
        let v = chunkfs(&[&"verify", &reference]);
        match (hit, v.status.code()) {
            (true, Some(1)) => clean(&v, "verify", &mut problems),
            (false, Some(0)) => {}
            (_, code) => problems.push(format!(
                "verify {tag} exited {code:?} (damage {}): {}",
                if hit { "reaches it" } else { "elsewhere" },
                stderr(&v)
            )),
        }
        let out = work.join(format!("out-{tag}"));
        let u = chunkfs(&[&"unpack", &reference, &out]);
        match u.status.code() {
            Some(0) => {
                if let Err(diff) = compare_trees(src, &out) {
                    problems.push(format!("unpack {tag} wrote a different tree:\n{diff}"));
                } else if hit && !case.may_pass {
                    problems.push(format!("unpack {tag} succeeded on damaged data"));
                } else {
                    t.unpack_identical += 1;
                }
            }
            Some(1) => {
                clean(&u, "unpack", &mut problems);
                if !hit {
                    problems.push(format!("unpack {tag} failed: {}", stderr(&u)));
                }
                if out.exists() {
                    problems.push(format!("a failed unpack of {tag} left its target"));
                }
                t.unpack_refused += 1;
            }
            other => problems.push(format!("unpack {tag} exited {other:?}: {}", stderr(&u))),
        }
        let _ = fs::remove_dir_all(&out);
        match oci_read_all(&layout, tag, expected, work) {
            Ok(Err(refused)) => {
                if !hit {
                    problems.push(format!("the mount of {tag} was refused: {refused}"));
                }
                t.mount_refused += 1;
            }
            Ok(Ok((served, eio))) => {
                if hit && !case.may_pass && eio == 0 {
                    problems.push(format!("the reader served {tag} without an error"));
                }
                t.served_files += served;
                t.eio_files += eio;
            }
            Err(e) => problems.push(format!("reader {tag}: {e}")),
        }
    }
    let _ = fs::remove_dir_all(&layout);
    let mut all = tally.lock().unwrap();
    all.cases += 1;
    all.verify_refused += usize::from(v.status.code() == Some(1));
    all.unpack_refused += t.unpack_refused;
    all.unpack_identical += t.unpack_identical;
    all.mount_refused += t.mount_refused;
    all.served_files += t.served_files;
    all.eio_files += t.eio_files;
    problems
}

fn oci_matrix(align512: bool) {
    let s = Scratch::new(if align512 {
        "corruption-oci-a512"
    } else {
        "corruption-oci"
    });
    let a = s.join("a");
    make_matrix_tree(&a).unwrap();
    // Tag b: the same tree and one more file, so that it shares tag a's pack.
    let b = s.join("b");
    make_matrix_tree(&b).unwrap();
    fs::write(
        b.join("only-in-b"),
        chunkfs_tests::tree::pseudo_random(90_000, 5),
    )
    .unwrap();
    let good = s.join("good");
    for (tag, src) in [("a", &a), ("b", &b)] {
        let mut pack = Command::new(BIN);
        pack.arg("pack");
        if align512 {
            pack.args(["--align", "512"]);
        }
        let out = pack
            .arg(src)
            .arg(format!("{}:{tag}", good.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sources = vec![
        ("a", a.clone(), expected_contents(&a)),
        ("b", b.clone(), expected_contents(&b)),
    ];
    let cases = oci_cases(&good, &["a", "b"]);
    run_matrix(
        &s,
        &cases,
        &format!(
            "OCI corruption matrix ({})",
            if align512 { "--align 512" } else { "48-bit" }
        ),
        |case, dir, tally| {
            check_oci_case(case, &good, &sources, dir, tally)
                .into_iter()
                .map(|p| format!("{}: {p}", case.name))
                .collect()
        },
    );
}

#[test]
fn damaged_layouts_are_refused_naming_the_blob_or_served_exactly() {
    oci_matrix(false);
}

#[test]
fn damaged_aligned_layouts_are_refused_naming_the_blob_or_served_exactly() {
    oci_matrix(true);
}

/// `chunkfs verify`'s exit statuses (documented in `verify --help`): 0 intact, 1 corrupt, 2
/// usage, 3 unreadable; the same for `--oci`.
#[test]
fn verify_exit_statuses_tell_corrupt_usage_and_unreadable_apart() {
    let s = Scratch::new("verify-exit");
    let src = s.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"contents").unwrap();
    let image = s.join("image.cfs");
    let layout = s.join("layout");
    let code = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let o = chunkfs(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        (o.status.code(), err)
    };
    assert_eq!(code(&[&"pack", &src, &image]).0, Some(0));
    assert_eq!(
        code(&[&"pack", &src, &format!("{}:v1", layout.display())]).0,
        Some(0)
    );
    let help = code(&[&"verify", &"--help"]);
    assert_eq!(help.0, Some(0));
    let out = String::from_utf8(chunkfs(&[&"verify", &"--help"]).stdout).unwrap();
    for needle in [
        "0 ok (intact)",
        "1 corrupt",
        "2 usage",
        "3 unreadable",
        "--oci",
    ] {
        assert!(
            out.contains(needle),
            "verify --help lacks {needle:?}:\n{out}"
        );
    }

    assert_eq!(code(&[&"verify", &image]).0, Some(0));
    assert_eq!(code(&[&"verify", &"--oci", &layout]).0, Some(0));
    assert_eq!(
        code(&[&"verify", &format!("{}:v1", layout.display())]).0,
        Some(0)
    );

    let mut bad = fs::read(&image).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let corrupt = s.join("corrupt.cfs");
    fs::write(&corrupt, bad).unwrap();
    assert_eq!(code(&[&"verify", &corrupt]).0, Some(1));
    let not_an_image = s.join("text.cfs");
    fs::write(&not_an_image, vec![b'x'; 5000]).unwrap();
    let (c, err) = code(&[&"verify", &not_an_image]);
    assert_eq!(c, Some(1), "{err}");
    assert!(err.contains("not a chunkfs image"), "{err}");

    for args in [
        vec!["verify"],
        vec!["verify", "--no-such-option", "x.cfs"],
        vec!["verify", "-j", "many", "x.cfs"],
    ] {
        let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args
            .iter()
            .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        assert_eq!(code(&args).0, Some(2));
    }
    let (c, err) = code(&[&"verify", &"--oci", &image]);
    assert_eq!(c, Some(2), "{err}");
    let (c, err) = code(&[&"verify", &format!("{}:nosuchtag", layout.display())]);
    assert_eq!(c, Some(2), "{err}");

    let (c, err) = code(&[&"verify", &s.join("missing.cfs")]);
    assert_eq!(c, Some(3), "{err}");
    let (c, err) = code(&[&"verify", &"--oci", &s.join("missing-layout")]);
    assert_eq!(c, Some(3), "{err}");
}

/// A failed unpack removes what it created even as non-root, when the image gave a directory a
/// read-only mode before the failure (its entries could not be unlinked otherwise).
#[test]
fn a_failed_unpack_as_non_root_removes_read_only_directories_too() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run unpack as another user (setpriv)");
        return;
    }
    let s = Scratch::new("unpack-ro-cleanup");
    fs::set_permissions(&*s, fs::Permissions::from_mode(0o777)).unwrap();
    let src = s.join("src");
    fs::create_dir_all(src.join("a-ro/sub")).unwrap();
    fs::write(src.join("a-ro/sub/f"), b"small").unwrap();
    fs::set_permissions(src.join("a-ro/sub"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(src.join("a-ro"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::write(
        src.join("z-file"),
        chunkfs_tests::tree::pseudo_random(200_000, 3),
    )
    .unwrap();
    let image = s.join("image.cfs");
    assert!(chunkfs(&[&"pack", &src, &image]).status.success());
    // Damage z-file's first chunk, which unpack reads after finishing a-ro.
    let cfs = Cfs::open(&image).unwrap();
    let root = &cfs.image().inodes[0];
    let chunkfs_format::model::InodeKind::Directory(entries) = &root.kind else {
        unreachable!()
    };
    let z = entries.iter().find(|e| e.name == b"z-file").unwrap().inode;
    let chunkfs_format::model::InodeKind::File(f) = &cfs.image().inodes[z as usize].kind else {
        unreachable!()
    };
    let chunkfs_format::model::FileLayout::Extents(xs) = &f.layout else {
        unreachable!()
    };
    let (offset, frame) = cfs.frame(xs[0].chunk).unwrap();
    let at = offset as usize + frame.len() / 2;
    drop(cfs);
    let mut bytes = fs::read(&image).unwrap();
    bytes[at] ^= 0x10;
    fs::write(&image, bytes).unwrap();
    let dst = s.join("dst");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "unpack",
        ])
        .arg(&image)
        .arg(&dst)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("z-file"), "{err}");
    assert!(!dst.exists(), "the failed unpack left {}", dst.display());
}
