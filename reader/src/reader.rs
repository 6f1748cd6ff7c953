//! The reader without FUSE: a validated descriptor, its devices, its digests and the chunk
//! cache, and reads of file ranges through them.

use std::path::PathBuf;
use std::sync::Arc;

use chunkfs_kernel_abi::Descriptor;
use chunkfs_kernel_abi::erofs::FEATURE_INCOMPAT_48BIT;
use chunkfs_kernel_abi::parse::{InodeView, Kind, MapKind, Mapping};

use crate::cache::{Cache, CacheStats, Chunk};
use crate::chunk;
use crate::device::{Device, DeviceError, DeviceSpec, slice};
use crate::devices::{self, Map, MappedDevice};
use crate::digests::{DigestSource, Digests};
use crate::error::{ChunkError, OpenError, ReadError};
use crate::record::{Recorder, Recording};

/// What to serve and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// The primary device: a `.cfs` image, or a descriptor file (OCI form).
    pub primary: PathBuf,
    /// The extra devices (OCI pack blobs), in the descriptor's device-table order.
    pub devices: Vec<DeviceSpec>,
    /// The digest tables covering every chunk frame.
    pub digests: Vec<DigestSource>,
    /// Bytes of decompressed chunks to keep in memory.
    pub cache_bytes: u64,
    /// FUSE worker threads (each with its own `/dev/fuse` clone).
    pub threads: usize,
    /// Let users other than the mounter access the mount (`allow_other`).
    pub allow_other: bool,
    /// Honour set-user-id bits and device files, as a kernel mount does (root only).
    pub suid_dev: bool,
    /// Log every failed request to stderr.
    pub debug: bool,
    /// Chunks to decompress ahead, in the background, of a read that looks sequential: the
    /// frames stored after the one being read (0: none).
    pub prefetch_chunks: usize,
    /// After a read that does not look sequential, hand the kernel's page cache the rest of the
    /// chunk it was served from, so that nearby random reads need no request.
    pub fill_random_reads: bool,
    /// With `fill_random_reads`: the extents of the same file after the one a random read was
    /// served from that the fill thread also loads (decompresses and verifies) and hands the
    /// page cache, as the kernel reads an image's pages around a miss (0: none). Only chunks on
    /// the image and on pack files are loaded for it, never on a device that fetches; none while
    /// recording ([`Reader::record`]), whose list must name every chunk reads need.
    pub fill_around: usize,
}

impl Config {
    /// A configuration with the defaults: 256 MiB of cache, one thread per CPU (at least 2: on
    /// this 2-core machine more threads only added scheduling overhead to cold reads).
    pub fn new(
        primary: impl Into<PathBuf>,
        devices: Vec<PathBuf>,
        digests: Vec<DigestSource>,
    ) -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        Config {
            primary: primary.into(),
            devices: devices.into_iter().map(DeviceSpec::File).collect(),
            digests,
            cache_bytes: 256 << 20,
            threads: cpus.max(2),
            allow_other: true,
            suid_dev: true,
            debug: false,
            prefetch_chunks: 8,
            fill_random_reads: true,
            fill_around: 8,
        }
    }
}

