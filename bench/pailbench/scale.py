"""scale.py: the `scale` group of issue 22 (many readers, many views, and
the seeds' story under a memory cgroup) — memory and fairness side.

  scale_read16  16 processes each reading its own object sequentially at
                once; aggregate MB/s beside 16 parallel curl streams of the
                same objects, and the slowest reader's MB/s (the target:
                slowest >= 0.5 x mean).
  scale_gz100   100 gzip views read at once (pailfs only; raw: 100 parallel
                curl | gzip -dc); every byte checked, and the mount's peak
                RSS against max_memory + 64 MiB.
  story         (asked for by name: --workloads story) a 2 GiB memory cgroup
                holding a pailfs mount of its own and a job of two Python
                processes reading four gzip views line by line and writing
                CSV back through the mount; the cgroup's peak and OOM kills,
                the output compared with the same job run on the objects
                downloaded first (download, then gzip.open), whose time is
                the raw column.

Objects are made and uploaded the first time a workload needs them, under
scale/ in the bench bucket (the harness's requests carry pailbench-check
and are not counted)."""

import concurrent.futures
import gzip
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid

from . import fixtures as F
from .util import detail, drop_caches, reset_hwm, run, vm_hwm

MiB = 1 << 20
STATS_XATTR = "user.pailfs.stats"


def _result(**kw):
    from .workloads import Result
    return Result(**kw)


def _fail(why, **kw):
    return _result(status="FAIL", why=why, **kw)


def _sizes(ctx):
    """Bytes per object, by workload; PAILBENCH_<NAME>_MIB overrides one
    (e.g. the full story's 600 MiB views in a --quick run)."""
    quick = ctx.args.quick
    sizes = {
        "read16": (16 if quick else 128) * MiB,  # each of 16 objects
        "gz100": (1 if quick else 4) * MiB,      # each view, decompressed
        "story": (64 if quick else 600) * MiB,   # each of 4 views, decompressed
    }
    for name in sizes:
        mib = os.environ.get(f"PAILBENCH_{name.upper()}_MIB", "")
        if mib.isdigit() and int(mib) > 0:
            sizes[name] = int(mib) * MiB
    return sizes


def _upload(ctx, items, threads=16):
    def put(kv):
        ctx.client.put_object(Bucket=F.BUCKET, Key=kv[0], Body=kv[1])
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        list(ex.map(put, items))


def _block(seed, size=4 * MiB):
    """About size bytes of whole lines "id<TAB>name<TAB>value\\n"."""
    rng = random.Random(seed)
    out, n, i = [], 0, 0
    while True:
        line = f"{seed * 10**9 + i}\t{rng.getrandbits(40):x}\t{rng.random():.6f}\n"
        if n + len(line) > size:
            return "".join(out).encode()
        out.append(line)
        n += len(line)
        i += 1


def _text(size, seed):
    """Whole lines, at most size bytes: a 4 MiB block of its own repeated,
    each copy after a line "step<TAB>N<TAB>0.0" (cheap to make, and the
    repeats are further apart than deflate's window)."""
    block = _block(seed, min(size, 4 * MiB))
    out, n, step = [], 0, 0
    while True:
        head = f"step\t{step}\t0.0\n".encode()
        if n + len(head) + len(block) > size:
            return b"".join(out)
        out += [head, block]
        n += len(head) + len(block)
        step += 1


# --------------------------------------------------------------------------
# scale_read16
# --------------------------------------------------------------------------

def ensure_read16(ctx):
    if getattr(ctx, "scale_read16", None):
        return ctx.scale_read16
    size = _sizes(ctx)["read16"]
    objs = {}
    for i in range(16):
        data = os.urandom(size)
        key = f"scale/read16/obj-{i:02d}.bin"
        objs[key] = hashlib.sha256(data).hexdigest()
        ctx.client.put_object(Bucket=F.BUCKET, Key=key, Body=data)
    ctx.scale_read16 = (size, objs)
    return ctx.scale_read16


