"""The benchmark corpus: real Debian trees, built once and cached.

- bookworm-minbase: `debootstrap --variant=minbase bookworm` (the Debian root filesystem the
  targets are measured on);
- bookworm-plus: the same plus curl, ca-certificates, less, procps, vim-tiny, iproute2 (a tree
  that is a superset of the first: two related images);
- bookworm-python: the same minbase plus python3 (the lazy-pull benchmark's image with a real
  workload: `python3 -c 'import json'`, tools/lib/bench/lazy.py);
- trixie-minbase: the next release's minbase (related, but sharing little byte for byte);
- linux-src: the Linux 6.1 sources of Debian's linux-source-6.1 package without drivers/,
  sound/ and architectures other than x86 (about 30,000 small text files);
- large-files: the large binaries of libllvm15, libicu72, gcc-12, libgl1-mesa-dri and libz3-4
  (shared libraries of 2 to 117 MB, hard-linked DRI drivers) plus those .deb files as they are
  (incompressible).

Each tree is built under NAME.tmp and renamed when complete, so an interrupted build is never
taken for a cached one; NAME.info records how it was made.
"""

import glob
import os
import shutil
import subprocess

from . import proc

MIRROR = os.environ.get("CHUNKFS_BENCH_MIRROR", "http://deb.debian.org/debian")
PLUS_PACKAGES = ["curl", "ca-certificates", "less", "procps", "vim-tiny", "iproute2"]
PYTHON_PACKAGES = ["python3"]
LARGE_PACKAGES = ["libllvm15", "libicu72", "gcc-12", "libgl1-mesa-dri", "libz3-4"]
LINUX_PACKAGE = "linux-source-6.1"
# Kept from the kernel tree: everything but these top-level directories, and arch/x86 only.
LINUX_DROP = {"drivers", "sound"}

DESCRIPTIONS = {
    "bookworm-minbase": "Debian 12 `debootstrap --variant=minbase`",
    "bookworm-plus": "the same + " + ", ".join(PLUS_PACKAGES),
    "bookworm-python": "Debian 12 minbase + " + ", ".join(PYTHON_PACKAGES),
    "trixie-minbase": "Debian 13 `debootstrap --variant=minbase`",
    "linux-src": "Linux 6.1 sources without drivers/, sound/, non-x86 arch/ (many small files)",
    "large-files": "large binaries of " + ", ".join(LARGE_PACKAGES) + " + those .deb files",
}
NAMES = list(DESCRIPTIONS)


def _debootstrap(dest, suite, include=()):
    cmd = ["debootstrap", "--variant=minbase"]
    if include:
        cmd.append("--include=" + ",".join(include))
    cmd += [suite, dest, MIRROR]
    proc.log(f"building {dest}: {' '.join(cmd)} (a few minutes)")
    proc.run(cmd, stdout=False)
    return " ".join(cmd)


def _download(cache, packages):
    """The .deb files of `packages` (current candidates of the host's apt sources), cached."""
    debs_dir = os.path.join(cache, "debs")
    os.makedirs(debs_dir, exist_ok=True)
    found = {}
    missing = []
    for p in packages:
        hits = sorted(glob.glob(os.path.join(debs_dir, f"{p}_*.deb")))
        if hits:
            found[p] = hits[-1]
        else:
            missing.append(p)
    if missing:
        proc.log(f"downloading {' '.join(missing)} with apt-get download")
        # apt drops privileges to _apt, which must be able to write there.
        try:
            shutil.chown(debs_dir, user="_apt")
        except (LookupError, PermissionError):
            pass
        proc.run(["apt-get", "download", *missing], cwd=debs_dir, stdout=False)
        for p in missing:
            hits = sorted(glob.glob(os.path.join(debs_dir, f"{p}_*.deb")))
            if not hits:
                raise proc.Failed(f"apt-get download {p} left no {p}_*.deb in {debs_dir}")
            found[p] = hits[-1]
    return [found[p] for p in packages]


