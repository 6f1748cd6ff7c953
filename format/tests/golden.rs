//! Golden images (`tests/golden/`): committed `.cfs` files of format version 1 that every future
//! reader must still open, verify and dump identically, and that this packer must still
//! produce byte for byte. `CHUNKFS_BLESS=1 cargo test -p chunkfs-format --test golden`
//! rewrites them; a change to an existing golden needs a format version decision first.
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use chunkfs_format::build::{BuildOptions, Builder};
use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::cfs::write::CfsWriter;
use chunkfs_format::chunk::ChunkParams;
use chunkfs_format::model::{DirEntry, FileData, Image, Inode, InodeKind, Xattr, mode};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut r = chunkfs_kernel_abi::testkit::XorShift64::new(seed | 1);
    (0..len).map(|_| (r.next_u64() >> 24) as u8).collect()
}

/// Writes the `basic` golden image to `dest` from a tree defined here, independent of the
/// machine (owners, times and contents are fixed); with `prefetch`, it carries a prefetch list
/// (docs/format.md §3.6: every other chunk, last first).
fn write_basic(dest: &Path, align512: bool, prefetch: bool) {
    let options = BuildOptions {
        chunking: ChunkParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        },
        level: 3,
        jobs: 2,
        small_file_max: 8192,
    };
    let (writer, sink) = CfsWriter::create(dest, align512).unwrap();
    let mut b = Builder::new(options, sink, None).unwrap();
    let text: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let big = b.add_bytes(&text).unwrap();
    let small = b.add_bytes(b"hello, world\n").unwrap();
    let rnd = b.add_bytes(&noise(30_000, 9)).unwrap();
    b.begin_file(1 << 20).unwrap();
    b.write(500_000, &noise(10_000, 3)).unwrap();
    let sparse = b.end_file().unwrap();
    let mut out = b.finish().unwrap();

    let meta = |m: u32, kind: InodeKind| Inode {
        mode: m,
        uid: 0,
        gid: 0,
        mtime_sec: 1_600_000_000,
        mtime_nsec: 5,
        xattrs: vec![],
        kind,
    };
    let file = |size: u64, layout| InodeKind::File(FileData { size, layout });
    let entry = |name: &[u8], inode: u32| DirEntry {
        name: name.to_vec(),
        inode,
    };
    let root = vec![
        entry(b"big.txt", 1),
        entry(b"dev", 2),
        entry(b"hello", 5),
        entry(b"hello\xff", 5),
        entry(b"link", 6),
        entry(b"noise", 7),
        entry(b"sparse", 8),
    ];
    let mut inodes = vec![
        meta(mode::S_IFDIR | 0o755, InodeKind::Directory(root)),
        meta(
            mode::S_IFREG | 0o644,
            file(text.len() as u64, out.take_layout(big)),
        ),
        meta(
            mode::S_IFDIR | 0o755,
            InodeKind::Directory(vec![entry(b"fifo", 3), entry(b"null", 4)]),
        ),
        meta(mode::S_IFIFO | 0o600, InodeKind::Special),
        meta(
            mode::S_IFCHR | 0o666,
            InodeKind::Device { major: 1, minor: 3 },
        ),
        meta(mode::S_IFREG | 0o4755, file(13, out.take_layout(small))),
        meta(
            mode::S_IFLNK | 0o777,
            InodeKind::Symlink(b"big.txt".to_vec()),
        ),
        meta(mode::S_IFREG | 0o600, file(30_000, out.take_layout(rnd))),
        meta(
            mode::S_IFREG | 0o644,
            file(1 << 20, out.take_layout(sparse)),
        ),
    ];
    inodes[5].uid = 4_000_000_000;
    inodes[5].mtime_sec = -1;
    inodes[5].xattrs = vec![
        Xattr {
            name: b"security.capability".to_vec(),
            value: vec![
                1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        },
        Xattr {
            name: b"user.note".to_vec(),
            value: b"hi".to_vec(),
        },
    ];
    let image = Image {
        chunks: out.chunks.clone(),
        packed_stream: out.packed_stream.clone(),
        inodes,
        prefetch: if prefetch {
            (0..out.chunks.len() as u32).rev().step_by(2).collect()
        } else {
            Vec::new()
        },
    };
    writer.finish(out.sink, &image, &out.locations).unwrap();
}

fn check_golden(name: &str, align512: bool, prefetch: bool) {
    let dir = golden_dir();
    let golden = dir.join(format!("{name}.cfs"));
    let golden_dump = dir.join(format!("{name}.txt"));
    let scratch =
        std::env::temp_dir().join(format!("chunkfs-golden-{name}-{}.cfs", std::process::id()));
    write_basic(&scratch, align512, prefetch);
    let fresh = std::fs::read(&scratch).unwrap();
    let _ = std::fs::remove_file(&scratch);
    if std::env::var_os("CHUNKFS_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&golden, &fresh).unwrap();
        let cfs = Cfs::open(&golden).unwrap();
        std::fs::write(&golden_dump, chunkfs_format::inspect::dump(cfs.image())).unwrap();
    }
    // Old images keep opening, verifying and dumping the same.
    let cfs = Cfs::open(&golden).unwrap_or_else(|e| panic!("golden {name} no longer opens: {e}"));
    chunkfs_format::cfs::verify::verify_cfs(&golden, 1, &AtomicU64::new(0)).unwrap();
    let dump = std::fs::read_to_string(&golden_dump).unwrap();
    assert_eq!(
        chunkfs_format::inspect::dump(cfs.image()),
        dump,
        "dump of {name} changed"
    );
    // This packer still writes them byte for byte.
    assert!(
        std::fs::read(&golden).unwrap() == fresh,
        "{name}: the packer no longer reproduces the golden image (CHUNKFS_BLESS=1 rewrites it, after a format version decision)"
    );
}

#[test]
fn golden_basic() {
    check_golden("v1-basic", false, false);
}

#[test]
fn golden_basic_align512() {
    check_golden("v1-basic-align512", true, false);
}

/// The prefetch list (a compatible feature of version 1): older readers open this image and
/// ignore the list; this one keeps reading it.
#[test]
fn golden_basic_prefetch() {
    check_golden("v1-basic-prefetch", false, true);
    let cfs = Cfs::open(&golden_dir().join("v1-basic-prefetch.cfs")).unwrap();
    assert!(!cfs.image().prefetch.is_empty());
}
