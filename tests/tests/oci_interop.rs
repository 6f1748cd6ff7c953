//! chunkfs images and real OCI tools (docs/format.md §7): skopeo inspects and copies chunkfs
//! layouts, between layouts and through a CNCF distribution registry on loopback; images that
//! umoci and skopeo build from real trees convert to exactly the tree umoci itself unpacks.
//!
//! Needs root (device nodes, owners) and skopeo, umoci and docker-registry (`tools/setup`
//! installs them); a missing tool fails the test rather than skipping it. Trees are compared
//! after `chunkfs` turns the image into a `.cfs` and unpacks it.

// Fixtures outside #[test] functions too: a panic is how these tests fail.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use chunkfs_distribution::oci::convert::{Dest, Outcome, Source, convert};
use chunkfs_distribution::oci::layout::Layout;
use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::cfs::write::PackOptions;
use chunkfs_tests::oci::{Registry, oci_ref, run};
use chunkfs_tests::tree::{compare_trees, make_every_corner_tree};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn pack(src: Source<'_>, dest: Dest<'_>) -> Outcome {
    convert(src, dest, &PackOptions::default(), |_| {})
        .unwrap_or_else(|e| panic!("chunkfs pack: {e}"))
}

fn layout_src(dir: &Path, tag: &str) -> Source<'static> {
    let dir: &'static Path = Box::leak(dir.to_owned().into_boxed_path());
    let tag: &'static str = Box::leak(tag.to_owned().into_boxed_str());
    Source::Layout {
        dir,
        tag: Some(tag),
        platform: None,
    }
}

/// The tree of `LAYOUT:tag`, converted to a `.cfs` and unpacked into `out`; returns the outcome.
fn materialize(layout: &Path, tag: &str, scratch: &Path, out: &Path) -> Outcome {
    let cfs = scratch.join(format!(
        "{}-{tag}.cfs",
        layout.file_name().unwrap_or_default().to_string_lossy()
    ));
    let o = pack(layout_src(layout, tag), Dest::Cfs(&cfs));
    let img = Cfs::open(&cfs).unwrap();
    let mut chunks = img.chunks().unwrap();
    chunkfs_format::unpack::unpack(img.image(), &mut chunks, out).unwrap();
    o
}

fn manifest_digest(layout: &Path, tag: &str) -> String {
    let index = Layout::open(layout).unwrap().read_index().unwrap();
    index
        .manifests
        .iter()
        .find(|d| d.ref_name() == Some(tag))
        .map(|d| d.digest.clone())
        .unwrap_or_else(|| panic!("{}: no tag {tag}", layout.display()))
}

/// A source tree with every corner, plus a few MiB so that chunks are not all small.
fn source_tree(s: &Path) -> PathBuf {
    let src = s.join("src");
    make_every_corner_tree(&src).unwrap();
    std::fs::write(
        src.join("blob"),
        chunkfs_tests::tree::pseudo_random(3 << 20, 7),
    )
    .unwrap();
    src
}

#[test]
fn skopeo_inspects_and_copies_a_chunkfs_layout() {
    if !is_root() {
        eprintln!("skipped: the every-corner tree needs root");
        return;
    }
    let s = chunkfs_tests::scratch_dir("oci-skopeo");
    let src = source_tree(&s);
    let (a, b) = (s.join("a"), s.join("b"));
    let packed = pack(Source::Dir(&src), Dest::Layout { dir: &a, tag: "v1" });
    let committed = packed.layout.unwrap();

    let inspect: serde_json::Value = serde_json::from_str(&run(
        Command::new("skopeo").args(["inspect", &oci_ref(&a, "v1")])
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], committed.manifest.digest.as_str());
    assert_eq!(
        inspect["Layers"].as_array().map(Vec::len),
        Some(1 + committed.packs)
    );
    assert_eq!(
        inspect["Layers"][0],
        packed.metadata_digest.to_oci().as_str()
    );

    run(Command::new("skopeo").args(["copy", "--quiet", &oci_ref(&a, "v1"), &oci_ref(&b, "v1")]));
    assert_eq!(manifest_digest(&a, "v1"), manifest_digest(&b, "v1"));
    let out = s.join("out-b");
    let o = materialize(&b, "v1", &s, &out);
    assert_eq!(o.metadata_digest, packed.metadata_digest);
    compare_trees(&src, &out)
        .unwrap_or_else(|d| panic!("the skopeo copy differs from the source:\n{d}"));

    // skopeo writing a second tag into a chunkfs layout: gc keeps everything both tags reach.
    run(Command::new("skopeo").args(["copy", "--quiet", &oci_ref(&a, "v1"), &oci_ref(&a, "copy")]));
    let report = chunkfs_distribution::oci::gc::gc(&a, false).unwrap();
    assert!(report.removed.is_empty(), "gc removed {:?}", report.removed);
    chunkfs_distribution::oci::gc::remove_tag(&a, "v1").unwrap();
    let report = chunkfs_distribution::oci::gc::gc(&a, false).unwrap();
    assert!(
        report.removed.is_empty(),
        "the copy tag still reaches every blob: {:?}",
        report.removed
    );
    let out = s.join("out-a-copy");
    materialize(&a, "copy", &s, &out);
    compare_trees(&src, &out).unwrap();
    let _ = std::fs::remove_dir_all(&s);
}

