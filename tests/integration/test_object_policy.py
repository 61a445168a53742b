"""How new objects are stored (issue 20 items 1, 4, 5, 6): server-side
encryption, storage class, requester pays and Content-Type, each tested
through a real mount against the proxy playing the bucket's policy.

The proxy's POLICY (tests/proxy/s3proxy.py) refuses, 403 AccessDenied as
S3 does, a PutObject, CreateMultipartUpload or CopyObject that does not ask
for the required x-amz-server-side-encryption, and on a requester-pays
bucket any request without x-amz-request-payer: requester.  What each
request carried is read back from the proxy's record of recent requests.

s3rver stores neither the encryption nor the storage class of an object:
to test that pailfs's copies keep an object's existing encryption, the
proxy adds the response headers S3 would send (x-amz-server-side-encryption,
its KMS key id, the bucket-key flag, x-amz-storage-class) to the answers
for chosen keys (config inject_headers).
"""

import errno
import os
import re

import pytest

from helpers import put, rand_bytes
from mount import errno_of, mounter, read, write  # noqa: F401

MIB = 1024 * 1024
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ARN = "arn:aws:kms:us-east-1:111122223333:key/ffffffff-0000-1111-2222-333333333333"
WRITES = ("PutObject", "CreateMultipartUpload", "CopyObject")


def recent(proxy):
    return proxy.stats()["recent"]


def hdr(rec, name):
    """A request's header value as the proxy parsed it, or None."""
    for k, v in rec["headers"]:
        if k.lower() == name:
            return v
    return None


def writes_of(proxy, key=None):
    return [r for r in recent(proxy) if r["op"] in WRITES and r["status"] == 200
            and (key is None or r["key"] == key)]


def sse_of(rec):
    return (hdr(rec, "x-amz-server-side-encryption"),
            hdr(rec, "x-amz-server-side-encryption-aws-kms-key-id"),
            hdr(rec, "x-amz-server-side-encryption-bucket-key-enabled"))


def test_sse_kms_on_every_write_and_copy(s3, bucket, proxy, mounter):
    """With sse=aws:kms and a key, every PutObject, CreateMultipartUpload
    and CopyObject the mount makes (small and multipart writes, chmod,
    file and directory rename, append, staged edit) asks for it: a bucket
    policy demanding aws:kms refuses none of them."""
    put(s3, bucket, "big.bin", rand_bytes(1, 6 * MIB))
    put(s3, bucket, "small.txt", b"0123456789")
    proxy.config(require_sse="aws:kms")
    m = mounter(opts=[f"sse=aws:kms", f"sse_kms_key_id={KEY_ARN}", "sse_bucket_key"])
    proxy.reset()
    proxy.config(require_sse="aws:kms")
    write(m.p("new.txt"), b"hello")
    write(m.p("multi.bin"), rand_bytes(2, 11 * MIB))
    os.chmod(m.p("new.txt"), 0o600)
    os.rename(m.p("new.txt"), m.p("moved.txt"))
    os.mkdir(m.p("d"))
    write(m.p("d", "f"), b"in d")
    os.rename(m.p("d"), m.p("e"))
    with open(m.p("big.bin"), "ab") as f:  # an append: UploadPartCopy of the old bytes
        f.write(b"tail")
    with open(m.p("small.txt"), "r+b") as f:  # a staged edit
        f.seek(3)
        f.write(b"X")
    big_edit = rand_bytes(3, 6 * MIB)
    put(s3, bucket, "big2.bin", big_edit)
    with open(m.p("big2.bin"), "r+b") as f:  # a staged edit with copied ranges
        f.seek(100)
        f.write(b"Y")
    st = proxy.stats()
    assert st["sig_rejections"].get("AccessDenied", 0) == 0, st["sig_rejections"]
    writes = writes_of(proxy)
    ops_seen = {r["op"] for r in writes}
    assert ops_seen == set(WRITES), ops_seen
    for r in writes:
        assert sse_of(r) == ("aws:kms", KEY_ARN, "true"), (r["op"], r["key"], sse_of(r))
    copies = {(r["key"]) for r in writes if r["op"] == "CopyObject"}
    assert {"new.txt", "moved.txt", "e/f"} <= copies, copies
    assert any(r["op"] == "UploadPartCopy" for r in recent(proxy))
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read()[-4:] == b"tail"
    assert s3.get_object(Bucket=bucket, Key="small.txt")["Body"].read() == b"012X456789"
    edited = s3.get_object(Bucket=bucket, Key="big2.bin")["Body"].read()
    assert edited[100:101] == b"Y" and edited[:100] == big_edit[:100]


