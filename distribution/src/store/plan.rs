//! Planning an image (docs/store.md §5) and pulling it (§7).
//!
//! For each chunk of the image, in chunk order, the plan reads it from: a present frame of one
//! of the image's own packs; else a present frame of any other pack in the store whose frames
//! suit the descriptor's extents (any pack for 48-bit extents, 512-byte-aligned packs for the
//! cluster layout): shared, not fetched again, not stored twice; else the first of the image's
//! packs that lists it, to be filled when read (or by [`Store::pull`]). The packs so chosen are
//! the extra devices, in order of first use.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use chunkfs_format::digest::Digest;
use chunkfs_format::model::ChunkInfo;
use chunkfs_format::translate::{ChunkLocation, ExtentLayout, ExtraDevice};

use super::Store;
use super::error::Error;
use super::pack::{MAX_REQUEST, Pack};
use super::records::{ImageRecord, Lease};
use super::state::ABSENT;
use crate::source::BlobSource;

/// An image to plan: what its manifest and metadata say.
#[derive(Clone, Debug)]
pub struct ImageSpec<'a> {
    /// The reference it is mounted or pulled as (recorded in pins and mount records).
    pub reference: &'a str,
    /// The manifest's digest.
    pub manifest: Digest,
    /// Blobs to keep with the image (manifest, config, metadata), already in the store.
    pub blobs: &'a [Digest],
    /// Its pack layers, `(digest, length)`, in layer order.
    pub packs: &'a [(Digest, u64)],
    /// Its chunks, from its (checked) metadata, in chunk order.
    pub chunks: &'a [ChunkInfo],
    /// The extents of the descriptor to build: `Clusters` needs 512-byte-aligned frames.
    pub extents: ExtentLayout,
}

/// Where a planned chunk is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkSource {
    /// A present frame of one of the image's packs.
    Own,
    /// A present frame of another pack in the store.
    Shared,
    /// An absent frame of one of the image's packs, fetched when read or pulled.
    Fetch,
}

/// How a plan places the chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Chunks read from a present frame of the image's own packs.
    pub own: u64,
    /// Chunks read from a present frame of another image's pack.
    pub shared: u64,
    /// Chunks whose frame is still to be fetched.
    pub fetch: u64,
}

/// Where every chunk of an image is read from, and the mount record that keeps those packs in
/// the store while the plan (and then the mount) lives.
#[derive(Debug)]
pub struct Plan {
    /// The extra devices: packs in order of first use (device `k` is `devices[k - 1]`).
    pub devices: Vec<Arc<Pack>>,
    /// Chunk `i` is at `locations[i]`: device, pack-file offset (`base + offset in the blob`),
    /// stored length. What `chunkfs_format::translate` takes with [`Plan::extra_devices`].
    pub locations: Vec<ChunkLocation>,
    /// Where each chunk is read from, in chunk order.
    pub sources: Vec<ChunkSource>,
    /// Counts of `sources`.
    pub stats: PlanStats,
    /// Distinct frames still to fetch.
    pub missing_frames: u64,
    /// Their bytes.
    pub missing_bytes: u64,
    lease: Lease,
}

/// What [`Store::pull`] fetched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Frame bytes the pull had to make present when it started.
    pub needed_bytes: u64,
    /// Requests made to the source.
    pub requests: u64,
    /// Bytes received.
    pub fetched_bytes: u64,
}

impl Plan {
    /// The descriptor's device table: each pack file tagged with the pack's digest in hex,
    /// with its pack-file length.
    pub fn extra_devices(&self) -> Vec<ExtraDevice> {
        self.devices
            .iter()
            .map(|p| ExtraDevice {
                tag: p.digest().to_hex().into_bytes(),
                len: p.file_len(),
            })
            .collect()
    }

    /// The mount record keeping the image's files.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The mount record, to record the mount in it and keep it ([`Lease::set_mounted`],
    /// [`Lease::keep`]).
    pub fn lease_mut(&mut self) -> &mut Lease {
        &mut self.lease
    }

    /// The mount record alone, once the plan's devices and locations were used (the mount
    /// keeps it: [`Lease::keep`]).
    pub fn into_lease(self) -> Lease {
        self.lease
    }

