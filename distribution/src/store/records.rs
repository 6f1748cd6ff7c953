//! What keeps an image's files in the store (docs/store.md §7): pins (`pins/HEX.json`, an
//! image `chunkfs pull` keeps), mount records (`mounts/ID.json`, an image a mount uses, or that
//! a process is setting up: a [`Lease`]), and refs (`refs/HOST/REPO/:TAG`, the manifest a tag
//! resolved to last, for offline mounts).

use std::path::{Path, PathBuf};

use chunkfs_format::digest::Digest;
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::files::write_atomic;
use super::{Store, proc};

/// The files an image needs: what pins and mount records name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// The reference it was mounted or pulled as (`docker://host/repo:tag`, ...).
    pub reference: String,
    /// The manifest's digest.
    pub manifest: Digest,
    /// Blobs kept with it (manifest, config, metadata).
    pub blobs: Vec<Digest>,
    /// Packs its chunks are read from.
    pub packs: Vec<Digest>,
    /// The key of its descriptor in `descriptors/`, if one was built.
    pub descriptor: Option<Digest>,
}

/// Where a live mount is, so that `gc` can tell whether it still exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    /// The mount point.
    pub mount_point: String,
    /// The mount's id (`/proc/self/mountinfo`'s first field).
    pub mount_id: u64,
}

/// The JSON form of an image record.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RecordJson {
    reference: String,
    manifest: String,
    blobs: Vec<String>,
    packs: Vec<String>,
    #[serde(default)]
    descriptor: Option<String>,
}

/// The JSON form of a mount record: an image record and who keeps it alive.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MountJson {
    #[serde(flatten)]
    image: RecordJson,
    pid: u32,
    pid_start: u64,
    boot_id: String,
    #[serde(default)]
    mount: Option<MountInfo>,
}

impl From<&ImageRecord> for RecordJson {
    fn from(r: &ImageRecord) -> Self {
        RecordJson {
            reference: r.reference.clone(),
            manifest: r.manifest.to_oci(),
            blobs: r.blobs.iter().map(Digest::to_oci).collect(),
            packs: r.packs.iter().map(Digest::to_oci).collect(),
            descriptor: r.descriptor.as_ref().map(Digest::to_oci),
        }
    }
}

impl RecordJson {
    fn decode(&self) -> Result<ImageRecord, String> {
        let d = |s: &String| Digest::from_oci(s).ok_or_else(|| format!("{s:?} is not a digest"));
        Ok(ImageRecord {
            reference: self.reference.clone(),
            manifest: d(&self.manifest)?,
            blobs: self.blobs.iter().map(d).collect::<Result<_, _>>()?,
            packs: self.packs.iter().map(d).collect::<Result<_, _>>()?,
            descriptor: self.descriptor.as_ref().map(d).transpose()?,
        })
    }
}

/// A mount record of this process (`mounts/ID.json`): the image's files are a root of `gc`
/// while the recorded process lives or the recorded mount exists. Removed when dropped,
/// unless [`Lease::keep`] leaves it to the mount (whose daemon or unmount removes it with
/// [`Store::release_mount`], or `gc` once the mount is gone).
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    tmp: PathBuf,
    id: String,
    json: MountJson,
    record: ImageRecord,
    keep: bool,
}

impl Lease {
    /// The record's id (its file is `mounts/ID.json`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The image's files.
    pub fn record(&self) -> &ImageRecord {
        &self.record
    }

    /// Records the mount: the image stays a root while it is mounted at `mount_point` as
    /// mount `mount_id`, or while process `pid` (the FUSE reader or the filler; 0 for none)
    /// lives.
    pub fn set_mounted(&mut self, mount_point: &str, mount_id: u64, pid: u32) -> Result<(), Error> {
        self.json.mount = Some(MountInfo {
            mount_point: mount_point.to_owned(),
            mount_id,
        });
        self.json.pid = pid;
        self.json.pid_start = proc::start_time(pid).unwrap_or(0);
        self.write()
    }

    /// Records the key of the descriptor built for the mount (kept by `gc` with the image).
    pub fn set_descriptor(&mut self, key: Digest) -> Result<(), Error> {
        self.record.descriptor = Some(key);
        self.json.image.descriptor = Some(key.to_oci());
        self.write()
    }

    /// Leaves the record in place when the lease is dropped; returns its id.
    pub fn keep(mut self) -> String {
        self.keep = true;
        self.id.clone()
    }

    fn write(&self) -> Result<(), Error> {
        let bytes = serde_json::to_vec(&self.json)
            .map_err(|e| Error::Usage(format!("mount record: {e}")))?;
        write_atomic(&self.tmp, &self.path, &bytes)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A mount record read back.
pub(crate) struct MountRecord {
    pub(crate) path: PathBuf,
    pub(crate) record: ImageRecord,
    pub(crate) live: bool,
}

impl Store {
    /// Writes a mount record for `record` held by this process: a root of gc from now on.
    pub fn lease(&self, record: &ImageRecord) -> Result<Lease, Error> {
        let (pid, pid_start) = proc::this_process();
        let boot =
            proc::boot_id().map_err(Error::io("/proc/sys/kernel/random/boot_id", "reading"))?;
        let id = format!(
            "{pid}-{}-{}",
            pid_start,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let lease = Lease {
            path: self.root.join("mounts").join(format!("{id}.json")),
            tmp: self.tmp_dir(),
            id,
            json: MountJson {
                image: record.into(),
                pid,
                pid_start,
                boot_id: hex::encode(boot),
                mount: None,
            },
            record: record.clone(),
            keep: false,
        };
        lease.write()?;
        Ok(lease)
    }

    /// Removes the mount record `id` (the mount is gone).
    pub fn release_mount(&self, id: &str) -> Result<(), Error> {
        check_name(id, "mount id")?;
        let path = self.root.join("mounts").join(format!("{id}.json"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(&path, "removing the mount record")(e))
            }
            _ => Ok(()),
        }
    }

    /// Pins an image: its files stay until [`Store::unpin`].
    pub fn pin(&self, record: &ImageRecord) -> Result<(), Error> {
        let bytes = serde_json::to_vec(&RecordJson::from(record))
            .map_err(|e| Error::Usage(format!("pin: {e}")))?;
        let path = self.pin_path(&record.manifest);
        write_atomic(&self.tmp_dir(), &path, &bytes)
    }

    /// Removes the pin of the image whose manifest is `manifest`; false if there was none.
    pub fn unpin(&self, manifest: &Digest) -> Result<bool, Error> {
        let path = self.pin_path(manifest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&path, "removing the pin")(e)),
        }
    }

