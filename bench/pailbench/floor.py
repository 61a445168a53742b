"""floor.py: the floor of issue 21, measured in the same run as the
filesystems — the fewest core-seconds per GiB any FUSE filesystem on this
machine could spend moving the same bytes to or from the same server,
taken part by part (the `floor` contender):

  seq read, cold   receive + reply
      receive    curl GETs of the object to /dev/null (its own process):
                 one GET, and the raw limit's parallel ranged GETs (as
                 many at once as its best); the smaller counts
      reply      nullfs (bench/nullfs.c: one file answered from one
                 buffer, mounted with pailfs's read-ahead), `cat` of the
                 whole file after drop_caches: core-seconds of nullfs
  seq read, warm   reply, measured again (a disk cache cannot cost less
                   than answering from memory)
  seq write        take + [SHA-256, over http] + send
      take       nullfs accepting `dd bs=1M` of the fixture, thrown away
      SHA-256    the payload hash of a signed upload: OpenSSL's libcrypto
                 (Python's hashlib, in memory) over the fixture's bytes
      send       curl PUT of the fixture to a presigned URL (its process,
                 TLS included with --https) less what reading the file
                 costs (dd of it to /dev/null), since a filesystem sends
                 from memory it already took from FUSE

  rand8            fio's 8-job 4 KiB random reads (the same job as the
                   filesystems', O_DIRECT) of nullfs's file: its IOPS and
                   nullfs's core-seconds, the most reads and the least CPU
                   per read any FUSE filesystem mounted so could give fio
                   here (no parts: a read is all reply)

Each part is one process's user + system time: curl's and dd's from
getrusage(RUSAGE_CHILDREN) around it, nullfs's from /proc as for the
filesystems. Over https pailfs signs UNSIGNED-PAYLOAD (issue 13's CRC32C
carries integrity), so the https write floor has no SHA-256 in its sum
(the part is still shown) and no CRC32C either (a few hundredths of a
core-second per GiB): it stays a floor. The TLS send is curl's, libcurl
and OpenSSL as pailfs uses them: a floor for such a client, not for one
with kernel TLS.

The reader of the reply floor is `cat | wc -c`, not the filesystems'
`cat | openssl dgst`: only nullfs's own time is counted, and it is the
same work whoever reads (the check is the byte count; nullfs's bytes are
its buffer's pattern, not the fixture's).
"""

import concurrent.futures
import hashlib
import os
import random
import resource
import time

from . import contenders as C
from . import fixtures as F
from . import scale as S
from . import workloads as W
from .util import cpu_seconds, detail, drop_caches, each_at_once, run

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NULLFS_SRC = os.path.join(BENCH_DIR, "nullfs.c")
GIB = float(1 << 30)


# --------------------------------------------------------------------------
# nullfs: built once per run, mounted per measurement
# --------------------------------------------------------------------------

def nullfs_binary(ctx):
    """bench/nullfs.c compiled into the work directory (cc, libfuse3-dev:
    what pailfs builds with); raises RuntimeError with the compiler's
    message when it cannot be built."""
    out = os.path.join(ctx.workdir, "nullfs")
    if not os.access(out, os.X_OK):
        ran = run(f"cc -O2 -std=c11 -Wall $(pkg-config --cflags fuse3) -o {W.q(out)} "
                  f"{W.q(NULLFS_SRC)} $(pkg-config --libs fuse3)", timeout=120)
        if ran.rc != 0:
            raise RuntimeError(f"cannot build nullfs: {ran.err.strip()[-200:]}")
    return out


class NullFs(C.Contender):
    key = "nullfs"
    label = "nullfs"

    def __init__(self, binary, size):
        super().__init__()
        self.binary, self.size = binary, size

    def argv(self, endpoint, mnt, cache_dir, workdir):
        return [self.binary, str(self.size), mnt]


def _mount_nullfs(ctx, size=None):
    c = NullFs(nullfs_binary(ctx), size or ctx.fx.big_size)
    base = os.path.join(ctx.workdir, "floor")
    c.mount(None, os.path.join(base, "mnt"), os.path.join(base, "cache"), ctx.workdir,
            os.path.join(ctx.workdir, "logs", "nullfs.log"))
    # what pailfs does to its own mount (src/main.c raise_kernel_readahead)
    with open(f"/sys/class/bdi/{c.devnum}/read_ahead_kb", "w") as f:
        f.write("1024\n")
    return c


