"""Lazy pulls from a registry over a shaped link (issue 14's measurements).

Debian's `docker-registry` on 127.0.0.1 with TLS (a CA made for the run, as the tests'
harness does it), `tools/shape-proxy` in front of it (20 ms added per round trip, 200 Mbit/s
shared per direction, byte counters), and for each workload image:

- `v1`: the tree packed by `chunkfs pack` into an OCI layout, pushed with `skopeo copy`;
- `pf`: the same image carrying a prefetch list recorded once from the workload (`-o
  record=FILE` on a lazy FUSE mount, then `chunkfs pack --prefetch FILE`);
- `pfk`: the same with the list recorded on the lazy kernel path (`reader=kernel`: the
  filler records the frames the kernel reads, its readahead of the pack files included);
- `pfb`: one list from both, merged by relative position (each chunk at the earlier of its
  two places, as a fraction of its list), for whichever reader mounts it;
- `tar`: the same tree as an ordinary image (one gzip tar layer, made by hand here).

Cases, each from a fresh store / directory with caches dropped, timed from the start of the
first command to the end of the workload (`chroot ROOT WORKLOAD`), bytes counted by the proxy
(server to client, TLS and HTTP included) until they stop growing:

- lazy-kernel / lazy-fuse: `mount -t chunkfs -o reader=auto|fuse,prefetch=none docker://...`
  (this build's helper run as mount(8) runs /sbin/mount.chunkfs);
- prefetch-kernel / prefetch-fuse: each reader's own list (`pfk` / `pf`), default
  `prefetch=image`; prefetch-kernel-fuselist: the kernel path with the FUSE list (`pf`, what
  prefetch-kernel measured before the kernel path recorded); prefetch-kernel-both /
  prefetch-fuse-both: the merged list (`pfb`);
- skopeo-mount: `skopeo copy docker://... oci:DIR:v1` + `mount -t chunkfs oci:DIR:v1`;
- pull-mount: `chunkfs pull` + `mount -t chunkfs docker://...` (complete: the kernel, no daemon);
- tar-x: `skopeo copy` of the tar image + `tar xzf` of its layer; tar-umoci: the same with
  `umoci unpack`.

Then per run, interleaved with the above: the link's raw throughput (one `curl` of the
largest blob through the proxy) and a cold read-all of a lazily mounted image on each reader
(mount timed alone; `chunkfs status` kept for the profile).
"""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time

from . import mounts, proc

RTT_MS = 20
MBIT = 200
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__)))))

# (image name, corpus, workload argv run inside the root).
WORKLOADS = [
    ("python", "bookworm-python", ["python3", "-c", "import json"]),
    ("minbase", "bookworm-minbase", ["bash", "-c", "true"]),
]
CASES = ["lazy-kernel", "lazy-fuse", "prefetch-kernel", "prefetch-fuse",
         "prefetch-kernel-fuselist", "prefetch-kernel-both", "prefetch-fuse-both",
         "skopeo-mount", "pull-mount", "tar-x", "tar-umoci"]
LABELS = {
    "lazy-kernel": "lazy, no prefetch, reader=auto (kernel + filler)",
    "lazy-fuse": "lazy, no prefetch, reader=fuse",
    "prefetch-kernel": "lazy, prefetch list recorded on the kernel path (prefetch=image), "
                       "reader=auto",
    "prefetch-fuse": "lazy, prefetch list recorded on FUSE (prefetch=image), reader=fuse",
    "prefetch-kernel-fuselist": "lazy, prefetch list recorded on FUSE, reader=auto",
    "prefetch-kernel-both": "lazy, both readers' lists merged, reader=auto",
    "prefetch-fuse-both": "lazy, both readers' lists merged, reader=fuse",
    "skopeo-mount": "full pull: skopeo copy to a layout + mount -t chunkfs oci:",
    "pull-mount": "full pull: chunkfs pull + mount (store complete: kernel, no daemon)",
    "tar-x": "tar image: skopeo copy + tar xzf + chroot",
    "tar-umoci": "tar image: skopeo copy + umoci unpack + chroot",
}
# The full pull the targets compare with.
REFERENCE = "skopeo-mount"
# Cases whose daemons may fetch after the workload ended (counted until the proxy is idle).
LAZY = {"lazy-kernel", "lazy-fuse", "prefetch-kernel", "prefetch-fuse",
        "prefetch-kernel-fuselist", "prefetch-kernel-both", "prefetch-fuse-both"}
