//! The local store shared by every image on the machine (docs/store.md): pack blobs kept as
//! sparse files filled frame by frame as they are fetched, each frame checked before it is
//! written; the small blobs (manifests, configs, metadata) by digest; the records that keep
//! images alive (pins, live mounts); `gc`, a size bound and `verify`.
//!
//! Three callers use it:
//!
//! 1. **A mount or a pull plans an image** ([`Store::plan`], docs/store.md §5): the store adds
//!    the image's packs (fetching each pack's index by range), chooses where each chunk is read
//!    from (a present frame of its own pack, a present frame of any other pack, or its own pack
//!    to be filled) and returns the descriptor's extra devices and chunk locations, ready for
//!    `chunkfs_format::translate`. [`Store::pull`] then fetches every frame still missing and
//!    pins the image.
//!
//!    ```no_run
//!    use chunkfs_distribution::store::{ImageSpec, Store};
//!    use chunkfs_distribution::source::LayoutSource;
//!    use chunkfs_format::model::ChunkInfo;
//!    use chunkfs_format::translate::ExtentLayout;
//!    # let manifest = chunkfs_format::digest::Digest([0; 32]);
//!    # let (packs, chunks): (Vec<_>, Vec<ChunkInfo>) = (vec![], vec![]);
//!    let store = Store::open("/var/lib/chunkfs".as_ref())?;
//!    let source = LayoutSource::new("/srv/images".as_ref()); // or a registry client
//!    let setup = store.setup()?; // no gc between storing the blobs and the plan's record
//!    // store.put_blob(&manifest, &manifest_bytes)?; config, metadata likewise
//!    let spec = ImageSpec {
//!        reference: "oci:/srv/images:v1",
//!        manifest,                // the manifest's digest
//!        blobs: &[manifest],      // manifest, config, metadata: kept with the image
//!        packs: &packs,           // (digest, length) of each pack layer, in layer order
//!        chunks: &chunks,         // the metadata's chunk list (digest, size), in chunk order
//!        extents: ExtentLayout::Bit48,
//!    };
//!    let plan = store.plan(&spec, &source)?;
//!    drop(setup);
//!    let devices = plan.extra_devices();     // pack files, in order of first use
//!    let locations = &plan.locations;        // chunk -> (device, base + offset, stored_len)
//!    println!("{} bytes to fetch", plan.missing_bytes);
//!    store.pull(&plan, &source, &mut |done, total| eprint!("\r{done}/{total}"))?;
//!    # Ok::<(), Box<dyn std::error::Error>>(())
//!    ```
//!
//! 2. **The FUSE reader's lazy device** reads a pack file at file offsets: [`Pack::ensure`]
//!    the range, then [`Pack::read_at`]. Errors carry [`Error::class`]: `Network` when the
//!    source failed (the reader answers EIO; the next read asks again).
//!
//! 3. **The fanotify filler** of a lazy kernel mount makes the range of an event present,
//!    writing only through the event's descriptor ([`Pack::ensure_with`]); answers at once an
//!    event raised by a process that holds the frames' locks ([`Pack::lock_holders`],
//!    docs/store.md §6); drops the cached pages of what is still absent when it starts
//!    ([`Pack::absent_ranges`]) and unmarks a pack once nothing is.
//!
//! What is trusted: nothing a source sends. A pack's index, fetched by range, cannot be checked
//! against the pack's digest (that needs the whole blob); it is checked for structure
//! (docs/format.md §7.3) and used as a hint of where frames are. Every frame is checked
//! against the digest and length its index entry gives before it is written, and a plan uses
//! an entry only for a chunk whose digest and length the image's metadata gives: so every
//! byte served for a chunk is the chunk the metadata names. A lying index or source can only
//! make reads fail (`Corrupt`).

mod add;
mod blobs;
mod check;
mod error;
mod files;
mod gc;
mod lock;
mod pack;
mod plan;
mod proc;
mod records;
pub mod state;
mod stats;
mod syncer;
mod verify;
pub mod window;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chunkfs_format::digest::Digest;

pub use error::Error;
pub use gc::{GcReport, SetupGuard};
pub use pack::{FillState, MAX_REQUEST, Pack};
pub use plan::{ChunkSource, ImageSpec, Plan, PlanStats, PullReport};
pub use records::{ImageRecord, Lease, MountInfo};
pub use stats::{CounterSnapshot, Counters, StoreStats};
pub use verify::{Problem, VerifyReport};

use files::create_dir;
use lock::FileLock;

/// Where the store is unless the user says otherwise (`--store DIR`, `-o store=DIR`).
pub const DEFAULT_DIR: &str = "/var/lib/chunkfs";

/// `STORE/config.json`: settings kept with the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Bound on the bytes the store's files take on disk; packs no pin or live mount uses are
    /// evicted, least recently used first, to stay under it.
    #[serde(default, rename = "max-size")]
    pub max_size: Option<u64>,
}

