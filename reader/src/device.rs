//! The seam between the reader and where device bytes live: a mapped file ([`crate::devices`]),
//! or a device whose bytes are fetched when first read (a registry image's pack, filled into the
//! local store by the helper). The reader checks every chunk it reads through a device against
//! its digest, whatever the device; a device only has to return the bytes it holds.

use std::borrow::Cow;
use std::sync::Arc;

/// Why a device could not return bytes it should hold: the registry is unreachable, the store
/// failed, the bytes fetched did not check. Reads that need them fail with EIO; nothing is
/// cached, so a later read tries again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(pub String);

/// An extra device of the descriptor (device ids 1, 2, ...), read at byte offsets.
pub trait Device: Send + Sync {
    /// The device's length in bytes.
    fn len(&self) -> u64;

    /// Whether the device is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Exactly the `len` bytes at `offset`, borrowed when they are in memory already. A range
    /// past the end is an error.
    fn read_at(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>, DeviceError>;

    /// A short name for messages (a path, a pack digest).
    fn name(&self) -> String;
}

/// How [`crate::Config`] names an extra device.
#[derive(Clone)]
pub enum DeviceSpec {
    /// A file (or block device) mapped read-only.
    File(std::path::PathBuf),
    /// A device the caller provides, e.g. one filled lazily.
    Custom(Arc<dyn Device>),
}

impl std::fmt::Debug for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::File(p) => f.debug_tuple("File").field(p).finish(),
            DeviceSpec::Custom(d) => f.debug_tuple("Custom").field(&d.name()).finish(),
        }
    }
}

impl From<std::path::PathBuf> for DeviceSpec {
    fn from(path: std::path::PathBuf) -> Self {
        DeviceSpec::File(path)
    }
}

/// Bytes `[offset, offset + len)` of an in-memory device.
pub(crate) fn slice(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let a = usize::try_from(offset).ok()?;
    let b = a.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(a..b)
}
