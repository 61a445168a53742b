"""Observability of a pailfs mount: the metrics file, `pailfs --stats`, the
log file and its reopening on SIGHUP, and syslog for a daemonised mount.

What is checked: -o metrics_file= exists after mounting and is strict
Prometheus text (every sample under its own HELP and TYPE, names, label
syntax, integer values, counters named *_total); its counters agree with
what the fault proxy counted (requests by operation and status, response
bytes) after reading a known object, and after injected 503 SlowDown
answers (retries, throttles); the file is replaced atomically (read
thousands of times while rewritten every second, never partial); the
root's stats xattr gives the same text and is neither listed nor settable;
`pailfs --stats` prints a table for a live mount and fails with one clear
line for a directory that is not a pailfs mount; -o logfile= receives a
time-stamped error line naming the key and the S3 request id; after the
file is renamed and SIGHUP sent, lines go to a new file at the configured
path and the mount stays up; a daemonised mount logs to syslog (a datagram
socket bound at /dev/log inside a private mount namespace, so nothing on
the machine sees it).
"""

import errno
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drive import clean_env
from mount import (PAILFS, fusermount_unmount, is_mounted, mnt,  # noqa: F401
                   mounter, pailfs_pids, read, wait_pids_gone, wait_until)

MiB = 1 << 20
STATS_XATTR = "user.pailfs.stats"

# Every metric the man page lists, with its type.
FAMILIES = {
    "pailfs_s3_requests_total": "counter",
    "pailfs_s3_sent_bytes_total": "counter",
    "pailfs_s3_received_bytes_total": "counter",
    "pailfs_s3_retries_total": "counter",
    "pailfs_s3_throttles_total": "counter",
    "pailfs_cache_hits_total": "counter",
    "pailfs_cache_misses_total": "counter",
    "pailfs_cache_evictions_total": "counter",
    "pailfs_cache_bytes": "gauge",
    "pailfs_cache_limit_bytes": "gauge",
    "pailfs_fuse_read_bytes_total": "counter",
    "pailfs_fuse_written_bytes_total": "counter",
    "pailfs_memory_bytes": "gauge",
    "pailfs_memory_limit_bytes": "gauge",
    "pailfs_inodes": "gauge",
    "pailfs_upload_parts_in_flight": "gauge",
    "pailfs_gzip_views_opened_total": "counter",
    "pailfs_gzip_inflated_bytes_total": "counter",
}

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')
SAMPLE_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (-?[0-9]+)\Z")


# --------------------------------------------------------------------------
# A strict parser of the Prometheus text format (the subset we emit)
# --------------------------------------------------------------------------

def parse_prom(text):
    """{(name, frozenset(labels.items())): int}; asserts the format."""
    assert text.endswith("\n"), "the text must end with a newline"
    samples = {}
    helps, types = {}, {}
    current = None  # the family whose samples may follow
    finished = set()  # families whose block ended
    for n, line in enumerate(text.split("\n")[:-1], 1):
        assert line, f"line {n}: empty line"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert NAME_RE.match(name), f"line {n}: bad name {name!r}"
            assert help_text.strip(), f"line {n}: empty HELP"
            assert name not in helps, f"line {n}: second HELP for {name}"
            assert name not in finished, f"line {n}: {name} split in two blocks"
            if current:
                finished.add(current)
            helps[name] = help_text
            current = None
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name in helps and name not in types, \
                f"line {n}: TYPE of {name} not right after its HELP"
            assert kind in ("counter", "gauge"), f"line {n}: type {kind!r}"
            if kind == "counter":
                assert name.endswith("_total"), f"line {n}: counter {name}"
            types[name] = kind
            current = name
            continue
        assert not line.startswith("#"), f"line {n}: stray comment {line!r}"
        m = SAMPLE_RE.match(line)
        assert m, f"line {n}: not a sample: {line!r}"
        name, labels_text, value = m.group(1), m.group(2), int(m.group(3))
        assert name == current, f"line {n}: {name} outside its HELP/TYPE block"
        labels = {}
        if labels_text is not None:
            pos = 0
            while pos < len(labels_text):
                lm = LABEL_RE.match(labels_text, pos)
                assert lm, f"line {n}: bad labels {labels_text!r}"
                assert lm.group(1) not in labels, f"line {n}: label twice"
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
                if pos < len(labels_text):
                    assert labels_text[pos] == ",", f"line {n}: {labels_text!r}"
                    pos += 1
                    assert pos < len(labels_text), f"line {n}: trailing comma"
        if types[name] == "counter":
            assert value >= 0, f"line {n}: negative counter"
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"line {n}: duplicate sample"
        samples[key] = value
    for name in helps:
        assert name in types, f"{name} has HELP but no TYPE"
    return samples, types


