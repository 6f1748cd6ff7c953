//! The decoded image metadata: the in-memory form of `schema/chunkfs.capnp` (docs/format.md §3).
//!
//! Packers build an [`Image`]; the Cap'n Proto codec encodes and decodes it; translation to the
//! EROFS descriptor, unpack and inspect read it. [`Image::validate`] checks every invariant of
//! §3.4 once, so that code consuming a validated image may index without further checks.

use crate::digest::Digest;

/// Index into [`Image::chunks`].
pub type ChunkIdx = u32;
/// Index into [`Image::inodes`]; 0 is the root directory.
pub type InodeIdx = u32;

/// Bounds on everything an image declares (docs/format.md §3.5), checked before allocating.
pub mod limits {
    /// Longest directory entry name in bytes.
    pub const NAME_MAX: usize = 255;
    /// Longest symlink target in bytes.
    pub const SYMLINK_MAX: usize = 4095;
    /// Longest xattr name (with its namespace prefix) in bytes.
    pub const XATTR_NAME_MAX: usize = 255;
    /// Largest xattr value in bytes (EROFS stores the size in 16 bits).
    pub const XATTR_VALUE_MAX: usize = 65_535;
    /// Most xattrs on one inode.
    pub const XATTRS_PER_INODE_MAX: usize = 1024;
    /// Largest total of names and values of one inode's xattrs in bytes.
    pub const XATTR_BYTES_PER_INODE_MAX: usize = 256 * 1024;
    /// Largest uncompressed chunk in bytes (EROFS's encoded-extent limit is higher; zstd window 1 MiB).
    pub const CHUNK_MAX: u32 = 1024 * 1024;
    /// Most inodes in one image.
    pub const INODES_MAX: usize = 1 << 28;
    /// Most chunks in one image.
    pub const CHUNKS_MAX: usize = 1 << 30;
    /// Most entries in one directory.
    pub const DIR_ENTRIES_MAX: usize = 1 << 24;
    /// Deepest directory nesting (the root is depth 0).
    pub const DEPTH_MAX: usize = 2048;
    /// Largest decompressed metadata blob in bytes.
    pub const METADATA_MAX: u64 = 4 << 30;
}

/// File-type bits of `st_mode`.
pub mod mode {
    /// Mask of the type bits.
    pub const S_IFMT: u32 = 0o170000;
    /// Socket.
    pub const S_IFSOCK: u32 = 0o140000;
    /// Symbolic link.
    pub const S_IFLNK: u32 = 0o120000;
    /// Regular file.
    pub const S_IFREG: u32 = 0o100000;
    /// Block device.
    pub const S_IFBLK: u32 = 0o060000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040000;
    /// Character device.
    pub const S_IFCHR: u32 = 0o020000;
    /// FIFO.
    pub const S_IFIFO: u32 = 0o010000;
    /// Permission bits including suid, sgid and sticky.
    pub const PERM_MASK: u32 = 0o7777;
}

/// The whole image metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// Every distinct chunk; a [`ChunkIdx`] indexes this list.
    pub chunks: Vec<ChunkInfo>,
    /// The packed stream: the concatenation of these chunks' bytes holds the small files.
    pub packed_stream: Vec<ChunkIdx>,
    /// All inodes; index 0 is the root directory.
    pub inodes: Vec<Inode>,
    /// The prefetch list (docs/format.md §3.6): chunks in the order a recorded workload first
    /// read them, each at most once; what a reader fetching lazily should fetch first. Empty
    /// when none was recorded.
    pub prefetch: Vec<ChunkIdx>,
}

/// One distinct chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkInfo {
    /// sha256 of the uncompressed bytes.
    pub digest: Digest,
    /// Uncompressed length in bytes.
    pub size: u32,
}

/// One inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// `st_mode`: type bits and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Seconds since the epoch, negative before 1970.
    pub mtime_sec: i64,
    /// Nanoseconds, below 1e9.
    pub mtime_nsec: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
    /// What the inode holds, by type.
    pub kind: InodeKind,
}