#[test]
fn registry_round_trip() {
    if !is_root() {
        eprintln!("skipped: the every-corner tree needs root");
        return;
    }
    let s = chunkfs_tests::scratch_dir("oci-registry");
    let src = source_tree(&s);
    let (a, c) = (s.join("a"), s.join("c"));
    let packed = pack(Source::Dir(&src), Dest::Layout { dir: &a, tag: "v1" });
    let registry = Registry::start(&s);
    let remote = registry.reference("chunkfs/test", "v1");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &oci_ref(&a, "v1"),
        &remote,
    ]));
    let inspect: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &remote,
    ])))
    .unwrap();
    assert_eq!(inspect["Digest"], manifest_digest(&a, "v1").as_str());
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &remote,
        &oci_ref(&c, "v1"),
    ]));
    drop(registry);
    assert_eq!(manifest_digest(&a, "v1"), manifest_digest(&c, "v1"));
    let out = s.join("out");
    let o = materialize(&c, "v1", &s, &out);
    assert_eq!(o.metadata_digest, packed.metadata_digest);
    compare_trees(&src, &out)
        .unwrap_or_else(|d| panic!("the registry round trip differs from the source:\n{d}"));
    let _ = std::fs::remove_dir_all(&s);
}

/// Builds a two-layer image with umoci: the second layer deletes a file and a directory,
/// replaces a directory by a file and a file by a directory, changes a file's content and
/// another's mode, and adds a hard link to a file of the first layer.
fn umoci_image(s: &Path) -> PathBuf {
    let layout = s.join("umoci");
    let bundle = s.join("bundle");
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:t", layout.display())));
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle));
    let root = bundle.join("rootfs");
    make_every_corner_tree(&root.join("corner")).unwrap();
    // Tar cannot hold sockets.
    std::fs::remove_file(root.join("corner/tmp/socket")).unwrap();
    for d in ["etc", "gone/sub", "dir-to-file", "opaque/old"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/deleted"), b"bye").unwrap();
    std::fs::write(root.join("gone/sub/file"), b"gone").unwrap();
    std::fs::write(root.join("dir-to-file/child"), b"child").unwrap();
    std::fs::write(root.join("file-to-dir"), b"file").unwrap();
    std::fs::write(root.join("opaque/old/x"), b"x").unwrap();
    std::fs::write(
        root.join("edited"),
        chunkfs_tests::tree::pseudo_random(500_000, 3),
    )
    .unwrap();
    std::fs::write(root.join("chmod"), b"mode").unwrap();
    std::fs::write(
        root.join("big"),
        chunkfs_tests::tree::pseudo_random(2 << 20, 4),
    )
    .unwrap();
    run(Command::new("umoci")
        .args(["repack", "--refresh-bundle", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle));

    std::fs::remove_file(root.join("etc/deleted")).unwrap();
    std::fs::remove_dir_all(root.join("gone")).unwrap();
    std::fs::remove_dir_all(root.join("dir-to-file")).unwrap();
    std::fs::write(root.join("dir-to-file"), b"now a file").unwrap();
    std::fs::remove_file(root.join("file-to-dir")).unwrap();
    std::fs::create_dir(root.join("file-to-dir")).unwrap();
    std::fs::write(root.join("file-to-dir/inside"), b"inside").unwrap();
    std::fs::remove_dir_all(root.join("opaque")).unwrap();
    std::fs::create_dir_all(root.join("opaque/new")).unwrap();
    let mut edited = chunkfs_tests::tree::pseudo_random(500_000, 3);
    edited.splice(1000..1000, *b"inserted");
    std::fs::write(root.join("edited"), edited).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(root.join("chmod")).unwrap().permissions(),
        0o600,
    );
    std::fs::set_permissions(
        root.join("chmod"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::hard_link(root.join("big"), root.join("big-link")).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--refresh-bundle", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle));
    layout
}

#[test]
fn umoci_and_skopeo_images_convert_to_the_merged_tree() {
    if !is_root() {
        eprintln!("skipped: umoci images with device nodes and owners need root");
        return;
    }
    let s = chunkfs_tests::scratch_dir("oci-umoci");
    let layout = umoci_image(&s);
    let manifest: String =
        run(Command::new("skopeo").args(["inspect", "--raw", &oci_ref(&layout, "t")]));
    assert_eq!(
        manifest
            .matches("application/vnd.oci.image.layer.v1.tar+gzip")
            .count(),
        2,
        "{manifest}"
    );

    // The upper layer really holds whiteouts, a hard link to a lower file and a file over a
    // directory.
    let img =
        chunkfs_distribution::oci::tar_image::open_tar_image(&layout, Some("t"), None).unwrap();
    let mut upper = chunkfs_distribution::tar::layer::LayerStream::open(&img.layers[1]).unwrap();
    let mut names = Vec::new();
    while let Some(e) = upper.next_entry().unwrap() {
        names.push((String::from_utf8_lossy(&e.path).into_owned(), e.kind));
    }
    drop(img);
    let has = |f: &dyn Fn(&(String, chunkfs_distribution::tar::stream::EntryKind)) -> bool| {
        names.iter().any(f)
    };
    assert!(has(&|(n, _)| n.ends_with(".wh.deleted")), "{names:?}");
    assert!(has(&|(n, _)| n.ends_with(".wh.gone")), "{names:?}");
    assert!(
        has(&|(n, k)| n.ends_with("big-link")
            && matches!(k, chunkfs_distribution::tar::stream::EntryKind::HardLink(_))),
        "{names:?}"
    );
    assert!(
        has(&|(n, k)| n.ends_with("dir-to-file")
            && matches!(
                k,
                chunkfs_distribution::tar::stream::EntryKind::Regular { .. }
            )),
        "{names:?}"
    );

    // umoci's own application of the layers is the reference tree.
    let reference = s.join("reference");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&reference));
    let expected = reference.join("rootfs");
    assert!(!expected.join("etc/deleted").exists() && expected.join("big-link").exists());

    let out = s.join("out-gzip");
    let gzip = materialize(&layout, "t", &s, &out);
    assert_eq!(gzip.source_kind, "container image");
    compare_trees(&expected, &out)
        .unwrap_or_else(|d| panic!("the converted image differs from umoci's unpack:\n{d}"));

    // The same image with zstd layers, as skopeo rewrites it. (skopeo 1.9.3 ignores
    // --dest-decompress for OCI destinations; plain tar layers are covered by format's unit
    // tests.)
    let zstd = s.join("zstd");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-compress-format",
        "zstd",
        &oci_ref(&layout, "t"),
        &oci_ref(&zstd, "t"),
    ]));
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &oci_ref(&zstd, "t")]));
    assert_eq!(
        raw.matches("application/vnd.oci.image.layer.v1.tar+zstd")
            .count(),
        2,
        "{raw}"
    );
    let o = pack(layout_src(&zstd, "t"), Dest::Cfs(&s.join("zstd.cfs")));
    assert_eq!(
        o.metadata_digest, gzip.metadata_digest,
        "zstd layers give another image"
    );

    // Into a layout, and back: the lossless path of an ordinary image.
    let chunkfs_layout = s.join("converted");
    let into = pack(
        layout_src(&layout, "t"),
        Dest::Layout {
            dir: &chunkfs_layout,
            tag: "t",
        },
    );
    assert_eq!(into.metadata_digest, gzip.metadata_digest);
    let out2 = s.join("out-layout");
    materialize(&chunkfs_layout, "t", &s, &out2);
    compare_trees(&expected, &out2).unwrap();
    let _ = std::fs::remove_dir_all(&s);
}
