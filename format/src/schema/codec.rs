//! The metadata blob (docs/format.md §3.1): [`Image`] <-> canonical Cap'n Proto <-> one zstd frame.
//!
//! Decoding checks the frame's declared size against the limit before allocating, refuses a
//! message that is not canonical, unknown versions and feature bits, and counts above the limits
//! of §3.5. It does not run [`Image::validate`]; callers do, once.

use capnp::Word;
use capnp::message::{Builder, HeapAllocator, Reader, ReaderOptions, SegmentArray};

use super::chunkfs_capnp as cp;
use crate::digest::Digest;
use crate::model::{
    ChunkInfo, DirEntry, Extent, FileData, FileLayout, Image, Inode, InodeKind, Xattr, limits,
};

/// `Image.formatVersion` written and understood.
pub const FORMAT_VERSION: u32 = 1;
/// `Image.incompatFeatures` bits this reader understands (none in version 1).
pub const INCOMPAT_KNOWN: u64 = 0;
/// `Image.compatFeatures` bit 0: the image carries a prefetch list (docs/format.md §3.6, §8).
pub const COMPAT_PREFETCH: u64 = 1;
/// `Image.compatFeatures` bits this reader understands: with no others set, the message must be
/// exactly what this version encodes.
pub const COMPAT_KNOWN: u64 = COMPAT_PREFETCH;
/// zstd level of the metadata frame. Fixed, so an image's bytes do not depend on the chunk level.
pub const METADATA_LEVEL: i32 = 12;

