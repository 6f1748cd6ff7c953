"""The markdown report: absolute figures (medians, with the range over runs), ratios to
squashfs, and the issue's targets checked on the Debian root filesystem."""

from . import read as read_lib
from .proc import median

MB = 1e6
MIB = 2**20


def _fmt(x, spec, unit=""):
    return "–" if x is None else f"{x:{spec}}{unit}"


def _range(xs, spec, scale=1.0):
    """`median (min–max)` of a list, scaled."""
    xs = [x * scale for x in xs if x is not None]
    if not xs:
        return "–"
    m = median(xs)
    if len(xs) == 1 or min(xs) == max(xs):
        return f"{m:{spec}}"
    return f"{m:{spec}} ({min(xs):{spec}}–{max(xs):{spec}})"


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def machine(res):
    lim = res["limits"]
    z3 = lim.get("zstd_cli_3")
    rows = [
        ["CPU", f"{lim['cpu']}, {lim['cores']} cores"],
        ["memory", f"{lim['mem_bytes'] / 2**30:.1f} GiB"],
        ["kernel", lim["kernel"]],
        ["load average (1 min) at start / end of the run",
         f"{res['load_start']:.2f} / {res['load_end']:.2f}"],
        ["memory copy", f"{lim['memcpy'] / 1e9:.1f} GB/s"],
        ["sha256 (sha2 crate, 128 KiB pieces, one core)", f"{lim['sha256'] / 1e9:.2f} GB/s"],
        ["zstd level 9, 128 KiB pieces, one core: compress / decompress",
         f"{lim['zstd9_compress'] / MB:.0f} MB/s / {lim['zstd_decompress'] / 1e9:.2f} GB/s"],
        ["`zstd -b3` (CLI, one core): compress / decompress",
         "–" if not z3 else f"{z3[0] / MB:.0f} MB/s / {z3[1] / MB:.0f} MB/s"],
        [f"disk, cold sequential read of {lim['disk_sample']}",
         f"{lim['disk_cold_read'] / MB:.0f} MB/s"],
    ]
    return _table(["machine", ""], rows)


def pack(res, name):
    samples = res["pack"][name]
    info = res["corpora"][name]
    ref = samples.get("squashfs") or []
    ref_wall = median([s["wall"] for s in ref])
    ref_size = median([s["size"] for s in ref])
    rows = []
    for c in res["pack_contenders"]:
        ss = samples.get(c["name"]) or []
        if not ss:
            continue
        wall, size = median([s["wall"] for s in ss]), median([s["size"] for s in ss])
        rows.append([
            c["label"], _range([s["wall"] for s in ss], ".2f"),
            _range([s["cpu"] for s in ss], ".2f"), _range([s["rss"] for s in ss], ".0f", 1 / MIB),
            f"{size / MB:.2f}",
            _fmt(wall / ref_wall if ref_wall else None, ".2f", "×"),
            _fmt(size / ref_size if ref_size else None, ".3f", "×"),
            len(ss),
        ])
    head = (f"**{name}** ({res['corpus_desc'][name]}): {info['bytes'] / MB:.1f} MB in "
            f"{info['files']:,} files, {info['inodes']:,} inodes\n\n")
    return head + _table(["packer", "wall s", "CPU s", "peak RSS MiB", "image MB",
                          "wall / squashfs", "size / squashfs", "runs"], rows)


def related(res):
    rows = []
    for e in res["related"]:
        sq = res["pack"]
        sq_sum = None
        try:
            sq_sum = (median([s["size"] for s in sq[e["base"]]["squashfs"]]) +
                      median([s["size"] for s in sq[e["other"]]["squashfs"]]))
        except (KeyError, TypeError):
            pass
        rows.append([
            f"{e['base']} + {e['other']}", f"{e['both'] / MB:.1f} ({e['blobs']} blobs)",
            _fmt(sq_sum and sq_sum / MB, ".1f"),
            _fmt(sq_sum and e["both"] / sq_sum, ".3f", "×"),
            f"{e['other_alone'] / MB:.1f}", f"{e['both'] / e['other_alone']:.3f}×",
            f"{(e['both'] - e['base_alone']) / MB:.1f}",
        ])
    return _table(["two images", "one chunkfs layout, MB", "two squashfs, MB",
                   "layout / squashfs", "second alone in a layout, MB", "both / second alone",
                   "second tag adds, MB"], rows)


