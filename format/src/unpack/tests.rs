//! Unpack's own defences, with metadata built directly from the model and, where an invariant
//! would stop it earlier, without [`Image::validate`] (issue 6, item 5): whatever the metadata
//! says, nothing is created, changed or followed outside the target directory.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use super::*;
use crate::digest::Digest;
use crate::model::{ChunkInfo, DirEntry, Extent, FileData, Inode};

/// Chunk `i` is `data[i]`.
struct Chunks(Vec<Vec<u8>>);

impl ChunkSource for Chunks {
    fn read_chunk(
        &mut self,
        idx: ChunkIdx,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        self.0
            .get(idx as usize)
            .cloned()
            .ok_or_else(|| "no such chunk".into())
    }
}

fn inode(mode: u32, kind: InodeKind) -> Inode {
    Inode {
        mode,
        uid: 0,
        gid: 0,
        mtime_sec: 1_000_000,
        mtime_nsec: 0,
        xattrs: vec![],
        kind,
    }
}

fn dir(entries: &[(&[u8], u32)]) -> Inode {
    inode(
        mode::S_IFDIR | 0o755,
        InodeKind::Directory(
            entries
                .iter()
                .map(|&(name, inode)| DirEntry {
                    name: name.to_vec(),
                    inode,
                })
                .collect(),
        ),
    )
}

/// A file holding chunk 0 (`PAYLOAD`).
fn file() -> Inode {
    inode(
        mode::S_IFREG | 0o644,
        InodeKind::File(FileData {
            size: PAYLOAD.len() as u64,
            layout: FileLayout::Extents(vec![Extent {
                offset: 0,
                chunk: 0,
            }]),
        }),
    )
}

fn symlink(target: &[u8]) -> Inode {
    inode(mode::S_IFLNK | 0o777, InodeKind::Symlink(target.to_vec()))
}

const PAYLOAD: &[u8] = b"written by the image\n";

fn image(inodes: Vec<Inode>) -> Image {
    Image {
        chunks: vec![ChunkInfo {
            digest: Digest::of(PAYLOAD),
            size: PAYLOAD.len() as u32,
        }],
        packed_stream: vec![],
        inodes,
        prefetch: Vec::new(),
    }
}

/// A scratch directory holding `target` (where unpack writes) and `outside`, a directory
/// with one file that hostile metadata tries to reach.
struct Sandbox {
    _tmp: tempfile::TempDir,
    base: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("chunkfs-unpack-")
            .tempdir()
            .unwrap();
        let base = tmp.path().to_owned();
        std::fs::create_dir(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/keep"), b"original\n").unwrap();
        Self { _tmp: tmp, base }
    }

    fn target(&self) -> PathBuf {
        self.base.join("target")
    }

    fn outside(&self) -> String {
        self.base.join("outside").display().to_string()
    }

    /// Everything in the sandbox except under `target`: names, types, sizes, modes, mtimes.
    fn snapshot(&self) -> BTreeMap<PathBuf, (u32, u64, i64)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.base.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p == self.target() {
                    continue;
                }
                let m = std::fs::symlink_metadata(&p).unwrap();
                out.insert(p.clone(), (m.mode(), m.size(), m.mtime()));
                if m.is_dir() {
                    stack.push(p);
                }
            }
        }
        out
    }

    /// Unpacks without validation and checks that nothing outside the target changed.
    fn unpack_hostile(&self, image: &Image) -> Result<Report, Error> {
        let before = self.snapshot();
        let result = unpack_unvalidated(image, &mut Chunks(vec![PAYLOAD.to_vec()]), &self.target());
        assert_eq!(
            self.snapshot(),
            before,
            "unpack changed something outside its target"
        );
        assert_eq!(
            std::fs::read(self.base.join("outside/keep")).unwrap(),
            b"original\n"
        );
        if result.is_err() {
            assert!(
                !self.target().exists(),
                "a failed unpack left its target directory behind"
            );
        }
        result
    }
}

fn invalid(result: Result<Report, Error>, needle: &str) {
    match result {
        Err(Error {
            kind: ErrorKind::Invalid(problem),
            ..
        }) => assert!(problem.contains(needle), "{problem:?} lacks {needle:?}"),
        other => panic!("expected an Invalid error about {needle:?}, got {other:?}"),
    }
}

/// Found by the fuzz target `unpack`: metadata with no inode at all indexed a missing root.
#[test]
fn an_image_without_a_root_directory_is_refused() {
    let sandbox = Sandbox::new();
    invalid(sandbox.unpack_hostile(&image(vec![])), "root (inode 0)");
    invalid(
        sandbox.unpack_hostile(&image(vec![file()])),
        "root (inode 0)",
    );
}

#[test]
fn names_that_leave_the_directory_are_refused() {
    for name in [
        &b".."[..],
        b".",
        b"",
        b"a/b",
        b"../../outside/keep",
        b"/abs",
        b"x\0y",
    ] {
        let s = Sandbox::new();
        let img = image(vec![dir(&[(name, 1)]), file()]);
        assert!(img.validate().is_err(), "{name:?} passes validation");
        invalid(s.unpack_hostile(&img), "unsafe entry name");
    }
}

