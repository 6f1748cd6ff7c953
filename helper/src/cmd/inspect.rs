//! `chunkfs inspect IMAGE`: what an image holds.

use std::path::PathBuf;

use chunkfs_format::ErrorClass;
use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::inspect::{Stats, stats};
use indicatif::HumanBytes;

use crate::Error;

/// Arguments of `chunkfs inspect`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs inspect image.cfs\n",
    "  chunkfs inspect --json image.cfs | jq .dedup_savings_bytes\n\n",
    "Checks the header, metadata and chunk index (not the chunk frames: see `chunkfs verify`).\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The image.
    pub image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `chunkfs inspect`.
pub fn run(args: &Args) -> Result<(), Error> {
    let cfs = Cfs::open(&args.image)?;
    let frame_lens: Vec<u32> = cfs.locations().iter().map(|l| l.stored_len).collect();
    let s = stats(
        cfs.image(),
        &cfs.header().metadata_digest,
        Some(&frame_lens),
        Some(cfs.header().image_len),
    );
    if args.json {
        let text = serde_json::to_string_pretty(&s)
            .map_err(|e| Error::new(ErrorClass::Corrupt, format!("cannot encode JSON: {e}")))?;
        println!("{text}");
    } else {
        print!(
            "{}",
            render(
                &args.image.display().to_string(),
                &s,
                cfs.header().has_erofs()
            )
        );
    }
    Ok(())
}

fn render(name: &str, s: &Stats, erofs: bool) -> String {
    use std::fmt::Write;
    let b = HumanBytes;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "image:            {name} ({})",
        b(s.image_bytes.unwrap_or(0))
    );
    let _ = writeln!(o, "metadata digest:  {}", s.metadata_digest);
    let _ = writeln!(
        o,
        "EROFS descriptor: {}",
        if erofs { "present" } else { "absent" }
    );
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
