"""The pailfs command line: --help, --version, the checks made before
mounting (each failure: exit 1 within 15 s, one line on stderr, nothing
mounted, no process left), mounting as a daemon, through mount(8) with the
fstab form, and the ways a mount ends (fusermount3 -u, SIGTERM, SIGINT)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

import rig
from drive import clean_env
from mount import (FAIL_WITHIN, PAILFS, assert_nothing_left,  # noqa: F401
                   base_opts, fusermount_unmount, is_mounted, mounter,
                   pailfs_pids, run_pailfs, wait_pids_gone)

OPTIONS = ["endpoint", "region", "path_style", "profile", "passwd_file",
           "public", "ro", "uid", "gid", "umask", "file_mode", "dir_mode",
           "allow_other", "attr_ttl", "neg_ttl", "cache_dir", "retries",
           "connect_timeout", "log_level"]


def assert_one_line_failure(rc, err, took, mountpoint, *, exact=None,
                            prefix=None, fg=False):
    try:
        assert rc is not None, f"still running after {took:.0f}s: {err!r}"
        if fg:  # with -f: any failure status
            assert rc > 0, f"exit status {rc}, stderr {err!r}"
        else:
            assert rc == 1, f"exit status {rc}, stderr {err!r}"
        assert took < FAIL_WITHIN, f"took {took:.1f}s"
        lines = err.splitlines()
        assert len(lines) == 1, f"not one line on stderr: {err!r}"
        if exact is not None:
            assert lines[0] == exact
        if prefix is not None:
            assert lines[0].startswith(prefix), lines[0]
    finally:
        if is_mounted(mountpoint):
            fusermount_unmount(mountpoint, lazy=True)
            pytest.fail(f"{mountpoint} was left mounted")
    assert_nothing_left(mountpoint)
    return lines[0]


@pytest.fixture(params=["daemon", "foreground"])
def fg(request):
    """Each mount-time failure is checked without and with -f."""
    return request.param == "foreground"


# --------------------------------------------------------------------------
# --help, --version
# --------------------------------------------------------------------------

def test_help_lists_every_option():
    r = subprocess.run([str(PAILFS), "--help"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "BUCKET[:/PREFIX] MOUNTPOINT" in text
    missing = [o for o in OPTIONS
               if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)]
    assert missing == [], f"--help does not mention: {missing}"
    for flag in ("-f", "-d", "-o"):
        assert re.search(rf"(?<![\w-]){flag}\b", text), flag


def test_version():
    r = subprocess.run([str(PAILFS), "--version"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert re.match(r"pailfs \d+\.\d+", r.stdout), r.stdout


# --------------------------------------------------------------------------
# Mount-time failures
# --------------------------------------------------------------------------

def test_mount_point_missing(proxy, bucket, tmp_path, fg):
    mp = tmp_path / "no-such-dir"
    rc, _, err, took = run_pailfs([*base_opts(proxy.url, fg=fg), bucket, str(mp)],
                                  tmp_path=tmp_path)
    assert_one_line_failure(rc, err, took, mp, fg=fg,
                            exact=f"pailfs: mount point {mp} does not exist")
    assert not mp.exists()


def test_mount_point_not_a_directory(proxy, bucket, tmp_path, fg):
    mp = tmp_path / "a-file"
    mp.write_bytes(b"x")
    rc, _, err, took = run_pailfs([*base_opts(proxy.url, fg=fg), bucket, str(mp)],
                                  tmp_path=tmp_path)
    assert_one_line_failure(rc, err, took, mp, fg=fg,
                            exact=f"pailfs: mount point {mp} is not a directory")
    assert mp.read_bytes() == b"x"


def test_bucket_missing(proxy, tmp_path, fg):
    mp = tmp_path / "mnt"
    mp.mkdir()
    rc, _, err, took = run_pailfs(
        [*base_opts(proxy.url, fg=fg), "no-such-bucket-x1", str(mp)],
        tmp_path=tmp_path)
    assert_one_line_failure(rc, err, took, mp, fg=fg,
                            exact="pailfs: bucket no-such-bucket-x1 does not exist")
    assert proxy.stats()["requests_total"] >= 1  # it asked the server


def test_credentials_refused(proxy, bucket, tmp_path, fg):
    mp = tmp_path / "mnt"
    mp.mkdir()
    secret = "wrongSecretZ9q7XkQ"
    env = clean_env(AWS_SECRET_ACCESS_KEY=secret)
    rc, out, err, took = run_pailfs([*base_opts(proxy.url, fg=fg), bucket, str(mp)],
                                    env=env, tmp_path=tmp_path)
    line = assert_one_line_failure(
        rc, err, took, mp, fg=fg,
        prefix=f"pailfs: access to bucket {bucket} refused for access key "
               f"{rig.ACCESS_KEY} (from ")
    assert re.search(r"\(from [^)]+\): \S", line), line
    assert secret not in err and secret not in out
    assert sum(proxy.stats()["sig_rejections"].values()) >= 1


def test_endpoint_unreachable(bucket, tmp_path, fg):
    mp = tmp_path / "mnt"
    mp.mkdir()
    url = "http://127.0.0.1:1"
    rc, _, err, took = run_pailfs([*base_opts(url, fg=fg), bucket, str(mp)],
                                  tmp_path=tmp_path)
    line = assert_one_line_failure(
        rc, err, took, mp, fg=fg,
        prefix=f"pailfs: cannot reach endpoint {url} for bucket {bucket}: ")
    assert len(line) > len(f"pailfs: cannot reach endpoint {url} for bucket "
                           f"{bucket}: ")


def test_endpoint_that_never_answers(bucket, tmp_path):
    """A server that accepts connections and then says nothing: the check
    before mounting gives up within the bound too."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # connections complete in the backlog, unanswered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        rc, _, err, took = run_pailfs([*base_opts(url), bucket, str(mp)],
                                      tmp_path=tmp_path)
    assert_one_line_failure(
        rc, err, took, mp,
        prefix=f"pailfs: cannot reach endpoint {url} for bucket {bucket}: ")