/// An extended attribute.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Xattr {
    /// Full name with its namespace prefix.
    pub name: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// The type-specific part of an inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InodeKind {
    /// A directory's entries, sorted by name, without "." and "..".
    Directory(Vec<DirEntry>),
    /// A regular file.
    File(FileData),
    /// A symlink's target bytes.
    Symlink(Vec<u8>),
    /// A character or block device.
    Device {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A FIFO or a socket.
    Special,
}

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Raw name bytes.
    pub name: Vec<u8>,
    /// The inode it names.
    pub inode: InodeIdx,
}

/// A regular file's size and where its bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileData {
    /// Length in bytes.
    pub size: u64,
    /// Where the bytes are.
    pub layout: FileLayout,
}

/// Where a regular file's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileLayout {
    /// Whole chunks at logical offsets; uncovered ranges are holes.
    Extents(Vec<Extent>),
    /// `size` bytes at this offset of the packed stream.
    Packed(u64),
}

/// A chunk placed at a logical offset of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Logical byte offset in the file.
    pub offset: u64,
    /// The chunk whose whole uncompressed bytes start there.
    pub chunk: ChunkIdx,
}

/// A broken invariant of docs/format.md §3.4, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The image has no inodes, or inode 0 is not a directory.
    #[error("the root (inode 0) is missing or not a directory")]
    BadRoot,
    /// A declared count exceeds a limit of §3.5.
    #[error("{what}: {count} exceeds the limit of {limit}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The declared count.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// An inode breaks an invariant.
    #[error("inode {inode}: {problem}")]
    Inode {
        /// The inode's index.
        inode: InodeIdx,
        /// What is wrong.
        problem: String,
    },
    /// A chunk breaks an invariant.
    #[error("chunk {chunk}: {problem}")]
    Chunk {
        /// The chunk's index.
        chunk: ChunkIdx,
        /// What is wrong.
        problem: String,
    },
}

impl crate::Classify for ModelError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::Corrupt
    }
}

impl Inode {
    /// The `S_IFMT` bits.
    pub fn file_type(&self) -> u32 {
        self.mode & mode::S_IFMT
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, InodeKind::Directory(_))
    }
}

impl Image {
    /// Total length of the packed stream in bytes.
    pub fn packed_stream_len(&self) -> u64 {
        self.packed_stream
            .iter()
            .map(|&c| self.chunks.get(c as usize).map_or(0, |c| u64::from(c.size)))
            .sum()
    }

    /// Link counts of every inode: names for non-directories, `2 + subdirectories` for
    /// directories. Meaningful only for a validated image, but never panics.
    pub fn link_counts(&self) -> Vec<u32> {
        let mut n = vec![0u32; self.inodes.len()];
        for (i, inode) in self.inodes.iter().enumerate() {
            let InodeKind::Directory(entries) = &inode.kind else {
                continue;
            };
            let mut subdirs = 0u32;
            for e in entries {
                // Out-of-range entries only exist in unvalidated images; they count nothing.
                match self.inodes.get(e.inode as usize) {
                    Some(child) if child.is_dir() => subdirs = subdirs.saturating_add(1),
                    Some(_) => n[e.inode as usize] = n[e.inode as usize].saturating_add(1),
                    None => {}
                }
            }
            n[i] = subdirs.saturating_add(2);
        }
        n
    }

