//! TLS trust for one registry host, the containers way: the system's roots (rustls-native-certs,
//! which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`) plus the host's own directory of
//! certificates: `--cert-dir DIR` if given, else `/etc/containers/certs.d/HOST[:PORT]` and
//! `/etc/docker/certs.d/HOST[:PORT]`. In such a directory, `*.crt` files are CA certificates
//! and a `NAME.cert` with its `NAME.key` is a client certificate (containers-certs.d(5)).
//! `tls_verify = false` accepts any certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::registry::Error;

/// System-wide per-host certificate directories, in the order containers/image reads them.
const SYSTEM_CERT_DIRS: &[&str] = &["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// How to trust the hosts a client talks to.
#[derive(Clone, Debug)]
pub(crate) struct Trust {
    /// Verify certificates at all.
    pub verify: bool,
    /// `--cert-dir`: replaces the system-wide per-host directories.
    pub cert_dir: Option<PathBuf>,
}

/// The system's roots, loaded once per process (reading the bundle takes milliseconds).
fn system_roots() -> &'static [Certificate<'static>] {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        // Unreadable entries are skipped, as every TLS client does; a host whose issuer is
        // missing then fails with an unknown-issuer error that names it.
        rustls_native_certs::load_native_certs()
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect()
    })
}

/// The TLS configuration for `authority` (`HOST` or `HOST:PORT`, as in the URL).
pub(crate) fn config_for(authority: &str, trust: &Trust) -> Result<TlsConfig, Error> {
    let builder = TlsConfig::builder();
    if !trust.verify {
        return Ok(builder.disable_verification(true).build());
    }
    let mut roots: Vec<Certificate<'static>> = system_roots().to_vec();
    let mut client_cert = None;
    let dirs: Vec<PathBuf> = match &trust.cert_dir {
        Some(d) => vec![d.clone()],
        None => SYSTEM_CERT_DIRS
            .iter()
            .map(|d| Path::new(d).join(authority))
            .collect(),
    };
    for dir in &dirs {
        let (cas, client) = read_cert_dir(dir)?;
        roots.extend(cas);
        if client_cert.is_none() {
            client_cert = client;
        }
    }
    Ok(builder
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .client_cert(client_cert)
        .build())
}

/// The CA certificates and the first client certificate of a per-host directory; a missing
/// directory has none.
fn read_cert_dir(dir: &Path) -> Result<(Vec<Certificate<'static>>, Option<ClientCert>), Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], None)),
        Err(e) => {
            return Err(Error::LocalFile {
                path: dir.into(),
                reason: format!("cannot list the certificate directory: {e}"),
                source: Some(e),
            });
        }
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    let mut cas = Vec::new();
    let mut client = None;
    for path in &names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let certs = read_pem(path)?
                    .into_iter()
                    .filter_map(|i| match i {
                        PemItem::Certificate(c) => Some(c),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                if certs.is_empty() {
                    return Err(Error::BadLocalFile {
                        path: path.clone(),
                        reason: "holds no PEM certificate".into(),
                    });
                }
                cas.extend(certs);
            }
            Some("cert") if client.is_none() => {
                let key_path = path.with_extension("key");
                let chain: Vec<Certificate<'static>> = read_pem(path)?
                    .into_iter()
                    .filter_map(|i| match i {
                        PemItem::Certificate(c) => Some(c),
                        _ => None,
                    })
                    .collect();
                let key: Option<PrivateKey<'static>> =
                    read_pem(&key_path)?.into_iter().find_map(|i| match i {
                        PemItem::PrivateKey(k) => Some(k),
                        _ => None,
                    });
                match (chain.is_empty(), key) {
                    (false, Some(key)) => client = Some(ClientCert::new_with_certs(&chain, key)),
                    _ => {
                        return Err(Error::BadLocalFile {
                            path: path.clone(),
                            reason: format!(
                                "a client certificate needs a PEM certificate here and its PEM private key in {}",
                                key_path.display()
                            ),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok((cas, client))
}

/// The PEM items of a file.
fn read_pem(path: &Path) -> Result<Vec<PemItem<'static>>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::LocalFile {
        path: path.into(),
        reason: format!("cannot read it: {e}"),
        source: Some(e),
    })?;
    ureq::tls::parse_pem(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadLocalFile {
            path: path.into(),
            reason: format!("is not valid PEM: {e}"),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_adds_nothing_and_bad_files_are_named() {
        let tmp = crate::oci::test_dir();
        let (cas, client) = read_cert_dir(&tmp.path().join("absent")).unwrap();
        assert!(cas.is_empty() && client.is_none());
        std::fs::write(tmp.path().join("ca.crt"), b"not pem").unwrap();
        let e = read_cert_dir(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("ca.crt"), "{e}");
        std::fs::remove_file(tmp.path().join("ca.crt")).unwrap();
        std::fs::write(tmp.path().join("me.cert"), b"").unwrap();
        let e = read_cert_dir(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("me.key"), "{e}");
    }
}