def _parallel_readers(ctx, cmds, shas, sizes):
    """Run the commands (each prints a sha256 of sizes[key] bytes) at
    once; a Result."""
    times, bad = {}, []
    t0 = time.monotonic()

    def one(item):
        key, cmd = item
        ran = run(cmd, timeout=ctx.t.read)
        if ran.rc != 0:
            bad.append(f"{key}: exited {ran.rc}: {ran.err.strip()[-120:]}")
        elif ran.out.split()[0] != shas[key]:
            bad.append(f"{key}: sha256 differs")
        times[key] = ran.seconds

    with concurrent.futures.ThreadPoolExecutor(len(cmds)) as ex:
        list(ex.map(one, cmds.items()))
    wall = time.monotonic() - t0
    if bad:
        return _fail("; ".join(bad[:3]))
    rates = [sizes[k] / s / 1e6 for k, s in times.items()]
    mean = sum(rates) / len(rates)
    slow = min(rates)
    note = (f"slowest reader {slow:.0f} MB/s = {slow / mean:.2f} x the mean "
            f"{mean:.0f} MB/s (target >= 0.5)")
    detail(f"readers' MB/s: {' '.join(f'{r:.0f}' for r in sorted(rates))}")
    return _result(seconds=wall, nbytes=sum(sizes[k] for k in cmds), note=note)


def scale_read16_fs(ctx, c, mnt):
    size, objs = ensure_read16(ctx)
    drop_caches(ctx.on_stuck(c))
    cmds = {k: f"cat {mnt}/{k} | openssl dgst -sha256 -r" for k in objs}
    return _parallel_readers(ctx, cmds, objs, dict.fromkeys(objs, size))


def scale_read16_raw(ctx, c):
    size, objs = ensure_read16(ctx)
    cmds = {k: f"curl -sS --fail '{ctx.presign(k)}' | openssl dgst -sha256 -r" for k in objs}
    res = _parallel_readers(ctx, cmds, objs, dict.fromkeys(objs, size))
    if res.ok:
        res.note = "16 parallel curl streams, one per object; " + res.note
    return res


# --------------------------------------------------------------------------
# scale_gz100
# --------------------------------------------------------------------------

def _ensure_gz100(ctx):
    if getattr(ctx, "scale_gz100", None):
        return ctx.scale_gz100
    size = _sizes(ctx)["gz100"]
    items, shas, sizes = [], {}, {}
    for i in range(100):
        data = _text(size, 1000 + i)
        key = f"scale/gz100/v-{i:03d}.tsv.gz"
        items.append((key, gzip.compress(data, 1)))
        shas[key] = hashlib.sha256(data).hexdigest()
        sizes[key] = len(data)
    _upload(ctx, items)
    ctx.scale_gz100 = (sizes, shas)
    return ctx.scale_gz100


def _stats_value(mnt, name):
    try:
        text = os.getxattr(mnt, STATS_XATTR).decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[-1])
    return None


def scale_gz100_fs(ctx, c, mnt):
    if c.key != "pailfs" or not c.has_gzip_view():
        return _result(status="n/a", why="no gzip view")
    sizes, shas = _ensure_gz100(ctx)
    drop_caches(ctx.on_stuck(c))
    limit = _stats_value(mnt, "pailfs_memory_limit_bytes")
    reset_hwm(c.pid)
    cmds = {k: f"openssl dgst -sha256 -r {mnt}/{k[:-3]}" for k in shas}
    res = _parallel_readers(ctx, cmds, shas, sizes)
    hwm = vm_hwm(c.pid)
    if not res.ok:
        return res
    res.note = (f"100 views at once; peak RSS {hwm / MiB:.0f} MiB, max_memory "
                f"{limit / MiB:.0f} MiB (target: RSS <= max_memory + 64 MiB)")
    if hwm and limit and hwm > limit + 64 * MiB:
        return _fail(res.note, seconds=res.seconds, nbytes=res.nbytes)
    return res


def scale_gz100_raw(ctx, c):
    sizes, shas = _ensure_gz100(ctx)
    cmds = {k: f"curl -sS --fail '{ctx.presign(k)}' | gzip -dc | openssl dgst -sha256 -r"
            for k in shas}
    res = _parallel_readers(ctx, cmds, shas, sizes)
    if res.ok:
        res.note = "100 parallel curl | gzip -dc"
    return res


