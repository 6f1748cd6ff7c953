//! Layer merge tests: tar archives built in memory with the `tar` crate, some edited by hand.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::merge::{NodeKind, Tree};
use super::*;
use chunkfs_format::digest::Digest;

/// One member to put in a test layer.
enum M<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
    Sym(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
    /// A member with PAX records before it.
    Pax(&'a str, &'a [u8], Vec<(&'a str, &'a [u8])>),
    /// Raw bytes appended as they are.
    Raw(Vec<u8>),
}

fn header(path: &str, ty: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_size(size);
    h.set_mode(if ty == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(1_600_000_000);
    // Bypass the tar crate's path checks: hostile paths are the point of some tests.
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_cksum();
    h
}

fn tar_bytes(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        match m {
            M::Dir(p) => b
                .append(&header(p, tar::EntryType::Directory, 0), &[][..])
                .unwrap(),
            M::File(p, data) => b
                .append(
                    &header(p, tar::EntryType::Regular, data.len() as u64),
                    *data,
                )
                .unwrap(),
            M::Link(p, t) | M::Sym(p, t) => {
                let ty = if matches!(m, M::Link(..)) {
                    tar::EntryType::Link
                } else {
                    tar::EntryType::Symlink
                };
                let mut h = header(p, ty, 0);
                h.set_link_name_literal(t).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            M::Char(p, major, minor) => {
                let mut h = header(p, tar::EntryType::Char, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            M::Fifo(p) => b
                .append(&header(p, tar::EntryType::Fifo, 0), &[][..])
                .unwrap(),
            M::Pax(p, data, recs) => {
                b.append_pax_extensions(recs.iter().copied()).unwrap();
                b.append(
                    &header(p, tar::EntryType::Regular, data.len() as u64),
                    *data,
                )
                .unwrap();
            }
            M::Raw(bytes) => b.get_mut().extend_from_slice(bytes),
        }
    }
    b.into_inner().unwrap()
}

#[derive(Clone, Copy)]
enum Z {
    Plain,
    Gzip,
    Zstd,
}

fn compress(tar: &[u8], z: Z) -> Vec<u8> {
    match z {
        Z::Plain => tar.to_vec(),
        Z::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Z::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    n: usize,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: crate::oci::test_dir(),
            n: 0,
        }
    }

    /// Writes a layer blob; `diff_id` from the real uncompressed bytes.
    fn layer(&mut self, members: &[M], z: Z) -> LayerInput {
        let tar = tar_bytes(members);
        self.blob(&compress(&tar, z), Some(Digest::of(&tar)))
    }

    fn blob(&mut self, bytes: &[u8], diff_id: Option<Digest>) -> LayerInput {
        self.n += 1;
        let path = self.dir.path().join(format!("layer{}", self.n));
        std::fs::write(&path, bytes).unwrap();
        LayerInput {
            path,
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
            diff_id,
        }
    }
}

/// path -> "type perm uid:gid size/target [content]" for every reachable name.
fn render(layers: &[LayerInput], tree: &Tree) -> BTreeMap<String, String> {
    let mut contents: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    feed_contents(layers, tree, |node, data, _| {
        let mut v = Vec::new();
        data.read_to_end(&mut v)?;
        contents.insert(node, v);
        Ok::<_, std::io::Error>(())
    })
    .unwrap();
    let nodes = tree.nodes();
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), 0usize)];
    while let Some((path, id)) = stack.pop() {
        let n = &nodes[id];
        let desc = match &n.kind {
            NodeKind::Dir(ch) => {
                for (name, c) in ch {
                    stack.push((format!("{path}/{}", String::from_utf8_lossy(name)), c.node));
                }
                "dir".to_owned()
            }
            NodeKind::File { size, .. } => {
                format!(
                    "file {size} {:?} #{id}",
                    String::from_utf8_lossy(contents.get(&id).map_or(&[][..], |v| v.as_slice()))
                )
            }
            NodeKind::Symlink(t) => format!("symlink {}", String::from_utf8_lossy(t)),
            NodeKind::Char(a, b) => format!("char {a}:{b}"),
            NodeKind::Block(a, b) => format!("block {a}:{b}"),
            NodeKind::Fifo => "fifo".to_owned(),
        };
        out.insert(
            if path.is_empty() { "/".into() } else { path },
            format!("{desc} {:o} {}:{}", n.meta.perm, n.meta.uid, n.meta.gid),
        );
    }
    out
}

