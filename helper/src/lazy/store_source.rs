//! [`StoreSource`]: the filler's source for a lazy registry mount (docs/lazy.md §8). The
//! filler's files are pack files of the local store (docs/store.md); a fill makes the frames
//! the mount reads present through `Pack::ensure_with`, which fetches them from the registry
//! (adjacent frames in one request), checks every frame against its digest and writes it
//! whole, tail first, through the event's descriptor (rule 7).
//!
//! A pack may hold frames of other images, which this mount never reads: only the frames the
//! mount's descriptor points at ([`crate::lazy::work::LazySpec::used`]) count for
//! [`FillSource::ready`], [`FillSource::absent`] and [`FillSource::is_complete`], so that a
//! pack shared with other images is unmarked once this mount's frames are present. A read of a
//! page that also covers bytes of a frame the mount does not read sees them as they are (zeros
//! while absent), and never uses them.
//!
//! Events raised by a process that holds the record locks of the frames they cover (another
//! process writing them: a FUSE reader's fetch, a pull, another mount's filler writing through
//! a descriptor it opened after this filler's mark) are answered at once, as are events raised
//! by this process itself (its background fills write through descriptors that another
//! filler's mark may make raise events): docs/store.md §6. This process never reads the packs.

use std::fs::File;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chunkfs_distribution::source::BlobSource;
use chunkfs_distribution::store::{MAX_REQUEST, Pack};
use chunkfs_format::{Classify, ErrorClass};

use super::ahead;
use super::filler::{FillError, FillSource};
use super::reads;
use super::work;

/// One pack and the frames of it the mount reads.
struct Used {
    pack: Arc<Pack>,
    /// Sorted index positions.
    frames: Vec<usize>,
    /// `is_used[i]` for every frame of the pack.
    is_used: Vec<bool>,
}

/// Background fetches through descriptors of the pack files opened before the filler marked
/// them (their writes raise no events of this filler).
struct SinkFetch {
    packs: Vec<Arc<Pack>>,
    sinks: Vec<Arc<File>>,
    source: Arc<dyn BlobSource>,
}

impl ahead::Fetch for SinkFetch {
    fn fetch(&self, device: usize, frames: Range<usize>) {
        let (Some(pack), Some(sink)) = (self.packs.get(device), self.sinks.get(device)) else {
            return;
        };
        if let Some(bytes) = work::byte_range(pack, &frames) {
            let _ = pack.ensure_with(bytes, &*self.source, sink);
        }
    }
}

/// After a fill failed for want of the registry, how long new fills fail at once rather than
/// ask it again: the kernel asks for one read's range several times (readahead, then each
/// page: docs/lazy.md rule 9), and each would wait for the client's retries.
pub const DOWN_FOR: Duration = Duration::from_millis(250);

/// Fills a lazy mount's pack files from a registry through the store (see the module
/// documentation).
pub struct StoreSource {
    packs: Vec<Used>,
    /// The kernel's reads of the packs, to fetch ahead of sequential streams.
    ahead: ahead::Follower,
    source: Arc<dyn BlobSource>,
    me: i32,
    /// Until when fills fail at once (the registry just failed one).
    down_until: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSource")
            .field("packs", &self.packs.len())
            .field("source", &self.source.name())
            .finish()
    }
}

impl StoreSource {
    /// A source for `packs` (the filler's files, in order), of which the mount reads `used`
    /// (index positions per pack), fetched from `source`; `sinks` are descriptors of the pack
    /// files for the fetches ahead. The packs and sinks must have been opened before the
    /// filler marks them.
    pub fn new(
        packs: Vec<Arc<Pack>>,
        used: Vec<Vec<usize>>,
        sinks: Vec<Arc<File>>,
        source: Arc<dyn BlobSource>,
    ) -> Self {
        let packs: Vec<Used> = packs
            .into_iter()
            .zip(used)
            .map(|(pack, mut frames)| {
                let n = pack.entries().len();
                frames.retain(|&f| f < n);
                frames.sort_unstable();
                frames.dedup();
                let mut is_used = vec![false; n];
                for &f in &frames {
                    is_used[f] = true;
                }
                Used {
                    pack,
                    frames,
                    is_used,
                }
            })
            .collect();
        let fetch = Arc::new(SinkFetch {
            packs: packs.iter().map(|u| u.pack.clone()).collect(),
            sinks,
            source: source.clone(),
        });
        let ahead = ahead::Follower::new(
            packs
                .iter()
                .map(|u| (u.pack.clone(), u.frames.as_slice()))
                .collect(),
            fetch,
        );
        Self {
            packs,
            ahead,
            source,
            me: i32::try_from(std::process::id()).unwrap_or(0),
            down_until: Mutex::new(None),
        }
    }

