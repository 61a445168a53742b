"""reqtable.py: the request table (workload "requests"): everyday operations
on a mount that trusts names and attributes for 1 s, each with the requests
the server saw for it, beside the fewest S3 allows (issue 19's table).

Time is not the point here: on loopback a request costs well under a
millisecond, on S3 10-30 ms and money, and an operation that sends twice
the requests it needs is hidden by loopback times. So each row is one
operation, from a stated state, counted at the server (reqcount.py).

Fixtures, in a bucket of their own (REQ_BUCKET, so the root is small: some
filesystems list the parent to look a name up), keys only, without
directory marker objects, as the issue's table was counted:
  dir/f1 f2 f3   1 KiB each; put back before each contender (rows change dir/)
  a/b/c/file
  walk/x
  many/          1,500 objects of 64 bytes (two listing pages)

The state a row starts from (its "prep"):
  fresh   unmount, empty the cache directory, mount again: nothing known
          in the kernel or the filesystem
  after   straight after the row before, nothing in between
  listed  wait out every TTL (TTL_WAIT), then `ls -l dir/`, not counted:
          dir freshly listed, its names and attributes fresh for 1 s
  stale   `ls -l dir/`, not counted, then wait out every TTL
The kernel's page cache needs no dropping: no row reads a file that was
read before on the same mount.

Counting: the server's counters are read before a row (after a remount,
once the server has been quiet for 0.25 s, reqcount.quiet; after a prep
listing, at once, so as not to eat its 1 s) and after it: after its
command and its check (for a create or a remove: until the bucket shows
it, so uploads after close count), once the server is quiet again; at
once when the next row is an "after" row, which starts from those counters.
A note says where the 1 s TTL ran out during a row (see _late_notes).
Checks use the command's own output or the server directly (the harness's
requests are never counted), never the mount. The per-operation detail
(HeadObject, ListObjectsV2, ...) of every row is in the run's bench.log.
"""

import concurrent.futures
import os
import shlex
import time
from dataclasses import dataclass

from . import reqcount
from .contenders import MountError
from .util import detail, run

REQ_BUCKET = "req"
TTL_WAIT = 2.2      # s3fs compares whole seconds: a 1 s entry may live 2 s
MANY = 1500
MANY_SIZE = 64


