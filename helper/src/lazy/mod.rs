//! The kernel's lazy path (docs/lazy.md): the kernel's own EROFS mounts a complete, local
//! descriptor whose extra devices are sparse pack files, and a filler makes the bytes of each
//! read present before the kernel reads them, answering fanotify pre-content events
//! (`FAN_PRE_ACCESS`, Linux 6.14+). No daemon is in the data path of present bytes, and once
//! every pack is complete the filler unmarks it and exits.
//!
//! ```no_run
//! use std::sync::Arc;
//! use chunkfs_helper::lazy::{Config, CopyPair, FileCopySource, Filler, PackFile};
//! let sparse = std::fs::File::options().read(true).write(true).open("/var/tmp/pack")?;
//! let copy = std::fs::File::open("/images/pack")?;
//! let source = FileCopySource::new(vec![CopyPair {
//!     name: "/var/tmp/pack".into(),
//!     sparse: &sparse,
//!     copy,
//!     frames: Some(chunkfs_helper::lazy::copy::cfs_frames("/images/pack".as_ref())?),
//! }])?;
//! let pack = PackFile { name: "/var/tmp/pack".into(), file: sparse.try_clone()? };
//! let filler = Filler::new(vec![pack], Arc::new(source), Config::default())?;
//! // ... mount the EROFS descriptor with device=/var/tmp/pack now ...
//! let stats = filler.run()?; // returns once the pack is complete
//! println!("{} events", stats.events);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! One job per module: [`fanotify`] (the raw kernel interface and the capability probe),
//! [`filler`] (the event loop, the [`FillSource`] trait), [`copy`] (a source filling from a
//! complete copy), [`daemon`] (the filler as a daemon, `@chunkfs-filler`), [`reads`] (which
//! frames a kernel read needs).

pub mod ahead;
pub mod copy;
pub mod daemon;
pub mod device;
pub mod fanotify;
pub mod filler;
pub mod reads;
pub mod record;
pub mod replay;
pub mod status;
pub mod store_source;
pub mod watch;
pub mod work;

pub use copy::{CopyPair, FileCopySource};
pub use device::StoreDevice;
pub use fanotify::{Why, supported};
pub use filler::{Config, FillError, FillSource, Filler, PackFile, Stats, StopHandle};
pub use store_source::StoreSource;