    /// Checks every invariant of docs/format.md §3.4 and the limits of §3.5.
    pub fn validate(&self) -> Result<(), ModelError> {
        use limits::*;
        let too_many = |what, count: usize, limit: usize| {
            if count > limit {
                Err(ModelError::TooMany {
                    what,
                    count: count as u64,
                    limit: limit as u64,
                })
            } else {
                Ok(())
            }
        };
        too_many("inodes", self.inodes.len(), INODES_MAX)?;
        too_many("chunks", self.chunks.len(), CHUNKS_MAX)?;
        for (i, c) in self.chunks.iter().enumerate() {
            if c.size == 0 || c.size > CHUNK_MAX {
                return Err(ModelError::Chunk {
                    chunk: i as u32,
                    problem: format!("size {} is outside 1..={CHUNK_MAX}", c.size),
                });
            }
        }
        let n_chunks = self.chunks.len();
        for (pos, &c) in self.packed_stream.iter().enumerate() {
            if c as usize >= n_chunks {
                return Err(ModelError::Chunk {
                    chunk: c,
                    problem: format!(
                        "packed stream position {pos} names a chunk that does not exist"
                    ),
                });
            }
        }
        self.validate_prefetch()?;
        let packed_len = self.packed_stream_len();
        let root = self.inodes.first().ok_or(ModelError::BadRoot)?;
        if !root.is_dir() {
            return Err(ModelError::BadRoot);
        }
        let bad = |inode: usize, problem: String| ModelError::Inode {
            inode: inode as u32,
            problem,
        };

        for (i, inode) in self.inodes.iter().enumerate() {
            if inode.mtime_nsec >= 1_000_000_000 {
                return Err(bad(
                    i,
                    format!("mtime nanoseconds {} is not below 1e9", inode.mtime_nsec),
                ));
            }
            if inode.mode & !(mode::S_IFMT | mode::PERM_MASK) != 0 {
                return Err(bad(i, format!("mode {:o} has unknown bits", inode.mode)));
            }
            validate_xattrs(&inode.xattrs).map_err(|p| bad(i, p))?;
            let ty = inode.file_type();
            let kind_ok = match &inode.kind {
                InodeKind::Directory(_) => ty == mode::S_IFDIR,
                InodeKind::File(_) => ty == mode::S_IFREG,
                InodeKind::Symlink(_) => ty == mode::S_IFLNK,
                InodeKind::Device { .. } => ty == mode::S_IFCHR || ty == mode::S_IFBLK,
                InodeKind::Special => ty == mode::S_IFIFO || ty == mode::S_IFSOCK,
            };
            if !kind_ok {
                return Err(bad(
                    i,
                    format!("mode {:o} does not match its contents", inode.mode),
                ));
            }
            match &inode.kind {
                InodeKind::Directory(entries) => {
                    too_many("directory entries", entries.len(), DIR_ENTRIES_MAX)?;
                    let mut prev: Option<&[u8]> = None;
                    for e in entries {
                        validate_name(&e.name).map_err(|p| bad(i, p))?;
                        if prev.is_some_and(|p| p >= e.name.as_slice()) {
                            return Err(bad(
                                i,
                                "directory entries are not sorted by name or repeat a name".into(),
                            ));
                        }
                        prev = Some(&e.name);
                        if e.inode as usize >= self.inodes.len() || e.inode == 0 {
                            return Err(bad(
                                i,
                                format!(
                                    "entry {:?} names inode {} which does not exist",
                                    String::from_utf8_lossy(&e.name),
                                    e.inode
                                ),
                            ));
                        }
                    }
                }
                InodeKind::File(f) => match &f.layout {
                    FileLayout::Extents(extents) => {
                        let mut end = 0u64;
                        for x in extents {
                            let chunk = self.chunks.get(x.chunk as usize).ok_or_else(|| {
                                bad(
                                    i,
                                    format!("extent names chunk {} which does not exist", x.chunk),
                                )
                            })?;
                            if x.offset < end {
                                return Err(bad(i, "extents overlap or are not sorted".into()));
                            }
                            end = x
                                .offset
                                .checked_add(u64::from(chunk.size))
                                .ok_or_else(|| bad(i, "extent end overflows".into()))?;
                            if end > f.size {
                                return Err(bad(
                                    i,
                                    format!(
                                        "extent at {} ends at {end}, past the file size {}",
                                        x.offset, f.size
                                    ),
                                ));
                            }
                        }
                    }
                    FileLayout::Packed(off) => {
                        let end = off
                            .checked_add(f.size)
                            .ok_or_else(|| bad(i, "packed range overflows".into()))?;
                        if end > packed_len {
                            return Err(bad(
                                i,
                                format!(
                                    "packed range {off}..{end} is past the packed stream's {packed_len} bytes"
                                ),
                            ));
                        }
                    }
                },
                InodeKind::Symlink(target) => {
                    if target.is_empty() || target.len() > SYMLINK_MAX || target.contains(&0) {
                        return Err(bad(
                            i,
                            format!(
                                "symlink target of {} bytes is empty, too long or holds NUL",
                                target.len()
                            ),
                        ));
                    }
                }
                InodeKind::Device { .. } | InodeKind::Special => {}
            }
        }
        self.validate_tree()
    }