def _med(samples, phase, key):
    return median([s[phase][key] for s in samples if s.get(phase) and s[phase].get(key) is not None])


def _randread_floor(res, name):
    """ " (random reads: files ≥ N KiB)" for a tree whose runs recorded the size floor."""
    for tests in res["read"][name].values():
        for run in tests.get("randread") or []:
            floor = (run.get("cold") or {}).get("min_size")
            if floor:
                return f" (random reads: files ≥ {floor // 1024} KiB)"
    return ""


def read(res, name):
    r = res["read"][name]
    labels = {c["name"]: c["label"] for c in res["read_contenders"]}
    rows, ratio_rows = [], []
    ref = r.get("squashfs", {})

    def speed(c, test, phase):
        """Seconds of the test; MB/s for reads."""
        ss = r[c].get(test) or []
        return _med(ss, phase, "secs")

    for c in r:
        t = r[c]
        mounts_ms = [s["mount_s"] * 1000 for tt in t.values() for s in tt if s.get("mount_s")]
        mem = [s["mem"] for tt in t.values() for s in tt if s.get("mem")]
        ra = t.get("readall") or []
        nbytes = _med(ra, "cold", "bytes")

        def rate(phase, test="readall"):
            secs = _med(t.get(test) or [], phase, "secs")
            if secs is None or not nbytes:
                return "–"
            return f"{secs:.3f} s ({nbytes / secs / MB:.0f} MB/s)"

        rr = t.get("randread") or []
        rows.append([
            labels.get(c, c), _range(mounts_ms, ".0f"), rate("cold"), rate("warm"),
            rate("cold", "readall4"),
            _fmt(speed(c, "find", "cold"), ".3f"), _fmt(speed(c, "find", "warm"), ".3f"),
            _fmt(speed(c, "lsR", "cold"), ".3f"), _fmt(speed(c, "lsR", "warm"), ".3f"),
            "–" if not rr else f"{_med(rr, 'cold', 'iops'):.0f} ({_med(rr, 'cold', 'p50_us'):.0f} µs)",
            "–" if not rr else f"{_med(rr, 'warm', 'iops'):.0f}",
            "–" if not mem else (f"{max(m['hwm'] for m in mem) / MIB:.0f} "
                                 f"(anon {max(m['anon'] for m in mem) / MIB:.0f})"),
        ])
        if c != "squashfs" and ref:
            def ratio(test, phase, key="secs"):
                a, b = _med(ref.get(test) or [], phase, key), _med(t.get(test) or [], phase, key)
                if not a or not b:
                    return "–"
                return f"{(b / a if key == 'iops' else a / b):.2f}×"
            ratio_rows.append([labels.get(c, c), ratio("readall", "cold"), ratio("readall", "warm"),
                               ratio("readall4", "cold"), ratio("find", "cold"),
                               ratio("find", "warm"), ratio("lsR", "cold"), ratio("lsR", "warm"),
                               ratio("randread", "cold", "iops"), ratio("randread", "warm", "iops")])
    out = _table(["reader", "mount ms", "read all, cold", "read all, warm",
                  "read all, 4 readers, cold", "find cold s", "find warm s", "ls -lR cold s",
                  "ls -lR warm s", "4 KiB random reads cold: IOPS (p50)", "random warm IOPS",
                  "daemon peak RSS MiB"], rows)
    if ratio_rows:
        out += ("\n\nSpeed relative to kernel squashfs (squashfs time / this time; above 1 is "
                "faster):\n\n")
        out += _table(["reader", "read all cold", "read all warm", "4 readers cold", "find cold",
                       "find warm", "ls -lR cold", "ls -lR warm", "random cold", "random warm"],
                      ratio_rows)
    return out


