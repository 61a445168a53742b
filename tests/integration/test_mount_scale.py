"""Many at once inside one memory bound (issue 22): the memory gauges of
every use (read, write, gz, list) never sum past max_memory while a
reader, a writer and gzip views run together under a small bound, and all
of them finish with the right bytes; the inflating threads are the
mount's, shared by every view (counted in /proc/PID/task); 1,000 files
open for reading and 100 for writing at once; the default max_memory
follows the memory cgroup pailfs runs in."""

import concurrent.futures
import gzip
import hashlib
import os
import resource
import threading
import time
import uuid

import pytest

import mount as mount_mod
from helpers import put, text
from mount import mounter, read  # noqa: F401

MiB = 1 << 20
STATS_XATTR = "user.pailfs.stats"
USES = ("read", "write", "gz", "listings")


def memory_gauges(m):
    """{use: bytes} and the limit, from the mount's stats."""
    got, limit = {}, None
    for line in os.getxattr(m.path, STATS_XATTR).decode().splitlines():
        if line.startswith("pailfs_memory_bytes{"):
            use = line.split('use="')[1].split('"')[0]
            got[use] = int(line.rsplit(" ", 1)[1])
        elif line.startswith("pailfs_memory_limit_bytes "):
            limit = int(line.rsplit(" ", 1)[1])
    return got, limit


class GaugeWatch:
    """Samples the memory gauges every few ms while work runs."""

    def __init__(self, m):
        self.m = m
        self.samples = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.samples.append(memory_gauges(self.m))
            time.sleep(0.005)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()

    def assert_within(self):
        assert self.samples
        for uses, limit in self.samples:
            assert set(uses) == set(USES), uses
            assert sum(uses.values()) <= limit, (uses, limit)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def read_sha(path, chunk=128 * 1024):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        for c in iter(lambda: f.read(chunk), b""):
            h.update(c)
    return h.hexdigest()


def test_one_bound_across_readers_writers_and_views(s3, bucket, mounter):
    """max_memory=16M: a sequential reader of 24 MiB, a writer streaming
    24 MiB and two gzip views read at once all finish with the right
    bytes, and the sum of the gauges by use never passes the limit."""
    big = os.urandom(24 * MiB)
    put(s3, bucket, "big.bin", big)
    views = {}
    for i in range(2):
        data = text(4 * MiB, seed=20 + i)
        put(s3, bucket, f"v{i}.txt.gz", gzip.compress(data, 1))
        views[f"v{i}.txt"] = sha(data)
    m = mounter(opts={"max_memory": "16M", "part_size": "5M", "gunzip": "view",
                      "gz_span": "1M", "cache_size": "0"})
    new = os.urandom(24 * MiB)
    results = {}

    def reader():
        results["read"] = read_sha(m.p("big.bin"))

    def writer():
        with open(m.p("new.bin"), "wb") as f:
            for off in range(0, len(new), 256 * 1024):
                f.write(new[off:off + 256 * 1024])
        results["write"] = True

    def view(name):
        results[name] = read_sha(m.p(name))

    with GaugeWatch(m) as watch:
        jobs = [threading.Thread(target=reader), threading.Thread(target=writer)]
        jobs += [threading.Thread(target=view, args=(n,)) for n in views]
        for j in jobs:
            j.start()
        for j in jobs:
            j.join(120)
    watch.assert_within()
    assert results["read"] == sha(big)
    assert results["write"] is True
    for name, want in views.items():
        assert results[name] == want, name
    assert sha(s3.get_object(Bucket=bucket, Key="new.bin")["Body"].read()) == sha(new)
    # the gauges did move: the bound was used, not bypassed
    assert max(u["read"] for u, _ in watch.samples) > 0
    assert max(u["write"] for u, _ in watch.samples) > 0
    assert "exceed max_memory" not in m.stderr_text()


def test_writers_refused_memory_stage_to_disk(s3, bucket, mounter):
    """Six files streamed at once under max_memory=16M with 5 MiB parts
    need more than the bound holds: writers that cannot get memory stage
    their files on disk instead of waiting on each other, every file is
    stored whole, and the write gauge stays within the bound."""
    datas = {f"w{i}.bin": os.urandom(11 * MiB + i) for i in range(6)}
    m = mounter(opts={"max_memory": "16M", "part_size": "5M"}, log_level="debug")
    files = {n: open(m.p(n), "wb") for n in datas}
    with GaugeWatch(m) as watch:
        for off in range(0, 12 * MiB, 512 * 1024):
            for n, f in files.items():
                f.write(datas[n][off:off + 512 * 1024])
        for f in files.values():
            f.close()
    watch.assert_within()
    for n, d in datas.items():
        assert sha(s3.get_object(Bucket=bucket, Key=n)["Body"].read()) == sha(d), n
    assert "staged on disk" in m.stderr_text()
    assert "exceed max_memory" not in m.stderr_text()