    /// Every prefetch entry names a chunk, and none twice.
    fn validate_prefetch(&self) -> Result<(), ModelError> {
        if self.prefetch.is_empty() {
            return Ok(());
        }
        // One bit per chunk, allocated only for images with a list.
        let mut seen = vec![0u64; self.chunks.len().div_ceil(64)];
        for (pos, &c) in self.prefetch.iter().enumerate() {
            let (word, bit) = (c as usize / 64, 1u64 << (c % 64));
            let Some(w) = seen
                .get_mut(word)
                .filter(|_| (c as usize) < self.chunks.len())
            else {
                return Err(ModelError::Chunk {
                    chunk: c,
                    problem: format!("prefetch position {pos} names a chunk that does not exist"),
                });
            };
            if *w & bit != 0 {
                let earlier = self.prefetch.iter().position(|&e| e == c).unwrap_or(pos);
                return Err(ModelError::Chunk {
                    chunk: c,
                    problem: format!(
                        "listed twice in the prefetch list (positions {earlier} and {pos})"
                    ),
                });
            }
            *w |= bit;
        }
        Ok(())
    }

    /// Every inode reachable, directories exactly once, depth bounded, no cycles.
    fn validate_tree(&self) -> Result<(), ModelError> {
        let mut seen = vec![false; self.inodes.len()];
        seen[0] = true;
        // (directory, depth)
        let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
        while let Some((dir, depth)) = stack.pop() {
            let InodeKind::Directory(entries) = &self.inodes[dir].kind else {
                continue;
            };
            for e in entries {
                let child = e.inode as usize;
                let is_dir = self.inodes[child].is_dir();
                if is_dir {
                    if seen[child] {
                        return Err(ModelError::Inode { inode: e.inode, problem: "directory is reachable more than once (hard-linked directory or cycle)".into() });
                    }
                    if depth + 1 > limits::DEPTH_MAX {
                        return Err(ModelError::TooMany {
                            what: "directory depth",
                            count: (depth + 1) as u64,
                            limit: limits::DEPTH_MAX as u64,
                        });
                    }
                    stack.push((child, depth + 1));
                }
                seen[child] = true;
            }
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(ModelError::Inode {
                inode: i as u32,
                problem: "not reachable from the root".into(),
            });
        }
        Ok(())
    }
}

