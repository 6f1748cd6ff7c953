//! The JSON documents of an OCI image layout (image-spec v1.1) and of Docker schema-2 images,
//! reduced to the fields chunkfs reads or writes.
//!
//! Unknown fields of descriptors and of `index.json` are kept ([`ContentDescriptor::extra`],
//! [`Index::extra`]) so that rewriting `index.json` to add or remove a tag never drops what
//! another tool wrote. Documents chunkfs writes serialise their fields in declaration order
//! with no whitespace, so they are byte-for-byte deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use chunkfs_format::digest::Digest;
use chunkfs_format::{Classify, ErrorClass};

/// A content descriptor: media type, digest and size of a blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentDescriptor {
    /// The blob's media type.
    pub media_type: String,
    /// `algorithm:hex`; only sha256 is supported ([`ContentDescriptor::sha256`]).
    pub digest: String,
    /// The blob's length in bytes.
    pub size: u64,
    /// The type of an artifact manifest this descriptor points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The platform of the image this descriptor points at (indexes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations, e.g. [`crate::oci::REF_NAME`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields chunkfs does not interpret (`urls`, `data`, ...), kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An image's platform, as found in an index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// GOARCH spelling: `amd64`, `arm64`, ...
    pub architecture: String,
    /// GOOS spelling: `linux`, ...
    pub os: String,
    /// CPU variant, e.g. `v8` for arm64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Fields chunkfs does not interpret (`os.version`, `os.features`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `index.json` of a layout, an OCI image index or a Docker manifest list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's media type, when stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes) it lists.
    #[serde(default)]
    pub manifests: Vec<ContentDescriptor>,
    /// Fields chunkfs does not interpret (`annotations`, `subject`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            schema_version: 2,
            media_type: None,
            manifests: Vec::new(),
            extra: serde_json::Map::new(),
        }
    }
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type, when stated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type ([`crate::oci::media_type::ARTIFACT`] for chunkfs images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: ContentDescriptor,
    /// The layers, bottom first.
    #[serde(default)]
    pub layers: Vec<ContentDescriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The parts of an image config chunkfs reads or writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// GOARCH spelling.
    pub architecture: String,
    /// GOOS spelling.
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The layers' uncompressed digests.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// sha256 of each layer's uncompressed bytes, bottom first.
    pub diff_ids: Vec<String>,
}

/// `oci-layout` file contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutMarker {
    /// `1.0.0`.
    pub image_layout_version: String,
}

/// Why a document or a descriptor is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A digest is not `sha256:` followed by 64 lower-case hex digits.
    #[error(
        "digest {0:?} is not sha256:<64 lower-case hex digits> (other algorithms are not supported)"
    )]
    BadDigest(String),
    /// A document is not valid JSON of the expected shape.
    #[error("{what} is not valid: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// `schemaVersion` is not 2.
    #[error("{what} has schemaVersion {version}, expected 2")]
    SchemaVersion {
        /// Which document.
        what: String,
        /// The version found.
        version: u32,
    },
}

impl Classify for SpecError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::SchemaVersion { .. } => ErrorClass::Unsupported,
            Self::BadDigest(_) | Self::Json { .. } => ErrorClass::Corrupt,
        }
    }
}

impl ContentDescriptor {
    /// A descriptor of `media_type` for `bytes`.
    pub fn for_bytes(media_type: &str, bytes: &[u8]) -> Self {
        Self::new(media_type, Digest::of(bytes), bytes.len() as u64)
    }

    /// A descriptor with no optional fields.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: digest.to_oci(),
            size,
            artifact_type: None,
            platform: None,
            annotations: BTreeMap::new(),
            extra: serde_json::Map::new(),
        }
    }

    /// The sha256 this descriptor names; any other algorithm or spelling is an error.
    pub fn sha256(&self) -> Result<Digest, SpecError> {
        parse_digest(&self.digest)
    }

    /// The tag this descriptor carries in `index.json`, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(crate::oci::REF_NAME)
            .map(String::as_str)
    }
}

/// Parses `sha256:<hex>`, insisting on lower case as the image-spec does.
pub fn parse_digest(s: &str) -> Result<Digest, SpecError> {
    let hex = s
        .strip_prefix("sha256:")
        .ok_or_else(|| SpecError::BadDigest(s.to_owned()))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(SpecError::BadDigest(s.to_owned()));
    }
    Digest::from_hex(hex).ok_or_else(|| SpecError::BadDigest(s.to_owned()))
}

/// Parses a JSON document and checks `schemaVersion` where the type has one.
pub fn from_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, SpecError> {
    serde_json::from_slice(bytes).map_err(|source| SpecError::Json {
        what: what.to_owned(),
        source,
    })
}

/// Parses an index and checks its schema version.
pub fn parse_index(what: &str, bytes: &[u8]) -> Result<Index, SpecError> {
    let index: Index = from_json(what, bytes)?;
    if index.schema_version != 2 {
        return Err(SpecError::SchemaVersion {
            what: what.to_owned(),
            version: index.schema_version,
        });
    }
    Ok(index)
}

/// Parses a manifest and checks its schema version.
pub fn parse_manifest(what: &str, bytes: &[u8]) -> Result<Manifest, SpecError> {
    let manifest: Manifest = from_json(what, bytes)?;
    if manifest.schema_version != 2 {
        return Err(SpecError::SchemaVersion {
            what: what.to_owned(),
            version: manifest.schema_version,
        });
    }
    Ok(manifest)
}

/// Compact JSON of a document chunkfs writes: fields in declaration order, no whitespace.
pub fn to_json<T: Serialize>(doc: &T) -> Vec<u8> {
    // Serialising these plain structs and string maps cannot fail.
    serde_json::to_vec(doc).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_fields_of_index_entries() {
        let json = br#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":3,"urls":["u"],"annotations":{"a":"b"}}],"annotations":{"k":"v"}}"#;
        let index = parse_index("index.json", json).unwrap();
        let out = String::from_utf8(to_json(&index)).unwrap();
        assert!(out.contains(r#""urls":["u"]"#), "{out}");
        assert!(out.contains(r#""annotations":{"k":"v"}"#), "{out}");
        assert_eq!(index.manifests[0].annotations["a"], "b");
    }

    #[test]
    fn digest_spelling_is_strict() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert!(parse_digest(&good).is_ok());
        assert!(parse_digest(&good.to_uppercase().replace("SHA256", "sha256")).is_err());
        assert!(parse_digest(&format!("sha512:{}", "ab".repeat(64))).is_err());
        assert!(parse_digest("sha256:abc").is_err());
    }

    #[test]
    fn refuses_other_schema_versions() {
        let json = br#"{"schemaVersion":1,"manifests":[]}"#;
        assert!(matches!(
            parse_index("x", json),
            Err(SpecError::SchemaVersion { version: 1, .. })
        ));
        assert!(parse_manifest("x", b"{").is_err());
    }
}
