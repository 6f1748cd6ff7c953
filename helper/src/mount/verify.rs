//! Opening and checking an image before anything is mounted (docs/mount.chunkfs.8.md,
//! "Trust"), and what the checks yield: the files and descriptor to mount.
//!
//! Always (`verify=metadata`): the `.cfs` header checksum, the metadata blob against the
//! metadata digest (and the pinned `digest=`), the metadata's invariants, the chunk index against
//! its digest and the metadata, and the EROFS descriptor: re-derived from the checked metadata
//! and compared byte for byte with the one embedded in a `.cfs`, or built from it for an OCI
//! layout. So the kernel never parses EROFS metadata that was not produced or checked here.
//! `verify=full` also decompresses and hashes every chunk, in parallel.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chunkfs_distribution::oci::pack::PackIndex;
use chunkfs_distribution::oci::read::{OciImage, open_image};
use chunkfs_format::Classify;
use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::compress::Decoder;
use chunkfs_format::digest::Digest;
use chunkfs_format::model::{FileLayout, Image, InodeKind};
use chunkfs_format::translate::{self, ExtentLayout};
use chunkfs_kernel_abi::Pod;
use chunkfs_kernel_abi::erofs::SuperBlock;

use super::options::{Options, VerifyLevel};
use super::source::Source;
use super::{Error, ErrorKind};

/// A file the mount reads: the image, a pack blob.
#[derive(Debug)]
pub struct Backing {
    /// Its path (absolute).
    pub path: PathBuf,
    /// Opened read-only.
    pub file: File,
    /// Whether it is a block device.
    pub block: bool,
}

impl Backing {
    pub(super) fn open(path: &Path, block: bool) -> Result<Self, Error> {
        let file = File::open(path)
            .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            block,
        })
    }
}

/// The primary device: the EROFS superblock and metadata.
#[derive(Debug)]
pub enum Primary {
    /// The image itself (a `.cfs` with its descriptor embedded).
    Image(Backing),
    /// A standalone descriptor built at mount time (an OCI layout, or a `.cfs` written before
    /// descriptors were embedded), not yet stored anywhere; its frames are on extra devices.
    Built {
        /// The descriptor file's bytes.
        bytes: Vec<u8>,
        /// Their sha256 (names the cache file).
        digest: Digest,
    },
}

/// Where a digest table lies, for the FUSE reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestSpec {
    /// 0: the primary device; k: extra device k.
    pub on: u16,
    /// Byte offset of the table in that file.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Its sha256, checked when it is read again.
    pub sha256: Digest,
    /// `Some(k)`: the table lists device k's frames whatever device id its entries carry.
    pub device: Option<u16>,
}

