//! `chunkfs pack --prefetch FILE` and the prefetch list in `chunkfs inspect`, through the binary
//! (docs/format.md §3.6). Recording a list with a real mount: tests/tests/prefetch_record.rs.
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::digest::Digest;
use chunkfs_tests::tree::pseudo_random;

const BIN: &str = env!("CARGO_BIN_EXE_chunkfs");

fn chunkfs(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(BIN)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn inspect_json(image: &Path) -> serde_json::Value {
    serde_json::from_str(&ok(chunkfs(&[&"inspect", &"--json", &image]))).unwrap()
}

fn tree(dir: &Path) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("a"), pseudo_random(900_000, 1)).unwrap();
    fs::write(dir.join("sub/b"), pseudo_random(300_000, 2)).unwrap();
    fs::write(dir.join("small"), b"small file\n").unwrap();
}

#[test]
fn pack_prefetch_sets_the_list_inspect_shows_it_and_conversions_keep_it() {
    let s = chunkfs_tests::scratch_dir("prefetch-cli");
    let src = s.join("tree");
    tree(&src);
    let plain = s.join("plain.cfs");
    ok(chunkfs(&[&"pack", &src, &plain]));
    assert!(ok(chunkfs(&[&"inspect", &plain])).contains("prefetch list:    none"));
    assert_eq!(inspect_json(&plain)["prefetch_chunks"], 0);
    let chunks = Cfs::open(&plain).unwrap().image().chunks.clone();
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());

    // What a recording looks like, plus what a hand-edited one may hold.
    let list = s.join("list.txt");
    let other = Digest::of(b"a chunk of another image");
    fs::write(
        &list,
        format!(
            "# chunkfs prefetch list\n{}\n{other}\n\n  {}\n{}\n",
            chunks[2].digest, chunks[0].digest, chunks[2].digest
        ),
    )
    .unwrap();
    let with = s.join("with.cfs");
    let out = ok(chunkfs(&[&"pack", &"--prefetch", &list, &src, &with]));
    assert!(
        out.contains(
            "prefetch list: 2 chunks; skipped 1 digests not in the image and 1 repeated (of 4 listed)"
        ),
        "{out}"
    );
    let img = Cfs::open(&with).unwrap();
    assert_eq!(img.image().prefetch, vec![2, 0]);
    assert_eq!(img.image().chunks, chunks, "the list changes no chunk");
    let digest = img.header().metadata_digest;
    assert_ne!(digest, Cfs::open(&plain).unwrap().header().metadata_digest);
    let stats = inspect_json(&with);
    assert_eq!(stats["prefetch_chunks"], 2);
    let bytes = u64::from(chunks[2].size + chunks[0].size);
    assert_eq!(stats["prefetch_bytes"].as_u64(), Some(bytes));
    let frames: u64 = [2, 0]
        .iter()
        .map(|&i| u64::from(img.locations()[i].stored_len))
        .sum();
    assert_eq!(stats["prefetch_stored_bytes"].as_u64(), Some(frames));
    let text = ok(chunkfs(&[&"inspect", &with]));
    assert!(text.contains("prefetch list:    2 chunks, "), "{text}");
    ok(chunkfs(&[&"verify", &with]));

    // .cfs -> layout -> .cfs keep it, and the metadata digest.
    let layout = format!("{}:t", s.join("layout").display());
    let back = s.join("back.cfs");
    let to_layout = ok(chunkfs(&[&"pack", &with, &layout]));
    assert!(to_layout.contains(&digest.to_string()), "{to_layout}");
    assert!(!to_layout.contains("prefetch list:"), "{to_layout}");
    ok(chunkfs(&[&"pack", &layout, &back]));
    assert_eq!(Cfs::open(&back).unwrap().header().metadata_digest, digest);
    assert_eq!(fs::read(&back).unwrap(), fs::read(&with).unwrap());

    // --prefetch on a conversion replaces the list; an empty file removes it.
    let empty = s.join("empty.txt");
    fs::write(&empty, "# nothing read\n").unwrap();
    let stripped = s.join("stripped.cfs");
    ok(chunkfs(&[
        &"pack",
        &"--prefetch",
        &empty,
        &layout,
        &stripped,
    ]));
    assert_eq!(
        Cfs::open(&stripped).unwrap().header().metadata_digest,
        Cfs::open(&plain).unwrap().header().metadata_digest
    );
    let layout2 = format!("{}:u", s.join("layout").display());
    ok(chunkfs(&[
        &"pack",
        &"--prefetch",
        &list,
        &stripped,
        &layout2,
    ]));
    let again = s.join("again.cfs");
    ok(chunkfs(&[&"pack", &layout2, &again]));
    assert_eq!(Cfs::open(&again).unwrap().header().metadata_digest, digest);
    let _ = fs::remove_dir_all(&s);
}

#[test]
fn a_bad_prefetch_file_fails_cleanly_before_anything_is_written() {
    let s = chunkfs_tests::scratch_dir("prefetch-cli-bad");
    let src = s.join("tree");
    tree(&src);
    let bad = s.join("bad.txt");
    fs::write(&bad, "# fine\nsha256:1234\n").unwrap();
    for (file, code, needles) in [
        (bad.clone(), 2, vec!["bad.txt", "line 2", "sha256:"]),
        (s.join("missing.txt"), 3, vec!["missing.txt"]),
    ] {
        let dest = s.join("out.cfs");
        let out = chunkfs(&[&"pack", &"--prefetch", &file, &src, &dest]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        for n in needles {
            assert!(err.contains(n), "{n:?} not in {err:?}");
        }
        assert!(!dest.exists());
    }
    let _ = fs::remove_dir_all(&s);
}
