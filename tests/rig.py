"""rig.py: start and drive the local S3 test servers for pailfs integration tests.

Two helper processes stand in for AWS S3:

* S3Server: s3rver (tests/s3server, pinned by its package-lock.json) started
  through tests/s3server/launch.js on a free 127.0.0.1 port, with
  tests/s3server/aws-fixes.js making it answer like AWS S3 where it did not
  (listing, XML escaping, key storage, conditional requests, copy sources,
  multipart uploads, ranges). It stores buckets under a directory of the
  test's choosing and can be stopped and started again on the same port and
  directory to simulate an outage.
* MotoServer: moto's `moto_server` (moto 5.x), an independent S3
  implementation, in place of s3rver when PAILFS_TEST_SERVER=moto (see
  server_kind() and start_server()). It keeps its data in memory, so a stop
  loses the buckets; the suites' `core` tests (pytest -m core) are the ones
  that run against it. moto_server() finds the program or says why not.
* Proxy: tests/proxy/s3proxy.py between the client under test and the
  server. It judges SigV4 signatures like AWS does and injects faults on
  request; tests configure it and read its counters through small methods
  here.

Both are context managers and are also killed at interpreter exit (atexit),
and, through PR_SET_PDEATHSIG, when the Python process that started them
dies, so no stray node or python process outlives a test run.

The keys below are s3rver's built-in account (lib/models/account.js); s3rver
refuses any other access key, and the proxy accepts only these too. moto
accepts any key, so the proxy alone judges signatures in front of it.
"""

import atexit
import ctypes
import fcntl
import hashlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"
REGION = "us-east-1"

TESTS_DIR = Path(__file__).resolve().parent
S3SERVER_DIR = TESTS_DIR / "s3server"
LAUNCH_JS = S3SERVER_DIR / "launch.js"
PROXY_SCRIPT = TESTS_DIR / "proxy" / "s3proxy.py"
# Debian's python has botocore; a pyenv one on PATH may not.
PYTHON = "/usr/bin/python3"
NODE = os.environ.get("PAILFS_TEST_NODE", "node")
S3RVER_VERSION = "4.0.4"

START_TIMEOUT = 30.0  # seconds to wait for a "PORT <n>" line
SERVER_KINDS = ("s3rver", "moto")
# Where a pyenv-installed moto lives when the PATH of the test run lacks it.
MOTO_FALLBACKS = ("/root/.pyenv/shims/moto_server",)


# --------------------------------------------------------------------------
# Child process bookkeeping
# --------------------------------------------------------------------------

_live = set()
_live_lock = threading.Lock()


def _die_with_parent():
    """preexec_fn: SIGTERM the child when the parent goes away."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # best effort; atexit still covers normal exits
        pass


def _kill(proc, grace=5.0):
    """Stop one child: SIGTERM, then SIGKILL after grace seconds."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()
    with _live_lock:
        _live.discard(proc)


@atexit.register
def _kill_all():
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        _kill(proc, grace=2.0)


def _spawn(argv, env, log_path, what, first_word="PORT",
           stdin=subprocess.DEVNULL, die_with_parent=True):
    """Start argv, wait for its "PORT <n>" line; return (proc, port).
    (first_word "READY": wait for a line "READY"; port None.)"""
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.PIPE, stderr=log, env=env,
            preexec_fn=_die_with_parent if die_with_parent else None)
    finally:
        log.close()
    with _live_lock:
        _live.add(proc)
    try:
        word, _, port = _read_line(proc, what, log_path).partition(" ")
        if word != first_word or (first_word == "PORT" and not port.isdigit()):
            raise RuntimeError(f"{what} printed {word} {port}, not {first_word}")
        return proc, int(port) if port else None
    except BaseException:
        _kill(proc)
        raise


def _read_line(proc, what, log_path):
    """The next line proc prints, within START_TIMEOUT, stripped."""
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{what} gave no answer in "
                               f"{START_TIMEOUT}s; see {log_path}")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        byte = os.read(proc.stdout.fileno(), 1)
        if not byte:
            raise RuntimeError(
                f"{what} exited ({proc.wait()}) before listening; "
                f"log {log_path}:\n{_tail(log_path)}")
        line += byte
    return line.decode().strip()