def _on_nullfs(ctx, step):
    """step(c, path of its file) -> Result; its cpu_s is set to the
    core-seconds nullfs spent in it."""
    c = _mount_nullfs(ctx)
    try:
        cpu0 = cpu_seconds(c.pid)
        res = step(c, os.path.join(c.mnt, "data"))
        cpu1 = cpu_seconds(c.pid)
        if res.ok:
            res.cpu_s = cpu1 - cpu0
    finally:
        c.unmount(timeout=30)
    return res


def reply_part(ctx):
    """`cat` of nullfs's file of the fixture's size after drop_caches."""
    def cat(c, path):
        drop_caches(ctx.on_stuck(c))
        ran = run(f"cat {W.q(path)} | wc -c", timeout=ctx.t.read, on_stuck=ctx.on_stuck(c))
        bad = W.from_ran(ran, "cat")
        if bad:
            return bad
        if ran.out.strip() != str(ctx.fx.big_size):
            return W.fail(f"cat read {ran.out.strip()} bytes of nullfs's {ctx.fx.big_size}")
        return W.Result(seconds=ran.seconds, nbytes=ctx.fx.big_size)
    return _on_nullfs(ctx, cat)


def _pattern():
    """nullfs's buffer (bench/nullfs.c main): byte i of its file is
    pattern[i % len(pattern)]."""
    return bytes(((i * 131) >> 3) & 0xFF for i in range(1 << 20))


def _pattern_bad(path, size, n=64):
    """How many of n random 4 KiB blocks of nullfs's file differ from its
    pattern (read around the page cache's copy: dropped before)."""
    pat, bad = _pattern(), 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(n):
            off = random.randrange(size // 4096) * 4096
            at = off % len(pat)
            if os.pread(fd, 4096, off) != pat[at:at + 4096]:
                bad += 1
    finally:
        os.close(fd)
    return bad


def rand_reads(ctx, jobs):
    """fio's random reads (workloads.fio_randread, the filesystems' job) of
    nullfs's file; 64 random blocks checked against nullfs's pattern."""
    def fio(c, path):
        res = W.fio_randread(ctx, c, path, jobs)
        if not res.ok:
            return res
        drop_caches(ctx.on_stuck(c))
        bad = _pattern_bad(path, ctx.fx.big_size)
        return W.fail(f"{bad} of 64 random 4 KiB blocks differ from nullfs's pattern") \
            if bad else res
    return _on_nullfs(ctx, fio)


def take_part(ctx):
    """`dd bs=1M` of the fixture (in page cache) into nullfs's file."""
    def dd(c, path):
        run(f"cat {W.q(ctx.fx.big_path)} > /dev/null", timeout=ctx.t.read)
        ran = run(["dd", f"if={ctx.fx.big_path}", f"of={path}", "bs=1M", "status=none"],
                  timeout=ctx.t.write, on_stuck=ctx.on_stuck(c))
        return W.from_ran(ran, "dd") or W.Result(seconds=ran.seconds, nbytes=ctx.fx.big_size)
    return _on_nullfs(ctx, dd)


# --------------------------------------------------------------------------
# Programs measured by their own rusage
# --------------------------------------------------------------------------

def _children_cpu():
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def _timed(fn):
    """(fn(), core-seconds of the children reaped meanwhile). Only what fn
    starts may end in between: the floor runs alone, its commands run
    straight (argv, no shell), and the mounts are reaped at unmount."""
    cpu0 = _children_cpu()
    res = fn()
    res.cpu_s = _children_cpu() - cpu0 if res.ok else None
    return res


def _curl_get(ctx, url, rng, want):
    argv = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}"]
    ran = run(argv + (["-r", rng] if rng else []) + [url], timeout=ctx.t.read)
    bad = W.from_ran(ran, "curl")
    if bad:
        return bad
    if ran.out.strip() != str(want):
        return W.fail(f"curl received {ran.out.strip()} bytes, not {want}")
    return W.Result(seconds=ran.seconds, nbytes=want)


