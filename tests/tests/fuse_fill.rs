//! The FUSE reader's page-cache fill after a random read, really mounted through `chunkfs
//! mount -o reader=fuse`: one 4 KiB read in the middle of a large file leaves the rest of its
//! chunk and the chunks after it (read-around) in the kernel's page cache, without holes at the
//! chunk boundaries, and every byte later read from that cache is the file's.
//!
//! Needs root, /dev/fuse and a kernel EROFS with 48-bit extents (Linux 6.15+); skipped with a
//! message otherwise.

#![allow(clippy::unwrap_used, unsafe_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::{Duration, Instant};

use chunkfs_format::cfs::write::{PackOptions, pack_dir};
use chunkfs_tests::mount::{Mounted, assert_nothing_left, chunkfs_bin, describe, output};
use chunkfs_tests::require_mount;
use chunkfs_tests::tree::words;

const PAGE: usize = 4096;
/// The largest chunk of a file (docs/format.md §2.3): the most one chunk's fill can cover.
const CHUNK_MAX: usize = 512 << 10;

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

#[test]
fn a_random_read_fills_its_chunk_and_the_chunks_after_it() {
    require_mount!();
    let dir = chunkfs_tests::mount::fixture_dir("fuse-fill");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let content = words(6 << 20, 3);
    std::fs::write(src.join("words"), &content).unwrap();
    let img = dir.join("image.cfs");
    pack_dir(&src, &img, &PackOptions::default(), |_| {}).unwrap();
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let o = output(
        Command::new(chunkfs_bin())
            .args(["mount", "-o", "reader=fuse"])
            .arg(&img)
            .arg(&mnt),
    );
    assert!(o.status.success(), "chunkfs mount: {}", describe(&o));
    let mounted = Mounted::at(&mnt);

    let file = File::open(mnt.join("words")).unwrap();
    assert!(
        resident(&file, content.len()).iter().all(|r| !r),
        "nothing is cached before the first read"
    );
    // A small read away from the start: random, as the reader tells reads apart.
    let at = (1 << 20) + 3 * PAGE;
    let mut buf = vec![0u8; PAGE];
    file.read_exact_at(&mut buf, at as u64).unwrap();
    assert_eq!(buf, content[at..at + PAGE]);

    // The fill runs behind the read: wait until the cached pages stop changing.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pages = resident(&file, content.len());
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = resident(&file, content.len());
        if now == pages || Instant::now() > deadline {
            pages = now;
            break;
        }
        pages = now;
    }
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
