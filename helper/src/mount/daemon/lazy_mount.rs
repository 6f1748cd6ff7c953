//! The FUSE reader daemon's side of a lazy registry mount (docs/lazy.md §8): its extra devices
//! are pack files of the local store, filled from the registry on first read
//! ([`crate::lazy::StoreDevice`]); beside the reader it replays the prefetch list and pulls the
//! rest in the background when asked, publishes its counters for `chunkfs status`, and when
//! its mount is gone releases the store's mount record and exits, even if a fetch is still
//! waiting for a registry that is down.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chunkfs_distribution::registry::Client;
use chunkfs_distribution::source::BlobSource;
use chunkfs_distribution::store::{MAX_REQUEST, Pack, Store};
use chunkfs_format::digest::Digest;
use chunkfs_reader::{DeviceSpec, DigestSource};

use super::{LazyFds, Spec};
use crate::lazy::status::{self, DaemonStats, Publisher};
use crate::lazy::work::{self, LazySpec};
use crate::lazy::{StoreDevice, replay, watch};
use crate::mount::sys;

/// Largest digest table taken (64 bytes per chunk).
const TABLE_MAX: u64 = 1 << 30;

/// The lazy parts, opened before the mount.
pub(super) struct Opened {
    /// The digest table of every chunk.
    pub tables: DigestSource,
    spec: LazySpec,
    store: Arc<Store>,
    packs: Vec<Arc<Pack>>,
    used: Vec<Vec<usize>>,
    client: Client,
}

