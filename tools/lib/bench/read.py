"""Reading: each test runs on a fresh mount after all caches are dropped (cold), then again on
the same mount (warm). Contenders are interleaved, their order rotated every round.

Tests: `readall` (every file once, one reader), `readall4` (four readers in parallel), `find`,
`ls -lR`, `randread` (random 4 KiB reads of the tree's large files: see `randread_min_size`).
Every cold mount is timed; the FUSE daemons' memory is read after the warm run of each test.
"""

import json
import os
import stat

from . import mounts, proc

TESTS = ["readall", "readall4", "find", "lsR", "randread"]

#: Random reads go to files of at least the largest of these sizes that RANDREAD_FILES files reach.
RANDREAD_SIZES = [1 << 20, 512 << 10, 256 << 10, 128 << 10, 64 << 10]
RANDREAD_FILES = 20


def randread_min_size(src):
    """The smallest file size random reads of `src` go to: 1 MiB, unless fewer than
    RANDREAD_FILES files are that large (the Linux sources have 3, so 2,000 reads of them took
    10-30 ms, mostly page-cache hits after a few misses: noise), then the largest smaller size
    that enough files reach."""
    # Every path, hard links included, as chunkfs-bench-io picks its files by path.
    sizes = []
    for root, _dirs, files in os.walk(src):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            if stat.S_ISREG(st.st_mode):
                sizes.append(st.st_size)
    for floor in RANDREAD_SIZES:
        if sum(1 for n in sizes if n >= floor) >= RANDREAD_FILES:
            return floor
    return RANDREAD_SIZES[-1]


def _run_test(test, io_bin, target, randreads, min_size):
    if test in ("readall", "readall4"):
        threads = "4" if test == "readall4" else "1"
        r = proc.run([io_bin, "readall", target, "--threads", threads])
        j = json.loads(r.stdout)
        return {"secs": j["secs"], "bytes": j["bytes"], "files": j["files"], "cpu": r.cpu}
    if test in ("find", "lsR"):
        r = proc.run(["find", target] if test == "find" else ["ls", "-lR", target],
                     stdout=False)
        return {"secs": r.wall, "cpu": r.cpu}
    if test == "randread":
        r = proc.run([io_bin, "randread", target, "--count", str(randreads), "--min-size",
                      str(min_size)], check=False)
        if r.stdout.strip() == "":
            return None
        j = json.loads(r.stdout)
        return {"secs": j["secs"], "iops": j["iops"], "p50_us": j["p50_us"],
                "p99_us": j["p99_us"], "files": j["files"], "min_size": min_size, "cpu": r.cpu}
    raise ValueError(test)


def run_corpus(name, contenders, target, io_bin, runs, tests, randreads, min_size):
    """Returns {contender: {test: [{"cold": .., "warm": .., "mount_s": .., "mem": ..}]}}.
    Random reads go to files of at least `min_size` bytes (`randread_min_size`)."""
    results = {c.name: {t: [] for t in tests} for c in contenders}
    for r in range(runs):
        for ti, test in enumerate(tests):
            k = (r + ti) % len(contenders)
            for c in contenders[k:] + contenders[:k]:
                mounts.unmount(target)
                proc.drop_caches()
                load = proc.loadavg()
                try:
                    mount_s = c.mount(target)
                    cold = _run_test(test, io_bin, target, randreads, min_size)
                    warm = _run_test(test, io_bin, target, randreads, min_size)
                    mem = mounts.memory(c.daemon) if c.daemon else None
                finally:
                    c.unmount(target)
                if cold is None:
                    continue
                results[c.name][test].append({"cold": cold, "warm": warm, "mount_s": mount_s,
                                              "mem": mem, "load": load})
                proc.log(f"read {name} {test} {c.name}: cold {cold['secs']:.3f} s, "
                         f"warm {warm['secs']:.3f} s, mount "
                         f"{(mount_s or 0) * 1000:.0f} ms (load {load:.2f})")
    return results
