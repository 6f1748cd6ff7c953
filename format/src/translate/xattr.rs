//! Inline xattr bodies: a 12-byte header, then one entry per xattr, each 4-byte aligned, with
//! the name's namespace replaced by EROFS's short prefix index (docs/descriptor.md §3.3).

use chunkfs_kernel_abi::Pod;
use chunkfs_kernel_abi::erofs::{XattrEntry, XattrIbodyHeader, xattr_index};

use crate::model::Xattr;

/// Namespace prefixes the kernel's EROFS serves, with their index. An entry whose prefix is a
/// whole name (the POSIX ACLs) has an empty suffix.
const PREFIXES: [(&[u8], u8); 5] = [
    (b"user.", xattr_index::USER),
    (b"system.posix_acl_access", xattr_index::POSIX_ACL_ACCESS),
    (b"system.posix_acl_default", xattr_index::POSIX_ACL_DEFAULT),
    (b"trusted.", xattr_index::TRUSTED),
    (b"security.", xattr_index::SECURITY),
];

/// Splits a full name into its prefix index and the suffix stored on disk.
fn split(name: &[u8]) -> Option<(u8, &[u8])> {
    PREFIXES.iter().find_map(|&(p, idx)| {
        let suffix = name.strip_prefix(p)?;
        // The ACL names are whole names: "system.posix_acl_accessX" is not an ACL.
        if p.last() != Some(&b'.') && !suffix.is_empty() {
            return None;
        }
        Some((idx, suffix))
    })
}

fn entry_len(suffix: usize, value: usize) -> u64 {
    ((4 + suffix + value) as u64).next_multiple_of(4)
}

/// Bytes of the inline body for these xattrs (0 without xattrs), or why they cannot be stored.
pub(super) fn ibody_size(xattrs: &[Xattr]) -> Result<u64, String> {
    if xattrs.is_empty() {
        return Ok(0);
    }
    let mut size = 12u64;
    for x in xattrs {
        let (_, suffix) = split(&x.name).ok_or_else(|| format!("xattr {:?} is in a namespace EROFS cannot store (user., trusted., security. and POSIX ACLs only)", String::from_utf8_lossy(&x.name)))?;
        // Both fit: names are at most 255 bytes and values 65535 (docs/format.md §3.5).
        size += entry_len(suffix.len(), x.value.len());
    }
    // i_xattr_icount = 1 + (size - 12) / 4 must fit 16 bits.
    if (size - 12) / 4 + 1 > u64::from(u16::MAX) {
        return Err(format!(
            "xattrs need {size} bytes, more than an inode's 16-bit xattr count can describe"
        ));
    }
    Ok(size)
}

/// Writes the body; `out` is exactly [`ibody_size`] bytes, zeroed.
pub(super) fn encode(xattrs: &[Xattr], out: &mut [u8]) {
    if xattrs.is_empty() {
        return;
    }
    let header = XattrIbodyHeader::zeroed();
    out[..12].copy_from_slice(header.as_bytes());
    let mut at = 12usize;
    for x in xattrs {
        // `ibody_size` accepted every name.
        let Some((index, suffix)) = split(&x.name) else {
            continue;
        };
        let mut e = XattrEntry::zeroed();
        e.name_len = suffix.len() as u8;
        e.name_index = index;
        e.value_size = (x.value.len() as u16).into();
        out[at..at + 4].copy_from_slice(e.as_bytes());
        let name_at = at + 4;
        out[name_at..name_at + suffix.len()].copy_from_slice(suffix);
        let value_at = name_at + suffix.len();
        out[value_at..value_at + x.value.len()].copy_from_slice(&x.value);
        at += entry_len(suffix.len(), x.value.len()) as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(name: &[u8], value: &[u8]) -> Xattr {
        Xattr {
            name: name.to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn prefixes_map_to_indexes_and_acl_names_are_whole() {
        assert_eq!(split(b"user.a"), Some((1, &b"a"[..])));
        assert_eq!(split(b"security.capability"), Some((6, &b"capability"[..])));
        assert_eq!(split(b"system.posix_acl_access"), Some((2, &b""[..])));
        assert_eq!(split(b"system.posix_acl_accessX"), None);
        assert_eq!(split(b"system.other"), None);
        assert_eq!(split(b"lustre.x"), None);
    }

    #[test]
    fn body_is_header_plus_aligned_entries() {
        let xs = vec![x(b"trusted.k", b"12345"), x(b"user.", b"")];
        let n = ibody_size(&xs).unwrap();
        // 12 + round4(4 + 1 + 5) + round4(4 + 0 + 0)
        assert_eq!(n, 12 + 12 + 4);
        let mut out = vec![0u8; n as usize];
        encode(&xs, &mut out);
        assert_eq!(&out[12..16], &[1, 4, 5, 0]);
        assert_eq!(&out[16..22], b"k12345");
        assert_eq!(&out[24..28], &[0, 1, 0, 0]);
        assert!(ibody_size(&[x(b"system.nfs4_acl", b"")]).is_err());
    }
}
