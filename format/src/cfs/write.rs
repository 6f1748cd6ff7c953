//! Writing a `.cfs` (docs/format.md §6) in one pass.
//!
//! Frames are written from byte 4096 as the builder produces them ([`CfsSink`]); then come the
//! EROFS metadata area, the metadata blob and the chunk index; the header and the EROFS head
//! area are written last. Everything goes to a temporary file in the destination's directory,
//! which is synced and renamed over the destination only when complete, so an interrupted pack
//! never leaves a partial image under the final name.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::header::{
    self, CHUNKS_OFFSET, COMPAT_ALIGN512, EROFS_HEAD_OFFSET, Header, IMAGE_ALIGN, Region,
};
use crate::build::{BuildOptions, Builder, ChunkSink, Progress};
use crate::digest::{Digest, Hasher};
use crate::model::{ChunkIdx, ChunkInfo, Image};
use crate::translate::{ChunkLocation, DeviceLayout, ExtentLayout};

/// Why an image could not be written; every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on `path` failed.
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the source tree failed.
    #[error(transparent)]
    Scan(#[from] crate::scan::Error),
    /// Building chunks failed (writing frames to `path`, or bad options).
    #[error("{}: {source}", path.display())]
    Build {
        /// The image being written.
        path: PathBuf,
        /// The error.
        #[source]
        source: crate::build::Error,
    },
    /// The metadata could not be encoded.
    #[error("{}: metadata: {source}", path.display())]
    Metadata {
        /// The image being written.
        path: PathBuf,
        /// The error.
        #[source]
        source: crate::schema::codec::Error,
    },
    /// The image to write breaks an invariant (a bug in its producer).
    #[error("{}: the image is invalid: {source}", path.display())]
    Invalid {
        /// The image being written.
        path: PathBuf,
        /// The broken invariant.
        #[source]
        source: crate::model::ModelError,
    },
    /// The EROFS descriptor could not be made.
    #[error("{}: EROFS descriptor: {problem}", path.display())]
    Erofs {
        /// The image being written.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// A chunk of the image was never written to this file.
    #[error("{}: chunk {chunk} has no frame in this image", path.display())]
    MissingChunk {
        /// The image being written.
        path: PathBuf,
        /// The chunk.
        chunk: ChunkIdx,
    },
}

impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        use crate::ErrorClass as C;
        match self {
            Self::Io { .. } => C::Io,
            Self::Scan(e) => e.class(),
            Self::Build { source, .. } => source.class(),
            // The descriptor needs more than EROFS can address.
            Self::Erofs { .. } => C::Unsupported,
            Self::Metadata { .. } | Self::Invalid { .. } | Self::MissingChunk { .. } => C::Corrupt,
        }
    }
}

/// How to write an image.
#[derive(Clone, Debug, Default)]
pub struct PackOptions {
    /// Chunking, compression and threads.
    pub build: BuildOptions,
    /// End every frame on a 512-byte boundary and use 512-byte EROFS blocks (the cluster
    /// layout older kernels read).
    pub align512: bool,
    /// A prefetch list file's digests (`pack --prefetch`, docs/format.md §3.6): they become the
    /// image's prefetch list, replacing any it had. `None` keeps the list (a copy keeps the
    /// metadata blob verbatim).
    pub prefetch: Option<Vec<Digest>>,
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The image's identity.
    pub metadata_digest: Digest,
    /// Bytes in the image.
    pub image_len: u64,
    /// Inodes.
    pub inodes: usize,
    /// Distinct chunks.
    pub chunks: usize,
    /// Bytes of chunk frames.
    pub stored_bytes: u64,
    /// What became of [`PackOptions::prefetch`], when given.
    pub prefetch: Option<crate::prefetch::Applied>,
}

/// Packs the directory `src` into the image `dest`. `on_start` receives the live counters once
/// the workers run (for a progress display).
pub fn pack_dir(
    src: &Path,
    dest: &Path,
    options: &PackOptions,
    on_start: impl FnOnce(Arc<Progress>),
) -> Result<Summary, Error> {
    let (writer, sink) = CfsWriter::create(dest, options.align512)?;
    let mut builder =
        Builder::new(options.build.clone(), sink, None).map_err(|source| Error::Build {
            path: dest.to_owned(),
            source,
        })?;
    on_start(builder.progress());
    let tree = crate::scan::scan(src, &mut builder, &writer.own_inodes())?;
    let mut built = builder.finish().map_err(|source| Error::Build {
        path: dest.to_owned(),
        source,
    })?;
    let mut image = tree.into_image(&mut built);
    let applied = options
        .prefetch
        .as_deref()
        .map(|d| crate::prefetch::apply(&mut image, d));
    let summary = writer.finish(built.sink, &image, &built.locations)?;
    Ok(Summary {
        prefetch: applied,
        ..summary
    })
}

