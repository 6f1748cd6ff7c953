//! What a lazy registry mount tells `chunkfs status` and `chunkfs refill` (docs/lazy.md §8):
//! two small JSON files per mount under [`DIR`] (`/run/chunkfs/lazy`, gone at reboot, as the
//! mounts are):
//!
//! - `ID.json`, a [`MountRecord`]: what was mounted and how (reference, store, reader, plan,
//!   the frames the mount reads), written by the mount helper once the mount exists and by
//!   `chunkfs refill` when it starts a new filler; never credentials.
//! - `ID.stats.json`, [`DaemonStats`]: the daemon's counters (fetched bytes and requests,
//!   cache hits, requests in flight, errors, filler events), rewritten by the daemon at most
//!   once a second while they change ([`Publisher`]).
//!
//! `ID` is the mount's record id in the store (`mounts/ID.json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::work::RegistrySpec;

/// Where the files live.
pub const DIR: &str = "/run/chunkfs/lazy";

/// How the plan placed the image's chunks when it was mounted.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanSummary {
    /// Chunks in the image.
    pub chunks: u64,
    /// Chunks read from present frames of the image's own packs.
    pub own: u64,
    /// Chunks read from present frames of other images' packs.
    pub shared: u64,
    /// Chunks whose frames were still to fetch.
    pub fetch: u64,
    /// Frame bytes present in the store when mounted (what the mount needs no fetch for).
    pub present_bytes: u64,
    /// Frames still to fetch.
    pub missing_frames: u64,
    /// Their bytes.
    pub missing_bytes: u64,
}

/// A lazy (registry) mount, as the mount helper made it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MountRecord {
    /// The record id (the store's mount record).
    pub id: String,
    /// The source as given (`docker://HOST/REPO:TAG`).
    pub source: String,
    /// The image pinned by its manifest digest.
    pub pinned: String,
    /// The metadata digest (`sha256:...`).
    pub metadata: String,
    /// Set when the registry could not be reached and the store's copy was used: why.
    pub offline: Option<String>,
    /// The store directory.
    pub store: PathBuf,
    /// How the daemons reach the registry.
    pub registry: RegistrySpec,
    /// The mount point.
    pub mount_point: PathBuf,
    /// The mount's id (`/proc/self/mountinfo`).
    pub mount_id: u64,
    /// `fuse`, `kernel+filler` or `kernel`.
    pub reader: String,
    /// Why that reader.
    pub reason: String,
    /// The FUSE reader daemon or the filler serving the mount (none for a complete image on
    /// the kernel path).
    pub daemon_pid: Option<i32>,
    /// The pack digests (hex) of the descriptor's devices, in order.
    pub packs: Vec<String>,
    /// For each device, the frames the mount reads.
    pub used: Vec<Vec<u32>>,
    /// `pull=background`.
    pub background: bool,
    /// The plan.
    pub plan: PlanSummary,
    /// Seconds since the epoch when it was mounted.
    pub mounted_at: u64,
    /// Steps of the mount and their milliseconds.
    pub timings: Vec<(String, f64)>,
}

/// Counters of the store handle a daemon fetches through.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreCounters {
    /// Requests to the registry (frame runs).
    pub requests: u64,
    /// Bytes received from the registry.
    pub fetched_bytes: u64,
    /// Frames fetched, checked and written.
    pub frames_fetched: u64,
    /// Reads whose frames were all present already (no fetch).
    pub hits: u64,
    /// Reads that waited for a fetch another thread had in flight.
    pub waits: u64,
    /// Failed requests and frames that did not check.
    pub errors: u64,
    /// Requests in flight now.
    pub in_flight: u64,
}

/// Counters of the registry client a daemon fetches through.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistryCounters {
    /// HTTP requests sent (redirect hops and token requests included).
    pub requests: u64,
    /// Response body bytes received.
    pub bytes: u64,
    /// Attempts repeated after a retryable failure.
    pub retries: u64,
    /// Operations that failed after their retries.
    pub errors: u64,
    /// Operations running now.
    pub in_flight: u64,
}

