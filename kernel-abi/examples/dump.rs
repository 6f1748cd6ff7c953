//! Validates a descriptor and prints one line per path with the attributes a `stat` would show
//! and how the data is mapped; for comparing against a kernel mount by hand.
//!
//! `cargo run -p chunkfs-kernel-abi --example dump -- IMAGE [--map]`

use chunkfs_kernel_abi::Descriptor;
use chunkfs_kernel_abi::parse::{InodeView, Kind, MapKind};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: dump IMAGE [--map]");
        std::process::exit(2);
    };
    let show_map = args.iter().any(|a| a == "--map");
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    });
    let mut scratch = vec![0u8; Descriptor::<&[u8]>::scratch_len(&bytes).unwrap_or(0)];
    let d = match Descriptor::parse_in(&bytes[..], &mut scratch) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{path}: {e} ({e:?})");
            std::process::exit(1)
        }
    };
    walk(&d, d.root(), "", show_map);
}

fn walk(d: &Descriptor<&[u8]>, dir: InodeView<'_>, prefix: &str, show_map: bool) {
    print(dir, if prefix.is_empty() { "/" } else { prefix }, show_map);
    for e in dir.entries().into_iter().flatten() {
        let e = e.expect("validated");
        if e.name == b"." || e.name == b".." {
            continue;
        }
        let name = format!(
            "{prefix}/{}",
            String::from_utf8_lossy(e.name).escape_debug()
        );
        let child = d.inode(e.nid).expect("validated");
        if child.kind() == Kind::Dir {
            walk(d, child, &name, show_map);
        } else {
            print(child, &name, show_map);
        }
    }
}

fn print(i: InodeView<'_>, path: &str, show_map: bool) {
    let mut line = format!(
        "{path} ino={} mode={:o} nlink={} uid={} gid={} size={} blocks={} mtime={}.{:09} rdev={}",
        i.nid(),
        i.mode(),
        i.nlink(),
        i.uid(),
        i.gid(),
        i.size(),
        i.blocks(),
        i.mtime(),
        i.mtime_nsec(),
        i.rdev()
    );
    if let Some([a, b]) = i.symlink_target() {
        line += &format!(
            " -> {}{}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
    for x in i.xattrs() {
        let x = x.expect("validated");
        line += &format!(
            " xattr[{}{}]={}",
            String::from_utf8_lossy(x.prefix),
            String::from_utf8_lossy(x.suffix),
            x.value.len()
        );
    }
    println!("{line}");
    if show_map && i.kind() == Kind::File {
        let mut pos = 0;
        while let Some(m) = i.map(pos) {
            let kind = match m.kind {
                MapKind::Hole => "hole".to_string(),
                MapKind::Raw { device, offset } => format!("raw dev{device}@{offset}"),
                MapKind::Interlaced { device, offset } => {
                    format!("interlaced dev{device}@{offset}")
                }
                MapKind::Encoded {
                    device,
                    offset,
                    len,
                    algorithm,
                    partial,
                } => {
                    format!(
                        "alg{algorithm} dev{device}@{offset}+{len}{}",
                        if partial { " partial" } else { "" }
                    )
                }
                MapKind::Fragment { packed_offset } => format!("fragment @{packed_offset}"),
            };
            println!(
                "    [{}, {}) {kind}",
                m.logical_start,
                m.logical_start + m.logical_len
            );
            pos = m.logical_start + m.logical_len;
        }
    }
}
