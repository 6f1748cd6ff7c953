//! What the running kernel offers (`/proc/filesystems`, `/sys/fs/erofs/features`, `/dev/fuse`)
//! and the `reader=auto` decision: the kernel's EROFS when it has every feature the descriptor
//! uses, else the FUSE reader.

use std::collections::BTreeSet;

use chunkfs_kernel_abi::erofs as e;

use super::options::ReaderChoice;

/// The kernel's filesystems and EROFS features.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCaps {
    /// `erofs` is in `/proc/filesystems`.
    pub erofs: bool,
    /// `fuse` is in `/proc/filesystems` and `/dev/fuse` exists.
    pub fuse: bool,
    /// The names in `/sys/fs/erofs/features`.
    pub erofs_features: BTreeSet<String>,
}

impl KernelCaps {
    /// Reads the running kernel's.
    pub fn probe() -> Self {
        let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        let features = std::fs::read_dir("/sys/fs/erofs/features")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let dev_fuse = std::path::Path::new("/dev/fuse").exists();
        Self::from_parts(&filesystems, features, dev_fuse)
    }

    /// From the text of `/proc/filesystems`, the feature names, and whether `/dev/fuse` exists.
    pub fn from_parts(
        filesystems: &str,
        features: impl IntoIterator<Item = String>,
        dev_fuse: bool,
    ) -> Self {
        let has = |name: &str| {
            filesystems
                .lines()
                .any(|l| l.split_whitespace().last() == Some(name))
        };
        Self {
            erofs: has("erofs"),
            fuse: dev_fuse && has("fuse"),
            erofs_features: features.into_iter().collect(),
        }
    }

    /// The features of `incompat` the kernel's EROFS does not list.
    pub fn missing(&self, incompat: u32) -> Vec<String> {
        feature_names(incompat)
            .into_iter()
            .filter(|n| !self.erofs_features.contains(n))
            .collect()
    }
}

/// The `/sys/fs/erofs/features` names of the incompatible feature bits in `incompat` (a bit
/// the kernel has no name for is named by its value and is never "present").
pub fn feature_names(incompat: u32) -> Vec<String> {
    const NAMES: [(u32, &str); 9] = [
        (e::FEATURE_INCOMPAT_ZERO_PADDING, "zero_padding"),
        (e::FEATURE_INCOMPAT_COMPR_CFGS, "compr_cfgs"),
        (e::FEATURE_INCOMPAT_CHUNKED_FILE, "chunked_file"),
        (e::FEATURE_INCOMPAT_DEVICE_TABLE, "device_table"),
        (e::FEATURE_INCOMPAT_ZTAILPACKING, "ztailpacking"),
        (e::FEATURE_INCOMPAT_FRAGMENTS, "fragments"),
        (e::FEATURE_INCOMPAT_XATTR_PREFIXES, "xattr_prefixes"),
        (e::FEATURE_INCOMPAT_48BIT, "48bit"),
        (e::FEATURE_INCOMPAT_METABOX, "metabox"),
    ];
    let mut out = Vec::new();
    let mut rest = incompat;
    for (bit, name) in NAMES {
        if incompat & bit != 0 {
            out.push(name.to_owned());
            rest &= !bit;
        }
    }
    for bit in 0..32 {
        if rest & (1 << bit) != 0 {
            out.push(format!("incompat-{:#x}", 1u32 << bit));
        }
    }
    out
}

/// Which reader to use and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// True for the kernel's EROFS, false for FUSE.
    pub kernel: bool,
    /// Why, in words (logged with `-v`, always with `debug`).
    pub reason: String,
    /// With `reader=auto` choosing the kernel: fall back to FUSE if the kernel refuses the
    /// mount (e.g. an EROFS built without zstd, or without file-backed mounts: neither is
    /// visible in sysfs).
    pub fallback: bool,
    /// The kernel path needs the fanotify filler (a registry image not complete in the store).
    pub filler: bool,
}

/// Decides between the readers for a descriptor using `incompat`.
pub fn decide(choice: ReaderChoice, caps: &KernelCaps, incompat: u32) -> Result<Decision, String> {
    let needed = feature_names(incompat).join(", ");
    let missing = caps.missing(incompat);
    match choice {
        ReaderChoice::Fuse => Ok(Decision {
            kernel: false,
            reason: "reader=fuse".into(),
            fallback: false,
            filler: false,
        }),
        ReaderChoice::Kernel if !caps.erofs => Err(
            "reader=kernel: the kernel has no EROFS (not in /proc/filesystems); use reader=fuse"
                .into(),
        ),
        ReaderChoice::Kernel if !missing.is_empty() => Err(format!(
            "reader=kernel: the kernel's EROFS lacks {} (see /sys/fs/erofs/features){}; use reader=fuse",
            missing.join(", "),
            if missing.iter().any(|m| m == "48bit") {
                ", which needs Linux 6.15+ (images packed with --align 512 need only 6.12)"
            } else {
                ""
            }
        )),
        ReaderChoice::Kernel => Ok(Decision {
            kernel: true,
            reason: format!("reader=kernel; the image uses {needed}"),
            fallback: false,
            filler: false,
        }),
        ReaderChoice::Auto if !caps.erofs => Ok(Decision {
            kernel: false,
            reason: "the kernel has no EROFS (not in /proc/filesystems)".into(),
            fallback: false,
            filler: false,
        }),
        ReaderChoice::Auto if !missing.is_empty() => Ok(Decision {
            kernel: false,
            reason: format!(
                "the kernel's EROFS lacks {} that the image uses",
                missing.join(", ")
            ),
            fallback: false,
            filler: false,
        }),
        ReaderChoice::Auto => Ok(Decision {
            kernel: true,
            reason: format!("the kernel's EROFS has every feature the image uses ({needed})"),
            fallback: caps.fuse,
            filler: false,
        }),
    }
}

