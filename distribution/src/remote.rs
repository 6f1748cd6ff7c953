//! A chunkfs image in a registry, opened through the local store: what `mount docker://...`,
//! `chunkfs pull`, `inspect` and `verify` share (docs/registry.md, docs/store.md §5).
//!
//! [`open`] resolves the reference (a tag asks the registry; a digest the store has needs no
//! network; a tag whose registry cannot be reached falls back to the digest the store recorded
//! when it last resolved it), checks the manifest's shape, and brings the small blobs (index,
//! manifest, config, metadata) into the store, each checked against its digest. The metadata is
//! decoded and validated. [`RemoteImage::plan`] then asks the store where every chunk is read
//! from (docs/store.md §5): the input of the descriptor and of a pull.
//!
//! ```no_run
//! use chunkfs_distribution::registry::{Client, ImageRef, Options};
//! use chunkfs_distribution::remote;
//! use chunkfs_distribution::store::Store;
//! use chunkfs_format::translate::ExtentLayout;
//! let reference = ImageRef::parse("docker://registry.example:5000/os/debian:12")?;
//! let client = Client::new(&reference, Options::default())?;
//! let store = Store::open(chunkfs_distribution::store::DEFAULT_DIR.as_ref())?;
//! let mut image = remote::open(&store, &client, &reference, None)?;
//! let plan = image.plan(&store, &client, ExtentLayout::Bit48)?;
//! println!("{} chunks, {} bytes to fetch", image.image.chunks.len(), plan.missing_bytes);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use chunkfs_format::digest::Digest;
use chunkfs_format::model::{Image, ModelError};
use chunkfs_format::translate::ExtentLayout;
use chunkfs_format::{Classify, ErrorClass};

use crate::oci::select::{self, NoMatch, PlatformSpec};
use crate::oci::spec::{self, ContentDescriptor, Manifest};
use crate::oci::{media_type, read};
use crate::registry::{self, Client, ImageRef};
use crate::store::{self, ImageSpec, Plan, SetupGuard, Store};

/// Largest manifest or index kept (the registry client's own limit).
const MANIFEST_MAX: u64 = 4 << 20;
/// How deep image indexes may nest when resolved from the store.
const NESTING_MAX: usize = 4;

/// Why a registry image could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry could not resolve the reference or serve a blob, and the store could not
    /// stand in for it.
    #[error("{reference}: {source}")]
    Registry {
        /// The reference as given.
        reference: String,
        /// What the registry client said.
        source: Box<registry::Error>,
    },
    /// The store could not keep or give back a blob, or could not plan the image.
    #[error("{reference}: {source}")]
    Store {
        /// The reference as given.
        reference: String,
        /// What the store said.
        source: Box<store::Error>,
    },
    /// The image is an ordinary container image (tar layers), which cannot be mounted lazily.
    #[error(
        "{reference}: not a chunkfs image (its layers are {layers}); convert it with `chunkfs pack {reference} IMAGE.cfs`"
    )]
    NotChunkfs {
        /// The reference as given.
        reference: String,
        /// Its layers' media types.
        layers: String,
    },
    /// The manifest, an index or the metadata breaks the rules of a chunkfs image.
    #[error("{reference}: {what}: {problem}")]
    Corrupt {
        /// The reference as given.
        reference: String,
        /// Which document (`manifest sha256:...`, `metadata blob sha256:...`).
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// The metadata breaks an invariant.
    #[error("{reference}: metadata blob {digest}: {source}")]
    Invalid {
        /// The reference as given.
        reference: String,
        /// The metadata digest.
        digest: Digest,
        /// The broken invariant.
        source: ModelError,
    },
    /// Offline, and the store has nothing recorded for the reference.
    #[error(
        "{reference}: the registry cannot be reached ({cause}) and the store has no copy of this image; `chunkfs pull` it while the registry is up"
    )]
    Offline {
        /// The reference as given.
        reference: String,
        /// Why the registry could not be asked.
        cause: Box<registry::Error>,
    },
    /// No image for the platform asked for.
    #[error("{reference}: {problem}")]
    Platform {
        /// The reference as given.
        reference: String,
        /// What is offered instead.
        problem: String,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Registry { source, .. } => source.class(),
            Error::Store { source, .. } => source.class(),
            Error::NotChunkfs { .. } => ErrorClass::Unsupported,
            Error::Corrupt { .. } | Error::Invalid { .. } => ErrorClass::Corrupt,
            Error::Offline { .. } => ErrorClass::Network,
            Error::Platform { .. } => ErrorClass::Usage,
        }
    }
}

