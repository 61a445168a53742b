"""valgrind memcheck over one whole mount: mount, write (streaming and
multipart), edit in place (staged, with part copies), read back, list,
rename, a gzip view, delete, unmount. The run must report no invalid
access, no use of uninitialised memory and no leak (definitely, indirectly
or possibly lost). It needs the plain build (valgrind cannot run an
ASan binary): `make valgrind` in a build configured without
--enable-sanitizers runs it; contrib/test.sh runs it on build/."""

import gzip
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from drive import BUILD, ROOT
from mount import Mount, mounter  # noqa: F401


def plain_pailfs():
    for build in (os.environ.get("PAILFS_VALGRIND_BUILD"), BUILD,
                  ROOT / "build"):
        if not build:
            continue
        path = Path(build) / "src" / "pailfs"
        if path.exists() and b"__asan_init" not in path.read_bytes():
            return path
    return None


class ValgrindMount(Mount):
    def __init__(self, *a, vlog, binary, **kw):
        self.vlog = vlog
        self.binary = binary
        super().__init__(*a, **kw)

    def argv(self):
        argv = super().argv()
        return ["valgrind", "--tool=memcheck", "--error-exitcode=99",
                "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
                "--errors-for-leak-kinds=definite,indirect,possible",
                "--track-origins=yes", "--num-callers=30",
                f"--log-file={self.vlog}", str(self.binary), *argv[1:]]


@pytest.mark.skipif(shutil.which("valgrind") is None,
                    reason="valgrind is not installed")
def test_memcheck_mount_write_read_unmount(proxy, s3, bucket, tmp_path):
    binary = plain_pailfs()
    assert binary, "no pailfs built without sanitizers (build/ or " \
        "PAILFS_VALGRIND_BUILD) for valgrind to run"
    vlog = tmp_path / "valgrind.log"
    s3.put_object(Bucket=bucket, Key="v.json",
                  Body=gzip.compress(b'{"v": 1}\n' * 100000),
                  ContentEncoding="gzip")
    s3.put_object(Bucket=bucket, Key="old", Body=b"o" * (6 << 20))
    m = ValgrindMount(proxy, bucket, tmp_path / "mnt", log_dir=tmp_path,
                      vlog=vlog, binary=binary, watchdog=600,
                      opts=["part_size=5M", "max_memory=64M"])
    try:
        data = os.urandom(11 << 20)
        with open(m.p("big"), "wb") as f:
            for i in range(0, len(data), 1 << 20):
                f.write(data[i:i + (1 << 20)])
        with open(m.p("old"), "r+b") as f:  # staged: part copy + upload
            f.seek(100)
            f.write(b"EDIT")
        with open(m.p("big"), "rb") as f:
            assert hashlib.sha256(f.read()).digest() == \
                hashlib.sha256(data).digest()
        with open(m.p("v.json"), "rb") as f:
            f.seek(9 * 55555)
            assert f.read(9) == b'{"v": 1}\n'
        os.mkdir(m.p("d"))
        os.rename(m.p("big"), m.p("d", "big2"))
        assert sorted(os.listdir(m.path)) == ["d", "old", "v.json"]
        os.unlink(m.p("d", "big2"))
    finally:
        m.unmount(check=False)
    text = vlog.read_text(errors="replace")
    assert "ERROR SUMMARY: 0 errors" in text, text[-6000:]
    for kind in ("definitely", "indirectly", "possibly"):
        found = re.search(rf"{kind} lost: ([\d,]+) bytes", text)
        assert not found or found.group(1) == "0", text[-6000:]
    assert m.returncode == 0, m.stderr_text()[-3000:]
    got = s3.get_object(Bucket=bucket, Key="old")["Body"].read()
    assert got[:100] == b"o" * 100 and got[100:104] == b"EDIT"
    assert len(got) == 6 << 20