def value(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items()
               if n == name and want <= set(ls))


def stats_text(m):
    return os.getxattr(m.path, STATS_XATTR).decode()


def settled(proxy, m, timeout=10.0):
    """The proxy's counters and the mount's metrics once no request is in
    flight: two proxy snapshots around the mount's, all equal."""
    deadline = time.monotonic() + timeout
    while True:
        before = proxy.stats()
        samples, _ = parse_prom(stats_text(m))
        after = proxy.stats()
        same = (before["requests_total"] == after["requests_total"]
                and before["bytes_out"] == after["bytes_out"])
        if same and (value(samples, "pailfs_s3_requests_total")
                     == after["requests_total"]):
            return after, samples
        if time.monotonic() > deadline:
            return after, samples
        time.sleep(0.3)


# --------------------------------------------------------------------------
# The metrics file and the stats xattr
# --------------------------------------------------------------------------

def test_metrics_file_is_prometheus_text_agreeing_with_the_proxy(
        mounter, proxy, s3, bucket, tmp_path):
    data = os.urandom(3 * MiB + 12345)
    s3.put_object(Bucket=bucket, Key="known.bin", Body=data)
    path = tmp_path / "pailfs.prom"
    m = mounter(opts={"metrics_file": path, "metrics_interval": 1})
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), "no metrics file after mounting"
    samples, types = parse_prom(path.read_text())
    assert types == FAMILIES
    # The mount's check of the bucket is the first request it counted.
    assert value(samples, "pailfs_s3_requests_total", op="HeadBucket",
                 status="200") >= 1

    assert read(m.p("known.bin")) == data
    stats, samples = settled(proxy, m)
    got = value(samples, "pailfs_s3_requests_total")
    assert got == stats["requests_total"], (samples, stats)
    for op, n in stats["by_op"].items():
        assert value(samples, "pailfs_s3_requests_total", op=op) == n, op
    for status, n in stats["by_status"].items():
        assert value(samples, "pailfs_s3_requests_total",
                     status=status) == n, status
    assert value(samples, "pailfs_s3_requests_total", op="GetObject") >= 1
    assert value(samples, "pailfs_s3_received_bytes_total") == \
        stats["bytes_out"]
    assert value(samples, "pailfs_s3_sent_bytes_total") == stats["bytes_in"]
    assert value(samples, "pailfs_fuse_read_bytes_total") >= len(data)
    assert value(samples, "pailfs_s3_retries_total") == 0
    assert value(samples, "pailfs_s3_throttles_total") == 0
    assert value(samples, "pailfs_cache_misses_total") >= 1
    assert value(samples, "pailfs_cache_bytes") >= len(data)
    assert value(samples, "pailfs_memory_limit_bytes") == 256 * MiB

    # A second read of the same bytes after the page cache is dropped:
    # served by pailfs's memory or disk cache, no GET.
    gets = value(samples, "pailfs_s3_requests_total", op="GetObject")
    fd = os.open(m.p("known.bin"), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, 4096, MiB) == data[MiB:MiB + 4096]
    finally:
        os.close(fd)
    stats, samples = settled(proxy, m)
    assert value(samples, "pailfs_s3_requests_total", op="GetObject") == gets
    assert stats["by_op"].get("GetObject", 0) == gets

    # The xattr and the file say the same once the file is rewritten
    # (counters only grow; nothing runs meanwhile).
    time.sleep(2.5)
    file_samples, _ = parse_prom(path.read_text())
    now, _ = parse_prom(stats_text(m))
    for name in ("pailfs_s3_requests_total", "pailfs_s3_received_bytes_total",
                 "pailfs_fuse_read_bytes_total"):
        assert value(file_samples, name) == value(now, name), name

    # The last write happens at unmount, and leaves no temporary file.
    m.unmount()
    final, _ = parse_prom(path.read_text())
    assert value(final, "pailfs_s3_requests_total") == \
        proxy.stats()["requests_total"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("pailfs.prom.")]


