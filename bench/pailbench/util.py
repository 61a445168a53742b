"""util.py: the harness's plumbing — commands with hard timeouts, the kernel
page cache, the mount table, FUSE connection aborts, process memory, and a
background sampler of how much disk a filesystem's cache/staging uses.

The one idea: nothing the harness does may hang it. Every command that
touches a mount runs as a child in its own process group with a timeout;
when it does not die (a process stuck in a FUSE request cannot), the FUSE
connection is aborted through /sys/fs/fuse/connections, which fails every
pending request and frees the process.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

T0 = time.monotonic()
_log_file = None


def set_log_file(path):
    global _log_file
    _log_file = open(path, "a", buffering=1)


def log(msg):
    line = f"[{time.monotonic() - T0:7.1f}s] {msg}"
    print(line, file=sys.stderr, flush=True)
    if _log_file:
        _log_file.write(line + "\n")


def detail(msg):
    """Only to the log file (commands, raw outputs)."""
    if _log_file:
        _log_file.write(f"[{time.monotonic() - T0:7.1f}s]   {msg}\n")


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

@dataclass
class Ran:
    rc: int            # exit status; None when it timed out
    out: str
    err: str
    seconds: float     # wall time from start to exit (or to the kill)
    timed_out: bool = False
    stuck: bool = False  # did not die even after SIGKILL (blocked in FUSE)


def run(cmd, timeout, env=None, cwd=None, input=None, on_stuck=None):
    """Run cmd (a shell string: bash -o pipefail, or an argv list), time it.

    On timeout the whole process group gets SIGKILL; if it is still there
    10 s later, on_stuck() is called (abort the FUSE connection) and we wait
    10 s more. Never raises for a failing command; look at .rc.
    """
    argv = ["/bin/bash", "-o", "pipefail", "-c", cmd] if isinstance(cmd, str) else cmd
    detail(f"$ {cmd if isinstance(cmd, str) else ' '.join(map(str, cmd))}")
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
        start_new_session=True)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
        seconds = time.monotonic() - start
        ran = Ran(proc.returncode, out.decode("utf-8", "replace"),
                  err.decode("utf-8", "replace"), seconds)
    except subprocess.TimeoutExpired:
        seconds = time.monotonic() - start
        _killpg(proc)
        stuck = False
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            stuck = True
            if on_stuck:
                on_stuck()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass
        ran = Ran(None, "", f"timed out after {timeout:.0f} s", seconds, True, stuck)
    if ran.rc not in (0, None):
        detail(f"  rc={ran.rc} err={ran.err.strip()[-500:]}")
    return ran


def _killpg(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def each_at_once(items, width, job):
    """job(item) for every item, `width` threads at once, in order taken;
    job returns None or what went wrong, and the first wrong stops the
    taking. (seconds, first wrong or None)."""
    left, wrongs, lock = list(items), [], threading.Lock()

    def worker():
        while True:
            with lock:
                if not left or wrongs:
                    return
                item = left.pop(0)
            wrong = job(item)
            if wrong is not None:
                with lock:
                    wrongs.append(wrong)

    t = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(width)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.monotonic() - t, (wrongs[0] if wrongs else None)


def which(name):
    for d in os.environ.get("PATH", "/usr/bin:/bin").split(":") + ["/usr/sbin", "/sbin"]:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def drop_caches(on_stuck=None):
    """sync; echo 3 > /proc/sys/vm/drop_caches (page cache, dentries, inodes)."""
    r = run("sync; echo 3 > /proc/sys/vm/drop_caches", timeout=120, on_stuck=on_stuck)
    if r.rc != 0:
        raise RuntimeError(f"drop_caches failed: {r.err.strip()}")


def warm_programs(*commands):
    """Run each command once on a local path, so its binary and libraries
    are back in the page cache after drop_caches: a timed `ls -l` must pay
    for the filesystem's listing, not for loading ls from disk (the raw
    limit's clock starts at its first request, with its program loaded)."""
    for cmd in commands:
        run(f"{cmd} > /dev/null 2>&1", timeout=60)


# --------------------------------------------------------------------------
# Mounts
# --------------------------------------------------------------------------

def mount_entry(mountpoint):
    """(fstype, 'major:minor') of what is mounted exactly at mountpoint, or None."""
    mountpoint = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            # id parent major:minor root mountpoint opts ... - fstype source
            mp = fields[4].replace("\\040", " ")
            if mp == mountpoint:
                dash = fields.index("-")
                return fields[dash + 1], fields[2]
    return None


def fuse_abort(devnum):
    """Abort a FUSE connection: every pending and future request fails."""
    minor = devnum.split(":")[1]
    path = f"/sys/fs/fuse/connections/{minor}/abort"
    try:
        with open(path, "w") as f:
            f.write("1")
        log(f"aborted FUSE connection {minor}")
    except OSError as e:
        log(f"could not abort FUSE connection {minor}: {e}")


def force_unmount(mountpoint):
    if mount_entry(mountpoint):
        run(["fusermount3", "-uz", mountpoint], timeout=20)
    if mount_entry(mountpoint):
        run(["umount", "-l", mountpoint], timeout=20)


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

def cpu_seconds(pid):
    """User plus system CPU time of process pid, all its threads, in
    seconds (/proc/PID/stat fields 14 and 15), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def vm_hwm(pid):
    """Peak resident set size (VmHWM) of pid in bytes, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_hwm(pid):
    """Make VmHWM of pid start again from its current RSS (writing 5 to
    /proc/PID/clear_refs resets the peak), so the next vm_hwm() is the peak
    of what ran in between. False when it could not."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _tree_bytes(top, seen):
    """Bytes allocated on disk (st_blocks) by regular files under top; a
    file with several names (s3fs's .mirror hard links) counts once."""
    total = 0
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            st = e.stat(follow_symlinks=False)
                            if (st.st_dev, st.st_ino) not in seen:
                                seen.add((st.st_dev, st.st_ino))
                                total += st.st_blocks * 512
                    except OSError:
                        pass
        except OSError:
            pass
    return total


def _deleted_open_bytes(pid, seen):
    """Bytes allocated by unlinked regular files that pid holds open: where
    s3fs without use_cache and others stage data (tmpfile())."""
    total = 0
    fddir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fddir)
    except OSError:
        return 0
    for fd in fds:
        p = os.path.join(fddir, fd)
        try:
            target = os.readlink(p)
            if not target.endswith(" (deleted)") or not target.startswith("/"):
                continue
            st = os.stat(p)
            if (st.st_mode & 0o170000) == 0o100000 and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
        except OSError:
            pass
    return total


class DiskSampler(threading.Thread):
    """Every 0.5 s: disk used under dirs + by deleted files pid holds open.
    .peak is the largest sum seen."""

    def __init__(self, dirs, pid=None, interval=0.5):
        super().__init__(daemon=True)
        self.dirs = [d for d in dirs if d]
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._halt = threading.Event()

    def sample(self):
        seen = set()
        n = sum(_tree_bytes(d, seen) for d in self.dirs)
        if self.pid:
            n += _deleted_open_bytes(self.pid, seen)
        self.peak = max(self.peak, n)

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(5)
        self.sample()
        return self.peak


def human_bytes(n):
    if n is None:
        return "—"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 100 * scale else f"{n / scale:.0f} {unit}"
    return f"{n} B"