class _Forked:
    """A process the proxy's fork server made (not our child: its exit
    status is not ours to collect), watched through a pidfd: the part of
    Popen that _kill and the services use. returncode is 0 once it ended,
    whatever its status was."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None
        self.stdout = self.stderr = None
        self._fd = os.pidfd_open(pid)

    def wait(self, timeout=None):
        if self.returncode is None:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            self.returncode = 0
            os.close(self._fd)
        return self.returncode

    def poll(self):
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, sig):
        if self.returncode is None:
            signal.pidfd_send_signal(self._fd, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class _ForkServer:
    """s3proxy.py --fork-server (see there), started at the first proxy and
    shared by the session's proxies: a proxy then starts in a fork() of
    an interpreter that has its imports, not in a new one."""

    _lock = threading.Lock()
    _proc = None

    @classmethod
    def start_proxy(cls, args, env, log_path):
        """(process, port) of a proxy with these arguments, or RuntimeError."""
        with cls._lock:
            if cls._proc is None or cls._proc.poll() is not None:
                fd, cls._log = tempfile.mkstemp(prefix="pailfs-s3proxy-forks-",
                                                suffix=".log")
                os.close(fd)
                atexit.register(Path(cls._log).unlink, missing_ok=True)
                # No PR_SET_PDEATHSIG: it fires when the thread that
                # started it ends, and a test may start its proxy from a
                # thread. It ends instead at EOF on stdin, which only this
                # process holds open: when the session ends, however it
                # ends; its proxies then get their SIGTERM.
                cls._proc, _ = _spawn([PYTHON, str(PROXY_SCRIPT), "--fork-server"],
                                      dict(os.environ), cls._log,
                                      "s3proxy --fork-server", first_word="READY",
                                      stdin=subprocess.PIPE, die_with_parent=False)
            req = {"argv": args, "env": env, "log": str(log_path)}
            try:
                cls._proc.stdin.write((json.dumps(req) + "\n").encode())
                cls._proc.stdin.flush()
                line = _read_line(cls._proc, "s3proxy --fork-server", cls._log)
            except BaseException:
                # its answer may still come, to the next request: a new one
                _kill(cls._proc)
                cls._proc = None
                raise
        word, port, pid = (line.split(" ") + ["", ""])[:3]
        if word == "PORT" and port.isdigit() and pid.isdigit():
            proc = _Forked(int(pid))
            with _live_lock:
                _live.add(proc)
            return proc, int(port)
        raise RuntimeError(f"s3proxy exited before listening; log {log_path}:\n"
                           f"{_tail(log_path)}")


def _start_proxy(args, env, log_path):
    """(process, port) of the proxy s3proxy.py args, forked by the fork
    server where Linux has pidfds (5.3 on), else a program of its own."""
    if hasattr(os, "pidfd_open"):
        return _ForkServer.start_proxy(args, env, log_path)
    return _spawn([PYTHON, str(PROXY_SCRIPT)] + args, env, log_path, "s3proxy")


def _tail(path, limit=4000):
    try:
        return Path(path).read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------
# s3rver
# --------------------------------------------------------------------------

def ensure_node_modules():
    """Run `npm ci` in tests/s3server once, if its node_modules is missing.

    An flock on a file in the temp directory serialises concurrent callers
    (parallel test sessions); the second one finds the work already done.
    """
    modules = S3SERVER_DIR / "node_modules"
    marker = modules / "@20minutes" / "s3rver" / "package.json"

    def installed():
        # npm writes node_modules/.package-lock.json last, so an interrupted
        # install does not pass for a finished one.
        try:
            return (modules / ".package-lock.json").is_file() and \
                json.loads(marker.read_text())["version"] == S3RVER_VERSION
        except (OSError, ValueError, KeyError):
            return False

    if installed():
        return
    tag = hashlib.sha256(str(S3SERVER_DIR).encode()).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"pailfs-npm-ci-{tag}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=S3SERVER_DIR,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=600)
        if result.returncode != 0 or not installed():
            raise RuntimeError("npm ci in tests/s3server failed:\n" +
                               result.stdout.decode("utf-8", "replace"))


class _LocalService:
    """What S3Server and Proxy share: a child process on a 127.0.0.1 port,
    started by .start(), stopped by .stop(), usable as a context manager."""

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self):
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class S3Server(_LocalService):
    """s3rver on 127.0.0.1, data under tmpdir/data, log in tmpdir/s3rver.log.

    S3Server(tmpdir, buckets=["b"]) starts at once (start=False defers).
    .url, .port, .directory; .stop() and .start() again reuse the port and
    directory, so the data survives an "outage". keys=[(ak, secret)] adds
    access keys besides ACCESS_KEY (give the Proxy the same ones).

    refuse_abort=True emulates a server without AbortMultipartUpload and
    ListParts (405 MethodNotAllowed) or ListMultipartUploads (501
    NotImplemented): s3rver's own refusals, which aws-fixes.js otherwise
    replaces with AWS's behaviour. min_part_size (bytes) lowers the smallest
    part CompleteMultipartUpload accepts for all but the last part (AWS and
    the default: 5 MiB), for tests that want small multipart objects.
    tls=(cert.pem, key.pem) serves https from s3rver itself (no proxy hop:
    bench/run --https); .url then starts with https.
    """

    proxy_fixups = ()  # aws-fixes.js already answers like AWS

    def __init__(self, tmpdir, buckets=(), port=0, keys=(), start=True,
                 refuse_abort=False, min_part_size=None, tls=None):
        self.tmpdir = Path(tmpdir)
        self.directory = self.tmpdir / "data"
        self.log_path = self.tmpdir / "s3rver.log"
        self.buckets = list(buckets)
        self.keys = list(keys)
        self.refuse_abort = refuse_abort
        self.min_part_size = min_part_size
        self.tls = tls
        self.port = port or None
        self._proc = None
        if start:
            self.start()

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self):
        if self.running:
            return self
        ensure_node_modules()
        self.directory.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        argv = [NODE, str(LAUNCH_JS), "--dir", str(self.directory),
                "--port", str(self.port or 0), "--quiet"]
        if self.refuse_abort:
            argv.append("--no-abort")
        if self.min_part_size is not None:
            argv += ["--min-part-size", str(int(self.min_part_size))]
        for bucket in self.buckets:
            argv += ["--bucket", bucket]
        for access_key, secret_key in self.keys:
            argv += ["--access-key", f"{access_key}:{secret_key}"]
        if self.tls:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        # Right after stop() the old socket may linger briefly; retry.
        for attempt in range(20):
            try:
                self._proc, port = _spawn(argv, env, self.log_path, "s3rver")
                break
            except RuntimeError:
                if not self.port or attempt == 19:
                    raise
                time.sleep(0.25)
        self.port = port
        return self

    def stop(self):
        if self._proc is not None:
            _kill(self._proc)
            self._proc = None



# --------------------------------------------------------------------------
# moto, the second S3 implementation
# --------------------------------------------------------------------------

def server_kind():
    """The S3 server the suites run against: PAILFS_TEST_SERVER, "s3rver"
    (the default) or "moto"; anything else is a ValueError."""
    kind = os.environ.get("PAILFS_TEST_SERVER", "") or "s3rver"
    if kind not in SERVER_KINDS:
        raise ValueError(f"PAILFS_TEST_SERVER={kind!r}: not one of "
                         f"{', '.join(SERVER_KINDS)}")
    return kind


_moto_found = None


def moto_server():
    """(path, None) of a moto_server that runs, or (None, reason).

    Looks on PATH, then in MOTO_FALLBACKS, and runs `moto_server --help`
    once: a pyenv shim exists even when the selected Python lacks moto, and
    only running it tells. The answer is kept for the process's life.
    """
    global _moto_found
    if _moto_found is not None:
        return _moto_found
    tried = []
    for path in [shutil.which("moto_server"), *MOTO_FALLBACKS]:
        if not path or path in tried or not os.access(path, os.X_OK):
            continue
        tried.append(path)
        try:
            result = subprocess.run([path, "--help"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            _moto_found = (path, None)
            return _moto_found
    where = "PATH and " + ", ".join(MOTO_FALLBACKS)
    _moto_found = (None, f"moto_server not found on {where}" if not tried
                   else f"moto_server at {', '.join(tried)} does not run")
    return _moto_found


def _free_port():
    """A port nothing listens on now (moto_server wants one named)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(proc, port, log_path, what):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before "
                               f"listening; log {log_path}:\n"
                               f"{_tail(log_path)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on {port} after "
                       f"{START_TIMEOUT}s; see {log_path}")