fn paths(r: &BTreeMap<String, String>) -> Vec<&str> {
    r.keys().map(String::as_str).collect()
}

#[test]
fn layers_merge_with_whiteouts_opaque_dirs_links_and_replacements() {
    let mut f = Fixture::new();
    let l1 = f.layer(
        &[
            M::Dir("a/"),
            M::File("a/gone", b"gone"),
            M::File("a/kept", b"kept"),
            M::Dir("a/opq/"),
            M::File("a/opq/old", b"old"),
            M::Dir("a/opq/deep/"),
            M::File("a/opq/deep/old2", b"old2"),
            M::File("file-to-dir", b"f"),
            M::Dir("dir-to-file/"),
            M::File("dir-to-file/child", b"c"),
            M::Sym("a/sym", "kept"),
            M::Char("dev/null", 1, 3),
            M::Fifo("fifo"),
            M::File("lower", b"lower content"),
        ],
        Z::Gzip,
    );
    let l2 = f.layer(
        &[
            M::File("a/.wh.gone", b""),
            M::Dir("a/opq/"),
            M::File("a/opq/.wh..wh..opq", b""),
            M::File("a/opq/new", b"new"),
            M::Dir("file-to-dir/"),
            M::File("file-to-dir/inner", b"i"),
            M::File("dir-to-file", b"now a file"),
            M::Link("hard-to-lower", "lower"),
            M::File(".wh..wh.plnk", b""),
        ],
        Z::Zstd,
    );
    let layers = [l1, l2];
    let tree = merge_layers(&layers).unwrap();
    let r = render(&layers, &tree);
    assert_eq!(
        paths(&r),
        [
            "/",
            "/a",
            "/a/kept",
            "/a/opq",
            "/a/opq/new",
            "/a/sym",
            "/dev",
            "/dev/null",
            "/dir-to-file",
            "/fifo",
            "/file-to-dir",
            "/file-to-dir/inner",
            "/hard-to-lower",
            "/lower"
        ]
    );
    assert!(
        r["/dir-to-file"].starts_with("file 10 \"now a file\""),
        "{}",
        r["/dir-to-file"]
    );
    assert!(r["/dev/null"].starts_with("char 1:3"));
    assert!(
        r["/dev"].starts_with("dir 755 0:0"),
        "implicit parent: {}",
        r["/dev"]
    );
    // The hard link shares the lower layer's inode.
    assert_eq!(r["/hard-to-lower"], r["/lower"]);
    let inodes = tree.to_inodes(|_, _| chunkfs_format::model::FileLayout::Packed(0));
    let img = chunkfs_format::model::Image {
        chunks: vec![],
        packed_stream: vec![],
        inodes,
        prefetch: Vec::new(),
    };
    let lower_ino = match &img.inodes[0].kind {
        chunkfs_format::model::InodeKind::Directory(e) => {
            e.iter().find(|e| e.name == b"lower").unwrap().inode
        }
        _ => unreachable!(),
    };
    assert_eq!(img.link_counts()[lower_ino as usize], 2);
}

#[test]
fn whiteouts_do_not_hide_entries_of_their_own_layer() {
    let mut f = Fixture::new();
    let l1 = f.layer(
        &[M::Dir("d/"), M::File("d/lower", b"l"), M::File("x", b"1")],
        Z::Plain,
    );
    // Re-declared directory first, whiteout after: lower children go, the layer's own stay.
    let l2 = f.layer(
        &[
            M::File("x", b"2"),
            M::File(".wh.x", b""),
            M::Dir("d/"),
            M::File("d/mine", b"m"),
            M::File(".wh.d", b""),
        ],
        Z::Plain,
    );
    let layers = [l1, l2];
    let tree = merge_layers(&layers).unwrap();
    let r = render(&layers, &tree);
    assert_eq!(paths(&r), ["/", "/d", "/d/mine", "/x"]);
    assert!(r["/x"].starts_with("file 1 \"2\""));
}

