//! Waiting for the root device: drivers (loaded as modules or built in) probe asynchronously
//! and devtmpfs creates the node when they are done.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::console;

/// The device did not appear in time.
#[derive(Debug, thiserror::Error)]
#[error("{path} did not appear within {} s (block devices present: {present})", timeout.as_secs())]
pub struct Timeout {
    /// The awaited device.
    pub path: PathBuf,
    /// How long we waited.
    pub timeout: Duration,
    /// What /sys/class/block lists, to show what the kernel did find.
    pub present: String,
}

const POLL: Duration = Duration::from_millis(20);
/// After this long a line tells the user what the boot is waiting for.
const ANNOUNCE_AFTER: Duration = Duration::from_secs(1);

/// Waits until `path` exists and is a block device.
pub fn wait_for_block(path: &Path, timeout: Duration) -> Result<(), Timeout> {
    let start = Instant::now();
    let mut announced = false;
    loop {
        if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device()) {
            console::debug(format_args!("{} is there", path.display()));
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Timeout {
                path: path.to_owned(),
                timeout,
                present: present_block_devices(),
            });
        }
        if !announced && waited >= ANNOUNCE_AFTER {
            console::say(format_args!(
                "waiting up to {} s for {}",
                timeout.as_secs(),
                path.display()
            ));
            announced = true;
        }
        std::thread::sleep(POLL);
    }
}

fn present_block_devices() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(" ")
    }
}
