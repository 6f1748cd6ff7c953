//! The error every subcommand returns, and the one table that turns its class into the exit
//! status ([`exit_status`]). Library errors carry their class ([`Classify`]); a command only
//! adds the errors of its own arguments ([`Error::usage`], [`Error::io`]).

use chunkfs_format::{Classify, ErrorClass};

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the image is corrupt or unsupported, or the command failed otherwise.
pub const EXIT_CORRUPT: u8 = 1;
/// Exit status: bad usage (arguments, an unknown or ambiguous tag).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: an input or output could not be read or written (I/O).
pub const EXIT_IO: u8 = 3;
/// Exit status: a registry could not be reached or did not answer in time (retrying may work).
pub const EXIT_NETWORK: u8 = 4;

/// The exit-status table printed in every command's `--help` (a macro so `concat!` can use it).
/// It must say what [`exit_status`] does.
#[macro_export]
macro_rules! exit_help {
    () => {
        "Exit status: 0 ok; 1 corrupt or unsupported image, or another failure; 2 usage error;\n3 an input could not be read or an output written (I/O); 4 a registry could not be reached."
    };
}

/// The exit status of a failure of class `class`: the one place that decides it.
pub fn exit_status(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Usage => EXIT_USAGE,
        ErrorClass::Io => EXIT_IO,
        ErrorClass::Network => EXIT_NETWORK,
        ErrorClass::Corrupt | ErrorClass::Unsupported => EXIT_CORRUPT,
        // A class added later exits as "another failure" until it is given its own status.
        _ => EXIT_CORRUPT,
    }
}

/// mount(8)'s exit statuses, which `mount.chunkfs` must use instead of chunkfs's own.
pub mod mount8 {
    use crate::mount::ErrorKind;

    /// Success.
    pub const OK: u8 = 0;
    /// Incorrect invocation or permissions.
    pub const USAGE: u8 = 1;
    /// System error.
    pub const SYSTEM: u8 = 2;
    /// Mount failure.
    pub const FAILURE: u8 = 32;

    /// The status of a failed mount: bad invocation (arguments, options, an unknown tag) or
    /// permissions are 1; everything else (a missing, damaged or mismatching image, a busy mount
    /// point, a refusal by the kernel or the daemon) is a failed mount.
    pub fn status(kind: ErrorKind) -> u8 {
        match kind {
            ErrorKind::Usage | ErrorKind::Permission => USAGE,
            _ => FAILURE,
        }
    }
}

/// A failed subcommand: a complete one-line message, its class, and the library error it came
/// from (kept as the `source`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    message: String,
    class: ErrorClass,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error of `class` with `message` and no source.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            class,
            source: None,
        }
    }

    /// A usage error (bad arguments).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Usage, message)
    }

    /// An I/O failure of the command itself (a file it writes or canonicalizes).
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Io, message)
    }

    /// The same error with `what: ` before its message (a library error that does not name the
    /// file it concerns).
    pub fn about(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Its class.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// Its exit status.
    pub fn exit_status(&self) -> u8 {
        exit_status(self.class)
    }
}

/// Any classified library error: the message is its own (it names the file and the problem),
/// the class its own.
impl<E> From<E> for Error
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(e: E) -> Self {
        Self {
            message: e.to_string(),
            class: e.class(),
            source: Some(Box::new(e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_the_status_the_help_promises() {
        for (class, status, help) in [
            (ErrorClass::Corrupt, 1, "1 corrupt"),
            (ErrorClass::Unsupported, 1, "or unsupported image"),
            (ErrorClass::Usage, 2, "2 usage error"),
            (ErrorClass::Io, 3, "3 an input could not be read"),
            (ErrorClass::Network, 4, "4 a registry could not be reached"),
        ] {
            assert_eq!(exit_status(class), status, "{class:?}");
            assert!(exit_help!().contains(help), "{help:?}");
        }
    }

    #[test]
    fn a_library_error_keeps_its_message_class_and_source() {
        let lib = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = Error::from(lib).about("out.img");
        assert_eq!(e.class(), ErrorClass::Io);
        assert_eq!(e.exit_status(), EXIT_IO);
        assert!(e.to_string().starts_with("out.img: "), "{e}");
        let source = std::error::Error::source(&e).unwrap();
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }
}
