"""What s3fs-fuse's own integration suite found different in pailfs (issue
20, item 10), each checked here against the bucket: old-style directory
objects (a key "d" without a slash, Content-Type application/x-directory)
show as directories and move to "d/" when their attributes change; rename
changes ctime (files and directories), stored with the object; fstat of a
file unlinked while open says st_nlink 0; the bucket's root accepts touch,
chmod and chown (kept for the mount's life), so `rsync -a` and `cp -a`
into the mount end without errors."""

import os
import shutil
import stat
import subprocess
import time

import pytest

from helpers import body, keys
from helpers import ops_of_mount as ops
from mount import errno_of, mounter, wait_until  # noqa: F401

DIR_TYPE = "application/x-directory"


def _meta(s3, bucket, key):
    return s3.head_object(Bucket=bucket, Key=key)["Metadata"]


# --------------------------------------------------------------------------
# rename changes ctime
# --------------------------------------------------------------------------

def test_rename_of_a_file_changes_its_ctime_only(s3, bucket, mounter):
    t0 = 1000000000
    s3.put_object(Bucket=bucket, Key="f", Body=b"data",
                  ContentType="text/csv",
                  Metadata={"atime": str(t0), "ctime": str(t0),
                            "mtime": str(t0), "other": "kept"})
    m = mounter()
    before = os.stat(m.p("f"))
    assert before.st_ctime == t0 and before.st_mtime == t0
    os.rename(m.p("f"), m.p("g"))
    after = os.stat(m.p("g"))
    assert after.st_ctime > t0 + 1000
    assert abs(after.st_ctime - time.time()) < 60
    assert after.st_mtime == t0 and after.st_atime == t0
    # stored with the object: what another mount (or after the TTL) sees
    meta = _meta(s3, bucket, "g")
    assert int(float(meta["ctime"])) == int(after.st_ctime)
    assert meta["mtime"] == str(t0) and meta["other"] == "kept"
    assert s3.head_object(Bucket=bucket, Key="g")["ContentType"] == "text/csv"
    assert body(s3, bucket, "g") == b"data"
    assert keys(s3, bucket) == ["g"]


def test_rename_of_a_directory_changes_its_ctime(s3, bucket, mounter):
    t0 = 1000000000
    s3.put_object(Bucket=bucket, Key="d/", Body=b"", ContentType=DIR_TYPE,
                  Metadata={"mode": str(stat.S_IFDIR | 0o755),
                            "ctime": str(t0), "mtime": str(t0)})
    s3.put_object(Bucket=bucket, Key="d/kid", Body=b"k")
    m = mounter()
    assert os.stat(m.p("d")).st_ctime == t0
    os.rename(m.p("d"), m.p("e"))
    st = os.stat(m.p("e"))
    assert st.st_ctime > t0 + 1000 and st.st_mtime == t0
    assert int(float(_meta(s3, bucket, "e/")["ctime"])) == int(st.st_ctime)
    assert keys(s3, bucket) == ["e/", "e/kid"]


# --------------------------------------------------------------------------
# fstat after unlink
# --------------------------------------------------------------------------

@pytest.mark.parametrize("stored,ttl", [(True, 0), (False, 0), (True, 60)])
def test_fstat_of_an_open_file_after_unlink_says_nlink_0(s3, bucket, mounter,
                                                         stored, ttl):
    """(With attr_ttl=60 the kernel keeps what setattr answered.)"""
    m = mounter(attr_ttl=ttl)
    if stored:
        s3.put_object(Bucket=bucket, Key="f", Body=b"open")
        fd = os.open(m.p("f"), os.O_RDONLY)
    else:
        fd = os.open(m.p("f"), os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, b"open")
    try:
        assert os.fstat(fd).st_nlink == 1
        os.unlink(m.p("f"))
        st = os.fstat(fd)
        assert st.st_nlink == 0
        assert st.st_size == 4
        assert os.pread(fd, 10, 0) == b"open"
        os.fchmod(fd, 0o600)  # setattr's answer says so too
        assert os.fstat(fd).st_nlink == 0
    finally:
        os.close(fd)
    assert errno_of(os.stat, m.p("f")) == 2
    # the object goes at the release, which the kernel sends after close
    assert wait_until(lambda: keys(s3, bucket) == [], 10), keys(s3, bucket)


