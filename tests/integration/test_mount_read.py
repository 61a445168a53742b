"""The read path of a pailfs mount and its disk block cache, checked byte
for byte against the objects as put with boto3 straight to the server, and
through the proxy's record of the GETs pailfs sent (op, Range, status).

What is checked: random preads at and across 1 MiB block and read-ahead
window boundaries, at and past EOF, on objects of 0, 1, 1 MiB, 1 MiB+1 and
~20 MiB; a sequential read fetched in ranged GETs of at most part_size; a
random reader fetching only the 1 MiB blocks it touches; an object replaced
under an open handle (old bytes or EIO, never new bytes at an old offset;
the new object after close and attr_ttl); the cache's size bound with
concurrent readers; a damaged cached block (refetched, logged); a remount
served from the cache with no GET; a full cache disk; cache_size=0; faults
(503, resets, truncated bodies, ignored ranges); a second pailfs on the same
bucket and cache directory; keep_cache; the first GET of an open, which
tells the object's headers instead of a HEAD (one request to cat a listed
file, 412 after a replace, gzip and symlink objects seen only in a listing).

The kernel's page cache would hide the filesystem: tests drop it for one
file with posix_fadvise(POSIX_FADV_DONTNEED), which works on FUSE.
"""

import collections
import ctypes
import errno
import glob
import gzip
import mmap
import os
import random
import re
import subprocess
import threading
import time

import pytest

from drive import clean_env
from helpers import ops, put, rand_bytes, sha256
from mount import (PAILFS, call_with_timeout, fusermount_unmount,  # noqa: F401
                   is_mounted, mounter, wait_until)

KiB = 1 << 10
MiB = 1 << 20
BLK_HDR = 4096  # bytes of record in front of the data of a cached block
PAGE = 4096  # bytes of data covered by one CRC32C in a cached block
BLK_SLOT = BLK_HDR + 1024 * 1024  # a block's place in its .blk3 file
BLK_PER_FILE = 64  # blocks of one .blk3 file


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def read_all(path, chunk=MiB):
    out = bytearray()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            out += b
    return bytes(out)


def drop_page_cache(path):
    """Drop the kernel's cached pages of one file (clean pages only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def drop_fd_cache(fd):
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def parse_range(text):
    """(first, last) of "bytes=first-last"; None for no Range."""
    if text is None:
        return None
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", text.strip())
    assert m, f"unexpected Range {text!r}"
    return int(m.group(1)), (int(m.group(2)) if m.group(2) else None)


def get_records(proxy, key=None):
    """The GetObject requests the proxy saw since its last reset (all of
    them: fails if more were made than it remembers)."""
    st = proxy.stats()
    assert st["requests_total"] == len(st["recent"]), \
        "more requests than the proxy remembers; reset it more often"
    return [r for r in st["recent"] if r["op"] == "GetObject" and
            (key is None or r["key"] == key)]


def n_gets(proxy):
    return proxy.stats()["by_op"].get("GetObject", 0)


def cache_root(m):
    return m.path.rstrip("/") + ".cache"


def blocks_dirs(cache_dir):
    return sorted(glob.glob(os.path.join(cache_dir, "blocks-*")))


class Block(collections.namedtuple("Block", "path no off dlen")):
    """A cached block on disk: its .blk3 file, number, slot offset and
    data length."""

    @property
    def name(self):
        """The cache's name of it in its log: "<object hash>-<block>"."""
        return f"{os.path.basename(self.path).split('-')[0]}-{self.no}"

    def data(self):
        with open(self.path, "rb") as f:
            f.seek(self.off + BLK_HDR)
            return f.read(self.dlen)


def cached_blocks(cache_dir):
    """Every block whose record is on disk under cache_dir (the magic of
    each slot of each .blk3 file, whatever the cache's index says), by
    file and number."""
    out = []
    for path in sorted(glob.glob(os.path.join(cache_dir, "**", "*.blk3"),
                                 recursive=True)):
        try:
            f = open(path, "rb")
        except FileNotFoundError:  # its last block evicted meanwhile
            continue
        with f:
            first = int(path.rsplit("-", 1)[1].split(".")[0]) * BLK_PER_FILE
            size = os.fstat(f.fileno()).st_size
            for k in range(BLK_PER_FILE):
                if k * BLK_SLOT >= size:
                    break
                f.seek(k * BLK_SLOT)
                rec = f.read(48)
                if len(rec) == 48 and rec[:8] == b"PAILBLK3":
                    out.append(Block(path, first + k, k * BLK_SLOT,
                                     int.from_bytes(rec[36:40], "little")))
    return out


def cached_block(cache_dir, no):
    [b] = [b for b in cached_blocks(cache_dir) if b.no == no]
    return b


def dir_bytes(directory):
    """Disk space of the regular files in the block directories under
    directory (st_blocks: the files are sparse; the lock file not
    counted)."""
    total = 0
    for d in blocks_dirs(directory):
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for name in names:
            if name == ".lock":
                continue
            try:
                total += os.stat(os.path.join(d, name)).st_blocks * 512
            except FileNotFoundError:  # evicted meanwhile
                pass
    return total


def pread_or_errno(fd, n, off):
    try:
        return os.pread(fd, n, off)
    except OSError as e:
        return e.errno


