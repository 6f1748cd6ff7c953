//! `chunkfs descriptor IMAGE OUT`: a standalone EROFS descriptor for an image, whose one extra
//! device is the image itself (docs/descriptor.md §5.1).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::translate::{self, ChunkLocation, Descriptor, ExtentLayout, ExtraDevice};

use crate::Error;

/// Which extent encoding to write.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extents {
    /// Byte-addressed 48-bit extents (Linux 6.15+), 4 KiB blocks.
    #[value(name = "48bit")]
    Bit48,
    /// Block-aligned clusters (Linux 6.12+), 512-byte blocks; needs an `--align 512` image.
    Clusters,
}

/// Arguments of `chunkfs descriptor`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs descriptor image.cfs image.erofs\n",
    "  chunkfs descriptor --dump image.cfs\n\n",
    "Writes EROFS metadata whose file extents point into IMAGE, which becomes the mount's extra\n",
    "device, and prints the `device=` option to mount it with. OUT must be on a disk file system\n",
    "or ramfs (the kernel refuses file-backed mounts of files on tmpfs).\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The image (.cfs).
    pub image: PathBuf,
    /// Where to write the descriptor; omit with --dump to only print it.
    pub out: Option<PathBuf>,
    /// Extent encoding [default: clusters for an --align 512 image, else 48bit].
    #[arg(long, value_enum)]
    pub extents: Option<Extents>,
    /// Print the descriptor readably.
    #[arg(long)]
    pub dump: bool,
}

/// Runs `chunkfs descriptor`.
pub fn run(args: &Args) -> Result<(), Error> {
    if args.out.is_none() && !args.dump {
        return Err(Error::usage(
            "chunkfs descriptor: give OUT, or --dump to print the descriptor",
        ));
    }
    let cfs = Cfs::open(&args.image)?;
    let d = build(&cfs, args.extents)?;
    if let Some(out) = &args.out {
        let len = write_atomically(out, &d)?;
        let device = std::fs::canonicalize(&args.image)
            .map_err(|e| Error::io(format!("{}: {e}", args.image.display())))?;
        println!(
            "{}: EROFS descriptor, {len} bytes, {}",
            out.display(),
            describe(&d)
        );
        println!("mount options: {}", translate::device_options(&[device]));
        if on_tmpfs(out) {
            eprintln!(
                "chunkfs: note: {} is on tmpfs; the kernel refuses file-backed mounts of it",
                out.display()
            );
        }
    }
    if args.dump {
        print!("{}", d.dump(cfs.image()));
    }
    Ok(())
}

/// Translates the image with its frames on device 1 (the image file itself).
fn build(cfs: &Cfs, extents: Option<Extents>) -> Result<Descriptor, Error> {
    let name = cfs.path().display();
    let h = cfs.header();
    let aligned = h.erofs_block_size == 512;
    let extents = extents.unwrap_or(if aligned {
        Extents::Clusters
    } else {
        Extents::Bit48
    });
    if extents == Extents::Clusters && !aligned {
        return Err(Error::usage(format!(
            "{name}: the cluster layout needs an image packed with --align 512"
        )));
    }
    let (bits, layout) = match extents {
        Extents::Bit48 => (12, ExtentLayout::Bit48),
        Extents::Clusters => (9, ExtentLayout::Clusters),
    };
    let locations: Vec<ChunkLocation> = cfs
        .locations()
        .into_iter()
        .map(|l| ChunkLocation { device: 1, ..l })
        .collect();
    // The tag names the image by its metadata digest: 64 hex characters fill the slot.
    let device = ExtraDevice {
        tag: h.metadata_digest.to_hex().into_bytes(),
        len: cfs.bytes().len() as u64,
    };
    let layout = translate::standalone_layout(bits, layout, vec![device]);
    translate::translate(cfs.image(), &locations, &layout)
        .map_err(|e| Error::failed(format!("{name}: {e}")))
}

fn describe(d: &Descriptor) -> &'static str {
    match d.extent_layout() {
        ExtentLayout::Bit48 => "48-bit extents, for Linux 6.15+",
        ExtentLayout::Clusters => "cluster layout, for Linux 6.12+",
    }
}

/// Writes next to `out` and renames, so a reader never sees half a descriptor.
fn write_atomically(out: &Path, d: &Descriptor) -> Result<u64, Error> {
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name()
            .map_or("descriptor".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let io =
        |what: &str, e: std::io::Error| Error::io(format!("{}: cannot {what}: {e}", out.display()));
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
        let mut w = std::io::BufWriter::new(f);
        let len = d
            .write_standalone(&mut w)
            .map_err(|e| Error::io(format!("{}: {e}", out.display())))?;
        w.flush().map_err(|e| io("write", e))?;
        let f = w.into_inner().map_err(|e| io("write", e.into_error()))?;
        f.sync_all().map_err(|e| io("sync", e))?;
        std::fs::rename(&tmp, out).map_err(|e| io("rename into place", e))?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn on_tmpfs(path: &Path) -> bool {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}