def targets(res, rootfs):
    """The issue's targets, measured on the root filesystem corpus."""
    rows = []

    def add(what, value, goal, ok):
        rows.append([what, value, goal, "–" if ok is None else ("met" if ok else "**missed**")])

    p = res["pack"].get(rootfs, {})
    if p.get("chunkfs") and p.get("squashfs"):
        w = median([s["wall"] for s in p["chunkfs"]]) / median([s["wall"] for s in p["squashfs"]])
        sz = median([s["size"] for s in p["chunkfs"]]) / median([s["size"] for s in p["squashfs"]])
        add("pack wall time / mksquashfs -comp zstd", f"{w:.2f}×", "≤ 0.50×", w <= 0.5)
        add("image size / mksquashfs -comp zstd", f"{sz:.3f}×", "≤ 1.05×", sz <= 1.05)
    for e in res.get("related", []):
        if e["base"] == rootfs and e["other"] == "bookworm-plus":
            try:
                sq = (median([s["size"] for s in res["pack"][rootfs]["squashfs"]]) +
                      median([s["size"] for s in res["pack"]["bookworm-plus"]["squashfs"]]))
                add("two related images, one layout / two squashfs", f"{e['both'] / sq:.3f}×",
                    "≤ 0.75×", e["both"] / sq <= 0.75)
            except KeyError:
                pass
            x = e["both"] / e["other_alone"]
            add("superset tree: layout of both / layout of the larger alone", f"{x:.3f}×",
                "≤ 1.10×", x <= 1.10)
    r = res["read"].get(rootfs)
    if r:
        def med(c, test, phase):
            return _med(r.get(c, {}).get(test) or [], phase, "secs")

        def speed_vs(c, ref, test, phase, goal, le=False, label=None):
            a, b = med(ref, test, phase), med(c, test, phase)
            if a is None or b is None:
                return
            if le:
                x = b / a
                add(label, f"{x:.2f}×", f"≤ {goal}×", x <= goal)
            else:
                x = a / b
                add(label, f"{x:.2f}×", f"≥ {goal}×", x >= goal)
        for c, lbl in (("chunkfs-kernel", "kernel"), ("chunkfs-fuse", "FUSE")):
            if c not in r:
                continue
            cold_goal = 1.6 if c == "chunkfs-kernel" else 0.8
            speed_vs(c, "squashfs", "readall", "cold", cold_goal,
                     label=f"chunkfs {lbl}: read all cold, speed vs squashfs")
            speed_vs(c, "squashfs", "readall", "warm", 0.9,
                     label=f"chunkfs {lbl}: read all warm, speed vs squashfs")
            for test, tl in (("lsR", "ls -lR"), ("find", "find")):
                for phase in ("cold", "warm"):
                    goal = 1.1 if (c == "chunkfs-kernel" and test == "lsR") else 2.0
                    speed_vs(c, "erofs", test, phase, goal, le=True,
                             label=f"chunkfs {lbl}: {tl} {phase}, time vs kernel erofs")
            ms = [s["mount_s"] for tt in r[c].values() for s in tt if s.get("mount_s")]
            if ms:
                m = median(ms) * 1000
                add(f"chunkfs {lbl}: mount", f"{m:.0f} ms", "< 100 ms", m < 100)
            mem = [s["mem"] for tt in r[c].values() for s in tt if s.get("mem")]
            if mem:
                anon = max(m["anon"] for m in mem) / MIB
                add(f"chunkfs {lbl}: daemon anonymous RSS (cache included)",
                    f"{anon:.0f} MiB", f"< 64 MiB + cache ({res['fuse_cache_mib']} MiB)",
                    anon < 64 + res["fuse_cache_mib"])
    return _table(["target (on " + rootfs + ")", "measured", "goal", ""], rows)


# Peak RSS of the default `chunkfs pack` per corpus before issue 13 (docs/bench/results.md of
# 2026-11-24, commit 9d2d231): the memory budget is 1.5x these.
PACK_RSS_BEFORE_MIB = {"bookworm-minbase": 42, "bookworm-plus": 44, "trixie-minbase": 43,
                       "linux-src": 92, "large-files": 33}


