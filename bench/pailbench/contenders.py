"""contenders.py: how to mount (and unmount) each filesystem under test.

Every filesystem runs in the foreground as a child of the harness, so its
PID is known (for VmHWM) and it can be killed if it misbehaves; its log
goes to the run's log directory. Each gets its own empty cache/staging
directory, which the harness samples for size. Options are each tool's
defaults except what is needed to reach the server: no tuning.

  pailfs         build/src/pailfs -f -o endpoint=,path_style,cache_dir=
  s3fs           s3fs -f -o url=,use_path_request_style,use_cache=  (its
                 disk cache; it stages writes there too)
  rclone-off     rclone mount --vfs-cache-mode off
  rclone-writes  rclone mount --vfs-cache-mode writes (writes are staged
                 on disk and uploaded after close: see the write notes)
  raw            no filesystem: the limit of the server itself
  floor          no filesystem either: the least core-seconds per GiB any
                 FUSE filesystem could spend here (floor.py: curl, a FUSE
                 filesystem that does nothing, SHA-256), in its own table

The request table (workload "requests") mounts with short_ttl=True: names
and attributes trusted for 1 s, in each tool's own terms (SHORT_TTL of each
class), so that the table's "after the TTL ran out" rows take seconds.
"""

import os
import re
import shutil
import signal
import subprocess
import time

from .util import force_unmount, log, mount_entry, run, which

ACCESS_KEY = SECRET_KEY = "S3RVER"
REGION = "us-east-1"
BUCKET = "bench"


class MountError(Exception):
    pass