def body(key):
    """The bytes of a fixture object: its own name, repeated to 1 KiB."""
    line = (key + "\n").encode()
    return (line * (1024 // len(line) + 1))[:1024]


@dataclass
class Row:
    title: str
    prep: str            # fresh | after | listed | stale
    fewest: int
    gloss: str           # the words beside the fewest count
    run: object          # run(ctx, c, mnt) -> Outcome


@dataclass
class Outcome:
    seconds: float = None
    why: str = ""        # the check failed (or the command did)
    note: str = ""


@dataclass
class RowResult:
    title: str
    fewest: int
    gloss: str
    counts: dict = None
    seconds: float = None
    why: str = ""
    note: str = ""
    ran: bool = True     # False: a remount failed before it


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

def upload_fixtures(ctx):
    """The read-only part (a/b/c, walk, many), once per run."""
    if ctx.req_fixtures:
        return
    cl = ctx.client
    try:
        cl.create_bucket(Bucket=REQ_BUCKET)
    except cl.exceptions.BucketAlreadyOwnedByYou:
        pass
    # Keys only, no "dir/" marker objects: the table was counted
    # so.  A directory with a marker costs every filesystem a HEAD more
    # when it is looked up (its stored mode and owner are that object's
    # metadata), which would add the same request to several rows.
    puts = [("a/b/c/file", body("a/b/c/file")), ("walk/x", body("walk/x"))]
    puts += [(f"many/f{i:04d}", b"m" * (MANY_SIZE - 1) + b"\n") for i in range(MANY)]
    _put_all(ctx, puts)
    ctx.req_fixtures = True


def reset_dir(ctx):
    """dir/ as the table starts it: f1, f2, f3 and nothing else."""
    cl = ctx.client
    keys = [o["Key"] for page in cl.get_paginator("list_objects_v2").paginate(
        Bucket=REQ_BUCKET, Prefix="dir/") for o in page.get("Contents", [])]
    for k in keys:
        cl.delete_object(Bucket=REQ_BUCKET, Key=k)
    _put_all(ctx, [(f"dir/f{i}", body(f"dir/f{i}")) for i in (1, 2, 3)])


def _put_all(ctx, puts):
    def put(item):
        ctx.client.put_object(Bucket=REQ_BUCKET, Key=item[0], Body=item[1])

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(put, puts))


def _in_bucket(ctx, key, want, timeout):
    """Wait until key holds want (bytes), or is gone (want None). Returns
    the seconds it took, or None if it never did."""
    t = time.monotonic()
    while True:
        try:
            got = ctx.client.get_object(Bucket=REQ_BUCKET, Key=key)["Body"].read()
        except ctx.client.exceptions.NoSuchKey:
            got = None
        if got == want:
            return time.monotonic() - t
        if time.monotonic() - t > timeout:
            return None
        time.sleep(0.1)


# --------------------------------------------------------------------------
# The rows' commands and checks
# --------------------------------------------------------------------------

def _sh(ctx, c, cmd):
    return run(cmd, timeout=ctx.t.meta, on_stuck=ctx.on_stuck(c),
               env=dict(os.environ, LC_ALL="C"))


def _failed(ran, what):
    """'' if the command exited 0, else why not (workloads.from_ran's words;
    imported here, as workloads.py imports this module)."""
    from .workloads import from_ran
    bad = from_ran(ran, what)
    return bad.why if bad else ""


def _ls_l(ctx, c, mnt, check=True):
    """`ls -l dir/`; check: the table's first row, so the three files of
    1 KiB each (the preps list dir/ as the rows before left it)."""
    ran = _sh(ctx, c, f"ls -l {shlex.quote(mnt)}/dir/")
    why = _failed(ran, "ls -l")
    if not why and check:
        entries = {p[8]: p[4] for p in (l.split(None, 8) for l in ran.out.splitlines())
                   if len(p) == 9}
        if entries != {f"f{i}": "1024" for i in (1, 2, 3)}:
            why = f"ls -l dir/ showed {sorted(entries.items())}"
    return Outcome(ran.seconds, why)


def _cat(name):
    def cat(ctx, c, mnt):
        ran = _sh(ctx, c, f"cat {shlex.quote(mnt)}/{name}")
        why = _failed(ran, "cat")
        if not why and ran.out.encode() != body(name):
            why = f"cat {name}: the bytes differ from the fixture's"
        return Outcome(ran.seconds, why)
    return cat


def _stat_missing(ctx, c, mnt):
    ran = _sh(ctx, c, f"stat {shlex.quote(mnt)}/dir/missing")
    why = "" if ran.rc == 1 and "No such file" in ran.err else \
        f"stat dir/missing: exit {ran.rc}, {ran.err.strip()[:100]!r} (wanted ENOENT)"
    return Outcome(ran.seconds, why)


def _create(ctx, c, mnt):
    """A new file written in one go (`cp local dir/f4`: one open, write,
    close; a shell's `cat local > dir/f4` closes the file once more before
    cat writes, through dup2, and a filesystem that stores at every close,
    as close-to-open asks, stores it twice); checked in the bucket, and
    counted until it is there."""
    local = os.path.join(ctx.workdir, "req-f4")
    with open(local, "wb") as f:
        f.write(body("dir/f4"))
    ran = _sh(ctx, c, f"cp {shlex.quote(local)} {shlex.quote(mnt)}/dir/f4")
    why = _failed(ran, "create dir/f4")
    if why:
        return Outcome(ran.seconds, why)
    later = _in_bucket(ctx, "dir/f4", body("dir/f4"), ctx.t.visible)
    if later is None:
        return Outcome(ran.seconds, f"dir/f4 not in the bucket {ctx.t.visible} s after close")
    note = f"in the bucket {later:.1f} s after close" if later > 1 else ""
    return Outcome(ran.seconds, note=note)


def _rm(ctx, c, mnt):
    ran = _sh(ctx, c, f"rm {shlex.quote(mnt)}/dir/f3")
    why = _failed(ran, "rm dir/f3")
    if not why and _in_bucket(ctx, "dir/f3", None, ctx.t.visible) is None:
        why = f"dir/f3 still in the bucket {ctx.t.visible} s after rm"
    return Outcome(ran.seconds, why)


def _mkdir(ctx, c, mnt):
    ran = _sh(ctx, c, f"mkdir {shlex.quote(mnt)}/dir/sub")
    why = _failed(ran, "mkdir dir/sub")
    note = ""
    if not why and _in_bucket(ctx, "dir/sub/", b"", 1.0) is None:
        note = "no marker dir/sub/ in the bucket: the directory is kept in memory only"
    return Outcome(ran.seconds, why, note)


def _stat_deep(ctx, c, mnt):
    ran = _sh(ctx, c, f"stat -c %s {shlex.quote(mnt)}/a/b/c/file")
    why = _failed(ran, "stat a/b/c/file")
    if not why and ran.out.strip() != "1024":
        why = f"stat a/b/c/file: size {ran.out.strip()!r}"
    return Outcome(ran.seconds, why)


def _many_names():
    return [f"f{i:04d}" for i in range(MANY)]


def _ls_many(ctx, c, mnt):
    ran = _sh(ctx, c, f"ls {shlex.quote(mnt)}/many")
    why = _failed(ran, "ls many")
    if not why and ran.out.split() != _many_names():
        why = f"ls many listed {len(ran.out.split())} names, not the {MANY} expected"
    return Outcome(ran.seconds, why)


def _stat_many(ctx, c, mnt):
    """stat of every name, the names given (a glob would list again)."""
    names = os.path.join(ctx.workdir, "req-many-names")
    with open(names, "w") as f:
        f.write("".join(f"{mnt}/many/{n}\n" for n in _many_names()))
    ran = _sh(ctx, c, f"xargs -d '\\n' -a {shlex.quote(names)} stat -c %s --")
    why = _failed(ran, "stat many/*")
    if not why and ran.out.split() != [str(MANY_SIZE)] * MANY:
        why = f"stat many/*: {len(ran.out.split())} answers, not {MANY} of {MANY_SIZE} bytes"
    return Outcome(ran.seconds, why)


ROWS = [
    Row("`ls -l dir/` of 3 files, `dir` not looked up yet", "fresh", 2, "", _ls_l),
    Row("`cat dir/f1` right after that listing", "after", 1,
        "the listing gave its ETag and size", _cat("dir/f1")),
    Row("`stat dir/missing` right after a listing", "listed", 0,
        "the listing proves it absent", _stat_missing),
    Row("create a file in `dir/` right after its listing", "listed", 1, "PUT", _create),
    Row("`rm dir/f3` right after the listing", "listed", 1, "DELETE", _rm),
    Row("`mkdir dir/sub` right after the listing", "listed", 1, "PUT of the marker", _mkdir),
    Row("`cat dir/f2` after the TTL ran out", "stale", 2, "", _cat("dir/f2")),
    Row("`stat a/b/c/file` on a fresh mount", "fresh", 4, "in 4 round trips", _stat_deep),
    Row("`cat walk/x` on a fresh mount", "fresh", 2, "", _cat("walk/x")),
    Row(f"`ls` of {MANY:,} entries (fresh mount)", "fresh", 3, "", _ls_many),
    Row(f"`stat` of each of those {MANY:,} right after", "after", 0, "", _stat_many),
]

FEWEST_TOTAL = sum(r.fewest for r in ROWS)


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------

def _prepare(ctx, c, mnt, prep):
    """Bring the mount to the row's starting state; '' or why it could not."""
    if prep == "fresh":
        c.remount(timeout=ctx.t.write, bucket=REQ_BUCKET, short_ttl=True)
    elif prep == "listed":
        time.sleep(TTL_WAIT)
        return _ls_l(ctx, c, mnt, check=False).why
    elif prep == "stale":
        why = _ls_l(ctx, c, mnt, check=False).why
        time.sleep(TTL_WAIT)
        return why
    return ""


def _start_counts(url, prep, end_before):
    """The counters a row starts from. After a remount, once the server is
    quiet (a filesystem may send requests of its own after mounting); after
    a prep listing, at once: ls has had every answer when it exits, and
    waiting would eat the listing's 1 s; an "after" row starts where the row
    before ended."""
    if prep == "after" and end_before is not None:
        return end_before
    return reqcount.quiet(url) if prep == "fresh" else reqcount.snapshot(url)


def _late_notes(prep, listed_at, seconds):
    """Where the 1 s TTL ran out during the row, the counts may include
    lookups made again: a row meant to run within a listing's TTL that
    ended after it (a loaded machine), or a command that took longer than
    the TTL (s3rver answers a 1,000-key page of many/ in about a second
    here; S3 in a fraction of that)."""
    notes = []
    if prep in ("listed", "after") and listed_at is not None:
        age = time.monotonic() - listed_at
        if age > 1.0:
            notes.append(f"ended {age:.2f} s after the listing before it (the TTL is 1 s)")
    if seconds and seconds > 1.0:
        notes.append(f"took {seconds:.2f} s, longer than the 1 s TTL: names looked up at "
                     "its start had run out by its end")
    return notes


def run_table(ctx, c, mnt):
    """Every row on c, mounted on REQ_BUCKET with short TTLs; a list of
    RowResult (rows after a failed remount are marked not run)."""
    upload_fixtures(ctx)
    reset_dir(ctx)
    url = ctx.server.url
    results = []
    end = None        # the counters at the end of the row before
    listed_at = None  # when the last listing of dir/ or many/ ended
    for i, row in enumerate(ROWS):
        res = RowResult(row.title, row.fewest, row.gloss)
        results.append(res)
        try:
            res.why = _prepare(ctx, c, mnt, row.prep)
        except MountError as e:
            res.why, res.ran = f"mount failed: {e}", False
            break
        if res.why:
            res.why = "before the row: " + res.why
            continue
        if row.prep == "listed":
            listed_at = time.monotonic()
        start = _start_counts(url, row.prep, end)
        out = row.run(ctx, c, mnt)
        notes = [out.note] + _late_notes(row.prep, listed_at, out.seconds)
        if row.run in (_ls_l, _ls_many):
            listed_at = time.monotonic()
        last = i + 1 == len(ROWS)
        end = reqcount.snapshot(url) if not last and ROWS[i + 1].prep == "after" \
            else reqcount.quiet(url)
        res.counts = reqcount.diff(start, end)
        res.seconds, res.why = out.seconds, out.why
        res.note = "; ".join(n for n in notes if n)
        detail(f"{c.key} requests, {row.title}: {reqcount.ops_text(res.counts)}"
               + (f" [{res.why or res.note}]" if res.why or res.note else ""))
    for row in ROWS[len(results):]:
        results.append(RowResult(row.title, row.fewest, row.gloss, ran=False,
                                 why="not run (mount failed)"))
    return results


def total(results):
    counts = None
    for r in results:
        counts = reqcount.add(counts, r.counts)
    return counts
