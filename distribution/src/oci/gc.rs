//! Untagging and garbage collection of a layout (docs/format.md §7.6).
//!
//! Reachability starts at every `index.json` entry and follows every descriptor inside every
//! manifest and index (`config`, `layers`, `manifests`, `subject`, `blobs`), whatever tool wrote
//! them. `gc` then removes every blob not reached, and chunkfs's own leftover temporary files. If
//! a manifest or index that must be followed is missing or corrupt, nothing is removed: what it
//! references cannot be known. Both operations hold the exclusive layout lock, so they are safe
//! against chunkfs writers; they are not safe against other tools (skopeo, umoci) writing into
//! the same layout at the same time, which take no lock.

use chunkfs_format::{Classify, ErrorClass};
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::oci::layout::{self, Layout, MANIFEST_MAX, TEMP_PREFIX};
use crate::oci::lock::{self, LayoutLock};
use crate::oci::media_type;
use crate::oci::spec::{self, ContentDescriptor};

/// Why `gc` or `rm` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The layout could not be locked.
    #[error(transparent)]
    Lock(#[from] lock::Error),
    /// The layout could not be read or written.
    #[error(transparent)]
    Layout(#[from] layout::Error),
    /// An I/O error while listing or removing blobs.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A manifest or index cannot be followed, so reachability is unknown.
    #[error("{}: cannot follow {what} {digest}: {reason}; nothing was removed", dir.display())]
    Unfollowable {
        /// The layout.
        dir: PathBuf,
        /// What kind of document.
        what: String,
        /// Its digest.
        digest: String,
        /// Why.
        reason: String,
    },
    /// `rm` was asked for a tag the layout does not have.
    #[error("{}: no image is tagged {tag:?}; tags: {}", dir.display(), if available.is_empty() { "(none)".to_owned() } else { available.join(", ") })]
    NoSuchTag {
        /// The layout.
        dir: PathBuf,
        /// The tag.
        tag: String,
        /// The tags present.
        available: Vec<String>,
    },
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Lock(e) => e.class(),
            Self::Layout(e) => e.class(),
            Self::Io { source, .. } => source.class(),
            Self::Unfollowable { .. } => ErrorClass::Corrupt,
            Self::NoSuchTag { .. } => ErrorClass::Usage,
        }
    }
}

/// What `gc` removed (or would remove, with `dry_run`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Unreachable blobs: digest (`alg:hex`) and length.
    pub removed: Vec<(String, u64)>,
    /// Bytes of the unreachable blobs.
    pub freed_bytes: u64,
    /// Blobs kept.
    pub kept: usize,
    /// Bytes of the blobs kept.
    pub kept_bytes: u64,
    /// Leftover temporary files removed, with their bytes (included in `freed_bytes`).
    pub temp_files: usize,
}

/// Removes the tag `tag` from `index.json`; returns how many entries carried it. Blobs stay until
/// `gc`.
pub fn remove_tag(dir: &Path, tag: &str) -> Result<usize, Error> {
    let layout = Layout::open(dir)?;
    let _lock = LayoutLock::exclusive(dir)?;
    let mut index = layout.read_index()?;
    let before = index.manifests.len();
    index.manifests.retain(|d| d.ref_name() != Some(tag));
    let removed = before - index.manifests.len();
    if removed == 0 {
        let mut available: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.ref_name().map(str::to_owned))
            .collect();
        available.sort();
        available.dedup();
        return Err(Error::NoSuchTag {
            dir: dir.to_owned(),
            tag: tag.to_owned(),
            available,
        });
    }
    layout.write_index(&index)?;
    Ok(removed)
}

