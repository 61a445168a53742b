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

import errno
import gzip
import os
import time

import pytest

from mount import call_with_timeout, mounter  # noqa: F401
from test_mount_gzip import put, read, text

MiB = 1 << 20
HUGE = (1 << 64) - 1
BOUNDED = 30.0  # seconds a refused answer may take to fail


def expect_eio(fn, *args):
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        call_with_timeout(fn, BOUNDED, *args)
    assert e.value.errno == errno.EIO, e.value
    assert time.monotonic() - t0 < BOUNDED
    return e.value


def healthy(proxy, m, name, data):
    """The server behaves again: the view reads right, the mount lives."""
    proxy.config(fail_next=[])
    assert call_with_timeout(read, BOUNDED, m.p(name)) == data
    assert m.proc.poll() is None


# ---- item 9: sizes beyond S3's 5 TiB ------------------------------------

def test_head_size_near_2_64_is_refused(proxy, s3, bucket, mounter):
    data = text(200_000, seed=21)
    put(s3, bucket, "d/huge.json.gz", gzip.compress(data))
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
    expect_eio(os.stat, m.p("d/huge.json"))
    assert "beyond S3's 5 TiB" in m.stderr_text()
    healthy(proxy, m, "d/huge.json", data)


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
