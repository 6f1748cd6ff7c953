//! Choosing one image manifest in a layout by tag and platform (docs/format.md §7.7).
//!
//! Without a tag, a layout must hold one image (its `index.json` entries carry at most one
//! distinct tag); otherwise the error lists the tags. A tag may lead to an image index (a
//! multi-platform image); then the platform picks the manifest: `--platform os/arch[/variant]`,
//! by default the host's. Index entries for platform `unknown/unknown` (build attestations) are
//! never chosen.

use chunkfs_format::{Classify, ErrorClass};
use std::path::PathBuf;

use crate::oci::layout::{self, Layout, MANIFEST_MAX};
use crate::oci::media_type;
use crate::oci::spec::{self, ContentDescriptor, Manifest};

/// How deep image indexes may nest.
const NESTING_MAX: usize = 4;

/// An `os/arch[/variant]` platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformSpec {
    /// GOOS spelling.
    pub os: String,
    /// GOARCH spelling.
    pub architecture: String,
    /// CPU variant, if required.
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// The platform of the running machine, in Go's spelling.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            other => other,
        };
        Self {
            os: std::env::consts::OS.into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// Parses `os/arch` or `os/arch/variant`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?;
        let architecture = parts.next().filter(|p| !p.is_empty())?;
        let variant = parts.next().map(str::to_owned);
        if parts.next().is_some() || variant.as_deref() == Some("") {
            return None;
        }
        Some(Self {
            os: os.into(),
            architecture: architecture.into(),
            variant,
        })
    }

    fn matches(&self, p: &spec::Platform) -> bool {
        p.os == self.os
            && p.architecture == self.architecture
            && self
                .variant
                .as_ref()
                .is_none_or(|v| p.variant.as_ref() == Some(v))
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Why no manifest could be chosen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the layout failed.
    #[error(transparent)]
    Layout(#[from] layout::Error),
    /// The layout holds no image.
    #[error("{}: the layout holds no image", dir.display())]
    Empty {
        /// The layout.
        dir: PathBuf,
    },
    /// No `index.json` entry carries the tag.
    #[error("{}: no image is tagged {tag:?}; tags: {}", dir.display(), list(available))]
    NoSuchTag {
        /// The layout.
        dir: PathBuf,
        /// The tag asked for.
        tag: String,
        /// The tags present.
        available: Vec<String>,
    },
    /// No tag was given and the layout holds several images.
    #[error("{}: the layout holds several images; choose one as {}:TAG; tags: {}", dir.display(), dir.display(), list(available))]
    Ambiguous {
        /// The layout.
        dir: PathBuf,
        /// The tags present.
        available: Vec<String>,
    },
    /// No manifest of the image matches the platform.
    #[error("{}: no image for platform {wanted}; platforms: {}; choose one with --platform", dir.display(), list(available))]
    NoPlatform {
        /// The layout.
        dir: PathBuf,
        /// The platform asked for.
        wanted: String,
        /// The platforms present.
        available: Vec<String>,
    },
    /// A descriptor has a media type chunkfs cannot follow.
    #[error("{}: {what} has unsupported media type {media_type:?}", dir.display())]
    Unsupported {
        /// The layout.
        dir: PathBuf,
        /// Which descriptor.
        what: String,
        /// Its media type.
        media_type: String,
    },
    /// Image indexes nest too deeply.
    #[error("{}: image indexes nest more than {NESTING_MAX} deep", dir.display())]
    TooDeep {
        /// The layout.
        dir: PathBuf,
    },
    /// A manifest or index blob is malformed.
    #[error("{}: {source}", dir.display())]
    Spec {
        /// The layout.
        dir: PathBuf,
        /// What is wrong.
        source: spec::SpecError,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Layout(e) => e.class(),
            // The reference names no image, or not one image: the caller must say which.
            Self::Empty { .. }
            | Self::NoSuchTag { .. }
            | Self::Ambiguous { .. }
            | Self::NoPlatform { .. } => ErrorClass::Usage,
            Self::Unsupported { .. } => ErrorClass::Unsupported,
            Self::TooDeep { .. } => ErrorClass::Corrupt,
            Self::Spec { source, .. } => source.class(),
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

/// The chosen image manifest.
#[derive(Clone, Debug)]
pub struct Selected {
    /// The manifest's descriptor (as listed in `index.json` or in an image index).
    pub descriptor: ContentDescriptor,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The manifest's bytes, verified against the descriptor's digest.
    pub raw: Vec<u8>,
}

impl Selected {
    /// True if this is a chunkfs image (rather than an ordinary tar-layer image).
    pub fn is_chunkfs(&self) -> bool {
        is_chunkfs_manifest(&self.manifest)
    }
}

/// True if `manifest` is a chunkfs image (rather than an ordinary tar-layer image).
pub fn is_chunkfs_manifest(manifest: &Manifest) -> bool {
    manifest.artifact_type.as_deref() == Some(media_type::ARTIFACT)
        || manifest
            .layers
            .first()
            .is_some_and(|l| l.media_type == media_type::METADATA)
}

/// `os/arch[/variant]` of an index entry's platform, for messages.
pub fn platform_name(p: &spec::Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// Why no entry of an image index fits the platform.
#[derive(Debug, PartialEq, Eq)]
pub enum NoMatch {
    /// The index lists no usable image (only `unknown/unknown` attestations, or nothing).
    Empty,
    /// No entry matches; the platforms the index offers.
    Platform(Vec<String>),
}

/// Chooses the entry of an image index's `manifests` for `platform`, by the rules of the module
/// documentation: `unknown/unknown` entries (attestations) never count, the first matching
/// entry wins, a lone entry without a platform is taken and a lone entry with one must match.
/// For registry clients, which have the index's bytes rather than a layout.
pub fn choose_in_index<'a>(
    entries: &'a [ContentDescriptor],
    platform: &PlatformSpec,
) -> Result<&'a ContentDescriptor, NoMatch> {
    let usable: Vec<&ContentDescriptor> = entries
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_none_or(|p| p.architecture != "unknown" || p.os != "unknown")
        })
        .collect();
    if let [only] = usable.as_slice() {
        if only.platform.as_ref().is_none_or(|p| platform.matches(p)) {
            return Ok(only);
        }
    }
    if usable.is_empty() {
        return Err(NoMatch::Empty);
    }
    usable
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
        .copied()
        .ok_or_else(|| {
            NoMatch::Platform(
                usable
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(platform_name))
                    .collect(),
            )
        })
}

