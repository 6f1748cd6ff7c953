"""What bounds every figure on this machine: CPU, memory bandwidth, sha256 and zstd speed per
core, and how fast the disk delivers an image with cold caches."""

import json
import os
import platform
import re
import subprocess
import time

from . import proc


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def zstd_cli(sample, level):
    """`zstd -bL` on the sample: (compress, decompress) bytes per second, one thread."""
    # zstd -b reports on stderr, rewriting one line with carriage returns: keep the last figures.
    out = subprocess.run(["zstd", f"-b{level}", "-i2", sample], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT).stdout.decode(errors="replace")
    found = re.findall(r"([\d.]+) MB/s,\s+([\d.]+) MB/s", out.replace("\r", "\n"))
    if not found:
        return None
    c, d = found[-1]
    return float(c) * 1e6, float(d) * 1e6


def cold_read(path):
    """Bytes per second reading `path` sequentially right after dropping caches."""
    proc.drop_caches()
    buf = bytearray(1 << 20)
    total = 0
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            total += n
    return total / (time.perf_counter() - t0)


def measure(io_bin, sample, image):
    j = json.loads(proc.run([io_bin, "limits", "--sample", sample]).stdout)
    z3 = zstd_cli(sample, 3)
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "mem_bytes": _mem_total(),
        "kernel": platform.release(),
        "memcpy": j["memcpy_bytes_per_s"], "sha256": j["sha256_bytes_per_s"],
        "zstd9_compress": j["zstd9_compress_bytes_per_s"],
        "zstd_decompress": j["zstd_decompress_bytes_per_s"],
        "zstd_cli_3": z3,
        "disk_cold_read": cold_read(image), "disk_sample": os.path.basename(image),
    }
