"""Untrusted strings from the server (issue 17, item 7): an ETag or header
value with a control character, a key whose %-decoding holds a NUL, keys
with newlines and escape sequences on their way to the log, and a region
hint that is no region name.  The hostile answers are scripted at the fault
proxy (fail_next entries with a body or headers of their own), on top of
s3rver; the proxy records every request's headers, so what pailfs sent
afterwards can be checked byte by byte."""

import errno
import os

import pytest

import rig
from drive import drive, kv
from helpers import XML, listing_page, spoil
from mount import errno_of, mounter, read  # noqa: F401

OPTS = ["retries=1"]  # two attempts, both spoiled: each failure is quick


def listing(bucket, prefix, contents, encoded=False):
    """A ListObjectsV2 page; contents are (key, etag) as they go in the XML
    text (so an entity such as &#13; is sent as written)."""
    return listing_page(bucket, prefix, [(k, e, 4) for k, e in contents],
                        delimiter="/", encoding_type="url" if encoded else None)


def sent_headers(proxy):
    """Every (name, value) of every request the proxy has seen lately."""
    return [(n, v) for r in proxy.stats()["recent"] for n, v in r["headers"]]


def test_listing_etag_with_crlf_is_refused(proxy, s3, bucket, mounter):
    """An ETag that XML decoding turns into CR LF must never become part of
    a request header (If-Match of a read, copy-source-if-match of a
    rename): the listing holding it is refused, and readdir fails."""
    s3.put_object(Bucket=bucket, Key="inj/f", Body=b"data")
    # gunzip=off: a listed file is opened without a HEAD, with the ETag
    # its listing gave
    m = mounter(opts=OPTS + ["gunzip=off"])
    spoil(proxy, "ListObjectsV2", count=1, path_regex="delimiter=",
          status=200, headers=XML,
          body=listing(bucket, "inj/",
                       [("inj/f", "&quot;abc&quot;&#13;&#10;X-Injected: 1")]))
    listed = errno_of(os.listdir, m.p("inj"))
    # whatever the listing gave, use the file as a user would: read it,
    # rename it (both send the ETag they know in a header)
    errno_of(read, m.p("inj", "f"))
    errno_of(os.rename, m.p("inj", "f"), m.p("inj", "g"))
    headers = sent_headers(proxy)
    assert not [h for h in headers if h[0].lower() == "x-injected"], headers
    assert not [h for h in headers if "\r" in h[1] or "\n" in h[1]], headers
    assert listed == errno.EIO
    assert "control character" in m.stderr_text()
    # the read and the rename went on with the ETag of a HEAD
    assert os.listdir(m.p("inj")) == ["g"]
    assert read(m.p("inj", "g")) == b"data"


def test_head_etag_with_control_character_is_refused(proxy, s3, bucket,
                                                     mounter):
    """A response header pailfs keeps and may send back (here the ETag of a
    HEAD) with a control character fails that operation with EIO."""
    s3.put_object(Bucket=bucket, Key="h", Body=b"data")
    m = mounter(opts=OPTS)
    spoil(proxy, "HeadObject", status=200,
          headers={"ETag": '"abc"\x01\x1b[2J', "Content-Length": "4"})
    assert errno_of(os.stat, m.p("h")) == errno.EIO
    text = m.stderr_text()
    assert "control character" in text
    assert "\x1b" not in text and "\x01" not in text
    proxy.config(fail_next=[])
    assert read(m.p("h")) == b"data"


def test_key_decoding_to_nul_is_skipped(proxy, s3, bucket, mounter):
    """encoding-type=url: "dir/a%00/../../x" decodes to a name with a NUL,
    which no file name can hold; cut at the NUL it would be shown as
    "dir/a".  It is skipped like other names that cannot be shown."""
    s3.put_object(Bucket=bucket, Key="dir/ok", Body=b"fine")
    m = mounter(opts=OPTS)
    spoil(proxy, "ListObjectsV2", status=200, headers=XML,
          body=listing(bucket, "dir/", [("dir/a%00/../../x", '"e1"'),
                                        ("dir/ok", '"e2"')], encoded=True))
    assert sorted(os.listdir(m.p("dir"))) == ["ok"]
    assert 'skipping key "dir/a%00/../../x"' in m.stderr_text()


def test_directory_holding_a_nul_key_is_not_empty(proxy, s3, bucket,
                                                  mounter):
    """rmdir asks whether anything is under "d/": a key "d/%00" cut at the
    NUL read as the directory's own marker, so the directory looked empty
    and was removed while the key stayed.  A skipped key still counts."""
    s3.put_object(Bucket=bucket, Key="d/real", Body=b"r")
    m = mounter(opts=OPTS)
    os.stat(m.p("d"))
    spoil(proxy, "ListObjectsV2", path_regex="max-keys=2",
          status=200, headers=XML,
          body=listing(bucket, "d/", [("d/%00", '"e1"')], encoded=True))
    assert errno_of(os.rmdir, m.p("d")) == errno.ENOTEMPTY
    proxy.config(fail_next=[])
    assert os.listdir(m.p("d")) == ["real"]


