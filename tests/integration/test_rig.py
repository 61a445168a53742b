"""test_rig.py: proves the test rig itself (s3rver, the judging proxy, rig.py).

The pailfs integration tests trust three things, checked here with boto3 and
raw HTTP as clients (never pailfs):
* requests that AWS S3 would accept pass through the proxy to s3rver, and
  what lands there is what was sent (checked straight on s3rver);
* requests AWS S3 would refuse are refused by the proxy with S3's status,
  error code and XML, including AWS's published signature examples;
* faults come out as configured, replayably with a seed, and the counters
  tell the truth.
A last group checks that s3rver, patched by tests/s3server/aws-fixes.js,
answers like AWS S3 where it used to differ (and that the refuse_abort mode
keeps its old refusals).
"""

import base64
import datetime
import hashlib
import http.client
import io
import os
import random
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, urlsplit

import botocore.exceptions
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import rig
from helpers import rand_bytes

sys.path.insert(0, str(Path(rig.PROXY_SCRIPT).parent))
import s3proxy  # noqa: E402

MiB = 1024 * 1024


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def sign(method, url, body=b"", headers=None, access_key=rig.ACCESS_KEY,
         secret=rig.SECRET_KEY, region=rig.REGION):
    """Headers of a SigV4-signed request, signed by botocore as boto3 does."""
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    S3SigV4Auth(Credentials(access_key, secret), "s3", region).add_auth(req)
    return dict(req.headers.items())


def raw(url, method, path, headers=None, body=b""):
    """One HTTP request; returns (status, headers dict lowercased, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        return (resp.status, {k.lower(): v for k, v in resp.getheaders()},
                resp.read())
    finally:
        conn.close()


def signed_raw(url, method, path, body=b"", headers=None, **kw):
    return raw(url, method, path, sign(method, url + path, body, headers, **kw),
               body)


def error_fields(body):
    root = ET.fromstring(body)
    assert root.tag == "Error"
    return {child.tag: child.text for child in root}


def client_error(exc):
    """(HTTP status, S3 error code) of a ClientError or pytest ExceptionInfo."""
    err = getattr(exc, "value", exc).response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]


# --------------------------------------------------------------------------
# the signature judge, offline: AWS's published S3 SigV4 examples
# --------------------------------------------------------------------------

AWS_AK = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRETS = {AWS_AK: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
EMPTY_SHA = hashlib.sha256(b"").hexdigest()
HOST = ("Host", "examplebucket.s3.amazonaws.com")
AMZ_DATE = ("x-amz-date", "20130524T000000Z")


def aws_auth(signed_headers, signature):
    return ("Authorization",
            f"AWS4-HMAC-SHA256 Credential={AWS_AK}/20130524/us-east-1/s3/"
            f"aws4_request,SignedHeaders={signed_headers},"
            f"Signature={signature}")


AWS_EXAMPLES = {
    "get-object-range": ("GET", "/test.txt", [
        HOST, ("Range", "bytes=0-9"), ("x-amz-content-sha256", EMPTY_SHA),
        AMZ_DATE,
        aws_auth("host;range;x-amz-content-sha256;x-amz-date",
                 "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
    ]),
    "put-object": ("PUT", "/test%24file.text", [
        HOST, ("Date", "Fri, 24 May 2013 00:00:00 GMT"), AMZ_DATE,
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", hashlib.sha256(
            b"Welcome to Amazon S3.").hexdigest()),
        aws_auth("date;host;x-amz-content-sha256;x-amz-date;"
                 "x-amz-storage-class",
                 "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
    ]),
    "get-bucket-lifecycle": ("GET", "/?lifecycle", [
        HOST, AMZ_DATE, ("x-amz-content-sha256", EMPTY_SHA),
        aws_auth("host;x-amz-content-sha256;x-amz-date",
                 "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
    ]),
    "list-objects": ("GET", "/?max-keys=2&prefix=J", [
        HOST, AMZ_DATE, ("x-amz-content-sha256", EMPTY_SHA),
        aws_auth("host;x-amz-content-sha256;x-amz-date",
                 "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
    ]),
    "presigned-get": (
        "GET",
        "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
        "AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
        "&X-Amz-SignedHeaders=host&X-Amz-Signature="
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        [HOST]),
}


@pytest.mark.parametrize("name", sorted(AWS_EXAMPLES))
def test_published_aws_examples_verify(name):
    method, target, headers = AWS_EXAMPLES[name]
    result = s3proxy.verify_sigv4(method, target, headers, AWS_SECRETS,
                                  region="us-east-1")
    assert result.access_key == AWS_AK
    assert result.expected_signature in dict(headers).get(
        "Authorization", target)


def test_published_example_canonical_request_and_tampering():
    method, target, headers = AWS_EXAMPLES["get-object-range"]
    result = s3proxy.verify_sigv4(method, target, headers, AWS_SECRETS)
    # The canonical request AWS documents for this example, byte for byte.
    assert result.canonical_request == "\n".join([
        "GET", "/test.txt", "",
        "host:examplebucket.s3.amazonaws.com", "range:bytes=0-9",
        f"x-amz-content-sha256:{EMPTY_SHA}", "x-amz-date:20130524T000000Z",
        "", "host;range;x-amz-content-sha256;x-amz-date", EMPTY_SHA])
    assert result.string_to_sign.splitlines()[-1] == (
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972")

    tampered = [("Range", "bytes=0-8") if n == "Range" else (n, v)
                for n, v in headers]
    with pytest.raises(s3proxy.SigError) as exc:
        s3proxy.verify_sigv4(method, target, tampered, AWS_SECRETS)
    assert (exc.value.status, exc.value.code) == (403, "SignatureDoesNotMatch")
    assert "range:bytes=0-8" in exc.value.extra["CanonicalRequest"]

    with pytest.raises(s3proxy.SigError) as exc:
        s3proxy.verify_sigv4(method, target, headers, AWS_SECRETS,
                             region="eu-west-1")
    assert exc.value.code == "AuthorizationHeaderMalformed"


def test_canonical_uri_and_query_follow_s3():
    # Decoded once, re-encoded per SigV4, no normalisation of a//b or ./
    assert s3proxy.s3_canonical_uri("/b/a//b/./c") == "/b/a//b/./c"
    assert s3proxy.s3_canonical_uri("/b/sp%20ace+%2B~%C3%BC") == \
        "/b/sp%20ace%2B%2B~%C3%BC"
    assert s3proxy.s3_canonical_uri("/b/a%252F") == "/b/a%252F"
    pairs = s3proxy.parse_query("prefix=a%20b%2Bc&list-type=2&uploads")
    assert s3proxy.s3_canonical_query(pairs) == \
        "list-type=2&prefix=a%20b%2Bc&uploads="


# --------------------------------------------------------------------------
# boto3 through the proxy
# --------------------------------------------------------------------------

def test_put_get_list_head_through_proxy(proxy, s3, bucket):
    c = rig.boto3_client(proxy.url)
    objects = {f"dir/obj{i}": rand_bytes(i, i * 1000) for i in range(5)}
    for key, data in objects.items():
        c.put_object(Bucket=bucket, Key=key, Body=data,
                     Metadata={"mode": "33188"})

    got = c.get_object(Bucket=bucket, Key="dir/obj3")
    assert got["Body"].read() == objects["dir/obj3"]
    part = c.get_object(Bucket=bucket, Key="dir/obj4", Range="bytes=2-5")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == "bytes 2-5/4000"
    assert part["Body"].read() == objects["dir/obj4"][2:6]
    head = c.head_object(Bucket=bucket, Key="dir/obj2")
    assert head["ContentLength"] == 2000
    assert head["Metadata"] == {"mode": "33188"}
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]

    listed, token = [], None
    for _ in range(10):
        kw = {"ContinuationToken": token} if token else {}
        page = c.list_objects_v2(Bucket=bucket, Prefix="dir/", MaxKeys=2,
                                 **kw)
        listed += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert listed == [(k, len(v)) for k, v in sorted(objects.items())]

    # What landed, seen straight on s3rver.
    for key, data in objects.items():
        direct = s3.get_object(Bucket=bucket, Key=key)
        assert direct["Body"].read() == data
        assert direct["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()

    stats = proxy.stats()
    assert stats["by_op"] == {"PutObject": 5, "GetObject": 2, "HeadObject": 1,
                              "ListObjectsV2": 3}
    assert stats["by_status"] == {"200": 10, "206": 1}
    assert stats["requests_total"] == 11
    assert stats["sig_rejections"] == {} and stats["faults"] == {}
    assert stats["bytes_in"] == sum(len(v) for v in objects.values())
    ranged = [r for r in stats["recent"] if r["range"]]
    assert [(r["op"], r["range"], r["status"]) for r in ranged] == \
        [("GetObject", "bytes=2-5", 206)]


def multipart_etag(*parts):
    """AWS's ETag of a multipart object: md5 of the binary part md5s, -N."""
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return '"%s-%d"' % (hashlib.md5(digests).hexdigest(), len(parts))


