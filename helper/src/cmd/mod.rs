//! One module per subcommand: its clap arguments and its `run`.

pub mod initramfs;
pub mod inspect;
pub mod pack;
pub mod unpack;
pub mod verify;
