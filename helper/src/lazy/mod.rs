//! The kernel's lazy path (docs/lazy.md): the kernel's own EROFS mounts a complete, local
//! descriptor whose extra devices are sparse pack files, and a filler makes the bytes of each
//! read present before the kernel reads them, answering fanotify pre-content events
//! (`FAN_PRE_ACCESS`, Linux 6.14+).

pub mod copy;
pub mod fanotify;
pub mod filler;

pub use copy::{CopyPair, FileCopySource};
pub use fanotify::{Why, supported};
pub use filler::{Config, FillError, FillSource, Filler, PackFile, Stats, StopHandle};