def test_multipart_copy_and_delete_through_proxy(proxy, s3, bucket):
    c = rig.boto3_client(proxy.url)
    source = rand_bytes(1, 5 * MiB + 300_000)
    c.put_object(Bucket=bucket, Key="src", Body=source)

    part2 = rand_bytes(2, 5 * MiB)
    part3 = rand_bytes(3, 1234)
    upload = c.create_multipart_upload(Bucket=bucket, Key="big/mp",
                                       ContentType="text/csv")["UploadId"]
    e1 = c.upload_part_copy(Bucket=bucket, Key="big/mp", UploadId=upload,
                            PartNumber=1, CopySource=f"{bucket}/src",
                            CopySourceRange=f"bytes=1000-{5 * MiB + 999}",
                            )["CopyPartResult"]["ETag"]
    # A file-like body makes botocore send "Expect: 100-continue".
    e2 = c.upload_part(Bucket=bucket, Key="big/mp", UploadId=upload,
                       PartNumber=2, Body=io.BytesIO(part2))["ETag"]
    e3 = c.upload_part(Bucket=bucket, Key="big/mp", UploadId=upload,
                       PartNumber=3, Body=part3)["ETag"]
    done = c.complete_multipart_upload(
        Bucket=bucket, Key="big/mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1},
                                   {"PartNumber": 2, "ETag": e2},
                                   {"PartNumber": 3, "ETag": e3}]})
    part1 = source[1000:5 * MiB + 1000]
    assert done["ETag"] == multipart_etag(part1, part2, part3)
    direct = s3.get_object(Bucket=bucket, Key="big/mp")
    assert direct["Body"].read() == part1 + part2 + part3
    assert direct["ContentType"] == "text/csv"
    assert direct["ETag"] == done["ETag"]

    c.copy_object(Bucket=bucket, Key="copied", CopySource=f"{bucket}/src",
                  MetadataDirective="REPLACE", Metadata={"mtime": "1"})
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == source
    assert s3.head_object(Bucket=bucket, Key="copied")["Metadata"] == \
        {"mtime": "1"}

    deleted = c.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": "src"}, {"Key": "copied"}]})["Deleted"]
    assert sorted(d["Key"] for d in deleted) == ["copied", "src"]
    c.delete_object(Bucket=bucket, Key="big/mp")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0

    stats = proxy.stats()
    assert stats["by_op"] == {
        "PutObject": 1, "CreateMultipartUpload": 1, "UploadPart": 2,
        "UploadPartCopy": 1, "CompleteMultipartUpload": 1, "CopyObject": 1,
        "DeleteObjects": 1, "DeleteObject": 1}
    assert stats["sig_rejections"] == {}
    copies = [r for r in stats["recent"] if r["op"] == "UploadPartCopy"]
    assert copies[0]["copy_source_range"] == f"bytes=1000-{5 * MiB + 999}"


def test_64mib_object_streams_through_proxy(proxy, s3, bucket):
    data = rand_bytes(64, 64 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    c = rig.boto3_client(proxy.url, read_timeout=120)
    c.put_object(Bucket=bucket, Key="huge", Body=data)
    del data
    body = c.get_object(Bucket=bucket, Key="huge")["Body"]
    h, n = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(4 * MiB), b""):
        h.update(chunk)
        n += len(chunk)
    assert (n, h.hexdigest()) == (64 * MiB, digest)
    assert s3.head_object(Bucket=bucket, Key="huge")["ContentLength"] == \
        64 * MiB
    stats = proxy.stats()
    assert stats["bytes_in"] == 64 * MiB and stats["bytes_out"] == 64 * MiB


TRICKY_KEYS = [
    "with space/file name.txt",
    "plus+sign+",
    "percent%41%2F%",
    "tilde~and-dash_under.dot",
    "unicodé/ключ/鍵 🚀",
    "a//b",
    "dir/",
    "q?mark&amp=eq#hash",
]


def test_tricky_keys_round_trip_with_signatures_accepted(proxy, s3, bucket):
    c = rig.boto3_client(proxy.url)
    for key in TRICKY_KEYS:
        c.put_object(Bucket=bucket, Key=key, Body=key.encode() * 3)
    for key in TRICKY_KEYS:
        assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == \
            key.encode() * 3
        assert c.head_object(Bucket=bucket, Key=key)["ContentLength"] == \
            len(key.encode()) * 3
        # And on s3rver itself, under exactly that key.
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == \
            key.encode() * 3
    # Query values with space, '+' and unicode are signed right too.
    for prefix in ("plus+", "with space/", "unicodé/"):
        page = c.list_objects_v2(Bucket=bucket, Prefix=prefix)
        assert [o["Key"] for o in page["Contents"]] == \
            [k for k in TRICKY_KEYS if k.startswith(prefix)]
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(TRICKY_KEYS, key=lambda k: k.encode())
    stats = proxy.stats()
    assert stats["sig_rejections"] == {}
    assert stats["by_status"] == {"200": len(TRICKY_KEYS) * 3 + 3}


def test_virtual_hosted_style_host(proxy, s3, bucket):
    host = f"{bucket}.localhost:{proxy.port}"
    headers = sign("PUT", f"http://{host}/vh%20key", b"virtual")
    headers["Host"] = host
    status, _, _ = raw(proxy.url, "PUT", "/vh%20key", headers, b"virtual")
    assert status == 200
    assert s3.get_object(Bucket=bucket, Key="vh key")["Body"].read() == \
        b"virtual"
    last = proxy.stats()["recent"][-1]
    assert (last["op"], last["bucket"], last["key"]) == \
        ("PutObject", bucket, "vh key")


def test_presigned_url_accepted_and_tampering_refused(proxy, bucket):
    c = rig.boto3_client(proxy.url)
    c.put_object(Bucket=bucket, Key="shared file", Body=b"presigned!")
    url = c.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "shared file"},
        ExpiresIn=300)
    parts = urlsplit(url)
    status, _, body = raw(proxy.url, "GET", f"{parts.path}?{parts.query}")
    assert (status, body) == (200, b"presigned!")
    bad = parts.query.replace("X-Amz-Expires=300", "X-Amz-Expires=301")
    status, _, body = raw(proxy.url, "GET", f"{parts.path}?{bad}")
    assert status == 403
    assert error_fields(body)["Code"] == "SignatureDoesNotMatch"


