//! What the daemons of a lazy registry mount are given (docs/lazy.md §8): the store, the pack
//! files the mount reads and which of their frames, the registry to fetch from, and what to
//! prefetch. The mount helper builds a [`LazySpec`] from its plan and hands it to the FUSE
//! reader daemon or the fanotify filler as a sealed memfd (it can be large: a frame list per
//! pack); credentials given on the command line go through a second memfd
//! ([`credentials_memfd`]). Neither appears in a command line, the mount table or a log.
//!
//! ```no_run
//! # use chunkfs_helper::lazy::work::LazySpec;
//! # fn f(spec: LazySpec) -> Result<(), String> {
//! let file = spec.to_memfd().map_err(|e| e.to_string())?; // the helper: inherited by the daemon
//! let back = LazySpec::read_from(file)?;                  // the daemon
//! let opened = back.open(None)?;                          // store, packs, registry client
//! println!("{} packs from {}", opened.packs.len(), opened.client.name());
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{Read, Seek};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chunkfs_distribution::registry::{
    AuthEnv, Client, CredentialOptions, Credentials, ImageRef, Limits, Options,
};
use chunkfs_distribution::store::{Pack, Store};
use chunkfs_format::digest::Digest;
use serde::{Deserialize, Serialize};

/// Largest spec read back (a frame list of a few million frames).
const SPEC_MAX: u64 = 256 << 20;

/// How the daemons reach the registry: everything but secrets.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistrySpec {
    /// Verify TLS certificates (`tls-verify=false` turns it off).
    pub tls_verify: bool,
    /// `cert-dir=DIR`.
    pub cert_dir: Option<PathBuf>,
    /// `plain-http`.
    pub plain_http: bool,
    /// `authfile=FILE`: searched by the daemon as by the helper.
    pub authfile: Option<PathBuf>,
    /// The helper's `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR`, `$XDG_CONFIG_HOME`,
    /// `$DOCKER_CONFIG` and `$HOME` at mount time: the daemon finds the same auth files.
    pub auth_env: AuthEnvSpec,
}

/// [`AuthEnv`] in a form that serializes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthEnvSpec {
    /// `$REGISTRY_AUTH_FILE`.
    pub registry_auth_file: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$DOCKER_CONFIG`.
    pub docker_config: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
}

impl From<&AuthEnv> for AuthEnvSpec {
    fn from(e: &AuthEnv) -> Self {
        Self {
            registry_auth_file: e.registry_auth_file.clone(),
            xdg_runtime_dir: e.xdg_runtime_dir.clone(),
            xdg_config_home: e.xdg_config_home.clone(),
            docker_config: e.docker_config.clone(),
            home: e.home.clone(),
        }
    }
}

impl From<&AuthEnvSpec> for AuthEnv {
    fn from(e: &AuthEnvSpec) -> Self {
        Self {
            registry_auth_file: e.registry_auth_file.clone(),
            xdg_runtime_dir: e.xdg_runtime_dir.clone(),
            xdg_config_home: e.xdg_config_home.clone(),
            docker_config: e.docker_config.clone(),
            home: e.home.clone(),
        }
    }
}

/// The limits of a lazy mount's registry client: shorter than a pull's, because a reader
/// waits on every fetch. A registry that refuses connections fails a read within about a
/// second; one that does not answer at all within about half a minute.
pub fn lazy_limits() -> Limits {
    Limits {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(20),
        retries: 2,
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
        retry_after_max: Duration::from_secs(5),
        ..Limits::default()
    }
}

impl RegistrySpec {
    /// The client options these settings and `creds` make, with `limits`.
    pub fn options(&self, creds: Option<Credentials>, limits: Limits) -> Options {
        Options {
            credentials: CredentialOptions {
                creds,
                authfile: self.authfile.clone(),
                env: AuthEnv::from(&self.auth_env),
            },
            cert_dir: self.cert_dir.clone(),
            tls_verify: self.tls_verify,
            plain_http: self.plain_http,
            limits,
        }
    }
}

/// Frames `first..end` of device `device` (0-based: `packs[device]`), adjacent, made present
/// together (one request when absent).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FrameGroup {
    /// Index into [`LazySpec::packs`].
    pub device: u16,
    /// First frame (index position in the pack).
    pub first: u32,
    /// One past the last frame.
    pub end: u32,
}

/// What a daemon of a lazy mount needs besides its descriptors and credentials.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LazySpec {
    /// The mount's record in the store (`mounts/ID.json`), and the name of its runtime files
    /// under `/run/chunkfs/lazy/` (docs/lazy.md §8).
    pub id: String,
    /// The store directory.
    pub store: PathBuf,
    /// The image pinned by its manifest digest (`docker://HOST/REPO@sha256:...`).
    pub reference: String,
    /// How to reach the registry.
    pub registry: RegistrySpec,
    /// The pack digests (hex) of the descriptor's extra devices, in device order.
    pub packs: Vec<String>,
    /// For each device, the frames (index positions, ascending) the mount reads from it.
    pub used: Vec<Vec<u32>>,
    /// Frames to make present first, in this order (`prefetch=`).
    pub prefetch: Vec<FrameGroup>,
    /// Then every frame the mount reads (`pull=background`).
    pub background: bool,
    /// `record=FILE` on the kernel path: the filler records the frames the kernel reads
    /// ([`super::record`]). The FUSE reader records on its own and ignores it.
    #[serde(default)]
    pub record: Option<PathBuf>,
}

