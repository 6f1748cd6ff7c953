//! One module per subcommand: its clap arguments and its `run`; [`image_ref`] tells them what
//! an image argument names, [`registry_flags`] holds the flags of registry images and the
//! store, [`registry_image`] opens a registry image through the store.

pub mod descriptor;
pub mod gc;
pub mod image_ref;
pub mod initramfs;
pub mod inspect;
pub mod mount;
pub mod pack;
pub mod pack_remote;
pub mod pull;
pub mod refill;
pub mod registry_flags;
pub mod registry_image;
pub mod rm;
pub mod status;
pub mod store;
pub mod umount;
pub mod unpack;
pub mod verify;
pub mod verify_remote;
