//! Writing a chunkfs image into a layout under a tag (docs/format.md §7.4).
//!
//! [`LayoutWriter::open`] takes the layout's exclusive lock (creating the layout if needed) and
//! reads the index of every pack that a tag reaches and that has the image's frame alignment.
//! Damaged manifests or packs of other tags are skipped (their chunks are then written again).
//! The producer (the builder, or a copy from a `.cfs` or another layout) asks
//! [`LayoutWriter::is_known`] for each chunk and writes only the unknown ones, in chunk order,
//! into the [`PackSink`] from [`LayoutWriter::sink`]. [`LayoutWriter::commit`] then stores the
//! metadata blob, the config and the manifest and finally replaces `index.json`. Layers are
//! `[metadata, packs in order of first use by the image's chunk list]`; for a chunk held by
//! several existing packs the pack with the smallest digest is used.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use crate::oci::layout::{self, Layout, MANIFEST_MAX};
use crate::oci::lock::{self, LayoutLock};
use crate::oci::pack::{self, PackIndex, PackInfo, PackSink};
use crate::oci::spec::{self, ContentDescriptor, ImageConfig, Manifest, RootFs};
use crate::oci::{REF_NAME, media_type};
use chunkfs_format::digest::Digest;
use chunkfs_format::model::ChunkInfo;
use chunkfs_format::{Classify, ErrorClass};

/// The config's `architecture`: chunkfs images are filesystem images, whatever the CPU, and the
/// config must be a function of the image alone (no host-dependent fields).
pub const CONFIG_ARCHITECTURE: &str = "unknown";
/// The config's `os`.
pub const CONFIG_OS: &str = "linux";

/// Why an image could not be written into a layout.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The layout could not be locked.
    #[error(transparent)]
    Lock(#[from] lock::Error),
    /// The layout could not be read or written.
    #[error(transparent)]
    Layout(#[from] layout::Error),
    /// A pack could not be written or an existing pack's index is corrupt.
    #[error(transparent)]
    Pack(#[from] pack::Error),
    /// The tag is not a valid OCI tag.
    #[error("{tag:?} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})")]
    BadTag {
        /// The tag.
        tag: String,
    },
    /// A chunk of the image is in no pack (the producer skipped a chunk it should have written).
    #[error("{}: chunk {index} ({digest}) is in no pack", dir.display())]
    MissingChunk {
        /// The layout.
        dir: std::path::PathBuf,
        /// The chunk's number.
        index: usize,
        /// Its digest.
        digest: Digest,
    },
    /// The image needs more pack layers than EROFS has device ids.
    #[error("{}: the image would need {count} pack layers, more than {max}", dir.display())]
    TooManyPacks {
        /// The layout.
        dir: std::path::PathBuf,
        /// Packs needed.
        count: usize,
        /// The limit.
        max: usize,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Lock(e) => e.class(),
            Self::Layout(e) => e.class(),
            Self::Pack(e) => e.class(),
            Self::BadTag { .. } => ErrorClass::Usage,
            Self::MissingChunk { .. } => ErrorClass::Corrupt,
            Self::TooManyPacks { .. } => ErrorClass::Unsupported,
        }
    }
}

/// Most pack layers in one manifest: extra device ids are 16-bit and 0 is the primary device.
pub const PACKS_MAX: usize = u16::MAX as usize;

/// A pack already in the layout.
#[derive(Clone, Debug)]
struct ExistingPack {
    desc: ContentDescriptor,
    path: std::path::PathBuf,
    /// Sum of its frames' lengths.
    frame_bytes: u64,
}

/// A chunk already in an existing pack.
#[derive(Clone, Copy, Debug)]
struct ExistingChunk {
    pack: usize,
    offset: u64,
    stored_len: u32,
}

/// An existing pack becomes a layer of a new image only if the image's chunks make up at least
/// this percentage of its frame bytes; the image's chunks in a pack used less are copied into
/// its own packs, so that pulling an image never fetches a pack mostly made of other images'
/// chunks (docs/format.md §7.4).
pub const REUSE_MIN_PERCENT: u64 = 50;

/// An open layout being written, holding its exclusive lock.
pub struct LayoutWriter {
    layout: Layout,
    _lock: LayoutLock,
    align512: bool,
    packs: Vec<ExistingPack>,
    /// Chunk digest -> index into `packs`.
    existing: HashMap<Digest, ExistingChunk>,
}

/// What [`LayoutWriter::commit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The tag written.
    pub tag: String,
    /// The manifest's descriptor (as listed in `index.json`, without the tag annotation).
    pub manifest: ContentDescriptor,
    /// The image's metadata digest (= the metadata layer's digest).
    pub metadata_digest: Digest,
    /// Pack layers of the manifest.
    pub packs: usize,
    /// Of which written by this commit.
    pub new_packs: usize,
    /// Blobs added to the layout (packs, metadata, config, manifest).
    pub new_blobs: usize,
    /// Bytes of the blobs added.
    pub new_bytes: u64,
    /// Length of the manifest in bytes.
    pub manifest_len: usize,
}

