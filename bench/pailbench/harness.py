"""harness.py: one benchmark run from start to end.

  1. install what is missing; build pailfs if there is no binary
  2. start the rig's s3rver on loopback with a fresh data directory and
     its request counter (reqcount.py; and, with --wan, the shaping proxy
     in front of it)
  3. make the fixtures and upload them with boto3, straight to the server
  4. for each contender in turn: for each group of workloads, mount on a
     fresh, empty cache directory, run the group, unmount. A fresh mount per
     group means no workload is helped by a cache an earlier one filled,
     except "seq read, warm", which follows "seq read, cold" on purpose.
     Peak RSS (VmHWM) and the cache/staging directory's peak size are kept
     over all of a contender's mounts. The requests the server saw are
     counted around each workload, its checks excepted.
  5. write the report (markdown + PNG chart) and clean up
"""

import argparse
import dataclasses
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from . import contenders as C
from . import deps
from . import fixtures as F
from . import floor
from . import report
from . import reqcount
from . import workloads as W
from .util import DiskSampler, cpu_seconds, detail, fuse_abort, human_bytes, log, \
    mount_entry, reset_hwm, run, set_log_file, vm_hwm

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO, "tests"))

# Each group gets a fresh mount with an empty cache directory.
GROUPS = [["firstbyte"], ["read_cold", "read_warm"], ["rand1"], ["rand8"], ["gzip"],
          ["write"], ["small_create"], ["small_cat"], ["small_rm"], ["ls"], ["find"],
          ["requests"], W.SCALE, ["scale_read16"], ["scale_gz100"], ["story"]]


# Workloads that read nothing of the uploaded fixtures (they write their
# own): a run of only these skips the upload and the local gzip ceilings.
NO_BUCKET_FIXTURES = {"write", "small_create"}


@dataclass
class Sizes:
    big: int
    gz_plain: int
    small_count: int
    small_dirs: int
    ls_count: int
    tree_dirs: int
    tree_files: int
    fio_seconds: int
    firstbyte_n: int
    scale_one: int = 100000  # the scale group: keys in one directory
    scale_dirs: int = 1000   # ... and directories of 100 keys


FULL = Sizes(big=1 << 30, gz_plain=1 << 30, small_count=1000, small_dirs=10,
             ls_count=10000, tree_dirs=100, tree_files=19, fio_seconds=20, firstbyte_n=20)
QUICK = Sizes(big=128 << 20, gz_plain=128 << 20, small_count=200, small_dirs=4,
              ls_count=1000, tree_dirs=25, tree_files=19, fio_seconds=3, firstbyte_n=20,
              scale_one=10000, scale_dirs=100)


@dataclass
class Timeouts:
    short: int
    read: int
    write: int
    small: int
    meta: int
    visible: int


class Ctx:
    """Everything a workload needs: sizes, fixtures, the server, timeouts."""

    def __init__(self, args, sizes, workdir):
        self.args = args
        self.sizes = sizes
        self.workdir = workdir
        quick = args.quick
        self.t = Timeouts(short=60, read=120 if quick else 400, write=180 if quick else 600,
                          small=120 if quick else 400, meta=120 if quick else 600,
                          visible=120 if quick else 300)
        self.fx = None
        self.server = None
        self.proxy = None
        self.endpoint = None      # what contenders talk to (the proxy with --wan)
        self.client = None        # boto3 straight to the server: fixtures and checks
        self._presigner = None
        self._direct_presigner = None
        self.raw_best_width = 4
        self.pailfs_warm_note = ""
        self.counting = False     # the server counts requests (reqcount.js loaded)
        self.req_fixtures = False  # the request table's bucket is uploaded
        self.scale_idle = {}       # (contender, pid) -> RSS of the mount before the scale group

    def counts(self):
        """The server's request counters once it has been quiet a moment
        (requests a workload's filesystem sends late are the workload's);
        None when the server does not count."""
        return reqcount.quiet(self.server.url) if self.counting else None

    def presign(self, key, direct=False, method="get_object"):
        c = self._direct_presigner if direct else self._presigner
        return c.generate_presigned_url(method, Params={"Bucket": F.BUCKET, "Key": key},
                                        ExpiresIn=6 * 3600)

    def set_endpoint(self, url):
        import rig
        self.endpoint = url
        self._presigner = rig.boto3_client(url)

    def on_stuck(self, c):
        def abort():
            if c.is_fs and c.devnum:
                fuse_abort(c.devnum)
        return abort


