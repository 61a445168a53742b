"""workloads.py: what is measured, and how each result is checked.

Each workload has a filesystem form (run on a mount) and, where one exists,
a raw form (the server's own limit, no filesystem). Both return a Result.
A Result whose check failed has status FAIL and no time: the report never
shows a figure for a wrong answer.

The kernel page cache is dropped (sync; echo 3 > /proc/sys/vm/drop_caches)
before every read that is meant to be cold — and before the "warm" read
too, which is warm only in the filesystem's own cache (pailfs's disk cache
when it has one, s3fs's use_cache directory), never in the page cache.
"""

import concurrent.futures
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass

from . import fixtures as F
from . import reqcount
from . import reqtable
from . import scale
from .util import detail, drop_caches, each_at_once, log, reset_hwm, run, vm_hwm, warm_programs

OPS = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops.py")]
MB = 1e6


@dataclass
class Result:
    status: str = "ok"      # ok | FAIL | TIMEOUT | ERROR | n/a
    seconds: float = None
    nbytes: int = None      # for MB/s
    count: int = None       # files or entries, for a rate
    iops: float = None
    p99_ms: float = None
    median_ms: float = None
    in_bucket: float = None  # writes: seconds from the start until the bucket had it all
    why: str = ""           # why not ok
    note: str = ""          # how it was measured, when that differs
    requests: dict = None   # reqcount.diff of what the server saw (the harness fills it)
    table: list = None      # the request table's rows (reqtable.RowResult)
    cpu_s: float = None     # core-seconds the filesystem process spent (the harness fills it)
    rss_growth: int = None  # scale: bytes the mount's RSS grew over its idle RSS
    parts: list = None      # the floor (floor.py): (part, core-s/GiB, in the sum, how)
    each_seconds: float = None  # raw small_create/small_rm: the same requests one at a time

    @property
    def ok(self):
        return self.status == "ok"


def fail(why, **kw):
    return Result(status="FAIL", why=why, **kw)


def from_ran(ran, what):
    """A Result for a command that did not exit 0, else None."""
    if ran.timed_out:
        return Result(status="TIMEOUT", why=f"{what}: no answer in {ran.err.split('after ')[-1]}")
    if ran.rc != 0:
        last = (ran.err.strip().splitlines() or ["(no message)"])[-1][:160]
        return fail(f"{what} exited {ran.rc}: {last}")
    return None


def q(path):
    return shlex.quote(path)


def sha_of(ran):
    return ran.out.split()[0] if ran.out.strip() else ""


class Workload:
    def __init__(self, wid, title, kind, fs, raw=None):
        self.id, self.title, self.kind, self.fs, self.raw = wid, title, kind, fs, raw


# --------------------------------------------------------------------------
# helpers shared by the checks
# --------------------------------------------------------------------------

