//! The error every subcommand returns, classified for the exit status.

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: the image is corrupt or unsupported, or the command failed.
pub const EXIT_CORRUPT: i32 = 1;
/// Exit status: bad usage (arguments).
pub const EXIT_USAGE: i32 = 2;
/// Exit status: an input or output could not be read or written (I/O).
pub const EXIT_IO: i32 = 3;

/// The exit-status table printed in every command's `--help` (a macro so `concat!` can use it).
#[macro_export]
macro_rules! exit_help {
    () => {
        "Exit status: 0 ok; 1 corrupt or unsupported image, or another failure; 2 usage error;\n3 an input could not be read or an output written (I/O)."
    };
}

/// A failed subcommand: a complete one-line message and its class.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What went wrong, naming the file and the problem.
    pub message: String,
    /// The exit status.
    pub exit_code: i32,
}

impl Error {
    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: EXIT_USAGE,
        }
    }

    /// An I/O failure.
    pub fn io(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: EXIT_IO,
        }
    }

    /// A corrupt image or other failure.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            exit_code: EXIT_CORRUPT,
        }
    }
}

impl From<chunkfs_format::cfs::read::Error> for Error {
    fn from(e: chunkfs_format::cfs::read::Error) -> Self {
        let code = if e.is_io() { EXIT_IO } else { EXIT_CORRUPT };
        Self {
            message: e.to_string(),
            exit_code: code,
        }
    }
}

impl From<chunkfs_format::cfs::write::Error> for Error {
    fn from(e: chunkfs_format::cfs::write::Error) -> Self {
        use chunkfs_format::cfs::write::Error as W;
        let code = match &e {
            W::Io { .. }
            | W::Scan(_)
            | W::Build {
                source: chunkfs_format::build::Error::Sink { .. },
                ..
            } => EXIT_IO,
            _ => EXIT_CORRUPT,
        };
        Self {
            message: e.to_string(),
            exit_code: code,
        }
    }
}

impl From<chunkfs_format::unpack::Error> for Error {
    fn from(e: chunkfs_format::unpack::Error) -> Self {
        use chunkfs_format::unpack::ErrorKind as K;
        let code = match &e.kind {
            K::Io { .. } => EXIT_IO,
            K::NotEmpty => EXIT_USAGE,
            _ => EXIT_CORRUPT,
        };
        Self {
            message: e.to_string(),
            exit_code: code,
        }
    }
}