/// A spec's store, packs and registry client, opened.
pub struct Opened {
    /// The store.
    pub store: Store,
    /// The packs, in device order.
    pub packs: Vec<Arc<Pack>>,
    /// The registry client (implements the store's `BlobSource`).
    pub client: Client,
    /// The frames the mount reads, per pack.
    pub used: Vec<Vec<usize>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("store", &self.store.root())
            .field("packs", &self.packs.len())
            .field("client", &self.client.name())
            .finish()
    }
}

impl LazySpec {
    /// A sealed memfd holding the spec, for a daemon to inherit.
    pub fn to_memfd(&self) -> std::io::Result<File> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::mount::cache::memfd(c"chunkfs-lazy-spec", &json)
    }

    /// Reads a spec back from an inherited file (at most 256 MiB), from its start.
    pub fn read_from(mut file: File) -> Result<Self, String> {
        let mut bytes = Vec::new();
        // The writer's offset is shared with the inherited descriptor.
        file.rewind()
            .map_err(|e| format!("reading the lazy mount's spec: {e}"))?;
        file.take(SPEC_MAX)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading the lazy mount's spec: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the lazy mount's spec: {e}"))
    }

    /// Opens the store and the packs (in this process: a filler must do this before it marks
    /// them), checks every used frame is one of its pack's, and makes the registry client.
    pub fn open(&self, creds: Option<Credentials>) -> Result<Opened, String> {
        let store = Store::open(&self.store).map_err(|e| e.to_string())?;
        if self.used.len() != self.packs.len() {
            return Err(format!(
                "the lazy mount's spec lists {} packs and {} frame lists",
                self.packs.len(),
                self.used.len()
            ));
        }
        let mut packs = Vec::with_capacity(self.packs.len());
        let mut used = Vec::with_capacity(self.packs.len());
        for (hex, frames) in self.packs.iter().zip(&self.used) {
            let digest = Digest::from_hex(hex).ok_or_else(|| format!("{hex:?} is not a digest"))?;
            let pack = store
                .pack(&digest)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "pack sha256:{hex} is no longer in the store {}",
                        self.store.display()
                    )
                })?;
            let n = pack.entries().len();
            let frames: Vec<usize> = frames.iter().map(|&f| f as usize).collect();
            if let Some(bad) = frames.iter().find(|&&f| f >= n) {
                return Err(format!("frame {bad} of pack sha256:{hex}, which has {n}"));
            }
            packs.push(pack);
            used.push(frames);
        }
        let reference = ImageRef::parse(&self.reference).map_err(|e| e.to_string())?;
        let client = Client::new(&reference, self.registry.options(creds, lazy_limits()))
            .map_err(|e| e.to_string())?;
        Ok(Opened {
            store,
            packs,
            client,
            used,
        })
    }
}

