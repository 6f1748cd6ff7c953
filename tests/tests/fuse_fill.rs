//! The FUSE reader's page-cache fill after a random read, really mounted through `chunkfs
//! mount -o reader=fuse`: one 4 KiB read in the middle of a large file leaves the rest of its
//! chunk and the chunks after it (read-around) in the kernel's page cache, without holes at the
//! chunk boundaries, and every byte later read from that cache is the file's; a chunk that fails
//! its check is never stored, read-around stops there, and reading it fails.
//!
//! Needs root, /dev/fuse and a kernel EROFS with 48-bit extents (Linux 6.15+); skipped with a
//! message otherwise.

#![allow(clippy::unwrap_used, unsafe_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chunkfs_format::cfs::header::Header;
use chunkfs_format::cfs::write::{PackOptions, pack_dir};
use chunkfs_kernel_abi::digest_table::DigestTable;
use chunkfs_tests::mount::{Mounted, assert_nothing_left, chunkfs_bin, describe, output};
use chunkfs_tests::require_mount;
use chunkfs_tests::tree::words;

const PAGE: usize = 4096;
/// The largest chunk of a text file (docs/format.md §2.3: text files are cut with the packed
/// stream's bounds): the most one chunk's fill can cover.
const CHUNK_MAX: usize = 1020 << 10;

/// Which pages of `file` (on any file system) are in the page cache, by `mincore` on a shared
/// read-only mapping, which reads nothing itself.
fn resident(file: &File, len: usize) -> Vec<bool> {
    // SAFETY: the mapping is only passed to mincore, never read through; the file is not
    // truncated while mapped (a read-only mount).
    let map = unsafe { memmap2::Mmap::map(file) }.unwrap();
    let mut vec = vec![0u8; len.div_ceil(PAGE)];
    // SAFETY: `vec` has one byte per page of the `len`-byte mapping, as mincore writes.
    let r = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().map(|b| b & 1 == 1).collect()
}

/// Packs one 16 MiB compressible file (longer than a read-around of 8 of its largest chunks), `words`, into `DIR/image.cfs`; returns the image and the
/// file's bytes.
fn pack_words(dir: &Path) -> (PathBuf, Vec<u8>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let content = words(16 << 20, 3);
    std::fs::write(src.join("words"), &content).unwrap();
    let img = dir.join("image.cfs");
    pack_dir(&src, &img, &PackOptions::default(), |_| {}).unwrap();
    (img, content)
}

/// `chunkfs mount -o reader=fuse IMAGE DIR/mnt`.
fn mount_fuse(img: &Path, dir: &Path) -> Mounted {
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let o = output(
        Command::new(chunkfs_bin())
            .args(["mount", "-o", "reader=fuse"])
            .arg(img)
            .arg(&mnt),
    );
    assert!(o.status.success(), "chunkfs mount: {}", describe(&o));
    Mounted::at(&mnt)
}

/// Samples in a row without a change that count as the fill having stopped: one 300 ms pause
/// of the fill thread (a loaded machine running the suite in parallel) looked settled once,
/// with a page of the read-around still to come.
const STILL_SAMPLES: u32 = 4;

/// The cached pages of `file` once the fill behind a read has stopped changing them.
fn settled(file: &File, len: usize) -> Vec<bool> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pages = resident(file, len);
    let mut still = 0;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = resident(file, len);
        still = if now == pages { still + 1 } else { 0 };
        if still >= STILL_SAMPLES || Instant::now() > deadline {
            return now;
        }
        pages = now;
    }
}

/// A small read away from the start: random, as the reader tells reads apart.
const AT: usize = (1 << 20) + 3 * PAGE;

