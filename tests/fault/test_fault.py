"""The fault suite (issue 8): one test per scenario, each running the mixed
workload of workload.py through the proxy while something breaks, then
checking every object from outside by sha256 and printing its table row.

Every scenario asserts: no byte lost; an operation returns an error only
where the scenario makes success impossible (and then the old data is
intact, which verify() checks object by object); no strand hangs. The
outage scenarios also bound how long a failing operation takes, watch the
strands' /proc/PID/stat for D state, and check that the mount works
afterwards. docs/RELIABILITY.md describes the scenarios and quotes the
table.
"""

import errno
import json
import os
import subprocess
import time

import pytest

import workload
from mount import fusermount_unmount, is_mounted
from workload import Workload

MiB = workload.MiB

# Options of every mount: gzip views on (the workload reads one).
BASE_OPTS = ["gunzip=view"]

# The outage scenarios use faster settings than the defaults (retries=4,
# connect_timeout=10, stall_timeout=30) so that the suite stays short; the
# behaviour under test (fail with EIO within the bound, recover after) is
# the same. A single S3 request then gives up after about
#   3 attempts x max(connect 2 s, stall 5 s) + backoff (0.2 + 0.4 s)
# = 15.6 s (a little more when it had sent bytes: libcurl averages the
# speed over its last 5 s); one file system call may wait on a few requests
# (a write waits for a part in flight, close() completes or aborts the
# upload), hence CALL_BOUND.
OUTAGE_OPTS = BASE_OPTS + ["retries=2", "connect_timeout=2", "stall_timeout=5"]
REQUEST_BOUND = 3 * 5 + 0.6
CALL_BOUND = 3 * REQUEST_BOUND  # ~47 s: the most one system call may take

WORKLOAD_TIMEOUT = 600  # a strand still running after this is hung


# In the 20 s outage the directory strand makes one file every PACE seconds
# (about 40 s for 200), so that it runs from before the outage to after it;
# from a little after the outage on (pace_until), the rest go at once.
PACE = 0.2


def run_workload(rig, opts, strands=workload.ALL_STRANDS, pace=0,
                 pace_until=None):
    w = Workload(None, rig.s3, rig.bucket)
    w.prepare()
    w.m = rig.mount(opts=opts)
    w.t0 = time.monotonic()
    w.start(strands, pace=pace, pace_until=pace_until)
    return w