/// Why metadata could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Cap'n Proto message is malformed.
    #[error("Cap'n Proto: {0}")]
    Capnp(#[from] capnp::Error),
    /// The zstd frame is malformed.
    #[error("zstd: {0}")]
    Zstd(#[source] std::io::Error),
    /// The frame does not declare its decompressed size, or declares an impossible one.
    #[error("metadata frame declares {0:?} bytes; it must declare a multiple of 8 up to 4 GiB")]
    BadSize(Option<u64>),
    /// The decompressed bytes differ in length from what the frame declared.
    #[error("metadata frame decompressed to {got} bytes, it declared {declared}")]
    SizeMismatch {
        /// Declared.
        declared: u64,
        /// Found.
        got: usize,
    },
    /// Bytes follow the metadata's one zstd frame.
    #[error("{0} bytes follow the metadata frame")]
    TrailingBytes(usize),
    /// The message is not in canonical form (or has several segments).
    #[error("the Cap'n Proto message is not canonical")]
    NotCanonical,
    /// A format version this reader does not know.
    #[error("metadata format version {0} is not supported (this reader knows {FORMAT_VERSION})")]
    UnknownVersion(u32),
    /// Incompatible feature bits this reader does not know.
    #[error("metadata uses incompatible features {0:#x} this reader does not know")]
    UnknownIncompat(u64),
    /// A list is longer than a limit of §3.5, or longer than 2^32.
    #[error("{what}: {count} exceeds the limit of {limit}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its length.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// A field has a value the format forbids.
    #[error("{0}")]
    BadField(String),
}

impl crate::Classify for Error {
    fn class(&self) -> crate::ErrorClass {
        match self {
            Self::UnknownVersion(_) | Self::UnknownIncompat(_) => crate::ErrorClass::Unsupported,
            _ => crate::ErrorClass::Corrupt,
        }
    }
}

/// Encodes `image` as canonical Cap'n Proto bytes (one segment, no segment table).
pub fn encode(image: &Image) -> Result<Vec<u8>, Error> {
    encode_as(image, FORMAT_VERSION, 0, compat_features(image))
}

/// The compatible feature bits `image` needs: [`COMPAT_PREFETCH`] when it has a prefetch list.
pub fn compat_features(image: &Image) -> u64 {
    if image.prefetch.is_empty() {
        0
    } else {
        COMPAT_PREFETCH
    }
}

/// [`encode`] with a chosen version and feature bits (tests of other writers' images).
fn encode_as(image: &Image, version: u32, incompat: u64, compat: u64) -> Result<Vec<u8>, Error> {
    let mut message = Builder::new(HeapAllocator::new());
    let mut root = message.init_root::<cp::image::Builder>();
    root.set_format_version(version);
    root.set_incompat_features(incompat);
    root.set_compat_features(compat);
    {
        let mut chunks = root
            .reborrow()
            .init_chunks(len32("chunks", image.chunks.len())?);
        for (i, c) in image.chunks.iter().enumerate() {
            let mut b = chunks.reborrow().get(i as u32);
            b.set_digest(&c.digest.0);
            b.set_size(c.size);
        }
    }
    {
        let mut packed = root
            .reborrow()
            .init_packed_stream(len32("packed stream", image.packed_stream.len())?);
        for (i, &c) in image.packed_stream.iter().enumerate() {
            packed.set(i as u32, c);
        }
    }
    // No list is a null pointer, which canonical form truncates: an image without a list keeps
    // the bytes (and the digest) it had before the field existed.
    if !image.prefetch.is_empty() {
        let mut list = root
            .reborrow()
            .init_prefetch(len32("prefetch list", image.prefetch.len())?);
        for (i, &c) in image.prefetch.iter().enumerate() {
            list.set(i as u32, c);
        }
    }
    let mut inodes = root.init_inodes(len32("inodes", image.inodes.len())?);
    for (i, inode) in image.inodes.iter().enumerate() {
        let mut b = inodes.reborrow().get(i as u32);
        b.set_mode(inode.mode);
        b.set_uid(inode.uid);
        b.set_gid(inode.gid);
        b.set_mtime_sec(inode.mtime_sec);
        b.set_mtime_nsec(inode.mtime_nsec);
        if !inode.xattrs.is_empty() {
            let mut xs = b
                .reborrow()
                .init_xattrs(len32("xattrs", inode.xattrs.len())?);
            for (j, x) in inode.xattrs.iter().enumerate() {
                let mut xb = xs.reborrow().get(j as u32);
                xb.set_name(&x.name);
                xb.set_value(&x.value);
            }
        }
        match &inode.kind {
            InodeKind::Directory(entries) => {
                let mut es = b.init_directory(len32("directory entries", entries.len())?);
                for (j, e) in entries.iter().enumerate() {
                    let mut eb = es.reborrow().get(j as u32);
                    eb.set_name(&e.name);
                    eb.set_inode(e.inode);
                }
            }
            InodeKind::File(f) => {
                let mut fb = b.init_file();
                fb.set_size(f.size);
                match &f.layout {
                    FileLayout::Extents(extents) => {
                        let mut xs = fb.init_extents(len32("extents", extents.len())?);
                        for (j, x) in extents.iter().enumerate() {
                            let mut xb = xs.reborrow().get(j as u32);
                            xb.set_offset(x.offset);
                            xb.set_chunk(x.chunk);
                        }
                    }
                    FileLayout::Packed(off) => fb.set_packed(*off),
                }
            }
            InodeKind::Symlink(target) => b.set_symlink(target),
            InodeKind::Device { major, minor } => {
                let mut d = b.init_device();
                d.set_major(*major);
                d.set_minor(*minor);
            }
            InodeKind::Special => b.set_special(()),
        }
    }
    let root_reader = message.get_root_as_reader::<cp::image::Reader>()?;
    let mut canonical =
        Builder::new(HeapAllocator::new().first_segment_words(
            u32::try_from(message.size_in_words() + 1).map_err(|_| {
                too_many("metadata words", message.size_in_words(), u32::MAX as usize)
            })?,
        ));
    canonical.set_root_canonical(root_reader)?;
    let segments = canonical.get_segments_for_output();
    match &segments[..] {
        [one] => Ok(one.to_vec()),
        _ => Err(Error::NotCanonical),
    }
}

/// Encodes `image` as a metadata blob: canonical Cap'n Proto in one zstd frame.
pub fn encode_blob(image: &Image) -> Result<Vec<u8>, Error> {
    compress(&encode(image)?)
}

/// Compresses canonical Cap'n Proto bytes into a metadata blob.
pub fn compress(raw: &[u8]) -> Result<Vec<u8>, Error> {
    let mut ctx = zstd::bulk::Compressor::new(METADATA_LEVEL).map_err(Error::Zstd)?;
    use zstd::zstd_safe::CParameter;
    ctx.set_parameter(CParameter::ChecksumFlag(true))
        .map_err(Error::Zstd)?;
    ctx.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(Error::Zstd)?;
    ctx.compress(raw).map_err(Error::Zstd)
}

/// Decodes a metadata blob. The result still needs [`Image::validate`].
pub fn decode_blob(blob: &[u8]) -> Result<Image, Error> {
    let declared = zstd::zstd_safe::get_frame_content_size(blob).ok().flatten();
    let size = match declared {
        Some(n) if n > 0 && n % 8 == 0 && n <= limits::METADATA_MAX => n,
        other => return Err(Error::BadSize(other)),
    };
    let frame_len =
        zstd::zstd_safe::find_frame_compressed_size(blob).map_err(|_| Error::BadSize(declared))?;
    if frame_len != blob.len() {
        return Err(Error::TrailingBytes(blob.len().saturating_sub(frame_len)));
    }
    let words = usize::try_from(size / 8).map_err(|_| Error::BadSize(declared))?;
    let buf = decompress_words(blob, words)?;
    decode(Word::words_to_bytes(&buf))
}

/// First buffer of [`decompress_words`]: 64 KiB.
const FIRST_WORDS: usize = 8 * 1024;

/// Decompresses the one frame of `blob`, which declared `words` words, into an 8-byte aligned
/// buffer of exactly that length. The declared size is only a claim: the buffer grows with
/// what the frame really produces (doubling from 64 KiB), so a small blob that declares 4 GiB
/// costs what it decodes to, not 4 GiB up front.
fn decompress_words(blob: &[u8], words: usize) -> Result<Vec<Word>, Error> {
    use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
    let declared = (words as u64) * 8;
    let mismatch = |got: usize| Error::SizeMismatch { declared, got };
    let mut d = Decoder::new().map_err(Error::Zstd)?;
    let mut input = InBuffer::around(blob);
    let mut buf: Vec<Word> = Vec::new();
    let mut filled = 0usize;
    loop {
        let cap = buf.len() * 8;
        if filled == cap && buf.len() < words {
            let grown = buf
                .len()
                .saturating_mul(2)
                .clamp(FIRST_WORDS.min(words), words);
            buf.resize(grown, capnp::word(0, 0, 0, 0, 0, 0, 0, 0));
        }
        let before = (input.pos(), filled);
        let remaining = if filled < buf.len() * 8 {
            let mut out = OutBuffer::around_pos(Word::words_to_bytes_mut(&mut buf), filled);
            let r = d.run(&mut input, &mut out).map_err(Error::Zstd)?;
            filled = out.pos();
            r
        } else {
            // Full: the frame must end here, without producing another byte.
            let mut extra = [0u8; 1];
            let mut out = OutBuffer::around(&mut extra[..]);
            let r = d.run(&mut input, &mut out).map_err(Error::Zstd)?;
            if out.pos() > 0 {
                return Err(mismatch(filled + 1));
            }
            r
        };
        if remaining == 0 {
            break;
        }
        if before == (input.pos(), filled) {
            // No progress with input left to give: the frame is cut short.
            return Err(mismatch(filled));
        }
    }
    if filled != words * 8 {
        return Err(mismatch(filled));
    }
    Ok(buf)
}

/// Decodes canonical Cap'n Proto bytes (8-byte aligned). The result still needs [`Image::validate`].
pub fn decode(bytes: &[u8]) -> Result<Image, Error> {
    let segments = [bytes];
    let mut options = ReaderOptions::new();
    // Every list element costs at least one word of traversal, so four times the message size
    // bounds what a hostile message can make us visit.
    options.traversal_limit_in_words(Some((bytes.len() / 8).saturating_mul(4).max(1024)));
    let message = Reader::new(SegmentArray::new(&segments), options);
    if !message.is_canonical()? {
        return Err(Error::NotCanonical);
    }
    let root: cp::image::Reader = message.get_root()?;
    let version = root.get_format_version();
    if version != FORMAT_VERSION {
        return Err(Error::UnknownVersion(version));
    }
    let incompat = root.get_incompat_features() & !INCOMPAT_KNOWN;
    if incompat != 0 {
        return Err(Error::UnknownIncompat(incompat));
    }
    let compat = root.get_compat_features();
    let image = decode_root(root)?;
    // Cap'n Proto's canonical form cannot see bits a struct's data section holds outside the
    // schema's fields: a message with garbage there is "canonical" and decodes like the clean
    // one, so two blobs with different digests would be the same metadata. Without compatible
    // features this reader does not know (which a newer writer sets when it uses fields this
    // reader does not know), the message must be exactly what this version writes; that also
    // ties COMPAT_PREFETCH to a non-empty list.
    if compat & !COMPAT_KNOWN == 0 && encode(&image).ok().as_deref() != Some(bytes) {
        return Err(Error::NotCanonical);
    }
    Ok(image)
}

fn decode_root(root: cp::image::Reader) -> Result<Image, Error> {
    let chunks_r = root.get_chunks()?;
    check_len("chunks", chunks_r.len(), limits::CHUNKS_MAX)?;
    let mut chunks = Vec::with_capacity(chunks_r.len() as usize);
    for (i, c) in chunks_r.iter().enumerate() {
        let digest = Digest::from_slice(c.get_digest()?)
            .ok_or_else(|| Error::BadField(format!("chunk {i}: digest is not 32 bytes")))?;
        chunks.push(ChunkInfo {
            digest,
            size: c.get_size(),
        });
    }

    let packed_r = root.get_packed_stream()?;
    check_len("packed stream", packed_r.len(), limits::CHUNKS_MAX)?;
    let packed_stream: Vec<u32> = packed_r.iter().collect();

    let prefetch_r = root.get_prefetch()?;
    check_len("prefetch list", prefetch_r.len(), limits::CHUNKS_MAX)?;
    let prefetch: Vec<u32> = prefetch_r.iter().collect();

    let inodes_r = root.get_inodes()?;
    check_len("inodes", inodes_r.len(), limits::INODES_MAX)?;
    let mut inodes = Vec::with_capacity(inodes_r.len() as usize);
    for (i, n) in inodes_r.iter().enumerate() {
        inodes.push(decode_inode(n).map_err(|e| match e {
            Error::BadField(p) => Error::BadField(format!("inode {i}: {p}")),
            other => other,
        })?);
    }
    Ok(Image {
        chunks,
        packed_stream,
        inodes,
        prefetch,
    })
}

fn decode_inode(n: cp::inode::Reader) -> Result<Inode, Error> {
    let xattrs_r = n.get_xattrs()?;
    check_len(
        "xattrs of one inode",
        xattrs_r.len(),
        limits::XATTRS_PER_INODE_MAX,
    )?;
    let mut xattrs = Vec::with_capacity(xattrs_r.len() as usize);
    for x in xattrs_r.iter() {
        xattrs.push(Xattr {
            name: x.get_name()?.to_vec(),
            value: x.get_value()?.to_vec(),
        });
    }
    let kind = match n
        .which()
        .map_err(|e| Error::BadField(format!("unknown inode kind {}", e.0)))?
    {
        cp::inode::Directory(entries) => {
            let entries = entries?;
            check_len("directory entries", entries.len(), limits::DIR_ENTRIES_MAX)?;
            let mut out = Vec::with_capacity(entries.len() as usize);
            for e in entries.iter() {
                out.push(DirEntry {
                    name: e.get_name()?.to_vec(),
                    inode: e.get_inode(),
                });
            }
            InodeKind::Directory(out)
        }
        cp::inode::File(f) => {
            let f = f?;
            let layout = match f
                .which()
                .map_err(|e| Error::BadField(format!("unknown file layout {}", e.0)))?
            {
                cp::file::Extents(xs) => {
                    let xs = xs?;
                    check_len("extents", xs.len(), limits::CHUNKS_MAX)?;
                    FileLayout::Extents(
                        xs.iter()
                            .map(|x| Extent {
                                offset: x.get_offset(),
                                chunk: x.get_chunk(),
                            })
                            .collect(),
                    )
                }
                cp::file::Packed(off) => FileLayout::Packed(off),
            };
            InodeKind::File(FileData {
                size: f.get_size(),
                layout,
            })
        }
        cp::inode::Symlink(t) => InodeKind::Symlink(t?.to_vec()),
        cp::inode::Device(d) => {
            let d = d?;
            InodeKind::Device {
                major: d.get_major(),
                minor: d.get_minor(),
            }
        }
        cp::inode::Special(()) => InodeKind::Special,
    };
    Ok(Inode {
        mode: n.get_mode(),
        uid: n.get_uid(),
        gid: n.get_gid(),
        mtime_sec: n.get_mtime_sec(),
        mtime_nsec: n.get_mtime_nsec(),
        xattrs,
        kind,
    })
}

fn check_len(what: &'static str, len: u32, limit: usize) -> Result<(), Error> {
    if len as usize > limit {
        Err(too_many(what, len as usize, limit))
    } else {
        Ok(())
    }
}

fn too_many(what: &'static str, count: usize, limit: usize) -> Error {
    Error::TooMany {
        what,
        count: count as u64,
        limit: limit as u64,
    }
}

fn len32(what: &'static str, len: usize) -> Result<u32, Error> {
    // Cap'n Proto lists hold at most 2^29 elements.
    if len >= 1 << 29 {
        Err(too_many(what, len, (1 << 29) - 1))
    } else {
        Ok(len as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mode;

    pub(crate) fn sample() -> Image {
        let meta = |m: u32| Inode {
            mode: m,
            uid: 1000,
            gid: 4_000_000_000,
            mtime_sec: -86_400,
            mtime_nsec: 999_999_999,
            xattrs: vec![],
            kind: InodeKind::Special,
        };
        let mut root = meta(mode::S_IFDIR | 0o755);
        root.xattrs = vec![
            Xattr {
                name: b"security.capability".to_vec(),
                value: vec![1, 2, 3],
            },
            Xattr {
                name: b"user.x".to_vec(),
                value: vec![],
            },
        ];
        root.kind = InodeKind::Directory(vec![
            DirEntry {
                name: b"dev".to_vec(),
                inode: 1,
            },
            DirEntry {
                name: b"f".to_vec(),
                inode: 2,
            },
            DirEntry {
                name: b"l".to_vec(),
                inode: 3,
            },
            DirEntry {
                name: b"p".to_vec(),
                inode: 4,
            },
            DirEntry {
                name: vec![0xff, 0xfe],
                inode: 2,
            },
        ]);
        let mut dev = meta(mode::S_IFCHR | 0o600);
        dev.kind = InodeKind::Device {
            major: 4095,
            minor: 1 << 20,
        };
        let mut f = meta(mode::S_IFREG | 0o4755);
        f.kind = InodeKind::File(FileData {
            size: 10,
            layout: FileLayout::Extents(vec![Extent {
                offset: 2,
                chunk: 0,
            }]),
        });
        let mut l = meta(mode::S_IFLNK | 0o777);
        l.kind = InodeKind::Symlink(vec![b'x'; 4095]);
        let mut p = meta(mode::S_IFREG | 0o644);
        p.kind = InodeKind::File(FileData {
            size: 3,
            layout: FileLayout::Packed(1),
        });
        Image {
            chunks: vec![ChunkInfo {
                digest: Digest::of(b"12345678"),
                size: 8,
            }],
            packed_stream: vec![0],
            inodes: vec![root, dev, f, l, p],
            prefetch: Vec::new(),
        }
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let img = sample();
        img.validate().unwrap();
        let blob = encode_blob(&img).unwrap();
        assert_eq!(blob, encode_blob(&img.clone()).unwrap());
        assert_eq!(decode_blob(&blob).unwrap(), img);
    }

    fn aligned(raw: &[u8]) -> Vec<Word> {
        let mut words = Word::allocate_zeroed_vec(raw.len() / 8);
        Word::words_to_bytes_mut(&mut words).copy_from_slice(raw);
        words
    }

    #[test]
    fn prefetch_list_round_trips_and_sets_its_feature_bit() {
        let without = sample();
        let mut with = sample();
        with.chunks.push(ChunkInfo {
            digest: Digest::of(b"second"),
            size: 6,
        });
        with.prefetch = vec![1, 0];
        with.validate().unwrap();
        let raw = encode(&with).unwrap();
        let decoded = decode(Word::words_to_bytes(&aligned(&raw))).unwrap();
        assert_eq!(decoded, with);
        assert_eq!(decode_blob(&encode_blob(&with).unwrap()).unwrap(), with);
        let message = aligned(&raw);
        let segments = [Word::words_to_bytes(&message)];
        let reader = Reader::new(SegmentArray::new(&segments), ReaderOptions::new());
        let root: cp::image::Reader = reader.get_root().unwrap();
        assert_eq!(root.get_compat_features(), COMPAT_PREFETCH);
        // Without a list the field is a null pointer and the bit is clear: the bytes are those
        // of an image written before the field existed (the goldens pin them too).
        assert_eq!(compat_features(&without), 0);
        let mut emptied = with.clone();
        emptied.prefetch.clear();
        let raw_without = encode(&emptied).unwrap();
        assert!(raw_without.len() < raw.len());
        let message = aligned(&raw_without);
        let segments = [Word::words_to_bytes(&message)];
        let reader = Reader::new(SegmentArray::new(&segments), ReaderOptions::new());
        let root: cp::image::Reader = reader.get_root().unwrap();
        assert_eq!(root.get_compat_features(), 0);
        assert!(!root.has_prefetch());
    }

    #[test]
    fn prefetch_bit_and_list_go_together() {
        let mut with = sample();
        with.prefetch = vec![0];
        // A list without its bit, and the bit without a list: not what this version writes.
        let unflagged = aligned(&encode_as(&with, 1, 0, 0).unwrap());
        assert!(matches!(
            decode(Word::words_to_bytes(&unflagged)),
            Err(Error::NotCanonical)
        ));
        let flag_only = aligned(&encode_as(&sample(), 1, 0, COMPAT_PREFETCH).unwrap());
        assert!(matches!(
            decode(Word::words_to_bytes(&flag_only)),
            Err(Error::NotCanonical)
        ));
        // A newer writer's unknown compatible bit: read, what this reader knows of it kept.
        let newer = aligned(&encode_as(&with, 1, 0, COMPAT_PREFETCH | 1 << 7).unwrap());
        assert_eq!(decode(Word::words_to_bytes(&newer)).unwrap(), with);
    }

    #[test]
    fn refuses_damage_unknown_versions_and_features() {
        let img = sample();
        let aligned = |raw: &[u8]| {
            let mut words = Word::allocate_zeroed_vec(raw.len() / 8);
            Word::words_to_bytes_mut(&mut words).copy_from_slice(raw);
            words
        };
        let future = aligned(&encode_as(&img, 2, 0, 0).unwrap());
        assert!(matches!(
            decode(Word::words_to_bytes(&future)),
            Err(Error::UnknownVersion(2))
        ));
        let feature = aligned(&encode_as(&img, 1, 4, 0).unwrap());
        assert!(matches!(
            decode(Word::words_to_bytes(&feature)),
            Err(Error::UnknownIncompat(4))
        ));
        let raw = encode(&img).unwrap();
        assert_eq!(decode(Word::words_to_bytes(&aligned(&raw))).unwrap(), img);
        // Not canonical: a trailing word.
        let mut longer = Word::allocate_zeroed_vec(raw.len() / 8 + 1);
        Word::words_to_bytes_mut(&mut longer)[..raw.len()].copy_from_slice(&raw);
        assert!(matches!(
            decode(Word::words_to_bytes(&longer)),
            Err(Error::NotCanonical)
        ));
        assert!(decode_blob(b"not zstd").is_err());
        let blob = encode_blob(&img).unwrap();
        assert!(decode_blob(&blob[..blob.len() - 3]).is_err());
        let mut two = blob.clone();
        two.extend_from_slice(&blob);
        assert!(matches!(decode_blob(&two), Err(Error::TrailingBytes(_))));
    }
}
