//! Authentication: what a request carries, and what a 401 makes the client do.
//!
//! The first request goes out anonymous. A 401's `WWW-Authenticate` tells the scheme:
//! - `Basic`: the credentials go with every later request (none found: an error saying where
//!   the client looked);
//! - `Bearer realm=..,service=..,scope=..`: a token is fetched from the realm (a GET with the
//!   credentials as Basic auth, or anonymous), cached per scope until `expires_in` (60 s when
//!   absent) runs out, and sent as `Authorization: Bearer`. A request refused with a cached
//!   token fetches a new one once; refused again, it fails.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::registry::body::Metered;
use crate::registry::challenge;
use crate::registry::credentials::Found;
use crate::registry::error::At;
use crate::registry::stats::Counters;
use crate::registry::transport::{Failure, Request, Transport, authority, redacted};
use crate::registry::url::Url;

/// The largest token response accepted.
const TOKEN_RESPONSE_MAX: u64 = 1 << 20;
/// Tokens that do not say how long they live are valid this long (the token spec's default).
const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are dropped this much before they expire, so none expires in flight.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
enum Scheme {
    Basic,
    Bearer { realm: Url, service: Option<String> },
}

struct Token {
    value: String,
    expires: Instant,
}

#[derive(Default)]
struct State {
    scheme: Option<Scheme>,
    tokens: HashMap<String, Token>,
}

/// What a token request needs of the request it serves.
pub(crate) struct Net<'a> {
    /// The operation, for messages.
    pub at: &'a At,
    pub transport: &'a Transport,
    pub counters: &'a Counters,
}

/// A client's credentials and what it learnt about the registry's auth.
pub(crate) struct Auth {
    found: Found,
    state: Mutex<State>,
    /// Serialises token requests, so that threads refused together fetch one token.
    fetching: Mutex<()>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Auth {
    pub(crate) fn new(found: Found) -> Self {
        Self {
            found,
            state: Mutex::new(State::default()),
            fetching: Mutex::new(()),
        }
    }

    /// True if credentials were given or found.
    pub(crate) fn has_credentials(&self) -> bool {
        self.found.creds.is_some()
    }

    /// Where the credentials came from, for messages.
    pub(crate) fn describe(&self) -> String {
        self.found.describe()
    }

    /// The `Authorization` value for a request in `scope`: none until a 401 told the scheme;
    /// with a bearer scheme, the cached token, or a new one when it expired (saving the 401).
    pub(crate) fn authorization(
        &self,
        net: &Net<'_>,
        scope: &str,
    ) -> Result<Option<String>, Failure> {
        let (realm, service) = {
            let Ok(state) = self.state.lock() else {
                return Ok(None);
            };
            match &state.scheme {
                None => return Ok(None),
                Some(Scheme::Basic) => {
                    return Ok(self.found.creds.as_ref().map(|(c, _)| c.basic_header()));
                }
                Some(Scheme::Bearer { realm, service }) => {
                    if let Some(t) = state
                        .tokens
                        .get(scope)
                        .filter(|t| t.expires > Instant::now())
                    {
                        return Ok(Some(format!("Bearer {}", t.value)));
                    }
                    (realm.clone(), service.clone())
                }
            }
        };
        self.fetch_token(net, &realm, service.as_deref(), scope, None)?;
        Ok(self.cached(scope))
    }

    /// The header for the cached token of `scope`, if it has not expired.
    fn cached(&self, scope: &str) -> Option<String> {
        let state = self.state.lock().ok()?;
        state
            .tokens
            .get(scope)
            .filter(|t| t.expires > Instant::now())
            .map(|t| format!("Bearer {}", t.value))
    }

    /// Handles a 401 to a request in `scope` that carried `sent` (an `Authorization` or none):
    /// learns the scheme, fetches a token if needed. Ok means: send the request again.
    pub(crate) fn on_unauthorized(
        &self,
        net: &Net<'_>,
        server: &str,
        www_authenticate: Option<&str>,
        scope: &str,
        sent: Option<&str>,
    ) -> Result<(), Failure> {
        let challenges = www_authenticate.map(challenge::parse).unwrap_or_default();
        let bearer = challenges
            .iter()
            .find(|c| c.scheme == "bearer" && c.param("realm").is_some());
        if let Some(c) = bearer {
            let realm_text = c.param("realm").unwrap_or_default();
            let realm = Url::parse(realm_text).map_err(|e| {
                net.at.corrupt(format!(
                    "{server} asked for a bearer token from realm {realm_text:?}, which is not a URL: {e}"
                ))
            })?;
            let service = c.param("service").map(str::to_owned);
            // The scope is ours, a pull of this repository: the challenge's names the same for
            // the requests this client makes. The caller allows one new token per request.
            if let Ok(mut state) = self.state.lock() {
                state.scheme = Some(Scheme::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                });
            }
            return self.fetch_token(net, &realm, service.as_deref(), scope, sent);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some((_, _)) = &self.found.creds else {
                return Err(net
                    .at
                    .unauthorized(format!(
                        "{server} requires credentials (Basic auth) and there are {}",
                        self.describe()
                    ))
                    .into());
            };
            if sent.is_some_and(|s| s.starts_with("Basic ")) {
                return Err(net
                    .at
                    .unauthorized(format!(
                        "{server} rejected {} (wrong user name or password?)",
                        self.describe()
                    ))
                    .into());
            }
            if let Ok(mut state) = self.state.lock() {
                state.scheme = Some(Scheme::Basic);
            }
            net.counters.auth_round_trip();
            return Ok(());
        }
        Err(net.at
            .unauthorized(format!(
                "{server} answered 401 Unauthorized without a Basic or Bearer challenge (WWW-Authenticate: {:?})",
                www_authenticate.unwrap_or("")
            ))
            .into())
    }

