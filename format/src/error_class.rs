//! What kind of failure an error is: one classification shared by every library, so the
//! command line decides exit statuses in one place (`helper/src/error.rs`) and callers can tell
//! a retryable network failure from a corrupt image without matching error variants.

/// The class of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Bad arguments or references: the caller asked for something malformed.
    Usage,
    /// A local file could not be read or written (missing, permissions, disk full).
    Io,
    /// The input is damaged or hostile: a digest, a structure or a limit does not check.
    Corrupt,
    /// The input is valid but needs something this build or this kernel does not have.
    Unsupported,
    /// A registry could not be reached or did not answer in time; retrying may succeed.
    Network,
}

/// An error that knows its [`ErrorClass`]. Every library error implements it, so the command
/// line maps classes to exit statuses in one place, and code that carries another's error (a
/// callback's, a boxed source) can classify it without knowing its type.
pub trait Classify {
    /// The class of this failure.
    fn class(&self) -> ErrorClass;
}

/// An OS error is an I/O failure, unless the reader that produced it said that the bytes it was
/// given do not decode ([`std::io::ErrorKind::InvalidData`]) or end too soon
/// ([`std::io::ErrorKind::UnexpectedEof`]): adapters that turn a parse error into an
/// `io::Error` (a tar layer read through `std::io::Read`) use those kinds on purpose.
impl Classify for std::io::Error {
    fn class(&self) -> ErrorClass {
        match self.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                ErrorClass::Corrupt
            }
            _ => ErrorClass::Io,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_io_unless_the_data_was_bad() {
        use std::io::{Error, ErrorKind};
        assert_eq!(Error::from(ErrorKind::NotFound).class(), ErrorClass::Io);
        assert_eq!(
            Error::other("a library's complaint").class(),
            ErrorClass::Io
        );
        assert_eq!(Error::from_raw_os_error(5).class(), ErrorClass::Io);
        assert_eq!(
            Error::from(ErrorKind::InvalidData).class(),
            ErrorClass::Corrupt
        );
        assert_eq!(
            Error::from(ErrorKind::UnexpectedEof).class(),
            ErrorClass::Corrupt
        );
    }
}
