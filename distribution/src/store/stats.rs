//! What a store handle did (for `chunkfs mount -v` and status) and what the store holds.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one [`super::Store`] handle and the packs opened through it.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests made to sources (frame runs and pack tails).
    pub requests: AtomicU64,
    /// Bytes received from sources.
    pub fetched_bytes: AtomicU64,
    /// Frames fetched, checked and written.
    pub frames_fetched: AtomicU64,
    /// `ensure` calls that found every frame present (nothing fetched).
    pub hits: AtomicU64,
    /// Times a thread waited for frames another thread of this process was fetching.
    pub waits: AtomicU64,
    /// Failed requests and frames that did not check.
    pub errors: AtomicU64,
    /// Requests in flight now.
    pub in_flight: AtomicU64,
    /// Frames checked after a reboot (the repair of state 2).
    pub repaired: AtomicU64,
}

/// A copy of [`Counters`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// See [`Counters::requests`].
    pub requests: u64,
    /// See [`Counters::fetched_bytes`].
    pub fetched_bytes: u64,
    /// See [`Counters::frames_fetched`].
    pub frames_fetched: u64,
    /// See [`Counters::hits`].
    pub hits: u64,
    /// See [`Counters::waits`].
    pub waits: u64,
    /// See [`Counters::errors`].
    pub errors: u64,
    /// See [`Counters::in_flight`].
    pub in_flight: u64,
    /// See [`Counters::repaired`].
    pub repaired: u64,
}

impl Counters {
    /// The counters now.
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            requests: g(&self.requests),
            fetched_bytes: g(&self.fetched_bytes),
            frames_fetched: g(&self.frames_fetched),
            hits: g(&self.hits),
            waits: g(&self.waits),
            errors: g(&self.errors),
            in_flight: g(&self.in_flight),
            repaired: g(&self.repaired),
        }
    }
}

/// What a store holds ([`super::Store::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Packs.
    pub packs: u64,
    /// Frames of all packs.
    pub frames: u64,
    /// Of which present.
    pub frames_present: u64,
    /// Bytes of all frames.
    pub frame_bytes: u64,
    /// Bytes of the present frames.
    pub present_bytes: u64,
    /// Blobs (manifests, configs, metadata).
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Pinned images.
    pub pins: u64,
    /// Mount records (live or not yet collected).
    pub mounts: u64,
    /// Bytes the store's files take on disk (allocated blocks: packs are sparse).
    pub disk_bytes: u64,
    /// The size bound, if any.
    pub max_size: Option<u64>,
    /// Packs that could not be opened (damaged: `verify` says why).
    pub damaged_packs: u64,
}
