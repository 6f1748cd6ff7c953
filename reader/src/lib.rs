//! The chunkfs FUSE reader: serves a parsed EROFS descriptor (`chunkfs-kernel-abi`) over FUSE,
//! reading zstd chunk frames from the image or pack files and checking each chunk's sha256
//! against the digest table before any of its bytes are served.
//!
//! It knows nothing of Cap'n Proto, OCI or the `.cfs` container: its inputs are the descriptor,
//! the digest table and the device files.