def start_proxy(upstream_url, delay_ms, rate, log_path):
    """bench/pailbench/wanproxy.py in front of upstream; returns (proc, url)."""
    hostport = upstream_url.split("//", 1)[1]
    argv = [sys.executable, os.path.join(os.path.dirname(__file__), "wanproxy.py"),
            "--upstream", hostport, "--delay-ms", str(delay_ms), "--rate", str(rate)]
    logf = open(log_path, "ab")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=logf, stdin=subprocess.DEVNULL)
    logf.close()
    line = proc.stdout.readline().decode().split()
    if len(line) != 2 or line[0] != "PORT":
        proc.kill()
        raise RuntimeError(f"wanproxy did not start: {line}")
    return proc, f"http://127.0.0.1:{line[1]}"


def stop_proc(proc):
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --------------------------------------------------------------------------
# One contender
# --------------------------------------------------------------------------

class Row:
    def __init__(self, c):
        self.c = c
        self.results = {}
        self.missing = None       # "not installed ..." for the whole row
        self.peak_rss = None
        self.rss = {}              # workload id -> peak RSS while it ran
        self.cache_peak = None
        self.version = ""
        self.notes = []


def run_fs_contender(ctx, c, row, workloads):
    base = os.path.join(ctx.workdir, c.key)
    os.makedirs(base, exist_ok=True)
    mnt = os.path.join(base, "mnt")
    peak_rss = 0
    cache_peak = 0
    for group in GROUPS:
        group = [w for w in group if w in workloads]
        if not group:
            continue
        cache_dir = os.path.join(base, "cache")
        shutil.rmtree(cache_dir, ignore_errors=True)
        try:
            c.mount(ctx.endpoint, mnt, cache_dir, ctx.workdir,
                    os.path.join(ctx.workdir, "logs", f"{c.key}.log"))
        except C.MountError as e:
            log(f"{c.key}: mount failed: {e}")
            if not row.results:  # never mounted: say it once for the row
                row.missing = f"mount failed: {e}"
                return
            for wid in group:
                row.results[wid] = W.Result(status="ERROR", why=f"mount failed: {e}")
            continue
        sampler = DiskSampler([cache_dir], c.pid)
        sampler.start()
        for wid in group:
            # The peak of this workload alone (the process may have grown
            # in the one before it on the same mount).
            fresh = c.pid and reset_hwm(c.pid)
            cpu0 = cpu_seconds(c.pid) if c.pid else None
            row.results[wid] = run_one(ctx, c, wid, mnt)
            cpu1 = cpu_seconds(c.pid) if c.pid else None
            if cpu0 is not None and cpu1 is not None:
                row.results[wid].cpu_s = cpu1 - cpu0
                log(f"{c.key}: {W.BY_ID[wid].title}: {cpu1 - cpu0:.2f} core-s of the "
                    f"filesystem process ({report.cpu_text(W.BY_ID[wid], row.results[wid])})")
            hwm = vm_hwm(c.pid) if fresh else None
            if hwm:
                row.rss[wid] = hwm
        group_peak = sampler.stop()
        detail(f"{c.key}: {'/'.join(group)}: cache/staging peak {human_bytes(group_peak)}, "
               f"VmHWM {human_bytes(vm_hwm(c.pid) if c.pid else None)}")
        if c.key == "pailfs" and "read_warm" in group and row.results["read_warm"].ok \
                and group_peak == 0:
            row.results["read_warm"].note = ("pailfs put nothing in its cache_dir: no disk "
                                             "block cache in this build, so warm = cold again")
        cache_peak = max(cache_peak, group_peak)
        hwm = vm_hwm(c.pid) if c.pid else None
        peak_rss = max([peak_rss, hwm or 0] + [row.rss[w] for w in group if w in row.rss])
        took, clean = c.unmount(timeout=ctx.t.write)
        if not clean:
            row.notes.append(f"unmount after {'/'.join(group)} was not clean ({took:.0f} s): "
                             f"{c.log_tail(2)}")
        detail(f"{c.key}: unmounted in {took:.1f} s")
    row.peak_rss = peak_rss or None
    row.cache_peak = cache_peak


