"""The S3 client (src/s3) against a real server behind the judging proxy.

Each test drives the client through tests/s3drive and checks what landed
in the bucket with boto3 straight to the server (never with pailfs), and
what crossed the wire with the proxy's counters.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

import rig

from drive import clean_env, drive, kv, put_file
from helpers import body, sha256


def test_put_get_roundtrip(proxy, s3, bucket, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    r = drive(proxy.url, bucket, "put", "dir/obj.bin", put_file(tmp_path, "a", data),
              check=True)
    assert kv(r.stdout)["etag"].strip('"') == s3.head_object(
        Bucket=bucket, Key="dir/obj.bin")["ETag"].strip('"')
    assert sha256(body(s3, bucket, "dir/obj.bin")) == sha256(data)
    out = tmp_path / "out"
    drive(proxy.url, bucket, "get", "dir/obj.bin", str(out), check=True)
    assert out.read_bytes() == data
    st = proxy.stats()
    assert st["by_op"]["PutObject"] == 1 and st["by_op"]["GetObject"] == 1
    assert sum(st["sig_rejections"].values()) == 0


def test_empty_object(proxy, s3, bucket, tmp_path):
    drive(proxy.url, bucket, "put", "empty", put_file(tmp_path, "e", b""), check=True)
    assert s3.head_object(Bucket=bucket, Key="empty")["ContentLength"] == 0
    out = tmp_path / "out"
    r = drive(proxy.url, bucket, "get", "empty", str(out), check=True)
    assert out.read_bytes() == b""
    assert "size=0" in r.stderr


@pytest.mark.parametrize("off,length", [
    (0, 1),          # s3rver answers bytes=0-0 with the whole object
    (0, 10),
    (100, 1000),
    (65535, 65537),
    (199999, 1),     # the last byte
    (199990, 100),   # runs past the end: only what exists
    (200000, 10),    # at the end: nothing
    (250000, 10),    # past the end: nothing
    (12345, None),   # to the end
])
def test_ranged_get_exact_bytes(proxy, s3, bucket, tmp_path, off, length):
    data = os.urandom(200000)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    out = tmp_path / "out"
    args = ["get", "r", str(out), str(off)] + ([str(length)] if length else [])
    drive(proxy.url, bucket, *args, check=True)
    want = data[off:off + length] if length else data[off:]
    assert out.read_bytes() == want


def test_head_object_metadata(proxy, s3, bucket, tmp_path):
    drive(proxy.url, bucket, "put", "m", put_file(tmp_path, "m", b"x" * 10),
          "--content-type", "text/plain", "--meta", "mode=33188", "--meta", "uid=1000",
          check=True)
    h = s3.head_object(Bucket=bucket, Key="m")
    assert h["Metadata"] == {"mode": "33188", "uid": "1000"}
    assert h["ContentType"] == "text/plain"
    info = kv(drive(proxy.url, bucket, "head", "m", check=True).stdout)
    assert info["size"] == "10"
    assert info["meta-mode"] == "33188" and info["meta-uid"] == "1000"
    assert info["content-type"] == "text/plain"
    assert info["etag"].strip('"') == h["ETag"].strip('"')


def test_missing_key_and_bucket(proxy, bucket, tmp_path):
    r = drive(proxy.url, bucket, "head", "nope")
    assert r.returncode == 1 and "errno=ENOENT" in r.stderr
    r = drive(proxy.url, bucket, "get", "nope", str(tmp_path / "o"))
    assert r.returncode == 1 and "errno=ENOENT" in r.stderr and "NoSuchKey" in r.stderr
    r = drive(proxy.url, "no-such-bucket-here", "head-bucket")
    assert r.returncode == 1 and "errno=ENOENT" in r.stderr
    assert drive(proxy.url, bucket, "head-bucket", check=True).stdout == "region=us-east-1\n"


def test_list_paging_2500_keys(proxy, keys_2500):
    bucket, keys = keys_2500  # the session's, read-only
    r = drive(proxy.url, bucket, "list", check=True)
    listed = [line[2:].split("\t")[0] for line in r.stdout.splitlines() if line.startswith("K ")]
    assert listed == keys
    assert "pages=3" in r.stdout
    assert proxy.stats()["by_op"]["ListObjectsV2"] == 3
    # smaller pages, prefix and start-after
    r = drive(proxy.url, bucket, "list", "--max-keys", "700", "--start-after", keys[999],
              check=True)
    listed = [line[2:].split("\t")[0] for line in r.stdout.splitlines() if line.startswith("K ")]
    assert listed == keys[1000:]
    assert "pages=3" in r.stdout
    r = drive(proxy.url, bucket, "list", "--prefix", "big/f024", check=True)
    listed = [line[2:].split("\t")[0] for line in r.stdout.splitlines() if line.startswith("K ")]
    assert listed == keys[2400:2500]


def test_list_delimiter_common_prefixes(proxy, s3, bucket):
    for k in ["top.txt", "d1/a", "d1/b", "d2/x/y", "d3/"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"1")
    r = drive(proxy.url, bucket, "list", "--delimiter", "/", check=True)
    lines = r.stdout.splitlines()
    assert [l for l in lines if l.startswith("P ")] == ["P d1/", "P d2/", "P d3/"]
    assert [l.split("\t")[0] for l in lines if l.startswith("K ")] == ["K top.txt"]
    r = drive(proxy.url, bucket, "list", "--delimiter", "/", "--prefix", "d2/", check=True)
    assert "P d2/x/" in r.stdout.splitlines()


SPECIAL_KEYS = [
    "with space", "plus+sign", "per%cent", "tilde~", "semi;colon", "hash#tag",
    "question?mark", "star*", "équipe/ünïcødé/日本語", "a//b", "dir/./dot",
    "quote'and\"double", "amp&lt", "eq=ual", "comma,", "colon:x", "at@",
    "dollar$", "brackets[]{}", "caret^`|",
]


@pytest.mark.parametrize("key", SPECIAL_KEYS)
def test_special_keys_round_trip(proxy, s3, bucket, tmp_path, key):
    data = key.encode() * 3
    drive(proxy.url, bucket, "put", key, put_file(tmp_path, "k", data), check=True)
    # the exact key landed, as an independent client sees it
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert listed == [key]
    assert body(s3, bucket, key) == data
    out = tmp_path / "out"
    drive(proxy.url, bucket, "get", key, str(out), check=True)
    assert out.read_bytes() == data
    r = drive(proxy.url, bucket, "list", check=True)
    assert r.stdout.splitlines()[0] == f"K {key}\t{len(data)}\t" + \
        s3.head_object(Bucket=bucket, Key=key)["ETag"]
    drive(proxy.url, bucket, "delete", key, check=True)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_multipart_three_parts(proxy, s3, bucket, tmp_path):
    part = 5 * 1024 * 1024
    data = os.urandom(2 * part + 12345)
    r = drive(proxy.url, bucket, "mpu", "mp/file", put_file(tmp_path, "mp", data), str(part),
              check=True)
    assert kv(r.stdout)["parts"] == "3"
    assert sha256(body(s3, bucket, "mp/file")) == sha256(data)
    by_op = proxy.stats()["by_op"]
    assert by_op["CreateMultipartUpload"] == 1
    assert by_op["UploadPart"] == 3
    assert by_op["CompleteMultipartUpload"] == 1


def test_upload_part_copy(proxy, s3, bucket, tmp_path):
    data = os.urandom(11 * 1024 * 1024 + 3)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    r = drive(proxy.url, bucket, "mpu-copy", "src", "dst", str(5 * 1024 * 1024), check=True)
    assert kv(r.stdout)["parts"] == "3"
    assert sha256(body(s3, bucket, "dst")) == sha256(data)
    st = proxy.stats()
    assert st["by_op"]["UploadPartCopy"] == 3
    assert st["by_op"].get("GetObject", 0) == 0  # nothing came through us


def test_copy_object_metadata_copy_and_replace(proxy, s3, bucket):
    s3.put_object(Bucket=bucket, Key="orig", Body=b"hello", Metadata={"mode": "33188"})
    drive(proxy.url, bucket, "copy", "orig", "same-meta", check=True)
    assert s3.head_object(Bucket=bucket, Key="same-meta")["Metadata"] == {"mode": "33188"}
    drive(proxy.url, bucket, "copy", "orig", "orig", "--meta", "mode=33261", "--meta",
          "mtime=1700000000", check=True)
    h = s3.head_object(Bucket=bucket, Key="orig")
    assert h["Metadata"] == {"mode": "33261", "mtime": "1700000000"}
    assert body(s3, bucket, "orig") == b"hello"


def test_delete_and_delete_missing(proxy, s3, bucket):
    s3.put_object(Bucket=bucket, Key="gone", Body=b"x")
    drive(proxy.url, bucket, "delete", "gone", check=True)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    drive(proxy.url, bucket, "delete", "never-was", check=True)


def test_batch_delete_1500(proxy, s3, bucket):
    keys = [f"del/{i:04d} x+y" for i in range(1500)]
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"1"), keys))
    s3.put_object(Bucket=bucket, Key="keep", Body=b"1")
    r = drive(proxy.url, bucket, "delete-many", input="\n".join(keys) + "\n", check=True)
    assert r.stdout.strip() == "deleted=1500 errors=0"
    left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert left == ["keep"]
    assert proxy.stats()["by_op"]["DeleteObjects"] == 2


def test_if_match_mismatch_is_estale(proxy, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="v", Body=b"version one")
    r = drive(proxy.url, bucket, "get", "v", str(tmp_path / "o"), "0", "5", '"0000"')
    assert r.returncode == 1 and "errno=ESTALE" in r.stderr


def test_get_to_buf_bounded_and_appending(proxy, s3, bucket, tmp_path):
    """s3_get_to_buf: the bytes asked for, appended across two GETs (as a
    shared gzip index is read); a body that would pass max_len is EFBIG
    with nothing kept; a failed second GET leaves the first's bytes."""
    data = os.urandom(200000)
    s3.put_object(Bucket=bucket, Key="b", Body=data)
    etag = s3.head_object(Bucket=bucket, Key="b")["ETag"]
    out = tmp_path / "out"
    # the whole object, the second GET to the end, exactly at the bound
    r = drive(proxy.url, bucket, "get-buf", "b", str(out), "200000", check=True)
    assert out.read_bytes() == data and kv(r.stdout)["len"] == "200000"
    assert "size=200000" in r.stderr
    # a range, in two halves
    drive(proxy.url, bucket, "get-buf", "b", str(out), "5000", "1000", "5000", etag,
          check=True)
    assert out.read_bytes() == data[1000:6000]
    # one byte over the bound: refused; the second GET's bytes are dropped,
    # the first's stay
    out.unlink()
    r = drive(proxy.url, bucket, "get-buf", "b", str(out), "199999")
    assert r.returncode == 1 and "errno=EFBIG" in r.stderr, r.stderr
    assert kv(r.stdout)["len"] == "1000" and not out.exists()
    # a version that does not match: ESTALE, nothing kept
    r = drive(proxy.url, bucket, "get-buf", "b", str(out), "200000", "0", "2000", '"0000"')
    assert r.returncode == 1 and "errno=ESTALE" in r.stderr
    assert kv(r.stdout)["len"] == "0"