# --------------------------------------------------------------------------
# requests S3 would refuse
# --------------------------------------------------------------------------

def test_wrong_secret_gets_signature_does_not_match(proxy, s3, bucket):
    bad = rig.boto3_client(proxy.url, secret_key="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        bad.put_object(Bucket=bucket, Key="nope", Body=b"x")
    assert client_error(exc) == (403, "SignatureDoesNotMatch")
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="nope")
    assert client_error(exc)[0] == 404  # never reached s3rver

    # The XML carries what S3 shows: the canonical request and string to sign.
    path = f"/{bucket}/nope"
    status, headers, body = signed_raw(proxy.url, "GET", path,
                                       secret="not-the-secret")
    fields = error_fields(body)
    assert status == 403 and fields["Code"] == "SignatureDoesNotMatch"
    assert fields["CanonicalRequest"].startswith(f"GET\n{path}\n\n")
    assert fields["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    assert fields["AWSAccessKeyId"] == rig.ACCESS_KEY
    assert headers["x-amz-request-id"] == fields["RequestId"]
    assert proxy.stats()["sig_rejections"] == {"SignatureDoesNotMatch": 2}


def test_unsigned_request_gets_access_denied(proxy, bucket):
    status, headers, body = raw(proxy.url, "GET", f"/{bucket}/x")
    fields = error_fields(body)
    assert (status, fields["Code"]) == (403, "AccessDenied")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>')
    assert headers["x-amz-request-id"] == fields["RequestId"]
    assert headers["content-type"] == "application/xml"
    stats = proxy.stats()
    assert stats["sig_rejections"] == {"AccessDenied": 1}
    assert stats["by_status"] == {"403": 1}


def test_body_not_matching_content_sha256_is_refused(proxy, s3, bucket):
    url = f"{proxy.url}/{bucket}/tampered"
    headers = sign("PUT", url, b"hello world")
    status, _, body = raw(proxy.url, "PUT", f"/{bucket}/tampered", headers,
                          b"hello wOrld")
    fields = error_fields(body)
    assert (status, fields["Code"]) == (400, "XAmzContentSHA256Mismatch")
    assert fields["ClientComputedContentSHA256"] == \
        hashlib.sha256(b"hello world").hexdigest()
    assert fields["S3ComputedContentSHA256"] == \
        hashlib.sha256(b"hello wOrld").hexdigest()
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="tampered")
    assert client_error(exc)[0] == 404
    # The untampered request passes.
    status, _, _ = raw(proxy.url, "PUT", f"/{bucket}/tampered", headers,
                       b"hello world")
    assert status == 200
    assert s3.get_object(Bucket=bucket, Key="tampered")["Body"].read() == \
        b"hello world"


def test_body_digests_are_checked(proxy, s3, bucket):
    body = b"digest me"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
    cases = [
        ({"Content-MD5": base64.b64encode(b"0" * 16).decode()}, 400,
         "BadDigest"),
        ({"Content-MD5": "not-base64!"}, 400, "InvalidDigest"),
        ({"x-amz-checksum-sha256": md5}, 400, "BadDigest"),
        ({"Content-MD5": md5, "x-amz-checksum-sha256": sha}, 200, None),
    ]
    path = f"/{bucket}/digest"
    for extra, status, code in cases:
        got, _, reply = signed_raw(proxy.url, "PUT", path, body, extra)
        assert got == status
        if code:
            assert error_fields(reply)["Code"] == code
    assert s3.get_object(Bucket=bucket, Key="digest")["Body"].read() == body

    # DeleteObjects needs Content-MD5 on AWS.
    xml = (b'<Delete><Object><Key>digest</Key></Object></Delete>')
    got, _, reply = signed_raw(proxy.url, "POST", f"/{bucket}?delete=", xml)
    assert (got, error_fields(reply)["Code"]) == (400, "InvalidRequest")
    assert s3.head_object(Bucket=bucket, Key="digest")["ContentLength"] == 9
    md5 = base64.b64encode(hashlib.md5(xml).digest()).decode()
    got, _, _ = signed_raw(proxy.url, "POST", f"/{bucket}?delete=", xml,
                           {"Content-MD5": md5})
    assert got == 200
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert proxy.stats()["sig_rejections"] == {
        "BadDigest": 2, "InvalidDigest": 1, "InvalidRequest": 1}


def _drop(name):
    def edit(headers):
        return {k: v for k, v in headers.items() if k.lower() != name}
    return edit


def _add(name, value):
    def edit(headers):
        return dict(headers, **{name: value})
    return edit


REJECTIONS = {
    # case: (signing kwargs, header edit after signing, status, code)
    "unknown-access-key": ({"access_key": "NOBODY"}, None, 403,
                           "InvalidAccessKeyId"),
    "missing-content-sha256": ({}, _drop("x-amz-content-sha256"), 400,
                               "InvalidRequest"),
    "unsigned-amz-header": ({}, _add("x-amz-meta-late", "1"), 403,
                            "AccessDenied"),
    "changed-signed-header": ({}, _add("X-Amz-Date", "20300101T000000Z"),
                              400, "AuthorizationHeaderMalformed"),
    "wrong-region": ({"region": "eu-west-1"}, None, 400,
                     "AuthorizationHeaderMalformed"),
    "clock-skew": ({}, "skew", 403, "RequestTimeTooSkewed"),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_signature_rejections(proxy, bucket, case):
    sign_kw, edit, status, code = REJECTIONS[case]
    path = f"/{bucket}/k"
    if edit == "skew":
        # Sign as botocore would have 20 minutes ago.
        old = AWSRequest(method="GET", url=proxy.url + path)
        auth = S3SigV4Auth(Credentials(rig.ACCESS_KEY, rig.SECRET_KEY), "s3",
                           rig.REGION)
        stamp = time.strftime("%Y%m%dT%H%M%SZ",
                              time.gmtime(time.time() - 1200))
        old.context["timestamp"] = stamp
        auth._modify_request_before_signing(old)
        old.headers["X-Amz-Date"] = stamp
        canonical = auth.canonical_request(old)
        sig = auth.signature(auth.string_to_sign(old, canonical), old)
        auth._inject_signature_to_request(old, sig)
        headers = dict(old.headers.items())
    else:
        headers = sign("GET", proxy.url + path, **sign_kw)
        if edit:
            headers = edit(headers)
    got_status, got_headers, body = raw(proxy.url, "GET", path, headers)
    assert (got_status, error_fields(body)["Code"]) == (status, code)
    if case == "wrong-region":  # the hint a HEAD request gets, as on AWS
        assert got_headers["x-amz-bucket-region"] == rig.REGION
    assert proxy.stats()["sig_rejections"] == {code: 1}


def test_expect_100_continue_is_judged_before_the_body(proxy, s3, bucket):
    def exchange(secret):
        path = f"/{bucket}/expect"
        body = b"z" * 100_000
        headers = sign("PUT", proxy.url + path, body, secret=secret)
        head = [f"PUT {path} HTTP/1.1", f"Host: 127.0.0.1:{proxy.port}",
                f"Content-Length: {len(body)}", "Expect: 100-continue"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        with socket.create_connection(("127.0.0.1", proxy.port), 10) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            first = sock.recv(65536).split(b"\r\n", 1)[0]
            if first.startswith(b"HTTP/1.1 100"):
                sock.sendall(body)
                final = b""
                while b"\r\n\r\n" not in final:
                    final += sock.recv(65536)
                return first, final.split(b"\r\n", 1)[0]
            return first, None

    assert exchange("wrong") == (b"HTTP/1.1 403 Forbidden", None)
    assert exchange(rig.SECRET_KEY) == (b"HTTP/1.1 100 Continue",
                                        b"HTTP/1.1 200 OK")
    assert s3.head_object(Bucket=bucket, Key="expect")["ContentLength"] == \
        100_000


def test_keep_alive_reuses_one_connection(proxy, bucket):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        for i in range(5):
            path = f"/{bucket}/ka{i}"
            body = b"%d" % i
            conn.request("PUT", path, body=body,
                         headers=sign("PUT", proxy.url + path, body))
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"")
        conn.request("GET", f"/{bucket}/ka3",
                     headers=sign("GET", f"{proxy.url}/{bucket}/ka3"))
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"3")
    finally:
        conn.close()
    stats = proxy.stats()
    assert (stats["connections"], stats["requests_total"]) == (1, 6)