/// A validated image ready to be read, by FUSE or directly.
pub struct Reader {
    desc: Descriptor<Map>,
    /// Extra devices, ids 1, 2, ...
    devices: Vec<Arc<dyn Device>>,
    digests: Digests,
    cache: Cache,
    /// Per device id (0 the primary): whether its bytes are a local file, not fetched on read.
    local: Vec<bool>,
    pub(crate) config: Config,
    /// The chunks reads need, when recording ([`Reader::record`]).
    recorder: Option<Arc<Recorder>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Maps the devices, validates the descriptor and the digest tables, and checks that every
    /// device file is as long as the descriptor says.
    pub fn open(config: Config) -> Result<Self, OpenError> {
        let primary = devices::map(&config.primary)?;
        let desc = Descriptor::parse(primary).map_err(|source| OpenError::Descriptor {
            path: config.primary.clone(),
            source,
        })?;
        if usize::from(desc.extra_devices()) != config.devices.len() {
            return Err(OpenError::DeviceCount {
                expected: desc.extra_devices(),
                given: config.devices.len(),
            });
        }
        let mut devices = Vec::with_capacity(config.devices.len());
        let mut local = Vec::with_capacity(config.devices.len().saturating_add(1));
        local.push(true);
        for (id, spec) in (1u16..).zip(&config.devices) {
            local.push(matches!(spec, DeviceSpec::File(_)));
            let device: Arc<dyn Device> = match spec {
                DeviceSpec::File(path) => Arc::new(MappedDevice {
                    map: devices::map(path)?,
                    path: path.clone(),
                }),
                DeviceSpec::Custom(d) => d.clone(),
            };
            let need = desc
                .device(id)
                .map_or(0, |d| d.blocks.saturating_mul(desc.block_size().into()));
            let len = device.len();
            if len < need {
                return Err(OpenError::DeviceTooSmall {
                    path: device.name().into(),
                    len,
                    need,
                });
            }
            devices.push(device);
        }
        let digests = Digests::new(config.digests.clone())?;
        let cache = Cache::new(config.cache_bytes);
        Ok(Reader {
            desc,
            devices,
            digests,
            cache,
            local,
            config,
            recorder: None,
        })
    }

    /// Starts recording the chunks reads need, in the order they first need them (`-o
    /// record=FILE`); the handle reads or writes the list at any time. Calling it again returns
    /// the same recording.
    pub fn record(&mut self) -> Recording {
        let limit = self.digests.len();
        Recording(
            self.recorder
                .get_or_insert_with(|| Arc::new(Recorder::new(limit)))
                .clone(),
        )
    }

