//! `chunkfs pack` when a layout is involved: every conversion between a directory, a `.cfs`, a
//! chunkfs image in a layout and an ordinary container image (docs/format.md §7.4, §7.8, §7.9).
//!
//! | source \ destination      | `.cfs`                   | layout `DIR:tag`             |
//! |---------------------------|--------------------------|------------------------------|
//! | directory                 | (`cfs::write::pack_dir`) | scan + build into packs      |
//! | `.cfs`                    | —                        | copy metadata blob + frames  |
//! | chunkfs image in a layout | copy metadata + frames   | copy (only new chunks)       |
//! | tar-layer image           | merge layers + build     | merge layers + build         |
//!
//! Copies never re-encode the metadata blob (unless `PackOptions::prefetch` replaces its
//! prefetch list) and never recompress a frame; every copied frame is decompressed and checked
//! against its chunk digest on the way, so corruption is not carried from one form to the other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::oci::read::{self, OciImage};
use crate::oci::select::{self, PlatformSpec};
use crate::oci::tar_image::{self, TarImage};
use crate::oci::write::{self, Committed, LayoutWriter};
use crate::oci::{layout::Layout, pack};
use crate::tar::merge::{NodeId, Tree};
use chunkfs_format::build::{self, BuildOutput, Builder, ChunkSink, FileId, Progress};
use chunkfs_format::cfs::header::COMPAT_ALIGN512;
use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::cfs::write::{self as cfs_write, CfsWriter, PackOptions, Summary};
use chunkfs_format::compress::Decoder;
use chunkfs_format::digest::Digest;
use chunkfs_format::model::{ChunkIdx, ChunkInfo, FileLayout, Image, ModelError};
use chunkfs_format::prefetch::{self, Applied};
use chunkfs_format::{Classify, ErrorClass};

