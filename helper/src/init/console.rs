//! Messages on the console. The kernel starts PID 1 with `/dev/console` on fds 0-2 (the
//! initramfs ships that node), so stderr is the console.

use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns debug messages on (`chunkfs.debug`).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether debug messages are on.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Seconds since the kernel started (CLOCK_BOOTTIME), for the timing lines.
pub fn uptime_secs() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// Prints one line, prefixed so it stands out among kernel messages.
pub fn say(args: std::fmt::Arguments<'_>) {
    eprintln!("chunkfs-init: {args}");
}

/// Prints one line when debugging.
pub fn debug(args: std::fmt::Arguments<'_>) {
    if debug_enabled() {
        eprintln!("chunkfs-init: [{:.3}] {args}", uptime_secs());
    }
}
