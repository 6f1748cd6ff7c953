//! `chunkfs pack docker://... DEST`: a registry image into a `.cfs` or an OCI layout.
//!
//! - **A chunkfs image goes through the local store**: opened and planned as a mount would
//!   (manifest, config and metadata checked), every frame it reads that the store lacks is
//!   fetched by range and checked against its chunk's sha256 as it is stored, then the frames
//!   are copied into DEST in chunk order, each decompressed and checked once more (as a copy
//!   from a layout is), and the metadata blob is kept byte for byte: DEST has the same
//!   metadata digest. Through the store rather than straight into DEST, because then what the
//!   machine already holds (a pulled image, a mounted one, chunks shared with other images)
//!   is not fetched again and `pack` works offline after `pull`; and what `pack` fetched is
//!   there for later mounts (not pinned: `chunkfs gc --store` frees it).
//! - **An ordinary image (tar layers)** is fetched into a temporary OCI layout next to DEST:
//!   config and layers streamed to disk and checked against their digests (`copy_blob`),
//!   the manifest as resolved; then converted exactly as `chunkfs pack oci:...` converts a
//!   local one (`oci::convert`). Streamed whole, because the converter reads each layer twice
//!   (merge, then contents) and a tar stream cannot be read by ranges.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chunkfs_distribution::oci::convert::{self, Dest, Outcome};
use chunkfs_distribution::oci::layout::Layout;
use chunkfs_distribution::oci::read::METADATA_BLOB_MAX;
use chunkfs_distribution::oci::select::PlatformSpec;
use chunkfs_distribution::oci::spec::{ContentDescriptor, Index};
use chunkfs_distribution::oci::write::LayoutWriter;
use chunkfs_distribution::registry::{self, Client};
use chunkfs_distribution::remote;
use chunkfs_distribution::store::Plan;
use chunkfs_format::ErrorClass;
use chunkfs_format::build::ChunkSink;
use chunkfs_format::cfs::write::{CfsWriter, PackOptions};
use chunkfs_format::compress::Decoder;
use chunkfs_format::digest::Digest;
use chunkfs_format::model::ChunkIdx;
use chunkfs_format::partial::PARTIAL;
use chunkfs_format::translate::ExtentLayout;

use super::registry_flags::{RegistryFlags, StoreFlag};
use super::registry_image::{self, Opened};
use crate::Error;
use crate::progress::Progress;

/// The tag the fetched image gets in the temporary layout.
const TEMP_TAG: &str = "image";

/// Where a registry image comes from.
pub struct RemoteSource<'a> {
    /// The reference.
    pub reference: &'a registry::ImageRef,
    /// The platform to choose in a multi-platform image (default: the host's).
    pub platform: Option<&'a PlatformSpec>,
    /// `--store`.
    pub store: &'a StoreFlag,
    /// The registry flags.
    pub registry: &'a RegistryFlags,
}

/// Packs the registry image `src` into `dest`; `options` apply to an ordinary image's
/// conversion (a chunkfs image's frames are copied as they are).
pub fn pack(
    src: &RemoteSource<'_>,
    dest: Dest<'_>,
    options: &PackOptions,
) -> Result<Outcome, Error> {
    match registry_image::open(src.reference, src.platform, src.store, src.registry) {
        Ok(opened) => copy_chunkfs_image(opened, dest, options.prefetch.as_deref()),
        Err(e) if is_not_chunkfs(&e) => {
            let client = src.registry.client(src.reference)?;
            convert_fetched(&client, src, dest, options)
        }
        Err(e) => Err(e),
    }
}

/// True if `e` says the image is an ordinary container image.
fn is_not_chunkfs(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<remote::Error>())
        .is_some_and(|r| matches!(r, remote::Error::NotChunkfs { .. }))
}

