"""gzip views against a hostile bucket or server (issue 17, items 4 and 9).

Item 9: a size near 2^64 from the server (a listing's Size, a HEAD's
Content-Length) once made a view's size estimate spin forever in a FUSE
thread. Such answers are now refused (EIO for that operation, logged), and
the mount stays healthy.

Item 4: shared gzip indexes (`gz_index=shared`) are anyone's who can write
the bucket. An index larger than its object could ever need is refused
without being downloaded whole, one that claims a size the object cannot
decompress to is refused, a missing or refused index is remembered per
object version (not fetched again at every stat), concurrent stats fetch
it once, and listing a directory of .gz files sends no GET per entry. The
requests are counted at the proxy."""

import gzip
import os
import subprocess
import threading
import zlib

from helpers import put, text
from mount import call_with_timeout, expect_eio, mounter, read  # noqa: F401

MiB = 1 << 20
HUGE = (1 << 64) - 1
BOUNDED = 30.0  # seconds a refused answer may take to fail


def healthy(proxy, m, name, data):
    """The server behaves again: the view reads right, the mount lives."""
    proxy.config(fail_next=[])
    assert call_with_timeout(read, BOUNDED, m.p(name)) == data
    assert m.proc.poll() is None


# ---- item 9: sizes beyond S3's largest object-----------------------------------

def test_head_size_near_2_64_is_refused(proxy, s3, bucket, mounter):
    data = text(200_000, seed=21)
    # at the root, which no lookup lists: the view is looked up by HEAD
    put(s3, bucket, "huge.json.gz", gzip.compress(data))
    m = mounter(opts=["gunzip=view", "retries=1"])
    # the HEAD of the .gz claims 2^64-1 bytes, and the 4-byte trailer GET
    # that estimates the view's size answers: the estimate used to loop
    proxy.config(fail_next=[
        dict(op="HeadObject", path_regex=r"huge\.json\.gz", count=5,
             status=200, headers={"ETag": '"e1"'}, body="",
             content_length=HUGE),
        dict(op="GetObject", path_regex=r"huge\.json\.gz", count=5,
             status=206, body="abcd",
             headers={"ETag": '"e1"',
                      "Content-Range": f"bytes {HUGE - 4}-{HUGE - 1}/{HUGE}"}),
    ])
    expect_eio(os.stat, m.p("huge.json"))
    assert "beyond S3's largest object" in m.stderr_text()
    healthy(proxy, m, "huge.json", data)


def test_listing_size_near_2_64_is_refused(proxy, s3, bucket, mounter):
    data = text(200_000, seed=22)
    put(s3, bucket, "d/huge.json.gz", gzip.compress(data))
    m = mounter(opts=["gunzip=view", "retries=1"])
    page = ('<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult '
            'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f'<Name>{bucket}</Name><Prefix>d/</Prefix><KeyCount>1</KeyCount>'
            '<MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter>'
            '<IsTruncated>false</IsTruncated>'
            '<Contents><Key>d/huge.json.gz</Key><LastModified>'
            '2026-01-01T00:00:00.000Z</LastModified><ETag>"e1"</ETag>'
            f'<Size>{HUGE}</Size></Contents></ListBucketResult>')
    proxy.config(fail_next=[
        dict(op="ListObjectsV2", count=5, status=200,
             headers={"Content-Type": "application/xml"}, body=page),
        dict(op="GetObject", path_regex=r"huge\.json\.gz", count=5,
             status=206, body="abcd",
             headers={"ETag": '"e1"',
                      "Content-Range": f"bytes {HUGE - 4}-{HUGE - 1}/{HUGE}"}),
    ])
    expect_eio(os.listdir, m.p("d"))
    assert "the listing is refused" in m.stderr_text()
    healthy(proxy, m, "d/huge.json", data)
    assert sorted(os.listdir(m.p("d"))) == ["huge.json", "huge.json.gz"]


# ---- item 4: shared gzip indexes ------------------------------------------

SHARED = ["gunzip=view", "gz_index=shared"]


def index_gets(proxy):
    """The GETs of shared indexes among the recent requests."""
    return [r for r in proxy.stats()["recent"]
            if r.get("op") == "GetObject"
            and (r.get("key") or "").startswith(".pailfs/gzindex/")]


def shared_index(s3, bucket):
    keys = [o["Key"] for o in s3.list_objects_v2(
        Bucket=bucket, Prefix=".pailfs/gzindex/").get("Contents", [])]
    assert len(keys) == 1, keys
    return keys[0]


def share_index_of(s3, bucket, mounter, view):
    """Mount, read `view` whole (its index goes to the bucket), unmount;
    the key of the shared index."""
    a = mounter(opts=SHARED)
    read(a.p(view))
    a.unmount()
    return shared_index(s3, bucket)


def big_gz():
    """A .gz above the 1 MiB read whole at lookup: a stat estimates its
    size (one 4-byte GET) and builds no index."""
    data = os.urandom(1536 * 1024)
    return data, gzip.compress(data, 1)