    /// For each device, the frames (index positions) the image reads from it, ascending.
    pub fn frames_used(&self) -> Vec<Vec<usize>> {
        let mut used: Vec<Vec<usize>> = vec![Vec::new(); self.devices.len()];
        for loc in &self.locations {
            let Some(k) = usize::from(loc.device).checked_sub(1) else {
                continue;
            };
            let (Some(pack), Some(list)) = (self.devices.get(k), used.get_mut(k)) else {
                continue;
            };
            let frames = pack.frames_in(loc.offset..loc.offset + u64::from(loc.stored_len));
            list.extend(frames);
        }
        for list in &mut used {
            list.sort_unstable();
            list.dedup();
        }
        used
    }

    /// For each device, the pack-file ranges of the frames the image reads from it that are
    /// still absent (read from the state files now). A lazy kernel mount whose lists are all
    /// empty needs no filler.
    pub fn absent_ranges(&self) -> Result<Vec<Vec<Range<u64>>>, Error> {
        let mut out = Vec::with_capacity(self.devices.len());
        for (pack, frames) in self.devices.iter().zip(self.frames_used()) {
            let states = pack.states()?;
            let mut ranges: Vec<Range<u64>> = Vec::new();
            let mut prev: Option<usize> = None;
            for i in frames {
                if states.get(i) != Some(&ABSENT) {
                    continue;
                }
                let Some(r) = pack.frame_range(i) else {
                    continue;
                };
                match ranges.last_mut() {
                    Some(last) if prev == Some(i.wrapping_sub(1)) => last.end = r.end,
                    _ => ranges.push(r),
                }
                prev = Some(i);
            }
            out.push(ranges);
        }
        Ok(out)
    }
}

/// Packs whose indexes are fetched at once while planning: each costs a round trip, and a
/// mount waits for all of them.
const TAILS_AT_ONCE: usize = 8;

impl Store {
    /// [`Store::add_pack`] for each of `packs`, in order, up to [`TAILS_AT_ONCE`] at a time.
    fn add_packs(
        &self,
        packs: &[(Digest, u64)],
        source: &dyn BlobSource,
    ) -> Result<Vec<Arc<Pack>>, Error> {
        let mut out = Vec::with_capacity(packs.len());
        for group in packs.chunks(TAILS_AT_ONCE) {
            let got: Vec<Result<Arc<Pack>, Error>> = std::thread::scope(|s| {
                let running: Vec<_> = group
                    .iter()
                    .map(|(digest, len)| {
                        let add = move || self.add_pack(digest, *len, source);
                        // Without a thread, the pack is added here, after the others.
                        std::thread::Builder::new()
                            .name("chunkfs-tail".into())
                            .spawn_scoped(s, add)
                            .map_err(|_| (digest, *len))
                    })
                    .collect();
                running
                    .into_iter()
                    .map(|h| match h {
                        Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                        Err((digest, len)) => self.add_pack(digest, len, source),
                    })
                    .collect()
            });
            for p in got {
                out.push(p?);
            }
        }
        Ok(out)
    }
}

