"""How a bucket's keys look through a pailfs mount: objects made by another
client (boto3, straight to the server) appear with their sizes, bytes and
times; prefixes are directories; keys that cannot be POSIX names are skipped;
a big directory is listed with one ListObjectsV2 per 1000 keys and no
HeadObject; names with special characters map to the same key both ways;
statfs, BUCKET:/PREFIX mounts and the ownership/mode options."""

import errno
import os
import stat
import subprocess

import pytest

from helpers import body, keys
from mount import errno_of, mnt, mounter  # noqa: F401


@pytest.mark.core
def test_external_objects_appear(s3, bucket, mounter):
    data = {"empty": b"", "small": b"hello world\n",
            "bin": os.urandom(300_001), "d/sub/deep.txt": b"deep"}
    for k, v in data.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    m = mounter()
    assert sorted(os.listdir(m.path)) == ["bin", "d", "empty", "small"]
    for k, v in data.items():
        st = os.stat(m.p(k))
        assert stat.S_ISREG(st.st_mode), k
        assert st.st_size == len(v), k
        with open(m.p(k), "rb") as f:
            assert f.read() == v, k
        lm = s3.head_object(Bucket=bucket, Key=k)["LastModified"].timestamp()
        assert abs(st.st_mtime - lm) < 2.0, (k, st.st_mtime, lm)
    # implicit directories, from the nested key alone
    assert stat.S_ISDIR(os.stat(m.p("d")).st_mode)
    assert stat.S_ISDIR(os.stat(m.p("d", "sub")).st_mode)
    assert os.listdir(m.p("d")) == ["sub"]
    assert os.listdir(m.p("d", "sub")) == ["deep.txt"]
    # a read in the middle of the big one
    with open(m.p("bin"), "rb") as f:
        f.seek(123_456)
        assert f.read(1000) == data["bin"][123_456:124_456]
    assert errno_of(os.stat, m.p("nope")) == errno.ENOENT
    assert errno_of(os.stat, m.p("d", "nope")) == errno.ENOENT


@pytest.mark.core
def test_directory_markers(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="marked/", Body=b"",
                  ContentType="application/x-directory")
    s3.put_object(Bucket=bucket, Key="plainmarker/", Body=b"")
    s3.put_object(Bucket=bucket, Key="withkids/", Body=b"")
    s3.put_object(Bucket=bucket, Key="withkids/kid", Body=b"k")
    m = mounter()
    assert sorted(os.listdir(m.path)) == ["marked", "plainmarker", "withkids"]
    for d in ("marked", "plainmarker", "withkids"):
        assert stat.S_ISDIR(os.stat(m.p(d)).st_mode), d
    assert os.listdir(m.p("marked")) == []
    assert os.listdir(m.p("plainmarker")) == []
    # the marker itself is not listed as an entry with an empty name
    assert os.listdir(m.p("withkids")) == ["kid"]


@pytest.mark.core
def test_key_and_prefix_of_same_name_is_a_directory(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="a", Body=b"file-a")
    s3.put_object(Bucket=bucket, Key="a/x", Body=b"file-x")
    s3.put_object(Bucket=bucket, Key="b", Body=b"file-b")
    m = mounter()
    assert sorted(os.listdir(m.path)) == ["a", "b"]  # "a" listed once
    assert stat.S_ISDIR(os.lstat(m.p("a")).st_mode)
    assert os.listdir(m.p("a")) == ["x"]
    assert open(m.p("a", "x"), "rb").read() == b"file-x"
    assert stat.S_ISREG(os.lstat(m.p("b")).st_mode)


