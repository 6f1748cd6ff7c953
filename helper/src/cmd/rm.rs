//! `chunkfs rm LAYOUT:TAG`: untag an image; `chunkfs rm docker://...`: unpin a pulled image.
//! Either way `chunkfs gc` then frees what nothing else uses.

use std::path::Path;

use chunkfs_distribution::oci::gc;
use chunkfs_distribution::registry;
use chunkfs_distribution::remote;
use chunkfs_distribution::store::Store;

use super::image_ref::{ImageRef, Role};
use super::registry_flags::StoreFlag;
use crate::Error;

/// Arguments of `chunkfs rm`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs rm layout:v1 && chunkfs gc layout\n",
    "  chunkfs rm docker://registry.example/os/debian:12 && chunkfs gc --store\n\n",
    "LAYOUT:TAG: removes the tag from index.json; its blobs stay until `chunkfs gc LAYOUT`\n",
    "(blobs other tags use always stay).\n\n",
    "docker://...: removes the pin `chunkfs pull` made, found offline through the store's\n",
    "record of the tag (or by the digest given); the image's packs and blobs stay until\n",
    "`chunkfs gc --store` (what another pin or a live mount uses always stays).\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// LAYOUT:TAG (or oci:LAYOUT:TAG), or docker://HOST/REPO[:TAG|@sha256:HEX].
    pub reference: String,
    /// The local store (`--store`).
    #[command(flatten)]
    pub store: StoreFlag,
}

/// Runs `chunkfs rm`.
pub fn run(args: &Args) -> Result<(), Error> {
    match ImageRef::resolve(Path::new(&args.reference), Role::Source)? {
        ImageRef::Layout {
            dir,
            tag: Some(tag),
        } => {
            if args.store.given() {
                return Err(Error::usage(
                    "--store applies to docker:// references, not to a layout",
                ));
            }
            let n = gc::remove_tag(&dir, &tag)?;
            println!(
                "{}: removed tag {tag} ({n} index entries); `chunkfs gc {}` frees its blobs",
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        ImageRef::Docker(r) => unpin(&args.store.open_existing()?, &r),
        _ => Err(Error::usage(format!(
            "{}: expected LAYOUT:TAG or docker://HOST/REPO[:TAG|@sha256:HEX]",
            args.reference
        ))),
    }
}

/// Removes every pin of `r`'s repository that names the manifest (or index) `r` resolved to
/// when it was last pulled or mounted.
fn unpin(store: &Store, r: &registry::ImageRef) -> Result<(), Error> {
    let store_name = store.root().display();
    let about = |e: chunkfs_distribution::store::Error| Error::from(e).about(r);
    let top = match (r.digest(), remote::ref_key(r)) {
        (Some(d), _) => *d,
        (None, Some(key)) => store
            .resolve_ref(&key)
            .map_err(about)?
            .ok_or_else(|| Error::usage(format!("{r}: not pulled into the store {store_name}")))?,
        (None, None) => return Err(Error::usage(format!("{r}: names no tag or digest"))),
    };
    let mut removed = Vec::new();
    for pin in store.pins().map_err(about)? {
        let same_repo = registry::ImageRef::parse(&pin.reference)
            .is_ok_and(|p| p.registry() == r.registry() && p.repository() == r.repository());
        if same_repo && (pin.manifest == top || pin.blobs.contains(&top)) {
            store.unpin(&pin.manifest).map_err(about)?;
            removed.push(pin.manifest);
        }
    }
    if removed.is_empty() {
        return Err(Error::usage(format!(
            "{r}: not pinned in the store {store_name} (it resolved to {top} when last used)"
        )));
    }
    for m in &removed {
        println!("{r}: unpinned manifest {m}");
    }
    println!("`chunkfs gc --store={store_name}` frees what no other pin or mount uses");
    Ok(())
}
