"""A server that answers garbage: truncated XML, a Content-Length that lies,
huge header values, a 200 whose body is an error document, a listing that
hands back the same continuation token forever. Each time pailfs must fail
that one operation with EIO (and a log line), within a bounded time, and
stay healthy: the mount keeps working once the server behaves again, and
nothing stored is changed. The answers are scripted at the fault proxy
(fail_next entries with a body of their own), on top of s3rver."""

import errno
import os
import random

import pytest

from helpers import spoil
from mount import expect_eio, mounter  # noqa: F401

# retries=1 keeps each failure quick: two attempts, both spoiled.
OPTS = ["retries=1"]
BOUNDED = 30.0  # seconds any failing operation may take


def healthy_again(proxy, m, s3, bucket, name="after"):
    """The server behaves again: the same mount lists, writes and reads."""
    proxy.config(fail_next=[])
    with open(m.p(name), "wb") as f:
        f.write(b"fine")
    assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == b"fine"
    assert name in os.listdir(m.path)
    assert m.proc.poll() is None


def test_truncated_listing_xml(proxy, s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="d/a", Body=b"a")
    m = mounter(opts=OPTS)
    spoil(proxy, "ListObjectsV2", status=200,
          headers={"Content-Type": "application/xml"},
          body='<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult '
               'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>'
               f'{bucket}</Name><Contents><Key>d/a</Key><Size>1')
    expect_eio(os.listdir, m.p("d"))
    assert "ListObjectsV2" in m.stderr_text()
    healthy_again(proxy, m, s3, bucket)
    assert os.listdir(m.p("d")) == ["a"]


def test_listing_that_loops_on_its_token(proxy, s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="loop/a", Body=b"a")
    m = mounter(opts=OPTS)
    page = ('<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult '
            'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f'<Name>{bucket}</Name><Prefix>loop/</Prefix><KeyCount>1</KeyCount>'
            '<MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter>'
            '<IsTruncated>true</IsTruncated>'
            '<Contents><Key>loop/a</Key><LastModified>2026-01-01T00:00:00.000Z'
            '</LastModified><ETag>"x"</ETag><Size>1</Size></Contents>'
            '<ContinuationToken>same</ContinuationToken>'
            '<NextContinuationToken>same</NextContinuationToken>'
            '</ListBucketResult>')
    spoil(proxy, "ListObjectsV2", count=100000, status=200,
          headers={"Content-Type": "application/xml"}, body=page)
    expect_eio(os.listdir, m.p("loop"))
    lists = proxy.stats()["by_op"]["ListObjectsV2"]
    assert lists <= 4, lists  # noticed at the second page, not looped
    assert "stopping rather than looping" in m.stderr_text()
    healthy_again(proxy, m, s3, bucket)
    assert os.listdir(m.p("loop")) == ["a"]


def test_body_shorter_than_content_length(proxy, s3, bucket, mounter):
    data = bytes(random.Random(5).choice(b"abcdefgh\n") for _ in range(300000))
    s3.put_object(Bucket=bucket, Key="short", Body=data)
    m = mounter(opts=OPTS)
    os.stat(m.p("short"))
    spoil(proxy, "GetObject", status=200,
          headers={"ETag": '"whatever"'}, body=data[:1000].decode(),
          content_length=len(data))
    with open(m.p("short"), "rb") as f:
        expect_eio(f.read)
    proxy.config(fail_next=[])
    with open(m.p("short"), "rb") as f:
        assert f.read() == data  # nothing of the spoiled answer was kept


def test_huge_header_value(proxy, s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="hdr", Body=b"h" * 100)
    m = mounter(opts=OPTS)
    spoil(proxy, "HeadObject", status=200,
          headers={"x-amz-meta-junk": "J" * 300000})
    expect_eio(os.stat, m.p("hdr"))
    healthy_again(proxy, m, s3, bucket)
    assert os.stat(m.p("hdr")).st_size == 100