# --------------------------------------------------------------------------
# the bucket's root
# --------------------------------------------------------------------------

def test_touch_chmod_chown_of_the_bucket_root(s3, bucket, mounter):
    m = mounter()
    os.utime(m.path, (1234567890, 1234567890))
    os.chmod(m.path, 0o750)
    os.chown(m.path, 1234, 4321)
    st = os.stat(m.path)
    assert (st.st_mtime, stat.S_IMODE(st.st_mode)) == (1234567890, 0o750)
    assert (st.st_uid, st.st_gid) == (1234, 4321)
    assert keys(s3, bucket) == []  # the bucket has no object for its root
    os.chown(m.path, 0, 0)
    os.chmod(m.path, 0o755)


@pytest.mark.parametrize("tool", ["rsync", "cp"])
def test_rsync_a_and_cp_a_into_the_root_end_without_errors(s3, bucket,
                                                           mounter, tmp_path,
                                                           tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} not installed")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "b.txt").write_bytes(b"beta")
    os.utime(src, (1500000000, 1500000000))
    m = mounter()
    argv = ["rsync", "-a", f"{src}/", m.path + "/"] if tool == "rsync" else \
        ["cp", "-a", f"{src}/.", m.path + "/"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stderr) == (0, "")
    assert body(s3, bucket, "a.txt") == b"alpha"
    assert body(s3, bucket, "sub/b.txt") == b"beta"
    assert os.stat(m.path).st_mtime == 1500000000


# --------------------------------------------------------------------------
# old-style directory objects: a key "d" without a slash
# --------------------------------------------------------------------------

def _old_dirs(s3, bucket):
    """"d" as older s3fs-fuse wrote it (type and mode), "e" with the type
    only, and an ordinary empty file beside them."""
    s3.put_object(Bucket=bucket, Key="d", Body=b"", ContentType=DIR_TYPE,
                  Metadata={"mode": str(stat.S_IFDIR | 0o750), "uid": "1001",
                            "gid": "1002", "mtime": "1000000000",
                            "other": "kept"})
    s3.put_object(Bucket=bucket, Key="e", Body=b"", ContentType=DIR_TYPE)
    s3.put_object(Bucket=bucket, Key="plain", Body=b"")


def _check_types(m):
    st = os.stat(m.p("d"))
    assert stat.S_ISDIR(st.st_mode), oct(st.st_mode)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == \
        (0o750, 1001, 1002)
    assert st.st_mtime == 1000000000
    assert stat.S_ISDIR(os.stat(m.p("e")).st_mode)
    assert stat.S_ISREG(os.stat(m.p("plain")).st_mode)
    assert os.stat(m.p("plain")).st_size == 0
    assert os.listdir(m.p("d")) == []
    assert os.listdir(m.p("e")) == []


def test_old_style_directory_objects_are_directories_when_looked_up(
        proxy, s3, bucket, mounter):
    _old_dirs(s3, bucket)
    m = mounter()
    _check_types(m)  # looked up cold: each name's listing, then its HEAD
    assert sorted(os.listdir(m.path)) == ["d", "e", "plain"]


def test_old_style_directory_objects_are_directories_after_a_listing(
        proxy, s3, bucket, mounter):
    """With -o compat_dir, as in s3fs-fuse: each empty key of a listing is
    asked its type (a HEAD) when looked up."""
    _old_dirs(s3, bucket)
    m = mounter(attr_ttl=60, neg_ttl=60, opts=["compat_dir"])
    # ls -l: readdir(plus), then each name
    r = subprocess.run(["ls", "-l", m.path], capture_output=True, text=True,
                       timeout=60)
    lines = {ln.split()[-1]: ln[0] for ln in r.stdout.splitlines()[1:]}
    assert lines == {"d": "d", "e": "d", "plain": "-"}, r.stdout
    _check_types(m)
    kinds = {e.name: e.is_dir() for e in os.scandir(m.path)}
    assert kinds == {"d": True, "e": True, "plain": False}
    # find's view, from readdir's types and the lookups they call for
    r = subprocess.run(["find", m.path, "-mindepth", "1", "-type", "d"],
                       capture_output=True, text=True, timeout=60)
    assert sorted(r.stdout.split()) == [m.p("d"), m.p("e")]


