#!/usr/bin/python3
"""ops.py: the measurements that are not one shell pipeline, each run by the
harness as its own process (so a hang is killed by a timeout, not waited
for) and each printing one JSON object on stdout. Times are taken here,
around the operation only, not Python's start-up.

Through a mount:
  fs-firstbyte PATH N SIZE LOCAL   open + pread 1 byte + close, N times, at N
                                   distinct offsets (so no sample is served
                                   by what an earlier one fetched), the kernel
                                   page cache dropped before each
  fs-blocks PATH LOCAL N           N random 4 KiB blocks compared with LOCAL

The raw limit (no filesystem):
  raw-firstbyte URL N SIZE LOCAL   ranged GET of 1 byte on a kept-alive connection
  raw-randread URL SIZE JOBS SECS LOCAL   4 KiB ranged GETs, JOBS threads with
                                   one kept-alive connection each; every block
                                   compared with LOCAL
  raw-put ENDPOINT KEY FILE        boto3 multipart upload (upload_file)
  raw-small-put ENDPOINT PREFIX DIR [THREADS]   PUT every file under DIR, 16
                                   threads (1: one after another, as cp sends them,
                                   presigned first, on one kept-alive connection)
  raw-small-get ENDPOINT PREFIX DIR   GET them back, sha256 of the concatenation
  raw-small-rm ENDPOINT PREFIX [each]   list, then DeleteObjects (each: one
                                   DeleteObject a key, one after another, as rm
                                   sends them, presigned first, on one
                                   kept-alive connection)
  raw-list ENDPOINT PREFIX [delim]  ListObjectsV2, every page (presigned, http.client)
"""

import concurrent.futures
import hashlib
import http.client
import json
import math
import os
import random
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))

BUCKET = "bench"


def out(obj):
    print(json.dumps(obj), flush=True)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def offsets(n, size):
    step = size // n
    return [min(i * step + (i * 4099) % 4096, size - 1) for i in range(n)]


def local_bytes(local, off, n):
    with open(local, "rb") as f:
        f.seek(off)
        return f.read(n)


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100.0 * len(s)) - 1))]


# -------------------------------------------------------------------------- fs

def fs_firstbyte(path, n, size, local):
    samples, bad = [], 0
    for off in offsets(int(n), int(size)):
        drop_caches()
        t = time.perf_counter()
        fd = os.open(path, os.O_RDONLY)
        b = os.pread(fd, 1, off)
        os.close(fd)
        samples.append((time.perf_counter() - t) * 1000)
        if b != local_bytes(local, off, 1):
            bad += 1
    out({"samples_ms": samples, "bad": bad})


def fs_blocks(path, local, n):
    rng = random.Random(7)
    size = os.path.getsize(local)
    bad = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(int(n)):
            off = rng.randrange(size // 4096) * 4096
            if os.pread(fd, 4096, off) != local_bytes(local, off, 4096):
                bad += 1
    finally:
        os.close(fd)
    out({"checked": int(n), "bad": bad})


# -------------------------------------------------------------------------- raw

def _conn(url):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60), \
        u.path + ("?" + u.query if u.query else "")


