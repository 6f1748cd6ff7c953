//! The flags of the commands that take a registry reference (`docker://HOST/REPO:TAG`) or work
//! on the local store, defined once: [`RegistryFlags`] becomes the client's
//! [`registry::Options`] in [`RegistryFlags::options`], [`StoreFlag`] the [`Store`] in
//! [`StoreFlag::open`]; [`parse_platform`] reads `--platform`.

use std::path::{Path, PathBuf};

use chunkfs_distribution::oci::select::PlatformSpec;
use chunkfs_distribution::registry::{
    self, AuthEnv, Client, CredentialOptions, Credentials, ImageRef,
};
use chunkfs_distribution::store::{DEFAULT_DIR, Store};

use crate::Error;

/// How to reach and authenticate to a registry, as skopeo and podman spell it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RegistryFlags {
    /// Verify the registry's TLS certificate; --tls-verify=false accepts any (test registries
    /// only).
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// CA certificates (*.crt) and a client certificate (NAME.cert + NAME.key) for the
    /// registry [default: /etc/containers/certs.d/HOST[:PORT]/, /etc/docker/certs.d/...].
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// The registry's user name and password [default: from the auth files, see --authfile].
    #[arg(long, value_name = "USER:PASS", value_parser = parse_creds)]
    pub creds: Option<Credentials>,
    /// The auth file to read credentials from (containers-auth.json(5)) [default:
    /// $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json, ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Talk plain HTTP to the registry (never chosen otherwise).
    #[arg(long)]
    pub plain_http: bool,
}

fn parse_creds(s: &str) -> Result<Credentials, String> {
    Credentials::parse(s).ok_or_else(|| "expected USER:PASS with a non-empty USER".to_owned())
}

impl RegistryFlags {
    /// The client options these flags ask for, with the process's environment for the
    /// credential lookup: the one place flags become [`registry::Options`].
    pub fn options(&self) -> registry::Options {
        registry::Options {
            credentials: CredentialOptions {
                creds: self.creds.clone(),
                authfile: self.authfile.clone(),
                env: AuthEnv::from_env(),
            },
            cert_dir: self.cert_dir.clone(),
            tls_verify: self.tls_verify,
            plain_http: self.plain_http,
            ..registry::Options::default()
        }
    }

    /// A client for `image`'s repository (reads the credentials and certificates it needs).
    pub fn client(&self, image: &ImageRef) -> Result<Client, Error> {
        Ok(Client::new(image, self.options())?)
    }
}

/// `--store[=DIR]`: the local store shared by every image. The value is optional so that
/// `chunkfs gc --store` and `chunkfs verify --store` name the default store.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct StoreFlag {
    /// The local store of registry images [default: /var/lib/chunkfs].
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = DEFAULT_DIR)]
    pub store: Option<PathBuf>,
}

impl StoreFlag {
    /// True if `--store` was given.
    pub fn given(&self) -> bool {
        self.store.is_some()
    }

    /// The store's directory.
    pub fn dir(&self) -> Result<PathBuf, Error> {
        let dir = self.store.clone().unwrap_or_else(|| DEFAULT_DIR.into());
        if dir
            .to_str()
            .is_some_and(|s| s.starts_with(registry::reference::SCHEME))
        {
            return Err(Error::usage(format!(
                "--store {}: expected a directory; write --store=DIR, or put the reference first",
                dir.display()
            )));
        }
        Ok(dir)
    }

    /// Opens the store, creating it if needed (what fetching commands do).
    pub fn open(&self) -> Result<Store, Error> {
        let dir = self.dir()?;
        Store::open(&dir).map_err(|e| Error::from(e).about(format!("store {}", dir.display())))
    }

    /// Opens a store that must exist already (what `gc`, `verify` and `rm` do): a mistyped
    /// directory is an error, not a new empty store.
    pub fn open_existing(&self) -> Result<Store, Error> {
        let dir = self.dir()?;
        if !is_store(&dir) {
            return Err(Error::io(format!(
                "{}: no chunkfs store there (no packs/ and blobs/ directories)",
                dir.display()
            )));
        }
        self.open()
    }
}

