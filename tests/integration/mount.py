"""mount.py: run a real pailfs mount for the integration tests.

`Mount` starts `pailfs -f -o endpoint=<proxy>,path_style,log_level=info,...
BUCKET[:/PREFIX] MOUNTPOINT` as a child process with a clean environment
(drive.clean_env: only the rig's keys), waits until the kernel shows the
mount point mounted, and on exit unmounts it with `fusermount3 -u`, waits for
the process and checks that it exited 0 with no sanitizer report on its
stderr. Its stderr goes to a file under the test's tmp_path and is printed
when the mount ends, so a failing test shows it.

A watchdog kills the pailfs process (SIGKILL) if a mount lives longer than
`watchdog` seconds: a FUSE request that never gets its answer would hang the
test forever, and killing the server makes every pending request fail with
ENOTCONN instead, so the test fails rather than the suite hanging.

Fixtures (import them into a test module: `from mount import mnt, mounter`):
  mounter  function  make mounts of the test's `bucket` through `proxy`:
                     mounter(**kw) -> a started Mount, unmounted at teardown
  mnt      function  mounter() with the defaults

The helpers every mount test shares live here too: files through a mount
(write, read, errno_of, expect_eio, call_with_timeout, wait_until), the
pailfs process and the kernel's view of the mount (rss_bytes, proc_state,
is_mounted, fusermount_unmount), and the pailfs command run as a user
would (run_pailfs, base_opts, assert_nothing_left). What is checked outside
pailfs (the bucket, the proxy) is in helpers.py; tests/README.md lists all.
"""

import errno
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import rig
from drive import BUILD, ROOT, clean_env


def _find_pailfs():
    for build in (BUILD, ROOT / "build"):
        path = Path(build) / "src" / "pailfs"
        if path.exists():
            return path
    return Path(BUILD) / "src" / "pailfs"


PAILFS = _find_pailfs()


