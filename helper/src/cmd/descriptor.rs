//! `chunkfs descriptor IMAGE OUT`: a standalone EROFS descriptor for an image, whose extra
//! devices hold its chunk frames: the `.cfs` itself, or an OCI image's pack blobs in layer order
//! (docs/descriptor.md §5.1).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chunkfs_distribution::oci::read::open_image;
use chunkfs_format::ErrorClass;
use chunkfs_format::cfs::read::Cfs;
use chunkfs_format::partial::PARTIAL;
use chunkfs_format::translate::{self, BuiltDescriptor, ExtentLayout};
use chunkfs_kernel_abi::Descriptor as AbiDescriptor;
use chunkfs_kernel_abi::parse::{InodeView, Kind, MapKind};

use super::image_ref::{ImageRef, Role};
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

impl From<Extents> for ExtentLayout {
    fn from(e: Extents) -> Self {
        match e {
            Extents::Bit48 => Self::Bit48,
            Extents::Clusters => Self::Clusters,
        }
    }
}

/// Arguments of `chunkfs descriptor`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs descriptor image.cfs image.erofs\n",
    "  chunkfs descriptor oci:./layout:v1 v1.erofs\n",
    "  chunkfs descriptor --dump image.cfs\n\n",
    "Writes EROFS metadata whose file extents point into IMAGE (a .cfs, or an OCI image's pack\n",
    "blobs), which become the mount's extra devices, and prints the `device=` options to mount\n",
    "it with. OUT must be on a disk file system or ramfs (the kernel refuses file-backed mounts\n",
    "of files on tmpfs). With several pack blobs, see docs/descriptor.md §5 before mounting\n",
    "them file-backed.\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The image: a .cfs file, or oci:DIR[:TAG].
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
    let extents = args.extents.map(ExtentLayout::from);
    let (d, devices) = match ImageRef::resolve(&args.image, Role::Source)? {
        ImageRef::Cfs(path) => {
            let cfs = Cfs::open(&path)?;
            let d = cfs
                .standalone_descriptor(extents)
                .map_err(|e| Error::from(e).about(path.display()))?;
            (d, vec![path])
        }
        ImageRef::Layout { dir, tag } => {
            let oci = open_image(&dir, tag.as_deref())?;
            let d = oci
                .standalone_descriptor(extents)
                .map_err(|e| Error::from(e).about(args.image.display()))?;
            (d, oci.packs.iter().map(|p| p.path.clone()).collect())
        }
        ImageRef::Dir(dir) => {
            return Err(Error::usage(format!(
                "{}: a directory, not an image: `chunkfs pack` it first",
                dir.display()
            )));
        }
        // A descriptor's extra devices are local files: a registry image's are the store's
        // packs, which `chunkfs mount docker://...` builds for itself.
        r @ ImageRef::Docker(_) => {
            return Err(r.refuse(
                "a .cfs or LAYOUT[:TAG] (mount a registry image with `chunkfs mount docker://...`)",
            ));
        }
    };
    if let Some(out) = &args.out {
        let len = write_atomically(out, &d)?;
        let mut paths = Vec::with_capacity(devices.len());
        for p in &devices {
            paths.push(
                std::fs::canonicalize(p).map_err(|e| Error::io(format!("{}: {e}", p.display())))?,
            );
        }
        println!(
            "{}: EROFS descriptor, {len} bytes, {}",
            out.display(),
            describe(&d)
        );
        println!("mount options: {}", translate::device_options(&paths));
        if on_tmpfs(out) {
            eprintln!(
                "chunkfs: note: {} is on tmpfs; the kernel refuses file-backed mounts of it",
                out.display()
            );
        }
    }
    if args.dump {
        // The dump reads the descriptor back through the same validating parser the FUSE
        // reader uses, so it shows what readers see, not what the writer meant.
        let mut bytes = Vec::new();
        d.write_standalone(&mut bytes)
            .map_err(|e| Error::from(e).about(args.image.display()))?;
        let text = dump(&bytes).map_err(|e| {
            Error::new(
                ErrorClass::Corrupt,
                format!(
                    "{}: the descriptor does not parse back: {e}",
                    args.image.display()
                ),
            )
        })?;
        print!("{text}");
    }
    Ok(())
}

