//! `chunkfs pack SRC DEST`: a directory -> a `.cfs` image.

use std::path::PathBuf;

use chunkfs_distribution::oci::convert::{self, Dest, Outcome, Source};
use chunkfs_format::build::{BuildOptions, SMALL_FILE_MAX_DEFAULT};
use chunkfs_format::cfs::write::{PackOptions, pack_dir};
use chunkfs_format::chunk::ChunkParams;
use chunkfs_format::compress::{DEFAULT_LEVEL, LEVEL_MAX, LEVEL_MIN};
use chunkfs_format::prefetch::{self, Applied};
use indicatif::HumanBytes;

use super::image_ref::{ImageRef, Role};
use super::pack_remote::{self, RemoteSource};
use super::registry_flags::{RegistryFlags, StoreFlag, parse_platform};
use crate::Error;
use crate::progress::Progress;

/// Arguments of `chunkfs pack`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs pack ./rootfs image.cfs\n",
    "  chunkfs pack --compression-level 19 --align 512 ./rootfs image-6.12.cfs\n",
    "  chunkfs pack --best ./rootfs image.cfs   (5-7 % smaller, 0.9-1.7x mksquashfs's pack time)\n",
    "  chunkfs pack ./rootfs layout:v1          (into an OCI layout; tags share chunks)\n",
    "  chunkfs pack layout:v1 image.cfs         (a chunkfs or an ordinary container image)\n",
    "  chunkfs pack docker://registry.example/os/debian:12 image.cfs\n",
    "  chunkfs pack --prefetch trace.txt ./rootfs image.cfs   (trace.txt: from mount -o record=)\n\n",
    "SRC and DEST: LAYOUT:TAG or oci:LAYOUT[:TAG] is an OCI image layout; an existing path is that\n",
    "path (a directory holding oci-layout is a layout); see docs/format.md §7.7. SRC may be a\n",
    "registry image, docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]: a chunkfs image is fetched\n",
    "through the local store (--store; only the frames it lacks) and copied with its metadata\n",
    "digest; an ordinary image's layers are streamed into a temporary layout next to DEST,\n",
    "checked against their digests, and converted.\n\n",
    "The image is written to a temporary file next to DEST and renamed when complete.\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The directory to pack (or a .cfs, LAYOUT[:TAG] or docker://... to convert).
    pub src: PathBuf,
    /// The image file to write (or LAYOUT:TAG).
    pub dest: PathBuf,
    /// For a multi-platform container image: the platform to convert, OS/ARCH[/VARIANT]
    /// (default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// zstd level of the chunk frames (-7..=22).
    #[arg(short = 'l', long, default_value_t = DEFAULT_LEVEL, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(i64::from(LEVEL_MIN)..=i64::from(LEVEL_MAX)))]
    pub compression_level: i32,
    /// The smallest image for the time: zstd level 16, chunks of 384 KiB to 1016 KiB (768 KiB
    /// average) and files below 256 KiB in the packed stream; shares no chunks with images
    /// packed at the defaults, and a random read decompresses up to 1 MiB (docs/performance.md).
    #[arg(long, conflicts_with_all = ["compression_level", "chunk_sizes", "small_file_max"])]
    pub best: bool,
    /// Worker threads for hashing and compression (0: one per CPU).
    #[arg(short, long, default_value_t = 0)]
    pub jobs: usize,
    /// End every chunk frame on a 512-byte boundary and use 512-byte EROFS blocks (the cluster
    /// layout Linux 6.12+ reads; without it the image needs Linux 6.15+). Only 512 is accepted.
    #[arg(long, value_name = "512", value_parser = clap::value_parser!(u32).range(512..=512))]
    pub align: Option<u32>,
    /// FastCDC minimum, average and maximum chunk sizes in bytes (advanced; changing them
    /// defeats deduplication against images packed with other sizes).
    #[arg(long, value_name = "MIN,AVG,MAX", value_parser = parse_chunk_sizes)]
    pub chunk_sizes: Option<ChunkParams>,
    /// Files smaller than this many bytes are stored together in the packed stream (advanced).
    #[arg(long, value_name = "BYTES", default_value_t = SMALL_FILE_MAX_DEFAULT)]
    pub small_file_max: u64,
    /// Give the image this prefetch list: chunk digests (sha256:HEX, one a line, # comments) in
    /// the order a workload first read them, as `chunkfs mount -o record=FILE` writes them. The
    /// image's chunks it names become its prefetch list (replacing any SRC had; an empty file
    /// removes it); digests of other chunks are skipped and counted (docs/format.md §3.6).
    #[arg(long, value_name = "FILE")]
    pub prefetch: Option<PathBuf>,
    /// The local store (`--store`).
    #[command(flatten)]
    pub store: StoreFlag,
    /// How to reach the registry.
    #[command(flatten, next_help_heading = "Registry")]
    pub registry: RegistryFlags,
}

