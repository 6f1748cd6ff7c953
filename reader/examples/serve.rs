//! Mounts an EROFS image with the FUSE reader until Enter is pressed (or stdin closes).
//!
//! `serve IMAGE MOUNTPOINT [--digests TABLE]... [--device FILE]... [--threads N] [--cache-mb N]
//! [--prefetch N] [--fill-around N]`
//!
//! `--trust` instead derives a digest table from the image itself by decompressing every
//! cluster, so that any EROFS image (e.g. from mkfs.erofs) can be served: verification is then
//! meaningless, but mapping, decompression, caching and FUSE are exercised and can be compared
//! with a kernel mount. For development and benchmarks only.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;

use chunkfs_kernel_abi::digest_table::{self, DIGEST_FLAG_ZSTD, DigestEntry};
use chunkfs_kernel_abi::parse::{Kind, MapKind};
use chunkfs_kernel_abi::{Descriptor, Le16, Le32, Le64, Pod};
use chunkfs_reader::{Config, DigestSource, Reader};
use sha2::{Digest, Sha256};

fn main() {
    if let Err(e) = run() {
        eprintln!("serve: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let image = PathBuf::from(
        args.next()
            .ok_or("usage: serve IMAGE MOUNTPOINT [options]")?,
    );
    let mountpoint = PathBuf::from(
        args.next()
            .ok_or("usage: serve IMAGE MOUNTPOINT [options]")?,
    );
    let (mut digests, mut devices, mut trust, mut threads, mut cache_mb) =
        (vec![], vec![], false, None, None);
    let mut prefetch = None;
    let mut fill_around = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--digests" => digests.push(DigestSource {
                bytes: std::fs::read(args.next().ok_or("--digests FILE")?)?,
                device: None,
            }),
            "--device" => devices.push(PathBuf::from(args.next().ok_or("--device FILE")?)),
            "--trust" => trust = true,
            "--prefetch" => prefetch = Some(args.next().ok_or("--prefetch N")?.parse()?),
            "--threads" => threads = Some(args.next().ok_or("--threads N")?.parse()?),
            "--cache-mb" => cache_mb = Some(args.next().ok_or("--cache-mb N")?.parse::<u64>()?),
            "--fill-around" => fill_around = Some(args.next().ok_or("--fill-around N")?.parse()?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if trust {
        digests.push(DigestSource {
            bytes: derive_table(&std::fs::read(&image)?)?,
            device: Some(0),
        });
    }
    let mut config = Config::new(&image, devices, digests);
    config.debug = true;
    if let Some(n) = prefetch {
        config.prefetch_chunks = n;
    }
    if let Some(n) = fill_around {
        config.fill_around = n;
    }
    if let Some(t) = threads {
        config.threads = t;
    }
    if let Some(mb) = cache_mb {
        config.cache_bytes = mb << 20;
    }
    let reader = Reader::open(config)?;
    eprintln!(
        "serve: {} digests; mounted at {}; press Enter to unmount",
        reader.digest_count(),
        mountpoint.display()
    );
    let mount = reader.mount(&mountpoint)?;
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    mount.unmount()?;
    Ok(())
}

/// A digest table for every cluster of every regular file (and the packed inode) of `image`.
fn derive_table(image: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let d = Descriptor::parse(image).map_err(|e| e.to_string())?;
    let mut entries: BTreeMap<u64, DigestEntry> = BTreeMap::new();
    let mut stack = vec![d.root_nid()];
    stack.extend(d.packed().map(|p| p.nid()));
    let mut seen = std::collections::HashSet::new();
    while let Some(nid) = stack.pop() {
        if !seen.insert(nid) {
            continue;
        }
        let i = d.inode(nid).ok_or("bad nid")?;
        if i.kind() == Kind::Dir {
            for e in i.entries().into_iter().flatten() {
                let e = e.map_err(|e| e.to_string())?;
                if e.name != b"." && e.name != b".." {
                    stack.push(e.nid);
                }
            }
            continue;
        }
        let mut pos = 0;
        while let Some(m) = i.map(pos) {
            pos = m.logical_start + m.logical_len;
            let (offset, bytes, zstd) = match m.kind {
                MapKind::Encoded {
                    device: 0,
                    offset,
                    len,
                    ..
                } => {
                    let cluster = &image[offset as usize..(offset + len) as usize];
                    let start = cluster.iter().position(|&b| b != 0).unwrap_or(0);
                    (offset + start as u64, &cluster[start..], true)
                }
                MapKind::Raw { device: 0, offset } => (
                    offset,
                    &image[offset as usize..(offset + m.logical_len) as usize],
                    false,
                ),
                MapKind::Interlaced { device: 0, offset } => {
                    let end = offset + u64::from(d.block_size());
                    (offset, &image[offset as usize..end as usize], false)
                }
                _ => continue,
            };
            let raw = if zstd {
                zstd::bulk::decompress(bytes, 12 << 20)?
            } else {
                bytes.to_vec()
            };
            if entries
                .get(&offset)
                .is_some_and(|e| e.stored_len.get() as usize >= bytes.len())
            {
                continue;
            }
            entries.insert(
                offset,
                DigestEntry {
                    offset: Le64::new(offset),
                    device: Le16::new(0),
                    flags: Le16::new(if zstd { DIGEST_FLAG_ZSTD } else { 0 }),
                    stored_len: Le32::new(bytes.len() as u32),
                    raw_len: Le32::new(raw.len() as u32),
                    reserved: Le32::new(0),
                    reserved2: Le64::new(0),
                    sha256: Sha256::digest(&raw).into(),
                },
            );
        }
    }
    let mut t = digest_table::header(entries.len() as u64)
        .as_bytes()
        .to_vec();
    for e in entries.values() {
        t.extend_from_slice(e.as_bytes());
    }
    Ok(t)
}
