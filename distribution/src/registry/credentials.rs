//! Finding a registry's credentials as podman, skopeo and docker do (containers-auth.json(5)):
//!
//! 1. `--creds USER:PASS`;
//! 2. else the auth file the user named, alone: `--authfile FILE`, else `$REGISTRY_AUTH_FILE`;
//! 3. else, the first that has an entry: `$XDG_RUNTIME_DIR/containers/auth.json`,
//!    `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/...`), `$DOCKER_CONFIG/config.json`
//!    or `~/.docker/config.json`.
//!
//! In a file, the `auths` map is searched from the most specific key to the least:
//! `HOST[:PORT]/NAMESPACE/REPO`, ..., `HOST[:PORT]`, then docker's legacy spellings
//! (`https://HOST/v1/`); Docker Hub is also found as `index.docker.io` and
//! `registry-1.docker.io`. An entry's `auth` is base64 of `USER:PASS`. Credential helpers
//! (`credHelpers`, `credsStore`) and `identitytoken` are not supported: such an entry counts as
//! no credentials. Passwords never appear in `Debug` output or messages.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::registry::Error;
use crate::registry::reference::{DOCKER_HUB, DOCKER_HUB_API};

/// A user name and password (or access token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password; never printed.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Parses `USER:PASS` (`--creds`); the password may contain colons.
    pub fn parse(s: &str) -> Option<Self> {
        let (u, p) = s.split_once(':')?;
        (!u.is_empty()).then(|| Self {
            username: u.to_owned(),
            password: p.to_owned(),
        })
    }

    /// The value of an `Authorization: Basic` header.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The environment the lookup reads, captured once (tests give their own).
#[derive(Clone, Debug, Default)]
pub struct AuthEnv {
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

impl AuthEnv {
    /// The process's environment.
    pub fn from_env() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            registry_auth_file: var("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            docker_config: var("DOCKER_CONFIG"),
            home: var("HOME"),
        }
    }

    /// The auth files to search, in order, and whether the user named the one file.
    fn files(&self, authfile: Option<&Path>) -> (Vec<PathBuf>, bool) {
        if let Some(f) = authfile.or(self.registry_auth_file.as_deref()) {
            return (vec![f.to_owned()], true);
        }
        let mut files = Vec::new();
        if let Some(d) = &self.xdg_runtime_dir {
            files.push(d.join("containers/auth.json"));
        }
        match (&self.xdg_config_home, &self.home) {
            (Some(c), _) => files.push(c.join("containers/auth.json")),
            (None, Some(h)) => files.push(h.join(".config/containers/auth.json")),
            (None, None) => {}
        }
        match (&self.docker_config, &self.home) {
            (Some(d), _) => files.push(d.join("config.json")),
            (None, Some(h)) => files.push(h.join(".docker/config.json")),
            (None, None) => {}
        }
        (files, false)
    }
}

/// Where a client's credentials come from.
#[derive(Clone, Debug, Default)]
pub struct CredentialOptions {
    /// `--creds USER:PASS`.
    pub creds: Option<Credentials>,
    /// `--authfile FILE`.
    pub authfile: Option<PathBuf>,
    /// The environment (`AuthEnv::from_env()` for the process's own).
    pub env: AuthEnv,
}

/// The outcome of a lookup.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    /// The credentials and where they were found (`--creds`, `FILE (key K)`).
    pub creds: Option<(Credentials, String)>,
    /// The files searched, for messages when none were found.
    pub searched: Vec<PathBuf>,
}