#[test]
fn a_random_read_fills_its_chunk_and_the_chunks_after_it() {
    require_mount!();
    let dir = chunkfs_tests::scratch_dir("fuse-fill");
    let (img, content) = pack_words(&dir);
    let mounted = mount_fuse(&img, &dir);
    let mnt = mounted.dir.clone();

    let file = File::open(mnt.join("words")).unwrap();
    assert!(
        resident(&file, content.len()).iter().all(|r| !r),
        "nothing is cached before the first read"
    );
    let at = AT;
    let mut buf = vec![0u8; PAGE];
    file.read_exact_at(&mut buf, at as u64).unwrap();
    assert_eq!(buf, content[at..at + PAGE]);
    let pages = settled(&file, content.len());
    let first = pages.iter().position(|&r| r).unwrap();
    let last = pages.iter().rposition(|&r| r).unwrap();
    assert!(pages[at / PAGE], "the page read is cached");
    assert!(
        pages[first..=last].iter().all(|&r| r),
        "no page missing between {first} and {last}: chunk boundaries are filled too"
    );
    assert!(
        (last + 1 - first) * PAGE > CHUNK_MAX,
        "more than the chunk read is cached: pages {first}..={last}"
    );
    assert!(last + 1 < pages.len(), "no further than read-around goes");

    // Everything cached is the file's (reads of cached pages reach no daemon).
    let mut cached = vec![0u8; (last + 1 - first) * PAGE];
    file.read_exact_at(&mut cached, (first * PAGE) as u64)
        .unwrap();
    assert_eq!(cached, content[first * PAGE..(last + 1) * PAGE]);
    drop(file);
    assert_eq!(std::fs::read(mnt.join("words")).unwrap(), content);

    mounted.unmount();
    assert_nothing_left(&mnt);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The file bytes `[start, end)` of each frame of a one-file image, in file order, and the
/// frame's place in the image.
fn extents(image: &[u8]) -> Vec<(usize, usize, u64, u64)> {
    let h = Header::parse(image).unwrap();
    let table =
        DigestTable::parse(&image[h.index.offset as usize..h.index.end() as usize]).unwrap();
    let mut out = Vec::new();
    let mut at = 0usize;
    for e in table.iter() {
        let raw = e.raw_len.get() as usize;
        out.push((at, at + raw, e.offset.get(), u64::from(e.stored_len.get())));
        at += raw;
    }
    out
}

#[test]
fn a_chunk_that_fails_its_check_is_never_filled_and_read_around_stops_there() {
    require_mount!();
    let dir = chunkfs_tests::scratch_dir("fuse-fill-bad");
    let (img, content) = pack_words(&dir);
    let mut image = std::fs::read(&img).unwrap();
    let ext = extents(&image);
    assert_eq!(
        ext.last().unwrap().1,
        content.len(),
        "one file, its chunks in order"
    );
    // The chunk two after the one read: a flipped byte in the middle of its frame.
    let i = ext.iter().position(|e| e.0 <= AT && AT < e.1).unwrap();
    let (bad_start, bad_end, off, len) = ext[i + 2];
    image[(off + len / 2) as usize] ^= 0x40;
    std::fs::write(&img, &image).unwrap();
    let mounted = mount_fuse(&img, &dir);
    let mnt = mounted.dir.clone();

    let file = File::open(mnt.join("words")).unwrap();
    let mut buf = vec![0u8; PAGE];
    file.read_exact_at(&mut buf, AT as u64).unwrap();
    assert_eq!(buf, content[AT..AT + PAGE]);
    let pages = settled(&file, content.len());
    // The chunk after the one read is cached; nothing of the bad one or after it is.
    let next = ext[i + 1];
    assert!(
        pages[next.0.div_ceil(PAGE)..next.1 / PAGE]
            .iter()
            .all(|&r| r)
    );
    let first_bad = bad_start / PAGE;
    assert!(
        pages[first_bad..].iter().all(|&r| !r),
        "no page from {first_bad} on is cached (the bad chunk starts in page {first_bad})"
    );
    // Reading into the bad chunk fails, every time; the pages before it are the file's.
    for _ in 0..2 {
        let err = file
            .read_exact_at(
                &mut buf,
                ((bad_start + bad_end) as u64 / 2) & !(PAGE as u64 - 1),
            )
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
    }
    let mut before = vec![0u8; first_bad * PAGE - AT];
    file.read_exact_at(&mut before, AT as u64).unwrap();
    assert_eq!(before, content[AT..first_bad * PAGE]);
    drop(file);

    mounted.unmount();
    assert_nothing_left(&mnt);
    let _ = std::fs::remove_dir_all(&dir);
}