def targets_size(res):
    """Issue 13's targets, per corpus: size and time of the default and the best-size setting
    against mksquashfs's default, memory against the packer before, and the reads."""
    rows = []

    def add(corpus, what, value, goal, ok):
        rows.append([corpus, what, value, goal,
                     "–" if ok is None else ("met" if ok else "**missed**")])

    for name, p in res["pack"].items():
        sq = p.get("squashfs")
        if not sq:
            continue
        sq_wall, sq_size = median([s["wall"] for s in sq]), median([s["size"] for s in sq])
        for c, label, size_goal, wall_goal in (("chunkfs", "default", 1.0, 0.35),
                                               ("chunkfs-best", "best-size", 0.95, 1.0)):
            ss = p.get(c)
            if not ss:
                continue
            sz = median([s["size"] for s in ss]) / sq_size
            w = median([s["wall"] for s in ss]) / sq_wall
            add(name, f"{label}: size / mksquashfs -comp zstd", f"{sz:.3f}×", f"≤ {size_goal}×",
                sz <= size_goal)
            add(name, f"{label}: pack wall time / mksquashfs", f"{w:.2f}×", f"≤ {wall_goal}×",
                w <= wall_goal)
            if c == "chunkfs" and name in PACK_RSS_BEFORE_MIB:
                rss = median([s["rss"] for s in ss]) / MIB
                before = PACK_RSS_BEFORE_MIB[name]
                add(name, "default: pack peak RSS / before", f"{rss:.0f} / {before} MiB",
                    "≤ 1.5×", rss <= 1.5 * before)
    for name, r in res["read"].items():
        ref = r.get("squashfs", {})

        def ratio(c, test, phase, key="secs"):
            a = _med(ref.get(test) or [], phase, key)
            b = _med(r.get(c, {}).get(test) or [], phase, key)
            if not a or not b:
                return None
            return b / a if key == "iops" else a / b
        for test, phase, key, what, goal in (
                ("readall", "warm", "secs", "FUSE: read all warm, speed vs squashfs", 1.0),
                ("randread", "cold", "iops", "FUSE: 4 KiB random reads cold, speed vs squashfs",
                 1.0)):
            x = ratio("chunkfs-fuse", test, phase, key)
            if x is not None:
                add(name, what, f"{x:.2f}×", f"≥ {goal}×", x >= goal)
        for test, what in (("readall", "kernel: read all cold"),
                           ("readall4", "kernel: read all cold, 4 readers")):
            x = ratio("chunkfs-kernel", test, "cold")
            if x is None:
                continue
            a = _med(r.get("erofs-zstd", {}).get(test) or [], "cold", "secs")
            b = _med(r.get("chunkfs-kernel", {}).get(test) or [], "cold", "secs")
            vs_ez = f"; vs EROFS zstd {a / b:.2f}×" if a and b else ""
            add(name, what + ", speed", f"vs squashfs {x:.2f}×{vs_ez}", "(reported)", None)
    return _table(["corpus", "target (issue 13)", "measured", "goal", ""], rows)


def render(res):
    parts = [f"# chunkfs benchmark, {res['date']}", "",
             f"`{res['command']}` at commit `{res['commit']}`: {res['runs']} runs per figure "
             f"(medians, range in parentheses), contenders interleaved and rotated. Pack: page "
             f"cache warm. Read: every cold figure on a fresh mount after "
             f"`echo 3 > /proc/sys/vm/drop_caches`; warm figures repeat the test on that mount.",
             "", "chunkfs readers: " + res["chunkfs_mount_note"], ""]
    if res.get("partial"):
        parts += ["**Partial: written during the run, which has not finished (or was "
                  "interrupted).**", ""]
    parts += ["## Machine", "",
             machine(res), "", "## Targets", "", targets_size(res), "",
             "Earlier targets:", "", targets(res, res["rootfs"]), "", "## Packing", ""]
    for name in res["pack"]:
        parts += [pack(res, name), ""]
    if res.get("related"):
        parts += ["## Two related images", "",
                  "Every byte of the layout counted (blobs, index.json, oci-layout).", "",
                  related(res), ""]
    parts += ["## Reading", "",
              "Images: chunkfs default, mksquashfs -comp zstd (level 15), mkfs.erofs -zlz4hc and "
              "(when an mkfs.erofs with zstd could be had) -zzstd,level=15 -C131072 "
              "-Ededupe,fragments. "
              "Read all: every regular file once (hard links once), in the order tar reads them "
              "(sorted names, pre-order), 1 MiB reads. Random: 4 KiB preads at aligned offsets "
              "of the tree's files of at least 1 MiB (where fewer than "
              f"{read_lib.RANDREAD_FILES} files are that large, of at least the largest of "
              f"{', '.join(f'{s >> 10}' for s in read_lib.RANDREAD_SIZES[1:])} KiB that "
              f"{read_lib.RANDREAD_FILES} files reach; given per tree), files opened beforehand, "
              f"{res['randreads']} reads.", ""]
    for name in res["read"]:
        parts += [f"**{name}**{_randread_floor(res, name)}", "", read(res, name), ""]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# The lazy-pull part (tools/lib/bench/lazy.py): docs/bench/lazy.md.
