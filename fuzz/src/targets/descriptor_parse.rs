//! An EROFS descriptor (a `.cfs` or a standalone descriptor): validate it with kernel-abi, walk
//! everything reachable (entries, lookups, xattrs, symlinks, every mapping), then serve every
//! regular file through the FUSE reader's library, with the `.cfs` chunk index (located through
//! the unchecked header, if there is one) as its digest table.

use chunkfs_kernel_abi::Descriptor;
use chunkfs_kernel_abi::parse::Kind;
use chunkfs_reader::{Config, DigestSource, Reader};

/// Bounds the walk: a valid descriptor of a few KiB can still describe huge sparse files.
const READ_BUDGET: u64 = 64 << 20;

/// Runs one input, as the fuzz target `descriptor_parse` does; panics on a bug.
pub fn run(data: &[u8]) {
    let Ok(desc) = Descriptor::parse(data) else {
        return;
    };
    let _ = (desc.inos(), desc.total_blocks(), desc.block_size());
    for id in 0..=desc.extra_devices() {
        let _ = desc.device(id);
    }
    let mut files = Vec::new();
    let mut stack = vec![desc.root_nid()];
    let mut visited = 0usize;
    while let Some(nid) = stack.pop() {
        visited += 1;
        assert!(
            visited <= data.len(),
            "walk longer than the input: a cycle got through"
        );
        let Some(inode) = desc.inode(nid) else {
            continue;
        };
        let _ = (
            inode.mode(),
            inode.uid(),
            inode.gid(),
            inode.mtime(),
            inode.blocks(),
        );
        for x in inode.xattrs() {
            let Ok(x) = x else { break };
            let mut name = x.prefix.to_vec();
            name.extend_from_slice(x.suffix);
            assert_eq!(
                inode.xattr(&name).is_some(),
                true,
                "listed xattr not found by name"
            );
        }
        match inode.kind() {
            Kind::Dir => {
                let Some(entries) = inode.entries() else {
                    continue;
                };
                for e in entries {
                    let Ok(e) = e else { break };
                    if e.name == b"." || e.name == b".." {
                        continue;
                    }
                    let found = inode.lookup(e.name).map(|f| f.nid);
                    assert_eq!(found, Some(e.nid), "lookup disagrees with the listing");
                    stack.push(e.nid);
                }
            }
            Kind::Symlink => {
                let _ = inode.symlink_target();
            }
            Kind::File => {
                let mut pos = 0;
                while let Some(m) = inode.map(pos) {
                    assert!(m.logical_start <= pos && m.logical_len > 0);
                    pos = m.logical_start + m.logical_len;
                }
                files.push((nid, inode.size()));
            }
            _ => {}
        }
    }

    let path = crate::scratch().join("descriptor");
    crate::write(&path, data);
    let digests = crate::cfs_index(data)
        .map(|t| {
            vec![DigestSource {
                bytes: t.to_vec(),
                device: None,
            }]
        })
        .unwrap_or_default();
    let mut config = Config::new(&path, vec![], digests);
    config.cache_bytes = 4 << 20;
    let Ok(reader) = Reader::open(config) else {
        return;
    };
    let mut budget = READ_BUDGET;
    for (nid, size) in files {
        let mut pos = 0u64;
        while pos < size && budget > 0 {
            let n = (size - pos).min(128 << 10) as u32;
            match reader.read(nid, pos, n) {
                Ok(bytes) => {
                    assert!(bytes.len() as u64 <= u64::from(n), "read returned too much");
                    if bytes.is_empty() {
                        break;
                    }
                    pos += bytes.len() as u64;
                    budget = budget.saturating_sub(bytes.len() as u64);
                }
                Err(_) => break,
            }
        }
    }
}
