"""report.py: the markdown table, its notes, and the PNG bar chart.

A cell shows a figure only for a result whose check passed; otherwise the
word FAIL, TIMEOUT or ERROR and a numbered note saying why. Ratios compare
each contender with pailfs as speeds (higher is faster than pailfs): time
taken by pailfs / time taken by the contender, IOPS / pailfs's IOPS, pailfs's
latency / the contender's latency.

Beside the times: the requests the server saw for each workload (total in
the main table's cells, by type in the table under it), and the request
table of the "requests" workload, its rows against the fewest S3 allows.
"""

import datetime
import math
import os
import platform
import subprocess
from dataclasses import dataclass

from . import reqcount
from . import reqtable
from . import workloads as W
from .util import human_bytes, log, run, which


@dataclass
class Meta:
    command: str
    started: datetime.datetime
    elapsed: float
    quick: bool
    wan: bool
    delay_ms: float
    rate: float
    sizes: object
    fx: object
    extra_notes: list
    workloads: set
    server_dir: str
    load: tuple = None
    https: bool = False


def speed(w, r):
    """One number per result, higher is better; None when not ok. For a
    write that close() acknowledged before the data reached the bucket, the
    time until it was in the bucket counts."""
    if not r or not r.ok or w.kind == "requests":
        return None
    if w.kind == "iops":
        return r.iops
    if w.kind == "latency":
        return 1.0 / r.median_ms if r.median_ms else None
    seconds = r.in_bucket or r.seconds
    return 1.0 / seconds if seconds else None


def cell_text(w, r):
    if r is None:
        return "—"
    if not r.ok:
        return r.status
    if r.parts is not None:  # the floor: no time of its own, a sum of parts
        return floor_cell(r)
    tail = f"; in bucket at {r.in_bucket:.1f} s" if r.in_bucket else ""
    if w.kind == "bytes":
        return f"{r.seconds:.2f} s, {r.nbytes / r.seconds / 1e6:.0f} MB/s{tail}"
    if w.kind == "iops":
        return f"{r.iops:.0f} IOPS, p99 {r.p99_ms:.1f} ms"
    if w.kind == "latency":
        return f"{r.median_ms:.1f} ms"
    if w.kind == "requests":
        return f"{reqcount.total(r.requests) or 0:,} requests (fewest {reqtable.FEWEST_TOTAL})"
    return f"{r.seconds:.2f} s, {r.count / r.seconds:.0f}/s{tail}"


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = 0
    try:
        debian = "Debian " + open("/etc/debian_version").read().strip()
    except OSError:
        debian = platform.platform()
    return (f"{debian}, Linux {platform.release()}, {os.cpu_count()} × {cpu}, "
            f"{mem / (1 << 20):.1f} GiB RAM")