class Contender:
    key = ""
    label = ""
    is_fs = True
    SHORT_TTL = ""  # the options of short_ttl=True, as the report states them
    # bench/run --https: the server's self-signed certificate (set by the
    # harness for all contenders); each trusts it its own way in argv()
    ca_cert = None

    def __init__(self):
        self.proc = None
        self.mnt = None
        self.cache_dir = None
        self.devnum = None
        self.bucket = BUCKET
        self.short_ttl = False
        self._mounted_with = None  # mount()'s arguments, for remount()

    # -- what the report says about it
    def missing(self):
        """None if usable, else why not (e.g. 'not installed')."""
        return None

    def version(self):
        return ""

    def setup_notes(self):
        return ""

    # -- mounting
    def argv(self, endpoint, mnt, cache_dir, workdir):
        raise NotImplementedError

    def env(self):
        # Only our keys: a stray AWS_CA_BUNDLE or AWS_PROFILE in the caller's
        # environment changes what some tools do (rclone refuses to start
        # with a CA bundle on a plain-http endpoint).
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                   AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION)
        return env

    def mount(self, endpoint, mnt, cache_dir, workdir, log_path, timeout=30,
              bucket=BUCKET, short_ttl=False):
        """Mount bucket on mnt; short_ttl: trust names and attributes for
        1 s only (the request table's setting)."""
        self.mnt, self.cache_dir = mnt, cache_dir
        self.bucket, self.short_ttl = bucket, short_ttl
        self._mounted_with = (endpoint, mnt, cache_dir, workdir, log_path)
        os.makedirs(mnt, exist_ok=True)
        os.makedirs(cache_dir, exist_ok=True)
        argv = self.argv(endpoint, mnt, cache_dir, workdir)
        log(f"mount {self.key}: {' '.join(argv)}")
        self.log_path = log_path
        logf = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=logf, env=self.env(),
                                     start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = mount_entry(mnt)
            if entry and entry[0].startswith("fuse"):
                self.devnum = entry[1]
                return
            if self.proc.poll() is not None:
                raise MountError(f"exited {self.proc.returncode} before mounting: "
                                 f"{self.log_tail()}")
            time.sleep(0.05)
        self.kill()
        raise MountError(f"not mounted after {timeout} s: {self.log_tail()}")

    def remount(self, timeout=300, **kw):
        """Unmount, empty the cache directory and mount again: a fresh
        mount with nothing known, same endpoint; kw as for mount()."""
        took, clean = self.unmount(timeout)
        endpoint, mnt, cache_dir, workdir, log_path = self._mounted_with
        shutil.rmtree(cache_dir, ignore_errors=True)
        self.mount(endpoint, mnt, cache_dir, workdir, log_path, **kw)
        return clean

    def log_tail(self, lines=3):
        try:
            text = open(self.log_path, errors="replace").read().strip().splitlines()
            return " | ".join(text[-lines:]) or "(no output)"
        except OSError:
            return "(no log)"

    @property
    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def unmount(self, timeout=300):
        """fusermount3 -u, then wait for the process to finish its own
        shutdown (uploads it still holds); force after timeout. Returns the
        seconds the unmount took, and whether it was clean."""
        if not self.proc:
            return 0, True
        t = time.monotonic()
        clean = True
        r = run(["fusermount3", "-u", self.mnt], timeout=60)
        if r.rc != 0:
            # still mounted (busy): the process will not end by itself
            log(f"unmount {self.key}: fusermount3 -u failed ({r.err.strip()}); forcing")
            clean = False
        else:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"unmount {self.key}: process still running after {timeout} s; killing")
                clean = False
        self.kill()
        return time.monotonic() - t, clean and self.proc.returncode == 0

    def kill(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    pass
        if self.mnt:
            force_unmount(self.mnt)


def _first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return ""


class Pailfs(Contender):
    key = "pailfs"
    label = "pailfs"
    SHORT_TTL = "attr_ttl=1,neg_ttl=1"

    def __init__(self, binary):
        super().__init__()
        self.binary = binary
        self._help = None
        self.version_text = None  # set when binary is a snapshot of the built one

    def missing(self):
        if not (self.binary and os.access(self.binary, os.X_OK)):
            return f"not built ({self.binary} missing)"
        return None

    def help(self):
        if self._help is None:
            try:
                r = subprocess.run([self.binary, "--help"], capture_output=True,
                                   text=True, timeout=10)
                self._help = r.stdout + r.stderr
            except (OSError, subprocess.TimeoutExpired):
                self._help = ""
        return self._help

    def has_gzip_view(self):
        """Hook for the gzip column: once pailfs has `-o gunzip=view` (a
        later issue), the gzip workload reads the decompressed view instead
        of piping the .gz through zcat."""
        return bool(re.search(r"gunzip", self.help()))

    def version(self):
        if self.version_text:
            return self.version_text
        # The tree the binary was built in (a worktree or an unpacked copy
        # can be benchmarked with --pailfs), not the tree the bench runs from.
        tree = os.path.dirname(os.path.realpath(self.binary))
        rev = _first_line(["git", "-C", tree, "rev-parse", "--short", "HEAD"])
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(self.binary)))
        text = f"{_first_line([self.binary, '--version'])}, built {built}"
        if not rev or not re.fullmatch(r"[0-9a-f]{4,40}", rev):
            return text + " outside a git tree"
        dirty = subprocess.run(["git", "-C", tree, "diff", "--quiet", "HEAD", "--", "src"],
                               capture_output=True).returncode
        return text + f" from git {rev}" + (" with uncommitted changes in src/" if dirty else "")

    def argv(self, endpoint, mnt, cache_dir, workdir):
        opts = f"endpoint={endpoint},path_style,cache_dir={cache_dir}"
        if self.ca_cert:
            opts += f",cafile={self.ca_cert}"
        if self.has_gzip_view():
            opts += ",gunzip=view"
        if self.short_ttl:
            opts += "," + self.SHORT_TTL
        return [self.binary, "-f", "-o", opts, self.bucket, mnt]