/// True if `dir` holds a store's directories.
fn is_store(dir: &Path) -> bool {
    dir.join("packs/sha256").is_dir() && dir.join("blobs/sha256").is_dir()
}

/// `--platform OS/ARCH[/VARIANT]`.
pub fn parse_platform(p: Option<&str>) -> Result<Option<PlatformSpec>, Error> {
    p.map(|p| {
        PlatformSpec::parse(p).ok_or_else(|| {
            Error::usage(format!(
                "--platform {p:?}: expected OS/ARCH or OS/ARCH/VARIANT"
            ))
        })
    })
    .transpose()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        registry: RegistryFlags,
        #[command(flatten)]
        store: StoreFlag,
        reference: Option<String>,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
    }

    #[test]
    fn flags_become_options() {
        let cli = parse(&[
            "--tls-verify=false",
            "--cert-dir",
            "/certs",
            "--creds",
            "u:p:w",
            "--authfile=/auth.json",
            "--plain-http",
            "docker://h/r",
        ])
        .unwrap();
        let o = cli.registry.options();
        assert!(!o.tls_verify && o.plain_http);
        assert_eq!(o.cert_dir.as_deref(), Some(Path::new("/certs")));
        let c = o.credentials.creds.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        assert_eq!(
            o.credentials.authfile.as_deref(),
            Some(Path::new("/auth.json"))
        );
        let o = parse(&[]).unwrap().registry.options();
        assert!(o.tls_verify && !o.plain_http && o.credentials.creds.is_none());
    }

    #[test]
    fn tls_verify_is_spelled_as_skopeo_spells_it() {
        assert!(parse(&["--tls-verify"]).unwrap().registry.tls_verify);
        assert!(parse(&["--tls-verify=true"]).unwrap().registry.tls_verify);
        assert!(!parse(&["--tls-verify=false"]).unwrap().registry.tls_verify);
        // As with skopeo, a separate word is not the flag's value.
        let cli = parse(&["--tls-verify", "false"]).unwrap();
        assert!(cli.registry.tls_verify);
        assert_eq!(cli.reference.as_deref(), Some("false"));
        for bad in ["--tls-verify=no", "--tls-verify=0", "--tls-verify=False"] {
            assert!(parse(&[bad]).is_err(), "{bad}");
        }
        assert!(parse(&["--creds", "nouser"]).is_err());
        assert!(parse(&["--creds", ":pass"]).is_err());
    }

    #[test]
    fn store_takes_an_optional_directory() {
        assert_eq!(
            parse(&[]).unwrap().store.dir().unwrap(),
            Path::new(DEFAULT_DIR)
        );
        assert_eq!(
            parse(&["--store"]).unwrap().store.dir().unwrap(),
            Path::new(DEFAULT_DIR)
        );
        assert_eq!(
            parse(&["--store", "/s", "docker://h/r"])
                .unwrap()
                .store
                .dir()
                .unwrap(),
            Path::new("/s")
        );
        // `--store REF` took the reference as the directory: said so, not a store named so.
        let e = parse(&["--store", "docker://h/r"])
            .unwrap()
            .store
            .dir()
            .unwrap_err();
        assert_eq!(e.class(), chunkfs_format::ErrorClass::Usage);
        let tmp = tempfile::tempdir().unwrap();
        let flag = StoreFlag {
            store: Some(tmp.path().join("typo")),
        };
        let e = flag.open_existing().unwrap_err();
        assert!(e.to_string().contains("no chunkfs store there"), "{e}");
        assert!(!tmp.path().join("typo").exists());
        flag.open().unwrap();
        flag.open_existing().unwrap();
    }

    #[test]
    fn platforms() {
        assert!(parse_platform(None).unwrap().is_none());
        assert!(parse_platform(Some("linux/arm64/v8")).unwrap().is_some());
        let e = parse_platform(Some("linux")).unwrap_err();
        assert!(e.to_string().contains("OS/ARCH"), "{e}");
    }
}