# --------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------

def test_seeded_503_and_500_faults_replay_exactly(proxy, bucket):
    c = rig.boto3_client(proxy.url)
    c.put_object(Bucket=bucket, Key="k", Body=b"payload")
    proxy.config(seed=7, p503=0.3, p500=0.2, only_methods=["GET"])

    expected, rng = [], random.Random(7)
    for _ in range(30):
        r = rng.random()
        expected.append(503 if r < 0.3 else 500 if r < 0.5 else 200)

    seen = []
    for i in range(30):
        if i % 10 == 0:  # not a GET: never faulted, draws nothing
            c.head_object(Bucket=bucket, Key="k")
        try:
            assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == \
                b"payload"
            seen.append(200)
        except botocore.exceptions.ClientError as exc:
            status, code = client_error(exc)
            assert code == {503: "SlowDown", 500: "InternalError"}[status]
            seen.append(status)
    assert seen == expected
    stats = proxy.stats()
    assert stats["faults"] == {"503": expected.count(503),
                               "500": expected.count(500)}
    assert stats["by_status"] == {
        "200": expected.count(200) + 4, "503": expected.count(503),
        "500": expected.count(500)}
    assert stats["by_op"] == {"PutObject": 1, "HeadObject": 3,
                              "GetObject": 30}
    assert [r["fault"] for r in stats["recent"] if r["op"] == "GetObject"] \
        == [{200: None, 503: "503", 500: "500"}[s] for s in expected]


def test_reset_and_truncate_faults_cut_the_body(proxy, s3, bucket):
    data = rand_bytes(5, MiB)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    path = f"/{bucket}/obj"

    def get():
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            conn.request("GET", path, headers=sign("GET", proxy.url + path))
            resp = conn.getresponse()
            assert resp.status == 200
            assert int(resp.getheader("Content-Length")) == MiB
            return resp.read()
        finally:
            conn.close()

    proxy.config(ptruncate=1.0, only_ops=["GetObject"])
    with pytest.raises(http.client.IncompleteRead) as exc:
        get()
    assert exc.value.partial == data[:MiB // 2]  # half, then a clean close

    proxy.config(ptruncate=0.0, preset=1.0)
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        get()

    # A reset after forwarding: the client sees a failure, the PUT landed.
    proxy.config(preset=1.0, only_ops=["PutObject"])
    put = f"/{bucket}/landed"
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected,
                        BrokenPipeError)):
        raw(proxy.url, "PUT", put, sign("PUT", proxy.url + put, b"ok"), b"ok")
    assert s3.get_object(Bucket=bucket, Key="landed")["Body"].read() == b"ok"

    proxy.config(preset=0.0)
    assert get() == data
    stats = proxy.stats()
    assert stats["faults"] == {"truncate": 1, "reset": 2}
    assert stats["by_op"] == {"GetObject": 3, "PutObject": 1}


def test_latency_is_added_to_every_response(proxy, bucket):
    path = f"/{bucket}/missing"
    proxy.config(latency_ms=300)
    for headers in ({}, sign("GET", proxy.url + path)):  # refused, forwarded
        t0 = time.monotonic()
        status, _, _ = raw(proxy.url, "GET", path, headers)
        assert status in (403, 404)
        assert time.monotonic() - t0 >= 0.3
    proxy.config(latency_ms=0)
    t0 = time.monotonic()
    assert signed_raw(proxy.url, "GET", path)[0] == 404
    assert time.monotonic() - t0 < 0.3


def test_fail_next_answers_scripted_errors(proxy, s3, bucket):
    c = rig.boto3_client(proxy.url)
    c.put_object(Bucket=bucket, Key="k", Body=b"v")
    proxy.config(fail_next=[
        {"status": 403, "code": "AccessDenied"},
        {"status": 503, "code": "SlowDown", "count": 2, "method": "PUT"},
    ])
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        c.get_object(Bucket=bucket, Key="k")
    assert client_error(exc) == (403, "AccessDenied")
    assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            c.put_object(Bucket=bucket, Key="k", Body=b"new")
        assert client_error(exc) == (503, "SlowDown")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    c.put_object(Bucket=bucket, Key="k", Body=b"new")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new"

    # A retrying client stops at the 403 but retries through a 503.
    proxy.config(fail_next=[{"status": 403, "code": "AccessDenied"}])
    retrying = rig.boto3_client(proxy.url, retries=3)
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        retrying.get_object(Bucket=bucket, Key="k")
    assert client_error(exc) == (403, "AccessDenied")
    proxy.config(fail_next=[{"status": 503, "code": "SlowDown"}])
    assert retrying.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new"

    stats = proxy.stats()
    assert stats["faults"] == {"fail_next": 5}
    assert stats["config"]["fail_next"] == []
    assert stats["by_status"] == {"200": 4, "403": 2, "503": 3}


def test_control_api_reset_and_validation(proxy, bucket):
    proxy.config(p503=0.5, latency_ms=10, fail_next=[{"status": 500}])
    signed_raw(proxy.url, "GET", f"/{bucket}/x")
    assert proxy.stats()["requests_total"] == 1
    with pytest.raises(ValueError):
        proxy.config(p503=0.9, p500=0.9)  # more than 1 in total
    with pytest.raises(ValueError):
        proxy.config(bogus=1)
    proxy.reset()
    stats = proxy.stats()
    assert stats["requests_total"] == 0 and stats["recent"] == []
    assert (stats["config"]["p503"], stats["config"]["latency_ms"],
            stats["config"]["fail_next"]) == (0.0, 0, [])
    assert stats["requests_total"] == 0  # control calls are never counted


def test_s3server_stop_start_keeps_port_and_data(tmp_path):
    extra = ("AKIDEXTRAKEY", "extra-secret")  # a second key pair, both sides
    with rig.S3Server(tmp_path, buckets=["outage"], keys=[extra]) as server, \
            rig.Proxy(server.url, keys=[(rig.ACCESS_KEY, rig.SECRET_KEY),
                                        extra]) as proxy:
        direct = rig.boto3_client(server.url, connect_timeout=2)
        through = rig.boto3_client(proxy.url, access_key=extra[0],
                                   secret_key=extra[1])
        through.put_object(Bucket="outage", Key="k", Body=b"kept")
        port = server.port

        server.stop()
        assert not server.running
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            direct.get_object(Bucket="outage", Key="k")
        with pytest.raises((botocore.exceptions.ConnectionClosedError,
                            botocore.exceptions.EndpointConnectionError)):
            through.get_object(Bucket="outage", Key="k")
        proxy.config(upstream_error="503")
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            through.get_object(Bucket="outage", Key="k")
        assert client_error(exc) == (503, "ServiceUnavailable")

        server.start()
        assert server.running and server.port == port
        assert through.get_object(Bucket="outage", Key="k")["Body"].read() \
            == b"kept"
        assert proxy.stats()["upstream_errors"] == 2



