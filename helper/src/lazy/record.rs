//! `-o record=FILE` on the lazy kernel path: the filler notes every pre-content event on the
//! mount's pack files, present bytes or not (the files stay marked while it records), maps the
//! event's bytes to the frames they overlap through the packs' indexes, and keeps each frame's
//! chunk digest once, in first-touch order. The list is the FUSE recorder's format
//! (docs/format.md §3.6), so `chunkfs pack --prefetch FILE` takes it unchanged; it names what
//! the kernel read, its readahead of the pack files included, which is what a replay on this
//! path must make present.
//!
//! Written as the FUSE recorder writes it ([`crate::mount::record`]): when the filler starts
//! (empty: an unwritable FILE fails the mount), on SIGUSR1, and when the filler exits (on
//! unmount, or when stopped).

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chunkfs_distribution::store::Pack;

use super::filler::{FillError, FillSource};

/// One frame the mount reads: its bytes in the pack file and its chunk's sha256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's bytes in the pack file.
    pub range: Range<u64>,
    /// The sha256 of its decompressed chunk.
    pub digest: [u8; 32],
}

#[derive(Default)]
struct Order {
    seen: HashSet<[u8; 32]>,
    digests: Vec<[u8; 32]>,
}

/// The frames touched so far, in first-touch order, and where they go.
pub struct Recording {
    /// Per file: the frames the mount reads, in offset order (never overlapping).
    frames: Vec<Vec<Frame>>,
    order: Mutex<Order>,
    path: PathBuf,
    /// Writes one at a time, so a late snapshot never replaces the final list.
    writing: Mutex<()>,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("path", &self.path)
            .field("chunks", &self.len())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recording {
    /// A recording of reads of `frames` (per file, any order) written to `path`.
    pub fn new(mut frames: Vec<Vec<Frame>>, path: &Path) -> Self {
        for f in &mut frames {
            f.sort_by_key(|x| x.range.start);
        }
        Self {
            frames,
            order: Mutex::new(Order::default()),
            path: path.to_owned(),
            writing: Mutex::new(()),
        }
    }

    /// The frames `used` (index positions) of each of `packs`, as pack-file ranges.
    pub fn of_packs(packs: &[Arc<Pack>], used: &[Vec<usize>], path: &Path) -> Self {
        let frames = packs
            .iter()
            .zip(used)
            .map(|(pack, used)| {
                used.iter()
                    .filter_map(|&i| {
                        Some(Frame {
                            range: pack.frame_range(i)?,
                            digest: pack.entries().get(i)?.digest.0,
                        })
                    })
                    .collect()
            })
            .collect();
        Self::new(frames, path)
    }

    /// Notes a read of `range` of file `file`: the frames it needs (those it overlaps but the
    /// tail of the frame before, [`super::reads`]), in offset order, each the first time.
    pub fn note(&self, file: usize, range: &Range<u64>) {
        let Some(frames) = self.frames.get(file) else {
            return;
        };
        let mut first = frames.partition_point(|f| f.range.end <= range.start);
        if frames
            .get(first)
            .is_some_and(|f| super::reads::is_tail_before(&f.range, range))
        {
            first += 1;
        }
        let touched = frames
            .get(first..)
            .unwrap_or_default()
            .iter()
            .take_while(|f| f.range.start < range.end);
        let mut o = lock(&self.order);
        for f in touched {
            if o.seen.insert(f.digest) {
                o.digests.push(f.digest);
            }
        }
    }

    /// Chunks recorded so far.
    pub fn len(&self) -> usize {
        lock(&self.order).digests.len()
    }

    /// True before the first touch of a frame.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunk digests, in first-touch order.
    pub fn digests(&self) -> Vec<[u8; 32]> {
        lock(&self.order).digests.clone()
    }

    /// The file the list goes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the list as recorded so far, atomically, in the FUSE recorder's format
    /// ([`chunkfs_reader::write_prefetch_list`]). Returns the number of chunks.
    pub fn write(&self) -> std::io::Result<usize> {
        let _one = lock(&self.writing);
        let digests = self.digests();
        chunkfs_reader::write_prefetch_list(&self.path, &digests)?;
        Ok(digests.len())
    }

    /// Writes the list, reporting the outcome on standard error (the filler's, which is the
    /// helper's with `debug`).
    pub fn write_logged(&self, why: &str) {
        crate::mount::record::log_written(super::daemon::ARGV0, why, &self.path, self.write());
    }
}

/// A [`FillSource`] that notes every event in a [`Recording`] and fills through another.
pub struct RecordingSource {
    inner: Arc<dyn FillSource>,
    recording: Arc<Recording>,
}

impl RecordingSource {
    /// `inner`, recording into `recording`.
    pub fn new(inner: Arc<dyn FillSource>, recording: Arc<Recording>) -> Self {
        Self { inner, recording }
    }
}

impl FillSource for RecordingSource {
    fn ready(&self, file: usize, range: Range<u64>, pid: i32) -> bool {
        self.inner.ready(file, range, pid)
    }

