"""Read ahead across files (issue 19, src/fs/prefetch.c), counted at the proxy.

A program that opens the files of a listed directory one after another in
the listing's order gets the next small files (1 MiB at most) fetched
ahead, read_parallel at a time: one GET per file, no HEAD, and the GETs
overlap. Anything else (another order, big files, an object replaced since
the listing) costs at most a bounded few GETs more and always reads the
bytes the bucket holds at the open.
"""

import os
import random
import subprocess
import time

from helpers import ops_of_mount as ops
from helpers import put
from mount import mounter, pailfs_pids  # noqa: F401

STATS_XATTR = "user.pailfs.stats"


def _seed(s3, bucket, prefix, n, size=4096):
    """n files f00..f(n-1) of `size` bytes, each its own bytes; returns
    {name: bytes}."""
    files = {}
    for i in range(n):
        name = f"f{i:02d}"
        data = (b"%s:" % name.encode()) * (size // 4)
        data = data[:size]
        put(s3, bucket, prefix + name, data)
        files[name] = data
    return files


def _listed(proxy, m, d="dir"):
    """The directory's names in its listing's order (os.listdir: readdir),
    then the counters start from zero."""
    names = os.listdir(m.p(d))
    proxy.reset()
    return names


def _read_all(m, d, names):
    out = {}
    for n in names:
        with open(m.p(d, n), "rb") as f:
            out[n] = f.read()
    return out


def _mem_read(m):
    text = os.getxattr(m.path, STATS_XATTR).decode()
    for line in text.splitlines():
        if line.startswith('pailfs_memory_bytes{use="read"}'):
            return float(line.split()[-1])
    raise AssertionError("no read memory gauge in the stats")


def test_files_read_in_listing_order_cost_one_get_each_and_no_head(proxy, s3, bucket,
                                                                   mounter):
    files = _seed(s3, bucket, "dir/", 40)
    m = mounter(attr_ttl=30, neg_ttl=30)
    names = _listed(proxy, m)
    assert names == sorted(files)
    got = _read_all(m, "dir", names)
    assert got == files
    assert ops(proxy) == {"GetObject": 40}, ops(proxy)


def test_cat_of_a_glob_reads_the_right_bytes_with_one_get_each(proxy, s3, bucket, mounter):
    files = _seed(s3, bucket, "dir/", 40, size=1000)
    m = mounter(attr_ttl=30, neg_ttl=30)
    proxy.reset()
    r = subprocess.run("cat dir/*", shell=True, cwd=m.path, capture_output=True,
                       timeout=60, env=dict(os.environ, LC_ALL="C"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"".join(files[n] for n in sorted(files))
    by_op = ops(proxy)
    assert by_op.get("GetObject") == 40, by_op
    assert "HeadObject" not in by_op, by_op


def test_fetches_ahead_overlap(proxy, s3, bucket, mounter):
    files = _seed(s3, bucket, "dir/", 40)
    m = mounter(attr_ttl=60, neg_ttl=60)
    names = _listed(proxy, m)
    proxy.config(latency_ms=100)
    t0 = time.monotonic()
    got = _read_all(m, "dir", names)
    took = time.monotonic() - t0
    assert got == files
    assert ops(proxy) == {"GetObject": 40}, ops(proxy)
    # one after another: 40 x 100 ms at least; 8 at a time: about 0.6 s
    assert took < 2.0, took


def test_a_broken_pattern_fetches_a_bounded_few_more(proxy, s3, bucket, mounter):
    files = _seed(s3, bucket, "dir/", 40)
    m = mounter(attr_ttl=30, neg_ttl=30)
    names = _listed(proxy, m)
    got = _read_all(m, "dir", list(reversed(names)))
    assert got == files
    gets = ops(proxy).get("GetObject", 0)
    assert gets <= 40 + 2, ops(proxy)  # the first file's start: 2 ahead

    m2 = mounter(attr_ttl=30, neg_ttl=30)
    names = _listed(proxy, m2)
    shuffled = list(names)
    random.Random(7).shuffle(shuffled)
    got = _read_all(m2, "dir", shuffled)
    assert got == files
    gets = ops(proxy).get("GetObject", 0)
    assert gets <= 40 + 8, ops(proxy)


def test_an_object_replaced_since_the_listing_reads_new_bytes(proxy, s3, bucket, mounter):
    files = _seed(s3, bucket, "dir/", 20)
    m = mounter(attr_ttl=30, neg_ttl=30)
    names = _listed(proxy, m)
    new = b"N" * 4096  # same size: the kernel keeps the size it was told
    put(s3, bucket, "dir/f05", new)
    files["f05"] = new
    got = _read_all(m, "dir", names)
    assert got["f05"] == new
    assert got == files
    by_op = ops(proxy)
    # f05: the GET ahead refused (412); the open then reads the object as it
    # is now: one GET (its first, unpinned: the name's trust was withdrawn)
    assert by_op.get("GetObject") == 21 and by_op.get("HeadObject", 0) == 0, by_op


def test_files_larger_than_a_block_are_not_read_ahead(proxy, s3, bucket, mounter):
    big = (1 << 20) + 1
    files = {}
    for i in range(12):
        name = f"f{i:02d}"
        data = bytes([65 + i]) * (big if i % 3 == 1 else 3000)
        put(s3, bucket, "dir/" + name, data)
        files[name] = data
    m = mounter(attr_ttl=30, neg_ttl=30)
    names = _listed(proxy, m)
    got = _read_all(m, "dir", names)
    assert got == files
    # the big ones were opened the usual way (their first GET, of block 0,
    # then the rest), never fetched ahead: a fetch ahead would be a third
    st = proxy.stats()
    assert st["requests_total"] == len(st["recent"])
    for i in range(1, 12, 3):
        gets = [r for r in st["recent"]
                if r["op"] == "GetObject" and r["key"] == f"dir/f{i:02d}"]
        assert len(gets) == 2, gets
    assert ops(proxy).get("HeadObject", 0) == 0, ops(proxy)


def test_memory_of_files_fetched_ahead_is_bounded_and_nothing_more_is_fetched(proxy, s3, bucket, mounter):
    _seed(s3, bucket, "dir/", 40)
    m = mounter(attr_ttl=1, neg_ttl=1, opts={"read_parallel": 2, "cache_size": 0})
    names = _listed(proxy, m)
    for n in names[:6]:  # the pattern's window grows to its 4 files ahead
        with open(m.p("dir", n), "rb") as f:
            f.read()
    # 2 x read_parallel blocks of 1 MiB ahead at most, and the read path's
    # reuse pool of 16
    assert _mem_read(m) <= (4 + 16) * (1 << 20)
    # the program stopped: nothing more is fetched while the entries not
    # taken age out (attr_ttl)
    time.sleep(0.5)  # the fetches queued by the last open land
    before = ops(proxy).get("GetObject", 0)
    time.sleep(2.5)
    assert ops(proxy).get("GetObject", 0) == before
    assert before <= 6 + 4, ops(proxy)


def _context_switches(pid):
    """Context switches of each of pid's threads so far: {tid: count}."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                out[tid] = sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except OSError:  # the thread ended
            pass
    return out


def test_an_idle_mounts_fetch_ahead_threads_sleep(proxy, s3, bucket, mounter):
    """With nothing fetched ahead to sweep, the read_parallel fetch-ahead
    threads wait for work, not on a 500 ms timer (8 threads: 48 wake-ups
    in 3 s before; the mount's other timers, such as the inode bound's
    round a second, come to a few)."""
    _seed(s3, bucket, "dir/", 2)
    m = mounter(opts=["read_parallel=8"])
    os.listdir(m.p("dir"))
    time.sleep(1)
    pid = pailfs_pids(m.path)[0]
    before = _context_switches(pid)
    time.sleep(3)
    after = _context_switches(pid)
    woke = {t: n - before.get(t, 0) for t, n in after.items() if n > before.get(t, 0)}
    assert sum(woke.values()) <= 15, woke


def test_an_open_after_the_listing_ran_out_fetches_only_itself(proxy, s3, bucket, mounter):
    """The pattern is made of a listing's names, trusted for attr_ttl: an
    open of the next file long after the last (issue 19's request table,
    `cat dir/f2` after the TTL ran out) is not the walk going on, and
    fetches nothing ahead (it fetched the file after it too)."""
    files = _seed(s3, bucket, "dir/", 4)
    m = mounter(attr_ttl=1, neg_ttl=1)
    names = _listed(proxy, m)
    assert _read_all(m, "dir", names[:1]) == {names[0]: files[names[0]]}
    time.sleep(2.2)  # past attr_ttl: the listing's names are no longer trusted
    proxy.reset()
    assert _read_all(m, "dir", names[1:2]) == {names[1]: files[names[1]]}
    time.sleep(0.5)  # a fetch ahead would be on its way by now
    assert ops(proxy).get("GetObject") == 1, ops(proxy)
