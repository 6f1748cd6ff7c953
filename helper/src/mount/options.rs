//! The `-o` option string of `mount.chunkfs` and `chunkfs mount` (docs/mount.chunkfs.8.md,
//! "Options"): chunkfs's own options, and the generic ones mount(8) passes, accepted or mapped.

use std::path::PathBuf;

use chunkfs_distribution::oci::select::PlatformSpec;
use chunkfs_distribution::registry::Credentials;
use chunkfs_format::digest::Digest;

/// Which reader serves the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaderChoice {
    /// The kernel's EROFS when it has every feature the descriptor uses, else FUSE.
    Auto,
    /// The kernel's EROFS (no daemon).
    Kernel,
    /// The FUSE reader (a daemon that checks every chunk's sha256 as it reads it).
    Fuse,
}

/// What is checked before the mount (docs/mount.chunkfs.8.md, "Trust").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyLevel {
    /// Header checksum, metadata against its digest, metadata invariants, chunk index, and the
    /// EROFS descriptor re-derived and compared: everything but the chunk data.
    Metadata,
    /// [`VerifyLevel::Metadata`] plus every chunk decompressed and hashed.
    Full,
}

/// What a lazy registry mount fetches in the background first (`prefetch=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prefetch {
    /// Nothing.
    None,
    /// The list the image's metadata carries, if any (the default).
    Image,
    /// The chunks listed in this file (`sha256:HEX` per line, in first-read order).
    File(PathBuf),
}

/// Whether a lazy registry mount fetches the rest of the image in the background (`pull=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pull {
    /// Only what is read (and prefetched).
    Lazy,
    /// Everything, in the background, after the prefetch list.
    Background,
}

/// Options of `docker://` sources (docs/mount.chunkfs.8.md, "Registry images").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryOptions {
    /// `store=DIR`: the local store (default /var/lib/chunkfs).
    pub store: PathBuf,
    /// `store-max=SIZE`: the store's size bound for this mount's plan.
    pub store_max: Option<u64>,
    /// `tls-verify=false` turns certificate checks off (test registries).
    pub tls_verify: bool,
    /// `cert-dir=DIR`: CA certificates for the registry.
    pub cert_dir: Option<PathBuf>,
    /// `authfile=FILE`.
    pub authfile: Option<PathBuf>,
    /// `creds=USER:PASS` (visible to `ps` while mount(8) runs: prefer `authfile=`). Its
    /// `Debug` hides the password.
    pub creds: Option<Credentials>,
    /// `plain-http`: talk HTTP, not HTTPS (never chosen silently).
    pub plain_http: bool,
    /// `platform=os/arch[/variant]` in a multi-platform image.
    pub platform: Option<PlatformSpec>,
    /// `prefetch=`.
    pub prefetch: Prefetch,
    /// `pull=`.
    pub pull: Pull,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            store: PathBuf::from(chunkfs_distribution::store::DEFAULT_DIR),
            store_max: None,
            tls_verify: true,
            cert_dir: None,
            authfile: None,
            creds: None,
            plain_http: false,
            platform: None,
            prefetch: Prefetch::Image,
            pull: Pull::Lazy,
        }
    }
}

impl RegistryOptions {
    /// Whether any was set (they mean nothing for other sources).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How access times are recorded (the image is read-only, so this only matters to tools
/// that read the mount flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Atime {
    /// The kernel's default (relatime).
    Default,
    /// `noatime`.
    NoAtime,
    /// `strictatime`.
    Strict,
}