impl Found {
    /// "credentials from X" or "no credentials (looked in ...)", for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.creds {
            Some((c, from)) => format!("the credentials of user {:?} from {from}", c.username),
            None if self.searched.is_empty() => "no credentials (none given)".into(),
            None => format!(
                "no credentials (none given with --creds, none for this registry in {})",
                self.searched
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Finds the credentials for `registry` (`HOST[:PORT]`, `docker.io`) and `repository`.
pub(crate) fn find(
    options: &CredentialOptions,
    registry: &str,
    repository: &str,
) -> Result<Found, Error> {
    if let Some(c) = &options.creds {
        return Ok(Found {
            creds: Some((c.clone(), "--creds".into())),
            searched: vec![],
        });
    }
    let (files, named) = options.env.files(options.authfile.as_deref());
    for file in &files {
        let text = match std::fs::read(file) {
            Ok(t) => t,
            // A file the user named must exist; the default places need not.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => continue,
            Err(e) => {
                return Err(Error::LocalFile {
                    path: file.clone(),
                    reason: format!("cannot read the auth file: {e}"),
                    source: Some(e),
                });
            }
        };
        if let Some(found) = search_file(file, &text, registry, repository)? {
            return Ok(Found {
                creds: Some(found),
                searched: files.clone(),
            });
        }
    }
    Ok(Found {
        creds: None,
        searched: files,
    })
}

#[derive(serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
}

/// The credentials for `registry`/`repository` in one auth file's text, if any.
fn search_file(
    path: &Path,
    text: &[u8],
    registry: &str,
    repository: &str,
) -> Result<Option<(Credentials, String)>, Error> {
    let bad = |reason: String| Error::BadLocalFile {
        path: path.to_owned(),
        reason,
    };
    let file: AuthFile =
        serde_json::from_slice(text).map_err(|e| bad(format!("is not a valid auth file: {e}")))?;
    let decode = |key: &str, entry: &AuthEntry| -> Result<Option<(Credentials, String)>, Error> {
        if entry.auth.is_empty() {
            return Ok(None);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(entry.auth.trim())
            .map_err(|_| bad(format!("the \"auth\" of {key:?} is not base64")))?;
        let s = String::from_utf8(raw)
            .map_err(|_| bad(format!("the \"auth\" of {key:?} is not UTF-8")))?;
        let creds = Credentials::parse(&s)
            .ok_or_else(|| bad(format!("the \"auth\" of {key:?} is not USER:PASS")))?;
        Ok(Some((creds, format!("{} (key {key:?})", path.display()))))
    };
    let registry = normalise_host(registry);
    // Most specific first: host/a/b/c, host/a/b, host/a, host.
    let mut scoped = format!("{registry}/{repository}");
    loop {
        for (key, entry) in &file.auths {
            if normalise_scoped_key(key) == scoped {
                if let Some(found) = decode(key, entry)? {
                    return Ok(Some(found));
                }
            }
        }
        match scoped.rfind('/') {
            Some(i) => scoped.truncate(i),
            None => break,
        }
    }
    // Docker's legacy keys: `https://HOST/v1/` and the like name the whole host.
    for (key, entry) in &file.auths {
        if let Some(rest) = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
        {
            let host = rest.split('/').next().unwrap_or_default();
            if normalise_host(host) == registry {
                if let Some(found) = decode(key, entry)? {
                    return Ok(Some(found));
                }
            }
        }
    }
    Ok(None)
}

/// Docker Hub's several host names as one.
fn normalise_host(host: &str) -> &str {
    match host {
        "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB,
        h => h,
    }
}

/// An auth key without a scheme: `HOST[/PATH]`, with Docker Hub's host normalised.
fn normalise_scoped_key(key: &str) -> String {
    if key.contains("://") {
        // Legacy keys carry an API path, not a repository scope: matched separately.
        return String::new();
    }
    let (host, path) = match key.split_once('/') {
        Some((h, p)) => (h, Some(p.trim_end_matches('/'))),
        None => (key, None),
    };
    match path {
        Some(p) if !p.is_empty() => format!("{}/{p}", normalise_host(host)),
        _ => normalise_host(host).to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chunkfs_format::Classify as _;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn most_specific_key_wins_and_legacy_keys_match() {
        let tmp = crate::oci::test_dir();
        let f = tmp.path().join("auth.json");
        std::fs::write(
            &f,
            format!(
                r#"{{"auths":{{"reg.io:5000":{{"auth":"{}"}},"reg.io:5000/team":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}},"other.io":{{}}}}}}"#,
                b64("host:h"),
                b64("team:t:with:colons"),
                b64("hub:x")
            ),
        )
        .unwrap();
        let opts = CredentialOptions {
            authfile: Some(f.clone()),
            ..Default::default()
        };
        let user = |reg: &str, repo: &str| {
            find(&opts, reg, repo)
                .unwrap()
                .creds
                .map(|(c, _)| (c.username, c.password))
        };
        assert_eq!(
            user("reg.io:5000", "team/app"),
            Some(("team".into(), "t:with:colons".into()))
        );
        assert_eq!(
            user("reg.io:5000", "other/app"),
            Some(("host".into(), "h".into()))
        );
        assert_eq!(user("reg.io", "team/app"), None);
        assert_eq!(
            user("docker.io", "library/debian"),
            Some(("hub".into(), "x".into()))
        );
        // An entry without "auth" (a credential helper's) is no credentials.
        assert_eq!(user("other.io", "a"), None);
    }

    #[test]
    fn search_order_and_errors() {
        let tmp = crate::oci::test_dir();
        let home = tmp.path().join("home");
        let run = tmp.path().join("run");
        std::fs::create_dir_all(home.join(".docker")).unwrap();
        std::fs::create_dir_all(run.join("containers")).unwrap();
        let entry = |user: &str| {
            format!(
                r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#,
                b64(&format!("{user}:p"))
            )
        };
        std::fs::write(home.join(".docker/config.json"), entry("docker")).unwrap();
        let mut opts = CredentialOptions {
            env: AuthEnv {
                home: Some(home.clone()),
                xdg_runtime_dir: Some(run.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let who = |o: &CredentialOptions| find(o, "r.io", "x").unwrap().creds.map(|c| c.0.username);
        assert_eq!(who(&opts).as_deref(), Some("docker"));
        std::fs::write(run.join("containers/auth.json"), entry("runtime")).unwrap();
        assert_eq!(who(&opts).as_deref(), Some("runtime"));
        // A named file is the only one searched, and it must exist.
        opts.env.registry_auth_file = Some(tmp.path().join("missing.json"));
        let e = find(&opts, "r.io", "x").unwrap_err();
        assert_eq!(e.class(), chunkfs_format::ErrorClass::Io);
        assert!(e.to_string().contains("missing.json"), "{e}");
        std::fs::write(tmp.path().join("bad.json"), b"{").unwrap();
        opts.authfile = Some(tmp.path().join("bad.json"));
        let e = find(&opts, "r.io", "x").unwrap_err();
        assert!(e.to_string().contains("bad.json"), "{e}");
        opts.creds = Credentials::parse("cli:pw");
        assert_eq!(who(&opts).as_deref(), Some("cli"));
        // Never printed.
        assert!(!format!("{:?}", opts.creds).contains("pw"));
        let none = find(
            &CredentialOptions {
                env: opts.env.clone(),
                authfile: Some(home.join(".docker/config.json")),
                creds: None,
            },
            "elsewhere.io",
            "x",
        )
        .unwrap();
        assert!(
            none.describe().contains("config.json"),
            "{}",
            none.describe()
        );
    }
}
