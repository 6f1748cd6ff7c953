//! Recording the chunks reads need (`Reader::record`), without FUSE: first-read order, each chunk
//! once, decompress-ahead left out, the list file. Through a real mount: tests/tests/prefetch_record.rs.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use chunkfs_reader::Reader;

fn parent() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn nid_of(r: &Reader, name: &str) -> u64 {
    r.descriptor().root().lookup(name.as_bytes()).unwrap().nid
}

fn read_all(r: &Reader, name: &str) {
    let nid = nid_of(r, name);
    let size = r.descriptor().inode(nid).unwrap().size();
    let mut pos = 0;
    while pos < size {
        pos += r.read(nid, pos, 65_536).unwrap().len() as u64;
    }
}

#[test]
fn reads_are_recorded_in_first_read_order_once_each() {
    let img = common::build(parent());
    let mut r = Reader::open(img.config()).unwrap();
    let rec = r.record();
    assert!(rec.is_empty());
    // Chunk sha256s: A, B and C in the image, D in the pack.
    let sha = |e: &chunkfs_kernel_abi::digest_table::DigestEntry| e.sha256;
    let (a, b, c) = (
        sha(&img.entries[0]),
        sha(&img.entries[1]),
        sha(&img.entries[2]),
    );
    let d = sha(&img.pack_entries[0]);

    // Decompress-ahead loads B and C into the cache: not reads, not recorded.
    assert_eq!(r.preload_after(nid_of(&r, "big"), 1, 4), 2);
    assert!(rec.is_empty());
    read_all(&r, "onpack"); // D
    read_all(&r, "frag"); // C, through the packed inode (a cache hit: recorded all the same)
    read_all(&r, "zeros"); // the zero frame has no digest: nothing
    read_all(&r, "big"); // A, then B
    read_all(&r, "frag"); // C again: already recorded
    assert_eq!(rec.digests(), vec![d, c, a, b]);
    // Asking again gives the same recording.
    assert_eq!(r.record().len(), 4);

    let hex = |x: &[u8; 32]| x.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let text = rec.to_text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# chunkfs prefetch list"), "{text}");
    let want: Vec<String> = [d, c, a, b]
        .iter()
        .map(|x| format!("sha256:{}", hex(x)))
        .collect();
    assert_eq!(lines[1..], want);

    // Written atomically: the whole list under its name, no temporary file left.
    let dir = tempfile::tempdir_in(parent()).unwrap();
    let path = dir.path().join("trace.txt");
    std::fs::write(&path, "an older list\n").unwrap();
    assert_eq!(rec.write(&path).unwrap(), 4);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("trace.txt")]);
    assert!(rec.write(&dir.path().join("missing/trace.txt")).is_err());
    assert!(rec.write(Path::new("/")).is_err());
}

#[test]
fn without_recording_nothing_is_kept() {
    let img = common::build(parent());
    let mut r = Reader::open(img.config()).unwrap();
    read_all(&r, "big");
    // Recording starts empty when turned on after reads.
    let rec = r.record();
    assert!(rec.is_empty());
    read_all(&r, "onpack");
    assert_eq!(rec.digests(), vec![img.pack_entries[0].sha256]);
}
