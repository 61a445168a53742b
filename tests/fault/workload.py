"""workload.py: the fault suite's mixed workload and its external check.

Every scenario runs the same workload through a pailfs mount while the
scenario breaks something (the proxy injects faults, the server goes away,
pailfs is killed, the cache disk fills):

  stream   overwrite stream.bin (1 MiB old) with 256 MiB, front to back:
           streamed as multipart parts, nothing staged
  staged   write staged-new.bin (40 MiB, new) back to front, and patch
           staged-edit.bin (40 MiB, existing) in 8 places: both staged in
           the cache directory and uploaded at close
  read     read read.bin (256 MiB) whole
  gz       read logs.json, the gzip view of logs.json.gz, whole and at 16
           offsets out of order
  dir      make tree/ with 200 small files, list it, rename it to
           tree-moved/, list that

Each strand is a child process (worker.py), all running at once. Their
operations come back as records (start, end, errno, slowest system call).
Afterwards verify() reads every object straight from s3rver with boto3
(never through pailfs) and decides, object by object, whether what is
stored is what the operations' outcomes promise:

  a write whose close() returned 0   exactly what its successful writes
                                     made (a failed write that changed
                                     nothing does not undo the others)
  a write whose close() failed       the old bytes (or, if the completion
                                     landed but its answer was lost, the
                                     new ones; counted apart as "stored
                                     although close() failed")
  a writer killed mid-operation      the old bytes, or what some prefix of
                                     its writes made
  an object nobody wrote             its original bytes
  a read that returned 0             the bytes it returned are the object's
  anything else in the bucket        a failure

"Bytes lost" adds up the sizes of objects that break this and of reads
that returned wrong bytes; it must be 0 in every scenario. "Bytes verified"
adds up what was compared by sha256 and found right.
"""

import errno
import functools
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import data
from mount import proc_state

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"
PYTHON = "/usr/bin/python3"
MiB = data.MiB

STREAM_SIZE = 256 * MiB
STAGED_SIZE = 40 * MiB
READ_SIZE = 256 * MiB
GZ_PLAIN_SIZE = 24 * MiB
DIR_COUNT = 200
STREAM_OLD_SIZE = MiB + 3

# seeds of the contents
SEED_STREAM_OLD, SEED_STREAM_NEW = 11, 12
SEED_STAGED_NEW, SEED_EDIT_OLD, SEED_EDIT = 21, 22, 23
SEED_READ, SEED_GZ = 31, 41

ALL_STRANDS = ("stream", "staged_new", "staged_edit", "read", "gz", "dir")


# --------------------------------------------------------------------------
# Expected contents (computed once per test session)
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def blob(seed, size):
    return data.blob(seed, size)


@functools.lru_cache(maxsize=None)
def digest(seed, size):
    return data.stream_sha(seed, size)


@functools.lru_cache(maxsize=None)
def edited():
    new = data.patched(SEED_EDIT, blob(SEED_EDIT_OLD, STAGED_SIZE))
    return data.sha256(new), len(new)


@functools.lru_cache(maxsize=None)
def gz():
    plain, packed = data.gz_pair(GZ_PLAIN_SIZE, SEED_GZ)
    return plain, packed


def gz_offsets():
    rng = random.Random(SEED_GZ)
    return sorted({rng.randrange(0, GZ_PLAIN_SIZE - 4096) for _ in range(16)},
                  key=lambda _: rng.random())


class Version:
    """One acceptable content of a key: its sha256 and size."""

    def __init__(self, label, sha, size):
        self.label, self.sha, self.size = label, sha, size

    def __repr__(self):
        return f"{self.label}({self.size} B)"


def v_stream_old():
    return Version("old", digest(SEED_STREAM_OLD, STREAM_OLD_SIZE),
                   STREAM_OLD_SIZE)


def v_stream_new():
    return Version("new", digest(SEED_STREAM_NEW, STREAM_SIZE), STREAM_SIZE)


def v_staged_new():
    return Version("new", digest(SEED_STAGED_NEW, STAGED_SIZE), STAGED_SIZE)


