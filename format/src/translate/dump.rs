//! A readable listing of a descriptor from the writer's own plan (`chunkfs descriptor --dump`).
//! Temporary: a dump of the parsed descriptor (kernel-abi) replaces it once that exists.

use std::fmt::Write as _;

use super::ExtentLayout;
use super::plan::{Data, Node, Stats};
use super::superblock::{Head, incompat_names};
use crate::model::{Image, InodeKind};

/// The plan's nodes, kept for rendering on demand.
#[derive(Clone, Debug, Default)]
pub(super) struct Summary {
    nodes: Vec<Node>,
}

fn describe(n: &Node) -> String {
    match &n.data {
        Data::None => "none".to_string(),
        Data::Flat { size, tail } if *tail > 0 => format!(
            "flat-inline {size} bytes ({tail} inline, blocks from {})",
            n.first_block
        ),
        Data::Flat { size, .. } => {
            format!("flat-plain {size} bytes (blocks from {})", n.first_block)
        }
        Data::Extents { count, recsz } => format!("extents {count} x {recsz} B"),
        Data::Clusters(p) => format!("clusters {} x {} B lclusters", p.indexes, 1u64 << p.bits),
        Data::Fragment { offset } => format!("fragment at {offset}"),
    }
}

impl Summary {
    pub fn new(nodes: Vec<Node>) -> Self {
        Self { nodes }
    }

    pub fn render(&self, image: &Image, head: &Head, stats: &Stats) -> String {
        let sb = head.superblock();
        let layout =
            if sb.feature_incompat.get() & chunkfs_kernel_abi::erofs::FEATURE_INCOMPAT_48BIT != 0 {
                ExtentLayout::Bit48
            } else {
                ExtentLayout::Clusters
            };
        let mut s = String::new();
        let _ = writeln!(s, "superblock:");
        let _ = writeln!(s, "  block size      {}", 1u64 << sb.blkszbits);
        let _ = writeln!(
            s,
            "  incompat        {:#x} {:?}",
            sb.feature_incompat.get(),
            incompat_names(sb.feature_incompat.get(), layout)
        );
        let _ = writeln!(s, "  compat          {:#x}", sb.feature_compat.get());
        let _ = writeln!(s, "  root nid        {}", stats.root_nid);
        let _ = writeln!(s, "  packed nid      {}", sb.packed_nid.get());
        let _ = writeln!(s, "  inodes          {}", sb.inos.get());
        let _ = writeln!(
            s,
            "  epoch           {} s + {} ns",
            sb.epoch.get() as i64,
            sb.fixed_nsec.get()
        );
        let _ = writeln!(s, "  meta blkaddr    {}", sb.meta_blkaddr.get());
        let _ = writeln!(s, "  extra devices   {}", sb.extra_devices.get());
        for k in 1..=sb.extra_devices.get() {
            let _ = writeln!(
                s,
                "    device {k}: unified base {}",
                head.device_base(k).unwrap_or(0)
            );
        }
        let _ = writeln!(s, "metadata area     {} bytes", stats.meta_bytes);
        let _ = writeln!(
            s,
            "inodes            {} compact, {} extended; {} fragments; {} extent records; {} lcluster indexes",
            stats.inodes_compact,
            stats.inodes_extended,
            stats.fragments,
            stats.extent_records,
            stats.lcluster_indexes
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let form = if n.core.extended { "ext" } else { "cmp" };
            let data = describe(n);
            match image.inodes.get(i) {
                Some(ino) => {
                    let kind = match ino.kind {
                        InodeKind::Directory(_) => "dir",
                        InodeKind::File(_) => "file",
                        InodeKind::Symlink(_) => "symlink",
                        InodeKind::Device { .. } => "device",
                        InodeKind::Special => "special",
                    };
                    let _ = writeln!(
                        s,
                        "inode {i:>6} nid {:>8} {form} {kind:<7} mode {:o} uid {} gid {} mtime {}.{:09}: {}",
                        n.nid(),
                        ino.mode,
                        ino.uid,
                        ino.gid,
                        ino.mtime_sec,
                        ino.mtime_nsec,
                        data
                    );
                }
                None => {
                    let _ = writeln!(s, "packed     nid {:>8} {form} file: {data}", n.nid());
                }
            }
        }
        s
    }
}
