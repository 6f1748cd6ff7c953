//! The store's behaviour on made-up packs served by a `LayoutSource`.

use chunkfs_format::Classify as _;
use std::os::unix::fs::FileExt;

use chunkfs_format::ErrorClass;

use super::testutil::make_pack;
use super::*;
use crate::source::LayoutSource;

fn setup(
    seeds: std::ops::Range<u64>,
) -> (tempfile::TempDir, Store, LayoutSource, testutil::TestPack) {
    let tmp = crate::oci::test_dir();
    let layout = tmp.path().join("layout");
    let tp = make_pack(&layout, seeds, false);
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let source = LayoutSource::new(&layout);
    (tmp, store, source, tp)
}

fn span(p: &Pack, frames: std::ops::Range<usize>) -> std::ops::Range<u64> {
    p.frame_range(frames.start).unwrap().start..p.frame_range(frames.end - 1).unwrap().end
}

#[test]
fn ensure_fetches_only_the_frames_asked_for_merged_into_one_request() {
    let (_tmp, store, source, tp) = setup(0..40);
    let pack = store.add_pack(&tp.digest, tp.len, &source).unwrap();
    assert_eq!(pack.base(), window::SLOT);
    assert_eq!(pack.file_len(), window::SLOT + tp.len);
    assert_eq!(pack.entries().len(), 40);
    let tail = source.stats();
    assert_eq!(tail.requests, 1, "one request for the tail");

    // Frames 3..7, asked for by a range that starts and ends inside them.
    let r = span(&pack, 3..7);
    pack.ensure(r.start + 10..r.end - 10, &source).unwrap();
    let s = source.stats();
    let want: u64 = pack.entries()[3..7]
        .iter()
        .map(|e| u64::from(e.stored_len))
        .sum();
    assert_eq!(
        (s.requests - tail.requests, s.bytes - tail.bytes),
        (1, want)
    );
    // Present now: asking again costs nothing.
    pack.ensure(r.clone(), &source).unwrap();
    assert_eq!(source.stats().requests, s.requests);
    assert_eq!(store.counters().hits, 1);

    // Two scattered frames: two requests.
    pack.ensure(span(&pack, 10..11), &source).unwrap();
    pack.ensure(span(&pack, 20..21), &source).unwrap();
    assert_eq!(source.stats().requests, s.requests + 2);

    let f = pack.fill_state().unwrap();
    assert_eq!((f.frames, f.present), (40, 6));
    let absent = pack.absent_ranges().unwrap();
    assert_eq!(
        absent,
        vec![
            span(&pack, 0..3),
            span(&pack, 7..10),
            span(&pack, 11..20),
            span(&pack, 21..40)
        ]
    );

    // The bytes read back are the blob's.
    let blob = std::fs::read(
        _tmp.path()
            .join("layout/blobs/sha256")
            .join(tp.digest.to_hex()),
    )
    .unwrap();
    let mut buf = vec![0u8; (r.end - r.start) as usize];
    pack.read_at(&mut buf, r.start).unwrap();
    let at = (r.start - pack.base()) as usize;
    assert_eq!(buf, blob[at..at + buf.len()]);
    // Reading an absent frame is refused, not answered with zeros.
    let e = pack
        .read_at(&mut [0u8; 10], span(&pack, 30..31).start)
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Usage, "{e}");
    // So is a range outside the file.
    let e = pack
        .ensure(pack.file_len()..pack.file_len() + 1, &source)
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Usage);
    // A range in the hole before the blob holds no frame.
    pack.ensure(0..4096, &source).unwrap();
}

#[test]
fn requests_are_bounded_and_a_whole_pack_takes_few() {
    let (_tmp, store, source, tp) = setup(0..400);
    let pack = store.add_pack(&tp.digest, tp.len, &source).unwrap();
    let before = source.stats();
    pack.ensure(pack.base()..pack.file_len(), &source).unwrap();
    let s = source.stats();
    let frames: u64 = pack.entries().iter().map(|e| u64::from(e.stored_len)).sum();
    assert!(frames > MAX_REQUEST, "{frames} bytes of frames");
    assert!(s.largest <= MAX_REQUEST, "largest request {}", s.largest);
    assert_eq!(s.bytes - before.bytes, frames);
    // Between 4 and 8 MiB less a frame: one full request and the rest.
    assert!(
        frames < 2 * MAX_REQUEST - (64 << 10),
        "{frames} bytes of frames"
    );
    assert_eq!(s.requests - before.requests, 2);
    assert!(pack.fill_state().unwrap().is_complete());
    assert!(pack.absent_ranges().unwrap().is_empty());
}