/// A checked image, ready to be mounted by either reader.
#[derive(Debug)]
pub struct Prepared {
    /// What the mount table shows as the source.
    pub display: String,
    /// The image's identity.
    pub metadata_digest: Digest,
    /// Device 0.
    pub primary: Primary,
    /// Extra devices 1, 2, ... in the descriptor's device-table order.
    pub devices: Vec<Backing>,
    /// The digest tables covering every frame.
    pub digests: Vec<DigestSpec>,
    /// The EROFS incompatible features the descriptor uses.
    pub incompat: u32,
    /// The descriptor's extent encoding.
    pub extents: ExtentLayout,
    /// Whether compressed data is read from the primary device too (the zero frame of holes in
    /// the cluster layout): decides whether extra devices must be loop devices (kernel bug,
    /// docs/descriptor.md §5).
    pub data_in_primary: bool,
    /// Chunks in the image, and how many were hashed before the mount.
    pub chunks: usize,
    /// Chunks hashed (`verify=full`).
    pub chunks_checked: usize,
    /// Time spent on each check, for `-v`.
    pub timings: Vec<(&'static str, Duration)>,
    /// Keeps an OCI layout's shared lock until the mount has opened its blobs, so `gc` cannot
    /// delete them in between.
    pub layout_lock: Option<OciImage>,
    /// The extra devices are pack files of the local store, each in its own window of the
    /// store's address space (docs/store.md §3): the kernel may read them file-backed even
    /// when there are several (no read can merge across them).
    pub disjoint_devices: bool,
    /// A filler serves the devices (the lazy kernel path): they must be mounted file-backed,
    /// never on loop devices (whose reads raise no fanotify events).
    pub file_backed_only: bool,
    /// A registry image mounted through the store.
    pub registry: Option<Box<super::registry::RegistryPrepared>>,
}

/// Opens `source` and checks it as `opts` asks.
pub fn prepare(source: &Source, opts: &Options) -> Result<Prepared, Error> {
    match source {
        Source::Cfs { path, block } => prepare_cfs(source.display(), path, *block, opts),
        Source::Oci { dir, tag } => prepare_oci(source.display(), dir, tag.as_deref(), opts),
        Source::Registry { .. } => Err(Error::new(
            ErrorKind::Usage,
            "a registry image is prepared by mount::registry::prepare",
        )),
    }
}

pub(super) fn check_pin(name: &str, actual: &Digest, opts: &Options) -> Result<(), Error> {
    match &opts.digest {
        Some(pinned) if pinned != actual => Err(Error::new(
            ErrorKind::Mismatch,
            format!(
                "DIGEST MISMATCH: {name} has metadata digest sha256:{}, digest= pins sha256:{}; refusing to mount it",
                actual.to_hex(),
                pinned.to_hex()
            ),
        )),
        _ => Ok(()),
    }
}

pub(super) fn incompat_of(superblock_area: &[u8]) -> u32 {
    SuperBlock::read_at(superblock_area, 0).map_or(0, |sb| sb.feature_incompat.get())
}

fn prepare_cfs(
    display: String,
    path: &Path,
    block: bool,
    opts: &Options,
) -> Result<Prepared, Error> {
    let mut timings = Vec::new();
    let t = Instant::now();
    let backing = Backing::open(path, block)?;
    prefetch_tail(&backing.file);
    let cfs = Cfs::open(path).map_err(|e| Error::from_library(&e, "refusing to mount it"))?;
    let h = cfs.header().clone();
    check_pin(&display, &h.metadata_digest, opts)?;
    timings.push(("header, metadata and chunk index checked", t.elapsed()));
    let t = Instant::now();
    let index = DigestSpec {
        on: 0,
        offset: h.index.offset,
        len: h.index.len,
        sha256: h.index_digest,
        device: None,
    };
    let mut prepared = if h.has_erofs() {
        chunkfs_format::cfs::verify::check_descriptor(&cfs)
            .map_err(|e| Error::from_library(&e, "refusing to mount it"))?;
        Prepared {
            display,
            metadata_digest: h.metadata_digest,
            primary: Primary::Image(backing),
            devices: Vec::new(),
            digests: vec![index],
            incompat: incompat_of(cfs.region(h.erofs_head)),
            extents: ExtentLayout::for_frames(h.erofs_block_size == 512),
            data_in_primary: true,
            chunks: cfs.image().chunks.len(),
            chunks_checked: 0,
            timings: Vec::new(),
            layout_lock: None,
            disjoint_devices: false,
            file_backed_only: false,
            registry: None,
        }
    } else {
        // Written before descriptors were embedded: the image becomes the extra device of a
        // standalone descriptor, as `chunkfs descriptor` writes it.
        let d = cfs.standalone_descriptor(None).map_err(|e| {
            Error::new(
                ErrorKind::of(e.class()),
                format!(
                    "{}: no EROFS descriptor can be built: {e}; refusing to mount it",
                    path.display()
                ),
            )
        })?;
        let (bytes, digest) = standalone_bytes(&d, path)?;
        let extents = d.extent_layout();
        Prepared {
            display,
            metadata_digest: h.metadata_digest,
            incompat: incompat_of(bytes.get(1024..).unwrap_or_default()),
            primary: Primary::Built { bytes, digest },
            devices: vec![backing],
            digests: vec![DigestSpec {
                on: 1,
                device: Some(1),
                ..index
            }],
            extents,
            data_in_primary: extents == ExtentLayout::Clusters && has_holes(cfs.image()),
            chunks: cfs.image().chunks.len(),
            chunks_checked: 0,
            timings: Vec::new(),
            layout_lock: None,
            disjoint_devices: false,
            file_backed_only: false,
            registry: None,
        }
    };
    timings.push(("EROFS descriptor derived and compared", t.elapsed()));
    if opts.verify == VerifyLevel::Full {
        let t = Instant::now();
        check_all(prepared.chunks, |idx, decoder| {
            cfs.read_chunk(idx as u32, decoder)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                format!("verify=full: {e}; refusing to mount it"),
            )
        })?;
        prepared.chunks_checked = prepared.chunks;
        timings.push(("every chunk decompressed and hashed", t.elapsed()));
    }
    prepared.timings = timings;
    Ok(prepared)
}

/// Asks the kernel to read the regions `Cfs::open` and the descriptor check read (EROFS
/// metadata area, metadata blob, chunk index: adjacent at the end of the image) in one request,
/// instead of page fault by page fault. Best effort: the header is checked again by `Cfs::open`.
fn prefetch_tail(file: &File) {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 1024];
    if file.read_exact_at(&mut head, 0).is_err() {
        return;
    }
    let Ok(h) = chunkfs_format::cfs::header::Header::parse(&head) else {
        return;
    };
    let start = if h.has_erofs() {
        h.erofs_meta.offset
    } else {
        h.metadata.offset
    };
    let len = h.index.end().saturating_sub(start);
    let (Ok(start), Ok(len)) = (i64::try_from(start), i64::try_from(len)) else {
        return;
    };
    let _ = nix::fcntl::posix_fadvise(
        file,
        start,
        len,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
    );
}

