//! Shared by the `store_*` tests: trees packed into OCI layouts by the format crate, what a
//! mount would know of them (manifest, packs, chunk list), and child processes that run a
//! test binary's `worker` entry point.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use chunkfs_distribution::oci::convert::{Dest, Source, convert};
use chunkfs_distribution::oci::read::open_image;
use chunkfs_distribution::store::ImageSpec;
use chunkfs_format::build::BuildOptions;
use chunkfs_format::cfs::write::PackOptions;
use chunkfs_format::chunk::ChunkParams;
use chunkfs_format::digest::Digest;
use chunkfs_format::model::ChunkInfo;
use chunkfs_format::translate::ExtentLayout;

/// A directory on a disk filesystem (fsync and sparse files behave differently on tmpfs).
pub fn test_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("chunkfs-store-test-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = [
        "store", "chunk", "frame", "pack", "window", "state", "lock", "sync",
    ];
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 8) as usize].as_bytes());
        out.push(if x % 11 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// A tree of a few MB; `variant` > 0 changes one file and adds another (most chunks shared).
pub fn make_tree(root: &Path, variant: u64) {
    make_tree_seeded(root, variant, 0);
}

/// [`make_tree`] whose content depends on `seed` too: trees of different seeds share nothing.
pub fn make_tree_seeded(root: &Path, variant: u64, seed: u64) {
    let seed = seed * 1_000_000;
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), format!("box{seed}\n")).unwrap();
    for i in 0..6u64 {
        std::fs::write(
            root.join(format!("usr/lib/bin{i}")),
            noise(300_000, seed + i + 1),
        )
        .unwrap();
        std::fs::write(
            root.join(format!("usr/lib/doc{i}")),
            text(200_000, seed + i + 100),
        )
        .unwrap();
    }
    if variant > 0 {
        std::fs::write(
            root.join("usr/lib/bin2"),
            noise(300_000, seed + 1000 + variant),
        )
        .unwrap();
        std::fs::write(
            root.join(format!("usr/lib/new{variant}")),
            noise(150_000, seed + 2000 + variant),
        )
        .unwrap();
    }
}

/// Packs `tree` into the layout `layout` as `tag`, with small chunks (many frames per pack).
pub fn pack(tree: &Path, layout: &Path, tag: &str, align512: bool) {
    let options = PackOptions {
        build: BuildOptions {
            chunking: ChunkParams {
                min: 4096,
                avg: 16384,
                max: 65536,
            },
            level: 3,
            jobs: 2,
            ..BuildOptions::default()
        },
        align512,
        ..PackOptions::default()
    };
    convert(
        Source::Dir(tree),
        Dest::Layout { dir: layout, tag },
        &options,
        |_| {},
    )
    .unwrap();
}

/// What a mount knows of an image once its manifest and metadata are checked.
pub struct TestImage {
    pub layout: PathBuf,
    pub manifest: Digest,
    pub metadata: Digest,
    pub packs: Vec<(Digest, u64)>,
    pub chunks: Vec<ChunkInfo>,
    pub reference: String,
    pub blobs: Vec<Digest>,
}

impl TestImage {
    /// The image tagged `tag` in `layout`.
    pub fn open(layout: &Path, tag: &str) -> TestImage {
        let img = open_image(layout, Some(tag)).unwrap();
        let manifest = Digest::from_oci(&img.manifest.digest).unwrap();
        TestImage {
            layout: layout.to_owned(),
            manifest,
            metadata: img.metadata_digest,
            packs: img.packs.iter().map(|p| (p.digest, p.size)).collect(),
            chunks: img.image.chunks.clone(),
            reference: format!("oci:{}:{tag}", layout.display()),
            blobs: vec![manifest, img.metadata_digest],
        }
    }

    /// The spec a plan takes.
    pub fn spec(&self, extents: ExtentLayout) -> ImageSpec<'_> {
        ImageSpec {
            reference: &self.reference,
            manifest: self.manifest,
            blobs: &self.blobs,
            packs: &self.packs,
            chunks: &self.chunks,
            extents,
        }
    }

    /// The bytes of a blob of the layout.
    pub fn blob(&self, d: &Digest) -> Vec<u8> {
        std::fs::read(self.layout.join("blobs/sha256").join(d.to_hex())).unwrap()
    }
}

/// The environment variable that makes a test binary's `worker` test act.
pub const WORKER_ENV: &str = "CHUNKFS_STORE_WORKER";

/// Starts this test binary as a child running only its `worker` test, with `args` in
/// [`WORKER_ENV`] (space-separated); its stdout is piped.
pub fn spawn_worker(args: &[String]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker", "--nocapture", "--test-threads=1"])
        .env(WORKER_ENV, args.join(" "))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The worker's arguments, if this process is a worker.
pub fn worker_args() -> Option<Vec<String>> {
    std::env::var(WORKER_ENV)
        .ok()
        .map(|s| s.split(' ').map(str::to_owned).collect())
}

/// The `RESULT ...` line a worker printed, split into words (after `RESULT`).
pub fn worker_result(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "worker failed: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no RESULT line in {text}"));
    line.split(' ').map(str::to_owned).collect()
}

/// A child process killed and reaped when dropped (a failing test leaves no worker behind).
pub struct KillOnDrop(pub Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
