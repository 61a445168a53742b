"""Listings read ahead down trees (issue 19): `find` over a tree costs about
its depth in round trips, each directory listed once, and a listing read
ahead never shows more than attr_ttl of age nor hides this mount's own
changes.

The tree: t/ holds 3 directories, each of those 3, each of those 2: 30
directories in 3 levels, every one with 2 files (implicit directories: no
markers). The requests are counted at the proxy; a per-request delay there
stands for a distant server.
"""

import os
import subprocess
import time

from helpers import ops, put
from mount import mounter  # noqa: F401

DELAY_MS = 400  # large beside what a busy 2-core machine adds per round


def _tree():
    """The tree's directories and files, as paths under t/."""
    dirs, files = [], []
    for a in "abc":
        dirs.append(a)
        for b in "def":
            dirs.append(f"{a}/{b}")
            for c in "gh":
                dirs.append(f"{a}/{b}/{c}")
    for d in dirs:
        files += [f"{d}/f1", f"{d}/f2"]
    return dirs, files


def _seed(s3, bucket):
    dirs, files = _tree()
    for f in files:
        put(s3, bucket, f"t/{f}", f.encode())
    return dirs, files


def _find(top):
    t0 = time.monotonic()
    r = subprocess.run(["find", top], capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    return {line[len(top) + 1:] for line in r.stdout.splitlines()} - {""}, took


def _ls(path):
    r = subprocess.run(["ls", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_find_lists_each_directory_once(proxy, s3, bucket, mounter):
    dirs, files = _seed(s3, bucket)
    assert len(dirs) == 30
    m = mounter(attr_ttl=30, neg_ttl=30)
    proxy.reset()
    names, _ = _find(m.p("t"))
    assert names == set(dirs) | set(files)
    by_op = ops(proxy)
    # t's lookup is the first page of its listing, all of it, which its
    # opendir takes; every directory below is listed exactly once, ahead
    # or by its opendir
    # (the mount's sweep of stale uploads may land after the reset)
    by_op.pop("ListMultipartUploads", None)
    assert by_op == {"ListObjectsV2": 1 + 30}, by_op


def test_find_takes_about_depth_round_trips(proxy, s3, bucket, mounter):
    dirs, files = _seed(s3, bucket)
    m = mounter(attr_ttl=30, neg_ttl=30)
    proxy.reset()
    proxy.config(latency_ms=DELAY_MS)
    names, took = _find(m.p("t"))
    assert names == set(dirs) | set(files)
    # one after another, the 31 listings take 31 delays and more (6.5 s on
    # main before this, with 150 ms delays); ahead, the levels overlap: t's lookup (its
    # listing too), a's listing, then a few rounds of read_parallel (8) listings, about
    # 11 delays on this rig, whose proxy and server spend tens of ms more
    # per round on a busy machine.
    assert took < 16 * DELAY_MS / 1000, took
    assert ops(proxy).get("ListObjectsV2") == 31, ops(proxy)


def _walk_begun(proxy, m):
    """`ls t`, `ls t/a`, `ls t/a/d`: t is being walked, so the rest of the
    tree is listed ahead and held; wait until all 30 directories are."""
    _ls(m.p("t"))
    _ls(m.p("t", "a"))
    _ls(m.p("t", "a", "d"))
    deadline = time.monotonic() + 20
    while ops(proxy).get("ListObjectsV2", 0) < 31 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ops(proxy).get("ListObjectsV2") == 31, ops(proxy)


def test_listing_ahead_is_not_kept_past_attr_ttl(proxy, s3, bucket, mounter):
    _seed(s3, bucket)
    m = mounter(attr_ttl=1, neg_ttl=1)
    proxy.reset()
    _walk_begun(proxy, m)
    # another client changes a directory listed ahead and not opened yet
    put(s3, bucket, "t/c/f/h/new", b"new")
    s3.delete_object(Bucket=bucket, Key="t/c/f/h/f1")
    time.sleep(1.5)
    proxy.reset()
    assert sorted(_ls(m.p("t", "c", "f", "h"))) == ["f2", "new"]
    assert ops(proxy).get("ListObjectsV2", 0) >= 1, ops(proxy)


def test_walk_again_after_attr_ttl_lists_again(proxy, s3, bucket, mounter):
    dirs, files = _seed(s3, bucket)
    m = mounter(attr_ttl=1, neg_ttl=1)
    _find(m.p("t"))
    put(s3, bucket, "t/b/e/g/late", b"late")
    time.sleep(1.5)
    names, _ = _find(m.p("t"))
    assert names == set(dirs) | set(files) | {"b/e/g/late"}


def test_listing_ahead_is_not_taken_after_a_removal_here(proxy, s3, bucket, mounter):
    _seed(s3, bucket)
    m = mounter(attr_ttl=30, neg_ttl=30)
    proxy.reset()
    _walk_begun(proxy, m)
    os.unlink(m.p("t", "b", "f1"))
    assert sorted(_ls(m.p("t", "b"))) == ["d", "e", "f", "f2"]


def test_listing_ahead_is_not_taken_after_a_name_made_here(proxy, s3, bucket, mounter):
    _seed(s3, bucket)
    m = mounter(attr_ttl=30, neg_ttl=30)
    proxy.reset()
    _walk_begun(proxy, m)
    with open(m.p("t", "c", "d", "made"), "wb") as f:
        f.write(b"m")
    os.mkdir(m.p("t", "b", "e", "newdir"))
    assert sorted(_ls(m.p("t", "c", "d"))) == ["f1", "f2", "g", "h", "made"]
    assert sorted(_ls(m.p("t", "b", "e"))) == ["f1", "f2", "g", "h", "newdir"]


def test_listing_ahead_is_not_taken_after_a_file_stored_here(proxy, s3, bucket, mounter):
    _seed(s3, bucket)
    m = mounter(attr_ttl=30, neg_ttl=30)
    proxy.reset()
    _walk_begun(proxy, m)
    with open(m.p("t", "b", "f", "f2"), "wb") as f:
        f.write(b"0123456789abcdef")
    r = subprocess.run(["ls", "-l", m.p("t", "b", "f")], capture_output=True, text=True,
                       timeout=60)
    sizes = {line.split()[8]: int(line.split()[4]) for line in r.stdout.splitlines()
             if not line.startswith("total")}
    assert sorted(sizes) == ["f1", "f2", "g", "h"], sizes
    assert (sizes["f1"], sizes["f2"]) == (len("b/f/f1"), 16), sizes
