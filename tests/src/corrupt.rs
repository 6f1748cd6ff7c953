//! The corruption matrix (issue 6, item 3): a compact tree with every kind of inode, and the
//! mutated copies of a packed `.cfs` image to try: bytes flipped at positions spread over every
//! region of the file, pages zeroed, truncations at many lengths, garbage appended. Each case
//! says which regions it touches, so a test can check that `verify` names one of them.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use chunkfs_format::cfs::header::Header;
use chunkfs_kernel_abi::digest_table::DigestTable;

use crate::tree::pseudo_random;

/// Builds the matrix's source tree in `dir` (created): incompressible and compressible files of
/// several chunks, a sparse file, small files in the packed stream (one duplicate), an empty
/// file, hard links, relative and absolute symlinks, a user xattr, nested directories. About
/// 1.1 MB of data, so that hundreds of unpacks stay cheap.
pub fn make_matrix_tree(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir.join("data"))?;
    fs::create_dir_all(dir.join("small"))?;
    fs::create_dir_all(dir.join("deep/a/b/c"))?;
    fs::write(dir.join("data/random"), pseudo_random(700_000, 11))?;
    let text: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("line {i} of a compressible file\n").into_bytes())
        .take(300_000)
        .collect();
    fs::write(dir.join("data/text"), &text)?;
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(dir.join("data/sparse"))?;
        f.write_all_at(&pseudo_random(100_000, 12), 1 << 20)?;
        f.set_len(2 << 20)?;
    }
    for i in 0..20u32 {
        fs::write(
            dir.join(format!("small/{i:02}")),
            format!("small file {i}\n").repeat(i as usize * 7 + 1),
        )?;
    }
    fs::write(dir.join("small/dup"), "small file 0\n")?;
    fs::write(dir.join("empty"), b"")?;
    fs::write(dir.join("deep/a/b/c/file"), b"at the bottom\n")?;
    fs::hard_link(dir.join("data/text"), dir.join("text-link"))?;
    fs::hard_link(dir.join("small/03"), dir.join("deep/a/small-link"))?;
    symlink("data/text", dir.join("sym"))?;
    symlink("/etc/passwd", dir.join("abs"))?;
    xattr::set(dir.join("data/text"), "user.matrix", b"value")?;
    Ok(())
}

/// A region of a `.cfs` file and the words `verify` must use when it finds damage there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    /// Short name, for reports.
    pub name: &'static str,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// `verify` must name one of these when a byte of the region is damaged.
    pub needles: &'static [&'static str],
}

/// Every region of a valid `.cfs`, in file order, covering `[0, image_len)` without gaps:
/// header, EROFS head area, each chunk frame and the padding around frames, the padding before
/// the EROFS metadata area, the EROFS metadata area, the metadata blob, the chunk index and
/// the padding after it.
pub fn cfs_regions(bytes: &[u8]) -> Vec<Region> {
    let h = Header::parse(bytes).expect("a valid image");
    let table = DigestTable::parse(&bytes[h.index.offset as usize..h.index.end() as usize])
        .expect("a valid index");
    let mut out = vec![
        Region {
            name: "header",
            start: 0,
            end: 1024,
            needles: &["header", "not a chunkfs image", "version"],
        },
        Region {
            name: "EROFS head area",
            start: 1024,
            end: 4096,
            needles: &["EROFS"],
        },
    ];
    let mut pos = h.chunks.offset;
    for e in table.iter() {
        let (off, len) = (e.offset.get(), u64::from(e.stored_len.get()));
        if off > pos {
            out.push(Region {
                name: "chunk region padding",
                start: pos,
                end: off,
                needles: &["chunk region padding"],
            });
        }
        out.push(Region {
            name: "chunk frame",
            start: off,
            end: off + len,
            needles: &["chunk "],
        });
        pos = off + len;
    }
    let mut push = |name, start: u64, end: u64, needles| {
        if end > start {
            out.push(Region {
                name,
                start,
                end,
                needles,
            });
        }
    };
    push(
        "padding before the EROFS metadata area",
        pos,
        h.erofs_meta.offset,
        &["padding before the EROFS metadata area"],
    );
    push(
        "EROFS metadata area",
        h.erofs_meta.offset,
        h.erofs_meta.end(),
        &["EROFS"],
    );
    push(
        "metadata",
        h.metadata.offset,
        h.metadata.end(),
        &["metadata"],
    );
    push(
        "chunk index",
        h.index.offset,
        h.index.end(),
        &["chunk index"],
    );
    push(
        "padding after the chunk index",
        h.index.end(),
        h.image_len,
        &["padding after the chunk index"],
    );
    out
}

/// One damaged copy of an image.
#[derive(Clone, Debug)]
pub struct Case {
    /// What was done, for messages.
    pub name: String,
    /// The regions it damaged (empty: nothing the image consists of, e.g. appended bytes).
    pub regions: Vec<&'static str>,
    /// `verify` must name one of these; empty if the image must still verify.
    pub needles: Vec<&'static str>,
    /// The damaged bytes.
    pub bytes: Vec<u8>,
}

