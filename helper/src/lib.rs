//! Shared code of the `chunkfs` and `mount.chunkfs` binaries: subcommands, progress reporting
//! and mount orchestration. The binaries themselves only parse arguments and report errors.

pub mod cmd;
pub mod init;
pub mod initramfs;
