//! Garbage collection and the size bound (docs/store.md §7).
//!
//! Roots are the pins and the live mount records (a record is live while its process lives or
//! its mount exists, in the boot that wrote it). `gc` removes, under `store.lock` held
//! exclusively (so no image is being set up): dead mount records; every pack, blob,
//! descriptor and ref no root names; files of half-added or half-removed packs; stale
//! temporary files. If a record it must follow is damaged it removes nothing. Eviction removes
//! whole packs no root names, least recently used first, until the store is under its bound.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chunkfs_format::digest::Digest;

use super::Store;
use super::error::Error;
use super::files::{self, disk_usage};
use super::lock::FileLock;
use super::pack::with_ext;

/// What `gc` removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Files removed, in the order they were removed.
    pub removed: Vec<PathBuf>,
    /// Bytes they took on disk.
    pub freed_bytes: u64,
    /// Packs kept.
    pub kept_packs: u64,
}

/// What the roots name.
#[derive(Default)]
struct Roots {
    packs: HashSet<Digest>,
    blobs: HashSet<Digest>,
    descriptors: HashSet<Digest>,
    manifests: HashSet<Digest>,
    dead_mounts: Vec<PathBuf>,
}

/// A held `store.lock`, shared: no `gc` or eviction runs while it is held.
#[derive(Debug)]
pub struct SetupGuard {
    _lock: FileLock,
}

impl Store {
    /// Holds `store.lock` shared until dropped: what a process does between storing an
    /// image's blobs ([`Store::put_blob`], [`Store::fetch_blob`]) and planning it, so that `gc`
    /// does not remove the blobs before the plan's record names them. Eviction is skipped
    /// while anyone holds it.
    pub fn setup(&self) -> Result<SetupGuard, Error> {
        Ok(SetupGuard {
            _lock: self.lock_store(false)?,
        })
    }

    /// Removes what no pin or live mount needs (or, with `dry_run`, lists it).
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, Error> {
        let _gc = self.lock_store(true)?;
        let roots = self.roots()?;
        let mut report = GcReport::default();
        let remove = |path: &Path, report: &mut GcReport| -> Result<(), Error> {
            if !path.exists() {
                return Ok(());
            }
            report.freed_bytes += disk_usage(path);
            report.removed.push(path.to_owned());
            if dry_run {
                return Ok(());
            }
            std::fs::remove_file(path).map_err(Error::io(path, "removing"))
        };
        for path in &roots.dead_mounts {
            remove(path, &mut report)?;
        }
        let packs_dir = self.root.join("packs/sha256");
        let digests = self.pack_digests()?;
        let with_state: HashSet<Digest> = digests.iter().copied().collect();
        for d in &digests {
            if roots.packs.contains(d) {
                report.kept_packs += 1;
                continue;
            }
            for path in pack_files(&self.pack_path(d)) {
                remove(&path, &mut report)?;
            }
        }
        // Files of packs without a state file: half added or half removed.
        for (path, name) in list(&packs_dir)? {
            let hex = name.split('.').next().unwrap_or_default();
            if Digest::from_hex(hex).is_none_or(|d| !with_state.contains(&d)) {
                remove(&path, &mut report)?;
            }
        }
        for (d, _) in self.blob_list()? {
            if !roots.blobs.contains(&d) && !roots.manifests.contains(&d) {
                remove(&self.blob_path(&d), &mut report)?;
            }
        }
        for (path, name) in list(&self.root.join("descriptors"))? {
            let key = name.strip_suffix(".erofs").and_then(Digest::from_hex);
            if key.is_none_or(|k| !roots.descriptors.contains(&k)) {
                remove(&path, &mut report)?;
            }
        }
        for (path, manifest) in self.refs()? {
            if manifest.is_none_or(|m| !roots.manifests.contains(&m)) {
                remove(&path, &mut report)?;
            }
        }
        if !dry_run {
            prune_empty_dirs(&self.root.join("refs"));
        }
        for (path, name) in list(&self.tmp_dir())? {
            if files::is_stale_temp(&name) {
                remove(&path, &mut report)?;
            }
        }
        Ok(report)
    }

    /// If the store takes more than its size bound on disk, evicts whole packs no pin or live
    /// mount uses, least recently used first, until it does not; returns the packs evicted.
    /// Skipped (nothing evicted) while another process sets up an image or collects garbage.
    pub fn enforce_bound(&self) -> Result<Vec<Digest>, Error> {
        let Some(max) = self.config.max_size else {
            return Ok(Vec::new());
        };
        if self.disk_usage()? <= max {
            return Ok(Vec::new());
        }
        let Some(_gc) = FileLock::try_take(&self.root.join("store.lock"))? else {
            return Ok(Vec::new());
        };
        let Ok(roots) = self.roots() else {
            // A damaged record: `gc` and `verify` say which; evicting blind could remove
            // what it protects.
            return Ok(Vec::new());
        };
        let mut total = self.disk_usage()?;
        let mut candidates: Vec<(SystemTime, Digest)> = Vec::new();
        for d in self.pack_digests()? {
            if roots.packs.contains(&d) {
                continue;
            }
            let state = with_ext(&self.pack_path(&d), "state");
            let used = std::fs::metadata(&state)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            candidates.push((used, d));
        }
        candidates.sort();
        let mut evicted = Vec::new();
        for (_, d) in candidates {
            if total <= max {
                break;
            }
            for path in pack_files(&self.pack_path(&d)) {
                let freed = disk_usage(&path);
                match std::fs::remove_file(&path) {
                    Ok(()) => total = total.saturating_sub(freed),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&path, "evicting")(e)),
                }
            }
            evicted.push(d);
        }
        Ok(evicted)
    }

    /// What the pins and live mount records name, and the dead mount records.
    fn roots(&self) -> Result<Roots, Error> {
        let to_roots = |e: Error| match e {
            Error::CorruptFile { path, problem } => Error::Roots { path, problem },
            other => other,
        };
        let mut roots = Roots::default();
        let add = |r: &super::ImageRecord, roots: &mut Roots| {
            roots.manifests.insert(r.manifest);
            roots.blobs.extend(r.blobs.iter().copied());
            roots.packs.extend(r.packs.iter().copied());
            roots.descriptors.extend(r.descriptor);
        };
        for pin in self.pins().map_err(to_roots)? {
            add(&pin, &mut roots);
        }
        for m in self.mount_records().map_err(to_roots)? {
            if m.live {
                add(&m.record, &mut roots);
            } else {
                roots.dead_mounts.push(m.path);
            }
        }
        Ok(roots)
    }
}

/// A pack's files, state first: once it is gone the pack no longer exists.
fn pack_files(path: &Path) -> [PathBuf; 3] {
    [
        with_ext(path, "state"),
        path.to_owned(),
        with_ext(path, "index"),
    ]
}

/// Removes the empty directories under `dir` (repositories whose last ref went), not `dir`.
fn prune_empty_dirs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let sub = entry.path();
            prune_empty_dirs(&sub);
            // Fails, as it should, while the directory holds anything.
            let _ = std::fs::remove_dir(&sub);
        }
    }
}

/// The files of `dir` with their names.
fn list(dir: &Path) -> Result<Vec<(PathBuf, String)>, Error> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir, "listing"))? {
        let entry = entry.map_err(Error::io(dir, "listing"))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push((
                entry.path(),
                entry.file_name().to_string_lossy().into_owned(),
            ));
        }
    }
    out.sort();
    Ok(out)
}