def ops(ctx, c, args, timeout):
    ran = run(OPS + [str(a) for a in args], timeout=timeout, on_stuck=ctx.on_stuck(c))
    bad = from_ran(ran, args[0])
    if bad:
        return bad, None
    try:
        return None, json.loads(ran.out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return fail(f"{args[0]}: unreadable output {ran.out[-200:]!r}"), None


def wait_object(ctx, key, size, timeout):
    """Seconds until key exists with size bytes (checked straight on the server)."""
    t = time.monotonic()
    while True:
        try:
            h = ctx.client.head_object(Bucket=F.BUCKET, Key=key)
            if h["ContentLength"] == size:
                return time.monotonic() - t
        except Exception:
            pass
        if time.monotonic() - t > timeout:
            return None
        time.sleep(0.25)


def remote_sha(ctx, key):
    url = ctx.presign(key, direct=True)
    ran = run(f"curl -sS --fail -A {reqcount.HARNESS_AGENT} {q(url)} | openssl dgst -sha256 -r",
              timeout=ctx.t.read)
    return sha_of(ran) if ran.rc == 0 else f"(GET failed: {ran.err.strip()[:100]})"


def list_keys(ctx, prefix):
    keys = {}
    for page in ctx.client.get_paginator("list_objects_v2").paginate(
            Bucket=F.BUCKET, Prefix=prefix):
        for o in page.get("Contents", []):
            keys[o["Key"]] = o["Size"]
    return keys


def check_written(ctx, key, size, sha, close_seconds, res):
    """Verify a written object from outside (boto3/curl straight to the server)."""
    visible = wait_object(ctx, key, size, ctx.t.visible)
    if visible is None:
        return fail(f"{key}: not in the bucket with {size} bytes {ctx.t.visible:.0f} s after close")
    got = remote_sha(ctx, key)
    if got != sha:
        return fail(f"{key}: sha256 in the bucket {got[:16]}… != {sha[:16]}…")
    if visible > 1.0:
        res.in_bucket = close_seconds + visible
        res.note = f"close() returned before the upload: in the bucket {visible:.1f} s later"
    return res


def check_small_created(ctx, prefix, timeout):
    """All small files under prefix/ with their exact bytes (dir markers allowed)."""
    want = {f"{prefix}/{rel[len('small/'):]}": sha for rel, sha in ctx.fx.small_files.items()}
    t = time.monotonic()
    while True:
        keys = list_keys(ctx, prefix + "/")
        files = {k: s for k, s in keys.items() if not k.endswith("/")}
        if set(files) == set(want) and all(s == F.SMALL_SIZE for s in files.values()):
            break
        if time.monotonic() - t > timeout:
            missing = len(set(want) - set(files))
            extra = len(set(files) - set(want))
            return None, f"bucket has {len(files)} files under {prefix}/ ({missing} missing, {extra} unexpected)"
        time.sleep(0.5)
    visible = time.monotonic() - t

    def check(key):
        body = ctx.client.get_object(Bucket=F.BUCKET, Key=key)["Body"].read()
        import hashlib
        return hashlib.sha256(body).hexdigest() == want[key]

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        bad = sum(1 for good in ex.map(check, sorted(want)) if not good)
    if bad:
        return None, f"{bad} files under {prefix}/ have the wrong bytes in the bucket"
    return visible, None


def check_gone(ctx, prefix, timeout):
    t = time.monotonic()
    while True:
        left = list_keys(ctx, prefix)
        if not left:
            return time.monotonic() - t, None
        if time.monotonic() - t > timeout:
            return None, f"{len(left)} keys still under {prefix} (e.g. {sorted(left)[0]})"
        time.sleep(0.5)


# --------------------------------------------------------------------------
# 8. first byte
# --------------------------------------------------------------------------

def _firstbyte_result(data, n):
    if data["bad"]:
        return fail(f"{data['bad']} of {n} bytes read differ from the fixture")
    return Result(median_ms=statistics.median(data["samples_ms"]),
                  note=f"max {max(data['samples_ms']):.1f} ms")


def firstbyte_fs(ctx, c, mnt):
    n = ctx.sizes.firstbyte_n
    bad, data = ops(ctx, c, ["fs-firstbyte", f"{mnt}/{F.BIG_KEY}", n, ctx.fx.big_size,
                             ctx.fx.big_path], ctx.t.short + n * 10)
    return bad or _firstbyte_result(data, n)


def firstbyte_raw(ctx, c):
    n = ctx.sizes.firstbyte_n
    bad, data = ops(ctx, c, ["raw-firstbyte", ctx.presign(F.BIG_KEY), n, ctx.fx.big_size,
                             ctx.fx.big_path], ctx.t.short + n * 10)
    return bad or _firstbyte_result(data, n)


# --------------------------------------------------------------------------
# 1, 2. sequential read, cold and warm
# --------------------------------------------------------------------------

def _seq_read_fs(ctx, c, mnt):
    drop_caches(ctx.on_stuck(c))
    ran = run(f"cat {q(mnt + '/' + F.BIG_KEY)} | openssl dgst -sha256 -r",
              timeout=ctx.t.read, on_stuck=ctx.on_stuck(c))
    bad = from_ran(ran, "cat")
    if bad:
        return bad
    if sha_of(ran) != ctx.fx.big_sha:
        return fail(f"sha256 of what cat read {sha_of(ran)[:16]}… != fixture's")
    return Result(seconds=ran.seconds, nbytes=ctx.fx.big_size)


def read_cold_fs(ctx, c, mnt):
    return _seq_read_fs(ctx, c, mnt)


def read_warm_fs(ctx, c, mnt):
    res = _seq_read_fs(ctx, c, mnt)
    if res.ok and c.key == "pailfs":
        res.note = ctx.pailfs_warm_note
    return res


def _raw_parallel_read(ctx, url, n):
    """16 pieces, n workers; each piece is `curl -r | openssl dgst` and must
    hash to the fixture's piece. (seconds, None) or (None, Result)."""
    fx = ctx.fx

    def piece(i):
        a = i * fx.piece_size
        b = a + fx.piece_size - 1
        ran = run(f"curl -sS --fail -r {a}-{b} {q(url)} | openssl dgst -sha256 -r",
                  timeout=ctx.t.read)
        bad = from_ran(ran, "curl")
        if not bad and sha_of(ran) != fx.piece_shas[i]:
            bad = fail(f"piece {i}: sha256 differs from the fixture's")
        return bad

    seconds, bad = each_at_once(range(F.PIECES), n, piece)
    return (None, bad) if bad else (seconds, None)


def raw_read_sweep(ctx, url, widths=(1, 2, 4, 8, 16)):
    """The best figure over several numbers of parallel ranged GETs."""
    best = None
    for n in widths:
        seconds, bad = _raw_parallel_read(ctx, url, n)
        if bad:
            return bad
        detail(f"raw read with {n} parallel GETs: {seconds:.2f} s")
        if best is None or seconds < best[0]:
            best = (seconds, n)
    ctx.raw_best_width = best[1]
    return Result(seconds=best[0], nbytes=ctx.fx.big_size,
                  note=f"best of {'/'.join(map(str, widths))} parallel ranged GETs: {best[1]}")


def read_cold_raw(ctx, c):
    return raw_read_sweep(ctx, ctx.presign(F.BIG_KEY))


def read_warm_raw(ctx, c):
    n = getattr(ctx, "raw_best_width", 4)
    seconds, bad = _raw_parallel_read(ctx, ctx.presign(F.BIG_KEY), n)
    return bad or Result(seconds=seconds, nbytes=ctx.fx.big_size,
                         note=f"no cache: the same {n} parallel GETs again")


# --------------------------------------------------------------------------
# 3. sequential write
# --------------------------------------------------------------------------

def write_fs(ctx, c, mnt):
    key = f"write-{c.key}.bin"
    drop_caches(ctx.on_stuck(c))
    run(f"cat {q(ctx.fx.big_path)} > /dev/null", timeout=ctx.t.read)  # source in page cache
    ran = run(f"dd if={q(ctx.fx.big_path)} of={q(mnt + '/' + key)} bs=1M status=none",
              timeout=ctx.t.write, on_stuck=ctx.on_stuck(c))
    bad = from_ran(ran, "dd")
    if bad:
        return bad
    res = Result(seconds=ran.seconds, nbytes=ctx.fx.big_size)
    res = check_written(ctx, key, ctx.fx.big_size, ctx.fx.big_sha, ran.seconds, res)
    ctx.client.delete_object(Bucket=F.BUCKET, Key=key)
    return res


def write_raw(ctx, c):
    key = "write-raw.bin"
    run(f"cat {q(ctx.fx.big_path)} > /dev/null", timeout=ctx.t.read)
    bad, data = ops(ctx, c, ["raw-put", ctx.endpoint, key, ctx.fx.big_path], ctx.t.write)
    if bad:
        return bad
    res = Result(seconds=data["seconds"], nbytes=ctx.fx.big_size,
                 note="boto3 upload_file (8 MiB parts, 10 threads)")
    res = check_written(ctx, key, ctx.fx.big_size, ctx.fx.big_sha, data["seconds"], res)
    ctx.client.delete_object(Bucket=F.BUCKET, Key=key)
    return res


# --------------------------------------------------------------------------
# 4. random read
# --------------------------------------------------------------------------

def _fio(ctx, c, path, jobs, direct):
    drop_caches(ctx.on_stuck(c))
    cmd = (f"fio --name=randread --filename={q(path)} --readonly --rw=randread "
           f"--bs=4k --ioengine=psync --direct={direct} --numjobs={jobs} "
           f"--time_based --runtime={ctx.sizes.fio_seconds} --size={ctx.fx.big_size} "
           f"--group_reporting --output-format=json")
    return run(cmd, timeout=ctx.sizes.fio_seconds + ctx.t.short, on_stuck=ctx.on_stuck(c))


def fio_randread(ctx, c, path, jobs):
    """fio's 4 KiB random reads of `path` by `jobs` jobs for fio_seconds
    (O_DIRECT, buffered where the filesystem refuses it): a Result with
    iops, p99_ms, count (the reads done) and the note saying how; the
    bytes are not checked here."""
    note = "fio psync, O_DIRECT"
    ran = _fio(ctx, c, path, jobs, 1)
    if ran.rc not in (0, None) and "Invalid argument" in ran.err + ran.out:
        note = "fio psync, buffered (O_DIRECT refused)"
        ran = _fio(ctx, c, path, jobs, 0)
    bad = from_ran(ran, "fio")
    if bad:
        return bad
    try:
        data = json.loads(ran.out[ran.out.index("{"):])
        job = data["jobs"][0]
        rd = job["read"]
    except (ValueError, KeyError, IndexError):
        return fail("fio printed no JSON result")
    if job.get("error"):
        return fail(f"fio reported error {job['error']}")
    if rd["total_ios"] == 0:
        return fail("fio completed no reads")
    p99 = rd["clat_ns"]["percentile"].get("99.000000", 0) / 1e6
    return Result(iops=rd["iops"], p99_ms=p99, count=rd["total_ios"], note=note)


def _randread_fs(ctx, c, mnt, jobs):
    path = f"{mnt}/{F.BIG_KEY}"
    res = fio_randread(ctx, c, path, jobs)
    if not res.ok:
        return res
    # fio cannot check bytes it did not write: compare random blocks ourselves.
    drop_caches(ctx.on_stuck(c))
    bad, blocks = ops(ctx, c, ["fs-blocks", path, ctx.fx.big_path, 64], ctx.t.short)
    if bad:
        return bad
    if blocks["bad"]:
        return fail(f"{blocks['bad']} of 64 random 4 KiB blocks differ from the fixture")
    return res


def _randread_raw(ctx, c, jobs):
    # Every block is checked against the local fixture: keep it in memory.
    run(f"cat {q(ctx.fx.big_path)} > /dev/null", timeout=ctx.t.read)
    bad, data = ops(ctx, c, ["raw-randread", ctx.presign(F.BIG_KEY), ctx.fx.big_size, jobs,
                             ctx.sizes.fio_seconds, ctx.fx.big_path],
                    ctx.sizes.fio_seconds + ctx.t.short)
    if bad:
        return bad
    if data["bad"]:
        return fail(f"{data['bad']} ranged GETs returned bytes that differ from the fixture")
    if data["errors"] or not data["ios"]:
        return fail(f"{data['errors']} ranged GETs failed")
    return Result(iops=data["iops"], p99_ms=data["p99_ms"], count=data["ios"],
                  note="Python threads, 4 KiB ranged GETs on kept-alive connections, every block checked")


def rand1_fs(ctx, c, mnt):
    return _randread_fs(ctx, c, mnt, 1)


def rand8_fs(ctx, c, mnt):
    return _randread_fs(ctx, c, mnt, 8)


def rand1_raw(ctx, c):
    return _randread_raw(ctx, c, 1)


def rand8_raw(ctx, c):
    return _randread_raw(ctx, c, 8)


# --------------------------------------------------------------------------
# 5. gzip
# --------------------------------------------------------------------------

def gzip_view_path(mnt):
    """Where pailfs's decompressed view of data.jsonl.gz appears once
    `-o gunzip=view` exists. The later issue that adds it decides the name;
    adjust here. If the path is not there, the harness falls back to zcat."""
    return f"{mnt}/{F.GZ_KEY[:-3]}"


def _gzip_result(ctx, ran, what, note):
    bad = from_ran(ran, what)
    if bad:
        return bad
    got = ran.out.strip()
    if got != str(ctx.fx.gz_matches):
        return fail(f"grep -c counted {got!r}, the fixture has {ctx.fx.gz_matches}")
    return Result(seconds=ran.seconds, nbytes=ctx.fx.gz_plain_size, note=note)


def gzip_fs(ctx, c, mnt):
    pattern = q(F.PATTERN)
    drop_caches(ctx.on_stuck(c))
    if c.key == "pailfs" and c.has_gzip_view() and os.path.exists(gzip_view_path(mnt)):
        cmd = f"grep -cF {pattern} {q(gzip_view_path(mnt))}"
        note = "pailfs's decompressed view (-o gunzip=view)"
    else:
        cmd = f"zcat {q(mnt + '/' + F.GZ_KEY)} | grep -cF {pattern}"
        note = "zcat | grep -c (pailfs has no gzip view yet)" if c.key == "pailfs" else ""
    ran = run(cmd, timeout=ctx.t.read, on_stuck=ctx.on_stuck(c))
    return _gzip_result(ctx, ran, cmd.split()[0], note)


def gzip_raw(ctx, c):
    cmd = f"curl -sS --fail {q(ctx.presign(F.GZ_KEY))} | igzip -dc | grep -cF {q(F.PATTERN)}"
    return _gzip_result(ctx, run(cmd, timeout=ctx.t.read), "curl | igzip", "curl | igzip -dc | grep -c")


# --------------------------------------------------------------------------
# 6. small files
# --------------------------------------------------------------------------

def small_create_fs(ctx, c, mnt):
    prefix = f"small-{c.key}"
    run(f"cat {q(ctx.fx.small_dir)}/*/* > /dev/null", timeout=60)
    ran = run(f"cp -r {q(ctx.fx.small_dir)} {q(mnt + '/' + prefix)}",
              timeout=ctx.t.small, on_stuck=ctx.on_stuck(c))
    bad = from_ran(ran, "cp -r")
    if bad:
        return bad
    visible, why = check_small_created(ctx, prefix, ctx.t.visible)
    if why:
        return fail(why)
    res = Result(seconds=ran.seconds, count=ctx.fx.small_count)
    if visible > 1.0:
        res.in_bucket = ran.seconds + visible
        res.note = f"cp returned before the uploads: all in the bucket {visible:.1f} s later"
    return res


def ensure_small(ctx, prefix):
    """The small files under prefix/, uploaded by the harness (never
    counted) when small_create did not run before small_cat."""
    want = {f"{prefix}/{rel[len('small/'):]}": rel for rel in ctx.fx.small_files}
    if {k for k in list_keys(ctx, prefix + "/") if not k.endswith("/")} == set(want):
        return
    top = os.path.dirname(ctx.fx.small_dir)
    puts = [(key, os.path.join(top, rel)) for key, rel in want.items()]
    puts += [(d, None) for d in {k.rsplit("/", 1)[0] + "/" for k in want} | {prefix + "/"}]

    def put(item):
        key, path = item
        data = open(path, "rb").read() if path else b""
        ctx.client.put_object(Bucket=F.BUCKET, Key=key, Body=data)

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(put, puts))


