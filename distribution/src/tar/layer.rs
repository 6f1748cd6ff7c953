//! Opening one layer blob as a stream of tar members: decompression chosen by the blob's magic
//! bytes (gzip, zstd or plain tar), with the blob's sha256 and the uncompressed stream's sha256
//! (the config's `diff_id`) computed on the way and checked at the end.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::rc::Rc;

use crate::tar::stream::{Entry, StreamError, TarStream};
use chunkfs_format::digest::{Digest, Hasher};
use chunkfs_format::{Classify, ErrorClass};

/// One layer to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInput {
    /// The blob file.
    pub path: PathBuf,
    /// Its digest (the descriptor's).
    pub digest: Digest,
    /// Its length (the descriptor's).
    pub size: u64,
    /// The sha256 of its uncompressed tar stream, from the image config, when known.
    pub diff_id: Option<Digest>,
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

impl Compression {
    /// Recognises the compression by the first bytes of the blob.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// Byte count and running sha256 of what passes through a reader.
#[derive(Default)]
struct Tally {
    hasher: Hasher,
    bytes: u64,
}

struct Tallying<R> {
    inner: R,
    tally: Rc<RefCell<Tally>>,
}

impl<R: Read> Read for Tallying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut t = self.tally.borrow_mut();
        t.hasher.update(&buf[..n]);
        t.bytes += n as u64;
        Ok(n)
    }
}

/// A layer being read.
pub struct LayerStream {
    stream: TarStream<Tallying<Box<dyn Read>>>,
    file: Rc<File>,
    /// Set when reading the blob file itself failed (not the decompressor or the tar parser).
    file_failed: Rc<Cell<bool>>,
    raw: Rc<RefCell<Tally>>,
    plain: Rc<RefCell<Tally>>,
    input: LayerInput,
    compression: Compression,
}

/// Why a layer is unreadable or does not match its digests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// The blob cannot be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The blob.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The tar stream (or its compression) is malformed.
    #[error("{compression} stream: {source}")]
    Stream {
        /// The compression in use, for the message.
        compression: &'static str,
        /// What is wrong.
        source: StreamError,
    },
    /// The blob's sha256 or length is not the descriptor's.
    #[error("blob {} is {bytes} bytes with digest {actual}, not what its descriptor says ({expected}, {expected_size} bytes)", path.display())]
    BlobDigest {
        /// The blob.
        path: PathBuf,
        /// The descriptor's digest.
        expected: Digest,
        /// The computed digest.
        actual: Digest,
        /// The descriptor's size.
        expected_size: u64,
        /// Bytes read.
        bytes: u64,
    },
    /// The uncompressed stream's sha256 is not the config's diff_id.
    #[error(
        "uncompressed content has digest {actual}, but the image config's diff_id is {expected}"
    )]
    DiffId {
        /// The config's diff_id.
        expected: Digest,
        /// The computed digest.
        actual: Digest,
    },
}

impl Classify for LayerError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Io { source, .. } => source.class(),
            Self::Stream { .. } | Self::BlobDigest { .. } | Self::DiffId { .. } => {
                ErrorClass::Corrupt
            }
        }
    }
}

