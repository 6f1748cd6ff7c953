"""Running and measuring commands: wall time, CPU time and peak RSS of a process tree,
dropping caches, waiting for a quiet machine, and cleaning up what we started."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

# Processes this run started and has not reaped yet (pid -> description): killed by pid on exit.
_started = {}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    """A command failed; the message names it and carries its stderr."""


@dataclass
class Measured:
    """One run of a command: seconds of wall time, seconds of CPU (user + system, the command
    and every descendant it waited for), peak RSS in bytes (the largest single process)."""
    wall: float
    cpu: float
    rss: int
    stdout: str


def run(cmd, *, shell=False, check=True, stdout=True, env=None, cwd=None):
    """Runs a command to completion and measures it with wait4(2). `stdout=False` discards it.
    Output goes through temporary files, not pipes, so that we reap the child ourselves."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, shell=shell, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                             stdout=out if stdout else subprocess.DEVNULL, stderr=err)
        _started[p.pid] = cmd if isinstance(cmd, str) else " ".join(map(str, cmd))
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            _started.pop(p.pid, None)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        p.returncode = code
        out.seek(0)
        err.seek(0)
        text, errtext = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if check and code != 0:
        name = cmd if isinstance(cmd, str) else " ".join(map(str, cmd))
        raise Failed(f"`{name}` exited with {code}: {errtext.strip()[-2000:]}")
    return Measured(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024, text)


def output(cmd, **kw):
    """The stdout of a command that must succeed."""
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if r.returncode != 0:
        raise Failed(f"`{' '.join(map(str, cmd))}` exited with {r.returncode}: "
                     f"{r.stderr.decode(errors='replace').strip()[-2000:]}")
    return r.stdout.decode(errors="replace")


def spawn(cmd, **kw):
    """Starts a long-running process (a FUSE daemon) that `kill_started` ends if we exit early."""
    p = subprocess.Popen(cmd, **kw)
    _started[p.pid] = " ".join(map(str, cmd))
    return p


def forget(p):
    _started.pop(p.pid, None)


def kill_started():
    """Ends, by pid, every process this run started and still runs."""
    for pid, what in list(_started.items()):
        try:
            os.kill(pid, signal.SIGTERM)
            log(f"stopped pid {pid} ({what})")
        except ProcessLookupError:
            pass
        _started.pop(pid, None)


def drop_caches():
    """Writes dirty data back, then drops the page cache, dentries and inodes."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def busy_processes():
    """Other jobs that make timings meaningless while they run (compilers, fuzzers, VMs)."""
    try:
        out = subprocess.run(["pgrep", "-fa", "fuzz|rustc|qemu-system|cargo "],
                             stdout=subprocess.PIPE, text=True).stdout
    except FileNotFoundError:
        return []
    me = os.getpid()
    return [line for line in out.splitlines()
            if line and int(line.split()[0]) != me and "pgrep" not in line]


def wait_quiet(max_load, max_wait_s):
    """Waits, at most `max_wait_s`, until the 1-minute load is below `max_load` and no compiler or
    fuzzer runs. Returns the load then (measurements proceed either way; the report shows it)."""
    deadline = time.monotonic() + max_wait_s
    said = False
    while True:
        load, busy = loadavg(), busy_processes()
        if load < max_load and not busy:
            return load
        if time.monotonic() >= deadline:
            log(f"machine still busy after {max_wait_s:.0f} s (load {load:.2f}, "
                f"{len(busy)} busy processes): measuring anyway, the report records the load")
            return load
        if not said:
            log(f"waiting for a quiet machine (load {load:.2f}; {len(busy)} compiler/fuzzer "
                f"processes), at most {max_wait_s:.0f} s")
            said = True
        time.sleep(10)


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
