#!/usr/bin/env python3
"""Tamper with one chunk of a .cfs image the way an attacker would, not the way rot does.

    boot-tamper.py IMAGE

Finds the first raw zstd frame (an incompressible chunk, docs/format.md section 4.3) in the
chunk region, changes one byte of its content and rewrites the frame's XXH64 content checksum
to match. The frame still decodes cleanly, to different bytes: only the sha256 of the chunk
(the chunk index and the metadata name it) can tell. The header, metadata and index are left
as they were, so the image still carries its pinned metadata digest. Prints the offset of the
changed byte.
"""

import struct
import sys

MAGIC = b"\x28\xb5\x2f\xfd"
M64 = (1 << 64) - 1
P1, P2, P3, P4, P5 = (
    0x9E3779B185EBCA87,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0x85EBCA77C2B2AE63,
    0x27D4EB2F165667C5,
)


def rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def xxh64(data, seed=0):
    """XXH64 as the zstd frame format uses it (the reference algorithm, little-endian)."""
    n = len(data)
    i = 0

    def rnd(acc, lane):
        return (rotl((acc + lane * P2) & M64, 31) * P1) & M64

    def merge(acc, v):
        return ((acc ^ rnd(0, v)) * P1 + P4) & M64

    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed, (seed - P1) & M64]
        while i + 32 <= n:
            lanes = struct.unpack_from("<4Q", data, i)
            v = [rnd(a, b) for a, b in zip(v, lanes)]
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M64
        for x in v:
            h = merge(h, x)
    else:
        h = (seed + P5) & M64
    h = (h + n) & M64
    while i + 8 <= n:
        (k,) = struct.unpack_from("<Q", data, i)
        h = (rotl(h ^ rnd(0, k), 27) * P1 + P4) & M64
        i += 8
    if i + 4 <= n:
        (k,) = struct.unpack_from("<I", data, i)
        h = (rotl(h ^ (k * P1 & M64), 23) * P2 + P3) & M64
        i += 4
    while i < n:
        h = (rotl(h ^ (data[i] * P5 & M64), 11) * P1) & M64
        i += 1
    h ^= h >> 33
    h = (h * P2) & M64
    h ^= h >> 29
    h = (h * P3) & M64
    h ^= h >> 32
    return h


def frames(buf, start, end):
    """Yields (frame start, content checksum offset or None, raw block ranges or None)."""
    pos = start
    while pos < end:
        if buf[pos] == 0:  # padding in front of an aligned frame
            pos += 1
            continue
        if buf[pos : pos + 4] != MAGIC:
            sys.exit(f"boot-tamper: no zstd frame at byte {pos}")
        fhd = buf[pos + 4]
        single, checksum, dict_flag, fcs_flag = fhd >> 5 & 1, fhd >> 2 & 1, fhd & 3, fhd >> 6
        p = pos + 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
        p += (1 if single else 0, 2, 4, 8)[fcs_flag]
        raw, all_raw = [], True
        while True:
            (bh,) = struct.unpack("<I", buf[p : p + 3] + b"\0")
            last, btype, size = bh & 1, bh >> 1 & 3, bh >> 3
            p += 3
            if btype == 0:
                raw.append((p, p + size))
            else:
                all_raw = False
            p += 1 if btype == 1 else size
            if last:
                break
        yield pos, (p if checksum else None), (raw if all_raw else None)
        pos = p + (4 if checksum else 0)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    chunks_off, chunks_len = struct.unpack_from("<QQ", buf, 80)
    for start, csum_at, raw in frames(buf, chunks_off, chunks_off + chunks_len):
        if csum_at is None or not raw or any(a == b for a, b in raw):
            continue
        a, b = raw[0]
        at = (a + b) // 2
        buf[at] ^= 0x20
        content = b"".join(bytes(buf[x:y]) for x, y in raw)
        buf[csum_at : csum_at + 4] = struct.pack("<I", xxh64(content) & 0xFFFFFFFF)
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(buf[at : at + 1])
            f.seek(csum_at)
            f.write(buf[csum_at : csum_at + 4])
        print(at)
        return
    sys.exit(f"boot-tamper: {path} has no raw frame with a checksum to tamper with")


if __name__ == "__main__":
    main()
