//! `chunkfs`: pack, unpack, inspect, verify, mount and collect chunkfs images.
//!
//! One binary, several names: invoked as `mount.chunkfs` (a symlink installed in /sbin) it is
//! the mount(8) helper, `mount.chunkfs SOURCE TARGET [-sfnv] [-o options]`; invoked as `init`
//! (`/init` in an initramfs built by `chunkfs initramfs`) it is PID 1 and boots a chunkfs root.

use std::process::ExitCode;

use chunkfs_helper::cmd;
use clap::{Parser, Subcommand};

/// chunkfs: content-addressed, deduplicated, kernel-mountable read-only images.
#[derive(Parser, Debug)]
#[command(name = "chunkfs", version, after_help = concat!(
    "Examples:\n",
    "  chunkfs pack ./rootfs image.cfs\n",
    "  chunkfs inspect image.cfs\n",
    "  chunkfs verify image.cfs\n",
    "  chunkfs unpack image.cfs ./copy\n",
    "  chunkfs pull docker://registry.example:5000/os/debian:12\n\n",
    chunkfs_helper::exit_help!()
))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pack a directory into a .cfs image, or convert an image (layout, registry).
    Pack(cmd::pack::Args),
    /// Restore an image's tree into a directory.
    Unpack(cmd::unpack::Args),
    /// Show what an image holds: files, bytes, chunks, dedup and compression.
    Inspect(cmd::inspect::Args),
    /// Check every digest and structure of an image.
    Verify(cmd::verify::Args),
    /// Write an image's EROFS descriptor as a standalone file, or print it.
    Descriptor(cmd::descriptor::Args),
    /// Fetch a registry image into the local store and pin it (it then mounts offline).
    Pull(cmd::pull::Args),
    /// Remove the blobs of an OCI layout no tag reaches, or what the store's images no longer
    /// need.
    Gc(cmd::gc::Args),
    /// Untag an image in an OCI layout, or unpin a pulled registry image.
    Rm(cmd::rm::Args),
    /// The local store of registry images: its size bound and what it holds.
    Store(cmd::store::Args),
    /// Build an initramfs that boots a chunkfs image as the root filesystem.
    Initramfs(cmd::initramfs::Args),
    /// Mount an image read-only (the kernel's EROFS or the FUSE reader).
    Mount(cmd::mount::Args),
    /// Unmount a chunkfs mount and wait until nothing of it is left.
    Umount(cmd::umount::Args),
    /// List chunkfs mounts; for registry mounts, what they fetched and how full they are.
    Status(cmd::status::Args),
    /// Start a new filler for a lazy kernel mount whose filler died.
    Refill(cmd::refill::Args),
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0).file_name().unwrap_or_default();
    if name == "init" {
        chunkfs_helper::init::main();
    }
    if name == "mount.chunkfs" {
        return ExitCode::from(cmd::mount::helper_main(std::env::args_os().collect()));
    }
    if argv0 == chunkfs_helper::mount::daemon::ARGV0 {
        chunkfs_helper::mount::daemon::main();
    }
    if argv0 == chunkfs_helper::lazy::daemon::ARGV0 {
        chunkfs_helper::lazy::daemon::main();
    }
    chunkfs_helper::raise_fd_limit();
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Pack(_)
            | Command::Pull(_)
            | Command::Unpack(_)
            | Command::Gc(_)
            | Command::Descriptor(_)
            | Command::Initramfs(_)
    ) {
        // Best effort: without it an interrupted command leaves its temporary file.
        let _ = chunkfs_helper::interrupt::remove_partial_output_on_signal();
    }
    let result = match &cli.command {
        Command::Pack(a) => cmd::pack::run(a),
        Command::Unpack(a) => cmd::unpack::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Descriptor(a) => cmd::descriptor::run(a),
        Command::Pull(a) => cmd::pull::run(a),
        Command::Gc(a) => cmd::gc::run(a),
        Command::Rm(a) => cmd::rm::run(a),
        Command::Store(a) => cmd::store::run(a),
        Command::Mount(a) => cmd::mount::run(a),
        Command::Umount(a) => cmd::umount::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Refill(a) => cmd::refill::run(a),
        Command::Initramfs(a) => cmd::initramfs::run(a)
            .map(|_| ())
            .map_err(chunkfs_helper::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chunkfs: {e}");
            ExitCode::from(e.exit_status())
        }
    }
}
