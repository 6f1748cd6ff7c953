//! Checked reads and arithmetic on untrusted offsets: every helper returns `None` instead of
//! overflowing or going out of bounds.

use crate::pod::Pod;

/// `len` bytes at `off`, if they are inside `bytes`.
pub(crate) fn slice(bytes: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(start..end)
}

/// A copy of the `T` at byte `off`.
pub(crate) fn read<T: Pod>(bytes: &[u8], off: u64) -> Option<T> {
    T::read_at(bytes, usize::try_from(off).ok()?)
}

/// The little-endian `u16` at `off`.
pub(crate) fn le16(bytes: &[u8], off: u64) -> Option<u16> {
    let b = slice(bytes, off, 2)?;
    Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
}

/// The little-endian `u32` at `off`.
pub(crate) fn le32(bytes: &[u8], off: u64) -> Option<u32> {
    let b: [u8; 4] = slice(bytes, off, 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// The little-endian `u64` at `off`.
pub(crate) fn le64(bytes: &[u8], off: u64) -> Option<u64> {
    let b: [u8; 8] = slice(bytes, off, 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// `v` rounded up to a multiple of `align`, a power of two.
pub(crate) fn round_up(v: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    Some(v.checked_add(mask)? & !mask)
}

/// `ceil(v / 2^bits)`.
pub(crate) fn div_ceil_shift(v: u64, bits: u32) -> Option<u64> {
    let unit = 1u64.checked_shl(bits)?;
    Some(v.div_ceil(unit))
}

/// `v << bits`, if nothing is shifted out.
pub(crate) fn shl(v: u64, bits: u32) -> Option<u64> {
    let r = v.checked_shl(bits)?;
    if r.checked_shr(bits)? == v {
        Some(r)
    } else {
        None
    }
}

/// `v mod 2^bits`.
pub(crate) fn low_bits(v: u64, bits: u32) -> u64 {
    match 1u64.checked_shl(bits) {
        Some(unit) => v & unit.wrapping_sub(1),
        None => v,
    }
}
