//! Damaged images through `mount.chunkfs` (docs/mount.chunkfs.8.md, "Trust"): a flipped byte in
//! a chunk frame fails that file with an I/O error on both readers while other files read
//! correctly and the mount stays up, and `verify=full` refuses the image; a flipped byte in the
//! header, the metadata, or the embedded EROFS superblock or metadata area is refused at mount;
//! a pinned `digest=` is enforced. Nothing is left behind by a refusal.
//!
//! Needs root, /dev/fuse and a kernel EROFS with 48-bit extents; skipped with a message otherwise.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::cfs::write::{PackOptions, pack_dir};
use chunkfs_format::model::{FileLayout, InodeKind};
use chunkfs_tests::mount::{Mounted, assert_nothing_left, describe, helper_in, output};
use chunkfs_tests::require_mount;
use chunkfs_tests::tree::{make_every_corner_tree, pseudo_random};

struct Fixture {
    dir: PathBuf,
    helper: PathBuf,
    src: PathBuf,
    img: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = chunkfs_tests::scratch_dir("mount-corrupt");
        let src = dir.join("src");
        make_every_corner_tree(&src).unwrap();
        std::fs::write(src.join("victim"), pseudo_random(2 << 20, 5)).unwrap();
        std::fs::write(src.join("bystander"), pseudo_random(1 << 20, 6)).unwrap();
        let img = dir.join("image.cfs");
        pack_dir(&src, &img, &PackOptions::default(), |_| {}).unwrap();
        let helper = helper_in(&dir);
        Fixture {
            dir,
            helper,
            src,
            img,
        }
    })
}

/// A copy of the image with the byte at `offset` flipped.
fn flipped(name: &str, offset: u64) -> PathBuf {
    let f = fixture();
    let mut bytes = std::fs::read(&f.img).unwrap();
    bytes[offset as usize] ^= 0x5a;
    let p = f.dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The offset of a byte in the middle of the second chunk frame of the root's `victim`.
fn victim_frame_byte() -> u64 {
    let cfs = Cfs::open(&fixture().img).unwrap();
    let image = cfs.image();
    let InodeKind::Directory(root) = &image.inodes[0].kind else {
        panic!()
    };
    let e = root.iter().find(|e| e.name == b"victim").unwrap();
    let InodeKind::File(file) = &image.inodes[e.inode as usize].kind else {
        panic!()
    };
    let FileLayout::Extents(extents) = &file.layout else {
        panic!()
    };
    let (offset, frame) = cfs.frame(extents[1].chunk).unwrap();
    offset + frame.len() as u64 / 2
}

fn mount_point(name: &str) -> PathBuf {
    let p = fixture().dir.join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn helper(image: &Path, target: &Path, options: &str) -> Output {
    output(
        Command::new(&fixture().helper)
            .arg(image)
            .arg(target)
            .args(["-o", options]),
    )
}

#[test]
fn a_flipped_chunk_byte_fails_only_its_file_on_both_readers() {
    require_mount!();
    let f = fixture();
    let img = flipped("chunk-flip.cfs", victim_frame_byte());
    for reader in ["kernel", "fuse"] {
        let m = mount_point(&format!("mnt-chunk-{reader}"));
        let o = helper(&img, &m, &format!("reader={reader}"));
        assert!(o.status.success(), "{reader}: {}", describe(&o));
        let mounted = Mounted::at(&m);
        let r = std::fs::read(m.join("victim"));
        assert!(r.is_err(), "{reader}: the damaged file read without error");
        for name in [
            "bystander",
            "usr/bin/noise",
            "usr/lib/medium",
            "etc/hostname",
        ] {
            assert_eq!(
                std::fs::read(m.join(name)).unwrap(),
                std::fs::read(f.src.join(name)).unwrap(),
                "{reader}: {name}"
            );
        }
        // Still mounted and answering, and the damaged file still fails.
        assert!(std::fs::read_dir(m.join("usr/lib")).unwrap().count() > 50);
        assert!(std::fs::read(m.join("victim")).is_err());
        mounted.unmount();
        assert_nothing_left(&m);
    }
}

#[test]
fn verify_full_refuses_a_flipped_chunk_byte() {
    require_mount!();
    let img = flipped("chunk-flip-full.cfs", victim_frame_byte());
    for reader in ["kernel", "fuse"] {
        let m = mount_point(&format!("mnt-full-{reader}"));
        let o = helper(&img, &m, &format!("reader={reader},verify=full"));
        assert_eq!(o.status.code(), Some(32), "{reader}: {}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("verify=full") && err.contains("chunk"),
            "{err}"
        );
        assert_nothing_left(&m);
    }
    // The intact image passes verify=full.
    let m = mount_point("mnt-full-ok");
    let o = helper(&fixture().img, &m, "verify=full");
    assert!(o.status.success(), "{}", describe(&o));
    Mounted::at(&m).unmount();
}

#[test]
fn damaged_header_metadata_or_descriptor_is_refused_at_mount() {
    require_mount!();
    let cfs = Cfs::open(&fixture().img).unwrap();
    let h = cfs.header().clone();
    drop(cfs);
    let cases = [
        ("header", 100, "header checksum"),
        (
            "metadata",
            h.metadata.offset + h.metadata.len / 2,
            "metadata",
        ),
        (
            "erofs-meta",
            h.erofs_meta.offset + h.erofs_meta.len / 2,
            "EROFS metadata area",
        ),
        ("erofs-superblock", 1024 + 12, "EROFS head area"),
        ("chunk-index", h.index.offset + 40, "chunk index"),
    ];
    for (what, offset, needle) in cases {
        let img = flipped(&format!("{what}.cfs"), offset);
        for reader in ["kernel", "fuse"] {
            let m = mount_point(&format!("mnt-{what}-{reader}"));
            let o = helper(&img, &m, &format!("reader={reader}"));
            assert_eq!(
                o.status.code(),
                Some(32),
                "{what}, {reader}: {}",
                describe(&o)
            );
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains(needle) && err.contains(&*img.to_string_lossy()),
                "{what}, {reader}: {err}"
            );
            assert_nothing_left(&m);
        }
    }
}

#[test]
fn a_pinned_digest_is_enforced() {
    require_mount!();
    let f = fixture();
    let digest = Cfs::open(&f.img).unwrap().header().metadata_digest;
    let m = mount_point("mnt-digest");
    let o = helper(&f.img, &m, &format!("digest=sha256:{}", digest.to_hex()));
    assert!(o.status.success(), "{}", describe(&o));
    Mounted::at(&m).unmount();
    let mut other = digest.0;
    other[31] ^= 1;
    let other = chunkfs_format::digest::Digest(other);
    for reader in ["kernel", "fuse"] {
        let o = helper(
            &f.img,
            &m,
            &format!("reader={reader},digest=sha256:{}", other.to_hex()),
        );
        assert_eq!(o.status.code(), Some(32), "{}", describe(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("DIGEST MISMATCH") && err.contains(&digest.to_hex()),
            "{err}"
        );
        assert_nothing_left(&m);
    }
}
