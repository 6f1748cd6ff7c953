//! Unpack's own defences (docs/robustness.md §4): raw Cap'n Proto metadata, decoded but NOT
//! validated, unpacked into `sandbox/target` next to `sandbox/outside`. Whatever the metadata
//! says (`..`, `/` in names, symlinks then entries of the same name, cycles, hard links
//! anywhere), nothing outside the target may change, and a failed unpack leaves no target.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use chunkfs_format::model::ChunkIdx;
use chunkfs_format::unpack::ChunkSource;

/// Zeros of each chunk's size, within a budget so that unvalidated extents cannot fill tmpfs.
struct Zeros<'a> {
    sizes: &'a [u32],
    budget: u64,
}

impl ChunkSource for Zeros<'_> {
    fn read_chunk(
        &mut self,
        idx: ChunkIdx,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        let size = *self.sizes.get(idx as usize).ok_or("no such chunk")?;
        if size > 64 << 10 || u64::from(size) > self.budget {
            return Err("chunk over the harness's budget".into());
        }
        self.budget -= u64::from(size);
        Ok(vec![0x5a; size as usize])
    }
}

/// Names, types, sizes and mtimes of everything under `dir` except `skip`.
fn snapshot(dir: &Path, skip: &Path) -> Vec<(std::path::PathBuf, u32, u64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read the sandbox").flatten() {
            let p = e.path();
            if p == skip {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            out.push((p.clone(), m.mode(), m.size(), m.mtime()));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs one input, as the fuzz target `unpack` does; panics on a bug.
pub fn run(data: &[u8]) {
    let Some(image) = crate::decode_raw_metadata(data) else {
        return;
    };
    // Keep each run small: the walk itself is what is under test.
    if image.inodes.len() > 4096 {
        return;
    }
    let sandbox = crate::fresh_dir("unpack");
    std::fs::create_dir(sandbox.join("outside")).expect("outside");
    std::fs::write(sandbox.join("outside/keep"), b"keep").expect("keep");
    let target = sandbox.join("target");
    let before = snapshot(&sandbox, &target);
    let sizes: Vec<u32> = image.chunks.iter().map(|c| c.size).collect();
    let mut chunks = Zeros {
        sizes: &sizes,
        budget: 4 << 20,
    };
    let result = chunkfs_format::unpack::fuzz_unpack_unvalidated(&image, &mut chunks, &target);
    assert_eq!(
        snapshot(&sandbox, &target),
        before,
        "unpack changed something outside its target"
    );
    assert_eq!(
        std::fs::read(sandbox.join("outside/keep")).expect("keep"),
        b"keep"
    );
    if result.is_err() {
        assert!(!target.exists(), "a failed unpack left its target");
    }
}
