//! Checking the root image against `chunkfs.digest` before anything from it is mounted.
//!
//! A plain filesystem image (`chunkfs.fstype=erofs|squashfs`) is pinned by the sha256 of its
//! bytes. A chunkfs image is pinned by its metadata digest (what `chunkfs pack` and `chunkfs
//! inspect` print): [`check`] compares the one in the image's header with the pin, so that a
//! wrong image is refused with a message naming both; the mount library then checks the header,
//! the metadata blob and everything derived from it against that digest again, and with
//! [`chunkfs_level`] = full every chunk too, before the root is mounted.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use chunkfs_format::cfs::header::{HEADER_LEN, Header};
use sha2::{Digest, Sha256};

use super::cmdline::{FsType, Sha256 as Pinned, Verify};
use super::source::Image;
use crate::mount::VerifyLevel;

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
    /// The image has no valid chunkfs header, so it has no metadata digest to compare.
    #[error("{path} is not a chunkfs image ({problem}); refusing to boot it")]
    NotChunkfs {
        /// The image.
        path: PathBuf,
        /// What is wrong with its header.
        problem: chunkfs_format::cfs::header::HeaderError,
    },
}

/// Checks `image` against `expected`: for a plain filesystem the sha256 of the whole file or
/// device (up to `image.len`), for a chunkfs image the metadata digest its header names.
pub fn check(image: &Image, fstype: FsType, expected: &Pinned) -> Result<(), Error> {
    let actual = match fstype {
        FsType::Chunkfs => Pinned(read_header(image)?.metadata_digest.0),
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

/// What `chunkfs.verify` means for a chunkfs root: `auto` hashes every chunk before the mount
/// when a digest is pinned, so that a tampered chunk stops the boot (the kernel's EROFS checks
/// no digests; the FUSE reader would only fail the reads of the damaged file), and checks the
/// metadata only when nothing is pinned.
pub fn chunkfs_level(verify: Verify, pinned: bool) -> VerifyLevel {
    match verify {
        Verify::Full => VerifyLevel::Full,
        Verify::Metadata => VerifyLevel::Metadata,
        Verify::Auto if pinned => VerifyLevel::Full,
        Verify::Auto => VerifyLevel::Metadata,
    }
}

/// Reads and checks the chunkfs header of `image`: its metadata digest, and its length, which
/// on a block device is less than the device's.
pub fn read_header(image: &Image) -> Result<Header, Error> {
    let io_err = |source| Error::Io {
        path: image.path.clone(),
        source,
    };
    let mut head = [0u8; HEADER_LEN];
    File::open(&image.path)
        .and_then(|f| f.read_exact_at(&mut head, 0))
        .map_err(io_err)?;
    Header::parse(&head).map_err(|problem| Error::NotChunkfs {
        path: image.path.clone(),
        problem,
    })
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
    use chunkfs_format::cfs::header::MAGIC;
    use chunkfs_format::cfs::write::{PackOptions, pack_dir};

    fn image(path: &std::path::Path, len: u64) -> Image {
        Image {
            path: path.to_owned(),
            is_block: false,
            len,
        }
    }

    #[test]
    fn whole_file_digest_matches_or_names_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"abc").unwrap();
        let image = image(&path, 3);
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

    #[test]
    fn chunkfs_images_are_pinned_by_their_metadata_digest() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tree");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a"), b"hello").unwrap();
        let cfs = dir.path().join("img.cfs");
        let summary = pack_dir(&src, &cfs, &PackOptions::default(), |_| {}).unwrap();
        let mut head = [0u8; HEADER_LEN];
        File::open(&cfs)
            .unwrap()
            .read_exact_at(&mut head, 0)
            .unwrap();
        let digest = Header::parse(&head).unwrap().metadata_digest;
        assert_eq!(digest, summary.metadata_digest);
        let image = image(&cfs, std::fs::metadata(&cfs).unwrap().len());
        check(&image, FsType::Chunkfs, &Pinned(digest.0)).unwrap();

        let mut other = digest.0;
        other[31] ^= 0x80;
        let msg = check(&image, FsType::Chunkfs, &Pinned(other))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("DIGEST MISMATCH") && msg.contains(&digest.to_hex()),
            "{msg}"
        );

        // The whole-file digest of the image is not its identity.
        let whole = whole_sha256(&image).unwrap();
        assert!(check(&image, FsType::Chunkfs, &whole).is_err());

        // A file without a chunkfs header has no metadata digest.
        let plain = dir.path().join("plain");
        let mut bytes = vec![0u8; 4096];
        bytes[..8].copy_from_slice(b"hsqs\0\0\0\0");
        std::fs::write(&plain, &bytes).unwrap();
        let msg = check(&image_of(&plain), FsType::Chunkfs, &Pinned(digest.0))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a chunkfs image"), "{msg}");
        assert_ne!(&bytes[..8], &MAGIC[..]);
    }

    fn image_of(path: &std::path::Path) -> Image {
        image(path, std::fs::metadata(path).unwrap().len())
    }

    #[test]
    fn auto_is_full_when_pinned() {
        assert_eq!(chunkfs_level(Verify::Auto, true), VerifyLevel::Full);
        assert_eq!(chunkfs_level(Verify::Auto, false), VerifyLevel::Metadata);
        assert_eq!(chunkfs_level(Verify::Metadata, true), VerifyLevel::Metadata);
        assert_eq!(chunkfs_level(Verify::Full, false), VerifyLevel::Full);
    }
}
