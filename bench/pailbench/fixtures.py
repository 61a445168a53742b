"""fixtures.py: the data every contender reads, and its expected checksums.

Made locally, then uploaded with an independent client (boto3, straight to
the server, never through the shaping proxy or a filesystem under test):

  big.bin            random bytes (1 GiB; --quick 128 MiB); sha256 of the
                     whole and of each of its 16 pieces (the raw row's ranges)
  data.jsonl.gz      gzip -6 of JSON lines, >= 1 GiB decompressed (--quick
                     128 MiB); generated once and kept in bench/.cache, with
                     the number of lines that match PATTERN beside it
  ls/                a directory of 10,000 small objects (--quick 1,000)
  tree/              2,000 entries: 100 directories of 19 files (+ markers)
  small/ (local)     the tree that `cp -r` copies in: 1,000 files of 4 KiB

Directory markers ("dir/" objects, as s3fs and pailfs write them) are
uploaded for every directory, so every contender sees the same namespace.
"""

import concurrent.futures
import hashlib
import json
import os
import random
import subprocess
from dataclasses import dataclass, field

from .util import log

BUCKET = "bench"
BIG_KEY = "big.bin"
GZ_KEY = "data.jsonl.gz"
LS_PREFIX = "ls"
TREE_PREFIX = "tree"
SCALE_ONE = "scale-one"    # the scale group: N keys in one directory
SCALE_TREE = "scale-tree"  # ... and directories of 100 keys each
PATTERN = '"level":"ERROR"'
PIECES = 16
SMALL_SIZE = 4096


@dataclass
class Fixtures:
    big_path: str
    big_size: int
    big_sha: str
    piece_size: int
    piece_shas: list
    gz_path: str
    gz_size: int
    gz_plain_size: int
    gz_lines: int
    gz_matches: int
    small_dir: str            # local tree to copy in (contains small/)
    small_count: int
    small_concat_sha: str     # sha256 of all files, concatenated in C-sorted path order
    small_files: dict         # relative path -> sha256
    ls_count: int
    ls_size: int
    tree_dirs: int
    tree_files_per_dir: int
    tree_paths: list = field(default_factory=list)  # relative to tree/, dirs end without /
    scale_one: int = 0        # keys in scale-one/
    scale_dirs: int = 0       # directories in scale-tree/, each of scale_per_dir keys
    scale_per_dir: int = 100


def sha256_file(path, start=0, length=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        left = length if length is not None else float("inf")
        while left > 0:
            b = f.read(int(min(left, 4 << 20)))
            if not b:
                break
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def make_big(path, size):
    log(f"fixture: {size >> 20} MiB of random bytes")
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 << 20)
            f.write(os.urandom(n))
            left -= n
    piece = size // PIECES
    shas = [sha256_file(path, i * piece, piece) for i in range(PIECES)]
    return sha256_file(path), piece, shas


# --------------------------------------------------------------------------
# JSON lines, gzip'd, cached in bench/.cache
# --------------------------------------------------------------------------

_WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo "
          "lima mike november oscar papa quebec romeo sierra tango uniform "
          "victor whiskey xray yankee zulu").split()
_LEVELS = ["DEBUG"] * 30 + ["INFO"] * 55 + ["WARN"] * 12 + ["ERROR"] * 3
_SERVICES = ["api", "auth", "billing", "search", "ingest", "export", "web", "queue"]
_PATHS = ["/v1/items", "/v1/items/{id}", "/v1/users/{id}", "/v1/search",
          "/v2/orders", "/v2/orders/{id}/lines", "/health", "/v1/login"]