def test_without_sse_the_policy_refuses_the_write(s3, bucket, proxy, mounter):
    """The test's policy can fail: a mount without sse= fails the close
    (EIO, the write path's one error for data not stored, the log says
    why) and nothing is stored."""
    m = mounter()
    proxy.config(require_sse="aws:kms")
    assert errno_of(write, m.p("x.txt"), b"data") == errno.EIO
    assert "PutObject x.txt: HTTP 403 AccessDenied" in m.stderr_text()
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="x.txt")
    assert proxy.stats()["sig_rejections"].get("AccessDenied", 0) >= 1


def test_copies_keep_existing_kms_encryption_without_sse_option(s3, bucket, proxy, mounter):
    """An object stored with aws:kms (its HEAD says so: the proxy plays it)
    keeps its encryption, key, bucket key and storage class through
    chmod, rename, append and a staged edit of a mount with no sse=."""
    for k in ("k.bin", "app.bin", "edit.bin", "dd/x.bin", "dd/sub/y.bin"):
        put(s3, bucket, k, rand_bytes(4, 6 * MIB) if k == "app.bin" else b"abcdef")
    stored = {"x-amz-server-side-encryption": "aws:kms",
              "x-amz-server-side-encryption-aws-kms-key-id": OTHER_ARN,
              "x-amz-server-side-encryption-bucket-key-enabled": "true",
              "x-amz-storage-class": "STANDARD_IA"}
    proxy.config(inject_headers=[{"ops": ["HeadObject", "GetObject"],
                                  "path_regex": r"/(k|k2|app|edit|dd/x|dd/sub/y)\.bin$",
                                  "headers": stored}])
    m = mounter()
    proxy.config(require_sse="aws:kms")
    os.chmod(m.p("k.bin"), 0o640)                 # CopyObject REPLACE onto itself
    os.rename(m.p("k.bin"), m.p("k2.bin"))        # CopyObject COPY + delete
    with open(m.p("app.bin"), "ab") as f:         # CreateMultipartUpload + UploadPartCopy
        f.write(b"more")
    with open(m.p("edit.bin"), "r+b") as f:       # staged: PutObject of an edit
        f.seek(1)
        f.write(b"Z")
    os.rename(m.p("dd"), m.p("ee"))               # CopyObject COPY of every key
    writes = writes_of(proxy)
    assert proxy.stats()["sig_rejections"].get("AccessDenied", 0) == 0
    seen = {(r["op"], r["key"]) for r in writes}
    assert {("CopyObject", "k.bin"), ("CopyObject", "k2.bin"),
            ("CreateMultipartUpload", "app.bin"), ("PutObject", "edit.bin"),
            ("CopyObject", "ee/x.bin"), ("CopyObject", "ee/sub/y.bin")} <= seen, seen
    for r in writes:
        assert sse_of(r) == ("aws:kms", OTHER_ARN, "true"), (r["op"], r["key"], sse_of(r))
        assert hdr(r, "x-amz-storage-class") == "STANDARD_IA", (r["op"], r["key"])
    assert s3.get_object(Bucket=bucket, Key="edit.bin")["Body"].read() == b"aZcdef"


def test_mount_sse_wins_and_a_new_file_gets_no_kept_policy(s3, bucket, proxy, mounter):
    """sse=AES256 on the mount: a copy of an aws:kms object is asked as
    AES256 (the mount's policy is the bucket's rule) and sends no KMS key;
    a new file gets the mount's settings only."""
    put(s3, bucket, "k.bin", b"abc")
    proxy.config(inject_headers=[{"path_regex": r"/k\.bin$", "headers": {
        "x-amz-server-side-encryption": "aws:kms",
        "x-amz-server-side-encryption-aws-kms-key-id": OTHER_ARN}}])
    m = mounter(opts=["sse=AES256", "storage_class=STANDARD_IA"])
    proxy.reset()
    os.chmod(m.p("k.bin"), 0o600)
    write(m.p("n.txt"), b"new")
    by_key = {r["key"]: r for r in writes_of(proxy)}
    assert sse_of(by_key["k.bin"]) == ("AES256", None, None)
    assert hdr(by_key["k.bin"], "x-amz-storage-class") is None  # kept: STANDARD
    assert sse_of(by_key["n.txt"]) == ("AES256", None, None)
    assert hdr(by_key["n.txt"], "x-amz-storage-class") == "STANDARD_IA"


