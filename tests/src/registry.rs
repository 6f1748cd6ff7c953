//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution registry)
//! on 127.0.0.1 with TLS from a CA made for the test, in one of three auth modes, plus the
//! tools to fill it.
//!
//! ```no_run
//! use chunkfs_tests::registry::{AuthMode, TestRegistry};
//! # let (dir, layout) = (std::path::Path::new("/var/tmp/x"), std::path::Path::new("/var/tmp/l"));
//! if let Err(why) = TestRegistry::available() {
//!     eprintln!("skipped: {why}");
//!     return;
//! }
//! let reg = TestRegistry::start(dir, AuthMode::Token);
//! reg.push(&format!("oci:{}:v1", layout.display()), "test/app", "v1");
//! let reference = reg.reference("test/app", "v1"); // docker://127.0.0.1:PORT/test/app:v1
//! // Give clients reg.cert_dir() (--cert-dir) and reg.credentials() (--creds).
//! println!("{} requests so far", reg.requests().len());
//! ```
//!
//! - [`AuthMode::None`]: anyone may pull and push.
//! - [`AuthMode::Htpasswd`]: Basic auth against an htpasswd file (bcrypt) holding
//!   [`USER`]/[`PASSWORD`].
//! - [`AuthMode::Token`]: the registry's `auth.token` mode, backed by a token server of our
//!   own (HTTPS, same CA) that signs RS256 JWTs whose `x5c` header carries a certificate the
//!   registry's `rootcertbundle` (the test CA) vouches for. Anonymous requests get `pull`
//!   tokens; [`USER`]/[`PASSWORD`] get what they ask for; a wrong password gets 401.
//!
//! The registry's stdout and stderr (its access log in combined format, and its own log) are
//! kept in `DIR/registry.log`: [`TestRegistry::requests`] parses the access log so tests can
//! count requests, range answers (206) and bytes. Everything is stopped on drop.

// Fixtures: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::oci::run;

/// The user every credentialed mode accepts.
pub const USER: &str = "chunkfs";
/// Its password.
pub const PASSWORD: &str = "test-password-1";
/// The `service` of the token mode.
pub const SERVICE: &str = "chunkfs-test-registry";
/// The `issuer` of the token mode's JWTs.
const ISSUER: &str = "chunkfs-test-issuer";

/// How the registry authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication.
    None,
    /// Basic auth against an htpasswd file.
    Htpasswd,
    /// Bearer tokens from the harness's token server.
    Token,
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, `PUT`, ...
    pub method: String,
    /// The request path (with query).
    pub path: String,
    /// The response status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
}

/// A running registry (and token server), stopped on drop.
pub struct TestRegistry {
    mode: AuthMode,
    dir: PathBuf,
    port: u16,
    child: Child,
    token: Option<TokenServer>,
}