/// Decides between the readers for a registry image mounted through the store: `complete`
/// when every frame it reads is present (the kernel then needs no daemon), `lazy_kernel` says
/// whether the fanotify filler can serve the store's packs (or why not).
pub fn decide_lazy(
    choice: ReaderChoice,
    caps: &KernelCaps,
    incompat: u32,
    complete: bool,
    lazy_kernel: &Result<(), String>,
) -> Result<Decision, String> {
    let d = decide(choice, caps, incompat)?;
    if !d.kernel || complete {
        return Ok(Decision {
            reason: if d.kernel {
                format!("{}; every frame it reads is in the store", d.reason)
            } else {
                d.reason
            },
            ..d
        });
    }
    match (choice, lazy_kernel) {
        (_, Ok(())) => Ok(Decision {
            reason: format!(
                "{}; frames missing from the store are filled on demand by the fanotify filler (Linux 6.14+)",
                d.reason
            ),
            filler: true,
            ..d
        }),
        (ReaderChoice::Kernel, Err(why)) => Err(format!(
            "reader=kernel: the image is not complete in the store and the lazy kernel path is not available: {why}; use reader=fuse, or `chunkfs pull` the image first"
        )),
        (_, Err(why)) => Ok(Decision {
            kernel: false,
            reason: format!(
                "the image is not complete in the store and the lazy kernel path is not available ({why})"
            ),
            fallback: false,
            filler: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(features: &[&str]) -> KernelCaps {
        KernelCaps::from_parts(
            "nodev\tproc\n\terofs\nnodev\tfuse\n",
            features.iter().map(|s| s.to_string()),
            true,
        )
    }

    const BIT48: u32 = e::FEATURE_INCOMPAT_48BIT | e::FEATURE_INCOMPAT_COMPR_CFGS;
    const CLUSTERS: u32 = e::FEATURE_INCOMPAT_ZERO_PADDING
        | e::FEATURE_INCOMPAT_COMPR_CFGS
        | e::FEATURE_INCOMPAT_FRAGMENTS;

    #[test]
    fn names() {
        assert_eq!(feature_names(BIT48), ["compr_cfgs", "48bit"]);
        assert_eq!(feature_names(1 << 20), ["incompat-0x100000"]);
    }

    #[test]
    fn auto_picks_the_kernel_only_with_every_feature() {
        let k618 = caps(&[
            "48bit",
            "compr_cfgs",
            "zero_padding",
            "fragments",
            "device_table",
        ]);
        let k612 = caps(&["compr_cfgs", "zero_padding", "fragments", "device_table"]);
        let d = decide(ReaderChoice::Auto, &k618, BIT48).unwrap();
        assert!(d.kernel && d.fallback, "{d:?}");
        let d = decide(ReaderChoice::Auto, &k612, BIT48).unwrap();
        assert!(!d.kernel);
        assert!(d.reason.contains("lacks 48bit"), "{}", d.reason);
        assert!(decide(ReaderChoice::Auto, &k612, CLUSTERS).unwrap().kernel);
        let e = decide(ReaderChoice::Kernel, &k612, BIT48).unwrap_err();
        assert!(e.contains("6.15"), "{e}");
        assert!(!decide(ReaderChoice::Fuse, &k618, BIT48).unwrap().kernel);

        let lazy_ok: Result<(), String> = Ok(());
        let tmpfs: Result<(), String> = Err("tmpfs refuses marks".into());
        let d = decide_lazy(ReaderChoice::Auto, &k618, BIT48, false, &lazy_ok).unwrap();
        assert!(d.kernel && d.filler, "{d:?}");
        let d = decide_lazy(ReaderChoice::Auto, &k618, BIT48, true, &tmpfs).unwrap();
        assert!(d.kernel && !d.filler, "{d:?}");
        let d = decide_lazy(ReaderChoice::Auto, &k618, BIT48, false, &tmpfs).unwrap();
        assert!(!d.kernel && d.reason.contains("tmpfs"), "{d:?}");
        let e = decide_lazy(ReaderChoice::Kernel, &k618, BIT48, false, &tmpfs).unwrap_err();
        assert!(e.contains("tmpfs") && e.contains("chunkfs pull"), "{e}");
        let d = decide_lazy(ReaderChoice::Auto, &k612, BIT48, false, &lazy_ok).unwrap();
        assert!(!d.kernel && !d.filler, "{d:?}");
        let d = decide_lazy(ReaderChoice::Fuse, &k618, BIT48, false, &lazy_ok).unwrap();
        assert!(!d.kernel && !d.filler);

        let no_erofs = KernelCaps::from_parts("nodev\tfuse\n", [], true);
        assert!(
            !decide(ReaderChoice::Auto, &no_erofs, CLUSTERS)
                .unwrap()
                .kernel
        );
        assert!(decide(ReaderChoice::Kernel, &no_erofs, CLUSTERS).is_err());
    }
}
