"""Packing: every contender builds an image of the same tree, page cache warm, interleaved;
wall time, CPU time, peak RSS and image size are recorded. Also the storage of two related
images: one chunkfs OCI layout holding both against two squashfs images."""

import os
import shutil
import subprocess

from . import corpus, proc

# chunkfs's best-size setting, `chunkfs pack --best`: zstd level 16 (min match 3), chunks of
# 384/768/1016 KiB (the packed stream's too), files below 256 KiB packed together
# (docs/performance.md). Larger chunks stop the image from sharing chunks with default-packed
# images and make every random read decompress more; it is a size-first mode.
CHUNKFS_BEST = ["--best"]
CHUNKFS_BEST_LABEL = "chunkfs pack --best (zstd 16, 384/768/1016 KiB chunks, 256 KiB small files)"
# mkfs.erofs with zstd and its best options for size: level 15 (squashfs's), 128 KiB physical
# clusters, fragments (small files and tails packed together), deduplication; the old
# (pre-48bit) layout, which every zstd-capable kernel reads.
EROFS_ZSTD = ["-zzstd,level=15", "-C131072", "-Ededupe,fragments"]
EROFS_ZSTD_LABEL = "mkfs.erofs -zzstd,level=15 -C131072 -Ededupe,fragments"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(
    __file__)))))


class PackContender:
    """A way of building an image: `command(src, out)` is an argv list or a shell string."""

    def __init__(self, name, label, ext, command, slow=False):
        self.name, self.label, self.ext, self.command, self.slow = name, label, ext, command, slow


def erofs_has_zstd(mkfs="mkfs.erofs"):
    r = subprocess.run([mkfs, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    text = r.stdout.decode(errors="replace")
    return any(line.strip().startswith("zstd") for line in text.splitlines())


def erofs_zstd_tool(cache):
    """An mkfs.erofs with zstd: the host's if it has one, else Debian trixie's run with its own
    libraries (tools/lib/erofs-utils.sh, cached under `cache`); None (logged) if neither."""
    if erofs_has_zstd():
        return shutil.which("mkfs.erofs")
    script = os.path.join(REPO, "tools", "lib", "erofs-utils.sh")
    r = subprocess.run([script, os.path.join(cache, "erofs-utils")], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        proc.log(f"no mkfs.erofs with zstd (the host's has none; {script}: "
                 f"{r.stderr.strip()}): the EROFS zstd peer is left out")
        return None
    return r.stdout.strip()


def contenders(chunkfs, erofs_zstd=None):
    cs = [
        PackContender("chunkfs", "chunkfs pack (default: zstd 9)", "cfs",
                      lambda s, o: [chunkfs, "pack", s, o]),
        PackContender("chunkfs-best", CHUNKFS_BEST_LABEL, "cfs",
                      lambda s, o: [chunkfs, "pack", *CHUNKFS_BEST, s, o], slow=True),
        PackContender("squashfs", "mksquashfs -comp zstd (level 15)", "sqfs",
                      lambda s, o: ["mksquashfs", s, o, "-comp", "zstd", "-noappend",
                                    "-no-progress", "-quiet"]),
        PackContender("squashfs-3", "mksquashfs -comp zstd -Xcompression-level 3", "sqfs",
                      lambda s, o: ["mksquashfs", s, o, "-comp", "zstd", "-Xcompression-level",
                                    "3", "-noappend", "-no-progress", "-quiet"]),
        PackContender("erofs-lz4hc", "mkfs.erofs -zlz4hc", "erofs",
                      lambda s, o: ["mkfs.erofs", "-zlz4hc", o, s]),
    ]
    if erofs_zstd:
        # Single-threaded with deduplication and slow (minutes per tree): one run.
        cs.append(PackContender("erofs-zstd", EROFS_ZSTD_LABEL, "erofs",
                                lambda s, o: [erofs_zstd, "--quiet", *EROFS_ZSTD, o, s],
                                slow=True))
    cs.append(PackContender("tar-zstd", "tar \\| zstd -3 -T0", "tar.zst",
                            lambda s, o: f"tar -C '{s}' -cf - . | zstd -3 -T0 -q -f -o '{o}'"))
    return cs


def image_path(work, corpus_name, contender):
    return os.path.join(work, "images", f"{corpus_name}.{contender.name}.{contender.ext}")


def run_corpus(work, name, src, cs, runs, slow_runs):
    """Packs `src` with every contender, `runs` rounds (`slow_runs` for slow ones), rotating the
    order each round. Returns {contender: [samples]}; the images of the last round stay."""
    os.makedirs(os.path.join(work, "images"), exist_ok=True)
    corpus.warm(src)
    samples = {c.name: [] for c in cs}
    for r in range(max(runs, slow_runs)):
        order = cs[r % len(cs):] + cs[:r % len(cs)]
        for c in order:
            if r >= (slow_runs if c.slow else runs):
                continue
            out = image_path(work, name, c)
            if os.path.exists(out):
                os.unlink(out)
            cmd = c.command(src, out)
            load = proc.loadavg()
            m = proc.run(cmd, shell=isinstance(cmd, str), stdout=False)
            size = os.stat(out).st_size
            samples[c.name].append({"wall": m.wall, "cpu": m.cpu, "rss": m.rss, "size": size,
                                    "load": load})
            proc.log(f"pack {name} {c.name}: {m.wall:.2f} s, {m.cpu:.2f} s CPU, "
                     f"{m.rss / 2**20:.0f} MiB, {size / 1e6:.1f} MB (load {load:.2f})")
    return samples


def tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.lstat(os.path.join(root, f)).st_size
    return total


def related(work, chunkfs, pairs, srcs):
    """For each (base, other): one OCI layout holding both tags, and a layout holding only the
    other, sizes in bytes (every file of the layout counted) and times of each pack."""
    out = []
    for base, other in pairs:
        both = os.path.join(work, "oci", f"{base}+{other}")
        alone = os.path.join(work, "oci", f"{other}-alone")
        for d in (both, alone):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        first = proc.run([chunkfs, "pack", srcs[base], f"{both}:a"], stdout=False)
        size_first = tree_bytes(both)
        second = proc.run([chunkfs, "pack", srcs[other], f"{both}:b"], stdout=False)
        proc.run([chunkfs, "pack", srcs[other], f"{alone}:b"], stdout=False)
        entry = {"base": base, "other": other, "both": tree_bytes(both), "base_alone": size_first,
                 "other_alone": tree_bytes(alone), "pack_first_s": first.wall,
                 "pack_second_s": second.wall,
                 "blobs": len(os.listdir(os.path.join(both, "blobs", "sha256")))}
        proc.log(f"layout {base}+{other}: {entry['both'] / 1e6:.1f} MB "
                 f"({entry['other_alone'] / 1e6:.1f} MB for {other} alone)")
        out.append(entry)
    return out
