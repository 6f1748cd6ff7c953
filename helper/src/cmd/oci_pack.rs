//! The OCI branches of `chunkfs pack`: any conversion whose source or destination is an OCI
//! image layout (docs/format.md §7).

use std::path::Path;

use chunkfs_distribution::oci::convert::{self, Dest, Outcome, Source};
use chunkfs_distribution::oci::reference::{Reference, Role};
use chunkfs_distribution::oci::select::PlatformSpec;
use chunkfs_format::build::BuildOptions;
use chunkfs_format::cfs::write::PackOptions;
use indicatif::HumanBytes;

use super::pack::Args;
use crate::Error;
use crate::progress::Progress;

fn classify(path: &Path, role: Role) -> Reference {
    match path.to_str() {
        Some(s) => Reference::parse(s, role),
        // A non-UTF-8 path cannot be spelled as a reference.
        None => Reference::File(path.to_owned()),
    }
}

/// True if SRC or DEST names an OCI layout.
pub fn wants(args: &Args) -> bool {
    matches!(classify(&args.src, Role::Source), Reference::Oci { .. })
        || matches!(
            classify(&args.dest, Role::Destination),
            Reference::Oci { .. }
        )
}

/// Runs `chunkfs pack` with a layout on either side.
pub fn run(args: &Args) -> Result<(), Error> {
    let options = PackOptions {
        build: BuildOptions {
            chunking: args.chunk_sizes.unwrap_or_default(),
            level: args.compression_level,
            jobs: args.jobs,
            small_file_max: args.small_file_max,
        },
        align512: args.align.is_some(),
    };
    let platform = match &args.platform {
        Some(p) => Some(PlatformSpec::parse(p).ok_or_else(|| {
            Error::usage(format!(
                "--platform {p:?}: expected OS/ARCH or OS/ARCH/VARIANT"
            ))
        })?),
        None => None,
    };
    let src_ref = classify(&args.src, Role::Source);
    let dest_ref = classify(&args.dest, Role::Destination);
    let src = match &src_ref {
        Reference::Dir(d) => Source::Dir(d),
        Reference::File(f) => Source::Cfs(f),
        Reference::Oci { dir, tag } => Source::Layout {
            dir,
            tag: tag.as_deref(),
            platform: platform.as_ref(),
        },
    };
    if platform.is_some() && !matches!(src, Source::Layout { .. }) {
        return Err(Error::usage(
            "--platform applies only to a container image in an OCI layout",
        ));
    }
    let dest = match &dest_ref {
        Reference::Oci {
            dir,
            tag: Some(tag),
        } => Dest::Layout { dir, tag },
        Reference::Oci { dir, tag: None } => {
            return Err(Error::usage(format!(
                "{}: a layout destination needs a tag: {}:TAG",
                dir.display(),
                dir.display()
            )));
        }
        Reference::File(f) => Dest::Cfs(f),
        Reference::Dir(d) => {
            return Err(Error::usage(format!(
                "{}: is a directory; the destination is a .cfs file or LAYOUT:TAG",
                d.display()
            )));
        }
    };
    if let (Source::Dir(_), Dest::Cfs(_)) | (Source::Cfs(_), Dest::Cfs(_)) = (src, dest) {
        return Err(Error::usage(format!(
            "{}: not an OCI layout reference",
            args.src.display()
        )));
    }
    let mut bar = None;
    let outcome = convert::convert(src, dest, &options, |p| bar = Progress::for_build(p))?;
    drop(bar);
    report(&dest_ref, &outcome);
    Ok(())
}

fn report(dest: &Reference, o: &Outcome) {
    if let Some(c) = &o.layout {
        println!(
            "{dest}: {} inodes, {} chunks, {} pack layers ({} new), {} new blobs ({}), manifest {} ({} bytes), metadata {}",
            o.inodes,
            o.chunks,
            c.packs,
            c.new_packs,
            c.new_blobs,
            HumanBytes(c.new_bytes),
            c.manifest.digest,
            c.manifest_len,
            o.metadata_digest
        );
    } else if let Some(s) = &o.cfs {
        println!(
            "{dest}: {} inodes, {} chunks, {} ({} of chunk frames), from a {}, metadata {}",
            o.inodes,
            o.chunks,
            HumanBytes(s.image_len),
            HumanBytes(s.stored_bytes),
            o.source_kind,
            o.metadata_digest
        );
    }
}