#[test]
fn a_symlink_is_never_followed_by_a_later_entry_of_the_same_name() {
    // "a" -> the outside directory, then "a" again as a directory holding a file and as a
    // file: with `*at` calls and O_NOFOLLOW | O_EXCL the second "a" cannot go through the link.
    let s = Sandbox::new();
    let outside = s.outside();
    let as_dir = image(vec![
        dir(&[(b"a", 1), (b"a", 2)]),
        symlink(outside.as_bytes()),
        dir(&[(b"keep", 3), (b"pwned", 3)]),
        file(),
    ]);
    let err = s.unpack_hostile(&as_dir).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Io { .. }), "{err}");
    let as_file = image(vec![
        dir(&[(b"a", 1), (b"a", 2)]),
        symlink(format!("{outside}/keep").as_bytes()),
        file(),
    ]);
    assert!(s.unpack_hostile(&as_file).is_err());
}

#[test]
fn absolute_and_climbing_symlinks_are_created_as_they_are() {
    let s = Sandbox::new();
    let outside = s.outside();
    let img = image(vec![
        dir(&[(b"abs", 1), (b"d", 2), (b"up", 3)]),
        symlink(outside.as_bytes()),
        dir(&[(b"f", 4)]),
        symlink(b"../../../../../../.."),
        file(),
    ]);
    img.validate().unwrap();
    let report = s.unpack_hostile(&img).unwrap();
    assert_eq!(report.files, 1);
    let t = s.target();
    assert_eq!(
        std::fs::read_link(t.join("abs")).unwrap(),
        Path::new(&outside)
    );
    assert_eq!(
        std::fs::read_link(t.join("up")).unwrap(),
        Path::new("../../../../../../..")
    );
    assert_eq!(std::fs::read(t.join("d/f")).unwrap(), PAYLOAD);
}

#[test]
fn hard_links_and_entries_cannot_point_outside_the_tree() {
    let s = Sandbox::new();
    // An entry naming an inode that does not exist.
    invalid(
        s.unpack_hostile(&image(vec![dir(&[(b"f", 1), (b"g", 99)]), file()])),
        "does not exist",
    );
    // A hard-linked directory, a directory containing itself, an entry naming the root: each
    // would make the walk revisit a directory (and, for a cycle, never end).
    for inodes in [
        vec![dir(&[(b"a", 1), (b"b", 1)]), dir(&[])],
        vec![dir(&[(b"a", 1)]), dir(&[(b"self", 1)])],
        vec![dir(&[(b"a", 1)]), dir(&[(b"root", 0)])],
    ] {
        invalid(s.unpack_hostile(&image(inodes)), "named more than once");
    }
}

#[test]
fn hard_links_work_across_paths_longer_than_path_max() {
    // 40 levels of 200-byte names: the first name's directory is 8 KB deep, twice PATH_MAX,
    // so linking to it needs the stepwise open.
    let name = vec![b'n'; 200];
    let depth = 40;
    let mut inodes = vec![dir(&[(b"first-at-root", 1), (b"nested", 2)]), file()];
    for level in 0..depth {
        let next = inodes.len() as u32 + 1;
        let entries: Vec<(&[u8], u32)> = if level + 1 == depth {
            vec![(b"deep-link", 1)]
        } else {
            vec![(&name, next)]
        };
        inodes.push(dir(&entries));
    }
    // The deepest file is first named deep (inode order is depth first), then at the root too.
    let mut deep_first = image(inodes.clone());
    deep_first.inodes[0] = dir(&[(b"nested", 2), (b"z-root-link", 1)]);
    for img in [image(inodes), deep_first] {
        let s = Sandbox::new();
        img.validate().unwrap();
        s.unpack_hostile(&img).unwrap();
        let t = s.target();
        let mut deep = t.join("nested");
        for _ in 0..depth - 1 {
            deep.push(std::str::from_utf8(&name).unwrap());
        }
        deep.push("deep-link");
        let root_name = if t.join("first-at-root").exists() {
            "first-at-root"
        } else {
            "z-root-link"
        };
        let a = std::fs::metadata(t.join(root_name)).unwrap();
        // `metadata` of the deep path would exceed PATH_MAX: stat it through its directory.
        let b = nix::sys::stat::fstatat(
            open_deep(&t, &deep).as_fd(),
            "deep-link",
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        assert_eq!(a.ino(), b.st_ino, "the two names are not one inode");
        assert_eq!(a.nlink(), 2);
    }
}

/// Opens the parent directory of `deep` (inside `base`) one component at a time.
fn open_deep(base: &Path, deep: &Path) -> OwnedFd {
    let rel = deep.parent().unwrap().strip_prefix(base).unwrap();
    let mut fd = openat(
        nix::fcntl::AT_FDCWD,
        base,
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    for c in rel.components() {
        fd = openat(
            fd.as_fd(),
            c.as_os_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .unwrap();
    }
    fd
}

#[test]
fn the_deepest_tree_with_the_longest_names_unpacks_in_bounded_memory() {
    // 2048 levels of 255-byte names (a 512 KiB path), a hard link between the root and the
    // bottom: the walk keeps one path, not one per level.
    let s = Sandbox::new();
    let name = vec![b'x'; 255];
    let depth = crate::model::limits::DEPTH_MAX;
    let mut inodes = vec![dir(&[(b"a", 2), (b"f", 1)]), file()];
    for level in 0..depth {
        let next = inodes.len() as u32 + 1;
        let entries: Vec<(&[u8], u32)> = if level + 1 == depth {
            vec![(b"link", 1)]
        } else {
            vec![(&name, next)]
        };
        inodes.push(dir(&entries));
    }
    inodes[0] = dir(&[(b"a", 2), (b"f", 1)]);
    let img = image(inodes);
    img.validate().unwrap();
    let report = s.unpack_hostile(&img).unwrap();
    assert_eq!(report.directories, depth as u64 + 1);
    std::fs::remove_dir_all(s.target()).unwrap();
}