def gz_threads(pid):
    """The mount's inflating threads now (named pailfs-gz)."""
    n = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                n += f.read().strip() == "pailfs-gz"
        except FileNotFoundError:
            pass
    return n


def test_inflating_threads_are_shared_by_every_view(s3, bucket, mounter):
    """gz_workers=2 and 16 views read sequentially at once: never more
    than 2 inflating threads in the process (one per view before), every
    view's bytes right."""
    want = {}
    for i in range(16):
        data = text(2 * MiB, seed=100 + i)
        put(s3, bucket, f"g{i}.txt.gz", gzip.compress(data, 1))
        want[f"g{i}.txt"] = sha(data)
    m = mounter(opts={"gunzip": "view", "gz_span": "1M", "gz_workers": "2"})
    pid = m.proc.pid
    seen = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.append(gz_threads(pid))
            time.sleep(0.01)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        got = dict(zip(want, ex.map(lambda n: read_sha(m.p(n), 64 * 1024), want)))
    stop.set()
    w.join()
    assert got == want
    assert max(seen) <= 2, max(seen)
    assert max(seen) >= 1  # the views did inflate ahead on the shared threads
    assert gz_threads(pid) <= 2


def test_thousand_open_for_reading_and_hundred_for_writing(s3, bucket, mounter):
    """1,000 handles open for reading (200 objects in 8 directories, each
    opened 5 times: the test server stores about 30 objects a second) and
    100 files open for writing at once under max_memory=16M: every open
    and read succeeds with the right bytes, every written file is stored,
    and the gauges stay within the bound."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    try:
        objs = {f"r{i % 8}/{i:04d}.txt": f"file {i} {uuid.uuid4()}\n".encode() * (1 + i % 7)
                for i in range(200)}
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda kv: put(s3, bucket, kv[0], kv[1]), objs.items()))
        m = mounter(opts={"max_memory": "16M"}, attr_ttl=60)
        outs = {f"w/{i:03d}.txt": os.urandom(1000 + i * 37) for i in range(100)}
        os.makedirs(m.p("w"), exist_ok=True)
        keys = [k for k in objs for _ in range(5)]
        with GaugeWatch(m) as watch, concurrent.futures.ThreadPoolExecutor(16) as ex:
            readers = list(ex.map(lambda k: open(m.p(k), "rb"), keys))
            writers = {k: open(m.p(k), "wb") for k in outs}
            assert len(readers) + len(writers) == 1100
            for k, f in writers.items():
                f.write(outs[k])
            got = list(ex.map(lambda f: f.read(), readers))
            assert got == [objs[k] for k in keys]
            for f in writers.values():
                f.close()
            for f in readers:
                f.close()
        watch.assert_within()
        for k, d in outs.items():
            assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == d, k
        assert "exceed max_memory" not in m.stderr_text()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _memory_cgroup():
    """A fresh memory cgroup directory and the name of its limit file
    (v2 memory.max or v1 memory.limit_in_bytes), or skip."""
    name = f"pailfs-test-{uuid.uuid4().hex[:8]}"
    v2 = "/sys/fs/cgroup"
    if os.path.exists(f"{v2}/cgroup.controllers"):
        try:
            with open(f"{v2}/cgroup.subtree_control") as f:
                if "memory" in f.read().split():
                    os.mkdir(f"{v2}/{name}")
                    return f"{v2}/{name}", "memory.max"
        except OSError:
            pass
    v1 = "/sys/fs/cgroup/memory"
    try:
        os.mkdir(f"{v1}/{name}")
        return f"{v1}/{name}", "memory.limit_in_bytes"
    except OSError as e:
        pytest.skip(f"cannot make a memory cgroup: {e}")


def test_default_max_memory_follows_the_cgroup(s3, bucket, mounter, monkeypatch):
    """pailfs started in a memory cgroup of 1 GiB, without max_memory:
    its bound is an eighth of that (128 MiB), not the machine's."""
    cg, limit_file = _memory_cgroup()
    try:
        with open(f"{cg}/{limit_file}", "w") as f:
            f.write(str(1 << 30))
        original = mount_mod._pailfs_preexec

        def into_cgroup():
            original()
            with open(f"{cg}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))

        monkeypatch.setattr(mount_mod, "_pailfs_preexec", into_cgroup)
        m = mounter()
        _, limit = memory_gauges(m)
        assert limit == 128 * MiB
        m.unmount()
    finally:
        for _ in range(50):
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.1)