/// Takes the inherited memfds and opens the store, the packs and the registry client.
pub(super) fn open(fds: &LazyFds) -> Result<Opened, String> {
    let take = |f: &super::FdSpec| {
        sys::take_inherited_fd(f.fd)
            .map(File::from)
            .map_err(|e| format!("{}: {e}", f.name))
    };
    let spec = LazySpec::read_from(take(&fds.spec)?)?;
    let creds = fds
        .creds
        .as_ref()
        .map(|c| take(c).and_then(work::read_credentials))
        .transpose()?;
    let mut bytes = Vec::new();
    let mut tables = take(&fds.tables)?;
    tables
        .rewind()
        .map_err(|e| format!("reading the digest table: {e}"))?;
    tables
        .take(TABLE_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the digest table: {e}"))?;
    if Digest::of(&bytes).to_hex() != fds.tables_sha256 {
        return Err("the digest table changed since it was built; refusing to serve it".into());
    }
    let o = spec.open(creds)?;
    Ok(Opened {
        tables: DigestSource {
            bytes,
            device: None,
        },
        spec,
        store: Arc::new(o.store),
        packs: o.packs,
        used: o.used,
        client: o.client,
    })
}

impl Opened {
    /// The reader's extra devices.
    pub fn devices(&self) -> Vec<DeviceSpec> {
        let source: Arc<dyn BlobSource> = Arc::new(self.client.clone());
        StoreDevice::for_packs(&self.packs, &self.used, source)
            .into_iter()
            .map(|d| DeviceSpec::Custom(Arc::new(d)))
            .collect()
    }

    /// Once mounted: finds the mount, to notice when it is gone (if it cannot be found, the
    /// daemon ends when the reader's loop does, as for other images).
    pub fn mounted(self, spec: &Spec) -> Serving {
        let target = Path::new(&spec.target.name);
        let m = crate::mount::mountinfo::read().ok().and_then(|all| {
            all.into_iter()
                .rev()
                .find(|m| m.mount_point == target && m.fstype == "fuse.chunkfs")
        });
        Serving {
            opened: self,
            mount: m.map(|m| m.id),
            stop: Arc::new(AtomicBool::new(false)),
            ended: AtomicBool::new(false),
            background: Mutex::new(String::new()),
            last_error: Mutex::new(None),
            publisher: Mutex::new(None),
        }
    }
}

/// A mounted lazy image's threads besides the reader.
pub(super) struct Serving {
    opened: Opened,
    /// The mount's id.
    mount: Option<u64>,
    stop: Arc<AtomicBool>,
    ended: AtomicBool,
    background: Mutex<String>,
    last_error: Mutex<Option<String>>,
    publisher: Mutex<Option<Publisher>>,
}

impl Serving {
    /// Starts the status publisher, the prefetch and background thread, and the watcher of
    /// the mount, which ends the process once the mount is gone (a fetch stuck on a registry
    /// that is down must not keep an unmounted daemon alive).
    pub fn start(self, pidfile: Option<PathBuf>, fuse: Option<OwnedFd>) -> Arc<Serving> {
        let me = Arc::new(self);
        let snapshot = {
            let me = Arc::downgrade(&me);
            Arc::new(move || me.upgrade().map(|m| m.stats()).unwrap_or_default())
                as Arc<dyn Fn() -> DaemonStats + Send + Sync>
        };
        *me.publisher.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Publisher::start(&me.opened.spec.id, snapshot));
        {
            let me = me.clone();
            let _ = std::thread::Builder::new()
                .name("chunkfs-background".into())
                .spawn(move || me.background());
        }
        if let (Some(id), Some(fuse)) = (me.mount, fuse) {
            let me = me.clone();
            let _ = std::thread::Builder::new()
                .name("chunkfs-watch".into())
                .spawn(move || {
                    let alive = || !watch::fuse_aborted(fuse.as_fd());
                    if watch::wait_gone_with(id, &alive, &me.stop) {
                        if let Some(p) = &pidfile {
                            let _ = std::fs::remove_file(p);
                        }
                        me.end("unmounted");
                        std::process::exit(0);
                    }
                });
        }
        me
    }

    /// Once: the last counters, the store's mount record released, the runtime files removed.
    pub fn end(&self, why: &str) {
        if self.ended.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self
            .publisher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            p.finish(why);
        }
        let id = &self.opened.spec.id;
        let _ = self.opened.store.release_mount(id);
        status::remove(id);
    }

    fn stats(&self) -> DaemonStats {
        DaemonStats {
            pid: i32::try_from(std::process::id()).unwrap_or(0),
            kind: "fuse".into(),
            updated_ms: 0,
            store: status::store_counters(&self.opened.store.counters()),
            registry: self.opened.client.stats().into(),
            filler: None,
            background: self
                .background
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            ended: None,
        }
    }

    fn set_background(&self, state: String) {
        *self
            .background
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = state;
    }

    /// The prefetch replay, then (`pull=background`) every frame the mount reads.
    fn background(&self) {
        let o = &self.opened;
        let fill = |item: &replay::Item| -> Result<(), String> {
            let pack = o.packs.get(item.file).ok_or("no such device")?;
            pack.ensure(item.range.clone(), &o.client)
                .map_err(|e| e.to_string())
        };
        let log = |m: &str| {
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(m.to_owned());
        };
        if !o.spec.prefetch.is_empty() {
            let items: Vec<replay::Item> = o
                .spec
                .prefetch
                .iter()
                .filter_map(|g| {
                    let k = usize::from(g.device);
                    let pack = o.packs.get(k)?;
                    let range = work::byte_range(pack, &(g.first as usize..g.end as usize))?;
                    Some(replay::Item { file: k, range })
                })
                .collect();
            self.set_background(format!("prefetch: {} ranges", items.len()));
            let out = replay::run(&items, replay::THREADS, false, &self.stop, &fill, &log);
            self.set_background(format!(
                "prefetch done: {} ranges, {} failed",
                out.done, out.failed
            ));
        }
        if !o.spec.background || self.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut items = Vec::new();
        for (k, (pack, used)) in o.packs.iter().zip(&o.used).enumerate() {
            let states = pack.states().unwrap_or_default();
            let absent: Vec<usize> = used
                .iter()
                .copied()
                .filter(|&i| states.get(i).is_none_or(|&s| s == 0))
                .collect();
            for run in work::runs(pack, absent.iter().copied(), MAX_REQUEST) {
                if let Some(range) = work::byte_range(pack, &run) {
                    items.push(replay::Item { file: k, range });
                }
            }
        }
        self.set_background(format!("pulling: {} ranges", items.len()));
        let out = replay::run(&items, replay::THREADS, true, &self.stop, &fill, &log);
        if out.failed == 0 && !self.stop.load(Ordering::SeqCst) {
            self.set_background("complete: every frame is present".into());
        }
    }
}