    /// Every pinned image.
    pub fn pins(&self) -> Result<Vec<ImageRecord>, Error> {
        self.list_json("pins")?
            .into_iter()
            .map(|(path, bytes)| {
                serde_json::from_slice::<RecordJson>(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|j| j.decode())
                    .map_err(|p| Error::corrupt(&path, format!("pin: {p}")))
            })
            .collect()
    }

    /// Every mount record, with whether it is live: written in this boot, and its process
    /// lives or its mount exists.
    pub(crate) fn mount_records(&self) -> Result<Vec<MountRecord>, Error> {
        let boot =
            proc::boot_id().map_err(Error::io("/proc/sys/kernel/random/boot_id", "reading"))?;
        let boot = hex::encode(boot);
        self.list_json("mounts")?
            .into_iter()
            .map(|(path, bytes)| {
                let j: MountJson = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::corrupt(&path, format!("mount record: {e}")))?;
                let record = j
                    .image
                    .decode()
                    .map_err(|p| Error::corrupt(&path, format!("mount record: {p}")))?;
                let live = j.boot_id == boot
                    && (proc::alive(j.pid, j.pid_start)
                        || j.mount
                            .as_ref()
                            .is_some_and(|m| proc::mounted(m.mount_id, &m.mount_point)));
                Ok(MountRecord { path, record, live })
            })
            .collect()
    }

    /// Records that `reference` (`HOST[:PORT]/REPO:TAG`) resolved to `manifest`.
    pub fn set_ref(&self, reference: &str, manifest: &Digest) -> Result<(), Error> {
        let path = self.ref_path(reference)?;
        if let Some(parent) = path.parent() {
            super::files::create_dir(parent)?;
        }
        write_atomic(&self.tmp_dir(), &path, manifest.to_oci().as_bytes())
    }

    /// The manifest `reference` resolved to last, if recorded.
    pub fn resolve_ref(&self, reference: &str) -> Result<Option<Digest>, Error> {
        let path = self.ref_path(reference)?;
        match std::fs::read_to_string(&path) {
            Ok(s) => Digest::from_oci(s.trim())
                .map(Some)
                .ok_or_else(|| Error::corrupt(&path, "ref does not hold a digest")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, "reading the ref")(e)),
        }
    }

    /// Every ref: its file and the manifest it names (`None` if the file is damaged).
    pub(crate) fn refs(&self) -> Result<Vec<(PathBuf, Option<Digest>)>, Error> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Option<Digest>)>) -> Result<(), Error> {
            for entry in std::fs::read_dir(dir).map_err(Error::io(dir, "listing refs"))? {
                let entry = entry.map_err(Error::io(dir, "listing refs"))?;
                let path = entry.path();
                if entry
                    .file_type()
                    .map_err(Error::io(&path, "listing refs"))?
                    .is_dir()
                {
                    walk(&path, out)?;
                } else {
                    let d = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| Digest::from_oci(s.trim()));
                    out.push((path, d));
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.root.join("refs"), &mut out)?;
        Ok(out)
    }

    fn ref_path(&self, reference: &str) -> Result<PathBuf, Error> {
        let bad = || {
            Error::Usage(format!(
                "{reference:?} is not a reference of the form HOST[:PORT]/REPO:TAG"
            ))
        };
        let (name, tag) = reference.rsplit_once(':').ok_or_else(bad)?;
        if tag.contains('/') || !crate::oci::reference::is_valid_tag(tag) {
            return Err(bad());
        }
        let mut path = self.root.join("refs");
        let mut parts = 0;
        for part in name.split('/') {
            check_name(part, "reference component").map_err(|_| bad())?;
            path.push(part);
            parts += 1;
        }
        if parts < 2 {
            return Err(bad());
        }
        // `:TAG`: no repository component starts with a colon, so the tag file of `host/a:b`
        // never collides with the directory of the repository `host/a/b`.
        path.push(format!(":{tag}"));
        Ok(path)
    }

    fn pin_path(&self, manifest: &Digest) -> PathBuf {
        self.root
            .join("pins")
            .join(format!("{}.json", manifest.to_hex()))
    }

    /// The `*.json` files of `sub`, read.
    pub(crate) fn list_json(&self, sub: &str) -> Result<Vec<(PathBuf, Vec<u8>)>, Error> {
        let dir = self.root.join(sub);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(Error::io(&dir, "listing"))? {
            let path = entry.map_err(Error::io(&dir, "listing"))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                match std::fs::read(&path) {
                    Ok(bytes) => out.push((path, bytes)),
                    // Removed since it was listed.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&path, "reading")(e)),
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A file-name component: not empty, not `.` or `..`, of `[A-Za-z0-9._:-]`.
fn check_name(s: &str, what: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!("{s:?} is not a valid {what}")))
    }
}