/// Removes every blob of the layout in `dir` that no tag reaches; with `dry_run`, only reports.
pub fn gc(dir: &Path, dry_run: bool) -> Result<GcReport, Error> {
    let layout = Layout::open(dir)?;
    let _lock = LayoutLock::exclusive(dir)?;
    let reachable = reachable(&layout)?;
    let mut report = GcReport::default();
    let blobs_root = dir.join("blobs");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    let mut touched_dirs = Vec::new();
    for alg in fs::read_dir(&blobs_root).map_err(io(&blobs_root))? {
        let alg = alg.map_err(io(&blobs_root))?;
        let alg_dir = alg.path();
        if !alg.file_type().map_err(io(&alg_dir))?.is_dir() {
            continue;
        }
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        let mut names: Vec<_> = fs::read_dir(&alg_dir)
            .map_err(io(&alg_dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&alg_dir))?;
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let path = entry.path();
            let meta = entry.metadata().map_err(io(&path))?;
            if !meta.is_file() {
                continue;
            }
            let digest = format!("{alg_name}:{}", entry.file_name().to_string_lossy());
            if reachable.contains(&digest) {
                report.kept += 1;
                report.kept_bytes += meta.len();
                continue;
            }
            if !dry_run {
                fs::remove_file(&path).map_err(io(&path))?;
            }
            report.freed_bytes += meta.len();
            report.removed.push((digest, meta.len()));
        }
        touched_dirs.push(alg_dir);
    }
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            let len = entry.metadata().map_err(io(&path))?.len();
            if !dry_run {
                fs::remove_file(&path).map_err(io(&path))?;
            }
            report.temp_files += 1;
            report.freed_bytes += len;
        }
    }
    if !dry_run {
        for d in touched_dirs.iter().map(PathBuf::as_path).chain([dir]) {
            layout::sync_dir(d)?;
        }
    }
    Ok(report)
}

/// Every blob digest (`alg:hex`) reachable from `index.json`.
pub fn reachable(layout: &Layout) -> Result<BTreeSet<String>, Error> {
    let index = layout.read_index()?;
    let mut seen = BTreeSet::new();
    let mut queue: Vec<ContentDescriptor> = index.manifests;
    while let Some(desc) = queue.pop() {
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        if !must_follow(&desc) {
            continue;
        }
        let unfollowable = |reason: String| Error::Unfollowable {
            dir: layout.dir().to_owned(),
            what: desc.media_type.clone(),
            digest: desc.digest.clone(),
            reason,
        };
        let raw = match layout.read_blob(&desc, MANIFEST_MAX, "manifest") {
            Ok(raw) => raw,
            Err(e) => return Err(unfollowable(e.to_string())),
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| unfollowable(format!("not JSON: {e}")))?;
        for child in children(&doc) {
            let child: ContentDescriptor = serde_json::from_value(child.clone())
                .map_err(|e| unfollowable(format!("bad descriptor: {e}")))?;
            queue.push(child);
        }
    }
    Ok(seen)
}

/// Manifests and indexes (and unknown JSON documents small enough to be one) are followed;
/// layers, configs and chunkfs blobs are leaves.
pub(crate) fn must_follow(desc: &ContentDescriptor) -> bool {
    let t = desc.media_type.as_str();
    if media_type::is_manifest(t) || media_type::is_index(t) {
        return true;
    }
    let leaf = t == media_type::OCI_CONFIG
        || t == media_type::DOCKER_CONFIG
        || t == media_type::METADATA
        || t == media_type::PACK
        || media_type::TAR_LAYERS.contains(&t);
    !leaf
        && t.ends_with("+json")
        && desc.size <= MANIFEST_MAX
        && spec::parse_digest(&desc.digest).is_ok()
}