/// A chunkfs image: through the store into `dest`; its metadata blob is copied verbatim, or
/// re-encoded with the prefetch list `prefetch` (chunk digests) when one is given.
fn copy_chunkfs_image(
    mut opened: Opened,
    dest: Dest<'_>,
    prefetch: Option<&[chunkfs_format::digest::Digest]>,
) -> Result<Outcome, Error> {
    let name = opened.image.given.to_string();
    let about = |e: chunkfs_distribution::store::Error| Error::from(e).about(&name);
    // Any pack may serve a chunk: its frame is copied, not mounted.
    let plan = opened.plan(ExtentLayout::Bit48)?;
    let mut align512 = !opened.image.packs.is_empty();
    for (d, _) in &opened.image.packs {
        align512 &= opened
            .store
            .pack(d)
            .map_err(about)?
            .is_some_and(|p| p.align512());
    }
    let (done, total) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(plan.missing_bytes)),
    );
    let bar = Progress::for_transfer("fetching", done.clone(), total.clone());
    let fetched = opened.store.fetch_all(&plan, &opened.client, &mut |d, t| {
        done.store(d, Ordering::Relaxed);
        total.store(t, Ordering::Relaxed);
    });
    drop(bar);
    fetched.map_err(about)?;
    let img = &opened.image;
    let blob = opened
        .store
        .blob(&img.metadata_digest, METADATA_BLOB_MAX)
        .map_err(about)?
        .ok_or_else(|| {
            Error::new(
                ErrorClass::Corrupt,
                format!(
                    "{name}: metadata blob {} left the store",
                    img.metadata_digest
                ),
            )
        })?;
    let (image, blob, applied) = match prefetch {
        None => (std::borrow::Cow::Borrowed(&img.image), blob, None),
        Some(digests) => {
            let mut image = img.image.clone();
            let applied = chunkfs_format::prefetch::apply(&mut image, digests);
            let blob = chunkfs_format::schema::codec::encode_blob(&image).map_err(|e| {
                Error::new(ErrorClass::Corrupt, format!("{name}: its metadata: {e}"))
            })?;
            (std::borrow::Cow::Owned(image), blob, Some(applied))
        }
    };
    let metadata_digest = chunkfs_format::digest::Digest::of(&blob);
    let mut frames = Frames::new(&plan, &name)?;
    let chunks = &image.chunks;
    match dest {
        Dest::Cfs(path) => {
            let (writer, mut sink) = CfsWriter::create(path, align512)?;
            let mut locations = Vec::with_capacity(chunks.len());
            for (i, c) in chunks.iter().enumerate() {
                let frame = frames.read(i, c)?;
                let loc = sink
                    .write_frame(i as ChunkIdx, c, &frame)
                    .map_err(|e| Error::io(format!("{}: {e}", path.display())))?;
                locations.push(Some(loc));
            }
            let summary = writer.finish_with_metadata(sink, &image, &locations, Some(&blob))?;
            Ok(outcome(
                &image,
                metadata_digest,
                applied,
                None,
                Some(summary),
            ))
        }
        Dest::Layout { dir, tag } => {
            let writer = LayoutWriter::open(dir, align512)?;
            let mut sink = writer.sink();
            for (i, c) in chunks.iter().enumerate() {
                if !writer.is_known(&c.digest) {
                    sink.write_frame(&c.digest, c.size, &frames.read(i, c)?)?;
                }
            }
            let packs = sink.finish()?;
            let committed = writer.commit(tag, &blob, chunks, packs)?;
            Ok(outcome(
                &image,
                metadata_digest,
                applied,
                Some(committed),
                None,
            ))
        }
    }
}

fn outcome(
    image: &chunkfs_format::model::Image,
    metadata_digest: chunkfs_format::digest::Digest,
    prefetch: Option<chunkfs_format::prefetch::Applied>,
    layout: Option<chunkfs_distribution::oci::write::Committed>,
    cfs: Option<chunkfs_format::cfs::write::Summary>,
) -> Outcome {
    Outcome {
        metadata_digest,
        source_kind: "chunkfs image in a registry",
        inodes: image.inodes.len(),
        chunks: image.chunks.len(),
        cfs,
        layout,
        prefetch,
    }
}

/// Reads planned chunks' frames from the store's packs, each checked against its chunk.
struct Frames<'a> {
    plan: &'a Plan,
    name: &'a str,
    decoder: Decoder,
}

impl<'a> Frames<'a> {
    fn new(plan: &'a Plan, name: &'a str) -> Result<Self, Error> {
        Ok(Self {
            plan,
            name,
            decoder: Decoder::new()?,
        })
    }