def small_cat_fs(ctx, c, mnt):
    prefix = f"small-{c.key}"
    ensure_small(ctx, prefix)
    drop_caches(ctx.on_stuck(c))
    ran = run(f"cd {q(mnt + '/' + prefix)} && cat */* | openssl dgst -sha256 -r",
              timeout=ctx.t.small, on_stuck=ctx.on_stuck(c), env=dict(os.environ, LC_ALL="C"))
    bad = from_ran(ran, "cat */*")
    if bad:
        return bad
    if sha_of(ran) != ctx.fx.small_concat_sha:
        return fail("sha256 of the files read back differs from the local tree's")
    return Result(seconds=ran.seconds, count=ctx.fx.small_count)


def small_rm_fs(ctx, c, mnt):
    prefix = f"small-{c.key}"
    ran = run(f"rm -r {q(mnt + '/' + prefix)}", timeout=ctx.t.small, on_stuck=ctx.on_stuck(c))
    bad = from_ran(ran, "rm -r")
    if bad:
        return bad
    gone, why = check_gone(ctx, prefix, ctx.t.visible)
    if why:
        return fail(why)
    res = Result(seconds=ran.seconds, count=ctx.fx.small_count)
    if gone > 1.0:
        res.note = f"gone from the bucket {gone:.1f} s after rm returned"
    return res