def test_metrics_count_retries_and_throttles(mounter, proxy, s3, bucket,
                                             tmp_path):
    data = os.urandom(100000)
    s3.put_object(Bucket=bucket, Key="slow.bin", Body=data)
    m = mounter(opts={"metrics_file": tmp_path / "m.prom"})
    proxy.config(fail_next=[{"status": 503, "code": "SlowDown",
                             "message": "Please reduce your request rate.",
                             "op": "GetObject", "count": 2}])
    assert read(m.p("slow.bin")) == data
    stats, samples = settled(proxy, m)
    assert stats["faults"]["fail_next"] == 2
    assert value(samples, "pailfs_s3_requests_total", op="GetObject",
                 status="503") == 2
    assert value(samples, "pailfs_s3_requests_total", op="GetObject",
                 status="503") == stats["by_status"]["503"]
    assert value(samples, "pailfs_s3_retries_total") == 2
    assert value(samples, "pailfs_s3_throttles_total") == 2
    assert value(samples, "pailfs_s3_requests_total", op="GetObject",
                 status="200") + value(samples, "pailfs_s3_requests_total",
                                       op="GetObject", status="206") >= 1


def test_metrics_count_writes_parts_and_memory(mounter, proxy, s3, bucket):
    part = 5 * MiB
    data = os.urandom(2 * part + 17)
    m = mounter(opts={"part_size": "5M"})
    proxy.config(latency_ms=1500)  # parts stay in flight while we look
    with open(m.p("w.bin"), "wb") as f:
        for off in range(0, 2 * part + 128 * 1024, 128 * 1024):
            f.write(data[off:off + 128 * 1024])
        during, _ = parse_prom(stats_text(m))
        f.write(data[2 * part + 128 * 1024:])
    assert value(during, "pailfs_upload_parts_in_flight") >= 1
    assert value(during, "pailfs_memory_bytes", use="write") >= part
    proxy.config(latency_ms=0)
    assert s3.get_object(Bucket=bucket, Key="w.bin")["Body"].read() == data
    stats, samples = settled(proxy, m)
    assert value(samples, "pailfs_fuse_written_bytes_total") == len(data)
    assert value(samples, "pailfs_upload_parts_in_flight") == 0
    assert value(samples, "pailfs_memory_bytes", use="write") == 0
    assert value(samples, "pailfs_s3_requests_total", op="UploadPart",
                 status="200") == 3 == stats["by_op"]["UploadPart"]
    assert value(samples, "pailfs_s3_requests_total",
                 op="CompleteMultipartUpload") == 1
    assert value(samples, "pailfs_s3_sent_bytes_total") == stats["bytes_in"]
    assert stats["bytes_in"] >= len(data)


def test_metrics_count_gzip_views(mounter, proxy, s3, bucket):
    data = b"".join(b'{"n": %d, "text": "some json"}\n' % i
                    for i in range(100000))
    gz = gzip.compress(data)
    s3.put_object(Bucket=bucket, Key="enc.json", Body=gz,
                  ContentEncoding="gzip")
    m = mounter()
    before, _ = parse_prom(stats_text(m))
    assert value(before, "pailfs_gzip_views_opened_total") == 0
    assert value(before, "pailfs_gzip_inflated_bytes_total") == 0
    assert read(m.p("enc.json")) == data
    stats, after = settled(proxy, m)
    assert value(after, "pailfs_gzip_views_opened_total") == 1
    assert value(after, "pailfs_gzip_inflated_bytes_total") >= len(data)
    assert value(after, "pailfs_fuse_read_bytes_total") >= len(data)
    # what came over the wire is the compressed object, not the data
    assert value(after, "pailfs_s3_received_bytes_total") == stats["bytes_out"]
    assert stats["bytes_out"] < len(data)


def test_metrics_file_is_replaced_atomically(mounter, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="a.bin", Body=os.urandom(200000))
    path = tmp_path / "atomic.prom"
    m = mounter(opts={"metrics_file": path, "metrics_interval": 1})
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    # Each rewrite is a new file renamed over the old one, so the inode read
    # changes; count the changes, not the distinct numbers: the filesystem
    # may give the next file the number the replaced one freed, and a set
    # of numbers then stays at two however often the file is replaced.
    last_ino, rewrites, reads, last_requests = None, 0, 0, []
    end = time.monotonic() + 4.5
    n = 0
    while time.monotonic() < end:
        if n % 200 == 0:  # change the figures between rewrites
            read(m.p("a.bin"))
            assert not os.path.exists(m.p(f"missing-{n}"))  # a request
        n += 1
        with open(path) as f:
            ino = os.fstat(f.fileno()).st_ino
            rewrites += last_ino is not None and ino != last_ino
            last_ino = ino
            text = f.read()
        samples, types = parse_prom(text)  # never a partial file
        assert types == FAMILIES
        last_requests.append(value(samples, "pailfs_s3_requests_total"))
        reads += 1
    assert reads > 200, reads
    assert rewrites >= 3, "the file was not rewritten every second"
    assert last_requests == sorted(last_requests), "a counter went back"
    assert last_requests[-1] > last_requests[0]
    leftovers = [p for p in os.listdir(tmp_path) if ".tmp." in p]
    assert not leftovers


