# chunkfs image metadata, version 1 (docs/format.md §3 is normative; this file is the schema).
#
# One metadata blob = one Cap'n Proto message in canonical form (single segment, no far pointers)
# whose root is `Image`, compressed as one zstd frame. Its sha256 is the image's metadata digest.
# The metadata never records where a chunk is stored: the same blob describes the image in a
# `.cfs` and in an OCI layout.

@0x8b379e2020e6bdb4;

struct Image {
  formatVersion @0 :UInt32;
  # Schema version this image was written with: 1. A reader refuses versions it does not know.

  incompatFeatures @1 :UInt64;
  # Bits a reader must understand to read the image correctly; 0 in version 1. A reader refuses
  # an image with any bit it does not know.

  compatFeatures @2 :UInt64;
  # Bits a reader may ignore (docs/format.md §8). Bit 0, PREFETCH: `prefetch` is not empty.

  chunks @3 :List(Chunk);
  # Every distinct chunk, each once; a `ChunkIdx` is an index into this list. Ordered by first use
  # when the inodes are visited in order (file extents and packed-stream chunks interleaved as the
  # packer produced them), so the order is a pure function of the tree.

  packedStream @4 :List(UInt32);
  # The packed stream: the concatenation of these chunks' bytes. Small files live in it at byte
  # offsets (`File.packed`); in the EROFS descriptor it becomes the packed inode of fragments.

  inodes @5 :List(Inode);
  # Inode 0 is the root directory. Every inode is reachable from the root; a non-directory may be
  # reachable under several names (hard links; its link count is the number of names); a
  # directory exactly once. Inodes are numbered in visiting order: depth first from the root,
  # entries in name order, an inode at its first name.

  prefetch @6 :List(UInt32);
  # The prefetch list (docs/format.md §3.6): chunk numbers in the order a recorded workload first
  # read them, each at most once. A hint for readers that fetch chunks lazily; the tree is the
  # same without it. Absent (a null pointer, so older images keep their bytes) when there is no
  # list; when present, compatFeatures bit 0 is set, so that older readers accept the image and
  # ignore the list.
}

struct Chunk {
  digest @0 :Data;
  # sha256 of the chunk's uncompressed bytes, 32 bytes.

  size @1 :UInt32;
  # Uncompressed length in bytes, 1 ..= 1 MiB.
}

struct Xattr {
  name @0 :Data;
  # Full name including its namespace prefix, e.g. "user.comment", "security.capability".

  value @1 :Data;
}

struct DirEntry {
  name @0 :Data;
  # Raw bytes, 1 ..= 255, no '/' or NUL, not "." or "..".

  inode @1 :UInt32;
  # Index into Image.inodes.
}

struct Extent {
  offset @0 :UInt64;
  # Logical byte offset in the file where the chunk's bytes start.

  chunk @1 :UInt32;
  # Index into Image.chunks; the extent covers that chunk's whole uncompressed length.
}

struct File {
  size @0 :UInt64;
  # Length in bytes (st_size).

  union {
    extents @1 :List(Extent);
    # Sorted by offset, non-overlapping, inside [0, size). Bytes not covered are holes (zeros).

    packed @2 :UInt64;
    # The file's bytes are packedStream[packed .. packed + size].
  }
}

struct Inode {
  mode @0 :UInt32;
  # st_mode: the S_IFMT type bits and the 12 permission bits (suid, sgid, sticky included).

  uid @1 :UInt32;
  gid @2 :UInt32;

  mtimeSec @3 :Int64;
  # Seconds since 1970-01-01T00:00:00Z; negative before it.

  mtimeNsec @4 :UInt32;
  # 0 ..= 999,999,999.

  xattrs @5 :List(Xattr);
  # Sorted by name, names unique.

  union {
    directory @6 :List(DirEntry);
    # Sorted by name bytes (memcmp order), names unique; no "." or "..".

    file @7 :File;

    symlink @8 :Data;
    # Target bytes, 1 ..= 4095.

    device @9 :Device;
    # Character or block device; the type is in `mode`.

    special @10 :Void;
    # FIFO or socket; the type is in `mode`.
  }
}

struct Device {
  major @0 :UInt32;
  minor @1 :UInt32;
}
