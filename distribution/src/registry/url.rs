//! The few URL operations the client needs (parse an absolute http(s) URL, resolve a redirect's
//! `Location`, add query parameters, compare origins), on `http::Uri` (which ureq uses anyway)
//! rather than the `url` crate, whose IDNA tables would triple this crate's dependency tree
//! for host names registries never use.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters is escaped in query values.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An absolute `http` or `https` URL without credentials or fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Url {
    scheme: &'static str,
    /// The host as written in the authority (`[::1]` for IPv6).
    host: String,
    /// The port when it is not the scheme's default.
    port: Option<u16>,
    /// `/...`.
    path: String,
    query: Option<String>,
}

impl Url {
    /// Parses an absolute URL.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let s = s.split('#').next().unwrap_or_default();
        let uri: ureq::http::Uri = s.parse().map_err(|e| format!("{e}"))?;
        let scheme = match uri.scheme_str() {
            Some(x) if x.eq_ignore_ascii_case("https") => "https",
            Some(x) if x.eq_ignore_ascii_case("http") => "http",
            Some(x) => return Err(format!("the scheme {x:?} is not http or https")),
            None => return Err("it is not an absolute URL".into()),
        };
        let authority = uri.authority().ok_or("it has no host")?;
        if authority.as_str().contains('@') {
            return Err("it carries credentials".into());
        }
        let host = authority.host();
        if host.is_empty() {
            return Err("it has no host".into());
        }
        let default = if scheme == "https" { 443 } else { 80 };
        let port = authority.port_u16().filter(|&p| p != default);
        let path = match uri.path() {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            path,
            query: uri.query().map(str::to_owned),
        })
    }

    /// `http` or `https`.
    pub(crate) fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// `HOST[:PORT]`, the port only when it is not the scheme's default.
    pub(crate) fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// Same scheme, host and port.
    pub(crate) fn same_origin(&self, other: &Url) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }

    /// `location` (absolute, scheme-relative, absolute-path or relative) resolved against
    /// this URL, as RFC 9110 §10.2.2 says a redirect's target is.
    pub(crate) fn join(&self, location: &str) -> Result<Url, String> {
        let location = location.trim();
        let has_scheme = location.split_once(':').is_some_and(|(s, _)| {
            s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        });
        if has_scheme {
            return Url::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Url::parse(&format!("{}://{rest}", self.scheme));
        }
        let origin = format!("{}://{}", self.scheme, self.authority());
        if location.starts_with('/') {
            return Url::parse(&format!("{origin}{location}"));
        }
        if location.starts_with('?') {
            return Url::parse(&format!("{origin}{}{location}", self.path));
        }
        let dir = &self.path[..self.path.rfind('/').map_or(0, |i| i + 1)];
        Url::parse(&format!("{origin}{dir}{location}"))
    }

    /// This URL with `pairs` appended to its query, values percent-encoded.
    pub(crate) fn with_query(&self, pairs: &[(&str, &str)]) -> Url {
        let mut query = self.query.clone().unwrap_or_default();
        for (k, v) in pairs {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&utf8_percent_encode(k, QUERY_VALUE).to_string());
            query.push('=');
            query.push_str(&utf8_percent_encode(v, QUERY_VALUE).to_string());
        }
        Url {
            query: Some(query),
            ..self.clone()
        }
    }

    /// The URL without its query, for messages (signed storage URLs carry secrets there).
    pub(crate) fn redacted(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority(), self.path)
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority(), self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parsing_and_origins() {
        let a = u("HTTPS://Reg.Example:443/v2/?x=1#frag");
        assert_eq!(a.to_string(), "https://reg.example/v2/?x=1");
        assert_eq!(a.authority(), "reg.example");
        assert_eq!(
            u("http://127.0.0.1:5000").to_string(),
            "http://127.0.0.1:5000/"
        );
        assert_eq!(u("https://[::1]:5000/a").authority(), "[::1]:5000");
        assert!(a.same_origin(&u("https://reg.example/other")));
        assert!(!a.same_origin(&u("http://reg.example/")));
        assert!(!u("http://h:1/").same_origin(&u("http://h:2/")));
        for bad in [
            "/relative",
            "ftp://h/x",
            "https://user:pw@h/",
            "https:///x",
            "not a url",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            u("https://s3.example/b/x?X-Amz-Signature=secret").redacted(),
            "https://s3.example/b/x"
        );
    }

    #[test]
    fn redirect_targets() {
        let base = u("https://reg.example:5000/v2/a/blobs/sha256:ab?x=1");
        let j = |l: &str| base.join(l).unwrap().to_string();
        assert_eq!(
            j("https://s3.example/o?sig=1"),
            "https://s3.example/o?sig=1"
        );
        assert_eq!(j("//cdn.example/o"), "https://cdn.example/o");
        assert_eq!(j("/elsewhere"), "https://reg.example:5000/elsewhere");
        assert_eq!(j("other"), "https://reg.example:5000/v2/a/blobs/other");
        assert_eq!(
            j("?y=2"),
            "https://reg.example:5000/v2/a/blobs/sha256:ab?y=2"
        );
        assert!(base.join("javascript:alert(1)").is_err());
    }

    #[test]
    fn query_values_are_escaped() {
        let t = u("https://auth.example/token?a=b").with_query(&[
            ("service", "reg example"),
            ("scope", "repository:team/app:pull"),
        ]);
        assert_eq!(
            t.to_string(),
            "https://auth.example/token?a=b&service=reg%20example&scope=repository%3Ateam%2Fapp%3Apull"
        );
    }
}