# The image tag each lazy case mounts.
TAGS = {"lazy-kernel": "v1", "lazy-fuse": "v1", "prefetch-kernel": "pfk", "prefetch-fuse": "pf",
        "prefetch-kernel-fuselist": "pf", "prefetch-kernel-both": "pfb",
        "prefetch-fuse-both": "pfb"}
# How long the proxy must have carried nothing for a case's bytes to count as settled.
SETTLE_S = 0.6


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port, p, what, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            pass
        if p.poll() is not None:
            raise proc.Failed(f"{what} exited with {p.returncode} before listening")
        if time.monotonic() > deadline:
            raise proc.Failed(f"{what} not listening on port {port} after {timeout} s")
        time.sleep(0.05)


class Registry:
    """docker-registry on 127.0.0.1 with TLS from a CA made here; no auth. Its log (access log
    and "response completed" lines with durations) goes to DIR/registry.log."""

    def __init__(self, d):
        self.dir = d
        pki = os.path.join(d, "pki")
        os.makedirs(os.path.join(pki, "client"), exist_ok=True)

        def ossl(*args):
            proc.run(["openssl", *args], cwd=pki, stdout=False)
        ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "3", "-subj", "/CN=chunkfs bench CA", "-addext",
             "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
        with open(os.path.join(pki, "server.ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth\n")
        ossl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=127.0.0.1")
        ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "3", "-extfile", "server.ext")
        shutil.copy(os.path.join(pki, "ca.crt"), os.path.join(pki, "client", "ca.crt"))
        self.ca = os.path.join(pki, "ca.crt")
        self.cert_dir = os.path.join(pki, "client")
        self.port = _free_port()
        config = os.path.join(d, "registry.yml")
        with open(config, "w") as f:
            f.write(f"""version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {os.path.join(d, "storage")}
http:
  addr: 127.0.0.1:{self.port}
  secret: chunkfs-bench
  tls:
    certificate: {os.path.join(pki, "server.crt")}
    key: {os.path.join(pki, "server.key")}
""")
        self.log = os.path.join(d, "registry.log")
        self.logf = open(self.log, "ab")
        self.p = proc.spawn(["docker-registry", "serve", config], stdout=self.logf,
                            stderr=self.logf, stdin=subprocess.DEVNULL)
        _wait_port(self.port, self.p, "docker-registry")

    def host(self):
        return f"127.0.0.1:{self.port}"

    def push(self, src, repo, tag):
        proc.run(["skopeo", "copy", "--quiet", "--dest-cert-dir", self.cert_dir, src,
                  f"docker://{self.host()}/{repo}:{tag}"], stdout=False)

    def log_size(self):
        return os.path.getsize(self.log)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        proc.forget(self.p)
        self.logf.close()


def blob_requests(log, since):
    """The registry's "response completed" lines for blob GETs after byte `since` of its log:
    [{"status", "bytes", "ms", "range"}] (the range from the access log is not in these lines;
    the bytes written are)."""
    out = []
    with open(log, "rb") as f:
        f.seek(since)
        for line in f.read().decode(errors="replace").splitlines():
            if 'msg="response completed"' not in line or "/blobs/" not in line:
                continue
            fields = {}
            for part in line.split(" "):
                k, _, v = part.partition("=")
                fields[k] = v.strip('"')
            dur = fields.get("http.response.duration", "")
            ms = None
            for unit, scale in (("ms", 1.0), ("µs", 1e-3), ("us", 1e-3), ("s", 1e3)):
                if dur.endswith(unit):
                    try:
                        ms = float(dur[:-len(unit)]) * scale
                    except ValueError:
                        pass
                    break
            if fields.get("http.request.method") != "GET":
                continue
            out.append({"status": int(fields.get("http.response.status", 0) or 0),
                        "bytes": int(fields.get("http.response.written", 0) or 0), "ms": ms})
    return out


