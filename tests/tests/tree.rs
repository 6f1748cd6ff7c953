//! The tree generator and comparator themselves: the comparator must see every difference.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use chunkfs_tests::tree::{compare_trees, make_every_corner_tree};

#[test]
fn a_tree_equals_its_copy_and_differences_are_all_listed() {
    let scratch = chunkfs_tests::scratch_dir("tree");
    let a = scratch.join("a");
    let made = make_every_corner_tree(&a).unwrap();
    if !made.root_parts {
        eprintln!("skipping root-only parts: {}", made.skipped.join("; "));
    }
    compare_trees(&a, &a).unwrap();

    let b = scratch.join("b");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap();
    assert!(status.success());
    compare_trees(&a, &b).unwrap();

    fs::write(b.join("etc/hostname.copy"), b"changed\n").unwrap();
    fs::set_permissions(b.join("usr/lib/medium"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(b.join("var/hostname-hard2")).unwrap();
    xattr::remove(b.join("usr"), "user.dir").unwrap();
    let err = compare_trees(&a, &b).unwrap_err();
    for expected in [
        "/etc/hostname.copy: ",
        "sha256 Some(",
        "/usr/lib/medium: mode",
        "/var/hostname-hard2: only in",
        "hard-link groups differ",
        "/usr: ",
        "xattrs differ",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    fs::remove_dir_all(&scratch).unwrap();
}
