//! Pass 1 of layer conversion: applying layers' tar headers, in order, to an in-memory tree
//! (docs/format.md §7.8).
//!
//! The tree is paths and metadata only; nothing is written to disk, so no entry can reach
//! outside the image. Rules (those of docker's and containerd's layer application unless noted):
//! - paths are relative to the image root: a leading `/`, `.` components and repeated slashes
//!   are dropped; a `..` component or a NUL byte is an error (stricter than docker, which cleans
//!   `..` lexically);
//! - an entry under a path that is a symlink in the merged tree is an error (docker resolves it
//!   inside the root; chunkfs refuses, since such layers are either hostile or broken); missing
//!   parent directories are created (mode 0755, owner 0, mtime 0);
//! - an entry replaces what its path held, except that a directory over a directory keeps the
//!   children and takes the new metadata; duplicates in one layer: the last wins;
//! - `.wh.NAME` removes NAME as it was in lower layers; `.wh..wh..opq` hides everything the
//!   directory held in lower layers; neither hides what the same layer adds (image-spec);
//!   other `.wh..wh.*` names (aufs bookkeeping) are ignored;
//! - a hard link names an earlier path (in any layer) that must exist, must not be a directory
//!   and must not be reached through a symlink; it shares that inode and, as docker does,
//!   applies its own owner, and unless the target is a symlink its mode and mtime, and adds its
//!   xattrs.

use std::collections::BTreeMap;

use crate::tar::stream::{Entry, EntryKind};
use chunkfs_format::model::{self, limits, mode};

/// Index of a node in [`Tree`]; 0 is the root.
pub type NodeId = usize;

/// Where a regular file's content is: which layer, and the offset of its tar header there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentRef {
    /// Layer position, bottom first.
    pub layer: usize,
    /// Offset of the member's header in the decompressed layer.
    pub offset: u64,
}

/// Owner, permissions, time and xattrs of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The 12 permission bits.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime_sec: i64,
    /// Nanoseconds.
    pub mtime_nsec: u32,
    /// Extended attributes by name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Meta {
    fn implicit_dir() -> Self {
        Self {
            perm: 0o755,
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            xattrs: BTreeMap::new(),
        }
    }

    fn of(e: &Entry) -> Self {
        Self {
            perm: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime_sec: e.mtime_sec,
            mtime_nsec: e.mtime_nsec,
            xattrs: e.xattrs.iter().cloned().collect(),
        }
    }
}

/// A name in a directory, with the layer that last created or re-declared it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Child {
    /// The node it names.
    pub node: NodeId,
    /// The layer of the entry that put it there.
    pub layer: usize,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory and its names.
    Dir(BTreeMap<Vec<u8>, Child>),
    /// A regular file; `content` is `None` for an empty file.
    File {
        /// Length in bytes.
        size: u64,
        /// Where its bytes are.
        content: Option<ContentRef>,
    },
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A character device.
    Char(u32, u32),
    /// A block device.
    Block(u32, u32),
    /// A FIFO.
    Fifo,
}

/// One inode of the merged tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Metadata.
    pub meta: Meta,
    /// Type and contents.
    pub kind: NodeKind,
}

/// The merged tree of all layers applied so far.
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

/// Splits a tar path into components, refusing `..` and NUL.
fn components(path: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component".into()),
            _ if c.contains(&0) => return Err("path contains a NUL byte".into()),
            _ if c.len() > limits::NAME_MAX => {
                return Err(format!(
                    "a path component is {} bytes, more than {}",
                    c.len(),
                    limits::NAME_MAX
                ));
            }
            _ => out.push(c),
        }
    }
    if out.len() > limits::DEPTH_MAX {
        return Err(format!(
            "path is {} components deep, more than {}",
            out.len(),
            limits::DEPTH_MAX
        ));
    }
    Ok(out)
}

