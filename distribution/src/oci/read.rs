//! Opening a chunkfs image stored in a layout (docs/format.md §7.5): what `pack oci -> .cfs`,
//! `unpack` and the mount helper use.
//!
//! Everything small is checked against its digest as it is read (manifest, config, metadata
//! blob); each pack's index is checked against the checksum in its trailer; chunk bytes are
//! checked by whoever decompresses them. Chunk `i` is located in the first pack, in layer order,
//! whose index lists its digest; device ids are layer positions (pack at layer `k` is extra
//! device `k`, the metadata layer being layer 0).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::oci::layout::{self, Layout};
use crate::oci::lock::{self, LayoutLock};
use crate::oci::media_type;
use crate::oci::pack::{self, PackIndex};
use crate::oci::select;
use crate::oci::spec::ContentDescriptor;
use chunkfs_format::digest::Digest;
use chunkfs_format::model::{Image, ModelError};
use chunkfs_format::translate::{BuiltDescriptor, ChunkLocation, ExtentLayout, ExtraDevice};
use chunkfs_format::{Classify, ErrorClass};

/// Largest config blob read.
pub const CONFIG_MAX: u64 = 1 << 20;
/// Largest metadata blob read (compressed).
pub const METADATA_BLOB_MAX: u64 = 2 << 30;

/// Why an image could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The layout could not be locked.
    #[error(transparent)]
    Lock(#[from] lock::Error),
    /// A blob or `index.json` is missing, corrupt or does not match its digest.
    #[error(transparent)]
    Layout(#[from] layout::Error),
    /// No manifest could be chosen.
    #[error(transparent)]
    Select(#[from] select::Error),
    /// A pack blob is corrupt.
    #[error(transparent)]
    Pack(#[from] pack::Error),
    /// The chosen image is an ordinary container image, not a chunkfs image.
    #[error("{}: {what} is not a chunkfs image (its layers are {layers}); convert it with `chunkfs pack`", dir.display())]
    NotChunkfs {
        /// The layout.
        dir: PathBuf,
        /// The reference.
        what: String,
        /// Its layers' media types.
        layers: String,
    },
    /// The manifest breaks the chunkfs layout rules.
    #[error("{}: manifest {manifest}: {problem}", dir.display())]
    BadManifest {
        /// The layout.
        dir: PathBuf,
        /// The manifest's digest.
        manifest: String,
        /// What is wrong.
        problem: String,
    },
    /// The metadata blob does not decode.
    #[error("{}: metadata blob {digest}: {problem}", dir.display())]
    Metadata {
        /// The layout.
        dir: PathBuf,
        /// The metadata digest.
        digest: Digest,
        /// What is wrong.
        problem: String,
    },
    /// The metadata breaks an invariant.
    #[error("{}: metadata blob {digest}: {source}", dir.display())]
    Invalid {
        /// The layout.
        dir: PathBuf,
        /// The metadata digest.
        digest: Digest,
        /// The broken invariant.
        source: ModelError,
    },
    /// A chunk is in none of the manifest's packs, or its length differs.
    #[error("{}: chunk {index} ({digest}): {problem}", dir.display())]
    Chunk {
        /// The layout.
        dir: PathBuf,
        /// The chunk's number.
        index: usize,
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        problem: String,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Lock(e) => e.class(),
            Self::Layout(e) => e.class(),
            Self::Select(e) => e.class(),
            Self::Pack(e) => e.class(),
            // An ordinary container image where a chunkfs image is needed: convert it first.
            Self::NotChunkfs { .. } => ErrorClass::Usage,
            Self::BadManifest { .. }
            | Self::Metadata { .. }
            | Self::Invalid { .. }
            | Self::Chunk { .. } => ErrorClass::Corrupt,
        }
    }
}

/// One pack layer of an opened image: extra device `device`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackRef {
    /// The blob file.
    pub path: PathBuf,
    /// Its digest.
    pub digest: Digest,
    /// Its length (a multiple of 4096).
    pub size: u64,
}

/// A chunkfs image opened from a layout. Holds the layout's shared lock until dropped, so `gc`
/// cannot remove its blobs while the caller opens them (e.g. to mount).
#[derive(Debug)]
pub struct OciImage {
    /// The decoded, validated metadata.
    pub image: Image,
    /// The metadata blob as stored (its sha256 is the metadata digest).
    pub metadata_blob: Vec<u8>,
    /// The metadata digest.
    pub metadata_digest: Digest,
    /// The manifest's descriptor.
    pub manifest: ContentDescriptor,
    /// Pack layers in layer order: `packs[k - 1]` is extra device `k`.
    pub packs: Vec<PackRef>,
    /// Where each chunk's frame is, in chunk order.
    pub locations: Vec<ChunkLocation>,
    /// True if every pack ends its frames on 512-byte boundaries (and there is at least one).
    pub align512: bool,
    /// The pack files, open, in layer order.
    files: Vec<File>,
    _lock: Option<LayoutLock>,
}

impl OciImage {
    /// The extra devices of the image's EROFS descriptor (`translate::DeviceLayout::devices`): one per
    /// pack, in layer order, tagged with the pack's digest in hex (64 bytes).
    pub fn extra_devices(&self) -> Vec<ExtraDevice> {
        self.packs
            .iter()
            .map(|p| ExtraDevice {
                tag: p.digest.to_hex().into_bytes(),
                len: p.size,
            })
            .collect()
    }

    /// The image's standalone EROFS descriptor, its pack blobs as the extra devices in layer
    /// order: what `chunkfs descriptor oci:...` writes and what a mount of the image builds.
    /// `extents`: the encoding asked for, else clusters when every pack is 512-byte aligned.
    pub fn standalone_descriptor(
        &self,
        extents: Option<ExtentLayout>,
    ) -> Result<BuiltDescriptor, chunkfs_format::translate::Error> {
        let extents = ExtentLayout::choose(self.align512, extents)?;
        chunkfs_format::translate::standalone(
            &self.image,
            &self.locations,
            self.extra_devices(),
            extents,
        )
    }

    /// The bytes of chunk `idx`'s frame, read from its pack (not decompressed, not checked).
    pub fn read_frame(&self, idx: usize) -> Result<Vec<u8>, pack::Error> {
        let loc = self.locations.get(idx).copied();
        let pack = loc
            .and_then(|l| usize::from(l.device).checked_sub(1))
            .and_then(|k| Some((self.packs.get(k)?, self.files.get(k)?)));
        let (Some(loc), Some((pack, file))) = (loc, pack) else {
            return Err(pack::Error::Corrupt {
                path: PathBuf::new(),
                problem: format!("chunk {idx} does not exist"),
            });
        };
        let mut buf = vec![0u8; loc.stored_len as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, loc.offset).map_err(
            |source| pack::Error::Io {
                path: pack.path.clone(),
                source,
            },
        )?;
        Ok(buf)
    }
}

/// Decompressed, checked chunks of an [`OciImage`], for `unpack`.
pub struct OciChunks<'a> {
    img: &'a OciImage,
    decoder: chunkfs_format::compress::Decoder,
}