def run_one(ctx, c, wid, mnt):
    w = W.BY_ID[wid]
    log(f"{c.key}: {w.title} ...")
    before = ctx.counts()
    try:
        if c.is_fs:
            if not mount_entry(mnt) or c.pid is None:
                return W.Result(status="ERROR", why="the filesystem is no longer mounted "
                                f"(process gone: {c.log_tail(2)})")
            res = w.fs(ctx, c, mnt)
        else:
            form = floor.FORMS.get(wid) if c.key == "floor" else w.raw
            res = form(ctx, c) if form else W.Result(status="n/a")
    except Exception as e:  # a broken harness step must not stop the run
        detail(f"{c.key} {wid}: {type(e).__name__}: {e}")
        res = W.Result(status="ERROR", why=f"{type(e).__name__}: {str(e)[:200]}")
    if res.requests is None and res.status != "n/a":
        res.requests = reqcount.diff(before, ctx.counts())
    detail(f"{c.key} {wid}: requests {reqcount.text(res.requests)}; "
           f"{reqcount.ops_text(res.requests)}")
    log(f"{c.key}: {w.title}: {report.cell_text(w, res)}"
        + (f"  [{res.why or res.note}]" if (res.why or res.note) else ""))
    return res


def run_raw_contender(ctx, c, row, workloads):
    for wid in W.RUN_ORDER:
        if wid in workloads:
            row.results[wid] = run_one(ctx, c, wid, None)


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run",
        description="pailfs side by side with s3fs-fuse, rclone mount and the raw limit, "
                    "on one local S3 server (s3rver).")
    ap.add_argument("--quick", action="store_true", help="small sizes; under 3 minutes")
    ap.add_argument("--wan", action="store_true",
                    help="put a shaping proxy in front of the server (first-byte delay, "
                         "per-connection cap)")
    ap.add_argument("--https", action="store_true",
                    help="the server speaks https (a self-signed certificate each "
                         "contender is told to trust); pailfs then sends upload bodies "
                         "as UNSIGNED-PAYLOAD")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="--wan first-byte delay")
    ap.add_argument("--rate", type=float, default=100.0, help="--wan cap, MB/s per connection")
    ap.add_argument("--only", help="comma-separated contenders: pailfs,s3fs,rclone-off,"
                                   "rclone-writes,raw,floor (the least core-seconds a FUSE "
                                   "filesystem can spend: bench/README.md)")
    ap.add_argument("--workloads", help="comma-separated workload ids: " +
                    ",".join(w.id for w in W.WORKLOADS))
    ap.add_argument("--scale-keys", type=int, default=None,
                    help="keys in the one directory of the scale group (default 100000; "
                    "10000 with --quick)")
    ap.add_argument("--pailfs", default=os.path.join(REPO, "build", "src", "pailfs"),
                    help="the pailfs binary (default build/src/pailfs)")
    ap.add_argument("--tmp", default="/var/tmp",
                    help="where the server's data and the mounts go (a fast local disk)")
    ap.add_argument("--server-tmp", default=None,
                    help="where s3rver keeps its data (default: /dev/shm when it has room, "
                         "else --tmp)")
    ap.add_argument("--out", default=os.path.join(BENCH_DIR, "results"),
                    help="directory for <date>.md and .png")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get/npm/build")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    return ap.parse_args(argv)


def local_ceilings(ctx):
    """What the local CPU can do on the gzip fixture, for context."""
    fx = ctx.fx
    notes = []
    run(f"cat {W.q(fx.gz_path)} > /dev/null", timeout=120)
    for name, cmd in (("zcat | grep -c", "zcat"), ("igzip -dc | grep -c", "igzip -dc")):
        r = run(f"{cmd} {W.q(fx.gz_path)} | grep -cF {W.q(F.PATTERN)}", timeout=ctx.t.read)
        if r.rc == 0 and r.out.strip() == str(fx.gz_matches):
            notes.append(f"`{name}` on the local file: {r.seconds:.2f} s, "
                         f"{fx.gz_plain_size / r.seconds / 1e6:.0f} MB/s")
    return notes


