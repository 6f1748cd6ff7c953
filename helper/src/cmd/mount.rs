//! `chunkfs mount SOURCE TARGET [-o OPTIONS]`, and the same as the mount(8) helper
//! `mount.chunkfs SOURCE TARGET [-sfnv] [-o OPTIONS]` (docs/mount.chunkfs.8.md).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::Error;
use crate::error::mount8;
use crate::mount::{self, Control, Log, Options};

/// Arguments of `chunkfs mount`.
#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n",
    "  chunkfs mount image.cfs /mnt\n",
    "  chunkfs mount -o reader=fuse,verify=full image.cfs /mnt\n",
    "  chunkfs mount oci:/srv/images:v1 /mnt\n",
    "  chunkfs mount -v docker://registry.example/team/app:v1 /mnt   (lazily, through the store)\n",
    "  chunkfs mount -o authfile=/root/auth.json,pull=background docker://HOST/REPO@sha256:HEX /mnt\n",
    "  mount -t chunkfs -o digest=sha256:HEX /dev/vdb /mnt     (via /sbin/mount.chunkfs)\n\n",
    "Options (-o, comma-separated): reader=auto|kernel|fuse, verify=metadata|full,\n",
    "digest=sha256:HEX, cache=SIZE, cachedir=PATH, threads=N, allow_other, noallow_other,\n",
    "debug, loop, and the generic ro, rw (mounted ro), nosuid, nodev, noexec, noatime, ...\n",
    "For docker:// sources: store=DIR, store-max=SIZE, tls-verify=false, cert-dir=DIR,\n",
    "authfile=FILE, creds=USER:PASS (visible to ps: prefer authfile), plain-http,\n",
    "platform=OS/ARCH[/VARIANT], prefetch=none|image|FILE, pull=lazy|background.\n",
    "See mount.chunkfs(8) (docs/mount.chunkfs.8.md).\n\n",
    crate::exit_help!()
))]
pub struct Args {
    /// The image: a .cfs file, a block device holding one, oci:DIR[:TAG], or
    /// docker://HOST[:PORT]/REPO:TAG (or @sha256:HEX).
    pub source: String,
    /// The mount point: an existing directory.
    pub target: PathBuf,
    /// Mount options (repeatable).
    #[arg(short = 'o', long = "options", value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Check the image and choose the reader, but do not mount.
    #[arg(short = 'f', long)]
    pub fake: bool,
    /// Ignore unknown options instead of refusing them.
    #[arg(short = 's', long)]
    pub sloppy: bool,
    /// Tell what is checked, chosen and done.
    #[arg(short, long)]
    pub verbose: bool,
}

/// Runs `chunkfs mount`.
pub fn run(args: &Args) -> Result<(), Error> {
    let opts = Options::parse(&args.options.join(","), args.sloppy)
        .map_err(|e| Error::usage(format!("mount: {e}")))?;
    let ctl = Control {
        fake: args.fake,
        log: Log::new("chunkfs mount", args.verbose),
        daemon_exe: None,
    };
    mount::mount_image_with(&args.source, &args.target, &opts, &ctl)?;
    Ok(())
}

const HELPER_USAGE: &str = "usage: mount.chunkfs SOURCE TARGET [-sfnv] [-N NAMESPACE] [-o OPTIONS]\n\
    SOURCE: a .cfs image, a block device holding one, oci:DIR[:TAG], or docker://HOST/REPO:TAG;\n\
    see mount.chunkfs(8)";

/// What the mount(8) helper's command line asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct HelperArgs {
    source: String,
    target: PathBuf,
    options: Vec<String>,
    sloppy: bool,
    fake: bool,
    verbose: bool,
    namespace: Option<String>,
}

