//! The packer's core: file contents in, chunk frames and file layouts out (docs/format.md §2).
//!
//! A [`Builder`] accepts the contents of regular files through explicit calls, in any order the
//! caller chooses, as long as that order is deterministic (a directory scan uses inode order,
//! a tar converter archive order). Small files go to the packed stream, larger ones are chunked
//! on their own, each data segment (between holes) separately. Chunks are hashed and compressed
//! on a worker pool; chunk numbers follow the submission order, so the result does not depend
//! on the number of threads. Every new frame is handed, in chunk order, to a [`ChunkSink`].
//!
//! ```
//! use chunkfs_format::build::{Builder, BuildOptions, ChunkSink};
//! use chunkfs_format::model::{ChunkIdx, ChunkInfo, FileLayout};
//! use chunkfs_format::translate::ChunkLocation;
//!
//! /// Keeps frames in memory.
//! #[derive(Default)]
//! struct Frames(Vec<Vec<u8>>);
//! impl ChunkSink for Frames {
//!     fn write_frame(&mut self, _idx: ChunkIdx, _chunk: &ChunkInfo, frame: &[u8]) -> std::io::Result<ChunkLocation> {
//!         self.0.push(frame.to_vec());
//!         Ok(ChunkLocation { device: 0, offset: 0, stored_len: frame.len() as u32 })
//!     }
//! }
//!
//! let mut b = Builder::new(BuildOptions::default(), Frames::default(), None)?;
//! let small = b.add_bytes(b"hello")?;
//! let big = b.add_bytes(&vec![7u8; 300_000])?;
//! let out = b.finish()?;
//! assert!(matches!(out.layout(small), FileLayout::Packed(0)));
//! assert!(matches!(out.layout(big), FileLayout::Extents(_)));
//! # Ok::<(), chunkfs_format::build::Error>(())
//! ```

mod packed;
mod pipeline;

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::chunk::{ChunkParams, Chunker};
use crate::digest::Digest;
use crate::model::{ChunkIdx, ChunkInfo, Extent, FileLayout};
use crate::translate::ChunkLocation;
use packed::{PackedStream, SmallId};
use pipeline::Pipeline;

pub use packed::{WINDOW_MAX, WINDOW_MIN, WINDOW_SPAN};

/// Files smaller than this go to the packed stream (docs/format.md §2.3 gives the measurements).
pub const SMALL_FILE_MAX_DEFAULT: u64 = 128 * 1024;
/// The first bytes of a large file that decide whether it is text ([`is_text`]), hence chunked
/// with the packed stream's bounds (docs/format.md §2.2).
pub const TEXT_PROBE: usize = 4096;

/// Whether a large file whose first bytes (up to [`TEXT_PROBE`] of them, before any hole) are
/// `head` is text: not empty, and no control byte but tab, line and page breaks and escape.
/// UTF-8 passes; NUL bytes, which every ELF file, archive and image has early, do not.
pub fn is_text(head: &[u8]) -> bool {
    !head.is_empty()
        && head.iter().all(|&b| {
            b >= 0x20 && b != 0x7f || matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1b)
        })
}

/// Where the builder stores the frames of new chunks: the `.cfs` chunk region, an OCI pack blob.
pub trait ChunkSink: Send + 'static {
    /// Stores the frame of chunk `idx`. Called once per new chunk, in increasing `idx` order,
    /// skipping chunks the builder was told exist elsewhere.
    fn write_frame(
        &mut self,
        idx: ChunkIdx,
        chunk: &ChunkInfo,
        frame: &[u8],
    ) -> std::io::Result<ChunkLocation>;
}

/// Tells the builder that a chunk is already stored elsewhere, so it is neither compressed nor
/// written (re-packing into an OCI layout that has it).
pub type KnownFn = Box<dyn Fn(&Digest) -> bool + Send>;

