//! Opening a `.cfs` (docs/format.md §6, §8): a regular file or a block device holding one.
//!
//! [`Cfs::open`] checks, in order of trust: the header and its checksum, that the file holds
//! `image_len` bytes, the metadata blob against the metadata digest, the decoded metadata
//! ([`Image::validate`]), the chunk index against its digest and against the metadata's chunk
//! list. Chunk frames are checked when read ([`Cfs::read_chunk`]); `verify` reads them all.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chunkfs_kernel_abi::digest_table::DigestTable;
use memmap2::Mmap;

use super::header::{HEADER_LEN, Header, HeaderError, Region};
use crate::compress::Decoder;
use crate::digest::Digest;
use crate::model::{ChunkIdx, Image, ModelError};
use crate::translate::{BuiltDescriptor, ChunkLocation, ExtentLayout, ExtraDevice};

/// Why an image could not be opened or read; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct Error {
    /// The image.
    pub path: PathBuf,
    /// What is wrong.
    #[source]
    pub kind: ErrorKind,
}

impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        self.kind.class()
    }
}

impl Error {
    /// True if the image could not be read at all (I/O), false if it was read and is corrupt
    /// or unsupported.
    pub fn is_io(&self) -> bool {
        matches!(self.kind, ErrorKind::Io { .. })
    }
}

