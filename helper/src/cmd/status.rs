//! `chunkfs status [MOUNTPOINT]`: the chunkfs mounts, and for registry mounts what they
//! fetched and from where, the reader and its daemon, and how full each pack is
//! (docs/mount.chunkfs.8.md, "chunkfs status").

use std::path::{Path, PathBuf};

use chunkfs_distribution::store::Store;
use chunkfs_format::digest::Digest;
use serde::Serialize;

use crate::Error;
use crate::lazy::status::{DaemonStats, MountRecord};
use crate::mount::mountinfo;

/// Arguments of `chunkfs status`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs status\n",
    "  chunkfs status /mnt\n",
    "  chunkfs status --json /mnt\n\n",
    "For a registry mount: the image and whether it was resolved offline, the reader (kernel,\n",
    "kernel+filler, fuse) and whether its daemon is alive, the plan made at mount time (chunks\n",
    "already in the store, shared with other images, to fetch), bytes and requests fetched from\n",
    "the registry since, cache hits, requests in flight, errors, and the share of each pack's\n",
    "frames the mount reads that are present.\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// Only this mount point.
    pub target: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// How full one pack is, counting the frames the mount reads.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PackFill {
    /// The pack's digest.
    pub digest: String,
    /// Frames the mount reads from it.
    pub frames: u64,
    /// Of which present.
    pub present: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes present.
    pub present_bytes: u64,
}

/// One mount as `chunkfs status` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct MountStatus {
    /// The mount point.
    pub mount_point: PathBuf,
    /// The mount's source.
    pub source: String,
    /// `erofs` or `fuse.chunkfs`.
    pub fstype: String,
    /// For a registry mount: how it was made.
    pub record: Option<MountRecord>,
    /// Whether its daemon is alive.
    pub daemon_alive: Option<bool>,
    /// What the daemon published last.
    pub stats: Option<DaemonStats>,
    /// How full each pack is.
    pub packs: Vec<PackFill>,
}

/// The chunkfs mounts (all, or the one at `target`), with what their records say. Records of
/// mounts that are gone (and whose daemon is gone) are removed on the way.
pub fn collect(target: Option<&Path>) -> Result<Vec<MountStatus>, Error> {
    let table = mountinfo::read().map_err(|e| Error::io(format!("/proc/self/mountinfo: {e}")))?;
    let records = MountRecord::all();
    for r in &records {
        let mounted = table.iter().any(|m| m.id == r.mount_id);
        let alive = r.daemon_pid.is_some_and(crate::lazy::status::daemon_alive);
        if !mounted && !alive {
            crate::lazy::status::remove(&r.id);
        }
    }
    let target = target
        .map(|t| std::fs::canonicalize(t).map_err(|e| Error::io(format!("{}: {e}", t.display()))))
        .transpose()?;
    let mut out = Vec::new();
    for m in table {
        if m.fstype != "erofs" && m.fstype != "fuse.chunkfs" {
            continue;
        }
        if target.as_ref().is_some_and(|t| *t != m.mount_point) {
            continue;
        }
        // The newest: the kernel reuses the ids of mounts that are gone.
        let record = records.iter().rev().find(|r| r.mount_id == m.id).cloned();
        let stats = record.as_ref().and_then(|r| DaemonStats::read(&r.id));
        let daemon_alive = record
            .as_ref()
            .and_then(|r| r.daemon_pid)
            .map(crate::lazy::status::daemon_alive);
        let packs = record.as_ref().map(fill_of).unwrap_or_default();
        out.push(MountStatus {
            mount_point: m.mount_point,
            source: m.source,
            fstype: m.fstype,
            record,
            daemon_alive,
            stats,
            packs,
        });
    }
    if let (Some(t), true) = (&target, out.is_empty()) {
        return Err(Error::usage(format!(
            "{}: not a chunkfs mount point",
            t.display()
        )));
    }
    Ok(out)
}

