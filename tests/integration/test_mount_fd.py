"""Mounting from a /dev/fuse descriptor someone else mounted (issue 20,
item 9): `pailfs BUCKET /dev/fd/N`, as in a container whose privileged
helper opened /dev/fuse and called mount(2). tests/fdmount.py plays that
helper (ctypes mount(2), then exec of pailfs with the descriptor open).

What is checked: pailfs serves the descriptor in the foreground and in the
background (reads, writes, the bytes in the bucket), ends when the helper
unmounts, and exits 0 without trying to unmount anything itself; a bad N
(closed, not /dev/fuse, /dev/fuse not mounted) fails with one clear line
before any request; auto_unmount is refused for it."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drive import clean_env
from helpers import body, keys
from mount import (PAILFS, SANITIZER_MARKERS, is_mounted, read,
                   wait_pids_gone, wait_until, write)

FDMOUNT = Path(__file__).resolve().parent.parent / "fdmount.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="mount(2) of /dev/fuse needs root")


def _opts(proxy, tmp_path, *extra):
    return ["-o", ",".join([f"endpoint={proxy.url}", "path_style",
                            "log_level=info", f"cache_dir={tmp_path}/cache",
                            *extra])]


def _umount(mp):
    """What the helper does at the end: umount(8) (lazily if busy)."""
    r = subprocess.run(["umount", str(mp)], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        subprocess.run(["umount", "-l", str(mp)], timeout=30)
    return r


def _pids_with(word):
    """pailfs processes with `word` among their arguments."""
    needle = os.fsencode(word)
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            args = Path(f"/proc/{e}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"pailfs") and \
                any(needle in a for a in args):
            out.append(int(e))
    return out


def _exercise(s3, bucket, mp):
    """Read an object the bucket holds, write one, list both."""
    assert read(mp / "in.txt") == b"from the bucket\n"
    write(mp / "out.bin", b"written through the descriptor" * 1000)
    assert body(s3, bucket, "out.bin") == \
        b"written through the descriptor" * 1000
    assert sorted(os.listdir(mp)) == ["in.txt", "out.bin"]


def test_foreground_serves_the_descriptor_until_the_helper_unmounts(
        proxy, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="in.txt", Body=b"from the bucket\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    log = tmp_path / "pailfs.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(FDMOUNT), str(mp), "--", str(PAILFS), "-f",
             *_opts(proxy, tmp_path), bucket, "/dev/fd/{fd}"],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            env=clean_env())
    try:
        assert wait_until(lambda: is_mounted(mp), 30), log.read_text()
        _exercise(s3, bucket, mp)
        # the helper's mount, as it made it
        with open("/proc/self/mounts") as f:
            row = [ln for ln in f if f" {mp} " in ln][0]
        assert " fuse.pailfs " in row and "default_permissions" in row, row
        assert _umount(mp).returncode == 0
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if is_mounted(mp):
            _umount(mp)
    text = log.read_text()
    assert rc == 0, text
    assert "session on /dev/fd/" in text, text
    assert "unmounting" not in text and "fusermount" not in text, text
    assert not any(mark in text for mark in SANITIZER_MARKERS), text
    assert not is_mounted(mp)


def test_background_returns_once_serving(proxy, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="in.txt", Body=b"from the bucket\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = subprocess.run(
        [sys.executable, str(FDMOUNT), str(mp), "--", str(PAILFS),
         *_opts(proxy, tmp_path), bucket, "/dev/fd/{fd}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60, env=clean_env())
    pids = _pids_with(f"cache_dir={tmp_path}/cache")
    try:
        assert r.returncode == 0, r.stderr
        assert "mounted bucket" in r.stderr  # said before it left stderr
        assert len(pids) == 1, pids  # the daemon, holding the descriptor
        _exercise(s3, bucket, mp)
    finally:
        assert _umount(mp).returncode == 0
    assert wait_pids_gone(pids, 30), "the daemon did not end at the unmount"
    assert keys(s3, bucket) == ["in.txt", "out.bin"]


def _fail(proxy, bucket, tmp_path, argv_tail, pass_fds=(), extra=()):
    """pailfs run with the given /dev/fd word: (rc, stderr, seconds)."""
    t0 = time.monotonic()
    r = subprocess.run([str(PAILFS), *_opts(proxy, tmp_path, *extra), bucket,
                        argv_tail], capture_output=True, text=True,
                       timeout=30, pass_fds=pass_fds, env=clean_env())
    return r.returncode, r.stderr, time.monotonic() - t0


def test_a_closed_descriptor_is_one_clear_line(proxy, bucket, tmp_path):
    rc, err, took = _fail(proxy, bucket, tmp_path, "/dev/fd/57")
    assert rc == 1 and took < 10
    assert err == ("pailfs: /dev/fd/57: descriptor 57 is not open (the "
                   "mounting helper must pass it open, without "
                   "close-on-exec)\n")
    assert proxy.stats()["requests_total"] == 0


def test_a_descriptor_not_of_dev_fuse_is_one_clear_line(proxy, bucket,
                                                        tmp_path):
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        rc, err, _ = _fail(proxy, bucket, tmp_path, f"/dev/fd/{fd}",
                           pass_fds=(fd,))
    finally:
        os.close(fd)
    assert rc == 1
    assert err == f"pailfs: /dev/fd/{fd}: descriptor {fd} is not an open " \
        "/dev/fuse\n"
    assert proxy.stats()["requests_total"] == 0


def test_dev_fuse_not_mounted_is_one_clear_line(proxy, bucket, tmp_path):
    fd = os.open("/dev/fuse", os.O_RDWR)
    try:
        rc, err, _ = _fail(proxy, bucket, tmp_path, f"/dev/fd/{fd}",
                           pass_fds=(fd,))
    finally:
        os.close(fd)
    assert rc == 1
    assert err.startswith(f"pailfs: /dev/fd/{fd}: /dev/fuse descriptor {fd} "
                          "is not mounted, or its mount is gone"), err
    assert err.count("\n") == 1
    assert proxy.stats()["requests_total"] == 0


def test_auto_unmount_is_refused_for_a_descriptor(proxy, bucket, tmp_path):
    fd = os.open("/dev/fuse", os.O_RDWR)
    try:
        rc, err, _ = _fail(proxy, bucket, tmp_path, f"/dev/fd/{fd}",
                           pass_fds=(fd,), extra=("auto_unmount",))
    finally:
        os.close(fd)
    assert rc == 1
    assert err == f"pailfs: -o auto_unmount does not apply to /dev/fd/{fd}: " \
        "the helper that mounted it unmounts it\n"


def test_descriptor_0_in_the_background(proxy, s3, bucket, tmp_path):
    """N may be 0, 1 or 2, which the background process points at
    /dev/null: pailfs serves a copy of it instead."""
    s3.put_object(Bucket=bucket, Key="in.txt", Body=b"from the bucket\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    pailfs = " ".join([str(PAILFS), *_opts(proxy, tmp_path), bucket])
    r = subprocess.run(
        [sys.executable, str(FDMOUNT), str(mp), "--", "sh", "-c",
         f"exec {pailfs} /dev/fd/0 0<&{{fd}}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60, env=clean_env())
    pids = _pids_with(f"cache_dir={tmp_path}/cache")
    try:
        assert r.returncode == 0, r.stderr
        _exercise(s3, bucket, mp)
    finally:
        assert _umount(mp).returncode == 0
    assert wait_pids_gone(pids, 30)