class Proxy:
    """tools/shape-proxy in front of the registry; `bytes()` reads its counters."""

    def __init__(self, d, target_port, rtt_ms=RTT_MS, mbit=MBIT):
        self.stats = os.path.join(d, "proxy-stats.json")
        self.port = _free_port()
        self.rtt_ms, self.mbit = rtt_ms, mbit
        self.p = proc.spawn([os.path.join(REPO, "tools", "shape-proxy"), "--listen",
                             f"127.0.0.1:{self.port}", "--target", f"127.0.0.1:{target_port}",
                             "--rtt-ms", str(rtt_ms), "--mbit", str(mbit), "--stats",
                             self.stats], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, self.p, "shape-proxy")
        self.seq = -1

    def host(self):
        return f"127.0.0.1:{self.port}"

    def counters(self):
        """{"connections", "bytes_up", "bytes_down", "seq"} now (asks the proxy to write them)."""
        os.kill(self.p.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with open(self.stats) as f:
                    j = json.load(f)
                if j.get("seq", 0) > self.seq:
                    self.seq = j["seq"]
                    return j
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
        raise proc.Failed("shape-proxy did not write its counters")

    def settle(self, quiet_s=SETTLE_S, timeout=30):
        """Counters once nothing crossed the proxy for `quiet_s` (background fetches done)."""
        last = self.counters()
        quiet_since = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.counters()
            if now["bytes_down"] != last["bytes_down"] or now["bytes_up"] != last["bytes_up"]:
                quiet_since = time.monotonic()
                last = now
            elif time.monotonic() - quiet_since >= quiet_s:
                return now
        return last

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        proc.forget(self.p)


def read_list(path):
    """The digests of a prefetch list file, in order."""
    with open(path) as f:
        return [line.strip() for line in f if line.startswith("sha256:")]


def write_list(path, digests):
    """A prefetch list file naming `digests`."""
    with open(path, "w") as f:
        f.write(f"# merged prefetch list: {len(digests)} chunks\n")
        f.writelines(d + "\n" for d in digests)


def merge_lists(a, b):
    """One list from two recordings of the same workload: every chunk of either, each at the
    earlier of its relative positions (index / length of its list), ties in `a`'s favour."""
    rank = {}
    for k, xs in enumerate((a, b)):
        for i, d in enumerate(xs):
            r = (i / max(len(xs), 1), k)
            if d not in rank or r < rank[d]:
                rank[d] = r
    return sorted(rank, key=rank.get)


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _put_blob(layout, path):
    """Moves `path` into the layout's blobs; returns (digest hex, size)."""
    hexd = _sha256_file(path)
    size = os.path.getsize(path)
    os.replace(path, os.path.join(layout, "blobs", "sha256", hexd))
    return hexd, size


def _put_json(layout, obj):
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", hexd), "wb") as f:
        f.write(data)
    return hexd, len(data)


def tar_image(src, layout, tag="tar"):
    """An ordinary OCI image of `src`: one gzip tar layer (GNU tar, sorted, numeric owners;
    gzip -6 as docker does), made by hand. Returns the layer's compressed size."""
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    raw = os.path.join(layout, "layer.tar")
    proc.run(["tar", "--sort=name", "--numeric-owner", "--xattrs", "-C", src, "-cf", raw, "."],
             stdout=False)
    diff_id = _sha256_file(raw)
    gz = raw + ".gz"
    proc.run(f"gzip -6 -n -c '{raw}' > '{gz}'", shell=True, stdout=False)
    os.unlink(raw)
    layer, layer_size = _put_blob(layout, gz)
    config, config_size = _put_json(layout, {
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/bash"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:"
                                                 "/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
    })
    manifest, manifest_size = _put_json(layout, {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{config}", "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{layer}", "size": layer_size}],
    })
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{manifest}", "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
    return layer_size


def layout_image(layout, tag):
    """(manifest, total bytes of the image's blobs: config + layers) of LAYOUT:TAG."""
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            with open(os.path.join(layout, "blobs", "sha256", m["digest"].split(":")[1])) as f:
                manifest = json.load(f)
            total = manifest["config"]["size"] + sum(x["size"] for x in manifest["layers"])
            return manifest, total
    raise proc.Failed(f"no tag {tag} in {layout}")


class Bench:
    """The registry, the proxy and the images; `case()` runs one measurement."""

    def __init__(self, bins, work, srcs, workloads):
        self.chunkfs, self.io = bins["chunkfs"], bins["io"]
        self.work = os.path.join(work, "lazy")
        mounts.unmount_all_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.mnt = os.path.join(self.work, "mnt")
        os.makedirs(self.mnt)
        # This build's mount helper, called as mount(8) calls /sbin/mount.chunkfs (which may be
        # another build, or repointed by another benchmark meanwhile).
        self.helper = os.path.join(self.work, "bin", "mount.chunkfs")
        os.makedirs(os.path.dirname(self.helper))
        os.symlink(self.chunkfs, self.helper)
        self.reg = Registry(os.path.join(self.work, "registry"))
        self.proxy = Proxy(self.work, self.reg.port)
        self.images = {}
        self.n = 0
        for name, corpus_name, argv in workloads:
            self.images[name] = self._prepare(name, srcs[corpus_name], argv)

    def ref(self, name, tag, via_proxy=True):
        host = self.proxy.host() if via_proxy else self.reg.host()
        return f"docker://{host}/bench/{name}:{tag}"

    def _mount(self, source, opts=None):
        """`mount -t chunkfs [-o OPTS] SOURCE MNT`, as mount(8) runs the helper."""
        return [self.helper, source, self.mnt] + (["-o", opts] if opts else [])

    def _opts(self, store, extra=""):
        o = f"store={store},cert-dir={self.reg.cert_dir}"
        return o + ("," + extra if extra else "")

    def _prepare(self, name, src, argv):
        """Packs, records the prefetch list, builds the tar image, pushes all three tags."""
        layout = os.path.join(self.work, "layouts", name)
        os.makedirs(os.path.dirname(layout), exist_ok=True)
        proc.log(f"lazy: packing {src} into {layout}:v1")
        proc.run([self.chunkfs, "pack", src, f"{layout}:v1"], stdout=False)
        self.reg.push(f"oci:{layout}:v1", f"bench/{name}", "v1")
        # Record the workload's first reads on a lazy mount straight from the registry, once
        # per reader, and pack each list (and the two merged) into a tag of its own.
        lists = {}
        for reader, tag in (("fuse", "pf"), ("kernel", "pfk")):
            trace = os.path.join(self.work, f"{name}.{reader}.prefetch")
            store = self._store()
            proc.run(self._mount(self.ref(name, "v1", via_proxy=False), self._opts(
                store, f"reader={reader},prefetch=none,record={trace}")))
            try:
                proc.run(["chroot", self.mnt, *argv], stdout=False)
            finally:
                proc.run([self.chunkfs, "umount", self.mnt], stdout=False)
            shutil.rmtree(store, ignore_errors=True)
            lists[reader] = read_list(trace)
            self._pack_with(layout, name, trace, tag)
        both = os.path.join(self.work, f"{name}.both.prefetch")
        write_list(both, merge_lists(lists["kernel"], lists["fuse"]))
        self._pack_with(layout, name, both, "pfb")
        listed = {r: len(x) for r, x in lists.items()}
        tar_layout = os.path.join(self.work, "layouts", f"{name}-tar")
        proc.log(f"lazy: making the tar image {tar_layout}:tar")
        tar_image(src, tar_layout)
        self.reg.push(f"oci:{tar_layout}:tar", f"bench/{name}", "tar")
        manifest, size = layout_image(layout, "v1")
        _, size_pf = layout_image(layout, "pf")
        _, size_tar = layout_image(tar_layout, "tar")
        packs = [x for x in manifest["layers"][1:]]
        shutil.rmtree(tar_layout)
        return {"argv": argv, "size": size, "size_pf": size_pf, "size_tar": size_tar,
                "packs": len(packs), "pack_bytes": sum(x["size"] for x in packs),
                "metadata_bytes": manifest["layers"][0]["size"],
                "prefetch_chunks": f"{listed['kernel']} (kernel) / {listed['fuse']} (FUSE) / "
                                   f"{len(read_list(both))} (merged)",
                "prefetch_lists": dict(listed, both=len(read_list(both))),
                "largest_blob": max(packs, key=lambda x: x["size"])["digest"]}

    def _pack_with(self, layout, name, trace, tag):
        """`chunkfs pack --prefetch TRACE LAYOUT:v1 LAYOUT:TAG`, pushed."""
        proc.run([self.chunkfs, "pack", "--prefetch", trace, f"{layout}:v1", f"{layout}:{tag}"],
                 stdout=False)
        self.reg.push(f"oci:{layout}:{tag}", f"bench/{name}", tag)

    def _store(self):
        self.n += 1
        return os.path.join(self.work, f"store-{self.n}")

    def _clean(self, *paths):
        mounts.unmount(self.mnt)
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)

    def _status(self):
        try:
            return json.loads(proc.output([self.chunkfs, "status", "--json", self.mnt]))
        except (proc.Failed, ValueError):
            return None

    def _umount(self):
        proc.run([self.chunkfs, "umount", self.mnt], stdout=False, check=False)
        mounts.unmount(self.mnt)

    def case(self, name, case):
        """One run of `case` on image `name`: {"secs", "mount_s", "bytes", ...}."""
        img = self.images[name]
        argv = img["argv"]
        mounts.unmount(self.mnt)
        proc.drop_caches()
        load = proc.loadavg()
        before = self.proxy.counters()
        log_at = self.reg.log_size()
        store = self._store()
        scratch = os.path.join(self.work, f"scratch-{self.n}")
        out = {"load": load}
        t0 = time.perf_counter()
        try:
            if case in LAZY:
                reader = "fuse" if "-fuse" in case and "fuselist" not in case else "auto"
                tag = TAGS[case]
                extra = "prefetch=none" if case.startswith("lazy") else ""
                opts = self._opts(store, f"reader={reader}" + ("," + extra if extra else ""))
                proc.run(self._mount(self.ref(name, tag), opts))
                out["mount_s"] = time.perf_counter() - t0
                proc.run(["chroot", self.mnt, *argv], stdout=False)
                out["secs"] = time.perf_counter() - t0
                out["bytes_at_end"] = self.proxy.counters()["bytes_down"] - before["bytes_down"]
                after = self.proxy.settle()
                st = self._status()
                if st is not None:
                    out["status"] = st
                self._umount()
            elif case == "skopeo-mount":
                proc.run(["skopeo", "copy", "--quiet", "--src-cert-dir", self.reg.cert_dir,
                          self.ref(name, "v1"), f"oci:{scratch}:v1"], stdout=False)
                out["fetch_s"] = time.perf_counter() - t0
                # A fresh descriptor cache too: nothing from an earlier run.
                proc.run(self._mount(f"oci:{scratch}:v1", f"cachedir={scratch}.cache"))
                proc.run(["chroot", self.mnt, *argv], stdout=False)
                out["secs"] = time.perf_counter() - t0
                after = self.proxy.counters()
                self._umount()
            elif case == "pull-mount":
                proc.run([self.chunkfs, "pull", "--store", store, "--cert-dir",
                          self.reg.cert_dir, self.ref(name, "v1")], stdout=False)
                out["fetch_s"] = time.perf_counter() - t0
                proc.run(self._mount(self.ref(name, "v1"), self._opts(store)))
                proc.run(["chroot", self.mnt, *argv], stdout=False)
                out["secs"] = time.perf_counter() - t0
                after = self.proxy.counters()
                self._umount()
            elif case in ("tar-x", "tar-umoci"):
                layout = os.path.join(scratch, "layout")
                os.makedirs(scratch)
                proc.run(["skopeo", "copy", "--quiet", "--src-cert-dir", self.reg.cert_dir,
                          self.ref(name, "tar"), f"oci:{layout}:tar"], stdout=False)
                out["fetch_s"] = time.perf_counter() - t0
                if case == "tar-x":
                    root = os.path.join(scratch, "rootfs")
                    os.makedirs(root)
                    manifest, _ = layout_image(layout, "tar")
                    for layer in manifest["layers"]:
                        blob = os.path.join(layout, "blobs", "sha256",
                                            layer["digest"].split(":")[1])
                        proc.run(["tar", "-xzf", blob, "-C", root, "--numeric-owner",
                                  "--xattrs", "--same-permissions"], stdout=False)
                else:
                    bundle = os.path.join(scratch, "bundle")
                    proc.run(["umoci", "unpack", "--image", f"{layout}:tar", bundle],
                             stdout=False)
                    root = os.path.join(bundle, "rootfs")
                proc.run(["chroot", root, *argv], stdout=False)
                out["secs"] = time.perf_counter() - t0
                after = self.proxy.counters()
            else:
                raise ValueError(case)
        finally:
            self._clean(store, scratch, scratch + ".cache")
        out["bytes"] = after["bytes_down"] - before["bytes_down"]
        out["bytes_up"] = after["bytes_up"] - before["bytes_up"]
        out["connections"] = after["connections"] - before["connections"]
        reqs = blob_requests(self.reg.log, log_at)
        out["blob_requests"] = len(reqs)
        out["blob_bytes"] = sum(r["bytes"] for r in reqs)
        return out

    def raw(self, name):
        """The link's raw throughput: one curl of the image's largest pack through the proxy."""
        img = self.images[name]
        url = (f"https://{self.proxy.host()}/v2/bench/{name}/blobs/{img['largest_blob']}")
        load = proc.loadavg()
        before = self.proxy.counters()
        r = proc.output(["curl", "-sS", "--fail", "--cacert", self.reg.ca, "-o", "/dev/null",
                         "-w", "%{size_download} %{time_total} %{time_starttransfer}", url])
        after = self.proxy.counters()
        size, total, first = r.split()
        return {"bytes": int(size), "secs": float(total), "first_byte_s": float(first),
                "proxy_bytes": after["bytes_down"] - before["bytes_down"], "load": load}

    def readall(self, name, reader):
        """A cold read-all of a lazily mounted image (fresh store, no prefetch): the mount
        timed alone, then `chunkfs-bench-io readall` (one reader, 1 MiB reads, tar order)."""
        mounts.unmount(self.mnt)
        store = self._store()
        proc.drop_caches()
        load = proc.loadavg()
        try:
            t0 = time.perf_counter()
            proc.run(self._mount(self.ref(name, "v1"),
                                 self._opts(store, f"reader={reader},prefetch=none")))
            mount_s = time.perf_counter() - t0
            before = self.proxy.counters()
            log_at = self.reg.log_size()
            r = proc.run([self.io, "readall", self.mnt, "--threads", "1"])
            j = json.loads(r.stdout)
            after = self.proxy.counters()
            time.sleep(1.2)  # the daemon publishes its counters at most once a second
            st = self._status()
            self._umount()
        finally:
            self._clean(store)
        reqs = blob_requests(self.reg.log, log_at)
        return {"secs": j["secs"], "file_bytes": j["bytes"], "files": j["files"],
                "mount_s": mount_s, "bytes": after["bytes_down"] - before["bytes_down"],
                "blob_requests": len(reqs), "blob_bytes": sum(x["bytes"] for x in reqs),
                "request_ms": sorted(x["ms"] for x in reqs if x["ms"] is not None),
                "request_bytes": [x["bytes"] for x in reqs],
                "status": st, "load": load}

    def close(self):
        mounts.unmount_all_under(self.work)
        for x in (self.proxy, self.reg):
            try:
                x.stop()
            except (OSError, proc.Failed):
                pass