/// How full each pack of a registry mount is (read from the store's state files).
fn fill_of(r: &MountRecord) -> Vec<PackFill> {
    let Ok(store) = Store::open(&r.store) else {
        return Vec::new();
    };
    r.packs
        .iter()
        .zip(&r.used)
        .filter_map(|(hex, used)| {
            let pack = store.pack(&Digest::from_hex(hex)?).ok()??;
            let states = pack.states().ok()?;
            let mut f = PackFill {
                digest: format!("sha256:{hex}"),
                frames: used.len() as u64,
                present: 0,
                bytes: 0,
                present_bytes: 0,
            };
            for &i in used {
                let len = pack
                    .entries()
                    .get(i as usize)
                    .map_or(0, |e| u64::from(e.stored_len));
                f.bytes += len;
                if states.get(i as usize).is_some_and(|&s| s != 0) {
                    f.present += 1;
                    f.present_bytes += len;
                }
            }
            Some(f)
        })
        .collect()
}

/// `1234567` as `1.2 MB`.
fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

fn print(s: &MountStatus) {
    println!("{}  {}  ({})", s.mount_point.display(), s.source, s.fstype);
    let Some(r) = &s.record else {
        let reader = if s.fstype == "erofs" {
            "kernel"
        } else {
            "fuse"
        };
        println!("  reader   {reader}");
        return;
    };
    println!("  image    {} (metadata {})", r.pinned, r.metadata);
    if let Some(why) = &r.offline {
        println!("  offline  {why}");
    }
    let daemon = match (r.daemon_pid, s.daemon_alive) {
        (None, _) => "no daemon".to_owned(),
        (Some(pid), Some(true)) => format!("pid {pid}, alive"),
        (Some(pid), _) => match s.stats.as_ref().and_then(|st| st.ended.clone()) {
            Some(why) => format!("pid {pid}, exited: {why}"),
            None => format!(
                "pid {pid}, DEAD (reads of frames not yet present fail: `chunkfs refill {}`)",
                s.mount_point.display()
            ),
        },
    };
    println!("  reader   {} ({daemon}): {}", r.reader, r.reason);
    let p = &r.plan;
    println!(
        "  plan     {} chunks: {} already in the store, {} shared with other images, {} to fetch ({} in {} frames); {} present when mounted",
        p.chunks,
        p.own,
        p.shared,
        p.fetch,
        bytes(p.missing_bytes),
        p.missing_frames,
        bytes(p.present_bytes)
    );
    if let Some(st) = &s.stats {
        let c = &st.store;
        println!(
            "  fetched  {} from the registry in {} requests ({} frames); {} reads hit the store; {} in flight; {} errors; {} HTTP requests, {} retries",
            bytes(c.fetched_bytes),
            c.requests,
            c.frames_fetched,
            c.hits,
            c.in_flight,
            c.errors,
            st.registry.requests,
            st.registry.retries
        );
        if let Some(f) = &st.filler {
            println!(
                "  filler   {} events: {} answered at once, {} filled, {} failed, {} timed out; {} packs completed",
                f.events, f.at_once, f.filled, f.failed, f.timed_out, f.completed
            );
        }
        if !st.background.is_empty() {
            println!("  backgrnd {}", st.background);
        }
        if let Some(e) = &st.last_error {
            println!("  error    {e}");
        }
    }
    for f in &s.packs {
        let pct = if f.bytes == 0 {
            100.0
        } else {
            f.present_bytes as f64 * 100.0 / f.bytes as f64
        };
        println!(
            "  pack     {} {pct:.0}% present ({} of {}, {} of {} frames)",
            f.digest,
            bytes(f.present_bytes),
            bytes(f.bytes),
            f.present,
            f.frames
        );
    }
}

/// Runs `chunkfs status`.
pub fn run(args: &Args) -> Result<(), Error> {
    let all = collect(args.target.as_deref())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&all).map_err(|e| Error::usage(format!("status: {e}")))?
        );
        return Ok(());
    }
    if all.is_empty() {
        println!("no chunkfs mounts");
    }
    for s in &all {
        print(s);
    }
    Ok(())
}
