//! The kernel command line as the init understands it (`chunkfs.*` parameters).

use std::path::PathBuf;
use std::time::Duration;

/// Where the root image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// An image written raw onto a block device: `chunkfs.root=/dev/vda`.
    Device(PathBuf),
    /// An image file on a partition, which is mounted read-only first:
    /// `chunkfs.root=/dev/vdb1:/images/root.cfs`.
    FileOnDevice {
        /// The partition.
        device: PathBuf,
        /// The image's path inside the partition.
        path: PathBuf,
    },
    /// The image embedded in the initramfs: `chunkfs.root=embedded`.
    Embedded,
}

/// What the root image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// A chunkfs image (the normal case).
    Chunkfs,
    /// A plain EROFS image, mounted by the kernel (for tests and comparisons).
    Erofs,
    /// A squashfs image, mounted by the kernel (for comparisons).
    Squashfs,
}

impl FsType {
    /// The kernel's name for a plain filesystem type, `None` for chunkfs.
    pub fn kernel_name(self) -> Option<&'static str> {
        match self {
            FsType::Chunkfs => None,
            FsType::Erofs => Some("erofs"),
            FsType::Squashfs => Some("squashfs"),
        }
    }
}

/// Who serves a chunkfs root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderChoice {
    /// The kernel's EROFS when it supports what the image needs, else FUSE.
    Auto,
    /// The kernel's EROFS, or fail.
    Kernel,
    /// The FUSE reader.
    Fuse,
}

/// How much of a chunkfs image is checked against the pinned digest before it is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The kernel path checks nothing itself, so every chunk is checked before the mount
    /// when the kernel serves the root; the FUSE reader checks each chunk as it reads it, so
    /// the metadata is enough there.
    Auto,
    /// Only the metadata (and so the chunk digests it lists) against the pinned digest.
    Metadata,
    /// Also every chunk frame against its digest, before mounting.
    Full,
}

/// What to do when the boot cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Stop the machine and leave the message on the console.
    Halt,
    /// Power off (virtual machines and tests).
    Poweroff,
    /// Reboot.
    Reboot,
    /// Run `/bin/sh` from the initramfs when there is one, else halt.
    Shell,
}

/// A pinned digest: `sha256:` and 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256(pub [u8; 32]);

impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

/// The parsed parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// `chunkfs.root`; `None` means the embedded image if there is one.
    pub root: Option<RootSpec>,
    /// `chunkfs.digest`.
    pub digest: Option<Sha256>,
    /// `chunkfs.verify`.
    pub verify: Verify,
    /// `chunkfs.overlay=tmpfs`.
    pub overlay: bool,
    /// `chunkfs.reader`.
    pub reader: ReaderChoice,
    /// `chunkfs.fstype`.
    pub fstype: FsType,
    /// `chunkfs.init`, else the kernel's `init=`, else `/sbin/init`.
    pub init: PathBuf,
    /// `chunkfs.timeout` for the root device to appear.
    pub timeout: Duration,
    /// `chunkfs.onerror`.
    pub on_error: OnError,
    /// `chunkfs.debug`.
    pub debug: bool,
}

/// A parameter the init does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel command line: {param}: {problem}")]
pub struct Error {
    /// The parameter as written.
    pub param: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl Default for Cmdline {
    fn default() -> Self {
        Self {
            root: None,
            digest: None,
            verify: Verify::Auto,
            overlay: false,
            reader: ReaderChoice::Auto,
            fstype: FsType::Chunkfs,
            init: PathBuf::from("/sbin/init"),
            timeout: Duration::from_secs(30),
            on_error: OnError::Halt,
            debug: false,
        }
    }
}

impl Cmdline {
    /// Parses `/proc/cmdline`. Unknown parameters belong to the kernel or the next init and
    /// are ignored; a `chunkfs.*` parameter with a bad value is an error, because booting
    /// something other than what was asked for (e.g. an unpinned image) is worse than stopping.
    pub fn parse(text: &str) -> Result<Cmdline, Error> {
        let mut cmdline = Cmdline::default();
        let mut explicit_init = false;
        for word in split(text) {
            let (key, value) = match word.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (word.as_str(), None),
            };
            let bad = |problem| Error {
                param: word.clone(),
                problem,
            };
            let need = || {
                value
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| bad("needs a value"))
            };
            match key {
                "chunkfs.root" => {
                    cmdline.root = Some(parse_root(need()?).ok_or_else(|| {
                        bad("expected /dev/NAME, /dev/NAME:/path/to/image.cfs or embedded")
                    })?)
                }
                "chunkfs.digest" => {
                    cmdline.digest = Some(
                        parse_digest(need()?)
                            .ok_or_else(|| bad("expected sha256: and 64 hex digits"))?,
                    )
                }
                "chunkfs.overlay" => {
                    cmdline.overlay = match need()? {
                        "tmpfs" => true,
                        "none" => false,
                        _ => return Err(bad("expected tmpfs or none")),
                    }
                }
                "chunkfs.verify" => {
                    cmdline.verify = match need()? {
                        "auto" => Verify::Auto,
                        "metadata" => Verify::Metadata,
                        "full" => Verify::Full,
                        _ => return Err(bad("expected auto, metadata or full")),
                    }
                }
                "chunkfs.reader" => {
                    cmdline.reader = match need()? {
                        "auto" => ReaderChoice::Auto,
                        "kernel" => ReaderChoice::Kernel,
                        "fuse" => ReaderChoice::Fuse,
                        _ => return Err(bad("expected auto, kernel or fuse")),
                    }
                }
                "chunkfs.fstype" => {
                    cmdline.fstype = match need()? {
                        "chunkfs" => FsType::Chunkfs,
                        "erofs" => FsType::Erofs,
                        "squashfs" => FsType::Squashfs,
                        _ => return Err(bad("expected chunkfs, erofs or squashfs")),
                    }
                }
                "chunkfs.init" | "init" => {
                    let path = need()?;
                    if !path.starts_with('/') {
                        return Err(bad("must be an absolute path"));
                    }
                    // chunkfs.init wins over the kernel's init= wherever each appears.
                    if key == "chunkfs.init" || !explicit_init {
                        cmdline.init = PathBuf::from(path);
                    }
                    explicit_init |= key == "chunkfs.init";
                }
                "chunkfs.timeout" => {
                    let secs: u64 = need()?.parse().map_err(|_| bad("expected whole seconds"))?;
                    cmdline.timeout = Duration::from_secs(secs);
                }
                "chunkfs.onerror" => {
                    cmdline.on_error = match need()? {
                        "halt" => OnError::Halt,
                        "poweroff" => OnError::Poweroff,
                        "reboot" => OnError::Reboot,
                        "shell" => OnError::Shell,
                        _ => return Err(bad("expected halt, poweroff, reboot or shell")),
                    }
                }
                "chunkfs.debug" => cmdline.debug = !matches!(value, Some("0")),
                other if other.starts_with("chunkfs.") => {
                    return Err(bad("unknown chunkfs parameter"));
                }
                _ => {}
            }
        }
        Ok(cmdline)
    }
}