/// Free TCP port on 127.0.0.1 (bound and released: another process could take it, which on a
/// test machine does not happen in practice).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestRegistry {
    /// Ok if `docker-registry`, `skopeo` and `openssl` are installed; else why not.
    pub fn available() -> Result<(), String> {
        for tool in ["docker-registry", "skopeo", "openssl"] {
            let found = std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
            if !found {
                return Err(format!("{tool} is not installed (tools/setup installs it)"));
            }
        }
        Ok(())
    }

    /// Starts a registry in `mode`, storing and logging under `dir` (created if missing);
    /// waits until it accepts connections.
    pub fn start(dir: &Path, mode: AuthMode) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let pki = Pki::make(&dir.join("pki"));
        let port = free_port();
        let token = (mode == AuthMode::Token).then(|| TokenServer::start(&pki));
        let auth = match (mode, &token) {
            (AuthMode::None, _) => String::new(),
            (AuthMode::Htpasswd, _) => {
                let hash = bcrypt::hash(PASSWORD, 4).unwrap();
                let file = dir.join("htpasswd");
                std::fs::write(&file, format!("{USER}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: chunkfs-test\n    path: {}\n",
                    file.display()
                )
            }
            (AuthMode::Token, Some(t)) => format!(
                "auth:\n  token:\n    realm: https://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                t.port,
                pki.ca_crt().display()
            ),
            (AuthMode::Token, None) => unreachable!("the token server starts above"),
        };
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: chunkfs-test\n  tls:\n    certificate: {}\n    key: {}\n{auth}",
                dir.join("storage").display(),
                pki.dir.join("server.crt").display(),
                pki.dir.join("server.key").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        drop(log);
        let child = Self::spawn(dir);
        let mut reg = Self {
            mode,
            dir: dir.to_owned(),
            port,
            child,
            token,
        };
        reg.wait_listening();
        reg
    }

    /// Starts `docker-registry serve DIR/registry.yml`, appending to DIR/registry.log.
    fn spawn(dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("registry.log"))
            .unwrap();
        Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("registry.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start docker-registry ({e}); install it with tools/setup")
            })
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not listen on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the registry (connections are then refused on its port; the token server keeps
    /// running).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry again on the same port, with the same storage and log.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(&self.dir);
        self.wait_listening();
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The test CA's certificate, DER.
    pub fn ca_der(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("pki/ca.der")).unwrap()
    }

    /// The auth mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/REPO:TAG`.
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("docker://{}/{repo}:{tag}", self.host())
    }

    /// A directory holding only the test CA as `ca.crt`: `--cert-dir` for clients,
    /// `--dest-cert-dir` for skopeo.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.join("pki/client")
    }

    /// `(USER, PASSWORD)` in the credentialed modes, None without auth.
    pub fn credentials(&self) -> Option<(&'static str, &'static str)> {
        (self.mode != AuthMode::None).then_some((USER, PASSWORD))
    }

    /// `skopeo copy SRC docker://HOST/REPO:TAG` with the test CA and the credentials.
    pub fn push(&self, src: &str, repo: &str, tag: &str) {
        self.copy(src, repo, tag, false);
    }

    /// As [`push`](Self::push), with `--all` (an image index and every image it lists).
    pub fn push_all(&self, src: &str, repo: &str, tag: &str) {
        self.copy(src, repo, tag, true);
    }

    fn copy(&self, src: &str, repo: &str, tag: &str, all: bool) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-cert-dir"])
            .arg(self.cert_dir());
        if all {
            cmd.arg("--all");
        }
        if let Some((u, p)) = self.credentials() {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(src).arg(self.reference(repo, tag));
        run(&mut cmd);
    }

    /// Everything the registry printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// The access log so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log().lines().filter_map(parse_access_line).collect()
    }

    /// How many requests the access log holds once it stopped growing: the registry writes a
    /// line a moment after it answered, so a count taken right after a fetch may miss it.
    pub fn settled_requests(&self) -> usize {
        let mut n = self.requests().len();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let m = self.requests().len();
            if m == n {
                return n;
            }
            n = m;
        }
    }

    /// Token requests the token server answered (0 in the other modes).
    pub fn token_requests(&self) -> usize {
        self.token
            .as_ref()
            .map_or(0, |t| t.served.load(Ordering::SeqCst))
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `127.0.0.1 - - [date] "GET /v2/x HTTP/1.1" 206 1234 "referer" "agent"`.
fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut req = request.split(' ');
    let method = req.next()?.to_owned();
    let path = req.next()?.to_owned();
    req.next().filter(|v| v.starts_with("HTTP/"))?;
    let mut nums = rest.split_whitespace();
    let status = nums.next()?.parse().ok()?;
    let bytes = nums.next()?.parse().unwrap_or(0);
    Some(LoggedRequest {
        method,
        path,
        status,
        bytes,
    })
}