def main(argv):
    args = parse_args(argv)
    args.argv = list(argv)
    if os.geteuid() != 0:
        print("bench/run: run as root (it mounts filesystems and drops the page cache)",
              file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    if args.scale_keys:
        sizes = dataclasses.replace(sizes, scale_one=args.scale_keys)
    started = datetime.datetime.now()
    stamp = started.strftime("%Y-%m-%d-%H%M%S") + ("-quick" if args.quick else "") + \
        ("-wan" if args.wan else "") + ("-https" if args.https else "")
    os.makedirs(args.tmp, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="pailfs-bench-", dir=args.tmp)
    os.makedirs(os.path.join(workdir, "logs"))
    set_log_file(os.path.join(workdir, "logs", "bench.log"))
    log(f"bench: {'quick' if args.quick else 'full'} run{' --wan' if args.wan else ''}"
        f"{' --https' if args.https else ''}; work directory {workdir}")
    free = shutil.disk_usage(workdir).free
    need = 3 * sizes.big + 2 * sizes.gz_plain // 4 + (1 << 30)
    if free < need:
        log(f"bench: only {human_bytes(free)} free in {args.tmp}, want {human_bytes(need)}")
        return 2

    # The server's files live in tmpfs when there is room: drop_caches cannot
    # evict them there, so a "cold" read is cold in the client only and the
    # stand-in for S3 never becomes a local-disk benchmark.
    server_tmp = args.server_tmp
    server_need = 2 * sizes.big + sizes.gz_plain // 3 + (256 << 20)
    if not server_tmp:
        shm_free = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0
        server_tmp = "/dev/shm" if shm_free > 2 * server_need else args.tmp
    server_dir = tempfile.mkdtemp(prefix="pailfs-bench-s3rver-", dir=server_tmp)
    log(f"bench: s3rver data in {server_dir}")

    # SIGTERM ends the run like Ctrl-C: through the finally blocks that
    # unmount, stop the server and remove the work directories.
    signal.signal(signal.SIGTERM, _sigterm)
    rows = []
    try:
        return _run(args, sizes, started, stamp, workdir, server_tmp, server_dir, rows)
    finally:
        for row in rows:
            if row.c.is_fs:
                row.c.kill()
        shutil.rmtree(server_dir, ignore_errors=True)
        logs = os.path.join(args.tmp, f"pailfs-bench-logs-{stamp}")
        shutil.move(os.path.join(workdir, "logs"), logs)
        log(f"logs in {logs}")
        old_logs = sorted(d for d in os.listdir(args.tmp) if d.startswith("pailfs-bench-logs-"))
        for d in old_logs[:-10]:  # keep the last ten runs' logs
            shutil.rmtree(os.path.join(args.tmp, d), ignore_errors=True)
        if args.keep:
            log(f"kept {workdir}")
        elif mounts_under(workdir):
            log(f"not removing {workdir}: still mounted there: {mounts_under(workdir)}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def trust_own_certificate(workdir):
    """--https: a self-signed certificate for the server, trusted by the
    harness's own boto3 and curl (AWS_CA_BUNDLE, CURL_CA_BUNDLE, inherited
    by the raw limit's commands) and by each contender through its own
    option (Contender.ca_cert). Returns (cert, key) for the server."""
    import rig
    tls = rig.self_signed_cert(workdir)
    os.environ["AWS_CA_BUNDLE"] = os.environ["CURL_CA_BUNDLE"] = str(tls[0])
    C.Contender.ca_cert = str(tls[0])
    log(f"bench: https, certificate {tls[0]}")
    return tls


def snapshot_pailfs(binary, workdir):
    """Run one pailfs for the whole run: others may rebuild build/src/pailfs
    while it goes, and every group of workloads mounts afresh."""
    if not os.access(binary, os.X_OK):
        return binary
    copy = os.path.join(workdir, "pailfs.bin")
    shutil.copy2(binary, copy)
    return copy


def _run(args, sizes, started, stamp, workdir, server_tmp, server_dir, rows):
    if not args.no_install:
        deps.ensure_packages()
        deps.ensure_s3_server()
        deps.ensure_pailfs(args.pailfs)

    only = set(args.only.split(",")) if args.only else None
    # the scale group runs only when asked for ("scale" names all of it),
    # and so does each workload of W.BY_NAME_ONLY
    workloads = set(args.workloads.split(",")) if args.workloads else \
        {w.id for w in W.WORKLOADS} - set(W.SCALE) - W.BY_NAME_ONLY
    if "scale" in workloads:
        workloads = (workloads - {"scale"}) | set(W.SCALE)
    pailfs_version = C.Pailfs(args.pailfs).version() if os.access(args.pailfs, os.X_OK) else ""
    contenders = C.all_contenders(snapshot_pailfs(args.pailfs, workdir), only)
    if pailfs_version:
        contenders[0].version_text = pailfs_version
    rows += [Row(c) for c in contenders]
    for row in rows:
        row.missing = row.c.missing()
        row.version = row.c.version() if not row.missing else ""
        if row.missing:
            log(f"{row.c.key}: {row.missing}")

    import rig
    ctx = Ctx(args, sizes, workdir)
    proxies = []
    extra_notes = []
    t_start = time.monotonic()
    load_start = os.getloadavg()
    try:
        ctx.fx = F.build(workdir, os.path.join(BENCH_DIR, ".cache"), sizes)
        tls = trust_own_certificate(workdir) if args.https else None
        with reqcount.preloaded():
            ctx.server = rig.S3Server(server_dir, buckets=[F.BUCKET], tls=tls)
        ctx.counting = reqcount.snapshot(ctx.server.url) is not None
        if not ctx.counting:
            log("bench: the server does not count requests (reqcount.js not loaded)")
        # The harness's own requests (fixtures, checks) are marked, never counted.
        ctx.client = rig.boto3_client(ctx.server.url, retries=2, read_timeout=300,
                                      max_pool_connections=32,
                                      user_agent_extra=reqcount.HARNESS_AGENT)
        ctx._direct_presigner = rig.boto3_client(ctx.server.url)
        if workloads <= NO_BUCKET_FIXTURES:
            log("fixtures not uploaded: no workload asked for reads them")
        else:
            t = time.monotonic()
            F.upload_all(ctx.client, ctx.fx)
            F.warm_listings(ctx.client, [F.LS_PREFIX, F.TREE_PREFIX])
            log(f"fixtures uploaded in {time.monotonic() - t:.0f} s")
            extra_notes += local_ceilings(ctx)
        if workloads & set(W.SCALE):  # only when asked for: minutes of PUTs
            t = time.monotonic()
            F.upload_scale(ctx.client, ctx.fx, str(ctx.server.directory))
            F.warm_listings(ctx.client, [F.SCALE_ONE, F.SCALE_TREE], max_pages=2)
            log(f"scale keys uploaded in {time.monotonic() - t:.0f} s")

        if args.wan:
            ctx.set_endpoint(ctx.server.url)
            direct = W.raw_read_sweep(ctx, ctx.presign(F.BIG_KEY))
            proc, url = start_proxy(ctx.server.url, 0, 0,
                                    os.path.join(workdir, "logs", "wanproxy-ceiling.log"))
            proxies.append(proc)
            ctx.set_endpoint(url)
            through = W.raw_read_sweep(ctx, ctx.presign(F.BIG_KEY))
            stop_proc(proc)
            extra_notes.append(
                "proxy ceiling (raw read through the proxy with no delay and no cap): " +
                report.cell_text(W.BY_ID["read_cold"], through) +
                f" vs {report.cell_text(W.BY_ID['read_cold'], direct)} straight to the server")
            log(extra_notes[-1])
            proc, url = start_proxy(ctx.server.url, args.delay_ms, args.rate,
                                    os.path.join(workdir, "logs", "wanproxy.log"))
            proxies.append(proc)
            ctx.set_endpoint(url)
            log(f"wan: contenders go through {url} (first byte +{args.delay_ms:g} ms, "
                f"{args.rate:g} MB/s per connection)")
        else:
            ctx.set_endpoint(ctx.server.url)

        for row in rows:
            if row.missing:
                continue
            t = time.monotonic()
            if row.c.is_fs:
                run_fs_contender(ctx, row.c, row, workloads)
            else:
                run_raw_contender(ctx, row.c, row, workloads)
            log(f"{row.c.key}: done in {time.monotonic() - t:.0f} s")
    finally:
        for row in rows:
            if row.c.is_fs:
                row.c.kill()
        for p in proxies:
            stop_proc(p)
        if ctx.server:
            ctx.server.stop()
            shutil.copy(ctx.server.log_path, os.path.join(workdir, "logs"))

    elapsed = time.monotonic() - t_start
    load_end = os.getloadavg()
    meta = report.Meta(
        command="bench/run " + " ".join(args.argv), started=started, elapsed=elapsed,
        quick=args.quick, wan=args.wan, delay_ms=args.delay_ms, rate=args.rate,
        sizes=sizes, fx=ctx.fx, extra_notes=extra_notes, workloads=workloads,
        server_dir=server_tmp, load=(load_start, load_end), https=args.https)
    os.makedirs(args.out, exist_ok=True)
    md_path = os.path.join(args.out, stamp + ".md")
    png_path = os.path.join(args.out, stamp + ".png")
    text = report.write(rows, meta, md_path, png_path, workdir)
    print(text)
    log(f"report: {md_path}" + (f", chart {png_path}" if os.path.exists(png_path) else ""))
    log(f"total {elapsed:.0f} s")
    return 0


def mounts_under(top):
    top = os.path.realpath(top) + "/"
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(top)]