def wait_for_middle(rig, w, parts=12, timeout=300):
    """Until the streaming writer has sent `parts` parts of its 32: the
    workload is well under way, every strand busy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rig.stats()["by_op"].get("UploadPart", 0) >= parts:
            return time.monotonic()
        assert "stream" in w.running(), "the writer ended before its middle"
        time.sleep(0.05)
    raise AssertionError(f"the workload did not reach its middle in {timeout}s")


def finish(table, scenario, rig, w, verdict, faults, allowed, note=""):
    """Print and record the table row, then assert what every scenario
    promises."""
    st = rig.stats()
    row = workload.table_row(scenario, verdict, st["requests_total"], faults,
                             time.monotonic() - w.t0, note)
    table(row)
    # Every operation's record, for a post-mortem of a failed scenario.
    with open(rig.tmp / "records.json", "w") as f:
        json.dump({"t0": w.t0, "records": w.records, "d_state": w.d_state,
                   "d_where": w.d_where,
                   "landed_despite_error": verdict.landed_despite_error},
                  f, indent=1)
    if verdict.landed_despite_error:
        print("stored although close() failed:",
              verdict.landed_despite_error)
    bad = [r for r in verdict.errors if not allowed(r)]
    for r in verdict.errors:
        print("error:", {k: r[k] for k in r if k not in ("names", "picks")})
    assert not w.hung, f"strands hung (state): {w.hung} {w.d_where}"
    assert verdict.lost == 0, verdict.lost_what
    assert not verdict.problems, verdict.problems
    assert not bad, f"errors where success was possible: {bad}"


def fault_counts(st, *kinds):
    return {k: st["faults"].get(k, 0) for k in kinds}


# --------------------------------------------------------------------------
# 1. Transient errors: everything succeeds, byte-exact
# --------------------------------------------------------------------------

def test_transient_errors(rig, fault_table):
    """5% 503 SlowDown, 2% connection resets, 1% truncated bodies, on every
    request: the retries hide all of it."""
    rig.config(p503=0.05, preset=0.02, ptruncate=0.01, seed=8)
    w = run_workload(rig, BASE_OPTS)
    w.wait(WORKLOAD_TIMEOUT)
    w.after()
    v = w.verify()
    n = fault_counts(rig.stats(), "503", "reset", "truncate")
    faults = (f"{n['503']} 503 SlowDown, {n['reset']} resets, "
              f"{n['truncate']} truncated")
    finish(fault_table, "5% 503 + 2% reset + 1% truncate", rig, w, v, faults,
           allowed=lambda r: False)
    assert all(n.values()), n  # each kind was injected


# --------------------------------------------------------------------------
# 2. Latency spikes past the stall timeout: retried, everything succeeds
# --------------------------------------------------------------------------

SPIKE_STALL_S = 3
SPIKE_MS = 10_000  # beyond stall_timeout plus libcurl's 5 s speed window


def test_latency_spikes(rig, fault_table):
    """1% of answers are held back SPIKE_MS before their first byte, longer
    than the mount's stall_timeout: pailfs gives up on them and retries
    (the request was carried out; S3 requests are idempotent)."""
    rig.config(pspike=0.01, spike_ms=SPIKE_MS, seed=9)
    w = run_workload(rig, BASE_OPTS + [f"stall_timeout={SPIKE_STALL_S}"])
    w.wait(WORKLOAD_TIMEOUT)
    w.after()
    v = w.verify()
    spikes = rig.stats()["faults"].get("spike", 0)
    faults = (f"{spikes} answers delayed {SPIKE_MS // 1000} s "
              f"(stall_timeout={SPIKE_STALL_S})")
    # A spike ridden out would make its call last 10 s or more; given up
    # after the stall timeout, about 3-8 s and a retry.
    slowest = max(r["slowest"] for r in w.records if r["strand"] != "after")
    finish(fault_table, "1% latency spikes", rig, w, v, faults,
           allowed=lambda r: False,
           note=f"slowest system call {slowest:.1f} s")
    assert spikes > 0


# --------------------------------------------------------------------------
# 3. The server stops for 20 s, then comes back
# --------------------------------------------------------------------------

OUTAGE_S = 20
UP_GRACE = 2.0  # an operation begun this long after the server is back succeeds


@pytest.mark.parametrize("how", ["stopped", "frozen"])
def test_outage_20s(rig, fault_table, how):
    """The server goes away for 20 s in the middle of the workload, then
    comes back. "stopped": s3rver and the proxy are stopped (connections
    refused, as when the server process is down). "frozen": s3rver is
    SIGSTOPped (connections accepted, requests never answered, as when the
    server hangs or the network drops everything): only pailfs's timeouts
    end those requests."""
    paced = rig.tmp / "outage-over"
    w = run_workload(rig, OUTAGE_OPTS, pace=PACE, pace_until=paced)
    t_down = wait_for_middle(rig, w)
    rig.down() if how == "stopped" else rig.freeze()
    time.sleep(max(0.0, t_down + OUTAGE_S - time.monotonic()))
    rig.up() if how == "stopped" else rig.thaw()
    t_up = time.monotonic()
    # The directory strand keeps its pace past UP_GRACE (creates begun then
    # must succeed: `back` below), then makes the rest at once: waiting out
    # a pace for each would only make the scenario longer.
    time.sleep(UP_GRACE + 1.0)
    paced.touch()
    w.wait(WORKLOAD_TIMEOUT)
    failed_after = w.after()
    v = w.verify()

    def allowed(r):
        # EIO, for an operation that overlapped the outage (an open file's
        # failure is sticky: its close() may come after the server is back)
        return r["errno"] == errno.EIO and r["start"] < t_up + UP_GRACE \
            and r["end"] > t_down and r["strand"] != "after"

    slow = [r for r in v.errors if r["slowest"] > CALL_BOUND]
    slowest = max((r["slowest"] for r in v.errors), default=0.0)
    # Operations in flight across the outage: they failed, or (a frozen
    # server's requests are retried for up to ~30 s) waited it out.
    hit = [r for r in w.records if r["start"] < t_up and
           r["end"] > t_down + 1.0]
    rode = [r for r in hit if not r["errno"]]
    finish(fault_table, f"server {how} {OUTAGE_S} s", rig, w, v,
           f"1 outage of {OUTAGE_S} s ("
           f"{'connections refused' if how == 'stopped' else 'no answers'})",
           allowed, note=f"{len(rode)} in flight across it succeeded; "
           f"slowest failing call {slowest:.1f} s, "
           f"longest D state {w.max_d_state():.1f} s")
    assert hit, "no operation overlapped the outage: it missed the workload"
    if how == "stopped":  # refused connections fail at once
        assert v.errors, "the outage failed no operation"
    back = [r for r in w.records
            if r["start"] > t_up + UP_GRACE and r["strand"] == "dir"]
    assert back and not any(r["errno"] for r in back), \
        "the directory strand did not go on after the outage"
    assert not slow, f"failing calls slower than {CALL_BOUND}s: {slow}"
    # "none left in D state": no strand stayed in D (waiting in the kernel
    # on a request the dead server never answered) longer than one system
    # call may take.
    assert w.max_d_state() < CALL_BOUND, (w.d_state, w.d_where)
    assert not failed_after, failed_after


# --------------------------------------------------------------------------
# 4. The server stops for good: unmount still completes
# --------------------------------------------------------------------------

UNMOUNT_BOUND = 60

# The server gone for good: nothing is waited out, so a request gives up
# sooner still, after 2 attempts of at most about 5 s + 2 s each (libcurl
# sees a stall only once no byte moved for the 5 s it averages its speed
# over, then stall_timeout), and after one once the retry budget is spent.
# Frozen, the strands in the middle of an operation are killed after
# FROZEN_PATIENCE, and each stays in D state until pailfs answers the FUSE
# request it was in (its requests fail) and its files' flushes at exit
# (their uploads fail or are aborted): that bound, not the patience, is
# what the scenario waits for (with OUTAGE_OPTS, about 40 s). What is
# under test -- strands killed in the middle of uploads, then an unmount
# that completes and loses nothing -- is the same at any setting.
GONE_OPTS = BASE_OPTS + ["retries=1", "connect_timeout=2", "stall_timeout=2"]
FROZEN_PATIENCE = 10  # seconds the strands get before they are killed


@pytest.mark.parametrize("how", ["stopped", "frozen"])
def test_server_gone_for_good(rig, fault_table, how):
    """The server goes away in the middle of the workload and never comes
    back; then the mount is unmounted. "stopped": every operation fails
    fast (connections refused) and the strands end by themselves.
    "frozen": requests hang until pailfs's timeouts end them, so strands
    still waiting after FROZEN_PATIENCE seconds are killed (SIGKILL, as an
    operator would), which releases their open files in the middle of
    uploads the server will never answer."""
    w = run_workload(rig, GONE_OPTS)
    t_down = wait_for_middle(rig, w)
    if how == "stopped":
        rig.down()
        # Every strand must finish: its operations fail within the bound.
        w.wait(WORKLOAD_TIMEOUT)
    else:
        rig.freeze()
        w.wait(FROZEN_PATIENCE, kill_late=True)
    m = w.m
    t0 = time.monotonic()
    r = fusermount_unmount(m.path)
    assert r.returncode == 0, f"fusermount3 -u: {r.stderr}"
    try:
        m.proc.wait(UNMOUNT_BOUND)
    except subprocess.TimeoutExpired:
        pass
    took = time.monotonic() - t0
    exited = m.proc.poll() is not None
    rc = m.unmount(check=False)  # collects the process (kills it if alive)
    rig.up() if how == "stopped" else rig.thaw()  # to read what was stored
    v = w.verify()
    killed = f", {len(w.killed)} strands killed" if w.killed else ""
    finish(fault_table, f"server {how} for good", rig, w, v,
           "server gone from the middle on" + killed,
           lambda r: r["errno"] == errno.EIO and r["end"] > t_down,
           note=f"unmount took {took:.1f} s")
    assert exited and took < UNMOUNT_BOUND, \
        f"pailfs still running {took:.0f}s after fusermount3 -u"
    assert rc == 0, f"pailfs exited {rc}"
    assert not is_mounted(m.path)
    assert v.errors, "the outage failed no operation: it missed the workload"
    if how == "frozen":  # strands were in the middle of operations
        assert w.killed, "every strand ended before the patience ran out"


# --------------------------------------------------------------------------
# 5. pailfs killed with SIGKILL during writes, then mounted again
# --------------------------------------------------------------------------

def test_sigkill_then_remount(rig, fault_table):
    w = run_workload(rig, BASE_OPTS + ["abort_stale_uploads=off"])
    wait_for_middle(rig, w)
    m = w.m
    t_kill = time.monotonic()
    m.proc.kill()
    m.proc.wait(10)
    # The strands see the dead mount (ENOTCONN) until they end; only then
    # is it detached, so none of them writes into the bare directory.
    w.wait(WORKLOAD_TIMEOUT)
    fusermount_unmount(m.path, lazy=True)
    m._kill()
    left = rig.s3.list_multipart_uploads(Bucket=rig.bucket).get("Uploads", [])
    # Remounted with stale uploads aborted past 1 s: those of the killed
    # process are older by now.
    time.sleep(1.5)
    m2 = rig.mount(opts=BASE_OPTS + ["abort_stale_uploads=1s"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = rig.s3.list_multipart_uploads(
            Bucket=rig.bucket).get("Uploads", [])
        if not after:
            break
        time.sleep(0.2)
    failed_after = w.after(m2)
    v = w.verify()
    finish(fault_table, "pailfs SIGKILLed, remounted", rig, w, v,
           f"SIGKILL mid-write ({len(left)} uploads left open)",
           lambda r: r["errno"] in (errno.ENOTCONN, errno.EIO,
                                    errno.ECONNABORTED)
           and r["end"] > t_kill and r["strand"] != "after",
           note=f"{len(left)} stale uploads aborted at remount")
    assert left, "the kill left no multipart upload: it missed the writes"
    assert after == [], f"stale uploads not aborted: {after}"
    assert not failed_after, failed_after


# --------------------------------------------------------------------------
# 6. The cache directory on a 64 MiB tmpfs that fills
# --------------------------------------------------------------------------

def test_cache_tmpfs_full(rig, fault_table, tmp_path):
    cache = tmp_path / "cache64"
    cache.mkdir()
    # mode=0700: pailfs refuses a cache directory others can write (a
    # tmpfs's root is 1777 by default)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700",
                    "tmpfs", str(cache)], check=True)
    try:
        # The block cache may use nearly all of it: reading read.bin fills
        # it, and then the staged files find no room.
        w = run_workload(rig, BASE_OPTS + [f"cache_dir={cache}",
                                           "cache_size=60M"],
                         strands=("read", "gz", "stream", "dir"))
        reads = w.procs["read"]
        reads.wait(WORKLOAD_TIMEOUT)
        w.start(("staged_new", "staged_edit"))
        w.wait(WORKLOAD_TIMEOUT)
        df = os.statvfs(cache)
        w.after()
        v = w.verify()
        full = [r for r in v.errors if r["errno"] == errno.ENOSPC]
        finish(fault_table, "cache on a 64 MiB tmpfs", rig, w, v,
               "cache disk full", lambda r: r["errno"] == errno.ENOSPC and
               r["strand"] == "staged",
               note=f"{df.f_bfree * df.f_frsize // MiB} MiB left free")
        assert full, "no staged write met a full disk"
        w.m.unmount()
    finally:
        subprocess.run(["umount", "-l", str(cache)])

