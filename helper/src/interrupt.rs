//! Interrupted commands leave no partial output behind.
//!
//! Writers record their temporary files in [`chunkfs_format::partial::PARTIAL`]; a signal would
//! end the process without running their destructors. Instead, the termination signals are
//! blocked in every thread and one thread waits for them: it removes the partial files and
//! exits with the shell's status for the signal (128 + its number).

use std::io::Write as _;

use nix::sys::signal::{SigSet, Signal};

use chunkfs_format::partial::PARTIAL;

/// The signals that end a command a user or a service manager stopped.
const TERMINATING: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Starts the thread that removes partial output when the process is told to stop.
///
/// Call before any other thread is started: threads inherit the blocked signals from their
/// creator, and a thread that did not block them would die of them the default way. Only for
/// commands that do not start other programs (a blocked mask is inherited across `exec`).
pub fn remove_partial_output_on_signal() -> nix::Result<()> {
    let mut set = SigSet::empty();
    for s in TERMINATING {
        set.add(s);
    }
    set.thread_block()?;
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(signal) = set.wait() else { return };
            let removed = PARTIAL.remove_all();
            let mut err = std::io::stderr().lock();
            // A progress bar may own the current line.
            let _ = writeln!(
                err,
                "\nchunkfs: stopped by {signal}; {removed} unfinished output file(s) removed"
            );
            std::process::exit(128 + signal as i32);
        });
    if spawned.is_err() {
        // Without the waiting thread the signals must keep their default effect.
        set.thread_unblock()?;
    }
    Ok(())
}