def receive_one(ctx):
    url = ctx.presign(F.BIG_KEY)
    return _timed(lambda: _curl_get(ctx, url, None, ctx.fx.big_size))


def receive_parallel(ctx):
    """The raw limit's form: F.PIECES ranged GETs, as many at once as its
    best (ctx.raw_best_width)."""
    url, fx, n = ctx.presign(F.BIG_KEY), ctx.fx, ctx.raw_best_width

    def piece(i):
        a = i * fx.piece_size
        r = _curl_get(ctx, url, f"{a}-{a + fx.piece_size - 1}", fx.piece_size)
        return None if r.ok else r

    def all_pieces():
        seconds, bad = each_at_once(range(F.PIECES), n, piece)
        return bad or W.Result(seconds=seconds, nbytes=fx.big_size)
    res = _timed(all_pieces)
    res.note = f"{F.PIECES} ranged GETs, {n} at once"
    return res


def sha256_part(ctx):
    """OpenSSL's SHA-256 (hashlib is libcrypto's EVP here: SHA-NI where
    the CPU has it) over the fixture, read in 1 MiB pieces; only the
    hashing is timed (this thread's CPU time), and the digest checked."""
    h, spent = hashlib.sha256(), 0.0
    piece = bytearray(1 << 20)
    with open(ctx.fx.big_path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(piece)
            if not n:
                break
            t = time.thread_time()
            h.update(memoryview(piece)[:n])
            spent += time.thread_time() - t
    if h.hexdigest() != ctx.fx.big_sha:
        return W.fail("SHA-256 of the fixture differs from its recorded one")
    return W.Result(nbytes=ctx.fx.big_size, cpu_s=spent,
                    note=f"{hashlib.sha256.__name__}")


def send_part(ctx):
    """curl PUT of the fixture less dd reading it; the object is checked
    by its size in the bucket, then deleted."""
    key = "floor-put.bin"
    url = ctx.presign(key, method="put_object")
    run(f"cat {W.q(ctx.fx.big_path)} > /dev/null", timeout=ctx.t.read)

    def put():
        ran = run(["curl", "-sS", "--fail", "-H", "Expect:", "-T", ctx.fx.big_path,
                   "-o", "/dev/null", url], timeout=ctx.t.write)
        return W.from_ran(ran, "curl -T") or W.Result(seconds=ran.seconds,
                                                       nbytes=ctx.fx.big_size)

    def read():
        ran = run(["dd", f"if={ctx.fx.big_path}", "of=/dev/null", "bs=64K", "status=none"],
                  timeout=ctx.t.read)
        return W.from_ran(ran, "dd") or W.Result(seconds=ran.seconds, nbytes=ctx.fx.big_size)

    sent = _timed(put)
    if not sent.ok:
        return sent
    if W.wait_object(ctx, key, ctx.fx.big_size, ctx.t.visible) is None:
        return W.fail(f"{key}: not in the bucket with {ctx.fx.big_size} bytes after curl -T")
    ctx.client.delete_object(Bucket=F.BUCKET, Key=key)
    reading = _timed(read)
    if not reading.ok:
        return reading
    sent.note = (f"curl -T {sent.cpu_s / ctx.fx.big_size * GIB:.2f} less reading the file "
                 f"{reading.cpu_s / ctx.fx.big_size * GIB:.2f}")
    sent.cpu_s -= reading.cpu_s
    return sent


# --------------------------------------------------------------------------
# The floor contender's workloads: a Result whose cpu_s is the sum, and
# whose parts say what it is made of
# --------------------------------------------------------------------------

def _sum(ctx, parts):
    """parts: (name, Result, in the sum). The first part that failed is
    the result; else cpu_s is the sum of those in it."""
    for name, r, _ in parts:
        if not r.ok:
            r.why = f"{name}: {r.why}"
            return r
    total = sum(r.cpu_s for _, r, counted in parts if counted)
    res = W.Result(nbytes=ctx.fx.big_size, cpu_s=total)
    res.parts = [(name, r.cpu_s / (r.nbytes / GIB), counted, r.note) for name, r, counted in parts]
    detail("floor: " + "; ".join(f"{n} {v:.2f}/GiB{'' if c else ' (not in the sum)'}"
                                 + (f" ({note})" if note else "")
                                 for n, v, c, note in res.parts))
    return res


def read_cold_floor(ctx, c):
    one, many = receive_one(ctx), receive_parallel(ctx)
    if one.ok and many.ok:
        one.note, many.note = "curl, one GET", f"curl, {many.note}"
        use_one = one.cpu_s / one.nbytes <= many.cpu_s / many.nbytes
        parts = [("receive", one, use_one), ("receive", many, not use_one)]
    else:
        parts = [("receive", one, True), ("receive", many, False)]
    reply = reply_part(ctx)
    reply.note = "nullfs, cat"
    return _sum(ctx, parts + [("reply", reply, True)])


def read_warm_floor(ctx, c):
    reply = reply_part(ctx)
    reply.note = "nullfs, cat"
    return _sum(ctx, [("reply", reply, True)])


def write_floor(ctx, c):
    take = take_part(ctx)
    take.note = "nullfs, dd bs=1M"
    sha = sha256_part(ctx)
    send = send_part(ctx)
    https = ctx.args.https
    if https and send.ok:
        send.note += ", TLS"
    return _sum(ctx, [("take", take, True), ("SHA-256", sha, not https), ("send", send, True)])


def _nullfs_bytes(size):
    """What nullfs answers for `size` bytes (a multiple of its 1 MiB
    buffer) read from a multiple of 1 MiB: byte i of the buffer is
    (i * 131 >> 3) mod 256 (bench/nullfs.c)."""
    one = bytes(((i * 131) >> 3) & 0xFF for i in range(1 << 20))
    return one * (size >> 20)


def read16_floor(ctx, c):
    """scale_read16's floor (issue 22), in wall-clock time: 16 curl GETs of
    the 16 objects to /dev/null and, at the same moment, 16 readers of
    16 regions of nullfs as big (`dd | openssl dgst`, as the filesystems'
    readers `cat | openssl dgst`), after drop_caches. Any FUSE filesystem
    must at least receive the bytes and hand them to its readers on the
    same two cores as the server, so its 16 readers cannot finish sooner
    than this does (it also leaves out every handoff between the two)."""
    size, objs = S.ensure_read16(ctx)
    want = hashlib.sha256(_nullfs_bytes(size)).hexdigest()
    nullfs = _mount_nullfs(ctx, 16 * size)
    try:
        data = os.path.join(nullfs.mnt, "data")
        cmds = [f"curl -sS --fail -o /dev/null '{ctx.presign(k)}'" for k in objs]
        cmds += [f"dd if={W.q(data)} bs=128K skip={i * size} count={size} "
                 f"iflag=skip_bytes,count_bytes status=none | openssl dgst -sha256 -r"
                 for i in range(len(objs))]
        drop_caches(ctx.on_stuck(nullfs))
        t = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(cmds)) as ex:
            rans = list(ex.map(lambda cmd: run(cmd, timeout=ctx.t.read), cmds))
        seconds = time.monotonic() - t
    finally:
        nullfs.unmount(timeout=30)
    for cmd, ran in zip(cmds, rans):
        bad = W.from_ran(ran, cmd.split()[0])
        if bad:
            return bad
        if "openssl" in cmd and ran.out.split()[0] != want:
            return W.fail("a reader of nullfs hashed other bytes than its buffer's")
    return W.Result(seconds=seconds, nbytes=16 * size,
                    note="16 curl GETs to /dev/null beside 16 `dd | openssl dgst` of nullfs, "
                         "all at once")


def rand8_floor(ctx, c):
    res = rand_reads(ctx, 8)
    if res.ok:
        res.note += ", nullfs"
        detail(f"floor: rand8 {res.iops:.0f} IOPS, nullfs {res.cpu_s:.2f} core-s, "
               f"{res.cpu_s / res.count * 1e6:.1f} us a read")
    return res


FORMS = {"read_cold": read_cold_floor, "read_warm": read_warm_floor, "write": write_floor,
         "rand8": rand8_floor, "scale_read16": read16_floor}