/// Parsed mount options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `reader=`.
    pub reader: ReaderChoice,
    /// `verify=`.
    pub verify: VerifyLevel,
    /// `digest=sha256:HEX`: the metadata digest the image must have.
    pub digest: Option<Digest>,
    /// `cache=SIZE`: bytes of decompressed chunks the FUSE reader keeps.
    pub cache_bytes: Option<u64>,
    /// `cachedir=PATH`: where descriptors built at mount time (OCI layouts) are kept.
    pub cachedir: PathBuf,
    /// `threads=N`: FUSE worker threads.
    pub threads: Option<usize>,
    /// `record=FILE`: the chunks reads needed, in first-read order, are written to FILE (a
    /// prefetch list, docs/format.md §3.6): by the FUSE reader, or on a lazy registry mount's
    /// kernel path by its filler. Implies the FUSE reader for other images
    /// ([`Options::image_reader`]).
    pub record: Option<PathBuf>,
    /// `allow_other` (default on): users other than root may access a FUSE mount, as they may a
    /// kernel mount. `noallow_other` restricts it to root.
    pub allow_other: bool,
    /// `debug`: log every decision and every failed read.
    pub debug: bool,
    /// `loop`: put the kernel path's files on loop devices even when a file-backed mount would do.
    pub force_loop: bool,
    /// `nosuid`.
    pub nosuid: bool,
    /// `nodev`.
    pub nodev: bool,
    /// `noexec`.
    pub noexec: bool,
    /// `noatime`, `strictatime`, `relatime`.
    pub atime: Atime,
    /// `nodiratime`.
    pub nodiratime: bool,
    /// SELinux context options (`context=` ...), passed to the kernel's EROFS.
    pub security: Vec<(String, String)>,
    /// Options of `docker://` sources.
    pub registry: RegistryOptions,
    /// Options that were mapped or ignored, with why (shown with `-v`).
    pub notes: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            reader: ReaderChoice::Auto,
            verify: VerifyLevel::Metadata,
            digest: None,
            cache_bytes: None,
            cachedir: PathBuf::from(DEFAULT_CACHEDIR),
            threads: None,
            record: None,
            allow_other: true,
            debug: false,
            force_loop: false,
            nosuid: false,
            nodev: false,
            noexec: false,
            atime: Atime::Default,
            nodiratime: false,
            security: Vec::new(),
            registry: RegistryOptions::default(),
            notes: Vec::new(),
        }
    }
}

/// Where descriptors built at mount time are kept unless `cachedir=` says otherwise.
pub const DEFAULT_CACHEDIR: &str = "/var/cache/chunkfs";

