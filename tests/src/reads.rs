//! Reading a mount from many threads at once and checking every byte: the check both readers
//! (the kernel's EROFS and the FUSE reader) must pass, through `pread` on fresh descriptors
//! (the page cache, readahead, concurrent decompression of one chunk) and through `mmap`.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::tree::XorShift64;

/// `threads` threads each read `reads` random ranges of 1 to `max_len` bytes of random files of
/// `files` (a path on the mount and the bytes it must hold); then every file is mapped whole
/// and compared. Panics naming the file and offset of the first difference.
pub fn random_reads_and_mmap(
    files: Vec<(PathBuf, Vec<u8>)>,
    threads: u64,
    reads: usize,
    max_len: u64,
) {
    assert!(!files.is_empty() && files.iter().all(|(_, exp)| !exp.is_empty()));
    let files = Arc::new(files);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let files = files.clone();
            std::thread::spawn(move || {
                let mut rng = XorShift64::new((t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for _ in 0..reads {
                    let x = rng.next_u64();
                    let (path, exp) = &files[(x % files.len() as u64) as usize];
                    let off = (x >> 8) % exp.len() as u64;
                    let len = ((x >> 40) % max_len) as usize + 1;
                    let mut buf = vec![0u8; len];
                    let n = File::open(path)
                        .and_then(|f| f.read_at(&mut buf, off))
                        .unwrap_or_else(|e| panic!("{}: read at {off}: {e}", path.display()));
                    let end = (off as usize + len).min(exp.len());
                    assert!(
                        buf[..n] == exp[off as usize..end],
                        "{}: {n} bytes read at {off} differ",
                        path.display()
                    );
                }
            })
        })
        .collect();
    for w in workers {
        if let Err(panic) = w.join() {
            std::panic::resume_unwind(panic);
        }
    }
    for (path, exp) in files.iter() {
        let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: the file is on a read-only mount and nothing modifies it while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&f) }
            .unwrap_or_else(|e| panic!("{}: mmap: {e}", path.display()));
        assert!(map[..] == exp[..], "mmap of {} differs", path.display());
    }
}