# --------------------------------------------------------------------------
# story: the seeds' job inside a 2 GiB memory cgroup
# --------------------------------------------------------------------------

STORY_LIMIT = 2 << 30

# The job: each process reads its inputs line by line (a view, or a .gz
# through gzip.open) and writes CSV lines to its output.
JOB = r'''
import gzip, sys
out_path, inputs = sys.argv[1], sys.argv[2:]
with open(out_path, "w", newline="") as out:
    for path in inputs:
        f = gzip.open(path, "rt") if path.endswith(".gz") else open(path, "rt")
        with f:
            for line in f:
                i, name, v = line.rstrip("\n").split("\t")
                out.write(f"{i},{name.upper()},{float(v) * 2:.6f}\n")
'''


def _ensure_story(ctx):
    if getattr(ctx, "scale_story", None):
        return ctx.scale_story
    size = _sizes(ctx)["story"]
    keys = []
    for i in range(4):
        key = f"scale/story/part-{i}.tsv.gz"
        path = os.path.join(ctx.workdir, f"story-{i}.tsv.gz")
        step = 64 * MiB
        with gzip.open(path, "wb", compresslevel=1) as g:
            for off in range(0, size, step):
                g.write(_text(step, 500 + i * 1000 + off // step))
        ctx.client.upload_file(path, F.BUCKET, key)
        os.unlink(path)
        keys.append(key)
    ctx.scale_story = (size, keys)  # each view about size bytes (whole lines)
    return ctx.scale_story


class Cgroup:
    """A memory cgroup of its own (v2 when the unified tree has the memory
    controller, else v1), its peak and OOM kills."""

    def __init__(self, limit):
        name = f"pailbench-story-{uuid.uuid4().hex[:8]}"
        v2 = "/sys/fs/cgroup"
        self.v2 = False
        try:
            with open(f"{v2}/cgroup.subtree_control") as f:
                self.v2 = "memory" in f.read().split()
        except OSError:
            pass
        self.path = f"{v2}/{name}" if self.v2 else f"{v2}/memory/{name}"
        os.mkdir(self.path)
        self._write("memory.max" if self.v2 else "memory.limit_in_bytes", str(limit))
        if not self.v2:
            try:
                self._write("memory.memsw.limit_in_bytes", str(limit))  # no swap beyond it
            except OSError:
                pass

    def _write(self, name, value):
        with open(f"{self.path}/{name}", "w") as f:
            f.write(value)

    def _read(self, name):
        try:
            with open(f"{self.path}/{name}") as f:
                return f.read()
        except OSError:
            return ""

    def join(self):
        """preexec_fn: the child process enters the cgroup."""
        self._write("cgroup.procs", str(os.getpid()))

    def peak(self):
        v = self._read("memory.peak" if self.v2 else "memory.max_usage_in_bytes").strip()
        return int(v) if v.isdigit() else None

    def oom_kills(self):
        text = self._read("memory.events" if self.v2 else "memory.oom_control")
        for line in text.splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return None

    def remove(self):
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


def _run_job(ctx, script, outs_inputs, preexec=None):
    """Two job processes at once; (seconds, error)."""
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, script, out, *ins], preexec_fn=preexec,
                              stderr=subprocess.PIPE) for out, ins in outs_inputs]
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=ctx.t.read * 4)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        if p.returncode != 0:
            errs.append(f"job exited {p.returncode}: {err.decode(errors='replace')[-200:]}")
    return time.monotonic() - t0, "; ".join(errs)


def _sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def _story_work(ctx):
    work = os.path.join(ctx.workdir, "story")
    os.makedirs(work, exist_ok=True)
    script = os.path.join(work, "job.py")
    with open(script, "w") as f:
        f.write(JOB)
    return work, script