def test_copy_answering_200_with_an_error_body(proxy, s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source bytes")
    m = mounter(opts=OPTS)
    os.stat(m.p("src"))
    spoil(proxy, "CopyObject", status=200,
          headers={"Content-Type": "application/xml"},
          body='<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
               'InternalError</Code><Message>We encountered an internal '
               'error.</Message><RequestId>R1</RequestId></Error>')
    expect_eio(os.rename, m.p("src"), m.p("dst"))
    # the source is untouched and still where it was
    assert s3.get_object(Bucket=bucket, Key="src")["Body"].read() == \
        b"source bytes"
    healthy_again(proxy, m, s3, bucket)
    assert "src" in os.listdir(m.path)


def test_complete_answering_200_with_an_error_body(proxy, s3, bucket,
                                                   mounter):
    s3.put_object(Bucket=bucket, Key="big", Body=b"old")
    m = mounter(opts=OPTS + ["part_size=5M"])
    spoil(proxy, "CompleteMultipartUpload", status=200,
          headers={"Content-Type": "application/xml"},
          body='<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
               'InternalError</Code><Message>boom</Message></Error>')
    f = open(m.p("big"), "wb")
    f.write(os.urandom(11 * 1024 * 1024))
    expect_eio(f.close)
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == b"old"
    healthy_again(proxy, m, s3, bucket)


def test_garbage_instead_of_xml(proxy, s3, bucket, mounter):
    m = mounter(opts=OPTS + ["part_size=5M"])
    spoil(proxy, "CreateMultipartUpload", status=200,
          headers={"Content-Type": "application/xml"},
          body="\x00\x01 not xml at all <<<>>> \xff")
    f = open(m.p("nox"), "wb")
    expect_eio(f.write, os.urandom(6 * 1024 * 1024))
    with pytest.raises(OSError):
        f.close()
    assert "nox" not in [o["Key"] for o in
                         s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    healthy_again(proxy, m, s3, bucket)


def test_keys_with_control_characters_and_1024_bytes(s3, bucket, mounter):
    """Names S3 allows: control characters are fine POSIX names (all but
    '/' and NUL); a 1,024-byte key is listed when each of its components
    fits in 255 bytes, and skipped with a warning when one does not."""
    deep = "/".join(["c" * 200] * 5) + "/" + "f" * 19  # 1,024 bytes
    assert len(deep.encode()) == 1024
    flat = "k" * 1024
    names = {"tab\there": b"t", "nl\nhere": b"n", "bell\x07": b"b",
             "esc\x1b[31m": b"e", "del\x7f": b"d", "uni\u00e9\u2603": b"u"}
    for k, v in names.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    s3.put_object(Bucket=bucket, Key=deep, Body=b"deep")
    s3.put_object(Bucket=bucket, Key=flat, Body=b"flat")
    m = mounter()
    listed = set(os.listdir(m.path))
    assert set(names) | {"c" * 200} == listed
    for k, v in names.items():
        with open(m.p(k), "rb") as f:
            assert f.read() == v
    with open(m.p(*deep.split("/")), "rb") as f:
        assert f.read() == b"deep"
    # through the mount: a 1,024-byte key can be a file, not a directory
    # (its marker would be 1,025 bytes), and 1,025 bytes is too long
    parts = deep.split("/")
    made = m.p(*parts[:-1], "g" * 19)
    with open(made, "wb") as f:
        f.write(b"full")
    assert s3.get_object(Bucket=bucket, Key=deep[:-19] + "g" * 19)[
        "Body"].read() == b"full"
    with pytest.raises(OSError) as e:
        os.mkdir(m.p(*parts[:-1], "h" * 19))
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as e:
        open(m.p(*parts[:-1], "i" * 20), "wb")
    assert e.value.errno == errno.ENAMETOOLONG
    assert 'skipping key "' + flat + '"' in m.stderr_text()
    # and the mount can create such names too
    with open(m.p("made\x01here"), "wb") as f:
        f.write(b"m")
    assert s3.get_object(Bucket=bucket, Key="made\x01here")["Body"].read() \
        == b"m"
