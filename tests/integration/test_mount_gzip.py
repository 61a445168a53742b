"""gzip objects read decompressed (issue 7): the three gunzip modes, views
byte-identical to the decompressed data (one member and many, gzip -1 and
-9, pigz and bgzip when installed), random offsets before and after the
index is complete and after a remount (the index is reused: the proxy
counts no full re-read), sizes that become exact, and damaged streams
failing with EIO where the damage is while earlier bytes stay right."""

import errno
import gzip
import hashlib
import mmap
import os
import random
import re
import shutil
import subprocess
import time
import zlib

import pytest

from helpers import get_bytes, put, text
from mount import mnt, mounter, read  # noqa: F401

MiB = 1 << 20


@pytest.fixture(scope="module")
def big():
    """8 MiB of text and its gzip (about 1.6 MiB: above the size read whole
    at lookup, so its size starts as an estimate)."""
    data = text(8 * MiB, seed=3)
    return data, gzip.compress(data, 6)


@pytest.mark.core
def test_view_mode(s3, bucket, mounter, big):
    data, gz = big
    small = b"hello, gzip\n" * 1000
    put(s3, bucket, "d/data.json.gz", gz)
    put(s3, bucket, "d/small.txt.gz", gzip.compress(small))
    put(s3, bucket, "d/real.gz", gzip.compress(b"compressed"))
    put(s3, bucket, "d/real", b"the real object")
    put(s3, bucket, "d/notgz.gz", b"not gzip at all")
    m = mounter(opts=["gunzip=view"])
    names = sorted(os.listdir(m.p("d")))
    assert names == ["data.json", "data.json.gz", "notgz", "notgz.gz", "real", "real.gz",
                     "small.txt", "small.txt.gz"], names
    assert read(m.p("d/data.json")) == data
    assert read(m.p("d/data.json.gz")) == gz  # the raw bytes stay as they are
    assert os.stat(m.p("d/small.txt")).st_size == len(small)  # small: exact at once
    assert read(m.p("d/small.txt")) == small
    assert read(m.p("d/real")) == b"the real object"  # the real one wins
    assert read(m.p("d/notgz")) == b"not gzip at all"  # shown raw, logged
    assert read(m.p("d/notgz")) == b"not gzip at all"  # ...once
    assert m.stderr_text().count("notgz.gz is not gzip") == 1, m.stderr_text()
    # exact once read whole (the kernel was told to drop the estimate)
    assert os.stat(m.p("d/data.json")).st_size == len(data)
    # read-only view; the raw object stays writable
    with pytest.raises(OSError) as e:
        os.open(m.p("d/data.json"), os.O_WRONLY)
    assert e.value.errno == errno.EACCES
    with open(m.p("d/small.txt.gz"), "ab") as f:
        f.write(gzip.compress(b"second member\n"))
    time.sleep(1.1)
    assert read(m.p("d/small.txt")) == small + b"second member\n"


@pytest.mark.core
def test_encoding_mode(s3, bucket, mnt, big):
    data, gz = big
    put(s3, bucket, "enc.json", gz, ContentEncoding="gzip")
    put(s3, bucket, "small-enc", gzip.compress(b"x" * 5000), ContentEncoding="gzip")
    put(s3, bucket, "plain.gz", gz)  # no Content-Encoding: raw in this mode
    assert os.stat(mnt.p("small-enc")).st_size == 5000
    assert read(mnt.p("small-enc")) == b"x" * 5000
    assert read(mnt.p("enc.json")) == data
    assert os.stat(mnt.p("enc.json")).st_size == len(data)
    assert read(mnt.p("plain.gz")) == gz
    assert sorted(os.listdir(mnt.p())) == ["enc.json", "plain.gz", "small-enc"]


@pytest.mark.core
def test_replace_mode(s3, bucket, mounter, big):
    data, gz = big
    put(s3, bucket, "a.json.gz", gz)
    put(s3, bucket, "b.txt", b"plain")
    m = mounter(opts=["gunzip=replace"])
    assert sorted(os.listdir(m.p())) == ["a.json", "b.txt"]
    assert read(m.p("a.json")) == data
    assert read(m.p("a.json.gz")) == gz  # by its exact name: the raw bytes