    /// The frame of chunk `i` (`c`), decompressed and checked.
    fn read(&mut self, i: usize, c: &chunkfs_format::model::ChunkInfo) -> Result<Vec<u8>, Error> {
        let loc = self.plan.locations.get(i).copied();
        let pack = loc
            .and_then(|l| usize::from(l.device).checked_sub(1))
            .and_then(|k| self.plan.devices.get(k));
        let (Some(loc), Some(pack)) = (loc, pack) else {
            return Err(Error::new(
                ErrorClass::Corrupt,
                format!("{}: chunk {i} has no planned location", self.name),
            ));
        };
        let mut frame = vec![0u8; loc.stored_len as usize];
        pack.read_at(&mut frame, loc.offset)?;
        let ok = self
            .decoder
            .decode(&frame, c.size)
            .is_ok_and(|data| Digest::of(&data) == c.digest);
        if !ok {
            return Err(Error::new(
                ErrorClass::Corrupt,
                format!(
                    "{}: frame at {} does not decode to chunk {i} ({}); `chunkfs verify --store` checks the store",
                    pack.path().display(),
                    loc.offset,
                    c.digest
                ),
            ));
        }
        Ok(frame)
    }
}

/// An ordinary image (or any image, should the tag have moved): fetched into a temporary
/// layout next to `dest`, then converted from there.
fn convert_fetched(
    client: &Client,
    src: &RemoteSource<'_>,
    dest: Dest<'_>,
    options: &PackOptions,
) -> Result<Outcome, Error> {
    let resolved = client.resolve(src.reference, src.platform)?;
    let near = match dest {
        Dest::Cfs(p) => p,
        Dest::Layout { dir, .. } => dir,
    };
    let parent = parent_dir(near);
    let tmp = tempfile::Builder::new()
        .prefix(".chunkfs-fetch-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(format!("{}: a temporary layout: {e}", parent.display())))?;
    let mut written = Written::default();
    let layout = Layout::create(tmp.path())?;
    written.track(tmp.path().join("oci-layout"));
    written.track(tmp.path().join("index.json"));
    let m = &resolved.manifest;
    let blobs: Vec<&ContentDescriptor> = std::iter::once(&m.config).chain(&m.layers).collect();
    let done = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(blobs.iter().map(|b| b.size).sum()));
    let bar = Progress::for_transfer("fetching", done.clone(), total);
    for desc in blobs {
        let digest = desc
            .sha256()
            .map_err(|e| Error::new(ErrorClass::Corrupt, format!("{}: {e}", src.reference)))?;
        let mut w = layout.blob_writer()?;
        client.copy_blob(
            &digest,
            Some(desc.size),
            desc.size,
            &mut Counting {
                inner: &mut w,
                done: &done,
            },
        )?;
        // A mismatch was refused above, and the unfinished writer removed its file.
        w.finish()?;
        written.track(layout.blob_path(&digest));
    }
    drop(bar);
    let (digest, _) = layout.put_blob(&resolved.raw)?;
    written.track(layout.blob_path(&digest));
    let mut desc = resolved.descriptor.clone();
    desc.annotations
        .insert(chunkfs_distribution::oci::REF_NAME.into(), TEMP_TAG.into());
    layout.write_index(&Index {
        manifests: vec![desc],
        ..Index::default()
    })?;
    let from = convert::Source::Layout {
        dir: tmp.path(),
        tag: Some(TEMP_TAG),
        platform: src.platform,
    };
    let mut bar = None;
    let outcome = convert::convert(from, dest, options, |p| bar = Progress::for_build(p));
    drop(bar);
    let mut outcome = outcome.map_err(|e| Error::from(e).about(src.reference))?;
    outcome.source_kind = "container image in a registry";
    Ok(outcome)
}

/// The directory `path` is in (`.` for a bare name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Complete files of the temporary layout: removed by the signal handler if the command is
/// interrupted (the temporary directory's own removal, on drop, does not run then).
#[derive(Default)]
struct Written(Vec<PathBuf>);

impl Written {
    fn track(&mut self, path: PathBuf) {
        PARTIAL.track(&path);
        self.0.push(path);
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        for p in &self.0 {
            PARTIAL.untrack(p);
        }
    }
}

/// A writer that counts the bytes through it, for the progress bar.
struct Counting<'a, W: Write> {
    inner: &'a mut W,
    done: &'a AtomicU64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
