//! `chunkfs gc LAYOUT [--dry-run]`: remove the blobs no tag reaches; `chunkfs gc --store[=DIR]
//! [--dry-run]`: remove what no pin or live mount of the store needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chunkfs_distribution::oci::gc;
use chunkfs_distribution::store::Store;
use indicatif::HumanBytes;

use super::image_ref::{ImageRef, Role};
use super::registry_flags::StoreFlag;
use crate::Error;

/// Arguments of `chunkfs gc`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs rm layout:old && chunkfs gc layout\n",
    "  chunkfs gc --dry-run layout\n",
    "  chunkfs rm docker://registry.example/app:v1 && chunkfs gc --store\n",
    "  chunkfs gc --store=/srv/chunkfs --dry-run\n\n",
    "LAYOUT: follows every manifest and index that index.json reaches (whatever tool wrote\n",
    "them) and removes every other blob and chunkfs's leftover temporary files. A blob still\n",
    "reachable is never removed; if a manifest cannot be read, nothing is removed. Holds the\n",
    "layout's lock: safe against concurrent chunkfs writers, but do not run it while another\n",
    "tool (skopeo, umoci) writes into the same layout.\n\n",
    "--store: keeps what a pinned image (`chunkfs pull`) or a live mount needs (a mount\n",
    "record is live while its process or its mount exists: run gc in the mounts' mount\n",
    "namespace) and removes every other pack, blob, descriptor and ref, the records of dead\n",
    "mounts and stale temporary files. If a pin or mount record is damaged, nothing is\n",
    "removed. Waits for images being set up; safe while images are mounted and pulled.\n",
    "See docs/store.md §7.\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The OCI layout directory (or --store).
    #[arg(required_unless_present = "store")]
    pub layout: Option<PathBuf>,
    /// The local store (`--store`).
    #[command(flatten)]
    pub store: StoreFlag,
    /// List what would be removed; remove nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// Runs `chunkfs gc`.
pub fn run(args: &Args) -> Result<(), Error> {
    let layout = match (&args.layout, args.store.given()) {
        (Some(l), false) => l,
        (None, true) => return gc_store(&args.store.open_existing()?, args.dry_run),
        _ => {
            return Err(Error::usage("gc takes LAYOUT or --store[=DIR], not both"));
        }
    };
    let dir = match ImageRef::resolve(layout, Role::Source)? {
        ImageRef::Layout { dir, tag: None } => dir,
        ImageRef::Layout { tag: Some(_), .. } => {
            return Err(Error::usage(
                "gc takes a layout directory, not a tag (use chunkfs rm LAYOUT:TAG to untag)",
            ));
        }
        r @ ImageRef::Docker(_) => {
            return Err(
                r.refuse("a layout directory, or --store for the images pulled from registries")
            );
        }
        // gc's own error says that it is not a layout.
        ImageRef::Cfs(_) | ImageRef::Dir(_) => layout.clone(),
    };
    let report = gc::gc(&dir, args.dry_run)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    if args.dry_run {
        for (digest, len) in &report.removed {
            println!("{verb} {digest} ({})", HumanBytes(*len));
        }
    }
    println!(
        "{}: {verb} {} blobs and {} temporary files, {} freed; {} blobs ({}) kept",
        dir.display(),
        report.removed.len(),
        report.temp_files,
        HumanBytes(report.freed_bytes),
        report.kept,
        HumanBytes(report.kept_bytes)
    );
    Ok(())
}

/// `chunkfs gc --store`.
fn gc_store(store: &Store, dry_run: bool) -> Result<(), Error> {
    let report = store
        .gc(dry_run)
        .map_err(|e| Error::from(e).about(format!("store {}", store.root().display())))?;
    let verb = if dry_run { "would remove" } else { "removed" };
    if dry_run {
        for path in &report.removed {
            println!("{verb} {}", path.display());
        }
    }
    println!(
        "{}: {verb} {}; {} freed; {} packs kept",
        store.root().display(),
        describe_removed(store.root(), &report.removed),
        HumanBytes(report.freed_bytes),
        report.kept_packs
    );
    Ok(())
}

/// "2 packs, 3 blobs, 1 refs" from the files gc removed, by the store directory they were in
/// (a pack's three files count once).
fn describe_removed(root: &Path, removed: &[PathBuf]) -> String {
    let mut packs = BTreeSet::new();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for p in removed {
        let rel = p.strip_prefix(root).unwrap_or(p);
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default();
        let kind = match top {
            "packs" => {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                packs.insert(name.split('.').next().unwrap_or_default().to_owned());
                continue;
            }
            "blobs" => "blobs",
            "mounts" => "records of dead mounts",
            "descriptors" => "descriptors",
            "refs" => "refs",
            "tmp" => "temporary files",
            _ => "other files",
        };
        *counts.entry(kind).or_default() += 1;
    }
    if !packs.is_empty() {
        counts.insert("packs", packs.len());
    }
    if counts.is_empty() {
        return "nothing".into();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_files_are_counted_by_kind() {
        let root = Path::new("/s");
        let hex = "ab".repeat(32);
        let other = "cd".repeat(32);
        let files: Vec<PathBuf> = [
            "/s/mounts/1-2-3.json".to_owned(),
            format!("/s/packs/sha256/{hex}.state"),
            format!("/s/packs/sha256/{hex}"),
            format!("/s/packs/sha256/{hex}.index"),
            format!("/s/packs/sha256/{other}.index"),
            format!("/s/blobs/sha256/{hex}"),
            format!("/s/blobs/sha256/{other}"),
            "/s/refs/h/r/:v1".to_owned(),
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(
            describe_removed(root, &files),
            "2 blobs, 2 packs, 1 records of dead mounts, 1 refs"
        );
        assert_eq!(describe_removed(root, &[]), "nothing");
    }
}