def test_ignore_range_fault_strips_the_range(proxy, s3, bucket):
    data = rand_bytes(9, 10_000)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    c = rig.boto3_client(proxy.url)
    assert c.get_object(Bucket=bucket, Key="r",
                        Range="bytes=10-19")["Body"].read() == data[10:20]

    assert proxy.config(ignore_range=True)["ignore_range"] == 1.0
    got = c.get_object(Bucket=bucket, Key="r", Range="bytes=10-19")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "ContentRange" not in got
    assert got["Body"].read() == data  # the whole object, as such servers do
    assert c.get_object(Bucket=bucket, Key="r")["Body"].read() == data

    # A probability draws from the seeded generator, one draw per ranged GET.
    proxy.config(ignore_range=0.5, seed=3)
    rng = random.Random(3)
    expected = [rng.random() < 0.5 for _ in range(12)]
    seen = []
    for _ in range(12):
        got = c.get_object(Bucket=bucket, Key="r", Range="bytes=0-0")
        seen.append(got["ResponseMetadata"]["HTTPStatusCode"] == 200)
        assert got["Body"].read() == (data if seen[-1] else data[:1])
    assert seen == expected and 0 < sum(seen) < 12

    stats = proxy.stats()
    assert stats["faults"] == {"ignore_range": 1 + sum(expected)}
    ranged = [r for r in stats["recent"] if r["range"]]
    assert [r["range_ignored"] for r in ranged] == \
        [False, True] + expected
    with pytest.raises(ValueError):
        proxy.config(ignore_range=2)


# --------------------------------------------------------------------------
# s3rver answers like AWS S3 (tests/s3server/aws-fixes.js); no proxy here
# --------------------------------------------------------------------------

def xml_tree(body):
    """Parsed XML with namespaces stripped from the tags."""
    root = ET.fromstring(body)
    for el in root.iter():
        el.tag = el.tag.split("}", 1)[-1]
    return root


def list_model(keys, prefix="", delimiter=""):
    """S3's listing of keys as [("K", key) | ("P", prefix)], in order."""
    out = []
    for key in sorted(keys, key=lambda k: k.encode()):
        if not key.startswith(prefix):
            continue
        i = key.find(delimiter, len(prefix)) if delimiter else -1
        if i == -1:
            out.append(("K", key))
        elif out[-1:] != [("P", key[:i + len(delimiter)])]:
            out.append(("P", key[:i + len(delimiter)]))
    return out


def page_entries(page):
    entries = [("K", o["Key"]) for o in page.get("Contents", [])] + \
        [("P", p["Prefix"]) for p in page.get("CommonPrefixes", [])]
    return sorted(entries, key=lambda e: e[1].encode())


LISTING_KEYS = [
    "top", "d1/a", "d1/b", "d2/x/y", "d3/", "p/x", "p-b", "p/", "a b",
    "a+b", "x/1/2", "x/1/3", "x/2", "é", "z\ue000", "z\U0001F600", "zz",
]


def test_listing_order_prefixes_and_paging(s3, bucket):
    for key in LISTING_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    full = s3.list_objects_v2(Bucket=bucket)
    # Sorted by UTF-8 bytes: "p-b" < "p/" < "p/x"; U+E000 < U+1F600.
    assert [o["Key"] for o in full["Contents"]] == \
        [k for _, k in list_model(LISTING_KEYS)]
    assert full["KeyCount"] == len(LISTING_KEYS)

    # A prefix holding only deeper keys ("d2/x/y") is a common prefix, and
    # prefixes count toward max-keys and KeyCount together with keys.
    page = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert page_entries(page) == list_model(LISTING_KEYS, "", "/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == \
        ["d1/", "d2/", "d3/", "p/", "x/"]
    assert page["KeyCount"] == 13  # 8 keys and 5 prefixes
    page = s3.list_objects_v2(Bucket=bucket, Delimiter="/", MaxKeys=4)
    assert page_entries(page) == list_model(LISTING_KEYS, "", "/")[:4]
    assert (page["KeyCount"], page["IsTruncated"]) == (4, True)
    assert page_entries(s3.list_objects_v2(
        Bucket=bucket, Delimiter="/", Prefix="x/")) == \
        [("P", "x/1/"), ("K", "x/2")]

    # Paging with any max-keys, V2 tokens and V1 markers: every entry once.
    for prefix, delimiter in (("", ""), ("", "/"), ("x/", "/"), ("p", "/")):
        want = list_model(LISTING_KEYS, prefix, delimiter)
        for max_keys in (1, 2, 7, 1000):
            got, kw = [], {}
            while True:
                page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix,
                                          Delimiter=delimiter,
                                          MaxKeys=max_keys, **kw)
                assert page["KeyCount"] == len(page_entries(page)) <= max_keys
                got += page_entries(page)
                if not page["IsTruncated"]:
                    break
                kw = {"ContinuationToken": page["NextContinuationToken"]}
            assert got == want, (prefix, delimiter, max_keys)
            got, kw = [], {}
            while True:
                page = s3.list_objects(Bucket=bucket, Prefix=prefix,
                                       Delimiter=delimiter, MaxKeys=max_keys,
                                       **kw)
                got += page_entries(page)
                if not page["IsTruncated"]:
                    break
                marker = page.get("NextMarker", got[-1][1])
                assert marker == got[-1][1]  # the last entry, key or prefix
                kw = {"Marker": marker}
            assert got == want, ("v1", prefix, delimiter, max_keys)

    # StartAfter / Marker equal to a common prefix skip everything under it.
    model = list_model(LISTING_KEYS, "", "/")
    page = s3.list_objects_v2(Bucket=bucket, Delimiter="/", StartAfter="d2/")
    assert page_entries(page) == [e for e in model if e[1].encode() > b"d2/"]
    page = s3.list_objects(Bucket=bucket, Delimiter="/", Marker="p/")
    assert page_entries(page)[0] == ("K", "top")
    assert page_entries(page) == [e for e in model if e[1].encode() > b"p/"]
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="bm90LWEtdG9rZW4=")
    assert client_error(exc) == (400, "InvalidArgument")