def _tool_version(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def write(rows, meta, md_path, png_path, workdir):
    cols = [w for w in W.WORKLOADS if w.id in meta.workloads]
    # The floor is not a contender to rank: its own table under the core-seconds.
    floor_row = next((r for r in rows if r.c.key == "floor" and not r.missing), None)
    versions = [f"{r.c.label}: {r.version}" for r in rows if r.version]
    rows = [r for r in rows if r.c.key != "floor" or r.missing]
    pailfs = next((r for r in rows if r.c.key == "pailfs"), None)
    notes = []          # numbered footnotes

    def footnote(text):
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    sz = meta.sizes
    titles = {
        "read_cold": f"seq read cold ({human_bytes(sz.big)})",
        "read_warm": "seq read warm",
        "write": f"seq write ({human_bytes(sz.big)})",
        "rand1": f"4K rand read, 1 job ({sz.fio_seconds} s)",
        "rand8": "4K rand read, 8 jobs",
        "gzip": f"gzip grep -c ({human_bytes(meta.fx.gz_plain_size) if meta.fx else '?'})",
        "small_create": f"{sz.small_count} files: cp -r",
        "small_cat": "cat all",
        "small_rm": "rm -r",
        "ls": f"ls -l ({sz.ls_count})",
        "find": f"find ({sz.tree_dirs * (sz.tree_files + 1)})",
        "firstbyte": f"first byte (median of {sz.firstbyte_n})",
        "requests": "request table (total)",
        "scale_ls10k": f"scale: ls -l ({sz.ls_count:,}), RSS",
        "scale_ls": f"scale: ls -l ({sz.scale_one:,} in one dir), RSS",
        "scale_find": f"scale: find ({sz.scale_dirs:,} dirs of 100), RSS",
    }
    for w in W.WORKLOADS:  # the scale group's (and any later) columns: their own titles
        titles.setdefault(w.id, w.title)
    header = ["contender"] + [titles[w.id] for w in cols] + \
        ["peak RSS", "peak RSS, seq read", "cache/staging peak"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        name = f"**{row.c.label}**"
        if row.missing:
            lines.append(f"| {name} | " + " | ".join(
                [f"**{row.missing.split(':')[0]}** " + footnote(f"{row.c.label}: {row.missing}")]
                + ["—"] * (len(cols) - 1)) + " | — | — | — |")
            continue
        cells = [name]
        for w in cols:
            r = row.results.get(w.id)
            text = cell_text(w, r)
            if r and r.ok:
                if pailfs and row is not pailfs and not pailfs.missing:
                    mine, theirs = speed(w, r), speed(w, pailfs.results.get(w.id))
                    if mine and theirs:
                        ratio = mine / theirs
                        text += f" (×{ratio:.2f})" if ratio >= 0.1 else f" (×{ratio:.2g})"
                if r.note:
                    text += " " + footnote(r.note)
                if r.requests is not None and w.kind != "requests":
                    text += f"; {reqcount.total(r.requests):,} req"
            elif r and r.status == "n/a" and not r.why:
                text = "n/a"
            elif r:
                text = f"**{r.status}** " + footnote(f"{row.c.label}, {w.title}: {r.why}")
            cells.append(text)
        if row.c.is_fs:
            seq = [row.rss[w] for w in ("read_cold", "read_warm") if w in row.rss]
            each = ", ".join(f"{w} {human_bytes(row.rss[w])}" for w in W.RUN_ORDER if w in row.rss)
            cells += [human_bytes(row.peak_rss) + (" " + footnote(f"{row.c.label}, peak RSS "
                                                                  f"of each workload: {each}")
                                                   if each else ""),
                      human_bytes(max(seq)) if seq else "—", human_bytes(row.cache_peak)]
        else:
            cells += ["—", "—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    counts = requests_by_type(rows, [w for w in cols if w.kind != "requests"], titles)
    cpu = cpu_by_workload(rows, cols, titles)
    req_table = request_table(rows, footnote) if "requests" in meta.workloads else ""
    floor = floor_table(rows, floor_row, cols, titles, meta.https)
    targets = issue21_wall_clock(rows, meta.workloads, floor_row)
    if meta.wan:
        targets += issue19_wan(rows, meta.workloads)
    if "scale_read16" in meta.workloads:
        targets += issue22_read16(rows, floor_row)

    mode = "quick (`--quick`)" if meta.quick else "full"
    if meta.wan:
        mode += f", WAN-shaped (`--wan`: first byte +{meta.delay_ms:g} ms, " \
                f"{meta.rate:g} MB/s per connection)"
    if meta.https:
        mode += ", over https (`--https`: s3rver's own TLS, a self-signed certificate)"
    versions.append(f"s3rver 4.0.4 (tests/s3server, patched by aws-fixes.js), "
                    f"{_tool_version(['node', '--version'])}")
    versions.append(_tool_version(["fio", "--version"]))
    out = [
        f"# pailfs benchmark — {meta.started:%Y-%m-%d %H:%M}",
        "",
        f"- command: `{meta.command.strip()}` (as root), {mode}; took {meta.elapsed / 60:.1f} min",
        f"- machine: {machine()}" + (
            f"; load average {meta.load[0][0]:.2f} at the start, {meta.load[1][0]:.2f} at the end"
            + (" (other work was running when it started: figures are noisier)"
               if meta.load[0][0] > 1.0 else "")
            if meta.load else ""),
        "- versions: " + "; ".join(versions),
        f"- server: one s3rver (Node.js, single process) on 127.0.0.1, its data in "
        f"{meta.server_dir}" + (" (tmpfs: dropping the page cache leaves the server's copy "
                                "in memory, as S3's own caching would be)"
                                if meta.server_dir.startswith("/dev/shm") else
                                " (on disk: dropping the page cache makes the server read "
                                "from disk too)") +
        "; every contender and the raw limit talk to the same server in turn",
        "",
        table,
        "",
        "Each cell: time and rate (MB/s of data, or files/entries per second); random reads "
        "as IOPS and 99th-percentile latency; first byte as the median latency. "
        "(×N) is the contender's speed relative to pailfs: above 1 is faster than pailfs "
        "(for writes acknowledged before the data was in the bucket, the time until it was "
        "there counts). "
        "FAIL means the result check failed and no time is shown. "
        "\"N req\": the requests the server saw for that workload.",
        "",
    ]
    if counts:
        out += ["Requests the server saw, by type, in each workload (the harness's own "
                "uploads and checks not counted): GET, HEAD, LIST, PUT (PutObject, "
                "UploadPart, CopyObject), DELETE (DeleteObject, DeleteObjects), other "
                "(multipart create/complete/abort, bucket requests).", "", counts, ""]
    if cpu:
        out += ["Core-seconds of the filesystem process (user + system time of all its "
                "threads, from /proc) in each workload: per GiB read or written, per 1,000 "
                "files or entries, or in all for random reads, first byte and the request "
                "table. What the reading or writing program and the server spend is not "
                "in it; the kernel's work for FUSE requests is charged to whichever side "
                "makes the system call. It carries over to any machine, where wall-clock "
                "times on this 2-core one (server, filesystem and reader share the cores) "
                "do not.", "", cpu, ""]
    if floor:
        out += [floor, ""]
    if targets:
        out += targets + [""]
    if req_table:
        out += [req_table, ""]
    out += [
        "## Notes",
        "",
    ]
    out += [f"{i + 1}. {n}" for i, n in enumerate(notes)]
    out += [""]
    general = [
        "Every filesystem runs with its defaults plus what it needs to reach the server "
        "(s3fs: `use_cache=DIR`; rclone: `--vfs-cache-mode off` or `writes`; pailfs: "
        "`cache_dir=DIR`). Each group of workloads gets a fresh mount with an empty "
        "cache directory; only the warm read follows the cold one on the same mount.",
        "The kernel page cache is dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) "
        "before every read, the warm one included: warm means warm in the filesystem's "
        "own disk cache only.",
        "Checks: sha256 of everything read or written (writes verified with curl straight "
        "from the server after close), `grep -c` count against the generator's, names and "
        "sizes for `ls -l` and `find`, 64 random 4 KiB blocks after each fio run.",
        "seq write: `dd bs=1M` from a local file (in page cache), timed until dd exits, "
        "i.e. until close() returns. Where the object reached the bucket later, a note says when.",
        "random read: fio psync, 4 KiB, O_DIRECT where the filesystem accepts it. The raw "
        "row fetches exactly 4 KiB per read and keeps nothing; a filesystem that fetches "
        "bigger blocks around each read and keeps them (s3fs's use_cache, pailfs's block "
        "cache) soon holds much of the object and serves from memory or local disk, so it "
        "can beat that row.",
        "first byte: open + pread of 1 byte + close, at 20 offsets spread over the object "
        "(so no sample is served by what an earlier one fetched), page cache dropped before each.",
        "peak RSS: VmHWM of the filesystem process (the largest over its mounts); "
        "\"peak RSS, seq read\" and the per-workload figures in the notes: VmHWM reset "
        "(`echo 5 > /proc/PID/clear_refs`) before each workload and read after it; "
        "cache/staging peak: the most disk its cache directory and any unlinked files "
        "it held open used at once, sampled every 0.5 s.",
        "raw limit: parallel ranged GETs with curl (the best of 1–16 at once) for reads, "
        "boto3 multipart upload for writes, `curl | igzip -dc | grep -c` for gzip, "
        "ListObjectsV2 pages on one kept-alive connection for `ls`/`find`, boto3 "
        "PUT/GET/DeleteObjects (16 threads) for small files.",
        "s3rver is slow (one Node.js process); compare each contender with the raw-limit "
        "row, not with AWS.",
    ]
    out += [f"- {n}" for n in general + meta.extra_notes]
    for row in rows:
        for n in row.notes:
            out.append(f"- {row.c.label}: {n}")
    out.append("")

    chart = make_chart(rows, cols, titles, png_path, workdir, meta)
    if chart:
        out.append(f"![chart]({os.path.basename(png_path)})")
        out.append("")
    text = "\n".join(out)
    with open(md_path, "w") as f:
        f.write(text)
    return text


def requests_by_type(rows, cols, titles):
    """Contenders by workloads, each cell the requests by type; '' when
    nothing was counted."""
    cells = {(row.c.key, w.id): row.results[w.id].requests for row in rows
             for w in cols if w.id in row.results}
    if not any(v is not None for v in cells.values()):
        return ""
    lines = ["| contender | " + " | ".join(titles[w.id] for w in cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for row in rows:
        if row.missing:
            continue
        lines.append(f"| **{row.c.label}** | " + " | ".join(
            reqcount.text(cells.get((row.c.key, w.id))) if (row.c.key, w.id) in cells
            else "—" for w in cols) + " |")
    return "\n".join(lines)


def cpu_text(w, r):
    """Core-seconds the filesystem process spent on one workload, per GiB
    moved, per 1,000 files or entries, or in all (random reads, first
    byte, the request table)."""
    if r is None or not r.ok or r.cpu_s is None:
        return "—"
    if w.kind == "bytes" and r.nbytes:
        return f"{r.cpu_s / (r.nbytes / (1 << 30)):.2f} /GiB"
    if w.kind not in ("iops", "latency", "requests") and r.count:
        return f"{r.cpu_s * 1000 / r.count:.2f} /1,000"
    return f"{r.cpu_s:.2f} in all"


def cpu_by_workload(rows, cols, titles):
    """Filesystem contenders by workloads, each cell cpu_text(); '' when
    nothing was measured."""
    fs_rows = [row for row in rows if row.c.is_fs and not row.missing]
    if not any(row.results.get(w.id) and row.results[w.id].cpu_s is not None
               for row in fs_rows for w in cols):
        return ""
    lines = ["| contender | " + " | ".join(titles[w.id] for w in cols) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for row in fs_rows:
        lines.append(f"| **{row.c.label}** | " + " | ".join(
            cpu_text(w, row.results.get(w.id)) for w in cols) + " |")
    return "\n".join(lines)


# Issue 21's targets, core-seconds of the filesystem process per GiB.
CPU_TARGETS = {"read_cold": 0.6, "read_warm": 0.4, "write": 1.5}
CPU_TARGETS_HTTPS = dict(CPU_TARGETS, write=0.8)


def per_gib(r):
    """Core-seconds per GiB of an ok result with a CPU figure, else None."""
    if not r or not r.ok or r.cpu_s is None or not r.nbytes:
        return None
    return r.cpu_s / (r.nbytes / (1 << 30))


def floor_cell(r):
    """'**sum**: part v (how) + part v ...; not in the sum: part v (how)'."""
    if r is None:
        return "—"
    if not r.ok:
        return f"**{r.status}**: {r.why[:200]}"

    def part(name, value, how):
        return f"{name} {value:.2f}" + (f" ({how})" if how else "")
    summed = [part(n, v, how) for n, v, counted, how in r.parts if counted]
    left = [part(n, v, how) for n, v, counted, how in r.parts if not counted]
    return (f"**{per_gib(r):.2f}** = " + " + ".join(summed) +
            (f"; not in the sum: {', '.join(left)}" if left else ""))


def floor_table(rows, floor_row, cols, titles, https):
    """The floor (floor.py) beside each filesystem's core-seconds per GiB
    and issue 21's targets, for the workloads that have a floor; '' when
    the floor did not run."""
    if floor_row is None:
        return ""
    # per GiB: the workloads that move bytes (rand8's floor is in IOPS,
    # under issue 21's wall-clock ratios; read16's is a time, under issue 22's)
    cols = [w for w in cols if w.kind == "bytes" and floor_row.results.get(w.id)
            and floor_row.results[w.id].status != "n/a"
            and floor_row.results[w.id].parts is not None]
    if not cols:
        return ""
    floors = {w.id: per_gib(floor_row.results[w.id]) for w in cols}
    lines = ["| core-s/GiB | " + " | ".join(titles[w.id] for w in cols) + " |",
             "|" + "---|" * (len(cols) + 1),
             "| **floor** | " + " | ".join(floor_cell(floor_row.results[w.id])
                                         for w in cols) + " |"]

    def against(value, w):
        if value is None:
            return "—"
        f = floors[w.id]
        return f"{value:.2f}" + (f" ({value / f:.2f} × the floor)" if f else "")
    for row in rows:
        if row.c.is_fs and not row.missing:
            lines.append(f"| **{row.c.label}** | " + " | ".join(
                against(per_gib(row.results.get(w.id)), w) for w in cols) + " |")
    target = CPU_TARGETS_HTTPS if https else CPU_TARGETS
    lines.append("| issue 21's target | " + " | ".join(
        "≤ " + against(target[w.id], w) if w.id in target else "—" for w in cols) + " |")
    intro = ("The floor (issue 21; bench/README.md, \"The floor\"): the fewest core-seconds "
             "per GiB any FUSE filesystem could spend on this machine moving the same bytes, "
             "measured in this run part by part, each part one process's user + system time "
             "per GiB: receive (curl GETs to /dev/null; the cheaper of one GET and the raw "
             "limit's parallel ranged GETs counts), reply (nullfs, a FUSE filesystem that "
             "answers every read from one buffer, `cat` after drop_caches), take (nullfs "
             "accepting `dd bs=1M` and discarding it), SHA-256 (OpenSSL, in memory; over "
             "http only: over https pailfs signs UNSIGNED-PAYLOAD), send (curl PUT, TLS "
             "with `--https`, less reading its file). Beside it each filesystem's figure "
             "from the table above, as a multiple of the floor: that multiple is the "
             "measure that is fair on this machine.")
    return intro + "\n\n" + "\n".join(lines)


def issue21_wall_clock(rows, workloads, floor_row=None):
    """Issue 21's wall-clock targets as ratios from this run: pailfs's cold
    sequential read against the raw limit (≥ 0.9) and its 8-job random
    reads against s3fs-fuse's IOPS (≥ 2), with the random reads' floor
    when it ran. [] when neither workload ran."""
    by = {r.c.key: r for r in rows if not r.missing}
    out = []

    def ratio(wid, other, want, what):
        w = W.BY_ID[wid]
        mine = speed(w, by["pailfs"].results.get(wid)) if "pailfs" in by else None
        theirs = speed(w, by[other].results.get(wid)) if other in by else None
        if mine and theirs:
            r = mine / theirs
            return (f"- {what}: pailfs {cell_text(w, by['pailfs'].results[wid])}, "
                    f"{by[other].c.label} {cell_text(w, by[other].results[wid])}: "
                    f"**{r:.2f} ×** (issue 21 wants ≥ {want:g}: "
                    f"{'holds' if r >= want else 'does not hold'} in this run)")
        return f"- {what}: not measured in this run (needs pailfs and {other} ok)"
    if "read_cold" in workloads:
        out.append(ratio("read_cold", "raw", 0.9,
                         "cold sequential read, pailfs's speed over the raw limit's"))
    if "rand8" in workloads:
        out.append(ratio("rand8", "s3fs", 2, "8-job 4 KiB random reads, pailfs's IOPS over "
                         "s3fs-fuse's"))
        if floor_row is not None:
            out.append(rand8_floor_line(by, floor_row.results.get("rand8")))
    return (["Issue 21's wall-clock targets, from the table above:"] + out) if out else []


def issue19_wan(rows, workloads):
    """Issue 19's `--wan` targets, each as this run's figure against its
    bound. `cp -r` and `rm -r` are set against the raw limit sending the
    same requests one after another (as cp and rm ask, each close and
    unlink waiting for its request): 1.25 times that is the issue's "1.25
    round trips a file" on this rig, whose round trip is the server's own
    time plus the shaped 20 ms. [] when none of them ran."""
    by = {r.c.key: r for r in rows if not r.missing}
    mine = by.get("pailfs")
    raw = by.get("raw")
    out = []

    def res(row, wid):
        r = row.results.get(wid) if row else None
        return r if r and r.ok else None

    def verdict(ok):
        return "met" if ok else "**not met**"

    def against_raw(wid, what, bound, faster_is_bigger=False):
        a, b = res(mine, wid), res(raw, wid)
        if not (a and b):
            return None
        w = W.BY_ID[wid]
        if faster_is_bigger:  # a rate: pailfs's over raw's
            r = speed(w, a) / speed(w, b)
            ok = r >= bound
            return (f"- {what}: pailfs {cell_text(w, a)}, raw {cell_text(w, b)}: "
                    f"**{r:.2f} ×** raw's rate (≥ {bound:g}: {verdict(ok)})")
        r = speed(w, b) / speed(w, a)
        return (f"- {what}: pailfs {cell_text(w, a)}, raw {cell_text(w, b)}: "
                f"**{r:.2f} ×** raw's time (≤ {bound:g}: {verdict(r <= bound)})")

    def one_at_a_time(wid, what):
        a, b = res(mine, wid), res(raw, wid)
        if not (a and b and b.each_seconds):
            return None
        r = a.seconds / b.each_seconds
        per = a.seconds * 1000 / max(1, a.count or 1)
        return (f"- {what}: pailfs {a.seconds:.2f} s, raw one request at a time "
                f"{b.each_seconds:.2f} s: **{r:.2f} ×** (≤ 1.25: {verdict(r <= 1.25)}); "
                f"{per:.1f} ms a file (the issue's 25 s for 1,000: {verdict(per <= 25)})")

    def within(wid, what, seconds):
        a = res(mine, wid)
        if not a:
            return None
        per = a.seconds / max(1, a.count or 1) * 1000  # the issue's bound is for 1,000 files
        return (f"- {what}: pailfs {a.seconds:.2f} s, {per:.1f} ms a file (≤ {seconds:g} s "
                f"for 1,000: {verdict(per <= seconds)})")

    lines = {
        "small_create": lambda: one_at_a_time("small_create", "`cp -r` of the small files"),
        "small_cat": lambda: within("small_cat", "`cat` of them in listing order", 10),
        "small_rm": lambda: one_at_a_time("small_rm", "`rm -r` of them"),
        "find": lambda: against_raw("find", "`find`", 1.5),
        "firstbyte": lambda: against_raw("firstbyte", "first byte, median", 1.3),
        "ls": lambda: against_raw("ls", "`ls -l`", 1.05),
        "write": lambda: against_raw("write", "sequential write", 0.9, faster_is_bigger=True),
    }
    for wid, line in lines.items():
        if wid in workloads:
            text = line()
            out.append(text or f"- {W.BY_ID[wid].title}: not measured (needs pailfs and raw ok)")
    req = res(mine, "requests")
    if "requests" in workloads and req and req.table:
        n = reqcount.total(reqtable.total(req.table)) or 0
        out.append(f"- request table: {n} requests against the fewest {reqtable.FEWEST_TOTAL} "
                   f"({verdict(n <= reqtable.FEWEST_TOTAL)} in total; each row in the table)")
    return (["Issue 19's `--wan` targets, from the tables above:"] + out) if out else []


def issue22_read16(rows, floor_row):
    """Issue 22's 16 readers: pailfs's aggregate against the raw limit's
    (≥ 0.9), and the floor's (floor.py read16_floor: receiving and handing
    the bytes to 16 readers at once, with nothing between) against the
    raw limit's: the most any FUSE filesystem reaches on this machine."""
    w = W.BY_ID["scale_read16"]
    by = {r.c.key: r for r in rows if not r.missing}
    if floor_row:
        by["floor"] = floor_row

    def ok(key):
        r = by[key].results.get(w.id) if key in by else None
        return r if r and r.ok else None
    mine, raw, floor = ok("pailfs"), ok("raw"), ok("floor")
    if not (mine and raw):
        return [f"- issue 22, {w.title}: not measured (needs pailfs and raw ok)"]
    r = speed(w, mine) / speed(w, raw)
    out = [f"- issue 22, {w.title}: pailfs {cell_text(w, mine)}, raw {cell_text(w, raw)}: "
           f"**{r:.2f} ×** raw's aggregate (≥ 0.9: {'met' if r >= 0.9 else '**not met**'})"]
    if floor:
        f = speed(w, floor) / speed(w, raw)
        out.append(f"  - the floor, {floor.note}: {cell_text(w, floor)}, **{f:.2f} ×** raw's: "
                   f"no FUSE filesystem's 16 readers finish sooner on this machine; pailfs "
                   f"is at {speed(w, mine) / speed(w, floor):.2f} × the floor")
    return out


def per_read_us(r):
    """Core-seconds per read of an ok random-read result, in µs, or None."""
    if not r or not r.ok or r.cpu_s is None or not r.count:
        return None
    return r.cpu_s / r.count * 1e6


def rand8_floor_line(by, floor):
    """The floor of the 8-job random reads (floor.py: the same fio job on
    nullfs): its IOPS and CPU per read, each filesystem's IOPS as a
    fraction of it, and where issue 21's 2 × s3fs-fuse stands."""
    head = "- the floor of those random reads (the same fio job on nullfs, bench/README.md)"
    if floor is None or not floor.ok:
        return f"{head}: " + (f"{floor.status}: {floor.why[:200]}" if floor else "not run")
    us = per_read_us(floor)
    text = (f"{head}: **{floor.iops:,.0f} IOPS**, nullfs {floor.cpu_s:.2f} core-s"
            + (f" ({us:.1f} µs a read)" if us else ""))
    for key in ("pailfs", "s3fs"):
        r = by[key].results.get("rand8") if key in by else None
        if r and r.ok:
            us = per_read_us(r)
            text += (f"; {by[key].c.label} {r.iops:,.0f} IOPS = **{r.iops / floor.iops:.2f} × "
                     f"the floor**" + (f", {us:.1f} µs of its CPU a read" if us else ""))
    s3fs = by["s3fs"].results.get("rand8") if "s3fs" in by else None
    if s3fs and s3fs.ok:
        want = 2 * s3fs.iops
        text += (f"; issue 21's 2 × s3fs-fuse would be {want:,.0f} IOPS = "
                 f"{want / floor.iops:.2f} × the floor ("
                 + ("above it: no FUSE filesystem mounted so reaches it here" if want > floor.iops
                    else "within it") + ")")
    return text


def _table_cell(r, footnote):
    """One operation of the request table: 'N: types, time', or why not."""
    if not r.ran:
        return "not run"
    text = f"{reqcount.text(r.counts)}" + (f", {r.seconds * 1000:.0f} ms" if r.seconds else "")
    if r.why:
        text = f"**FAIL** {footnote(r.why)}" + (f" ({text})" if r.counts else "")
    elif r.note:
        text += " " + footnote(r.note)
    return text


def request_table(rows, footnote):
    """The "requests" workload: one line per operation, one column per
    filesystem, and the fewest S3 allows beside them."""
    done = [row for row in rows if row.results.get("requests") and
            row.results["requests"].table]
    if not done:
        return ""
    head = ["operation"] + [row.c.label for row in done] + ["fewest needed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, spec in enumerate(reqtable.ROWS):
        cells = [spec.title]
        for row in done:
            r = row.results["requests"].table[i]
            cells.append(_table_cell(r, lambda why: footnote(f"{row.c.label}, {spec.title}: "
                                                             f"{why}")))
        cells.append(f"{spec.fewest}" + (f" ({spec.gloss})" if spec.gloss else ""))
        lines.append("| " + " | ".join(cells) + " |")
    totals = [reqtable.total(row.results["requests"].table) for row in done]
    lines.append("| all of the above | " + " | ".join(reqcount.text(t) for t in totals) +
                 f" | {reqtable.FEWEST_TOTAL} |")
    opts = "; ".join(f"{row.c.label} `{row.c.SHORT_TTL}`" for row in done)
    intro = ("Request table (workload `requests`, bench/README.md says what each row does): "
             "requests the server saw for each operation, by type, and the operation's time, "
             f"on a mount that trusts names and attributes for 1 s ({opts}).")
    return intro + "\n\n" + "\n".join(lines)


def make_chart(rows, cols, titles, png_path, workdir, meta):
    """Grouped bars: each contender's speed as a fraction of the fastest
    contender in that workload (the raw limit included)."""
    cols = [w for w in cols if w.kind != "requests"]
    live = [r for r in rows if not r.missing]
    if not live:
        return False
    table = []
    for w in cols:
        speeds = [speed(w, r.results.get(w.id)) for r in live]
        best = max([s for s in speeds if s] or [0])
        table.append((w.title, [s / best if s and best else None for s in speeds]))
    title = ("pailfs vs s3fs-fuse vs rclone vs raw limit — "
             f"{'quick' if meta.quick else 'full'}{', WAN-shaped' if meta.wan else ''}"
             f"{', https' if meta.https else ''} "
             f"({meta.started:%Y-%m-%d})")
    return plot([r.c.label for r in live], table, title, png_path, workdir)


def plot(labels, table, title, png_path, workdir):
    """labels: one per contender; table: (workload, [fraction or None]) rows."""
    if not which("gnuplot"):
        log("report: gnuplot not installed; no chart")
        return False
    dat = os.path.join(workdir, "chart.dat")
    values = [v for _, vals in table for v in vals if v]
    floor = 10 ** math.floor(math.log10(min(values))) if values else 0.001
    floor = min(floor, 0.001)
    with open(dat, "w") as f:
        f.write("workload " + " ".join(f'"{l}"' for l in labels) + "\n")
        for name, vals in table:
            f.write(f'"{name.replace(chr(34), "")}" ' +
                    " ".join(f"{v:.6f}" if v else "?" for v in vals) + "\n")
    tics = [10 ** -k for k in range(0, -int(round(math.log10(floor))) + 1)] + [0.2, 0.5]
    ytics = ", ".join(f'"{t:g}" {t:g}' for t in sorted(tics))
    script = f"""
set terminal pngcairo size 1600,650 font "sans,10"
set output "{png_path}"
set title "{title}\\nspeed as a fraction of the fastest in each workload, log scale (higher is better; no bar = failed or not run; writes: until in the bucket)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set yrange [{floor:g}:1.5]
set ytics ({ytics})
set grid ytics
set datafile missing "?"
set key outside right top
set xtics rotate by -30 scale 0
plot for [i=2:{len(labels) + 1}] "{dat}" using i:xtic(1) title columnheader(i)
"""
    r = run(["gnuplot"], timeout=60, input=script.encode())
    if r.rc != 0:
        script = script.replace("pngcairo size 1600,650 font \"sans,10\"", "png size 1600,650")
        r = run(["gnuplot"], timeout=60, input=script.encode())
    if r.rc != 0:
        log(f"report: gnuplot failed: {r.err.strip()[-300:]}")
        return False
    return os.path.exists(png_path)
