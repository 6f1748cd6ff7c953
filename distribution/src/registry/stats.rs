//! Counters of one client, for `chunkfs mount -v` and the mount status: what was asked of the
//! registry and how it went. Updated with relaxed atomics from every thread; a snapshot is
//! consistent per counter, not across counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters (shared by the client's threads).
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    retries: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    redirects: AtomicU64,
    auth_round_trips: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// HTTP requests sent (each redirect hop and token request counts).
    pub requests: u64,
    /// Response body bytes received.
    pub bytes: u64,
    /// Attempts repeated after a retryable failure.
    pub retries: u64,
    /// Operations that failed (after their retries).
    pub errors: u64,
    /// Operations running now.
    pub in_flight: u64,
    /// Redirects followed.
    pub redirects: u64,
    /// Token requests and credential retries after a 401.
    pub auth_round_trips: u64,
}

impl Counters {
    /// The current values.
    pub fn snapshot(&self) -> Stats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            requests: l(&self.requests),
            bytes: l(&self.bytes),
            retries: l(&self.retries),
            errors: l(&self.errors),
            in_flight: l(&self.in_flight),
            redirects: l(&self.redirects),
            auth_round_trips: l(&self.auth_round_trips),
        }
    }

    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn redirect(&self) {
        self.redirects.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn auth_round_trip(&self) {
        self.auth_round_trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an operation in flight until the guard drops.
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }
}

/// Decrements the in-flight counter when dropped.
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
