//! Blobs kept whole by digest (`blobs/sha256/HEX`: manifests, indexes, configs, metadata) and
//! descriptors built for mounts (`descriptors/HEX.erofs`). A blob is stored only after its
//! sha256 checks, through a temporary file, fsynced and renamed; it is checked again whenever
//! it is read.

use std::io::Read;
use std::path::PathBuf;

use chunkfs_format::digest::Digest;

use super::Store;
use super::error::Error;
use super::files::write_atomic;
use crate::source::BlobSource;

impl Store {
    /// Stores `bytes` as the blob `digest`, after checking it is that blob.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), Error> {
        if Digest::of(bytes) != *digest {
            return Err(Error::BadBlob {
                digest: *digest,
                from: "the caller".into(),
                problem: "the bytes do not match the digest".into(),
            });
        }
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        write_atomic(&self.tmp_dir(), &path, bytes)
    }

    /// The blob `digest` if the store has it (checked; at most `max_len` bytes). A stored blob
    /// that no longer matches its digest is an error naming the file.
    pub fn blob(&self, digest: &Digest, max_len: u64) -> Result<Option<Vec<u8>>, Error> {
        let path = self.blob_path(digest);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, "opening the blob")(e)),
        };
        let mut bytes = Vec::new();
        file.take(max_len.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(Error::io(&path, "reading the blob"))?;
        if bytes.len() as u64 > max_len {
            return Err(Error::BadBlob {
                digest: *digest,
                from: path.display().to_string(),
                problem: format!("more than {max_len} bytes"),
            });
        }
        if Digest::of(&bytes) != *digest {
            return Err(Error::corrupt(&path, "blob does not match its digest"));
        }
        Ok(Some(bytes))
    }

    /// The blob `digest`: from the store, or fetched from `source`, checked and stored.
    pub fn fetch_blob(
        &self,
        digest: &Digest,
        max_len: u64,
        source: &dyn BlobSource,
    ) -> Result<Vec<u8>, Error> {
        if let Some(b) = self.blob(digest, max_len)? {
            return Ok(b);
        }
        let bytes = source
            .read_blob(digest, max_len)
            .map_err(|e| Error::Fetch {
                blob: *digest,
                range: 0..max_len,
                from: source.name(),
                source: e,
            })?;
        if bytes.len() as u64 > max_len || Digest::of(&bytes) != *digest {
            return Err(Error::BadBlob {
                digest: *digest,
                from: source.name(),
                problem: "the bytes served do not match the digest or are too long".into(),
            });
        }
        self.put_blob(digest, &bytes)?;
        Ok(bytes)
    }

    /// Where the descriptor keyed `key` (sha256 of what it derives from) is kept.
    pub fn descriptor_path(&self, key: &Digest) -> PathBuf {
        self.root
            .join("descriptors")
            .join(format!("{}.erofs", key.to_hex()))
    }

    /// Stores a descriptor under `key`, atomically; returns its path.
    pub fn put_descriptor(&self, key: &Digest, bytes: &[u8]) -> Result<PathBuf, Error> {
        let path = self.descriptor_path(key);
        write_atomic(&self.tmp_dir(), &path, bytes)?;
        Ok(path)
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.to_hex())
    }

    /// Every blob file: its digest (from its name) and length.
    pub(crate) fn blob_list(&self) -> Result<Vec<(Digest, u64)>, Error> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir, "listing blobs"))? {
            let entry = entry.map_err(Error::io(&dir, "listing blobs"))?;
            let name = entry.file_name();
            if let Some(d) = Digest::from_hex(&name.to_string_lossy()) {
                let len = entry.metadata().map_or(0, |m| m.len());
                out.push((d, len));
            }
        }
        out.sort();
        Ok(out)
    }
}
