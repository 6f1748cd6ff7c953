//! Raw Cap'n Proto metadata (docs/format.md §3): compress it into a metadata blob, decode it,
//! validate it, and, when valid, translate it into an EROFS descriptor in both extent layouts
//! with frames on one extra device. Every descriptor translate writes must pass kernel-abi's
//! validating parser and describe exactly the image: the same tree, attributes, symlink targets,
//! xattrs and, for each file, extents at the chunks' frames or fragments of the packed stream.

use std::collections::BTreeMap;

use chunkfs_distribution::oci::pack::frame_start;
use chunkfs_format::model::{FileLayout, Image, InodeKind, mode};
use chunkfs_format::translate::{
    ChunkLocation, DeviceLayout, ExtentLayout, ExtraDevice, translate_within,
};
use chunkfs_kernel_abi::Descriptor;
use chunkfs_kernel_abi::parse::{InodeView, Kind, MapKind};

/// Runs one input, as the fuzz target `metadata_translate` does; panics on a bug.
pub fn run(data: &[u8]) {
    let Some(image) = crate::decode_raw_metadata(data) else {
        return;
    };
    let raw = &data[..data.len() / 8 * 8];
    let _ = chunkfs_format::inspect::dump(&image);
    if image.validate().is_err() {
        return;
    }
    // Valid metadata re-encodes to the same canonical bytes.
    let again = chunkfs_format::schema::codec::encode(&image).expect("re-encode valid metadata");
    assert_eq!(again, raw, "decode and encode disagree on canonical bytes");
    for extents in [ExtentLayout::Bit48, ExtentLayout::Clusters] {
        check_translation(&image, extents);
    }
}

/// Frames placed one after another on device 1 with lengths derived from the digests.
fn locations(image: &Image, align512: bool) -> (Vec<ChunkLocation>, u64) {
    let mut pos = 0u64;
    let locs = image
        .chunks
        .iter()
        .map(|c| {
            let d = c.digest.0;
            let max = (c.size + 64).min(1 << 20);
            let stored_len = 1 + (u32::from(d[0]) << 8 | u32::from(d[1])) % max;
            let offset = frame_start(pos, u64::from(stored_len), align512);
            pos = offset + u64::from(stored_len);
            ChunkLocation {
                device: 1,
                offset,
                stored_len,
            }
        })
        .collect();
    (locs, pos.div_ceil(4096).max(1) * 4096)
}

fn check_translation(image: &Image, extents: ExtentLayout) {
    let clusters = extents == ExtentLayout::Clusters;
    let (locs, device_len) = locations(image, clusters);
    let layout = DeviceLayout::standalone(
        extents,
        vec![ExtraDevice {
            tag: b"pack".to_vec(),
            len: device_len,
        }],
    );
    // Bounded as verify bounds it: hostile sizes must fail before allocating.
    let Ok(d) = translate_within(image, &locs, &layout, 64 << 20) else {
        return;
    };
    let mut bytes = Vec::new();
    d.write_standalone(&mut bytes)
        .expect("write a standalone descriptor");
    let desc = match Descriptor::parse(bytes.as_slice()) {
        Ok(desc) => desc,
        Err(e) => panic!("{extents:?}: kernel-abi refuses what translate wrote: {e}"),
    };
    compare(image, &desc, &locs, extents);
}

fn kind_of(m: u32) -> Kind {
    match m & mode::S_IFMT {
        mode::S_IFDIR => Kind::Dir,
        mode::S_IFLNK => Kind::Symlink,
        mode::S_IFCHR => Kind::CharDevice,
        mode::S_IFBLK => Kind::BlockDevice,
        mode::S_IFIFO => Kind::Fifo,
        mode::S_IFSOCK => Kind::Socket,
        _ => Kind::File,
    }
}

