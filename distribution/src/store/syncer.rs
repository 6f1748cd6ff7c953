//! The syncer (docs/store.md §4, step 5): frames are written in state 2 ("written, not yet
//! synced"); a thread of every process that writes frames `fdatasync`s the pack files it wrote
//! to, a moment later, and then turns the 2s into 1s. [`sync_now`] does the same at once (a
//! `Store` does it when dropped).
//!
//! Only syncers change a 2 into a 1 (and the repair after a reboot, which excludes everyone),
//! and a frame's bytes are written before its state becomes 2, so every frame that was in
//! state 2 before an `fdatasync` of its pack file began is on disk when the call returns, by
//! whichever process wrote it: the syncer turns all of them to 1, orphans of killed processes
//! included.

use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use super::error::Error;
use super::state::{SYNCED, StateFile, WRITTEN};

/// How long written frames wait before the syncer flushes them.
pub const SYNC_DELAY: Duration = Duration::from_secs(2);

/// A pack with frames this process wrote and did not sync yet.
struct Dirty {
    state: Arc<StateFile>,
    data: Arc<File>,
}

#[derive(Default)]
struct Syncer {
    dirty: Mutex<Vec<Dirty>>,
    wake: Condvar,
}

static SYNCER: OnceLock<Syncer> = OnceLock::new();

fn syncer() -> &'static Syncer {
    SYNCER.get_or_init(|| {
        // If the thread cannot be started, frames stay in state 2 until `sync_now` or the
        // repair after a reboot: safe, only slower.
        let _ = std::thread::Builder::new()
            .name("chunkfs-syncer".into())
            .spawn(run);
        Syncer::default()
    })
}

fn lock(m: &Mutex<Vec<Dirty>>) -> MutexGuard<'_, Vec<Dirty>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Notes that this process wrote frames of the pack `state`/`data` that are not synced.
pub(crate) fn note(state: &Arc<StateFile>, data: &Arc<File>) {
    let s = syncer();
    let mut dirty = lock(&s.dirty);
    if !dirty.iter().any(|d| Arc::ptr_eq(&d.state, state)) {
        dirty.push(Dirty {
            state: state.clone(),
            data: data.clone(),
        });
        s.wake.notify_one();
    }
}

/// Syncs every pack this process wrote to, now; returns the first error.
pub(crate) fn sync_now() -> Result<(), Error> {
    let Some(s) = SYNCER.get() else {
        return Ok(());
    };
    let pending = std::mem::take(&mut *lock(&s.dirty));
    let mut first_error = None;
    for d in pending {
        if let Err(e) = sync_pack(&d.state, &d.data) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn run() {
    let s = syncer();
    loop {
        {
            let dirty = lock(&s.dirty);
            let dirty = s
                .wake
                .wait_while(dirty, |d| d.is_empty())
                .unwrap_or_else(PoisonError::into_inner);
            drop(dirty);
        }
        std::thread::sleep(SYNC_DELAY);
        // Errors are left for the next `sync_now`, `verify` or repair to meet: the frames
        // stay in state 2, which readers of this boot may read.
        let _ = sync_now();
    }
}

/// `fdatasync`s the pack file, then turns the frames that were in state 2 before into 1.
pub(crate) fn sync_pack(state: &StateFile, data: &File) -> Result<(), Error> {
    let n = state.header().frames as usize;
    let states = state.read(0..n)?;
    if !states.contains(&WRITTEN) {
        return Ok(());
    }
    data.sync_data()
        .map_err(Error::io(state.path(), "syncing the pack file of"))?;
    // Write runs of 2s only: a concurrent fill may be turning a neighbouring 0 into a 2.
    let mut i = 0;
    while i < n {
        if states[i] != WRITTEN {
            i += 1;
            continue;
        }
        let run = states[i..].iter().take_while(|&&s| s == WRITTEN).count();
        state.write(i, &vec![SYNCED; run])?;
        i += run;
    }
    state
        .file()
        .sync_data()
        .map_err(Error::io(state.path(), "syncing the pack state"))
}