def v_edit_old():
    return Version("old", digest(SEED_EDIT_OLD, STAGED_SIZE), STAGED_SIZE)


def v_edit_new():
    sha, size = edited()
    return Version("edited", sha, size)


def v_stream_written(n):
    """stream.bin after its first n bytes were written (then closed)."""
    if n == STREAM_SIZE:
        return v_stream_new()
    return Version(f"new[:{n}]", digest(SEED_STREAM_NEW, n), n)


@functools.lru_cache(maxsize=None)
def v_staged_new_done(done):
    """staged-new.bin after its last `done` 1 MiB chunks were written
    (back to front); the chunks before them are a hole (zeros)."""
    n = STAGED_SIZE // MiB
    if done is None or done == n:
        return v_staged_new()
    if done == 0:
        return Version("empty", data.sha256(b""), 0)
    h = hashlib.sha256()
    h.update(bytes((n - done) * MiB))
    for i, c in enumerate(data.chunks(SEED_STAGED_NEW, STAGED_SIZE)):
        if i >= n - done:
            h.update(c)
    return Version(f"last {done} MiB", h.hexdigest(), STAGED_SIZE)


@functools.lru_cache(maxsize=None)
def v_edit_done(done):
    """staged-edit.bin with its first `done` patches applied."""
    patches = data.patches(SEED_EDIT, STAGED_SIZE)
    if done is None or done == len(patches):
        return v_edit_new()
    buf = bytearray(blob(SEED_EDIT_OLD, STAGED_SIZE))
    for offset, patch in patches[:done]:
        buf[offset:offset + len(patch)] = patch
    return Version(f"{done} patches", data.sha256(bytes(buf)), len(buf))


def v_read():
    return Version("orig", digest(SEED_READ, READ_SIZE), READ_SIZE)


def v_gz():
    packed = gz()[1]
    return Version("orig", data.sha256(packed), len(packed))


def v_dir(i):
    body = data.dir_body(i)
    return Version("body", data.sha256(body), len(body))


# --------------------------------------------------------------------------
# The objects every scenario starts from
# --------------------------------------------------------------------------

# Each scenario's bucket gets them by server-side copy from this bucket,
# which holds them for the whole session (on s3rver's disk: a scenario that
# stops the server does not lose it).
SEED_BUCKET = "fault-seed-objects"


def start_objects():
    """{key: its bytes} of the objects a scenario's bucket starts with."""
    return {"stream.bin": lambda: blob(SEED_STREAM_OLD, STREAM_OLD_SIZE),
            "staged-edit.bin": lambda: blob(SEED_EDIT_OLD, STAGED_SIZE),
            "read.bin": lambda: blob(SEED_READ, READ_SIZE),
            "logs.json.gz": lambda: gz()[1]}


START_OBJECTS = tuple(start_objects())


def seed_bucket(s3):
    """Make SEED_BUCKET hold the start objects, each checked by size and
    put again if it is missing or another size (a server restarted on an
    empty store, a put cut short)."""
    try:
        s3.head_bucket(Bucket=SEED_BUCKET)
    except s3.exceptions.ClientError:
        s3.create_bucket(Bucket=SEED_BUCKET)
    for key, body in start_objects().items():
        want = body()
        try:
            size = s3.head_object(Bucket=SEED_BUCKET,
                                  Key=key)["ContentLength"]
        except s3.exceptions.ClientError:
            size = None
        if size != len(want):
            s3.put_object(Bucket=SEED_BUCKET, Key=key, Body=want)


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------

def kernel_stack(pid):
    """Where a process waits in the kernel (/proc/PID/stack needs root;
    else its wchan), for the report of a long D state."""
    for name in ("stack", "wchan"):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                text = f.read().strip()
            if text:
                return text
        except OSError:
            pass
    return "?"


