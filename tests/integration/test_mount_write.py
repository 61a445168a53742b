"""Changes made through a pailfs mount, checked from outside with boto3
straight to the server: new files (bytes and s3fs-compatible metadata, and
only once closed), directories as `dir/` markers, unlink, overwrite, append,
truncate, chmod/chown/utime, symlinks, renames, hard links, xattrs, reads
through a handle of an unlinked file, read-only mounts, and a SIGTERM while a
file is still being written."""

import base64
import ctypes
import errno
import json
import os
import signal
import stat
import time
from urllib.parse import unquote

import botocore.exceptions
import pytest

from helpers import body, keys
from mount import (call_with_timeout, errno_of, is_mounted, mnt,  # noqa: F401
                   mounter, read, write)


@pytest.fixture(autouse=True)
def known_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def head(s3, bucket, key):
    return s3.head_object(Bucket=bucket, Key=key)


def meta(s3, bucket, key):
    return head(s3, bucket, key)["Metadata"]


def exists(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


# --------------------------------------------------------------------------
# Files and directories
# --------------------------------------------------------------------------

@pytest.mark.core
def test_new_file_bytes_and_metadata(s3, bucket, mnt):
    data = os.urandom(200_000)
    t0 = time.time()
    write(mnt.p("new.bin"), data, 0o640)
    t1 = time.time()
    assert body(s3, bucket, "new.bin") == data
    md = meta(s3, bucket, "new.bin")
    assert md.get("mode") == str(stat.S_IFREG | 0o640), md
    assert md.get("uid") == str(os.getuid()), md
    assert md.get("gid") == str(os.getgid()), md
    assert "mtime" in md, md
    assert t0 - 2 <= float(md["mtime"]) <= t1 + 2, (md, t0, t1)
    st = os.stat(mnt.p("new.bin"))
    assert st.st_size == len(data)
    assert stat.S_IMODE(st.st_mode) == 0o640
    # an empty file is an object too
    write(mnt.p("empty"), b"")
    assert body(s3, bucket, "empty") == b""
    assert meta(s3, bucket, "empty").get("mode") == str(stat.S_IFREG | 0o644)


@pytest.mark.core
def test_object_appears_only_at_close(s3, bucket, mnt):
    fd = os.open(mnt.p("pending"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"first half ")
        os.write(fd, b"second half")
        assert not exists(s3, bucket, "pending"), \
            "object visible while the file is still open for writing"
        # the mount itself sees the file and its size at once
        assert os.stat(mnt.p("pending")).st_size == 22
    finally:
        os.close(fd)
    assert body(s3, bucket, "pending") == b"first half second half"


@pytest.mark.core
def test_fsync_publishes_what_was_written(s3, bucket, mnt):
    fd = os.open(mnt.p("synced"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"part one;")
        assert not exists(s3, bucket, "synced")
        os.fsync(fd)
        assert body(s3, bucket, "synced") == b"part one;"
        os.write(fd, b"part two")
    finally:
        os.close(fd)
    assert body(s3, bucket, "synced") == b"part one;part two"


@pytest.mark.core
def test_mkdir_rmdir(s3, bucket, mnt):
    os.mkdir(mnt.p("d1"))
    h = head(s3, bucket, "d1/")
    assert h["ContentType"] == "application/x-directory"
    assert h["ContentLength"] == 0
    assert stat.S_ISDIR(os.stat(mnt.p("d1")).st_mode)
    os.mkdir(mnt.p("d1", "d2"))
    assert exists(s3, bucket, "d1/d2/")
    assert errno_of(os.mkdir, mnt.p("d1")) == errno.EEXIST
    assert errno_of(os.rmdir, mnt.p("d1")) == errno.ENOTEMPTY
    os.rmdir(mnt.p("d1", "d2"))
    assert not exists(s3, bucket, "d1/d2/")
    os.rmdir(mnt.p("d1"))
    assert keys(s3, bucket) == []
    assert errno_of(os.stat, mnt.p("d1")) == errno.ENOENT
    assert os.listdir(mnt.path) == []


def test_rmdir_not_empty(s3, bucket, mounter):
    # implicit directory (no marker) with an object below
    s3.put_object(Bucket=bucket, Key="imp/child", Body=b"c")
    s3.put_object(Bucket=bucket, Key="mk/", Body=b"")
    s3.put_object(Bucket=bucket, Key="mk/sub/deeper", Body=b"d")
    m = mounter()
    assert errno_of(os.rmdir, m.p("imp")) == errno.ENOTEMPTY
    assert errno_of(os.rmdir, m.p("mk")) == errno.ENOTEMPTY
    os.mkdir(m.p("fresh"))
    write(m.p("fresh", "f"), b"x")
    assert errno_of(os.rmdir, m.p("fresh")) == errno.ENOTEMPTY
    assert keys(s3, bucket) == ["fresh/", "fresh/f", "imp/child", "mk/",
                                "mk/sub/deeper"]
    assert errno_of(os.rmdir, m.p("imp", "child")) == errno.ENOTDIR


@pytest.mark.core
def test_unlink(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="ext", Body=b"e")
    m = mounter()
    write(m.p("mine"), b"m")
    os.unlink(m.p("ext"))
    os.unlink(m.p("mine"))
    assert keys(s3, bucket) == []
    assert errno_of(os.stat, m.p("ext")) == errno.ENOENT
    assert errno_of(os.unlink, m.p("ext")) == errno.ENOENT
    assert os.listdir(m.path) == []
    os.mkdir(m.p("dir"))
    assert errno_of(os.unlink, m.p("dir")) in (errno.EISDIR, errno.EPERM)


@pytest.mark.core
def test_overwrite_append_truncate(s3, bucket, mounter):
    base = os.urandom(150_000)
    s3.put_object(Bucket=bucket, Key="ext", Body=base)
    m = mounter()
    p = m.p("f")
    write(p, b"A" * 1000)
    assert body(s3, bucket, "f") == b"A" * 1000
    write(p, b"BB")  # O_TRUNC: shorter
    assert body(s3, bucket, "f") == b"BB"
    with open(p, "ab") as f:
        f.write(b"CC")
    assert body(s3, bucket, "f") == b"BBCC"
    with open(p, "r+b") as f:  # overwrite in the middle
        f.seek(1)
        f.write(b"xy")
    assert body(s3, bucket, "f") == b"BxyC"
    os.truncate(p, 2)
    assert body(s3, bucket, "f") == b"Bx"
    os.truncate(p, 10)
    assert body(s3, bucket, "f") == b"Bx" + b"\0" * 8
    assert os.stat(p).st_size == 10
    assert read(p) == b"Bx" + b"\0" * 8
    # an object made elsewhere: append, patch, grow, shrink
    e = m.p("ext")
    with open(e, "ab") as f:
        f.write(b"tail")
    assert body(s3, bucket, "ext") == base + b"tail"
    with open(e, "r+b") as f:
        f.seek(70_000)
        f.write(b"PATCH")
    want = base[:70_000] + b"PATCH" + base[70_005:] + b"tail"
    assert body(s3, bucket, "ext") == want
    assert read(e) == want
    os.truncate(e, 1000)
    assert body(s3, bucket, "ext") == base[:1000]
    with open(e, "r+b") as f:  # ftruncate through a handle, then write
        f.truncate(0)
        f.write(b"fresh")
    assert body(s3, bucket, "ext") == b"fresh"


@pytest.mark.core
def test_chmod_chown_utime_change_metadata_only(s3, bucket, mounter):
    data = os.urandom(50_000)
    m = mounter()
    p = m.p("f")
    write(p, data, 0o644)
    os.chmod(p, 0o600)
    md = meta(s3, bucket, "f")
    assert md["mode"] == str(stat.S_IFREG | 0o600), md
    assert body(s3, bucket, "f") == data
    os.chown(p, 1234, 5678)
    md = meta(s3, bucket, "f")
    assert (md["uid"], md["gid"]) == ("1234", "5678"), md
    assert md["mode"] == str(stat.S_IFREG | 0o600), md
    mtime_ns = 1_500_000_000_250_000_000
    os.utime(p, ns=(1_400_000_000_000_000_000, mtime_ns))
    md = meta(s3, bucket, "f")
    assert int(float(md["mtime"])) == 1_500_000_000, md
    assert (md["uid"], md["gid"], md["mode"]) == \
        ("1234", "5678", str(stat.S_IFREG | 0o600)), md
    assert body(s3, bucket, "f") == data
    st = os.stat(p)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == \
        (0o600, 1234, 5678)
    assert int(st.st_mtime) == 1_500_000_000
    # directories too
    os.mkdir(m.p("d"))
    os.chmod(m.p("d"), 0o700)
    assert meta(s3, bucket, "d/")["mode"] == str(stat.S_IFDIR | 0o700)
    m.remount()
    st = os.stat(p)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == \
        (0o600, 1234, 5678)
    assert int(st.st_mtime) == 1_500_000_000
    assert stat.S_IMODE(os.stat(m.p("d")).st_mode) == 0o700
    assert read(p) == data


@pytest.mark.core
def test_chmod_of_external_object_keeps_body(s3, bucket, mounter):
    data = os.urandom(10_000)
    s3.put_object(Bucket=bucket, Key="ext", Body=data, ContentType="text/csv")
    etag = head(s3, bucket, "ext")["ETag"]
    m = mounter()
    os.chmod(m.p("ext"), 0o604)
    h = head(s3, bucket, "ext")
    assert h["Metadata"]["mode"] == str(stat.S_IFREG | 0o604)
    assert h["ETag"] == etag
    assert body(s3, bucket, "ext") == data
    assert h["ContentType"] == "text/csv"


def put_multipart(s3, bucket, key, data, part=5 * 1024 * 1024):
    """An object uploaded in parts: its ETag ("md5-N") is not its bytes'
    MD5, so a copy onto itself (what a chmod does) changes it."""
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for n, off in enumerate(range(0, len(data), part), 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n,
                           Body=data[off:off + part])
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up,
                                 MultipartUpload={"Parts": parts})


@pytest.mark.parametrize("change", ["fchmod", "utime", "setxattr"])
def test_metadata_change_of_file_open_for_writing_keeps_its_edit(
        s3, bucket, mounter, change):
    """A chmod (utime, setxattr) of a file open for writing but not written
    yet is stored at once by a copy onto itself, which gives the object a
    new ETag; a later edit still builds on the old bytes, and close
    stores them with the change and the new metadata."""
    data = bytearray(os.urandom(6 * 1024 * 1024 + 7))
    put_multipart(s3, bucket, "open.bin", bytes(data))
    etag = head(s3, bucket, "open.bin")["ETag"]
    m = mounter()
    p = m.p("open.bin")
    fd = os.open(p, os.O_RDWR)
    try:
        if change == "fchmod":
            os.fchmod(fd, 0o600)
        elif change == "utime":
            os.utime(p, ns=(1_400_000_000_000_000_000, 1_500_000_000_000_000_000))
        else:
            os.setxattr(p, "user.k", b"v")
        assert head(s3, bucket, "open.bin")["ETag"] != etag  # the premise
        os.pwrite(fd, b"patched", 3 * 1024 * 1024 + 11)
        data[3 * 1024 * 1024 + 11:3 * 1024 * 1024 + 18] = b"patched"
    finally:
        os.close(fd)  # raises on an error of the upload
    assert body(s3, bucket, "open.bin") == bytes(data)
    md = meta(s3, bucket, "open.bin")
    if change == "fchmod":
        assert md["mode"] == str(stat.S_IFREG | 0o600), md
    elif change == "utime":
        assert "mtime" in md, md  # the write's own mtime: later than the utime
    else:
        assert s3fs_xattrs(md) == {"user.k": b"v"}, md
    assert read(p) == bytes(data)


@pytest.mark.core
def test_symlinks(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="extlink", Body=b"target",
                  Metadata={"mode": str(stat.S_IFLNK | 0o777)})
    m = mounter()
    os.symlink("some/where/target.txt", m.p("link"))
    assert body(s3, bucket, "link") == b"some/where/target.txt"
    mode = int(meta(s3, bucket, "link")["mode"])
    assert stat.S_ISLNK(mode), oct(mode)
    assert os.readlink(m.p("link")) == "some/where/target.txt"
    assert stat.S_ISLNK(os.lstat(m.p("link")).st_mode)
    assert os.readlink(m.p("extlink")) == "target"
    assert stat.S_ISLNK(os.lstat(m.p("extlink")).st_mode)
    # a link that resolves inside the mount
    write(m.p("real"), b"real bytes")
    os.symlink("real", m.p("rel"))
    assert read(m.p("rel")) == b"real bytes"
    assert errno_of(os.symlink, "x", m.p("real")) == errno.EEXIST
    m.remount()
    assert os.readlink(m.p("link")) == "some/where/target.txt"
    assert stat.S_ISLNK(os.lstat(m.p("link")).st_mode)
    assert os.readlink(m.p("extlink")) == "target"
    assert read(m.p("rel")) == b"real bytes"
    os.unlink(m.p("link"))
    assert not exists(s3, bucket, "link")


# --------------------------------------------------------------------------
# Renames
# --------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old, new, flags):
    """0, or the errno of renameat2(2)."""
    rc = _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD,
                         os.fsencode(new), ctypes.c_uint(flags))
    return 0 if rc == 0 else ctypes.get_errno()


@pytest.mark.core
def test_rename_file(s3, bucket, mnt):
    data = os.urandom(30_000)
    write(mnt.p("r1"), data, 0o644)
    os.chmod(mnt.p("r1"), 0o640)
    os.utime(mnt.p("r1"), (1_600_000_000, 1_600_000_000))
    before = meta(s3, bucket, "r1")
    os.rename(mnt.p("r1"), mnt.p("r2"))
    assert not exists(s3, bucket, "r1")
    assert body(s3, bucket, "r2") == data
    after = meta(s3, bucket, "r2")
    assert after["mode"] == str(stat.S_IFREG | 0o640)
    assert after.get("uid") == before.get("uid")
    assert int(float(after["mtime"])) == 1_600_000_000
    assert errno_of(os.stat, mnt.p("r1")) == errno.ENOENT
    assert read(mnt.p("r2")) == data
    assert int(os.stat(mnt.p("r2")).st_mtime) == 1_600_000_000
    # into a subdirectory
    os.mkdir(mnt.p("sub"))
    os.rename(mnt.p("r2"), mnt.p("sub", "r3"))
    assert keys(s3, bucket) == ["sub/", "sub/r3"]
    assert body(s3, bucket, "sub/r3") == data


@pytest.mark.core
def test_renamed_multipart_file_reads_at_once(s3, bucket, mnt):
    """A copy of a multipart object gets an ETag of its own: a file read
    right after its rename (the write-then-rename of every atomic save),
    after an append and a rename, and below a renamed directory, gives
    its bytes, not a 412 of the old ETag (EIO)."""
    data = os.urandom(11 << 20)
    write(mnt.p("big"), data)
    old = s3.head_object(Bucket=bucket, Key="big")["ETag"]
    os.rename(mnt.p("big"), mnt.p("big2"))
    assert s3.head_object(Bucket=bucket, Key="big2")["ETag"] != old  # the case at hand
    assert read(mnt.p("big2")) == data
    with open(mnt.p("big2"), "ab") as f:
        f.write(b"tail")
    os.rename(mnt.p("big2"), mnt.p("big3"))
    assert read(mnt.p("big3")) == data + b"tail"
    os.mkdir(mnt.p("d"))
    os.rename(mnt.p("big3"), mnt.p("d", "big"))
    os.stat(mnt.p("d", "big"))
    os.rename(mnt.p("d"), mnt.p("e"))
    assert read(mnt.p("e", "big")) == data + b"tail"


@pytest.mark.core
def test_open_file_reads_on_across_renames(s3, bucket, mnt):
    """A file open for reading keeps reading after it, or its directory,
    is renamed on this mount (the copy's ETag differs from the one the
    reader holds: a multipart source)."""
    data = os.urandom(11 << 20)
    os.mkdir(mnt.p("d"))
    write(mnt.p("d", "f"), data)
    fd = os.open(mnt.p("d", "f"), os.O_RDONLY)
    try:
        assert os.read(fd, 4096) == data[:4096]
        os.rename(mnt.p("d", "f"), mnt.p("d", "g"))
        assert os.pread(fd, 4096, 9 << 20) == data[9 << 20:(9 << 20) + 4096]
        os.rename(mnt.p("d"), mnt.p("e"))
        assert os.pread(fd, 4096, 6 << 20) == data[6 << 20:(6 << 20) + 4096]
        assert os.pread(fd, 1 << 20, 10 << 20) == data[10 << 20:]
    finally:
        os.close(fd)
    assert keys(s3, bucket) == ["e/", "e/g"]


@pytest.mark.core
def test_open_file_reads_on_across_chmod_utime_setxattr(s3, bucket, mnt):
    """chmod, utime and setxattr copy the object onto itself: a multipart
    object gets a new ETag each time, and a file open for reading reads on
    (it got EIO, 412 of the version it opened)."""
    data = os.urandom(11 << 20)
    write(mnt.p("f"), data)
    fd = os.open(mnt.p("f"), os.O_RDONLY)
    try:
        assert os.read(fd, 4096) == data[:4096]
        old = s3.head_object(Bucket=bucket, Key="f")["ETag"]
        os.chmod(mnt.p("f"), 0o600)
        assert s3.head_object(Bucket=bucket, Key="f")["ETag"] != old  # the case at hand
        assert os.pread(fd, 4096, 9 << 20) == data[9 << 20:(9 << 20) + 4096]
        os.utime(mnt.p("f"), (1_600_000_000, 1_600_000_000))
        os.setxattr(mnt.p("f"), "user.x", b"1")
        assert os.pread(fd, 4096, 6 << 20) == data[6 << 20:(6 << 20) + 4096]
    finally:
        os.close(fd)
    assert read(mnt.p("f")) == data


@pytest.mark.core
def test_rename_directory_moves_every_key(s3, bucket, mounter):
    objs = {}
    for i in range(20):
        objs[f"src/f{i:02d}"] = f"f{i}".encode()
    for i in range(15):
        objs[f"src/sub/g{i:02d}"] = f"g{i}".encode()
    for i in range(13):
        objs[f"src/sub/deeper/h{i:02d}"] = f"h{i}".encode()
    objs["src/sub/"] = b""  # a marker in the middle
    objs["src/empty/"] = b""
    assert len(objs) == 50
    for k, v in objs.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    s3.put_object(Bucket=bucket, Key="srcx", Body=b"not in src")
    m = mounter()
    os.rename(m.p("src"), m.p("dst"))
    moved = {"dst/" + k[len("src/"):]: v for k, v in objs.items()}
    assert keys(s3, bucket) == sorted(list(moved) + ["srcx"])
    for k, v in moved.items():
        assert body(s3, bucket, k) == v, k
    assert errno_of(os.stat, m.p("src")) == errno.ENOENT
    assert sorted(os.listdir(m.path)) == ["dst", "srcx"]
    assert len(os.listdir(m.p("dst"))) == 22
    assert read(m.p("dst", "sub", "deeper", "h07")) == b"h7"
    assert os.listdir(m.p("dst", "empty")) == []


@pytest.mark.core
def test_rename_over_existing_file_replaces_it(s3, bucket, mnt):
    write(mnt.p("a"), b"from a")
    write(mnt.p("b"), b"old b, longer")
    os.rename(mnt.p("a"), mnt.p("b"))
    assert keys(s3, bucket) == ["b"]
    assert body(s3, bucket, "b") == b"from a"
    assert read(mnt.p("b")) == b"from a"
    assert os.stat(mnt.p("b")).st_size == 6


def test_rename_noreplace_and_exchange(s3, bucket, mnt):
    write(mnt.p("a"), b"A")
    write(mnt.p("b"), b"B")
    assert renameat2(mnt.p("a"), mnt.p("b"), RENAME_NOREPLACE) == errno.EEXIST
    assert renameat2(mnt.p("a"), mnt.p("b"), RENAME_EXCHANGE) == errno.EINVAL
    assert (body(s3, bucket, "a"), body(s3, bucket, "b")) == (b"A", b"B")
    assert (read(mnt.p("a")), read(mnt.p("b"))) == (b"A", b"B")
    # NOREPLACE onto a free name works
    assert renameat2(mnt.p("a"), mnt.p("c"), RENAME_NOREPLACE) == 0
    assert keys(s3, bucket) == ["b", "c"]


def test_rename_directory_onto_non_empty_directory(s3, bucket, mnt):
    os.mkdir(mnt.p("d1"))
    write(mnt.p("d1", "x"), b"x")
    os.mkdir(mnt.p("d2"))
    write(mnt.p("d2", "y"), b"y")
    assert errno_of(os.rename, mnt.p("d1"), mnt.p("d2")) == errno.ENOTEMPTY
    assert keys(s3, bucket) == ["d1/", "d1/x", "d2/", "d2/y"]
    # a file onto a directory and a directory onto a file
    write(mnt.p("f"), b"f")
    assert errno_of(os.rename, mnt.p("f"), mnt.p("d2")) == errno.EISDIR
    assert errno_of(os.rename, mnt.p("d1"), mnt.p("f")) == errno.ENOTDIR


def test_hard_link_refused(s3, bucket, mnt):
    write(mnt.p("a"), b"A")
    assert errno_of(os.link, mnt.p("a"), mnt.p("b")) in \
        (errno.EPERM, errno.ENOTSUP)
    assert keys(s3, bucket) == ["a"]


# --------------------------------------------------------------------------
# Extended attributes
# --------------------------------------------------------------------------

def s3fs_xattrs(md):
    """s3fs's x-amz-meta-xattr: URL-encoded JSON {name: base64(value)}."""
    return {k: base64.b64decode(v)
            for k, v in json.loads(unquote(md["xattr"])).items()}


@pytest.mark.core
def test_user_xattrs(s3, bucket, mounter):
    m = mounter()
    p = m.p("f")
    write(p, b"body")
    os.setxattr(p, "user.color", b"blue")
    os.setxattr(p, "user.bin", b"\x00\xff\x01 %,\"")
    assert os.getxattr(p, "user.color") == b"blue"
    assert os.getxattr(p, "user.bin") == b"\x00\xff\x01 %,\""
    assert sorted(n for n in os.listxattr(p) if n.startswith("user.")) == \
        ["user.bin", "user.color"]
    assert s3fs_xattrs(meta(s3, bucket, "f")) == {
        "user.color": b"blue", "user.bin": b"\x00\xff\x01 %,\""}
    assert body(s3, bucket, "f") == b"body"
    os.setxattr(p, "user.color", b"green")
    assert os.getxattr(p, "user.color") == b"green"
    os.removexattr(p, "user.bin")
    assert errno_of(os.getxattr, p, "user.bin") == errno.ENODATA
    assert errno_of(os.removexattr, p, "user.bin") == errno.ENODATA
    assert errno_of(os.setxattr, p, "user.color", b"x",
                    os.XATTR_CREATE) == errno.EEXIST
    assert errno_of(os.setxattr, p, "user.none", b"x",
                    os.XATTR_REPLACE) == errno.ENODATA
    assert s3fs_xattrs(meta(s3, bucket, "f")) == {"user.color": b"green"}
    # on a directory
    os.mkdir(m.p("d"))
    os.setxattr(m.p("d"), "user.dir", b"yes")
    # a rename keeps them
    write(m.p("g"), b"g")
    os.setxattr(m.p("g"), "user.tag", b"kept")
    os.rename(m.p("g"), m.p("g2"))
    assert s3fs_xattrs(meta(s3, bucket, "g2")) == {"user.tag": b"kept"}
    m.remount()
    assert os.getxattr(m.p("g2"), "user.tag") == b"kept"
    assert os.getxattr(p, "user.color") == b"green"
    assert [n for n in os.listxattr(p) if n.startswith("user.")] == \
        ["user.color"]
    assert os.getxattr(m.p("d"), "user.dir") == b"yes"
    assert read(p) == b"body"


def test_xattrs_of_external_s3fs_object(s3, bucket, mounter):
    value = "%7B%22user.k%22%3A%22" + base64.b64encode(b"v1").decode() + \
        "%22%7D"
    s3.put_object(Bucket=bucket, Key="ext", Body=b"e",
                  Metadata={"xattr": value})
    m = mounter()
    assert os.getxattr(m.p("ext"), "user.k") == b"v1"


def test_xattrs_of_names_only_listed(s3, bucket, proxy, mounter):
    """A listing carries no metadata: the xattrs of a name known only from
    it are read at the first getxattr (one HEAD), whatever the TTL; then
    they are known until it passes."""
    value = "%7B%22user.k%22%3A%22" + base64.b64encode(b"v1").decode() + \
        "%22%7D"
    s3.put_object(Bucket=bucket, Key="ext", Body=b"e",
                  Metadata={"xattr": value})
    s3.put_object(Bucket=bucket, Key="d/", Body=b"",
                  Metadata={"xattr": value})
    m = mounter(attr_ttl=60)
    assert sorted(os.listdir(m.path)) == ["d", "ext"]
    proxy.reset()
    assert os.getxattr(m.p("ext"), "user.k") == b"v1"
    assert os.getxattr(m.p("d"), "user.k") == b"v1"
    heads = proxy.stats()["by_op"].get("HeadObject", 0)
    assert 2 <= heads <= 3, proxy.stats()["by_op"]  # the directory may list too
    assert os.getxattr(m.p("ext"), "user.k") == b"v1"
    assert os.listxattr(m.p("d")) == ["user.k"]
    assert proxy.stats()["by_op"].get("HeadObject", 0) == heads


def test_non_user_xattr_namespace_refused(s3, bucket, mnt):
    write(mnt.p("f"), b"x")
    assert errno_of(os.setxattr, mnt.p("f"), "trusted.pailfs", b"v") in \
        (errno.ENOTSUP, errno.EPERM)
    assert errno_of(os.setxattr, mnt.p("f"), "security.pailfs", b"v") in \
        (errno.ENOTSUP, errno.EPERM)
    assert "xattr" not in meta(s3, bucket, "f")
    # reading one is refused alike, not ENODATA (test_listing_stream.py's
    # test_ls_l_asks_no_acl_of_each_entry says why), and the user namespace
    # beside it still answers (names no security module answers for, and no
    # privilege hides)
    os.setxattr(mnt.p("f"), "user.k", b"v")
    for name in ("system.posix_acl_access", "system.posix_acl_default",
                 "security.pailfs"):
        assert errno_of(os.getxattr, mnt.p("f"), name) == errno.ENOTSUP, name
    assert os.getxattr(mnt.p("f"), "user.k") == b"v"
    assert errno_of(os.getxattr, mnt.p("f"), "user.none") == errno.ENODATA


# --------------------------------------------------------------------------
# Open handles, read-only mounts, shutdown
# --------------------------------------------------------------------------

def test_unlink_of_open_file_keeps_old_bytes(s3, bucket, mounter):
    data = os.urandom(3 * 1024 * 1024 + 5)
    s3.put_object(Bucket=bucket, Key="victim", Body=data)
    m = mounter()
    with open(m.p("victim"), "rb") as f:
        assert f.read(100) == data[:100]
        os.unlink(m.p("victim"))
        assert errno_of(os.stat, m.p("victim")) == errno.ENOENT
        assert "victim" not in os.listdir(m.path)
        f.seek(len(data) - 1_000_000)
        assert f.read() == data[-1_000_000:]
        f.seek(1_000_000)
        assert f.read(4096) == data[1_000_000:1_004_096]
    # deleted at the last close; FUSE sends RELEASE after close(2) returned
    deadline = time.monotonic() + 5
    while exists(s3, bucket, "victim") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not exists(s3, bucket, "victim")


def test_read_only_mount(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="f", Body=b"read me")
    s3.put_object(Bucket=bucket, Key="d/g", Body=b"g")
    m = mounter(opts=["ro"])
    assert read(m.p("f")) == b"read me"
    assert read(m.p("d", "g")) == b"g"
    assert sorted(os.listdir(m.path)) == ["d", "f"]
    assert errno_of(os.open, m.p("f"), os.O_WRONLY) == errno.EROFS
    assert errno_of(os.open, m.p("new"), os.O_WRONLY | os.O_CREAT,
                    0o644) == errno.EROFS
    assert errno_of(os.mkdir, m.p("nd")) == errno.EROFS
    assert errno_of(os.unlink, m.p("f")) == errno.EROFS
    assert errno_of(os.chmod, m.p("f"), 0o600) == errno.EROFS
    assert errno_of(os.rename, m.p("f"), m.p("f2")) == errno.EROFS
    assert errno_of(os.truncate, m.p("f"), 0) == errno.EROFS
    assert errno_of(os.symlink, "f", m.p("l")) == errno.EROFS
    assert errno_of(os.setxattr, m.p("f"), "user.x", b"1") == errno.EROFS
    assert keys(s3, bucket) == ["d/g", "f"]
    assert body(s3, bucket, "f") == b"read me"
    assert "mode" not in meta(s3, bucket, "f")


def test_sigterm_with_file_open_for_writing_finishes_upload(s3, bucket,
                                                            mounter):
    m = mounter()
    data = os.urandom(700_000)
    fd = os.open(m.p("inflight"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for i in range(0, len(data), 100_000):
            assert os.write(fd, data[i:i + 100_000]) == \
                len(data[i:i + 100_000])
        assert not exists(s3, bucket, "inflight")
        assert call_with_timeout(m.terminate, 90, signal.SIGTERM) == 0
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # the mount is gone: ENOTCONN
    assert not is_mounted(m.path)
    assert body(s3, bucket, "inflight") == data