/// The test's certificates, made with openssl(1): a CA, the registry's (and token server's)
/// TLS certificate for 127.0.0.1 and localhost, and the token signer's certificate.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn make(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("client")).unwrap();
        let openssl = |args: &[&str]| {
            run(Command::new("openssl").args(args).current_dir(dir));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3",
            "-subj",
            "/CN=chunkfs test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("token.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
        )
        .unwrap();
        for (name, cn) in [
            ("server", "127.0.0.1"),
            ("token", "chunkfs test token signer"),
        ] {
            let subj = format!("/CN={cn}");
            openssl(&[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &subj,
            ]);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "3",
                "-extfile",
                &format!("{name}.ext"),
            ]);
            openssl(&[
                "x509",
                "-in",
                &format!("{name}.crt"),
                "-outform",
                "DER",
                "-out",
                &format!("{name}.der"),
            ]);
            openssl(&[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                &format!("{name}.key"),
                "-outform",
                "DER",
                "-out",
                &format!("{name}.pk8"),
            ]);
        }
        std::fs::copy(dir.join("ca.crt"), dir.join("client/ca.crt")).unwrap();
        openssl(&["x509", "-in", "ca.crt", "-outform", "DER", "-out", "ca.der"]);
        Self {
            dir: dir.to_owned(),
        }
    }

    fn ca_crt(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

/// The token server: HTTPS on 127.0.0.1, `GET /token?service=..&scope=..`, stopped on drop.
struct TokenServer {
    port: u16,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What signs tokens.
struct Signer {
    key: ring::signature::RsaKeyPair,
    /// The signer's certificate, base64 (standard) DER, for the JWT's `x5c`.
    x5c: String,
}

impl TokenServer {
    fn start(pki: &Pki) -> Self {
        // ring rather than the post-quantum default: the token server only has to speak TLS
        // to the clients under test, and ring is already in the tree.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(
                    pki.read("server.der"),
                )],
                rustls::pki_types::PrivateKeyDer::Pkcs8(
                    rustls::pki_types::PrivatePkcs8KeyDer::from(pki.read("server.pk8")),
                ),
            )
            .unwrap();
        let tls = Arc::new(tls);
        let signer = Arc::new(Signer {
            key: ring::signature::RsaKeyPair::from_pkcs8(&pki.read("token.pk8")).unwrap(),
            x5c: base64::engine::general_purpose::STANDARD.encode(pki.read("token.der")),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (served, stop) = (served.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = conn else { continue };
                    let (tls, signer, served) = (tls.clone(), signer.clone(), served.clone());
                    std::thread::spawn(move || {
                        let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                        let Ok(conn) = rustls::ServerConnection::new(tls) else {
                            return;
                        };
                        let mut stream = rustls::StreamOwned::new(conn, tcp);
                        if let Some((target, authorization)) = read_head(&mut stream) {
                            let (status, body) = answer(&signer, &target, authorization.as_deref());
                            if status.starts_with("200") {
                                served.fetch_add(1, Ordering::SeqCst);
                            }
                            let _ = write!(
                                stream,
                                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n{body}",
                                body.len(),
                                if status.starts_with("401") {
                                    "WWW-Authenticate: Basic realm=\"chunkfs-test-tokens\"\r\n"
                                } else {
                                    ""
                                }
                            );
                            let _ = stream.flush();
                            stream.conn.send_close_notify();
                            let _ = stream.flush();
                        }
                    });
                }
            })
        };
        Self {
            port,
            served,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The request target and `Authorization` of an HTTP/1.1 request head (at most 64 KiB).
fn read_head(stream: &mut impl Read) -> Option<(String, Option<String>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 << 10 || stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_owned();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    Some((target, authorization))
}

/// The status line and JSON body for a token request.
fn answer(signer: &Signer, target: &str, authorization: Option<&str>) -> (&'static str, String) {
    let Some(query) = target
        .strip_prefix("/token")
        .map(|q| q.trim_start_matches('?'))
    else {
        return ("404 Not Found", "{}".into());
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let user = match authorization {
        None => None,
        Some(a) => {
            let given = a
                .strip_prefix("Basic ")
                .and_then(|b| b64.decode(b.trim()).ok())
                .and_then(|b| String::from_utf8(b).ok());
            if given.as_deref() != Some(&format!("{USER}:{PASSWORD}")) {
                return (
                    "401 Unauthorized",
                    "{\"details\":\"wrong credentials\"}".into(),
                );
            }
            Some(USER)
        }
    };
    let mut access = Vec::new();
    let mut service = None;
    let pairs = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let decode = |x: &str| {
                percent_encoding::percent_decode_str(&x.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        });
    for (k, v) in pairs {
        match k.as_str() {
            "service" => service = Some(v),
            "scope" => {
                // repository:NAME:ACTION[,ACTION]; NAME may hold no colon.
                let mut parts = v.splitn(3, ':');
                let (Some(kind), Some(name), Some(actions)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let granted: Vec<&str> = actions
                    .split(',')
                    .filter(|a| user.is_some() || *a == "pull")
                    .collect();
                access.push(serde_json::json!({"type": kind, "name": name, "actions": granted}));
            }
            _ => {}
        }
    }
    if service.as_deref() != Some(SERVICE) {
        return (
            "400 Bad Request",
            "{\"details\":\"unknown service\"}".into(),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [signer.x5c]});
    static JTI: AtomicUsize = AtomicUsize::new(0);
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user.unwrap_or(""),
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("chunkfs-test-{}", JTI.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        url64.encode(header.to_string()),
        url64.encode(claims.to_string())
    );
    let mut signature = vec![0u8; signer.key.public().modulus_len()];
    signer
        .key
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .unwrap();
    let token = format!("{signing_input}.{}", url64.encode(signature));
    (
        "200 OK",
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
    )
}

/// An HTTP/1.1 proxy on 127.0.0.1 in front of a [`TestRegistry`] (which speaks TLS): clients
/// talk plain HTTP to it (`-o plain-http`, `--plain-http`), and it forwards each request over a
/// new TLS connection to the registry. It can delay every answer (a slow link, so tests can act
/// mid-read) and damage the body of range answers (206: a hostile registry serving wrong
/// bytes), and counts the range answers and their body bytes. Stopped on drop.
pub struct HttpProxy {
    port: u16,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    corrupt: Arc<AtomicBool>,
    ranges: Arc<std::sync::atomic::AtomicU64>,
    range_bytes: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpProxy {
    /// Starts a proxy to `reg`.
    pub fn start(reg: &TestRegistry) -> Self {
        use std::sync::atomic::AtomicU64;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(reg.ca_der()))
            .unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let upstream = reg.port();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let corrupt = Arc::new(AtomicBool::new(false));
        let ranges = Arc::new(AtomicU64::new(0));
        let range_bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (delay_ms, corrupt, ranges, range_bytes, stop) = (
                delay_ms.clone(),
                corrupt.clone(),
                ranges.clone(),
                range_bytes.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let tls = tls.clone();
                    let (delay_ms, corrupt, ranges, range_bytes) = (
                        delay_ms.clone(),
                        corrupt.clone(),
                        ranges.clone(),
                        range_bytes.clone(),
                    );
                    std::thread::spawn(move || {
                        let _ = proxy_one(
                            client,
                            upstream,
                            &tls,
                            &delay_ms,
                            &corrupt,
                            &ranges,
                            &range_bytes,
                        );
                    });
                }
            })
        };
        Self {
            port,
            delay_ms,
            corrupt,
            ranges,
            range_bytes,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/REPO:TAG`.
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("docker://{}/{repo}:{tag}", self.host())
    }

    /// Delays every answer by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Damages (one byte flipped in the middle) the body of every range answer from now on.
    pub fn set_corrupt(&self, on: bool) {
        self.corrupt.store(on, Ordering::SeqCst);
    }

    /// Range answers (206) relayed so far, and their body bytes.
    pub fn range_answers(&self) -> (u64, u64) {
        (
            self.ranges.load(Ordering::SeqCst),
            self.range_bytes.load(Ordering::SeqCst),
        )
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Relays one request (the client's connection is closed after the answer).
fn proxy_one(
    mut client: TcpStream,
    upstream: u16,
    tls: &Arc<rustls::ClientConfig>,
    delay_ms: &std::sync::atomic::AtomicU64,
    corrupt: &AtomicBool,
    ranges: &std::sync::atomic::AtomicU64,
    range_bytes: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 << 10 || client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines: Vec<&str> = text.trim_end().split("\r\n").collect();
    lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    let request = format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
    let tcp = TcpStream::connect(("127.0.0.1", upstream))?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(tls.clone(), name).map_err(std::io::Error::other)?;
    let mut up = rustls::StreamOwned::new(conn, tcp);
    up.write_all(request.as_bytes())?;
    up.flush()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match up.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // The registry may close without close_notify once it sent everything.
            Err(_) if !answer.is_empty() => break,
            Err(e) => return Err(e),
        }
        if answer.len() > 128 << 20 {
            break;
        }
    }
    let delay = delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return client.write_all(&answer);
    };
    let (head, body) = answer.split_at(split + 4);
    let head_text = String::from_utf8_lossy(head).into_owned();
    let mut body = body.to_vec();
    if head_text.starts_with("HTTP/1.1 206") {
        ranges.fetch_add(1, Ordering::SeqCst);
        range_bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
        if corrupt.load(Ordering::SeqCst) {
            let mid = body.len() / 2;
            if let Some(b) = body.get_mut(mid) {
                *b ^= 0x5a;
            }
        }
    }
    let mut out_lines: Vec<&str> = head_text.trim_end().split("\r\n").collect();
    out_lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    let out_head = format!("{}\r\nConnection: close\r\n\r\n", out_lines.join("\r\n"));
    client.write_all(out_head.as_bytes())?;
    client.write_all(&body)?;
    client.flush()
}

/// Range answers (206) to blob requests among `requests`: how many, and their body bytes.
pub fn blob_ranges(requests: &[LoggedRequest]) -> (usize, u64) {
    let r: Vec<&LoggedRequest> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/") && r.status == 206)
        .collect();
    (r.len(), r.iter().map(|r| r.bytes).sum())
}

/// `chunkfs mount -v -o OPTIONS SOURCE TARGET`.
pub fn chunkfs_mount(source: &str, target: &Path, options: &str) -> std::process::Output {
    crate::mount::output(
        Command::new(crate::mount::chunkfs_bin())
            .args(["mount", "-v", "-o", options, source])
            .arg(target),
    )
}

/// `chunkfs status --json TARGET`, parsed: one object per mount (docs/mount.chunkfs.8.md).
pub fn chunkfs_status(target: &Path) -> serde_json::Value {
    let o = crate::mount::output(
        Command::new(crate::mount::chunkfs_bin())
            .args(["status", "--json"])
            .arg(target),
    );
    assert!(
        o.status.success(),
        "chunkfs status: {}",
        crate::mount::describe(&o)
    );
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    all.get(0).cloned().unwrap_or(serde_json::Value::Null)
}

/// Pids of live processes whose `argv[0]` is `argv0` and whose command line contains `needle`.
pub fn processes(argv0: &str, needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.starts_with(argv0) && text.contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// `chunkfs pack SRC oci:LAYOUT:TAG` with the built binary.
pub fn pack_into_layout(src: &Path, layout: &Path, tag: &str) {
    run(Command::new(crate::mount::chunkfs_bin())
        .arg("pack")
        .arg(src)
        .arg(format!("oci:{}:{tag}", layout.display())));
}

/// Returns from the calling test, saying why, when the registry tests cannot run here
/// ([`TestRegistry::available`]).
#[macro_export]
macro_rules! require_registry {
    () => {
        if let Err(why) = $crate::registry::TestRegistry::available() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Why the lazy registry tests cannot run here, if they cannot: no mounts, no registry, or no
/// lazy kernel path (`chunkfs_helper::lazy::supported`).
pub fn lazy_skip_reason() -> Option<String> {
    if let Some(why) = crate::mount::cannot_mount() {
        return Some(why);
    }
    if let Err(why) = TestRegistry::available() {
        return Some(why);
    }
    chunkfs_helper::lazy::supported(Path::new("/var/tmp"))
        .err()
        .map(|w| format!("no lazy kernel path: {w}"))
}

/// Returns from the calling test, saying why, when the lazy registry tests cannot run here
/// ([`lazy_skip_reason`]).
#[macro_export]
macro_rules! require_lazy_registry {
    () => {
        if let Some(why) = $crate::registry::lazy_skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines() {
        let l = r#"127.0.0.1 - - [07/Dec/2026:06:00:00 +0000] "GET /v2/test/app/blobs/sha256:ab HTTP/1.1" 206 4096 "" "chunkfs/0.1.0""#;
        assert_eq!(
            parse_access_line(l),
            Some(LoggedRequest {
                method: "GET".into(),
                path: "/v2/test/app/blobs/sha256:ab".into(),
                status: 206,
                bytes: 4096
            })
        );
        assert_eq!(
            parse_access_line("time=\"...\" level=info msg=\"listening\""),
            None
        );
    }
}