#[test]
fn duplicates_last_wins_and_only_survivors_are_fed() {
    let mut f = Fixture::new();
    let l1 = f.layer(
        &[
            M::File("f", b"first"),
            M::File("f", b"second"),
            M::File("deleted", b"zzz"),
        ],
        Z::Plain,
    );
    let l2 = f.layer(
        &[M::File(".wh.deleted", b""), M::File("g", b"g2")],
        Z::Plain,
    );
    let layers = [l1, l2];
    let tree = merge_layers(&layers).unwrap();
    let mut fed = Vec::new();
    feed_contents(&layers, &tree, |_, data, _| {
        let mut v = Vec::new();
        data.read_to_end(&mut v)?;
        fed.push(String::from_utf8(v).unwrap());
        Ok::<_, std::io::Error>(())
    })
    .unwrap();
    assert_eq!(fed, ["second", "g2"]);
}

#[test]
fn pax_and_gnu_metadata_reach_the_inodes() {
    let mut f = Fixture::new();
    let long = format!("d/{}", "x".repeat(250));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header("placeholder", tar::EntryType::Regular, 4);
    b.append_data(&mut h, &long, &b"long"[..]).unwrap();
    let long_tar = b.into_inner().unwrap();
    let l1 = f.layer(
        &[
            M::Pax(
                "p",
                b"pax",
                vec![
                    ("SCHILY.xattr.user.b", &b"2"[..]),
                    ("SCHILY.xattr.security.capability", &b"\x01\x00"[..]),
                    ("mtime", b"-1.5"),
                    ("uid", b"4000000000"),
                ],
            ),
            M::Raw(long_tar[..long_tar.len() - 1024].to_vec()),
        ],
        Z::Plain,
    );
    let layers = [l1];
    let tree = merge_layers(&layers).unwrap();
    let inodes = tree.to_inodes(|_, _| chunkfs_format::model::FileLayout::Packed(0));
    let p = inodes.iter().find(|i| i.uid == 4_000_000_000).unwrap();
    assert_eq!((p.mtime_sec, p.mtime_nsec), (-2, 500_000_000));
    let names: Vec<&[u8]> = p.xattrs.iter().map(|x| x.name.as_slice()).collect();
    assert_eq!(names, [&b"security.capability"[..], b"user.b"]);
    let r = render(&layers, &tree);
    assert!(r.contains_key(&format!("/{long}")), "{:?}", r.keys());
}

/// Runs pass 1 on one hostile layer (after an optional benign one) and returns the error text.
fn refused(lower: &[M], hostile: &[M]) -> String {
    let mut f = Fixture::new();
    let mut layers = Vec::new();
    if !lower.is_empty() {
        layers.push(f.layer(lower, Z::Plain));
    }
    layers.push(f.layer(hostile, Z::Gzip));
    let err = merge_layers(&layers)
        .expect_err("hostile layer accepted")
        .to_string();
    assert!(
        err.contains(&format!("layer {}", layers.len())),
        "error does not name the layer: {err}"
    );
    err
}