def _jsonl_batch(rng, first_id, n):
    """n JSON lines as one str, and how many carry PATTERN."""
    levels = rng.choices(_LEVELS, k=n)
    services = rng.choices(_SERVICES, k=n)
    paths = rng.choices(_PATHS, k=n)
    words = rng.choices(_WORDS, k=3 * n)
    nums = [rng.getrandbits(32) for _ in range(2 * n)]
    out = []
    matches = 0
    for i in range(n):
        lid = first_id + i
        level = levels[i]
        if level == "ERROR":
            matches += 1
        a, b = nums[2 * i], nums[2 * i + 1]
        path = paths[i].replace("{id}", str(b % 100000))
        out.append(
            '{"id":%d,"ts":"2026-01-%02dT%02d:%02d:%02d.%03dZ","level":"%s",'
            '"service":"%s","user":"u%05d","method":"%s","path":"%s",'
            '"status":%d,"latency_ms":%d.%02d,"bytes":%d,'
            '"msg":"%s %s %s request %08x"}\n' % (
                lid, 1 + lid // 2000000 % 28, (lid // 100000) % 24,
                (lid // 1000) % 60, lid % 60, a % 1000, level,
                services[i], a % 50000, ("GET", "PUT", "POST")[b % 3], path,
                (200, 200, 200, 201, 204, 404, 500)[a % 7], a % 900, b % 100,
                b % 65536, words[3 * i], words[3 * i + 1], words[3 * i + 2], a))
    return "".join(out), matches


def make_jsonl_gz(cache_dir, plain_size):
    """bench/.cache/jsonl-<MiB>.gz and its .json meta; made once."""
    os.makedirs(cache_dir, exist_ok=True)
    tag = f"jsonl-{plain_size >> 20}M"
    gz = os.path.join(cache_dir, tag + ".gz")
    meta_path = os.path.join(cache_dir, tag + ".json")
    if os.path.exists(gz) and os.path.exists(meta_path):
        meta = json.load(open(meta_path))
        if meta.get("gz_size") == os.path.getsize(gz):
            return gz, meta
    log(f"fixture: generating {plain_size >> 20} MiB of JSON lines, gzip -6 "
        f"(once; kept in {cache_dir})")
    rng = random.Random(20260101)
    tmp = gz + ".tmp"
    with open(tmp, "wb") as out:
        proc = subprocess.Popen(["gzip", "-6", "-n", "-c"], stdin=subprocess.PIPE,
                                stdout=out)
        written = lines = matches = 0
        while written < plain_size:
            text, m = _jsonl_batch(rng, lines, 20000)
            data = text.encode()
            proc.stdin.write(data)
            written += len(data)
            lines += 20000
            matches += m
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError("gzip failed")
    os.replace(tmp, gz)
    meta = {"plain_size": written, "lines": lines, "matches": matches,
            "pattern": PATTERN, "gz_size": os.path.getsize(gz)}
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    return gz, meta


# --------------------------------------------------------------------------
# Small files
# --------------------------------------------------------------------------

def make_small_tree(top, count, dirs):
    """top/small/dNN/fNNNN, count files of 4 KiB in dirs directories."""
    root = os.path.join(top, "small")
    files = {}
    rng = random.Random(4096)
    for i in range(count):
        rel = f"small/d{i % dirs:02d}/f{i:04d}"
        path = os.path.join(top, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = rng.randbytes(SMALL_SIZE)
        with open(path, "wb") as f:
            f.write(data)
        files[rel] = hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    for rel in sorted(files):  # C collation == the shell glob under LC_ALL=C
        with open(os.path.join(top, rel), "rb") as f:
            h.update(f.read())
    return root, files, h.hexdigest()


# --------------------------------------------------------------------------
# Upload
# --------------------------------------------------------------------------

def upload_all(client, fx, threads=16):
    from boto3.s3.transfer import TransferConfig

    log(f"upload: {BIG_KEY} ({fx.big_size >> 20} MiB), {GZ_KEY} "
        f"({fx.gz_size >> 20} MiB), {fx.ls_count} objects in {LS_PREFIX}/, "
        f"{len(fx.tree_paths)} entries in {TREE_PREFIX}/")
    cfg = TransferConfig(max_concurrency=8)
    client.upload_file(fx.big_path, BUCKET, BIG_KEY, Config=cfg)
    client.upload_file(fx.gz_path, BUCKET, GZ_KEY, Config=cfg)

    puts = [(f"{LS_PREFIX}/", b"")]
    body = b"x" * (fx.ls_size - 1) + b"\n"
    puts += [(f"{LS_PREFIX}/f{i:05d}", body) for i in range(fx.ls_count)]
    puts.append((f"{TREE_PREFIX}/", b""))
    for rel in fx.tree_paths:
        if "/" in rel:
            puts.append((f"{TREE_PREFIX}/{rel}", rel.encode() + b"\n"))
        else:
            puts.append((f"{TREE_PREFIX}/{rel}/", b""))

    def put(item):
        client.put_object(Bucket=BUCKET, Key=item[0], Body=item[1])

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        for _ in ex.map(put, puts):
            pass


def warm_listings(client, prefixes, max_pages=None):
    """List each prefix once with a delimiter and once without (at most
    max_pages pages each), as the harness, never counted. s3rver's first
    listings after an upload run slower (Node compiles its listing code
    then), and without this the first contender in the run pays for them:
    `ls -l` of ls/ over --wan took raw 4.16 s and then pailfs 3.67 s, but
    pailfs 3.9 s and then raw 3.2-3.6 s when pailfs went first."""
    pages = client.get_paginator("list_objects_v2")
    for prefix in prefixes:
        for delimiter in ({"Delimiter": "/"}, {}):
            got = pages.paginate(Bucket=BUCKET, Prefix=prefix + "/", **delimiter,
                                 PaginationConfig={"MaxItems": max_pages and max_pages * 1000})
            for _ in got:
                pass


def scale_one_names(n):
    return [f"f{i:07d}" for i in range(n)]


def scale_tree_paths(dirs, per_dir):
    paths = []
    for d in range(dirs):
        paths.append(f"d{d:04d}")
        paths += [f"d{d:04d}/f{f:03d}" for f in range(per_dir)]
    return paths


def _seed_s3rver(data_dir, keys):
    """Write `keys` (1-byte objects "x") straight into s3rver's data
    directory, as its filesystem store lays an object out (the object, its
    MD5, its metadata): a hundred thousand PUTs through its one Node
    thread take many minutes, these files seconds. The server lists and
    serves them like any object it stored itself."""
    md5 = hashlib.md5(b"x").hexdigest()
    meta = json.dumps({"content-type": "application/octet-stream"})
    made = set()
    for key in keys:
        d, _, name = key.rpartition("/")
        top = os.path.join(data_dir, BUCKET, d)
        if top not in made:
            os.makedirs(top, exist_ok=True)
            made.add(top)
        base = os.path.join(top, name)
        with open(base + "._S3rver_object", "wb") as f:
            f.write(b"x")
        with open(base + "._S3rver_object.md5", "w") as f:
            f.write(md5)
        with open(base + "._S3rver_metadata.json", "w") as f:
            f.write(meta)


def upload_scale(client, fx, data_dir=None, threads=32):
    """The scale group's keys (1-byte objects, no markers: implicit
    directories, as most buckets hold them): written into the server's
    data directory when it is s3rver's (data_dir/BUCKET exists), else put
    by `threads` at once."""
    puts = [f"{SCALE_ONE}/{n}" for n in scale_one_names(fx.scale_one)]
    puts += [f"{SCALE_TREE}/{p}" for p in scale_tree_paths(fx.scale_dirs, fx.scale_per_dir)
             if "/" in p]
    seed = data_dir and os.path.isdir(os.path.join(data_dir, BUCKET))
    log(f"upload: {len(puts)} keys for the scale group ({fx.scale_one} in {SCALE_ONE}/, "
        f"{fx.scale_dirs} x {fx.scale_per_dir} in {SCALE_TREE}/), "
        + ("written into the server's data directory" if seed else f"{threads} PUTs at once"))
    if seed:
        _seed_s3rver(data_dir, puts)
        return

    def put(key):
        client.put_object(Bucket=BUCKET, Key=key, Body=b"x")

    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        for _ in ex.map(put, puts, chunksize=64):
            pass


def tree_paths(dirs, files_per_dir):
    paths = []
    for d in range(dirs):
        paths.append(f"d{d:03d}")
        paths += [f"d{d:03d}/f{f:02d}" for f in range(files_per_dir)]
    return paths


def build(workdir, cache_dir, sizes):
    big_path = os.path.join(workdir, "big.bin")
    big_sha, piece, shas = make_big(big_path, sizes.big)
    gz_path, meta = make_jsonl_gz(cache_dir, sizes.gz_plain)
    small_root, small_files, small_sha = make_small_tree(
        workdir, sizes.small_count, sizes.small_dirs)
    return Fixtures(
        big_path=big_path, big_size=sizes.big, big_sha=big_sha,
        piece_size=piece, piece_shas=shas,
        gz_path=gz_path, gz_size=meta["gz_size"], gz_plain_size=meta["plain_size"],
        gz_lines=meta["lines"], gz_matches=meta["matches"],
        small_dir=small_root, small_count=sizes.small_count,
        small_concat_sha=small_sha, small_files=small_files,
        ls_count=sizes.ls_count, ls_size=64,
        tree_dirs=sizes.tree_dirs, tree_files_per_dir=sizes.tree_files,
        tree_paths=tree_paths(sizes.tree_dirs, sizes.tree_files),
        scale_one=sizes.scale_one, scale_dirs=sizes.scale_dirs)