impl LayerStream {
    /// Opens a layer blob.
    pub fn open(input: &LayerInput) -> Result<Self, LayerError> {
        let io = |source| LayerError::Io {
            path: input.path.clone(),
            source,
        };
        let file = Rc::new(File::open(&input.path).map_err(io)?);
        let mut head = [0u8; 4];
        let n = read_full(&mut &*file, &mut head).map_err(io)?;
        let compression = Compression::sniff(&head[..n]);
        let raw = Rc::new(RefCell::new(Tally::default()));
        let file_failed = Rc::new(Cell::new(false));
        let raw_reader = Tallying {
            inner: io::Cursor::new(head[..n].to_vec()).chain(RcFile {
                file: file.clone(),
                failed: file_failed.clone(),
            }),
            tally: raw.clone(),
        };
        let decoded: Box<dyn Read> = match compression {
            Compression::None => Box::new(raw_reader),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                BufReader::with_capacity(1 << 16, raw_reader),
            )),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
                    1 << 16,
                    raw_reader,
                ))
                .map_err(io)?,
            ),
        };
        let plain = Rc::new(RefCell::new(Tally::default()));
        let stream = TarStream::new(Tallying {
            inner: decoded,
            tally: plain.clone(),
        });
        Ok(Self {
            stream,
            file,
            file_failed,
            raw,
            plain,
            input: input.clone(),
            compression,
        })
    }

    fn compression_name(&self) -> &'static str {
        match self.compression {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The stream's complaint as a layer error: an I/O error when the blob file could not be
    /// read, else a malformed stream.
    fn wrap(&self, source: StreamError) -> LayerError {
        if self.file_failed.get() {
            return LayerError::Io {
                path: self.input.path.clone(),
                source: source
                    .source
                    .unwrap_or_else(|| io::Error::other(source.problem)),
            };
        }
        LayerError::Stream {
            compression: self.compression_name(),
            source,
        }
    }

    /// The next member, or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, LayerError> {
        self.stream.next_entry().map_err(|e| self.wrap(e))
    }

    /// Reads the current member's data.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, LayerError> {
        self.stream.read_data(buf).map_err(|e| self.wrap(e))
    }

    /// Reads the rest of the blob and checks its digest, length and diff_id; returns the
    /// uncompressed length.
    pub fn finish(self) -> Result<u64, LayerError> {
        let compression = self.compression_name();
        let at = self.stream.position();
        let file_failed = self.file_failed.get();
        let mut rest = self.stream.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| {
            if file_failed || self.file_failed.get() {
                return LayerError::Io {
                    path: self.input.path.clone(),
                    source: e,
                };
            }
            LayerError::Stream {
                compression,
                source: StreamError {
                    offset: at,
                    problem: format!("after the end of the archive: {e}"),
                    source: Some(e),
                },
            }
        })?;
        drop(rest);
        // Bytes after the end of the compressed stream still belong to the blob.
        let mut tail = Tallying {
            inner: RcFile {
                file: self.file.clone(),
                failed: self.file_failed.clone(),
            },
            tally: self.raw.clone(),
        };
        io::copy(&mut tail, &mut io::sink()).map_err(|source| LayerError::Io {
            path: self.input.path.clone(),
            source,
        })?;
        let raw = std::mem::take(&mut *self.raw.borrow_mut());
        let (bytes, actual) = (raw.bytes, raw.hasher.finish());
        if actual != self.input.digest || bytes != self.input.size {
            return Err(LayerError::BlobDigest {
                path: self.input.path.clone(),
                expected: self.input.digest,
                actual,
                expected_size: self.input.size,
                bytes,
            });
        }
        let plain = std::mem::take(&mut *self.plain.borrow_mut());
        let plain_len = plain.bytes;
        let plain_digest = plain.hasher.finish();
        if let Some(expected) = self.input.diff_id {
            if expected != plain_digest {
                return Err(LayerError::DiffId {
                    expected,
                    actual: plain_digest,
                });
            }
        }
        Ok(plain_len)
    }
}

/// A reader over a shared file handle (the position is the file's own) that records a failed
/// read, so the decompressor passing the OS error on is not taken for a malformed stream.
struct RcFile {
    file: Rc<File>,
    failed: Rc<Cell<bool>>,
}

impl Read for RcFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = (&*self.file).read(buf);
        if r.as_ref()
            .is_err_and(|e| e.kind() != io::ErrorKind::Interrupted)
        {
            self.failed.set(true);
        }
        r
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Lets the stream's data be read with `std::io` adapters. A malformed layer reads as
/// [`io::ErrorKind::InvalidData`], so whoever consumes the data keeps the failure's class.
impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_data(buf).map_err(|e| {
            let kind = match e.class() {
                ErrorClass::Io => io::ErrorKind::Other,
                _ => io::ErrorKind::InvalidData,
            };
            io::Error::new(kind, e)
        })
    }
}