fn prepare_oci(
    display: String,
    dir: &Path,
    tag: Option<&str>,
    opts: &Options,
) -> Result<Prepared, Error> {
    let mut timings = Vec::new();
    let t = Instant::now();
    // The layout's errors name the directory and the tag already.
    let oci = open_image(dir, tag).map_err(|e| Error::from_library(&e, ""))?;
    check_pin(&display, &oci.metadata_digest, opts)?;
    let mut digests = Vec::with_capacity(oci.packs.len());
    let mut devices = Vec::with_capacity(oci.packs.len());
    for (k, pack) in (1u16..).zip(&oci.packs) {
        let b = Backing::open(&pack.path, false)?;
        let index = PackIndex::read(&b.file, &pack.path)
            .map_err(|e| Error::new(ErrorKind::of(e.class()), format!("{display}: {e}")))?;
        digests.push(DigestSpec {
            on: k,
            offset: index.trailer.index_offset,
            len: index.trailer.index_len,
            sha256: index.trailer.index_sha256,
            device: Some(k),
        });
        devices.push(b);
    }
    timings.push(("manifest, metadata and pack indexes checked", t.elapsed()));
    let t = Instant::now();
    let d = oci.standalone_descriptor(None).map_err(|e| {
        Error::new(
            ErrorKind::of(e.class()),
            format!("{display}: no EROFS descriptor can be built: {e}"),
        )
    })?;
    let (bytes, digest) = standalone_bytes(&d, dir)?;
    let extents = d.extent_layout();
    timings.push(("EROFS descriptor built", t.elapsed()));
    let chunks = oci.image.chunks.len();
    let mut chunks_checked = 0;
    if opts.verify == VerifyLevel::Full {
        let t = Instant::now();
        check_all(chunks, |idx, decoder| {
            let info = oci.image.chunks.get(idx).ok_or("no such chunk")?;
            let frame = oci.read_frame(idx).map_err(|e| e.to_string())?;
            let data = decoder
                .decode(&frame, info.size)
                .map_err(|e| format!("chunk {idx}: {e}"))?;
            if Digest::of(&data) != info.digest {
                return Err(format!(
                    "chunk {idx} does not match its digest {}",
                    info.digest
                ));
            }
            Ok(())
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                format!("{display}: verify=full: {e}; refusing to mount it"),
            )
        })?;
        chunks_checked = chunks;
        timings.push(("every chunk decompressed and hashed", t.elapsed()));
    }
    Ok(Prepared {
        display,
        metadata_digest: oci.metadata_digest,
        incompat: incompat_of(bytes.get(1024..).unwrap_or_default()),
        primary: Primary::Built { bytes, digest },
        devices,
        digests,
        extents,
        data_in_primary: extents == ExtentLayout::Clusters && has_holes(&oci.image),
        chunks,
        chunks_checked,
        timings,
        layout_lock: Some(oci),
        disjoint_devices: false,
        file_backed_only: false,
        registry: None,
    })
}

fn standalone_bytes(
    d: &translate::BuiltDescriptor,
    name: &Path,
) -> Result<(Vec<u8>, Digest), Error> {
    let mut bytes = Vec::new();
    d.write_standalone(&mut bytes).map_err(|e| {
        Error::new(
            ErrorKind::Corrupt,
            format!("{}: cannot build the EROFS descriptor: {e}", name.display()),
        )
    })?;
    let digest = Digest::of(&bytes);
    Ok((bytes, digest))
}

/// Whether some regular file has a hole (a range no chunk covers): in the cluster layout, holes
/// are read from the zero frame in the primary device (docs/descriptor.md §4.2).
pub fn has_holes(image: &Image) -> bool {
    image.inodes.iter().any(|inode| {
        let InodeKind::File(f) = &inode.kind else {
            return false;
        };
        let FileLayout::Extents(extents) = &f.layout else {
            return false;
        };
        let mut pos = 0u64;
        for e in extents {
            if e.offset != pos {
                return true;
            }
            let len = image.chunks.get(e.chunk as usize).map_or(0, |c| c.size);
            pos = pos.saturating_add(len.into());
        }
        pos < f.size
    })
}

/// Runs `check` on chunks `0..n` on one thread per CPU; the error of the lowest failing chunk.
fn check_all(
    n: usize,
    check: impl Fn(usize, &mut Decoder) -> Result<(), String> + Sync,
) -> Result<(), String> {
    let jobs = std::thread::available_parallelism()
        .map_or(1, |j| j.get())
        .min(n.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(usize::MAX);
    let errors = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| -> Option<(usize, String)> {
                    let mut decoder = match Decoder::new() {
                        Ok(d) => d,
                        Err(e) => return Some((0, e.to_string())),
                    };
                    loop {
                        // Batches keep the counter cheap; stop early once something failed.
                        let start = next.fetch_add(32, Ordering::Relaxed);
                        if start >= n || start > failed.load(Ordering::Relaxed) {
                            return None;
                        }
                        for idx in start..(start + 32).min(n) {
                            if let Err(e) = check(idx, &mut decoder) {
                                failed.fetch_min(idx, Ordering::Relaxed);
                                return Some((idx, e));
                            }
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| {
                w.join()
                    .unwrap_or_else(|_| Some((0, "a checking thread panicked".into())))
            })
            .collect::<Vec<_>>()
    });
    match errors.into_iter().min_by_key(|(idx, _)| *idx) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}
