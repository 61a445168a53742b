"""Fixtures for the pailfs integration tests (pytest).

The idea: one S3 server for the whole session (s3rver, or moto with
PAILFS_TEST_SERVER=moto: see rig.start_server; then only the tests marked
`core` run, the others are skipped), and for each test a fresh proxy
(its own process, so counters and faults never leak between tests) and a
fresh bucket (so tests never see each other's objects). Tests drive pailfs
or a client through `proxy.url`, and check what really landed with `s3`,
which talks to s3rver directly and so bypasses the proxy and its faults.

Fixtures:
  s3server  session  rig.S3Server (or rig.MotoServer) with bucket
                     "pailfs-test"; .url .port .directory .stop() .start()
  proxy     function rig.Proxy in front of s3server, seed 1234; .url
                     .config(**faults) .stats() .reset()
  s3        function boto3 client straight to s3server (no proxy)
  bucket    function name of a new, empty bucket made for this test with
                     `s3`; emptied and deleted afterwards (best effort)
  keys_2500 session  (bucket, keys): a bucket holding 2,500 keys
                     "big/f00000".."big/f02499", key i of i % 7 bytes "x",
                     put once a session (s3rver stores a few hundred keys a
                     second) for the tests that list more than two pages;
                     read-only: no test may change it

Shared helpers: mount.py (a pailfs mount: Mount, the mounter/mnt fixtures,
files and processes through it), helpers.py (the bucket through `s3`, the
proxy's counters and scripts, test data), drive.py (tests/s3drive). See
tests/README.md.
"""

import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import helpers  # noqa: E402
import rig  # noqa: E402  (needs the sys.path entry above)

SESSION_BUCKET = "pailfs-test"
PROXY_SEED = 1234
HERE = Path(__file__).resolve().parent


def pytest_configure(config):
    config.addinivalue_line("markers", rig.CORE_MARKER)


def pytest_collection_modifyitems(config, items):
    rig.select_for_server(items, HERE)


@pytest.fixture(scope="session")
def s3server(tmp_path_factory):
    server = rig.start_server(tmp_path_factory.mktemp(rig.server_kind()),
                              buckets=[SESSION_BUCKET])
    with server:
        yield server


@pytest.fixture
def proxy(s3server, tmp_path):
    if not s3server.running:  # a test that stopped it failed to restart it
        s3server.start()
    with rig.Proxy(s3server.url, seed=PROXY_SEED,
                   log_path=tmp_path / "s3proxy.log",
                   fixups=s3server.proxy_fixups) as p:
        yield p


@pytest.fixture
def s3(s3server):
    return rig.boto3_client(s3server.url)


@pytest.fixture
def bucket(s3):
    name = "t-" + uuid.uuid4().hex[:20]
    s3.create_bucket(Bucket=name)
    yield name
    try:
        helpers.delete_bucket(s3, name)
    except Exception:  # the server may be down after an outage test
        pass


@pytest.fixture(scope="session")
def keys_2500(s3server):
    s3 = rig.boto3_client(s3server.url)
    name = "k2500-" + uuid.uuid4().hex[:20]
    s3.create_bucket(Bucket=name)
    keys = [f"big/f{i:05d}" for i in range(2500)]

    def put(i):
        s3.put_object(Bucket=name, Key=keys[i], Body=b"x" * (i % 7))

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(put, range(len(keys))))
    yield name, keys
    try:
        helpers.delete_bucket(s3, name)
    except Exception:  # the server may be down after an outage test
        pass
