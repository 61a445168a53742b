"""data.py: the fault suite's content, generated from seeds.

The test process and the worker processes (worker.py) derive the same bytes
from the same seed, so a 256 MiB object never has to be handed between
them: the worker writes what chunks(seed, size) yields, and the test knows
its sha256 without reading the mount.
"""

import gzip
import hashlib
import random

MiB = 1 << 20


def chunks(seed, size, chunk=MiB):
    """size pseudo-random bytes, in pieces of `chunk` (the last shorter)."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def blob(seed, size):
    return b"".join(chunks(seed, size))


def sha256(buf):
    return hashlib.sha256(buf).hexdigest()


def stream_sha(seed, size):
    h = hashlib.sha256()
    for c in chunks(seed, size):
        h.update(c)
    return h.hexdigest()


def patches(seed, size, count=8, length=64 * 1024):
    """(offset, bytes) edits inside an object of `size` bytes: spread over
    it, some straddling a 1 MiB block boundary, one at the very end."""
    rng = random.Random(seed + 7)
    out = []
    step = size // count
    for i in range(count - 1):
        offset = i * step + rng.randrange(0, max(1, step - length))
        if i % 2:
            offset = (offset // MiB + 1) * MiB - length // 2  # straddles
        out.append((min(offset, size - length), rng.randbytes(length)))
    out.append((size - length, rng.randbytes(length)))
    return out


def patched(seed, old):
    buf = bytearray(old)
    for offset, patch in patches(seed, len(old)):
        buf[offset:offset + len(patch)] = patch
    return bytes(buf)


def dir_name(i):
    return f"k{i:03d}"


def dir_body(i):
    """Small files of different sizes, 1 byte to about 8 KiB."""
    rng = random.Random(1000 + i)
    return rng.randbytes(1 + (i * 37) % 8192)


def json_lines(size, seed):
    """JSON-lines text that compresses about 5:1, like the job's logs."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]
    out, n, i = [], 0, 0
    while n < size:
        line = ('{"id":%d,"name":"%s","v":%d,"tags":["%s","%s"]}\n' % (
            i, rng.choice(words), rng.randrange(10 ** 6), rng.choice(words),
            rng.choice(words))).encode()
        out.append(line)
        n += len(line)
        i += 1
    return b"".join(out)[:size]


def gz_pair(size, seed):
    plain = json_lines(size, seed)
    return plain, gzip.compress(plain, 6, mtime=0)
