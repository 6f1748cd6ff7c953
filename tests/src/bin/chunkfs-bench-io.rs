//! `chunkfs-bench-io`: the measuring end of `tools/bench`, one JSON object per run on stdout.
//!
//! ```text
//! chunkfs-bench-io readall DIR [--threads N]
//! chunkfs-bench-io randread DIR [--count N] [--block BYTES] [--min-size BYTES] [--seed S]
//! chunkfs-bench-io limits [--sample FILE]
//! ```
//!
//! `readall` reads every regular file under DIR once (hard links once per inode), in the order
//! `tar` would (sorted names, pre-order), with 1 MiB reads. `randread` preads `--count` blocks at
//! block-aligned random offsets of the files of at least `--min-size` bytes, a file chosen with
//! probability proportional to its size; the files are listed and opened before the clock
//! starts, so the figure is data reads only. `limits` measures what bounds every figure on this
//! machine: memory copy bandwidth, sha256 and zstd (level 9 on 128 KiB pieces, as chunkfs
//! compresses) per core.
//!
//! Its own code is kept out of the way of what it measures: no per-read allocation, one buffer.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

const USAGE: &str = "usage: chunkfs-bench-io readall DIR [--threads N] | \
    randread DIR [--count N] [--block BYTES] [--min-size BYTES] [--seed S] | limits [--sample FILE]";

fn main() {
    if let Err(e) = run() {
        eprintln!("chunkfs-bench-io: {e:#}");
        std::process::exit(1);
    }
}

/// Parsed `--name value` options after the positional arguments.
struct Options(Vec<(String, String)>);

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(name) = it.next() {
            let Some(name) = name.strip_prefix("--") else {
                bail!("unexpected argument {name:?}\n{USAGE}");
            };
            let value = it
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            out.push((name.to_string(), value.clone()));
        }
        Ok(Self(out))
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.iter().rev().find(|(n, _)| n == name) {
            None => Ok(default),
            Some((_, v)) => v
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {v:?}: {e}")),
        }
    }

    fn check_known(&self, known: &[&str]) -> Result<()> {
        match self.0.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => bail!("unknown option --{n}\n{USAGE}"),
            None => Ok(()),
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args.split_first().context(USAGE)?;
    let out = match cmd.as_str() {
        "readall" => {
            let (dir, rest) = rest.split_first().context(USAGE)?;
            let opts = Options::parse(rest)?;
            opts.check_known(&["threads"])?;
            readall(Path::new(dir), opts.get("threads", 1usize)?.max(1))?
        }
        "randread" => {
            let (dir, rest) = rest.split_first().context(USAGE)?;
            let opts = Options::parse(rest)?;
            opts.check_known(&["count", "block", "min-size", "seed"])?;
            randread(
                Path::new(dir),
                opts.get("count", 2000usize)?,
                opts.get("block", 4096u64)?.max(1),
                opts.get("min-size", 1u64 << 20)?,
                opts.get("seed", 1u64)?,
            )?
        }
        "limits" => {
            let opts = Options::parse(rest)?;
            opts.check_known(&["sample"])?;
            let sample: String = opts.get("sample", String::new())?;
            limits(
                (!sample.is_empty())
                    .then(|| PathBuf::from(sample))
                    .as_deref(),
            )?
        }
        _ => bail!("unknown command {cmd:?}\n{USAGE}"),
    };
    println!("{out}");
    Ok(())
}

/// A regular file found by [`walk`].
struct Found {
    path: PathBuf,
    size: u64,
}

/// Every regular file under `dir`, once per inode, in the order `tar` or `cp -r` visit them on
/// a file system that lists names sorted: pre-order, a subdirectory entered as soon as its name
/// comes up. Symlinks are not followed. Also counts the entries seen (all types).
fn walk(dir: &Path) -> Result<(Vec<Found>, u64)> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let mut entries = 0u64;
    // A stack of directories being listed, each with its remaining names in reverse order.
    let mut stack = vec![list(dir)?];
    while let Some(names) = stack.last_mut() {
        let Some(path) = names.pop() else {
            stack.pop();
            continue;
        };
        entries += 1;
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if meta.is_dir() {
            stack.push(list(&path)?);
        } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
            files.push(Found {
                path,
                size: meta.len(),
            });
        }
    }
    Ok((files, entries))
}

/// The entries of a directory, sorted, in reverse (so that `pop` gives the smallest).
fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    names.sort_by(|a, b| b.cmp(a));
    Ok(names)
}

