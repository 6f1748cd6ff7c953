//! Mounting: by fuser's mount (a FUSE mount at a directory, unmounted when the handle drops), or
//! serving an already mounted `/dev/fuse` descriptor (the mount helper does `mount(2)` itself).

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use fuser::{BackgroundSession, MountOption, Session, SessionACL};

use crate::fs::Fs;
use crate::reader::Reader;

/// A mounted image. Dropping it unmounts (lazily if the mount is busy) and stops the threads.
#[derive(Debug)]
pub struct MountHandle {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl MountHandle {
    /// Where the image is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the worker threads.
    pub fn unmount(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // A busy mount (an open file, a process inside) refuses a plain unmount: detach it so
        // the threads can end once the last user leaves.
        let r = session.umount_and_join();
        if r.is_err() {
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
        r
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn session_config(reader: &Reader) -> fuser::Config {
    let c = &reader.config;
    let mut mount_options = vec![
        MountOption::RO,
        MountOption::FSName(c.primary.display().to_string()),
        MountOption::Subtype("chunkfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    if c.suid_dev {
        mount_options.extend([MountOption::Suid, MountOption::Dev]);
    }
    let mut config = fuser::Config::default();
    config.mount_options = mount_options;
    config.acl = if c.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(c.threads.max(1));
    config.clone_fd = true;
    config
}

impl Reader {
    /// Mounts the image at `mountpoint` and serves it from background threads.
    pub fn mount(self, mountpoint: &Path) -> io::Result<MountHandle> {
        let config = session_config(&self);
        let notifier = Arc::new(OnceLock::new());
        let fs = Fs::new(Arc::new(self), notifier.clone());
        let session = Session::new(fs, mountpoint, &config)?;
        let _ = notifier.set(session.notifier());
        Ok(MountHandle {
            session: Some(session.spawn()?),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Mounts the image at `mountpoint` with `mount(2)` and returns the `/dev/fuse` descriptor to
    /// pass to [`Reader::serve`]: the mount helper calls this, daemonizes, then serves, so that
    /// `mount` returns once the filesystem exists. Requests wait in the descriptor until served.
    pub fn mount_fd(&self, mountpoint: &Path) -> io::Result<OwnedFd> {
        use nix::fcntl::{OFlag, open};
        use nix::mount::MsFlags;
        use nix::sys::stat::Mode;
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;

        let c = &self.config;
        let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
        let fd = open("/dev/fuse", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
        let mut data = format!(
            "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
            fd.as_raw_fd(),
            root_mode,
            nix::unistd::getuid(),
            nix::unistd::getgid()
        );
        if c.allow_other {
            data.push_str(",allow_other");
        }
        let mut flags = MsFlags::MS_RDONLY | MsFlags::MS_NOATIME;
        if !c.suid_dev {
            flags |= MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        }
        let source = c.primary.display().to_string();
        nix::mount::mount(
            Some(source.as_str()),
            mountpoint,
            Some("fuse.chunkfs"),
            flags,
            Some(data.as_str()),
        )?;
        Ok(fd)
    }

    /// Serves a `/dev/fuse` descriptor that is already mounted (see [`Reader::mount_fd`]).
    /// Returns when the filesystem is unmounted.
    pub fn serve(self, fd: OwnedFd) -> io::Result<()> {
        let config = session_config(&self);
        let acl = config.acl;
        let notifier = Arc::new(OnceLock::new());
        let fs = Fs::new(Arc::new(self), notifier.clone());
        let session = Session::from_fd(fs, fd, acl, config)?;
        let _ = notifier.set(session.notifier());
        session.run()
    }
}