/// The chunk region of an image being written: the [`ChunkSink`] for its [`Builder`].
pub struct CfsSink {
    out: BufWriter<File>,
    pos: u64,
    align512: bool,
}

impl ChunkSink for CfsSink {
    fn write_frame(
        &mut self,
        _idx: ChunkIdx,
        _chunk: &ChunkInfo,
        frame: &[u8],
    ) -> std::io::Result<ChunkLocation> {
        let len = frame.len() as u64;
        let offset = if self.align512 {
            frame_offset_aligned(self.pos, len)
        } else {
            self.pos
        };
        write_zeros(&mut self.out, offset - self.pos)?;
        self.out.write_all(frame)?;
        self.pos = offset + len;
        let stored_len =
            u32::try_from(len).map_err(|_| std::io::Error::other("frame longer than 4 GiB"))?;
        Ok(ChunkLocation {
            device: 0,
            offset,
            stored_len,
        })
    }
}

/// Where a frame of `len` bytes goes after `prev_end` in the 512-byte cluster layout: its
/// cluster starts at `prev_end` rounded up to 512 and is `len` rounded up to 512 long; the frame
/// is right-aligned in it, zero padding in front.
pub fn frame_offset_aligned(prev_end: u64, len: u64) -> u64 {
    let start = prev_end.next_multiple_of(512);
    start + len.next_multiple_of(512) - len
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// A `.cfs` being written to a temporary file next to its destination. Dropped without
/// [`CfsWriter::finish`], it removes the temporary file.
pub struct CfsWriter {
    dest: PathBuf,
    tmp: PathBuf,
    file: File,
    align512: bool,
    done: bool,
}

impl CfsWriter {
    /// Creates the temporary file and the sink that writes its chunk region.
    pub fn create(dest: &Path, align512: bool) -> Result<(Self, CfsSink), Error> {
        let io = |path: &Path, op, source| Error::Io {
            path: path.to_owned(),
            op,
            source,
        };
        let name = dest.file_name().ok_or_else(|| {
            io(
                dest,
                "create the image",
                std::io::Error::other("the path has no file name"),
            )
        })?;
        if dest.is_dir() {
            return Err(io(
                dest,
                "create the image",
                std::io::Error::other("it is a directory"),
            ));
        }
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(io(
                dest,
                "create the image",
                std::io::Error::other(format!("directory {} does not exist", parent.display())),
            ));
        }
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = parent.join(tmp_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io(&tmp, "create", e))?;
        crate::partial::PARTIAL.track(&tmp);
        let writer = Self {
            dest: dest.to_owned(),
            tmp,
            file,
            align512,
            done: false,
        };
        let mut out = writer
            .file
            .try_clone()
            .map_err(|e| io(&writer.tmp, "duplicate descriptor", e))?;
        out.seek(SeekFrom::Start(CHUNKS_OFFSET))
            .map_err(|e| io(&writer.tmp, "seek", e))?;
        Ok((
            writer,
            CfsSink {
                out: BufWriter::with_capacity(1 << 20, out),
                pos: CHUNKS_OFFSET,
                align512,
            },
        ))
    }

    /// (device, inode number) of the temporary file and of an existing destination, which a
    /// scan of a tree containing them must skip.
    pub fn own_inodes(&self) -> Vec<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        [
            self.file.metadata().ok(),
            std::fs::symlink_metadata(&self.dest).ok(),
        ]
        .into_iter()
        .flatten()
        .map(|m| (m.dev(), m.ino()))
        .collect()
    }

    /// Writes everything after the chunk region and the header, then renames the file into
    /// place. `locations[i]` is where chunk `i` was written by `sink`.
    pub fn finish(
        self,
        sink: CfsSink,
        image: &Image,
        locations: &[Option<ChunkLocation>],
    ) -> Result<Summary, Error> {
        self.finish_with_metadata(sink, image, locations, None)
    }

    /// [`CfsWriter::finish`], storing `metadata_blob` verbatim when given instead of encoding
    /// `image`: converting from an OCI layout keeps the metadata digest (docs/format.md §7.9).
    /// The blob must be the one `image` was decoded from.
    pub fn finish_with_metadata(
        mut self,
        sink: CfsSink,
        image: &Image,
        locations: &[Option<ChunkLocation>],
        metadata_blob: Option<&[u8]>,
    ) -> Result<Summary, Error> {
        let path = self.dest.clone();
        let io = |op, source| Error::Io {
            path: path.clone(),
            op,
            source,
        };
        image.validate().map_err(|source| Error::Invalid {
            path: path.clone(),
            source,
        })?;
        let mut located = Vec::with_capacity(image.chunks.len());
        for i in 0..image.chunks.len() {
            match locations.get(i) {
                Some(Some(loc)) => located.push(*loc),
                _ => {
                    return Err(Error::MissingChunk {
                        path,
                        chunk: i as ChunkIdx,
                    });
                }
            }
        }
        let chunks_end = sink.pos;
        let mut out = sink.out;
        let extents = ExtentLayout::for_frames(self.align512);
        let block = 1u64 << extents.block_size_bits();
        let meta_offset = chunks_end.next_multiple_of(block);
        let layout = DeviceLayout::embedded(extents, meta_offset);
        let erofs =
            crate::translate::translate(image, &located, &layout).map_err(|e| Error::Erofs {
                path: path.clone(),
                problem: e.to_string(),
            })?;
        let metadata_err = |source| Error::Metadata {
            path: path.clone(),
            source,
        };
        let (blob, raw_len) = match metadata_blob {
            Some(blob) => {
                let declared = zstd::zstd_safe::get_frame_content_size(blob).ok().flatten();
                let raw_len = declared
                    .ok_or_else(|| metadata_err(crate::schema::codec::Error::BadSize(declared)))?;
                (blob.to_vec(), raw_len)
            }
            None => {
                let raw = crate::schema::codec::encode(image).map_err(metadata_err)?;
                let blob = crate::schema::codec::compress(&raw).map_err(metadata_err)?;
                (blob, raw.len() as u64)
            }
        };
        let index = crate::digest_table::encode(&image.chunks, &located);

        let erofs_meta = Region {
            offset: meta_offset,
            len: erofs.meta_area().len() as u64,
        };
        let metadata = Region {
            offset: erofs_meta.end(),
            len: blob.len() as u64,
        };
        let index_region = Region {
            offset: metadata.end(),
            len: index.len() as u64,
        };
        let image_len = index_region.end().next_multiple_of(IMAGE_ALIGN);
        write_zeros(&mut out, meta_offset - chunks_end).map_err(|e| io("write", e))?;
        out.write_all(erofs.meta_area())
            .map_err(|e| io("write", e))?;
        out.write_all(&blob).map_err(|e| io("write", e))?;
        out.write_all(&index).map_err(|e| io("write", e))?;
        write_zeros(&mut out, image_len - index_region.end()).map_err(|e| io("write", e))?;
        out.flush().map_err(|e| io("write", e))?;
        drop(out);

        let head = erofs.superblock_area(image_len).map_err(|e| Error::Erofs {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        let mut erofs_hash = Hasher::new();
        erofs_hash.update(&head);
        erofs_hash.update(erofs.meta_area());
        let header = Header {
            version_minor: header::VERSION_MINOR,
            incompat: 0,
            compat: if self.align512 { COMPAT_ALIGN512 } else { 0 },
            image_len,
            erofs_block_size: block as u32,
            chunk_count: image.chunks.len() as u64,
            metadata_raw_len: raw_len,
            erofs_head: Region {
                offset: EROFS_HEAD_OFFSET,
                len: head.len() as u64,
            },
            chunks: Region {
                offset: CHUNKS_OFFSET,
                len: chunks_end - CHUNKS_OFFSET,
            },
            erofs_meta,
            metadata,
            index: index_region,
            metadata_digest: Digest::of(&blob),
            erofs_digest: erofs_hash.finish(),
            index_digest: Digest::of(&index),
        };
        self.file
            .write_all_at(&head, EROFS_HEAD_OFFSET)
            .map_err(|e| io("write", e))?;
        self.file
            .write_all_at(&header.encode(), 0)
            .map_err(|e| io("write", e))?;
        self.file.sync_all().map_err(|e| io("sync", e))?;
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| io("rename the finished image into place", e))?;
        self.done = true;
        crate::partial::PARTIAL.untrack(&self.tmp);
        if let Some(parent) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Makes the rename durable; failure here loses nothing already written.
            let _ = File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(Summary {
            metadata_digest: header.metadata_digest,
            image_len,
            inodes: image.inodes.len(),
            chunks: image.chunks.len(),
            stored_bytes: located.iter().map(|l| u64::from(l.stored_len)).sum(),
            prefetch: None,
        })
    }
}

impl Drop for CfsWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
            crate::partial::PARTIAL.untrack(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_frames_end_on_512_and_do_not_overlap() {
        let mut prev = 4096;
        for len in [1u64, 511, 512, 513, 100_000, 7] {
            let off = frame_offset_aligned(prev, len);
            assert_eq!((off + len) % 512, 0);
            assert!(off >= prev);
            assert!(off - prev.next_multiple_of(512) < 512);
            prev = off + len;
        }
    }
}