impl Store {
    /// Plans `image` (docs/store.md §5): enforces the size bound, adds the image's packs
    /// (fetching their indexes from `source`), chooses where each chunk is read from, and
    /// writes a mount record for the image held by this process ([`Plan::lease_mut`]).
    pub fn plan(&self, image: &ImageSpec<'_>, source: &dyn BlobSource) -> Result<Plan, Error> {
        self.enforce_bound()?;
        let _setup = self.lock_store(false)?;
        let what = || format!("{} ({})", image.reference, image.manifest);
        let image_err = |problem: String| Error::Image {
            what: what(),
            problem,
        };
        let clusters = image.extents == ExtentLayout::Clusters;
        let mut own: Vec<Arc<Pack>> = Vec::with_capacity(image.packs.len());
        for (p, (digest, _)) in self
            .add_packs(image.packs, source)?
            .into_iter()
            .zip(image.packs)
        {
            if clusters && !p.align512() {
                return Err(Error::Unsupported(format!(
                    "{}: pack {digest} does not end its frames on 512-byte boundaries, which the cluster layout needs",
                    what()
                )));
            }
            own.push(p);
        }
        let own_states = own
            .iter()
            .map(|p| p.states())
            .collect::<Result<Vec<_>, _>>()?;
        let mut own_map: HashMap<Digest, Vec<(usize, usize)>> = HashMap::new();
        for (k, p) in own.iter().enumerate() {
            for (i, e) in p.entries().iter().enumerate() {
                own_map.entry(e.digest).or_default().push((k, i));
            }
        }
        let mut others: Option<HashMap<Digest, (Arc<Pack>, usize)>> = None;
        let mut chosen: Vec<(Arc<Pack>, usize, ChunkSource)> =
            Vec::with_capacity(image.chunks.len());
        for (n, c) in image.chunks.iter().enumerate() {
            let cands: Vec<(usize, usize)> = own_map
                .get(&c.digest)
                .map(|v| {
                    v.iter()
                        .copied()
                        .filter(|&(k, i)| own[k].entries()[i].raw_len == c.size)
                        .collect()
                })
                .unwrap_or_default();
            let Some(&(first_k, first_i)) = cands.first() else {
                return Err(image_err(format!(
                    "chunk {n} ({}, {} bytes) is in none of its packs",
                    c.digest, c.size
                )));
            };
            if let Some(&(k, i)) = cands.iter().find(|&&(k, i)| own_states[k][i] != ABSENT) {
                chosen.push((own[k].clone(), i, ChunkSource::Own));
                continue;
            }
            let others = match &mut others {
                Some(m) => m,
                None => others.insert(self.present_elsewhere(&own, clusters)?),
            };
            match others.get(&c.digest) {
                Some((p, i)) if p.entries()[*i].raw_len == c.size => {
                    chosen.push((p.clone(), *i, ChunkSource::Shared));
                }
                _ => chosen.push((own[first_k].clone(), first_i, ChunkSource::Fetch)),
            }
        }

        let mut devices: Vec<Arc<Pack>> = Vec::new();
        let mut device_of: HashMap<Digest, u16> = HashMap::new();
        let mut locations = Vec::with_capacity(chosen.len());
        let mut sources = Vec::with_capacity(chosen.len());
        let mut stats = PlanStats::default();
        let mut missing: std::collections::HashSet<(Digest, usize)> = Default::default();
        let (mut missing_frames, mut missing_bytes) = (0u64, 0u64);
        for (pack, i, src) in chosen {
            let device = match device_of.get(pack.digest()) {
                Some(&d) => d,
                None => {
                    let d = u16::try_from(devices.len() + 1)
                        .ok()
                        .filter(|&d| d < u16::MAX)
                        .ok_or_else(|| image_err("more packs than EROFS has device ids".into()))?;
                    device_of.insert(*pack.digest(), d);
                    devices.push(pack.clone());
                    d
                }
            };
            let e = &pack.entries()[i];
            locations.push(ChunkLocation {
                device,
                offset: pack.base() + e.offset,
                stored_len: e.stored_len,
            });
            match src {
                ChunkSource::Own => stats.own += 1,
                ChunkSource::Shared => stats.shared += 1,
                ChunkSource::Fetch => {
                    stats.fetch += 1;
                    if missing.insert((*pack.digest(), i)) {
                        missing_frames += 1;
                        missing_bytes += u64::from(e.stored_len);
                    }
                }
            }
            sources.push(src);
        }
        for p in &devices {
            p.touch()?;
        }
        let mut packs: Vec<Digest> = devices.iter().map(|p| *p.digest()).collect();
        for p in &own {
            if !packs.contains(p.digest()) {
                packs.push(*p.digest());
            }
        }
        let lease = self.lease(&ImageRecord {
            reference: image.reference.to_owned(),
            manifest: image.manifest,
            blobs: image.blobs.to_vec(),
            packs,
            descriptor: None,
        })?;
        Ok(Plan {
            devices,
            locations,
            sources,
            stats,
            missing_frames,
            missing_bytes,
            lease,
        })
    }