fn parse_chunk_sizes(s: &str) -> Result<ChunkParams, String> {
    let v: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let [min, avg, max] = v[..] else {
        return Err("expected MIN,AVG,MAX".into());
    };
    let params = ChunkParams { min, avg, max };
    params.validate()?;
    Ok(params)
}

/// Runs `chunkfs pack`: a directory into a `.cfs`, or any conversion with an OCI layout on
/// either side (docs/format.md §7).
pub fn run(args: &Args) -> Result<(), Error> {
    let src = ImageRef::resolve(&args.src, Role::Source)?;
    let dest = ImageRef::resolve(&args.dest, Role::Destination)?;
    if args.store.given() && !src.is_registry() {
        return Err(Error::usage("--store applies to a docker:// source"));
    }
    if src.is_layout() || dest.is_layout() || src.is_registry() || dest.is_registry() {
        return convert_with_layout(args, &src, &dest);
    }
    let options = pack_options(args)?;
    let mut bar = None;
    let summary = pack_dir(&args.src, &args.dest, &options, |p| {
        bar = Progress::for_build(p)
    })?;
    drop(bar);
    println!(
        "{}: {} inodes, {} chunks, {} ({} of chunk frames), metadata {}",
        args.dest.display(),
        summary.inodes,
        summary.chunks,
        HumanBytes(summary.image_len),
        HumanBytes(summary.stored_bytes),
        summary.metadata_digest
    );
    report_prefetch(summary.prefetch.as_ref());
    Ok(())
}

/// What `--best` stands for.
pub const BEST: BuildOptions = BuildOptions {
    chunking: ChunkParams {
        min: 384 * 1024,
        avg: 768 * 1024,
        max: 1016 * 1024,
    },
    level: 16,
    jobs: 0,
    small_file_max: 256 * 1024,
};

/// The build options `args` ask for.
fn build_options(args: &Args) -> BuildOptions {
    if args.best {
        BuildOptions {
            jobs: args.jobs,
            ..BEST
        }
    } else {
        BuildOptions {
            chunking: args.chunk_sizes.unwrap_or_default(),
            level: args.compression_level,
            jobs: args.jobs,
            small_file_max: args.small_file_max,
        }
    }
}

fn pack_options(args: &Args) -> Result<PackOptions, Error> {
    Ok(PackOptions {
        build: build_options(args),
        align512: args.align.is_some(),
        prefetch: args.prefetch.as_deref().map(prefetch::read).transpose()?,
    })
}

/// What `--prefetch` made of its file.
fn report_prefetch(applied: Option<&Applied>) {
    if let Some(a) = applied {
        println!(
            "prefetch list: {} chunks; skipped {} digests not in the image and {} repeated (of {} listed)",
            a.kept, a.missing, a.repeated, a.listed
        );
    }
}

