//! The filler daemon's side of a lazy registry mount (docs/lazy.md §8): opens the store, the
//! packs (before they are marked: rule 2) and the registry client from the inherited spec,
//! fills through [`StoreSource`], publishes its counters for `chunkfs status`, and at the end
//! releases the store's mount record when its mount is gone.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use chunkfs_distribution::registry::Client;
use chunkfs_distribution::store::{Pack, Store};

use crate::lazy::StoreSource;
use crate::lazy::filler::{FillSource, PackFile, StopHandle};
use crate::lazy::record::Recording;
use crate::lazy::status::{self, DaemonStats, FillerCounters, Publisher};
use crate::lazy::work::{self, LazySpec};

/// The lazy mount's parts, opened before the marks.
pub(super) struct Opened {
    /// The spec.
    pub spec: LazySpec,
    store: Arc<Store>,
    packs: Vec<Arc<Pack>>,
    used: Vec<Vec<usize>>,
    client: Client,
    source: Option<Arc<StoreSource>>,
}

/// Reads the spec and credentials and opens what they name.
pub(super) fn open(spec: File, creds: Option<File>) -> Result<Opened, String> {
    let spec = LazySpec::read_from(spec)?;
    let creds = creds.map(work::read_credentials).transpose()?;
    let o = spec.open(creds)?;
    Ok(Opened {
        spec,
        store: Arc::new(o.store),
        packs: o.packs,
        used: o.used,
        client: o.client,
        source: None,
    })
}

impl Opened {
    /// The pack files, opened read-write now, before any mark of this filler: writes through
    /// them raise no events of this filler (rule 2; another filler's mark may make them raise
    /// its events, which it answers at once: docs/store.md §6).
    pub fn files(&self) -> Result<Vec<PackFile>, String> {
        self.packs
            .iter()
            .map(|p| {
                let file = File::options()
                    .read(true)
                    .write(true)
                    .open(p.path())
                    .map_err(|e| format!("{}: {e}", p.path().display()))?;
                Ok(PackFile {
                    name: p.path().display().to_string(),
                    file,
                })
            })
            .collect()
    }

    /// The prefetch ranges, in order.
    pub fn prefetch(&self) -> Vec<(usize, Range<u64>)> {
        self.spec
            .prefetch
            .iter()
            .filter_map(|g| {
                let k = usize::from(g.device);
                let pack = self.packs.get(k)?;
                Some((
                    k,
                    work::byte_range(pack, &(g.first as usize..g.end as usize))?,
                ))
            })
            .collect()
    }

    /// With `record=`: the recording of the frames the kernel reads, its (empty) list written
    /// now, so that a file that cannot be written fails the mount instead of the unmount.
    pub fn recording(&self) -> Result<Option<Arc<Recording>>, String> {
        let Some(path) = &self.spec.record else {
            return Ok(None);
        };
        let r = Recording::of_packs(&self.packs, &self.used, path);
        r.write()
            .map_err(|e| format!("record={}: cannot write it: {e}", path.display()))?;
        Ok(Some(Arc::new(r)))
    }

    /// The fill source (opens its own descriptors of the packs: call before the marks).
    pub fn source(&mut self) -> Result<Arc<dyn FillSource>, String> {
        let sinks = self
            .files()?
            .into_iter()
            .map(|f| Arc::new(f.file))
            .collect();
        let source = Arc::new(StoreSource::new(
            self.packs.clone(),
            self.used.clone(),
            sinks,
            Arc::new(self.client.clone()),
        ));
        self.source = Some(source.clone());
        Ok(source)
    }

    /// Starts publishing the counters of the store, the client and the filler.
    pub fn start(self, filler: &StopHandle) -> Running {
        let snapshot = {
            let (store, client, filler) = (self.store.clone(), self.client.clone(), filler.clone());
            Arc::new(move || {
                let f = filler.stats();
                DaemonStats {
                    pid: i32::try_from(std::process::id()).unwrap_or(0),
                    kind: "filler".into(),
                    updated_ms: 0,
                    store: status::store_counters(&store.counters()),
                    registry: client.stats().into(),
                    filler: Some(FillerCounters {
                        events: f.events,
                        at_once: f.at_once,
                        filled: f.filled,
                        failed: f.failed,
                        timed_out: f.timed_out,
                        completed: f.completed as u64,
                    }),
                    background: String::new(),
                    last_error: None,
                    ended: None,
                }
            }) as Arc<dyn Fn() -> DaemonStats + Send + Sync>
        };
        let publisher = Publisher::start(&self.spec.id, snapshot);
        Running {
            opened: self,
            publisher,
        }
    }
}

/// A running lazy filler's publisher.
pub(super) struct Running {
    opened: Opened,
    publisher: Publisher,
}

impl Running {
    /// Whether every frame the mount reads is present.
    pub fn all_complete(&self) -> bool {
        self.opened
            .source
            .as_ref()
            .is_some_and(|s| (0..self.opened.packs.len()).all(|i| s.is_complete(i)))
    }

    /// The last counters; when the mount is gone, the store's mount record released and the
    /// runtime files removed.
    pub fn end(self, why: &str) {
        self.publisher.finish(why);
        if why == "unmounted" {
            let id = &self.opened.spec.id;
            let _ = self.opened.store.release_mount(id);
            status::remove(id);
        }
    }
}