    /// Fetches a token for `scope` from `realm` and caches it.
    fn fetch_token(
        &self,
        net: &Net<'_>,
        realm: &Url,
        service: Option<&str>,
        scope: &str,
        refused: Option<&str>,
    ) -> Result<(), Failure> {
        let _one_at_a_time = self.fetching.lock();
        let realm_name = redacted(realm);
        if let Some(valid) = self.cached(scope) {
            if refused != Some(valid.as_str()) {
                // Another thread fetched a token while this one waited.
                return Ok(());
            }
        }
        if realm.scheme() != "https" && !net.transport.plain_http() {
            return Err(net.at
                .usage(format!(
                    "the token realm {realm_name} is not HTTPS; refusing to send credentials or use tokens over plain HTTP (only when plain HTTP is asked for)"
                ))
                .into());
        }
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        query.push(("scope", scope));
        if let Some((c, _)) = &self.found.creds {
            query.push(("account", &c.username));
        }
        let url = realm.with_query(&query);
        net.counters.auth_round_trip();
        let limits = net.transport.limits();
        let token_at = At::new(
            &net.at.repo,
            format!("{} (token from {realm_name})", net.at.what),
        );
        let response = net.transport.send(
            &token_at,
            net.counters,
            Request {
                url,
                headers: &[("Accept", "application/json".to_owned())],
                authorization: self.found.creds.as_ref().map(|(c, _)| c.basic_header()),
                deadline: limits.request_timeout,
            },
        )?;
        let server = authority(&response.url);
        match response.status {
            200 => {}
            401 | 403 => {
                let reason = match &self.found.creds {
                    Some(_) => format!(
                        "the token server {realm_name} rejected {} (answered {})",
                        self.describe(),
                        response.status
                    ),
                    None => format!(
                        "the token server {realm_name} refused anonymous access (answered {}); there are {}",
                        response.status,
                        self.describe()
                    ),
                };
                return Err(net.at.unauthorized(reason).into());
            }
            s if s == 429 || (500..600).contains(&s) => {
                return Err(Failure::Retry {
                    after: response.retry_after(),
                    error: token_at.network(format!("{server} answered {s}")),
                });
            }
            s => {
                return Err(token_at
                    .refused(format!("{server} answered {s} to the token request"))
                    .into());
            }
        }
        let mut body = Metered::new(response, None, limits, net.counters, &token_at);
        let bytes = body.read_to_vec(TOKEN_RESPONSE_MAX, |n| {
            Failure::Fatal(token_at.corrupt(format!(
                "{server} sent a token response of more than {TOKEN_RESPONSE_MAX} bytes ({n} read)"
            )))
        })?;
        let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
            token_at.corrupt(format!(
                "{server} sent a token response that is not JSON with a token: {e}"
            ))
        })?;
        let value = if parsed.token.is_empty() {
            parsed.access_token
        } else {
            parsed.token
        };
        if value.is_empty()
            || value
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || !b.is_ascii())
        {
            return Err(token_at
                .corrupt(format!(
                    "{server} sent a token response without a usable token (\"token\"/\"access_token\" missing, empty or not printable ASCII)"
                ))
                .into());
        }
        let lifetime = parsed
            .expires_in
            .map(|s| Duration::from_secs(s.min(86_400)))
            .unwrap_or(TOKEN_DEFAULT_LIFETIME);
        let margin = TOKEN_MARGIN.min(lifetime / 10);
        let expires = Instant::now() + lifetime.saturating_sub(margin);
        if let Ok(mut state) = self.state.lock() {
            state
                .tokens
                .insert(scope.to_owned(), Token { value, expires });
        }
        Ok(())
    }
}