fn readall(dir: &Path, threads: usize) -> Result<serde_json::Value> {
    let start = Instant::now();
    let (files, entries) = walk(dir)?;
    let listed = start.elapsed().as_secs_f64();
    let next = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let read_one = |buf: &mut [u8], f: &Found| -> Result<u64> {
        let file =
            File::open(&f.path).with_context(|| format!("cannot open {}", f.path.display()))?;
        let mut pos = 0u64;
        loop {
            let n = file
                .read_at(buf, pos)
                .with_context(|| format!("cannot read {} at {pos}", f.path.display()))?;
            if n == 0 {
                break;
            }
            pos += n as u64;
        }
        if pos != f.size {
            bail!(
                "{}: read {pos} bytes, stat says {}",
                f.path.display(),
                f.size
            );
        }
        Ok(pos)
    };
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(f) = files.get(i) else { return Ok(()) };
                        bytes.fetch_add(read_one(&mut buf, f)?, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    Ok(json!({
        "entries": entries, "files": files.len(), "bytes": bytes.load(Ordering::Relaxed),
        "threads": threads, "list_secs": listed, "secs": secs,
    }))
}

/// splitmix64: a tiny deterministic generator, so every contender gets the same offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant at these sizes.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn randread(
    dir: &Path,
    count: usize,
    block: u64,
    min_size: u64,
    seed: u64,
) -> Result<serde_json::Value> {
    let (files, _) = walk(dir)?;
    let files: Vec<Found> = files
        .into_iter()
        .filter(|f| f.size >= min_size.max(block))
        .collect();
    if files.is_empty() {
        bail!(
            "no file of at least {min_size} bytes under {}",
            dir.display()
        );
    }
    let opened = files
        .iter()
        .map(|f| File::open(&f.path).with_context(|| format!("cannot open {}", f.path.display())))
        .collect::<Result<Vec<_>>>()?;
    // Cumulative block counts: a file is picked with probability proportional to its size.
    let mut cumulative = Vec::with_capacity(files.len());
    let mut total_blocks = 0u64;
    for f in &files {
        total_blocks += f.size / block;
        cumulative.push(total_blocks);
    }
    let mut rng = Rng(seed);
    let plan: Vec<(usize, u64)> = (0..count)
        .map(|_| {
            let b = rng.below(total_blocks);
            let i = cumulative.partition_point(|&c| c <= b);
            let first = cumulative[i] - files[i].size / block;
            (i, (b - first) * block)
        })
        .collect();
    let mut buf = vec![0u8; block as usize];
    let mut lat_us = Vec::with_capacity(count);
    let start = Instant::now();
    for &(i, offset) in &plan {
        let t = Instant::now();
        let n = opened[i]
            .read_at(&mut buf, offset)
            .with_context(|| format!("cannot read {} at {offset}", files[i].path.display()))?;
        if n == 0 {
            bail!("{}: nothing at {offset}", files[i].path.display());
        }
        lat_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let secs = start.elapsed().as_secs_f64();
    lat_us.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat_us
            .get(((lat_us.len() as f64 - 1.0) * p) as usize)
            .copied()
    };
    Ok(json!({
        "files": files.len(), "reads": count, "block": block, "secs": secs,
        "iops": count as f64 / secs, "p50_us": pct(0.5), "p99_us": pct(0.99),
    }))
}

/// Bytes per second of `f` repeated until at least `min_secs` have passed (`f` returns bytes).
fn rate(min_secs: f64, mut f: impl FnMut() -> u64) -> f64 {
    let start = Instant::now();
    let mut bytes = 0u64;
    loop {
        bytes += f();
        let secs = start.elapsed().as_secs_f64();
        if secs >= min_secs {
            return bytes as f64 / secs;
        }
    }
}

fn limits(sample: Option<&Path>) -> Result<serde_json::Value> {
    const PIECE: usize = 128 * 1024;
    // Memory bandwidth: copies of a buffer far larger than the caches.
    let src: Vec<u8> = (0..256usize << 20)
        .map(|i| (i as u8) ^ ((i >> 12) as u8))
        .collect();
    let mut dst = vec![0u8; src.len()];
    let memcpy = rate(1.0, || {
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
        src.len() as u64
    });
    drop(dst);
    // sha256 on 128 KiB pieces, one core (what the reader and the packer do per chunk).
    let sha = rate(1.0, || {
        for piece in src[..64 << 20].chunks(PIECE) {
            std::hint::black_box(Sha256::digest(piece));
        }
        64 << 20
    });
    // zstd on real data when given (a tar of a root filesystem), else the synthetic buffer.
    let data = match sample {
        Some(p) => {
            let mut d = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            d.truncate(64 << 20);
            d
        }
        None => src[..64 << 20].to_vec(),
    };
    let mut enc = zstd::bulk::Compressor::new(9)?;
    let start = Instant::now();
    let frames = data
        .chunks(PIECE)
        .map(|p| enc.compress(p))
        .collect::<std::io::Result<Vec<_>>>()?;
    let compress = data.len() as f64 / start.elapsed().as_secs_f64();
    let stored: usize = frames.iter().map(Vec::len).sum();
    let mut dec = zstd::bulk::Decompressor::new()?;
    let mut out = vec![0u8; PIECE];
    let decompress = rate(1.0, || {
        for f in &frames {
            // Pieces are at most PIECE bytes, the buffer's size.
            let _ = std::hint::black_box(dec.decompress_to_buffer(f, &mut out[..]));
        }
        data.len() as u64
    });
    Ok(json!({
        "memcpy_bytes_per_s": memcpy, "sha256_bytes_per_s": sha,
        "zstd9_compress_bytes_per_s": compress, "zstd_decompress_bytes_per_s": decompress,
        "zstd9_ratio": data.len() as f64 / stored.max(1) as f64,
        "sample_bytes": data.len(),
    }))
}
