//! Where a descriptor built at mount time lives while mounted: a file in the cache directory
//! (default `/var/cache/chunkfs`, option `cachedir=`), named by the sha256 of its bytes, written
//! atomically and reused when an identical one is there; or a sealed memfd, which the FUSE
//! reader maps directly and the kernel reads through a loop device.

use std::ffi::CStr;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chunkfs_format::digest::Digest;

/// The cache file for a descriptor: `DIR/<sha256>.erofs`, created or reused. Returns its path
/// and the file opened read-only.
pub fn store(dir: &Path, bytes: &[u8], digest: &Digest) -> io::Result<(PathBuf, File)> {
    let ctx = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("cannot {what} {}: {e}", p.display()))
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ctx("create", dir, e))?;
    let path = dir.join(format!("{}.erofs", digest.to_hex()));
    if let Ok(f) = File::open(&path) {
        if same_content(&f, bytes)? {
            return Ok((path, f));
        }
    }
    let tmp = dir.join(format!(
        ".{}.erofs.tmp-{}",
        digest.to_hex(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(ctx("write", &path, e));
    }
    let f = File::open(&path).map_err(|e| ctx("open", &path, e))?;
    Ok((path, f))
}

fn same_content(f: &File, bytes: &[u8]) -> io::Result<bool> {
    if f.metadata()?.len() != bytes.len() as u64 {
        return Ok(false);
    }
    let mut buf = Vec::with_capacity(bytes.len());
    f.take(bytes.len() as u64).read_to_end(&mut buf)?;
    Ok(buf == bytes)
}

/// A sealed, anonymous in-memory file holding `bytes`.
pub fn memfd(name: &CStr, bytes: &[u8]) -> io::Result<File> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut f = File::from(fd);
    f.write_all(bytes)?;
    fcntl(
        &f,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_SEAL,
        ),
    )?;
    Ok(f)
}

/// True if `path` is on tmpfs, where the kernel refuses file-backed EROFS mounts.
pub fn on_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_once_and_reused_or_replaced() {
        let dir = std::env::temp_dir().join(format!("chunkfs-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bytes = vec![7u8; 8192];
        let d = Digest::of(&bytes);
        let (p, _) = store(&dir.join("sub"), &bytes, &d).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        let (p2, _) = store(&dir.join("sub"), &bytes, &d).unwrap();
        assert_eq!(p, p2);
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), mtime);
        // A damaged cache file is replaced, not used.
        std::fs::write(&p, vec![8u8; 8192]).unwrap();
        let (_, mut f) = store(&dir.join("sub"), &bytes, &d).unwrap();
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back, bytes);
        assert_eq!(std::fs::read_dir(dir.join("sub")).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memfd_is_sealed() {
        let mut f = memfd(c"test", b"abc").unwrap();
        assert!(f.write_all(b"x").is_err());
        let mut s = String::new();
        use std::io::Seek;
        f.rewind().unwrap();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "abc");
    }
}
