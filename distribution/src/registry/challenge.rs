//! Parsing `WWW-Authenticate` (RFC 9110 §11.6.1): `Bearer realm="...",service="...",scope="..."`
//! and `Basic realm="..."`; several challenges may share one header.

use std::collections::BTreeMap;

/// One challenge: its scheme (lower case) and parameters (names lower case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Every challenge in the header value; malformed parts end the parse (what was parsed stays).
pub(crate) fn parse(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut s = header.trim_start();
    while !s.is_empty() {
        // A scheme token.
        let end = s.find(|c: char| !is_tchar(c)).unwrap_or(s.len());
        if end == 0 {
            break;
        }
        let word = &s[..end];
        let after = s[end..].trim_start();
        if let Some(value_part) = after.strip_prefix('=') {
            // `name=value` belongs to the current challenge.
            let Some(current) = out.last_mut() else { break };
            let value_part = value_part.trim_start();
            let (value, rest) = match value_part.strip_prefix('"') {
                Some(q) => match quoted(q) {
                    Some(x) => x,
                    None => break,
                },
                None => {
                    let e = value_part
                        .find(|c: char| !is_tchar(c) && c != '/' && c != ':')
                        .unwrap_or(value_part.len());
                    (value_part[..e].to_owned(), &value_part[e..])
                }
            };
            current.params.insert(word.to_ascii_lowercase(), value);
            s = rest.trim_start();
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
            s = after;
        }
        s = s.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    out
}

/// A quoted string's content (after the opening quote) and the rest after the closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_basic_and_several() {
        let c = parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(c[0].param("service"), Some("registry.example"));
        assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));
        let c = parse(
            r#"Basic realm="Registry \"Realm\"", Bearer realm=https://x/t, error=invalid_token"#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some("Registry \"Realm\""));
        assert_eq!(c[1].param("realm"), Some("https://x/t"));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
        // Garbage parses to nothing or stops, never panics.
        for g in [
            "",
            "=",
            "\"",
            "Bearer realm=\"unterminated",
            "Bearer ,,,=",
            "\u{e9}t\u{e9}",
        ] {
            let _ = parse(g);
        }
        assert!(
            parse("Bearer realm=\"x")
                .iter()
                .all(|c| c.param("realm").is_none())
        );
    }
}