def test_unknown_option(proxy, bucket, tmp_path, fg):
    mp = tmp_path / "mnt"
    mp.mkdir()
    rc, _, err, took = run_pailfs(
        [*base_opts(proxy.url, "bogus_opt", fg=fg), bucket, str(mp)],
        tmp_path=tmp_path)
    assert_one_line_failure(rc, err, took, mp, fg=fg,
                            exact="pailfs: unknown option -o bogus_opt")
    # rejected before any request
    assert proxy.stats()["requests_total"] == 0


def test_wrong_region_mounts_anyway(proxy, s3, bucket, mounter):
    """The proxy refuses requests signed for another region and says which
    one is right (x-amz-bucket-region); pailfs must follow the hint."""
    s3.put_object(Bucket=bucket, Key="hello", Body=b"region ok")
    m = mounter(opts=["region=eu-west-1"])
    with open(m.p("hello"), "rb") as f:
        assert f.read() == b"region ok"
    with open(m.p("written"), "wb") as f:
        f.write(b"up")
    assert s3.get_object(Bucket=bucket, Key="written")["Body"].read() == b"up"


# --------------------------------------------------------------------------
# Mounting and unmounting
# --------------------------------------------------------------------------

def test_daemon_mode_returns_once_mounted(proxy, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="f", Body=b"daemon")
    mp = tmp_path / "mnt"
    mp.mkdir()
    rc, _, err, took = run_pailfs([*base_opts(proxy.url), bucket, str(mp)],
                                  tmp_path=tmp_path)
    try:
        assert rc == 0, err
        # live at the moment pailfs returned: no polling
        assert is_mounted(mp), "pailfs returned 0 before the mount was live"
        assert os.listdir(mp) == ["f"]
        assert (mp / "f").read_bytes() == b"daemon"
        pids = pailfs_pids(mp)
        assert len(pids) == 1, pids
    finally:
        r = fusermount_unmount(mp)
        if r.returncode != 0:
            fusermount_unmount(mp, lazy=True)
    assert r.returncode == 0, r.stderr
    assert wait_pids_gone(pids, 30), "the daemon did not exit after unmount"
    assert not is_mounted(mp)