impl OciImage {
    /// A reader of the image's chunks that checks each against its digest.
    pub fn chunks(&self) -> Result<OciChunks<'_>, chunkfs_format::compress::Error> {
        Ok(OciChunks {
            img: self,
            decoder: chunkfs_format::compress::Decoder::new()?,
        })
    }
}

impl chunkfs_format::unpack::ChunkSource for OciChunks<'_> {
    fn read_chunk(
        &mut self,
        idx: chunkfs_format::model::ChunkIdx,
    ) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
        let i = idx as usize;
        let info = self
            .img
            .image
            .chunks
            .get(i)
            .ok_or_else(|| format!("chunk {idx} does not exist"))?;
        let frame = self.img.read_frame(i)?;
        let pack = &self.img.packs[usize::from(self.img.locations[i].device) - 1].path;
        let data = self
            .decoder
            .decode(&frame, info.size)
            .map_err(|e| format!("{}: chunk {idx}: {e}", pack.display()))?;
        if Digest::of(&data) != info.digest {
            return Err(format!(
                "{}: chunk {idx} does not match its digest {}",
                pack.display(),
                info.digest
            )
            .into());
        }
        Ok(data)
    }
}

/// Opens the chunkfs image tagged `tag` (or the only image) in the layout `dir`.
pub fn open_image(dir: &Path, tag: Option<&str>) -> Result<OciImage, Error> {
    open_image_with(dir, tag, decode_metadata)
}

/// [`open_image`] for a caller that already holds the layout's exclusive lock (copying an
/// image to another tag of the same layout).
pub(crate) fn open_image_locked(dir: &Path, tag: Option<&str>) -> Result<OciImage, Error> {
    open_inner(dir, tag, decode_metadata, false)
}

fn decode_metadata(blob: &[u8]) -> Result<Image, String> {
    chunkfs_format::schema::codec::decode_blob(blob).map_err(|e| e.to_string())
}