    fn pack(&self, file: usize) -> Result<&Used, FillError> {
        self.packs.get(file).ok_or(FillError::NoSuchFile { file })
    }

    /// The used frames a kernel read of `range` of `file`'s pack file needs: those it overlaps
    /// but the tail of the frame before ([`reads`]).
    fn used_in(u: &Used, range: Range<u64>) -> Vec<usize> {
        u.pack
            .frames_in(range.clone())
            .filter(|&i| {
                u.pack
                    .frame_range(i)
                    .is_none_or(|f| !reads::is_tail_before(&f, &range))
            })
            .filter(|&i| u.is_used.get(i).copied().unwrap_or(false))
            .collect()
    }

    /// The used frames of `file` still absent (state file read now).
    fn absent_frames(u: &Used) -> Vec<usize> {
        let Ok(states) = u.pack.states() else {
            // Unreadable state: everything counts as absent; fills will report the error.
            return u.frames.clone();
        };
        u.frames
            .iter()
            .copied()
            .filter(|&i| states.get(i).is_none_or(|&s| s == 0))
            .collect()
    }
}

fn source_error(e: chunkfs_distribution::store::Error) -> FillError {
    FillError::Source {
        class: e.class(),
        source: Box::new(e),
    }
}

impl FillSource for StoreSource {
    fn ready(&self, file: usize, range: Range<u64>, pid: i32) -> bool {
        if pid == self.me {
            // This process writes marked packs only while holding the frames' locks, and
            // never reads them: its own event never waits for anything.
            return true;
        }
        let Ok(u) = self.pack(file) else {
            return true;
        };
        // Every read of the pack passes here, present or not: a sequential stream fetches
        // the next used frames in the background, ahead of the reads (on the process's
        // background threads: never blocks).
        self.ahead.read(file, range.clone());
        let frames = Self::used_in(u, range.clone());
        if u.pack.all_present(&frames).unwrap_or(false) {
            return true;
        }
        u.pack
            .lock_holders(range)
            .is_ok_and(|holders| holders.contains(&pid))
    }

    fn fill(&self, file: usize, range: Range<u64>, _pid: i32, out: &File) -> Result<(), FillError> {
        let u = self.pack(file)?;
        let frames = Self::used_in(u, range);
        let runs = work::runs(&u.pack, frames.iter().copied(), MAX_REQUEST);
        if runs.is_empty() {
            return Ok(());
        }
        if let Some((until, why)) = &*self
            .down_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            if Instant::now() < *until {
                return Err(FillError::Source {
                    class: ErrorClass::Network,
                    source: format!("not asked again so soon: {why}").into(),
                });
            }
        }
        for run in runs {
            let Some(bytes) = work::byte_range(&u.pack, &run) else {
                continue;
            };
            if let Err(e) = u.pack.ensure_with(bytes, &*self.source, out) {
                if e.class() == ErrorClass::Network {
                    *self
                        .down_until
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) =
                        Some((Instant::now() + DOWN_FOR, e.to_string()));
                }
                return Err(source_error(e));
            }
        }
        Ok(())
    }

    fn absent(&self, file: usize) -> Vec<Range<u64>> {
        let Ok(u) = self.pack(file) else {
            return Vec::new();
        };
        let absent = Self::absent_frames(u);
        let mut out: Vec<Range<u64>> = Vec::new();
        let mut prev: Option<usize> = None;
        for i in absent {
            let Some(r) = u.pack.frame_range(i) else {
                continue;
            };
            match out.last_mut() {
                Some(last) if prev == i.checked_sub(1) => last.end = r.end,
                _ => out.push(r),
            }
            prev = Some(i);
        }
        out
    }

    fn is_complete(&self, file: usize) -> bool {
        self.pack(file)
            .is_ok_and(|u| u.pack.all_present(&u.frames).unwrap_or(false))
    }
}
