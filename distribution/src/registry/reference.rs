//! Image references in the containers (skopeo, podman) spelling:
//! `docker://HOST[:PORT]/REPO[:TAG]` and `docker://HOST[:PORT]/REPO@sha256:HEX`.
//!
//! As docker and containers/image do, a first component that is not a host name (no `.`, no
//! `:`, not `localhost`) means Docker Hub: `docker://debian` is
//! `docker://docker.io/library/debian:latest`, whose API lives at `registry-1.docker.io`.

use chunkfs_format::digest::Digest;

use crate::oci::reference::is_valid_tag;

/// The prefix of a registry reference.
pub const SCHEME: &str = "docker://";
/// Docker Hub's name in references and auth files.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API host.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";
/// The longest repository name the distribution spec allows (with the host, 255).
const NAME_MAX: usize = 255;

/// A parsed `docker://` reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not a registry reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{input:?} is not a registry reference (docker://HOST[:PORT]/REPO[:TAG] or docker://HOST[:PORT]/REPO@sha256:HEX): {reason}"
)]
pub struct ParseError {
    /// The string given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ImageRef {
    /// Parses `docker://...` (the prefix is required), normalising Docker Hub names.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let fail = |reason: String| ParseError {
            input: input.to_owned(),
            reason,
        };
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| fail(format!("it does not start with {SCHEME}")))?;
        let (name, digest) = match rest.split_once('@') {
            Some((name, d)) => {
                let digest = crate::oci::spec::parse_digest(d).map_err(|_| {
                    fail(format!(
                        "the digest {d:?} is not sha256: followed by 64 lower-case hex digits"
                    ))
                })?;
                (name, Some(digest))
            }
            None => (rest, None),
        };
        // A tag follows the last colon after the last slash; a colon before it is a port.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = name.split_at(last_slash + i);
                let t = &t[1..];
                if !is_valid_tag(t) {
                    return Err(fail(format!(
                        "the tag {t:?} is not [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"
                    )));
                }
                (n, Some(t.to_owned()))
            }
            None => (name, None),
        };
        if name.is_empty() {
            return Err(fail("the repository name is missing".into()));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if is_host(first) => (first.to_owned(), path.to_owned()),
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB.to_owned(),
            _ => registry,
        };
        check_host(&registry).map_err(fail)?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        check_repository(&repository).map_err(fail)?;
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(fail(format!(
                "the name is longer than {NAME_MAX} characters"
            )));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(DEFAULT_TAG.to_owned())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry as references and auth files name it: `HOST[:PORT]`, `docker.io` for
    /// Docker Hub.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) the API is served at: `registry-1.docker.io` for Docker Hub.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository: `library/debian`, `team/app`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference names one (`latest` when it names neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest digest, if the reference pins one (it then wins over a tag).
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifest endpoint for: the digest if there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_oci(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The same repository pinned to `digest` (tag dropped).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `docker://HOST/REPO`, the repository without tag or digest (for messages and counters).
    pub fn repository_name(&self) -> String {
        format!("{SCHEME}{}/{}", self.registry, self.repository)
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{}", d.to_oci())?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

/// True if the first path component names a registry host rather than a Docker Hub namespace.
fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// `host[:port]`: DNS labels or an IPv4 address, or `[IPv6]`, and a port 1..65535.
fn check_host(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("the host {registry:?} opens [ without closing it"))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{v6:?} is not an IPv6 address"));
        }
        match after {
            "" => (None, None),
            p => (
                None,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("unexpected {p:?} after the IPv6 address"))?,
                ),
            ),
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return Err(format!("the host {host:?} is not a valid host name"));
        }
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(format!("the port {p:?} is not a number from 1 to 65535")),
        }
    }
    Ok(())
}

/// Path components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/` (the distribution spec).
fn check_repository(repo: &str) -> Result<(), String> {
    for component in repo.split('/') {
        let b = component.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ok = !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter()
                .all(|&c| alnum(c) || c == b'.' || c == b'_' || c == b'-')
            && !component.contains("..")
            && !component.contains("___")
            && !component.contains("._")
            && !component.contains("_.")
            && !component.contains(".-")
            && !component.contains("-.")
            && !component.contains("_-")
            && !component.contains("-_");
        if !ok {
            return Err(format!(
                "the repository {repo:?} has the component {component:?}, which is not lower-case letters and digits separated by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn hosts_ports_tags_and_digests() {
        let a = r("docker://127.0.0.1:5000/team/app:v1.2");
        assert_eq!(a.registry(), "127.0.0.1:5000");
        assert_eq!(a.api_host(), "127.0.0.1:5000");
        assert_eq!(a.repository(), "team/app");
        assert_eq!(a.tag(), Some("v1.2"));
        assert_eq!(a.to_string(), "docker://127.0.0.1:5000/team/app:v1.2");
        let hex = "ab".repeat(32);
        let b = r(&format!("docker://localhost/app@sha256:{hex}"));
        assert_eq!(b.registry(), "localhost");
        assert_eq!(b.tag(), None);
        assert_eq!(b.manifest_reference(), format!("sha256:{hex}"));
        assert_eq!(
            b.to_string(),
            format!("docker://localhost/app@sha256:{hex}")
        );
        let c = r("docker://quay.io/a/b/c");
        assert_eq!(c.tag(), Some("latest"));
        assert_eq!(c.repository_name(), "docker://quay.io/a/b/c");
        let v6 = r("docker://[::1]:5000/app:x");
        assert_eq!(v6.registry(), "[::1]:5000");
        // Display parses back to the same reference.
        for x in [a, b, c, v6] {
            assert_eq!(r(&x.to_string()), x);
        }
    }

    #[test]
    fn docker_hub_normalisation() {
        let d = r("docker://debian");
        assert_eq!(d.to_string(), "docker://docker.io/library/debian:latest");
        assert_eq!(d.api_host(), "registry-1.docker.io");
        assert_eq!(
            r("docker://user/app:1").to_string(),
            "docker://docker.io/user/app:1"
        );
        assert_eq!(
            r("docker://index.docker.io/debian").to_string(),
            "docker://docker.io/library/debian:latest"
        );
        assert_eq!(
            r("docker://docker.io/library/debian:12").repository(),
            "library/debian"
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let bad = |s: &str, what: &str| {
            let e = ImageRef::parse(s).unwrap_err().to_string();
            assert!(e.contains(what), "{s}: {e}");
        };
        bad("oci:/x:y", "does not start with docker://");
        bad("docker://", "repository name is missing");
        bad("docker://h.io/App", "\"App\"");
        bad("docker://h.io/a:b:c", "\"a:b\"");
        bad("docker://h.io/a:-x", "tag");
        bad("docker://h.io:0/a", "port");
        bad("docker://h.io:99999/a", "port");
        bad("docker://h.io:x/a", "port");
        bad("docker://-h.io/a", "host");
        bad("docker://h.io/a@sha256:abc", "digest");
        bad("docker://h.io/a@sha512:abc", "digest");
        bad("docker://h.io/a//b", "component");
        bad("docker://h.io/a..b", "component");
        bad(&format!("docker://h.io/{}", "a".repeat(300)), "255");
    }
}