def run(bins, work, srcs, runs, workloads=None, readall_image="python", cases=None,
        readers=("auto", "fuse")):
    """Everything above, `runs` rounds, the order rotated each round. Returns the results
    (JSON-able): per image its facts and {case: [samples]}, the raw link and the read-alls."""
    workloads = [w for w in WORKLOADS if workloads is None or w[0] in workloads]
    cases = cases or CASES
    res = {"rtt_ms": RTT_MS, "mbit": MBIT, "runs": runs, "cases": cases, "labels": LABELS,
           "reference": REFERENCE, "images": {}, "samples": {}, "raw": [], "readall": {},
           "load_start": proc.loadavg()}
    b = Bench(bins, work, srcs, workloads)
    try:
        for name, corpus_name, argv in workloads:
            res["images"][name] = dict(b.images[name], corpus=corpus_name,
                                       workload="chroot ROOT " + " ".join(
                                           a if " " not in a else repr(a) for a in argv))
            res["samples"][name] = {c: [] for c in cases}
        for r in readers:
            res["readall"][r] = []
        jobs = [("case", n, c) for n, _, _ in workloads for c in cases]
        jobs += [("raw", readall_image, None)]
        jobs += [("readall", readall_image, rd) for rd in readers]
        for k in range(runs):
            rot = (k * 3) % len(jobs)
            for kind, name, what in jobs[rot:] + jobs[:rot]:
                if kind == "case":
                    s = b.case(name, what)
                    res["samples"][name][what].append(s)
                    proc.log(f"lazy {name} {what}: {s['secs']:.2f} s, "
                             f"{s['bytes'] / 1e6:.2f} MB"
                             + (f", mount {s['mount_s'] * 1000:.0f} ms" if "mount_s" in s
                                else "") + f" (load {s['load']:.2f})")
                elif kind == "raw":
                    s = b.raw(name)
                    res["raw"].append(s)
                    proc.log(f"lazy raw link: {s['bytes'] / 1e6:.1f} MB in {s['secs']:.2f} s "
                             f"({s['bytes'] / s['secs'] / 1e6:.1f} MB/s)")
                else:
                    s = b.readall(name, what)
                    res["readall"][what].append(s)
                    proc.log(f"lazy read-all {what}: {s['secs']:.2f} s, "
                             f"{s['bytes'] / 1e6:.1f} MB through the link in "
                             f"{s['blob_requests']} requests, mount {s['mount_s'] * 1000:.0f} ms "
                             f"(load {s['load']:.2f})")
        res["readall_image"] = readall_image
    finally:
        b.close()
    res["load_end"] = proc.loadavg()
    return res

