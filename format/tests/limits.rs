//! Declared sizes are claims, not allocations (issue 6, item 2): metadata that declares more
//! than it holds must be refused before anything of the declared size is allocated. A counting
//! allocator records the largest single allocation each test makes.
#![allow(clippy::unwrap_used)] // helpers of tests: a panic is how a test fails
#![allow(unsafe_code)] // only the counting global allocator, which forwards to the system one

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use chunkfs_format::cfs::header::Header;
use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::cfs::write::{PackOptions, pack_dir};
use chunkfs_format::digest::Digest;
use chunkfs_format::model::{DirEntry, FileData, FileLayout, Image, Inode, InodeKind, mode};
use chunkfs_format::schema::codec;
use chunkfs_format::translate::{DeviceLayout as ErofsLayout, ExtentLayout, translate_within};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Tests in this file run one at a time, so the counter is theirs.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` and returns its result and the largest allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    LARGEST.store(0, Ordering::Relaxed);
    let out = f();
    (out, LARGEST.load(Ordering::Relaxed))
}

const MIB: usize = 1 << 20;

/// A zstd frame that declares `content` bytes but holds one raw block of `data`.
fn lying_frame(content: u64, data: &[u8]) -> Vec<u8> {
    let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
    // Frame_Header_Descriptor: 8-byte content size, not single segment, no checksum.
    f.push(3 << 6);
    // Window_Descriptor: 1 MiB.
    f.push(10 << 3);
    f.extend_from_slice(&content.to_le_bytes());
    let header = 1u32 | ((data.len() as u32) << 3);
    f.extend_from_slice(&header.to_le_bytes()[..3]);
    f.extend_from_slice(data);
    f
}

#[test]
fn a_metadata_blob_declaring_4_gib_allocates_what_it_decodes_to() {
    let blob = lying_frame(4 << 30, &[0u8; 64]);
    let (result, largest) = largest_allocation(|| codec::decode_blob(&blob));
    assert!(result.is_err(), "{result:?}");
    assert!(largest < MIB, "largest allocation {largest} bytes");
}

fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// `image` plus one regular file of `size` bytes that is all hole, named `huge`.
fn with_huge_sparse_file(image: &Image, size: u64) -> Image {
    let mut image = image.clone();
    let idx = image.inodes.len() as u32;
    image.inodes.push(Inode {
        mode: mode::S_IFREG | 0o644,
        uid: 0,
        gid: 0,
        mtime_sec: 0,
        mtime_nsec: 0,
        xattrs: vec![],
        kind: InodeKind::File(FileData {
            size,
            layout: FileLayout::Extents(vec![]),
        }),
    });
    let InodeKind::Directory(entries) = &mut image.inodes[0].kind else {
        unreachable!()
    };
    entries.push(DirEntry {
        name: b"~huge".to_vec(),
        inode: idx,
    });
    image.validate().unwrap();
    image
}

/// The `.cfs` `bytes` with its metadata blob replaced by `blob` (same chunks), every header
/// field and digest updated: what a hostile writer can produce.
fn replace_metadata(bytes: &[u8], blob: &[u8], raw_len: u64) -> Vec<u8> {
    let mut h = Header::parse(bytes).unwrap();
    let index = bytes[h.index.offset as usize..h.index.end() as usize].to_vec();
    let mut out = bytes[..h.metadata.offset as usize].to_vec();
    out.extend_from_slice(blob);
    h.metadata.len = blob.len() as u64;
    h.metadata_digest = Digest::of(blob);
    h.metadata_raw_len = raw_len;
    h.index.offset = out.len() as u64;
    out.extend_from_slice(&index);
    out.resize(out.len().next_multiple_of(4096), 0);
    h.image_len = out.len() as u64;
    out[..1024].copy_from_slice(&h.encode());
    out
}

#[test]
fn translation_refuses_a_huge_sparse_file_before_allocating_its_indexes() {
    let root = Inode {
        mode: mode::S_IFDIR | 0o755,
        uid: 0,
        gid: 0,
        mtime_sec: 0,
        mtime_nsec: 0,
        xattrs: vec![],
        kind: InodeKind::Directory(vec![]),
    };
    let small = Image {
        chunks: vec![],
        packed_stream: vec![],
        inodes: vec![root],
        prefetch: Vec::new(),
    };
    // 16 TiB of hole: in the cluster layout, 2^28 lcluster indexes (2 GiB) and 2^24 pieces.
    let image = with_huge_sparse_file(&small, 16 << 40);
    let layout = ErofsLayout {
        block_size_bits: 9,
        extents: ExtentLayout::Clusters,
        meta_offset: 4096,
        devices: vec![],
    };
    let (result, largest) = largest_allocation(|| translate_within(&image, &[], &layout, 1 << 20));
    assert!(result.is_err(), "a 2 GiB area passed a 1 MiB bound");
    assert!(largest < MIB, "largest allocation {largest} bytes");
    // The 48-bit layout describes the same file in one record.
    let bit48 = ErofsLayout {
        block_size_bits: 12,
        extents: ExtentLayout::Bit48,
        ..layout
    };
    let (result, largest) = largest_allocation(|| translate_within(&image, &[], &bit48, 1 << 20));
    assert!(result.is_ok(), "{result:?}");
    assert!(largest < MIB, "largest allocation {largest} bytes");
}

#[test]
fn verify_never_builds_a_descriptor_larger_than_the_stored_one() {
    let dir = scratch("limits-verify");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"some bytes").unwrap();
    let good = dir.path().join("good.cfs");
    let options = PackOptions {
        align512: true,
        ..PackOptions::default()
    };
    pack_dir(&src, &good, &options, |_| {}).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let image = with_huge_sparse_file(Cfs::open(&good).unwrap().image(), 16 << 40);
    let raw = codec::encode(&image).unwrap();
    let hostile = replace_metadata(
        &bytes,
        &codec::encode_blob(&image).unwrap(),
        raw.len() as u64,
    );
    let path = dir.path().join("hostile.cfs");
    std::fs::write(&path, hostile).unwrap();
    // It opens (the metadata is valid), but verify must not derive its 2 GiB descriptor.
    Cfs::open(&path).unwrap();
    let (result, largest) = largest_allocation(|| {
        chunkfs_format::cfs::verify::verify_cfs(&path, 1, &AtomicU64::new(0))
    });
    let err = result.unwrap_err().to_string();
    assert!(err.contains("EROFS"), "{err}");
    assert!(largest < 16 * MIB, "largest allocation {largest} bytes");
}