impl From<chunkfs_distribution::registry::Stats> for RegistryCounters {
    fn from(s: chunkfs_distribution::registry::Stats) -> Self {
        Self {
            requests: s.requests,
            bytes: s.bytes,
            retries: s.retries,
            errors: s.errors,
            in_flight: s.in_flight,
        }
    }
}

/// Counters of the filler (kernel path).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FillerCounters {
    /// Pre-content events read.
    pub events: u64,
    /// Answered at once (present, or written by the process that read).
    pub at_once: u64,
    /// Answered after a fill.
    pub filled: u64,
    /// Denied with EIO (the fetch failed).
    pub failed: u64,
    /// Denied with EIO (the deadline passed).
    pub timed_out: u64,
    /// Packs complete and unmarked.
    pub completed: u64,
}

/// What a daemon publishes about itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonStats {
    /// Its pid.
    pub pid: i32,
    /// `fuse` or `filler`.
    pub kind: String,
    /// Milliseconds since the epoch of this snapshot.
    pub updated_ms: u64,
    /// Store counters.
    pub store: StoreCounters,
    /// Registry client counters.
    pub registry: RegistryCounters,
    /// Filler counters (kernel path only).
    pub filler: Option<FillerCounters>,
    /// The prefetch replay and background pull: `running`, `done`, or what failed.
    pub background: String,
    /// The last error met, if any.
    pub last_error: Option<String>,
    /// Set when the daemon ended: why (`complete`, `unmounted`, `stopped`).
    pub ended: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `DIR/ID.json`.
pub fn record_path(id: &str) -> PathBuf {
    Path::new(DIR).join(format!("{id}.json"))
}

/// `DIR/ID.stats.json`.
pub fn stats_path(id: &str) -> PathBuf {
    Path::new(DIR).join(format!("{id}.stats.json"))
}

/// Writes `value` as `path` atomically (temporary file + rename), mode 0600.
fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new(DIR));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().map_or("x".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

impl MountRecord {
    /// Writes `DIR/ID.json`, and removes the records of earlier mounts that had the same mount
    /// id: the kernel reuses the ids of mounts that are gone, and a record left by a daemon that
    /// ended without unmounting would otherwise be taken for this mount's.
    pub fn write(&self) -> std::io::Result<()> {
        self.write_in(Path::new(DIR))
    }

    fn write_in(&self, dir: &Path) -> std::io::Result<()> {
        write_json(&dir.join(format!("{}.json", self.id)), self)?;
        for old in Self::all_in(dir) {
            if self.mount_id != 0 && old.mount_id == self.mount_id && old.id != self.id {
                let _ = std::fs::remove_file(dir.join(format!("{}.json", old.id)));
                let _ = std::fs::remove_file(dir.join(format!("{}.stats.json", old.id)));
            }
        }
        Ok(())
    }

    /// Reads `DIR/ID.json`.
    pub fn read(id: &str) -> std::io::Result<MountRecord> {
        Self::read_in(Path::new(DIR), id)
    }

    fn read_in(dir: &Path, id: &str) -> std::io::Result<MountRecord> {
        let bytes = std::fs::read(dir.join(format!("{id}.json")))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// Every record in [`DIR`] (unreadable ones skipped), oldest first.
    pub fn all() -> Vec<MountRecord> {
        Self::all_in(Path::new(DIR))
    }

    fn all_in(dir: &Path) -> Vec<MountRecord> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<MountRecord> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".json")?;
                if id.ends_with(".stats") || id.starts_with('.') {
                    return None;
                }
                Self::read_in(dir, id).ok()
            })
            .collect();
        out.sort_by_key(|r| (r.mounted_at, r.id.clone()));
        out
    }

    /// The record of the mount `mount_id`, if any (the newest, should an old one of a reused
    /// id be left).
    pub fn of_mount(mount_id: u64) -> Option<MountRecord> {
        Self::all()
            .into_iter()
            .rev()
            .find(|r| r.mount_id == mount_id)
    }
}

