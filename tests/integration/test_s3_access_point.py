"""Mounting through an S3 access point (issue 20 item 7).

On AWS an access point ARN arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME is
reached at https://NAME-ACCOUNT.s3-accesspoint.REGION.amazonaws.com,
virtual-hosted style (no bucket in the path), signed for REGION; a copy
names its source by the object's ARN (ARN/object/KEY).  The parser and
the AWS host are unit-tested (tests/unit/test_arn.c).

Here the rig plays the access point, honestly and visibly: with an
explicit endpoint= pailfs sends an access point's requests to
NAME-ACCOUNT.ENDPOINT-HOST, as the AWS SDKs do with a custom endpoint, so
with endpoint=http://localhost:PORT the judging proxy receives Host
NAME-ACCOUNT.localhost:PORT (curl resolves *.localhost to the loopback
address), which it takes as the virtual-hosted bucket NAME-ACCOUNT; the
test makes that bucket on s3rver.  The proxy also turns a copy source in
the access point's ARN form into /NAME-ACCOUNT/KEY, as the access point
would.  What is checked is what crossed the wire: the Host header, paths
with no bucket in them, the signing scope's region (the proxy accepts only
that region) and the ARN copy sources."""

import os
import uuid

import pytest

import rig
from drive import clean_env, drive, kv
from helpers import body, put
from mount import Mount, run_pailfs

ACCOUNT = "123456789012"
AP_REGION = "eu-west-3"


@pytest.fixture
def ap(s3, s3server, tmp_path):
    """(arn, bucket behind it on s3rver, proxy accepting only AP_REGION)."""
    name = "ap" + uuid.uuid4().hex[:10]
    bucket = f"{name}-{ACCOUNT}"
    s3.create_bucket(Bucket=bucket)
    with rig.Proxy(s3server.url, seed=1, region=AP_REGION,
                   log_path=tmp_path / "s3proxy-ap.log") as p:
        yield f"arn:aws:s3:{AP_REGION}:{ACCOUNT}:accesspoint/{name}", bucket, p
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=o["Key"])
    s3.delete_bucket(Bucket=bucket)


def local_url(proxy):
    return f"http://localhost:{proxy.port}"


def header(rec, name):
    return next((v for k, v in rec["headers"] if k.lower() == name), None)


def test_requests_go_to_the_access_point_host(ap, s3, tmp_path):
    arn, bucket, proxy = ap
    f = tmp_path / "in"
    f.write_bytes(b"through the access point")
    # AWS_REGION names another region: the ARN's wins
    env = clean_env(AWS_REGION="us-east-1")
    r = drive(local_url(proxy), arn, "whoami", env=env)
    assert r.returncode == 0, r.stderr
    assert kv(r.stdout)["region"] == AP_REGION
    for args in (["head-bucket"], ["put", "dir/k 1", str(f)], ["get", "dir/k 1", "-"],
                 ["copy", "dir/k 1", "dir/k2"], ["list", "--prefix", "dir/"]):
        r = drive(local_url(proxy), arn, *args, env=env)
        assert r.returncode == 0, (args, r.stderr)
    assert body(s3, bucket, "dir/k2") == b"through the access point"
    stats = proxy.stats()
    assert stats["sig_rejections"] == {}
    recent = stats["recent"]
    assert [r["op"] for r in recent] == ["HeadBucket", "PutObject", "GetObject", "CopyObject",
                                         "ListObjectsV2"]
    for rec in recent:
        assert header(rec, "host") == f"{bucket}.localhost:{proxy.port}"
        assert f"/{AP_REGION}/s3/aws4_request" in header(rec, "authorization")
        assert rec["bucket"] == bucket
    # the paths sent hold the key only (the proxy records them as
    # /BUCKET/KEY after taking the bucket from the host)
    assert recent[1]["path"] == f"/{bucket}/dir/k%201"
    # a copy names its source by the object's ARN, ':' encoded
    assert recent[3]["copy_source"] == \
        arn.replace(":", "%3A") + "/object/dir/k%201"


