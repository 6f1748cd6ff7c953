//! HTTP for the client: one pooled `ureq` agent per host (each with that host's TLS trust),
//! redirects followed here rather than by ureq (bounded, loops detected, `Authorization` dropped
//! once the origin changes, no HTTPS-to-HTTP downgrade unless plain HTTP was asked for), and the
//! retry loop with exponential backoff, jitter and `Retry-After`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ureq::http::HeaderMap;

use crate::registry::error::At;
use crate::registry::stats::Counters;
use crate::registry::tls::{self, Trust};
use crate::registry::url::Url;
use crate::registry::{Error, Limits};

/// The outcome of one attempt that failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth repeating (after `after`, if the server said when).
    Retry {
        error: Error,
        after: Option<Duration>,
    },
    /// Repeating would not help.
    Fatal(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Fatal(e)
    }
}

pub(crate) fn retry(error: Error) -> Failure {
    Failure::Retry { error, after: None }
}

/// One GET to send.
pub(crate) struct Request<'a> {
    pub url: Url,
    pub headers: &'a [(&'a str, String)],
    /// The `Authorization` value for the first origin; never sent to another.
    pub authorization: Option<String>,
    /// The budget of the whole attempt: redirects, headers and body.
    pub deadline: Duration,
}

/// A response whose body has not been read yet.
pub(crate) struct Response {
    pub status: u16,
    /// The URL that answered (after redirects).
    pub url: Url,
    pub headers: HeaderMap,
    pub body: ureq::Body,
    /// When the attempt started (for the body's throughput).
    pub started: Instant,
}

impl Response {
    /// A header's value, if present and text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Content-Length`, if present and a number.
    pub(crate) fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }

    /// `Retry-After` as a delay: seconds or an HTTP date.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        let v = self.header("retry-after")?.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        let when = httpdate::parse_http_date(v).ok()?;
        Some(
            when.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }

    /// "the server at HOST:PORT", for messages about what answered.
    pub(crate) fn server(&self) -> String {
        authority(&self.url)
    }
}

/// `HOST[:PORT]` of a URL, the port only when it is not the scheme's default.
pub(crate) fn authority(url: &Url) -> String {
    url.authority()
}

/// Agents per host and the policy every request follows.
pub(crate) struct Transport {
    trust: Trust,
    limits: Limits,
    plain_http: bool,
    agents: Mutex<HashMap<String, ureq::Agent>>,
    jitter: AtomicU64,
}

impl Transport {
    pub(crate) fn new(trust: Trust, limits: Limits, plain_http: bool) -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        Self {
            trust,
            limits,
            plain_http,
            agents: Mutex::new(HashMap::new()),
            jitter: AtomicU64::new(seed),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn plain_http(&self) -> bool {
        self.plain_http
    }

    /// The agent for `url`'s host, made on first use with that host's TLS trust.
    fn agent(&self, at: &At, url: &Url) -> Result<ureq::Agent, Error> {
        let key = authority(url);
        let mut agents = self
            .agents
            .lock()
            .map_err(|_| at.network("a thread panicked while holding the connection pool"))?;
        if let Some(a) = agents.get(&key) {
            return Ok(a.clone());
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("chunkfs/", env!("CARGO_PKG_VERSION")))
            .max_idle_connections_per_host(16)
            .timeout_connect(Some(self.limits.connect_timeout))
            .timeout_per_read(Some(self.limits.read_timeout))
            .timeout_per_write(Some(self.limits.read_timeout))
            .tls_config(tls::config_for(&key, &self.trust)?)
            .build();
        let agent = ureq::Agent::new_with_config(config);
        agents.insert(key, agent.clone());
        Ok(agent)
    }

    /// Sends `req`, following redirects; any status comes back as a response.
    pub(crate) fn send(
        &self,
        at: &At,
        counters: &Counters,
        req: Request<'_>,
    ) -> Result<Response, Failure> {
        let started = Instant::now();
        let first = req.url.clone();
        let mut url = req.url;
        let mut authorization = req.authorization;
        let mut visited: Vec<Url> = vec![];
        let mut seen: HashSet<String> = HashSet::new();
        loop {
            if !first.same_origin(&url) {
                // Registries send blobs to object storage with signed URLs: the registry's
                // credentials must not follow.
                authorization = None;
            }
            let remaining = req
                .deadline
                .checked_sub(started.elapsed())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    retry(at.network(format!(
                        "no answer within {:.1} s (following redirects)",
                        req.deadline.as_secs_f64()
                    )))
                })?;
            let agent = self.agent(at, &url)?;
            let mut builder = agent.get(url.to_string());
            for (k, v) in req.headers {
                builder = builder.header(*k, v);
            }
            if let Some(a) = &authorization {
                builder = builder.header("Authorization", a);
            }
            let builder = builder.config().timeout_global(Some(remaining)).build();
            counters.request();
            let response = builder
                .call()
                .map_err(|e| call_failure(at, &url, e, &self.limits))?;
            let status = response.status().as_u16();
            let (parts, body) = response.into_parts();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let location = parts
                    .headers
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        at.corrupt(format!(
                            "{} answered {status} (redirect) without a Location",
                            authority(&url)
                        ))
                    })?;
                let next = url.join(location).map_err(|e| {
                    at.corrupt(format!(
                        "{} redirected to {location:?}, which is not a URL: {e}",
                        authority(&url)
                    ))
                })?;
                if !matches!(next.scheme(), "https" | "http") {
                    return Err(at
                        .corrupt(format!(
                            "{} redirected to a {} URL",
                            authority(&url),
                            next.scheme()
                        ))
                        .into());
                }
                if next.scheme() == "http" && url.scheme() == "https" && !self.plain_http {
                    return Err(at
                        .usage(format!(
                            "{} redirected from HTTPS to plain HTTP ({}); refused (plain HTTP only when asked for)",
                            authority(&url),
                            authority(&next)
                        ))
                        .into());
                }
                visited.push(url.clone());
                seen.insert(url.to_string());
                if seen.contains(&next.to_string()) {
                    return Err(at
                        .network(format!(
                            "redirect loop: {} -> {}",
                            path_list(&visited),
                            redacted(&next)
                        ))
                        .into());
                }
                if visited.len() > self.limits.max_redirects as usize {
                    return Err(at
                        .network(format!(
                            "more than {} redirects: {}",
                            self.limits.max_redirects,
                            path_list(&visited)
                        ))
                        .into());
                }
                counters.redirect();
                url = next;
                continue;
            }
            return Ok(Response {
                status,
                url,
                headers: parts.headers,
                body,
                started,
            });
        }
    }

    /// Runs `op` until it succeeds, fails for good, or the retries run out.
    pub(crate) fn with_retries<T>(
        &self,
        counters: &Counters,
        mut op: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, Error> {
        let _in_flight = counters.in_flight();
        let mut attempt: u32 = 0;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => {
                    counters.error();
                    return Err(e);
                }
                Err(Failure::Retry { error, after }) => {
                    if attempt >= self.limits.retries {
                        counters.error();
                        return Err(gave_up(error, attempt.saturating_add(1)));
                    }
                    let delay = match after {
                        Some(a) => a.min(self.limits.retry_after_max),
                        None => self.backoff(attempt),
                    };
                    counters.retry();
                    std::thread::sleep(delay);
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// The delay before retry `attempt` (0-based): base * 2^attempt, capped, with its upper
    /// half drawn at random so that clients that failed together do not retry together.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .limits
            .backoff_base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.limits.backoff_max);
        // xorshift64: jitter needs no cryptographic randomness.
        let mut x = self.jitter.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter.store(x, Ordering::Relaxed);
        let half = full / 2;
        half + half.mul_f64((x % 1_000_000) as f64 / 1_000_000.0)
    }
}