/// The shared deterministic generator, so every run tries the same cases.
pub use chunkfs_kernel_abi::testkit::XorShift64 as Rng;

/// The damaged copies of `good` to try: in every region, flips of its first and last byte and
/// of `per_region` more bytes (chunk frames: a quarter as many each, since there are many); four zeroed
/// 4 KiB pages; truncations at the format's boundaries, at every region's edges and at
/// `per_region` random lengths; and 4 KiB of garbage appended (not part of the image: verify
/// must still pass, and readers ignore it).
pub fn cfs_cases(good: &[u8], per_region: usize, seed: u64) -> Vec<Case> {
    let regions = cfs_regions(good);
    let mut rng = Rng::new(seed | 1);
    let mut out = Vec::new();
    let region_of = |at: u64| {
        regions
            .iter()
            .find(|r| r.start <= at && at < r.end)
            .expect("regions cover the image")
    };
    let flip = |at: u64, rng: &mut Rng, out: &mut Vec<Case>| {
        let r = region_of(at);
        let mut bytes = good.to_vec();
        let x = (rng.below(255) + 1) as u8;
        bytes[at as usize] ^= x;
        out.push(Case {
            name: format!("byte {at} ({}) ^= {x:#04x}", r.name),
            regions: vec![r.name],
            needles: r.needles.to_vec(),
            bytes,
        });
    };
    for r in &regions {
        let len = r.end - r.start;
        flip(r.start, &mut rng, &mut out);
        if len > 1 {
            flip(r.end - 1, &mut rng, &mut out);
        }
        let more = if r.name == "chunk frame" {
            (per_region / 4).max(2)
        } else {
            per_region
        };
        for _ in 0..more.min(len as usize) {
            let at = r.start + rng.below(len);
            flip(at, &mut rng, &mut out);
        }
    }
    let image_len = good.len() as u64;
    for _ in 0..4 {
        let page = rng.below(image_len / 4096) * 4096;
        let mut bytes = good.to_vec();
        bytes[page as usize..page as usize + 4096].fill(0);
        if bytes == good {
            continue;
        }
        let touched: Vec<&Region> = regions
            .iter()
            .filter(|r| r.start < page + 4096 && page < r.end)
            .filter(|r| {
                good[r.start.max(page) as usize..r.end.min(page + 4096) as usize]
                    .iter()
                    .any(|&b| b != 0)
            })
            .collect();
        out.push(Case {
            name: format!("page at {page} zeroed"),
            regions: touched.iter().map(|r| r.name).collect(),
            needles: touched
                .iter()
                .flat_map(|r| r.needles.iter().copied())
                .collect(),
            bytes,
        });
    }
    let mut lengths = vec![0, 1, 512, 1023, 1024, 1025, 4095, 4096, 4097, image_len - 1];
    lengths.extend(image_len.checked_sub(4096));
    for r in &regions {
        lengths.push(r.start);
        lengths.push(r.end.saturating_sub(1));
    }
    for _ in 0..per_region {
        lengths.push(rng.below(image_len));
    }
    lengths.sort_unstable();
    lengths.dedup();
    for len in lengths.into_iter().filter(|&l| l < image_len) {
        out.push(Case {
            name: format!("truncated to {len} bytes"),
            regions: vec!["truncation"],
            needles: vec!["truncated", "shorter than the 1024-byte header"],
            bytes: good[..len as usize].to_vec(),
        });
    }
    let mut appended = good.to_vec();
    appended.extend((0..4096).map(|_| rng.next_u64() as u8));
    out.push(Case {
        name: "4 KiB of garbage appended".into(),
        regions: vec![],
        needles: vec![],
        bytes: appended,
    });
    out
}

/// Every entry of `dir` below it, by relative path: attributes and contents.
pub fn expected_contents(dir: &Path) -> Vec<(std::path::PathBuf, Expected)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d)
            .expect("read the source tree")
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(dir).expect("below the root").to_owned();
            let m = fs::symlink_metadata(&p).expect("lstat");
            let content = if m.is_dir() {
                stack.push(p.clone());
                Content::Dir
            } else if m.file_type().is_symlink() {
                let target = fs::read_link(&p).expect("read a symlink");
                Content::Symlink(target.into_os_string().into_encoded_bytes())
            } else if m.is_file() {
                Content::File(fs::read(&p).expect("read a file"))
            } else {
                continue;
            };
            out.push((
                rel,
                Expected {
                    mode: m.mode(),
                    uid: m.uid(),
                    gid: m.gid(),
                    size: m.size(),
                    mtime: (m.mtime(), m.mtime_nsec() as u32),
                    nlink: m.nlink() as u32,
                    content,
                },
            ));
        }
    }
    out
}

/// What a path of the source tree holds, as a reader must report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `st_size`.
    pub size: u64,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// Link count.
    pub nlink: u32,
    /// Contents.
    pub content: Content,
}

/// The contents of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// A regular file's bytes.
    File(Vec<u8>),
    /// A symlink's target.
    Symlink(Vec<u8>),
    /// A directory (its entries are listed separately).
    Dir,
}
