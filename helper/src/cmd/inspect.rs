//! `chunkfs inspect IMAGE`: what an image holds: a `.cfs`, an image in an OCI layout, or an
//! image in a registry (and what the local store already holds of it).

use std::collections::HashMap;
use std::path::PathBuf;

use chunkfs_distribution::oci::read::open_image;
use chunkfs_distribution::registry;
use chunkfs_format::ErrorClass;
use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::digest::Digest;
use chunkfs_format::inspect::{Stats, stats};
use indicatif::HumanBytes;

use super::image_ref::{ImageRef, Role};
use super::registry_flags::{RegistryFlags, StoreFlag, parse_platform};
use super::registry_image::{self, Holdings};
use crate::Error;

/// Arguments of `chunkfs inspect`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs inspect image.cfs\n",
    "  chunkfs inspect --json image.cfs | jq .dedup_savings_bytes\n",
    "  chunkfs inspect layout:v1\n",
    "  chunkfs inspect docker://registry.example:5000/os/debian:12\n\n",
    "Checks the header, metadata and chunk index (not the chunk frames: see `chunkfs verify`).\n",
    "A registry image: fetches its manifest, config and metadata (checked against their\n",
    "digests) and the index at the end of each pack, as a mount would, keeping them in the\n",
    "store (--store; `chunkfs gc --store` frees them unless the image is pulled or mounted),\n",
    "and tells how many of its chunk bytes the store already holds; no chunk is fetched.\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The image: a .cfs, LAYOUT[:TAG] or docker://HOST/REPO[:TAG|@sha256:HEX].
    pub image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// For a multi-platform image in a registry: the platform, OS/ARCH[/VARIANT] (default:
    /// the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// The local store (`--store`).
    #[command(flatten)]
    pub store: StoreFlag,
    /// How to reach the registry.
    #[command(flatten, next_help_heading = "Registry")]
    pub registry: RegistryFlags,
}