impl LayoutWriter {
    /// Locks (and if needed creates) the layout in `dir` and indexes its packs whose frames
    /// have the alignment `align512`.
    pub fn open(dir: &Path, align512: bool) -> Result<Self, Error> {
        let lock = LayoutLock::exclusive(dir)?;
        let layout = Layout::create(dir)?;
        let mut pack_descs: Vec<ContentDescriptor> = Vec::new();
        let mut seen = HashSet::new();
        for entry in layout.read_index()?.manifests {
            if !media_type::is_manifest(&entry.media_type) {
                continue;
            }
            // Another tag's unreadable manifest or pack only costs deduplication: its chunks
            // are written again. Readers and `gc` report such damage; a writer need not.
            let Ok(raw) = layout.read_blob(&entry, MANIFEST_MAX, "manifest") else {
                continue;
            };
            let Ok(m) = spec::parse_manifest("manifest", &raw) else {
                continue;
            };
            for l in m
                .layers
                .into_iter()
                .filter(|l| l.media_type == media_type::PACK)
            {
                if seen.insert(l.digest.clone()) {
                    pack_descs.push(l);
                }
            }
        }
        pack_descs.sort_by(|a, b| a.digest.cmp(&b.digest));
        let mut packs = Vec::new();
        let mut existing = HashMap::new();
        for desc in pack_descs {
            let Ok((file, path)) = layout.open_blob(&desc) else {
                continue;
            };
            let Ok(index) = PackIndex::read(&file, &path) else {
                continue;
            };
            if index.align512() != align512 {
                continue;
            }
            let i = packs.len();
            for e in &index.entries {
                existing.entry(e.digest).or_insert(ExistingChunk {
                    pack: i,
                    offset: e.offset,
                    stored_len: e.stored_len,
                });
            }
            let frame_bytes = index.entries.iter().map(|e| u64::from(e.stored_len)).sum();
            packs.push(ExistingPack {
                desc,
                path,
                frame_bytes,
            });
        }
        Ok(Self {
            layout,
            _lock: lock,
            align512,
            packs,
            existing,
        })
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// True if a pack of the layout already holds this chunk (with the right alignment).
    pub fn is_known(&self, digest: &Digest) -> bool {
        self.existing.contains_key(digest)
    }

    /// The set of known chunk digests, for a builder running on other threads.
    pub fn known_set(&self) -> Arc<HashSet<Digest>> {
        Arc::new(self.existing.keys().copied().collect())
    }

    /// Chunks the layout already holds.
    pub fn known_count(&self) -> usize {
        self.existing.len()
    }

    /// A sink for the image's new chunks.
    pub fn sink(&self) -> PackSink {
        PackSink::new(&self.layout, self.align512)
    }

    /// Copies the image's chunks that lie in existing packs it would use too little of
    /// ([`REUSE_MIN_PERCENT`]) into new packs, in chunk order; each frame is checked against its
    /// digest on the way.
    fn rescue_chunks(
        &self,
        chunks: &[ChunkInfo],
        new_packs: &[(PackInfo, Vec<Digest>)],
    ) -> Result<Vec<(PackInfo, Vec<Digest>)>, Error> {
        let written: HashSet<&Digest> = new_packs.iter().flat_map(|(_, d)| d.iter()).collect();
        let mut usage = vec![0u64; self.packs.len()];
        let mut seen = HashSet::new();
        for c in chunks {
            if let Some(e) = self
                .existing
                .get(&c.digest)
                .filter(|_| !written.contains(&c.digest))
            {
                if seen.insert(c.digest) {
                    usage[e.pack] += u64::from(e.stored_len);
                }
            }
        }
        let reusable: Vec<bool> = usage
            .iter()
            .zip(&self.packs)
            .map(|(&u, p)| u * 100 >= p.frame_bytes * REUSE_MIN_PERCENT)
            .collect();
        let mut sink = self.sink();
        let mut decoder = None;
        let mut files: HashMap<usize, std::fs::File> = HashMap::new();
        let mut done = HashSet::new();
        for c in chunks {
            let Some(e) = self
                .existing
                .get(&c.digest)
                .filter(|_| !written.contains(&c.digest))
            else {
                continue;
            };
            if reusable[e.pack] || !done.insert(c.digest) {
                continue;
            }
            let pack = &self.packs[e.pack];
            let io = |source| pack::Error::Io {
                path: pack.path.clone(),
                source,
            };
            let file = match files.entry(e.pack) {
                std::collections::hash_map::Entry::Occupied(f) => f.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(std::fs::File::open(&pack.path).map_err(io)?)
                }
            };
            let mut frame = vec![0u8; e.stored_len as usize];
            std::os::unix::fs::FileExt::read_exact_at(file, &mut frame, e.offset).map_err(io)?;
            let dec = match &mut decoder {
                Some(d) => d,
                None => decoder.insert(
                    chunkfs_format::compress::Decoder::new()
                        .map_err(|e| io(std::io::Error::other(e)))?,
                ),
            };
            let ok = dec
                .decode(&frame, c.size)
                .is_ok_and(|data| Digest::of(&data) == c.digest);
            if !ok {
                return Err(pack::Error::Corrupt {
                    path: pack.path.clone(),
                    problem: format!("the frame of chunk {} does not decode to it", c.digest),
                }
                .into());
            }
            sink.write_frame(&c.digest, c.size, &frame)?;
        }
        Ok(sink.finish()?)
    }

