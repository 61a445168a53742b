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

from mount import mounter  # noqa: F401

OPTS = ["retries=1"]  # two attempts, both spoiled: each failure is quick
XML = {"Content-Type": "application/xml"}


def spoil(proxy, op, count=50, **entry):
    proxy.config(fail_next=[dict(entry, op=op, count=count)])


def listing(bucket, prefix, contents, encoded=False):
    """A ListObjectsV2 page; contents are (key, etag) as they go in the XML
    text (so an entity such as &#13; is sent as written)."""
    items = "".join(
        f"<Contents><Key>{k}</Key><LastModified>2026-01-01T00:00:00.000Z"
        f"</LastModified><ETag>{e}</ETag><Size>4</Size>"
        "<StorageClass>STANDARD</StorageClass></Contents>"
        for k, e in contents)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult '
            'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{bucket}</Name><Prefix>{prefix}</Prefix>"
            f"<KeyCount>{len(contents)}</KeyCount><MaxKeys>1000</MaxKeys>"
            "<Delimiter>/</Delimiter>"
            + ("<EncodingType>url</EncodingType>" if encoded else "")
            + "<IsTruncated>false</IsTruncated>" + items
            + "</ListBucketResult>")


def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def sent_headers(proxy):
    """Every (name, value) of every request the proxy has seen lately."""
    return [(n, v) for r in proxy.stats()["recent"] for n, v in r["headers"]]


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
