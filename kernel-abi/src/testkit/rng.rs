//! The one pseudo-random generator of every crate's tests (feature `testkit`): xorshift64
//! (Marsaglia 2003), deterministic so every run builds the same data and tries the same cases,
//! and without dependencies so `no_std` code and the fuzz harnesses can use it too. Not for
//! anything but tests.

/// A xorshift64 generator: `x ^= x << 13; x ^= x >> 7; x ^= x << 17`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XorShift64(u64);

/// Spreads nearby seeds over the state space (2^64 / φ).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl XorShift64 {
    /// A generator starting from `state` exactly (a zero state would stay zero: it becomes
    /// [`GOLDEN`]).
    pub const fn new(state: u64) -> Self {
        Self(if state == 0 { GOLDEN } else { state })
    }

    /// A generator for `seed`: nearby seeds give unrelated streams.
    pub const fn from_seed(seed: u64) -> Self {
        Self::new(seed.wrapping_mul(GOLDEN) | 1)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// Fills `buf` with the little-endian bytes of successive outputs.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for part in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            part.copy_from_slice(&v[..part.len()]);
        }
    }

    /// `len` bytes from [`fill`](Self::fill): incompressible test data.
    pub fn bytes(&mut self, len: usize) -> alloc::vec::Vec<u8> {
        let mut v = alloc::vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_the_one_the_tests_were_written_against() {
        // The first outputs of the state 1, computed by hand from the three shifts.
        let mut r = XorShift64::new(1);
        assert_eq!(r.next_u64(), 0x0000_0000_4082_2041);
        assert_eq!(r.next_u64(), 0x1000_4106_0c01_1441);
        let mut a = XorShift64::from_seed(7);
        let mut b = XorShift64::new(7u64.wrapping_mul(GOLDEN) | 1);
        assert_eq!(a.bytes(20), b.bytes(20));
        assert_eq!(XorShift64::new(0), XorShift64::new(GOLDEN));
        assert!((0..1000).all(|_| a.below(10) < 10));
        assert_eq!(a.below(0), 0);
    }
}