def test_listing_encoding_type_url_and_xml_escaping(s3server, s3, bucket):
    keys = ["enc dir/a b+c&d~", "enc dir/sub/x", "enc dir/amp&lt'`\"<>"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    status, _, body = raw(
        s3server.url, "GET", f"/{bucket}?list-type=2&encoding-type=url"
        "&prefix=enc%20dir%2F&delimiter=%2F&start-after=enc%20dir%2F")
    assert status == 200
    root = xml_tree(body)
    assert [(el.tag, el.text) for el in root if el.tag in (
        "Prefix", "Delimiter", "EncodingType", "StartAfter", "KeyCount")] == [
        ("Prefix", "enc+dir/"), ("Delimiter", "/"), ("EncodingType", "url"),
        ("KeyCount", "3"), ("StartAfter", "enc+dir/")]
    assert [el.text for el in root.iter("Key")] == [
        "enc+dir/a+b%2Bc%26d%7E", "enc+dir/amp%26lt%27%60%22%3C%3E"]
    assert [el.text for el in root.iter("Prefix")][1:] == ["enc+dir/sub/"]
    # boto3 asks for encoding-type=url itself and decodes the answer.
    page = s3.list_objects_v2(Bucket=bucket, Prefix="enc dir/", Delimiter="/")
    assert page_entries(page) == list_model(keys, "enc dir/", "/")

    # Without encoding, special characters are escaped exactly once, in
    # listings and in error answers.
    status, _, body = raw(s3server.url, "GET",
                          f"/{bucket}?list-type=2&prefix=enc%20dir%2Famp")
    assert b"<Key>enc dir/amp&amp;lt&apos;`&quot;&lt;&gt;</Key>" in body
    assert [el.text for el in xml_tree(body).iter("Key")] == [keys[2]]
    missing = "no&such<key>'`"
    status, _, body = raw(s3server.url, "GET",
                          f"/{bucket}/{quote(missing, safe='')}")
    assert status == 404
    assert b"<Key>no&amp;such&lt;key&gt;&apos;`</Key>" in body
    assert error_fields(body)["Key"] == missing
    status, _, body = raw(s3server.url, "GET", f"/{bucket}?encoding-type=x")
    assert (status, error_fields(body)["Code"]) == (400, "InvalidArgument")


FAITHFUL_KEYS = ["a//b", "dir/./dot", "dir/../x", "/leading", "trailing/",
                 "a/b", "x", "dir/dot", "leading", "trailing", "a/%2F/b",
                 "q/._S3rver_object/r", "long/" + "é" * 150 + "/end"]


def test_keys_are_stored_faithfully(s3, bucket):
    for key in FAITHFUL_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(FAITHFUL_KEYS, key=lambda k: k.encode())
    for key in FAITHFUL_KEYS:
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == \
            len(key.encode())
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == \
            key.encode()
        s3.copy_object(Bucket=bucket, Key="copy/" + key,
                       CopySource={"Bucket": bucket, "Key": key})
        assert s3.get_object(Bucket=bucket, Key="copy/" + key)[
            "Body"].read() == key.encode()
    for key in FAITHFUL_KEYS:
        s3.delete_object(Bucket=bucket, Key=key)
        s3.delete_object(Bucket=bucket, Key="copy/" + key)
        left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get(
            "Contents", [])]
        assert key not in left and len(left) == 2 * (
            len(FAITHFUL_KEYS) - FAITHFUL_KEYS.index(key) - 1)
    # DeleteObjects takes keys verbatim ("007" is not 7, " a " keeps its
    # spaces) and reports only errors when quiet.
    for key in ("007", "7", " a ", "a"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    s3.delete_objects(Bucket=bucket, Delete={
        "Objects": [{"Key": "007"}, {"Key": " a "}], "Quiet": True})
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] \
        == ["7", "a"]


def test_ranges_like_aws(s3server, s3, bucket):
    data = bytes(range(256)) * 4
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")

    def ranged(spec, key="obj"):
        status, headers, body = raw(s3server.url, "GET", f"/{bucket}/{key}",
                                    {"Range": spec})
        return status, headers.get("content-range"), body

    assert ranged("bytes=0-0") == (206, "bytes 0-0/1024", data[:1])
    assert ranged("bytes=-5") == (206, "bytes 1019-1023/1024", data[-5:])
    assert ranged("bytes=-5000") == (206, "bytes 0-1023/1024", data)
    assert ranged("bytes=1000-") == (206, "bytes 1000-1023/1024", data[1000:])
    assert ranged("bytes=1000-5000") == (206, "bytes 1000-1023/1024",
                                         data[1000:])
    assert ranged("bytes=1023-1023") == (206, "bytes 1023-1023/1024",
                                         data[-1:])
    # Unusable ranges are ignored: the whole object, 200.
    for spec in ("bytes=5-2", "bytes=0-1,5-6", "items=0-1"):
        assert ranged(spec) == (200, None, data)
    # Unsatisfiable: 416 InvalidRange with "Content-Range: bytes */N".
    for spec, key, size in (("bytes=1024-", "obj", 1024),
                            ("bytes=2000-3000", "obj", 1024),
                            ("bytes=-0", "obj", 1024),
                            ("bytes=0-0", "empty", 0)):
        status, content_range, body = ranged(spec, key)
        assert (status, content_range) == (416, f"bytes */{size}")
        assert error_fields(body)["Code"] == "InvalidRange"
    got = s3.get_object(Bucket=bucket, Key="obj", Range="bytes=-5")
    assert (got["ContentRange"], got["Body"].read()) == \
        ("bytes 1019-1023/1024", data[-5:])


def test_conditional_requests_like_aws(s3server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"payload")
    head = s3.head_object(Bucket=bucket, Key="obj")
    etag, modified = head["ETag"], head["LastModified"].timestamp()
    before = time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                           time.gmtime(modified - 3600))
    after = time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                          time.gmtime(modified + 3600))
    cases = [
        ({"If-Match": '"0000"'}, 412),
        ({"If-Match": etag}, 200),
        ({"If-Match": "*"}, 200),
        ({"If-Match": f'"x", {etag}'}, 200),
        ({"If-Unmodified-Since": before}, 412),
        ({"If-Unmodified-Since": after}, 200),
        ({"If-Match": etag, "If-Unmodified-Since": before}, 200),
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"0000"'}, 200),
        ({"If-Modified-Since": after}, 304),
        ({"If-Modified-Since": before}, 200),
        ({"If-None-Match": '"0000"', "If-Modified-Since": after}, 200),
        ({"If-Match": '"0000"', "If-None-Match": etag}, 412),
    ]
    for method in ("GET", "HEAD"):
        for headers, status in cases:
            got, resp_headers, body = raw(s3server.url, method,
                                          f"/{bucket}/obj", headers)
            assert got == status, (method, headers)
            if status == 412 and method == "GET":
                assert error_fields(body)["Code"] == "PreconditionFailed"
            elif status == 304:
                assert resp_headers["etag"] == etag
            if method == "HEAD" or status == 304:
                assert body == b""
            elif status == 200:
                assert body == b"payload"
    # On a missing key the answer is 404, whatever the conditions.
    assert raw(s3server.url, "GET", f"/{bucket}/missing",
               {"If-Match": "*"})[0] == 404

    # Conditional writes (botocore here predates IfMatch/IfNoneMatch on
    # PutObject): If-None-Match: * only creates; If-Match needs the object
    # with that ETag.
    def put(key, body, headers):
        status, _, reply = raw(s3server.url, "PUT", f"/{bucket}/{key}",
                               headers, body)
        return status, error_fields(reply)["Code"] if reply else None

    assert put("obj", b"new", {"If-None-Match": "*"}) == \
        (412, "PreconditionFailed")
    assert put("fresh", b"1", {"If-None-Match": "*"}) == (200, None)
    assert put("obj", b"new", {"If-Match": '"0000"'}) == \
        (412, "PreconditionFailed")
    assert put("nope", b"new", {"If-Match": etag}) == (404, "NoSuchKey")
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == \
        b"payload"
    assert put("obj", b"new", {"If-Match": etag}) == (200, None)
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"new"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] \
        == ["fresh", "obj"]


