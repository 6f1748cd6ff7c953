//! `chunkfs`: pack, unpack, inspect, verify, mount and collect chunkfs images.
//!
//! One binary, several names: invoked as `mount.chunkfs` (a symlink installed in /sbin) it is
//! the mount(8) helper, `mount.chunkfs SOURCE TARGET [-sfnv] [-o options]`; invoked as `init`
//! (`/init` in an initramfs built by `chunkfs initramfs`) it is PID 1 and boots a chunkfs root.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "chunkfs",
    version,
    about = "Content-defined, chunked, read-only images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an initramfs that boots a chunkfs image as the root filesystem.
    Initramfs(chunkfs_helper::cmd::initramfs::Args),
}

fn main() -> anyhow::Result<()> {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|name| name == "init")
    {
        chunkfs_helper::init::main();
    }
    match Cli::parse().command {
        Command::Initramfs(args) => {
            chunkfs_helper::cmd::initramfs::run(&args)?;
        }
    }
    Ok(())
}
