//! The registry client's error: every message names the repository (`docker://HOST/REPO`), the
//! object (manifest, blob, range, token) and what is wrong; `class()` sorts it for the CLI.

use chunkfs_format::Classify as _;
use chunkfs_format::ErrorClass;

use crate::registry::reference::ParseError;
use crate::source::SourceError;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The reference is malformed.
    #[error(transparent)]
    Reference(#[from] ParseError),
    /// The caller asked for something impossible (a range outside the blob, a bad option).
    #[error("{at}: {what}: {reason}")]
    Usage {
        /// The repository.
        at: String,
        /// The object.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// An auth file or a certificate could not be read.
    #[error("{}: {reason}", path.display())]
    LocalFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<std::io::Error>,
    },
    /// An auth file or a certificate is malformed.
    #[error("{}: {reason}", path.display())]
    BadLocalFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The registry could not be reached, timed out, was too slow, or kept failing (5xx, 429)
    /// after the retries.
    #[error("{at}: {what}: {reason}")]
    Network {
        /// The repository.
        at: String,
        /// The object.
        what: String,
        /// What happened, with the number of attempts.
        reason: String,
    },
    /// The registry refused the credentials, or wants credentials none were found for.
    #[error("{at}: {what}: {reason}")]
    Unauthorized {
        /// The repository.
        at: String,
        /// The object.
        what: String,
        /// Which credentials were tried, or where none were found.
        reason: String,
    },
    /// The registry answered with a client error: the manifest or blob does not exist, access
    /// is denied, the request was refused.
    #[error("{at}: {what}: {reason}")]
    Refused {
        /// The repository.
        at: String,
        /// The object.
        what: String,
        /// The status and the registry's own error, if it sent one.
        reason: String,
    },
    /// The answer does not check: digest mismatch, wrong range, oversized or malformed document.
    #[error("{at}: {what}: {reason}")]
    Corrupt {
        /// The repository.
        at: String,
        /// The object.
        what: String,
        /// What does not check.
        reason: String,
    },
    /// The answer is valid but not something chunkfs handles (schema 1, unknown media type).
    #[error("{at}: {what}: {reason}")]
    Unsupported {
        /// The repository.
        at: String,
        /// The object.
        what: String,
        /// What is not supported.
        reason: String,
    },
    /// Writing a streamed blob to the caller's writer failed.
    #[error("{at}: {what}: cannot write it: {source}")]
    Write {
        /// The repository.
        at: String,
        /// The object.
        what: String,
        /// The writer's error.
        source: std::io::Error,
    },
}

impl chunkfs_format::Classify for Error {
    /// The class of the failure (exit status, retry decisions).
    fn class(&self) -> ErrorClass {
        match self {
            Error::Reference(_) | Error::Usage { .. } | Error::Unauthorized { .. } => {
                ErrorClass::Usage
            }
            Error::Refused { .. } | Error::BadLocalFile { .. } => ErrorClass::Usage,
            Error::LocalFile { .. } | Error::Write { .. } => ErrorClass::Io,
            Error::Network { .. } => ErrorClass::Network,
            Error::Corrupt { .. } => ErrorClass::Corrupt,
            Error::Unsupported { .. } => ErrorClass::Unsupported,
        }
    }
}

impl From<Error> for SourceError {
    fn from(e: Error) -> Self {
        SourceError::new(e.class(), e.to_string())
    }
}

/// Where an operation happens, to build errors that name it.
#[derive(Clone, Debug)]
pub(crate) struct At {
    /// `docker://HOST/REPO`.
    pub repo: String,
    /// `manifest TAG`, `blob sha256:...`, `blob sha256:... bytes A-B`.
    pub what: String,
}

impl At {
    pub(crate) fn new(repo: &str, what: impl Into<String>) -> Self {
        Self {
            repo: repo.to_owned(),
            what: what.into(),
        }
    }

    pub(crate) fn usage(&self, reason: impl Into<String>) -> Error {
        Error::Usage {
            at: self.repo.clone(),
            what: self.what.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn network(&self, reason: impl Into<String>) -> Error {
        Error::Network {
            at: self.repo.clone(),
            what: self.what.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unauthorized(&self, reason: impl Into<String>) -> Error {
        Error::Unauthorized {
            at: self.repo.clone(),
            what: self.what.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn refused(&self, reason: impl Into<String>) -> Error {
        Error::Refused {
            at: self.repo.clone(),
            what: self.what.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            at: self.repo.clone(),
            what: self.what.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(&self, reason: impl Into<String>) -> Error {
        Error::Unsupported {
            at: self.repo.clone(),
            what: self.what.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn write(&self, source: std::io::Error) -> Error {
        Error::Write {
            at: self.repo.clone(),
            what: self.what.clone(),
            source,
        }
    }
}
