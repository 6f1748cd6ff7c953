//! The init of a chunkfs initramfs: PID 1 from the kernel until the real system's init takes
//! over. It mounts the API filesystems, loads the modules the initramfs carries, finds the
//! root image named on the kernel command line ([`cmdline`]), checks it against the pinned
//! digest, mounts it read-only (optionally under a tmpfs overlay) and switches root into it.
//!
//! The `chunkfs` binary runs this when invoked as `init` (the initramfs's `/init` is a symlink
//! to it). Any failure stops the boot with a message on the console: booting something other
//! than what was asked for is worse than not booting.

pub mod cmdline;
pub mod console;
pub mod device;
pub mod kmod;
pub mod rootmount;
pub mod source;
pub mod switch_root;
pub mod verify;

use std::convert::Infallible;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot};

use cmdline::{Cmdline, FsType, OnError};

/// Where the new root is assembled.
pub const NEW_ROOT: &str = "/newroot";

/// Everything that can stop the boot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The init was started as something other than PID 1.
    #[error("this is the initramfs init; it only runs as PID 1 (use `chunkfs --help`)")]
    NotPid1,
    /// An API filesystem could not be mounted.
    #[error("cannot mount {fstype} on {target}: {errno}")]
    EarlyMount {
        /// The filesystem type.
        fstype: &'static str,
        /// The mount point.
        target: &'static str,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
    /// /proc/cmdline could not be read.
    #[error("cannot read /proc/cmdline: {0}")]
    ReadCmdline(std::io::Error),
    /// A `chunkfs.*` parameter is wrong.
    #[error(transparent)]
    Cmdline(#[from] cmdline::Error),
    /// The module list is unusable.
    #[error(transparent)]
    Modules(#[from] kmod::Error),
    /// The root image was not found.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// The root image is not the pinned one.
    #[error(transparent)]
    Verify(#[from] verify::Error),
    /// The root could not be mounted.
    #[error(transparent)]
    Mount(#[from] rootmount::Error),
    /// The switch to the new root failed.
    #[error(transparent)]
    SwitchRoot(#[from] switch_root::Error),
}

/// Runs the init; never returns.
pub fn main() -> ! {
    let mut on_error = OnError::Halt;
    let err = match boot(&mut on_error) {
        Ok(never) => match never {},
        Err(err) => err,
    };
    console::say(format_args!("ERROR: {err}"));
    console::say(format_args!("the system cannot boot from this root"));
    fail(on_error)
}

fn boot(on_error: &mut OnError) -> Result<Infallible, Error> {
    if std::process::id() != 1 {
        return Err(Error::NotPid1);
    }
    mount_api_filesystems()?;
    let text = std::fs::read_to_string("/proc/cmdline").map_err(Error::ReadCmdline)?;
    let cmdline = Cmdline::parse(&text)?;
    *on_error = cmdline.on_error;
    console::set_debug(cmdline.debug);
    if cmdline.debug && cmdline.on_error == OnError::Halt {
        *on_error = OnError::Shell;
    }
    console::say(format_args!(
        "[{:.3}] chunkfs init {}",
        console::uptime_secs(),
        env!("CARGO_PKG_VERSION")
    ));

    load_modules()?;
    let image = source::locate(cmdline.root.as_ref(), cmdline.timeout)?;
    // A chunkfs image's length comes from its header: a block device may be longer.
    let image_len = match cmdline.fstype {
        FsType::Chunkfs => verify::read_header(&image)?.image_len,
        FsType::Erofs | FsType::Squashfs => image.len,
    };
    let container = if image.is_block {
        "block device"
    } else {
        "file"
    };
    console::say(format_args!(
        "root image {}: {image_len} bytes ({container} of {} bytes)",
        image.path.display(),
        image.len
    ));
    if let Some(expected) = &cmdline.digest {
        verify::check(&image, cmdline.fstype, expected)?;
        // A chunkfs image's metadata (and so every chunk digest) is checked against the pin
        // by the mount that follows.
        let what = match cmdline.fstype {
            FsType::Chunkfs => "pinned metadata digest in the header",
            FsType::Erofs | FsType::Squashfs => "digest ok",
        };
        console::say(format_args!(
            "[{:.3}] {what}: {expected}",
            console::uptime_secs()
        ));
    }
    rootmount::mount_root(&image, &cmdline, Path::new(NEW_ROOT))?;
    console::debug(format_args!("root mounted"));
    // The kernel passes init the arguments it did not understand; hand them on.
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    Ok(switch_root::switch_root(
        Path::new(NEW_ROOT),
        &cmdline.init,
        &args,
    )?)
}

fn mount_api_filesystems() -> Result<(), Error> {
    let table: [(&'static str, &'static str, MsFlags, Option<&str>); 4] = [
        (
            "proc",
            "/proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "sysfs",
            "/sys",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        (
            "tmpfs",
            "/run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
    ];
    for (fstype, target, flags, data) in table {
        let _ = std::fs::create_dir_all(target);
        match mount(Some(fstype), target, Some(fstype), flags, data) {
            // Already there (a kernel with CONFIG_DEVTMPFS_MOUNT mounts /dev itself).
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(errno) => {
                return Err(Error::EarlyMount {
                    fstype,
                    target,
                    errno,
                });
            }
        }
    }
    Ok(())
}

fn load_modules() -> Result<(), Error> {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let list = Path::new("/").join(crate::initramfs::MODULE_LIST);
    let outcome = kmod::load_listed(&list, Path::new("/lib/modules"), &release)?;
    if let Some(theirs) = &outcome.wrong_release {
        console::say(format_args!(
            "modules in this initramfs are for {theirs}, the kernel is {release}: not loading them"
        ));
    }
    for (module, errno) in &outcome.failed {
        console::say(format_args!("warning: cannot load {module}: {errno}"));
    }
    console::debug(format_args!(
        "{} modules loaded, {} already present",
        outcome.loaded, outcome.present
    ));
    Ok(())
}

/// Ends a failed boot as `chunkfs.onerror` says. PID 1 must never exit (the kernel would
/// panic and the message would scroll away).
fn fail(on_error: OnError) -> ! {
    // Give the console time to drain before the machine goes away.
    std::thread::sleep(Duration::from_millis(200));
    match on_error {
        OnError::Poweroff => {
            let _ = reboot(RebootMode::RB_POWER_OFF);
        }
        OnError::Reboot => {
            let _ = reboot(RebootMode::RB_AUTOBOOT);
        }
        OnError::Shell => {
            if Path::new("/bin/sh").exists() {
                console::say(format_args!("starting /bin/sh; exit it to halt"));
                let _ = std::process::Command::new("/bin/sh").status();
            } else {
                console::say(format_args!(
                    "no /bin/sh in this initramfs (build it with --busybox)"
                ));
            }
        }
        OnError::Halt => {}
    }
    console::say(format_args!("halted"));
    let _ = reboot(RebootMode::RB_HALT_SYSTEM);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