def test_mount_through_an_access_point(ap, s3, tmp_path):
    arn, bucket, proxy = ap
    put(s3, bucket, "a.txt", b"hello")
    mp = tmp_path / "mnt"
    with Mount(local_url(proxy), arn, mp, path_style=False, log_dir=tmp_path) as m:
        assert open(m.p("a.txt"), "rb").read() == b"hello"
        with open(m.p("b.txt"), "wb") as fh:
            fh.write(b"new")
        os.rename(m.p("b.txt"), m.p("c.txt"))  # a CopyObject with an ARN source
        assert sorted(os.listdir(m.path)) == ["a.txt", "c.txt"]
    assert body(s3, bucket, "c.txt") == b"new"
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == \
        ["a.txt", "c.txt"]
    stats = proxy.stats()
    assert stats["sig_rejections"] == {}
    assert {header(r, "host") for r in stats["recent"]} == {f"{bucket}.localhost:{proxy.port}"}
    assert any((r["copy_source"] or "").startswith(arn.replace(":", "%3A") + "/object/")
               for r in stats["recent"])


def test_mount_with_prefix_word(ap, s3, tmp_path):
    """ARN:/PREFIX mounts the prefix: the ARN's own colons are not the
    separator."""
    arn, bucket, proxy = ap
    put(s3, bucket, "sub/x", b"x")
    mp = tmp_path / "mnt"
    with Mount(local_url(proxy), arn, mp, prefix="sub", path_style=False,
               log_dir=tmp_path) as m:
        assert os.listdir(m.path) == ["x"]


@pytest.mark.parametrize("word,opts,says", [
    ("arn:aws:s3:eu-west-3:12345:accesspoint/ap1", [], "the account is not 12 digits"),
    ("arn:aws:s3:eu-west-3.evil:123456789012:accesspoint/ap1", [], "region"),
    ("arn:aws:s3:eu-west-3:123456789012:accesspoint/AP", [], "access point name"),
    ("arn:aws:s3:eu-west-3:123456789012:accesspoint/ap1", ["region=us-east-1"],
     "region=us-east-1, but access point ap1 is in region eu-west-3"),
    ("arn:aws:s3:eu-west-3:123456789012:accesspoint/ap1", ["path_style"],
     "cannot be reached with path-style requests"),
])
def test_bad_access_point_refused_at_mount(proxy, tmp_path, word, opts, says):
    mp = tmp_path / "mnt"
    mp.mkdir()
    o = ",".join([f"endpoint={local_url(proxy)}", f"cache_dir={tmp_path}/c", *opts])
    rc, _, err, _ = run_pailfs(["-o", o, word, str(mp)], env=clean_env(), tmp_path=tmp_path)
    assert rc == 1
    assert err.startswith("pailfs: ") and says in err, err
    assert proxy.stats()["requests_total"] == 0


def test_ip_endpoint_refused(proxy, tmp_path):
    r = drive(proxy.url, "arn:aws:s3:us-east-1:123456789012:accesspoint/ap1", "whoami")
    assert r.returncode == 1
    assert "is an IP address" in r.stderr and "ap1-123456789012.HOST" in r.stderr
    assert proxy.stats()["requests_total"] == 0


def test_access_point_alias_is_a_bucket_name(proxy, s3, tmp_path):
    """An alias (NAME-xxxx...-s3alias) is used like a bucket name."""
    alias = "ap1-" + uuid.uuid4().hex[:20] + "-s3alias"
    s3.create_bucket(Bucket=alias)
    try:
        f = tmp_path / "in"
        f.write_bytes(b"alias")
        r = drive(proxy.url, alias, "put", "k", str(f))
        assert r.returncode == 0, r.stderr
        assert body(s3, alias, "k") == b"alias"
    finally:
        s3.delete_object(Bucket=alias, Key="k")
        s3.delete_bucket(Bucket=alias)


def test_multipart_copy_through_the_access_point(ap, s3, tmp_path):
    """UploadPartCopy names its source by the object's ARN too, and the
    multipart requests go to the access point host."""
    arn, bucket, proxy = ap
    data = os.urandom(6 << 20)
    put(s3, bucket, "src", data)
    r = drive(local_url(proxy), arn, "mpu-copy", "src", "dst", str(5 << 20))
    assert r.returncode == 0, r.stderr
    assert body(s3, bucket, "dst") == data
    recent = proxy.stats()["recent"]
    copies = [r for r in recent if r["op"] == "UploadPartCopy"]
    assert len(copies) == 2
    assert all(r["copy_source"] == arn.replace(":", "%3A") + "/object/src" for r in copies)
    assert {header(r, "host") for r in recent} == {f"{bucket}.localhost:{proxy.port}"}
    assert proxy.stats()["sig_rejections"] == {}