fn validate_name(name: &[u8]) -> Result<(), String> {
    if name.is_empty() || name.len() > limits::NAME_MAX {
        return Err(format!(
            "entry name of {} bytes is outside 1..=255",
            name.len()
        ));
    }
    if name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(format!(
            "entry name {:?} is \".\", \"..\" or holds '/' or NUL",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

fn validate_xattrs(xattrs: &[Xattr]) -> Result<(), String> {
    if xattrs.len() > limits::XATTRS_PER_INODE_MAX {
        return Err(format!(
            "{} xattrs exceed the limit of {}",
            xattrs.len(),
            limits::XATTRS_PER_INODE_MAX
        ));
    }
    let mut total = 0usize;
    let mut prev: Option<&[u8]> = None;
    for x in xattrs {
        if x.name.is_empty() || x.name.len() > limits::XATTR_NAME_MAX || x.name.contains(&0) {
            return Err(format!(
                "xattr name of {} bytes is empty, too long or holds NUL",
                x.name.len()
            ));
        }
        if x.value.len() > limits::XATTR_VALUE_MAX {
            return Err(format!(
                "xattr value of {} bytes exceeds {}",
                x.value.len(),
                limits::XATTR_VALUE_MAX
            ));
        }
        if prev.is_some_and(|p| p >= x.name.as_slice()) {
            return Err("xattrs are not sorted by name or repeat a name".into());
        }
        prev = Some(&x.name);
        total += x.name.len() + x.value.len();
    }
    if total > limits::XATTR_BYTES_PER_INODE_MAX {
        return Err(format!(
            "xattrs hold {total} bytes, more than {}",
            limits::XATTR_BYTES_PER_INODE_MAX
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(entries: Vec<DirEntry>) -> Inode {
        Inode {
            mode: mode::S_IFDIR | 0o755,
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            xattrs: vec![],
            kind: InodeKind::Directory(entries),
        }
    }
    fn file(size: u64, layout: FileLayout) -> Inode {
        Inode {
            mode: mode::S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            mtime_sec: -5,
            mtime_nsec: 1,
            xattrs: vec![],
            kind: InodeKind::File(FileData { size, layout }),
        }
    }
    fn entry(name: &[u8], inode: u32) -> DirEntry {
        DirEntry {
            name: name.to_vec(),
            inode,
        }
    }
    fn sample() -> Image {
        Image {
            chunks: vec![ChunkInfo {
                digest: Digest::of(b"x"),
                size: 10,
            }],
            packed_stream: vec![0],
            inodes: vec![
                dir(vec![entry(b"a", 1), entry(b"b", 2), entry(b"c", 1)]),
                file(
                    20,
                    FileLayout::Extents(vec![Extent {
                        offset: 10,
                        chunk: 0,
                    }]),
                ),
                dir(vec![entry(b"small", 3)]),
                file(4, FileLayout::Packed(6)),
            ],
            prefetch: vec![],
        }
    }

    #[test]
    fn sample_is_valid_and_link_counts_count_names() {
        let img = sample();
        img.validate().unwrap();
        assert_eq!(img.link_counts(), vec![3, 2, 2, 1]);
    }

    #[test]
    fn each_broken_invariant_is_refused() {
        let mut unsorted = sample();
        let InodeKind::Directory(e) = &mut unsorted.inodes[0].kind else {
            unreachable!()
        };
        e.swap(0, 1);
        assert!(unsorted.validate().is_err());

        let mut past_end = sample();
        past_end.inodes[1].kind = InodeKind::File(FileData {
            size: 15,
            layout: FileLayout::Extents(vec![Extent {
                offset: 10,
                chunk: 0,
            }]),
        });
        assert!(past_end.validate().is_err());

        let mut packed_past = sample();
        packed_past.inodes[3].kind = InodeKind::File(FileData {
            size: 5,
            layout: FileLayout::Packed(6),
        });
        assert!(packed_past.validate().is_err());

        let mut dir_twice = sample();
        let InodeKind::Directory(e) = &mut dir_twice.inodes[0].kind else {
            unreachable!()
        };
        e[2].inode = 2;
        assert!(matches!(
            dir_twice.validate(),
            Err(ModelError::Inode { inode: 2, .. })
        ));

        let mut orphan = sample();
        orphan.inodes.push(file(0, FileLayout::Extents(vec![])));
        assert!(orphan.validate().is_err());

        let mut dotdot = sample();
        let InodeKind::Directory(e) = &mut dotdot.inodes[2].kind else {
            unreachable!()
        };
        e[0].name = b"..".to_vec();
        assert!(dotdot.validate().is_err());

        let mut bad_mode = sample();
        bad_mode.inodes[1].mode = mode::S_IFLNK | 0o777;
        assert!(bad_mode.validate().is_err());
    }

    #[test]
    fn prefetch_lists_name_each_existing_chunk_once() {
        let mut img = sample();
        img.chunks = (0..130u32)
            .map(|i| ChunkInfo {
                digest: Digest::of(&i.to_le_bytes()),
                size: 10,
            })
            .collect();
        img.prefetch = vec![129, 0, 64, 63, 1];
        img.validate().unwrap();

        let mut out_of_range = img.clone();
        out_of_range.prefetch.push(130);
        match out_of_range.validate() {
            Err(ModelError::Chunk {
                chunk: 130,
                problem,
            }) => {
                assert!(problem.contains("prefetch position 5"), "{problem}")
            }
            other => panic!("an index past the chunks must be refused: {other:?}"),
        }

        let mut twice = img.clone();
        twice.prefetch.push(64);
        match twice.validate() {
            Err(ModelError::Chunk { chunk: 64, problem }) => {
                assert!(problem.contains("positions 2 and 5"), "{problem}")
            }
            other => panic!("a repeated chunk must be refused: {other:?}"),
        }

        let mut no_chunks = sample();
        no_chunks.chunks.clear();
        no_chunks.packed_stream.clear();
        no_chunks.inodes.truncate(1);
        no_chunks.inodes[0].kind = InodeKind::Directory(vec![]);
        no_chunks.validate().unwrap();
        no_chunks.prefetch = vec![0];
        assert!(no_chunks.validate().is_err());
    }
}