/// Splits like the kernel does: on whitespace, except inside double quotes, which are removed.
fn split(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn parse_root(value: &str) -> Option<RootSpec> {
    if value == "embedded" {
        return Some(RootSpec::Embedded);
    }
    if !value.starts_with("/dev/") {
        return None;
    }
    match value.split_once(':') {
        None => Some(RootSpec::Device(PathBuf::from(value))),
        Some((device, path)) if path.starts_with('/') && path.len() > 1 && device.len() > 5 => {
            Some(RootSpec::FileOnDevice {
                device: PathBuf::from(device),
                path: PathBuf::from(path),
            })
        }
        Some(_) => None,
    }
}

fn parse_digest(value: &str) -> Option<Sha256> {
    let hex_digits = value.strip_prefix("sha256:")?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut digest).ok()?;
    Some(Sha256(digest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn full_example() {
        let digest = "ab".repeat(32);
        let text = format!(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 quiet chunkfs.root=/dev/vdb1:/images/root.cfs \
             chunkfs.digest=sha256:{digest} chunkfs.overlay=tmpfs chunkfs.reader=fuse chunkfs.verify=full \
             init=/bin/other chunkfs.timeout=5 chunkfs.onerror=poweroff chunkfs.debug\n"
        );
        let got = Cmdline::parse(&text).unwrap();
        assert_eq!(
            got,
            Cmdline {
                root: Some(RootSpec::FileOnDevice {
                    device: "/dev/vdb1".into(),
                    path: "/images/root.cfs".into()
                }),
                digest: Some(Sha256([0xab; 32])),
                verify: Verify::Full,
                overlay: true,
                reader: ReaderChoice::Fuse,
                fstype: FsType::Chunkfs,
                init: "/bin/other".into(),
                timeout: Duration::from_secs(5),
                on_error: OnError::Poweroff,
                debug: true,
            }
        );
    }

    #[test]
    fn defaults_and_other_forms() {
        assert_eq!(Cmdline::parse("console=ttyS0").unwrap(), Cmdline::default());
        let got = Cmdline::parse("chunkfs.root=/dev/vda chunkfs.init=/a init=/b").unwrap();
        assert_eq!(got.root, Some(RootSpec::Device("/dev/vda".into())));
        assert_eq!(got.init, PathBuf::from("/a"));
        let got = Cmdline::parse("chunkfs.root=embedded chunkfs.fstype=squashfs").unwrap();
        assert_eq!(got.root, Some(RootSpec::Embedded));
        assert_eq!(got.fstype, FsType::Squashfs);
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(split(r#"a "b c"=d  e"#), ["a", "b c=d", "e"]);
        let got = Cmdline::parse(r#"foo="x y" chunkfs.init="/sbin/init""#).unwrap();
        assert_eq!(got.init, PathBuf::from("/sbin/init"));
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            "chunkfs.root=vda",
            "chunkfs.root=/dev/vdb1:relative",
            "chunkfs.root=/dev/:/x",
            "chunkfs.root=",
            "chunkfs.digest=sha256:abcd",
            "chunkfs.digest=md5:00",
            "chunkfs.overlay=ext4",
            "chunkfs.reader=magic",
            "chunkfs.verify=some",
            "chunkfs.timeout=soon",
            "chunkfs.init=sbin/init",
            "chunkfs.rooot=/dev/vda",
        ] {
            let err = Cmdline::parse(bad).unwrap_err();
            assert_eq!(err.param, bad);
        }
    }
}
