"""helpers.py: what the integration tests look at outside pailfs.

The rule of these tests is to check the bucket from outside: with the `s3`
fixture (boto3 straight to s3rver, past the proxy and its faults), never
through the mount under test, and to count or script what crossed the wire
at the proxy. The small helpers for both live here, with the seeded test
data, so that every test file says `body(s3, bucket, key)` the same way.
Helpers that act on a mount (its files, its process, the pailfs command)
are in mount.py; the runner of tests/s3drive is drive.py.
"""

import hashlib
import random
import sys
from pathlib import Path


# --------------------------------------------------------------------------
# The bucket, from outside (boto3 straight to s3rver)
# --------------------------------------------------------------------------

def body(s3, bucket, key):
    """The bytes stored under key (GetObject)."""
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3, bucket, prefix=""):
    """Every key under prefix, sorted (ListObjectsV2, all pages)."""
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                             Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


def uploads(s3, bucket):
    """The multipart uploads still open in the bucket (first page, up to
    1,000: ListMultipartUploads' Uploads entries)."""
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def delete_bucket(s3, bucket):
    """Empty the bucket (every object, every open multipart upload) and
    delete it; raises what boto3 raises (teardown wraps it)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    for u in uploads(s3, bucket):
        s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"],
                                  UploadId=u["UploadId"])
    s3.delete_bucket(Bucket=bucket)


def put(s3, bucket, key, body, **kw):
    """PutObject of body under key; kw go to put_object (Metadata=...)."""
    s3.put_object(Bucket=bucket, Key=key, Body=body, **kw)


# --------------------------------------------------------------------------
# The proxy: counters and scripted answers
# --------------------------------------------------------------------------

def ops(proxy):
    """Requests the proxy counted since its last reset, by S3 operation:
    {"GetObject": 3, ...} (a copy, safe to keep across later requests)."""
    return dict(proxy.stats()["by_op"])


def ops_of_mount(proxy):
    """ops(), less the mount's own sweep of stale multipart uploads
    (ListMultipartUploads), which runs once after a mount starts and may
    land after a test's reset: for tests that count what one operation
    sends."""
    by_op = ops(proxy)
    by_op.pop("ListMultipartUploads", None)
    return by_op


def get_bytes(proxy):
    """Response body bytes the proxy sent to clients since its last reset
    (all operations; GETs dominate it in the tests that use it)."""
    return proxy.stats()["bytes_out"]


def spoil(proxy, op, count=50, **entry):
    """Script the proxy to answer the next `count` requests of `op` with
    `entry` (a fail_next entry: status, code, body, headers, path_regex,
    ...) instead of forwarding them; replaces any script already set."""
    proxy.config(fail_next=[dict(entry, op=op, count=count)])


# --------------------------------------------------------------------------
# Scripted answers: S3 XML documents for a fail_next entry's "body"
# --------------------------------------------------------------------------

XML = {"Content-Type": "application/xml"}  # the entry's "headers"
XMLNS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def listing_page(bucket, prefix, contents, prefixes=(), delimiter="",
                 encoding_type=None):
    """A ListObjectsV2 page (one page: IsTruncated false) holding contents,
    (key, ETag, size) each, and the common prefixes, whatever was asked
    for. Every string goes into the XML as given, entities and all, so a
    test can send text no honest server would."""
    body = ['<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<ListBucketResult {XMLNS}><Name>{bucket}</Name>',
            f'<Prefix>{prefix}</Prefix><KeyCount>{len(contents)}</KeyCount>',
            '<MaxKeys>1000</MaxKeys>',
            f'<Delimiter>{delimiter}</Delimiter>' if delimiter else '',
            f'<EncodingType>{encoding_type}</EncodingType>'
            if encoding_type else '',
            '<IsTruncated>false</IsTruncated>']
    for key, etag, size in contents:
        body.append(f'<Contents><Key>{key}</Key><LastModified>'
                    '2026-01-01T00:00:00.000Z</LastModified>'
                    f'<ETag>{etag}</ETag>'
                    f'<Size>{size}</Size><StorageClass>STANDARD</StorageClass>'
                    '</Contents>')
    for p in prefixes:
        body.append(f'<CommonPrefixes><Prefix>{p}</Prefix></CommonPrefixes>')
    body.append('</ListBucketResult>')
    return "".join(body)


def uploads_page(bucket, uploads):
    """A ListMultipartUploads page; uploads: (key, upload id, Initiated
    text or None for no element)."""
    body = ['<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<ListMultipartUploadsResult {XMLNS}><Bucket>{bucket}</Bucket>',
            '<IsTruncated>false</IsTruncated>']
    for key, uid, initiated in uploads:
        body.append(f'<Upload><Key>{key}</Key><UploadId>{uid}</UploadId>')
        if initiated is not None:
            body.append(f'<Initiated>{initiated}</Initiated>')
        body.append('<StorageClass>STANDARD</StorageClass></Upload>')
    body.append('</ListMultipartUploadsResult>')
    return "".join(body)


# --------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------

def sha256(data):
    """Hex SHA-256 of data: compare big bodies without printing them."""
    return hashlib.sha256(data).hexdigest()


def rand_bytes(seed, n):
    """n pseudo-random bytes, the same for the same seed."""
    return random.Random(seed).randbytes(n)


def text(n, seed=1):
    """JSON-lines-like bytes that compress about 5:1."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"zeta", b"eta"]
    out, size = [], 0
    i = 0
    while size < n:
        line = b'{"id":%d,"name":"%s","v":%d,"tags":["%s","%s"]}\n' % (
            i, rng.choice(words), rng.randrange(10 ** 6), rng.choice(words),
            rng.choice(words))
        out.append(line)
        size += len(line)
        i += 1
    return b"".join(out)[:n]


# --------------------------------------------------------------------------
# Checksums as S3 computes them (pure Python, tests/proxy/s3checksums.py)
# --------------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "proxy"))
from s3checksums import crc32c, crc32c_b64, crc64nvme, crc64nvme_b64  # noqa: E402,F401


def sent_requests(proxy, *ops_wanted):
    """The recent requests of these operations the proxy saw, oldest first,
    each with .get(header) through a lower-cased dict "h"."""
    out = []
    for r in proxy.stats()["recent"]:
        if not ops_wanted or r["op"] in ops_wanted:
            r["h"] = {k.lower(): v for k, v in r["headers"]}
            out.append(r)
    return out
