//! Checking the root image against `chunkfs.digest` before anything from it is mounted.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::cmdline::{FsType, Sha256 as Pinned};
use super::source::Image;

/// The errors of [`check`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image is not the one pinned on the kernel command line.
    #[error(
        "DIGEST MISMATCH: {path} is {actual}, the kernel command line pins {expected}; refusing to boot it"
    )]
    Mismatch {
        /// The image.
        path: PathBuf,
        /// `chunkfs.digest`.
        expected: Pinned,
        /// What the image has.
        actual: Pinned,
    },
    /// The image could not be read.
    #[error("cannot read {path} to check its digest: {source}")]
    Io {
        /// The image.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Digest checking of chunkfs images waits for the `.cfs` reader (format library).
    #[error("{0}: checking a chunkfs image's digest is not available in this build yet")]
    Unsupported(PathBuf),
}

/// Checks `image` against `expected`. For a plain filesystem (`chunkfs.fstype=erofs|squashfs`)
/// the digest is the sha256 of the whole file or device.
pub fn check(image: &Image, fstype: FsType, expected: &Pinned) -> Result<(), Error> {
    let actual = match fstype {
        FsType::Chunkfs => return Err(Error::Unsupported(image.path.clone())),
        FsType::Erofs | FsType::Squashfs => whole_sha256(image)?,
    };
    if actual != *expected {
        return Err(Error::Mismatch {
            path: image.path.clone(),
            expected: *expected,
            actual,
        });
    }
    Ok(())
}

fn whole_sha256(image: &Image) -> Result<Pinned, Error> {
    let io_err = |source| Error::Io {
        path: image.path.clone(),
        source,
    };
    let mut file = File::open(&image.path).map_err(io_err)?.take(image.len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Pinned(hasher.finalize().into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn whole_file_digest_matches_or_names_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"abc").unwrap();
        let image = Image {
            path: path.clone(),
            is_block: false,
            len: 3,
        };
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let mut expected = [0u8; 32];
        hex::decode_to_slice(good, &mut expected).unwrap();
        check(&image, FsType::Erofs, &Pinned(expected)).unwrap();
        expected[0] ^= 1;
        let err = check(&image, FsType::Squashfs, &Pinned(expected)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("DIGEST MISMATCH") && msg.contains(good),
            "{msg}"
        );
    }
}
