//! One module per subcommand: its clap arguments and its `run`; [`image_ref`] tells them what
//! an image argument names.

pub mod descriptor;
pub mod gc;
pub mod image_ref;
pub mod initramfs;
pub mod inspect;
pub mod mount;
pub mod pack;
pub mod refill;
pub mod rm;
pub mod status;
pub mod umount;
pub mod unpack;
pub mod verify;
