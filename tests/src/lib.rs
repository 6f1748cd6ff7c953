//! Shared fixtures for the integration tests: tree builders, tree comparison, mount guards that
//! always unmount, locating the built binaries, and the concurrent read check of a mount.

pub mod corrupt;
pub mod mount;
pub mod oci;
pub mod reads;
pub mod registry;
pub mod tree;

use std::path::PathBuf;

/// A fresh, empty scratch directory on a disk file system (file-backed EROFS mounts refuse
/// tmpfs, which /tmp may be): `/var/tmp/chunkfs-tests/<name>-<pid>`. Removes what a previous
/// run left there, and what dead test processes left anywhere ([`mount::sweep_dead_scratch`]).
pub fn scratch_dir(name: &str) -> PathBuf {
    mount::sweep_dead_scratch();
    let dir =
        PathBuf::from("/var/tmp/chunkfs-tests").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create the scratch directory {}: {e}", dir.display());
    }
    dir
}

/// The chunk digests of the regular file `name` in the root directory of `image`, in file
/// order. Panics (failing the test) when there is no such file or it is in the packed stream.
pub fn chunks_of(
    image: &chunkfs_format::model::Image,
    name: &str,
) -> Vec<chunkfs_format::digest::Digest> {
    use chunkfs_format::model::{FileLayout, InodeKind};
    let InodeKind::Directory(entries) = &image.inodes[0].kind else {
        panic!("no root directory");
    };
    let e = entries
        .iter()
        .find(|e| e.name == name.as_bytes())
        .unwrap_or_else(|| panic!("no {name} in the root"));
    let InodeKind::File(f) = &image.inodes[e.inode as usize].kind else {
        panic!("{name} is not a file");
    };
    let FileLayout::Extents(xs) = &f.layout else {
        panic!("{name} is in the packed stream");
    };
    xs.iter()
        .map(|x| image.chunks[x.chunk as usize].digest)
        .collect()
}
