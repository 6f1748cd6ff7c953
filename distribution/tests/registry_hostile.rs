//! The registry client against a hostile HTTP/1.1 server of our own on 127.0.0.1 (std
//! TcpListener and threads, scripted per test), over plain HTTP: every misbehaviour gives a
//! clear error of the right class, within bounded time (the client's timeouts are set small),
//! and bounded memory (the server counts what it managed to send before the client stopped
//! reading). Wrong bytes inside a correct range answer are not detectable here: the client
//! returns them as sent, and the store's frame check catches them.

// Fixtures and tests: a panic is how a test fails.
#![allow(clippy::unwrap_used)]
// One setsockopt(SO_LINGER) to make the server reset a connection.
#![allow(unsafe_code)]

use chunkfs_format::Classify as _;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chunkfs_distribution::registry::{
    Client, CredentialOptions, Credentials, Error, ImageRef, Limits, Options,
};
use chunkfs_distribution::source::BlobSource;
use chunkfs_format::ErrorClass;
use chunkfs_format::digest::Digest;

/// Generous: every case here should end in a few seconds.
const BOUND: Duration = Duration::from_secs(10);

/// A request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Handler = dyn Fn(&Seen, usize, &mut TcpStream) + Send + Sync;

/// The scripted server: each connection carries one request, answered by the handler (given
/// the request and its 0-based number), then closed.
struct Hostile {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    fn start(handler: impl Fn(&Seen, usize, &mut TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let count = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let (seen, handler, count) = (seen.clone(), handler.clone(), count.clone());
                    std::thread::spawn(move || {
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                        let Some(req) = read_request(&mut conn) else {
                            return;
                        };
                        seen.lock().unwrap().push(req.clone());
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        handler(&req, n, &mut conn);
                        let _ = conn.flush();
                        let _ = conn.shutdown(Shutdown::Both);
                    });
                }
            })
        };
        Self {
            port,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// The request line and headers (at most 64 KiB), or None if the client went away.
fn read_request(conn: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 64 << 10 || conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some(Seen { path, headers })
}

/// Writes a whole response with `Content-Length` and `Connection: close`.
fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let _ = write_head(conn, status, headers, Some(body.len() as u64));
    let _ = conn.write_all(body);
}