/// Parses `SOURCE TARGET [-sfnv] [-N NS] [-o OPTS] [-t TYPE]` in any order.
fn parse_helper_args(args: &[String]) -> Result<HelperArgs, String> {
    let mut a = HelperArgs::default();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            positional.push(arg.clone());
            continue;
        };
        for (i, c) in flags.char_indices() {
            match c {
                's' => a.sloppy = true,
                'f' => a.fake = true,
                'n' => {}
                'v' => a.verbose = true,
                'h' => return Err(HELPER_USAGE.into()),
                'o' | 't' | 'N' => {
                    let rest = &flags[i + c.len_utf8()..];
                    let value = if rest.is_empty() {
                        it.next().cloned().ok_or(format!("-{c} needs a value"))?
                    } else {
                        rest.to_owned()
                    };
                    match c {
                        'o' => a.options.push(value),
                        't' if value == "chunkfs" || value.starts_with("chunkfs.") => {}
                        't' => {
                            return Err(format!("-t {value}: this is the helper for type chunkfs"));
                        }
                        _ => a.namespace = Some(value),
                    }
                    break;
                }
                _ => return Err(format!("unknown flag -{c}\n{HELPER_USAGE}")),
            }
        }
    }
    match <[String; 2]>::try_from(positional) {
        Ok([source, target]) => {
            a.source = source;
            a.target = PathBuf::from(target);
            Ok(a)
        }
        Err(_) => Err(HELPER_USAGE.into()),
    }
}

/// Enters the mount namespace `ns` (a path such as `/proc/PID/ns/mnt`, or a pid), as mount(8)'s
/// `-N` asks.
fn enter_namespace(ns: &str) -> Result<(), String> {
    let path = if ns.bytes().all(|b| b.is_ascii_digit()) {
        format!("/proc/{ns}/ns/mnt")
    } else {
        ns.to_owned()
    };
    let f = std::fs::File::open(&path).map_err(|e| format!("-N {path}: {e}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("-N {path}: cannot enter the mount namespace: {e}"))
}

/// `mount.chunkfs`: the mount(8) helper. Returns mount(8)'s exit status.
pub fn helper_main(argv: Vec<OsString>) -> u8 {
    let args: Vec<String> = argv
        .into_iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.iter().any(|a| a == "--help") {
        println!("{HELPER_USAGE}");
        return mount8::OK;
    }
    let a = match parse_helper_args(&args) {
        Ok(a) => a,
        Err(m) => {
            eprintln!("mount.chunkfs: {m}");
            return mount8::USAGE;
        }
    };
    if let Some(ns) = &a.namespace {
        if let Err(m) = enter_namespace(ns) {
            eprintln!("mount.chunkfs: {m}");
            return mount8::SYSTEM;
        }
    }
    let opts = match Options::parse(&a.options.join(","), a.sloppy) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mount.chunkfs: {e}");
            return mount8::USAGE;
        }
    };
    let ctl = Control {
        fake: a.fake,
        log: Log::new("mount.chunkfs", a.verbose),
        daemon_exe: None,
    };
    match mount::mount_image_with(&a.source, &a.target, &opts, &ctl) {
        Ok(_) => mount8::OK,
        Err(e) => {
            eprintln!("mount.chunkfs: {e}");
            mount8::status(e.kind())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<HelperArgs, String> {
        parse_helper_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn mount8_conventions() {
        let a = parse("img.cfs /mnt -o rw,noatime").unwrap();
        assert_eq!(
            (a.source.as_str(), a.target.to_str()),
            ("img.cfs", Some("/mnt"))
        );
        assert_eq!(a.options, ["rw,noatime"]);
        let a = parse("-sfnv img /mnt -oro -o reader=fuse -t chunkfs -N 1").unwrap();
        assert!(a.sloppy && a.fake && a.verbose);
        assert_eq!(a.options, ["ro", "reader=fuse"]);
        assert_eq!(a.namespace.as_deref(), Some("1"));
        assert!(parse("img").is_err());
        assert!(parse("a b c").is_err());
        assert!(parse("a b -x").unwrap_err().contains("unknown flag"));
        assert!(parse("a b -o").unwrap_err().contains("needs a value"));
        assert!(parse("a b -t ext4").is_err());
    }
}
