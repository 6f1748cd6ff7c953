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