    /// Whether reads are recorded ([`Reader::record`]).
    pub(crate) fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// The validated descriptor.
    pub fn descriptor(&self) -> &Descriptor<impl AsRef<[u8]>> {
        &self.desc
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Entries in all digest tables.
    pub fn digest_count(&self) -> usize {
        self.digests.len()
    }

    /// Device `id`: 0 is the primary (a `.cfs` holds its own frames), 1.. the extra devices.
    fn with_device<R>(&self, id: u16, f: impl FnOnce(&dyn Device) -> R) -> R {
        match usize::from(id).checked_sub(1) {
            None => f(&Primary(self.desc.bytes())),
            Some(k) => match self.devices.get(k) {
                Some(d) => f(d.as_ref()),
                None => f(&Primary(&[])),
            },
        }
    }

    /// The verified chunk of the cluster `[offset, offset + len)` of `device`.
    fn chunk(&self, device: u16, offset: u64, len: u64) -> Result<Chunk, ChunkError> {
        self.cache.get_or_load((device, offset), || {
            self.with_device(device, |d| {
                chunk::load(&self.digests, device, d, offset, len)
            })
        })
    }

    /// The compressed chunk holding byte `end - 1` of regular file `nid` (in the packed inode
    /// for a small file), and the `n` chunks stored after it on the same device: what a reader
    /// going through the image in its order needs next.
    pub(crate) fn chunks_after(&self, nid: u64, end: u64, n: usize) -> Vec<ChunkRef> {
        let Some(current) = self.chunk_at(nid, end) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(n.saturating_add(1));
        out.push(current);
        let mut at = current.offset.saturating_add(current.len);
        while out.len() <= n {
            let Some(e) = self.digests.next_frame(current.device, at) else {
                break;
            };
            let (offset, len) = (e.offset.get(), u64::from(e.stored_len.get()));
            let Some(c) = self.cluster_of_frame(current.device, offset, len) else {
                break;
            };
            at = c.offset.saturating_add(c.len);
            out.push(c);
        }
        out
    }

    /// The compressed chunk holding byte `end - 1` of regular file `nid`.
    fn chunk_at(&self, nid: u64, end: u64) -> Option<ChunkRef> {
        let inode = self.desc.inode(nid)?;
        if inode.kind() != Kind::File {
            return None;
        }
        let last = end.min(inode.size()).checked_sub(1)?;
        let m = inode.map(last)?;
        let m = match m.kind {
            MapKind::Fragment { packed_offset } => {
                let at = packed_offset.checked_add(last.checked_sub(m.logical_start)?)?;
                self.desc.packed()?.map(at)?
            }
            _ => m,
        };
        match m.kind {
            MapKind::Encoded {
                device,
                offset,
                len,
                ..
            } => Some(ChunkRef {
                device,
                offset,
                len,
            }),
            _ => None,
        }
    }

    /// The cluster a mapping names for the frame `[offset, offset + len)`: the frame itself with
    /// byte-addressed (48-bit) extents; the blocks covering it in the cluster layout, where a
    /// frame ends on a block boundary behind zero padding (docs/descriptor.md §4).
    fn cluster_of_frame(&self, device: u16, offset: u64, len: u64) -> Option<ChunkRef> {
        if self.desc.feature_incompat() & FEATURE_INCOMPAT_48BIT != 0 {
            return Some(ChunkRef {
                device,
                offset,
                len,
            });
        }
        let block = u64::from(self.desc.block_size());
        let start = offset - offset % block;
        let end = offset.checked_add(len)?;
        Some(ChunkRef {
            device,
            offset: start,
            len: end.checked_sub(start)?,
        })
    }

    /// The extent of regular file `nid` holding byte `pos`, when it is a compressed chunk: its
    /// first byte's file offset, the verified chunk and how many of its bytes the extent uses.
    /// Errors are left for a real read to report.
    pub(crate) fn extent_bytes(&self, nid: u64, pos: u64) -> Option<(u64, Chunk, usize)> {
        let inode = self.desc.inode(nid)?;
        if inode.kind() != Kind::File {
            return None;
        }
        let m = inode.map(pos)?;
        if !matches!(m.kind, MapKind::Encoded { .. }) {
            return None;
        }
        let chunk = self.chunk_of(nid, pos, &m).ok()?;
        Some((m.logical_start, chunk, usize::try_from(m.logical_len).ok()?))
    }

    /// Like [`Reader::extent_bytes`], for an extent no read asked for yet (read-around): not
    /// recorded, and only when its chunk is on a local file (the image or a pack file), never
    /// on a device that would fetch it.
    pub(crate) fn extent_bytes_around(&self, nid: u64, pos: u64) -> Option<(u64, Chunk, usize)> {
        let inode = self.desc.inode(nid)?;
        if inode.kind() != Kind::File {
            return None;
        }
        let m = inode.map(pos)?;
        let MapKind::Encoded {
            device,
            offset,
            len,
            ..
        } = m.kind
        else {
            return None;
        };
        if !*self.local.get(usize::from(device))? {
            return None;
        }
        let chunk = self.chunk(device, offset, len).ok()?;
        let used = usize::try_from(m.logical_len).ok()?;
        (chunk.len() >= used).then_some((m.logical_start, chunk, used))
    }

    /// Loads a chunk into the cache, if it is not there; errors are left for a real read to
    /// report.
    pub(crate) fn preload(&self, c: ChunkRef) {
        let _ = self.chunk(c.device, c.offset, c.len);
    }

    /// Loads into the cache the `n` chunks stored after the one holding byte `end - 1` of
    /// regular file `nid`: what a reader going through the image in its order asks for next.
    /// Returns how many chunks it found to load. The FUSE layer does this in the background for
    /// reads that look sequential ([`Config::prefetch_chunks`]).
    pub fn preload_after(&self, nid: u64, end: u64, n: usize) -> usize {
        let chunks = self.chunks_after(nid, end, n);
        let found = chunks.len().saturating_sub(1);
        for c in chunks.into_iter().skip(1) {
            self.preload(c);
        }
        found
    }

    /// Reads up to `size` bytes at `offset` of regular file `nid`; fewer at the end of the file.
    pub fn read(&self, nid: u64, offset: u64, size: u32) -> Result<Vec<u8>, ReadError> {
        self.read_with(nid, offset, size, <[u8]>::to_vec)
    }

    /// Like [`Reader::read`], but hands the bytes to `f` instead of returning them: a read inside
    /// one chunk is passed straight from the cache, without a copy.
    pub fn read_with<R>(
        &self,
        nid: u64,
        offset: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, ReadError> {
        let inode = self.desc.inode(nid).ok_or(ReadError::NoInode(nid))?;
        if inode.kind() != Kind::File {
            return Err(ReadError::NotFile(nid));
        }
        let end = offset.saturating_add(size.into()).min(inode.size());
        if offset >= end {
            return Ok(f(&[]));
        }
        self.range(inode, offset, end, f, true)
    }

    /// Bytes `[pos, end)` of `inode` to `f`: directly from one chunk when they lie in one,
    /// assembled otherwise.
    fn range<R>(
        &self,
        inode: InodeView<'_>,
        pos: u64,
        end: u64,
        f: impl FnOnce(&[u8]) -> R,
        fragments: bool,
    ) -> Result<R, ReadError> {
        let nid = inode.nid();
        let m = inode.map(pos).ok_or(ReadError::Map { nid, pos })?;
        if m.logical_start.saturating_add(m.logical_len) >= end {
            let skip = pos.saturating_sub(m.logical_start);
            let n = end.saturating_sub(pos);
            match m.kind {
                MapKind::Hole if n <= ZEROS.len() as u64 => return Ok(f(&ZEROS[..n as usize])),
                MapKind::Encoded { .. } | MapKind::Raw { .. } => {
                    let chunk = self.chunk_of(nid, pos, &m)?;
                    let bytes = chunk.get(skip as usize..(skip + n) as usize);
                    return Ok(f(bytes.ok_or(ReadError::Map { nid, pos })?));
                }
                MapKind::Fragment { packed_offset } if fragments => {
                    let (packed, start, stop) = self.fragment(nid, pos, packed_offset, skip, n)?;
                    return self.range(packed, start, stop, f, false);
                }
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(end.saturating_sub(pos) as usize);
        self.read_into(inode, pos, end, &mut out, fragments)?;
        Ok(f(&out))
    }

    /// The packed inode and the range `[start, stop)` of it backing a fragment.
    fn fragment(
        &self,
        nid: u64,
        pos: u64,
        packed_offset: u64,
        skip: u64,
        n: u64,
    ) -> Result<(InodeView<'_>, u64, u64), ReadError> {
        let bad = || ReadError::Map { nid, pos };
        let packed = self.desc.packed().ok_or_else(bad)?;
        let start = packed_offset.checked_add(skip).ok_or_else(bad)?;
        let stop = start
            .checked_add(n)
            .filter(|&s| s <= packed.size())
            .ok_or_else(bad)?;
        Ok((packed, start, stop))
    }

    /// The verified chunk behind an encoded or stored mapping, long enough for the whole mapping.
    fn chunk_of(&self, nid: u64, pos: u64, m: &Mapping) -> Result<Chunk, ReadError> {
        if let Some(r) = &self.recorder {
            r.note(m, &self.digests);
        }
        let (device, offset, chunk) = match m.kind {
            MapKind::Encoded {
                device,
                offset,
                len,
                ..
            } => (device, offset, self.chunk(device, offset, len)),
            MapKind::Raw { device, offset } | MapKind::Interlaced { device, offset } => {
                let load = || {
                    self.with_device(device, |d| {
                        chunk::load_raw(&self.digests, device, d, offset)
                    })
                };
                match self.cache.get_or_load((device, offset), load) {
                    // Uncompressed bytes no digest vouches for (e.g. inline data).
                    Err(ChunkError::NoDigest) => return Err(ReadError::Unverifiable { nid, pos }),
                    r => (device, offset, r),
                }
            }
            _ => return Err(ReadError::Unverifiable { nid, pos }),
        };
        let chunk_err = |error| ReadError::Chunk {
            nid,
            device,
            offset,
            error,
        };
        let chunk = chunk.map_err(chunk_err)?;
        // The extent uses a prefix of the chunk (an interlaced one: a whole rotated block): it
        // must be long enough for all of it.
        let need = match m.kind {
            MapKind::Interlaced { .. } => self.desc.block_size().into(),
            _ => m.logical_len,
        };
        if (chunk.len() as u64) < need {
            return Err(chunk_err(ChunkError::Short {
                len: chunk.len(),
                need,
            }));
        }
        Ok(chunk)
    }

    /// Appends logical bytes `[pos, end)` of `inode` to `out`. Fragments are read from the packed
    /// inode, which itself never holds fragments (`fragments` is false there).
    fn read_into(
        &self,
        inode: InodeView<'_>,
        mut pos: u64,
        end: u64,
        out: &mut Vec<u8>,
        fragments: bool,
    ) -> Result<(), ReadError> {
        let nid = inode.nid();
        while pos < end {
            let m = inode.map(pos).ok_or(ReadError::Map { nid, pos })?;
            let m_end = m.logical_start.saturating_add(m.logical_len).min(end);
            let skip = pos.saturating_sub(m.logical_start);
            let n = m_end.saturating_sub(pos);
            match m.kind {
                MapKind::Hole => out.resize(out.len() + n as usize, 0),
                MapKind::Fragment { packed_offset } if fragments => {
                    let (packed, start, stop) = self.fragment(nid, pos, packed_offset, skip, n)?;
                    self.read_into(packed, start, stop, out, false)?;
                }
                MapKind::Interlaced { .. } => {
                    // Logical byte p is at p mod block size of the stored block.
                    let chunk = self.chunk_of(nid, pos, &m)?;
                    let blksz = u64::from(self.desc.block_size());
                    let mut p = pos;
                    while p < m_end {
                        let at = p % blksz;
                        let take = (blksz - at).min(m_end - p);
                        let bytes = chunk.get(at as usize..(at + take) as usize);
                        out.extend_from_slice(bytes.ok_or(ReadError::Map { nid, pos })?);
                        p += take;
                    }
                }
                _ => {
                    let chunk = self.chunk_of(nid, pos, &m)?;
                    let bytes = chunk.get(skip as usize..(skip + n) as usize);
                    out.extend_from_slice(bytes.ok_or(ReadError::Map { nid, pos })?);
                }
            }
            pos = m_end;
        }
        Ok(())
    }
}

/// How a read goes through a file, as far as one request shows: it decides whether the reader
/// decompresses ahead ([`crate::prefetch`]) or fills the page cache around it ([`crate::fill`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// From the start of a file, or readahead-sized.
    Sequential,
    /// Anything else.
    Random,
}

/// A read at least this long is readahead: the kernel is streaming the file.
pub(crate) const STREAMING_READ: u32 = 64 * 1024;

impl Access {
    /// How a read of `size` bytes at `offset` looks.
    pub(crate) fn of(offset: u64, size: u32) -> Self {
        if offset == 0 || size >= STREAMING_READ {
            Access::Sequential
        } else {
            Access::Random
        }
    }
}

/// A compressed cluster of a device, as a file's mapping names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    device: u16,
    offset: u64,
    len: u64,
}

/// The primary device's bytes (the mapped descriptor or `.cfs`) as a device.
struct Primary<'a>(&'a [u8]);

impl Device for Primary<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> Result<std::borrow::Cow<'_, [u8]>, DeviceError> {
        slice(self.0, offset, len)
            .map(std::borrow::Cow::Borrowed)
            .ok_or_else(|| DeviceError(format!("range {offset}+{len} is past the image's end")))
    }

    fn name(&self) -> String {
        "the primary device".into()
    }
}

/// Zeros for holes, served without allocating.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Shared handle used by the FUSE layer.
pub(crate) type Shared = Arc<Reader>;