def small_create_raw(ctx, c):
    """The raw limit (16 PUTs at once), and beside it in the note the same
    PUTs one after another, as `cp` sends them: a filesystem whose close
    tells the truth waits for each file's PUT, so one at a time is the fair
    limit for it (issue 19).  Only the 16-thread pass is counted."""
    bad, each = ops(ctx, c, ["raw-small-put", ctx.endpoint, EACH_PREFIX, ctx.fx.small_dir, 1],
                    ctx.t.small)
    if bad:
        return bad
    prefix = "small-raw"
    before = ctx.counts()
    bad, data = ops(ctx, c, ["raw-small-put", ctx.endpoint, prefix, ctx.fx.small_dir], ctx.t.small)
    if bad:
        return bad
    requests = reqcount.diff(before, ctx.counts())
    visible, why = check_small_created(ctx, prefix, ctx.t.visible)
    if why:
        return fail(why)
    return Result(seconds=data["seconds"], count=data["count"], requests=requests,
                  each_seconds=each["seconds"], note=f"boto3, 16 threads; {one_at_a_time(each)}")


# The raw limit's one-at-a-time pass of small_create, removed one at a time
# by small_rm's.
EACH_PREFIX = "small-raw-each"


def one_at_a_time(data):
    return (f"one at a time: {data['seconds']:.2f} s, "
            f"{data['seconds'] * 1000 / max(1, data['count']):.1f} ms a file")


