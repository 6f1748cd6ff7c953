//! Opening an ordinary container image (tar layers, OCI or Docker media types) in a layout, for
//! conversion by [`crate::tar`] (docs/format.md §7.8).

use std::path::{Path, PathBuf};

use crate::oci::layout::{self, Layout};
use crate::oci::lock::{self, LayoutLock};
use crate::oci::media_type;
use crate::oci::select::{self, PlatformSpec};
use crate::oci::spec::{self, ContentDescriptor, ImageConfig};
use crate::tar::layer::LayerInput;
use chunkfs_format::digest::Digest;
use chunkfs_format::{Classify, ErrorClass};

/// Largest image config read.
pub const CONFIG_MAX: u64 = 8 << 20;

/// Why the image cannot be converted.
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
    /// The image has a layer that is not a tar archive.
    #[error("{}: layer {position} ({digest}) has media type {media_type:?}, which is not a tar layer", dir.display())]
    NotTar {
        /// The layout.
        dir: PathBuf,
        /// Layer position, from 1.
        position: usize,
        /// Its digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// The config is malformed or does not fit the manifest.
    #[error("{}: config {digest}: {problem}", dir.display())]
    Config {
        /// The layout.
        dir: PathBuf,
        /// The config's digest.
        digest: String,
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
            Self::NotTar { .. } => ErrorClass::Unsupported,
            Self::Config { .. } => ErrorClass::Corrupt,
        }
    }
}

/// An ordinary image chosen in a layout, its layers ready to stream. Holds the layout's shared
/// lock until dropped.
#[derive(Debug)]
pub struct TarImage {
    /// The manifest's descriptor.
    pub manifest: ContentDescriptor,
    /// The image config (platform and diff_ids).
    pub config: ImageConfig,
    /// The layers, bottom first, each with its diff_id.
    pub layers: Vec<LayerInput>,
    _lock: Option<LayoutLock>,
}

/// Opens the ordinary image `tag` (or the only image) of the layout `dir` for `platform`
/// (default: the host's, when the tag is a multi-platform index). With an explicit platform, a
/// single-platform image must match it.
pub fn open_tar_image(
    dir: &Path,
    tag: Option<&str>,
    platform: Option<&PlatformSpec>,
) -> Result<TarImage, Error> {
    open_inner(dir, tag, platform, true)
}

/// [`open_tar_image`] for a caller that already holds the layout's exclusive lock (converting
/// into the same layout).
pub(crate) fn open_tar_image_locked(
    dir: &Path,
    tag: Option<&str>,
    platform: Option<&PlatformSpec>,
) -> Result<TarImage, Error> {
    open_inner(dir, tag, platform, false)
}