fn write_head(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    content_length: Option<u64>,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    if let Some(n) = content_length {
        head.push_str(&format!("Content-Length: {n}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())
}

/// Small timeouts and quick retries, no credentials from the machine's files.
fn limits() -> Limits {
    Limits {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(4),
        min_throughput: 2000,
        throughput_grace: Duration::from_secs(1),
        retries: 2,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        retry_after_max: Duration::from_secs(3),
        max_redirects: 5,
        range_max: 8 << 20,
    }
}

fn options(creds: Option<&str>) -> Options {
    Options {
        credentials: CredentialOptions {
            creds: creds.and_then(Credentials::parse),
            authfile: None,
            env: Default::default(),
        },
        cert_dir: None,
        tls_verify: true,
        plain_http: true,
        limits: limits(),
    }
}

fn client(server: &Hostile, creds: Option<&str>) -> Client {
    let image =
        ImageRef::parse(&format!("docker://127.0.0.1:{}/test/app:v1", server.port)).unwrap();
    Client::new(&image, options(creds)).unwrap()
}

/// A blob of `n` deterministic bytes and its digest.
fn blob(n: usize) -> (Vec<u8>, Digest) {
    let data: Vec<u8> = (0..n).map(|i| (i * 7 + i / 251) as u8).collect();
    let d = Digest::of(&data);
    (data, d)
}

/// Runs `f`, asserting it ends within [`BOUND`]; returns its error.
fn fails<T: std::fmt::Debug>(f: impl FnOnce() -> Result<T, Error>) -> (Error, Duration) {
    let t = Instant::now();
    let r = f();
    let took = t.elapsed();
    assert!(took < BOUND, "took {took:?}");
    (r.expect_err("expected an error"), took)
}

fn assert_error(e: &Error, class: ErrorClass, words: &[&str]) {
    let text = e.to_string();
    assert_eq!(e.class(), class, "{text}");
    for w in words {
        assert!(text.contains(w), "{text:?} lacks {w:?}");
    }
}

/// A correct range answer for `data` (the server trusts the request's Range).
fn range_answer(data: &[u8], seen: &Seen) -> (u64, u64, Vec<u8>) {
    let r = seen
        .header("range")
        .unwrap()
        .strip_prefix("bytes=")
        .unwrap();
    let (a, b) = r.split_once('-').unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    (a, b, data[a as usize..=b as usize].to_vec())
}

#[test]
fn wrong_bytes_in_a_correct_range_answer_are_returned_as_sent() {
    let (data, d) = blob(10_000);
    let len = data.len() as u64;
    let server = Hostile::start(move |seen, _, conn| {
        let (a, b, mut bytes) = range_answer(&blob(10_000).0, seen);
        for x in &mut bytes {
            *x ^= 0x5a;
        }
        respond(
            conn,
            "206 Partial Content",
            &[("Content-Range", format!("bytes {a}-{b}/{len}"))],
            &bytes,
        );
    });
    let c = client(&server, None);
    let got = c.read_range(&d, len, 100..600).unwrap();
    let sent: Vec<u8> = data[100..600].iter().map(|x| x ^ 0x5a).collect();
    assert_eq!(got, sent, "the client must return exactly what was sent");
    let seen = server.seen();
    assert_eq!(seen[0].header("range"), Some("bytes=100-599"));
    assert_eq!(seen[0].path, format!("/v2/test/app/blobs/{}", d.to_oci()));
    assert_eq!(c.stats().bytes, 500);
}

#[test]
fn a_wrong_content_range_is_corrupt() {
    let (data, d) = blob(10_000);
    let server = Hostile::start(move |seen, _, conn| {
        let (a, b, bytes) = range_answer(&blob(10_000).0, seen);
        // Shifted by one, same length.
        respond(
            conn,
            "206 Partial Content",
            &[("Content-Range", format!("bytes {}-{}/10000", a + 1, b + 1))],
            &bytes,
        );
    });
    let c = client(&server, None);
    let (e, _) = fails(|| c.read_range(&d, data.len() as u64, 0..100));
    assert_error(
        &e,
        ErrorClass::Corrupt,
        &[
            &format!("127.0.0.1:{}", server.port),
            "test/app",
            &d.to_oci(),
            "bytes 0-99",
            "Content-Range \"bytes 1-100/10000\"",
        ],
    );
    // A wrong total length is as wrong.
    let server2 = Hostile::start(|seen, _, conn| {
        let (a, b, bytes) = range_answer(&blob(10_000).0, seen);
        respond(
            conn,
            "206 Partial Content",
            &[("Content-Range", format!("bytes {a}-{b}/*"))],
            &bytes,
        );
    });
    let (e, _) = fails(|| client(&server2, None).read_range(&d, 10_000, 0..100));
    assert_error(&e, ErrorClass::Corrupt, &["bytes 0-99/*"]);
}

#[test]
fn a_200_with_the_whole_blob_is_corrupt_and_not_read() {
    let (data, d) = blob(1 << 20);
    let sent = Arc::new(AtomicU64::new(0));
    let sent2 = sent.clone();
    let server = Hostile::start(move |_, _, conn| {
        let data = blob(1 << 20).0;
        let _ = write_head(conn, "200 OK", &[], Some(data.len() as u64));
        for c in data.chunks(64 << 10) {
            if conn.write_all(c).is_err() {
                break;
            }
            sent2.fetch_add(c.len() as u64, Ordering::SeqCst);
        }
    });
    let c = client(&server, None);
    let (e, _) = fails(|| c.read_range(&d, data.len() as u64, 10..20));
    assert_error(
        &e,
        ErrorClass::Corrupt,
        &[
            "ignored the Range header",
            "200",
            "1048576 bytes",
            "bytes 10-19",
        ],
    );
    assert_eq!(server.seen().len(), 1, "not retried");
    assert!(
        c.stats().bytes < 1 << 20,
        "the body was read: {:?}",
        c.stats()
    );
}

#[test]
fn a_truncated_body_is_retried_then_fails() {
    let (_, d) = blob(10_000);
    let server = Hostile::start(|seen, _, conn| {
        let (a, b, bytes) = range_answer(&blob(10_000).0, seen);
        let _ = write_head(
            conn,
            "206 Partial Content",
            &[("Content-Range", format!("bytes {a}-{b}/10000"))],
            Some(bytes.len() as u64),
        );
        let _ = conn.write_all(&bytes[..bytes.len() / 2]);
    });
    let c = client(&server, None);
    let (e, _) = fails(|| c.read_range(&d, 10_000, 0..1000));
    assert_error(
        &e,
        ErrorClass::Network,
        &[
            "bytes 0-999",
            "500 of 1000 bytes",
            "gave up after 3 attempts",
        ],
    );
    assert_eq!(server.seen().len(), 3);
    assert_eq!(c.stats().retries, 2);
    assert_eq!(c.stats().errors, 1);
}

#[test]
fn an_endless_body_is_cut_after_one_byte_too_many() {
    let (_, d) = blob(10_000);
    let sent = Arc::new(AtomicU64::new(0));
    let sent2 = sent.clone();
    let server = Hostile::start(move |seen, _, conn| {
        let (a, b, _) = range_answer(&blob(10_000).0, seen);
        // No Content-Length: the body runs until the connection closes, which it never does.
        let _ = write_head(
            conn,
            "206 Partial Content",
            &[("Content-Range", format!("bytes {a}-{b}/10000"))],
            None,
        );
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..4096 {
            if conn.write_all(&chunk).is_err() {
                break;
            }
            sent2.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
    });
    let c = client(&server, None);
    let (e, _) = fails(|| c.read_range(&d, 10_000, 0..1000));
    assert_error(
        &e,
        ErrorClass::Corrupt,
        &["more than the 1000 bytes of the range", "bytes 0-999"],
    );
    drop(server);
    // The client stopped reading at once: the server got no further than the socket buffers.
    assert!(
        sent.load(Ordering::SeqCst) < 32 << 20,
        "{} bytes sent",
        sent.load(Ordering::SeqCst)
    );
}

#[test]
fn a_trickle_is_abandoned() {
    let (_, d) = blob(100_000);
    let server = Hostile::start(|seen, _, conn| {
        let (a, b, bytes) = range_answer(&blob(100_000).0, seen);
        let _ = write_head(
            conn,
            "206 Partial Content",
            &[("Content-Range", format!("bytes {a}-{b}/100000"))],
            Some(bytes.len() as u64),
        );
        // 100 bytes per second.
        for c in bytes.chunks(10) {
            if conn.write_all(c).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut o = options(None);
    o.limits.retries = 1;
    let image = ImageRef::parse(&format!("docker://127.0.0.1:{}/test/app", server.port)).unwrap();
    let c = Client::new(&image, o).unwrap();
    let (e, took) = fails(|| c.read_range(&d, 100_000, 0..50_000));
    assert_error(
        &e,
        ErrorClass::Network,
        &["too slow", "below the minimum of 2000 B/s", "bytes 0-49999"],
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
}

#[test]
fn a_redirect_loop_is_detected() {
    let (_, d) = blob(100);
    let port = Arc::new(AtomicU64::new(0));
    let port2 = port.clone();
    let server = Hostile::start(move |seen, _, conn| {
        let p = port2.load(Ordering::SeqCst);
        let next = if seen.path.ends_with("/a") {
            format!("http://127.0.0.1:{p}/b")
        } else {
            "/a".to_owned()
        };
        respond(conn, "302 Found", &[("Location", next)], b"");
    });
    port.store(u64::from(server.port), Ordering::SeqCst);
    let c = client(&server, None);
    let (e, _) = fails(|| c.read_range(&d, 100, 0..10));
    assert_error(&e, ErrorClass::Network, &["redirect loop", "/a -> ", "/b"]);
    assert_eq!(
        server.seen().len(),
        3,
        "blob, /a, /b, then the loop back to /a"
    );
    assert_eq!(c.stats().redirects, 2);
    // A chain longer than the limit without a loop fails too.
    let server2 = Hostile::start(|seen, n, conn| {
        let _ = seen;
        respond(
            conn,
            "307 Temporary Redirect",
            &[("Location", format!("/hop{n}"))],
            b"",
        );
    });
    let (e, _) = fails(|| client(&server2, None).read_range(&d, 100, 0..10));
    assert_error(&e, ErrorClass::Network, &["more than 5 redirects"]);
}

#[test]
fn credentials_never_follow_a_redirect_to_another_host() {
    let (data, d) = blob(5000);
    let storage = Hostile::start(|_, _, conn| {
        respond(conn, "200 OK", &[], &blob(5000).0);
    });
    let storage_url = storage.url("/bucket/blob?X-Signature=abc");
    let registry = Hostile::start(move |seen, _, conn| match seen.header("authorization") {
        None => respond(
            conn,
            "401 Unauthorized",
            &[("WWW-Authenticate", "Basic realm=\"test\"".to_owned())],
            b"",
        ),
        Some(_) => respond(
            conn,
            "307 Temporary Redirect",
            &[("Location", storage_url.clone())],
            b"",
        ),
    });
    let c = client(&registry, Some("alice:s3cret"));
    let got = c.read_blob(&d, 1 << 20).unwrap();
    assert_eq!(got, data);
    let at_registry = registry.seen();
    assert_eq!(at_registry.len(), 2);
    assert!(at_registry[0].header("authorization").is_none());
    assert!(
        at_registry[1]
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic ")),
        "{at_registry:?}"
    );
    let at_storage = storage.seen();
    assert_eq!(at_storage.len(), 1);
    assert!(
        at_storage[0].header("authorization").is_none(),
        "credentials reached the other host: {:?}",
        at_storage[0]
    );
    assert_eq!(at_storage[0].path, "/bucket/blob?X-Signature=abc");
    let s = c.stats();
    assert_eq!((s.redirects, s.auth_round_trips, s.requests), (1, 1, 3));
}

#[test]
fn a_429_with_retry_after_is_waited_for() {
    let (data, d) = blob(10_000);
    let server = Hostile::start(|seen, n, conn| {
        if n == 0 {
            respond(
                conn,
                "429 Too Many Requests",
                &[("Retry-After", "1".to_owned())],
                b"{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"slow down\"}]}",
            );
        } else {
            let (a, b, bytes) = range_answer(&blob(10_000).0, seen);
            respond(
                conn,
                "206 Partial Content",
                &[("Content-Range", format!("bytes {a}-{b}/10000"))],
                &bytes,
            );
        }
    });
    let c = client(&server, None);
    let t = Instant::now();
    let got = c.read_range(&d, 10_000, 1000..3000).unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < BOUND);
    assert_eq!(got, data[1000..3000]);
    assert_eq!(c.stats().retries, 1);
}

#[test]
fn server_errors_until_the_retries_run_out() {
    let (_, d) = blob(100);
    let server = Hostile::start(|_, _, conn| {
        respond(
            conn,
            "503 Service Unavailable",
            &[],
            b"{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"down for maintenance\"}]}",
        );
    });
    let c = client(&server, None);
    let (e, _) = fails(|| c.read_blob(&d, 1 << 20));
    assert_error(
        &e,
        ErrorClass::Network,
        &[
            "answered 503",
            "down for maintenance",
            "gave up after 3 attempts",
            &d.to_oci(),
        ],
    );
    assert_eq!(server.seen().len(), 3);
}

#[test]
fn a_connection_reset_mid_body_is_a_network_error() {
    let (_, d) = blob(100_000);
    let server = Hostile::start(|seen, _, conn| {
        let (a, b, bytes) = range_answer(&blob(100_000).0, seen);
        let _ = write_head(
            conn,
            "206 Partial Content",
            &[("Content-Range", format!("bytes {a}-{b}/100000"))],
            Some(bytes.len() as u64),
        );
        let _ = conn.write_all(&bytes[..1000]);
        let _ = conn.flush();
        std::thread::sleep(Duration::from_millis(50));
        reset(conn);
    });
    let c = client(&server, None);
    let (e, _) = fails(|| c.read_range(&d, 100_000, 0..50_000));
    assert_error(
        &e,
        ErrorClass::Network,
        &["bytes 0-49999", "gave up after 3 attempts"],
    );
    let text = e.to_string();
    assert!(
        text.contains("broke after") || text.contains("ended the body after"),
        "{text}"
    );
}

/// Closes `conn` with a TCP reset (SO_LINGER 0).
fn reset(conn: &mut TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a pointer to a linger struct of the size passed.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[test]
fn a_manifest_that_does_not_match_its_digest_is_corrupt() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
    let asked = Digest::of(b"some other manifest");
    let server = Hostile::start(move |_, _, conn| {
        respond(
            conn,
            "200 OK",
            &[(
                "Content-Type",
                "application/vnd.oci.image.manifest.v1+json".to_owned(),
            )],
            manifest,
        );
    });
    let c = client(&server, None);
    let (e, _) = fails(|| c.fetch_manifest(&asked.to_oci(), Some((&asked, None))));
    assert_error(
        &e,
        ErrorClass::Corrupt,
        &[
            &format!("manifest {}", asked.to_oci()),
            "not to the digest asked for",
        ],
    );
    // By tag, a Docker-Content-Digest that disagrees is as bad.
    let server2 = Hostile::start(move |_, _, conn| {
        respond(
            conn,
            "200 OK",
            &[("Docker-Content-Digest", Digest::of(b"other").to_oci())],
            manifest,
        );
    });
    let (e, _) = fails(|| client(&server2, None).fetch_manifest("v1", None));
    assert_error(
        &e,
        ErrorClass::Corrupt,
        &["manifest v1", "Docker-Content-Digest"],
    );
    // And a good one by tag is accepted, its digest its sha256.
    let server3 = Hostile::start(move |_, _, conn| {
        respond(
            conn,
            "200 OK",
            &[("Docker-Content-Digest", Digest::of(manifest).to_oci())],
            manifest,
        );
    });
    let m = client(&server3, None).fetch_manifest("v1", None).unwrap();
    assert_eq!(m.digest, Digest::of(manifest));
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert!(
        server3.seen()[0]
            .header("accept")
            .is_some_and(|a| a.contains("manifest.list.v2+json") && a.contains("index.v1+json"))
    );
}

#[test]
fn an_oversized_manifest_is_refused_with_bounded_reading() {
    let sent = Arc::new(AtomicU64::new(0));
    let sent2 = sent.clone();
    let server = Hostile::start(move |_, n, conn| {
        if n == 0 {
            // Announced too big: refused before reading.
            let _ = write_head(conn, "200 OK", &[], Some(5 << 20));
            return;
        }
        // Not announced: cut at the limit.
        let _ = write_head(conn, "200 OK", &[], None);
        let chunk = vec![b' '; 64 << 10];
        for _ in 0..1024 {
            if conn.write_all(&chunk).is_err() {
                break;
            }
            sent2.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
    });
    let c = client(&server, None);
    let (e, _) = fails(|| c.fetch_manifest("v1", None));
    assert_error(
        &e,
        ErrorClass::Corrupt,
        &["5242880 bytes", "limit of 4194304", "manifest v1"],
    );
    let (e, _) = fails(|| c.fetch_manifest("v1", None));
    assert_error(
        &e,
        ErrorClass::Corrupt,
        &["more than 4194304 bytes", "manifest v1"],
    );
    drop(server);
    assert!(sent.load(Ordering::SeqCst) < 40 << 20);
}

#[test]
fn a_token_endpoint_that_answers_garbage_is_corrupt() {
    let (_, d) = blob(100);
    let port = Arc::new(AtomicU64::new(0));
    let port2 = port.clone();
    let server = Hostile::start(move |seen, _, conn| {
        if seen.path.starts_with("/token") {
            respond(conn, "200 OK", &[], b"<html>surprise</html>");
        } else {
            let p = port2.load(Ordering::SeqCst);
            respond(
                conn,
                "401 Unauthorized",
                &[(
                    "WWW-Authenticate",
                    format!(
                        "Bearer realm=\"http://127.0.0.1:{p}/token\",service=\"hostile\",scope=\"repository:test/app:pull\""
                    ),
                )],
                b"",
            );
        }
    });
    port.store(u64::from(server.port), Ordering::SeqCst);
    let c = client(&server, Some("bob:pw"));
    let (e, _) = fails(|| c.read_blob(&d, 1000));
    assert_error(
        &e,
        ErrorClass::Corrupt,
        &["token response that is not JSON", "/token", &d.to_oci()],
    );
    let seen = server.seen();
    let token_req = seen.iter().find(|s| s.path.starts_with("/token")).unwrap();
    assert!(
        token_req.path.contains("service=hostile"),
        "{}",
        token_req.path
    );
    assert!(
        token_req
            .path
            .contains("scope=repository%3Atest%2Fapp%3Apull"),
        "{}",
        token_req.path
    );
    assert!(
        token_req
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic "))
    );
}

#[test]
fn bearer_tokens_are_cached_and_refreshed_once() {
    let (data, d) = blob(3000);
    let port = Arc::new(AtomicU64::new(0));
    let port2 = port.clone();
    let tokens = Arc::new(AtomicU64::new(0));
    let tokens2 = tokens.clone();
    let server = Hostile::start(move |seen, _, conn| {
        let p = port2.load(Ordering::SeqCst);
        if seen.path.starts_with("/token") {
            let n = tokens2.fetch_add(1, Ordering::SeqCst);
            respond(
                conn,
                "200 OK",
                &[],
                format!("{{\"access_token\":\"tok{n}\",\"expires_in\":300}}").as_bytes(),
            );
            return;
        }
        // Token 0 is revoked: only token 1 and later are accepted.
        let ok = seen
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer tok") && a != "Bearer tok0");
        if ok {
            respond(conn, "200 OK", &[], &blob(3000).0);
        } else {
            respond(
                conn,
                "401 Unauthorized",
                &[(
                    "WWW-Authenticate",
                    format!("Bearer realm=\"http://127.0.0.1:{p}/token\",service=\"s\""),
                )],
                b"",
            );
        }
    });
    port.store(u64::from(server.port), Ordering::SeqCst);
    let c = client(&server, None);
    // Anonymous: 401, token 0, refused, and that is the one refresh: an error.
    let (e, _) = fails(|| c.read_blob(&d, 10_000));
    assert_error(
        &e,
        ErrorClass::Usage,
        &["still answers 401", "no credentials"],
    );
    // Next time the cached token 0 is refused, token 1 works; later requests reuse it.
    assert_eq!(c.read_blob(&d, 10_000).unwrap(), data);
    assert_eq!(c.read_blob(&d, 10_000).unwrap(), data);
    assert_eq!(tokens.load(Ordering::SeqCst), 2);
    let seen = server.seen();
    assert!(
        seen.iter()
            .all(|s| s.header("authorization") != Some("Basic"))
    );
}

#[test]
fn missing_and_wrong_basic_credentials_are_usage_errors_naming_the_registry() {
    let (_, d) = blob(100);
    let server = Hostile::start(|_, _, conn| {
        respond(
            conn,
            "401 Unauthorized",
            &[("WWW-Authenticate", "Basic realm=\"r\"".to_owned())],
            b"",
        );
    });
    let (e, _) = fails(|| client(&server, None).read_blob(&d, 1000));
    assert_error(
        &e,
        ErrorClass::Usage,
        &[
            &format!("127.0.0.1:{}", server.port),
            "requires credentials",
            "none given",
        ],
    );
    let (e, _) = fails(|| client(&server, Some("alice:Tr0ub4dor")).read_blob(&d, 1000));
    assert_error(
        &e,
        ErrorClass::Usage,
        &["rejected", "user \"alice\" from --creds"],
    );
    assert!(
        !e.to_string().contains("Tr0ub4dor"),
        "the password leaked: {e}"
    );
}

#[test]
fn streamed_blobs_resume_after_a_break_and_are_checked() {
    let (data, d) = blob(300_000);
    let server = Hostile::start(|seen, n, conn| {
        let data = blob(300_000).0;
        match seen.header("range") {
            None => {
                // The first answer breaks off after 100,000 bytes.
                let _ = write_head(conn, "200 OK", &[], Some(data.len() as u64));
                let _ = conn.write_all(&data[..100_000]);
                let _ = n;
            }
            Some(r) => {
                let from: usize = r
                    .strip_prefix("bytes=")
                    .unwrap()
                    .trim_end_matches('-')
                    .parse()
                    .unwrap();
                respond(
                    conn,
                    "206 Partial Content",
                    &[(
                        "Content-Range",
                        format!("bytes {from}-{}/{}", data.len() - 1, data.len()),
                    )],
                    &data[from..],
                );
            }
        }
    });
    let c = client(&server, None);
    let mut out = Vec::new();
    let n = c
        .copy_blob(&d, Some(data.len() as u64), 1 << 20, &mut out)
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(out, data);
    assert_eq!(server.seen()[1].header("range"), Some("bytes=100000-"));
    // Wrong bytes: a Corrupt error after the whole transfer.
    let bad = Hostile::start(|_, _, conn| respond(conn, "200 OK", &[], &[7u8; 1000]));
    let mut out = Vec::new();
    let (e, _) = fails(|| client(&bad, None).copy_blob(&d, None, 1 << 20, &mut out));
    assert_error(&e, ErrorClass::Corrupt, &["hash to", &d.to_oci()]);
}

#[test]
fn the_client_is_shared_by_threads_with_requests_in_flight_together() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Client>();
    let (data, d) = blob(200_000);
    // How many answers the server is preparing at once, at most.
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now2, most2) = (now.clone(), most.clone());
    let server = Hostile::start(move |seen, _, conn| {
        let n = now2.fetch_add(1, Ordering::SeqCst) + 1;
        most2.fetch_max(n, Ordering::SeqCst);
        let (a, b, bytes) = range_answer(&blob(200_000).0, seen);
        std::thread::sleep(Duration::from_millis(300));
        now2.fetch_sub(1, Ordering::SeqCst);
        respond(
            conn,
            "206 Partial Content",
            &[("Content-Range", format!("bytes {a}-{b}/200000"))],
            &bytes,
        );
    });
    let c = client(&server, None);
    std::thread::scope(|s| {
        for i in 0..8u64 {
            let (c, d, data) = (&c, &d, &data);
            s.spawn(move || {
                let r = i * 20_000..(i + 1) * 20_000;
                let got = c.read_range(d, 200_000, r.clone()).unwrap();
                assert_eq!(got, data[r.start as usize..r.end as usize]);
            });
        }
    });
    // Requests of different threads were in flight together, not one after another.
    let most = most.load(Ordering::SeqCst);
    assert!(most >= 2, "at most {most} request at once");
    let s = c.stats();
    assert_eq!(
        (s.requests, s.bytes, s.in_flight, s.errors),
        (8, 160_000, 0, 0)
    );
}

#[test]
fn schema1_and_unknown_media_types_are_unsupported() {
    let server = Hostile::start(|_, n, conn| {
        if n == 0 {
            respond(
                conn,
                "200 OK",
                &[(
                    "Content-Type",
                    "application/vnd.docker.distribution.manifest.v1+prettyjws".to_owned(),
                )],
                b"{\"schemaVersion\":1}",
            );
        } else {
            respond(
                conn,
                "200 OK",
                &[],
                b"{\"schemaVersion\":2,\"mediaType\":\"application/x-something\"}",
            );
        }
    });
    let c = client(&server, None);
    let (e, _) = fails(|| c.fetch_manifest("old", None));
    assert_error(&e, ErrorClass::Unsupported, &["schema 1", "manifest old"]);
    let (e, _) = fails(|| c.fetch_manifest("odd", None));
    assert_error(&e, ErrorClass::Unsupported, &["application/x-something"]);
    assert_eq!(
        BlobSource::name(&c),
        format!("docker://127.0.0.1:{}/test/app", server.port)
    );
}