def test_random_offsets_and_index_reuse(s3, bucket, proxy, mounter):
    data = text(40 * MiB, seed=8)
    gz = gzip.compress(data, 6)
    put(s3, bucket, "r.json.gz", gz)
    m = mounter(opts=["gunzip=view", "gz_span=1M", "cache_size=0"])
    rng = random.Random(11)
    checks = [(rng.randrange(len(data) + 100), rng.randrange(1, 200_000)) for _ in range(300)]

    def check_all(path):
        with open(path, "rb") as f:
            for off, n in checks:
                f.seek(off)
                assert f.read(n) == data[off:off + n], (off, n)

    check_all(m.p("r.json"))  # before the index is complete (direct_io)
    assert read(m.p("r.json")) == data  # complete now
    check_all(m.p("r.json"))
    index_dir = m.path + ".cache/gzindex"
    files = os.listdir(index_dir)
    assert len(files) == 1
    assert os.path.getsize(os.path.join(index_dir, files[0])) < len(gz) // 10
    m.remount()
    proxy.reset()
    assert os.stat(m.p("r.json")).st_size == len(data)  # exact from the saved index
    with open(m.p("r.json"), "rb") as f:
        f.seek(len(data) - 4096)
        assert f.read() == data[-4096:]
    # the first block (the gzip magic is checked at open) and the tail's
    # span, not the whole object
    assert get_bytes(proxy) < len(gz) // 2, "the tail was read by inflating from the start"
    assert "not usable" not in m.stderr_text()
    check_all(m.p("r.json"))


