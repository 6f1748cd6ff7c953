//! [`Client`]: one repository of one registry, over the OCI distribution API.
//!
//! What is checked before anything is returned:
//! - a manifest or index fetched by digest hashes to that digest (and has the size its
//!   descriptor gives); one fetched by tag matches `Docker-Content-Digest` when the registry
//!   sends it, and its sha256 is its digest; either is at most [`MANIFEST_MAX`] bytes;
//! - a whole blob hashes to its digest and is no longer than the caller's limit;
//! - a streamed blob is hashed as it is written and checked at the end (the caller removes the
//!   file if that fails);
//! - a range is a 206 whose `Content-Range` is exactly the range asked for, within the blob's
//!   length, with exactly that many bytes. Its bytes are not checked here: the caller checks
//!   the frames inside against their digests.

use std::io::Write;
use std::ops::Range;
use std::sync::Arc;

use chunkfs_format::digest::{Digest, Hasher};

use crate::oci::media_type;
use crate::oci::select::{self, NoMatch, PlatformSpec};
use crate::oci::spec::{self, ContentDescriptor, Manifest};
use crate::registry::auth::{Auth, Net};
use crate::registry::body::Metered;
use crate::registry::credentials;
use crate::registry::error::At;
use crate::registry::stats::{Counters, Stats};
use crate::registry::tls::Trust;
use crate::registry::transport::{Failure, Request, Response, Transport, authority, retry};
use crate::registry::url::Url;
use crate::registry::{Error, ImageRef, MANIFEST_MAX, Options};
use crate::source::{BlobSource, SourceError};

/// What a manifest request accepts, in order of preference.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 manifests, which chunkfs does not read.
const SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// How deep image indexes may nest.
const NESTING_MAX: usize = 4;
/// The most of an error body read for its message.
const ERROR_BODY_MAX: u64 = 16 << 10;

/// A client for one repository (`docker://HOST/REPO`). Cheap to clone; `Send + Sync`: threads
/// share its connection pool, tokens and counters, and may have requests in flight at once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// `docker://HOST/REPO`.
    name: String,
    registry: String,
    repository: String,
    /// `https://HOST[:PORT]/` (or `http://` when asked for).
    base: Url,
    /// `repository:REPO:pull`.
    scope: String,
    transport: Transport,
    auth: Auth,
    counters: Counters,
}

/// A manifest or index as the registry sent it, checked against its digest.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// Its sha256.
    pub digest: Digest,
    /// Its media type (from the document, else the `Content-Type`).
    pub media_type: String,
    /// Its bytes.
    pub raw: Vec<u8>,
}

/// An image reference resolved to one image manifest.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The repository pinned to the manifest's digest (`docker://HOST/REPO@sha256:...`).
    pub reference: ImageRef,
    /// The image index the reference named, if it named one (a multi-platform image).
    pub index: Option<FetchedManifest>,
    /// The chosen manifest's descriptor (from the index, or made for a manifest named
    /// directly).
    pub descriptor: ContentDescriptor,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The manifest's bytes, checked against `descriptor.digest`.
    pub raw: Vec<u8>,
}

impl Resolved {
    /// True if this is a chunkfs image (metadata layer + packs) rather than a tar-layer image.
    pub fn is_chunkfs(&self) -> bool {
        select::is_chunkfs_manifest(&self.manifest)
    }
}