def small_cat_raw(ctx, c):
    ensure_small(ctx, "small-raw")
    bad, data = ops(ctx, c, ["raw-small-get", ctx.endpoint, "small-raw", ctx.fx.small_dir],
                    ctx.t.small)
    if bad:
        return bad
    if data["sha256"] != ctx.fx.small_concat_sha:
        return fail("sha256 of the objects read back differs from the local tree's")
    return Result(seconds=data["seconds"], count=data["count"], note="boto3, 16 threads")


def small_rm_raw(ctx, c):
    """One list and DeleteObjects; in the note, one DeleteObject a file one
    after another, as `rm` sends them (not counted), the fair limit for a
    filesystem (issue 19)."""
    ensure_small(ctx, EACH_PREFIX)
    bad, each = ops(ctx, c, ["raw-small-rm", ctx.endpoint, EACH_PREFIX, "each"], ctx.t.small)
    if bad:
        return bad
    before = ctx.counts()
    bad, data = ops(ctx, c, ["raw-small-rm", ctx.endpoint, "small-raw"], ctx.t.small)
    if bad:
        return bad
    requests = reqcount.diff(before, ctx.counts())
    gone, why = check_gone(ctx, "small-raw", ctx.t.visible)
    if why:
        return fail(why)
    return Result(seconds=data["seconds"], count=data["count"], requests=requests,
                  each_seconds=each["seconds"],
                  note=f"one list + DeleteObjects; {one_at_a_time(each)}")


