//! One module per subcommand of the `chunkfs` binary.

pub mod initramfs;