def test_copy_sources_like_aws(s3server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="a+b", Body=b"plus")
    s3.put_object(Bucket=bucket, Key="a b", Body=b"space")
    s3.put_object(Bucket=bucket, Key="q?&=#%", Body=b"odd")
    # boto3 sends "a%2Bb"; decoded once it is "a+b".
    s3.copy_object(Bucket=bucket, Key="c1", CopySource=f"{bucket}/a+b")
    assert s3.get_object(Bucket=bucket, Key="c1")["Body"].read() == b"plus"
    s3.copy_object(Bucket=bucket, Key="c2",
                   CopySource={"Bucket": bucket, "Key": "q?&=#%"})
    assert s3.get_object(Bucket=bucket, Key="c2")["Body"].read() == b"odd"
    # A raw '+' in the header is a plus, not a space; ?versionId= ignored.
    for source, want in ((f"/{bucket}/a+b", b"plus"),
                         (f"{bucket}/a%20b?versionId=null", b"space")):
        status, _, body = raw(s3server.url, "PUT", f"/{bucket}/c3",
                              {"x-amz-copy-source": source})
        assert status == 200, body
        assert s3.get_object(Bucket=bucket, Key="c3")["Body"].read() == want

    etag = s3.head_object(Bucket=bucket, Key="a+b")["ETag"]
    src = {"Bucket": bucket, "Key": "a+b"}
    one_day = datetime.timedelta(days=1)
    day_ago = datetime.datetime.now(datetime.timezone.utc) - one_day
    failing = [{"CopySourceIfMatch": '"0000"'},
               {"CopySourceIfNoneMatch": etag},
               {"CopySourceIfUnmodifiedSince": day_ago},
               {"CopySourceIfModifiedSince": day_ago + 2 * one_day}]
    for cond in failing:
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            s3.copy_object(Bucket=bucket, Key="c4", CopySource=src, **cond)
        assert client_error(exc) == (412, "PreconditionFailed"), cond
    s3.copy_object(Bucket=bucket, Key="c4", CopySource=src,
                   CopySourceIfMatch=etag,
                   CopySourceIfUnmodifiedSince=day_ago + 2 * one_day)
    assert s3.get_object(Bucket=bucket, Key="c4")["Body"].read() == b"plus"
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    for cond in failing:
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=upload,
                                PartNumber=1, CopySource=src, **cond)
        assert client_error(exc) == (412, "PreconditionFailed"), cond
    part = s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=upload,
                               PartNumber=1, CopySource=src,
                               CopySourceRange="bytes=0-0")
    assert part["CopyPartResult"]["ETag"] == \
        '"%s"' % hashlib.md5(b"p").hexdigest()
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="c5",
                       CopySource={"Bucket": bucket, "Key": "a"})
    assert client_error(exc) == (404, "NoSuchKey")