/// Walks the model and the descriptor together from the root.
fn compare(image: &Image, desc: &Descriptor<&[u8]>, locs: &[ChunkLocation], extents: ExtentLayout) {
    let links = image.link_counts();
    let mut stack = vec![(0u32, desc.root_nid())];
    while let Some((idx, nid)) = stack.pop() {
        let inode = &image.inodes[idx as usize];
        let view = desc.inode(nid).expect("a validated nid decodes");
        let what = format!("{extents:?}: inode {idx} (nid {nid})");
        assert_eq!(view.kind(), kind_of(inode.mode), "{what}: type");
        assert_eq!(u32::from(view.mode()), inode.mode, "{what}: mode");
        assert_eq!(
            (view.uid(), view.gid()),
            (inode.uid, inode.gid),
            "{what}: owner"
        );
        assert_eq!(
            (view.mtime(), view.mtime_nsec()),
            (inode.mtime_sec, inode.mtime_nsec),
            "{what}: mtime"
        );
        assert_eq!(view.nlink(), links[idx as usize], "{what}: nlink");
        let xattrs: BTreeMap<Vec<u8>, Vec<u8>> = view
            .xattrs()
            .map(|x| {
                let x = x.expect("validated xattrs decode");
                ([x.prefix, x.suffix].concat(), x.value.to_vec())
            })
            .collect();
        let expected: BTreeMap<Vec<u8>, Vec<u8>> = inode
            .xattrs
            .iter()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect();
        assert_eq!(xattrs, expected, "{what}: xattrs");
        match &inode.kind {
            InodeKind::Directory(entries) => {
                let listed: Vec<(Vec<u8>, u64)> = view
                    .entries()
                    .expect("a directory lists")
                    .map(|e| e.expect("validated entries decode"))
                    .filter(|e| e.name != b"." && e.name != b"..")
                    .map(|e| (e.name.to_vec(), e.nid))
                    .collect();
                assert_eq!(listed.len(), entries.len(), "{what}: entry count");
                for (e, (name, child)) in entries.iter().zip(listed) {
                    assert_eq!(e.name, name, "{what}: entry names");
                    stack.push((e.inode, child));
                }
            }
            InodeKind::Symlink(target) => {
                let [a, b] = view.symlink_target().expect("a symlink has a target");
                assert_eq!([a, b].concat(), *target, "{what}: symlink target");
            }
            InodeKind::File(f) => {
                assert_eq!(view.size(), f.size, "{what}: size");
                compare_file(image, &view, &f.layout, locs, extents, &what);
            }
            InodeKind::Device { .. } | InodeKind::Special => {}
        }
    }
}

fn compare_file(
    image: &Image,
    view: &InodeView<'_>,
    layout: &FileLayout,
    locs: &[ChunkLocation],
    extents: ExtentLayout,
    what: &str,
) {
    match layout {
        FileLayout::Packed(offset) => {
            if view.size() == 0 {
                return;
            }
            let m = view.map(0).expect("a packed file maps");
            assert_eq!(
                m.kind,
                MapKind::Fragment {
                    packed_offset: *offset
                },
                "{what}: fragment"
            );
        }
        FileLayout::Extents(xs) => {
            for x in xs {
                let size = u64::from(image.chunks[x.chunk as usize].size);
                let loc = locs[x.chunk as usize];
                let m = view.map(x.offset).expect("an extent maps");
                assert_eq!(m.logical_start, x.offset, "{what}: extent start");
                assert!(
                    m.logical_len <= size,
                    "{what}: extent longer than its chunk"
                );
                let MapKind::Encoded {
                    device,
                    offset,
                    len,
                    ..
                } = m.kind
                else {
                    panic!("{what}: extent at {} maps to {:?}", x.offset, m.kind);
                };
                assert_eq!(device, loc.device, "{what}: device");
                assert_eq!(
                    offset + len,
                    loc.offset + u64::from(loc.stored_len),
                    "{what}: frame end"
                );
                match extents {
                    ExtentLayout::Bit48 => assert_eq!(offset, loc.offset, "{what}: frame start"),
                    ExtentLayout::Clusters => assert!(offset <= loc.offset, "{what}: padding"),
                }
            }
            if extents == ExtentLayout::Bit48 {
                // Bytes no extent covers are holes.
                let mut covered = 0u64;
                for x in xs {
                    if covered < x.offset {
                        let m = view.map(covered).expect("a hole maps");
                        assert_eq!(m.kind, MapKind::Hole, "{what}: hole at {covered}");
                    }
                    covered = x.offset + u64::from(image.chunks[x.chunk as usize].size);
                }
                if covered < view.size() {
                    let m = view.map(covered).expect("a tail hole maps");
                    assert_eq!(m.kind, MapKind::Hole, "{what}: tail hole at {covered}");
                }
            }
        }
    }
}
