"""Local file safety (issue 17 item 6): pailfs keeps its own files (block
cache, staging, gzip indexes, the cache's lock file) only in directories no
other user can plant files in, and never opens one of its files through a
symbolic link planted in a shared directory such as /tmp.

A cache directory, or a directory pailfs keeps in it (blocks-*, staging,
gzindex), that is a symbolic link, is owned by another user or is writable
by its group or others is refused: the mount fails (exit 1, nothing
mounted, no process left) with a line naming the directory and why.  A
link planted at the cache's .lock or at the log file is refused and the
file it points at stays intact.  Only the cache directory itself is
checked, not its parents: a private cache_dir directly under the sticky,
world-writable /tmp is used.

The tests run as root: "another user" is uid 65534, made with chown."""

import os
import shutil
import tempfile

import pytest

from mount import (assert_nothing_left, base_opts, is_mounted,  # noqa: F401
                   mounter, run_pailfs)

NOBODY = 65534
PRECIOUS = b"precious: must survive the mount\n"


def refused(proxy, bucket, tmp_path, *opts):
    """Mount with opts; assert pailfs fails, leaves nothing and return its
    stderr."""
    mp = tmp_path / "mnt-refused"
    mp.mkdir(exist_ok=True)
    rc, _, err, took = run_pailfs([*base_opts(proxy.url, *opts), bucket,
                                   str(mp)], tmp_path=tmp_path)
    try:
        assert rc == 1, f"exit status {rc}, stderr {err!r}"
        assert took < 15, took
    finally:
        if is_mounted(str(mp)):
            os.system(f"fusermount3 -uz {mp}")
            pytest.fail(f"{mp} was mounted: {err!r}")
    assert_nothing_left(str(mp))
    return err


def victim(tmp_path):
    v = tmp_path / "victim"
    v.write_bytes(PRECIOUS)
    return v


def test_cache_dir_owned_by_another_user_refused(proxy, bucket, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, NOBODY, NOBODY)
    err = refused(proxy, bucket, tmp_path, f"cache_dir={cache}")
    assert (f"refusing directory {cache}: it is owned by uid {NOBODY}, "
            f"not by uid {os.geteuid()}") in err, err
    assert f"pailfs: cannot use cache directory {cache}: " in err, err
    assert os.listdir(cache) == []  # nothing made in it


def test_cache_dir_writable_by_others_refused(proxy, bucket, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o777)
    err = refused(proxy, bucket, tmp_path, f"cache_dir={cache}")
    assert (f"refusing directory {cache}: its mode 0777 lets other users "
            "write in it") in err, err
    assert os.listdir(cache) == []
    assert os.stat(cache).st_mode & 0o7777 == 0o777  # never changed


def test_cache_dir_symlink_refused(proxy, bucket, tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    cache = tmp_path / "cache"
    cache.symlink_to(real)
    err = refused(proxy, bucket, tmp_path, f"cache_dir={cache}")
    assert f"refusing directory {cache}: it is a symbolic link" in err, err
    assert os.listdir(real) == []


@pytest.mark.parametrize("sub", ["blocks", "staging", "gzindex"])
def test_directories_in_cache_dir_checked(proxy, bucket, mounter, tmp_path,
                                          sub):
    """A blocks-*, staging or gzindex directory found writable by others
    (left by an older version, or planted while cache_dir was open) is
    refused, not used."""
    cache = tmp_path / "cache"
    m = mounter(opts=[f"cache_dir={cache}"])
    with open(m.p("f"), "wb") as f:
        f.write(b"x" * 1000)
    with open(m.p("f"), "rb") as f:
        assert f.read() == b"x" * 1000
    m.unmount()
    if sub == "blocks":
        [d] = [cache / n for n in os.listdir(cache) if n.startswith("blocks-")]
    else:
        d = cache / sub
        d.mkdir(exist_ok=True)
    os.chmod(d, 0o777)
    err = refused(proxy, bucket, tmp_path, f"cache_dir={cache}")
    assert f"refusing directory {d}: its mode 0777" in err, err
    # and owned by another user
    os.chmod(d, 0o700)
    os.chown(d, NOBODY, NOBODY)
    err = refused(proxy, bucket, tmp_path, f"cache_dir={cache}")
    assert f"refusing directory {d}: it is owned by uid {NOBODY}" in err, err
    # made private again: used
    os.chown(d, 0, 0)
    m.start()
    with open(m.p("f"), "rb") as f:
        assert f.read() == b"x" * 1000


def test_lock_symlink_never_followed(proxy, bucket, mounter, tmp_path):
    """.lock was opened with O_CREAT and truncated to write the pid: a link
    planted there clobbered the file it pointed at."""
    cache = tmp_path / "cache"
    m = mounter(opts=[f"cache_dir={cache}"])
    m.unmount()
    [blocks] = [cache / n for n in os.listdir(cache) if n.startswith("blocks-")]
    v = victim(tmp_path)
    (blocks / ".lock").unlink()
    (blocks / ".lock").symlink_to(v)
    err = refused(proxy, bucket, tmp_path, f"cache_dir={cache}")
    assert v.read_bytes() == PRECIOUS
    assert f"refusing {blocks}/.lock: it is a symbolic link" in err, err


def test_log_file_symlink_never_followed(proxy, bucket, tmp_path):
    v = victim(tmp_path)
    log = tmp_path / "pailfs.log"
    log.symlink_to(v)
    err = refused(proxy, bucket, tmp_path, f"cache_dir={tmp_path}/cache",
                  f"logfile={log}", "log_level=debug")
    assert v.read_bytes() == PRECIOUS
    assert err.startswith(f"pailfs: cannot open log file {log}: "), err


def test_metrics_file_symlink_replaced_not_followed(mounter, tmp_path):
    """The metrics file is written to a new temporary file and renamed over
    the path: a link planted there is replaced, what it points at stays."""
    v = victim(tmp_path)
    path = tmp_path / "m.prom"
    path.symlink_to(v)
    m = mounter(opts={"metrics_file": path, "metrics_interval": 1})
    m.unmount()
    assert v.read_bytes() == PRECIOUS
    assert not path.is_symlink()
    assert "pailfs_cache_hits_total" in path.read_text()
    assert [n for n in os.listdir(tmp_path) if ".tmp." in n] == []


def test_private_cache_dir_under_tmp_is_used(mounter):
    """Only the cache directory itself is checked, not its parents: /tmp
    (root's, mode 1777) is fine for a private directory in it, made 0700
    when missing."""
    st = os.stat("/tmp")
    assert st.st_mode & 0o1777 == 0o1777
    top = tempfile.mkdtemp(prefix="pailfs-audit-", dir="/tmp")
    try:
        for cache in (top, os.path.join(top, "made")):
            m = mounter(opts=[f"cache_dir={cache}"])
            with open(m.p("g"), "wb") as f:
                f.write(b"y" * 4096)
            with open(m.p("g"), "rb") as f:
                assert f.read() == b"y" * 4096
            m.unmount()
            assert os.stat(cache).st_mode & 0o7777 == 0o700
            for n in os.listdir(cache):
                if os.path.isdir(os.path.join(cache, n)):
                    mode = os.lstat(os.path.join(cache, n)).st_mode
                    assert mode & 0o7777 == 0o700, (n, oct(mode))
    finally:
        shutil.rmtree(top)