/// What to convert from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A directory tree.
    Dir(&'a Path),
    /// A `.cfs` image.
    Cfs(&'a Path),
    /// An image in a layout: a chunkfs image, or an ordinary one converted from its tar layers.
    Layout {
        /// The layout directory.
        dir: &'a Path,
        /// The tag, if the layout holds several images.
        tag: Option<&'a str>,
        /// The platform to choose in a multi-platform image (default: the host's).
        platform: Option<&'a PlatformSpec>,
    },
}

/// What to convert to.
#[derive(Clone, Copy, Debug)]
pub enum Dest<'a> {
    /// A `.cfs` file.
    Cfs(&'a Path),
    /// A tag in a layout (created if missing).
    Layout {
        /// The layout directory.
        dir: &'a Path,
        /// The tag.
        tag: &'a str,
    },
}

/// Why a conversion failed, named by the step that failed. Every message names the file,
/// layer or chunk concerned; [`Classify::class`] says what kind of failure it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Choosing the image in the source layout (by tag and platform) failed.
    #[error("{0}")]
    SelectSource(#[source] select::Error),
    /// Opening the source `.cfs` failed.
    #[error("{0}")]
    OpenCfs(#[source] chunkfs_format::cfs::read::Error),
    /// Opening the chunkfs image in the source layout failed.
    #[error("{0}")]
    OpenImage(#[source] read::Error),
    /// Opening the ordinary container image in the source layout failed.
    #[error("{0}")]
    OpenContainerImage(#[source] tar_image::Error),
    /// Reading the source directory failed.
    #[error("{0}")]
    ScanDir(#[source] chunkfs_format::scan::Error),
    /// Reading (merging, then streaming) the container image's tar layers failed.
    #[error("{0}")]
    ReadLayers(#[source] crate::tar::Error),
    /// Reading a chunk frame from a pack of the source image failed.
    #[error("{0}")]
    ReadFrame(#[source] pack::Error),
    /// Opening (or creating) the destination layout failed.
    #[error("{0}")]
    OpenLayout(#[source] write::Error),
    /// Writing chunk frames into new pack blobs of the destination layout failed.
    #[error("{0}")]
    WritePacks(#[source] pack::Error),
    /// Writing the manifest and the tag into the destination layout failed.
    #[error("{0}")]
    CommitLayout(#[source] write::Error),
    /// Writing the destination `.cfs` failed.
    #[error("{0}")]
    WriteCfs(#[source] cfs_write::Error),
    /// Building chunks failed.
    #[error("{}: {source}", dest.display())]
    Build {
        /// The destination.
        dest: PathBuf,
        /// What failed.
        source: build::Error,
    },
    /// The metadata could not be encoded.
    #[error("{}: metadata: {source}", dest.display())]
    Metadata {
        /// The destination.
        dest: PathBuf,
        /// What failed.
        source: chunkfs_format::schema::codec::Error,
    },
    /// The converted image breaks an invariant (a bug in the conversion).
    #[error("{}: the converted image is invalid: {source}", dest.display())]
    Invalid {
        /// The destination.
        dest: PathBuf,
        /// The broken invariant.
        source: ModelError,
    },
    /// A frame being copied does not decode to its chunk.
    #[error("{}: chunk {chunk} ({digest}): {problem}; nothing was written", src.display())]
    BadChunk {
        /// The source.
        src: PathBuf,
        /// The chunk's number.
        chunk: usize,
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        problem: String,
    },
    /// This pair of forms is not handled here.
    #[error("converting {from} to {to} is not supported")]
    Unsupported {
        /// The source form.
        from: &'static str,
        /// The destination form.
        to: &'static str,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::SelectSource(e) => e.class(),
            Self::OpenCfs(e) => e.class(),
            Self::OpenImage(e) => e.class(),
            Self::OpenContainerImage(e) => e.class(),
            Self::ScanDir(e) => e.class(),
            Self::ReadLayers(e) => e.class(),
            Self::ReadFrame(e) | Self::WritePacks(e) => e.class(),
            Self::OpenLayout(e) | Self::CommitLayout(e) => e.class(),
            Self::WriteCfs(e) => e.class(),
            Self::Build { source, .. } => source.class(),
            Self::Metadata { .. } | Self::Invalid { .. } | Self::BadChunk { .. } => {
                ErrorClass::Corrupt
            }
            // The caller asked for a pair of forms this module does not convert.
            Self::Unsupported { .. } => ErrorClass::Usage,
        }
    }
}

/// What a conversion produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The image's metadata digest.
    pub metadata_digest: Digest,
    /// What the source was: `directory`, `cfs`, `chunkfs image` or `container image`.
    pub source_kind: &'static str,
    /// Inodes of the image.
    pub inodes: usize,
    /// Distinct chunks of the image.
    pub chunks: usize,
    /// The `.cfs` written, for a `.cfs` destination.
    pub cfs: Option<Summary>,
    /// The manifest written, for a layout destination.
    pub layout: Option<Committed>,
    /// What became of `PackOptions::prefetch`, when given.
    pub prefetch: Option<Applied>,
}

/// Converts `src` into `dest`. `on_start` receives the builder's live counters when chunks are
/// built (not for copies).
pub fn convert(
    src: Source<'_>,
    dest: Dest<'_>,
    options: &PackOptions,
    on_start: impl FnOnce(Arc<Progress>),
) -> Result<Outcome, Error> {
    match (src, dest) {
        (Source::Dir(dir), Dest::Layout { dir: layout, tag }) => {
            dir_to_layout(dir, layout, tag, options, on_start)
        }
        (Source::Cfs(path), Dest::Layout { dir, tag }) => {
            cfs_to_layout(path, dir, tag, options.prefetch.as_deref())
        }
        (Source::Layout { dir, tag, platform }, dest) => {
            let sel = Layout::open(dir)
                .map_err(select::Error::from)
                .and_then(|l| select::select(&l, tag, platform))
                .map_err(Error::SelectSource)?;
            if sel.is_chunkfs() {
                let prefetch = options.prefetch.as_deref();
                match dest {
                    Dest::Cfs(path) => layout_to_cfs(dir, tag, path, prefetch),
                    Dest::Layout {
                        dir: to,
                        tag: to_tag,
                    } => layout_to_layout(dir, tag, to, to_tag, prefetch),
                }
            } else {
                tar_to(dir, tag, platform, dest, options, on_start)
            }
        }
        (Source::Dir(_), Dest::Cfs(_)) => Err(Error::Unsupported {
            from: "a directory",
            to: "a .cfs (use cfs::write::pack_dir)",
        }),
        (Source::Cfs(_), Dest::Cfs(_)) => Err(Error::Unsupported {
            from: "a .cfs",
            to: "a .cfs",
        }),
    }
}

fn build_err(dest: &Path) -> impl Fn(build::Error) -> Error + '_ {
    move |source| Error::Build {
        dest: dest.to_owned(),
        source,
    }
}

fn known_fn(set: Arc<std::collections::HashSet<Digest>>) -> build::KnownFn {
    Box::new(move |d: &Digest| set.contains(d))
}

fn dir_to_layout(
    src: &Path,
    dir: &Path,
    tag: &str,
    options: &PackOptions,
    on_start: impl FnOnce(Arc<Progress>),
) -> Result<Outcome, Error> {
    let writer = LayoutWriter::open(dir, options.align512).map_err(Error::OpenLayout)?;
    let mut builder = Builder::new(
        options.build.clone(),
        writer.sink(),
        Some(known_fn(writer.known_set())),
    )
    .map_err(build_err(dir))?;
    on_start(builder.progress());
    let exclude: Vec<(u64, u64)> = std::fs::metadata(dir)
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            vec![(m.dev(), m.ino())]
        })
        .unwrap_or_default();
    let tree = chunkfs_format::scan::scan(src, &mut builder, &exclude).map_err(Error::ScanDir)?;
    let mut built = builder.finish().map_err(build_err(dir))?;
    let mut image = tree.into_image(&mut built);
    let applied = apply_prefetch(&mut image, options);
    let outcome = commit_built(writer, dir, tag, image, built.sink, "directory")?;
    Ok(Outcome {
        prefetch: applied,
        ..outcome
    })
}

/// Gives a built image the prefetch list `options` asks for, if any.
fn apply_prefetch(image: &mut Image, options: &PackOptions) -> Option<Applied> {
    options
        .prefetch
        .as_deref()
        .map(|d| prefetch::apply(image, d))
}

/// The metadata blob of a copied image: the source's verbatim, or, when `--prefetch` gives a
/// list, the image with that list re-encoded (another image, with another digest).
fn copied_metadata(
    image: &Image,
    blob: &[u8],
    digests: Option<&[Digest]>,
    dest: &Path,
) -> Result<(Vec<u8>, Option<Applied>), Error> {
    let Some(digests) = digests else {
        return Ok((blob.to_vec(), None));
    };
    let mut image = image.clone();
    let applied = prefetch::apply(&mut image, digests);
    let blob =
        chunkfs_format::schema::codec::encode_blob(&image).map_err(|source| Error::Metadata {
            dest: dest.to_owned(),
            source,
        })?;
    Ok((blob, Some(applied)))
}

/// Validates, encodes and tags an image whose new chunks went into `sink`.
fn commit_built(
    writer: LayoutWriter,
    dir: &Path,
    tag: &str,
    image: Image,
    sink: pack::PackSink,
    kind: &'static str,
) -> Result<Outcome, Error> {
    image.validate().map_err(|source| Error::Invalid {
        dest: dir.to_owned(),
        source,
    })?;
    let blob =
        chunkfs_format::schema::codec::encode_blob(&image).map_err(|source| Error::Metadata {
            dest: dir.to_owned(),
            source,
        })?;
    let packs = sink.finish().map_err(Error::WritePacks)?;
    let committed = writer
        .commit(tag, &blob, &image.chunks, packs)
        .map_err(Error::CommitLayout)?;
    Ok(Outcome {
        metadata_digest: committed.metadata_digest,
        source_kind: kind,
        inodes: image.inodes.len(),
        chunks: image.chunks.len(),
        cfs: None,
        layout: Some(committed),
        prefetch: None,
    })
}

/// Decodes a frame and checks it against its chunk.
fn check_frame(decoder: &mut Decoder, frame: &[u8], chunk: &ChunkInfo) -> Result<(), String> {
    let data = decoder
        .decode(frame, chunk.size)
        .map_err(|e| e.to_string())?;
    if Digest::of(&data) != chunk.digest {
        return Err("its frame decodes to bytes with another sha256".into());
    }
    Ok(())
}

fn decoder(src: &Path) -> Result<Decoder, Error> {
    Decoder::new().map_err(|e| Error::BadChunk {
        src: src.to_owned(),
        chunk: 0,
        digest: Digest::default(),
        problem: e.to_string(),
    })
}

fn cfs_to_layout(
    path: &Path,
    dir: &Path,
    tag: &str,
    prefetch: Option<&[Digest]>,
) -> Result<Outcome, Error> {
    let cfs = Cfs::open(path).map_err(Error::OpenCfs)?;
    let align512 = cfs.header().compat & COMPAT_ALIGN512 != 0;
    let writer = LayoutWriter::open(dir, align512).map_err(Error::OpenLayout)?;
    let mut sink = writer.sink();
    let mut dec = decoder(path)?;
    let image = cfs.image();
    for (i, c) in image.chunks.iter().enumerate() {
        if writer.is_known(&c.digest) {
            continue;
        }
        let bad = |problem: String| Error::BadChunk {
            src: path.to_owned(),
            chunk: i,
            digest: c.digest,
            problem,
        };
        let (_, frame) = cfs
            .frame(i as ChunkIdx)
            .ok_or_else(|| bad("has no frame".into()))?;
        check_frame(&mut dec, frame, c).map_err(bad)?;
        sink.write_frame(&c.digest, c.size, frame)
            .map_err(Error::WritePacks)?;
    }
    let (blob, applied) = copied_metadata(image, cfs.region(cfs.header().metadata), prefetch, dir)?;
    let packs = sink.finish().map_err(Error::WritePacks)?;
    let committed = writer
        .commit(tag, &blob, &image.chunks, packs)
        .map_err(Error::CommitLayout)?;
    Ok(Outcome {
        metadata_digest: committed.metadata_digest,
        source_kind: "cfs",
        inodes: image.inodes.len(),
        chunks: image.chunks.len(),
        cfs: None,
        layout: Some(committed),
        prefetch: applied,
    })
}

fn layout_to_cfs(
    dir: &Path,
    tag: Option<&str>,
    dest: &Path,
    prefetch: Option<&[Digest]>,
) -> Result<Outcome, Error> {
    let img = read::open_image(dir, tag).map_err(Error::OpenImage)?;
    let (writer, mut sink) = CfsWriter::create(dest, img.align512).map_err(Error::WriteCfs)?;
    let mut dec = decoder(dir)?;
    let mut locations = Vec::with_capacity(img.image.chunks.len());
    for (i, c) in img.image.chunks.iter().enumerate() {
        let frame = img.read_frame(i).map_err(Error::ReadFrame)?;
        check_frame(&mut dec, &frame, c).map_err(|problem| Error::BadChunk {
            src: img.packs[usize::from(img.locations[i].device) - 1]
                .path
                .clone(),
            chunk: i,
            digest: c.digest,
            problem,
        })?;
        let loc = sink
            .write_frame(i as ChunkIdx, c, &frame)
            .map_err(|source| {
                Error::WriteCfs(cfs_write::Error::Io {
                    path: dest.to_owned(),
                    op: "write",
                    source,
                })
            })?;
        locations.push(Some(loc));
    }
    let (blob, applied) = copied_metadata(&img.image, &img.metadata_blob, prefetch, dest)?;
    let summary = writer
        .finish_with_metadata(sink, &img.image, &locations, Some(&blob))
        .map_err(Error::WriteCfs)?;
    Ok(Outcome {
        metadata_digest: summary.metadata_digest,
        source_kind: "chunkfs image",
        inodes: img.image.inodes.len(),
        chunks: img.image.chunks.len(),
        cfs: Some(summary),
        layout: None,
        prefetch: applied,
    })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn layout_to_layout(
    src: &Path,
    tag: Option<&str>,
    dir: &Path,
    to_tag: &str,
    prefetch: Option<&[Digest]>,
) -> Result<Outcome, Error> {
    // The destination's packs must have the source's alignment, so probe it first (the probe's
    // lock is released at once).
    let align512 = read::open_image(src, tag)
        .map_err(Error::OpenImage)?
        .align512;
    // Locks are taken in path order, so two opposite copies cannot deadlock; within one layout
    // the writer's exclusive lock covers the read.
    let open_writer = || LayoutWriter::open(dir, align512).map_err(Error::OpenLayout);
    let (img, writer) = if same_dir(src, dir) {
        let writer = open_writer()?;
        (
            read::open_image_locked(src, tag).map_err(Error::OpenImage)?,
            writer,
        )
    } else if src.canonicalize().ok() <= dir.canonicalize().ok() {
        let img = read::open_image(src, tag).map_err(Error::OpenImage)?;
        (img, open_writer()?)
    } else {
        let writer = open_writer()?;
        (
            read::open_image(src, tag).map_err(Error::OpenImage)?,
            writer,
        )
    };
    if img.align512 != align512 {
        return Err(Error::Unsupported {
            from: "an image that changed while it was copied",
            to: "a layout",
        });
    }
    let metadata = copied_metadata(&img.image, &img.metadata_blob, prefetch, dir)?;
    copy_into_layout(&img, src, writer, to_tag, metadata)
}

fn copy_into_layout(
    img: &OciImage,
    src: &Path,
    writer: LayoutWriter,
    tag: &str,
    (blob, applied): (Vec<u8>, Option<Applied>),
) -> Result<Outcome, Error> {
    let mut sink = writer.sink();
    let mut dec = decoder(src)?;
    for (i, c) in img.image.chunks.iter().enumerate() {
        if writer.is_known(&c.digest) {
            continue;
        }
        let frame = img.read_frame(i).map_err(Error::ReadFrame)?;
        check_frame(&mut dec, &frame, c).map_err(|problem| Error::BadChunk {
            src: src.to_owned(),
            chunk: i,
            digest: c.digest,
            problem,
        })?;
        sink.write_frame(&c.digest, c.size, &frame)
            .map_err(Error::WritePacks)?;
    }
    let packs = sink.finish().map_err(Error::WritePacks)?;
    let committed = writer
        .commit(tag, &blob, &img.image.chunks, packs)
        .map_err(Error::CommitLayout)?;
    Ok(Outcome {
        metadata_digest: committed.metadata_digest,
        source_kind: "chunkfs image",
        inodes: img.image.inodes.len(),
        chunks: img.image.chunks.len(),
        cfs: None,
        layout: Some(committed),
        prefetch: applied,
    })
}

/// Pass 2 of a tar conversion: the surviving contents into `builder`; returns the image.
fn build_tar<S: ChunkSink>(
    img: &TarImage,
    tree: &Tree,
    mut builder: Builder<S>,
    dest: &Path,
) -> Result<(Image, BuildOutput<S>), Error> {
    let mut ids: HashMap<NodeId, FileId> = HashMap::new();
    crate::tar::feed_contents(&img.layers, tree, |node, data, size| {
        let id = builder.add_reader(size, data)?;
        ids.insert(node, id);
        Ok::<_, build::Error>(())
    })
    .map_err(Error::ReadLayers)?;
    let mut built = builder.finish().map_err(build_err(dest))?;
    let inodes = tree.to_inodes(|node, _| {
        ids.get(&node)
            .map_or(FileLayout::Extents(Vec::new()), |&id| built.take_layout(id))
    });
    let image = Image {
        chunks: std::mem::take(&mut built.chunks),
        packed_stream: std::mem::take(&mut built.packed_stream),
        inodes,
        prefetch: Vec::new(),
    };
    image.validate().map_err(|source| Error::Invalid {
        dest: dest.to_owned(),
        source,
    })?;
    Ok((image, built))
}

fn tar_to(
    dir: &Path,
    tag: Option<&str>,
    platform: Option<&PlatformSpec>,
    dest: Dest<'_>,
    options: &PackOptions,
    on_start: impl FnOnce(Arc<Progress>),
) -> Result<Outcome, Error> {
    // Into the same layout: the writer's exclusive lock covers reading the layers.
    let (img, writer) = match dest {
        Dest::Layout { dir: to, .. } if same_dir(dir, to) => {
            let writer = LayoutWriter::open(to, options.align512).map_err(Error::OpenLayout)?;
            (
                tar_image::open_tar_image_locked(dir, tag, platform)
                    .map_err(Error::OpenContainerImage)?,
                Some(writer),
            )
        }
        _ => (
            tar_image::open_tar_image(dir, tag, platform).map_err(Error::OpenContainerImage)?,
            None,
        ),
    };
    let tree = crate::tar::merge_layers(&img.layers).map_err(Error::ReadLayers)?;
    match dest {
        Dest::Cfs(path) => {
            let (writer, sink) =
                CfsWriter::create(path, options.align512).map_err(Error::WriteCfs)?;
            let builder =
                Builder::new(options.build.clone(), sink, None).map_err(build_err(path))?;
            on_start(builder.progress());
            let (mut image, built) = build_tar(&img, &tree, builder, path)?;
            let applied = apply_prefetch(&mut image, options);
            let summary = writer
                .finish(built.sink, &image, &built.locations)
                .map_err(Error::WriteCfs)?;
            Ok(Outcome {
                metadata_digest: summary.metadata_digest,
                source_kind: "container image",
                inodes: image.inodes.len(),
                chunks: image.chunks.len(),
                cfs: Some(summary),
                layout: None,
                prefetch: applied,
            })
        }
        Dest::Layout {
            dir: to,
            tag: to_tag,
        } => {
            let writer = match writer {
                Some(w) => w,
                None => LayoutWriter::open(to, options.align512).map_err(Error::OpenLayout)?,
            };
            let builder = Builder::new(
                options.build.clone(),
                writer.sink(),
                Some(known_fn(writer.known_set())),
            )
            .map_err(build_err(to))?;
            on_start(builder.progress());
            let (mut image, built) = build_tar(&img, &tree, builder, to)?;
            let applied = apply_prefetch(&mut image, options);
            let outcome = commit_built(writer, to, to_tag, image, built.sink, "container image")?;
            Ok(Outcome {
                prefetch: applied,
                ..outcome
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chunkfs_format::build::BuildOptions;
    use chunkfs_format::cfs::write::pack_dir;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut r = chunkfs_kernel_abi::testkit::XorShift64::from_seed(seed);
        (0..len).map(|_| (r.next_u64() >> 24) as u8).collect()
    }

    fn make_tree(root: &Path, variant: u64) {
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::write(root.join("etc/hostname"), b"box\n").unwrap();
        std::fs::write(root.join("etc/sub/small"), noise(3000, 1)).unwrap();
        std::fs::write(root.join("big"), noise(2_000_000, 2)).unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
        std::fs::hard_link(root.join("big"), root.join("big-hard")).unwrap();
        if variant > 0 {
            std::fs::write(
                root.join(format!("extra{variant}")),
                noise(300_000, 10 + variant),
            )
            .unwrap();
        }
    }

    fn opts(align512: bool) -> PackOptions {
        PackOptions {
            align512,
            ..PackOptions::default()
        }
    }

    fn manifest_digest(dir: &Path, tag: &str) -> String {
        let l = Layout::open(dir).unwrap();
        l.read_index()
            .unwrap()
            .manifests
            .iter()
            .find(|d| d.ref_name() == Some(tag))
            .unwrap()
            .digest
            .clone()
    }

    fn blobs(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn with_prefetch(digests: Vec<Digest>) -> PackOptions {
        PackOptions {
            prefetch: Some(digests),
            ..PackOptions::default()
        }
    }

    fn image_of_layout(dir: &Path, tag: &str) -> Image {
        read::open_image(dir, Some(tag)).unwrap().image.clone()
    }

    #[test]
    fn prefetch_list_is_set_by_every_conversion_and_kept_by_copies() {
        let tmp = crate::oci::test_dir();
        let tree = tmp.path().join("tree");
        make_tree(&tree, 0);
        // The chunks of a plain pack, to name some in a list (the list does not change them).
        let plain = tmp.path().join("plain.cfs");
        pack_dir(&tree, &plain, &opts(false), |_| {}).unwrap();
        let chunks = Cfs::open(&plain).unwrap().image().chunks.clone();
        assert!(chunks.len() >= 3, "{} chunks", chunks.len());
        let last = chunks.len() - 1;
        let unknown = Digest::of(b"a chunk of another image");
        let list = vec![
            chunks[last].digest,
            unknown,
            chunks[0].digest,
            chunks[last].digest,
        ];
        let want = vec![last as ChunkIdx, 0];
        let applied = Applied {
            listed: 4,
            kept: 2,
            missing: 1,
            repeated: 1,
        };

        // Directory -> layout, with a list.
        let (l1, l2, l3, cfs) = (
            tmp.path().join("l1"),
            tmp.path().join("l2"),
            tmp.path().join("l3"),
            tmp.path().join("x.cfs"),
        );
        let a = convert(
            Source::Dir(&tree),
            Dest::Layout { dir: &l1, tag: "t" },
            &with_prefetch(list.clone()),
            |_| {},
        )
        .unwrap();
        assert_eq!(a.prefetch, Some(applied));
        assert_eq!(image_of_layout(&l1, "t").prefetch, want);
        let plain_digest = Cfs::open(&plain).unwrap().header().metadata_digest;
        assert_ne!(a.metadata_digest, plain_digest);

        // Layout -> .cfs -> layout -> layout keep it, and the digest.
        let b = convert(
            Source::Layout {
                dir: &l1,
                tag: Some("t"),
                platform: None,
            },
            Dest::Cfs(&cfs),
            &opts(false),
            |_| {},
        )
        .unwrap();
        assert_eq!((b.metadata_digest, b.prefetch), (a.metadata_digest, None));
        assert_eq!(Cfs::open(&cfs).unwrap().image().prefetch, want);
        let c = convert(
            Source::Cfs(&cfs),
            Dest::Layout { dir: &l2, tag: "t" },
            &opts(false),
            |_| {},
        )
        .unwrap();
        assert_eq!(c.metadata_digest, a.metadata_digest);
        assert_eq!(manifest_digest(&l1, "t"), manifest_digest(&l2, "t"));
        let d = convert(
            Source::Layout {
                dir: &l2,
                tag: Some("t"),
                platform: None,
            },
            Dest::Layout { dir: &l3, tag: "u" },
            &opts(false),
            |_| {},
        )
        .unwrap();
        assert_eq!(d.metadata_digest, a.metadata_digest);

        // Directory -> .cfs with the same list: the same metadata as directory -> layout.
        let direct = tmp.path().join("direct.cfs");
        let summary = pack_dir(&tree, &direct, &with_prefetch(list.clone()), |_| {}).unwrap();
        assert_eq!(summary.prefetch, Some(applied));
        assert_eq!(summary.metadata_digest, a.metadata_digest);

        // A list given to a copy replaces the one the image had: a new image.
        let first_only = vec![chunks[0].digest];
        let e = convert(
            Source::Cfs(&cfs),
            Dest::Layout { dir: &l3, tag: "v" },
            &with_prefetch(first_only.clone()),
            |_| {},
        )
        .unwrap();
        assert_eq!(e.prefetch.map(|p| p.kept), Some(1));
        assert_eq!(image_of_layout(&l3, "v").prefetch, vec![0]);
        assert_ne!(e.metadata_digest, a.metadata_digest);
        let back = tmp.path().join("back.cfs");
        let f = convert(
            Source::Layout {
                dir: &l3,
                tag: Some("u"),
                platform: None,
            },
            Dest::Cfs(&back),
            &with_prefetch(vec![]),
            |_| {},
        )
        .unwrap();
        // An empty list removes it: back to the plain image, byte for byte in its metadata.
        assert_eq!(f.metadata_digest, plain_digest);
        assert!(Cfs::open(&back).unwrap().image().prefetch.is_empty());
        let g = convert(
            Source::Layout {
                dir: &l3,
                tag: Some("v"),
                platform: None,
            },
            Dest::Layout { dir: &l3, tag: "w" },
            &with_prefetch(first_only),
            |_| {},
        )
        .unwrap();
        assert_eq!(g.metadata_digest, e.metadata_digest);
    }

    #[test]
    fn dir_layout_cfs_layout_is_lossless() {
        for align512 in [false, true] {
            let tmp = crate::oci::test_dir();
            let tree = tmp.path().join("tree");
            make_tree(&tree, 0);
            let (l1, l2, cfs) = (
                tmp.path().join("l1"),
                tmp.path().join("l2"),
                tmp.path().join("x.cfs"),
            );
            let a = convert(
                Source::Dir(&tree),
                Dest::Layout { dir: &l1, tag: "t" },
                &opts(align512),
                |_| {},
            )
            .unwrap();
            let b = convert(
                Source::Layout {
                    dir: &l1,
                    tag: Some("t"),
                    platform: None,
                },
                Dest::Cfs(&cfs),
                &opts(false),
                |_| {},
            )
            .unwrap();
            assert_eq!(a.metadata_digest, b.metadata_digest);
            let cfs_img = Cfs::open(&cfs).unwrap();
            assert_eq!(cfs_img.header().compat & COMPAT_ALIGN512 != 0, align512);
            let c = convert(
                Source::Cfs(&cfs),
                Dest::Layout { dir: &l2, tag: "t" },
                &opts(false),
                |_| {},
            )
            .unwrap();
            assert_eq!(c.metadata_digest, a.metadata_digest);
            assert_eq!(manifest_digest(&l1, "t"), manifest_digest(&l2, "t"));
            assert_eq!(blobs(&l1), blobs(&l2));

            // Directory -> .cfs -> layout gives the same manifest as directory -> layout.
            let (direct_cfs, l3) = (tmp.path().join("d.cfs"), tmp.path().join("l3"));
            pack_dir(&tree, &direct_cfs, &opts(align512), |_| {}).unwrap();
            convert(
                Source::Cfs(&direct_cfs),
                Dest::Layout { dir: &l3, tag: "t" },
                &opts(false),
                |_| {},
            )
            .unwrap();
            assert_eq!(manifest_digest(&l1, "t"), manifest_digest(&l3, "t"));

            // And the image unpacks to the tree.
            let out = tmp.path().join("out");
            let img = Cfs::open(&cfs).unwrap();
            let mut chunks = img.chunks().unwrap();
            chunkfs_format::unpack::unpack(img.image(), &mut chunks, &out).unwrap();
            assert_eq!(
                std::fs::read(out.join("big")).unwrap(),
                std::fs::read(tree.join("big")).unwrap()
            );
            assert_eq!(
                std::fs::read_link(out.join("link")).unwrap(),
                Path::new("etc/hostname")
            );
        }
    }

    #[test]
    fn related_trees_share_and_repacking_adds_nothing() {
        let tmp = crate::oci::test_dir();
        let (t1, t2, l) = (
            tmp.path().join("t1"),
            tmp.path().join("t2"),
            tmp.path().join("l"),
        );
        make_tree(&t1, 0);
        make_tree(&t2, 1);
        let a = convert(
            Source::Dir(&t1),
            Dest::Layout { dir: &l, tag: "a" },
            &opts(false),
            |_| {},
        )
        .unwrap();
        let la = a.layout.unwrap();
        let again = convert(
            Source::Dir(&t1),
            Dest::Layout { dir: &l, tag: "a" },
            &opts(false),
            |_| {},
        )
        .unwrap()
        .layout
        .unwrap();
        assert_eq!((again.new_blobs, again.new_bytes), (0, 0));
        let b = convert(
            Source::Dir(&t2),
            Dest::Layout { dir: &l, tag: "b" },
            &opts(false),
            |_| {},
        )
        .unwrap()
        .layout
        .unwrap();
        assert_eq!(b.packs, 2, "the old pack and one new");
        assert!(
            b.new_bytes < 400_000,
            "{} bytes added for a 300 kB change",
            b.new_bytes
        );
        assert!(la.new_bytes > 2_000_000);
        // Copy to a new tag in the same layout: no new data, same manifest.
        let c = convert(
            Source::Layout {
                dir: &l,
                tag: Some("b"),
                platform: None,
            },
            Dest::Layout { dir: &l, tag: "c" },
            &opts(false),
            |_| {},
        )
        .unwrap()
        .layout
        .unwrap();
        assert_eq!(c.manifest, b.manifest);
        assert_eq!(c.new_blobs, 0);
        // Round trip through another layout, in both lock orders.
        for other in ["0-first", "z-last"] {
            let o = tmp.path().join(other);
            let d = convert(
                Source::Layout {
                    dir: &l,
                    tag: Some("b"),
                    platform: None,
                },
                Dest::Layout { dir: &o, tag: "b" },
                &opts(false),
                |_| {},
            )
            .unwrap();
            assert_eq!(d.metadata_digest, b.metadata_digest);
        }
    }

    #[test]
    fn barely_used_packs_are_not_reused() {
        let tmp = crate::oci::test_dir();
        let (t1, t2, l) = (
            tmp.path().join("t1"),
            tmp.path().join("t2"),
            tmp.path().join("l"),
        );
        make_tree(&t1, 0);
        // t2 shares only the first ~300 kB of t1's 2 MB file.
        std::fs::create_dir_all(&t2).unwrap();
        std::fs::write(t2.join("prefix"), &noise(2_000_000, 2)[..300_000]).unwrap();
        convert(
            Source::Dir(&t1),
            Dest::Layout { dir: &l, tag: "a" },
            &opts(false),
            |_| {},
        )
        .unwrap();
        let b = convert(
            Source::Dir(&t2),
            Dest::Layout { dir: &l, tag: "b" },
            &opts(false),
            |_| {},
        )
        .unwrap();
        let c = b.layout.unwrap();
        assert_eq!(c.packs, c.new_packs, "b must not pull a's pack");
        let img = read::open_image(&l, Some("b")).unwrap();
        let a = read::open_image(&l, Some("a")).unwrap();
        let a_packs: Vec<_> = a.packs.iter().map(|p| p.digest).collect();
        let shared = img
            .image
            .chunks
            .iter()
            .filter(|c| a.image.chunks.iter().any(|x| x.digest == c.digest))
            .count();
        assert!(
            shared > 0,
            "the trees share no chunk; the test proves nothing"
        );
        drop(a);
        assert!(img.packs.iter().all(|p| !a_packs.contains(&p.digest)));
        let out = tmp.path().join("out");
        let cfs = tmp.path().join("b.cfs");
        drop(img);
        convert(
            Source::Layout {
                dir: &l,
                tag: Some("b"),
                platform: None,
            },
            Dest::Cfs(&cfs),
            &opts(false),
            |_| {},
        )
        .unwrap();
        let img = Cfs::open(&cfs).unwrap();
        let mut chunks = img.chunks().unwrap();
        chunkfs_format::unpack::unpack(img.image(), &mut chunks, &out).unwrap();
        assert_eq!(
            std::fs::read(out.join("prefix")).unwrap(),
            std::fs::read(t2.join("prefix")).unwrap()
        );
    }

    #[test]
    fn concurrent_writers_and_gc_keep_every_tag() {
        let tmp = crate::oci::test_dir();
        let l = tmp.path().join("l");
        let trees: Vec<PathBuf> = (0..4u64)
            .map(|i| {
                let t = tmp.path().join(format!("t{i}"));
                make_tree(&t, i + 1);
                t
            })
            .collect();
        std::thread::scope(|scope| {
            for (i, t) in trees.iter().enumerate() {
                let l = l.clone();
                scope.spawn(move || {
                    let tag = format!("t{i}");
                    convert(
                        Source::Dir(t),
                        Dest::Layout { dir: &l, tag: &tag },
                        &opts(false),
                        |_| {},
                    )
                    .unwrap();
                });
            }
            let l = l.clone();
            scope.spawn(move || {
                for _ in 0..20 {
                    if l.join("oci-layout").exists() {
                        crate::oci::gc::gc(&l, false).unwrap();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            });
        });
        for i in 0..4 {
            let img = read::open_image(&l, Some(&format!("t{i}"))).unwrap();
            for c in 0..img.image.chunks.len() {
                img.read_frame(c).unwrap();
            }
        }
        assert!(crate::oci::gc::gc(&l, false).unwrap().removed.is_empty());
    }

    #[test]
    fn an_interrupted_write_leaves_the_layout_valid() {
        let tmp = crate::oci::test_dir();
        let (t1, t2, l) = (
            tmp.path().join("t1"),
            tmp.path().join("t2"),
            tmp.path().join("l"),
        );
        make_tree(&t1, 0);
        make_tree(&t2, 5);
        convert(
            Source::Dir(&t1),
            Dest::Layout { dir: &l, tag: "a" },
            &opts(false),
            |_| {},
        )
        .unwrap();
        let index_before = std::fs::read(l.join("index.json")).unwrap();
        {
            // Packs written, then the process "dies" before the manifest and index.json.
            let w = LayoutWriter::open(&l, false).unwrap();
            let mut b = Builder::new(
                BuildOptions::default(),
                w.sink(),
                Some(known_fn(w.known_set())),
            )
            .unwrap();
            chunkfs_format::scan::scan(&t2, &mut b, &[]).unwrap();
            let built = b.finish().unwrap();
            assert!(!built.sink.finish().unwrap().is_empty());
        }
        assert_eq!(std::fs::read(l.join("index.json")).unwrap(), index_before);
        read::open_image(&l, Some("a")).unwrap();
        let r = crate::oci::gc::gc(&l, false).unwrap();
        assert!(!r.removed.is_empty(), "the orphaned pack is garbage");
        read::open_image(&l, Some("a")).unwrap();
    }

    #[test]
    fn corrupt_frames_are_not_copied() {
        let tmp = crate::oci::test_dir();
        let tree = tmp.path().join("tree");
        make_tree(&tree, 0);
        let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
        convert(
            Source::Dir(&tree),
            Dest::Layout { dir: &l1, tag: "t" },
            &opts(false),
            |_| {},
        )
        .unwrap();
        let img = read::open_image(&l1, None).unwrap();
        let pack = img.packs[0].path.clone();
        let off = img.locations[0].offset + 20;
        drop(img);
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[off as usize] ^= 0xff;
        std::fs::write(&pack, &bytes).unwrap();
        let err = convert(
            Source::Layout {
                dir: &l1,
                tag: None,
                platform: None,
            },
            Dest::Layout { dir: &l2, tag: "t" },
            &opts(false),
            |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, Error::BadChunk { chunk: 0, .. }), "{err}");
        let err = convert(
            Source::Layout {
                dir: &l1,
                tag: None,
                platform: None,
            },
            Dest::Cfs(&tmp.path().join("x.cfs")),
            &opts(false),
            |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, Error::BadChunk { .. }), "{err}");
        assert!(!tmp.path().join("x.cfs").exists());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tar_tests {
    use super::*;
    use crate::oci::spec::Index;
    use crate::oci::tar_image::tests::{layer_tar, store};

    #[test]
    fn container_image_to_cfs_and_to_layout() {
        let tmp = crate::oci::test_dir();
        let src = tmp.path().join("src");
        let layout = Layout::create(&src).unwrap();
        let big = vec![42u8; 500_000];
        let mut d = store(
            &layout,
            true,
            "amd64",
            &[
                layer_tar(&[("a", b"lower"), ("big", &big)]),
                layer_tar(&[("a", b"upper"), ("b", b"bee")]),
            ],
        );
        d.platform = None;
        d.annotations
            .insert(crate::oci::REF_NAME.into(), "v1".into());
        layout
            .write_index(&Index {
                manifests: vec![d],
                ..Index::default()
            })
            .unwrap();

        let cfs = tmp.path().join("x.cfs");
        let a = convert(
            Source::Layout {
                dir: &src,
                tag: None,
                platform: None,
            },
            Dest::Cfs(&cfs),
            &PackOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_eq!(a.source_kind, "container image");
        let out = tmp.path().join("out");
        let img = Cfs::open(&cfs).unwrap();
        let mut chunks = img.chunks().unwrap();
        chunkfs_format::unpack::unpack(img.image(), &mut chunks, &out).unwrap();
        assert_eq!(std::fs::read(out.join("a")).unwrap(), b"upper");
        assert_eq!(std::fs::read(out.join("b")).unwrap(), b"bee");
        assert_eq!(std::fs::read(out.join("big")).unwrap(), big);

        let dst = tmp.path().join("dst");
        let b = convert(
            Source::Layout {
                dir: &src,
                tag: Some("v1"),
                platform: None,
            },
            Dest::Layout {
                dir: &dst,
                tag: "v1",
            },
            &PackOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_eq!(
            a.metadata_digest, b.metadata_digest,
            "same conversion, same metadata"
        );
        // Into the layout that holds the container image.
        let c = convert(
            Source::Layout {
                dir: &src,
                tag: Some("v1"),
                platform: None,
            },
            Dest::Layout {
                dir: &src,
                tag: "c",
            },
            &PackOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_eq!(c.metadata_digest, a.metadata_digest);
        let back = read::open_image(&src, Some("c")).unwrap();
        assert_eq!(back.metadata_digest, a.metadata_digest);
        drop(back);
        // With a prefetch list (all chunks, last first), into either form: the same image.
        let n = img.image().chunks.len();
        let listed = img.image().chunks.iter().rev().map(|c| c.digest).collect();
        let with_list = PackOptions {
            prefetch: Some(listed),
            ..PackOptions::default()
        };
        let source = Source::Layout {
            dir: &src,
            tag: Some("v1"),
            platform: None,
        };
        let listed_cfs = tmp.path().join("listed.cfs");
        let p = convert(source, Dest::Cfs(&listed_cfs), &with_list, |_| {}).unwrap();
        assert_eq!(p.prefetch.map(|a| a.kept), Some(n));
        let reversed: Vec<ChunkIdx> = (0..n as ChunkIdx).rev().collect();
        assert_eq!(Cfs::open(&listed_cfs).unwrap().image().prefetch, reversed);
        let to = Dest::Layout {
            dir: &dst,
            tag: "listed",
        };
        let q = convert(source, to, &with_list, |_| {}).unwrap();
        assert_eq!(q.metadata_digest, p.metadata_digest);
        assert_ne!(q.metadata_digest, a.metadata_digest);
        // gc keeps both the container image and the chunkfs image.
        assert!(crate::oci::gc::gc(&src, false).unwrap().removed.is_empty());
    }
}