/// `chunkfs pack` with a layout (or a registry) on either side: any conversion `oci::convert`
/// does, and a registry image into a `.cfs` or a layout.
fn convert_with_layout(args: &Args, src_ref: &ImageRef, dest_ref: &ImageRef) -> Result<(), Error> {
    let platform = parse_platform(args.platform.as_deref())?;
    let src = match src_ref {
        ImageRef::Dir(d) => Source::Dir(d),
        ImageRef::Cfs(f) => Source::Cfs(f),
        ImageRef::Layout { dir, tag } => Source::Layout {
            dir,
            tag: tag.as_deref(),
            platform: platform.as_ref(),
        },
        ImageRef::Docker(r) => return pack_registry_image(args, r, dest_ref),
    };
    if platform.is_some() && !src_ref.is_layout() {
        return Err(Error::usage(
            "--platform applies only to a container image in an OCI layout",
        ));
    }
    let dest = destination(dest_ref)?;
    let mut bar = None;
    let outcome = convert::convert(src, dest, &pack_options(args)?, |p| {
        bar = Progress::for_build(p)
    })?;
    drop(bar);
    report(dest_ref, &outcome);
    report_prefetch(outcome.prefetch.as_ref());
    Ok(())
}

/// `chunkfs pack docker://... DEST` (cmd/pack_remote.rs).
fn pack_registry_image(
    args: &Args,
    reference: &chunkfs_distribution::registry::ImageRef,
    dest_ref: &ImageRef,
) -> Result<(), Error> {
    let platform = parse_platform(args.platform.as_deref())?;
    let src = RemoteSource {
        reference,
        platform: platform.as_ref(),
        store: &args.store,
        registry: &args.registry,
    };
    let outcome = pack_remote::pack(&src, destination(dest_ref)?, &pack_options(args)?)?;
    report(dest_ref, &outcome);
    report_prefetch(outcome.prefetch.as_ref());
    Ok(())
}

/// What DEST names for a conversion: a `.cfs` or a tag in a layout.
fn destination(dest_ref: &ImageRef) -> Result<Dest<'_>, Error> {
    Ok(match dest_ref {
        ImageRef::Layout {
            dir,
            tag: Some(tag),
        } => Dest::Layout { dir, tag },
        ImageRef::Layout { dir, tag: None } => {
            return Err(Error::usage(format!(
                "{}: a layout destination needs a tag: {}:TAG",
                dir.display(),
                dir.display()
            )));
        }
        ImageRef::Cfs(f) => Dest::Cfs(f),
        ImageRef::Dir(d) => {
            return Err(Error::usage(format!(
                "{}: is a directory; the destination is a .cfs file or LAYOUT:TAG",
                d.display()
            )));
        }
        r @ ImageRef::Docker(_) => {
            return Err(r.refuse(
                "a .cfs file or LAYOUT:TAG (push a layout to a registry with `skopeo copy`)",
            ));
        }
    })
}

fn report(dest: &ImageRef, o: &Outcome) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from([&["pack"], argv, &["src", "dest"]].concat()).map(|c| c.args)
    }

    #[test]
    fn best_stands_for_its_options_and_excludes_them() {
        let best = build_options(&parse(&["--best", "-j", "3"]).unwrap());
        assert_eq!(
            (best.level, best.chunking, best.small_file_max, best.jobs),
            (16, BEST.chunking, 262_144, 3)
        );
        best.chunking.validate().unwrap();
        let plain = build_options(&parse(&[]).unwrap());
        assert_eq!(
            (plain.level, plain.chunking, plain.small_file_max),
            (DEFAULT_LEVEL, ChunkParams::DEFAULT, SMALL_FILE_MAX_DEFAULT)
        );
        for other in [
            &["-l", "3"][..],
            &["--chunk-sizes", "4096,16384,65536"],
            &["--small-file-max", "1000"],
        ] {
            let argv = [&["--best"], other].concat();
            assert!(parse(&argv).is_err(), "{argv:?}");
        }
    }
}