fn show(comps: &[&[u8]]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

impl Tree {
    /// A tree holding only the root directory (mode 0755, owner 0, mtime 0).
    pub fn new() -> Self {
        Self {
            nodes: vec![Node {
                meta: Meta::implicit_dir(),
                kind: NodeKind::Dir(BTreeMap::new()),
            }],
        }
    }

    /// All nodes, including ones no longer reachable.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    fn push(&mut self, node: Node) -> Result<NodeId, String> {
        if self.nodes.len() >= limits::INODES_MAX {
            return Err(format!("more than {} inodes", limits::INODES_MAX));
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn children(&self, id: NodeId) -> Option<&BTreeMap<Vec<u8>, Child>> {
        match &self.nodes[id].kind {
            NodeKind::Dir(c) => Some(c),
            _ => None,
        }
    }

    fn children_mut(&mut self, id: NodeId) -> Option<&mut BTreeMap<Vec<u8>, Child>> {
        match &mut self.nodes[id].kind {
            NodeKind::Dir(c) => Some(c),
            _ => None,
        }
    }

    /// Walks `comps` from the root through directories. A symlink on the way is an error; a
    /// missing directory is created when `create` (else `Ok(None)`); a non-directory is an
    /// error when `create` (else `Ok(None)`).
    fn walk_dirs(
        &mut self,
        comps: &[&[u8]],
        layer: usize,
        create: bool,
    ) -> Result<Option<NodeId>, String> {
        let mut cur = 0;
        for (i, c) in comps.iter().enumerate() {
            let next = self.children(cur).and_then(|ch| ch.get(*c)).copied();
            cur = match next {
                Some(child) => match &self.nodes[child.node].kind {
                    NodeKind::Dir(_) => child.node,
                    NodeKind::Symlink(_) => {
                        return Err(format!(
                            "path goes through the symlink {}",
                            show(&comps[..=i])
                        ));
                    }
                    _ if create => {
                        return Err(format!("{} is not a directory", show(&comps[..=i])));
                    }
                    _ => return Ok(None),
                },
                None if create => {
                    let id = self.push(Node {
                        meta: Meta::implicit_dir(),
                        kind: NodeKind::Dir(BTreeMap::new()),
                    })?;
                    if let Some(ch) = self.children_mut(cur) {
                        ch.insert(c.to_vec(), Child { node: id, layer });
                    }
                    id
                }
                None => return Ok(None),
            };
        }
        Ok(Some(cur))
    }

    /// The node at `comps`, without following symlinks on the way (an error) or at the end.
    fn lookup(&mut self, comps: &[&[u8]], layer: usize) -> Result<Option<NodeId>, String> {
        let Some((last, parents)) = comps.split_last() else {
            return Ok(Some(0));
        };
        let Some(dir) = self.walk_dirs(parents, layer, false)? else {
            return Ok(None);
        };
        Ok(self
            .children(dir)
            .and_then(|ch| ch.get(*last))
            .map(|c| c.node))
    }

    /// Applies one entry of layer `layer` (layers must be applied bottom first, entries in
    /// archive order). The error is a description of the problem, without the entry's name.
    pub fn apply(&mut self, layer: usize, e: &Entry) -> Result<(), String> {
        let comps = components(&e.path)?;
        let Some((&name, parents)) = comps.split_last() else {
            // The root itself ("./" or "/").
            return match e.kind {
                EntryKind::Dir => {
                    self.nodes[0].meta = Meta::of(e);
                    Ok(())
                }
                _ => Err("the root can only be a directory".into()),
            };
        };
        if name.starts_with(WHITEOUT) {
            return self.whiteout(layer, parents, name);
        }
        let parent = self
            .walk_dirs(parents, layer, true)?
            .ok_or("parent directory missing")?;
        let existing = self.children(parent).and_then(|ch| ch.get(name)).copied();
        let node = match &e.kind {
            EntryKind::Dir => {
                if let Some(old) =
                    existing.filter(|c| matches!(self.nodes[c.node].kind, NodeKind::Dir(_)))
                {
                    self.nodes[old.node].meta = Meta::of(e);
                    old.node
                } else {
                    self.push(Node {
                        meta: Meta::of(e),
                        kind: NodeKind::Dir(BTreeMap::new()),
                    })?
                }
            }
            EntryKind::HardLink(target) => self.hard_link(layer, e, &comps, target)?,
            kind => {
                let kind = match kind {
                    EntryKind::Regular { size } => {
                        let content = (*size > 0).then_some(ContentRef {
                            layer,
                            offset: e.offset,
                        });
                        NodeKind::File {
                            size: *size,
                            content,
                        }
                    }
                    EntryKind::Symlink(t) => {
                        if t.is_empty() || t.len() > limits::SYMLINK_MAX || t.contains(&0) {
                            return Err(format!(
                                "symlink target of {} bytes is empty, longer than {} or holds NUL",
                                t.len(),
                                limits::SYMLINK_MAX
                            ));
                        }
                        NodeKind::Symlink(t.clone())
                    }
                    EntryKind::Char { major, minor } => NodeKind::Char(*major, *minor),
                    EntryKind::Block { major, minor } => NodeKind::Block(*major, *minor),
                    EntryKind::Fifo => NodeKind::Fifo,
                    EntryKind::Dir | EntryKind::HardLink(_) => {
                        return Err("internal: unreachable entry kind".into());
                    }
                };
                self.push(Node {
                    meta: Meta::of(e),
                    kind,
                })?
            }
        };
        check_xattrs(&self.nodes[node].meta)?;
        let ch = self
            .children_mut(parent)
            .ok_or("parent is not a directory")?;
        if ch.len() >= limits::DIR_ENTRIES_MAX && !ch.contains_key(name) {
            return Err(format!(
                "directory has more than {} entries",
                limits::DIR_ENTRIES_MAX
            ));
        }
        ch.insert(name.to_vec(), Child { node, layer });
        Ok(())
    }

    fn hard_link(
        &mut self,
        layer: usize,
        e: &Entry,
        comps: &[&[u8]],
        target: &[u8],
    ) -> Result<NodeId, String> {
        let tcomps = components(target).map_err(|p| format!("hard link target: {p}"))?;
        if tcomps == comps {
            return Err("hard link to itself".into());
        }
        let node = self
            .lookup(&tcomps, layer)
            .map_err(|p| format!("hard link target: {p}"))?
            .ok_or_else(|| format!("hard link target {} does not exist", show(&tcomps)))?;
        let Node { meta, kind } = &mut self.nodes[node];
        match kind {
            NodeKind::Dir(_) => {
                return Err(format!("hard link target {} is a directory", show(&tcomps)));
            }
            NodeKind::Symlink(_) => {
                meta.uid = e.uid;
                meta.gid = e.gid;
            }
            _ => {
                meta.uid = e.uid;
                meta.gid = e.gid;
                meta.perm = e.mode;
                meta.mtime_sec = e.mtime_sec;
                meta.mtime_nsec = e.mtime_nsec;
            }
        }
        for (k, v) in &e.xattrs {
            meta.xattrs.insert(k.clone(), v.clone());
        }
        Ok(node)
    }

    fn whiteout(&mut self, layer: usize, parents: &[&[u8]], name: &[u8]) -> Result<(), String> {
        if name == OPAQUE {
            let dir = self
                .walk_dirs(parents, layer, true)?
                .ok_or("opaque directory missing")?;
            self.prune_lower(dir, layer);
            return Ok(());
        }
        if name.starts_with(b".wh..wh.") {
            return Ok(());
        }
        let victim = &name[WHITEOUT.len()..];
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(format!(
                "invalid whiteout name {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        let Some(dir) = self.walk_dirs(parents, layer, false)? else {
            return Ok(());
        };
        let Some(child) = self.children(dir).and_then(|ch| ch.get(victim)).copied() else {
            return Ok(());
        };
        if child.layer < layer {
            if let Some(ch) = self.children_mut(dir) {
                ch.remove(victim);
            }
        } else if matches!(self.nodes[child.node].kind, NodeKind::Dir(_)) {
            // Re-declared in this layer: only what lower layers put inside goes.
            self.prune_lower(child.node, layer);
        }
        Ok(())
    }

    /// Removes everything below `dir` that lower layers put there.
    fn prune_lower(&mut self, dir: NodeId, layer: usize) {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let Some(ch) = self.children_mut(d) else {
                continue;
            };
            ch.retain(|_, c| c.layer >= layer);
            let kept: Vec<NodeId> = ch.values().map(|c| c.node).collect();
            stack.extend(
                kept.into_iter()
                    .filter(|&n| matches!(self.nodes[n].kind, NodeKind::Dir(_))),
            );
        }
    }

    /// The nodes reachable from the root in inode order (docs/format.md §3.2: depth first,
    /// entries in name order, a node at its first name), and for each node its position.
    pub fn inode_order(&self) -> (Vec<NodeId>, Vec<Option<u32>>) {
        let mut order = Vec::new();
        let mut number: Vec<Option<u32>> = vec![None; self.nodes.len()];
        // Explicit stack of (directory, iterator position) to survive deep trees.
        number[0] = Some(0);
        order.push(0);
        let mut stack: Vec<std::collections::btree_map::Values<'_, Vec<u8>, Child>> = Vec::new();
        if let Some(ch) = self.children(0) {
            stack.push(ch.values());
        }
        while let Some(top) = stack.last_mut() {
            let Some(child) = top.next() else {
                stack.pop();
                continue;
            };
            if number[child.node].is_some() {
                continue;
            }
            number[child.node] = Some(order.len() as u32);
            order.push(child.node);
            if let Some(ch) = self.children(child.node) {
                stack.push(ch.values());
            }
        }
        (order, number)
    }

    /// Every reachable file's content reference, sorted by (layer, offset): the pass-2 plan.
    pub fn wanted_contents(&self) -> Vec<(ContentRef, NodeId)> {
        let (order, _) = self.inode_order();
        let mut out: Vec<(ContentRef, NodeId)> = order
            .iter()
            .filter_map(|&n| match &self.nodes[n].kind {
                NodeKind::File {
                    content: Some(c), ..
                } => Some((*c, n)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// Builds the image's inodes in inode order; `file` gives each regular file's layout (it is
    /// called for reachable regular files only, in inode order).
    pub fn to_inodes(
        &self,
        mut file: impl FnMut(NodeId, u64) -> model::FileLayout,
    ) -> Vec<model::Inode> {
        let (order, number) = self.inode_order();
        order
            .iter()
            .map(|&id| {
                let n = &self.nodes[id];
                let (ty, kind) = match &n.kind {
                    NodeKind::Dir(ch) => (
                        mode::S_IFDIR,
                        model::InodeKind::Directory(
                            ch.iter()
                                .map(|(name, c)| model::DirEntry {
                                    name: name.clone(),
                                    inode: number[c.node].unwrap_or(0),
                                })
                                .collect(),
                        ),
                    ),
                    NodeKind::File { size, .. } => (
                        mode::S_IFREG,
                        model::InodeKind::File(model::FileData {
                            size: *size,
                            layout: file(id, *size),
                        }),
                    ),
                    NodeKind::Symlink(t) => (mode::S_IFLNK, model::InodeKind::Symlink(t.clone())),
                    NodeKind::Char(major, minor) => (
                        mode::S_IFCHR,
                        model::InodeKind::Device {
                            major: *major,
                            minor: *minor,
                        },
                    ),
                    NodeKind::Block(major, minor) => (
                        mode::S_IFBLK,
                        model::InodeKind::Device {
                            major: *major,
                            minor: *minor,
                        },
                    ),
                    NodeKind::Fifo => (mode::S_IFIFO, model::InodeKind::Special),
                };
                model::Inode {
                    mode: ty | (n.meta.perm & mode::PERM_MASK),
                    uid: n.meta.uid,
                    gid: n.meta.gid,
                    mtime_sec: n.meta.mtime_sec,
                    mtime_nsec: n.meta.mtime_nsec,
                    xattrs: n
                        .meta
                        .xattrs
                        .iter()
                        .map(|(k, v)| model::Xattr {
                            name: k.clone(),
                            value: v.clone(),
                        })
                        .collect(),
                    kind,
                }
            })
            .collect()
    }
}

fn check_xattrs(meta: &Meta) -> Result<(), String> {
    if meta.xattrs.len() > limits::XATTRS_PER_INODE_MAX {
        return Err(format!("more than {} xattrs", limits::XATTRS_PER_INODE_MAX));
    }
    let mut total = 0usize;
    for (k, v) in &meta.xattrs {
        if k.is_empty() || k.len() > limits::XATTR_NAME_MAX || k.contains(&0) {
            return Err(format!(
                "xattr name {:?} is empty, too long or holds NUL",
                String::from_utf8_lossy(k)
            ));
        }
        if v.len() > limits::XATTR_VALUE_MAX {
            return Err(format!(
                "xattr {} value of {} bytes exceeds {}",
                String::from_utf8_lossy(k),
                v.len(),
                limits::XATTR_VALUE_MAX
            ));
        }
        total += k.len() + v.len();
    }
    if total > limits::XATTR_BYTES_PER_INODE_MAX {
        return Err(format!(
            "xattrs of {total} bytes exceed {}",
            limits::XATTR_BYTES_PER_INODE_MAX
        ));
    }
    Ok(())
}