class S3fs(Contender):
    key = "s3fs"
    label = "s3fs-fuse"
    # Its stat cache (which also holds missing names: the noobj cache, on by
    # default) for 1 s; libfuse's own defaults already give the kernel 1 s
    # for entries and attributes.
    SHORT_TTL = "stat_cache_expire=1"

    def missing(self):
        return None if which("s3fs") else "not installed (apt-get install s3fs)"

    def version(self):
        v = _first_line(["s3fs", "--version"])
        m = re.search(r"V(\d[\d.]*)", v)
        return f"s3fs {m.group(1)}" if m else v

    def setup_notes(self):
        return "use_cache=DIR"

    def argv(self, endpoint, mnt, cache_dir, workdir):
        passwd = os.path.join(workdir, "s3fs.passwd")
        with open(passwd, "w") as f:
            f.write(f"{ACCESS_KEY}:{SECRET_KEY}\n")
        os.chmod(passwd, 0o600)
        opts = (f"url={endpoint},use_path_request_style,passwd_file={passwd},"
                f"endpoint={REGION},use_cache={cache_dir},dbglevel=warn")
        if self.short_ttl:
            opts += "," + self.SHORT_TTL
        if self.ca_cert:  # s3fs names no CA file: the certificate goes unchecked
            opts += ",no_check_certificate,ssl_verify_hostname=0"
        return ["s3fs", self.bucket, mnt, "-f", "-o", opts]


class Rclone(Contender):
    label = "rclone mount"
    # Its directory cache answers lookups, present and missing names alike
    # (default 5 min); --attr-timeout is the kernel's (1 s already).
    SHORT_TTL = "--dir-cache-time 1s --attr-timeout 1s"

    def __init__(self, mode):
        super().__init__()
        self.mode = mode
        self.key = f"rclone-{mode}"
        self.label = f"rclone ({mode})"

    def missing(self):
        return None if which("rclone") else "not installed (apt-get install rclone)"

    def version(self):
        return _first_line(["rclone", "version"])

    def setup_notes(self):
        return f"--vfs-cache-mode {self.mode}"

    def argv(self, endpoint, mnt, cache_dir, workdir):
        conf = os.path.join(workdir, "rclone.conf")
        with open(conf, "w") as f:
            f.write("[bench]\ntype = s3\nprovider = Other\n"
                    f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n"
                    f"endpoint = {endpoint}\nregion = {REGION}\nforce_path_style = true\n")
        os.chmod(conf, 0o600)
        argv = ["rclone", "--config", conf, "mount", f"bench:{self.bucket}", mnt,
                "--vfs-cache-mode", self.mode, "--cache-dir", cache_dir,
                "--log-level", "NOTICE"]
        if self.ca_cert:
            argv += ["--ca-cert", self.ca_cert]
        return argv + (self.SHORT_TTL.split() if self.short_ttl else [])


class Raw(Contender):
    key = "raw"
    label = "raw limit"
    is_fs = False

    def missing(self):
        for tool in ("curl", "igzip", "openssl"):
            if not which(tool):
                return f"{tool} not installed"
        return None

    def version(self):
        return _first_line(["curl", "--version"]).split(" (")[0] + " + boto3"

    def setup_notes(self):
        return "curl ranged GETs, boto3, igzip"


class Floor(Contender):
    """Not a filesystem: the floor of issue 21 (floor.py), after the raw
    limit, whose best number of parallel GETs it reuses."""
    key = "floor"
    label = "floor"
    is_fs = False

    def missing(self):
        for tool in ("curl", "cc", "pkg-config", "fusermount3"):
            if not which(tool):
                return f"{tool} not installed"
        if run(["pkg-config", "--exists", "fuse3"], timeout=10).rc != 0:
            return "libfuse3-dev not installed (bench/nullfs.c needs it)"
        return None

    def version(self):
        fuse = run(["pkg-config", "--modversion", "fuse3"], timeout=10).out.strip()
        return (_first_line(["curl", "--version"]).split(" (")[0] +
                f", libfuse {fuse}, " + _first_line(["openssl", "version"]).split(" (")[0])


def all_contenders(pailfs_binary, only=None):
    cs = [Pailfs(pailfs_binary), S3fs(), Rclone("off"), Rclone("writes"), Raw(), Floor()]
    if only:
        cs = [c for c in cs if c.key in only]
    return cs
