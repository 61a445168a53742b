"""docs/IAM.md's policies against what a real mount asks for.

A read-write mount of BUCKET:/team/a (gzip views, shared indexes, a stale
upload to sweep, small parts so writes go multipart) does every kind of
thing a user does; then a read-only mount of the same prefix reads. Every
request the proxy saw is turned into the IAM authorizations S3 checks for
it (action, resource ARN, the s3:prefix condition key) and evaluated
against the JSON policies of docs/IAM.md with the bucket and prefix
substituted. The evaluator knows only what those policies use: Allow
statements, Action and Resource with * and ?, StringLike and Null
conditions. It is not AWS's engine and no request here reaches AWS.

DeleteObjects carries its keys in the body, which the proxy does not
record; it is checked as s3:DeleteObject on a key under the prefix."""

import gzip
import hashlib
import json
import os
import random
import re
import time
from urllib.parse import parse_qsl, unquote

import pytest

from mount import mounter  # noqa: F401
from test_docs import IAM, iam_policies

PREFIX = "team/a"


def glob_re(pattern):
    return re.compile("^" + "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c)
        for c in pattern) + "$", re.S)


def as_list(v):
    return [v] if isinstance(v, str) else list(v)


def condition_holds(cond, ctx):
    for op, tests in cond.items():
        for key, want in tests.items():
            have = ctx.get(key)
            if op == "StringLike":
                if have is None or not any(glob_re(w).match(have)
                                           for w in as_list(want)):
                    return False
            elif op == "Null":
                if (have is None) != (str(want).lower() == "true"):
                    return False
            else:
                raise AssertionError(f"condition {op} not handled")
    return True


def allowed(policy, action, resource, ctx):
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and "NotAction" not in st
        if not any(glob_re(a.lower()).match(action.lower())
                   for a in as_list(st["Action"])):
            continue
        if not any(glob_re(r).match(resource)
                   for r in as_list(st["Resource"])):
            continue
        if condition_holds(st.get("Condition", {}), ctx):
            return True
    return False


def authorizations(rec):
    """[(action, resource ARN, context)] S3 checks for one request."""
    bucket, key, op = rec["bucket"], rec["key"], rec["op"]
    b_arn, o_arn = f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/{key}"
    query = dict(parse_qsl(rec["query"] or "", keep_blank_values=True))
    if op == "HeadBucket":
        return [("s3:ListBucket", b_arn, {})]
    if op == "ListObjectsV2":
        ctx = {"s3:prefix": query["prefix"]} if "prefix" in query else {}
        return [("s3:ListBucket", b_arn, ctx)]
    if op == "ListMultipartUploads":
        return [("s3:ListBucketMultipartUploads", b_arn, {})]
    if op in ("HeadObject", "GetObject"):
        return [("s3:GetObject", o_arn, {})]
    if op in ("PutObject", "CreateMultipartUpload", "UploadPart",
              "CompleteMultipartUpload"):
        return [("s3:PutObject", o_arn, {})]
    if op in ("CopyObject", "UploadPartCopy"):
        src = unquote(rec["copy_source"].split("?versionId=")[0]).lstrip("/")
        return [("s3:PutObject", o_arn, {}),
                ("s3:GetObject", f"arn:aws:s3:::{src}", {})]
    if op == "DeleteObject":
        return [("s3:DeleteObject", o_arn, {})]
    if op == "DeleteObjects":
        return [("s3:DeleteObject", f"{b_arn}/{PREFIX}/any", {})]
    if op == "AbortMultipartUpload":
        return [("s3:AbortMultipartUpload", o_arn, {})]
    raise AssertionError(f"request not classified: {rec}")


class Recorder:
    """Every request the proxy saw, gathered after each step (the proxy
    keeps the last 200)."""

    def __init__(self, proxy):
        self.proxy, self.seen = proxy, {}

    def grab(self):
        st = self.proxy.stats()
        for r in st["recent"]:
            self.seen[(r["time"], r["method"], r["path"], r["query"])] = r
        assert len(self.seen) == st["requests_total"], \
            "requests were lost between two grabs"

    def since(self, n):
        return sorted(self.seen.values(), key=lambda r: r["time"])[n:]


def policies_for(bucket):
    out = {}
    for title, p in iam_policies().items():
        text = json.dumps(p).replace("my-bucket", bucket)
        out[title] = json.loads(text)
    return out


def pick(policies, word, but=None):
    [p] = [p for t, p in policies.items()
           if word in t.lower() and not (but and but in t.lower())]
    return p


def jsonl(n, seed):
    rng = random.Random(seed)
    return b"".join(b'{"n": %d, "v": "%032x"}\n' % (i, rng.getrandbits(128))
                    for i in range(n))