class Workload:
    """The workload of one scenario on mount `m` (a mount.Mount of the
    rig's bucket); `s3` is a boto3 client straight to s3rver."""

    def __init__(self, m, s3, bucket):
        self.m, self.s3, self.bucket = m, s3, bucket
        self.procs = {}     # strand -> Popen
        self.records = []   # op records of every strand
        self.d_state = {}   # pid -> longest continuous D state seen (s)
        self.d_now = {}     # pid -> since when in D, if it is
        self.d_where = {}   # strand -> kernel stack after 3 s in D
        self.hung = []      # strands killed for not finishing in time
        self.killed = []    # strands killed on purpose (wait(kill_late))
        self.ran = set()
        self._stop_watch = threading.Event()
        self._watcher = None

    # ---- setting up ----------------------------------------------------

    def prepare(self):
        """Put the objects the workload starts from, straight to s3rver:
        copied there from the seed bucket (a server-side copy of ~300 MiB
        takes about a second; sending them again, ten)."""
        seed_bucket(self.s3)
        for key in START_OBJECTS:
            self.s3.copy_object(Bucket=self.bucket, Key=key,
                                CopySource={"Bucket": SEED_BUCKET, "Key": key})
        # Warm the expected digests now, not while the workload runs.
        v_stream_new(), v_staged_new(), v_edit_new()

    def spec(self, strand):
        m = self.m
        if strand == "stream":
            return {"kind": "stream", "key": "stream.bin",
                    "path": m.p("stream.bin"), "seed": SEED_STREAM_NEW,
                    "size": STREAM_SIZE}
        if strand == "staged_new":
            return {"kind": "staged_new", "key": "staged-new.bin",
                    "path": m.p("staged-new.bin"), "seed": SEED_STAGED_NEW,
                    "size": STAGED_SIZE}
        if strand == "staged_edit":
            return {"kind": "staged_edit", "key": "staged-edit.bin",
                    "path": m.p("staged-edit.bin"), "seed": SEED_EDIT,
                    "size": STAGED_SIZE}
        if strand == "read":
            return {"kind": "read", "key": "read.bin", "path": m.p("read.bin")}
        if strand == "gz":
            return {"kind": "gz", "key": "logs.json", "path": m.p("logs.json"),
                    "offsets": gz_offsets(), "length": 4096}
        if strand == "dir":
            return {"kind": "dir", "root": m.path, "dir": "tree",
                    "moved": "tree-moved", "count": DIR_COUNT}
        raise ValueError(strand)

    # ---- running -------------------------------------------------------

    def start(self, strands=ALL_STRANDS, pace=0, pace_until=None):
        """Start the strands (child processes) at once. pace > 0 spreads
        the directory strand's 200 creates out, one every `pace` seconds,
        so that it spans a scenario's fault from before to after; once the
        file `pace_until` exists (the scenario makes it when the fault is
        over) the rest go at once, not a pace's worth of waiting each."""
        for strand in strands:
            spec = self.spec(strand)
            if strand == "dir":
                spec["pace"] = pace
                spec["pace_until"] = str(pace_until) if pace_until else None
            self.procs[strand] = subprocess.Popen(
                [PYTHON, str(WORKER), json.dumps(spec)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
            self.ran.add(strand)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True)
            self._watcher.start()
        return self

    def _watch(self):
        """Sample the strands' process states every 50 ms: the longest
        time each one spent in D state without a break."""
        while not self._stop_watch.is_set():
            now = time.monotonic()
            for strand, proc in list(self.procs.items()):
                state = proc_state(proc.pid) if proc.poll() is None else None
                pid = proc.pid
                if state == "D":
                    since = self.d_now.setdefault(pid, now)
                    longest = max(self.d_state.get(pid, 0.0), now - since)
                    self.d_state[pid] = longest
                    if now - since >= 3.0 and strand not in self.d_where:
                        self.d_where[strand] = kernel_stack(pid)
                else:
                    self.d_now.pop(pid, None)
            self._stop_watch.wait(0.05)

    def in_d_state(self):
        """Strands in D state right now."""
        return [s for s, p in self.procs.items()
                if p.poll() is None and proc_state(p.pid) == "D"]

    def running(self):
        return [s for s, p in self.procs.items() if p.poll() is None]

    def wait(self, timeout, kill_late=False):
        """Wait for every strand; one still running after `timeout` seconds
        is hung: noted, then killed (SIGKILL) so the test can report. With
        kill_late, that is expected (the scenario leaves requests hanging
        for good): such strands are killed and listed in .killed."""
        deadline = time.monotonic() + timeout
        for strand, proc in self.procs.items():
            try:
                out, err = proc.communicate(
                    timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                late = (strand, proc_state(proc.pid))
                (self.killed if kill_late else self.hung).append(late)
                proc.kill()
                out, err = proc.communicate()
            for line in out.decode().splitlines():
                self.records.append(json.loads(line))
            if proc.returncode not in (0, -9) or err.strip():
                sys.stdout.write(f"worker {strand} exit {proc.returncode}: "
                                 f"{err.decode(errors='replace')}\n")
        self._stop_watch.set()
        self._watcher.join()
        self.records.sort(key=lambda r: r["start"])
        return self

    def after(self, m=None):
        """The mount still works: a new 9 MiB file written (two parts),
        read back, seen in the listing and in the bucket; the head of
        read.bin read again. Recorded as strand "after"; every step must
        succeed, wherever it is run."""
        m = m or self.m
        body = blob(51, 9 * MiB)
        steps = []

        def step(op, name, fn):
            rec = {"strand": "after", "op": op, "name": name,
                   "start": time.monotonic(), "errno": 0}
            try:
                fn()
            except OSError as e:
                rec["errno"] = e.errno or errno.EIO
            except AssertionError as e:
                rec["errno"] = errno.EBADMSG
                rec["detail"] = str(e)
            rec["end"] = time.monotonic()
            rec["slowest"] = rec["end"] - rec["start"]
            self.records.append(rec)
            steps.append(rec)

        def write():
            with open(m.p("after.bin"), "wb") as f:
                f.write(body)

        def read_back():
            with open(m.p("after.bin"), "rb") as f:
                assert f.read() == body, "after.bin read back wrong"

        def listing():
            assert "after.bin" in os.listdir(m.path), "after.bin not listed"

        def external():
            got = self.s3.get_object(Bucket=self.bucket,
                                     Key="after.bin")["Body"].read()
            assert got == body, "after.bin in the bucket wrong"

        def head():
            with open(m.p("read.bin"), "rb") as f:
                assert f.read(8 * MiB) == blob(SEED_READ, READ_SIZE)[:8 * MiB]

        step("write", "after.bin", write)
        step("read", "after.bin", read_back)
        step("list", "/", listing)
        step("external", "after.bin", external)
        step("read", "read.bin", head)
        return [r for r in steps if r["errno"]]

    def max_d_state(self):
        return max(self.d_state.values(), default=0.0)

    # ---- checking from outside -----------------------------------------

    def stored(self):
        """{key: (sha256, size)} of every object in the bucket, read
        straight from s3rver, a few at a time (one by one, reading back
        the ~600 MiB takes twice as long)."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        with ThreadPoolExecutor(4) as pool:
            return dict(zip(keys, pool.map(self.stored_one, keys)))

    def stored_one(self, key):
        """(sha256, size) of the object at key, read from s3rver."""
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        h = hashlib.sha256()
        n = 0
        for piece in body.iter_chunks(MiB):
            h.update(piece)
            n += len(piece)
        return h.hexdigest(), n

    def ops(self, strand=None, op=None, name=None):
        return [r for r in self.records
                if (strand is None or r["strand"] == strand) and
                (op is None or r["op"] == op) and
                (name is None or r["name"] == name)]

    def verify(self):
        """Compare every object and every read with what the outcomes
        promise; returns a Verdict."""
        v = Verdict(self)
        stored = self.stored()
        seen = set()

        def check(key, allowed, must_exist, why, landed_despite=None):
            """The object at key must be one of `allowed` (or absent, unless
            must_exist); the size of allowed[0] counts as lost otherwise."""
            seen.add(key)
            got = stored.get(key)
            if got is None:
                if must_exist:
                    v.lose(allowed[0].size, f"{key}: missing ({why})")
                return None
            for version in allowed:
                if got == (version.sha, version.size):
                    v.verified += version.size
                    if landed_despite is not None and \
                            version.label == landed_despite:
                        v.landed_despite_error.append(key)
                    return version
            v.lose(allowed[0].size if allowed else got[1],
                   f"{key}: {got[1]} bytes that are none of "
                   f"{allowed} ({why})")
            return None

        def writer(strand, record_strand, key, old, made, made_any):
            """Check a written object. old: its Version before (None: it
            did not exist); made(rec): the Version the writes that
            returned success make; made_any(got): the Version some number
            of them makes that matches what is stored (got), else None --
            for a strand killed mid-operation, whose file the kernel closed
            after any number of writes."""
            if strand not in self.ran:
                return check(key, [old], True, "not written") if old \
                    else check(key, [], False, "not written")
            recs = self.ops(strand=record_strand, name=key)
            rec = recs[-1] if recs else None
            before = [old] if old else []
            if rec is None:  # killed in the middle of its operation
                got = stored.get(key)
                partial = made_any(got) if got else None
                return check(key, before + ([partial] if partial else []) +
                             [made(None)], bool(old),
                             "strand killed while writing")
            if "close_errno" not in rec:  # open() failed: nothing written
                return check(key, before, bool(old), "open failed")
            if rec["close_errno"] == 0:
                return check(key, [made(rec)], True, "close() returned 0")
            return check(key, before + [made(rec)], bool(old),
                         f"close() failed "
                         f"({errno.errorcode.get(rec['close_errno'])})",
                         landed_despite=made(rec).label)

        def first_match(versions, got):
            return next((x for x in versions if (x.sha, x.size) == got), None)

        def stream_prefix(got):
            n = got[1]
            new = blob(SEED_STREAM_NEW, STREAM_SIZE)
            if n <= STREAM_SIZE and data.sha256(new[:n]) == got[0]:
                return Version(f"new[:{n}]", got[0], n)
            return None

        writer("stream", "stream", "stream.bin", v_stream_old(),
               lambda r: v_stream_written(r["written"] if r else STREAM_SIZE),
               stream_prefix)
        writer("staged_new", "staged", "staged-new.bin", None,
               lambda r: v_staged_new_done(r["done"] if r else None),
               lambda got: first_match(
                   (v_staged_new_done(k)
                    for k in range(STAGED_SIZE // MiB + 1)), got))
        writer("staged_edit", "staged", "staged-edit.bin", v_edit_old(),
               lambda r: v_edit_done(r["done"] if r else None),
               lambda got: first_match(
                   (v_edit_done(k) for k in range(
                       len(data.patches(SEED_EDIT, STAGED_SIZE)) + 1)), got))

        check("read.bin", [v_read()], True, "never written")
        check("logs.json.gz", [v_gz()], True, "never written")

        # What the readers were given.
        for r in self.ops(strand="read"):
            if r["errno"] == 0:
                if (r["sha"], r["bytes"]) == (v_read().sha, v_read().size):
                    v.verified += r["bytes"]
                else:
                    v.lose(r["bytes"], f"read.bin read as {r['bytes']} wrong "
                           "bytes")
        plain = gz()[0]
        for r in self.ops(strand="gz", op="read"):
            if r["errno"] == 0:
                if (r["sha"], r["bytes"]) == (data.sha256(plain), len(plain)):
                    v.verified += r["bytes"]
                else:
                    v.lose(r["bytes"], f"logs.json (view) read as {r['bytes']}"
                           " wrong bytes")
        for r in self.ops(strand="gz", op="seek"):
            for offset, sha, n in r["picks"]:
                want = plain[offset:offset + 4096]
                if (sha, n) == (data.sha256(want), len(want)):
                    v.verified += n
                else:
                    v.lose(n, f"logs.json (view) at {offset}: wrong bytes")

        # The directory.
        if "dir" in self.ran:
            self._verify_dir(v, stored, seen)
        for key in ("tree/", "tree-moved/"):
            if key in stored and stored[key][1] == 0:
                seen.add(key)

        if "after.bin" in stored:
            seen.add("after.bin")
            want = blob(51, 9 * MiB)
            if stored["after.bin"] == (data.sha256(want), len(want)):
                v.verified += len(want)
            else:
                v.lose(len(want), "after.bin: wrong bytes")
        for key in sorted(set(stored) - seen):
            v.problems.append(f"unexpected object {key!r} "
                              f"({stored[key][1]} bytes)")
        return v

    def _verify_dir(self, v, stored, seen):
        created = {r["name"].split("/", 1)[1]: r["errno"]
                   for r in self.ops(strand="dir", op="create")}
        renames = self.ops(strand="dir", op="rename")
        renamed = bool(renames) and renames[0]["errno"] == 0
        for i in range(DIR_COUNT):
            name = data.dir_name(i)
            want = v_dir(i)
            old, new = f"tree/{name}", f"tree-moved/{name}"
            seen.update((old, new))
            good = []
            for key in (old, new):
                got = stored.get(key)
                if got is None:
                    continue
                if got == (want.sha, want.size):
                    good.append(key)
                    v.verified += want.size
                else:
                    v.lose(want.size, f"{key}: {got[1]} wrong bytes")
            if created.get(name) == 0:
                if renamed and new not in good:
                    v.lose(want.size, f"{new}: missing after a rename that "
                           "returned 0")
                elif not good:
                    v.lose(want.size, f"{name}: created (close() returned 0)"
                           " but under neither name")
            if renamed and old in stored:
                v.problems.append(f"{old} still there after the rename "
                                  "returned 0")
            if created.get(name) not in (None, 0) and good:
                v.landed_despite_error.append(good[0])
        ok = {n for n, rc in created.items() if rc == 0}
        for r in self.ops(strand="dir", op="list"):
            if r["errno"] != 0:
                continue
            names = set(r["names"])
            if r["name"] == "tree-moved/" and not renamed:
                continue
            known = {data.dir_name(i) for i in range(DIR_COUNT)}
            if not ok <= names or not names <= known:
                v.problems.append(
                    f"listing of {r['name']} wrong: missing "
                    f"{sorted(ok - names)[:5]}, extra {sorted(names - known)[:5]}")


class Verdict:
    """What verify() found, and the scenario's table row."""

    def __init__(self, w):
        self.w = w
        self.verified = 0
        self.lost = 0
        self.lost_what = []
        self.problems = []
        self.landed_despite_error = []

    def lose(self, n, what):
        self.lost += n
        self.lost_what.append(what)

    @property
    def operations(self):
        return len(self.w.records)

    @property
    def errors(self):
        return [r for r in self.w.records if r["errno"]]

    def describe_errors(self):
        by = {}
        for r in self.errors:
            k = errno.errorcode.get(r["errno"], str(r["errno"]))
            by[k] = by.get(k, 0) + 1
        return ", ".join(f"{n} {k}" for k, n in sorted(by.items())) or "0"


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------

HEADER = ("| scenario | operations | S3 requests | injected faults | "
          "bytes verified | bytes lost | ops that returned an error | "
          "time |\n|---|---:|---:|---|---:|---:|---|---:|\n")


def fmt_bytes(n):
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    return f"{n} B"


def table_row(scenario, verdict, requests, faults, seconds, note=""):
    errs = verdict.describe_errors()
    kept = [r for r in verdict.errors if r.get("close_errno") == 0 and
            ("done" in r or "written" in r)]
    if kept:
        errs += f"; {len(kept)} closed with 0 after a failed write, keeping " \
            "the writes before it"
    if verdict.landed_despite_error:
        errs += f"; {len(verdict.landed_despite_error)} stored although " \
            "close() failed"
    if note:
        errs += f" ({note})"
    return (f"| {scenario} | {verdict.operations} | {requests} | {faults} | "
            f"{fmt_bytes(verdict.verified)} | {verdict.lost} | {errs} | "
            f"{seconds:.0f} s |")
