"""helpers.py: what the integration tests look at outside pailfs.

The rule of these tests is to check the bucket from outside: with the `s3`
fixture (boto3 straight to s3rver, past the proxy and its faults), never
through the mount under test, and to count or script what crossed the wire
at the proxy. The small helpers for both live here, with the seeded test
data, so that every test file says `body(s3, bucket, key)` the same way.
Helpers that act on a mount (its files, its process, the pailfs command)
are in mount.py; the runner of tests/s3drive is drive.py.
"""

import random


# --------------------------------------------------------------------------
# The bucket, from outside (boto3 straight to s3rver)
# --------------------------------------------------------------------------

def body(s3, bucket, key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3, bucket, prefix=""):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                             Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


def uploads(s3, bucket):
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def put(s3, bucket, key, body, **kw):
    s3.put_object(Bucket=bucket, Key=key, Body=body, **kw)


# --------------------------------------------------------------------------
# The proxy: counters and scripted answers
# --------------------------------------------------------------------------

def get_bytes(proxy):
    return proxy.stats()["bytes_out"]


def spoil(proxy, op, count=50, **entry):
    proxy.config(fail_next=[dict(entry, op=op, count=count)])


# --------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------

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
