//! `chunkfs verify --store` (docs/store.md §7): every blob against its digest; every pack's
//! state header, index and file length; every present frame (state 1 or 2) decompressed and
//! checked against its index entry; every pin, mount record and ref readable. It reads only,
//! under `store.lock` held shared (no gc meanwhile), and may run while images fill packs.

use std::io::Read;
use std::path::PathBuf;

use chunkfs_format::digest::{Digest, Hasher};

use super::Store;
use super::error::Error;

/// One thing `verify` found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file concerned.
    pub path: PathBuf,
    /// What is wrong with it.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

/// What `verify` checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Everything wrong, by file.
    pub problems: Vec<Problem>,
    /// Packs checked.
    pub packs: u64,
    /// Present frames checked.
    pub frames: u64,
    /// Blobs checked.
    pub blobs: u64,
    /// Pins, mount records and refs read.
    pub records: u64,
}

impl VerifyReport {
    /// True if nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Checks the whole store; what is wrong is in the report, not an error (an error means
    /// the check itself could not run, e.g. a directory cannot be listed).
    pub fn verify(&self) -> Result<VerifyReport, Error> {
        let _setup = self.lock_store(false)?;
        let mut r = VerifyReport::default();
        for (d, _) in self.blob_list()? {
            r.blobs += 1;
            let path = self.blob_path(&d);
            if let Err(what) = hash_file(&path).map(|h| h == d).and_then(|ok| {
                ok.then_some(())
                    .ok_or_else(|| "does not match its digest".to_owned())
            }) {
                r.problems.push(Problem { path, what });
            }
        }
        for d in self.pack_digests()? {
            r.packs += 1;
            let pack = match self.pack(&d) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    r.problems.push(problem_of(e, self.pack_path(&d)));
                    continue;
                }
            };
            let states = match pack.states() {
                Ok(s) => s,
                Err(e) => {
                    r.problems.push(problem_of(e, pack.path().to_owned()));
                    continue;
                }
            };
            r.frames += states
                .iter()
                .filter(|&&s| s != super::state::ABSENT)
                .count() as u64;
            match pack.check_present() {
                Ok(bad) => r.problems.extend(bad.into_iter().map(|(i, what)| Problem {
                    path: pack.path().to_owned(),
                    what: format!(
                        "frame {i} at {} is marked present but {what}",
                        pack.entries()[i].offset
                    ),
                })),
                Err(e) => r.problems.push(problem_of(e, pack.path().to_owned())),
            }
        }
        match self.pins() {
            Ok(p) => r.records += p.len() as u64,
            Err(e) => r.problems.push(problem_of(e, self.root.join("pins"))),
        }
        match self.mount_records() {
            Ok(m) => r.records += m.len() as u64,
            Err(e) => r.problems.push(problem_of(e, self.root.join("mounts"))),
        }
        for (path, manifest) in self.refs()? {
            r.records += 1;
            if manifest.is_none() {
                r.problems.push(Problem {
                    path,
                    what: "ref does not hold a digest".into(),
                });
            }
        }
        Ok(r)
    }
}

fn hash_file(path: &std::path::Path) -> Result<Digest, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// A problem from an error, naming the file the error names (or `fallback`).
fn problem_of(e: Error, fallback: PathBuf) -> Problem {
    match e {
        Error::CorruptFile { path, problem } => Problem {
            path,
            what: problem,
        },
        Error::Io { path, what, source } => Problem {
            path,
            what: format!("{what}: {source}"),
        },
        other => Problem {
            path: fallback,
            what: other.to_string(),
        },
    }
}