#[test]
fn bad_bytes_are_refused_and_nothing_is_written() {
    let (_tmp, store, source, tp) = setup(0..10);
    let pack = store.add_pack(&tp.digest, tp.len, &source).unwrap();
    let r = span(&pack, 2..5);
    source.corrupt_next(1);
    let e = pack.ensure(r.clone(), &source).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Corrupt, "{e}");
    assert!(e.to_string().contains("nothing of it was stored"), "{e}");
    assert_eq!(pack.fill_state().unwrap().present, 0);
    let mut raw = vec![1u8; (r.end - r.start) as usize];
    std::fs::File::open(pack.path())
        .unwrap()
        .read_exact_at(&mut raw, r.start)
        .unwrap();
    assert!(raw.iter().all(|&b| b == 0), "bytes were written");

    source.fail_next(1);
    let e = pack.ensure(r.clone(), &source).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Network, "{e}");

    // The source is fine again: the same request succeeds.
    pack.ensure(r, &source).unwrap();
    assert_eq!(pack.fill_state().unwrap().present, 3);
}

#[test]
fn a_lying_index_or_length_is_refused() {
    let (tmp, store, source, tp) = setup(0..5);
    // A pack length that is not the blob's: the source refuses, nothing is added.
    let e = store
        .add_pack(&tp.digest, tp.len + 4096, &source)
        .unwrap_err();
    assert!(matches!(e.class(), ErrorClass::Corrupt), "{e}");
    assert!(store.pack(&tp.digest).unwrap().is_none());
    let e = store.add_pack(&tp.digest, 1 << 50, &source).unwrap_err();
    assert!(e.to_string().contains("outside what a pack may be"), "{e}");
    // A pack known here with one length and claimed with another.
    store.add_pack(&tp.digest, tp.len, &source).unwrap();
    let e = store
        .add_pack(&tp.digest, tp.len + 4096, &source)
        .unwrap_err();
    assert!(e.to_string().contains("the store has it with"), "{e}");
    // A blob whose tail is no pack index.
    let layout = crate::oci::layout::Layout::open(&tmp.path().join("layout")).unwrap();
    let junk = vec![7u8; 8192];
    let (d, _) = layout.put_blob(&junk).unwrap();
    let e = store.add_pack(&d, 8192, &source).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Corrupt);
    assert!(e.to_string().contains("trailer"), "{e}");
}

#[test]
fn a_sink_receives_the_writes() {
    let (_tmp, store, source, tp) = setup(0..6);
    let pack = store.add_pack(&tp.digest, tp.len, &source).unwrap();
    let sink = std::fs::OpenOptions::new()
        .write(true)
        .open(pack.path())
        .unwrap();
    let r = span(&pack, 1..3);
    pack.ensure_with(r.clone(), &source, &sink).unwrap();
    let mut buf = vec![0u8; (r.end - r.start) as usize];
    pack.read_at(&mut buf, r.start).unwrap();
    assert!(buf.iter().any(|&b| b != 0));
    assert!(
        pack.lock_holders(r).unwrap().is_empty(),
        "our own locks are not reported"
    );
}