@pytest.mark.parametrize("creds", ["passwd_file", "env"])
def test_mount_command_fstab_form(proxy, s3, bucket, tmp_path, creds):
    """mount -t fuse.pailfs BUCKET MNT -o endpoint=...,path_style,_netdev,
    as an fstab line does, with credentials from an s3fs-style passwd_file
    or from the environment (mount(8) passes AWS_* on; it drops PATH, HOME
    and SHELL).

    mount(8) runs /sbin/mount.fuse3 with PATH removed from the environment,
    which runs `pailfs BUCKET MNT -o rw,...,dev,suid` through /bin/sh with
    its default PATH; so pailfs must be in a standard directory. The test
    runs in a private mount namespace (unshare) where a directory holding
    a `pailfs` symlink to the build is bind-mounted over /usr/local/sbin;
    the checks on the mount run inside that namespace too."""
    assert shutil.which("unshare") and shutil.which("mount")
    assert os.path.exists("/sbin/mount.fuse3") or \
        os.path.exists("/usr/sbin/mount.fuse3"), "mount.fuse3 missing"
    s3.put_object(Bucket=bucket, Key="via-mount", Body=b"fstab")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pailfs").symlink_to(PAILFS)
    passwd = tmp_path / "passwd"
    passwd.write_text(f"{rig.ACCESS_KEY}:{rig.SECRET_KEY}\n")
    passwd.chmod(0o600)
    mp = tmp_path / "mnt"
    mp.mkdir()
    out = tmp_path / "out"
    opts = f"endpoint={proxy.url},path_style,_netdev"
    if creds == "passwd_file":
        opts += f",passwd_file={passwd}"
    script = f"""
        mount --bind '{bindir}' /usr/local/sbin || exit 90
        mount -t fuse.pailfs '{bucket}' '{mp}' -o '{opts}' || exit 91
        grep -F ' {mp} ' /proc/self/mounts > '{out}.mounts'
        cat '{mp}/via-mount' > '{out}'
        ls -1 '{mp}' > '{out}.ls'
        umount '{mp}' || {{ fusermount3 -uz '{mp}'; exit 92; }}
    """
    env = clean_env(keys=(creds == "env"))
    t0 = time.monotonic()
    r = subprocess.run(["unshare", "--mount", "--propagation", "private",
                        "/bin/sh", "-c", script], env=env,
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    fields = (tmp_path / "out.mounts").read_text().split()
    assert fields[1:3] == [str(mp), "fuse.pailfs"], fields
    assert bucket in fields[0], fields
    assert out.read_bytes() == b"fstab"
    assert (tmp_path / "out.ls").read_text() == "via-mount\n"
    # The daemon ends once unmounted (its namespace goes with it).
    assert wait_pids_gone(pailfs_pids(mp), 30), "pailfs did not exit"
    assert time.monotonic() - t0 < 60


def test_fusermount_unmount_exits_zero(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    m = mounter()
    assert os.listdir(m.path) == ["k"]
    assert m.unmount() == 0
    assert not is_mounted(m.path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_and_exits_zero(s3, bucket, mounter, sig):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    m = mounter()
    assert os.listdir(m.path) == ["k"]
    assert m.terminate(sig) == 0
    assert not is_mounted(m.path)


def test_only_the_main_thread_takes_exit_signals(s3, bucket, mounter):
    """libfuse's handlers only mark the session as exited; the loop sees it
    when the main thread's wait is interrupted.  A SIGTERM taken by another
    thread would leave pailfs running until the next request (once seen
    under load: SIGINT, then 60 s of nothing).  So every thread but the
    main one must block SIGHUP, SIGINT, SIGQUIT and SIGTERM."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"v" * (3 << 20))
    m = mounter()
    assert open(m.p("k"), "rb").read() == b"v" * (3 << 20)  # readers, HTTP, FUSE threads
    exits = (1 << (signal.SIGHUP - 1)) | (1 << (signal.SIGINT - 1)) | \
        (1 << (signal.SIGQUIT - 1)) | (1 << (signal.SIGTERM - 1))
    tasks = os.listdir(f"/proc/{m.pid}/task")
    assert len(tasks) > 4, tasks
    for tid in tasks:
        try:
            with open(f"/proc/{m.pid}/task/{tid}/status") as f:
                blk = int(next(ln for ln in f if ln.startswith("SigBlk:")).split()[1], 16)
        except FileNotFoundError:
            continue  # a thread that ended meanwhile (an idle FUSE worker)
        if int(tid) == m.pid:
            assert blk & exits == 0, f"the main thread blocks {blk & exits:#x}"
        else:
            assert blk & exits == exits, f"thread {tid} takes exit signals (SigBlk {blk:#x})"
    assert m.terminate(signal.SIGTERM) == 0


def test_remount_same_mountpoint(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    m = mounter()
    assert open(m.p("k"), "rb").read() == b"v1"
    m.remount()
    assert open(m.p("k"), "rb").read() == b"v1"