/// How to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// FastCDC bounds.
    pub chunking: ChunkParams,
    /// zstd level of the chunk frames.
    pub level: i32,
    /// Worker threads (hashing and compression); 0 means one per CPU.
    pub jobs: usize,
    /// Files of fewer bytes than this go to the packed stream, whose chunks are cut with
    /// [`ChunkParams::packed`] of `chunking`.
    pub small_file_max: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            chunking: ChunkParams::DEFAULT,
            level: crate::compress::DEFAULT_LEVEL,
            jobs: 0,
            small_file_max: SMALL_FILE_MAX_DEFAULT,
        }
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The options are unusable.
    #[error("invalid build options: {0}")]
    Options(String),
    /// A chunk frame could not be made.
    #[error(transparent)]
    Compress(#[from] crate::compress::Error),
    /// The sink failed to store a frame.
    #[error("cannot write chunk {chunk}: {source}")]
    Sink {
        /// The chunk.
        chunk: ChunkIdx,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// File data was given out of order or outside the declared size.
    #[error("file data {0}")]
    BadData(String),
    /// Reading file contents from a reader failed.
    #[error("cannot read file contents: {0}")]
    Read(#[source] std::io::Error),
    /// More distinct chunks than a chunk number can count.
    #[error("more than 2^32 distinct chunks")]
    TooManyChunks,
    /// A thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A worker thread panicked (a bug).
    #[error("a worker thread panicked")]
    WorkerPanicked,
    /// The build was stopped before it finished.
    #[error("the build was aborted")]
    Aborted,
}

impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        use crate::ErrorClass as C;
        match self {
            Self::Options(_) => C::Usage,
            Self::Compress(e) => e.class(),
            Self::Sink { .. } | Self::Thread(_) | Self::Aborted => C::Io,
            // A reader of file contents (a tar layer) marks contents that do not decode.
            Self::Read(e) => e.class(),
            Self::TooManyChunks => C::Unsupported,
            Self::BadData(_) | Self::WorkerPanicked => C::Corrupt,
        }
    }
}

/// Counters a progress display may read while the build runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// File bytes accepted (holes excluded).
    pub bytes_in: AtomicU64,
    /// Chunks referenced so far, duplicates included.
    pub chunk_refs: AtomicU64,
    /// Distinct chunks so far.
    pub unique_chunks: AtomicU64,
    /// Bytes of frames written so far.
    pub stored_bytes: AtomicU64,
}

/// Names a file given to the builder; resolves to its layout in [`BuildOutput::layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(u32);

/// The result of a build.
pub struct BuildOutput<S> {
    /// Every distinct chunk, numbered in order of first use.
    pub chunks: Vec<ChunkInfo>,
    /// Where each chunk's frame was written; `None` for chunks known to exist elsewhere.
    pub locations: Vec<Option<ChunkLocation>>,
    /// The packed stream's chunks.
    pub packed_stream: Vec<ChunkIdx>,
    /// The layout of every file, indexed by [`FileId`].
    layouts: Vec<FileLayout>,
    /// The sink, handed back.
    pub sink: S,
}

impl<S> BuildOutput<S> {
    /// The layout of a file.
    pub fn layout(&self, id: FileId) -> &FileLayout {
        &self.layouts[id.0 as usize]
    }

    /// Takes the layout of a file out, leaving an empty one.
    pub fn take_layout(&mut self, id: FileId) -> FileLayout {
        std::mem::replace(
            &mut self.layouts[id.0 as usize],
            FileLayout::Extents(Vec::new()),
        )
    }
}

/// Submits a chunk of a large file and records its extent.
fn push_extent<S: ChunkSink>(
    pipeline: &mut Pipeline<S>,
    extents: &mut Vec<(u64, u64)>,
    chunk_start: &mut u64,
    chunk: Vec<u8>,
) -> Result<(), Error> {
    let len = chunk.len() as u64;
    extents.push((*chunk_start, pipeline.submit(chunk)?));
    *chunk_start += len;
    Ok(())
}

/// Builds chunks and file layouts; see the module documentation.
pub struct Builder<S: ChunkSink> {
    options: BuildOptions,
    pipeline: Pipeline<S>,
    progress: Arc<Progress>,
    /// Chunkers of large files: [`BuildOptions::chunking`], and the packed stream's bounds for
    /// text ([`is_text`]), indexed by [`Class`].
    chunkers: [Chunker; 2],
    packed: PackedStream,
    current: Option<Current>,
    layouts: Vec<Pending>,
}

/// A file being written.
enum Current {
    Small {
        size: u64,
        buf: Vec<u8>,
        /// Its name, which groups it with its namesakes in the packed stream.
        name: Vec<u8>,
    },
    Large {
        size: u64,
        pos: u64,
        chunk_start: u64,
        extents: Vec<(u64, u64)>,
        /// Which chunker cuts it; `None` while its first bytes gather in `head`.
        class: Option<Class>,
        head: Vec<u8>,
    },
}