/// Descriptors referenced by a manifest or index document.
pub(crate) fn children(doc: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for key in ["config", "subject"] {
        if let Some(v) = doc.get(key).filter(|v| v.is_object()) {
            out.push(v);
        }
    }
    for key in ["layers", "manifests", "blobs"] {
        if let Some(list) = doc.get(key).and_then(|v| v.as_array()) {
            out.extend(list.iter());
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::oci::spec::{Index, Manifest};

    fn image(layout: &Layout, layers: &[&[u8]]) -> ContentDescriptor {
        let (cd, _) = layout.put_blob(b"{}").unwrap();
        let layers = layers
            .iter()
            .map(|l| {
                layout.put_blob(l).unwrap();
                ContentDescriptor::for_bytes(media_type::PACK, l)
            })
            .collect();
        let m = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.into()),
            artifact_type: None,
            config: ContentDescriptor::new(media_type::OCI_CONFIG, cd, 2),
            layers,
            annotations: Default::default(),
        };
        let bytes = spec::to_json(&m);
        layout.put_blob(&bytes).unwrap();
        ContentDescriptor::for_bytes(media_type::OCI_MANIFEST, &bytes)
    }

    fn tag(layout: &Layout, d: ContentDescriptor, t: &str) {
        let mut d = d;
        d.annotations.insert(crate::oci::REF_NAME.into(), t.into());
        let mut index = layout.read_index().unwrap();
        index.manifests.push(d);
        layout.write_index(&index).unwrap();
    }

    #[test]
    fn gc_removes_only_unreachable_blobs() {
        let tmp = crate::oci::test_dir();
        let dir = tmp.path().join("l");
        let layout = Layout::create(&dir).unwrap();
        let a = image(&layout, &[b"shared", b"only-a"]);
        let b = image(&layout, &[b"shared", b"only-b-longer"]);
        tag(&layout, a.clone(), "a");
        tag(&layout, b, "b");
        layout.put_blob(b"stray").unwrap();
        fs::write(dir.join(format!("{TEMP_PREFIX}crashed")), b"12345").unwrap();

        let dry = gc(&dir, true).unwrap();
        assert_eq!(dry.removed.len(), 1);
        assert!(
            layout
                .blob_path(&chunkfs_format::digest::Digest::of(b"stray"))
                .exists()
        );

        let r = gc(&dir, false).unwrap();
        assert_eq!(
            r.removed,
            vec![(chunkfs_format::digest::Digest::of(b"stray").to_oci(), 5)]
        );
        assert_eq!((r.temp_files, r.freed_bytes), (1, 10));

        assert_eq!(remove_tag(&dir, "b").unwrap(), 1);
        let r = gc(&dir, false).unwrap();
        let removed: BTreeSet<_> = r.removed.iter().map(|(d, _)| d.clone()).collect();
        assert!(removed.contains(&chunkfs_format::digest::Digest::of(b"only-b-longer").to_oci()));
        assert!(!removed.contains(&chunkfs_format::digest::Digest::of(b"shared").to_oci()));
        assert_eq!(r.removed.len(), 2, "b's manifest and its own layer");
        // Everything a still reaches is intact.
        for d in reachable(&layout).unwrap() {
            assert!(
                dir.join("blobs/sha256")
                    .join(d.trim_start_matches("sha256:"))
                    .is_file(),
                "{d} removed"
            );
        }
        assert!(reachable(&layout).unwrap().contains(&a.digest));
        let err = remove_tag(&dir, "b").unwrap_err();
        assert!(err.to_string().contains("tags: a"), "{err}");
    }

    #[test]
    fn gc_refuses_when_a_manifest_is_missing() {
        let tmp = crate::oci::test_dir();
        let dir = tmp.path().join("l");
        let layout = Layout::create(&dir).unwrap();
        let a = image(&layout, &[b"layer"]);
        tag(&layout, a.clone(), "a");
        layout.put_blob(b"stray").unwrap();
        fs::remove_file(layout.descriptor_path(&a).unwrap()).unwrap();
        let err = gc(&dir, false).unwrap_err();
        assert!(matches!(err, Error::Unfollowable { .. }), "{err}");
        assert!(
            layout
                .blob_path(&chunkfs_format::digest::Digest::of(b"stray"))
                .exists()
        );
        assert!(
            layout
                .blob_path(&chunkfs_format::digest::Digest::of(b"layer"))
                .exists()
        );
    }

    #[test]
    fn nested_indexes_are_followed() {
        let tmp = crate::oci::test_dir();
        let dir = tmp.path().join("l");
        let layout = Layout::create(&dir).unwrap();
        let a = image(&layout, &[b"deep-layer"]);
        let inner = Index {
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests: vec![a],
            ..Index::default()
        };
        let bytes = spec::to_json(&inner);
        layout.put_blob(&bytes).unwrap();
        tag(
            &layout,
            ContentDescriptor::for_bytes(media_type::OCI_INDEX, &bytes),
            "multi",
        );
        let r = gc(&dir, false).unwrap();
        assert!(r.removed.is_empty(), "{:?}", r.removed);
        assert_eq!(r.kept, 4);
    }
}