def _pailfs_preexec():
    """pailfs starts as from a terminal, whatever the test runner's own
    signal dispositions: a shell that runs the suite in the background
    (`contrib/test.sh &`, nohup) has SIGINT and SIGQUIT ignored, the child
    would inherit that, and libfuse keeps an inherited SIG_IGN (so would a
    pailfs started that way by hand: the shell asked for it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    rig._die_with_parent()
FUSERMOUNT = "fusermount3"
MOUNT_TIMEOUT = 30.0    # seconds for a mount to become live (ASan is slow)
UNMOUNT_TIMEOUT = 60.0  # seconds for the process to end after unmounting
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "ThreadSanitizer")


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def _unescape_mounts_field(field):
    # /proc/self/mounts escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        digits = field[i + 1:i + 4]
        if field[i] == "\\" and len(digits) == 3 and digits.isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts():
    """[(source, mountpoint, fstype, options)] from /proc/self/mounts."""
    rows = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4:
                rows.append((_unescape_mounts_field(parts[0]),
                             _unescape_mounts_field(parts[1]), parts[2],
                             parts[3]))
    return rows


def mount_entry(path):
    """The /proc/self/mounts row of the mount at path, or None."""
    real = os.path.realpath(str(path))
    for row in mounts():
        if row[1] == real or row[1] == str(path):
            return row
    return None


def is_mounted(path):
    """Whether the kernel shows a mount at path."""
    return mount_entry(path) is not None


def pailfs_pids(mountpoint):
    """PIDs of processes whose command line names this mount point."""
    needle = os.fsencode(str(mountpoint))
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if needle in args and any(a.endswith(b"pailfs") for a in args[:1]):
            pids.append(int(entry))
    return pids


def wait_pids_gone(pids, timeout):
    """True when none of pids exists any more within timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{p}") and
                   not _is_zombie(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def proc_state(pid):
    """One-letter state from /proc/PID/stat ('R', 'S', 'D', 'Z'...), or
    None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _is_zombie(pid):
    return proc_state(pid) == "Z"


def fusermount_unmount(path, lazy=False, timeout=20.0):
    """fusermount3 -u (retrying while busy); returns the last result."""
    argv = [FUSERMOUNT, "-uz" if lazy else "-u", str(path)]
    deadline = time.monotonic() + (0 if lazy else 5.0)
    while True:
        try:
            r = subprocess.run(argv, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(argv, -1, "", f"timeout: {e}")
        if r.returncode == 0 or time.monotonic() >= deadline or \
                "busy" not in r.stderr.lower():
            return r
        time.sleep(0.1)


def call_with_timeout(fn, timeout, *args, **kwargs):
    """Run fn in a daemon thread; its result, or re-raise its exception.

    A call still running after `timeout` seconds raises AssertionError (the
    thread is left behind, blocked in the kernel until the mount dies)."""
    box = {}

    def run():
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise AssertionError(f"{getattr(fn, '__name__', fn)} still blocked "
                             f"after {timeout}s")
    if "error" in box:
        raise box["error"]
    return box["result"]


def errno_of(fn, *args, **kwargs):
    """The errno fn raised (OSError), or None when it succeeded."""
    try:
        fn(*args, **kwargs)
    except OSError as e:
        return e.errno
    return None


def expect_eio(fn, *args, bound=30.0):
    """fn(*args) must fail with EIO within `bound` seconds; returns the
    OSError. It runs in a thread (call_with_timeout), so a call that hangs
    in the kernel fails the test instead of blocking it."""
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        call_with_timeout(fn, bound, *args)
    assert e.value.errno == errno.EIO, e.value
    assert time.monotonic() - t0 < bound
    return e.value


def wait_until(pred, timeout, step=0.05):
    """Poll pred() every `step` seconds until it returns something true or
    `timeout` seconds have passed; returns its last value (so `assert
    wait_until(...)` fails with the state it gave up on)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def seconds_until(pred, timeout, step=0.05):
    """Seconds it took pred() to become true, or None after timeout (for
    tests that bound how long a change takes to show, not only that it
    does)."""
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(step)


def rss_bytes(pid):
    """Resident memory of process pid (VmRSS of /proc/PID/status), bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def ename(code):
    """errno name of code ("EIO"), "ok" for None: for assertion texts."""
    return errno.errorcode.get(code, str(code)) if code is not None else "ok"


def write(path, data, mode=0o644):
    """Create or truncate path and write data with one write(2), which must
    take it all; close(2) errors are raised (where pailfs uploads)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def read(path):
    """The whole file at path, read with Python's buffered reader."""
    with open(path, "rb") as f:
        return f.read()


def format_opts(opts):
    """-o text from a dict (value None/True: bare flag) or a sequence."""
    if isinstance(opts, dict):
        items = []
        for k, v in opts.items():
            if v is None or v is True:
                items.append(k)
            elif v is not False:
                items.append(f"{k}={v}")
        return items
    return list(opts)


# --------------------------------------------------------------------------
# The pailfs command, run as a user would (daemonising unless -f)
# --------------------------------------------------------------------------

FAIL_WITHIN = 15.0


def run_pailfs(args, env=None, timeout=FAIL_WITHIN + 15, tmp_path=None):
    """Run pailfs (normally daemonising) with stderr to a file, so a child
    that keeps the pipe open cannot hang the test. Returns
    (returncode, stdout, stderr, seconds)."""
    err_path = tmp_path / f"stderr-{time.monotonic_ns()}"
    out_path = tmp_path / f"stdout-{time.monotonic_ns()}"
    with open(err_path, "wb") as err, open(out_path, "wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen([str(PAILFS), *args], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err,
                                env=env if env is not None else clean_env())
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        took = time.monotonic() - t0
    return (rc, out_path.read_text(errors="replace"),
            err_path.read_text(errors="replace"), took)


def assert_nothing_left(mountpoint):
    """Nothing mounted at mountpoint and no pailfs process naming it (waits
    up to 5 s for processes on their way out)."""
    assert not is_mounted(mountpoint), f"{mountpoint} left mounted"
    pids = pailfs_pids(mountpoint)
    assert wait_pids_gone(pids, 5), f"pailfs processes left: {pids}"


def base_opts(url, *extra, fg=False):
    """pailfs arguments before BUCKET MOUNTPOINT: -o endpoint=url,path_style
    and the extra options (["-f"] first with fg)."""
    return (["-f"] if fg else []) + \
        ["-o", ",".join([f"endpoint={url}", "path_style", *extra])]


# --------------------------------------------------------------------------
# Mount
# --------------------------------------------------------------------------

class Mount:
    """One pailfs process serving `bucket` (or bucket:/prefix) at mountpoint.

    endpoint: a rig.Proxy/S3Server or a URL. opts: extra -o options (dict or
    list of "k=v"). attr_ttl/neg_ttl: added to -o when given. env: the
    process environment (default clean_env(), i.e. the rig's keys).
    Use as a context manager, or .start() / .unmount().
    """

    _serial = 0

    def __init__(self, endpoint, bucket, mountpoint, *, prefix=None,
                 opts=(), attr_ttl=None, neg_ttl=None, env=None,
                 log_dir=None, path_style=True, log_level="info",
                 watchdog=150.0, start=True):
        self.endpoint = endpoint if isinstance(endpoint, str) else endpoint.url
        self.bucket = bucket
        self.prefix = prefix
        self.path = str(mountpoint)
        self.opts = format_opts(opts)
        self.attr_ttl = attr_ttl
        self.neg_ttl = neg_ttl
        self.env = env if env is not None else clean_env()
        self.log_dir = Path(log_dir) if log_dir else Path(self.path).parent
        self.path_style = path_style
        self.log_level = log_level
        self.watchdog = watchdog
        self.proc = None
        self.log_path = None
        self.returncode = None
        self._timer = None
        self._watchdog_fired = False
        Mount._serial += 1
        self._name = f"pailfs-{Mount._serial}"
        self._runs = 0
        if start:
            self.start()

    # ---- paths --------------------------------------------------------

    def p(self, *parts):
        """Path of parts inside the mount (a str)."""
        return os.path.join(self.path, *parts)

    def key(self, relpath):
        """The S3 key a path relative to the mount root maps to."""
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    # ---- life cycle ---------------------------------------------------

    def argv(self):
        o = [f"endpoint={self.endpoint}"]
        if self.path_style:
            o.append("path_style")
        if self.attr_ttl is not None:
            o.append(f"attr_ttl={self.attr_ttl}")
        if self.neg_ttl is not None:
            o.append(f"neg_ttl={self.neg_ttl}")
        if self.log_level:
            o.append(f"log_level={self.log_level}")
        if not any(x.startswith("cache_dir=") for x in self.opts):
            # Its own block cache beside the mount point: kept across
            # remounts, never shared with another mount of the bucket.
            o.append(f"cache_dir={self.path.rstrip('/')}.cache")
        o += self.opts
        source = f"{self.bucket}:/{self.prefix}" if self.prefix else self.bucket
        return [str(PAILFS), "-f", "-o", ",".join(o), source, self.path]

    def start(self):
        assert self.proc is None, "already mounted"
        assert PAILFS.exists(), f"no pailfs binary at {PAILFS} (build first)"
        os.makedirs(self.path, exist_ok=True)
        assert not is_mounted(self.path), f"{self.path} is already mounted"
        self._runs += 1
        self.log_path = self.log_dir / f"{self._name}.{self._runs}.log"
        self.returncode = None
        self._watchdog_fired = False
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=self.env,
                preexec_fn=_pailfs_preexec)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(self.path):
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise AssertionError(
                    f"pailfs exited {rc} before mounting {self.path}:\n"
                    f"{self.stderr_text()}")
            if time.monotonic() > deadline:
                self._kill()
                raise AssertionError(
                    f"pailfs did not mount {self.path} within "
                    f"{MOUNT_TIMEOUT}s:\n{self.stderr_text()}")
            time.sleep(0.02)
        if self.watchdog:
            self._timer = threading.Timer(self.watchdog, self._fire_watchdog)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _fire_watchdog(self):
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self._watchdog_fired = True
            proc.kill()

    def _stop_watchdog(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _kill(self):
        """SIGKILL the process and detach the mount; no checks."""
        self._stop_watchdog()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            self.returncode = self.proc.returncode
            self.proc = None
        if is_mounted(self.path):
            fusermount_unmount(self.path, lazy=True)

    def _finish(self, how, check):
        """Wait for the process after it was asked to stop; check it."""
        problems = []
        try:
            self.proc.wait(UNMOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            problems.append(f"pailfs still running {UNMOUNT_TIMEOUT}s after "
                            f"{how}; killed")
            self._kill()
        self._stop_watchdog()
        if self.proc is not None:
            self.returncode = self.proc.returncode
            self.proc = None
        if is_mounted(self.path):
            problems.append(f"{self.path} still mounted after {how}")
            fusermount_unmount(self.path, lazy=True)
        text = self.stderr_text()
        print(f"---- {self.log_path.name} ({' '.join(self.argv())}) "
              f"exit {self.returncode} ----\n{text}")
        if self._watchdog_fired:
            problems.append(f"watchdog killed pailfs after {self.watchdog}s "
                            "(a request hung?)")
        elif self.returncode != 0:
            problems.append(f"pailfs exited {self.returncode} after {how}")
        for marker in SANITIZER_MARKERS:
            if marker in text:
                problems.append(f"sanitizer report in pailfs stderr "
                                f"({marker!r})")
        if problems and check:
            raise AssertionError("; ".join(problems) + "\n" + text[-6000:])
        return self.returncode

    def unmount(self, check=True):
        """fusermount3 -u, wait for the process; assert it exited 0."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            r = fusermount_unmount(self.path)
            if r.returncode != 0:
                print(f"fusermount3 -u {self.path}: {r.stderr.strip()}; "
                      "detaching lazily")
                fusermount_unmount(self.path, lazy=True)
        return self._finish("fusermount3 -u", check)

    def terminate(self, sig=signal.SIGTERM, check=True):
        """Send sig to the process (instead of unmounting); wait; check."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(sig)
        return self._finish(signal.Signals(sig).name, check)

    def remount(self, **changes):
        """Unmount (checked), then mount again, with attributes changed."""
        self.unmount()
        for k, v in changes.items():
            if k == "opts":
                v = format_opts(v)
            setattr(self, k, v)
        return self.start()

    def stderr_text(self):
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        # With a test failure already on its way, report problems of the
        # unmount on stdout instead of hiding the original failure.
        try:
            self.unmount(check=exc_type is None)
        finally:
            self._kill()


def unmount_all(mounts):
    """Unmount every Mount, the last made first, each checked (exit 0, no
    sanitizer report) and then killed whatever happened; returns the
    failures' texts, so that a fixture reports them all at once."""
    errors = []
    for m in reversed(mounts):
        try:
            m.unmount()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            m._kill()
    return errors


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture
def mounter(proxy, bucket, tmp_path):
    """mounter(**kw) -> Mount of `bucket` through `proxy` at a fresh
    directory under tmp_path; every mount made is unmounted (and checked)
    at teardown."""
    made = []

    def make(**kw):
        n = len(made) + 1
        mountpoint = kw.pop("mountpoint", tmp_path / f"mnt{n}")
        m = Mount(kw.pop("endpoint", proxy), kw.pop("bucket", bucket),
                  mountpoint, log_dir=kw.pop("log_dir", tmp_path), **kw)
        made.append(m)
        return m

    yield make
    errors = unmount_all(made)
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def mnt(mounter):
    """A mount of the test's bucket with the default options."""
    return mounter()
