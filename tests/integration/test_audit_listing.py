"""Listings a server gets wrong (issue 17, items 1 and 8).

Item 1: a listing is asked for one prefix; a server that ignores it (or a
hostile one) answers with keys outside it. pailfs must never show, copy,
delete or abort such a key: the operation that met it fails with EIO before
changing anything, and one log line names the prefix, the key and the
request id.

Item 8: the stale-upload sweep at mount aborts only uploads it knows to be
old: one without <Initiated>, or with a date it cannot read, is left alone;
dates with offsets ("+02:00", "-0530") are read as the instants they name.

The wrong answers are scripted at the fault proxy (fail_next with a body);
the bucket is checked straight at s3rver with boto3."""

import datetime
import errno
import os
import time

import pytest

from helpers import XML, listing_page, ops, uploads_page
from mount import mounter, wait_until  # noqa: F401

OPTS = ["retries=1"]


def listing(bucket, prefix, keys, prefixes=(), delimiter=""):
    """A ListObjectsV2 page holding `keys` (names, or (name, ETag, size))
    and `prefixes`, whatever was asked for."""
    return listing_page(
        bucket, prefix,
        [(k, "&quot;x&quot;", 1) if isinstance(k, str)
         else (k[0], k[1].replace('"', "&quot;"), k[2]) for k in keys],
        prefixes, delimiter)


def bucket_state(s3, bucket):
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = s3.get_object(Bucket=bucket,
                                          Key=o["Key"])["Body"].read()
    return out


def open_uploads(s3, bucket):
    r = s3.list_multipart_uploads(Bucket=bucket)
    return sorted((u["Key"], u["UploadId"]) for u in r.get("Uploads", []))


def iso(t, offset_minutes, colon=True, frac=""):
    """Time t (a UTC datetime) written in a zone offset_minutes east."""
    tz = datetime.timezone(datetime.timedelta(minutes=offset_minutes))
    s = t.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S") + frac
    sign = "-" if offset_minutes < 0 else "+"
    hh, mm = divmod(abs(offset_minutes), 60)
    return f"{s}{sign}{hh:02d}{':' if colon else ''}{mm:02d}"


# ---- item 1: keys outside the prefix ---------------------------------------

def test_readdir_answered_with_a_key_shorter_than_the_prefix(proxy, s3, bucket,
                                                            mounter):
    s3.put_object(Bucket=bucket, Key="some/deep/directory/file", Body=b"f")
    m = mounter(opts=OPTS)
    assert os.listdir(m.p("some/deep/directory")) == ["file"]
    proxy.config(fail_next=[dict(
        op="ListObjectsV2", count=50, status=200, headers=XML,
        body=listing(bucket, "some/deep/directory/", ["x"], delimiter="/"))])
    with pytest.raises(OSError) as e:
        os.listdir(m.p("some/deep/directory"))
    assert e.value.errno == errno.EIO, e.value
    log = m.stderr_text()
    assert ('the server answered a listing of "some/deep/directory/" with '
            'key "x"') in log, log
    assert "AddressSanitizer" not in log
    proxy.config(fail_next=[])
    assert os.listdir(m.p("some/deep/directory")) == ["file"]
    assert m.proc.poll() is None


def test_readdir_answered_with_a_common_prefix_outside(proxy, s3, bucket,
                                                      mounter):
    s3.put_object(Bucket=bucket, Key="d/a", Body=b"a")
    m = mounter(opts=OPTS)
    assert os.listdir(m.p("d")) == ["a"]
    proxy.config(fail_next=[dict(
        op="ListObjectsV2", count=50, status=200, headers=XML,
        body=listing(bucket, "d/", ["d/a"], prefixes=["elsewhere/"],
                     delimiter="/"))])
    with pytest.raises(OSError) as e:
        os.listdir(m.p("d"))
    assert e.value.errno == errno.EIO, e.value
    assert 'with key "elsewhere/"' in m.stderr_text()


