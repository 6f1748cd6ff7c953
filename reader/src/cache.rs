//! A bounded, sharded LRU cache of verified chunks, with single-flight loading: when several
//! threads need the same missing chunk, one loads it and the others wait for its result.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::error::ChunkError;

/// A chunk: decompressed and verified bytes (a `Vec`, so that decompressed output is shared
/// without another copy).
pub(crate) type Chunk = Arc<Vec<u8>>;

/// Where a chunk's cluster is: (device, byte offset).
pub(crate) type Key = (u16, u64);

const SHARDS: usize = 16;

/// The result of a load, shared by the loader and the threads waiting for it.
struct Inflight {
    done: Mutex<Option<Result<Chunk, ChunkError>>>,
    ready: Condvar,
}

enum Slot {
    Ready { chunk: Chunk, tick: u64 },
    Loading(Arc<Inflight>),
}

#[derive(Default)]
struct Shard {
    slots: HashMap<Key, Slot>,
    /// Ready entries by last use.
    lru: BTreeMap<u64, Key>,
    bytes: usize,
    tick: u64,
}

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache (including waits for another thread's load).
    pub hits: u64,
    /// Chunks loaded.
    pub loads: u64,
}

pub(crate) struct Cache {
    shards: Vec<Mutex<Shard>>,
    shard_bytes: usize,
    hasher: std::collections::hash_map::RandomState,
    stats: Mutex<CacheStats>,
}

/// Locks ignoring poisoning: a panicking loader is caught before it can leave a shard
/// inconsistent (slots are only replaced whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cache {
    pub fn new(capacity_bytes: u64) -> Self {
        let per = usize::try_from(capacity_bytes / SHARDS as u64).unwrap_or(usize::MAX);
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_bytes: per,
            hasher: Default::default(),
            stats: Mutex::new(CacheStats::default()),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        // Indexing by a value reduced modulo the length cannot go out of bounds.
        &self.shards[(self.hasher.hash_one(key) % SHARDS as u64) as usize]
    }

    pub fn stats(&self) -> CacheStats {
        *lock(&self.stats)
    }

    /// The chunk at `key`, loading it with `load` if it is not cached. Concurrent calls for the
    /// same key run `load` once. Errors are not cached: a later call retries.
    pub fn get_or_load(
        &self,
        key: Key,
        load: impl FnOnce() -> Result<Chunk, ChunkError>,
    ) -> Result<Chunk, ChunkError> {
        let shard = self.shard(&key);
        let inflight = {
            let mut s = lock(shard);
            s.tick = s.tick.wrapping_add(1);
            let tick = s.tick;
            match s.slots.get_mut(&key) {
                Some(Slot::Ready { chunk, tick: old }) => {
                    let chunk = chunk.clone();
                    let old = std::mem::replace(old, tick);
                    s.lru.remove(&old);
                    s.lru.insert(tick, key);
                    drop(s);
                    lock(&self.stats).hits += 1;
                    return Ok(chunk);
                }
                Some(Slot::Loading(f)) => Some(f.clone()),
                None => {
                    let f = Arc::new(Inflight {
                        done: Mutex::new(None),
                        ready: Condvar::new(),
                    });
                    s.slots.insert(key, Slot::Loading(f));
                    None
                }
            }
        };
        if let Some(f) = inflight {
            lock(&self.stats).hits += 1;
            let mut done = lock(&f.done);
            while done.is_none() {
                done = f.ready.wait(done).unwrap_or_else(PoisonError::into_inner);
            }
            return done.clone().unwrap_or(Err(ChunkError::NoDigest));
        }
        lock(&self.stats).loads += 1;
        // A panic in `load` must not leave waiters hanging: turn it into an error.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)).unwrap_or_else(|_| {
                Err(ChunkError::Decompress(
                    "internal error while loading".into(),
                ))
            });
        let mut s = lock(shard);
        let f = match s.slots.remove(&key) {
            Some(Slot::Loading(f)) => Some(f),
            Some(other) => {
                s.slots.insert(key, other);
                None
            }
            None => None,
        };
        // A chunk larger than a whole shard is served once and not kept.
        if let Some(chunk) = result.as_ref().ok().filter(|c| c.len() <= self.shard_bytes) {
            s.tick = s.tick.wrapping_add(1);
            let tick = s.tick;
            s.bytes = s.bytes.saturating_add(chunk.len());
            s.slots.insert(
                key,
                Slot::Ready {
                    chunk: chunk.clone(),
                    tick,
                },
            );
            s.lru.insert(tick, key);
            self.evict(&mut s, key);
        }
        drop(s);
        if let Some(f) = f {
            *lock(&f.done) = Some(result.clone());
            f.ready.notify_all();
        }
        result
    }

    /// Drops least recently used chunks (never `keep`) until the shard fits.
    fn evict(&self, s: &mut Shard, keep: Key) {
        while s.bytes > self.shard_bytes {
            let Some((&tick, &key)) = s.lru.iter().find(|(_, k)| **k != keep) else {
                break;
            };
            s.lru.remove(&tick);
            if let Some(Slot::Ready { chunk, .. }) = s.slots.remove(&key) {
                s.bytes = s.bytes.saturating_sub(chunk.len());
            }
        }
    }

    /// Bytes held (for tests).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn chunk(n: usize, b: u8) -> Chunk {
        Arc::new(vec![b; n])
    }

    #[test]
    fn hits_and_evicts_by_size() {
        // Each shard can hold all 64 chunks: keys are spread by a random hash, and a shard that
        // drew more than its share must not evict (the test failed when one drew 11 of 64).
        let capacity = 16 * 64 * 100;
        let c = Cache::new(capacity);
        let loads = AtomicUsize::new(0);
        for round in 0..2 {
            for k in 0..64u64 {
                let got = c.get_or_load((0, k), || {
                    loads.fetch_add(1, Ordering::Relaxed);
                    Ok(chunk(100, k as u8))
                });
                assert_eq!(got.unwrap()[0], k as u8);
            }
            if round == 0 {
                assert_eq!(loads.load(Ordering::Relaxed), 64);
            }
        }
        // The second round is all hits.
        assert_eq!(loads.load(Ordering::Relaxed), 64);
        // Now overflow: held bytes stay bounded.
        for k in 0..10_000u64 {
            c.get_or_load((1, k), || Ok(chunk(100, 0))).unwrap();
        }
        assert!(c.held() <= capacity as usize, "{}", c.held());
    }

    #[test]
    fn errors_are_not_cached_and_oversized_chunks_are_not_kept() {
        let c = Cache::new(1600);
        assert_eq!(
            c.get_or_load((0, 1), || Err(ChunkError::Digest)),
            Err(ChunkError::Digest)
        );
        assert_eq!(c.get_or_load((0, 1), || Ok(chunk(10, 7))).unwrap()[0], 7);
        assert_eq!(
            c.get_or_load((0, 2), || Ok(chunk(5000, 1))).unwrap().len(),
            5000
        );
        assert!(c.held() <= 1600);
    }

    #[test]
    fn single_flight() {
        let c = Arc::new(Cache::new(1 << 20));
        let loads = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, loads) = (c.clone(), loads.clone());
                std::thread::spawn(move || {
                    c.get_or_load((3, 3), || {
                        loads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(100));
                        Ok(chunk(10, 9))
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap()[0], 9);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_panicking_load_releases_waiters() {
        let c = Cache::new(1 << 20);
        let r = c.get_or_load((0, 0), || panic!("boom"));
        assert!(matches!(r, Err(ChunkError::Decompress(_))));
        assert!(c.get_or_load((0, 0), || Ok(chunk(1, 1))).is_ok());
    }
}