/// A refused option string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad mount option {option:?}: {problem}")]
pub struct OptionError {
    /// The option as given.
    pub option: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Generic options of mount(8) and fstab that mean nothing more for a read-only image (or that
/// mount(8) itself acts on).
const ACCEPTED: &[&str] = &[
    "ro",
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "async",
    "sync",
    "dirsync",
    "lazytime",
    "nolazytime",
    "silent",
    "loud",
    "iversion",
    "noiversion",
    "nomand",
    "suid",
    "dev",
    "exec",
    "diratime",
    "atime",
];

const SECURITY: &[&str] = &["context", "fscontext", "defcontext", "rootcontext"];

const KNOWN: &str = "reader=auto|kernel|fuse, verify=metadata|full, digest=sha256:HEX, \
    cache=SIZE, cachedir=PATH, threads=N, record=FILE, allow_other, noallow_other, debug, loop; for \
    docker:// sources store=DIR, store-max=SIZE, tls-verify=true|false, cert-dir=DIR, \
    authfile=FILE, creds=USER:PASS, plain-http, platform=OS/ARCH[/VARIANT], \
    prefetch=none|image|FILE, pull=lazy|background; and the generic ro, rw, defaults, nosuid, \
    nodev, noexec, noatime, relatime, strictatime, nodiratime, _netdev, nofail, x-*, comment=";

impl Options {
    /// Parses a comma-separated option string (double quotes protect commas in values, as in
    /// fstab). With `sloppy` (mount(8)'s `-s`), unknown options are ignored with a note.
    pub fn parse(s: &str, sloppy: bool) -> Result<Self, OptionError> {
        let mut o = Self::default();
        for opt in split(s) {
            o.apply(&opt, sloppy)?;
        }
        Ok(o)
    }

    /// The reader choice for an image that is not a `docker://` source: `record=` needs the
    /// FUSE reader there (the kernel path of a `.cfs` or an OCI layout has no daemon that sees
    /// reads; a lazy registry mount's filler records on the kernel path, so registry sources
    /// keep [`Options::reader`]). Returns the choice and, when `record=` changed it, a note.
    pub fn image_reader(&self) -> Result<(ReaderChoice, Option<String>), OptionError> {
        let Some(file) = &self.record else {
            return Ok((self.reader, None));
        };
        let option = format!("record={}", file.display());
        match self.reader {
            ReaderChoice::Kernel => Err(OptionError {
                option,
                problem: "recording this image needs the FUSE reader (the kernel's EROFS has no \
                          daemon to see reads; only docker:// sources record on the kernel \
                          path); drop reader=kernel"
                    .into(),
            }),
            ReaderChoice::Auto => Ok((
                ReaderChoice::Fuse,
                Some(format!(
                    "{option}: using the FUSE reader, which records the chunks reads need (the \
                     kernel's EROFS has no daemon to see reads of this image)"
                )),
            )),
            ReaderChoice::Fuse => Ok((ReaderChoice::Fuse, None)),
        }
    }

    fn apply(&mut self, opt: &str, sloppy: bool) -> Result<(), OptionError> {
        let bad = |problem: &str| OptionError {
            option: opt.to_owned(),
            problem: problem.to_owned(),
        };
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(unquote(v))),
            None => (opt, None),
        };
        match (key, value) {
            ("creds", None) => {
                return Err(OptionError {
                    option: "creds".into(),
                    problem: "expected creds=USER:PASSWORD".into(),
                });
            }
            ("reader", Some(v)) => {
                self.reader = match v {
                    "auto" => ReaderChoice::Auto,
                    "kernel" => ReaderChoice::Kernel,
                    "fuse" => ReaderChoice::Fuse,
                    _ => return Err(bad("expected reader=auto, reader=kernel or reader=fuse")),
                }
            }
            ("verify", Some(v)) => {
                self.verify = match v {
                    "metadata" => VerifyLevel::Metadata,
                    "full" => VerifyLevel::Full,
                    _ => return Err(bad("expected verify=metadata or verify=full")),
                }
            }
            ("digest", Some(v)) => {
                let hex = v.strip_prefix("sha256:").unwrap_or(v);
                let d = (hex.len() == 64)
                    .then(|| Digest::from_hex(&hex.to_ascii_lowercase()))
                    .flatten()
                    .ok_or_else(|| bad("expected digest=sha256: and 64 hexadecimal digits"))?;
                self.digest = Some(d);
            }
            ("cache", Some(v)) => {
                self.cache_bytes = Some(parse_size(v).ok_or_else(|| {
                    bad("expected a size in bytes, optionally with K, M, G or T (1024-based)")
                })?);
            }
            ("cachedir", Some(v)) => {
                if !v.starts_with('/') {
                    return Err(bad("cachedir= needs an absolute path"));
                }
                self.cachedir = PathBuf::from(v);
            }
            ("record", Some(v)) => {
                // The daemon runs from `/`: a relative name would land there.
                if !v.starts_with('/') || v.ends_with('/') {
                    return Err(bad("record= needs an absolute file name"));
                }
                self.record = Some(PathBuf::from(v));
            }
            ("threads", Some(v)) => {
                let n: usize = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| bad("expected a number of threads from 1 to 256"))?;
                self.threads = Some(n);
            }
            ("store", Some(v)) => self.registry.store = absolute(v, &bad)?,
            ("store-max", Some(v)) => {
                self.registry.store_max = Some(parse_size(v).ok_or_else(|| {
                    bad("expected a size in bytes, optionally with K, M, G or T (1024-based)")
                })?);
            }
            ("tls-verify", v) => {
                self.registry.tls_verify = match v.unwrap_or("true") {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(bad("expected tls-verify=true or tls-verify=false")),
                }
            }
            ("cert-dir", Some(v)) => self.registry.cert_dir = Some(absolute(v, &bad)?),
            ("authfile", Some(v)) => self.registry.authfile = Some(absolute(v, &bad)?),
            ("creds", Some(v)) => {
                // The message must not repeat the value: it holds a password.
                self.registry.creds = Some(Credentials::parse(v).ok_or_else(|| OptionError {
                    option: "creds=...".into(),
                    problem: "expected creds=USER:PASSWORD".into(),
                })?);
            }
            ("plain-http", None) => self.registry.plain_http = true,
            ("platform", Some(v)) => {
                self.registry.platform = Some(
                    PlatformSpec::parse(v)
                        .ok_or_else(|| bad("expected platform=OS/ARCH or OS/ARCH/VARIANT"))?,
                );
            }
            ("prefetch", Some(v)) => {
                self.registry.prefetch = match v {
                    "none" => Prefetch::None,
                    "image" => Prefetch::Image,
                    path => Prefetch::File(absolute(path, &bad)?),
                }
            }
            ("pull", Some(v)) => {
                self.registry.pull = match v {
                    "lazy" => Pull::Lazy,
                    "background" => Pull::Background,
                    _ => return Err(bad("expected pull=lazy or pull=background")),
                }
            }
            ("allow_other", None) => self.allow_other = true,
            ("noallow_other", None) => self.allow_other = false,
            ("debug", None) => self.debug = true,
            ("loop", None) => self.force_loop = true,
            ("rw", None) => self
                .notes
                .push("rw: chunkfs images are read-only; mounting read-only".into()),
            ("nosuid", None) => self.nosuid = true,
            ("nodev", None) => self.nodev = true,
            ("noexec", None) => self.noexec = true,
            ("noatime", None) => self.atime = Atime::NoAtime,
            ("strictatime", None) => self.atime = Atime::Strict,
            ("relatime", None) => self.atime = Atime::Default,
            ("nodiratime", None) => self.nodiratime = true,
            (k, None) if ACCEPTED.contains(&k) => {}
            (k, _) if k.starts_with("x-") || k == "comment" => {}
            (k, Some(v)) if SECURITY.contains(&k) => self.security.push((k.into(), v.into())),
            ("remount" | "bind" | "rbind" | "move", None) => {
                return Err(bad("not supported by mount.chunkfs"));
            }
            _ if sloppy => self
                .notes
                .push(format!("{opt}: unknown option ignored (sloppy mode)")),
            _ => return Err(bad(&format!("unknown option; known options: {KNOWN}"))),
        }
        Ok(())
    }

    /// The `MOUNT_ATTR_*` flags of a kernel mount.
    pub fn mount_attrs(&self) -> u64 {
        use super::sys::attr;
        let mut a = attr::RDONLY;
        for (on, bit) in [
            (self.nosuid, attr::NOSUID),
            (self.nodev, attr::NODEV),
            (self.noexec, attr::NOEXEC),
            (self.nodiratime, attr::NODIRATIME),
            (self.atime == Atime::NoAtime, attr::NOATIME),
            (self.atime == Atime::Strict, attr::STRICTATIME),
        ] {
            if on {
                a |= bit;
            }
        }
        a
    }

    /// The `MS_*` flags of a FUSE mount (`mount(2)`).
    pub fn ms_flags(&self) -> nix::mount::MsFlags {
        use nix::mount::MsFlags;
        let mut f = MsFlags::MS_RDONLY;
        for (on, bit) in [
            (self.nosuid, MsFlags::MS_NOSUID),
            (self.nodev, MsFlags::MS_NODEV),
            (self.noexec, MsFlags::MS_NOEXEC),
            (self.nodiratime, MsFlags::MS_NODIRATIME),
            (self.atime == Atime::NoAtime, MsFlags::MS_NOATIME),
            (self.atime == Atime::Strict, MsFlags::MS_STRICTATIME),
        ] {
            if on {
                f |= bit;
            }
        }
        f
    }
}

