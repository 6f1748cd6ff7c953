//! `chunkfs umount TARGET`: unmounts a chunkfs mount and waits until its FUSE daemon has exited
//! and its loop devices are gone.

use std::path::PathBuf;

use crate::Error;
use crate::mount::{self, Log};

/// Arguments of `chunkfs umount`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs umount /mnt\n",
    "  chunkfs umount -l /mnt      (busy: detach now, finish when the last user leaves)\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The mount point.
    pub target: PathBuf,
    /// Detach the mount even if it is busy, without waiting for the daemon.
    #[arg(short, long)]
    pub lazy: bool,
    /// Tell what was unmounted.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Runs `chunkfs umount`.
pub fn run(args: &Args) -> Result<(), Error> {
    mount::unmount(
        &args.target,
        args.lazy,
        &Log::new("chunkfs umount", args.verbose),
    )?;
    Ok(())
}