/// A chunkfs image of a registry, its small blobs in the store, its metadata checked.
#[derive(Debug)]
pub struct RemoteImage {
    /// The reference as the user gave it.
    pub given: ImageRef,
    /// The same image pinned to its manifest's digest: a remount gets the same image even if
    /// the tag moves.
    pub pinned: ImageRef,
    /// The manifest's digest.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: Manifest,
    /// The metadata blob's digest (the image's identity, `digest=` pins it).
    pub metadata_digest: Digest,
    /// The decoded, validated metadata.
    pub image: Image,
    /// The pack layers, `(digest, length)`, in layer order.
    pub packs: Vec<(Digest, u64)>,
    /// The blobs kept with the image: index (if any), manifest, config, metadata.
    pub blobs: Vec<Digest>,
    /// Set when the registry could not be reached and the store's copy was used: why.
    pub offline: Option<String>,
    /// Keeps gc from removing the blobs before the plan's record names them.
    setup: Option<SetupGuard>,
}

/// Opens `reference` through `store`: see the module documentation. `platform`: the platform
/// to choose in a multi-platform image (default: the running machine's).
pub fn open(
    store: &Store,
    client: &Client,
    reference: &ImageRef,
    platform: Option<&PlatformSpec>,
) -> Result<RemoteImage, Error> {
    let given = reference.to_string();
    let st = |source| Error::Store {
        reference: given.clone(),
        source: Box::new(source),
    };
    let setup = store.setup().map_err(st)?;
    let host = PlatformSpec::host();
    let platform = platform.unwrap_or(&host);
    let mut blobs = Vec::new();
    let (manifest_digest, manifest, offline) = match reference.digest() {
        // A digest names the same bytes forever: the store's copy needs no network.
        Some(top) if store.blob(top, MANIFEST_MAX).map_err(st)?.is_some() => {
            let (d, m) = resolve_in_store(store, &given, *top, platform, &mut blobs)?;
            (d, m, None)
        }
        _ => match client.resolve(reference, Some(platform)) {
            Ok(r) => {
                let mut keep = |digest: Digest, raw: &[u8]| -> Result<(), Error> {
                    store.put_blob(&digest, raw).map_err(st)?;
                    blobs.push(digest);
                    Ok(())
                };
                let top = match &r.index {
                    Some(index) => {
                        keep(index.digest, &index.raw)?;
                        index.digest
                    }
                    None => r.descriptor.sha256().map_err(|e| Error::Corrupt {
                        reference: given.clone(),
                        what: "manifest".into(),
                        problem: e.to_string(),
                    })?,
                };
                let digest = r.descriptor.sha256().map_err(|e| Error::Corrupt {
                    reference: given.clone(),
                    what: "manifest".into(),
                    problem: e.to_string(),
                })?;
                keep(digest, &r.raw)?;
                if let Some(key) = ref_key(reference) {
                    store.set_ref(&key, &top).map_err(st)?;
                }
                (digest, r.manifest, None)
            }
            Err(e) if e.class() == ErrorClass::Network => {
                let recorded = match ref_key(reference) {
                    Some(key) => store.resolve_ref(&key).map_err(st)?,
                    None => None,
                };
                let Some(top) = recorded else {
                    return Err(Error::Offline {
                        reference: given,
                        cause: Box::new(e),
                    });
                };
                let why = format!("{e}; using the copy in the store ({top})");
                let (d, m) = resolve_in_store(store, &given, top, platform, &mut blobs)?;
                (d, m, Some(why))
            }
            Err(source) => {
                return Err(Error::Registry {
                    reference: given,
                    source: Box::new(source),
                });
            }
        },
    };
    if !select::is_chunkfs_manifest(&manifest) {
        return Err(Error::NotChunkfs {
            reference: given,
            layers: manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let bad = |problem: String| Error::Corrupt {
        reference: given.clone(),
        what: format!("manifest {manifest_digest}"),
        problem,
    };
    read::check_manifest(&manifest).map_err(bad)?;
    let config = descriptor_digest(&manifest.config).map_err(bad)?;
    fetch(store, client, &given, &manifest.config, read::CONFIG_MAX)?;
    blobs.push(config);
    let meta = manifest
        .layers
        .first()
        .ok_or_else(|| bad("no layers".into()))?;
    let metadata_digest = descriptor_digest(meta).map_err(bad)?;
    let metadata_blob = fetch(store, client, &given, meta, read::METADATA_BLOB_MAX)?;
    blobs.push(metadata_digest);
    let image =
        chunkfs_format::schema::codec::decode_blob(&metadata_blob).map_err(|e| Error::Corrupt {
            reference: given.clone(),
            what: format!("metadata blob {metadata_digest}"),
            problem: e.to_string(),
        })?;
    image.validate().map_err(|source| Error::Invalid {
        reference: given.clone(),
        digest: metadata_digest,
        source,
    })?;
    let mut packs = Vec::with_capacity(manifest.layers.len().saturating_sub(1));
    for layer in manifest.layers.iter().skip(1) {
        packs.push((descriptor_digest(layer).map_err(bad)?, layer.size));
    }
    Ok(RemoteImage {
        pinned: reference.with_digest(manifest_digest),
        given: reference.clone(),
        manifest_digest,
        manifest,
        metadata_digest,
        image,
        packs,
        blobs,
        offline,
        setup: Some(setup),
    })
}

impl RemoteImage {
    /// Where each chunk is read from, for a descriptor with `extents` (docs/store.md §5): adds
    /// the image's packs to the store (fetching each pack's index by range) and records the
    /// plan as a live mount of the store until the plan's lease is dropped or kept.
    pub fn plan(
        &mut self,
        store: &Store,
        client: &Client,
        extents: ExtentLayout,
    ) -> Result<Plan, Error> {
        let reference = self.pinned.to_string();
        let spec = ImageSpec {
            reference: &reference,
            manifest: self.manifest_digest,
            blobs: &self.blobs,
            packs: &self.packs,
            chunks: &self.image.chunks,
            extents,
        };
        let plan = store.plan(&spec, client).map_err(|source| Error::Store {
            reference: self.given.to_string(),
            source: Box::new(source),
        });
        // The plan's record names the blobs now (or the plan failed): gc may run again.
        self.setup = None;
        plan
    }
}

/// `HOST[:PORT]/REPO:TAG`, the store's name for a tag (none for a digest reference): what
/// [`Store::resolve_ref`] takes.
pub fn ref_key(reference: &ImageRef) -> Option<String> {
    if reference.digest().is_some() {
        return None;
    }
    let tag = reference.tag()?;
    Some(format!(
        "{}/{}:{tag}",
        reference.registry(),
        reference.repository()
    ))
}

fn descriptor_digest(d: &ContentDescriptor) -> Result<Digest, String> {
    d.sha256().map_err(|e| e.to_string())
}

/// The blob `desc` names: from the store, else from the registry (checked, then stored).
fn fetch(
    store: &Store,
    client: &Client,
    given: &str,
    desc: &ContentDescriptor,
    max: u64,
) -> Result<Vec<u8>, Error> {
    let digest = descriptor_digest(desc).map_err(|problem| Error::Corrupt {
        reference: given.to_owned(),
        what: "manifest".into(),
        problem,
    })?;
    if desc.size > max {
        return Err(Error::Corrupt {
            reference: given.to_owned(),
            what: format!("blob {digest}"),
            problem: format!("{} bytes, more than the limit of {max}", desc.size),
        });
    }
    store
        .fetch_blob(&digest, desc.size, client)
        .map_err(|source| Error::Store {
            reference: given.to_owned(),
            source: Box::new(source),
        })
}

/// Resolves the manifest or index `top` from the store's blobs alone, choosing `platform` in
/// indexes; pushes every document it reads to `blobs`.
fn resolve_in_store(
    store: &Store,
    given: &str,
    top: Digest,
    platform: &PlatformSpec,
    blobs: &mut Vec<Digest>,
) -> Result<(Digest, Manifest), Error> {
    let mut digest = top;
    for _ in 0..=NESTING_MAX {
        let raw = store
            .blob(&digest, MANIFEST_MAX)
            .map_err(|source| Error::Store {
                reference: given.to_owned(),
                source: Box::new(source),
            })?
            .ok_or_else(|| Error::Corrupt {
                reference: given.to_owned(),
                what: format!("manifest {digest}"),
                problem: "recorded in the store's refs but not in its blobs".into(),
            })?;
        blobs.push(digest);
        let bad = |problem: String| Error::Corrupt {
            reference: given.to_owned(),
            what: format!("manifest {digest}"),
            problem,
        };
        let kind = select::sniff_media_type(&raw);
        if media_type::is_manifest(&kind) {
            let m = spec::parse_manifest("manifest", &raw).map_err(|e| bad(e.to_string()))?;
            return Ok((digest, m));
        }
        let index = spec::parse_index("image index", &raw).map_err(|e| bad(e.to_string()))?;
        let chosen = match select::choose_in_index(&index.manifests, platform) {
            Ok(d) => d,
            Err(NoMatch::Empty) => return Err(bad("the image index lists no image".into())),
            Err(NoMatch::Platform(offered)) => {
                return Err(Error::Platform {
                    reference: given.to_owned(),
                    problem: format!(
                        "no image for platform {platform}; platforms: {}; choose one with --platform",
                        offered.join(", ")
                    ),
                });
            }
        };
        digest = descriptor_digest(chosen).map_err(bad)?;
    }
    Err(Error::Corrupt {
        reference: given.to_owned(),
        what: format!("image index {top}"),
        problem: format!("indexes nest more than {NESTING_MAX} deep"),
    })
}