# ---------------------------------------------------------------------------------------------

def _lazy_raw_rate(res):
    """The link's raw throughput in bytes/s: median of the curl runs."""
    return median([s["bytes"] / s["secs"] for s in res["raw"] if s["secs"]])


def _lazy_targets(res):
    rows = []

    def add(what, value, goal, ok):
        rows.append([what, value, goal, "–" if ok is None else ("met" if ok else "**missed**")])

    ref = res["reference"]
    for name, img in res["images"].items():
        ss = res["samples"][name]
        full = median([s["secs"] for s in ss.get(ref, [])])
        for case in ("lazy-kernel", "lazy-fuse", "prefetch-kernel", "prefetch-fuse"):
            t = median([s["secs"] for s in ss.get(case, [])])
            if t is None or not full:
                continue
            x = t / full
            add(f"{name} (`{img['workload']}`), {case}: start time / full pull ({ref})",
                f"{t:.2f} / {full:.2f} s = {x:.2f}×", "≤ 0.25×", x <= 0.25)
        for case in ("lazy-kernel", "lazy-fuse", "prefetch-kernel", "prefetch-fuse"):
            b = median([s["bytes"] for s in ss.get(case, [])])
            if b is None:
                continue
            share = b / img["size"]
            add(f"{name}, {case}: bytes fetched / image", f"{b / MB:.2f} / "
                f"{img['size'] / MB:.1f} MB = {share * 100:.1f} %", "≤ 15 %", share <= 0.15)
    raw = _lazy_raw_rate(res)
    for reader, ss in res["readall"].items():
        if not ss or not raw:
            continue
        t = median([s["secs"] for s in ss])
        b = median([s["bytes"] for s in ss])
        link = b / raw
        add(f"cold read-all over the link, reader={reader}: time / the link's raw time for "
            f"the same bytes", f"{t:.2f} / {link:.2f} s = {t / link:.2f}×", "≤ 1.3×",
            t / link <= 1.3)
    for reader in res["readall"]:
        ms = [s["mount_s"] * 1000 for s in res["readall"][reader]]
        for name in res["samples"]:
            case = "lazy-fuse" if reader == "fuse" else "lazy-kernel"
            ms += [s["mount_s"] * 1000 for s in res["samples"][name].get(case, [])]
        if ms:
            m = median(ms)
            add(f"mount over the link, reader={reader} (every lazy mount of the run)",
                f"{m:.0f} ms", "≤ 300 ms", m <= 300)
    return _table(["target", "measured (medians)", "goal", ""], rows)


