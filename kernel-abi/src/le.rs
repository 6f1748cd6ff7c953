//! Little-endian integers with alignment 1, so on-disk structs have no padding.

macro_rules! le_int {
    ($name:ident, $ty:ty, $n:expr) => {
        #[doc = concat!("A little-endian `", stringify!($ty), "` stored as ", stringify!($n), " bytes, alignment 1.")]
        #[repr(transparent)]
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; $n]);

        impl $name {
            /// Encodes a native value.
            pub const fn new(v: $ty) -> Self {
                Self(v.to_le_bytes())
            }
            /// Decodes to a native value.
            pub const fn get(self) -> $ty {
                <$ty>::from_le_bytes(self.0)
            }
        }

        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                Self::new(v)
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(&self.get(), f)
            }
        }
    };
}

le_int!(Le16, u16, 2);
le_int!(Le32, u32, 4);
le_int!(Le64, u64, 8);

const _: () = assert!(core::mem::size_of::<Le64>() == 8 && core::mem::align_of::<Le64>() == 1);
