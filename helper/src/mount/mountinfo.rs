//! Reading `/proc/self/mountinfo`: whether a directory is already a mount point, and what is
//! mounted there (for `chunkfs umount`).

use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's id.
    pub id: u64,
    /// `major:minor` of the filesystem.
    pub dev: (u32, u32),
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The filesystem type (`erofs`, `fuse.chunkfs`, ...).
    pub fstype: String,
    /// The mount source as shown in `/proc/mounts`.
    pub source: String,
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    let (major, minor) = l.get(2)?.split_once(':')?;
    Some(MountEntry {
        id: l.first()?.parse().ok()?,
        dev: (major.parse().ok()?, minor.parse().ok()?),
        mount_point: PathBuf::from(unescape(l.get(4)?)),
        fstype: unescape(r.first()?),
        source: unescape(r.get(1)?),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\012`, `\011`, `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of this process's namespace.
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The topmost mount at `dir` (an absolute, canonical path), if any.
pub fn mounted_at(dir: &Path) -> std::io::Result<Option<MountEntry>> {
    Ok(read()?.into_iter().rev().find(|m| m.mount_point == dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_escapes() {
        let text = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    90 22 0:61 / /mnt/with\\040space ro,nosuid - fuse.chunkfs /var/tmp/a\\040b.cfs ro,user_id=0\n\
                    91 22 7:3 / /mnt/k ro - erofs oci:/srv/layout:v1 ro\n\
                    garbage\n";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[1].source, "/var/tmp/a b.cfs");
        assert_eq!(m[1].fstype, "fuse.chunkfs");
        assert_eq!(m[1].dev, (0, 61));
        assert_eq!(m[2].source, "oci:/srv/layout:v1");
        assert_eq!(unescape("a\\134b\\01"), "a\\b\\01");
    }
}