def lazy(res):
    """The lazy-pull report (markdown)."""
    raw = _lazy_raw_rate(res)
    loads = [s["load"] for ss in res["samples"].values() for xs in ss.values() for s in xs]
    loads += [s["load"] for xs in res["readall"].values() for s in xs]
    parts = [f"# chunkfs lazy pulls from a registry, {res['date']}", "",
             f"`{res['command']}` at commit `{res['commit']}`: {res['runs']} runs per figure "
             "(medians, range in parentheses), every case and the link measurement "
             "interleaved, the order rotated each run. Each case starts from a fresh store or "
             "directory with the page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`).", "",
             "Link: Debian's `docker-registry` on 127.0.0.1 with TLS (a CA made for the run), "
             f"behind `tools/shape-proxy --rtt-ms {res['rtt_ms']} --mbit {res['mbit']}` (a "
             "delaying, rate-limiting TCP proxy: every byte delayed by half the RTT each way, "
             "one token bucket per direction for all connections). Bytes are what the proxy "
             "carried from the registry to the client (TLS and HTTP included), counted until "
             "it was idle for 0.6 s after the workload (lazy cases: prefetch and fetch-ahead "
             "included).", "",
             "| machine | |", "|---|---|",
             f"| CPU | {res.get('cpu', '?')}, {res.get('cores', '?')} cores |",
             f"| kernel | {res.get('kernel', '?')} |",
             f"| load average (1 min): start / end / range over the samples | "
             f"{res['load_start']:.2f} / {res['load_end']:.2f} / "
             f"{min(loads or [0]):.2f}–{max(loads or [0]):.2f} |",
             f"| the link's raw throughput: one `curl` of a pack blob through the proxy | "
             + ("–" if not raw else
                f"{raw / MB:.1f} MB/s ({_range([s['secs'] for s in res['raw']], '.2f')} s "
                f"for {res['raw'][0]['bytes'] / MB:.1f} MB; first byte after "
                f"{_range([s['first_byte_s'] * 1000 for s in res['raw']], '.0f')} ms)") + " |",
             "", "## Targets", "", _lazy_targets(res), "", "## Images", ""]
    rows = []
    for name, img in res["images"].items():
        rows.append([name, f"{img['corpus']}", f"`{img['workload']}`",
                     f"{img['size'] / MB:.1f} MB ({img['packs']} packs, metadata "
                     f"{img['metadata_bytes'] / MB:.2f} MB)",
                     f"{img['prefetch_chunks']} chunks", f"{img['size_tar'] / MB:.1f} MB"])
    parts += [_table(["image", "tree", "workload", "chunkfs image (config + layers)",
                      "recorded prefetch list", "tar image (gzip layer)"], rows), ""]
    ref = res["reference"]
    for name, img in res["images"].items():
        ss = res["samples"][name]
        full = median([s["secs"] for s in ss.get(ref, [])])
        rows = []
        for case in res["cases"]:
            xs = ss.get(case) or []
            if not xs:
                continue
            t = median([s["secs"] for s in xs])
            b = median([s["bytes"] for s in xs])
            rows.append([
                res["labels"].get(case, case), _range([s["secs"] for s in xs], ".2f"),
                _range([s.get("mount_s") for s in xs], ".0f", 1000),
                _range([s.get("fetch_s") for s in xs], ".2f"),
                _range([s["bytes"] for s in xs], ".2f", 1 / MB),
                f"{b / img['size'] * 100:.1f} %",
                _fmt(t / full if full else None, ".2f", "×"),
                _range([s.get("blob_requests") for s in xs], ".0f"),
            ])
        parts += [f"**{name}**: `{img['workload']}`; image {img['size'] / MB:.1f} MB", "",
                  _table(["case", "start to workload end, s", "mount ms", "fetch s (full pulls)",
                          "MB through the link", "of the image", f"time / {ref}",
                          "blob requests"], rows), ""]
    parts += ["## Cold read-all over the link", "",
              f"Image `{res['readall_image']}` mounted lazily (fresh store, `prefetch=none`), "
              "page cache dropped, then `chunkfs-bench-io readall` (every file once, tar order, "
              "1 MiB reads, one reader). The link's time is the bytes the read-all moved "
              "through the proxy at the raw `curl` rate above.", ""]
    rows = []
    for reader, xs in res["readall"].items():
        if not xs:
            continue
        t = median([s["secs"] for s in xs])
        b = median([s["bytes"] for s in xs])
        link = b / raw if raw else None
        reqs = [s["blob_requests"] for s in xs]
        ms = [m for s in xs for m in s.get("request_ms", [])]
        rows.append([reader, _range([s["mount_s"] for s in xs], ".0f", 1000),
                     _range([s["secs"] for s in xs], ".2f"),
                     _range([s["bytes"] for s in xs], ".1f", 1 / MB),
                     f"{b / t / MB:.1f}", _fmt(link, ".2f"),
                     _fmt(t / link if link else None, ".2f", "×"), _range(reqs, ".0f"),
                     "–" if not ms else f"{median(ms):.1f} / {sorted(ms)[len(ms) * 9 // 10]:.1f}"])
    parts += [_table(["reader", "mount ms", "read-all s", "MB through the link", "MB/s",
                      "link's raw time s", "ratio", "blob requests",
                      "registry time per request, median / p90 ms"], rows), ""]
    return "\n".join(parts) + "\n"
