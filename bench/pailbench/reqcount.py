"""reqcount.py: the S3 requests each workload cost, as the server saw them.

The counting itself happens inside s3rver (reqcount.js, loaded with
`node --require` through NODE_OPTIONS when the harness starts the server):
no extra hop, so the loopback throughput figures are not disturbed, and
the count is behind --wan's proxy, which forwards bytes, not HTTP. Here
are the Python side's pieces: starting the server with the counter,
reading the counters, differences around a workload, and their text.

Types (see classify() in reqcount.js): GET, HEAD, LIST, PUT (PutObject,
UploadPart, CopyObject, UploadPartCopy), DELETE (DeleteObject,
DeleteObjects), other (multipart create/complete/abort, bucket requests).
The harness's own requests (fixtures, checks) carry HARNESS_AGENT in their
User-Agent and are never counted.
"""

import contextlib
import http.client
import json
import os
import ssl
import time
import urllib.parse

TYPES = ("GET", "HEAD", "LIST", "PUT", "DELETE", "other")
HARNESS_AGENT = "pailbench-check"
CONTROL_PATH = "/__bench__/counts"
JS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reqcount.js")


@contextlib.contextmanager
def preloaded():
    """While in this block, node processes started load reqcount.js first
    (the rig's S3Server passes os.environ on to s3rver)."""
    old = os.environ.get("NODE_OPTIONS")
    os.environ["NODE_OPTIONS"] = ((old + " ") if old else "") + f'--require "{JS}"'
    try:
        yield
    finally:
        if old is None:
            del os.environ["NODE_OPTIONS"]
        else:
            os.environ["NODE_OPTIONS"] = old


def snapshot(server_url):
    """The server's counters since it started: {"types": {}, "ops": {}}, or
    None when the server has no counter (then nothing is counted)."""
    u = urllib.parse.urlsplit(server_url)
    if u.scheme == "https":  # bench/run --https: the rig's self-signed server
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=30,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", CONTROL_PATH)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            return None
        data = json.loads(body)
        return {"types": data.get("types", {}), "ops": data.get("ops", {})}
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def diff(before, after):
    """Requests counted between two snapshots; None if either is None."""
    if before is None or after is None:
        return None
    return {part: {k: n - before[part].get(k, 0) for k, n in after[part].items()
                   if n - before[part].get(k, 0)}
            for part in ("types", "ops")}


def add(a, b):
    """The sum of two differences (for a table's total row)."""
    if a is None or b is None:
        return a or b
    return {part: {k: a[part].get(k, 0) + b[part].get(k, 0)
                   for k in set(a[part]) | set(b[part])} for part in ("types", "ops")}


def total(counts):
    return sum(counts["types"].values()) if counts else None


def quiet(server_url, still=0.25, limit=10.0):
    """Wait until the server has counted nothing new for `still` seconds
    (at most `limit`): a filesystem may send requests after the command
    that caused them returned (uploads after close, read-ahead), and they
    belong to that command. Returns the last snapshot."""
    last = snapshot(server_url)
    if last is None:
        return None
    deadline = time.monotonic() + limit
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = snapshot(server_url)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= still:
            break
    return last


def text(counts, with_total=True):
    """'1,002: 1,000 GET, 2 LIST' (types in TYPES order); '0' for none."""
    if counts is None:
        return "—"
    n = total(counts)
    parts = [f"{counts['types'][t]:,} {t}" for t in TYPES if counts["types"].get(t)]
    if not parts:
        return "0"
    return (f"{n:,}: " if with_total else "") + ", ".join(parts)


def ops_text(counts):
    """Every S3 operation counted, for the log: 'GetObject 3, HeadObject 1'."""
    if not counts:
        return "—"
    return ", ".join(f"{op} {n}" for op, n in sorted(counts["ops"].items())) or "none"