@pytest.mark.core
def test_keys_that_are_not_posix_names_are_skipped(s3, bucket, mounter):
    bad = ["x//y", "./z", "../w", ".", "..", "p/./q", "p/../r",
           "n" * 256, "q/" + "n" * 300 + "/deep", "q/" + "m" * 256,
           "e//", "p/.", "p/.."]
    good = {"good": b"g", "p/ok": b"ok", "q/fine": b"fine",
            "L" * 255: b"long-ok"}
    for k in bad:
        s3.put_object(Bucket=bucket, Key=k, Body=b"bad")
    for k, v in good.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    m = mounter()
    names = os.listdir(m.path)
    for n in names:
        assert n not in ("", ".", "..") and "/" not in n and \
            len(n.encode()) <= 255, n
        os.lstat(m.p(n))  # every listed entry can be looked up
    assert {"good", "p", "q", "L" * 255} <= set(names)
    assert "n" * 256 not in names
    assert sorted(os.listdir(m.p("p"))) == ["ok"]
    assert sorted(os.listdir(m.p("q"))) == ["fine"]
    assert open(m.p("good"), "rb").read() == b"g"
    assert open(m.p("p", "ok"), "rb").read() == b"ok"
    assert open(m.p("L" * 255), "rb").read() == b"long-ok"
    # a directory whose only keys are unrepresentable still lists
    if "x" in names:
        assert os.listdir(m.p("x")) == []
    if "e" in names:
        assert os.listdir(m.p("e")) == []