def test_requester_pays_on_every_request(s3, bucket, proxy, mounter, tmp_path):
    """A requester-pays bucket refuses a mount without requester_pays (the
    check before mounting fails); with it, every request carries the
    header, signed."""
    put(s3, bucket, "a.txt", b"payload")
    proxy.config(require_request_payer=True)
    m = mounter(opts=["requester_pays"])
    assert sorted(os.listdir(m.path)) == ["a.txt"]
    assert read(m.p("a.txt")) == b"payload"
    write(m.p("b.txt"), b"written")
    os.rename(m.p("b.txt"), m.p("c.txt"))
    os.unlink(m.p("a.txt"))
    st = proxy.stats()
    assert st["sig_rejections"].get("AccessDenied", 0) == 0, st["sig_rejections"]
    recs = [r for r in st["recent"] if r["op"] != "control"]
    assert len(recs) >= 8
    for r in recs:
        assert hdr(r, "x-amz-request-payer") == "requester", r["op"]
        auth = hdr(r, "authorization") or ""
        assert "x-amz-request-payer" in re.sub(r".*SignedHeaders=", "", auth), r["op"]
    assert s3.get_object(Bucket=bucket, Key="c.txt")["Body"].read() == b"written"


def test_requester_pays_policy_refuses_without_the_option(bucket, proxy, mounter):
    proxy.config(require_request_payer=True)
    with pytest.raises(Exception):
        mounter(watchdog=60)
    assert proxy.stats()["sig_rejections"].get("AccessDenied", 0) >= 1


def test_storage_class_of_new_objects(s3, bucket, proxy, mounter):
    """(s3rver knows no GLACIER_IR: INTELLIGENT_TIERING is one it stores.)"""
    m = mounter(opts=["storage_class=INTELLIGENT_TIERING"])
    proxy.reset()
    write(m.p("cold.bin"), b"x" * 1000)
    write(m.p("cold-multi.bin"), rand_bytes(5, 9 * MIB))
    by_key = {r["key"]: r for r in writes_of(proxy)}
    assert hdr(by_key["cold.bin"], "x-amz-storage-class") == "INTELLIGENT_TIERING"
    assert by_key["cold-multi.bin"]["op"] == "CreateMultipartUpload"
    assert hdr(by_key["cold-multi.bin"], "x-amz-storage-class") == "INTELLIGENT_TIERING"
    assert s3.head_object(Bucket=bucket, Key="cold.bin")["StorageClass"] == "INTELLIGENT_TIERING"
    # a rename keeps it: the copy names the class the source's HEAD told
    proxy.reset()
    os.rename(m.p("cold.bin"), m.p("cold2.bin"))
    (r,) = writes_of(proxy, "cold2.bin")
    assert hdr(r, "x-amz-storage-class") == "INTELLIGENT_TIERING"
    assert s3.head_object(Bucket=bucket, Key="cold2.bin")["StorageClass"] == "INTELLIGENT_TIERING"
    # an object of another class keeps its own, not the mount's (s3rver
    # stores the class and its HEAD tells it: no injection here)
    put(s3, bucket, "ia.bin", b"ia", StorageClass="STANDARD_IA")
    proxy.reset()
    os.rename(m.p("ia.bin"), m.p("ia2.bin"))
    (r,) = writes_of(proxy, "ia2.bin")
    assert hdr(r, "x-amz-storage-class") == "STANDARD_IA"
    assert s3.head_object(Bucket=bucket, Key="ia2.bin")["StorageClass"] == "STANDARD_IA"