impl Client {
    /// A client for `image`'s repository. Reads the credentials and certificates it needs
    /// (errors name the file); connects only when asked for something.
    pub fn new(image: &ImageRef, options: Options) -> Result<Self, Error> {
        let found = credentials::find(&options.credentials, image.registry(), image.repository())?;
        let name = image.repository_name();
        let scheme = if options.plain_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{}/", image.api_host())).map_err(|e| {
            At::new(&name, "registry address")
                .usage(format!("{} is not a usable host: {e}", image.api_host()))
        })?;
        let trust = Trust {
            verify: options.tls_verify,
            cert_dir: options.cert_dir.clone(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                scope: format!("repository:{}:pull", image.repository()),
                name,
                registry: image.registry().to_owned(),
                repository: image.repository().to_owned(),
                base,
                transport: Transport::new(trust, options.limits, options.plain_http),
                auth: Auth::new(found),
                counters: Counters::default(),
            }),
        })
    }

    /// `docker://HOST/REPO`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    fn at(&self, what: impl Into<String>) -> At {
        At::new(&self.inner.name, what)
    }

    fn url(&self, at: &At, path: &str) -> Result<Url, Error> {
        self.inner
            .base
            .join(&format!("/v2/{}/{path}", self.inner.repository))
            .map_err(|e| at.usage(format!("cannot form the request URL: {e}")))
    }

    /// One attempt of a GET, with the auth dance: a 401 leads to one new credential or token
    /// and one more request; 429 and 5xx are retryable failures.
    fn get(
        &self,
        at: &At,
        url: &Url,
        headers: &[(&str, String)],
        deadline: std::time::Duration,
    ) -> Result<Response, Failure> {
        let inner = &self.inner;
        let mut authenticated_again = false;
        loop {
            let net = Net {
                at,
                transport: &inner.transport,
                counters: &inner.counters,
            };
            let authorization = inner.auth.authorization(&net, &inner.scope)?;
            let response = inner.transport.send(
                at,
                &inner.counters,
                Request {
                    url: url.clone(),
                    headers,
                    authorization: authorization.clone(),
                    deadline,
                },
            )?;
            let server = response.server();
            let status = response.status;
            if status == 401 && authority(&response.url) == authority(url) {
                if authenticated_again {
                    let reason = if inner.auth.has_credentials() {
                        format!(
                            "{server} rejected {} (401 Unauthorized after authenticating; wrong user name or password?)",
                            inner.auth.describe()
                        )
                    } else {
                        format!(
                            "{server} still answers 401 Unauthorized to anonymous access; there are {}",
                            inner.auth.describe()
                        )
                    };
                    return Err(at.unauthorized(reason).into());
                }
                inner.auth.on_unauthorized(
                    &net,
                    &server,
                    response.header("www-authenticate"),
                    &inner.scope,
                    authorization.as_deref(),
                )?;
                authenticated_again = true;
                continue;
            }
            if status == 429 || ((500..600).contains(&status) && status != 501 && status != 505) {
                let after = response.retry_after();
                let detail = error_detail(response, &inner.transport, &inner.counters, at);
                return Err(Failure::Retry {
                    error: at.network(format!("{server} answered {status}{detail}")),
                    after,
                });
            }
            return Ok(response);
        }
    }

    /// The error for an unexpected status (404 and other client errors: the caller's mistake
    /// or a missing object; anything else: the server's).
    fn unexpected(&self, at: &At, response: Response) -> Failure {
        let server = response.server();
        let status = response.status;
        let detail = error_detail(response, &self.inner.transport, &self.inner.counters, at);
        match status {
            404 => at
                .refused(format!("{server} answered 404: it does not exist{detail}"))
                .into(),
            403 => at
                .refused(format!(
                    "{server} answered 403: access denied to {}{detail}",
                    self.inner.auth.describe()
                ))
                .into(),
            s if (400..500).contains(&s) => {
                at.refused(format!("{server} answered {s}{detail}")).into()
            }
            s => at
                .network(format!("{server} answered {s} (unexpected here){detail}"))
                .into(),
        }
    }

    /// `GET /v2/`: reachable, speaks the API, and the credentials (if any are needed) work.
    pub fn ping(&self) -> Result<(), Error> {
        let at = self.at("API check (/v2/)");
        let url = self
            .inner
            .base
            .join("/v2/")
            .map_err(|e| at.usage(format!("cannot form the request URL: {e}")))?;
        let limits = self.inner.transport.limits();
        self.inner.transport.with_retries(&self.inner.counters, || {
            let r = self.get(&at, &url, &[], limits.request_timeout)?;
            match r.status {
                200 => Ok(()),
                _ => Err(self.unexpected(&at, r)),
            }
        })
    }

    /// The manifest or index `reference` (a tag or `sha256:...`). By digest (`expected`), the
    /// bytes must hash to it, and have the descriptor's size when one is given.
    pub fn fetch_manifest(
        &self,
        reference: &str,
        expected: Option<(&Digest, Option<u64>)>,
    ) -> Result<FetchedManifest, Error> {
        let at = self.at(format!("manifest {reference}"));
        let url = self.url(&at, &format!("manifests/{reference}"))?;
        let limits = self.inner.transport.limits();
        let headers = [("Accept", MANIFEST_ACCEPT.to_owned())];
        self.inner.transport.with_retries(&self.inner.counters, || {
            let r = self.get(&at, &url, &headers, limits.request_timeout)?;
            if r.status != 200 {
                return Err(self.unexpected(&at, r));
            }
            let server = r.server();
            let content_type = r
                .header("content-type")
                .map(|t| t.split(';').next().unwrap_or_default().trim().to_owned())
                .unwrap_or_default();
            if SCHEMA1.contains(&content_type.as_str()) {
                return Err(at
                    .unsupported(format!(
                        "{server} sent a Docker schema 1 manifest ({content_type}), which chunkfs does not read; push the image again with a current tool"
                    ))
                    .into());
            }
            let header_digest = r.header("docker-content-digest").map(str::to_owned);
            if let Some(n) = r.content_length() {
                if n > MANIFEST_MAX {
                    return Err(at
                        .corrupt(format!(
                            "{server} announces a manifest of {n} bytes, more than the limit of {MANIFEST_MAX}"
                        ))
                        .into());
                }
            }
            let mut body = Metered::new(r, None, limits, &self.inner.counters, &at);
            let raw = body.read_to_vec(MANIFEST_MAX, |n| {
                Failure::Fatal(at.corrupt(format!(
                    "{server} sent a manifest of more than {MANIFEST_MAX} bytes ({n} read before stopping)"
                )))
            })?;
            let digest = Digest::of(&raw);
            if let Some((want, size)) = expected {
                if digest != *want {
                    return Err(at
                        .corrupt(format!(
                            "{server} sent {} bytes that hash to {digest}, not to the digest asked for",
                            raw.len()
                        ))
                        .into());
                }
                if let Some(size) = size {
                    if raw.len() as u64 != size {
                        return Err(at
                            .corrupt(format!(
                                "{server} sent {} bytes; the descriptor says {size}",
                                raw.len()
                            ))
                            .into());
                    }
                }
            }
            if let Some(h) = header_digest.as_deref().map(str::trim) {
                // Only sha256 is compared; another algorithm's value says nothing about ours.
                if h.starts_with("sha256:") && h != digest.to_oci() {
                    return Err(at
                        .corrupt(format!(
                            "{server} sent a manifest that hashes to {digest}, but its Docker-Content-Digest says {h}"
                        ))
                        .into());
                }
            }
            let declared = spec::from_json::<MediaTypeOnly>("manifest", &raw)
                .map_err(|e| at.corrupt(format!("{server} sent a manifest that is not JSON: {e}")))?
                .media_type;
            let media = match declared {
                Some(t) => t,
                None if media_type::is_manifest(&content_type)
                    || media_type::is_index(&content_type) =>
                {
                    content_type.clone()
                }
                None => select::sniff_media_type(&raw),
            };
            if SCHEMA1.contains(&media.as_str()) || raw_is_schema1(&raw) {
                return Err(at
                    .unsupported(format!(
                        "{server} sent a Docker schema 1 manifest, which chunkfs does not read"
                    ))
                    .into());
            }
            if !media_type::is_manifest(&media) && !media_type::is_index(&media) {
                return Err(at
                    .unsupported(format!(
                        "{server} sent a document of media type {media:?}, neither an image manifest nor an index"
                    ))
                    .into());
            }
            Ok(FetchedManifest {
                digest,
                media_type: media,
                raw,
            })
        })
    }

    /// Resolves `image` (which must name this client's repository) to one image manifest,
    /// choosing in image indexes the entry for `platform` (default: the running machine's) by
    /// the rules of [`select::choose_in_index`].
    pub fn resolve(
        &self,
        image: &ImageRef,
        platform: Option<&PlatformSpec>,
    ) -> Result<Resolved, Error> {
        if image.registry() != self.inner.registry || image.repository() != self.inner.repository {
            return Err(self.at(format!("resolving {image}")).usage(format!(
                "the reference is not in this client's repository {}",
                self.inner.name
            )));
        }
        let host = PlatformSpec::host();
        let platform = platform.unwrap_or(&host);
        let top = self.fetch_manifest(
            &image.manifest_reference(),
            image.digest().map(|d| (d, None)),
        )?;
        let mut index = None;
        let mut current = top;
        let mut descriptor = ContentDescriptor::new(
            &current.media_type,
            current.digest,
            current.raw.len() as u64,
        );
        for _ in 0..=NESTING_MAX {
            let at = self.at(format!("manifest {}", current.digest));
            if media_type::is_manifest(&current.media_type) {
                let manifest = spec::parse_manifest("manifest", &current.raw)
                    .map_err(|e| at.corrupt(e.to_string()))?;
                return Ok(Resolved {
                    reference: image.with_digest(current.digest),
                    index,
                    descriptor,
                    manifest,
                    raw: current.raw,
                });
            }
            let parsed = spec::parse_index("image index", &current.raw)
                .map_err(|e| at.corrupt(e.to_string()))?;
            let chosen = match select::choose_in_index(&parsed.manifests, platform) {
                Ok(d) => d.clone(),
                Err(NoMatch::Empty) => {
                    return Err(at.refused("the image index lists no image".to_string()));
                }
                Err(NoMatch::Platform(available)) => {
                    return Err(at.refused(format!(
                        "no image for platform {platform}; platforms: {}; choose one with --platform",
                        if available.is_empty() {
                            "(none)".to_owned()
                        } else {
                            available.join(", ")
                        }
                    )));
                }
            };
            let digest = chosen.sha256().map_err(|e| at.corrupt(e.to_string()))?;
            if chosen.size > MANIFEST_MAX {
                return Err(at.corrupt(format!(
                    "the index lists a manifest of {} bytes, more than the limit of {MANIFEST_MAX}",
                    chosen.size
                )));
            }
            let next = self.fetch_manifest(&digest.to_oci(), Some((&digest, Some(chosen.size))))?;
            if index.is_none() {
                index = Some(current);
            }
            descriptor = chosen;
            current = next;
        }
        Err(self
            .at(format!("resolving {image}"))
            .corrupt(format!("image indexes nest more than {NESTING_MAX} deep")))
    }

    /// The whole blob a descriptor names, checked against its digest and size; at most `max`
    /// bytes (a larger descriptor is refused before anything is fetched).
    pub fn read_descriptor(&self, desc: &ContentDescriptor, max: u64) -> Result<Vec<u8>, Error> {
        let at = self.at(format!("blob {}", desc.digest));
        let digest = desc.sha256().map_err(|e| at.corrupt(e.to_string()))?;
        if desc.size > max {
            return Err(at.corrupt(format!(
                "the descriptor says {} bytes, more than the limit of {max}",
                desc.size
            )));
        }
        self.fetch_whole(&digest, Some(desc.size), max)
    }

    /// The whole blob `digest`, at most `max` bytes, checked against its digest.
    pub fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, Error> {
        self.fetch_whole(digest, None, max)
    }

    fn fetch_whole(&self, digest: &Digest, size: Option<u64>, max: u64) -> Result<Vec<u8>, Error> {
        let at = self.at(format!("blob {digest}"));
        let url = self.url(&at, &format!("blobs/{}", digest.to_oci()))?;
        let limits = self.inner.transport.limits();
        let deadline = limits.deadline_for(size.unwrap_or(max));
        self.inner.transport.with_retries(&self.inner.counters, || {
            let r = self.get(&at, &url, &[], deadline)?;
            if r.status != 200 {
                return Err(self.unexpected(&at, r));
            }
            let server = r.server();
            let announced = r.content_length();
            check_length(&at, &server, announced, size, max)?;
            let mut body = Metered::new(r, size.or(announced), limits, &self.inner.counters, &at);
            let bytes = body.read_to_vec(max, |n| {
                Failure::Fatal(at.corrupt(format!(
                    "{server} sent more than the limit of {max} bytes ({n} read before stopping)"
                )))
            })?;
            if let Some(s) = size.or(announced) {
                if bytes.len() as u64 != s {
                    return Err(retry(at.network(format!(
                        "{server} ended the body after {} of {s} bytes",
                        bytes.len()
                    ))));
                }
            }
            let got = Digest::of(&bytes);
            if got != *digest {
                return Err(at
                    .corrupt(format!(
                        "{server} sent {} bytes that hash to {got}, not to the blob's digest",
                        bytes.len()
                    ))
                    .into());
            }
            Ok(bytes)
        })
    }

    /// Streams the blob `digest` (of `size` bytes, if known; at most `max` bytes) to `out`,
    /// hashing it on the way; returns its length. A connection that breaks mid-body is resumed
    /// with a range request when the length is known. On a digest mismatch the error is
    /// Corrupt and `out` holds the wrong bytes: the caller discards them.
    pub fn copy_blob(
        &self,
        digest: &Digest,
        size: Option<u64>,
        max: u64,
        out: &mut dyn Write,
    ) -> Result<u64, Error> {
        let at = self.at(format!("blob {digest}"));
        let url = self.url(&at, &format!("blobs/{}", digest.to_oci()))?;
        let limits = self.inner.transport.limits();
        let mut hasher = Hasher::new();
        let mut written: u64 = 0;
        let mut total: Option<u64> = size;
        let mut buf = vec![0u8; 256 << 10];
        if let Some(s) = size {
            if s > max {
                return Err(at.corrupt(format!(
                    "the descriptor says {s} bytes, more than the limit of {max}"
                )));
            }
        }
        self.inner.transport.with_retries(&self.inner.counters, || {
            let resuming = written > 0;
            let headers: Vec<(&str, String)> = if resuming {
                vec![("Range", format!("bytes={written}-"))]
            } else {
                vec![]
            };
            let remaining = total.unwrap_or(max).saturating_sub(written);
            let r = self.get(&at, &url, &headers, limits.deadline_for(remaining))?;
            let server = r.server();
            if resuming {
                let Some(t) = total else {
                    return Err(at
                        .network(format!(
                            "the connection to {server} broke after {written} bytes and the blob's length is unknown, so it cannot be resumed"
                        ))
                        .into());
                };
                if r.status != 206 {
                    return Err(at
                        .network(format!(
                            "the connection broke after {written} bytes and {server} answered {} instead of 206 to the request for the rest",
                            r.status
                        ))
                        .into());
                }
                let want = (written, t.saturating_sub(1), t);
                let got = r.header("content-range").map(str::to_owned);
                if got.as_deref().and_then(parse_content_range) != Some(want) {
                    return Err(at
                        .corrupt(format!(
                            "{server} answered the request for bytes {written}- with Content-Range {:?}, not bytes {}-{}/{}",
                            got.unwrap_or_default(),
                            want.0,
                            want.1,
                            want.2
                        ))
                        .into());
                }
            } else {
                if r.status != 200 {
                    return Err(self.unexpected(&at, r));
                }
                let announced = r.content_length();
                check_length(&at, &server, announced, size, max)?;
                total = total.or(announced);
            }
            let mut body = Metered::new(r, total, limits, &self.inner.counters, &at);
            body.offset = written;
            loop {
                let room = max.saturating_add(1).saturating_sub(written);
                let want = usize::try_from(room.min(buf.len() as u64)).unwrap_or(buf.len());
                if want == 0 {
                    return Err(at
                        .corrupt(format!("{server} sent more than the limit of {max} bytes"))
                        .into());
                }
                let n = body.read(&mut buf[..want])?;
                if n == 0 {
                    break;
                }
                let chunk = &buf[..n];
                written = written.saturating_add(n as u64);
                if written > max || total.is_some_and(|t| written > t) {
                    return Err(at
                        .corrupt(format!(
                            "{server} sent more than the {} bytes of the blob",
                            total.unwrap_or(max)
                        ))
                        .into());
                }
                hasher.update(chunk);
                out.write_all(chunk).map_err(|e| at.write(e))?;
            }
            if let Some(t) = total {
                if written != t {
                    return Err(retry(at.network(format!(
                        "{server} ended the body after {written} of {t} bytes"
                    ))));
                }
            }
            Ok(())
        })?;
        let got = hasher.finish();
        if got != *digest {
            return Err(at.corrupt(format!(
                "the {written} bytes received hash to {got}, not to the blob's digest"
            )));
        }
        Ok(written)
    }

    /// Exactly the bytes `range` of the blob `blob`, whose length is `blob_len`: a 206 with
    /// `Content-Range: bytes A-(B-1)/blob_len` and exactly `B - A` bytes, or an error naming
    /// the server, the blob and the range.
    pub fn read_range(
        &self,
        blob: &Digest,
        blob_len: u64,
        range: Range<u64>,
    ) -> Result<Vec<u8>, Error> {
        let last = range.end.saturating_sub(1);
        let at = self.at(format!("blob {blob} bytes {}-{last}", range.start));
        if range.start > range.end || range.end > blob_len {
            return Err(at.usage(format!(
                "the range {}..{} is not within the blob's {blob_len} bytes",
                range.start, range.end
            )));
        }
        let n = range.end - range.start;
        if n == 0 {
            return Ok(Vec::new());
        }
        let limits = self.inner.transport.limits();
        if n > limits.range_max {
            return Err(at.usage(format!(
                "the range of {n} bytes is larger than the limit of {} per request",
                limits.range_max
            )));
        }
        let url = self.url(&at, &format!("blobs/{}", blob.to_oci()))?;
        let headers = [
            ("Range", format!("bytes={}-{last}", range.start)),
            ("Accept-Encoding", "identity".to_owned()),
        ];
        let want = (range.start, last, blob_len);
        self.inner.transport.with_retries(&self.inner.counters, || {
            let r = self.get(&at, &url, &headers, limits.deadline_for(n))?;
            let server = r.server();
            match r.status {
                206 => {}
                200 => {
                    let whole = r
                        .content_length()
                        .map(|l| format!(" ({l} bytes)"))
                        .unwrap_or_default();
                    return Err(at
                        .corrupt(format!(
                            "{server} ignored the Range header and answered 200 with the whole blob{whole} instead of 206 with the range"
                        ))
                        .into());
                }
                416 => {
                    return Err(at
                        .corrupt(format!(
                            "{server} answered 416 Range Not Satisfiable, yet the blob is {blob_len} bytes long"
                        ))
                        .into());
                }
                _ => return Err(self.unexpected(&at, r)),
            }
            let content_range = r.header("content-range").map(str::to_owned);
            if content_range.as_deref().and_then(parse_content_range) != Some(want) {
                return Err(at
                    .corrupt(format!(
                        "{server} answered with Content-Range {:?}, not \"bytes {}-{}/{}\"",
                        content_range.unwrap_or_default(),
                        want.0,
                        want.1,
                        want.2
                    ))
                    .into());
            }
            if let Some(l) = r.content_length() {
                if l != n {
                    return Err(at
                        .corrupt(format!(
                            "{server} announces a body of {l} bytes for a range of {n}"
                        ))
                        .into());
                }
            }
            let mut body = Metered::new(r, Some(n), limits, &self.inner.counters, &at);
            let bytes = body.read_to_vec(n, |m| {
                Failure::Fatal(at.corrupt(format!(
                    "{server} sent more than the {n} bytes of the range ({m} read before stopping)"
                )))
            })?;
            if (bytes.len() as u64) < n {
                return Err(retry(at.network(format!(
                    "{server} ended the body after {} of the {n} bytes of the range",
                    bytes.len()
                ))));
            }
            Ok(bytes)
        })
    }
}