# --------------------------------------------------------------------------
# 7. metadata
# --------------------------------------------------------------------------

def ls_l_names_sizes(outp):
    """The names and the set of sizes `ls -l` wrote to the file outp."""
    names, sizes = set(), set()
    for line in open(outp, errors="replace"):
        if line.startswith("total"):
            continue
        parts = line.split(None, 8)
        if len(parts) == 9:
            names.add(parts[8].rstrip("\n"))
            sizes.add(parts[4])
    return names, sizes


def ls_fs(ctx, c, mnt):
    want = {f"f{i:05d}" for i in range(ctx.fx.ls_count)}
    return _ls_l_names(ctx, c, mnt, F.LS_PREFIX, want, ctx.fx.ls_size, ctx.t.meta)


def find_fs(ctx, c, mnt):
    return _find_names(ctx, c, mnt, F.TREE_PREFIX, set(ctx.fx.tree_paths), ctx.t.meta)


def _find_names(ctx, c, mnt, prefix, want, timeout):
    """`find` of mnt/prefix, timed, its output checked against `want`
    (paths below prefix)."""
    drop_caches(ctx.on_stuck(c))
    warm_programs("find /dev -maxdepth 0")
    outp = os.path.join(ctx.workdir, f"find-{c.key}-{prefix}.out")
    top = f"{mnt}/{prefix}"
    ran = run(f"find {q(top)} > {q(outp)}", timeout=timeout, on_stuck=ctx.on_stuck(c))
    bad = from_ran(ran, "find")
    if bad:
        return bad
    got = {line.rstrip("\n")[len(top) + 1:] for line in open(outp, errors="replace")} - {""}
    if got != want:
        return fail(f"find listed {len(got)} entries; {len(want - got)} missing, "
                    f"{len(got - want)} unexpected")
    return Result(seconds=ran.seconds, count=len(want))


def ls_raw(ctx, c):
    bad, data = ops(ctx, c, ["raw-list", ctx.endpoint, F.LS_PREFIX, "/"], ctx.t.meta)
    if bad:
        return bad
    keys = {k: s for k, s in data["keys"] if k != F.LS_PREFIX + "/"}
    if len(keys) != ctx.fx.ls_count or set(keys.values()) != {ctx.fx.ls_size}:
        return fail(f"listed {len(keys)} keys")
    return Result(seconds=data["seconds"], count=len(keys), note="ListObjectsV2 pages, one connection")