def _ranged_get(conn, target, off, n):
    conn.request("GET", target, headers={"Range": f"bytes={off}-{off + n - 1}"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 206:
        raise RuntimeError(f"GET range: HTTP {r.status}")
    return body


def raw_firstbyte(url, n, size, local):
    conn, target = _conn(url)
    _ranged_get(conn, target, 0, 1)  # connect outside the samples
    samples, bad = [], 0
    for off in offsets(int(n), int(size)):
        t = time.perf_counter()
        b = _ranged_get(conn, target, off, 1)
        samples.append((time.perf_counter() - t) * 1000)
        if b != local_bytes(local, off, 1):
            bad += 1
    out({"samples_ms": samples, "bad": bad})


def raw_randread(url, size, jobs, seconds, local):
    size, jobs, seconds = int(size), int(jobs), float(seconds)
    lat = [[] for _ in range(jobs)]
    bad = [0] * jobs
    errors = [0] * jobs
    deadline = time.perf_counter() + seconds
    start = threading.Barrier(jobs + 1)

    def job(j):
        rng = random.Random(j)
        conn, target = _conn(url)
        lfd = os.open(local, os.O_RDONLY)
        start.wait()
        while time.perf_counter() < deadline:
            off = rng.randrange(size // 4096) * 4096
            t = time.perf_counter()
            try:
                body = _ranged_get(conn, target, off, 4096)
            except Exception:
                errors[j] += 1
                conn.close()
                conn, target = _conn(url)
                continue
            lat[j].append(time.perf_counter() - t)
            if body != os.pread(lfd, 4096, off):
                bad[j] += 1
        os.close(lfd)

    threads = [threading.Thread(target=job, args=(j,)) for j in range(jobs)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    all_lat = [x for l in lat for x in l]
    out({"ios": len(all_lat), "seconds": elapsed, "iops": len(all_lat) / elapsed,
         "p99_ms": pct(all_lat, 99) * 1000 if all_lat else None,
         "bad": sum(bad), "errors": sum(errors)})


def client(endpoint):
    import rig
    return rig.boto3_client(endpoint, retries=2, read_timeout=300,
                            max_pool_connections=32)


def raw_put(endpoint, key, path):
    c = client(endpoint)
    t = time.perf_counter()
    c.upload_file(path, BUCKET, key)
    out({"seconds": time.perf_counter() - t})


def _small_files(top):
    files = []
    for d, _, names in os.walk(top):
        for name in names:
            p = os.path.join(d, name)
            files.append(os.path.relpath(p, top))
    return sorted(files)


def raw_small_put(endpoint, prefix, top, threads=16):
    files = _small_files(top)
    bodies = {f: open(os.path.join(top, f), "rb").read() for f in files}
    if int(threads) == 1:
        seconds = _one_at_a_time(endpoint, "put_object", "PUT", 200,
                                 [(f"{prefix}/{f}", bodies[f]) for f in files])
        return out({"seconds": seconds, "count": len(files)})
    c = client(endpoint)

    def put(f):
        c.put_object(Bucket=BUCKET, Key=f"{prefix}/{f}", Body=bodies[f])

    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(int(threads)) as ex:
        list(ex.map(put, files))
    out({"seconds": time.perf_counter() - t, "count": len(files)})


def _one_at_a_time(endpoint, operation, method, status, items):
    """Each (key, body) of items in one request, one after another on one
    kept-alive connection, presigned before the clock starts: what one
    request costs on this network and server, without boto3's own time per
    call (under load 45-90 ms a PUT against 28-34 presigned).  Returns the
    seconds they took."""
    c = client(endpoint)
    u = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    signed = [(urllib.parse.urlsplit(c.generate_presigned_url(
        operation, Params={"Bucket": BUCKET, "Key": key})), body) for key, body in items]
    t = time.perf_counter()
    for url, body in signed:
        conn.request(method, url.path + "?" + url.query, body=body)
        r = conn.getresponse()
        r.read()
        if r.status != status:
            raise RuntimeError(f"{method} {url.path}: HTTP {r.status}")
    return time.perf_counter() - t


def raw_small_get(endpoint, prefix, top):
    c = client(endpoint)
    files = _small_files(top)

    def get(f):
        return c.get_object(Bucket=BUCKET, Key=f"{prefix}/{f}")["Body"].read()

    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        bodies = list(ex.map(get, files))
    seconds = time.perf_counter() - t
    h = hashlib.sha256()
    for b in bodies:
        h.update(b)
    out({"seconds": seconds, "count": len(files), "sha256": h.hexdigest()})


def raw_small_rm(endpoint, prefix, how="batch"):
    c = client(endpoint)
    t = time.perf_counter()
    keys = []
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    if how == "each":  # the listing is timed too: rm reads the directory
        listed = time.perf_counter() - t
        seconds = _one_at_a_time(endpoint, "delete_object", "DELETE", 204,
                                 [(k, None) for k in keys])
        return out({"seconds": listed + seconds, "count": len(keys)})
    for i in range(0, len(keys), 1000):
        c.delete_objects(Bucket=BUCKET, Delete={
            "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
    out({"seconds": time.perf_counter() - t, "count": len(keys)})


def raw_list(endpoint, prefix, delimiter=""):
    """ListObjectsV2, every page, on one kept-alive connection; pages parsed
    with ElementTree (botocore's parser is slower than the server here)."""
    import xml.etree.ElementTree as ET
    c = client(endpoint)
    u = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    keys, prefixes = [], []
    token = None
    t = time.perf_counter()
    while True:
        params = {"Bucket": BUCKET, "Prefix": prefix + "/"}
        if delimiter:
            params["Delimiter"] = delimiter
        if token:
            params["ContinuationToken"] = token
        url = urllib.parse.urlsplit(c.generate_presigned_url("list_objects_v2", Params=params))
        conn.request("GET", url.path + "?" + url.query)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"ListObjectsV2: HTTP {r.status}")
        token = None
        for el in ET.fromstring(body):
            tag = el.tag.rsplit("}", 1)[-1]
            if tag == "Contents":
                k = s = None
                for sub in el:
                    name = sub.tag.rsplit("}", 1)[-1]
                    if name == "Key":
                        k = sub.text
                    elif name == "Size":
                        s = int(sub.text)
                keys.append((k, s))
            elif tag == "CommonPrefixes":
                prefixes += [sub.text for sub in el]
            elif tag == "NextContinuationToken":
                token = el.text
        if not token:
            break
    out({"seconds": time.perf_counter() - t, "keys": keys, "prefixes": prefixes})


COMMANDS = {
    "fs-firstbyte": fs_firstbyte, "fs-blocks": fs_blocks,
    "raw-firstbyte": raw_firstbyte, "raw-randread": raw_randread,
    "raw-put": raw_put, "raw-small-put": raw_small_put,
    "raw-small-get": raw_small_get, "raw-small-rm": raw_small_rm,
    "raw-list": raw_list,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