/// A sealed memfd holding `creds` (`{"username": .., "password": ..}`), for a daemon to
/// inherit: never on a command line.
pub fn credentials_memfd(creds: &Credentials) -> std::io::Result<File> {
    let json = serde_json::json!({"username": creds.username, "password": creds.password});
    crate::mount::cache::memfd(c"chunkfs-credentials", json.to_string().as_bytes())
}

/// Reads credentials back from an inherited memfd, from its start.
pub fn read_credentials(mut file: File) -> Result<Credentials, String> {
    #[derive(Deserialize)]
    struct Creds {
        username: String,
        password: String,
    }
    let mut bytes = Vec::new();
    file.rewind()
        .map_err(|e| format!("reading the credentials: {e}"))?;
    file.take(1 << 16)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the credentials: {e}"))?;
    let c: Creds = serde_json::from_slice(&bytes)
        .map_err(|_| "the inherited credentials are not readable".to_owned())?;
    Ok(Credentials {
        username: c.username,
        password: c.password,
    })
}

/// `frames` (ascending index positions of `pack`) cut into runs of adjacent frames of at most
/// `max` bytes from the first frame's start to the last one's end (a frame larger than that
/// alone): what one request fetches.
pub fn runs(pack: &Pack, frames: impl IntoIterator<Item = usize>, max: u64) -> Vec<Range<usize>> {
    let e = pack.entries();
    let mut out: Vec<Range<usize>> = Vec::new();
    for i in frames {
        let Some(f) = e.get(i) else { continue };
        let end = f.offset + u64::from(f.stored_len);
        match out.last_mut() {
            Some(r)
                if r.end == i
                    && e.get(r.start)
                        .is_some_and(|s| end.saturating_sub(s.offset) <= max) =>
            {
                r.end = i + 1;
            }
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// The pack-file byte range of frames `frames` (adjacent) of `pack`.
pub fn byte_range(pack: &Pack, frames: &Range<usize>) -> Option<Range<u64>> {
    let a = pack.frame_range(frames.start)?;
    let b = pack.frame_range(frames.end.checked_sub(1)?)?;
    Some(a.start..b.end)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spec_and_credentials_round_trip_through_memfds() {
        let spec = LazySpec {
            id: "1-2-3".into(),
            store: "/var/lib/chunkfs".into(),
            reference: format!("docker://r.example/a/b@sha256:{}", "ab".repeat(32)),
            registry: RegistrySpec {
                tls_verify: false,
                cert_dir: Some("/etc/certs".into()),
                plain_http: false,
                authfile: None,
                auth_env: AuthEnvSpec {
                    home: Some("/root".into()),
                    ..AuthEnvSpec::default()
                },
            },
            packs: vec!["cd".repeat(32)],
            used: vec![vec![0, 1, 5]],
            prefetch: vec![FrameGroup {
                device: 0,
                first: 5,
                end: 6,
            }],
            background: true,
            record: Some("/var/tmp/list".into()),
        };
        let back = LazySpec::read_from(spec.to_memfd().unwrap()).unwrap();
        assert_eq!(back, spec);
        let creds = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        let back = read_credentials(credentials_memfd(&creds).unwrap()).unwrap();
        assert_eq!(back, creds);
        let e = read_credentials(crate::mount::cache::memfd(c"x", b"{\"user\":1}").unwrap())
            .unwrap_err();
        assert!(!e.contains("user"), "{e}");
    }
}