/// What is wrong with an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A system call failed.
    #[error("cannot {op}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The header is refused.
    #[error("header: {0}")]
    Header(#[from] HeaderError),
    /// The file is shorter than the header says.
    #[error("truncated: the file has {actual} bytes, the header declares {image_len}")]
    Truncated {
        /// Declared length.
        image_len: u64,
        /// Available length.
        actual: u64,
    },
    /// A region's bytes do not match the digest in the header.
    #[error("{region}: sha256 mismatch (the region is corrupt)")]
    Digest {
        /// The region.
        region: &'static str,
    },
    /// The metadata blob cannot be decoded.
    #[error("metadata: {0}")]
    Metadata(#[from] crate::schema::codec::Error),
    /// The metadata's decompressed length differs from the header's.
    #[error("metadata: decompressed to {got} bytes, the header declares {declared}")]
    MetadataLength {
        /// Declared.
        declared: u64,
        /// Found.
        got: u64,
    },
    /// The decoded metadata breaks an invariant.
    #[error("metadata: {0}")]
    Invalid(#[from] ModelError),
    /// The chunk index is malformed or disagrees with the metadata.
    #[error("chunk index: {0}")]
    Index(#[from] crate::digest_table::Error),
    /// Bytes that must be zero are not.
    #[error("{region}: non-zero byte at offset {offset}")]
    NotZero {
        /// Which padding.
        region: &'static str,
        /// Image offset of the first non-zero byte.
        offset: u64,
    },
    /// The EROFS descriptor is wrong.
    #[error("EROFS descriptor: {0}")]
    Erofs(String),
    /// A chunk frame is bad.
    #[error("chunk {chunk} (frame at byte {offset}): {problem}")]
    Chunk {
        /// The chunk.
        chunk: ChunkIdx,
        /// Where its frame starts.
        offset: u64,
        /// What is wrong.
        problem: ChunkProblem,
    },
}

impl crate::Classify for ErrorKind {
    fn class(&self) -> crate::ErrorClass {
        match self {
            Self::Io { .. } => crate::ErrorClass::Io,
            Self::Header(e) => e.class(),
            Self::Metadata(e) => e.class(),
            _ => crate::ErrorClass::Corrupt,
        }
    }
}

/// What is wrong with one chunk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkProblem {
    /// The chunk number is not in the image.
    #[error("no such chunk")]
    NoSuchChunk,
    /// The frame does not decode.
    #[error("{0}")]
    Frame(#[from] crate::compress::Error),
    /// The decoded bytes do not hash to the chunk's name.
    #[error("sha256 of the decompressed bytes differs from the chunk's digest")]
    Digest,
}

/// An opened, checked `.cfs` image.
pub struct Cfs {
    path: PathBuf,
    map: Mmap,
    header: Header,
    image: Image,
    /// Frame offset and length of each chunk, from the checked index.
    frames: Vec<(u64, u32)>,
}

impl std::fmt::Debug for Cfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cfs")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Cfs {
    /// Opens and checks everything but the chunk frames.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let fail = |kind: ErrorKind| Error {
            path: path.to_owned(),
            kind,
        };
        let io = |op, source| fail(ErrorKind::Io { op, source });
        let file = File::open(path).map_err(|e| io("open", e))?;
        let actual = super::map::size_of(&file).map_err(|e| io("get the size", e))?;
        let mut head = [0u8; HEADER_LEN];
        let got = read_full_at(&file, &mut head, 0).map_err(|e| io("read the header", e))?;
        let header = Header::parse(&head[..got]).map_err(|e| fail(e.into()))?;
        if header.image_len > actual {
            return Err(fail(ErrorKind::Truncated {
                image_len: header.image_len,
                actual,
            }));
        }
        let map = super::map::map(&file, header.image_len).map_err(|e| io("map", e))?;
        let region = |r: Region| &map[r.offset as usize..r.end() as usize];

        let blob = region(header.metadata);
        if Digest::of(blob) != header.metadata_digest {
            return Err(fail(ErrorKind::Digest { region: "metadata" }));
        }
        let raw_len = zstd::zstd_safe::get_frame_content_size(blob).ok().flatten();
        if raw_len != Some(header.metadata_raw_len) {
            return Err(fail(ErrorKind::MetadataLength {
                declared: header.metadata_raw_len,
                got: raw_len.unwrap_or(0),
            }));
        }
        let image = crate::schema::codec::decode_blob(blob).map_err(|e| fail(e.into()))?;
        image.validate().map_err(|e| fail(e.into()))?;

        let index_bytes = region(header.index);
        if Digest::of(index_bytes) != header.index_digest {
            return Err(fail(ErrorKind::Digest {
                region: "chunk index",
            }));
        }
        let table = DigestTable::parse(index_bytes)
            .map_err(|e| fail(crate::digest_table::Error::from(e).into()))?;
        crate::digest_table::check(
            &table,
            &image.chunks,
            0,
            header.chunks.offset,
            header.chunks.end(),
        )
        .map_err(|e| fail(e.into()))?;
        let frames = table
            .iter()
            .map(|e| (e.offset.get(), e.stored_len.get()))
            .collect();
        Ok(Self {
            path: path.to_owned(),
            map,
            header,
            image,
            frames,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The checked metadata.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The whole image (`image_len` bytes).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The bytes of a region of the (checked) header.
    pub fn region(&self, r: Region) -> &[u8] {
        // Header::parse checked every region against image_len, which is the map's length.
        &self.map[r.offset as usize..r.end() as usize]
    }

    /// Where each chunk is stored, in chunk order.
    pub fn locations(&self) -> Vec<ChunkLocation> {
        self.frames
            .iter()
            .map(|&(offset, stored_len)| ChunkLocation {
                device: 0,
                offset,
                stored_len,
            })
            .collect()
    }

    /// The frame of chunk `idx` and its offset.
    pub fn frame(&self, idx: ChunkIdx) -> Option<(u64, &[u8])> {
        let &(offset, len) = self.frames.get(idx as usize)?;
        // The index check put every frame inside the chunk region.
        Some((
            offset,
            &self.map[offset as usize..offset as usize + len as usize],
        ))
    }

    /// Reads chunk `idx`: decodes its frame and checks its sha256.
    pub fn read_chunk(&self, idx: ChunkIdx, decoder: &mut Decoder) -> Result<Vec<u8>, Error> {
        let fail = |offset, problem| Error {
            path: self.path.clone(),
            kind: ErrorKind::Chunk {
                chunk: idx,
                offset,
                problem,
            },
        };
        let (Some((offset, frame)), Some(info)) =
            (self.frame(idx), self.image.chunks.get(idx as usize))
        else {
            return Err(fail(0, ChunkProblem::NoSuchChunk));
        };
        let data = decoder
            .decode(frame, info.size)
            .map_err(|e| fail(offset, e.into()))?;
        if Digest::of(&data) != info.digest {
            return Err(fail(offset, ChunkProblem::Digest));
        }
        Ok(data)
    }

    /// A standalone EROFS descriptor for this image, whose one extra device is the image file
    /// itself (tagged with the metadata digest): what `chunkfs descriptor` writes and what a
    /// mount builds for an image without an embedded descriptor. `extents`: the encoding asked
    /// for, else clusters for an image packed with `--align 512`.
    pub fn standalone_descriptor(
        &self,
        extents: Option<ExtentLayout>,
    ) -> Result<BuiltDescriptor, crate::translate::Error> {
        let extents = ExtentLayout::choose(self.header.erofs_block_size == 512, extents)?;
        let locations: Vec<ChunkLocation> = self
            .locations()
            .into_iter()
            .map(|l| ChunkLocation { device: 1, ..l })
            .collect();
        // The tag names the image by its metadata digest: 64 hex characters fill the slot.
        let device = ExtraDevice {
            tag: self.header.metadata_digest.to_hex().into_bytes(),
            len: self.header.image_len,
        };
        crate::translate::standalone(&self.image, &locations, vec![device], extents)
    }

    /// A chunk reader for unpacking.
    pub fn chunks(&self) -> Result<CfsChunks<'_>, Error> {
        let decoder = Decoder::new().map_err(|e| Error {
            path: self.path.clone(),
            kind: ErrorKind::Chunk {
                chunk: 0,
                offset: 0,
                problem: e.into(),
            },
        })?;
        Ok(CfsChunks { cfs: self, decoder })
    }
}

/// Reads checked chunks of a [`Cfs`].
pub struct CfsChunks<'a> {
    cfs: &'a Cfs,
    decoder: Decoder,
}

impl crate::unpack::ChunkSource for CfsChunks<'_> {
    fn read_chunk(
        &mut self,
        idx: ChunkIdx,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.cfs.read_chunk(idx, &mut self.decoder)?)
    }
}

/// Reads until `buf` is full or the end of the file; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
