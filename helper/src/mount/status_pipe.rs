//! The status pipe of a daemon the helper starts (the FUSE reader, the filler): the daemon
//! writes `pid N`, then its ready word (`ok`, `marked`) or `error: MESSAGE`, one line each; the
//! helper waits for them with a deadline, so a daemon that hangs or dies never hangs the mount.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// How the daemon's start ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// It wrote its ready word.
    Ready,
    /// It wrote `error: MESSAGE`.
    Failed(String),
    /// It closed the pipe (exited) first.
    Exited,
    /// The deadline passed first.
    TimedOut,
}

/// The most status text kept: a daemon writes a few short lines.
const TEXT_MAX: usize = 1 << 16;

/// Reads status lines from `r` until the line `ready`, an error, end-of-file or `timeout`;
/// returns the pid the daemon reported too. Only complete lines count.
pub(crate) fn read(r: OwnedFd, ready: &str, timeout: Duration) -> (Option<i32>, Status) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = Instant::now() + timeout;
    let mut file = File::from(r);
    let mut text = String::new();
    let mut pid = None;
    loop {
        if let Some(end) = text.rfind('\n') {
            for line in text.get(..end).unwrap_or_default().lines() {
                if let Some(p) = line.strip_prefix("pid ") {
                    pid = p.trim().parse().ok();
                } else if line == ready {
                    return (pid, Status::Ready);
                } else if let Some(m) = line.strip_prefix("error: ") {
                    return (pid, Status::Failed(m.to_owned()));
                }
            }
            text = text.get(end + 1..).unwrap_or_default().to_owned();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (pid, Status::TimedOut);
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return (pid, Status::Exited),
        }
        let mut buf = [0u8; 4096];
        match file.read(&mut buf) {
            Ok(0) | Err(_) => return (pid, Status::Exited),
            Ok(n) => text.push_str(&String::from_utf8_lossy(buf.get(..n).unwrap_or_default())),
        }
        if text.len() > TEXT_MAX {
            return (pid, Status::Failed("an endless status line".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    fn status_of(text: &[u8], close: bool) -> (Option<i32>, Status) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut w = File::from(w);
        // A writer thread: more than a pipe's capacity must not block the test.
        let text = text.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&text);
            if close {
                drop(w);
                None
            } else {
                Some(w)
            }
        });
        let out = read(r, "ok", Duration::from_millis(200));
        drop(writer.join().unwrap());
        out
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"pid 42\nok\n", false), (Some(42), Status::Ready));
        assert_eq!(
            status_of(b"pid 7\nerror: /x: invalid descriptor\n", true),
            (Some(7), Status::Failed("/x: invalid descriptor".into()))
        );
        assert_eq!(status_of(b"pid 9\n", true), (Some(9), Status::Exited));
        // A partial line is not "ok" yet; another daemon's ready word is not this one's.
        assert_eq!(status_of(b"pid 3\no", false), (Some(3), Status::TimedOut));
        assert_eq!(
            status_of(b"pid 3\nmarked\n", false),
            (Some(3), Status::TimedOut)
        );
        assert_eq!(status_of(b"", true), (None, Status::Exited));
        let endless = vec![b'x'; TEXT_MAX + 10];
        assert!(matches!(status_of(&endless, false).1, Status::Failed(_)));
    }
}