class MotoServer(_LocalService):
    """moto_server on 127.0.0.1, log in tmpdir/moto.log; S3Server's
    interface where moto can give it.

    MotoServer(tmpdir, buckets=["b"]) starts at once (start=False defers) and
    creates the buckets. .url, .port; .directory is None: moto keeps
    everything in memory, so .stop() and .start() again (same port) come
    back empty but for the buckets named here. keys are accepted for
    S3Server's sake and not needed: moto takes any access key.
    """

    directory = None
    # What moto 5.2.1 answers unlike AWS and the proxy puts right (the
    # others are listed in tests/README.md, "Two servers").
    proxy_fixups = ("copy-source-if-match",)

    def __init__(self, tmpdir, buckets=(), port=0, keys=(), start=True):
        self.tmpdir = Path(tmpdir)
        self.log_path = self.tmpdir / "moto.log"
        self.buckets = list(buckets)
        self.keys = list(keys)
        self.port = port or None
        self._proc = None
        if start:
            self.start()

    def start(self):
        if self.running:
            return self
        program, reason = moto_server()
        if program is None:
            raise RuntimeError(reason)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        # The free port may be taken between the probe and moto's bind: try
        # another (or, for a restart on a named port, the same one again).
        for attempt in range(20):
            port = self.port or _free_port()
            log = open(self.log_path, "ab")
            try:
                proc = subprocess.Popen(
                    [program, "-H", "127.0.0.1", "-p", str(port)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    env=dict(os.environ), preexec_fn=_die_with_parent)
            finally:
                log.close()
            with _live_lock:
                _live.add(proc)
            try:
                _wait_listening(proc, port, self.log_path, "moto_server")
                break
            except RuntimeError:
                _kill(proc)
                if attempt == 19:
                    raise
                time.sleep(0.25)
        self._proc, self.port = proc, port
        client = boto3_client(self.url)
        for bucket in self.buckets:
            client.create_bucket(Bucket=bucket)
        return self

    def stop(self):
        if self._proc is not None:
            _kill(self._proc)
            self._proc = None


def start_server(tmpdir, buckets=(), **kw):
    """The server server_kind() names, started: S3Server(tmpdir, buckets,
    **kw) or MotoServer(tmpdir, buckets)."""
    if server_kind() == "moto":
        return MotoServer(tmpdir, buckets=buckets, keys=kw.get("keys", ()))
    return S3Server(tmpdir, buckets=buckets, **kw)


# The pytest marker of the tests that run against moto too (see
# tests/README.md, "Two servers"); both suites' conftest.py register it and
# call select_for_server().
CORE_MARKER = ("core: runs against moto as well as s3rver "
               "(PAILFS_TEST_SERVER=moto pytest -m core)")
NOT_CORE = "not in the core (pytest -m core): runs against s3rver only"


def select_for_server(items, directory):
    """pytest_collection_modifyitems for the suite in directory: under
    PAILFS_TEST_SERVER=moto, skip its tests that are not marked core, and
    all of them, with moto_server()'s reason, when moto cannot run."""
    if server_kind() != "moto":
        return
    import pytest
    _, reason = moto_server()
    for item in items:
        if Path(str(item.fspath)).parent != Path(directory):
            continue
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
        elif item.get_closest_marker("core") is None:
            item.add_marker(pytest.mark.skip(reason=NOT_CORE))


# --------------------------------------------------------------------------
# Signature-judging, fault-injecting proxy
# --------------------------------------------------------------------------

class Proxy(_LocalService):
    """tests/proxy/s3proxy.py in front of upstream_url, on 127.0.0.1.

    .url is what the client under test talks to. .config(**kw) sets faults
    (p503, p500, preset, ptruncate, ignore_range, latency_ms, pspike,
    spike_ms, seed, only_methods, only_ops, only_path_regex, fail_next,
    upstream_error) and
    returns the resulting config; .stats() returns counters and recent
    requests; .reset() zeroes counters and clears every fault.
    ignore_range=True (or a probability) drops the Range header of ranged
    requests, so the server answers 200 with the whole object, as servers
    that ignore ranges do; counted under stats()["faults"]["ignore_range"].
    fixups: the proxy's fix-ups of an upstream that deviates from AWS (pass
    the server's .proxy_fixups).
    """

    def __init__(self, upstream_url, seed=0, region=REGION,
                 keys=((ACCESS_KEY, SECRET_KEY),), log_path=None, start=True,
                 tls=None, fixups=()):
        self.upstream_url = upstream_url
        self.fixups = list(fixups)  # the upstream's .proxy_fixups
        self.tls = tls  # (cert.pem, key.pem): listen with TLS, .url https
        self.seed = seed
        self.region = region
        self.keys = list(keys)
        self._own_log = log_path is None  # a temp file, removed by stop()
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="pailfs-s3proxy-",
                                            suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.port = None
        self._proc = None
        if start:
            self.start()

    def start(self):
        if self.running:
            return self
        argv = ["--upstream", self.upstream_url,
                "--port", str(self.port or 0), "--region", self.region,
                "--seed", str(self.seed)]
        for access_key, secret_key in self.keys:
            argv += ["--access-key", access_key, "--secret-key", secret_key]
        if self.tls:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        for fixup in self.fixups:
            argv += ["--fixup", fixup]
        self._proc, self.port = _start_proxy(argv, dict(os.environ),
                                             self.log_path)
        return self

    def stop(self):
        if self._proc is not None:
            _kill(self._proc)
            self._proc = None
            if self._own_log:
                self.log_path.unlink(missing_ok=True)


    @property
    def url(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _control(self, method, name, payload=None):
        if self.tls:
            import ssl
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=30,
                context=ssl._create_unverified_context())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                              timeout=30)
        try:
            body = json.dumps(payload).encode() if payload is not None else None
            headers = {"Content-Type": "application/json"} if body else {}
            conn.request(method, f"/__proxy__/{name}", body=body,
                         headers=headers)
            resp = conn.getresponse()
            data = json.loads(resp.read() or b"{}")
            if resp.status != 200:
                raise ValueError(f"proxy {name}: {resp.status} {data}")
            return data
        finally:
            conn.close()

    def config(self, **kw):
        return self._control("POST", "config", kw)["config"]

    def stats(self):
        return self._control("GET", "stats")

    def reset(self):
        self._control("POST", "reset")


def self_signed_cert(directory):
    """A self-signed certificate for 127.0.0.1, made with openssl in
    directory: (cert.pem, key.pem), for tls= of S3Server and Proxy."""
    directory = Path(directory)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


# --------------------------------------------------------------------------
# Independent S3 client
# --------------------------------------------------------------------------

def boto3_client(endpoint_url, retries=0, access_key=ACCESS_KEY,
                 secret_key=SECRET_KEY, **config):
    """A path-style boto3 S3 client with the rig's keys and region.

    retries is the number of retries after the first attempt (default 0, so
    every request is seen once and counters stay predictable). Other keys
    can be given to provoke refusals. Further keyword arguments go to
    botocore.config.Config (e.g. read_timeout=120).
    """
    import boto3
    import botocore.config

    cfg = botocore.config.Config(
        region_name=REGION,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": retries + 1, "mode": "standard"},
        connect_timeout=config.pop("connect_timeout", 10),
        read_timeout=config.pop("read_timeout", 60),
        **config)
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name=REGION, config=cfg)