/// What an image is, beyond its statistics: labelled lines of the text form, and the same as
/// JSON fields.
struct Described {
    stats: Stats,
    lines: Vec<(&'static str, String)>,
    json: serde_json::Map<String, serde_json::Value>,
}

/// Runs `chunkfs inspect`.
pub fn run(args: &Args) -> Result<(), Error> {
    let image = ImageRef::resolve(&args.image, Role::Source)?;
    if !matches!(image, ImageRef::Docker(_)) && (args.store.given() || args.platform.is_some()) {
        return Err(Error::usage(
            "--store and --platform apply to docker:// images",
        ));
    }
    let d = match &image {
        ImageRef::Layout { dir, tag } => {
            let img = open_image(dir, tag.as_deref())?;
            let lens: Vec<u32> = img.locations.iter().map(|l| l.stored_len).collect();
            let bytes =
                img.packs.iter().map(|p| p.size).sum::<u64>() + img.metadata_blob.len() as u64;
            Described {
                stats: stats(&img.image, &img.metadata_digest, Some(&lens), Some(bytes)),
                lines: vec![
                    ("manifest", img.manifest.digest.clone()),
                    ("packs", img.packs.len().to_string()),
                ],
                json: json_fields([
                    ("manifest_digest", img.manifest.digest.clone().into()),
                    ("packs", img.packs.len().into()),
                ]),
            }
        }
        ImageRef::Docker(r) => describe_remote(args, r)?,
        // Anything else is opened as a `.cfs`, whose error says what it is not.
        ImageRef::Cfs(_) | ImageRef::Dir(_) => {
            let cfs = Cfs::open(&args.image)?;
            let lens: Vec<u32> = cfs.locations().iter().map(|l| l.stored_len).collect();
            let erofs = cfs.header().has_erofs();
            Described {
                stats: stats(
                    cfs.image(),
                    &cfs.header().metadata_digest,
                    Some(&lens),
                    Some(cfs.header().image_len),
                ),
                lines: vec![(
                    "EROFS descriptor",
                    if erofs { "present" } else { "absent" }.into(),
                )],
                json: json_fields([("erofs_descriptor", erofs.into())]),
            }
        }
    };
    if args.json {
        let mut value = serde_json::to_value(&d.stats).map_err(json_err)?;
        if let Some(map) = value.as_object_mut() {
            map.extend(d.json);
        }
        let text = serde_json::to_string_pretty(&value).map_err(json_err)?;
        println!("{text}");
    } else {
        print!("{}", render(&image.to_string(), &d.stats, &d.lines));
    }
    Ok(())
}

fn json_err(e: serde_json::Error) -> Error {
    Error::new(ErrorClass::Corrupt, format!("cannot encode JSON: {e}"))
}

fn json_fields<const N: usize>(
    fields: [(&str, serde_json::Value); N],
) -> serde_json::Map<String, serde_json::Value> {
    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A registry image: its statistics from the checked metadata and its packs' indexes, and
/// what the store holds of it.
fn describe_remote(args: &Args, r: &registry::ImageRef) -> Result<Described, Error> {
    let platform = parse_platform(args.platform.as_deref())?;
    let mut opened = registry_image::open(r, platform.as_ref(), &args.store, &args.registry)?;
    // A plan adds the packs (their indexes) to the store and says where each chunk would be
    // read from, as `chunkfs pull` plans it; its record goes when it is dropped.
    let plan = opened.plan_for_any_mount()?;
    let held = Holdings::of(&plan);
    let img = &opened.image;
    // Frame lengths as the image's own packs store them (a chunk shared from another pack may
    // be compressed differently there).
    let mut own: HashMap<(Digest, u32), u32> = HashMap::new();
    for (d, _) in &img.packs {
        if let Some(p) = opened.store.pack(d).map_err(|e| Error::from(e).about(r))? {
            for e in p.entries() {
                own.entry((e.digest, e.raw_len)).or_insert(e.stored_len);
            }
        }
    }
    let lens: Vec<u32> = img
        .image
        .chunks
        .iter()
        .map(|c| own.get(&(c.digest, c.size)).copied().unwrap_or(0))
        .collect();
    let bytes = img.manifest.layers.iter().map(|l| l.size).sum::<u64>();
    let pinned = opened.pinned()?;
    let store = opened.store.root().display().to_string();
    let holds = format!(
        "{} of {} chunk frame bytes ({} in its own packs, {} shared with other images), {} to fetch; {}",
        HumanBytes(held.present()),
        HumanBytes(held.total()),
        HumanBytes(held.own),
        HumanBytes(held.shared),
        HumanBytes(held.missing),
        if pinned { "pinned" } else { "not pinned" }
    );
    let mut lines = vec![
        ("reference", img.pinned.to_string()),
        ("manifest", img.manifest_digest.to_string()),
        ("packs", img.packs.len().to_string()),
        ("store", store.clone()),
        ("in the store", holds),
    ];
    if let Some(why) = &img.offline {
        lines.push(("offline", why.clone()));
    }
    Ok(Described {
        stats: stats(&img.image, &img.metadata_digest, Some(&lens), Some(bytes)),
        lines,
        json: json_fields([
            ("reference", img.pinned.to_string().into()),
            ("manifest_digest", img.manifest_digest.to_string().into()),
            ("packs", img.packs.len().into()),
            (
                "store",
                serde_json::json!({
                    "dir": store,
                    "present_bytes": held.present(),
                    "own_bytes": held.own,
                    "shared_bytes": held.shared,
                    "missing_bytes": held.missing,
                    "pinned": pinned,
                }),
            ),
        ]),
    })
}

fn render(name: &str, s: &Stats, extra: &[(&str, String)]) -> String {
    use std::fmt::Write;
    let b = HumanBytes;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "image:            {name} ({})",
        b(s.image_bytes.unwrap_or(0))
    );
    let _ = writeln!(o, "metadata digest:  {}", s.metadata_digest);
    for (label, value) in extra {
        let _ = writeln!(o, "{:<18}{value}", format!("{label}:"));
    }
    let _ = writeln!(
        o,
        "inodes:           {} files, {} directories, {} symlinks, {} devices, {} fifos/sockets; {} extra hard links",
        s.files, s.directories, s.symlinks, s.devices, s.special, s.extra_hard_links
    );
    let _ = writeln!(
        o,
        "file bytes:       {} ({} bytes), {} of data outside holes",
        b(s.file_bytes),
        s.file_bytes,
        b(s.data_bytes)
    );
    let _ = writeln!(
        o,
        "packed stream:    {} small files in {}",
        s.packed_files,
        b(s.packed_stream_bytes)
    );
    let _ = writeln!(
        o,
        "chunks:           {} referenced, {} unique ({})",
        s.chunk_refs,
        s.unique_chunks,
        b(s.unique_bytes)
    );
    let stored = s.stored_bytes.unwrap_or(0);
    let _ = writeln!(
        o,
        "stored:           {} ({} bytes), compression ratio {:.2}",
        b(stored),
        stored,
        s.compression_ratio.unwrap_or(0.0)
    );
    let _ = writeln!(
        o,
        "dedup savings:    {} ({} bytes)",
        b(s.dedup_savings_bytes),
        s.dedup_savings_bytes
    );
    let _ = match s.prefetch_chunks {
        0 => writeln!(o, "prefetch list:    none"),
        n => writeln!(
            o,
            "prefetch list:    {n} chunks, {} ({} stored)",
            b(s.prefetch_bytes),
            b(s.prefetch_stored_bytes.unwrap_or(0))
        ),
    };
    let _ = writeln!(o, "largest files:");
    for f in &s.largest_files {
        let _ = writeln!(o, "  {:>12}  {}", b(f.size).to_string(), f.path);
    }
    o
}