def test_get_to_mem_bounded(proxy, s3, bucket, tmp_path):
    """s3_get_to_mem: exactly the range into the caller's memory; a longer
    body is EFBIG, never written past the end."""
    data = os.urandom(70000)
    s3.put_object(Bucket=bucket, Key="m", Body=data)
    out = tmp_path / "out"
    drive(proxy.url, bucket, "get-mem", "m", str(out), "70000", check=True)
    assert out.read_bytes() == data
    drive(proxy.url, bucket, "get-mem", "m", str(out), "4", "69996", "4", check=True)
    assert out.read_bytes() == data[-4:]
    # the object ends before the room does: fewer bytes, no error
    r = drive(proxy.url, bucket, "get-mem", "m", str(out), "100", "69990", check=True)
    assert out.read_bytes() == data[69990:] and kv(r.stdout)["len"] == "10"
    r = drive(proxy.url, bucket, "get-mem", "m", str(out), "69999")
    assert r.returncode == 1 and "errno=EFBIG" in r.stderr
    assert int(kv(r.stdout)["len"]) <= 69999
    assert proxy.stats()["by_op"]["GetObject"] == 4  # EFBIG is not retried


def test_abort_and_list_multipart_uploads(proxy, s3, bucket):
    ids = [kv(drive(proxy.url, bucket, "mpu-create", k, check=True).stdout)["upload_id"]
           for k in ("up/a", "up/b")]
    r = drive(proxy.url, bucket, "list-uploads", "up/", check=True)
    assert sorted(r.stdout.splitlines()) == [f"U up/a\t{ids[0]}", f"U up/b\t{ids[1]}"]
    drive(proxy.url, bucket, "mpu-abort", "up/a", ids[0], check=True)
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] \
        == [ids[1]]
    r = drive(proxy.url, bucket, "mpu-abort", "up/a", ids[0])
    assert r.returncode == 1 and "errno=ENOENT" in r.stderr and "NoSuchUpload" in r.stderr


def test_server_refusing_abort_reported_as_errno(tmp_path):
    """A server without AbortMultipartUpload (405) or ListMultipartUploads
    (501): the client reports ENOTSUP / ENOSYS, never success."""
    with rig.S3Server(tmp_path, buckets=["b"], refuse_abort=True) as srv, \
            rig.Proxy(srv.url) as px:
        upload_id = kv(drive(px.url, "b", "mpu-create", "k", check=True).stdout)["upload_id"]
        r = drive(px.url, "b", "mpu-abort", "k", upload_id)
        assert r.returncode == 1 and "errno=ENOTSUP" in r.stderr
        r = drive(px.url, "b", "list-uploads")
        assert r.returncode == 1 and "errno=ENOSYS" in r.stderr