/// The final error of an operation whose retries ran out.
fn gave_up(error: Error, attempts: u32) -> Error {
    match error {
        Error::Network { at, what, reason } => Error::Network {
            at,
            what,
            reason: format!("{reason} (gave up after {attempts} attempts)"),
        },
        e => e,
    }
}

/// A URL for messages: no query (signed storage URLs carry credentials in it).
pub(crate) fn redacted(url: &Url) -> String {
    url.redacted()
}

fn path_list(urls: &[Url]) -> String {
    urls.iter().map(redacted).collect::<Vec<_>>().join(" -> ")
}

/// Sorts a failed call: transport trouble is retried, TLS and configuration errors are not.
fn call_failure(at: &At, url: &Url, e: ureq::Error, limits: &Limits) -> Failure {
    let server = authority(url);
    match e {
        ureq::Error::Timeout(t) => retry(at.network(format!(
            "{server} did not answer in time ({t}; connect timeout {:.1} s, read timeout {:.1} s)",
            limits.connect_timeout.as_secs_f64(),
            limits.read_timeout.as_secs_f64()
        ))),
        ureq::Error::Io(io) => io_failure(at, &server, io),
        ureq::Error::HostNotFound => retry(at.network(format!("cannot resolve {server}"))),
        ureq::Error::ConnectionFailed => retry(at.network(format!("cannot connect to {server}"))),
        ureq::Error::Protocol(p) => {
            retry(at.network(format!("{server} sent a malformed HTTP response: {p}")))
        }
        ureq::Error::Rustls(r) => Failure::Fatal(tls_error(at, &server, &r.to_string())),
        ureq::Error::Tls(t) => Failure::Fatal(tls_error(at, &server, t)),
        other => retry(at.network(format!("request to {server} failed: {other}"))),
    }
}

fn io_failure(at: &At, server: &str, io: std::io::Error) -> Failure {
    let text = io.to_string();
    // rustls reports handshake failures (unknown issuer, bad name) as InvalidData.
    if io.kind() == std::io::ErrorKind::InvalidData
        && (text.contains("certificate") || text.contains("Certificate"))
    {
        return Failure::Fatal(tls_error(at, server, &text));
    }
    match io.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            retry(at.network(format!("{server} refused the connection")))
        }
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            retry(at.network(format!("{server} did not answer in time: {text}")))
        }
        _ => retry(at.network(format!("connection to {server} failed: {text}"))),
    }
}

fn tls_error(at: &At, server: &str, detail: &str) -> Error {
    at.usage(format!(
        "TLS with {server} failed: {detail}; trust its CA with /etc/containers/certs.d/{server}/ca.crt or --cert-dir, or (test registries only) tls-verify=false"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let limits = Limits {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            ..Limits::default()
        };
        let t = Transport::new(
            Trust {
                verify: true,
                cert_dir: None,
            },
            limits,
            false,
        );
        for attempt in 0..40 {
            let full = Duration::from_millis(100u64.saturating_mul(1 << attempt.min(20)))
                .min(Duration::from_millis(1000));
            let d = t.backoff(attempt);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
        let a: Vec<_> = (0..8).map(|_| t.backoff(3)).collect();
        assert!(a.windows(2).any(|w| w[0] != w[1]), "no jitter: {a:?}");
    }
}