#[test]
fn hostile_paths_are_refused() {
    let e = refused(&[], &[M::File("../escape", b"x")]);
    assert!(e.contains("'..'") && e.contains("../escape"), "{e}");
    let e = refused(&[], &[M::File("a/../../etc/passwd", b"x")]);
    assert!(e.contains("'..'"), "{e}");
    let e = refused(&[M::Sym("s", "/etc")], &[M::File("s/passwd", b"x")]);
    assert!(e.contains("through the symlink s"), "{e}");
    let e = refused(&[M::Sym("s", "..")], &[M::File("s/x", b"x")]);
    assert!(e.contains("symlink"), "{e}");
    let e = refused(&[M::Sym("s", "/")], &[M::File("s/.wh.x", b"")]);
    assert!(e.contains("symlink"), "{e}");
    let e = refused(&[], &[M::Link("l", "missing")]);
    assert!(e.contains("does not exist"), "{e}");
    let e = refused(
        &[M::Sym("s", "/etc"), M::File("t", b"t")],
        &[M::Link("l", "s/shadow")],
    );
    assert!(e.contains("symlink"), "{e}");
    let e = refused(&[M::Dir("d/")], &[M::Link("l", "d")]);
    assert!(e.contains("directory"), "{e}");
    let e = refused(&[], &[M::Link("l", "../outside")]);
    assert!(e.contains("'..'"), "{e}");
    let e = refused(&[M::File("f", b"x")], &[M::File("f/child", b"x")]);
    assert!(e.contains("not a directory"), "{e}");
    let e = refused(&[], &[M::File(".wh..", b"")]);
    assert!(e.contains("whiteout"), "{e}");
}

#[test]
fn absolute_paths_stay_inside_the_root() {
    let mut f = Fixture::new();
    let l = f.layer(
        &[M::File("/etc/hostname", b"h"), M::File("./a//b/./c", b"c")],
        Z::Plain,
    );
    let layers = [l];
    let tree = merge_layers(&layers).unwrap();
    let r = render(&layers, &tree);
    assert_eq!(
        paths(&r),
        ["/", "/a", "/a/b", "/a/b/c", "/etc", "/etc/hostname"]
    );
}

#[test]
fn lying_sizes_truncation_and_wrong_digests_are_refused() {
    // A header claiming 1000 bytes followed by 10 and the end of the stream.
    let mut raw = header("f", tar::EntryType::Regular, 1000)
        .as_bytes()
        .to_vec();
    raw.extend_from_slice(&[1u8; 10]);
    let mut f = Fixture::new();
    let l = f.blob(&raw, None);
    let e = merge_layers(&[l]).unwrap_err().to_string();
    assert!(e.contains("truncated") || e.contains("lies"), "{e}");

    let good = tar_bytes(&[M::File("f", &[7u8; 100_000])]);
    for z in [Z::Gzip, Z::Zstd] {
        let c = compress(&good, z);
        let l = f.blob(&c[..c.len() / 2], None);
        let e = merge_layers(&[l]).unwrap_err().to_string();
        assert!(e.contains("layer 1") && e.contains("truncated"), "{e}");
        // The same truncated stream with a descriptor of the full blob: size and digest differ.
        let mut l = f.blob(&c[..c.len() - 8], None);
        l.digest = Digest::of(&c);
        assert!(merge_layers(&[l]).is_err());
    }

    let mut l = f.layer(&[M::File("f", b"x")], Z::Gzip);
    l.diff_id = Some(Digest::of(b"something else"));
    let e = merge_layers(&[l]).unwrap_err().to_string();
    assert!(e.contains("diff_id"), "{e}");

    let mut l = f.layer(&[M::File("f", b"x")], Z::Gzip);
    l.digest = Digest::of(b"not the blob");
    let e = merge_layers(&[l]).unwrap_err().to_string();
    assert!(e.contains("not what its descriptor says"), "{e}");

    let l = f.blob(b"\x1f\x8bthis is not gzip at all", None);
    assert!(merge_layers(&[l]).is_err());
}

#[test]
fn pass_two_notices_a_swapped_blob() {
    let mut f = Fixture::new();
    let l = f.layer(&[M::File("f", b"original")], Z::Plain);
    let layers = [l];
    let tree = merge_layers(&layers).unwrap();
    std::fs::write(&layers[0].path, tar_bytes(&[M::File("f", b"swapped!")])).unwrap();
    let err = feed_contents(&layers, &tree, |_, d, _| {
        std::io::copy(d, &mut std::io::sink())?;
        Ok::<_, std::io::Error>(())
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("not what its descriptor says"),
        "{err}"
    );
    assert!(Path::new(&layers[0].path).exists());
}