def test_without_compat_dir_a_listed_empty_key_costs_nothing(proxy, s3,
                                                              bucket, mounter):
    """By default a listing's empty keys are files, as the round-trip tests
    count; an old-style directory looked up first stays a directory."""
    _old_dirs(s3, bucket)
    m = mounter(attr_ttl=60, neg_ttl=60)
    assert stat.S_ISDIR(os.stat(m.p("d")).st_mode)  # cold: its HEAD tells
    os.listdir(m.path)
    proxy.reset()
    assert stat.S_ISREG(os.stat(m.p("plain")).st_mode)
    assert stat.S_ISREG(os.stat(m.p("e")).st_mode)  # the listing's guess
    assert stat.S_ISDIR(os.stat(m.p("d")).st_mode)  # not overwritten by it
    assert ops(proxy) == {}, ops(proxy)
    kinds = {e.name: e.is_dir() for e in os.scandir(m.path)}
    assert kinds == {"d": True, "e": False, "plain": False}


def test_with_compat_dir_an_empty_key_after_a_listing_costs_its_head_only(
        proxy, s3, bucket, mounter):
    """A listing cannot tell an empty file from an old-style directory: its
    lookup asks the HEAD, and nothing else (no listing of "d/")."""
    _old_dirs(s3, bucket)
    m = mounter(attr_ttl=60, neg_ttl=60, opts=["compat_dir"])
    os.listdir(m.path)
    proxy.reset()
    assert stat.S_ISDIR(os.stat(m.p("d")).st_mode)
    assert ops(proxy) == {"HeadObject": 1}, ops(proxy)
    proxy.reset()
    assert stat.S_ISREG(os.stat(m.p("plain")).st_mode)
    assert ops(proxy) == {"HeadObject": 1}, ops(proxy)


def test_chmod_of_an_old_style_directory_moves_it_to_a_marker(s3, bucket,
                                                              mounter):
    _old_dirs(s3, bucket)
    m = mounter()
    os.chmod(m.p("d"), 0o700)
    assert keys(s3, bucket) == ["d/", "e", "plain"]
    head = s3.head_object(Bucket=bucket, Key="d/")
    assert head["ContentType"] == DIR_TYPE
    assert int(head["Metadata"]["mode"]) == stat.S_IFDIR | 0o700
    assert head["Metadata"]["uid"] == "1001"
    st = os.stat(m.p("d"))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    # touch and chown move it the same way
    os.utime(m.p("e"), (1200000000, 1200000000))
    assert keys(s3, bucket) == ["d/", "e/", "plain"]
    assert _meta(s3, bucket, "e/")["mtime"] == "1200000000"
    # what another mount sees afterwards
    m2 = mounter()
    st = os.stat(m2.p("d"))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert os.stat(m2.p("e")).st_mtime == 1200000000


def test_rmdir_rename_and_files_in_an_old_style_directory(s3, bucket,
                                                          mounter):
    _old_dirs(s3, bucket)
    m = mounter(opts=["compat_dir"])  # the listing below must not guess
    with open(m.p("e", "kid"), "wb") as f:
        f.write(b"kid")
    assert body(s3, bucket, "e/kid") == b"kid"
    assert sorted(os.listdir(m.path)) == ["d", "e", "plain"]
    assert stat.S_ISDIR(os.stat(m.p("e")).st_mode)
    os.rename(m.p("d"), m.p("moved"))
    assert keys(s3, bucket) == ["e", "e/kid", "moved/", "plain"]
    head = s3.head_object(Bucket=bucket, Key="moved/")
    assert int(head["Metadata"]["mode"]) == stat.S_IFDIR | 0o750
    assert head["Metadata"]["other"] == "kept"
    assert stat.S_IMODE(os.stat(m.p("moved")).st_mode) == 0o750
    os.rmdir(m.p("moved"))
    os.unlink(m.p("e", "kid"))
    os.rmdir(m.p("e"))
    assert keys(s3, bucket) == ["plain"]
    assert sorted(os.listdir(m.path)) == ["plain"]