/// Index of a large file's chunker in [`Builder::chunkers`].
type Class = usize;
/// Binary and unknown large files: [`BuildOptions::chunking`].
const CLASS_FILE: Class = 0;
/// Text: the packed stream's bounds.
const CLASS_TEXT: Class = 1;

fn class_of(head: &[u8]) -> Class {
    if is_text(head) {
        CLASS_TEXT
    } else {
        CLASS_FILE
    }
}

/// A file layout whose chunks are still sequence numbers.
enum Pending {
    Extents(Vec<(u64, u64)>),
    Packed(SmallId),
}

impl<S: ChunkSink> Builder<S> {
    /// Starts the worker threads.
    pub fn new(options: BuildOptions, sink: S, known: Option<KnownFn>) -> Result<Self, Error> {
        options.chunking.validate().map_err(Error::Options)?;
        let jobs = if options.jobs == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.jobs
        };
        let progress = Arc::new(Progress::default());
        let pipeline = Pipeline::start(jobs, options.level, sink, known, progress.clone())?;
        Ok(Self {
            chunkers: [
                Chunker::new(options.chunking),
                Chunker::new(options.chunking.packed()),
            ],
            packed: PackedStream::new(options.chunking.packed()),
            options,
            pipeline,
            progress,
            current: None,
            layouts: Vec::new(),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &BuildOptions {
        &self.options
    }

    /// Live counters.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Starts a regular file of `size` bytes. Its data follows through [`Builder::write`];
    /// ranges never written are holes. Same as [`Builder::begin_named_file`] with no name.
    pub fn begin_file(&mut self, size: u64) -> Result<(), Error> {
        self.begin_named_file(size, b"")
    }

    /// Starts a regular file of `size` bytes whose name (last path component) is `name`; a small
    /// file is grouped with others of the same name in the packed stream (docs/format.md §2.2),
    /// which compresses them better. The name is a hint only: it is not stored.
    pub fn begin_named_file(&mut self, size: u64, name: &[u8]) -> Result<(), Error> {
        if self.current.is_some() {
            return Err(Error::BadData(
                "begins before the previous file ended".into(),
            ));
        }
        self.current = Some(if size > 0 && size < self.options.small_file_max {
            Current::Small {
                size,
                buf: Vec::with_capacity(size as usize),
                name: name.to_vec(),
            }
        } else {
            Current::Large {
                size,
                pos: 0,
                chunk_start: 0,
                extents: Vec::new(),
                class: None,
                head: Vec::new(),
            }
        });
        Ok(())
    }

    /// Gives the bytes at `offset` of the current file. Offsets must not go backwards; a gap
    /// since the previous write is a hole.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| Error::BadData("offset overflows".into()))?;
        self.progress
            .bytes_in
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        match self.current.as_mut() {
            None => Err(Error::BadData("written outside a file".into())),
            Some(Current::Small { size, buf, .. }) => {
                if offset < buf.len() as u64 || end > *size {
                    return Err(Error::BadData(format!(
                        "range {offset}..{end} is out of order or past the size {size}"
                    )));
                }
                buf.resize(offset as usize, 0);
                buf.extend_from_slice(data);
                Ok(())
            }
            Some(Current::Large {
                size,
                pos,
                chunk_start,
                extents,
                class,
                head,
            }) => {
                if offset < *pos || end > *size {
                    return Err(Error::BadData(format!(
                        "range {offset}..{end} is out of order or past the size {size}"
                    )));
                }
                let pipeline = &mut self.pipeline;
                if offset > *pos {
                    // A hole: the data segment before it ends here (and decides the class if
                    // the file's first bytes did not yet).
                    let mut emit = |chunk| push_extent(pipeline, extents, chunk_start, chunk);
                    let chunker = &mut self.chunkers[*class.get_or_insert_with(|| class_of(head))];
                    chunker.push(&std::mem::take(head), &mut emit)?;
                    chunker.finish(&mut emit)?;
                    *chunk_start = offset;
                }
                *pos = end;
                let mut emit = |chunk| push_extent(pipeline, extents, chunk_start, chunk);
                let mut data = data;
                if class.is_none() {
                    let (probe, rest) = data.split_at((TEXT_PROBE - head.len()).min(data.len()));
                    head.extend_from_slice(probe);
                    if head.len() < TEXT_PROBE {
                        return Ok(());
                    }
                    let chunker = &mut self.chunkers[*class.insert(class_of(head))];
                    chunker.push(&std::mem::take(head), &mut emit)?;
                    data = rest;
                }
                let chunker = &mut self.chunkers[class.unwrap_or(CLASS_FILE)];
                chunker.push(data, &mut emit)
            }
        }
    }

    /// Ends the current file.
    pub fn end_file(&mut self) -> Result<FileId, Error> {
        let pending = match self.current.take() {
            None => return Err(Error::BadData("ends a file that was not begun".into())),
            Some(Current::Small {
                size,
                mut buf,
                name,
            }) => {
                buf.resize(size as usize, 0);
                let pipeline = &mut self.pipeline;
                let id = self
                    .packed
                    .add(&name, buf, &mut |chunk| pipeline.submit(chunk))?;
                Pending::Packed(id)
            }
            Some(Current::Large {
                mut chunk_start,
                mut extents,
                class,
                head,
                ..
            }) => {
                let pipeline = &mut self.pipeline;
                let mut emit = |chunk| push_extent(pipeline, &mut extents, &mut chunk_start, chunk);
                let chunker = &mut self.chunkers[class.unwrap_or_else(|| class_of(&head))];
                chunker.push(&head, &mut emit)?;
                chunker.finish(&mut emit)?;
                Pending::Extents(extents)
            }
        };
        let id = FileId(
            u32::try_from(self.layouts.len())
                .map_err(|_| Error::BadData("more than 2^32 files".into()))?,
        );
        self.layouts.push(pending);
        Ok(id)
    }

    /// Adds a whole file read from `reader`, which must yield exactly `size` bytes.
    pub fn add_reader(&mut self, size: u64, reader: &mut dyn Read) -> Result<FileId, Error> {
        self.add_named_reader(size, b"", reader)
    }

    /// [`Builder::add_reader`] for a file named `name` (see [`Builder::begin_named_file`]).
    pub fn add_named_reader(
        &mut self,
        size: u64,
        name: &[u8],
        reader: &mut dyn Read,
    ) -> Result<FileId, Error> {
        self.begin_named_file(size, name)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Read(e)),
            };
            self.write(pos, &buf[..n])?;
            pos += n as u64;
        }
        if pos != size {
            return Err(Error::BadData(format!(
                "reader gave {pos} bytes, expected {size}"
            )));
        }
        self.end_file()
    }

    /// Adds a whole file held in memory.
    pub fn add_bytes(&mut self, data: &[u8]) -> Result<FileId, Error> {
        self.begin_file(data.len() as u64)?;
        self.write(0, data)?;
        self.end_file()
    }

    /// Flushes the packed stream, waits for every frame to be written and resolves the layouts.
    pub fn finish(mut self) -> Result<BuildOutput<S>, Error> {
        if self.current.is_some() {
            return Err(Error::BadData("the last file was not ended".into()));
        }
        let pipeline = &mut self.pipeline;
        let (packed_seqs, small_offsets) =
            self.packed.finish(&mut |chunk| pipeline.submit(chunk))?;
        let done = self.pipeline.finish()?;
        let idx = |seq: u64| done.seq_to_idx[seq as usize];
        let layouts = self
            .layouts
            .into_iter()
            .map(|p| match p {
                Pending::Packed(id) => FileLayout::Packed(small_offsets[id as usize]),
                Pending::Extents(xs) => FileLayout::Extents(
                    xs.into_iter()
                        .map(|(offset, seq)| Extent {
                            offset,
                            chunk: idx(seq),
                        })
                        .collect(),
                ),
            })
            .collect();
        let packed_stream = packed_seqs.iter().map(|&s| idx(s)).collect();
        Ok(BuildOutput {
            chunks: done.chunks,
            locations: done.locations,
            packed_stream,
            layouts,
            sink: done.sink,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct MemSink {
        frames: Vec<(ChunkIdx, Vec<u8>)>,
        fail_at: Option<ChunkIdx>,
    }

    impl ChunkSink for MemSink {
        fn write_frame(
            &mut self,
            idx: ChunkIdx,
            _chunk: &ChunkInfo,
            frame: &[u8],
        ) -> std::io::Result<ChunkLocation> {
            if self.fail_at == Some(idx) {
                return Err(std::io::Error::other("disk full"));
            }
            let offset = self.frames.iter().map(|f| f.1.len() as u64).sum();
            self.frames.push((idx, frame.to_vec()));
            Ok(ChunkLocation {
                device: 0,
                offset,
                stored_len: frame.len() as u32,
            })
        }
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut r = chunkfs_kernel_abi::testkit::XorShift64::new(seed | 1);
        (0..len).map(|_| (r.next_u64() >> 24) as u8).collect()
    }

    fn options(jobs: usize) -> BuildOptions {
        BuildOptions {
            chunking: ChunkParams {
                min: 4096,
                avg: 16384,
                max: 65536,
            },
            level: 3,
            jobs,
            small_file_max: 8192,
        }
    }

    fn build(jobs: usize, files: &[Vec<u8>]) -> (BuildOutput<MemSink>, Vec<FileId>) {
        let mut b = Builder::new(options(jobs), MemSink::default(), None).unwrap();
        let ids = files.iter().map(|f| b.add_bytes(f).unwrap()).collect();
        (b.finish().unwrap(), ids)
    }

    fn files() -> Vec<Vec<u8>> {
        let big = noise(1_000_000, 1);
        let mut edited = big.clone();
        edited.splice(1000..1000, *b"123456");
        vec![
            big.clone(),
            noise(100, 2),
            noise(5000, 3),
            big,
            noise(100, 2),
            vec![],
            edited,
            vec![0; 300_000],
        ]
    }

    #[test]
    fn thread_count_does_not_change_the_result() {
        let (a, ids_a) = build(1, &files());
        let (b, ids_b) = build(4, &files());
        assert_eq!(a.chunks, b.chunks);
        assert_eq!(a.sink.frames, b.sink.frames);
        assert_eq!(a.packed_stream, b.packed_stream);
        for (x, y) in ids_a.iter().zip(&ids_b) {
            assert_eq!(a.layout(*x), b.layout(*y));
        }
    }

    #[test]
    fn duplicates_are_stored_once_and_small_files_packed() {
        let files = files();
        let (out, ids) = build(2, &files);
        // Chunks are numbered in order and written once each.
        assert_eq!(
            out.sink.frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            (0..out.chunks.len() as u32).collect::<Vec<_>>()
        );
        assert_eq!(out.layout(ids[0]), out.layout(ids[3]));
        assert_eq!(out.layout(ids[1]), out.layout(ids[4]));
        assert_eq!(out.layout(ids[1]), &FileLayout::Packed(0));
        assert_eq!(out.layout(ids[2]), &FileLayout::Packed(100));
        assert_eq!(out.layout(ids[5]), &FileLayout::Extents(vec![]));
        let FileLayout::Extents(big) = out.layout(ids[0]) else {
            panic!()
        };
        let FileLayout::Extents(edited) = out.layout(ids[6]) else {
            panic!()
        };
        let new = edited
            .iter()
            .filter(|x| !big.iter().any(|y| y.chunk == x.chunk))
            .count();
        assert!(new <= 2, "{new} of {} chunks changed", edited.len());
        // Contents come back from the frames.
        let mut dec = crate::compress::Decoder::new().unwrap();
        let mut chunk = |i: ChunkIdx| {
            dec.decode(&out.sink.frames[i as usize].1, out.chunks[i as usize].size)
                .unwrap()
        };
        let mut got = vec![];
        for x in big {
            assert_eq!(x.offset, got.len() as u64);
            got.extend(chunk(x.chunk));
        }
        assert_eq!(got, files[0]);
        let packed: Vec<u8> = out.packed_stream.iter().flat_map(|&c| chunk(c)).collect();
        assert_eq!(packed, [files[1].as_slice(), &files[2]].concat());
    }

    /// Printable pseudo-random words: text, but with little to compress or deduplicate.
    fn words(len: usize, seed: u64) -> Vec<u8> {
        let mut r = chunkfs_kernel_abi::testkit::XorShift64::new(seed | 1);
        (0..len)
            .map(|_| match r.next_u64() % 8 {
                0 => b' ',
                _ => b'a' + (r.next_u64() % 26) as u8,
            })
            .collect()
    }

    fn extent_count(out: &BuildOutput<MemSink>, id: FileId) -> usize {
        match out.layout(id) {
            FileLayout::Extents(xs) => xs.len(),
            FileLayout::Packed(_) => 0,
        }
    }

    #[test]
    fn text_files_are_cut_with_the_packed_streams_bounds_however_they_arrive() {
        assert!(is_text(b"# comment\n\tcode();\r\n\x1b[0m \xc3\xa9"));
        assert!(!is_text(b"\x7fELF\x02\x01\x01\0"));
        assert!(!is_text(b""));
        let text = words(2_000_000, 5);
        let mut binary = text.clone();
        binary[TEXT_PROBE - 1] = 0;
        let mut b = Builder::new(options(2), MemSink::default(), None).unwrap();
        let whole = b.add_bytes(&text).unwrap();
        let bin = b.add_bytes(&binary).unwrap();
        // The same text in pieces that straddle the probe: the same chunks.
        let mut edited = text.clone();
        edited[1_500_000] = b'!';
        b.begin_file(edited.len() as u64).unwrap();
        let mut pos = 0;
        for piece in edited.chunks(1000) {
            b.write(pos, piece).unwrap();
            pos += piece.len() as u64;
        }
        let pieces = b.end_file().unwrap();
        // Text after a hole at its start is not known to be text.
        b.begin_file(3_000_000).unwrap();
        b.write(1_000_000, &text).unwrap();
        let holed = b.end_file().unwrap();
        let out = b.finish().unwrap();
        let (t, x, h) = (
            extent_count(&out, whole),
            extent_count(&out, bin),
            extent_count(&out, holed),
        );
        // 2 MB at 64 KiB-average chunks, against 16 KiB ones.
        assert!(t * 3 < x, "text {t} chunks, binary {x}");
        assert_eq!(h, x, "holed {h}");
        let (FileLayout::Extents(a), FileLayout::Extents(c)) =
            (out.layout(whole), out.layout(pieces))
        else {
            panic!()
        };
        assert_eq!(a.len(), c.len());
        let changed = a.iter().zip(c).filter(|(x, y)| x != y).count();
        assert_eq!(changed, 1, "{a:?} {c:?}");
    }

    #[test]
    fn holes_split_segments() {
        let mut b = Builder::new(options(2), MemSink::default(), None).unwrap();
        b.begin_file(10_000_000).unwrap();
        let data = noise(100_000, 9);
        b.write(0, &data).unwrap();
        b.write(5_000_000, &data).unwrap();
        let id = b.end_file().unwrap();
        assert!(matches!(b.write(0, b"x"), Err(Error::BadData(_))));
        let out = b.finish().unwrap();
        let FileLayout::Extents(xs) = out.layout(id) else {
            panic!()
        };
        assert_eq!(xs[0].offset, 0);
        let second = xs.iter().position(|x| x.offset == 5_000_000).unwrap();
        // The same data after the hole is the same chunks.
        assert_eq!(
            xs[..second].iter().map(|x| x.chunk).collect::<Vec<_>>(),
            xs[second..].iter().map(|x| x.chunk).collect::<Vec<_>>()
        );
    }

    #[test]
    fn known_chunks_are_not_written() {
        let data = noise(200_000, 4);
        let (first, _) = build(2, std::slice::from_ref(&data));
        let known: std::collections::HashSet<Digest> =
            first.chunks.iter().map(|c| c.digest).collect();
        let mut b = Builder::new(
            options(2),
            MemSink::default(),
            Some(Box::new(move |d| known.contains(d))),
        )
        .unwrap();
        b.add_bytes(&data).unwrap();
        b.add_bytes(&noise(50_000, 5)).unwrap();
        let out = b.finish().unwrap();
        let known_count = first.chunks.len();
        assert!(out.locations[..known_count].iter().all(Option::is_none));
        assert!(out.locations[known_count..].iter().all(Option::is_some));
        assert_eq!(out.sink.frames.len(), out.chunks.len() - known_count);
    }

    #[test]
    fn sink_errors_stop_the_build_and_name_the_chunk() {
        let sink = MemSink {
            fail_at: Some(3),
            ..Default::default()
        };
        let mut b = Builder::new(options(2), sink, None).unwrap();
        let mut result = Ok(());
        for i in 0..50 {
            if let Err(e) = b.add_bytes(&noise(100_000, i)) {
                result = Err(e);
                break;
            }
        }
        let err = match result {
            Err(e) => e,
            Ok(()) => b.finish().err().unwrap(),
        };
        assert!(matches!(err, Error::Sink { chunk: 3, .. }), "{err}");
    }

    #[test]
    fn dropping_an_unfinished_builder_stops_its_threads() {
        let mut b = Builder::new(options(2), MemSink::default(), None).unwrap();
        b.add_bytes(&noise(500_000, 6)).unwrap();
        b.begin_file(10).unwrap();
        drop(b);
    }
}