def test_listing_2500_keys_costs_three_lists_and_no_heads(proxy, keys_2500,
                                                          mounter):
    bucket, keys = keys_2500  # the session's, read-only: key i has i % 7 bytes
    n = len(keys)
    names = [k.split("/")[1] for k in keys]
    m = mounter(bucket=bucket, attr_ttl=60, neg_ttl=60)
    assert stat.S_ISDIR(os.stat(m.p("big")).st_mode)
    proxy.reset()
    listed = os.listdir(m.p("big"))
    sizes = {name: os.lstat(m.p("big", name)).st_size for name in listed}
    by_op = proxy.stats()["by_op"]
    assert sorted(listed) == names
    assert all(sizes[names[i]] == i % 7 for i in range(n))
    # the stat's lookup listed the first page, which the opendir takes
    # (issue 22): the listing asks for the two pages after it
    assert by_op.get("ListObjectsV2", 0) == 2, by_op
    assert by_op.get("HeadObject", 0) == 0, by_op
    assert by_op.get("GetObject", 0) == 0, by_op
    # ls -l shows them all too
    r = subprocess.run(["ls", "-l", m.p("big")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if not l.startswith("total")]
    assert len(lines) == n
    assert lines[6].split()[4] == "6" and lines[6].endswith(" f00006")


SPECIAL = ["with space", "plus+sign", "per%cent", "per%20cent", "til~de",
           "semi;colon", "hash#tag", "ques?tion", "star*", "amp&and=eq",
           "quote'd", "back\\slash", "café", "日本語", "emoji😀", "tab\there",
           "L" * 255, "é" * 127 + "x"]


def ext_name(i, name):
    """The name of the externally made twin of SPECIAL[i] (<= 255 bytes)."""
    twin = "ext-" + name
    return twin if len(twin.encode()) <= 255 else f"ext-{i}"


@pytest.mark.core
def test_special_names_round_trip(s3, bucket, mnt):
    for i, name in enumerate(SPECIAL):
        assert len(name.encode()) <= 255
        data = f"{i}:{name}".encode()
        with open(mnt.p(name), "wb") as f:
            f.write(data)
        assert body(s3, bucket, name) == data, name
        s3.put_object(Bucket=bucket, Key=ext_name(i, name), Body=data[::-1])
    listed = set(os.listdir(mnt.path))
    for i, name in enumerate(SPECIAL):
        data = f"{i}:{name}".encode()
        assert name in listed, name
        assert ext_name(i, name) in listed, name
        assert open(mnt.p(ext_name(i, name)), "rb").read() == data[::-1]
        assert open(mnt.p(name), "rb").read() == data
    assert set(keys(s3, bucket)) == set(SPECIAL) | \
        {ext_name(i, n) for i, n in enumerate(SPECIAL)}


@pytest.mark.core
def test_name_of_256_bytes_is_too_long(s3, bucket, mnt):
    long_name = "N" * 256
    long_utf8 = "é" * 128  # 256 bytes
    for name in (long_name, long_utf8):
        assert errno_of(os.open, mnt.p(name), os.O_CREAT | os.O_WRONLY,
                        0o644) == errno.ENAMETOOLONG
        assert errno_of(os.mkdir, mnt.p(name)) == errno.ENAMETOOLONG
        assert errno_of(os.stat, mnt.p(name)) == errno.ENAMETOOLONG
    with open(mnt.p("short"), "wb") as f:
        f.write(b"s")
    assert errno_of(os.rename, mnt.p("short"), mnt.p(long_name)) == \
        errno.ENAMETOOLONG
    assert keys(s3, bucket) == ["short"]


def test_statfs(mnt):
    st = os.statvfs(mnt.path)
    assert st.f_namemax == 255
    assert st.f_bsize > 0
    assert st.f_frsize >= 0


@pytest.mark.core
def test_prefix_mount(s3, bucket, mounter):
    for k in ("pre/a", "pre/sub/b", "other/c", "prex/d", "pre.txt"):
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    m = mounter(prefix="pre")
    assert sorted(os.listdir(m.path)) == ["a", "sub"]
    assert open(m.p("a"), "rb").read() == b"pre/a"
    assert open(m.p("sub", "b"), "rb").read() == b"pre/sub/b"
    assert errno_of(os.stat, m.p("c")) == errno.ENOENT
    with open(m.p("new"), "wb") as f:
        f.write(b"made here")
    os.mkdir(m.p("newdir"))
    with open(m.p("newdir", "inner"), "wb") as f:
        f.write(b"inner")
    assert body(s3, bucket, "pre/new") == b"made here"
    assert body(s3, bucket, "pre/newdir/inner") == b"inner"
    assert "pre/newdir/" in keys(s3, bucket, "pre/")
    assert keys(s3, bucket) == sorted(
        ["pre/a", "pre/sub/b", "other/c", "prex/d", "pre.txt", "pre/new",
         "pre/newdir/", "pre/newdir/inner"])
    os.unlink(m.p("a"))
    assert "pre/a" not in keys(s3, bucket)


@pytest.mark.core
def test_prefix_mount_with_trailing_slash_and_depth(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="one/two/f", Body=b"deep")
    s3.put_object(Bucket=bucket, Key="one/g", Body=b"shallow")
    m = mounter(prefix="one/two")
    assert os.listdir(m.path) == ["f"]
    assert open(m.p("f"), "rb").read() == b"deep"


@pytest.mark.core
def test_uid_gid_and_modes_of_objects_without_metadata(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="plain", Body=b"p")
    s3.put_object(Bucket=bucket, Key="implicit/x", Body=b"x")
    s3.put_object(Bucket=bucket, Key="marker/", Body=b"")
    m = mounter(opts=["uid=1234", "gid=4321", "file_mode=0640",
                      "dir_mode=0750"])
    for name, kind, perm in (("plain", stat.S_IFREG, 0o640),
                             ("implicit", stat.S_IFDIR, 0o750),
                             ("marker", stat.S_IFDIR, 0o750),
                             ("implicit/x", stat.S_IFREG, 0o640)):
        st = os.lstat(m.p(name))
        assert stat.S_IFMT(st.st_mode) == kind, name
        assert stat.S_IMODE(st.st_mode) == perm, (name, oct(st.st_mode))
        assert (st.st_uid, st.st_gid) == (1234, 4321), name
    m.unmount()
    m2 = mounter(opts=["umask=0027"])
    for name, perm in (("plain", 0o640), ("implicit", 0o750),
                       ("marker", 0o750)):
        st = os.lstat(m2.p(name))
        assert stat.S_IMODE(st.st_mode) == perm, (name, oct(st.st_mode))
        # defaults: the mounting user
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()), name
    m2.unmount()
    m3 = mounter(opts=["file_mode=0666", "dir_mode=0777", "umask=0022"])
    assert stat.S_IMODE(os.lstat(m3.p("plain")).st_mode) == 0o644
    assert stat.S_IMODE(os.lstat(m3.p("implicit")).st_mode) == 0o755
