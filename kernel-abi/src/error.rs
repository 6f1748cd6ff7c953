//! The one error type of the crate.

/// Why a descriptor or digest table was refused. `Copy`, so a parser can return it cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbiError {
    /// The input ends before a structure it declares.
    Truncated {
        /// Which structure.
        what: &'static str,
    },
    /// A magic number is wrong.
    BadMagic {
        /// Which structure.
        what: &'static str,
    },
    /// A version this crate does not know.
    UnknownVersion {
        /// Which structure.
        what: &'static str,
        /// The version found.
        version: u32,
    },
    /// Incompatible feature bits this crate does not understand.
    UnknownIncompat(u32),
    /// A reference points outside its table or device.
    OutOfRange {
        /// Which table or kind of reference.
        table: &'static str,
        /// The offending index or address.
        index: u64,
    },
    /// Entries that must be sorted are not, or overlap.
    Unsorted {
        /// Which table.
        table: &'static str,
        /// Index of the first entry out of order.
        index: u64,
    },
    /// A field holds a value the format forbids.
    BadField {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A valid EROFS construct this reader does not implement (e.g. an LZ4-compressed extent).
    Unsupported {
        /// What is not supported.
        what: &'static str,
        /// The value found.
        value: u64,
    },
}

impl AbiError {
    /// The errno a filesystem should report for this error (EIO for corruption, EOPNOTSUPP for
    /// features this reader lacks).
    pub const fn to_errno(self) -> i32 {
        const EIO: i32 = 5;
        const EOPNOTSUPP: i32 = 95;
        match self {
            Self::UnknownVersion { .. } | Self::UnknownIncompat(_) | Self::Unsupported { .. } => {
                EOPNOTSUPP
            }
            _ => EIO,
        }
    }
}

impl core::fmt::Display for AbiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Truncated { what } => write!(f, "{what} is truncated"),
            Self::BadMagic { what } => write!(f, "{what} has a bad magic number"),
            Self::UnknownVersion { what, version } => {
                write!(f, "{what} has unknown version {version}")
            }
            Self::UnknownIncompat(bits) => write!(f, "unknown incompatible feature bits {bits:#x}"),
            Self::OutOfRange { table, index } => {
                write!(f, "{table} reference {index} is out of range")
            }
            Self::Unsorted { table, index } => {
                write!(f, "{table} entry {index} is out of order or overlaps")
            }
            Self::BadField { field, value } => write!(f, "{field} has invalid value {value}"),
            Self::Unsupported { what, value } => write!(f, "unsupported {what} ({value})"),
        }
    }
}

impl core::error::Error for AbiError {}

/// An [`AbiError`] found while validating a descriptor, with the nid of the inode it was found in
/// (`None` for the superblock, compression configs and device table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The inode being validated, if any.
    pub nid: Option<u64>,
    /// What is wrong.
    pub error: AbiError,
}

impl ParseError {
    /// The errno a filesystem should report (see [`AbiError::to_errno`]).
    pub const fn to_errno(self) -> i32 {
        self.error.to_errno()
    }
}

impl From<AbiError> for ParseError {
    fn from(error: AbiError) -> Self {
        Self { nid: None, error }
    }
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.nid {
            Some(nid) => write!(f, "inode nid {nid}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

impl core::error::Error for ParseError {}