def _linux_src(cache, dest):
    (deb,) = _download(cache, [LINUX_PACKAGE])
    proc.log(f"building {dest} from {os.path.basename(deb)}")
    os.makedirs(dest)
    # The package holds usr/src/linux-source-6.1.tar.xz; unpack it without the dropped parts.
    excludes = " ".join(f"--exclude='linux-source-6.1/{d}'" for d in sorted(LINUX_DROP))
    proc.run(f"dpkg-deb --fsys-tarfile '{deb}' | tar -xOf - ./usr/src/{LINUX_PACKAGE}.tar.xz "
             f"| xz -dc | tar -xf - -C '{dest}' {excludes}", shell=True, stdout=False)
    top = os.path.join(dest, "linux-source-6.1")
    arch = os.path.join(top, "arch")
    for a in os.listdir(arch):
        if a != "x86" and os.path.isdir(os.path.join(arch, a)):
            shutil.rmtree(os.path.join(arch, a))
    return f"{os.path.basename(deb)} without {', '.join(sorted(LINUX_DROP))}, arch/ but x86"


def _large_files(cache, dest):
    debs = _download(cache, LARGE_PACKAGES)
    proc.log(f"building {dest} from {len(debs)} packages")
    os.makedirs(dest)
    for deb in debs:
        proc.run(["dpkg-deb", "-x", deb, dest], stdout=False)
    # Only the large files: small ones are what the other trees are for.
    for root, dirs, files in os.walk(dest, topdown=False):
        for f in files:
            path = os.path.join(root, f)
            st = os.lstat(path)
            if not (os.path.isfile(path) and not os.path.islink(path)) or st.st_size < (1 << 20):
                os.unlink(path)
        for d in dirs:
            path = os.path.join(root, d)
            if os.path.islink(path):
                os.unlink(path)
            elif not os.listdir(path):
                os.rmdir(path)
    os.makedirs(os.path.join(dest, "debs"))
    for deb in debs:
        shutil.copy2(deb, os.path.join(dest, "debs"))
    return "files of at least 1 MiB from " + ", ".join(map(os.path.basename, debs)) + \
        " and those .deb files"


def ensure(cache, name):
    """The path of corpus `name` under `cache`, built first if it is not there."""
    dest = os.path.join(cache, name)
    if os.path.isdir(dest):
        return dest
    if name not in DESCRIPTIONS:
        raise proc.Failed(f"unknown corpus {name!r}: one of {', '.join(NAMES)}")
    tmp = dest + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(cache, exist_ok=True)
    if name == "bookworm-minbase":
        how = _debootstrap(tmp, "bookworm")
    elif name == "bookworm-plus":
        how = _debootstrap(tmp, "bookworm", PLUS_PACKAGES)
    elif name == "bookworm-python":
        how = _debootstrap(tmp, "bookworm", PYTHON_PACKAGES)
    elif name == "trixie-minbase":
        how = _debootstrap(tmp, "trixie")
    elif name == "linux-src":
        how = _linux_src(cache, tmp)
    else:
        how = _large_files(cache, tmp)
    with open(dest + ".info", "w") as f:
        f.write(how + "\n")
    os.rename(tmp, dest)
    return dest


def stats(path):
    """Apparent bytes of regular files (each inode once), inodes, regular files."""
    seen, size, inodes, files = set(), 0, 0, 0
    for root, dirs, names in os.walk(path):
        for n in dirs + names:
            st = os.lstat(os.path.join(root, n))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            inodes += 1
            if os.path.isfile(os.path.join(root, n)) and not os.path.islink(os.path.join(root, n)):
                files += 1
                size += st.st_size
    return {"bytes": size, "inodes": inodes + 1, "files": files}


def warm(path):
    """Reads the tree once so that packing measures the packer, not the source disk."""
    subprocess.run(f"tar -cf - -C '{path}' . | cat > /dev/null", shell=True,
                   stderr=subprocess.DEVNULL)