fn open_inner(
    dir: &Path,
    tag: Option<&str>,
    platform: Option<&PlatformSpec>,
    take_lock: bool,
) -> Result<TarImage, Error> {
    let layout = Layout::open(dir)?;
    let lock = if take_lock {
        Some(LayoutLock::shared(dir)?)
    } else {
        None
    };
    let sel = select::select(&layout, tag, platform)?;
    let d = || dir.to_owned();
    let cfg_desc = &sel.manifest.config;
    let config_err = |problem: String| Error::Config {
        dir: d(),
        digest: cfg_desc.digest.clone(),
        problem,
    };
    let raw = layout.read_blob(cfg_desc, CONFIG_MAX, "image config")?;
    let config: ImageConfig =
        spec::from_json("image config", &raw).map_err(|e| config_err(e.to_string()))?;
    if let Some(p) = platform {
        let matches = config.os == p.os
            && config.architecture == p.architecture
            && p.variant
                .as_ref()
                .is_none_or(|v| config.variant.as_ref() == Some(v));
        if !matches {
            return Err(config_err(format!(
                "the image is for {}/{}, not {p}",
                config.os, config.architecture
            )));
        }
    }
    let diff_ids: Vec<Option<Digest>> = if config.rootfs.diff_ids.len() == sel.manifest.layers.len()
    {
        config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| {
                spec::parse_digest(d)
                    .map(Some)
                    .map_err(|e| config_err(e.to_string()))
            })
            .collect::<Result<_, _>>()?
    } else {
        return Err(config_err(format!(
            "lists {} diff_ids for {} layers",
            config.rootfs.diff_ids.len(),
            sel.manifest.layers.len()
        )));
    };
    let mut layers = Vec::with_capacity(sel.manifest.layers.len());
    for (i, (desc, diff_id)) in sel.manifest.layers.iter().zip(diff_ids).enumerate() {
        if !media_type::TAR_LAYERS.contains(&desc.media_type.as_str()) {
            return Err(Error::NotTar {
                dir: d(),
                position: i + 1,
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
            });
        }
        let digest = desc
            .sha256()
            .map_err(|source| layout::Error::Spec { path: d(), source })?;
        let (_, path) = layout.open_blob(desc)?;
        layers.push(LayerInput {
            path,
            digest,
            size: desc.size,
            diff_id,
        });
    }
    Ok(TarImage {
        manifest: sel.descriptor,
        config,
        layers,
        _lock: lock,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::oci::spec::{Index, Manifest, Platform, RootFs};
    use std::io::Write;

    pub(crate) fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, p, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// Stores an image (docker or OCI flavour) and returns its manifest descriptor.
    pub(crate) fn store(
        layout: &Layout,
        docker: bool,
        arch: &str,
        layers: &[Vec<u8>],
    ) -> ContentDescriptor {
        let (layer_type, manifest_type, config_type) = if docker {
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                media_type::DOCKER_MANIFEST,
                media_type::DOCKER_CONFIG,
            )
        } else {
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                media_type::OCI_MANIFEST,
                media_type::OCI_CONFIG,
            )
        };
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in layers {
            let blob = if docker {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            } else {
                zstd::encode_all(&tar[..], 1).unwrap()
            };
            layout.put_blob(&blob).unwrap();
            descs.push(ContentDescriptor::for_bytes(layer_type, &blob));
            diff_ids.push(Digest::of(tar).to_oci());
        }
        let config = ImageConfig {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids,
            },
        };
        let cb = spec::to_json(&config);
        layout.put_blob(&cb).unwrap();
        let m = Manifest {
            schema_version: 2,
            media_type: Some(manifest_type.into()),
            artifact_type: None,
            config: ContentDescriptor::for_bytes(config_type, &cb),
            layers: descs,
            annotations: Default::default(),
        };
        let mb = spec::to_json(&m);
        layout.put_blob(&mb).unwrap();
        let mut d = ContentDescriptor::for_bytes(manifest_type, &mb);
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
            extra: Default::default(),
        });
        d
    }

    #[test]
    fn docker_and_oci_flavours_through_a_platform_index() {
        let tmp = crate::oci::test_dir();
        let dir = tmp.path().join("l");
        let layout = Layout::create(&dir).unwrap();
        let amd = store(
            &layout,
            true,
            "amd64",
            &[
                layer_tar(&[("a", b"amd64 lower")]),
                layer_tar(&[("b", b"upper")]),
            ],
        );
        let arm = store(&layout, false, "arm64", &[layer_tar(&[("a", b"arm64")])]);
        let list = Index {
            media_type: Some(media_type::DOCKER_INDEX.into()),
            manifests: vec![amd, arm],
            ..Index::default()
        };
        let lb = spec::to_json(&list);
        layout.put_blob(&lb).unwrap();
        let mut entry = ContentDescriptor::for_bytes(media_type::DOCKER_INDEX, &lb);
        entry
            .annotations
            .insert(crate::oci::REF_NAME.into(), "multi".into());
        layout
            .write_index(&Index {
                manifests: vec![entry],
                ..Index::default()
            })
            .unwrap();

        let amd64 = PlatformSpec::parse("linux/amd64").unwrap();
        let img = open_tar_image(&dir, None, Some(&amd64)).unwrap();
        assert_eq!(img.layers.len(), 2);
        let tree = crate::tar::merge_layers(&img.layers).unwrap();
        assert_eq!(tree.wanted_contents().len(), 2);
        drop(img);

        let arm64 = PlatformSpec::parse("linux/arm64").unwrap();
        let img = open_tar_image(&dir, Some("multi"), Some(&arm64)).unwrap();
        assert_eq!(img.config.architecture, "arm64");
        let tree = crate::tar::merge_layers(&img.layers).unwrap();
        let mut got = Vec::new();
        crate::tar::feed_contents(&img.layers, &tree, |_, r, _| {
            std::io::Read::read_to_end(r, &mut got)?;
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
        assert_eq!(got, b"arm64");
        drop(img);

        let s390 = PlatformSpec::parse("linux/s390x").unwrap();
        let err = open_tar_image(&dir, None, Some(&s390)).unwrap_err();
        assert!(
            err.to_string().contains("linux/amd64, linux/arm64"),
            "{err}"
        );
    }

    #[test]
    fn wrong_diff_ids_and_non_tar_layers_are_refused() {
        let tmp = crate::oci::test_dir();
        let dir = tmp.path().join("l");
        let layout = Layout::create(&dir).unwrap();
        let mut d = store(&layout, false, "amd64", &[layer_tar(&[("a", b"x")])]);
        d.platform = None;
        d.annotations
            .insert(crate::oci::REF_NAME.into(), "t".into());
        layout
            .write_index(&Index {
                manifests: vec![d.clone()],
                ..Index::default()
            })
            .unwrap();
        // The config's diff_id is checked against the decompressed stream.
        let img = open_tar_image(&dir, Some("t"), None).unwrap();
        let mut layers = img.layers.clone();
        layers[0].diff_id = Some(Digest::of(b"other"));
        let err = crate::tar::merge_layers(&layers).unwrap_err();
        assert!(err.to_string().contains("diff_id"), "{err}");
        drop(img);
        // A platform given explicitly must match a single-platform image.
        let arm = PlatformSpec::parse("linux/arm64").unwrap();
        let err = open_tar_image(&dir, Some("t"), Some(&arm)).unwrap_err();
        assert!(err.to_string().contains("not linux/arm64"), "{err}");
    }
}
