//! The registry client: images and blobs of an OCI distribution registry, fetched over HTTPS
//! with checks on everything that comes back (docs/registry.md).
//!
//! - [`reference`][]: `docker://HOST[:PORT]/REPO[:TAG|@sha256:HEX]`;
//! - [`client`][]: [`Client`], one repository: manifests (resolving indexes to the platform),
//!   whole blobs, streamed blobs and byte ranges, each checked; it implements
//!   [`BlobSource`](crate::source::BlobSource) for the store;
//! - [`credentials`][]: finding credentials as podman, skopeo and docker do;
//! - `transport`, `auth`, `body`, `tls`, `challenge`: HTTP (one pooled agent per host, our own
//!   redirects, retries), the bearer-token dance, bounded and metered bodies, per-registry CAs;
//! - [`stats`][]: counters for the mount status.
//!
//! ```no_run
//! use chunkfs_distribution::registry::{Client, ImageRef, Options};
//! let image = ImageRef::parse("docker://registry.example:5000/team/app:v1")?;
//! let client = Client::new(&image, Options::default())?;
//! let resolved = client.resolve(&image, None)?;
//! let metadata = &resolved.manifest.layers[0];
//! let bytes = client.read_descriptor(metadata, 64 << 20)?;
//! println!("{}: {} bytes of metadata", client.name(), bytes.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod body;
mod challenge;
pub mod client;
pub mod credentials;
mod error;
pub mod reference;
pub mod stats;
mod tls;
mod transport;
mod url;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{Client, FetchedManifest, Resolved};
pub use credentials::{AuthEnv, CredentialOptions, Credentials};
pub use error::Error;
pub use reference::ImageRef;
pub use stats::Stats;

/// The largest manifest or index accepted (the distribution spec's suggested 4 MiB).
pub const MANIFEST_MAX: u64 = crate::oci::layout::MANIFEST_MAX;

/// How a client connects and authenticates.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where credentials come from (`--creds`, `--authfile`, the environment).
    pub credentials: CredentialOptions,
    /// `--cert-dir DIR`: CA certificates (`*.crt`) and a client certificate (`*.cert` +
    /// `*.key`) for the registry, instead of `/etc/containers/certs.d/HOST[:PORT]`.
    pub cert_dir: Option<PathBuf>,
    /// Verify TLS certificates (`tls-verify`); false accepts any certificate (test registries).
    pub tls_verify: bool,
    /// Talk plain HTTP to the registry. Never chosen silently: only when this is set.
    pub plain_http: bool,
    /// Timeouts, retries and size limits.
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            credentials: CredentialOptions {
                env: AuthEnv::from_env(),
                ..CredentialOptions::default()
            },
            cert_dir: None,
            tls_verify: true,
            plain_http: false,
            limits: Limits::default(),
        }
    }
}

/// Timeouts, retries and limits of a client.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Establishing a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// The longest wait for any bytes of a response (a stalled connection).
    pub read_timeout: Duration,
    /// The whole of a small request (manifest, token, config): connect, headers and body.
    /// Requests for `n` bytes of blob get this plus `n / min_throughput` seconds.
    pub request_timeout: Duration,
    /// Below this many bytes per second (averaged from the start of a body, after
    /// `throughput_grace`) a transfer is abandoned as a trickle.
    pub min_throughput: u64,
    /// How long a body may take before `min_throughput` applies.
    pub throughput_grace: Duration,
    /// How many times a failed request is repeated (429, 5xx, resets, timeouts).
    pub retries: u32,
    /// The first backoff delay; it doubles per retry, with jitter.
    pub backoff_base: Duration,
    /// The longest backoff delay.
    pub backoff_max: Duration,
    /// The longest `Retry-After` honoured (a longer one is cut to this).
    pub retry_after_max: Duration,
    /// How many redirects one request may follow.
    pub max_redirects: u32,
    /// The largest byte range one `read_range` may ask for.
    pub range_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            min_throughput: 16 << 10,
            throughput_grace: Duration::from_secs(10),
            retries: 4,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(8),
            retry_after_max: Duration::from_secs(30),
            max_redirects: 5,
            range_max: 64 << 20,
        }
    }
}

impl Limits {
    /// The deadline of a request that transfers `bytes` of body.
    pub(crate) fn deadline_for(&self, bytes: u64) -> Duration {
        let extra = bytes.checked_div(self.min_throughput.max(1)).unwrap_or(0);
        self.request_timeout
            .saturating_add(Duration::from_secs(extra.min(u64::from(u32::MAX))))
    }
}
