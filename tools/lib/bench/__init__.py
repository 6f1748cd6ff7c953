"""tools/bench: the benchmark of chunkfs against squashfs, EROFS and tar (see tools/bench)."""
