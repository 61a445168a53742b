"""The write path (issue 6): files written front to back stream up as
multipart parts with nothing staged on disk; edits of existing objects are
staged sparsely and rebuilt with UploadPartCopy; close() and fsync() return
0 only when the bytes are in the bucket, EIO (sticky) otherwise, with the
old object intact; a killed pailfs leaves no partial object and its upload
is aborted at the next mount.  Every object is checked from outside with
boto3 straight to the server; request shapes are counted at the proxy."""

import errno
import os
import random
import subprocess
import time

import pytest

import rig
from helpers import body, ops, sha256, uploads
from mount import Mount, fusermount_unmount, mnt, mounter  # noqa: F401

MiB = 1 << 20
PART = 5 * MiB


def write_chunks(path, data, chunk=MiB, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    fd = os.open(path, flags, 0o644)
    try:
        for i in range(0, len(data), chunk):
            assert os.write(fd, data[i:i + chunk]) == len(data[i:i + chunk])
    finally:
        os.close(fd)


def staging_files(m):
    d = m.path.rstrip("/") + ".cache/staging"
    return os.listdir(d) if os.path.isdir(d) else []


# --------------------------------------------------------------------------
# Streaming: sizes, request shapes, nothing on disk
# --------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 3 * PART + 17])
def test_stream_sizes(s3, bucket, proxy, mounter, size):
    m = mounter(opts=["part_size=5M"])
    data = random.Random(size).randbytes(size)
    proxy.reset()
    write_chunks(m.p("f.bin"), data, chunk=128 << 10)
    got = body(s3, bucket, "f.bin")
    assert len(got) == size and sha256(got) == sha256(data)
    o = ops(proxy)
    if size <= PART:
        assert o.get("PutObject") == 1, o
        assert "CreateMultipartUpload" not in o, o
    else:
        assert "PutObject" not in o, o
        assert o.get("CreateMultipartUpload") == 1, o
        assert o.get("UploadPart") == -(-size // PART), o
        assert o.get("CompleteMultipartUpload") == 1, o
    assert "GetObject" not in o, o  # a new file is never downloaded
    assert os.stat(m.p("f.bin")).st_size == size


def test_stream_100mib_nothing_staged_and_only_complete(s3, bucket, proxy, mnt):
    data = os.urandom(100 * MiB)
    fd = os.open(mnt.p("big.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(0, 60 * MiB, MiB):
            os.write(fd, data[i:i + MiB])
        # parts are on their way while the program writes ...
        deadline = time.time() + 30
        while ops(proxy).get("UploadPart", 0) < 3 and time.time() < deadline:
            time.sleep(0.05)
        assert ops(proxy).get("UploadPart", 0) >= 3, ops(proxy)
        # ... nothing of it is on local disk, and no object is visible yet
        assert staging_files(mnt) == []
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
        for i in range(60 * MiB, len(data), MiB):
            os.write(fd, data[i:i + MiB])
    finally:
        os.close(fd)
    assert sha256(body(s3, bucket, "big.bin")) == sha256(data)
    with open(mnt.p("big.bin"), "rb") as f:
        assert sha256(f.read()) == sha256(data)
    assert uploads(s3, bucket) == []


def test_more_than_10000_first_parts(tmp_path):
    """part_size=4k on a server with no minimum part size: a file of more
    than 10,000 first-size parts fits because parts grow every 1,000."""
    server = rig.S3Server(tmp_path / "srv", buckets=["b"], min_part_size=0)
    with server, rig.Proxy(server.url) as proxy:
        s3 = rig.boto3_client(server.url)
        # 10,000 parts of 4k and 123 bytes: one byte more than 10,000
        # first-size parts hold (S3's most), in as few parts as can show it
        # (3,376: each part is a request to the test server)
        size = 10_000 * 4096 + 123
        data = random.Random(7).randbytes(size)
        with Mount(proxy, "b", tmp_path / "m", opts=["part_size=4k", "max_inflight=16"]) as m:
            write_chunks(m.p("many.bin"), data)
        assert sha256(body(s3, "b", "many.bin")) == sha256(data)
        o = ops(proxy)
        # 1000 x 4k, 1000 x 8k, 1000 x 16k, then 32k parts
        assert o.get("UploadPart") == 3000 + -(-(size - 28_000 * 1024) // (32 * 1024)), o
        assert o.get("CompleteMultipartUpload") == 1, o


def test_two_handles_see_each_other(s3, bucket, mnt):
    w = os.open(mnt.p("shared"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    r = os.open(mnt.p("shared"), os.O_RDONLY)
    try:
        os.write(w, b"hello ")
        assert os.pread(r, 100, 0) == b"hello "
        os.write(w, b"world")
        assert os.pread(r, 100, 0) == b"hello world"
    finally:
        os.close(w)
        os.close(r)
    assert body(s3, bucket, "shared") == b"hello world"


# --------------------------------------------------------------------------
# fsync: a checkpoint, then the stream goes on from it
# --------------------------------------------------------------------------

def test_fsync_checkpoint(s3, bucket, proxy, mounter):
    m = mounter(opts=["part_size=5M"])
    a, b = os.urandom(20 * MiB), os.urandom(20 * MiB)
    fd = os.open(m.p("ckpt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, a)
        os.fsync(fd)
        assert sha256(body(s3, bucket, "ckpt")) == sha256(a)
        proxy.reset()
        os.write(fd, b)
    finally:
        os.close(fd)
    assert sha256(body(s3, bucket, "ckpt")) == sha256(a + b)
    o = ops(proxy)
    # the committed 20 MiB were copied server-side, not sent again
    assert o.get("UploadPartCopy", 0) >= 1, o
    assert o.get("UploadPart") == 4, o
    assert "GetObject" not in o, o


@pytest.mark.core
def test_append_copies_old_bytes(s3, bucket, proxy, mnt):
    old = os.urandom(12 * MiB)
    s3.put_object(Bucket=bucket, Key="log", Body=old)
    proxy.reset()
    with open(mnt.p("log"), "ab") as f:
        f.write(b"one more line\n")
    assert body(s3, bucket, "log") == old + b"one more line\n"
    o = ops(proxy)
    assert o.get("UploadPartCopy", 0) >= 1 and "GetObject" not in o, o


# --------------------------------------------------------------------------
# Staged edits
# --------------------------------------------------------------------------

def test_staged_edits_use_part_copy(s3, bucket, proxy, mounter):
    m = mounter()
    size = 40 * MiB
    ref = bytearray(os.urandom(size))
    s3.put_object(Bucket=bucket, Key="edit.bin", Body=bytes(ref))

    def check(what, max_get):
        got = body(s3, bucket, "edit.bin")
        assert len(got) == len(ref) and sha256(got) == sha256(bytes(ref)), what
        st = proxy.stats()
        o = st["by_op"]
        assert o.get("UploadPartCopy", 0) >= 1, (what, o)
        assert st["bytes_out"] <= max_get, (what, st["bytes_out"])
        with open(m.p("edit.bin"), "rb") as f:
            assert sha256(f.read()) == sha256(bytes(ref)), what
        proxy.reset()

    time.sleep(1.1)  # past the attribute TTL: open sees the object's size
    proxy.reset()
    # 1 KiB overwritten in the middle
    with open(m.p("edit.bin"), "r+b") as f:
        f.seek(20 * MiB + 100)
        f.write(b"x" * 1024)
    ref[20 * MiB + 100:20 * MiB + 1124] = b"x" * 1024
    check("overwrite", 8 * MiB)
    # append
    with open(m.p("edit.bin"), "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(b"tail")
    ref += b"tail"
    check("append", 8 * MiB)
    # truncate down, then up
    os.truncate(m.p("edit.bin"), 30 * MiB + 5)
    del ref[30 * MiB + 5:]
    check("truncate down", 1 * MiB)
    os.truncate(m.p("edit.bin"), 33 * MiB)
    ref += bytes(33 * MiB - len(ref))
    check("truncate up", 6 * MiB)
    # write past EOF, leaving a hole
    with open(m.p("edit.bin"), "r+b") as f:
        f.seek(50 * MiB)
        f.write(b"after the hole")
    ref += bytes(50 * MiB - len(ref)) + b"after the hole"
    check("hole", 8 * MiB)


@pytest.mark.core
def test_seek_back_after_parts_sent(s3, bucket, mounter):
    """A header patched after the body streamed: a checkpoint, then a
    staged edit; the final object is exact."""
    m = mounter(opts=["part_size=5M"])
    data = bytearray(os.urandom(17 * MiB))
    fd = os.open(m.p("hdr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.pwrite(fd, b"HEADER", 0)
        data[0:6] = b"HEADER"
    finally:
        os.close(fd)
    assert sha256(body(s3, bucket, "hdr")) == sha256(bytes(data))


def test_part_copy_not_implemented_falls_back(s3, bucket, proxy, mounter):
    m = mounter()
    ref = bytearray(os.urandom(20 * MiB))
    s3.put_object(Bucket=bucket, Key="nocopy", Body=bytes(ref))
    time.sleep(1.1)
    proxy.config(fail_next=[{"status": 501, "code": "NotImplemented",
                             "op": "UploadPartCopy", "count": 1000}])
    with open(m.p("nocopy"), "r+b") as f:
        f.seek(MiB)
        f.write(b"y" * 10)
    ref[MiB:MiB + 10] = b"y" * 10
    assert sha256(body(s3, bucket, "nocopy")) == sha256(bytes(ref))
    assert "does not implement UploadPartCopy" in m.stderr_text()


# --------------------------------------------------------------------------
# Failures: EIO at close, sticky, old object intact
# --------------------------------------------------------------------------

def test_failed_part_gives_eio_and_keeps_old(s3, bucket, proxy, mounter):
    m = mounter(opts=["part_size=5M"])
    s3.put_object(Bucket=bucket, Key="keep", Body=b"old content")
    time.sleep(1.1)
    proxy.config(fail_next=[{"status": 403, "code": "AccessDenied", "op": "UploadPart",
                             "count": 1}])
    fd = os.open(m.p("keep"), os.O_WRONLY | os.O_TRUNC)
    try:
        first = None
        try:  # the failure shows at a later write, or at fsync
            for _ in range(12):
                os.write(fd, os.urandom(MiB))
            os.fsync(fd)
        except OSError as e:
            first = e.errno
        assert first == errno.EIO
        with pytest.raises(OSError) as e:  # sticky: the next write too
            os.write(fd, b"more")
        assert e.value.errno == errno.EIO
    finally:
        with pytest.raises(OSError) as e:
            os.close(fd)
        assert e.value.errno == errno.EIO
    assert body(s3, bucket, "keep") == b"old content"
    assert ops(proxy).get("AbortMultipartUpload", 0) >= 1
    assert uploads(s3, bucket) == []


def test_faults_exact_bytes_or_eio(s3, bucket, proxy, mounter):
    m = mounter(opts=["part_size=5M"])
    files = {f"f{i}": os.urandom(size) for i, size in
             enumerate([3 * MiB, 11 * MiB, 23 * MiB + 5, 7 * MiB, 16 * MiB, MiB])}
    for k in files:
        s3.put_object(Bucket=bucket, Key=k, Body=b"previous " + k.encode())
    time.sleep(1.1)
    proxy.config(p503=0.10, preset=0.03, seed=99)
    outcomes = []
    for k, data in files.items():
        try:
            write_chunks(m.p(k), data, flags=os.O_WRONLY | os.O_TRUNC)
            outcomes.append("ok")
            assert sha256(body(s3, bucket, k)) == sha256(data), k
        except OSError as e:
            assert e.errno == errno.EIO, e
            outcomes.append("eio")
            assert body(s3, bucket, k) == b"previous " + k.encode()
    faults = proxy.stats()["faults"]
    assert sum(faults.values()) > 0, faults
    assert outcomes.count("ok") >= 1, outcomes


def test_kill9_mid_write_then_stale_upload_aborted(s3, bucket, proxy, mounter, tmp_path):
    s3.put_object(Bucket=bucket, Key="victim", Body=b"the old version")
    m = mounter(opts=["part_size=5M", "abort_stale_uploads=off"])
    time.sleep(1.1)
    fd = os.open(m.p("victim"), os.O_WRONLY | os.O_TRUNC)
    os.write(fd, os.urandom(12 * MiB))
    deadline = time.time() + 30
    while ops(proxy).get("UploadPart", 0) < 2 and time.time() < deadline:
        time.sleep(0.05)
    m._kill()
    try:
        os.close(fd)
    except OSError:
        pass
    assert body(s3, bucket, "victim") == b"the old version"
    assert [u["Key"] for u in uploads(s3, bucket)] == ["victim"]
    time.sleep(2.1)
    proxy.reset()
    m2 = mounter(opts=["abort_stale_uploads=2s"])
    deadline = time.time() + 30
    while uploads(s3, bucket) and time.time() < deadline:
        time.sleep(0.1)
    assert uploads(s3, bucket) == []
    assert ops(proxy).get("AbortMultipartUpload") == 1, ops(proxy)
    assert "aborted 1 multipart upload" in m2.stderr_text()
    with open(m2.p("victim"), "rb") as f:
        assert f.read() == b"the old version"


def test_full_staging_disk(s3, bucket, proxy, mounter, tmp_path):
    cache = tmp_path / "tiny"
    cache.mkdir()
    # mode=0700: pailfs refuses a cache directory others can write (a
    # tmpfs's root is 1777 by default)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(cache)],
                   check=True)
    try:
        old = os.urandom(12 * MiB)
        s3.put_object(Bucket=bucket, Key="big", Body=old)
        m = mounter(opts=[f"cache_dir={cache}", "cache_size=0"])
        time.sleep(1.1)
        fd = os.open(m.p("big"), os.O_RDWR)
        try:
            with pytest.raises(OSError) as e:
                for i in range(12):  # rewrite from the start: staged
                    os.pwrite(fd, b"z" * MiB, i * MiB + 1)
            assert e.value.errno == errno.ENOSPC
        finally:
            with pytest.raises(OSError) as e:
                os.close(fd)
            assert e.value.errno == errno.ENOSPC
        assert sha256(body(s3, bucket, "big")) == sha256(old)
        # reads still right with the disk full of nothing
        with open(m.p("big"), "rb") as f:
            assert sha256(f.read()) == sha256(old)
        m.unmount()
    finally:
        subprocess.run(["umount", "-l", str(cache)])


def test_ambiguous_complete_resolved(s3, bucket, proxy, mounter):
    """The first CompleteMultipartUpload lands but its answer is cut (TCP
    reset mid-body); the retry finds NoSuchUpload.  pailfs checks the
    object's ETag against the parts' and close() returns 0."""
    import threading
    m = mounter(opts=["part_size=5M"])
    data = os.urandom(12 * MiB)
    proxy.config(preset=1.0, only_ops=["CompleteMultipartUpload"])
    result = {}

    def writer():
        try:
            write_chunks(m.p("amb"), data)
            result["rc"] = 0
        except OSError as e:
            result["rc"] = e.errno

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.time() + 60
    while proxy.stats()["faults"].get("reset", 0) < 1 and time.time() < deadline:
        time.sleep(0.002)
    proxy.config(preset=0.0)
    t.join(60)
    assert result.get("rc") == 0, result
    assert sha256(body(s3, bucket, "amb")) == sha256(data)
    st = proxy.stats()
    assert st["by_op"].get("CompleteMultipartUpload") == 2, st["by_op"]
    assert "an earlier attempt completed it" in m.stderr_text()


def test_many_writers_share_the_memory_bound(s3, bucket, mounter):
    """Six files streamed at once under max_memory=16M with 5 MiB parts:
    writers wait for room (back-pressure) and every byte lands."""
    import threading
    m = mounter(opts=["part_size=5M", "max_memory=16M", "max_inflight=4"])
    files = {f"w{i}": os.urandom(17 * MiB + i) for i in range(6)}
    errors = []

    def writer(k):
        try:
            write_chunks(m.p(k), files[k])
        except OSError as e:
            errors.append((k, e))

    threads = [threading.Thread(target=writer, args=(k,)) for k in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    for k, data in files.items():
        assert sha256(body(s3, bucket, k)) == sha256(data), k
    assert "exceed max_memory" not in m.stderr_text()


def test_reused_part_buffers_carry_no_old_bytes(s3, bucket, mounter):
    """Part buffers are kept and reused unzeroed (issue 21): a later file's
    parts, its short hole (zeros) and a small file sent as one PutObject
    hold only their own bytes, never the earlier file's."""
    m = mounter(opts=["part_size=5M"])
    first = os.urandom(11 * MiB)
    write_chunks(m.p("first"), first)
    second = os.urandom(2 * MiB)
    fd = os.open(m.p("second"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert os.write(fd, second) == len(second)
        assert os.pwrite(fd, b"z", 3 * MiB) == 1  # a 1 MiB hole, still streamed
    finally:
        os.close(fd)
    small = os.urandom(1000)
    write_chunks(m.p("small"), small)
    assert sha256(body(s3, bucket, "first")) == sha256(first)
    assert body(s3, bucket, "second") == second + bytes(MiB) + b"z"
    assert body(s3, bucket, "small") == small


def test_new_directory_knows_its_names(s3, bucket, proxy, mnt):
    """cp -r into a directory made on this mount: a new name there costs
    no lookup request within neg_ttl, only its PutObject; a name added by
    someone else shows once neg_ttl has passed."""
    os.mkdir(mnt.p("fresh"))
    proxy.reset()
    for i in range(20):
        write_chunks(mnt.p(f"fresh/f{i}"), b"x" * i)
    by_op = ops(proxy)
    assert by_op.get("PutObject") == 20, by_op
    assert "ListObjectsV2" not in by_op and "HeadObject" not in by_op, by_op
    s3.put_object(Bucket=bucket, Key="fresh/other", Body=b"from elsewhere")
    time.sleep(1.3)
    with open(mnt.p("fresh/other"), "rb") as f:
        assert f.read() == b"from elsewhere"
    assert sorted(os.listdir(mnt.p("fresh"))) == sorted([f"f{i}" for i in range(20)] + ["other"])