/// An open store directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    config: Config,
    counters: Arc<Counters>,
}

impl Store {
    /// Opens the store in `dir`, creating it (mode 0700) if needed, and reads its
    /// `config.json`.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        create_dir(dir)?;
        let root = dir
            .canonicalize()
            .map_err(Error::io(dir, "opening the store"))?;
        for sub in [
            "blobs/sha256",
            "packs/sha256",
            "refs",
            "pins",
            "mounts",
            "descriptors",
            "tmp",
        ] {
            create_dir(&root.join(sub))?;
        }
        let config_path = root.join("config.json");
        let config = match std::fs::read(&config_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::corrupt(&config_path, format!("store config: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(Error::io(&config_path, "reading the store config")(e)),
        };
        Ok(Store {
            root,
            config,
            counters: Arc::default(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Uses `max_size` as the size bound for this handle (`-o store-max=SIZE`), without
    /// changing `config.json`.
    pub fn set_max_size(&mut self, max_size: Option<u64>) {
        self.config.max_size = max_size;
    }

    /// Writes `config` as the store's `config.json` and uses it.
    pub fn write_config(&mut self, config: Config) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::Usage(format!("store config: {e}")))?;
        files::write_atomic(&self.tmp_dir(), &self.root.join("config.json"), &bytes)?;
        self.config = config;
        Ok(())
    }

    /// What this handle fetched so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// The pack `digest`, if the store has it.
    pub fn pack(&self, digest: &Digest) -> Result<Option<Arc<Pack>>, Error> {
        let path = self.pack_path(digest);
        if !pack::with_ext(&path, "state").exists() {
            return Ok(None);
        }
        Pack::open(*digest, &path, self.counters.clone()).map(|p| Some(Arc::new(p)))
    }

    /// The digests of every pack in the store (those with a state file).
    pub fn pack_digests(&self) -> Result<Vec<Digest>, Error> {
        let dir = self.root.join("packs/sha256");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir, "listing packs"))? {
            let entry = entry.map_err(Error::io(&dir, "listing packs"))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(d) = name.strip_suffix(".state").and_then(Digest::from_hex) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// `fdatasync`s every pack this process wrote frames to and marks them synced (the syncer
    /// thread does it a moment after each write anyway; a `Store` does it when dropped).
    pub fn sync(&self) -> Result<(), Error> {
        syncer::sync_now()
    }

    /// What the store holds: packs and how full they are, blobs, records, disk use.
    pub fn stats(&self) -> Result<StoreStats, Error> {
        let mut s = StoreStats {
            max_size: self.config.max_size,
            ..StoreStats::default()
        };
        for d in self.pack_digests()? {
            s.packs += 1;
            match self
                .pack(&d)
                .and_then(|p| p.map(|p| p.fill_state()).transpose())
            {
                Ok(Some(f)) => {
                    s.frames += f.frames;
                    s.frames_present += f.present;
                    s.frame_bytes += f.frame_bytes;
                    s.present_bytes += f.present_bytes;
                }
                _ => s.damaged_packs += 1,
            }
        }
        for (_, len) in self.blob_list()? {
            s.blobs += 1;
            s.blob_bytes += len;
        }
        s.pins = self.pins()?.len() as u64;
        s.mounts = self.list_json("mounts")?.len() as u64;
        s.disk_bytes = self.disk_usage()?;
        Ok(s)
    }

    pub(crate) fn pack_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("packs/sha256").join(digest.to_hex())
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `store.lock`: shared while setting up an image, exclusive for gc and eviction.
    pub(crate) fn lock_store(&self, exclusive: bool) -> Result<FileLock, Error> {
        FileLock::take(&self.root.join("store.lock"), exclusive)
    }

    /// `alloc.lock`: exclusive while a pack is added.
    pub(crate) fn lock_alloc(&self) -> Result<FileLock, Error> {
        FileLock::take(&self.root.join("alloc.lock"), true)
    }

    /// Allocated bytes of every file in the store.
    pub(crate) fn disk_usage(&self) -> Result<u64, Error> {
        fn walk(dir: &Path, total: &mut u64) -> Result<(), Error> {
            let entries = std::fs::read_dir(dir).map_err(Error::io(dir, "listing"))?;
            for entry in entries {
                let entry = entry.map_err(Error::io(dir, "listing"))?;
                let path = entry.path();
                let ty = entry.file_type().map_err(Error::io(&path, "listing"))?;
                if ty.is_dir() {
                    walk(&path, total)?;
                } else {
                    *total += files::disk_usage(&path);
                }
            }
            Ok(())
        }
        let mut total = 0;
        walk(&self.root, &mut total)?;
        Ok(total)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Frames stay in state 2 if this fails: safe, repaired after a reboot.
        let _ = syncer::sync_now();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testutil;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
