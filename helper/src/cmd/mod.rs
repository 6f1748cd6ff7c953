//! One module per subcommand: its clap arguments and its `run`.

pub mod descriptor;
pub mod gc;
pub mod initramfs;
pub mod inspect;
pub mod mount;
pub mod oci_pack;
pub mod pack;
pub mod rm;
pub mod umount;
pub mod unpack;
pub mod verify;
