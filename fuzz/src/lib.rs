//! Shared harness code of the chunkfs fuzz targets: scratch files, splitting one input into
//! several documents, and the fix-ups that let mutated inputs get past checksums a fuzzer cannot
//! forge (the parsers' behaviour on bad checksums is trivial and tested elsewhere).
//!
//! Every target hands the library exactly the bytes it would read from disk. With
//! `CHUNKFS_FUZZ_SAVE=DIR` set, a target also copies the files it wrote into `DIR`, so a crash
//! found by libFuzzer can be turned into a regression test that replays the effective input
//! (the fixed-up bytes) without the harness.

pub mod targets;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

/// Separates the documents of one fuzz input (layers, blobs).
pub const SEPARATOR: &[u8] = b"\n--8<--\n";

/// A per-process scratch directory on tmpfs, emptied at start.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("CHUNKFS_FUZZ_TMP")
            .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
        let dir = base.join(format!("chunkfs-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    })
}

/// A fresh, empty directory `name` in the scratch directory.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Writes `bytes` to `path` and, with `CHUNKFS_FUZZ_SAVE`, a copy into that directory.
pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write a scratch file");
    save(path, bytes);
}

/// Copies `bytes` into `$CHUNKFS_FUZZ_SAVE/<path relative to the scratch directory>`.
pub fn save(path: &Path, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("CHUNKFS_FUZZ_SAVE") {
        let rel = path.strip_prefix(scratch()).unwrap_or(path);
        let to = Path::new(&dir).join(rel);
        if let Some(parent) = to.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(to, bytes);
    }
}

/// The whole 8-byte words of `data` taken as raw Cap'n Proto metadata, wrapped in a metadata
/// blob (one zstd frame declaring its size) and decoded, not validated: `None` when empty or
/// when it does not decode.
pub fn decode_raw_metadata(data: &[u8]) -> Option<chunkfs_format::model::Image> {
    let raw = &data[..data.len() / 8 * 8];
    if raw.is_empty() {
        return None;
    }
    let mut c = zstd::bulk::Compressor::new(1).expect("zstd");
    c.include_contentsize(true).expect("zstd");
    let blob = c.compress(raw).expect("zstd");
    chunkfs_format::schema::codec::decode_blob(&blob).ok()
}

/// Splits `data` at every [`SEPARATOR`].
pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        out.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

/// sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// The bytes `[offset, offset + len)` of `b` if they lie inside it.
fn range(b: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    b.get(start..end)
}

/// Rewrites the digests of a `.cfs` header (docs/format.md §6.1) to match the regions they
/// cover, where those lie inside `b`, then the header checksum. Returns false if `b` is too
/// short to hold a header.
pub fn fix_cfs_digests(b: &mut [u8]) -> bool {
    if b.len() < 1024 {
        return false;
    }
    let region = |b: &[u8], at: usize| (u64_at(b, at), u64_at(b, at + 8));
    let (meta_off, meta_len) = region(b, 112);
    let (index_off, index_len) = region(b, 128);
    let (head_off, head_len) = region(b, 64);
    let (erofs_off, erofs_len) = region(b, 96);
    if let Some(d) = range(b, meta_off, meta_len).map(sha256) {
        b[144..176].copy_from_slice(&d);
    }
    if let (Some(head), Some(meta)) = (range(b, head_off, head_len), range(b, erofs_off, erofs_len))
    {
        let mut h = Sha256::new();
        h.update(head);
        h.update(meta);
        let d: [u8; 32] = h.finalize().into();
        b[176..208].copy_from_slice(&d);
    }
    if let Some(d) = range(b, index_off, index_len).map(sha256) {
        b[208..240].copy_from_slice(&d);
    }
    let sum = sha256(&b[..992]);
    b[992..1024].copy_from_slice(&sum);
    true
}

/// The chunk index of a `.cfs` as its header locates it (unchecked), for giving the FUSE reader
/// a digest table.
pub fn cfs_index(b: &[u8]) -> Option<&[u8]> {
    if b.len() < 1024 || b[..8] != *b"\x89CFS\r\n\x1a\n" {
        return None;
    }
    range(b, u64_at(b, 128), u64_at(b, 136))
}

/// Replaces the placeholders of an OCI bundle (see `tools/fuzz-seeds`): in document `i`, `@k`
/// becomes `sha256:<hex of document k>` and `#k` its length in bytes, for every `k > i` (so
/// index.json names manifests, manifests name configs and layers, configs name layers).
/// Documents are resolved from the last to the first.
pub fn resolve_placeholders(docs: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); docs.len()];
    for i in (0..docs.len()).rev() {
        let doc = docs[i];
        let mut resolved = Vec::with_capacity(doc.len());
        let mut p = 0;
        while p < doc.len() {
            let c = doc[p];
            if c == b'@' || c == b'#' {
                let digits = doc[p + 1..]
                    .iter()
                    .take_while(|d| d.is_ascii_digit())
                    .count()
                    .min(4);
                let k = std::str::from_utf8(&doc[p + 1..p + 1 + digits])
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok());
                if let Some(k) = k.filter(|&k| k > i && k < docs.len()) {
                    if c == b'@' {
                        resolved.extend_from_slice(b"sha256:");
                        resolved.extend_from_slice(hex(&sha256(&out[k])).as_bytes());
                    } else {
                        resolved.extend_from_slice(out[k].len().to_string().as_bytes());
                    }
                    p += 1 + digits;
                    continue;
                }
            }
            resolved.push(c);
            p += 1;
        }
        out[i] = resolved;
    }
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that nothing but `allowed` exists in `dir` (a sentinel check that an operation on a
/// sibling directory wrote nothing outside it).
pub fn assert_only(dir: &Path, allowed: &[&str]) {
    for e in std::fs::read_dir(dir)
        .expect("list the scratch directory")
        .flatten()
    {
        let name = e.file_name();
        assert!(
            allowed.iter().any(|a| name == std::ffi::OsStr::new(a)),
            "{}: unexpected entry {:?}: something was written outside its target",
            dir.display(),
            name
        );
    }
}