def test_rename_dir_with_a_server_that_ignores_the_prefix(proxy, s3, bucket,
                                                          mounter):
    before = {"photos/a.jpg": b"picture a", "photos/b.jpg": b"picture b",
              "important/ledger.csv": b"date,amount\n2026-12-01,100\n"}
    for k, v in before.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    m = mounter(opts=OPTS)
    assert sorted(os.listdir(m.p("photos"))) == ["a.jpg", "b.jpg"]
    proxy.reset()
    # Every listing of photos/ (with or without delimiter) is answered with
    # the whole bucket, as by a server that ignores `prefix`, with the true
    # ETags and sizes: copies guarded by If-Match would succeed.
    whole = [(k, s3.head_object(Bucket=bucket, Key=k)["ETag"], len(before[k]))
             for k in sorted(before)]
    proxy.config(fail_next=[dict(
        op="ListObjectsV2", path_regex="prefix=photos", count=50, status=200,
        headers=XML, body=listing(bucket, "photos/", whole))])
    try:
        os.rename(m.p("photos"), m.p("archive"))
        failure = None
    except OSError as e:
        failure = e
    assert bucket_state(s3, bucket) == before  # nothing copied or deleted
    assert failure is not None and failure.errno == errno.EIO, failure
    by_op = ops(proxy)
    for op in ("CopyObject", "DeleteObject", "DeleteObjects", "PutObject",
               "UploadPartCopy"):
        assert op not in by_op, by_op
    assert by_op.get("ListObjectsV2", 0) >= 1, by_op
    assert ('the server answered a listing of "photos/" with key '
            '"important/ledger.csv"') in m.stderr_text()
    proxy.config(fail_next=[])
    assert sorted(os.listdir(m.p("photos"))) == ["a.jpg", "b.jpg"]


def test_stale_sweep_never_aborts_an_upload_outside_the_prefix(proxy, s3,
                                                                bucket,
                                                                mounter):
    other = s3.create_multipart_upload(Bucket=bucket,
                                       Key="other/x")["UploadId"]
    mine = s3.create_multipart_upload(Bucket=bucket,
                                      Key="p/stale")["UploadId"]
    long_ago = "2020-01-01T00:00:00.000Z"
    proxy.config(fail_next=[dict(
        op="ListMultipartUploads", count=1, status=200, headers=XML,
        body=uploads_page(bucket, [("other/x", other, long_ago),
                                   ("p/stale", mine, long_ago)]))])
    m = mounter(prefix="p", opts=OPTS + ["abort_stale_uploads=1h"])
    assert wait_until(lambda: "answered a listing" in m.stderr_text()
                      or "AbortMultipartUpload" in ops(proxy), 20.0)
    time.sleep(0.5)  # whatever the sweep would do next, it has done
    assert "AbortMultipartUpload" not in ops(proxy), ops(proxy)
    assert ('the server answered a listing of "p/" with key "other/x"'
            in m.stderr_text())
    # the whole page was refused: nothing on it was aborted
    assert open_uploads(s3, bucket) == sorted([("other/x", other),
                                               ("p/stale", mine)])
    assert m.proc.poll() is None


# ---- item 8: uploads of unknown age ----------------------------------------

def test_stale_sweep_leaves_uploads_of_unknown_age(proxy, s3, bucket,
                                                   mounter):
    keys = ["no-date", "bad-date", "fresh-offset", "fresh-compact", "old"]
    ids = {k: s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"]
           for k in keys}
    now = datetime.datetime.now(datetime.timezone.utc)
    listed = [
        ("no-date", ids["no-date"], None),
        ("bad-date", ids["bad-date"], "last Tuesday"),
        # a minute old, in zones east and west: not stale
        ("fresh-offset", ids["fresh-offset"],
         iso(now - datetime.timedelta(minutes=1), 120, frac=".250")),
        ("fresh-compact", ids["fresh-compact"],
         iso(now - datetime.timedelta(minutes=1), -330, colon=False)),
        # two days old, written with an offset: stale, aborted
        ("old", ids["old"], iso(now - datetime.timedelta(days=2), 120)),
    ]
    proxy.config(fail_next=[dict(
        op="ListMultipartUploads", count=1, status=200, headers=XML,
        body=uploads_page(bucket, listed))])
    m = mounter(opts=OPTS + ["abort_stale_uploads=1h"])
    assert wait_until(lambda: "multipart upload(s)" in m.stderr_text()
                      and ops(proxy).get("ListMultipartUploads"), 20.0)
    time.sleep(0.5)
    aborts = [r["key"] for r in proxy.stats()["recent"]
              if r.get("op") == "AbortMultipartUpload"]
    assert aborts == ["old"], aborts
    assert open_uploads(s3, bucket) == sorted(
        (k, ids[k]) for k in keys if k != "old")
    log = m.stderr_text()
    assert "aborted 1 multipart upload(s)" in log, log
    assert "left 2 multipart upload(s) alone" in log, log
