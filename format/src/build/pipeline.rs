//! The worker pool behind [`super::Builder`]: hash and compress in parallel, number and write in
//! order.
//!
//! The caller (producer) submits chunks with increasing sequence numbers. Workers hash them; a
//! coordinator thread takes the hashes back in sequence order, gives each new digest the next
//! chunk number (so numbering is a pure function of the submission order), sends new chunks
//! back to the workers for compression, and hands the frames to the sink in chunk order.
//! A semaphore of `slots` bounds the chunks in flight, hence the memory, and makes every channel
//! bounded by it, so unbounded channels cannot grow and no send can deadlock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::{ChunkSink, Error, KnownFn, Progress};
use crate::compress::Encoder;
use crate::digest::Digest;
use crate::model::{ChunkIdx, ChunkInfo};
use crate::translate::ChunkLocation;

enum Job {
    Hash { seq: u64, data: Vec<u8> },
    Compress { idx: ChunkIdx, data: Vec<u8> },
}

enum Msg {
    Hashed {
        seq: u64,
        digest: Digest,
        data: Vec<u8>,
    },
    Compressed {
        idx: ChunkIdx,
        frame: Result<Vec<u8>, crate::compress::Error>,
    },
    Done {
        total: u64,
    },
    Abort,
}

/// What the coordinator hands back.
pub(super) struct Finished<S> {
    pub chunks: Vec<ChunkInfo>,
    pub locations: Vec<Option<ChunkLocation>>,
    pub seq_to_idx: Vec<ChunkIdx>,
    pub sink: S,
}

pub(super) struct Pipeline<S: ChunkSink> {
    jobs: Option<Sender<Job>>,
    results: Sender<Msg>,
    slots: Sender<()>,
    failed: Arc<AtomicBool>,
    next_seq: u64,
    coordinator: Option<JoinHandle<Result<Finished<S>, Error>>>,
    workers: Vec<JoinHandle<()>>,
}

impl<S: ChunkSink> Pipeline<S> {
    pub fn start(
        jobs: usize,
        level: i32,
        sink: S,
        known: Option<KnownFn>,
        progress: Arc<Progress>,
    ) -> Result<Self, Error> {
        let jobs = jobs.max(1);
        // Encoders are made here so a bad level fails before any thread starts.
        let encoders = (0..jobs)
            .map(|_| Encoder::new(level))
            .collect::<Result<Vec<_>, _>>()?;
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Job>();
        let (results_tx, results_rx) = crossbeam_channel::unbounded::<Msg>();
        let (slots_tx, slots_rx) = crossbeam_channel::bounded::<()>(4 * jobs + 8);
        let failed = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(jobs);
        for (i, encoder) in encoders.into_iter().enumerate() {
            let (rx, tx) = (jobs_rx.clone(), results_tx.clone());
            let handle = std::thread::Builder::new()
                .name(format!("chunkfs-worker-{i}"))
                .spawn(move || worker(encoder, rx, tx))
                .map_err(Error::Thread)?;
            workers.push(handle);
        }
        drop(jobs_rx);
        let coordinator = Coordinator {
            jobs: jobs_tx.clone(),
            slots: slots_rx,
            known,
            progress,
            failed: failed.clone(),
            hashed: BTreeMap::new(),
            next_seq: 0,
            total: None,
            by_digest: HashMap::new(),
            chunks: Vec::new(),
            locations: Vec::new(),
            seq_to_idx: Vec::new(),
            frames: BTreeMap::new(),
            next_write: 0,
        };
        let handle = std::thread::Builder::new()
            .name("chunkfs-writer".into())
            .spawn(move || coordinator.run(results_rx, sink))
            .map_err(Error::Thread)?;
        Ok(Self {
            jobs: Some(jobs_tx),
            results: results_tx,
            slots: slots_tx,
            failed,
            next_seq: 0,
            coordinator: Some(handle),
            workers,
        })
    }

    /// Queues a chunk; returns its sequence number. Blocks while too many chunks are in flight.
    pub fn submit(&mut self, data: Vec<u8>) -> Result<u64, Error> {
        if self.failed.load(Ordering::Relaxed) || self.slots.send(()).is_err() {
            return Err(self.shut_down_with_error());
        }
        let seq = self.next_seq;
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|j| j.send(Job::Hash { seq, data }).is_ok());
        if !sent {
            return Err(self.shut_down_with_error());
        }
        self.next_seq += 1;
        Ok(seq)
    }

    /// Waits for every chunk to be written and returns the result.
    pub fn finish(mut self) -> Result<Finished<S>, Error> {
        let _ = self.results.send(Msg::Done {
            total: self.next_seq,
        });
        self.join()
    }

    fn join(&mut self) -> Result<Finished<S>, Error> {
        self.jobs = None;
        let result = match self.coordinator.take() {
            Some(handle) => handle.join().unwrap_or(Err(Error::WorkerPanicked)),
            None => Err(Error::Aborted),
        };
        // The coordinator has dropped its job sender and we ours: workers see the end and exit.
        let mut panicked = false;
        for w in self.workers.drain(..) {
            panicked |= w.join().is_err();
        }
        if panicked && result.is_ok() {
            return Err(Error::WorkerPanicked);
        }
        result
    }

    fn shut_down_with_error(&mut self) -> Error {
        let _ = self.results.send(Msg::Abort);
        match self.join() {
            Err(e) => e,
            Ok(_) => Error::Aborted,
        }
    }
}

