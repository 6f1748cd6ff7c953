//! Shared code of the `chunkfs` and `mount.chunkfs` binaries: subcommands, progress reporting
//! and mount orchestration. The binaries themselves only parse arguments and report errors.

pub mod cmd;
pub mod error;
pub mod init;
pub mod initramfs;
pub mod interrupt;
pub mod lazy;
pub mod mount;
pub mod progress;

pub use error::Error;

/// Raises the soft limit on open files to the hard limit: walking and restoring deep trees keeps
/// one descriptor open per directory level.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