/// The distinct tags of a layout, sorted.
pub fn tags(layout: &Layout) -> Result<Vec<String>, layout::Error> {
    let mut tags: Vec<String> = layout
        .read_index()?
        .manifests
        .iter()
        .filter_map(|d| d.ref_name().map(str::to_owned))
        .collect();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Chooses the manifest for `tag` (or the only image) and `platform` (default: the host's).
pub fn select(
    layout: &Layout,
    tag: Option<&str>,
    platform: Option<&PlatformSpec>,
) -> Result<Selected, Error> {
    let dir = layout.dir().to_owned();
    let index = layout.read_index()?;
    let mut available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.ref_name().map(str::to_owned))
        .collect();
    available.sort();
    available.dedup();
    let candidates: Vec<ContentDescriptor> = match tag {
        Some(t) => {
            let c: Vec<_> = index
                .manifests
                .iter()
                .filter(|d| d.ref_name() == Some(t))
                .cloned()
                .collect();
            if c.is_empty() {
                return Err(Error::NoSuchTag {
                    dir,
                    tag: t.into(),
                    available,
                });
            }
            c
        }
        None => {
            if index.manifests.is_empty() {
                return Err(Error::Empty { dir });
            }
            if available.len() > 1 {
                return Err(Error::Ambiguous { dir, available });
            }
            index.manifests.clone()
        }
    };
    let host = PlatformSpec::host();
    resolve(layout, candidates, platform.unwrap_or(&host), 0)
}

fn resolve(
    layout: &Layout,
    candidates: Vec<ContentDescriptor>,
    platform: &PlatformSpec,
    depth: usize,
) -> Result<Selected, Error> {
    let dir = || layout.dir().to_owned();
    if depth > NESTING_MAX {
        return Err(Error::TooDeep { dir: dir() });
    }
    let chosen = if candidates.len() == 1 {
        candidates.into_iter().next()
    } else {
        let available: Vec<String> = candidates
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| {
                format!(
                    "{}/{}{}",
                    p.os,
                    p.architecture,
                    p.variant
                        .as_ref()
                        .map(|v| format!("/{v}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let found = candidates
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
            .cloned();
        match found {
            Some(d) => Some(d),
            None => {
                return Err(Error::NoPlatform {
                    dir: dir(),
                    wanted: platform.to_string(),
                    available,
                });
            }
        }
    };
    let Some(desc) = chosen else {
        return Err(Error::Empty { dir: dir() });
    };
    let raw = layout.read_blob(&desc, MANIFEST_MAX, "manifest")?;
    let media = if desc.media_type.is_empty() {
        sniff_media_type(&raw)
    } else {
        desc.media_type.clone()
    };
    if media_type::is_index(&media) {
        let index = spec::parse_index("image index", &raw)
            .map_err(|source| Error::Spec { dir: dir(), source })?;
        let chosen = match choose_in_index(&index.manifests, platform) {
            Ok(d) => d.clone(),
            Err(NoMatch::Empty) => return Err(Error::Empty { dir: dir() }),
            Err(NoMatch::Platform(available)) => {
                return Err(Error::NoPlatform {
                    dir: dir(),
                    wanted: platform.to_string(),
                    available,
                });
            }
        };
        return resolve(layout, vec![chosen], platform, depth + 1);
    }
    if !media_type::is_manifest(&media) {
        return Err(Error::Unsupported {
            dir: dir(),
            what: format!("manifest {}", desc.digest),
            media_type: media,
        });
    }
    let manifest = spec::parse_manifest("manifest", &raw)
        .map_err(|source| Error::Spec { dir: dir(), source })?;
    Ok(Selected {
        descriptor: desc,
        manifest,
        raw,
    })
}

/// The media type a document declares, for descriptors (and registry answers) that omit it.
pub fn sniff_media_type(raw: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(raw).unwrap_or_default();
    if let Some(t) = v.get("mediaType").and_then(|t| t.as_str()) {
        return t.to_owned();
    }
    if v.get("manifests").is_some() {
        media_type::OCI_INDEX.into()
    } else {
        media_type::OCI_MANIFEST.into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::oci::spec::{Index, Platform};

    fn put_manifest(layout: &Layout, config_body: &[u8]) -> ContentDescriptor {
        let (cd, _) = layout.put_blob(config_body).unwrap();
        let m = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            artifact_type: None,
            config: ContentDescriptor::new(media_type::OCI_CONFIG, cd, config_body.len() as u64),
            layers: vec![],
            annotations: Default::default(),
        };
        let bytes = spec::to_json(&m);
        layout.put_blob(&bytes).unwrap();
        ContentDescriptor::for_bytes(media_type::OCI_MANIFEST, &bytes)
    }

    fn tagged(mut d: ContentDescriptor, tag: &str) -> ContentDescriptor {
        d.annotations
            .insert(crate::oci::REF_NAME.into(), tag.into());
        d
    }

    fn plat(os: &str, arch: &str) -> Platform {
        Platform {
            architecture: arch.into(),
            os: os.into(),
            variant: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn by_tag_and_ambiguity() {
        let tmp = crate::oci::test_dir();
        let layout = Layout::create(&tmp.path().join("l")).unwrap();
        let a = put_manifest(&layout, b"{\"a\":1}");
        let b = put_manifest(&layout, b"{\"b\":1}");
        let mut index = Index::default();
        index.manifests.push(tagged(a.clone(), "one"));
        layout.write_index(&index).unwrap();
        assert_eq!(
            select(&layout, None, None).unwrap().descriptor.digest,
            a.digest
        );
        index.manifests.push(tagged(b.clone(), "two"));
        layout.write_index(&index).unwrap();
        let err = select(&layout, None, None).unwrap_err();
        assert!(err.to_string().contains("one, two"), "{err}");
        assert_eq!(
            select(&layout, Some("two"), None)
                .unwrap()
                .descriptor
                .digest,
            b.digest
        );
        let err = select(&layout, Some("three"), None).unwrap_err();
        assert!(
            matches!(err, Error::NoSuchTag { .. }) && err.to_string().contains("one, two"),
            "{err}"
        );
    }

    #[test]
    fn by_platform_through_an_index() {
        let tmp = crate::oci::test_dir();
        let layout = Layout::create(&tmp.path().join("l")).unwrap();
        let mut amd = put_manifest(&layout, b"{\"amd64\":1}");
        amd.platform = Some(plat("linux", "amd64"));
        let mut arm = put_manifest(&layout, b"{\"arm64\":1}");
        arm.platform = Some(plat("linux", "arm64"));
        let mut att = put_manifest(&layout, b"{\"att\":1}");
        att.platform = Some(plat("unknown", "unknown"));
        let inner = Index {
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests: vec![att, arm.clone(), amd.clone()],
            ..Index::default()
        };
        let bytes = spec::to_json(&inner);
        layout.put_blob(&bytes).unwrap();
        let mut index = Index::default();
        index.manifests.push(tagged(
            ContentDescriptor::for_bytes(media_type::OCI_INDEX, &bytes),
            "multi",
        ));
        layout.write_index(&index).unwrap();
        let arm_spec = PlatformSpec::parse("linux/arm64").unwrap();
        assert_eq!(
            select(&layout, Some("multi"), Some(&arm_spec))
                .unwrap()
                .descriptor
                .digest,
            arm.digest
        );
        let amd_spec = PlatformSpec::parse("linux/amd64").unwrap();
        assert_eq!(
            select(&layout, None, Some(&amd_spec))
                .unwrap()
                .descriptor
                .digest,
            amd.digest
        );
        let s390 = PlatformSpec::parse("linux/s390x").unwrap();
        let err = select(&layout, None, Some(&s390)).unwrap_err();
        assert!(
            err.to_string().contains("linux/arm64, linux/amd64"),
            "{err}"
        );
    }

    #[test]
    fn choosing_in_an_index_by_bytes() {
        let entry = |os: &str, arch: &str| {
            let mut d = ContentDescriptor::for_bytes(media_type::OCI_MANIFEST, arch.as_bytes());
            d.platform = Some(plat(os, arch));
            d
        };
        let entries = vec![
            entry("unknown", "unknown"),
            entry("linux", "arm64"),
            entry("linux", "amd64"),
        ];
        let amd = PlatformSpec::parse("linux/amd64").unwrap();
        assert_eq!(choose_in_index(&entries, &amd).unwrap(), &entries[2]);
        let s390 = PlatformSpec::parse("linux/s390x").unwrap();
        assert_eq!(
            choose_in_index(&entries, &s390).unwrap_err(),
            NoMatch::Platform(vec!["linux/arm64".into(), "linux/amd64".into()])
        );
        // A lone entry must still match; attestations alone are no image.
        assert!(choose_in_index(&entries[1..2], &amd).is_err());
        assert_eq!(
            choose_in_index(&entries[..1], &amd).unwrap_err(),
            NoMatch::Empty
        );
    }

    #[test]
    fn platform_parsing() {
        assert_eq!(
            PlatformSpec::parse("linux/arm64/v8")
                .unwrap()
                .variant
                .as_deref(),
            Some("v8")
        );
        assert!(PlatformSpec::parse("linux").is_none());
        assert!(PlatformSpec::parse("linux//").is_none());
        assert!(PlatformSpec::parse("a/b/c/d").is_none());
        assert_eq!(PlatformSpec::host().os, "linux");
    }
}