def test_no_header_value_with_crlf_is_ever_sent(proxy, s3, bucket, tmp_path):
    """The last line of defence, below every check on what the server
    sent: the S3 client refuses to send a header whose value holds CR or
    LF, whoever handed it the value (here the command line of s3drive, as
    an If-Match and as metadata)."""
    s3.put_object(Bucket=bucket, Key="v", Body=b"version one")
    proxy.reset()
    r = drive(proxy.url, bucket, "get", "v", str(tmp_path / "o"), "0", "5",
              '"x"\r\nX-Injected: 1')
    assert r.returncode == 1 and "errno=EIO" in r.stderr, r.stderr
    assert "refused to send the if-match header" in r.stderr
    src = tmp_path / "src"
    src.write_bytes(b"new")
    r = drive(proxy.url, bucket, "put", "w", str(src), "--meta",
              "note=a\nX-Injected: 1")
    assert r.returncode == 1 and "errno=EIO" in r.stderr, r.stderr
    headers = sent_headers(proxy)
    assert not [h for h in headers if h[0].lower() == "x-injected"], headers
    assert proxy.stats()["requests_total"] == 0
    assert "w" not in [o["Key"] for o in
                       s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_control_characters_in_keys_are_logged_escaped(s3, bucket, mounter):
    """A key with a newline and an escape sequence reaches a log line (here
    the warning about a name too long to show): it is written escaped, one
    line, and never drives the terminal."""
    key = "logme/nl\nx\x1b[31m" + "k" * 300  # a component over 255 bytes
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    s3.put_object(Bucket=bucket, Key="logme/plain", Body=b"p")
    m = mounter()
    assert os.listdir(m.p("logme")) == ["plain"]
    text = m.stderr_text()
    assert "\x1b" not in text
    assert 'skipping key "logme/nl\\nx\\x1b[31m' + "k" * 300 + '"' in text
    line = [ln for ln in text.splitlines() if "skipping key" in ln]
    assert len(line) == 1 and line[0].endswith("not a valid file name")


@pytest.mark.parametrize("where", ["body", "header"])
@pytest.mark.parametrize("region", ["evil.com/x", "us-east-1.attacker"])
def test_region_hint_that_is_no_region_is_refused(proxy, s3, bucket, mounter,
                                                  where, region):
    """A 301 PermanentRedirect names the bucket's region in <Region> or in
    x-amz-bucket-region.  Followed, it would sign (and, on AWS, address:
    s3.REGION.amazonaws.com) the next request with whatever the server
    said.  A hint that is not [a-z0-9-]+ is refused: no request is made
    with it, and the operation fails with EIO, logged."""
    s3.put_object(Bucket=bucket, Key="r/f", Body=b"data")
    m = mounter(opts=OPTS)
    proxy.reset()
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            "<Code>PermanentRedirect</Code><Message>The bucket you are "
            "attempting to access must be addressed using the specified "
            "endpoint.</Message>"
            + (f"<Region>{region}</Region>" if where == "body" else "")
            + f"<Bucket>{bucket}</Bucket><RequestId>R1</RequestId></Error>")
    headers = dict(XML)
    if where == "header":
        headers["x-amz-bucket-region"] = region
    spoil(proxy, "ListObjectsV2", status=301, headers=headers, body=body)
    listed = errno_of(os.listdir, m.p("r"))
    auth = [v for n, v in sent_headers(proxy) if n.lower() == "authorization"]
    assert auth and all("/us-east-1/s3/aws4_request" in a for a in auth), auth
    assert not [a for a in auth if region.split("/")[0] in a]
    assert listed == errno.EIO
    text = m.stderr_text()
    assert "region" in text and "refused" in text
    assert f"is in region {region}" not in text
    proxy.config(fail_next=[])
    assert os.listdir(m.p("r")) == ["f"]


def test_head_bucket_region_header_that_is_no_region_is_ignored(proxy, bucket):
    """x-amz-bucket-region on a HeadBucket that succeeded: a bad one is
    refused (logged), and the client goes on signing for its region."""
    proxy.config(fail_next=[dict(op="HeadBucket", status=200, count=1,
                                 headers={"x-amz-bucket-region":
                                          "us-east-1.attacker"})])
    r = drive(proxy.url, bucket, "head-bucket", check=True)
    assert kv(r.stdout)["region"] == rig.REGION
    assert 'refused the server\'s region hint "us-east-1.attacker"' in r.stderr
    # and a good hint is still followed
    proxy.config(fail_next=[dict(op="HeadBucket", status=200, count=1,
                                 headers={"x-amz-bucket-region": "eu-west-3"})])
    r = drive(proxy.url, bucket, "head-bucket", check=True)
    assert kv(r.stdout)["region"] == "eu-west-3"
