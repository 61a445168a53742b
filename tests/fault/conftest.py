"""Fixtures for the fault suite (tests/fault).

One S3 server for the session (its own, not the integration suite's: these
tests stop it; s3rver, or moto with PAILFS_TEST_SERVER=moto, when only the
tests marked `core` run), and for each scenario a fresh bucket, a fresh
proxy (with the server's proxy_fixups) and the mounts the scenario makes,
all held by a FaultRig:

  rig.s3         boto3 straight to s3rver (the external check; never pailfs)
  rig.proxy      rig.Proxy in front of s3rver; pailfs talks to it
  rig.mount(**kw)  a mount.Mount of the bucket through the proxy, unmounted
                 (and checked: exit 0, no sanitizer report) at teardown
  rig.down()     the server dies: s3rver and the proxy are both stopped, so
                 nothing listens on the port pailfs uses (connections are
                 refused, open ones are closed) -- what a crashed or
                 restarting S3 endpoint looks like, not a slow one
  rig.up()       both started again, on the same ports and data directory
  rig.freeze()   the server hangs: s3rver is SIGSTOPped, so connections are
                 accepted (by the kernel, and by the proxy) and requests
                 never answered -- what a hung server or a network that
                 drops everything looks like; only timeouts end them
  rig.thaw()     SIGCONT
  rig.stats()    the proxy's counters, summed over its restarts

The table: every scenario appends its row to fault-table.md in
$PAILFS_BUILD_DIR (else the session's temp directory; fault-table-moto.md
against moto), which the session starts with the header; the path is
printed at the end.
"""

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "integration"))

import rig as rigmod  # noqa: E402
from helpers import delete_bucket  # noqa: E402
from mount import Mount, unmount_all  # noqa: E402
import workload  # noqa: E402

PROXY_SEED = 4242


def pytest_configure(config):
    config.addinivalue_line("markers", rigmod.CORE_MARKER)


def pytest_collection_modifyitems(config, items):
    rigmod.select_for_server(items, HERE)


@pytest.fixture(scope="session")
def fault_server(tmp_path_factory):
    server = rigmod.start_server(
        tmp_path_factory.mktemp("fault-" + rigmod.server_kind()))
    with server:
        yield server


@pytest.fixture(scope="session")
def fault_table(tmp_path_factory):
    build = os.environ.get("PAILFS_BUILD_DIR")
    # Against moto, its own file: docs/RELIABILITY.md quotes s3rver's.
    name = "fault-table.md" if rigmod.server_kind() == "s3rver" else \
        f"fault-table-{rigmod.server_kind()}.md"
    path = Path(build) / name if build else \
        tmp_path_factory.getbasetemp() / name
    path.write_text(workload.HEADER)
    rows = []

    def add(row):
        rows.append(row)
        with open(path, "a") as f:
            f.write(row + "\n")
        print("\n" + workload.HEADER + row)

    yield add
    if rows:
        sys.stdout.write(f"\nfault table: {path}\n")


class FaultRig:
    def __init__(self, server, tmp_path):
        self.server = server
        self.tmp = tmp_path
        self.s3 = rigmod.boto3_client(server.url, retries=2, read_timeout=120)
        self.bucket = "f-" + uuid.uuid4().hex[:20]
        self.s3.create_bucket(Bucket=self.bucket)
        self.proxy = rigmod.Proxy(server.url, seed=PROXY_SEED,
                                  log_path=tmp_path / "s3proxy.log",
                                  fixups=server.proxy_fixups)
        self.mounts = []
        self._saved = []   # stats of earlier proxy processes
        self._config = {}  # re-applied when the proxy comes back

    def mount(self, **kw):
        n = len(self.mounts) + 1
        kw.setdefault("watchdog", 900.0)  # the scenario bounds itself
        # PAILFS_FAULT_LOG_LEVEL=debug: pailfs logs every retry
        kw.setdefault("log_level",
                      os.environ.get("PAILFS_FAULT_LOG_LEVEL", "info"))
        m = Mount(self.proxy, self.bucket, self.tmp / f"mnt{n}",
                  log_dir=self.tmp, **kw)
        self.mounts.append(m)
        return m

    def config(self, **kw):
        self._config.update(kw)
        return self.proxy.config(**kw)

    def stats(self):
        parts = self._saved + ([self.proxy.stats()] if self.proxy.running
                               else [])
        total = {"requests_total": 0, "faults": {}, "upstream_errors": 0,
                 "by_op": {}}
        for s in parts:
            total["requests_total"] += s["requests_total"]
            total["upstream_errors"] += s["upstream_errors"]
            for name in ("faults", "by_op"):
                for k, n in s[name].items():
                    total[name][k] = total[name].get(k, 0) + n
        return total

    def down(self):
        if self.proxy.running:
            self._saved.append(self.proxy.stats())
        self.proxy.stop()
        self.server.stop()

    def freeze(self):
        os.kill(self.server._proc.pid, signal.SIGSTOP)

    def thaw(self):
        os.kill(self.server._proc.pid, signal.SIGCONT)

    def up(self):
        self.server.start()
        self.proxy.start()
        if self._config:
            self.proxy.config(**self._config)

    def close(self):
        errors = unmount_all(self.mounts)
        self.proxy.stop()
        if self.server.running:
            self.thaw()  # a scenario that froze it failed midway
        else:
            self.server.start()
        try:
            delete_bucket(self.s3, self.bucket)
        except Exception as e:  # cleanup only
            print(f"cleanup of {self.bucket}: {e}")
        return errors


@pytest.fixture
def rig(fault_server, tmp_path):
    if not fault_server.running:  # a scenario that stopped it failed
        fault_server.start()
    r = FaultRig(fault_server, tmp_path)
    yield r
    errors = r.close()
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)