def test_policies_allow_what_mounts_ask_and_no_more(proxy, s3, bucket,
                                                     mounter, tmp_path):
    assert IAM.exists()
    data = jsonl(60000, 7)  # 3.5 MB, about 2 MB compressed
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/seed.txt", Body=b"seed\n")
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/logs/ev.jsonl.gz",
                  Body=gzip.compress(data))
    s3.put_object(Bucket=bucket, Key="other/secret.txt", Body=b"no")
    s3.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/left.bin")
    time.sleep(1.2)  # older than abort_stale_uploads=1s below
    rec = Recorder(proxy)

    m = mounter(prefix=PREFIX, opts={
        "gunzip": "view", "gz_index": "shared", "part_size": "5M",
        "abort_stale_uploads": "1s", "cache_dir": tmp_path / "c1"})
    time.sleep(1.0)  # the stale-upload sweep runs beside the mount
    rec.grab()
    assert sorted(os.listdir(m.path)) == ["logs", "seed.txt"]
    assert open(m.p("seed.txt"), "rb").read() == b"seed\n"
    rec.grab()
    big = os.urandom(11 << 20)
    with open(m.p("big.bin"), "wb") as f:  # multipart: 5M parts
        f.write(big)
    rec.grab()
    with open(m.p("big.bin"), "r+b") as f:  # an edit in place
        f.seek(6 << 20)
        f.write(b"EDIT")
    rec.grab()
    os.chmod(m.p("big.bin"), 0o600)
    os.setxattr(m.p("seed.txt"), "user.k", b"v")
    os.rename(m.p("big.bin"), m.p("moved.bin"))
    os.mkdir(m.p("d"))
    open(m.p("d/f"), "wb").write(b"f")
    os.rename(m.p("d"), m.p("e"))
    rec.grab()
    os.unlink(m.p("e/f"))
    os.rmdir(m.p("e"))
    os.symlink("seed.txt", m.p("ln"))
    assert os.readlink(m.p("ln")) == "seed.txt"
    rec.grab()
    assert hashlib.sha256(open(m.p("logs/ev.jsonl"), "rb").read()).digest() \
        == hashlib.sha256(data).digest()  # the view; its index is shared
    m.unmount()
    rec.grab()
    rw_requests = rec.since(0)
    n_rw = len(rw_requests)
    index_keys = [r["key"] for r in rw_requests if r["op"] == "PutObject"
                  and r["key"].startswith(".pailfs/gzindex/")]
    assert index_keys, "no shared gzip index was stored"

    ro = mounter(prefix=PREFIX, opts={
        "ro": True, "gunzip": "view", "gz_index": "shared",
        "cache_dir": tmp_path / "c2"})
    with open(ro.p("logs/ev.jsonl"), "rb") as f:
        f.seek(3 << 20)
        assert f.read(100) == data[3 << 20:(3 << 20) + 100]
    assert open(ro.p("moved.bin"), "rb").read(4) == big[:4]
    ro.unmount()
    rec.grab()
    ro_requests = rec.since(n_rw)
    assert any(r["op"] == "GetObject" and r["key"] in index_keys
               for r in ro_requests), "the shared index was not fetched"

    ops = {r["op"] for r in rw_requests}
    for op in ("HeadBucket", "ListObjectsV2", "HeadObject", "GetObject",
               "PutObject", "CopyObject", "CreateMultipartUpload",
               "UploadPart", "CompleteMultipartUpload", "UploadPartCopy",
               "ListMultipartUploads", "AbortMultipartUpload",
               "DeleteObject"):
        assert op in ops, f"the workload sent no {op}: {sorted(ops)}"
    # The mount stays under its prefix (and the shared index directory).
    for r in rw_requests + ro_requests:
        if r["key"]:
            assert r["key"].startswith((f"{PREFIX}/", ".pailfs/gzindex/")), r

    pol = policies_for(bucket)
    prefix_pol, rw_pol = pick(pol, "prefix"), pick(pol, "read-write", but="prefix")
    ro_pol = pick(pol, "read-only")

    def refused(policy, requests):
        return [(r["op"], r["key"], a) for r in requests
                for a in authorizations(r) if not allowed(policy, *a)]

    assert refused(prefix_pol, rw_requests + ro_requests) == []
    assert refused(rw_pol, rw_requests + ro_requests) == []
    assert refused(ro_pol, ro_requests) == []
    # The read-only policy refuses exactly the writes of the rw mount.
    denied_ops = {op for op, _, _ in refused(ro_pol, rw_requests)}
    assert denied_ops == {"PutObject", "CopyObject", "CreateMultipartUpload",
                          "UploadPart", "CompleteMultipartUpload",
                          "UploadPartCopy", "ListMultipartUploads",
                          "AbortMultipartUpload", "DeleteObject"} | (
                              {"DeleteObjects"} & ops), denied_ops
    # And the prefix policy refuses what lies outside the prefix.
    outside = {"bucket": bucket, "key": "other/secret.txt", "op": "GetObject",
               "query": "", "copy_source": None}
    assert not allowed(prefix_pol, *authorizations(outside)[0])
    assert not allowed(prefix_pol, "s3:ListBucket", f"arn:aws:s3:::{bucket}",
                       {"s3:prefix": "other/"})