def test_archived_object_read_fails_enodata_with_one_log_line(s3, bucket, proxy, mounter):
    """GET of an object in GLACIER answers 403 InvalidObjectState: the
    read fails with ENODATA (not EACCES: nothing is wrong with the
    permissions), the log says once that it needs a restore, the listing
    still shows it and a STANDARD neighbour reads."""
    put(s3, bucket, "frozen.csv", b"a,b\n1,2\n")
    put(s3, bucket, "warm.csv", b"w\n")
    m = mounter()
    proxy.config(fail_next=[{"status": 403, "code": "InvalidObjectState", "op": "GetObject",
                             "path_regex": r"/frozen\.csv$", "count": 50,
                             "message": "The operation is not valid for the object's storage class"}])
    assert sorted(os.listdir(m.path)) == ["frozen.csv", "warm.csv"]
    assert os.stat(m.p("frozen.csv")).st_size == 8
    for _ in range(3):
        assert errno_of(read, m.p("frozen.csv")) == errno.ENODATA
    assert read(m.p("warm.csv")) == b"w\n"
    log = m.stderr_text()
    lines = [l for l in log.splitlines() if "must be restored" in l]
    assert len(lines) == 1, log
    # and no other error line about it (one line, not one per layer)
    assert [l for l in log.splitlines() if "frozen.csv" in l and " error" in l] == lines, log
    assert "frozen.csv" in lines[0] and "InvalidObjectState" in lines[0]
    assert "AccessDenied" not in log


def test_content_type_from_the_file_name(s3, bucket, proxy, mounter):
    """New files get their extension's type from /etc/mime.types, else
    application/octet-stream; a chmod keeps a stored type."""
    m = mounter()
    write(m.p("a.csv"), b"x,y\n")
    write(m.p("x.unknownext"), b"?")
    write(m.p("big.csv"), rand_bytes(6, 9 * MIB))  # multipart: type at creation
    have_csv = os.path.exists("/etc/mime.types") and re.search(
        r"^text/csv\s.*\bcsv\b", open("/etc/mime.types").read(), re.M)
    if have_csv:
        assert s3.head_object(Bucket=bucket, Key="a.csv")["ContentType"] == "text/csv"
        assert s3.head_object(Bucket=bucket, Key="big.csv")["ContentType"] == "text/csv"
    assert s3.head_object(Bucket=bucket, Key="x.unknownext")["ContentType"] == \
        "application/octet-stream"
    put(s3, bucket, "typed.dat", b"1", ContentType="text/x-custom")
    os.chmod(m.p("typed.dat"), 0o600)
    os.rename(m.p("typed.dat"), m.p("typed2.dat"))
    assert s3.head_object(Bucket=bucket, Key="typed2.dat")["ContentType"] == "text/x-custom"
    if not have_csv:
        pytest.skip("this machine's /etc/mime.types has no text/csv line: csv type not checked")


def test_content_type_from_a_given_file_and_off(s3, bucket, proxy, mounter, tmp_path):
    types = tmp_path / "mime.types"
    types.write_bytes(b"# test table\napplication/x-pailfs-test  ptest PTX\n"
                      b"bad type line\ntext/\xff\xfe  junk\n\n")
    m = mounter(opts=[f"mime_types={types}"])
    write(m.p("f.ptest"), b"1")
    write(m.p("G.PTX"), b"2")
    write(m.p("h.junk"), b"3")
    assert s3.head_object(Bucket=bucket, Key="f.ptest")["ContentType"] == "application/x-pailfs-test"
    assert s3.head_object(Bucket=bucket, Key="G.PTX")["ContentType"] == "application/x-pailfs-test"
    assert s3.head_object(Bucket=bucket, Key="h.junk")["ContentType"] == "application/octet-stream"
    m.unmount()
    m2 = mounter(opts=["mime_types=off"])
    proxy.reset()
    write(m2.p("n.csv"), b"1")
    (r,) = writes_of(proxy, "n.csv")
    assert hdr(r, "content-type") is None  # none sent: the server's default applies


def test_kept_encryption_values_with_control_characters_are_refused(s3, bucket, proxy, mounter):
    """An encryption header pailfs would send back on a copy is refused
    when it holds a control character (it would end the header and start
    another): the chmod fails, no copy is made, the object is unchanged."""
    put(s3, bucket, "k.bin", b"abc")
    m = mounter()
    proxy.config(inject_headers=[{"ops": ["HeadObject"], "path_regex": r"/k\.bin$", "headers": {
        "x-amz-server-side-encryption": "aws:kms",
        "x-amz-server-side-encryption-aws-kms-key-id": "K\x01x-amz-acl: public-read"}}])
    assert errno_of(os.chmod, m.p("k.bin"), 0o600) == errno.EIO
    assert not [r for r in recent(proxy) if r["op"] == "CopyObject"]
    assert "x-amz-server-side-encryption*" in m.stderr_text()
    assert s3.get_object(Bucket=bucket, Key="k.bin")["Body"].read() == b"abc"