def test_stats_xattr_is_private_to_the_root(mnt, tmp_path):
    assert STATS_XATTR not in os.listxattr(mnt.path)
    text = stats_text(mnt)
    samples, _ = parse_prom(text)
    assert value(samples, "pailfs_s3_requests_total", op="HeadBucket") >= 1
    for op in (lambda: os.setxattr(mnt.path, STATS_XATTR, b"x"),
               lambda: os.removexattr(mnt.path, STATS_XATTR)):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EPERM
    # Elsewhere the name is an ordinary user xattr.
    os.mkdir(mnt.p("d"))
    with pytest.raises(OSError) as e:
        os.getxattr(mnt.p("d"), STATS_XATTR)
    assert e.value.errno == errno.ENODATA
    os.setxattr(mnt.p("d"), STATS_XATTR, b"mine")
    assert os.getxattr(mnt.p("d"), STATS_XATTR) == b"mine"
    assert STATS_XATTR in os.listxattr(mnt.p("d"))


def test_stats_command_prints_a_table_and_refuses_other_dirs(mnt, tmp_path):
    with open(mnt.p("w.txt"), "wb") as f:
        f.write(b"x" * 5000)
    r = subprocess.run([str(PAILFS), "--stats", mnt.path], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["METRIC", "LABELS", "VALUE"]
    rows = {}
    for line in lines[1:]:
        parts = line.split()
        rows[(parts[0], " ".join(p for p in parts[1:] if "=" in p))] = line
    assert ("s3_requests_total", "op=HeadBucket status=200") in rows
    written = rows[("fuse_written_bytes_total", "")]
    assert re.search(r"\b5000\b", written) and "(4.9 KiB)" in written
    assert ("s3_requests_total", "op=PutObject status=200") in rows
    assert r.stderr == ""

    plain = tmp_path / "plain"
    plain.mkdir()
    r = subprocess.run([str(PAILFS), "--stats", str(plain)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == f"pailfs: {plain} is not the root of a pailfs mount\n"

    r = subprocess.run([str(PAILFS), "--stats", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stdout == ""
    assert "No such file or directory" in r.stderr
    assert r.stderr.startswith("pailfs: ") and r.stderr.count("\n") == 1

    # A directory inside the mount is not its root.
    os.mkdir(mnt.p("sub"))
    r = subprocess.run([str(PAILFS), "--stats", mnt.p("sub")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "is not the root of a pailfs mount" in r.stderr


# --------------------------------------------------------------------------
# The log file
# --------------------------------------------------------------------------

LINE_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z pailfs "
                     r"(error|warn|info|debug): ")


def fail_get(proxy, key):
    """Every GET of `key` answers 500 (the kernel tries a failed read again
    with a smaller one, so failing one GET is not enough)."""
    proxy.config(fail_next=[{"status": 500, "code": "InternalError",
                             "message": "injected", "op": "GetObject",
                             "path_regex": re.escape(key), "count": 50}])


def test_logfile_gets_error_lines_with_key_and_request_id(
        mounter, proxy, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="dir/broken.bin", Body=b"z" * 1000)
    log = tmp_path / "pailfs.log"
    m = mounter(opts={"logfile": log, "retries": 0})
    fail_get(proxy, "dir/broken.bin")
    with pytest.raises(OSError) as e:
        read(m.p("dir", "broken.bin"))
    assert e.value.errno == errno.EIO
    assert wait_until(lambda: "broken.bin" in log.read_text(), 10.0)
    lines = log.read_text().splitlines()
    assert lines and all(LINE_RE.match(ln) for ln in lines), lines
    errors = [ln for ln in lines if "dir/broken.bin" in ln]
    failed = proxy.stats()["faults"]["fail_next"]
    assert failed >= 1 and len(errors) == failed, (failed, lines)
    for ln in errors:  # one line per failed request: key and request id
        assert re.search(r" pailfs error: GetObject dir/broken\.bin: HTTP 500 "
                         r"InternalError: injected \(request id "
                         r"[0-9A-F]{16}\)$", ln), ln
    # Into the file, not onto stderr.
    assert "broken.bin" not in m.stderr_text()
    samples, _ = parse_prom(stats_text(m))
    assert value(samples, "pailfs_s3_retries_total") == 0
    assert value(samples, "pailfs_s3_requests_total", op="GetObject",
                 status="500") == failed


def test_sighup_reopens_the_logfile(mounter, proxy, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="one.bin", Body=b"1" * 100)
    s3.put_object(Bucket=bucket, Key="two.bin", Body=b"2" * 100)
    log = tmp_path / "rot.log"
    m = mounter(opts={"logfile": log, "retries": 0})
    fail_get(proxy, "one.bin")
    with pytest.raises(OSError):
        read(m.p("one.bin"))
    assert wait_until(lambda: "one.bin" in log.read_text(), 10.0)

    rotated = tmp_path / "rot.log.1"
    os.rename(log, rotated)
    os.kill(m.pid, signal.SIGHUP)
    assert wait_until(lambda: log.exists() and "reopened" in log.read_text(), 10.0)
    assert is_mounted(m.path), "SIGHUP with a log file must not unmount"
    fail_get(proxy, "two.bin")
    with pytest.raises(OSError):
        read(m.p("two.bin"))
    assert wait_until(lambda: "two.bin" in log.read_text(), 10.0)
    new, old = log.read_text(), rotated.read_text()
    assert "two.bin" not in old and "reopened" not in old
    assert "one.bin" in old and "one.bin" not in new
    assert all(LINE_RE.match(ln) for ln in new.splitlines())
    # Still serving after the signal.
    assert read(m.p("one.bin")) == b"1" * 100
    m.unmount()
    assert m.returncode == 0


def test_daemon_with_logfile_logs_there_after_detaching(
        proxy, s3, bucket, tmp_path):
    """In the background, a log file wins over syslog: the lines after the
    daemon left the terminal (and closed its stderr) land in the file."""
    s3.put_object(Bucket=bucket, Key="d.bin", Body=b"d" * 1000)
    mp = tmp_path / "mp"
    mp.mkdir()
    log = tmp_path / "daemon.log"
    metrics = tmp_path / "daemon.prom"
    fail_get(proxy, "d.bin")
    r = subprocess.run(
        [str(PAILFS), "-o", f"endpoint={proxy.url},path_style,retries=0,"
         f"log_level=info,cache_dir={tmp_path}/cache,logfile={log},"
         f"metrics_file={metrics}", bucket, str(mp)],
        capture_output=True, text=True, timeout=60, env=clean_env())
    pids = pailfs_pids(mp)
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(str(mp))
        with pytest.raises(OSError) as e:
            read(mp / "d.bin")
        assert e.value.errno == errno.EIO
        assert wait_until(lambda: "d.bin" in log.read_text(), 10.0)
        r2 = subprocess.run([str(PAILFS), "--stats", str(mp)],
                            capture_output=True, text=True, timeout=30)
        assert r2.returncode == 0 and "op=GetObject status=500" in r2.stdout
    finally:
        fusermount_unmount(mp)
        assert wait_pids_gone(pids, 60)
    text = log.read_text()
    assert re.search(r" pailfs error: GetObject d\.bin: HTTP 500 InternalError:"
                     r" injected \(request id [0-9A-F]{16}\)\n", text), text
    assert re.search(r" pailfs info: unmounting " + re.escape(str(mp)), text)
    assert all(LINE_RE.match(ln) for ln in text.splitlines())
    # the metrics file's last write came at the end of the mount
    final, _ = parse_prom(metrics.read_text())
    assert value(final, "pailfs_s3_requests_total", op="GetObject",
                 status="500") == proxy.stats()["faults"]["fail_next"]


def test_bad_logfile_fails_before_mounting(proxy, bucket, tmp_path):
    mp = tmp_path / "mp"
    mp.mkdir()
    r = subprocess.run(
        [str(PAILFS), "-f", "-o", f"endpoint={proxy.url},path_style,"
         f"logfile={tmp_path}/no/such/dir/x.log", bucket, str(mp)],
        capture_output=True, text=True, timeout=30, env=clean_env())
    assert r.returncode == 1
    assert r.stderr == (f"pailfs: cannot open log file {tmp_path}/no/such/dir/"
                        "x.log: No such file or directory\n")
    assert not is_mounted(str(mp))


@pytest.mark.parametrize("planted", ["other_users_file", "fifo"])
def test_logfile_planted_by_another_is_refused(proxy, bucket, tmp_path, planted):
    """A file another user made at the log's path (in a directory others
    can write) would let them read the log, a FIFO would hold the mount:
    both refused before mounting, and nothing written to them."""
    mp = tmp_path / "mp"
    mp.mkdir()
    log = tmp_path / "x.log"
    if planted == "fifo":
        os.mkfifo(log)
    else:
        log.write_text("")
        os.chown(log, 65534, 65534)
    r = subprocess.run(
        [str(PAILFS), "-f", "-o", f"endpoint={proxy.url},path_style,logfile={log}",
         bucket, str(mp)], capture_output=True, text=True, timeout=30, env=clean_env())
    # (a FIFO nobody reads: ENXIO; one being read: EINVAL)
    why = "No such device or address" if planted == "fifo" else "Operation not permitted"
    assert r.returncode == 1
    assert r.stderr == f"pailfs: cannot open log file {log}: {why}\n"
    assert not is_mounted(str(mp))
    if planted != "fifo":
        assert log.read_text() == ""


# --------------------------------------------------------------------------
# syslog of a daemon, in a private mount namespace
# --------------------------------------------------------------------------

SYSLOG_HELPER = r'''
import json, os, socket, subprocess, sys, time
cfg = json.loads(sys.argv[1])
work = cfg["work"]
old = os.path.join(work, "olddev")
os.makedirs(old, exist_ok=True)
def run(*a):
    subprocess.run(a, check=True)
# This namespace's own /dev: a tmpfs with only what pailfs needs, so a
# socket at /dev/log here is seen by nobody else on the machine.
run("mount", "--bind", "/dev", old)
run("mount", "-t", "tmpfs", "tmpfs", "/dev")
for name in ("null", "fuse", "zero", "urandom", "random"):
    open("/dev/" + name, "w").close()
    run("mount", "--bind", os.path.join(old, name), "/dev/" + name)
os.symlink("/proc/self/fd", "/dev/fd")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/dev/log")
os.chmod("/dev/log", 0o666)
sock.settimeout(0.2)
mp = cfg["mountpoint"]
r = subprocess.run(cfg["argv"], capture_output=True, text=True, timeout=60,
                   env=cfg["env"])
out = {"rc": r.returncode, "stderr": r.stderr, "read_errno": None,
       "msgs": []}
if r.returncode == 0:
    try:
        with open(os.path.join(mp, cfg["key"]), "rb") as f:
            f.read()
    except OSError as e:
        out["read_errno"] = e.errno
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(cfg["key"] in m for m in out["msgs"]):
        try:
            out["msgs"].append(sock.recv(65536).decode("utf-8", "replace"))
        except socket.timeout:
            pass
    subprocess.run(["fusermount3", "-u", mp])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("unmounting" in m for m in out["msgs"]):
        try:
            out["msgs"].append(sock.recv(65536).decode("utf-8", "replace"))
        except socket.timeout:
            pass
print(json.dumps(out))
'''


def test_daemon_logs_to_syslog(proxy, s3, bucket, tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private /dev/log")
    s3.put_object(Bucket=bucket, Key="sys.bin", Body=b"s" * 1000)
    mp = tmp_path / "mp"
    mp.mkdir()
    fail_get(proxy, "sys.bin")
    argv = [str(PAILFS), "-o",
            f"endpoint={proxy.url},path_style,retries=0,log_level=info,"
            f"cache_dir={tmp_path}/cache", bucket, str(mp)]
    cfg = {"work": str(tmp_path), "mountpoint": str(mp), "argv": argv,
           "key": "sys.bin", "env": clean_env()}
    r = subprocess.run(["unshare", "-m", "--propagation", "private",
                        sys.executable, "-c", SYSLOG_HELPER, json.dumps(cfg)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0, out["stderr"]
    assert out["read_errno"] == errno.EIO
    msgs = out["msgs"]
    errors = [x for x in msgs if "sys.bin" in x]
    assert errors, msgs
    # <facility daemon (3) * 8 + err (3)>, ident pailfs with the pid
    for x in errors:
        assert re.match(r"<27>.*pailfs\[\d+\]: error: GetObject sys\.bin: "
                        r"HTTP 500 InternalError: injected \(request id "
                        r"[0-9A-F]{16}\)$", x), x
    assert any(re.match(r"<30>.*pailfs\[\d+\]: info: unmounting ", x)
               for x in msgs), msgs