impl<S: ChunkSink> Drop for Pipeline<S> {
    fn drop(&mut self) {
        if self.coordinator.is_some() {
            let _ = self.results.send(Msg::Abort);
            let _ = self.join();
        }
    }
}

fn worker(mut encoder: Encoder, jobs: Receiver<Job>, results: Sender<Msg>) {
    for job in jobs {
        let msg = match job {
            Job::Hash { seq, data } => Msg::Hashed {
                seq,
                digest: Digest::of(&data),
                data,
            },
            Job::Compress { idx, data } => Msg::Compressed {
                idx,
                frame: encoder.encode(&data),
            },
        };
        if results.send(msg).is_err() {
            return;
        }
    }
}

struct Coordinator {
    jobs: Sender<Job>,
    slots: Receiver<()>,
    known: Option<KnownFn>,
    progress: Arc<Progress>,
    failed: Arc<AtomicBool>,
    /// Hashed chunks waiting for their turn, by sequence number.
    hashed: BTreeMap<u64, (Digest, Vec<u8>)>,
    next_seq: u64,
    total: Option<u64>,
    by_digest: HashMap<Digest, ChunkIdx>,
    chunks: Vec<ChunkInfo>,
    locations: Vec<Option<ChunkLocation>>,
    seq_to_idx: Vec<ChunkIdx>,
    /// Frames waiting for their turn; `None` for chunks known elsewhere (nothing to write).
    frames: BTreeMap<ChunkIdx, Option<Vec<u8>>>,
    next_write: ChunkIdx,
}

impl Coordinator {
    fn run<S: ChunkSink>(
        mut self,
        results: Receiver<Msg>,
        mut sink: S,
    ) -> Result<Finished<S>, Error> {
        let outcome = self.run_inner(&results, &mut sink);
        if outcome.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        outcome?;
        Ok(Finished {
            chunks: self.chunks,
            locations: self.locations,
            seq_to_idx: self.seq_to_idx,
            sink,
        })
    }

    fn run_inner<S: ChunkSink>(
        &mut self,
        results: &Receiver<Msg>,
        sink: &mut S,
    ) -> Result<(), Error> {
        loop {
            if self.total == Some(self.next_seq) && self.next_write as usize == self.chunks.len() {
                return Ok(());
            }
            match results.recv().map_err(|_| Error::Aborted)? {
                Msg::Hashed { seq, digest, data } => {
                    self.hashed.insert(seq, (digest, data));
                    while let Some((digest, data)) = self.hashed.remove(&self.next_seq) {
                        self.next_seq += 1;
                        self.number(digest, data)?;
                    }
                }
                Msg::Compressed { idx, frame } => {
                    self.frames.insert(idx, Some(frame?));
                }
                Msg::Done { total } => self.total = Some(total),
                Msg::Abort => return Err(Error::Aborted),
            }
            while let Some(frame) = self.frames.remove(&self.next_write) {
                let idx = self.next_write;
                let info = self.chunks[idx as usize];
                let location = match frame {
                    Some(frame) => {
                        let loc = sink
                            .write_frame(idx, &info, &frame)
                            .map_err(|source| Error::Sink { chunk: idx, source })?;
                        self.progress
                            .stored_bytes
                            .fetch_add(frame.len() as u64, Ordering::Relaxed);
                        Some(loc)
                    }
                    None => None,
                };
                self.locations.push(location);
                self.next_write += 1;
                self.release();
            }
        }
    }

    /// Gives the chunk at the head of the sequence its number.
    fn number(&mut self, digest: Digest, data: Vec<u8>) -> Result<(), Error> {
        self.progress.chunk_refs.fetch_add(1, Ordering::Relaxed);
        if let Some(&idx) = self.by_digest.get(&digest) {
            self.seq_to_idx.push(idx);
            self.release();
            return Ok(());
        }
        let idx = ChunkIdx::try_from(self.chunks.len()).map_err(|_| Error::TooManyChunks)?;
        self.by_digest.insert(digest, idx);
        // Chunk sizes come from our own chunker, at most CHUNK_MAX.
        self.chunks.push(ChunkInfo {
            digest,
            size: data.len() as u32,
        });
        self.seq_to_idx.push(idx);
        self.progress.unique_chunks.fetch_add(1, Ordering::Relaxed);
        if self.known.as_ref().is_some_and(|known| known(&digest)) {
            self.frames.insert(idx, None);
        } else {
            self.jobs
                .send(Job::Compress { idx, data })
                .map_err(|_| Error::Aborted)?;
        }
        Ok(())
    }

    fn release(&self) {
        // Never blocks: the producer put one token in per chunk before submitting it.
        let _ = self.slots.try_recv();
    }
}