/// `chunkfs unpack LAYOUT[:TAG] DIR`: `None` unless the image names a layout.
pub fn unpack(args: &super::unpack::Args) -> Option<Result<(), Error>> {
    let Reference::Oci { dir, tag } = classify(&args.image, Role::Source) else {
        return None;
    };
    Some((|| {
        let img = chunkfs_distribution::oci::read::open_image(&dir, tag.as_deref())?;
        let mut chunks = img
            .chunks()
            .map_err(|e| Error::from(e).about(dir.display()))?;
        let report = chunkfs_format::unpack::unpack(&img.image, &mut chunks, &args.dir)?;
        for (kind, (count, first)) in &report.skipped {
            eprintln!(
                "chunkfs: warning: skipped {kind} for {count} entries (first: {})",
                first.display()
            );
        }
        Ok(())
    })())
}

/// `chunkfs verify LAYOUT[:TAG]`: `None` unless the image names a layout.
pub fn verify(args: &super::verify::Args) -> Option<Result<(), Error>> {
    use chunkfs_distribution::oci::verify::verify_image;
    let Reference::Oci { dir, tag } = classify(&args.image, Role::Source) else {
        return None;
    };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let d = done.clone();
    let bar = Progress::start(None, move || {
        (d.load(std::sync::atomic::Ordering::Relaxed), String::new())
    });
    let result = verify_image(&dir, tag.as_deref(), &done);
    drop(bar);
    Some(match result {
        Ok(r) => {
            println!(
                "{}: ok: manifest {}, {} pack blobs ({}) hashed, {} chunks ({}) decompressed and hashed, metadata {}",
                args.image.display(),
                r.manifest_digest,
                r.packs,
                HumanBytes(r.pack_bytes),
                r.chunks,
                HumanBytes(r.chunk_bytes),
                r.metadata_digest
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    })
}

/// `chunkfs verify --oci LAYOUT[:TAG]`: the whole layout, or one tag of it.
pub fn verify_layout(args: &super::verify::Args) -> Result<(), Error> {
    use chunkfs_distribution::oci::verify::verify_layout;
    let (dir, tag) = match classify(&args.image, Role::Source) {
        Reference::Oci { dir, tag } => (dir, tag),
        Reference::Dir(dir) => (dir, None),
        Reference::File(f) if !f.exists() => {
            return Err(Error::io(format!(
                "{}: no such layout directory",
                f.display()
            )));
        }
        Reference::File(f) => {
            return Err(Error::usage(format!(
                "{}: --oci takes an OCI layout directory (or LAYOUT:TAG), not a file",
                f.display()
            )));
        }
    };
    if tag.is_some() {
        let one = super::verify::Args {
            image: args.image.clone(),
            jobs: args.jobs,
            oci: false,
        };
        return verify(&one).unwrap_or_else(|| Err(Error::usage("not a layout reference")));
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let d = done.clone();
    let bar = Progress::start(None, move || {
        (d.load(std::sync::atomic::Ordering::Relaxed), String::new())
    });
    let result = verify_layout(&dir, &done);
    drop(bar);
    match result {
        Ok(r) => {
            let list = |tags: &[String]| {
                if tags.is_empty() {
                    "none".to_owned()
                } else {
                    tags.join(", ")
                }
            };
            println!(
                "{}: ok: {} blobs ({}) hashed; chunkfs images: {} ({} chunks decompressed and hashed); container images: {}{}",
                dir.display(),
                r.blobs,
                HumanBytes(r.blob_bytes),
                list(&r.chunkfs_tags),
                r.chunks,
                list(&r.container_tags),
                if r.other_platform_tags.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; blobs only (no image for this platform): {}",
                        list(&r.other_platform_tags)
                    )
                }
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