    fn fill(
        &self,
        file: usize,
        range: Range<u64>,
        pid: i32,
        out: &std::fs::File,
    ) -> Result<(), FillError> {
        self.inner.fill(file, range, pid, out)
    }

    fn absent(&self, file: usize) -> Vec<Range<u64>> {
        self.inner.absent(file)
    }

    fn is_complete(&self, file: usize) -> bool {
        self.inner.is_complete(file)
    }

    fn note(&self, file: usize, range: &Range<u64>) {
        self.recording.note(file, range);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::reads;
    use super::*;

    fn frame(start: u64, end: u64, tag: u8) -> Frame {
        Frame {
            range: start..end,
            digest: [tag; 32],
        }
    }

    /// One page: the kernel reads pack files in pages.
    const P: u64 = reads::PAGE;

    #[test]
    fn frames_are_recorded_once_in_first_touch_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list");
        // Two files; the frames are given out of order and leave gaps (frames the mount does
        // not read); file 1 shares a chunk with file 0.
        let r = Recording::new(
            vec![
                vec![
                    frame(300 * P, 400 * P, 3),
                    frame(0, 100 * P, 1),
                    frame(100 * P, 250 * P, 2),
                    frame(500 * P, 600 * P, 4),
                ],
                vec![frame(0, 50 * P, 9), frame(50 * P, 80 * P, 2)],
            ],
            &path,
        );
        assert!(r.is_empty());
        r.note(0, &(320 * P..330 * P)); // inside frame 3
        r.note(0, &(90 * P..310 * P)); // 1, 2, 3 (again): 1 and 2 in offset order
        r.note(0, &(250 * P..300 * P)); // the gap: nothing
        r.note(1, &(60 * P..70 * P)); // chunk 2 again, through another file
        r.note(1, &(0..10 * P)); // 9
        r.note(0, &(600 * P..700 * P)); // past the end
        r.note(7, &(0..100 * P)); // not a file
        r.note(0, &(598 * P..600 * P)); // the last pages of 4
        let tags: Vec<u8> = r.digests().iter().map(|d| d[0]).collect();
        assert_eq!(tags, [3, 1, 2, 9, 4]);
        assert_eq!(r.write().unwrap(), 5);
        let text = std::fs::read_to_string(&path).unwrap();
        let back = chunkfs_format::prefetch::parse(&text).unwrap();
        let back: Vec<u8> = back.iter().map(|d| d.0[0]).collect();
        assert_eq!(back, [3, 1, 2, 9, 4]);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_tail_of_the_frame_before_a_read_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        // Frames packed back to back, sharing pages: 1 ends 100 bytes into page 3, where 2
        // starts; 2 ends 10 bytes into page 8, where 3 starts.
        let r = Recording::new(
            vec![vec![
                frame(0, 3 * P + 100, 1),
                frame(3 * P + 100, 8 * P + 10, 2),
                frame(8 * P + 10, 20 * P, 3),
            ]],
            &dir.path().join("list"),
        );
        // The kernel reads frame 2 from its first page: 1's tail is there, not needed; 3's head
        // is in its last page and counts (a frame cut across two pieces of one read looks the
        // same there, and must be filled).
        r.note(0, &(3 * P..9 * P));
        let tags: Vec<u8> = r.digests().iter().map(|d| d[0]).collect();
        assert_eq!(tags, [2, 3]);
        // A later piece of a read of 3 holds only its later pages: nothing new.
        r.note(0, &(12 * P..20 * P));
        assert_eq!(r.len(), 2);
        // Frame 1 read whole.
        r.note(0, &(0..4 * P));
        let tags: Vec<u8> = r.digests().iter().map(|d| d[0]).collect();
        assert_eq!(tags, [2, 3, 1]);
    }
}