def find_raw(ctx, c):
    bad, data = ops(ctx, c, ["raw-list", ctx.endpoint, F.TREE_PREFIX], ctx.t.meta)
    if bad:
        return bad
    got = {k[len(F.TREE_PREFIX) + 1:].rstrip("/") for k, _ in data["keys"]} - {""}
    if got != set(ctx.fx.tree_paths):
        return fail(f"listed {len(got)} entries")
    return Result(seconds=data["seconds"], count=len(got),
                  note="ListObjectsV2 without delimiter, one connection")


# --------------------------------------------------------------------------
# 8. scale (issue 22): listings of 100,000 keys, and the mount's memory
# --------------------------------------------------------------------------

def vm_rss(pid):
    """Resident set size (VmRSS) of pid in bytes, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _with_rss(ctx, c, fn):
    """Run fn() on the mount of c and say in the result's note how its RSS
    grew: over the mount's idle RSS (taken before its first scale
    workload), at the end and at the peak (VmHWM, reset before fn)."""
    idle = ctx.scale_idle.setdefault((c.key, c.pid), vm_rss(c.pid))
    fresh = reset_hwm(c.pid)
    res = fn()
    end, peak = vm_rss(c.pid), vm_hwm(c.pid) if fresh else None
    if idle and end:
        res.rss_growth = max(end, peak or 0) - idle
        res.note = ((res.note + "; ") if res.note else "") + (
            f"RSS idle {idle / 2**20:.1f} MiB, at the end {end / 2**20:.1f} MiB "
            f"(+{(end - idle) / 2**20:.1f})"
            + (f", peak {peak / 2**20:.1f} MiB (+{(peak - idle) / 2**20:.1f})" if peak else ""))
        log(f"{c.key}: {res.note}")
    return res


def _ls_l_names(ctx, c, mnt, prefix, want, size, timeout):
    """`ls -l` of mnt/prefix, timed, its names checked against `want` and
    every size against `size`."""
    drop_caches(ctx.on_stuck(c))
    warm_programs("LC_ALL=C ls -l /")
    outp = os.path.join(ctx.workdir, f"ls-{c.key}-{prefix}.out")
    ran = run(f"ls -l {q(mnt + '/' + prefix)} > {q(outp)}", timeout=timeout,
              on_stuck=ctx.on_stuck(c), env=dict(os.environ, LC_ALL="C"))
    bad = from_ran(ran, "ls -l")
    if bad:
        return bad
    names, sizes = ls_l_names_sizes(outp)
    if names != want:
        return fail(f"ls -l listed {len(names)} names, {len(want - names)} missing")
    if sizes != {str(size)}:
        return fail(f"ls -l showed sizes {sorted(sizes)[:3]}, not {size}")
    return Result(seconds=ran.seconds, count=len(want))


def scale_ls10k_fs(ctx, c, mnt):
    want = {f"f{i:05d}" for i in range(ctx.fx.ls_count)}
    return _with_rss(ctx, c, lambda: _ls_l_names(ctx, c, mnt, F.LS_PREFIX, want,
                                                 ctx.fx.ls_size, ctx.t.meta * 10))


def scale_ls_fs(ctx, c, mnt):
    want = set(F.scale_one_names(ctx.fx.scale_one))
    return _with_rss(ctx, c, lambda: _ls_l_names(ctx, c, mnt, F.SCALE_ONE, want, 1,
                                                 ctx.t.meta * 10))


def scale_find_fs(ctx, c, mnt):
    want = set(F.scale_tree_paths(ctx.fx.scale_dirs, ctx.fx.scale_per_dir))
    return _with_rss(ctx, c, lambda: _find_names(ctx, c, mnt, F.SCALE_TREE, want,
                                                 ctx.t.meta * 10))


def _raw_list_count(ctx, c, prefix, delim, want):
    args = ["raw-list", ctx.endpoint, prefix] + ([delim] if delim else [])
    bad, data = ops(ctx, c, args, ctx.t.meta * 10)
    if bad:
        return bad
    got = len([k for k, _ in data["keys"] if k != prefix + "/"])
    if got != want:
        return fail(f"listed {got} keys, not {want}")
    return Result(seconds=data["seconds"], count=got,
                  note="ListObjectsV2 pages, one connection" + ("" if delim else
                                                               ", no delimiter"))


def scale_ls10k_raw(ctx, c):
    return _raw_list_count(ctx, c, F.LS_PREFIX, "/", ctx.fx.ls_count)


def scale_ls_raw(ctx, c):
    return _raw_list_count(ctx, c, F.SCALE_ONE, "/", ctx.fx.scale_one)


def scale_find_raw(ctx, c):
    return _raw_list_count(ctx, c, F.SCALE_TREE, None,
                           ctx.fx.scale_dirs * ctx.fx.scale_per_dir)


# --------------------------------------------------------------------------
# 9. the request table (reqtable.py)
# --------------------------------------------------------------------------

def requests_fs(ctx, c, mnt):
    """Every row of reqtable.ROWS; FAIL when a row's check failed (the
    table still shows every row's counts). Its request count is the rows'
    sum, not the prep listings' or the remounts'."""
    rows = reqtable.run_table(ctx, c, mnt)
    bad = [f"{r.title}: {r.why}" for r in rows if r.why]
    return Result(status="FAIL" if bad else "ok", why="; ".join(bad), table=rows,
                  seconds=sum(r.seconds or 0 for r in rows), requests=reqtable.total(rows))


# --------------------------------------------------------------------------
# The table's columns, in the order; run order is RUN_ORDER.
# --------------------------------------------------------------------------

WORKLOADS = [
    Workload("read_cold", "seq read, cold", "bytes", read_cold_fs, read_cold_raw),
    Workload("read_warm", "seq read, warm", "bytes", read_warm_fs, read_warm_raw),
    Workload("write", "seq write", "bytes", write_fs, write_raw),
    Workload("rand1", "4 KiB rand read, 1 job", "iops", rand1_fs, rand1_raw),
    Workload("rand8", "4 KiB rand read, 8 jobs", "iops", rand8_fs, rand8_raw),
    Workload("gzip", "gzip grep -c", "bytes", gzip_fs, gzip_raw),
    Workload("small_create", "small files: cp -r", "files", small_create_fs, small_create_raw),
    Workload("small_cat", "small files: cat", "files", small_cat_fs, small_cat_raw),
    Workload("small_rm", "small files: rm -r", "files", small_rm_fs, small_rm_raw),
    Workload("ls", "ls -l", "entries", ls_fs, ls_raw),
    Workload("find", "find", "entries", find_fs, find_raw),
    Workload("firstbyte", "first byte", "latency", firstbyte_fs, firstbyte_raw),
    Workload("requests", "request table", "requests", requests_fs),
    Workload("scale_ls10k", "scale: ls -l 10,000", "entries", scale_ls10k_fs, scale_ls10k_raw),
    Workload("scale_ls", "scale: ls -l, one dir", "entries", scale_ls_fs, scale_ls_raw),
    Workload("scale_find", "scale: find, dirs of 100", "entries", scale_find_fs,
             scale_find_raw),
    Workload("scale_read16", "scale: 16 readers of 16 objects", "bytes",
             scale.scale_read16_fs, scale.scale_read16_raw),
    Workload("scale_gz100", "scale: 100 gzip views at once", "bytes",
             scale.scale_gz100_fs, scale.scale_gz100_raw),
    Workload("story", "story: 4 views, 2 jobs, 2 GiB cgroup", "bytes",
             scale.story_fs, scale.story_raw),
]
# The scale group (issue 22), on one mount in this order: the mount's RSS
# after 10,000 entries, then after the big directory, then after the tree.
SCALE = ["scale_ls10k", "scale_ls", "scale_find"]
# Run only when named (--workloads story): minutes of data to make, and a
# memory cgroup.
BY_NAME_ONLY = {"story"}

# First byte runs first, on a big object nothing has read yet through this
# mount; then the reads, so a cache filled by one read shows in the next.
RUN_ORDER = ["firstbyte", "read_cold", "read_warm", "rand1", "rand8", "gzip", "write",
             "small_create", "small_cat", "small_rm", "ls", "find", "requests"] + SCALE + [
             "scale_read16", "scale_gz100", "story"]
BY_ID = {w.id: w for w in WORKLOADS}