def test_multipart_uploads_like_aws(s3server, s3, bucket):
    p1, p2, p3 = rand_bytes(1, 5 * MiB), rand_bytes(2, 5 * MiB), rand_bytes(3, 100)
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    tags = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=up,
                           PartNumber=n, Body=p)["ETag"]
            for n, p in ((1, p1), (2, p2), (3, p3))]

    def complete(parts, key="mp", upload=up):
        return s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})

    def refused(call, *args, **kw):
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            call(*args, **kw)
        return client_error(exc)

    assert refused(complete, [(1, tags[0]), (4, tags[2])]) == \
        (400, "InvalidPart")
    assert refused(complete, [(1, tags[0]), (2, '"0000"')]) == \
        (400, "InvalidPart")
    assert refused(complete, [(2, tags[1]), (1, tags[0])]) == \
        (400, "InvalidPartOrder")
    assert refused(complete, [(1, tags[0]), (3, tags[2]), (2, tags[1])]) == \
        (400, "InvalidPartOrder")
    assert refused(complete, [(3, tags[2]), (4, tags[2])]) == \
        (400, "InvalidPart")
    assert refused(complete, [(1, tags[0]), (3, tags[2])],
                   key="other") == (404, "NoSuchUpload")
    assert refused(complete, [(1, tags[0])], upload="0" * 32) == \
        (404, "NoSuchUpload")
    assert refused(s3.upload_part, Bucket=bucket, Key="mp", UploadId="f" * 32,
                   PartNumber=1, Body=b"x") == (404, "NoSuchUpload")
    assert refused(s3.upload_part, Bucket=bucket, Key="mp", UploadId=up,
                   PartNumber=10001, Body=b"x") == (400, "InvalidArgument")
    parts = s3.list_parts(Bucket=bucket, Key="mp", UploadId=up)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts["Parts"]] \
        == [(1, tags[0], 5 * MiB), (2, tags[1], 5 * MiB), (3, tags[2], 100)]

    # A smaller part is fine last, not before.
    small = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    t = [s3.upload_part(Bucket=bucket, Key="small", UploadId=small,
                        PartNumber=n, Body=b"tiny")["ETag"] for n in (1, 2)]
    assert refused(complete, [(1, t[0]), (2, t[1])], key="small",
                   upload=small) == (400, "EntityTooSmall")

    # Only the listed parts, in order; AWS's multipart ETag; once only.
    done = complete([(1, tags[0]), (3, tags[2])])
    assert done["ETag"] == multipart_etag(p1, p3)
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["ETag"] == done["ETag"]
    assert got["Body"].read() == p1 + p3
    assert refused(complete, [(1, tags[0]), (3, tags[2])]) == \
        (404, "NoSuchUpload")
    assert refused(s3.list_parts, Bucket=bucket, Key="mp", UploadId=up) == \
        (404, "NoSuchUpload")
    # A copy is a new single-part object: plain MD5.
    s3.copy_object(Bucket=bucket, Key="mp-copy", CopySource=f"{bucket}/mp")
    assert s3.head_object(Bucket=bucket, Key="mp-copy")["ETag"] == \
        '"%s"' % hashlib.md5(p1 + p3).hexdigest()
    # Conditional completion.
    again = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    tag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=again,
                         PartNumber=1, Body=b"v2")["ETag"]
    xml = ("<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
           f"<ETag>{tag}</ETag></Part></CompleteMultipartUpload>").encode()
    status, _, reply = raw(s3server.url, "POST",
                           f"/{bucket}/mp?uploadId={again}",
                           {"If-None-Match": "*"}, xml)
    assert (status, error_fields(reply)["Code"]) == \
        (412, "PreconditionFailed")

    # ListMultipartUploads: by key, then by initiation; paged by markers.
    more = [s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"]
            for k in ("a/1", "a/1", "b")]
    listing = s3.list_multipart_uploads(Bucket=bucket)
    expected = [("a/1", more[0]), ("a/1", more[1]), ("b", more[2]),
                ("mp", again), ("small", small)]
    assert [(u["Key"], u["UploadId"]) for u in listing["Uploads"]] == expected
    assert all(u["Initiated"] for u in listing["Uploads"])
    seen, kw = [], {}
    while True:
        page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2, **kw)
        seen += [(u["Key"], u["UploadId"]) for u in page["Uploads"]]
        if not page["IsTruncated"]:
            break
        kw = {"KeyMarker": page["NextKeyMarker"],
              "UploadIdMarker": page["NextUploadIdMarker"]}
    assert seen == expected
    page = s3.list_multipart_uploads(Bucket=bucket, Prefix="a/",
                                     KeyMarker="a/1")
    assert page.get("Uploads", []) == []
    page = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/"]
    assert [u["Key"] for u in page["Uploads"]] == ["b", "mp", "small"]

    # AbortMultipartUpload: 204, parts gone, then unknown.
    s3.abort_multipart_upload(Bucket=bucket, Key="b", UploadId=more[2])
    assert refused(s3.abort_multipart_upload, Bucket=bucket, Key="b",
                   UploadId=more[2]) == (404, "NoSuchUpload")
    assert refused(s3.upload_part, Bucket=bucket, Key="b", UploadId=more[2],
                   PartNumber=1, Body=b"x") == (404, "NoSuchUpload")
    for key, upload in expected:
        if upload != more[2]:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_head_errors_have_no_body(s3server, proxy, s3, bucket):
    s3.put_object(Bucket=bucket, Key="obj", Body=b"data")
    etag = s3.head_object(Bucket=bucket, Key="obj")["ETag"]
    cases = [
        (f"/{bucket}/missing", {}, 404),
        (f"/no-such-bucket-{bucket}/obj", {}, 404),
        (f"/no-such-bucket-{bucket}", {}, 404),
        (f"/{bucket}", {}, 200),
        (f"/{bucket}/obj", {"If-Match": '"0000"'}, 412),
        (f"/{bucket}/obj", {"If-None-Match": etag}, 304),
        (f"/{bucket}/obj", {"Range": "bytes=9-"}, 416),
        (f"/{bucket}/obj", {"Range": "bytes=1-2"}, 206),
    ]
    for path, headers, status in cases:
        # Straight on s3rver, twice on one raw connection: a stray body
        # would show up between or after the two answers.
        with socket.create_connection(("127.0.0.1", s3server.port), 10) as so:
            lines = [f"HEAD {path} HTTP/1.1", "Host: 127.0.0.1"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            so.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() * 2)
            answer = b""
            while answer.count(b"\r\n\r\n") < 2:
                chunk = so.recv(65536)
                assert chunk, (path, answer)
                answer += chunk
            so.settimeout(0.2)
            try:
                answer += so.recv(65536)
            except socket.timeout:
                pass
        first, second, stray = answer.split(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 %d " % status), (path, first)
        assert second.startswith(b"HTTP/1.1 %d " % status), (path, second)
        assert stray == b"", (path, stray)
        # And through the proxy, signed.
        got, _, body = signed_raw(proxy.url, "HEAD", path, headers=headers)
        assert (got, body) == (status, b""), path


def test_refuse_abort_mode_keeps_s3rver_refusals(tmp_path):
    with rig.S3Server(tmp_path, buckets=["refuse"], refuse_abort=True,
                      min_part_size=1) as server:
        c = rig.boto3_client(server.url)
        up = c.create_multipart_upload(Bucket="refuse", Key="k")["UploadId"]
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            c.abort_multipart_upload(Bucket="refuse", Key="k", UploadId=up)
        assert client_error(exc) == (405, "MethodNotAllowed")
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            c.list_multipart_uploads(Bucket="refuse")
        assert client_error(exc) == (501, "NotImplemented")
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            c.list_parts(Bucket="refuse", Key="k", UploadId=up)
        assert client_error(exc) == (405, "MethodNotAllowed")
        # min_part_size=1: small parts complete; the rest is as usual.
        tags = [c.upload_part(Bucket="refuse", Key="k", UploadId=up,
                              PartNumber=n, Body=b"part%d" % n)["ETag"]
                for n in (1, 2)]
        done = c.complete_multipart_upload(
            Bucket="refuse", Key="k", UploadId=up, MultipartUpload={
                "Parts": [{"PartNumber": n + 1, "ETag": t}
                          for n, t in enumerate(tags)]})
        assert done["ETag"] == multipart_etag(b"part1", b"part2")
        assert c.get_object(Bucket="refuse", Key="k")["Body"].read() == \
            b"part1part2"


# --------------------------------------------------------------------------
# the second server: moto (PAILFS_TEST_SERVER=moto runs the core against it)
# --------------------------------------------------------------------------

def test_server_kind_is_s3rver_or_moto(monkeypatch):
    monkeypatch.delenv("PAILFS_TEST_SERVER", raising=False)
    assert rig.server_kind() == "s3rver"
    monkeypatch.setenv("PAILFS_TEST_SERVER", "moto")
    assert rig.server_kind() == "moto"
    monkeypatch.setenv("PAILFS_TEST_SERVER", "minio")
    with pytest.raises(ValueError, match="'minio': not one of s3rver, moto"):
        rig.server_kind()


def test_moto_server_missing_or_broken_says_why(monkeypatch, tmp_path):
    """What CI on a machine without moto sees: a reason, not a crash. A
    pyenv shim whose Python lacks moto exists and fails: "does not run"."""
    shim = tmp_path / "moto_server"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(rig, "MOTO_FALLBACKS", (str(shim),))
    monkeypatch.setattr(rig, "_moto_found", None)
    assert rig.moto_server() == (
        None, f"moto_server not found on PATH and {shim}")
    shim.write_text("#!/bin/sh\necho 'pyenv: moto_server: command not found'"
                    " >&2\nexit 127\n")
    shim.chmod(0o755)
    monkeypatch.setattr(rig, "_moto_found", None)
    assert rig.moto_server() == (None, f"moto_server at {shim} does not run")
    with pytest.raises(RuntimeError, match="does not run"):
        rig.MotoServer(tmp_path / "srv", buckets=["b"])


def test_moto_behind_the_proxy(tmp_path):
    """MotoServer makes its buckets; moto takes any key, the proxy in front
    only the rig's; a restart keeps the port and loses the objects."""
    program, reason = rig.moto_server()
    if program is None:
        pytest.skip(reason)
    with rig.MotoServer(tmp_path, buckets=["rig-moto"]) as srv, \
            rig.Proxy(srv.url, log_path=tmp_path / "proxy.log") as proxy:
        rig.boto3_client(proxy.url).put_object(Bucket="rig-moto", Key="k",
                                               Body=b"v")
        direct = rig.boto3_client(srv.url, access_key="OTHER",
                                  secret_key="other")
        assert direct.get_object(Bucket="rig-moto", Key="k")[
            "Body"].read() == b"v"
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            rig.boto3_client(proxy.url, access_key="OTHER",
                             secret_key="other").get_object(
                Bucket="rig-moto", Key="k")
        assert client_error(exc) == (403, "InvalidAccessKeyId")
        port = srv.port
        srv.stop()
        srv.start()
        assert srv.port == port
        page = direct.list_objects_v2(Bucket="rig-moto")
        assert page["KeyCount"] == 0


def test_moto_copy_source_if_match_fixup(tmp_path):
    """moto copies although x-amz-copy-source-if-match does not match;
    behind a proxy with MotoServer's fix-up, CopyObject and UploadPartCopy
    get AWS's 412 PreconditionFailed, and a matching ETag still copies."""
    program, reason = rig.moto_server()
    if program is None:
        pytest.skip(reason)
    assert rig.MotoServer.proxy_fixups == ("copy-source-if-match",)
    with rig.MotoServer(tmp_path, buckets=["rig-moto"]) as srv, \
            rig.Proxy(srv.url, log_path=tmp_path / "proxy.log",
                      fixups=srv.proxy_fixups) as proxy:
        direct, s3 = rig.boto3_client(srv.url), rig.boto3_client(proxy.url)
        s3.put_object(Bucket="rig-moto", Key="src", Body=b"source")
        etag = s3.head_object(Bucket="rig-moto", Key="src")["ETag"]
        source = {"Bucket": "rig-moto", "Key": "src"}
        # moto alone: copied regardless (the deviation).
        direct.copy_object(Bucket="rig-moto", Key="moto", CopySource=source,
                           CopySourceIfMatch='"0000"')
        assert direct.get_object(Bucket="rig-moto", Key="moto")[
            "Body"].read() == b"source"
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            s3.copy_object(Bucket="rig-moto", Key="dst", CopySource=source,
                           CopySourceIfMatch='"0000"')
        assert client_error(exc) == (412, "PreconditionFailed")
        up = s3.create_multipart_upload(Bucket="rig-moto", Key="mp")[
            "UploadId"]
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            s3.upload_part_copy(Bucket="rig-moto", Key="mp", UploadId=up,
                                PartNumber=1, CopySource=source,
                                CopySourceRange="bytes=0-1",
                                CopySourceIfMatch='"0000"')
        assert client_error(exc) == (412, "PreconditionFailed")
        assert "dst" not in [o["Key"] for o in direct.list_objects_v2(
            Bucket="rig-moto")["Contents"]]
        s3.copy_object(Bucket="rig-moto", Key="dst", CopySource=source,
                       CopySourceIfMatch=f'"x", {etag}')
        assert direct.get_object(Bucket="rig-moto", Key="dst")[
            "Body"].read() == b"source"
        s3.abort_multipart_upload(Bucket="rig-moto", Key="mp", UploadId=up)
