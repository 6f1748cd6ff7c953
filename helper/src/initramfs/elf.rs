//! Just enough ELF parsing to tell whether an executable needs a dynamic loader, which an
//! initramfs without a libc cannot provide.

/// The errors of [`is_static`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not a 64-bit little-endian ELF file.
    #[error("not a 64-bit little-endian ELF executable")]
    NotElf64,
    /// The program header table lies outside the file.
    #[error("truncated ELF program headers")]
    Truncated,
}

const PT_INTERP: u32 = 3;

/// Whether the ELF executable `bytes` has no `PT_INTERP` program header, i.e. runs without a
/// dynamic loader (static and static-pie binaries).
pub fn is_static(bytes: &[u8]) -> Result<bool, Error> {
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err(Error::NotElf64);
    }
    let phoff = read_u64(bytes, 0x20)?;
    let phentsize = u64::from(read_u16(bytes, 0x36)?);
    let phnum = u64::from(read_u16(bytes, 0x38)?);
    if phentsize < 4 {
        return Err(Error::Truncated);
    }
    for index in 0..phnum {
        let at = index
            .checked_mul(phentsize)
            .and_then(|off| off.checked_add(phoff))
            .and_then(|off| usize::try_from(off).ok())
            .ok_or(Error::Truncated)?;
        if read_u32(bytes, at)? == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], Error> {
    let end = at.checked_add(N).ok_or(Error::Truncated)?;
    let slice = bytes.get(at..end).ok_or(Error::Truncated)?;
    slice.try_into().map_err(|_| Error::Truncated)
}

fn read_u16(bytes: &[u8], at: usize) -> Result<u16, Error> {
    field(bytes, at).map(u16::from_le_bytes)
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, Error> {
    field(bytes, at).map(u32::from_le_bytes)
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64, Error> {
    field(bytes, at).map(u64::from_le_bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_system_binary_is_not_static() {
        // /bin/ls on Debian is dynamically linked; busybox-static is not.
        let ls = std::fs::read("/bin/ls").unwrap();
        assert_eq!(is_static(&ls), Ok(false));
        match std::fs::read("/bin/busybox") {
            Ok(busybox) => assert_eq!(is_static(&busybox), Ok(true)),
            Err(_) => eprintln!("skipping the static half: /bin/busybox is not installed"),
        }
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(is_static(b"#!/bin/sh\n"), Err(Error::NotElf64));
        let mut header = b"\x7fELF\x02\x01".to_vec();
        header.resize(0x40, 0);
        header[0x20] = 0xff; // phoff far beyond the end
        header[0x36] = 56;
        header[0x38] = 1;
        assert_eq!(is_static(&header), Err(Error::Truncated));
    }
}