impl DaemonStats {
    /// Reads `DIR/ID.stats.json`.
    pub fn read(id: &str) -> Option<DaemonStats> {
        let bytes = std::fs::read(stats_path(id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Removes both files of mount `id` (best effort: they live on tmpfs and die at reboot).
pub fn remove(id: &str) {
    let _ = std::fs::remove_file(record_path(id));
    let _ = std::fs::remove_file(stats_path(id));
}

/// Rewrites `DIR/ID.stats.json` from a snapshot function, at most once a second and only when
/// the counters changed, until dropped (which writes a last snapshot).
pub struct Publisher {
    id: String,
    stop: Arc<AtomicBool>,
    snapshot: Arc<dyn Fn() -> DaemonStats + Send + Sync>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("id", &self.id).finish()
    }
}

impl Publisher {
    /// Starts publishing `snapshot()` for mount `id`.
    pub fn start(id: &str, snapshot: Arc<dyn Fn() -> DaemonStats + Send + Sync>) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (id, stop, snapshot) = (id.to_owned(), stop.clone(), snapshot.clone());
            std::thread::Builder::new()
                .name("chunkfs-status".into())
                .spawn(move || {
                    let path = stats_path(&id);
                    let mut last: Option<DaemonStats> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let mut s = snapshot();
                        let changed = last.as_ref().is_none_or(|l| {
                            let mut l = l.clone();
                            l.updated_ms = s.updated_ms;
                            l != s
                        });
                        if changed {
                            s.updated_ms = now_ms();
                            let _ = write_json(&path, &s);
                            last = Some(s);
                        }
                        for _ in 0..10 {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
                .ok()
        };
        Publisher {
            id: id.to_owned(),
            stop,
            snapshot,
            thread,
        }
    }

    /// Writes a last snapshot with `ended` set, now.
    pub fn finish(&self, ended: &str) {
        let mut s = (self.snapshot)();
        s.ended = Some(ended.to_owned());
        s.updated_ms = now_ms();
        self.stop.store(true, Ordering::Relaxed);
        let _ = write_json(&stats_path(&self.id), &s);
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Converts the store's counters.
pub fn store_counters(c: &chunkfs_distribution::store::CounterSnapshot) -> StoreCounters {
    StoreCounters {
        requests: c.requests,
        fetched_bytes: c.fetched_bytes,
        frames_fetched: c.frames_fetched,
        hits: c.hits,
        waits: c.waits,
        errors: c.errors,
        in_flight: c.in_flight,
    }
}

/// Whether process `pid` is alive and is one of chunkfs's daemons (`@chunkfs-reader` or
/// `@chunkfs-filler`).
pub fn daemon_alive(pid: i32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    argv0 == crate::mount::daemon::ARGV0.as_bytes() || argv0 == super::daemon::ARGV0.as_bytes()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(id: &str, mount_id: u64, mounted_at: u64) -> MountRecord {
        MountRecord {
            id: id.into(),
            source: "docker://h/r:t".into(),
            pinned: String::new(),
            metadata: String::new(),
            offline: None,
            store: PathBuf::from("/s"),
            registry: RegistrySpec::default(),
            mount_point: PathBuf::from("/m"),
            mount_id,
            reader: "fuse".into(),
            reason: String::new(),
            daemon_pid: None,
            packs: Vec::new(),
            used: Vec::new(),
            background: false,
            plan: PlanSummary::default(),
            mounted_at,
            timings: Vec::new(),
        }
    }

    #[test]
    fn a_new_mount_with_a_reused_id_replaces_the_old_record() {
        let dir = tempfile::tempdir().unwrap();
        record("old", 45, 100).write_in(dir.path()).unwrap();
        record("other", 46, 100).write_in(dir.path()).unwrap();
        std::fs::write(dir.path().join("old.stats.json"), b"{}").unwrap();
        record("new", 45, 100).write_in(dir.path()).unwrap();
        let ids: Vec<String> = MountRecord::all_in(dir.path())
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["new", "other"]);
        assert!(!dir.path().join("old.stats.json").exists());
        // An unknown mount id (0) never removes anything.
        record("a", 0, 1).write_in(dir.path()).unwrap();
        record("b", 0, 2).write_in(dir.path()).unwrap();
        assert_eq!(MountRecord::all_in(dir.path()).len(), 4);
    }
}