def o_direct_works(path):
    """Whether this kernel lets a FUSE file be read with O_DIRECT."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    try:
        os.pread(fd, 4096, 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def random_reads(rng, size, n):
    """n (offset, length) pairs: most near 1 MiB block boundaries, EOF and
    past it, lengths from 1 byte to 3 MiB; now and then a run of reads that
    follow each other, so that read-ahead windows open and their edges are
    crossed too."""
    out = []
    while len(out) < n:
        kind = rng.random()
        if kind < 0.08 and size > 0:
            # a sequential run
            off = rng.randrange(0, size)
            step = rng.choice([4 * KiB, 128 * KiB, 1 * MiB, 333_333])
            for _ in range(rng.randint(4, 24)):
                out.append((off, step))
                off += step
            continue
        if kind < 0.4 and size >= MiB:
            off = rng.randrange(0, size // MiB + 1) * MiB + \
                rng.choice([0, -1, 1, rng.randint(-5000, 5000)])
        elif kind < 0.5:
            off = size + rng.choice([0, -1, 1, rng.randint(-5000, 5000)])
        elif kind < 0.55:
            off = size + rng.randint(0, 3 * MiB)
        else:
            off = rng.randrange(0, max(size, 1))
        off = max(0, off)
        r = rng.random()
        if r < 0.1:
            length = 1
        elif r < 0.3:
            length = 4096
        elif r < 0.8:
            length = rng.randint(1, 200_000)
        else:
            length = rng.randint(MiB - 10, 3 * MiB + 10)
        out.append((off, length))
    return out[:n]


def check_preads(fd, data, reads, batch=100, label=""):
    """pread each (off, len) and compare with data; drop the file's page
    cache every `batch` reads so that pailfs, not the kernel, answers."""
    for i, (off, length) in enumerate(reads):
        if i % batch == 0:
            drop_fd_cache(fd)
        got = os.pread(fd, length, off)
        want = data[off:off + length]
        if got != want:
            # say where it went wrong, not just that it did
            first = next((j for j in range(min(len(got), len(want)))
                          if got[j] != want[j]), min(len(got), len(want)))
            raise AssertionError(
                f"{label}pread #{i} off={off} len={length} (file "
                f"{len(data)}): got {len(got)} bytes, want {len(want)}; "
                f"first difference at +{first} (file offset {off + first})")


# --------------------------------------------------------------------------
# 1. Random preads
# --------------------------------------------------------------------------

OBJECTS = {
    "empty": 0,
    "one": 1,
    "mib": MiB,
    "mib1": MiB + 1,
    "big": 20 * MiB + 12345,
}


@pytest.mark.core
def test_random_preads_match_source(s3, bucket, mounter):
    datas = {k: rand_bytes(i + 1, n) for i, (k, n) in
             enumerate(OBJECTS.items())}
    for k, d in datas.items():
        put(s3, bucket, k, d)
    m = mounter(opts={"part_size": "2M", "max_readahead": "4M"})
    rng = random.Random(20240501)
    direct = o_direct_works(m.p("mib"))
    for key, data in datas.items():
        path = m.p(key)
        assert os.stat(path).st_size == len(data)
        n = 1500 if len(data) > 2 * MiB else 150
        reads = random_reads(rng, len(data), n)
        fd = os.open(path, os.O_RDONLY)
        try:
            check_preads(fd, data, reads, label=f"{key}: ")
        finally:
            os.close(fd)
        if direct:  # the same again, past the page cache entirely
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            try:
                check_preads(fd, data, reads[:n // 3],
                             label=f"{key} (O_DIRECT): ")
            finally:
                os.close(fd)
        # and the whole object, sequentially
        drop_page_cache(path)
        assert read_all(path) == data, key


@pytest.mark.core
def test_empty_and_tiny_objects_need_no_get(proxy, s3, bucket, mounter):
    put(s3, bucket, "empty", b"")
    put(s3, bucket, "one", b"x")
    m = mounter(opts={"cache_size": "0"})
    proxy.reset()
    assert read_all(m.p("empty")) == b""
    fd = os.open(m.p("empty"), os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == b""
        assert os.pread(fd, 1, 10 * MiB) == b""
    finally:
        os.close(fd)
    assert n_gets(proxy) == 0, "a GET for an empty object"
    fd = os.open(m.p("one"), os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == b"x"
        assert os.pread(fd, 100, 1) == b""
        assert os.pread(fd, 100, MiB) == b""
    finally:
        os.close(fd)
    gets = get_records(proxy, "one")
    assert len(gets) == 1, gets
    first, last = parse_range(gets[0]["range"])
    assert first == 0 and (last is None or last < MiB)


# --------------------------------------------------------------------------
# 2. Sequential reads: ranged GETs of at most part_size
# --------------------------------------------------------------------------

@pytest.mark.core
def test_sequential_read_in_ranged_gets(proxy, s3, bucket, mounter):
    size = 40 * MiB + 4321
    data = rand_bytes(7, size)
    put(s3, bucket, "seq.bin", data)
    part = 4 * MiB
    m = mounter(opts={"cache_size": "0", "part_size": "4M"})
    proxy.reset()
    got = subprocess.run(["sha256sum", m.p("seq.bin")], capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()[0]
    assert got == sha256(data)
    gets = get_records(proxy, "seq.bin")
    assert gets, "no GET at all"
    covered = []
    for g in gets:
        assert g["status"] in (200, 206), g
        rng = parse_range(g["range"])
        assert rng is not None, f"a GET without Range: {g}"
        first, last = rng
        assert last is not None, f"open-ended Range {g['range']}"
        assert last - first + 1 <= part, \
            f"GET of {last - first + 1} bytes > part_size: {g['range']}"
        assert first % MiB == 0, f"GET not on a block boundary: {g['range']}"
        covered.append((first, min(last, size - 1)))
    # together the GETs cover the whole object
    covered.sort()
    reach = 0
    for first, last in covered:
        assert first <= reach, f"bytes {reach}..{first - 1} never fetched"
        reach = max(reach, last + 1)
    assert reach == size
    fetched = sum(last - first + 1 for first, last in covered)
    assert fetched == size, f"{fetched - size} bytes fetched more than once"


def test_sequential_read_out_of_order_fetches_each_byte_once(proxy, s3, bucket, mounter):
    """The kernel's read-ahead sends several READs at once, and they reach
    pailfs out of order by a few MiB (seen: the READ at N+2 MiB before those
    at N and N+1).  A sequential reader must stay one: no window reset, no
    read-ahead dropped and fetched again.  O_DIRECT preads make that order
    exact."""
    size = 96 * MiB
    data = b"".join(rand_bytes(1000 + i, MiB) for i in range(size // MiB))
    put(s3, bucket, "seq-ooo.bin", data)
    m = mounter(opts={"cache_size": "0"})
    path = m.p("seq-ooo.bin")
    if not o_direct_works(path):
        pytest.skip("no O_DIRECT on this FUSE mount")
    # in order, then every 8 MiB three blocks arrive as N+2, N, N+1 and later
    # four as N+3, N+1, N, N+2
    order = []
    n = 0
    while n < size // MiB:
        if n >= 16 and n % 16 == 0 and n + 3 <= size // MiB:
            order += [n + 2, n, n + 1]
            n += 3
        elif n >= 16 and n % 16 == 8 and n + 4 <= size // MiB:
            order += [n + 3, n + 1, n, n + 2]
            n += 4
        else:
            order.append(n)
            n += 1
    assert sorted(order) == list(range(size // MiB))
    buf = mmap.mmap(-1, MiB)
    proxy.reset()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        for blk in order:
            got = os.preadv(fd, [buf], blk * MiB)
            assert got == MiB and buf[:] == data[blk * MiB:(blk + 1) * MiB], f"block {blk}"
    finally:
        os.close(fd)
        buf.close()
    fetched = 0
    for g in get_records(proxy, "seq-ooo.bin"):
        first, last = parse_range(g["range"])
        fetched += min(last, size - 1) - first + 1
    assert fetched == size, f"{fetched - size} bytes fetched more than once"


@pytest.mark.core
def test_head_of_file_costs_one_small_get(proxy, s3, bucket, mounter):
    data = rand_bytes(8, 40 * MiB)
    put(s3, bucket, "big.bin", data)
    m = mounter(opts={"cache_size": "0"})
    proxy.reset()
    r = subprocess.run(["head", "-c", "100", m.p("big.bin")],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data[:100]
    time.sleep(0.3)  # anything sent late would show now
    gets = get_records(proxy, "big.bin")
    assert len(gets) == 1, [g["range"] for g in gets]
    first, last = parse_range(gets[0]["range"])
    assert first == 0
    assert last is not None and last - first + 1 <= MiB, gets[0]["range"]


@pytest.mark.parametrize("where", ["first GET of the open", "read of a known file"])
def test_read_answered_before_its_block_is_whole(proxy, s3, bucket, mounter, where):
    """A read is answered as soon as its own bytes are in, not when the
    whole 1 MiB block it falls in is: the answer's body pauses 3 s after
    its first 512 KiB, and a 4 KiB read at the start comes back long before
    (issue 19's first byte on a real network: the rest of a block takes
    10 ms at 100 MB/s).  Both kinds of block: the one an open's first GET
    fills, and one a read asks for."""
    data = rand_bytes(31, 3 * MiB)
    put(s3, bucket, "slow.bin", data)
    m = mounter(opts={"cache_size": "0"})
    proxy.config(stall_body={"after": 512 * KiB, "ms": 3000, "path_regex": "slow\\.bin"})
    fd = os.open(m.p("slow.bin"), os.O_RDONLY)  # its first GET brings block 0
    try:
        off = 0 if where == "first GET of the open" else 2 * MiB
        t = time.monotonic()
        got = os.pread(fd, 4096, off)
        took = time.monotonic() - t
        assert got == data[off:off + 4096]
        assert took < 2.0, f"the read waited {took:.1f} s for the rest of its block"
        # The rest of the block arrives after the pause, right.
        assert os.pread(fd, MiB, off) == data[off:off + MiB]
    finally:
        os.close(fd)
        proxy.config(stall_body=None)


# --------------------------------------------------------------------------
# 3. A random reader fetches only the blocks it touches
# --------------------------------------------------------------------------

def test_random_reader_fetches_single_blocks(proxy, s3, bucket, mounter):
    size = 20 * MiB
    data = rand_bytes(9, size)
    put(s3, bucket, "rand.bin", data)
    m = mounter()
    rng = random.Random(99)
    fd = os.open(m.p("rand.bin"), os.O_RDONLY)
    try:
        # no kernel read-ahead: each pread asks pailfs for its own pages
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        drop_fd_cache(fd)
        proxy.reset()
        for i in range(300):
            if i % 20 == 0:
                drop_fd_cache(fd)
            off = rng.randrange(0, size // 4096) * 4096
            assert os.pread(fd, 4096, off) == data[off:off + 4096], off
    finally:
        os.close(fd)
    gets = get_records(proxy, "rand.bin")
    assert gets
    big = []
    for g in gets:
        first, last = parse_range(g["range"])
        assert last is not None
        if last - first + 1 > MiB or first % MiB:
            big.append(g["range"])
    assert not big, f"{len(big)} of {len(gets)} GETs of a random reader " \
        f"fetched more than its 1 MiB block: {big[:10]}"


# --------------------------------------------------------------------------
# 4. An object replaced while open, and while closed
# --------------------------------------------------------------------------

def test_object_replaced_under_open_handle(proxy, s3, bucket, mounter):
    size = 12 * MiB
    old = rand_bytes(10, size)
    new = rand_bytes(11, size)
    put(s3, bucket, "obj", old)
    ttl = 1.0
    m = mounter(attr_ttl=ttl, neg_ttl=ttl,
                opts={"part_size": "1M", "max_readahead": "2M"})
    fd = os.open(m.p("obj"), os.O_RDONLY)
    try:
        assert os.pread(fd, MiB, 0) == old[:MiB]
        put(s3, bucket, "obj", new)
        outcomes = {}
        for off in (100, MiB - 10, MiB + 5, 3 * MiB, 6 * MiB + 7,
                    10 * MiB, 12 * MiB - 100):
            for drop in (False, True):
                if drop:
                    drop_fd_cache(fd)
                got = pread_or_errno(fd, 64 * KiB, off)
                if isinstance(got, int):
                    assert got == errno.EIO, \
                        f"off {off}: {errno.errorcode.get(got, got)}"
                    outcomes[(off, drop)] = "EIO"
                    continue
                want_old = old[off:off + 64 * KiB]
                if got != want_old:
                    newish = got == new[off:off + 64 * KiB]
                    raise AssertionError(
                        f"off {off} (page cache {'dropped' if drop else 'kept'}"
                        f"): {'the NEW bytes' if newish else 'bytes of neither version'}"
                        f" through a handle opened on the old object")
                outcomes[(off, drop)] = "old"
        # 10 MiB on was never fetched: it needs the network, so EIO
        assert outcomes[(10 * MiB, True)] == "EIO", outcomes
        assert outcomes[(12 * MiB - 100, True)] == "EIO", outcomes
    finally:
        os.close(fd)
    assert "changed since it was opened" in m.stderr_text()
    time.sleep(ttl + 0.3)
    assert read_all(m.p("obj")) == new
    drop_page_cache(m.p("obj"))
    assert read_all(m.p("obj")) == new


@pytest.mark.core
def test_object_replaced_while_closed(proxy, s3, bucket, mounter):
    size = 5 * MiB + 1000
    old = rand_bytes(12, size)
    new = rand_bytes(13, size)
    # same size and mtime (s3fs's header): only the ETag tells them apart
    same_mtime = {"mtime": "1700000000"}
    s3.put_object(Bucket=bucket, Key="obj", Body=old, Metadata=same_mtime)
    ttl = 1.0
    m = mounter(attr_ttl=ttl, neg_ttl=ttl)
    # The kernel may drop the inode and its pages at the last close once
    # the entry has expired; to see whether an open keeps stale pages,
    # hold the inode through a descriptor that is never read from.
    keeper = os.open(m.p("obj"), os.O_RDONLY)
    try:
        assert read_all(m.p("obj")) == old
        # the old blocks are in the disk cache now
        assert wait_until(lambda: len(cached_blocks(cache_root(m))) == 6, 10), \
            cached_blocks(cache_root(m))
        s3.put_object(Bucket=bucket, Key="obj", Body=new, Metadata=same_mtime)
        time.sleep(ttl + 0.3)
        proxy.reset()
        # page cache not dropped: the open must not keep the old pages
        assert read_all(m.p("obj")) == new
        assert n_gets(proxy) >= 1
    finally:
        os.close(keeper)
    drop_page_cache(m.p("obj"))
    assert read_all(m.p("obj")) == new
    fd = os.open(m.p("obj"), os.O_RDONLY)
    try:
        for off in (0, MiB - 1, 3 * MiB + 17, size - 1):
            drop_fd_cache(fd)
            assert os.pread(fd, 1000, off) == new[off:off + 1000], off
    finally:
        os.close(fd)
    # both versions' blocks may be on disk; only the new ones are used
    assert wait_until(lambda: len(cached_blocks(cache_root(m))) == 12, 10), \
        cached_blocks(cache_root(m))


# --------------------------------------------------------------------------
# 5. The cache's bound with readers in parallel; the memory bound
# --------------------------------------------------------------------------

def read_concurrently(paths, datas, timeout=120):
    errors = []

    def one(path, data):
        try:
            got = read_all(path)
            if got != data:
                errors.append(f"{path}: wrong bytes ({len(got)} read)")
        except OSError as e:
            errors.append(f"{path}: {e}")

    threads = [threading.Thread(target=one, args=(p, d), daemon=True)
               for p, d in zip(paths, datas)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
        assert not t.is_alive(), f"a reader still blocked after {timeout}s"
    assert not errors, errors


def test_cache_bound_with_concurrent_readers(proxy, s3, bucket, mounter):
    limit = 8 * MiB
    datas = [rand_bytes(20 + i, 12 * MiB) for i in range(4)]
    for i, d in enumerate(datas):
        put(s3, bucket, f"f{i}", d)
    m = mounter(opts={"cache_size": "8M"})
    root = cache_root(m)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], dir_bytes(root))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        read_concurrently([m.p(f"f{i}") for i in range(4)], datas)
        time.sleep(0.5)  # blocks are written after they are read
    finally:
        stop.set()
        sampler.join()
    slack = 4 * (MiB + BLK_HDR)  # the sampler adds up files over time
    assert peak[0] <= limit + slack, \
        f"the block cache held {peak[0]} bytes (bound {limit})"
    after = dir_bytes(root)
    assert after <= limit, f"{after} bytes in the cache at rest (bound {limit})"
    # the directory holds only whole blocks (no temporary files left)
    for d in blocks_dirs(root):
        for name in os.listdir(d):
            assert name == ".lock" or name.endswith(".blk3"), name
    # and what it holds is served correctly; the bound holds again
    for i in range(4):
        drop_page_cache(m.p(f"f{i}"))
    read_concurrently([m.p(f"f{i}") for i in range(4)], datas)
    time.sleep(0.5)
    after = dir_bytes(root)
    assert after <= limit, \
        f"{after} bytes in the cache after a second round (bound {limit})"


def test_small_memory_bound_many_readers(proxy, s3, bucket, mounter):
    datas = [rand_bytes(30 + i, 12 * MiB + i) for i in range(6)]
    for i, d in enumerate(datas):
        put(s3, bucket, f"f{i}", d)
    m = mounter(opts={"cache_size": "0", "max_memory": "16M",
                      "max_readahead": "32M", "part_size": "8M"})
    read_concurrently([m.p(f"f{i}") for i in range(6)], datas)
    # random readers at the same time as sequential ones
    errors = []

    def random_reader(i):
        rng = random.Random(i)
        data = datas[i]
        try:
            fd = os.open(m.p(f"f{i}"), os.O_RDONLY)
            try:
                for _ in range(60):
                    off = rng.randrange(0, len(data))
                    n = rng.randint(1, 2 * MiB)
                    drop_fd_cache(fd)
                    got = pread_or_errno(fd, n, off)
                    if isinstance(got, int):
                        errors.append(f"f{i} off {off} len {n}: "
                                      f"{errno.errorcode.get(got, got)}")
                    elif got != data[off:off + n]:
                        errors.append(f"f{i} off {off} len {n}: got "
                                      f"{len(got)} bytes" +
                                      ("" if data[off:off + len(got)] == got
                                       else ", wrong ones"))
            finally:
                os.close(fd)
        except OSError as e:
            errors.append(f"f{i}: {e}")

    threads = [threading.Thread(target=random_reader, args=(i,), daemon=True)
               for i in range(3)]
    for t in threads:
        t.start()
    for i in range(3, 6):
        drop_page_cache(m.p(f"f{i}"))
    read_concurrently([m.p(f"f{i}") for i in range(3, 6)], datas[3:])
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a random reader blocked"
    assert not errors, errors


def test_reused_block_buffers_never_show_another_files_bytes(proxy, s3, bucket,
                                                              mounter):
    """Block buffers are reused as they are, never zeroed (read.c, "warm
    buffers"): what a read gets must still be its own object's bytes only.
    Two files read in turn, 256 KiB at a time, under the smallest memory
    bound, so that each file's blocks land in buffers the other's just left;
    the short last block of `a` (100 bytes) sits in a buffer that held 1 MiB
    of `b`, so a read of the whole last block must stop at the 100th byte;
    then random preads of both, which free their blocks once stored."""
    a = rand_bytes(41, 5 * MiB + 100)
    b = rand_bytes(42, 9 * MiB)
    put(s3, bucket, "a", a)
    put(s3, bucket, "b", b)
    m = mounter(opts={"max_memory": "16M", "max_readahead": "4M"})
    fa = os.open(m.p("a"), os.O_RDONLY)
    fb = os.open(m.p("b"), os.O_RDONLY)
    try:
        for fd in (fa, fb):
            drop_fd_cache(fd)
        step = 256 * KiB
        for off in range(0, len(b), step):
            # b's next piece, then a's: a's blocks are made while b's are freed
            assert os.pread(fb, step, off) == b[off:off + step], f"b at {off}"
            if off < len(a):
                assert os.pread(fa, step, off) == a[off:off + step], \
                    f"a at {off}"
        drop_fd_cache(fa)
        assert os.pread(fa, MiB, 5 * MiB) == a[5 * MiB:], "a's short block"
        assert os.pread(fa, MiB, 5 * MiB + 100) == b""
        rng = random.Random(7)
        for i in range(200):
            fd, data = (fa, a) if i % 2 else (fb, b)
            off = rng.randrange(0, len(data))
            n = rng.choice([1, 4096, 300_000, MiB + 5])
            if i % 20 == 0:
                drop_fd_cache(fa)
                drop_fd_cache(fb)
            assert os.pread(fd, n, off) == data[off:off + n], \
                f"{'a' if fd == fa else 'b'} off {off} len {n}"
    finally:
        os.close(fa)
        os.close(fb)


def faults_and_peak(pid):
    """(minor page faults so far, peak resident bytes) of process pid."""
    with open(f"/proc/{pid}/stat") as f:
        minflt = int(f.read().rsplit(")", 1)[1].split()[7])
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(line.split()[1]) * KiB for line in f
                   if line.startswith("VmHWM:"))
    return minflt, hwm


def test_sequential_read_faults_each_buffer_in_once(proxy, s3, bucket,
                                                    mounter):
    """A sequential reader's block buffers are reused warm (read.c, "warm
    buffers"): a 1 MiB buffer mapped afresh costs 256 page faults and their
    zeroing.  So the pages pailfs faults in during a long read stay within
    its peak resident memory (each buffer once, at first use); when only
    32 freed buffers were kept, the rest were unmapped and mapped again as
    read-ahead grew and was consumed: a cold 1 GiB read faulted 295 MiB in
    for a peak of 98 MiB (issue 21)."""
    size = 512 * MiB
    data = b"".join(rand_bytes(45 + i, 32 * MiB) for i in range(size // (32 * MiB)))
    put(s3, bucket, "long", data)
    m = mounter()
    faults0, _ = faults_and_peak(m.pid)
    with open(m.p("long"), "rb") as f:
        drop_fd_cache(f.fileno())
        got = 0
        while True:
            piece = f.read(4 * MiB)
            if not piece:
                break
            assert piece == data[got:got + len(piece)], f"at {got}"
            got += len(piece)
    assert got == size
    faults1, peak = faults_and_peak(m.pid)
    faulted = (faults1 - faults0) * PAGE
    assert faulted <= peak, (faulted // MiB, peak // MiB)


def thp_on():
    """Whether the kernel backs an anonymous mapping advised MADV_HUGEPAGE
    with transparent huge pages ("always" or "madvise")."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not thp_on(), reason="transparent huge pages are off")
def test_sequential_read_buffers_fault_in_as_huge_pages(proxy, s3, bucket,
                                                        mounter):
    """Block buffers are carved two to a 2 MiB-aligned slab advised
    MADV_HUGEPAGE (read.c, "warm buffers"), so the kernel faults each slab
    in as one huge page and pins it a folio at a time for the FUSE reply
    and O_DIRECT.  Counted by pailfs's minor page faults over a cold read:
    with 1 MiB buffers (malloc'd, never 2 MiB-aligned, so never huge) it
    faulted in its peak resident memory 4 KiB at a time, one fault a page;
    with huge pages it takes a fault per 2 MiB, and the count stays far
    below a page's worth of its peak (issue 21)."""
    size = 128 * MiB
    data = b"".join(rand_bytes(47 + i, 32 * MiB) for i in range(size // (32 * MiB)))
    put(s3, bucket, "huge", data)
    m = mounter()
    faults0, _ = faults_and_peak(m.pid)
    assert read_all(m.p("huge"), chunk=4 * MiB) == data
    faults1, peak = faults_and_peak(m.pid)
    faulted = faults1 - faults0
    # 4 KiB faults would be about peak // PAGE (tens of thousands); libcurl,
    # the disk cache and the threads' stacks fault a few hundred pages
    assert faulted < peak // PAGE // 4, (faulted, peak // MiB)


def fuse_replies(pid):
    """The write calls pailfs made so far (/proc/PID/io syscw): with no
    disk cache, one per FUSE reply and a few log lines, nothing else (its
    sends to the server are not counted there)."""
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("syscw:"))
                   .split()[1])


@pytest.mark.parametrize("max_read", [None, 128 * KiB])
def test_sequential_read_crosses_fuse_in_1mib_requests(proxy, s3, bucket,
                                                       mounter, max_read):
    """The kernel asks for a sequential read 1 MiB at a time (ops.c:
    max_pages as high as the kernel allows, read-ahead 1 MiB), not in
    128 KiB pieces: a request costs a wakeup, a reply and a copy setup.
    Counted by pailfs's FUSE replies; with -o max_read=128k the same read
    takes 8 times as many, which shows the count sees the request size."""
    size = 32 * MiB
    data = rand_bytes(43, size)
    put(s3, bucket, "seq", data)
    opts = {"cache_size": "0"}
    if max_read:
        opts["max_read"] = str(max_read)
    m = mounter(opts=opts)
    before = fuse_replies(m.pid)
    assert read_all(m.p("seq"), chunk=4 * MiB) == data
    replies = fuse_replies(m.pid) - before
    if max_read:
        assert replies >= size // max_read, replies
    else:
        # 32 reads (and the open, getattr, release, a few log lines)
        assert size // MiB <= replies <= size // MiB + 16, replies


@pytest.mark.parametrize("cache_size", ["0", "64M"])
def test_many_handles_on_one_object(proxy, s3, bucket, mounter, cache_size):
    """Open files of the same object version share its blocks: readers
    going forwards, backwards, at random, and in runs with jumps between
    them (each jump lets go of the read-ahead of the run before), opening
    and closing while the others read, with little memory, with and
    without a disk cache, all get the right bytes."""
    size = 12 * MiB + 999
    data = rand_bytes(36, size)
    put(s3, bucket, "obj", data)
    m = mounter(opts={"cache_size": cache_size, "max_memory": "16M"})
    path = m.p("obj")
    errors = []

    def check(fd, off, n, who):
        got = pread_or_errno(fd, n, off)
        if isinstance(got, int):
            errors.append(f"{who} off {off}: {errno.errorcode.get(got, got)}")
        elif got != data[off:off + n]:
            errors.append(f"{who} off {off} len {n}: {len(got)} bytes"
                          + ("" if data[off:off + len(got)] == got
                             else ", wrong ones"))

    def forwards():
        if read_all(path) != data:
            errors.append("forwards: wrong bytes")

    def backwards():
        fd = os.open(path, os.O_RDONLY)
        try:
            for off in range(size - size % (256 * KiB), -1, -256 * KiB):
                drop_fd_cache(fd)
                check(fd, off, 256 * KiB, "backwards")
        finally:
            os.close(fd)

    def at_random(seed):
        rng = random.Random(seed)
        for _ in range(8):  # a new open file each round
            fd = os.open(path, os.O_RDONLY)
            try:
                for _ in range(10):
                    off = rng.randrange(0, size)
                    drop_fd_cache(fd)
                    check(fd, off, rng.randint(1, 1500 * KiB), f"random{seed}")
            finally:
                os.close(fd)

    def runs_and_jumps(seed):
        rng = random.Random(seed)
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(6):
                off = rng.randrange(0, size - 4 * MiB)
                for k in range(8):
                    check(fd, off + k * 512 * KiB, 512 * KiB, f"runs{seed}")
        finally:
            os.close(fd)

    jobs = [forwards, backwards, lambda: at_random(1), lambda: at_random(2),
            forwards, lambda: runs_and_jumps(3), lambda: runs_and_jumps(4)]
    threads = [threading.Thread(target=j, daemon=True) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a reader blocked"
    assert not errors, errors[:10]


def test_read_across_blocks_when_memory_is_full(proxy, s3, bucket, mounter):
    """A read that spans two blocks, the first held and the least recently
    used, the second missing, with memory full: making room for the second
    must not take the first away from under the read."""
    size = 20 * MiB
    data = rand_bytes(35, size)
    put(s3, bucket, "obj", data)
    m = mounter(opts={"cache_size": "0", "max_memory": "16M"})
    path = m.p("obj")
    if not o_direct_works(path):
        pytest.skip("no O_DIRECT on this FUSE mount")
    # O_DIRECT: every pread is one READ request of exactly its bytes
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        # 16 blocks held (all of max_memory), every read a seek; block 0
        # is the least recently used, block 1 is not held
        for b in (0, 2, 4, 6, 3, 5, 7, 9, 11, 8, 10, 12, 14, 16, 13, 15):
            assert os.pread(fd, 4096, b * MiB) == data[b * MiB:b * MiB + 4096]
        off = MiB - 4096
        got = pread_or_errno(fd, 8192, off)
        assert not isinstance(got, int), \
            f"pread across blocks 0 and 1: {errno.errorcode.get(got, got)}"
        assert got == data[off:off + 8192]
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# 6. A damaged block in the cache
# --------------------------------------------------------------------------

def test_damaged_cached_block_is_refetched(proxy, s3, bucket, mounter):
    size = 4 * MiB + 100
    data = rand_bytes(40, size)
    put(s3, bucket, "obj", data)
    m = mounter(log_level="info")
    assert read_all(m.p("obj")) == data
    root = cache_root(m)
    assert wait_until(lambda: len(cached_blocks(root)) == 5, 10), \
        cached_blocks(root)
    victim = cached_block(root, 2)
    with open(victim.path, "r+b") as f:
        f.seek(victim.off + BLK_HDR + 1000)
        b = f.read(1)
        f.seek(victim.off + BLK_HDR + 1000)
        f.write(bytes([b[0] ^ 0xFF]))
    drop_page_cache(m.p("obj"))
    proxy.reset()
    assert read_all(m.p("obj")) == data
    gets = get_records(proxy, "obj")
    fetched = set()
    for g in gets:
        first, last = parse_range(g["range"])
        last = size - 1 if last is None else min(last, size - 1)
        fetched |= set(range(first // MiB, last // MiB + 1))
    assert fetched == {2}, f"blocks fetched: {sorted(fetched)} " \
        f"({[g['range'] for g in gets]})"
    log = m.stderr_text()
    assert re.search(rf"{re.escape(victim.name)}\b.*damaged", log), log[-3000:]
    # the block is stored again, intact
    want = data[2 * MiB:3 * MiB]

    def rewritten():
        try:
            return cached_block(root, 2).data() == want
        except (FileNotFoundError, ValueError):
            return False

    assert wait_until(rewritten, 10), "the damaged block was not stored again"


def direct_pread(path, off, n=PAGE):
    """n bytes at off (both multiples of PAGE) through O_DIRECT: the read
    reaches pailfs as asked, with no kernel read-ahead or page cache."""
    buf = mmap.mmap(-1, n)  # page-aligned, as O_DIRECT wants
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        got = os.preadv(fd, [buf], off)
        return bytes(buf[:got])
    finally:
        os.close(fd)
        buf.close()


def test_damaged_page_found_by_small_read(proxy, s3, bucket, mounter):
    """A small read checks only the pages it returns: an intact page of a
    damaged block is served from the cache with no GET; a read that
    touches the damaged page finds it, drops the block and fetches that
    block alone again, with the right bytes."""
    size = 3 * MiB
    data = rand_bytes(41, size)
    put(s3, bucket, "obj", data)
    m = mounter(log_level="info")
    assert read_all(m.p("obj")) == data
    root = cache_root(m)
    assert wait_until(lambda: len(cached_blocks(root)) == 3, 10), \
        cached_blocks(root)
    victim = cached_block(root, 1)
    with open(victim.path, "r+b") as f:
        f.seek(victim.off + BLK_HDR + 10 * PAGE + 5)
        b = f.read(1)
        f.seek(victim.off + BLK_HDR + 10 * PAGE + 5)
        f.write(bytes([b[0] ^ 0xFF]))
    drop_page_cache(m.p("obj"))
    proxy.reset()
    off = MiB + 20 * PAGE
    assert direct_pread(m.p("obj"), off) == data[off:off + PAGE]
    assert get_records(proxy, "obj") == []
    assert cached_block(root, 1) == victim
    off = MiB + 10 * PAGE
    assert direct_pread(m.p("obj"), off) == data[off:off + PAGE]
    ranges = [parse_range(g["range"]) for g in get_records(proxy, "obj")]
    assert ranges == [(MiB, 2 * MiB - 1)], ranges
    log = m.stderr_text()
    assert re.search(rf"{re.escape(victim.name)}\b.*damaged", log), log[-3000:]
    want = data[MiB:2 * MiB]

    def rewritten():
        try:
            return cached_block(root, 1).data() == want
        except (FileNotFoundError, ValueError):
            return False

    assert wait_until(rewritten, 10), "the damaged block was not stored again"


def test_random_reads_each_block_fetched_once(proxy, s3, bucket, mounter):
    """4 KiB reads all over a 48 MiB object, with memory for 16 blocks:
    each block is fetched once, alone, and every read after its block's
    first is served from the disk cache (a page at a time), right."""
    size = 48 * MiB
    data = rand_bytes(42, size)
    put(s3, bucket, "obj", data)
    m = mounter(opts={"max_memory": "16M"})
    proxy.reset()
    rng = random.Random(7)
    for _ in range(600):
        off = rng.randrange(0, size // PAGE) * PAGE
        assert direct_pread(m.p("obj"), off) == data[off:off + PAGE], off
    blocks = []
    for g in get_records(proxy, "obj"):
        first, last = parse_range(g["range"])
        if (first, last) == (0, 0):
            continue  # an open after attr_ttl asking for the headers: block 0 is here
        assert first % MiB == 0 and last - first + 1 <= MiB, g["range"]
        blocks.append(first // MiB)
    assert len(blocks) == len(set(blocks)), sorted(blocks)


def test_first_get_block_kept_after_close(proxy, s3, bucket, mounter):
    """An open's first GET brings block 0; the program reads elsewhere and
    closes while block 0 is still arriving (a slow answer).  Block 0 is
    still fetched to its end and kept (the next open's read of it waits for
    those bytes, then finds them in the disk cache), not dropped and
    fetched again: the race behind test_random_reads_each_block_fetched_once
    failing now and then with block 0 fetched twice on a loaded machine."""
    size = 8 * MiB
    data = rand_bytes(43, size)
    put(s3, bucket, "d/obj", data)
    m = mounter()
    assert "obj" in ls_l(m.p("d"))  # known from the listing: the open sends the first GET
    proxy.reset()
    proxy.config(stall_body={"after": 256 * KiB, "ms": 1500, "path_regex": "obj"})
    try:
        off = 5 * MiB
        assert direct_pread(m.p("d/obj"), off) == data[off:off + PAGE]
        # closed; block 0's GET is paused after its first 256 KiB
        assert direct_pread(m.p("d/obj"), 600 * KiB) == data[600 * KiB:600 * KiB + PAGE]
    finally:
        proxy.config(stall_body=None)
    time.sleep(0.3)  # anything sent late would show now
    block0 = [g["range"] for g in get_records(proxy, "d/obj")
              if parse_range(g["range"])[0] == 0 and parse_range(g["range"]) != (0, 0)]
    assert len(block0) == 1, block0
    proxy.reset()
    assert direct_pread(m.p("d/obj"), 100 * KiB) == data[100 * KiB:100 * KiB + PAGE]
    assert [g["range"] for g in get_records(proxy, "d/obj")
            if parse_range(g["range"]) != (0, 0)] == [], "block 0 is not in the disk cache"


# --------------------------------------------------------------------------
# 7. A remount reads from the cache
# --------------------------------------------------------------------------

@pytest.mark.core
def test_remount_reads_from_cache(proxy, s3, bucket, mounter):
    size = 10 * MiB + 12345
    data = rand_bytes(50, size)
    put(s3, bucket, "obj", data)
    m = mounter()
    assert read_all(m.p("obj")) == data
    m.remount()
    assert len(cached_blocks(cache_root(m))) == 11, cached_blocks(cache_root(m))
    proxy.reset()
    drop_page_cache(m.p("obj"))
    assert read_all(m.p("obj")) == data
    fd = os.open(m.p("obj"), os.O_RDONLY)
    try:
        for off in (0, MiB - 3, 5 * MiB, size - 5000, size - 1):
            drop_fd_cache(fd)
            assert os.pread(fd, 8192, off) == data[off:off + 8192], off
    finally:
        os.close(fd)
    st = proxy.stats()
    assert st["by_op"].get("GetObject", 0) == 0, \
        [(r["op"], r["range"]) for r in st["recent"]]
    # files of the older formats (a block file, a write of one cut short
    # by a crash) are gone at the next start; a smaller cache_size trims
    # the cache at once
    [blocks] = blocks_dirs(cache_root(m))
    strays = [os.path.join(blocks, "0123456789abcdef0123456789abcdef-3.blk2" + t)
              for t in ("", ".tmp.9a8b")]
    for stray in strays:
        with open(stray, "wb") as f:
            f.write(b"PAILBLK2 half a block")
    m.remount(opts={"cache_size": "3M"})
    assert not any(os.path.exists(stray) for stray in strays)
    assert dir_bytes(cache_root(m)) <= 3 * MiB
    sizes = sorted(BLK_HDR + b.dlen for b in cached_blocks(cache_root(m)))
    assert sum(sizes) <= 3 * MiB and sizes.count(MiB + BLK_HDR) <= 2, sizes
    drop_page_cache(m.p("obj"))
    assert read_all(m.p("obj")) == data


# --------------------------------------------------------------------------
# 8. A full cache disk
# --------------------------------------------------------------------------

def test_full_cache_disk(proxy, s3, bucket, mounter, tmp_path):
    size = 12 * MiB
    data = rand_bytes(60, size)
    put(s3, bucket, "obj", data)
    small = tmp_path / "small"
    small.mkdir()
    # mode=0700: a tmpfs's root is 1777 by default, which pailfs refuses
    # as a cache directory (others could plant blocks in it)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700",
                        "tmpfs", str(small)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    m = None
    try:
        m = mounter(opts={"cache_dir": str(small), "cache_size": "64M"})
        assert read_all(m.p("obj")) == data
        drop_page_cache(m.p("obj"))
        assert read_all(m.p("obj")) == data  # some blocks cached, some not
        fd = os.open(m.p("obj"), os.O_RDONLY)
        try:
            for off in (0, 3 * MiB - 1, 7 * MiB, size - 10):
                drop_fd_cache(fd)
                assert os.pread(fd, 100_000, off) == data[off:off + 100_000]
        finally:
            os.close(fd)
        log = m.stderr_text()
        assert log.count("disk is full") == 1, log[-3000:]
        m.unmount()
    finally:
        if m is not None:
            m._kill()
        subprocess.run(["umount", str(small)], capture_output=True)


# --------------------------------------------------------------------------
# 9. cache_size=0
# --------------------------------------------------------------------------

def test_cache_size_zero_stores_nothing(proxy, s3, bucket, mounter):
    size = 5 * MiB + 3
    data = rand_bytes(70, size)
    put(s3, bucket, "obj", data)
    m = mounter(opts={"cache_size": "0"})
    assert read_all(m.p("obj")) == data
    time.sleep(0.3)
    assert cached_blocks(cache_root(m)) == []
    drop_page_cache(m.p("obj"))
    proxy.reset()
    assert read_all(m.p("obj")) == data
    assert n_gets(proxy) >= 1, "read again with no cache and no GET"
    m.remount()
    assert cached_blocks(cache_root(m)) == []


# --------------------------------------------------------------------------
# 10. Faults
# --------------------------------------------------------------------------

def test_reads_right_through_faults(proxy, s3, bucket, mounter):
    size = 20 * MiB + 777
    data = rand_bytes(80, size)
    put(s3, bucket, "obj", data)
    m = mounter(opts={"cache_size": "0", "retries": "10",
                      "part_size": "2M"})
    proxy.config(p503=0.05, preset=0.05, ptruncate=0.05, ignore_range=0.05,
                 only_ops=["GetObject"])
    assert call_with_timeout(read_all, 180, m.p("obj")) == data
    # again, past the page cache, in an order of its own
    rng = random.Random(5)
    chunks = list(range(0, size, 512 * KiB))
    rng.shuffle(chunks)
    fd = os.open(m.p("obj"), os.O_RDONLY)
    try:
        drop_fd_cache(fd)
        for i, off in enumerate(chunks):
            got = call_with_timeout(os.pread, 60, fd, 512 * KiB, off)
            assert got == data[off:off + 512 * KiB], f"chunk at {off}"
    finally:
        os.close(fd)
    drop_page_cache(m.p("obj"))
    assert call_with_timeout(read_all, 180, m.p("obj")) == data
    faults = proxy.stats()["faults"]
    assert sum(faults.get(k, 0) for k in ("503", "reset", "truncate")) >= 3, \
        faults


# --------------------------------------------------------------------------
# 11. One cache directory, two mounts of the bucket
# --------------------------------------------------------------------------

def test_second_mount_same_cache_dir_refused(proxy, s3, bucket, mounter,
                                             tmp_path):
    put(s3, bucket, "obj", b"hello")
    m = mounter()
    cache_dir = cache_root(m)
    expected = (f"pailfs: the block cache of bucket {bucket} in {cache_dir} "
                f"is in use by another pailfs; give each mount of the same "
                f"bucket its own -o cache_dir=")
    for foreground in (True, False):
        mp = tmp_path / f"second-{foreground}"
        mp.mkdir()
        argv = [str(PAILFS)] + (["-f"] if foreground else []) + [
            "-o", f"endpoint={proxy.url},path_style,cache_dir={cache_dir}",
            bucket, str(mp)]
        try:
            r = subprocess.run(argv, capture_output=True, text=True,
                               env=clean_env(), timeout=60)
            assert r.returncode == 1, (r.returncode, r.stderr)
            assert r.stderr.splitlines() == [expected], r.stderr
            assert r.stdout == ""
            assert not is_mounted(mp)
        finally:
            if is_mounted(mp):
                fusermount_unmount(mp, lazy=True)
    # the first mount is unharmed
    assert read_all(m.p("obj")) == b"hello"
    # another cache_dir works
    other = mounter(opts={"cache_dir": str(tmp_path / "other.cache")})
    assert read_all(other.p("obj")) == b"hello"


# --------------------------------------------------------------------------
# 12. keep_cache
# --------------------------------------------------------------------------

def resident_bytes(path):
    """Bytes of path in the kernel's page cache, found through an open (a
    FUSE OPEN: the filesystem's keep_cache answer applies first), mmap(2)
    and mincore(2), without reading anything."""
    size = os.stat(path).st_size
    if size == 0:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                          ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = os.sysconf("SC_PAGE_SIZE")
    pages = (size + page - 1) // page
    vec = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        try:
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(1 for v in vec if v & 1) * page


def test_keep_cache_only_for_the_same_version(proxy, s3, bucket, mounter):
    size = 3 * MiB + 5
    full = (size + 4095) // 4096 * 4096
    v1 = rand_bytes(90, size)
    v2 = rand_bytes(91, size)
    # Both versions the same size and, through s3fs's mtime header, the
    # same mtime: the kernel sees no change of attributes, so only the
    # ETag can tell the versions apart.
    same_mtime = {"mtime": "1700000000"}
    s3.put_object(Bucket=bucket, Key="obj", Body=v1, Metadata=same_mtime)
    ttl = 0.5
    m = mounter(attr_ttl=ttl, neg_ttl=ttl, opts={"cache_size": "0"})
    # Hold the inode: at the last close of a file whose entry has expired,
    # the kernel drops the dentry and the inode with its pages (FORGET),
    # and no keep_cache can bring them back.
    keeper = os.open(m.p("obj"), os.O_RDONLY)
    try:
        # An open after attr_ttl asks S3 again and finds the same ETag: the
        # pages stay.  Anything on the host may drop the page cache
        # meanwhile (a benchmark's `echo 3 > /proc/sys/vm/drop_caches`), so
        # one attempt of three that keeps the pages is enough; an open that
        # drops them would never keep them.
        tries = []
        for _ in range(3):
            assert read_all(m.p("obj")) == v1
            before = resident_bytes(m.p("obj"))
            time.sleep(ttl + 0.3)
            proxy.reset()
            kept = resident_bytes(m.p("obj"))
            st = proxy.stats()
            assert st["by_op"].get("HeadObject", 0) + \
                st["by_op"].get("ListObjectsV2", 0) >= 1, \
                "the open after attr_ttl did not check the object"
            tries.append((before, kept))
            if before == full and kept >= full * 0.9:
                break
        else:
            raise AssertionError(f"unchanged object opened again: pages "
                                 f"(before, after) of {full}: {tries}")
        assert read_all(m.p("obj")) == v1
        # same size, other bytes: the open must drop the pages
        s3.put_object(Bucket=bucket, Key="obj", Body=v2, Metadata=same_mtime)
        time.sleep(ttl + 0.3)
        assert os.stat(m.p("obj")).st_mtime == 1700000000
        left = resident_bytes(m.p("obj"))
        assert left == 0, f"{left} bytes of the old object kept at open"
        assert read_all(m.p("obj")) == v2
        time.sleep(ttl + 0.3)
        assert resident_bytes(m.p("obj")) >= full * 0.9
        assert read_all(m.p("obj")) == v2
        # the handle opened on v1 never mixes in v2: its reads need the
        # network (no disk cache), and the object changed under it
        os.posix_fadvise(keeper, 0, 0, os.POSIX_FADV_DONTNEED)
        got = pread_or_errno(keeper, 4096, 2 * MiB)
        assert got in (errno.EIO, v1[2 * MiB:2 * MiB + 4096]), \
            "a handle opened on v1 read " + \
            ("v2" if got == v2[2 * MiB:2 * MiB + 4096] else repr(got)[:60])
    finally:
        os.close(keeper)


# --------------------------------------------------------------------------
# The first GET of an open: the object's headers without a HEAD
# --------------------------------------------------------------------------

def ls_l(path):
    """`ls -l` of a directory (readdirplus: the names get the listing's
    attributes); its output."""
    return subprocess.run(["ls", "-l", path], capture_output=True, text=True,
                          timeout=30, check=True).stdout


def cat(path):
    return subprocess.run(["cat", path], capture_output=True, timeout=60,
                          check=True).stdout


def without_lookups(proxy, attempt, tries=3):
    """Run attempt(i) (i = 0, 1, ...: each with its own objects), the proxy
    reset by it, until one sends no LIST, and return the requests of that
    one by operation.  A LIST means the kernel looked names up again:
    something on the host dropped its dentries (a benchmark's
    drop_caches), which is not what is counted here."""
    seen = []
    for i in range(tries):
        attempt(i)
        got = ops(proxy)
        if "ListObjectsV2" not in got:
            return got
        seen.append(got)
    raise AssertionError(f"names looked up again in every attempt: {seen}")


@pytest.mark.core
def test_cat_after_listing_is_one_get(proxy, s3, bucket, mounter):
    files = {f"d/f{i}": rand_bytes(300 + i, 3000 + i) for i in range(3)}
    for key, data in files.items():
        put(s3, bucket, key, data)
    m = mounter(attr_ttl=30, neg_ttl=30)

    def attempt(i):
        assert "f2" in ls_l(m.p("d"))
        proxy.reset()
        assert cat(m.p(f"d/f{i}")) == files[f"d/f{i}"]
        attempt.i = i

    assert without_lookups(proxy, attempt) == {"GetObject": 1}
    name = f"d/f{attempt.i}"
    g = get_records(proxy, name)[0]
    etag = s3.head_object(Bucket=bucket, Key=name)["ETag"]
    assert dict((k.lower(), v) for k, v in g["headers"]).get("if-match") == etag, \
        "the first GET is not pinned to the listing's ETag"
    # the inode learnt what a HEAD would have told: nothing more is asked
    proxy.reset()
    assert cat(m.p(name)) == files[name]
    assert os.stat(m.p(name)).st_size == len(files[name])
    assert ops(proxy) == {}, ops(proxy)


def force_getattr(path):
    """statx(AT_STATX_FORCE_SYNC): the kernel asks pailfs for the attributes
    even while its own are valid, and keeps the answer for attr_ttl from now."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)
    AT_FDCWD, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS = -100, 0x2000, 0x7ff
    if libc.statx(AT_FDCWD, os.fsencode(path), AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, buf):
        raise OSError(ctypes.get_errno(), "statx")


def test_reopen_after_attr_ttl_is_one_get(proxy, s3, bucket, mounter):
    """After attr_ttl an open revalidates with its first GET (not pinned:
    whatever version is there), not a HEAD.  Usually the kernel's own
    attributes expire with pailfs's and its permission check (getattr)
    asks first; an open finds pailfs's expired and the kernel's valid when
    the kernel was answered later (here a forced getattr).  The open goes
    through /proc/PID/fd, which the kernel does not look up again: what is
    counted is the open and the read alone."""
    old, new = rand_bytes(310, 5000), rand_bytes(311, 7000)
    put(s3, bucket, "d/f", old)
    ttl = 2
    m = mounter(attr_ttl=ttl, neg_ttl=ttl)
    keeper = os.open(m.p("d/f"), os.O_RDONLY)
    again = f"/proc/{os.getpid()}/fd/{keeper}"
    try:
        assert os.pread(keeper, 10000, 0) == old
        for want in (old, new):
            if want is new:
                put(s3, bucket, "d/f", new)
            t = time.monotonic()
            time.sleep(ttl / 2)
            force_getattr(m.p("d/f"))  # pailfs's still fresh: the kernel's renewed
            time.sleep(max(0, t + ttl * 1.25 - time.monotonic()))
            proxy.reset()
            # a new version is seen whole, the old one's pages and size dropped
            assert cat(again) == want
            assert ops(proxy) == {"GetObject": 1}, ops(proxy)
            assert os.fstat(keeper).st_size == len(want)
    finally:
        os.close(keeper)


def test_reopen_after_attr_ttl_with_block_0_cached_asks_headers(proxy, s3, bucket, mounter):
    """Block 0 of the version known is in the disk cache: the open's GET
    after attr_ttl asks for one byte (its headers), not the block again.
    A new version is then read by the read path, right."""
    size = 2 * MiB + 100
    old, new = rand_bytes(330, size), rand_bytes(331, size - 50)
    put(s3, bucket, "big", old)
    ttl = 2
    m = mounter(attr_ttl=ttl, neg_ttl=ttl)
    keeper = os.open(m.p("big"), os.O_RDONLY)
    again = f"/proc/{os.getpid()}/fd/{keeper}"
    try:
        assert os.pread(keeper, size, 0) == old
        assert wait_until(lambda: len(cached_blocks(cache_root(m))) == 3, 10)
        for want in (old, new):
            if want is new:
                put(s3, bucket, "big", new)
            t = time.monotonic()
            time.sleep(ttl / 2)
            force_getattr(m.p("big"))  # pailfs's still fresh: the kernel's renewed
            time.sleep(max(0, t + ttl * 1.25 - time.monotonic()))
            drop_fd_cache(keeper)
            proxy.reset()
            assert read_all(again) == want
            assert "HeadObject" not in ops(proxy), ops(proxy)
            ranges = [parse_range(g["range"]) for g in get_records(proxy, "big")]
            assert ranges[0] == (0, 0), ranges  # the open's: headers only
            if want is old:
                assert ranges == [(0, 0)], ranges  # every block from the disk cache
            else:  # the new version's blocks, each once, by the read path
                got = sum(min(last, len(new) - 1) - first + 1 for first, last in ranges[1:])
                assert got == len(new), ranges
    finally:
        os.close(keeper)


@pytest.mark.core
@pytest.mark.parametrize("new_len", [2000, 9000])
def test_object_replaced_between_listing_and_open(proxy, s3, bucket, mounter, new_len):
    """The listing's ETag pins the first GET: a 412 makes the open look the
    object up again (HEAD) and read the new version whole, never a mix."""
    old = rand_bytes(320, 5000)
    new = [rand_bytes(321 + i, new_len) for i in range(3)]
    for i in range(3):
        put(s3, bucket, f"d/f{i}", old)
    m = mounter(attr_ttl=30, neg_ttl=30)

    def attempt(i):
        assert " 5000 " in ls_l(m.p("d"))
        put(s3, bucket, f"d/f{i}", new[i])
        proxy.reset()
        assert cat(m.p(f"d/f{i}")) == new[i]
        assert os.stat(m.p(f"d/f{i}")).st_size == new_len
        attempt.i = i

    # the first file of a listing is fetched by the read-ahead across files
    # (prefetch.c), whose 412 withdraws the name's trust: the open's own GET
    # then asks for the object as it is (no HEAD); any other file by the
    # open's first GET, pinned, whose 412 sends the HEAD path
    by_op = without_lookups(proxy, attempt)
    assert by_op in ({"GetObject": 2}, {"GetObject": 2, "HeadObject": 1}), by_op
    statuses = [g["status"] for g in get_records(proxy, f"d/f{attempt.i}")]
    assert statuses[0] == 412 and statuses[1] in (200, 206), statuses


@pytest.mark.core
def test_gzip_object_from_listing_opens_as_view(proxy, s3, bucket, mounter):
    data = b"".join(b"line %d of a gzip-encoded object\n" % i for i in range(2000))
    for i in range(3):
        put(s3, bucket, f"d/enc{i}.json", gzip.compress(data), ContentEncoding="gzip")
    m = mounter(attr_ttl=30, neg_ttl=30)

    def attempt(i):
        ls_l(m.p("d"))
        proxy.reset()
        assert cat(m.p(f"d/enc{i}.json")) == data
        attempt.i = i

    # one GET; two when the read-ahead across files fetched it first (its
    # headers say gzip: those bytes are not a view's, and are not used)
    by_op = without_lookups(proxy, attempt)
    assert by_op in ({"GetObject": 1}, {"GetObject": 2}), by_op
    assert os.stat(m.p(f"d/enc{attempt.i}.json")).st_size == len(data)
    with pytest.raises(OSError) as e:  # a view is read-only
        os.open(m.p(f"d/enc{attempt.i}.json"), os.O_WRONLY)
    assert e.value.errno == errno.EACCES


@pytest.mark.core
def test_symlink_object_from_listing_is_no_regular_file(proxy, s3, bucket, mounter):
    """A listing cannot tell a symlink (s3fs: x-amz-meta-mode S_IFLNK, the
    target as the body): the open's first GET finds out and answers ESTALE,
    the kernel looks the name up again and follows the link.  (The kernel
    drops its inode of the old type; when its FORGET comes before the new
    lookup, that lookup asks S3 again: the count is not fixed.)"""
    put(s3, bucket, "d/target", b"the target's bytes")
    put(s3, bucket, "d/link", b"target", Metadata={"mode": str(0o120777)})
    m = mounter(attr_ttl=30, neg_ttl=30)
    assert re.search(r"^-.* 6 .* link$", ls_l(m.p("d")), re.M)  # a file, as listed
    proxy.reset()
    with open(m.p("d/link"), "rb") as f:  # follows the link
        assert f.read() == b"the target's bytes"
    assert os.readlink(m.p("d/link")) == "target"
    assert os.path.islink(m.p("d/link"))
    # the link's own bytes were read as a link's target, never as a file's
    # data: its first GET and readlink's, and the target's first GET
    # data: its first GET (and the read-ahead's, when it came first) and
    # readlink's, and the target's first GET
    gets = [(g["key"], parse_range(g["range"])[0]) for g in get_records(proxy)]
    assert sorted(gets) in ([("d/link", 0)] * 2 + [("d/target", 0)],
                            [("d/link", 0)] * 3 + [("d/target", 0)]), gets


# --------------------------------------------------------------------------
# Options of the read path
# --------------------------------------------------------------------------

@pytest.mark.parametrize("opt,message", [
    ("max_memory=15M", "expected a size of at least 16M, such as 256M"),
    ("part_size=4095", "expected a size from 4k to 1G, such as 8M"),
    ("part_size=1025M", "expected a size from 4k to 1G, such as 8M"),
    ("max_inflight=0", "expected a whole number from 1 to 64"),
    ("max_inflight=65", "expected a whole number from 1 to 64"),
    ("abort_stale_uploads=0",
     "expected off, or a duration such as 3600, 90m, 24h or 7d"),
    ("abort_stale_uploads=5x",
     "expected off, or a duration such as 3600, 90m, 24h or 7d"),
    ("max_readahead=512k", "expected a size from 1M to 1G, such as 32M"),
    ("max_readahead=2G", "expected a size from 1M to 1G, such as 32M"),
    ("read_parallel=0", "expected a whole number from 1 to 64"),
    ("read_parallel=65", "expected a whole number from 1 to 64"),
    ("cache_size=10x", "expected a size in bytes such as 0, 500M or 10G"),
    ("cache_size=-1", "expected a size in bytes such as 0, 500M or 10G"),
])
def test_read_option_bounds(tmp_path, opt, message):
    name, value = opt.split("=", 1)
    r = subprocess.run([str(PAILFS), "-f", "-o", opt, "some-bucket",
                        str(tmp_path)], capture_output=True, text=True,
                       env=clean_env(), timeout=30)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"pailfs: bad value '{value}' for -o {name}: {message}"], r.stderr
    assert not is_mounted(tmp_path)


def test_smallest_read_settings(proxy, s3, bucket, mounter):
    size = 6 * MiB + 1
    data = rand_bytes(95, size)
    put(s3, bucket, "obj", data)
    m = mounter(opts={"read_parallel": "1", "part_size": "1M",
                      "max_readahead": "1M", "max_memory": "16M",
                      "cache_size": "5k"})
    proxy.reset()
    assert read_all(m.p("obj")) == data
    for g in get_records(proxy, "obj"):
        first, last = parse_range(g["range"])
        assert last is not None and last - first + 1 <= MiB, g["range"]
    # 5k holds no whole block (EFBIG), only the 1-byte last one
    blocks = wait_until(lambda: cached_blocks(cache_root(m)), 10)
    assert [(b.no, b.dlen) for b in blocks] == [(6, 1)], blocks
    drop_page_cache(m.p("obj"))
    assert read_all(m.p("obj")) == data