def _story_baseline(ctx):
    """The way the seeds describe, outside any cgroup: download the four
    objects, then the same job through gzip.open.  (total s, download s,
    [sha256 of each output]) once per run, or the error's text."""
    if getattr(ctx, "story_baseline", None):
        return ctx.story_baseline
    _, keys = _ensure_story(ctx)
    work, script = _story_work(ctx)
    t0 = time.monotonic()
    local = []
    for k in keys:
        path = os.path.join(work, os.path.basename(k))
        ctx.client.download_file(F.BUCKET, k, path)
        local.append(path)
    down = time.monotonic() - t0
    base_out = [os.path.join(work, f"base-{i}.csv") for i in range(2)]
    job_s, err = _run_job(ctx, script, [(base_out[0], local[:2]), (base_out[1], local[2:])])
    if err:
        return f"download-then-gzip.open job: {err}"
    want = [_sha_file(p) for p in base_out]
    for p in local + base_out:
        os.unlink(p)
    ctx.story_baseline = (down + job_s, down, want)
    return ctx.story_baseline


def story_fs(ctx, c, mnt):
    if c.key != "pailfs" or not c.has_gzip_view():
        return _result(status="n/a", why="no gzip view")
    size, keys = _ensure_story(ctx)
    work, script = _story_work(ctx)

    base = _story_baseline(ctx)
    if isinstance(base, str):
        return _fail(base)
    base_total, down, want = base

    # pailfs and the job inside one 2 GiB cgroup.
    try:
        cg = Cgroup(STORY_LIMIT)
    except OSError as e:
        return _result(status="n/a", why=f"cannot make a memory cgroup: {e}")
    smnt = os.path.join(work, "mnt")
    os.makedirs(smnt, exist_ok=True)
    cache = os.path.join(work, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    argv = c.argv(ctx.endpoint, smnt, cache, ctx.workdir)
    log_path = os.path.join(ctx.workdir, "logs", "pailfs-story.log")
    proc = None
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=c.env(), preexec_fn=cg.join)
        deadline = time.monotonic() + 30
        while not os.path.ismount(smnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                return _fail(f"pailfs did not mount in the cgroup (see {log_path})")
            time.sleep(0.05)
        limit = _stats_value(smnt, "pailfs_memory_limit_bytes")
        views = [os.path.join(smnt, k[:-3]) for k in keys]
        outs = [os.path.join(smnt, f"scale/story/out-{uuid.uuid4().hex[:6]}-{i}.csv")
                for i in range(2)]
        job_s, err = _run_job(ctx, script, [(outs[0], views[:2]), (outs[1], views[2:])],
                              preexec=cg.join)
        peak, kills = cg.peak(), cg.oom_kills()
        if err:
            return _fail(f"job through the mount: {err}; cgroup peak "
                         f"{(peak or 0) / MiB:.0f} MiB, oom kills {kills}")
        got = [_sha_file(p) for p in outs]  # read back through the mount
        for p in outs:
            os.unlink(p)
    finally:
        if proc and proc.poll() is None:
            subprocess.run(["fusermount3", "-u", smnt], capture_output=True)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        cg.remove()
    note = (f"4 views of {size / MiB:.0f} MiB, 2 processes; cgroup peak "
            f"{(peak or 0) / MiB:.0f} MiB of {STORY_LIMIT / MiB:.0f} MiB, oom kills {kills}, "
            f"pailfs max_memory {(limit or 0) / MiB:.0f} MiB (from the cgroup); "
            f"download-then-gzip.open: {base_total:.1f} s ({down:.1f} s download + "
            f"{base_total - down:.1f} s job)")
    if got != want:
        return _fail("the job's CSV through the mount differs from the downloaded way's; " + note)
    if kills or (peak and peak >= STORY_LIMIT):
        return _fail(note)
    return _result(seconds=job_s, nbytes=4 * size, note=note)


def story_raw(ctx, c):
    base = _story_baseline(ctx)
    if isinstance(base, str):
        return _fail(base)
    size, _ = _ensure_story(ctx)
    return _result(seconds=base[0], nbytes=4 * size,
                   note=f"download ({base[1]:.1f} s), then gzip.open; no cgroup")