/// Opens the chunkfs image tagged `tag` (or the only image) in the layout `dir`, decoding the
/// metadata blob with `decode`.
pub fn open_image_with(
    dir: &Path,
    tag: Option<&str>,
    decode: impl FnOnce(&[u8]) -> Result<Image, String>,
) -> Result<OciImage, Error> {
    open_inner(dir, tag, decode, true)
}

fn open_inner(
    dir: &Path,
    tag: Option<&str>,
    decode: impl FnOnce(&[u8]) -> Result<Image, String>,
    take_lock: bool,
) -> Result<OciImage, Error> {
    let layout = Layout::open(dir)?;
    let lock = if take_lock {
        Some(LayoutLock::shared(dir)?)
    } else {
        None
    };
    let sel = select::select(&layout, tag, None)?;
    let d = || dir.to_owned();
    if !sel.is_chunkfs() {
        return Err(Error::NotChunkfs {
            dir: d(),
            what: tag.map_or_else(|| "the image".to_owned(), |t| format!("tag {t:?}")),
            layers: sel
                .manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let bad = |problem: String| Error::BadManifest {
        dir: d(),
        manifest: sel.descriptor.digest.clone(),
        problem,
    };
    check_manifest(&sel.manifest).map_err(bad)?;
    layout.read_blob(&sel.manifest.config, CONFIG_MAX, "config")?;
    let meta_desc = &sel.manifest.layers[0];
    let metadata_blob = layout.read_blob(meta_desc, METADATA_BLOB_MAX, "metadata blob")?;
    let metadata_digest = Digest::of(&metadata_blob);
    let image = decode(&metadata_blob).map_err(|problem| Error::Metadata {
        dir: d(),
        digest: metadata_digest,
        problem,
    })?;
    image.validate().map_err(|source| Error::Invalid {
        dir: d(),
        digest: metadata_digest,
        source,
    })?;

    let mut packs = Vec::new();
    let mut files = Vec::new();
    let mut where_is: HashMap<Digest, (u16, u64, u32, u32)> = HashMap::new();
    let mut all_aligned = true;
    for (k, desc) in sel.manifest.layers.iter().enumerate().skip(1) {
        let device = u16::try_from(k).map_err(|_| bad(format!("more than {} layers", u16::MAX)))?;
        let (file, path) = layout.open_blob(desc)?;
        let index = PackIndex::read(&file, &path)?;
        all_aligned &= index.align512();
        for e in &index.entries {
            where_is
                .entry(e.digest)
                .or_insert((device, e.offset, e.stored_len, e.raw_len));
        }
        let digest = desc.sha256().map_err(|e| bad(e.to_string()))?;
        packs.push(PackRef {
            path,
            digest,
            size: desc.size,
        });
        files.push(file);
    }
    let mut locations = Vec::with_capacity(image.chunks.len());
    for (index, c) in image.chunks.iter().enumerate() {
        let chunk_err = |problem: String| Error::Chunk {
            dir: d(),
            index,
            digest: c.digest,
            problem,
        };
        let &(device, offset, stored_len, raw_len) = where_is
            .get(&c.digest)
            .ok_or_else(|| chunk_err("is in none of the manifest's packs".into()))?;
        if raw_len != c.size {
            return Err(chunk_err(format!(
                "its pack says {raw_len} bytes, the metadata {}",
                c.size
            )));
        }
        locations.push(ChunkLocation {
            device,
            offset,
            stored_len,
        });
    }
    let manifest = sel.descriptor.clone();
    let align512 = all_aligned && !packs.is_empty();
    Ok(OciImage {
        image,
        metadata_blob,
        metadata_digest,
        manifest,
        packs,
        locations,
        align512,
        files,
        _lock: lock,
    })
}

/// Layer 0 is the metadata, the rest are packs, the config is an OCI image config: the shape of
/// a chunkfs image's manifest, wherever it comes from (a layout, a registry).
pub fn check_manifest(m: &crate::oci::spec::Manifest) -> Result<(), String> {
    if m.config.media_type != media_type::OCI_CONFIG {
        return Err(format!(
            "config has media type {:?}, expected {}",
            m.config.media_type,
            media_type::OCI_CONFIG
        ));
    }
    let Some(first) = m.layers.first() else {
        return Err("no layers".into());
    };
    if first.media_type != media_type::METADATA {
        return Err(format!(
            "layer 0 has media type {:?}, expected {}",
            first.media_type,
            media_type::METADATA
        ));
    }
    for (k, l) in m.layers.iter().enumerate().skip(1) {
        if l.media_type != media_type::PACK {
            return Err(format!(
                "layer {k} has media type {:?}, expected {}",
                l.media_type,
                media_type::PACK
            ));
        }
    }
    Ok(())
}