def test_concurrent_reads_of_one_handle_with_workers(s3, bucket, mounter):
    """Once a view's size is exact it is read through the page cache, and
    the kernel's read-ahead sends several READs of one handle at once.
    Here threads also read one open view at once, in sequential runs that
    start and stop the inflating workers, the page cache dropped before
    each run.  A direct read must never use the handle's cursor while
    worker 0 fills with it (it once could: a read waiting for the
    read-ahead let go of the lock, another read restarted the workers, and
    the first went on as if they were stopped; ASan saw ISA-L read past its
    state).  Every byte is compared."""
    import threading
    data = text(24 * MiB, seed=13)
    put(s3, bucket, "cc.jsonl.gz", gzip.compress(data, 6))
    m = mounter(opts=["gunzip=view", "gz_span=1M", "gz_workers=3"])
    assert read(m.p("cc.jsonl")) == data  # builds the index: the size is exact
    m.remount()
    fd = os.open(m.p("cc.jsonl"), os.O_RDONLY)
    errors = []
    step = 256 * 1024

    def reader(seed):
        rng = random.Random(seed)
        for _ in range(12):
            off = rng.randrange(len(data) // step) * step
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for k in range(12):  # a sequential run
                at = off + k * step
                try:
                    got = os.pread(fd, step, at)
                except OSError as e:
                    errors.append(f"pread at {at}: {e}")
                    return
                if got != data[at:at + step]:
                    errors.append(f"wrong bytes at {at} ({len(got)})")
                    return

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(fd)
    assert not errors, errors[:5]


@pytest.mark.parametrize("how", ["garbage", "flipped", "short"])
def test_corrupt_index_file_is_rebuilt(s3, bucket, mounter, how):
    """A saved index that is damaged (or from elsewhere) is not trusted: the
    view reads right, the log says so, and a good index replaces it."""
    data = text(12 * MiB, seed=9)
    put(s3, bucket, "x.json.gz", gzip.compress(data, 6))
    m = mounter(opts=["gunzip=view", "gz_span=1M", "cache_size=0"])
    assert read(m.p("x.json")) == data
    index_dir = m.path + ".cache/gzindex"
    files = os.listdir(index_dir)
    assert len(files) == 1
    path = os.path.join(index_dir, files[0])
    good = open(path, "rb").read()
    m.unmount()
    if how == "garbage":
        bad = random.Random(3).randbytes(len(good))
    elif how == "flipped":  # one byte in the middle, where the points are
        bad = bytearray(good)
        bad[len(good) // 2] ^= 0x40
        bad = bytes(bad)
    else:
        bad = good[:len(good) // 3]
    with open(path, "wb") as f:
        f.write(bad)
    m.start()
    rng = random.Random(12)
    with open(m.p("x.json"), "rb") as f:
        for _ in range(50):
            off = rng.randrange(len(data))
            f.seek(off)
            assert f.read(5000) == data[off:off + 5000], off
    assert read(m.p("x.json")) == data
    assert "not usable" in m.stderr_text() or "is corrupt" in m.stderr_text(), m.stderr_text()
    m.unmount()
    assert open(path, "rb").read() != bad, "the damaged index file was kept"


def compressors():
    out = [("gzip-1", lambda d: gzip.compress(d, 1)), ("gzip-9", lambda d: gzip.compress(d, 9)),
           ("members", lambda d: b"".join(gzip.compress(d[i:i + 300_000])
                                          for i in range(0, len(d), 300_000)))]
    for tool, args in (("pigz", ["pigz", "-c"]), ("bgzip", ["bgzip", "-c"])):
        if shutil.which(tool):
            out.append((tool, lambda d, a=args: subprocess.run(
                a, input=d, capture_output=True, check=True).stdout))
    return out


@pytest.mark.parametrize("name,compress", compressors(), ids=[c[0] for c in compressors()])
def test_compressors(s3, bucket, mounter, name, compress):
    data = text(3 * MiB + 17, seed=5)
    put(s3, bucket, "c.gz", compress(data))
    put(s3, bucket, "empty.gz", gzip.compress(b""))
    put(s3, bucket, "one.gz", gzip.compress(b"1"))
    m = mounter(opts=["gunzip=view"])
    assert read(m.p("c")) == data
    assert read(m.p("empty")) == b""
    assert read(m.p("one")) == b"1"
    with open(m.p("c"), "rb") as f:
        f.seek(2 * MiB + 5)
        assert f.read(1000) == data[2 * MiB + 5:2 * MiB + 1005]


@pytest.mark.core
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_stream(s3, bucket, mounter, big, damage):
    data, gz = big
    if damage == "truncated":
        bad = gz[:len(gz) * 6 // 10]
    else:
        bad = bytearray(gz)
        bad[len(gz) // 2] ^= 0x55
        bad = bytes(bad)
    put(s3, bucket, "bad.json.gz", bad)
    m = mounter(opts=["gunzip=view"])
    got = bytearray()
    fd = os.open(m.p("bad.json"), os.O_RDONLY)  # unbuffered: every short read counts
    try:
        with pytest.raises(OSError) as e:
            while True:
                chunk = os.read(fd, MiB)
                if not chunk:
                    break
                got += chunk
    finally:
        os.close(fd)
    assert e.value.errno == errno.EIO
    if damage == "truncated":
        # every byte handed out is right, and the EIO comes where the data
        # end: zlib gives out what the truncated stream holds (ISA-L may
        # keep back the end of the last, partial deflate block)
        assert got == data[:len(got)]
        whole = len(zlib.decompressobj(31).decompress(bad))
        assert whole - 256 * 1024 <= len(got) <= whole, (len(got), whole)
    else:
        # a flipped bit may decode to wrong bytes until the member's CRC
        # says so; what comes before the damaged byte is right
        assert len(got) >= len(data) // 4 and got[:len(data) // 4] == data[:len(data) // 4]
    log = m.stderr_text()
    assert "gzip stream damaged at decompressed offset" in log
    # one line names the object and the offset
    named = [ln for ln in log.splitlines() if "bad.json.gz" in ln and "damaged" in ln]
    assert len(named) == 1, log
    assert re.search(r"end at offset (\d+)", named[0])
    assert read(m.p("bad.json.gz")) == bad  # the raw object stays readable


def test_five_gib_view(s3, bucket, mounter):
    """80 members of 64 MiB of zeros: 5 GiB decompressed from 5 MiB.  The
    size starts as an estimate (ISIZE is the last member's), the view is
    read to its real end anyway, and is exact afterwards."""
    member = gzip.compress(bytes(64 * MiB), 9)
    put(s3, bucket, "z.gz", member * 80)
    m = mounter(opts=["gunzip=view"])
    assert os.stat(m.p("z")).st_size < 5 * 1024 * MiB  # an estimate
    with open(m.p("z"), "rb") as f:
        # its first members read in order, then a jump past the estimate
        # (and past 4 GiB) to the last bytes, and past the real end: the
        # view inflates all of it on the way, without 5 GiB through FUSE
        for _ in range(2 * 64 // 4):
            assert f.read(4 * MiB) == bytes(4 * MiB)
        f.seek(80 * 64 * MiB - 8 * MiB)
        assert f.read(4 * MiB) == bytes(4 * MiB)
        assert f.read(8 * MiB) == bytes(4 * MiB)
        assert f.read(4 * MiB) == b""
    assert os.stat(m.p("z")).st_size == 80 * 64 * MiB
    tail = subprocess.run(["tail", "-c", "4096", m.p("z")], capture_output=True, check=True)
    assert tail.stdout == bytes(4096)


@pytest.mark.core
def test_gz_size_exact_and_mmap(s3, bucket, mounter):
    """Two members, 3 MiB compressed (above the read-whole-at-lookup size):
    the trailer's ISIZE is only the last member's, so by default the first
    stat is an estimate; with gz_size=exact the first stat is exact.  Once
    the size is exact, an open uses the page cache and mmap works."""
    a, b = text(5 * MiB, seed=31), text(3 * MiB, seed=32)
    body = gzip.compress(a, 1) + gzip.compress(b, 1)
    assert len(body) > MiB
    put(s3, bucket, "two.gz", body)
    data = a + b
    m = mounter(opts=["gunzip=view"])
    assert os.stat(m.p("two")).st_size != len(data)  # an estimate: ISIZE of b
    m.unmount()
    m2 = mounter(opts=["gunzip=view", "gz_size=exact", "cache_size=0"])
    assert os.stat(m2.p("two")).st_size == len(data)  # exact at the first stat
    with open(m2.p("two"), "rb") as f:
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert len(mm) == len(data)
            assert mm[:4096] == data[:4096]
            assert mm[len(data) // 2:len(data) // 2 + 4096] == data[len(data) // 2:len(data) // 2 + 4096]
            assert mm[-4096:] == data[-4096:]


def test_against_igzip_and_gztool(s3, bucket, mounter, tmp_path):
    """The references Debian ships: igzip -dc for the whole view, gztool -b
    (zran-style extraction at an offset) for seeks into it."""
    data = text(6 * MiB, seed=21)
    gz_path = tmp_path / "ref.gz"
    gz_path.write_bytes(subprocess.run(["pigz", "-c", "-p", "2"], input=data,
                                       capture_output=True, check=True).stdout
                        if shutil.which("pigz") else gzip.compress(data))
    put(s3, bucket, "ref.gz", gz_path.read_bytes())
    m = mounter(opts=["gunzip=view", "gz_span=1M"])
    whole = subprocess.run(["igzip", "-dc", str(gz_path)], capture_output=True, check=True).stdout
    assert read(m.p("ref")) == whole == data
    if not shutil.which("gztool"):
        pytest.skip("gztool is not installed")
    for off in (0, 1_000_003, 4 * MiB + 77, len(data) - 10):
        ref = subprocess.run(["gztool", "-b", str(off), "-W", str(gz_path)],
                             capture_output=True, check=True, cwd=tmp_path).stdout
        assert ref == data[off:]
        with open(m.p("ref"), "rb") as f:
            f.seek(off)
            assert f.read(len(ref)) == ref, off


def get_starts(proxy, key):
    """Where the GETs of `key` began (0 for a GET without a Range)."""
    out = []
    for r in proxy.stats()["recent"]:
        if r.get("op") == "GetObject" and r.get("key") == key:
            rng = r.get("range") or "bytes=0-"
            out.append(int(rng.split("=")[1].split("-")[0]))
    return out


def test_shared_index_second_mount_does_not_rebuild(s3, bucket, proxy, mounter):
    data = text(40 * MiB, seed=12)
    gz = gzip.compress(data, 6)
    put(s3, bucket, "logs/big.json.gz", gz)
    a = mounter(opts=["gunzip=view", "gz_index=shared", "gz_span=1M"])
    assert read(a.p("logs/big.json")) == data
    shared = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=".pailfs/")
              .get("Contents", [])]
    assert len(shared) == 1 and shared[0].startswith(".pailfs/gzindex/"), shared
    assert sorted(os.listdir(a.p())) == ["logs"]  # the index is not part of the data
    proxy.reset()
    b = mounter(opts=["gunzip=view", "gz_index=shared", "gz_span=1M"])  # its own cache_dir
    assert os.stat(b.p("logs/big.json")).st_size == len(data)  # exact at once
    with open(b.p("logs/big.json"), "rb") as f:
        f.seek(len(data) - 100_000)
        assert f.read() == data[-100_000:]
    by_op = proxy.stats()["by_op"]
    assert by_op.get("PutObject", 0) == 0, by_op  # nothing rebuilt, nothing stored
    assert proxy.stats()["bytes_out"] < len(gz) // 2


def test_gzindex_command(s3, bucket, proxy, mounter, tmp_path):
    from mount import PAILFS, clean_env
    data = text(40 * MiB, seed=13)
    gz = gzip.compress(data, 6)
    put(s3, bucket, "cmd.json.gz", gz)
    put(s3, bucket, "plain.txt", b"not gzip")
    cache = tmp_path / "shared-cache"
    opts = f"endpoint={proxy.url},path_style,cache_dir={cache},gz_span=1M"
    r = subprocess.run([str(PAILFS), "gzindex", "-o", opts, bucket, "cmd.json.gz"],
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"cmd.json.gz: {len(data)} bytes decompressed" in r.stdout, r.stdout
    r = subprocess.run([str(PAILFS), "gzindex", "-o", opts, f"s3://{bucket}/plain.txt"],
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    assert r.returncode == 1 and "plain.txt" in r.stderr, (r.stdout, r.stderr)
    proxy.reset()
    m = mounter(opts=["gunzip=view", f"cache_dir={cache}"])
    assert os.stat(m.p("cmd.json")).st_size == len(data)
    with open(m.p("cmd.json"), "rb") as f:
        f.seek(len(data) // 2)
        assert f.read(5000) == data[len(data) // 2:len(data) // 2 + 5000]
    # the first block (the gzip magic), then from the access point before
    # the middle on: nothing in between was fetched to inflate from 0
    starts = get_starts(proxy, "cmd.json.gz")
    assert starts and starts[0] == 0, starts
    assert all(s >= len(gz) // 2 - 2 * MiB for s in starts[1:]), (starts, len(gz))


def test_sequential_read_with_an_index_inflates_spans_in_parallel(
        s3, bucket, mounter):
    """Once the index exists (here: after a remount, from its file), a
    sequential reader's read-ahead inflates whole spans on several workers
    at once; the bytes stay exact whichever worker made them, also when
    the reader jumps into the middle of a span and reads on from there."""
    data = text(40 * MiB, seed=11)
    put(s3, bucket, "par.jsonl.gz", gzip.compress(data, 6))
    m = mounter(opts=["gunzip=view", "gz_span=1M", "gz_workers=3"],
                log_level="debug")
    assert read(m.p("par.jsonl")) == data  # builds and saves the index
    m.remount()
    want = hashlib.sha256(data).hexdigest()
    for _ in range(2):
        h = hashlib.sha256()
        with open(m.p("par.jsonl"), "rb", buffering=0) as f:
            while True:
                chunk = f.read(128 * 1024)
                if not chunk:
                    break
                h.update(chunk)
        assert h.hexdigest() == want
    with open(m.p("par.jsonl"), "rb", buffering=0) as f:
        f.seek(17 * MiB + 12345)
        got = b"".join(iter(lambda: f.read(200 * 1024), b""))
    assert got == data[17 * MiB + 12345:]
    log = m.stderr_text()
    workers = [int(x.split("with ")[1].split(" ")[0]) for x in log.splitlines()
               if "inflating ahead with" in x]
    assert workers, log[-2000:]
    assert set(workers) == {3}
