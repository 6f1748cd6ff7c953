//! Byte views of the on-disk structs.
//!
//! This is the only module of the crate with `unsafe`: every type that implements [`Pod`] is
//! `#[repr(C)]`, built only from `u8` arrays and `Le*` integers (alignment 1), and has a
//! compile-time size assertion, so it has no padding and every bit pattern is valid.
#![allow(unsafe_code)]

/// Plain old data: any byte string of `size_of::<Self>()` bytes is a valid value.
///
/// # Safety
/// Implementors must be `#[repr(C)]` or `#[repr(transparent)]`, have alignment 1, contain no
/// padding, and be valid for every bit pattern.
pub unsafe trait Pod: Copy + 'static {
    /// Views `bytes` as `Self` if it is exactly the right length.
    fn ref_from(bytes: &[u8]) -> Option<&Self> {
        if bytes.len() != core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length matches, alignment is 1 and every bit pattern is valid (trait contract).
        Some(unsafe { &*(bytes.as_ptr().cast::<Self>()) })
    }

    /// Views the first `size_of::<Self>()` bytes of `bytes` as `Self`, returning the rest.
    fn ref_from_prefix(bytes: &[u8]) -> Option<(&Self, &[u8])> {
        let n = core::mem::size_of::<Self>();
        if bytes.len() < n {
            return None;
        }
        let (head, rest) = bytes.split_at(n);
        Self::ref_from(head).map(|v| (v, rest))
    }

    /// Reads a copy of `Self` at byte offset `off`, or `None` if it does not fit.
    fn read_at(bytes: &[u8], off: usize) -> Option<Self> {
        let end = off.checked_add(core::mem::size_of::<Self>())?;
        bytes.get(off..end).and_then(Self::ref_from).copied()
    }

    /// The value's bytes.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self` has no padding (trait contract), so all its bytes are initialised.
        unsafe {
            core::slice::from_raw_parts(
                (self as *const Self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }

    /// An all-zero value.
    fn zeroed() -> Self {
        // SAFETY: every bit pattern, including all zeros, is valid (trait contract).
        unsafe { core::mem::zeroed() }
    }
}

/// Implements [`Pod`] for on-disk structs after checking alignment 1 at compile time.
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {$(
        const _: () = assert!(core::mem::align_of::<$t>() == 1);
        // SAFETY: `$t` is `#[repr(C)]` or `#[repr(transparent)]` over `u8` arrays and `Le*`
        // fields only (alignment 1, asserted above), and its size is asserted next to its
        // definition to equal the sum of its fields, so it has no padding.
        unsafe impl Pod for $t {}
    )*};
}

// Every on-disk type of the crate; a new one must be added here.
impl_pod!(
    crate::le::Le16,
    crate::le::Le32,
    crate::le::Le64,
    crate::erofs::SuperBlock,
    crate::erofs::DeviceSlot,
    crate::erofs::InodeCompact,
    crate::erofs::InodeExtended,
    crate::erofs::XattrIbodyHeader,
    crate::erofs::XattrEntry,
    crate::erofs::Dirent,
    crate::erofs::ZstdCfgs,
    crate::erofs::MapHeader,
    crate::erofs::Extent,
    crate::erofs::LclusterIndex,
    crate::digest_table::DigestTableHeader,
    crate::digest_table::DigestEntry,
);