    /// Present frames of the packs other than `own`, by digest: the pack with the smallest
    /// digest first. Packs that cannot be opened are skipped (`verify` reports them).
    fn present_elsewhere(
        &self,
        own: &[Arc<Pack>],
        clusters: bool,
    ) -> Result<HashMap<Digest, (Arc<Pack>, usize)>, Error> {
        let mut map = HashMap::new();
        for d in self.pack_digests()? {
            if own.iter().any(|p| *p.digest() == d) {
                continue;
            }
            let Ok(Some(p)) = self.pack(&d) else {
                continue;
            };
            if clusters && !p.align512() {
                continue;
            }
            let Ok(states) = p.states() else {
                continue;
            };
            for (i, (s, e)) in states.iter().zip(p.entries()).enumerate() {
                if *s != ABSENT {
                    map.entry(e.digest).or_insert_with(|| (p.clone(), i));
                }
            }
        }
        Ok(map)
    }

    /// Fetches every frame `plan` reads that is still absent (several requests in flight,
    /// adjacent frames merged up to [`MAX_REQUEST`] bytes), syncs them, and pins the image.
    /// `progress(done, total)` is told frame bytes as they arrive.
    pub fn pull(
        &self,
        plan: &Plan,
        source: &dyn BlobSource,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PullReport, Error> {
        let report = self.fetch_all(plan, source, progress)?;
        self.pin(plan.lease.record())?;
        Ok(report)
    }

    /// What [`Store::pull`] does but the pin: every frame `plan` reads is present and synced
    /// when it returns, and stays while the plan's record (or another root) names its pack.
    /// For a command that reads the frames once (`chunkfs pack docker://...`).
    pub fn fetch_all(
        &self,
        plan: &Plan,
        source: &dyn BlobSource,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<PullReport, Error> {
        self.enforce_bound()?;
        let before = self.counters();
        let mut work: Vec<(usize, Range<usize>, u64)> = Vec::new();
        for (k, (pack, frames)) in plan.devices.iter().zip(plan.frames_used()).enumerate() {
            let states = pack.states()?;
            let absent: Vec<usize> = frames
                .into_iter()
                .filter(|&i| states.get(i) == Some(&ABSENT))
                .collect();
            let e = pack.entries();
            let mut g = 0;
            while g < absent.len() {
                let first = absent[g];
                let mut h = g + 1;
                while h < absent.len()
                    && absent[h] == absent[h - 1] + 1
                    && e[absent[h]].offset + u64::from(e[absent[h]].stored_len) - e[first].offset
                        <= MAX_REQUEST
                {
                    h += 1;
                }
                let bytes = absent[g..h]
                    .iter()
                    .map(|&i| u64::from(e[i].stored_len))
                    .sum();
                work.push((k, first..absent[h - 1] + 1, bytes));
                g = h;
            }
        }
        let total: u64 = work.iter().map(|w| w.2).sum();
        progress(0, total);
        let queue = Mutex::new(work.into_iter());
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let (tx, rx) = mpsc::channel::<u64>();
        std::thread::scope(|s| {
            for _ in 0..PULL_THREADS {
                let tx = tx.clone();
                let (queue, failed, first_error) = (&queue, &failed, &first_error);
                s.spawn(move || {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        let next = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .next();
                        let Some((k, frames, bytes)) = next else {
                            return;
                        };
                        match plan.devices[k].ensure_frames_of(frames, source) {
                            Ok(()) => {
                                let _ = tx.send(bytes);
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                first_error
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .get_or_insert(e);
                                return;
                            }
                        }
                    }
                });
            }
            drop(tx);
            let mut done = 0;
            for bytes in rx {
                done += bytes;
                progress(done, total);
            }
        });
        if let Some(e) = first_error
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Err(e);
        }
        for pack in &plan.devices {
            pack.sync()?;
        }
        let after = self.counters();
        Ok(PullReport {
            needed_bytes: total,
            requests: after.requests - before.requests,
            fetched_bytes: after.fetched_bytes - before.fetched_bytes,
        })
    }
}

/// Requests a pull keeps in flight.
pub const PULL_THREADS: usize = 4;