/// A readable listing of a descriptor (a whole primary device), read back with
/// `chunkfs_kernel_abi::Descriptor::parse_in`: the superblock, then one line per path with what
/// `stat` shows, xattrs, and each file's map.
pub fn dump(bytes: &[u8]) -> Result<String, chunkfs_kernel_abi::ParseError> {
    use std::fmt::Write as _;
    let mut scratch = vec![0u8; AbiDescriptor::<&[u8]>::scratch_len(bytes)?];
    let d = AbiDescriptor::parse_in(bytes, &mut scratch)?;
    let mut s = String::new();
    let incompat = d.feature_incompat();
    let _ = writeln!(
        s,
        "block size {}, {} blocks, {} inodes, root nid {}",
        d.block_size(),
        d.primary_blocks(),
        d.inos(),
        d.root_nid()
    );
    let _ = writeln!(
        s,
        "incompat {incompat:#x}: {}",
        feature_names(incompat).join(" ")
    );
    if let Some(p) = d.packed() {
        let _ = writeln!(s, "packed inode: nid {}, {} bytes", p.nid(), p.size());
    }
    for k in 1..=d.extra_devices() {
        if let Some(dev) = d.device(k) {
            let tag =
                String::from_utf8_lossy(dev.tag.split(|&b| b == 0).next().unwrap_or_default());
            let _ = writeln!(
                s,
                "device {k}: {} blocks at unified block {}, tag {tag}",
                dev.blocks, dev.uniaddr
            );
        }
    }
    let mut stack = vec![(String::from("/"), d.root())];
    while let Some((path, i)) = stack.pop() {
        line(&mut s, &path, i);
        let Some(entries) = i.entries() else { continue };
        let mut children = Vec::new();
        for e in entries.flatten() {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let name = String::from_utf8_lossy(e.name).escape_debug().to_string();
            let child_path = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            if let Some(child) = d.inode(e.nid) {
                children.push((child_path, child));
            }
        }
        stack.extend(children.into_iter().rev());
    }
    Ok(s)
}

fn line(s: &mut String, path: &str, i: InodeView<'_>) {
    use std::fmt::Write as _;
    let _ = write!(
        s,
        "{path} nid={} mode={:o} nlink={} uid={} gid={} size={} mtime={}.{:09}",
        i.nid(),
        i.mode(),
        i.nlink(),
        i.uid(),
        i.gid(),
        i.size(),
        i.mtime(),
        i.mtime_nsec()
    );
    if matches!(i.kind(), Kind::CharDevice | Kind::BlockDevice) {
        let _ = write!(s, " rdev={:#x}", i.rdev());
    }
    if let Some([a, b]) = i.symlink_target() {
        let _ = write!(
            s,
            " -> {}{}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
    for x in i.xattrs().flatten() {
        let _ = write!(
            s,
            " xattr {}{} ({} bytes)",
            String::from_utf8_lossy(x.prefix),
            String::from_utf8_lossy(x.suffix),
            x.value.len()
        );
    }
    let _ = writeln!(s);
    if i.kind() != Kind::File {
        return;
    }
    let mut pos = 0;
    while let Some(m) = i.map(pos) {
        let what = match m.kind {
            MapKind::Hole => "hole".to_string(),
            MapKind::Raw { device, offset } => format!("raw dev{device}@{offset}"),
            MapKind::Interlaced { device, offset } => format!("interlaced dev{device}@{offset}"),
            MapKind::Encoded {
                device,
                offset,
                len,
                partial,
                ..
            } => format!(
                "zstd dev{device}@{offset}+{len}{}",
                if partial { " partial" } else { "" }
            ),
            MapKind::Fragment { packed_offset } => format!("fragment @{packed_offset}"),
        };
        let _ = writeln!(
            s,
            "    [{}, {}) {what}",
            m.logical_start,
            m.logical_start + m.logical_len
        );
        pos = m.logical_start + m.logical_len;
    }
}

fn feature_names(bits: u32) -> Vec<&'static str> {
    use chunkfs_kernel_abi::erofs as e;
    [
        (e::FEATURE_INCOMPAT_ZERO_PADDING, "zero_padding"),
        (e::FEATURE_INCOMPAT_COMPR_CFGS, "compr_cfgs/big_pcluster"),
        (e::FEATURE_INCOMPAT_CHUNKED_FILE, "chunked_file"),
        (e::FEATURE_INCOMPAT_DEVICE_TABLE, "device_table"),
        (e::FEATURE_INCOMPAT_ZTAILPACKING, "ztailpacking"),
        (e::FEATURE_INCOMPAT_FRAGMENTS, "fragments/dedupe"),
        (e::FEATURE_INCOMPAT_XATTR_PREFIXES, "xattr_prefixes"),
        (e::FEATURE_INCOMPAT_48BIT, "48bit"),
        (e::FEATURE_INCOMPAT_METABOX, "metabox"),
    ]
    .into_iter()
    .filter(|&(b, _)| bits & b != 0)
    .map(|(_, n)| n)
    .collect()
}

fn describe(d: &BuiltDescriptor) -> &'static str {
    match d.extent_layout() {
        ExtentLayout::Bit48 => "48-bit extents, for Linux 6.15+",
        ExtentLayout::Clusters => "cluster layout, for Linux 6.12+",
    }
}

/// Writes next to `out` and renames, so a reader never sees half a descriptor.
fn write_atomically(out: &Path, d: &BuiltDescriptor) -> Result<u64, Error> {
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
        PARTIAL.track(&tmp);
        let mut w = std::io::BufWriter::new(f);
        let len = d
            .write_standalone(&mut w)
            .map_err(|e| Error::from(e).about(out.display()))?;
        w.flush().map_err(|e| io("write", e))?;
        let f = w.into_inner().map_err(|e| io("write", e.into_error()))?;
        f.sync_all().map_err(|e| io("sync", e))?;
        std::fs::rename(&tmp, out).map_err(|e| io("rename into place", e))?;
        Ok(len)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    PARTIAL.untrack(&tmp);
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