/// Splits at commas outside double quotes; empty items are dropped.
fn split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|o| !o.is_empty());
    out
}

/// An absolute path option value.
fn absolute(v: &str, bad: &dyn Fn(&str) -> OptionError) -> Result<PathBuf, OptionError> {
    if v.starts_with('/') {
        Ok(PathBuf::from(v))
    } else {
        Err(bad("needs an absolute path"))
    }
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// `123`, `64K`, `256M`, `1G`, `2T` (1024-based; `KiB`, `MB`... are read the same way).
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_what_mount8_passes() {
        let o = Options::parse("rw,noatime,_netdev,defaults,x-systemd.automount", false).unwrap();
        assert_eq!(o.reader, ReaderChoice::Auto);
        assert_eq!(o.verify, VerifyLevel::Metadata);
        assert_eq!(o.atime, Atime::NoAtime);
        assert!(o.allow_other);
        assert_eq!(o.notes.len(), 1, "{:?}", o.notes);
        assert_eq!(Options::parse("", false).unwrap(), Options::default());
    }

    #[test]
    fn chunkfs_options() {
        let hex = "ab".repeat(32);
        let o = Options::parse(
            &format!(
                "reader=fuse,verify=full,digest=sha256:{},cache=64M,cachedir=/srv/c,threads=3,noallow_other,debug,nosuid,nodev,noexec,loop",
                hex.to_uppercase()
            ),
            false,
        )
        .unwrap();
        assert_eq!(o.reader, ReaderChoice::Fuse);
        assert_eq!(o.verify, VerifyLevel::Full);
        assert_eq!(o.digest.unwrap().to_hex(), hex);
        assert_eq!(o.cache_bytes, Some(64 << 20));
        assert_eq!(o.cachedir, PathBuf::from("/srv/c"));
        assert_eq!(o.threads, Some(3));
        assert!(!o.allow_other && o.debug && o.force_loop);
        use super::super::sys::attr;
        assert_eq!(
            o.mount_attrs(),
            attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC
        );
        let o = Options::parse(&format!("digest={hex},reader=kernel"), false).unwrap();
        assert!(o.digest.is_some());
        assert_eq!(o.reader, ReaderChoice::Kernel);
    }

    #[test]
    fn bad_options_are_named() {
        let bad_hex = format!("digest=sha256:{}", "g".repeat(64));
        for (s, needle) in [
            ("reader=both", "reader=auto"),
            ("verify=some", "verify=metadata"),
            ("digest=sha256:abc", "64 hexadecimal"),
            (bad_hex.as_str(), "64 hexadecimal"),
            ("cache=12Q", "size"),
            ("cachedir=relative", "absolute"),
            ("threads=0", "threads"),
            ("remount", "not supported"),
            ("frobnicate", "unknown option"),
            ("reader", "unknown option"),
        ] {
            let e = Options::parse(s, false).unwrap_err();
            assert!(e.to_string().contains(needle), "{s}: {e}");
            assert!(e.to_string().contains(s), "{s}: {e}");
        }
        let o = Options::parse("frobnicate,reader=fuse", true).unwrap();
        assert_eq!(o.reader, ReaderChoice::Fuse);
        assert!(o.notes[0].contains("frobnicate"));
    }

    #[test]
    fn record_implies_the_fuse_reader_for_images_but_not_registry_sources() {
        let o = Options::parse("record=/var/tmp/trace.txt", false).unwrap();
        assert_eq!(o.record, Some(PathBuf::from("/var/tmp/trace.txt")));
        // A registry source keeps the choice: its filler records on the kernel path.
        assert_eq!(o.reader, ReaderChoice::Auto);
        let (reader, note) = o.image_reader().unwrap();
        assert_eq!(reader, ReaderChoice::Fuse);
        assert!(note.unwrap().contains("FUSE reader"));
        let o = Options::parse("reader=fuse,record=/t", false).unwrap();
        assert_eq!(o.image_reader().unwrap(), (ReaderChoice::Fuse, None));
        // Whatever the order, reader=kernel and record= conflict for an image, not for a
        // registry source.
        for s in ["record=/t,reader=kernel", "reader=kernel,record=/t"] {
            let o = Options::parse(s, false).unwrap();
            assert_eq!(o.reader, ReaderChoice::Kernel);
            let e = o.image_reader().unwrap_err();
            assert!(e.to_string().contains("record=/t"), "{e}");
            assert!(e.to_string().contains("needs the FUSE reader"), "{e}");
        }
        let o = Options::parse("reader=kernel", false).unwrap();
        assert_eq!(o.image_reader().unwrap(), (ReaderChoice::Kernel, None));
        for s in ["record=trace.txt", "record=/tmp/", "record="] {
            let e = Options::parse(s, false).unwrap_err();
            assert!(e.to_string().contains("absolute file name"), "{s}: {e}");
        }
        assert_eq!(Options::parse("", false).unwrap().record, None);
    }

    #[test]
    fn registry_options() {
        let o = Options::parse(
            "store=/srv/store,store-max=10G,tls-verify=false,cert-dir=/etc/c,authfile=/root/a.json,creds=me:se:cret,plain-http,platform=linux/arm64/v8,prefetch=/srv/list,pull=background",
            false,
        )
        .unwrap();
        let r = &o.registry;
        assert_eq!(r.store, PathBuf::from("/srv/store"));
        assert_eq!(r.store_max, Some(10 << 30));
        assert!(!r.tls_verify && r.plain_http);
        assert_eq!(r.cert_dir, Some(PathBuf::from("/etc/c")));
        assert_eq!(r.authfile, Some(PathBuf::from("/root/a.json")));
        let c = r.creds.as_ref().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("me", "se:cret")
        );
        assert!(
            !format!("{o:?}").contains("se:cret"),
            "Debug shows no password"
        );
        assert_eq!(r.platform.as_ref().unwrap().variant.as_deref(), Some("v8"));
        assert_eq!(r.prefetch, Prefetch::File("/srv/list".into()));
        assert_eq!(r.pull, Pull::Background);
        assert!(Options::parse("", false).unwrap().registry.is_default());
        assert_eq!(
            Options::parse("prefetch=none", false)
                .unwrap()
                .registry
                .prefetch,
            Prefetch::None
        );
        for (s, needle) in [
            ("store=rel", "absolute"),
            ("pull=eager", "pull=lazy"),
            ("platform=linux", "OS/ARCH"),
            ("tls-verify=maybe", "tls-verify"),
        ] {
            let e = Options::parse(s, false).unwrap_err();
            assert!(e.to_string().contains(needle), "{s}: {e}");
        }
        let e = Options::parse("creds=nocolon-secret", false).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn quoted_values_keep_their_commas() {
        let o = Options::parse("context=\"system_u:object_r:a_t:s0:c1,c2\",ro", false).unwrap();
        assert_eq!(
            o.security,
            vec![("context".into(), "system_u:object_r:a_t:s0:c1,c2".into())]
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("1.5G"), None);
    }
}