    /// Stores the metadata blob, config and manifest of an image whose chunks are `chunks`
    /// (in chunk order) and whose new chunks went into `new_packs`, and tags it `tag`.
    pub fn commit(
        self,
        tag: &str,
        metadata_blob: &[u8],
        chunks: &[ChunkInfo],
        new_packs: Vec<(PackInfo, Vec<Digest>)>,
    ) -> Result<Committed, Error> {
        if !crate::oci::reference::is_valid_tag(tag) {
            return Err(Error::BadTag {
                tag: tag.to_owned(),
            });
        }
        let dir = self.layout.dir().to_owned();
        let mut new_packs = new_packs;
        new_packs.extend(self.rescue_chunks(chunks, &new_packs)?);
        let mut new_blobs = 0usize;
        let mut new_bytes = 0u64;
        let mut new_location: HashMap<Digest, usize> = HashMap::new();
        for (i, (info, digests)) in new_packs.iter().enumerate() {
            if info.new {
                new_blobs += 1;
                new_bytes += info.size;
            }
            for d in digests {
                new_location.entry(*d).or_insert(i);
            }
        }
        // Layers in order of first use; `None` keys an existing pack, `Some` a new one.
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        enum Src {
            Old(usize),
            New(usize),
        }
        let mut order: Vec<Src> = Vec::new();
        let mut placed: HashSet<Src> = HashSet::new();
        for (index, c) in chunks.iter().enumerate() {
            let src = match (new_location.get(&c.digest), self.existing.get(&c.digest)) {
                (Some(&n), _) => Src::New(n),
                (None, Some(o)) => Src::Old(o.pack),
                (None, None) => {
                    return Err(Error::MissingChunk {
                        dir,
                        index,
                        digest: c.digest,
                    });
                }
            };
            if placed.insert(src) {
                order.push(src);
            }
        }
        if order.len() > PACKS_MAX {
            return Err(Error::TooManyPacks {
                dir,
                count: order.len(),
                max: PACKS_MAX,
            });
        }
        let mut layers = Vec::with_capacity(order.len() + 1);
        let (metadata_digest, new) = self.layout.put_blob(metadata_blob)?;
        if new {
            new_blobs += 1;
            new_bytes += metadata_blob.len() as u64;
        }
        layers.push(ContentDescriptor::new(
            media_type::METADATA,
            metadata_digest,
            metadata_blob.len() as u64,
        ));
        for src in &order {
            layers.push(match *src {
                Src::Old(o) => self.packs[o].desc.clone(),
                Src::New(n) => new_packs[n].0.descriptor(),
            });
        }
        let config = ImageConfig {
            architecture: CONFIG_ARCHITECTURE.into(),
            os: CONFIG_OS.into(),
            variant: None,
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: layers.iter().map(|l| l.digest.clone()).collect(),
            },
        };
        let config_bytes = spec::to_json(&config);
        let (config_digest, new) = self.layout.put_blob(&config_bytes)?;
        if new {
            new_blobs += 1;
            new_bytes += config_bytes.len() as u64;
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            artifact_type: Some(media_type::ARTIFACT.into()),
            config: ContentDescriptor::new(
                media_type::OCI_CONFIG,
                config_digest,
                config_bytes.len() as u64,
            ),
            layers,
            annotations: Default::default(),
        };
        let manifest_bytes = spec::to_json(&manifest);
        let (manifest_digest, new) = self.layout.put_blob(&manifest_bytes)?;
        if new {
            new_blobs += 1;
            new_bytes += manifest_bytes.len() as u64;
        }
        let manifest_desc = ContentDescriptor::new(
            media_type::OCI_MANIFEST,
            manifest_digest,
            manifest_bytes.len() as u64,
        );
        let mut tagged = manifest_desc.clone();
        tagged.artifact_type = Some(media_type::ARTIFACT.into());
        tagged.annotations.insert(REF_NAME.into(), tag.into());
        let mut index = self.layout.read_index()?;
        index.manifests.retain(|d| d.ref_name() != Some(tag));
        index.manifests.push(tagged);
        self.layout.write_index(&index)?;
        Ok(Committed {
            tag: tag.to_owned(),
            manifest: manifest_desc,
            metadata_digest,
            packs: order.len(),
            new_packs: new_packs.len(),
            new_blobs,
            new_bytes,
            manifest_len: manifest_bytes.len(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::oci::read::open_image_with;
    use chunkfs_format::model::{self, Image};

    /// A fake chunk: its "frame" is its content, which is enough for layout bookkeeping.
    fn chunk(i: u32) -> (ChunkInfo, Vec<u8>) {
        let body: Vec<u8> = format!("chunk number {i} ")
            .repeat(20 + i as usize)
            .into_bytes();
        (
            ChunkInfo {
                digest: Digest::of(&body),
                size: body.len() as u32 * 2,
            },
            body,
        )
    }

    fn image(ids: &[u32]) -> (Image, Vec<Vec<u8>>) {
        let (chunks, frames): (Vec<_>, Vec<_>) = ids.iter().map(|&i| chunk(i)).unzip();
        let mut extents = Vec::new();
        let mut off = 0u64;
        for (i, c) in chunks.iter().enumerate() {
            extents.push(model::Extent {
                offset: off,
                chunk: i as u32,
            });
            off += u64::from(c.size);
        }
        let file = model::Inode {
            mode: model::mode::S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            xattrs: vec![],
            kind: model::InodeKind::File(model::FileData {
                size: off,
                layout: model::FileLayout::Extents(extents),
            }),
        };
        let root = model::Inode {
            mode: model::mode::S_IFDIR | 0o755,
            kind: model::InodeKind::Directory(vec![model::DirEntry {
                name: b"f".to_vec(),
                inode: 1,
            }]),
            ..file.clone()
        };
        (
            Image {
                chunks,
                packed_stream: vec![],
                inodes: vec![root, file],
                prefetch: Vec::new(),
            },
            frames,
        )
    }

    /// Writes the image as the builder would: unknown chunks into the sink, in chunk order.
    fn write(dir: &Path, tag: &str, ids: &[u32], meta: &[u8]) -> Committed {
        let (img, frames) = image(ids);
        let w = LayoutWriter::open(dir, false).unwrap();
        let mut sink = w.sink();
        for (c, f) in img.chunks.iter().zip(&frames) {
            if !w.is_known(&c.digest) {
                sink.write_frame(&c.digest, c.size, f).unwrap();
            }
        }
        w.commit(tag, meta, &img.chunks, sink.finish().unwrap())
            .unwrap()
    }

    #[test]
    fn tags_share_packs_and_reads_find_every_frame() {
        let tmp = crate::oci::test_dir();
        let dir = tmp.path().join("layout");
        let a = write(&dir, "a", &[0, 1, 2, 3], b"meta a");
        assert_eq!((a.packs, a.new_packs, a.new_blobs), (1, 1, 4));
        // Unchanged: nothing new.
        let again = write(&dir, "a", &[0, 1, 2, 3], b"meta a");
        assert_eq!((again.new_blobs, again.new_bytes), (0, 0));
        assert_eq!(again.manifest, a.manifest);
        // Slightly different: only the new chunk is written, the old pack is reused.
        let b = write(&dir, "b", &[0, 1, 2, 4], b"meta b");
        assert_eq!((b.packs, b.new_packs), (2, 1));
        // One 4 KiB pack, the metadata, a config and a manifest.
        assert_eq!(b.new_blobs, 4);
        assert!(
            b.new_bytes < 4096 + 1024 + b.manifest_len as u64,
            "{}",
            b.new_bytes
        );

        for (tag, ids) in [("a", &[0u32, 1, 2, 3][..]), ("b", &[0, 1, 2, 4])] {
            let (img, frames) = image(ids);
            let opened = open_image_with(&dir, Some(tag), |blob| {
                assert_eq!(blob, format!("meta {tag}").as_bytes());
                Ok(img.clone())
            })
            .unwrap();
            assert_eq!(
                opened.metadata_digest,
                Digest::of(format!("meta {tag}").as_bytes())
            );
            for (i, f) in frames.iter().enumerate() {
                assert_eq!(&opened.read_frame(i).unwrap(), f, "tag {tag} chunk {i}");
                assert!(opened.locations[i].device >= 1);
            }
            assert!(!opened.align512);
        }
        // Only the image's packs are layers: b uses a's pack (chunks 0-2) and its own.
        let opened_b = open_image_with(&dir, Some("b"), |_| Ok(image(&[0, 1, 2, 4]).0)).unwrap();
        assert_eq!(opened_b.locations[3].device, 2);
        drop(opened_b);

        crate::oci::gc::remove_tag(&dir, "a").unwrap();
        let r = crate::oci::gc::gc(&dir, false).unwrap();
        // a's metadata, config, manifest go; the pack b shares stays.
        assert_eq!(r.removed.len(), 3, "{:?}", r.removed);
        open_image_with(&dir, Some("b"), |_| Ok(image(&[0, 1, 2, 4]).0)).unwrap();
    }

    #[test]
    fn open_refuses_missing_chunks_and_ordinary_images() {
        let tmp = crate::oci::test_dir();
        let dir = tmp.path().join("layout");
        write(&dir, "a", &[0, 1], b"meta");
        let err = open_image_with(&dir, Some("a"), |_| Ok(image(&[0, 1, 5]).0)).unwrap_err();
        assert!(
            err.to_string().contains("none of the manifest's packs"),
            "{err}"
        );
        let err = open_image_with(&dir, Some("zz"), |_| Ok(image(&[0]).0)).unwrap_err();
        assert!(err.to_string().contains("tags: a"), "{err}");
        assert!(
            LayoutWriter::open(&dir, false)
                .unwrap()
                .commit("bad/tag", b"m", &[], vec![])
                .is_err()
        );
    }

    #[test]
    fn a_damaged_pack_of_another_tag_is_not_reused() {
        let tmp = crate::oci::test_dir();
        let dir = tmp.path().join("layout");
        write(&dir, "a", &[0, 1], b"meta a");
        let pack = open_image_with(&dir, Some("a"), |_| Ok(image(&[0, 1]).0))
            .unwrap()
            .packs[0]
            .path
            .clone();
        let mut bytes = std::fs::read(&pack).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&pack, bytes).unwrap();
        let w = LayoutWriter::open(&dir, false).unwrap();
        assert!(!w.is_known(&chunk(0).0.digest));
        drop(w);
        let b = write(&dir, "b", &[0, 1], b"meta b");
        assert_eq!(b.new_packs, 1);
        // The rewritten pack has a's pack's name: the damaged file was replaced, not kept.
        assert_eq!(
            Digest::of(&std::fs::read(&pack).unwrap()).to_hex(),
            pack.file_name().unwrap().to_string_lossy()
        );
    }

    #[test]
    fn aligned_and_unaligned_images_do_not_share_packs() {
        let tmp = crate::oci::test_dir();
        let dir = tmp.path().join("layout");
        write(&dir, "a", &[0, 1], b"meta");
        let w = LayoutWriter::open(&dir, true).unwrap();
        assert!(!w.is_known(&chunk(0).0.digest));
        drop(w);
        let w = LayoutWriter::open(&dir, false).unwrap();
        assert!(w.is_known(&chunk(0).0.digest));
    }

    /// The manifest of a 10 GiB image stays far below registries' 4 MiB limit.
    #[test]
    #[ignore = "writes 10 GiB of packs (about a minute); the numbers are in docs/format.md §7.4"]
    fn manifest_of_a_10_gib_image_is_small() {
        let tmp = crate::oci::test_dir();
        let dir = tmp.path().join("layout");
        let w = LayoutWriter::open(&dir, false).unwrap();
        let mut sink = w.sink();
        let mut frame = vec![0u8; 32 * 1024];
        let mut r = chunkfs_kernel_abi::testkit::XorShift64::new(0x1234_5678_9abc_def1);
        let mut chunks = Vec::new();
        let total: u64 = 10 << 30;
        for i in 0..total / frame.len() as u64 {
            r.fill(&mut frame);
            let c = ChunkInfo {
                digest: Digest::of(&i.to_le_bytes()),
                size: 64 * 1024,
            };
            sink.write_frame(&c.digest, c.size, &frame).unwrap();
            chunks.push(c);
        }
        let c = w
            .commit("big", b"metadata", &chunks, sink.finish().unwrap())
            .unwrap();
        eprintln!(
            "10 GiB of frames: {} pack layers, manifest {} bytes",
            c.packs, c.manifest_len
        );
        assert!(c.packs < 640, "{} packs", c.packs);
        assert!(c.manifest_len < 256 * 1024, "{} bytes", c.manifest_len);
    }
}