#[test]
fn written_frames_are_synced_and_repaired_after_a_reboot() {
    let (_tmp, store, source, tp) = setup(0..8);
    let pack = store.add_pack(&tp.digest, tp.len, &source).unwrap();
    pack.ensure(pack.base()..pack.file_len(), &source).unwrap();
    // Written in state 2 (unless a syncer, of this process's other tests too, already ran).
    assert_eq!(pack.fill_state().unwrap().present, 8);
    store.sync().unwrap();
    assert_eq!(pack.fill_state().unwrap().unsynced, 0);
    let (pack_path, bad_at) = (
        pack.path().to_owned(),
        pack.frame_range(5).unwrap().start + 9,
    );
    drop(pack);

    // Pretend the frames were written in another boot and never synced, and frame 5's
    // bytes did not reach the disk. The state file is replaced (a new inode), as a new boot
    // would open it.
    let state_path = pack::with_ext(&pack_path, "state");
    let mut state = std::fs::read(&state_path).unwrap();
    state[40..56].copy_from_slice(&[0xAB; 16]);
    for s in &mut state[64..] {
        *s = state::WRITTEN;
    }
    files::write_atomic(&store.tmp_dir(), &state_path, &state).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&pack_path)
        .unwrap();
    f.write_all_at(&[0xFF; 4], bad_at).unwrap();

    let pack = store.pack(&tp.digest).unwrap().unwrap();
    assert_eq!(pack.states().unwrap(), vec![1, 1, 1, 1, 1, 0, 1, 1]);
    assert_eq!(store.counters().repaired, 8);
    let header = std::fs::read(&state_path).unwrap();
    assert_eq!(header[40..56], proc::boot_id().unwrap());
    // Frame 5 is fetched again.
    pack.ensure(pack.frame_range(5).unwrap(), &source).unwrap();
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn windows_are_disjoint_and_freed_slots_are_reused() {
    let tmp = crate::oci::test_dir();
    let layout = tmp.path().join("layout");
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let source = LayoutSource::new(&layout);
    let packs: Vec<_> = (0..4)
        .map(|i| make_pack(&layout, i * 10..i * 10 + 3, i % 2 == 1))
        .collect();
    let mut bases = Vec::new();
    for tp in &packs[..3] {
        bases.push(store.add_pack(&tp.digest, tp.len, &source).unwrap().base());
    }
    assert_eq!(
        bases,
        vec![window::SLOT, 2 * window::SLOT, 3 * window::SLOT]
    );
    // Nothing pins them: gc removes them; a dry run lists the same files first.
    let dry = store.gc(true).unwrap();
    assert_eq!(store.pack_digests().unwrap().len(), 3);
    let real = store.gc(false).unwrap();
    assert_eq!(dry, real);
    assert_eq!(real.removed.len(), 9);
    assert!(store.pack_digests().unwrap().is_empty());
    let p = store
        .add_pack(&packs[3].digest, packs[3].len, &source)
        .unwrap();
    assert_eq!(p.base(), window::SLOT, "the lowest freed slot");
}

#[test]
fn damaged_state_and_index_files_are_named() {
    let (_tmp, store, source, tp) = setup(0..4);
    let pack = store.add_pack(&tp.digest, tp.len, &source).unwrap();
    let path = pack.path().to_owned();
    drop(pack);
    let index = pack::with_ext(&path, "index");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[40] ^= 1;
    files::write_atomic(&store.tmp_dir(), &index, &bytes).unwrap();
    let e = store.pack(&tp.digest).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Corrupt);
    assert!(
        e.to_string()
            .contains(&format!("{}.index", tp.digest.to_hex())),
        "{e}"
    );
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0]
            .path
            .ends_with(format!("{}.index", tp.digest.to_hex()))
    );

    let state = pack::with_ext(&path, "state");
    files::write_atomic(&store.tmp_dir(), &state, b"CFSSTAT1 short").unwrap();
    let e = store.pack(&tp.digest).unwrap_err();
    assert!(e.to_string().contains(".state"), "{e}");
    assert!(e.to_string().contains("shorter than its header"), "{e}");
}

/// A source that answers ranges with the wrong number of bytes.
struct Short(LayoutSource, i64);

impl crate::source::BlobSource for Short {
    fn read_range(
        &self,
        blob: &chunkfs_format::digest::Digest,
        blob_len: u64,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, crate::source::SourceError> {
        let mut v = self.0.read_range(blob, blob_len, range)?;
        if self.1 < 0 {
            v.truncate(v.len().saturating_sub(self.1.unsigned_abs() as usize));
        } else {
            v.extend(std::iter::repeat_n(0, self.1 as usize));
        }
        Ok(v)
    }
    fn read_blob(
        &self,
        blob: &chunkfs_format::digest::Digest,
        max_len: u64,
    ) -> Result<Vec<u8>, crate::source::SourceError> {
        self.0.read_blob(blob, max_len)
    }
    fn name(&self) -> String {
        "short".into()
    }
}

#[test]
fn answers_of_the_wrong_length_are_refused() {
    let (tmp, store, source, tp) = setup(0..6);
    let pack = store.add_pack(&tp.digest, tp.len, &source).unwrap();
    for delta in [-1i64, 1, -100] {
        let short = Short(LayoutSource::new(&tmp.path().join("layout")), delta);
        let e = pack.ensure(span(&pack, 1..3), &short).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Corrupt);
        assert!(
            e.to_string().contains("short") && e.to_string().contains("bytes"),
            "{e}"
        );
        assert_eq!(pack.fill_state().unwrap().present, 0);
        let other = make_pack(&tmp.path().join("layout"), 100..101, false);
        let e = store
            .add_pack(&other.digest, other.len, &short)
            .unwrap_err();
        assert_eq!(e.class(), ErrorClass::Corrupt, "{e}");
    }
}
