//! `chunkfs initramfs`: build an initramfs that boots a chunkfs root filesystem.

use std::fs;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use chunkfs_format::partial::PARTIAL;
use chunkfs_format::{Classify, ErrorClass};

use crate::initramfs::{self, Compression, ModuleSource, Spec, modules::Need};

/// Arguments of `chunkfs initramfs`.
#[derive(Debug, clap::Args)]
#[command(after_help = concat!("\
Example, for the running kernel, the image on the first virtio disk:
  chunkfs initramfs --modules-dir /lib/modules/$(uname -r) /boot/initrd.chunkfs
  # kernel command line: chunkfs.root=/dev/vda chunkfs.digest=sha256:<metadata digest> chunkfs.overlay=tmpfs

Kernel command line understood by the init:
  chunkfs.root=/dev/vda             a .cfs written raw onto a block device
  chunkfs.root=/dev/vdb1:/a/b.cfs   a .cfs file on a partition (mounted read-only first)
  chunkfs.root=embedded             the image embedded with --embed (the default when present)
  chunkfs.digest=sha256:HEX         refuse to boot an image whose digest differs
  chunkfs.verify=auto|metadata|full also check every chunk before mounting (auto: when
                                    the kernel serves the root, which checks nothing itself)
  chunkfs.overlay=tmpfs             a writable tmpfs over the read-only root
  chunkfs.reader=auto|kernel|fuse   who serves the root (auto: the kernel when it can)
  chunkfs.fstype=chunkfs|erofs|squashfs   boot a plain image instead (tests, comparisons)
  chunkfs.init=/sbin/init           what to run in the new root (init= is honoured too)
  chunkfs.timeout=30                seconds to wait for the root device
  chunkfs.onerror=halt|poweroff|reboot|shell   what to do when booting fails
  chunkfs.debug                     verbose; a shell on failure when busybox is included

", crate::exit_help!()))]
pub struct Args {
    /// Where to write the initramfs (replaced atomically).
    pub output: PathBuf,
    /// The kernel's module directory, `/lib/modules/RELEASE` (needs `modules.dep`); without
    /// it no modules are included.
    #[arg(long, value_name = "DIR")]
    pub modules_dir: Option<PathBuf>,
    /// A module to include with its dependencies (repeatable); it must exist or be built in.
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// Do not add the default modules (fuse, erofs, overlay, loop, virtio_pci, virtio_blk, ext4).
    #[arg(long)]
    pub no_default_modules: bool,
    /// The statically linked chunkfs binary to use as /init [default: this program].
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// A static busybox to include for the debug shell.
    #[arg(long, value_name = "PATH")]
    pub busybox: Option<PathBuf>,
    /// An image to embed in the initramfs (booted with `chunkfs.root=embedded`).
    #[arg(long, value_name = "IMAGE")]
    pub embed: Option<PathBuf>,
    /// zstd level for the archive; 0 writes it uncompressed.
    #[arg(long, default_value_t = 19, value_name = "LEVEL")]
    pub zstd_level: i32,
}

/// The errors of [`run`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Building the archive failed.
    #[error(transparent)]
    Build(#[from] initramfs::Error),
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The running program's path is unknown.
    #[error("cannot find this program's binary: {0}")]
    CurrentExe(io::Error),
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Build(e) => e.class(),
            Self::Output { source, .. } | Self::CurrentExe(source) => source.class(),
        }
    }
}

/// Builds the initramfs and prints a one-line summary per part.
pub fn run(args: &Args) -> Result<initramfs::Report, Error> {
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(Error::CurrentExe)?,
    };
    let modules = args.modules_dir.as_ref().map(|dir| {
        let mut wanted: Vec<(String, Need)> = Vec::new();
        if !args.no_default_modules {
            wanted.extend(
                initramfs::DEFAULT_MODULES
                    .iter()
                    .map(|m| (m.to_string(), Need::IfPresent)),
            );
        }
        wanted.extend(args.modules.iter().map(|m| (m.clone(), Need::Required)));
        ModuleSource {
            dir: dir.clone(),
            wanted,
        }
    });
    let spec = Spec {
        binary,
        modules,
        busybox: args.busybox.clone(),
        embed: args.embed.clone(),
        compression: if args.zstd_level == 0 {
            Compression::None
        } else {
            Compression::Zstd(args.zstd_level)
        },
        mtime: source_date_epoch(),
    };
    let report = write_atomically(&args.output, |out| Ok(initramfs::build(&spec, out)?))?;
    if let Some(release) = &report.release {
        println!(
            "modules for {release}: {} included, {} built in, {} not in this kernel",
            report.modules.len(),
            report.builtin.len(),
            report.absent.len()
        );
    }
    println!(
        "{}: {} entries, {} bytes",
        args.output.display(),
        report.entries,
        report.bytes
    );
    Ok(report)
}

/// `SOURCE_DATE_EPOCH` when set (reproducible builds), else 0.
fn source_date_epoch() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Writes through a temporary file in the destination directory, renamed into place only when
/// complete, so a failed build never leaves a truncated initramfs under the final name.
fn write_atomically<T>(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<fs::File>) -> Result<T, Error>,
) -> Result<T, Error> {
    let output_err = |source| Error::Output {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| output_err(io::ErrorKind::InvalidInput.into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let file = fs::File::create(&tmp).map_err(output_err)?;
    PARTIAL.track(&tmp);
    let mut out = BufWriter::new(file);
    let result = body(&mut out).and_then(|value| {
        let file = out.into_inner().map_err(|e| output_err(e.into_error()))?;
        file.sync_all().map_err(output_err)?;
        fs::rename(&tmp, path).map_err(output_err)?;
        Ok(value)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    PARTIAL.untrack(&tmp);
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_binary_is_refused_and_nothing_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("initrd.img");
        let args = Args {
            output: output.clone(),
            modules_dir: None,
            modules: vec![],
            no_default_modules: false,
            binary: Some("/bin/ls".into()),
            busybox: None,
            embed: None,
            zstd_level: 3,
        };
        let err = run(&args).unwrap_err();
        assert!(err.to_string().contains("not a statically linked"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let _ = output;
    }
}
