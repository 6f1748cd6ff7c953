//! chunkfs images in OCI image layouts, and ordinary container images read from them
//! (docs/format.md §7).
//!
//! A chunkfs image in a layout is an image manifest whose layers are `[metadata blob, pack
//! blobs...]` ([`media_type`]); the metadata layer is byte for byte the metadata blob of §3, and
//! each pack blob ([`pack`]) holds zstd chunk frames followed by their digest table. Several tags
//! in one layout share pack blobs. The modules:
//!
//! - [`spec`]: the JSON documents (index, manifest, config) and their media types;
//! - [`layout`]: the directory itself: blobs, `index.json`, atomic replacement;
//! - [`lock`]: the advisory lock that serialises writers and garbage collection;
//! - [`pack`]: the pack blob format, its writer and its index reader;
//! - [`select`]: choosing a manifest by tag and platform;
//! - [`gc`]: untagging and garbage collection;
//! - [`reference`]: telling `DIR:TAG`, a file and a directory apart on the command line.
//!
//! ```
//! use chunkfs_distribution::oci::reference::{Reference, Role};
//! let r = Reference::parse("oci:/var/lib/images:v1", Role::Source);
//! assert!(matches!(r, Reference::Oci { tag: Some(t), .. } if t == "v1"));
//! ```

pub mod convert;
pub mod gc;
pub mod layout;
pub mod lock;
pub mod pack;
pub mod read;
pub mod reference;
pub mod select;
pub mod spec;
pub mod tar_image;
pub mod verify;
pub mod write;

/// Media types chunkfs writes (docs/format.md §7.2).
pub mod media_type {
    /// `artifactType` of a chunkfs image manifest.
    pub const ARTIFACT: &str = "application/vnd.chunkfs.image.v1";
    /// The metadata layer: the metadata blob of docs/format.md §3, verbatim.
    pub const METADATA: &str = "application/vnd.chunkfs.metadata.v1+capnp+zstd";
    /// A pack blob of chunk frames and their index (§7.3).
    pub const PACK: &str = "application/vnd.chunkfs.pack.v1";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

    /// Layer media types of ordinary images that hold a tar archive, compressed or not.
    pub const TAR_LAYERS: &[&str] = &[
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    ];

    /// True for an image manifest type (OCI or Docker).
    pub fn is_manifest(t: &str) -> bool {
        t == OCI_MANIFEST || t == DOCKER_MANIFEST
    }

    /// True for an image index type (OCI index or Docker manifest list).
    pub fn is_index(t: &str) -> bool {
        t == OCI_INDEX || t == DOCKER_INDEX
    }
}

/// The annotation that names a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A temporary directory on a disk filesystem for unit tests (file-backed mounts and fsync
/// behave differently on tmpfs).
#[cfg(test)]
pub(crate) fn test_dir() -> tempfile::TempDir {
    // Test-only: a failure to create the directory is a broken test machine.
    #[allow(clippy::unwrap_used)]
    tempfile::Builder::new()
        .prefix("chunkfs-test-")
        .tempdir_in("/var/tmp")
        .unwrap()
}