impl BlobSource for Client {
    fn read_range(
        &self,
        blob: &Digest,
        blob_len: u64,
        range: Range<u64>,
    ) -> Result<Vec<u8>, SourceError> {
        Client::read_range(self, blob, blob_len, range).map_err(SourceError::from)
    }

    fn read_blob(&self, blob: &Digest, max_len: u64) -> Result<Vec<u8>, SourceError> {
        Client::read_blob(self, blob, max_len).map_err(SourceError::from)
    }

    fn name(&self) -> String {
        self.inner.name.clone()
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaTypeOnly {
    #[serde(default)]
    media_type: Option<String>,
}

/// Schema 1 manifests carry `schemaVersion: 1` and no media type.
fn raw_is_schema1(raw: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Version {
        #[serde(default)]
        schema_version: u32,
    }
    serde_json::from_slice::<Version>(raw).is_ok_and(|v| v.schema_version == 1)
}

/// Refuses a body whose announced length exceeds the limit or contradicts the descriptor.
fn check_length(
    at: &At,
    server: &str,
    announced: Option<u64>,
    size: Option<u64>,
    max: u64,
) -> Result<(), Failure> {
    if let Some(l) = announced {
        if l > max {
            return Err(at
                .corrupt(format!(
                    "{server} announces {l} bytes, more than the limit of {max}"
                ))
                .into());
        }
        if let Some(s) = size {
            if l != s {
                return Err(at
                    .corrupt(format!(
                        "{server} announces {l} bytes; the descriptor says {s}"
                    ))
                    .into());
            }
        }
    }
    Ok(())
}

/// `bytes A-B/LEN` as `(A, B, LEN)`; anything else (`*` lengths included) is None.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, len) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let num = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Some((num(a)?, num(b)?, num(len)?))
}

/// `: CODE: message` from a registry's error body (`{"errors":[{"code","message"}]}`), read
/// within a small bound; empty if there is none.
fn error_detail(response: Response, transport: &Transport, counters: &Counters, at: &At) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<OneError>,
    }
    #[derive(serde::Deserialize)]
    struct OneError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let mut body = Metered::new(response, None, transport.limits(), counters, at);
    let Ok(bytes) = body.read_to_vec(ERROR_BODY_MAX, |_| Failure::Fatal(at.corrupt(""))) else {
        return String::new();
    };
    match serde_json::from_slice::<Errors>(&bytes) {
        Ok(e) if !e.errors.is_empty() => {
            let text: Vec<String> = e
                .errors
                .iter()
                .take(3)
                .map(|x| {
                    let s = format!("{}: {}", x.code, x.message);
                    s.chars().filter(|c| !c.is_control()).take(200).collect()
                })
                .collect();
            format!(" ({})", text.join("; "))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing_is_strict() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0, 99, 1000)));
        assert_eq!(parse_content_range(" bytes 5-5/6 "), Some((5, 5, 6)));
        for bad in [
            "bytes 0-99/*",
            "bytes */1000",
            "bytes -1-99/1000",
            "bytes 0-99",
            "items 0-99/1000",
            "bytes 0-+9/10",
            "bytes 0-99999999999999999999999/1",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }
}