def test_listing_gz_files_sends_no_get(proxy, s3, bucket, mounter):
    for i in range(50):
        put(s3, bucket, f"d/f{i:02d}.json.gz",
            gzip.compress(b"line %d\n" % i * 200))
    m = mounter(opts=SHARED)
    proxy.reset()
    names = os.listdir(m.p("d"))
    assert len(names) == 100, names  # f00.json.gz and its view f00.json, ...
    by_op = proxy.stats()["by_op"]
    assert by_op.get("GetObject", 0) == 0, by_op
    # ls -l stats every view: its size as documented (these are small, so
    # read whole), and the shared index asked for once per view at most
    r = subprocess.run(["ls", "-l", m.p("d")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    keys = [g["key"] for g in index_gets(proxy)]
    assert len(keys) <= 50 and len(set(keys)) == len(keys), keys


def test_missing_index_is_fetched_once_for_many_stats(proxy, s3, bucket, mounter):
    data, gz = big_gz()
    put(s3, bucket, "b.bin.gz", gz)
    m = mounter(opts=SHARED, attr_ttl=0)  # every stat asks pailfs again
    proxy.reset()
    for _ in range(10):
        assert os.stat(m.p("b.bin")).st_size >= len(gz)
    gets = index_gets(proxy)
    assert len(gets) <= 1, [(g["key"], g["status"]) for g in gets]
    assert read(m.p("b.bin")) == data
    assert len(index_gets(proxy)) <= 1  # nor at open


def stat_at_once(path, n=20):
    barrier = threading.Barrier(n)
    sizes, errors = [], []

    def one():
        barrier.wait()
        try:
            sizes.append(os.stat(path).st_size)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUNDED)
    assert not errors, errors
    return sizes


def test_concurrent_stats_fetch_a_missing_index_once(proxy, s3, bucket, mounter):
    data, gz = big_gz()
    put(s3, bucket, "c/b.bin.gz", gz)
    m = mounter(opts=SHARED)
    os.listdir(m.p("c"))  # the view is known from the listing only
    proxy.reset()
    proxy.config(latency_ms=300)  # every answer slow: the stats overlap
    sizes = stat_at_once(m.p("c/b.bin"))
    assert len(sizes) == 20
    gets = index_gets(proxy)
    assert len(gets) <= 1, [(g["key"], g["status"]) for g in gets]


def test_concurrent_stats_fetch_an_index_once(proxy, s3, bucket, mounter):
    data = text(300_000, seed=23)
    put(s3, bucket, "c/t.json.gz", gzip.compress(data))
    share_index_of(s3, bucket, mounter, "c/t.json")
    b = mounter(opts=SHARED)  # its own cache_dir: the index is in the bucket only
    os.listdir(b.p("c"))
    proxy.reset()
    proxy.config(latency_ms=300)
    sizes = stat_at_once(b.p("c/t.json"))
    assert sizes == [len(data)] * 20, sizes
    gets = index_gets(proxy)
    assert len(gets) == 1, [(g["key"], g["range"]) for g in gets]
    by_op = proxy.stats()["by_op"]
    assert by_op.get("PutObject", 0) == 0, by_op  # used, not rebuilt


def test_forged_huge_index_is_refused_unread(proxy, s3, bucket, mounter):
    data = b"hello, gzip\n"
    gz = gzip.compress(data)
    put(s3, bucket, "h.txt.gz", gz)
    key = share_index_of(s3, bucket, mounter, "h.txt")
    forged = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    forged += os.urandom(8 * MiB)  # 8 MiB for an object of 30-odd bytes
    s3.put_object(Bucket=bucket, Key=key, Body=forged)
    b = mounter(opts=SHARED)
    proxy.reset()
    assert os.stat(b.p("h.txt")).st_size == len(data)
    assert read(b.p("h.txt")) == data  # its own index, built here
    gets = index_gets(proxy)
    assert 1 <= len(gets) <= 2, [(g["key"], g["range"]) for g in gets]
    got = sum(g["bytes_out"] for g in gets)
    assert got <= 256 * 1024, got  # not the 8 MiB
    assert "refused" in b.stderr_text()


def test_forged_index_with_a_size_of_2_64_is_refused(proxy, s3, bucket, mounter):
    data = text(300_000, seed=24)
    put(s3, bucket, "s.json.gz", gzip.compress(data))
    key = share_index_of(s3, bucket, mounter, "s.json")
    f = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    f[24:32] = HUGE.to_bytes(8, "little")  # the decompressed size
    f[-4:] = (zlib.crc32(bytes(f[:-4])) & 0xffffffff).to_bytes(4, "little")
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(f))
    b = mounter(opts=SHARED)
    assert os.stat(b.p("s.json")).st_size == len(data)
    assert read(b.p("s.json")) == data
    assert "not usable" in b.stderr_text()
