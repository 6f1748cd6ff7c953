"""Mounting the read contenders the way a user would, timing the mount, finding the FUSE
daemon (for its memory), and unmounting whatever happens.

- kernel squashfs and kernel EROFS (mkfs.erofs images): `mount -o loop,ro`;
- squashfuse (the FUSE peer);
- chunkfs through `mount -t chunkfs -o reader=kernel|fuse` (the mount helper), when the built
  `chunkfs` has it. Until it does, two stand-ins, labelled as such in the report: the kernel
  path as the helper will do it at its core (`mount(2)` of the `.cfs`, type erofs, file-backed,
  no checks), and the FUSE path through the reader's `serve` example with the image's chunk
  index as the digest table.
"""

import ctypes
import os
import struct
import subprocess
import time

from . import proc

MS_RDONLY = 1
_libc = ctypes.CDLL(None, use_errno=True)


def mountpoints():
    """Mount points from /proc/self/mountinfo, with their file system types."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            target = fields[4].encode().decode("unicode_escape")
            out[target] = fields[sep + 1]
    return out


def is_mounted(target):
    return os.path.realpath(target) in mountpoints()


def unmount(target):
    """Unmounts `target` if mounted; a lazy unmount if it is busy."""
    target = os.path.realpath(target)
    if target not in mountpoints():
        return
    r = subprocess.run(["umount", target], stderr=subprocess.PIPE)
    if r.returncode != 0 and target in mountpoints():
        proc.log(f"umount {target} failed ({r.stderr.decode().strip()}); detaching it")
        subprocess.run(["umount", "-l", target])


def unmount_all_under(root):
    root = os.path.realpath(root)
    for target in sorted(mountpoints(), reverse=True):
        if target == root or target.startswith(root + "/"):
            unmount(target)


def fuse_pids():
    """Pids of processes holding /dev/fuse open (FUSE daemons)."""
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse":
                    pids.add(int(pid))
                    break
        except OSError:
            continue
    return pids


def memory(pid):
    """Peak and current RSS of a process, and the current anonymous and file-backed parts
    (bytes); None if it is gone."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    fields[key] = int(value.split()[0]) * 1024
    except OSError:
        return None
    return {"hwm": fields.get("VmHWM"), "rss": fields.get("VmRSS"),
            "anon": fields.get("RssAnon"), "file": fields.get("RssFile")}


def _wait_mounted(target, timeout, p=None):
    deadline = time.monotonic() + timeout
    while not is_mounted(target):
        if p is not None and p.poll() is not None:
            raise proc.Failed(f"the reader exited with {p.returncode} before mounting {target}")
        if time.monotonic() > deadline:
            raise proc.Failed(f"{target} not mounted after {timeout} s")
        time.sleep(0.001)


class Contender:
    """One way of serving an image: `mount` returns the seconds it took; `daemon` is the pid of
    the FUSE daemon, if any."""
    name = label = ""
    fuse = False
    daemon = None

    def mount(self, target):
        raise NotImplementedError

    def unmount(self, target):
        unmount(target)
        self.daemon = None


class LoopMount(Contender):
    def __init__(self, name, label, fstype, image):
        self.name, self.label, self.fstype, self.image = name, label, fstype, image

    def mount(self, target):
        r = proc.run(["mount", "-t", self.fstype, "-o", "loop,ro", self.image, target])
        return r.wall


class FuseCommand(Contender):
    """A FUSE daemon started by a command that returns once the mount is up (squashfuse,
    mount.chunkfs reader=fuse): the daemon is the new holder of /dev/fuse."""
    fuse = True

    def __init__(self, name, label, command):
        self.name, self.label, self.command = name, label, command

    def mount(self, target):
        before = fuse_pids()
        r = proc.run(self.command(target))
        secs = r.wall
        if not is_mounted(target):
            # A helper that returns before the mount is ready would be a bug; measure it anyway.
            _wait_mounted(target, 30)
            secs = None
        new = fuse_pids() - before
        self.daemon = min(new) if new else None
        return secs

    def unmount(self, target):
        pid = self.daemon
        super().unmount(target)
        # The daemon must exit by itself after the unmount; wait for it a little.
        if pid is not None:
            deadline = time.monotonic() + 10
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.01)


class KernelDirect(Contender):
    """chunkfs kernel path stand-in: mount(2) type erofs on the `.cfs` file (file-backed)."""

    def __init__(self, name, label, image):
        self.name, self.label, self.image = name, label, image

    def mount(self, target):
        t0 = time.perf_counter()
        if _libc.mount(self.image.encode(), target.encode(), b"erofs", MS_RDONLY, None) != 0:
            e = ctypes.get_errno()
            raise proc.Failed(f"mount(2) erofs {self.image} on {target}: {os.strerror(e)}")
        return time.perf_counter() - t0


def cfs_chunk_index(image):
    """The chunk index (a digest table) of a `.cfs`, from the header's index range (offset 128,
    docs/format.md §6.1)."""
    with open(image, "rb") as f:
        header = f.read(1024)
        if header[:8] != b"\x89CFS\r\n\x1a\n":
            raise proc.Failed(f"{image} is not a .cfs image")
        offset, length = struct.unpack_from("<QQ", header, 128)
        f.seek(offset)
        return f.read(length)


class ServeExample(Contender):
    """chunkfs FUSE path stand-in: the reader's `serve` example over the `.cfs` with its chunk
    index as the digest table; the mount is timed from the start of the process (including
    reading the index) until the mount appears."""
    fuse = True

    def __init__(self, name, label, serve_bin, image, workdir):
        self.name, self.label, self.serve_bin, self.image = name, label, serve_bin, image
        self.table = os.path.join(workdir, os.path.basename(image) + ".digests")
        self.p = None
        self.extra = []

    def mount(self, target):
        t0 = time.perf_counter()
        with open(self.table, "wb") as f:
            f.write(cfs_chunk_index(self.image))
        self.p = proc.spawn([self.serve_bin, self.image, target, "--digests", self.table,
                             *self.extra],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
        _wait_mounted(target, 30, self.p)
        self.daemon = self.p.pid
        return time.perf_counter() - t0

    def unmount(self, target):
        if self.p is not None:
            try:
                self.p.stdin.write(b"\n")
                self.p.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.terminate()
                self.p.wait(10)
            proc.forget(self.p)
            self.p = None
        super().unmount(target)
