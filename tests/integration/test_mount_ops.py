"""Operating pailfs: `make install`, fstab lines mounted through mount(8)
and mount.fuse3, and the systemd template unit contrib/pailfs@.service.

mount(8) runs /sbin/mount.fuse3 without the caller's PATH, and mount.fuse3
runs `pailfs SOURCE MOUNTPOINT -o OPTS` through /bin/sh, whose default PATH
holds /usr/local/bin; the unit names /usr/local/bin/pailfs outright. So the
tests install pailfs with `make install DESTDIR=...` (prefix /usr/local)
and run every mount inside a private mount namespace (a `holder` process
made with unshare) where that DESTDIR's usr/local/bin is bind-mounted over
/usr/local/bin. Each step runs in the namespace through nsenter; the bucket
is checked from outside with boto3.

What cannot run here: systemd is not PID 1 on this machine, so the unit is
not started by systemd and x-systemd.automount is never exercised; the test
fills in the unit's specifiers and variables the way systemd does
(systemd.unit(5), systemd.exec(5)) and runs its Exec lines itself, and asks
`systemd-analyze verify` to check the file.
"""

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

import rig
from drive import BUILD, ROOT, clean_env
from mount import (PAILFS, _unescape_mounts_field, mount_entry, pailfs_pids,
                   wait_pids_gone)

UNIT = ROOT / "contrib" / "pailfs@.service"
FSTAB_EXAMPLE = ROOT / "contrib" / "fstab.example"
PREFIX = "/usr/local"
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def build_dir():
    return Path(BUILD) if (Path(BUILD) / "Makefile").exists() \
        else PAILFS.parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """DESTDIR of `make install prefix=/usr/local` from the build dir."""
    dest = tmp_path_factory.mktemp("destdir")
    r = subprocess.run(["make", "-s", "-C", str(build_dir()), "install",
                        f"prefix={PREFIX}", f"DESTDIR={dest}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


class Namespace:
    """A process sitting in a private mount namespace with the installed
    pailfs bind-mounted over /usr/local/bin; run() runs a command there."""

    def __init__(self, bindir):
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh",
             "-c", f"mount --bind {shlex.quote(str(bindir))} /usr/local/bin "
             "&& echo ready && exec sleep 3600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=rig._die_with_parent)
        line = self.proc.stdout.readline()
        assert line == "ready\n", self.proc.stderr.read()
        self.mountpoints = []

    def run(self, argv, env=None, timeout=60, input=None):
        """argv (a list, or a str for /bin/sh -c) inside the namespace."""
        if isinstance(argv, str):
            argv = ["/bin/sh", "-c", argv]
        return subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m",
                               "--", *argv], env=env or clean_env(),
                              capture_output=True, text=True, timeout=timeout,
                              input=input)

    def mounted(self, mp):
        """The fields of mp's line of /proc/mounts seen in the namespace."""
        r = self.run(["cat", "/proc/self/mounts"])
        for line in r.stdout.splitlines():
            f = [_unescape_mounts_field(x) for x in line.split()]
            if f[1] == str(mp):
                return f
        return None

    def close(self):
        for mp in self.mountpoints:
            if self.mounted(mp):
                self.run(["fusermount3", "-uz", str(mp)])
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def ns(installed):
    n = Namespace(installed / PREFIX.lstrip("/") / "bin")
    yield n
    n.close()


def passwd_file(tmp_path):
    p = tmp_path / "passwd-pailfs"
    p.write_text(f"{rig.ACCESS_KEY}:{rig.SECRET_KEY}\n")
    p.chmod(0o600)
    return p


def exercise(ns, mp, s3, bucket, prefix, *, read_only=False):
    """Read an object the test put there, write one through the mount (or
    see EROFS on a read-only mount), list; check the bucket from outside."""
    key = lambda name: f"{prefix}/{name}" if prefix else name  # noqa: E731
    r = ns.run(["cat", f"{mp}/seed.txt"])
    assert r.returncode == 0 and r.stdout == "seed bytes\n", r
    q = shlex.quote
    out, big = q(f"{mp}/out"), q(f"{mp}/out/big.bin")
    r = ns.run(f"mkdir -p {out} && head -c 12582912 /dev/urandom > {big}"
               f" && sha256sum < {big} && ls -1 {q(str(mp))} && stat -c %s {big}")
    if read_only:
        assert r.returncode != 0
        assert "Read-only file system" in r.stderr, r.stderr
        assert not s3.list_objects_v2(Bucket=bucket,
                                      Prefix=key("out/")).get("Contents")
        return
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    digest, names, size = out[0].split()[0], out[1:-1], out[-1]
    assert names == ["out", "seed.txt"], r.stdout
    assert size == "12582912"
    body = s3.get_object(Bucket=bucket, Key=key("out/big.bin"))["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest


def assert_unmounted_and_gone(ns, mp):
    assert ns.mounted(mp) is None, f"{mp} still mounted"
    assert wait_pids_gone(pailfs_pids(mp), 30), "pailfs still running"


# --------------------------------------------------------------------------
# make install
# --------------------------------------------------------------------------

def test_make_install_puts_binary_and_man_page(installed):
    binary = installed / "usr/local/bin/pailfs"
    man = installed / "usr/local/share/man/man1/pailfs.1"
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert binary.read_bytes() == (build_dir() / "src" / "pailfs").read_bytes()
    assert man.read_bytes() == (ROOT / "man" / "pailfs.1").read_bytes()
    r = subprocess.run([str(binary), "--version"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("pailfs "), r


# --------------------------------------------------------------------------
# mount -t fuse.pailfs, mount --fstab, mount.fuse3
# --------------------------------------------------------------------------

def test_mount_t_fuse_pailfs(ns, proxy, s3, bucket, tmp_path):
    """mount -t fuse.pailfs BUCKET:/PREFIX MNT -o ...: mount(8) finds
    pailfs in /usr/local/bin with no PATH of its caller; umount ends it."""
    s3.put_object(Bucket=bucket, Key="team/a/seed.txt", Body=b"seed bytes\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    ns.mountpoints.append(mp)
    opts = (f"endpoint={proxy.url},path_style,passwd_file={passwd_file(tmp_path)},"
            f"cache_dir={tmp_path}/cache,_netdev,nofail,allow_other")
    r = ns.run(["mount", "-t", "fuse.pailfs", f"{bucket}:/team/a", str(mp),
                "-o", opts], env=clean_env(keys=False))
    assert r.returncode == 0, r.stderr
    fields = ns.mounted(mp)
    assert fields[0] == f"pailfs:{bucket}" and fields[2] == "fuse.pailfs", fields
    assert "allow_other" in fields[3].split(","), fields
    exercise(ns, mp, s3, bucket, "team/a")
    r = ns.run(["umount", str(mp)])
    assert r.returncode == 0, r.stderr
    assert_unmounted_and_gone(ns, mp)


def fstab_example_lines():
    return [line for line in FSTAB_EXAMPLE.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_fstab_example_has_lines():
    lines = fstab_example_lines()
    assert len(lines) == 2
    for line in lines:
        f = line.split()
        assert len(f) == 6 and f[2] == "fuse.pailfs" and f[4:] == ["0", "0"]
        opts = f[3].split(",")
        for need in ("_netdev", "nofail", "allow_other", "x-systemd.automount"):
            assert need in opts, (need, line)


@pytest.mark.parametrize("n", [0, 1], ids=["aws-instance-role", "minio"])
def test_fstab_example_line_mounts(n, ns, proxy, s3, bucket, tmp_path):
    """Each line of contrib/fstab.example, with the bucket, mount point,
    endpoint and passwd_file changed to the test's (every other option
    kept, x-systemd.* included), mounts with `mount --fstab FILE MNT`."""
    source, _, fstype, opts, dump, fsck = fstab_example_lines()[n].split()
    prefix = source.partition(":/")[2]
    s3.put_object(Bucket=bucket, Key=f"{prefix}/seed.txt" if prefix else
                  "seed.txt", Body=b"seed bytes\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    ns.mountpoints.append(mp)
    kept = [o for o in opts.split(",")
            if not o.startswith(("endpoint=", "passwd_file="))]
    new = kept + [f"endpoint={proxy.url}", "path_style",
                  f"passwd_file={passwd_file(tmp_path)}",
                  f"cache_dir={tmp_path}/cache"]
    src = f"{bucket}:/{prefix}" if prefix else bucket
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# test\n{src} {mp} {fstype} {','.join(new)} "
                     f"{dump} {fsck}\n")
    r = ns.run(["mount", "--fstab", str(fstab), str(mp)],
               env=clean_env(keys=False))
    assert r.returncode == 0, r.stderr
    fields = ns.mounted(mp)
    assert fields[2] == "fuse.pailfs", fields
    read_only = "ro" in kept
    assert ("ro" in fields[3].split(",")) == read_only, fields
    exercise(ns, mp, s3, bucket, prefix, read_only=read_only)
    r = ns.run(["umount", str(mp)])
    assert r.returncode == 0, r.stderr
    assert_unmounted_and_gone(ns, mp)


def test_mount_fuse3_direct_passes_systemd_options(proxy, s3, bucket,
                                                    tmp_path):
    """mount.fuse3 run directly (as systemd's mount units may) passes
    x-systemd.*, comment=systemd.* and _netdev on to pailfs, which must
    ignore them; pailfs is found through the caller's PATH (the build)."""
    s3.put_object(Bucket=bucket, Key="seed.txt", Body=b"seed bytes\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    helper = shutil.which("mount.fuse3") or "/usr/sbin/mount.fuse3"
    opts = (f"endpoint={proxy.url},path_style,cache_dir={tmp_path}/cache,"
            "_netdev,x-systemd.automount,x-systemd.mount-timeout=30,"
            "x-systemd.requires=network-online.target,comment=systemd.automount")
    env = clean_env(PATH=f"{PAILFS.parent}:{SYSTEMD_PATH}")
    try:
        r = subprocess.run([helper, bucket, str(mp), "-t", "pailfs", "-o",
                            opts], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        entry = mount_entry(mp)
        assert entry and entry[2] == "fuse.pailfs", entry
        assert (mp / "seed.txt").read_bytes() == b"seed bytes\n"
        (mp / "w.txt").write_bytes(b"via mount.fuse3")
        assert s3.get_object(Bucket=bucket, Key="w.txt")["Body"].read() == \
            b"via mount.fuse3"
    finally:
        if mount_entry(mp):
            u = subprocess.run(["fusermount3", "-u", str(mp)],
                               capture_output=True, text=True, timeout=30)
            assert u.returncode == 0, u.stderr
    assert wait_pids_gone(pailfs_pids(mp), 30)


# --------------------------------------------------------------------------
# contrib/pailfs@.service
# --------------------------------------------------------------------------

def parse_unit(path):
    """{section: [(key, value)]} of a unit file (continuation lines and
    comments handled as systemd.syntax(7) says)."""
    sections, cur, pending = {}, None, ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            cur = sections.setdefault(line.strip("[]"), [])
            continue
        k, _, v = line.partition("=")
        cur.append((k.strip(), v.strip()))
    return sections


def specifiers(text, instance):
    """%i, %I, %f, %n, %p, %% as systemd.unit(5) defines them (the unit
    uses %i; any other specifier it gains must be added here)."""
    unescaped = subprocess.run(
        ["systemd-escape", "--unescape", instance], capture_output=True,
        text=True, check=True).stdout.strip()
    path = subprocess.run(
        ["systemd-escape", "--unescape", "--path", instance],
        capture_output=True, text=True, check=True).stdout.strip()
    table = {"i": instance, "I": unescaped, "f": path, "p": "pailfs",
             "n": f"pailfs@{instance}.service", "%": "%"}

    def sub(m):
        assert m.group(1) in table, f"specifier %{m.group(1)} not handled"
        return table[m.group(1)]
    return re.sub(r"%(.)", sub, text)


def exec_argv(line, instance, env):
    """An Exec line as systemd.service(5) runs it: the prefix characters
    off; the rest split into words (quotes honoured); specifiers resolved
    in each word (so a %f with a space stays one word); then ${VAR} replaced
    inside a word and a lone $VAR split into words."""
    ignore = False
    while line[0] in "-@:+!":
        assert line[0] == "-", f"prefix {line[0]} not handled"
        ignore = True
        line = line[1:]
    argv = []
    for word in shlex.split(line):
        word = specifiers(word, instance)
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv += env.get(m.group(1), "").split()
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                           lambda m: env.get(m.group(1), ""), word))
    return argv, ignore


def env_file(path):
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip().strip('"')
    return env


def test_unit_file_is_what_the_issue_asks():
    u = parse_unit(UNIT)
    unit, svc, inst = dict(u["Unit"]), dict(u["Service"]), dict(u["Install"])
    assert "network-online.target" in unit["Wants"]
    assert "network-online.target" in unit["After"]
    assert svc["Restart"] == "on-failure"
    assert svc["Type"] == "forking"  # active only once the mount is live
    assert "%i" in svc["EnvironmentFile"]  # one mount per instance
    assert "%i" in svc["CacheDirectory"]  # and one block cache per instance
    assert inst["WantedBy"] == "remote-fs.target"


def test_systemd_analyze_verify(ns, tmp_path):
    """systemd-analyze verify on an instance of the template, with
    /usr/local/bin/pailfs present (inside the namespace)."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "pailfs@logs.service"
    shutil.copy(UNIT, unit)
    r = ns.run(["systemd-analyze", "verify", "--man=no", str(unit)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.strip() == "", r.stderr


def test_unit_exec_lines_mount_restart_and_stop(ns, proxy, s3, bucket,
                                                tmp_path):
    """ExecStartPre, ExecStart, ExecStop of the unit with %i and ${VAR}
    filled in as systemd would, for a conf file in a temporary /etc/pailfs:
    ExecStart returns once mounted (Type=forking) and uses the instance's
    own cache directory; after the daemon is killed (SIGKILL), ExecStartPre
    clears the dead mount so the restart mounts again; ExecStop unmounts
    and pailfs exits."""
    s3.put_object(Bucket=bucket, Key="svc/seed.txt", Body=b"seed bytes\n")
    mp = tmp_path / "srv" / "s3 data"  # a space: ${VAR} stays one word
    mp.mkdir(parents=True)
    ns.mountpoints.append(mp)
    instance = "team-logs.1"
    svc = parse_unit(UNIT)["Service"]
    get = lambda k: [v for key, v in svc if key == k]  # noqa: E731

    etc = tmp_path / "etc" / "pailfs"
    etc.mkdir(parents=True)
    (etc / f"{instance}.conf").write_text(
        f"PAILFS_SOURCE={bucket}:/svc\n"
        f"PAILFS_MOUNTPOINT={mp}\n"
        f"PAILFS_OPTIONS=allow_other,endpoint={proxy.url},path_style\n"
        f"AWS_ACCESS_KEY_ID={rig.ACCESS_KEY}\n"
        f"AWS_SECRET_ACCESS_KEY={rig.SECRET_KEY}\n")
    [conf] = get("EnvironmentFile")
    conf = specifiers(conf, instance)
    assert conf == f"/etc/pailfs/{instance}.conf"
    # What systemd gives a system service: no HOME, its own PATH, the
    # EnvironmentFile, and CACHE_DIRECTORY made for CacheDirectory=.
    cache = tmp_path / "var" / "cache" / specifiers(get("CacheDirectory")[0],
                                                    instance)
    cache.mkdir(parents=True, mode=0o700)
    env = {"PATH": SYSTEMD_PATH, "CACHE_DIRECTORY": str(cache),
           "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
           "AWS_CONFIG_FILE": "/nonexistent",
           **env_file(etc / conf.rpartition("/")[2])}

    def run_exec(key):
        results = []
        for line in get(key):
            argv, ignore = exec_argv(line, instance, env)
            r = ns.run(argv, env=env, timeout=90)
            results.append((argv, ignore, r))
            assert r.returncode == 0 or ignore, (argv, r.stderr)
        return results

    [(_, ignore, r)] = run_exec("ExecStartPre")
    assert ignore and r.returncode != 0  # nothing mounted yet
    [(argv, _, r)] = run_exec("ExecStart")
    assert argv[0] == "/usr/local/bin/pailfs" and argv[-1] == str(mp), argv
    assert ns.mounted(mp) is not None, "ExecStart returned before mounting"
    exercise(ns, mp, s3, bucket, "svc")
    assert any(cache.iterdir()), "the instance's cache directory is unused"

    # Restart=on-failure after the daemon died: the dead FUSE mount must not
    # stop the next ExecStart.
    [pid] = pailfs_pids(mp)
    os.kill(pid, signal.SIGKILL)
    assert wait_pids_gone([pid], 10)
    # The dead mount is still there.  A zombie leader counts as gone while
    # its other threads may still hold /dev/fuse: a stat sent before the
    # last of them exits is ended by the abort (ECONNABORTED, "Software
    # caused connection abort"); one sent after finds the connection down
    # (ENOTCONN, "Transport endpoint is not connected").
    r = ns.run(["stat", str(mp)])
    assert r.returncode != 0 and ("not connected" in r.stderr or
                                  "connection abort" in r.stderr), r
    [(_, _, r)] = run_exec("ExecStartPre")
    assert r.returncode == 0, r.stderr
    run_exec("ExecStart")
    r = ns.run(["sha256sum", f"{mp}/out/big.bin"], timeout=90)
    assert r.returncode == 0, r.stderr
    body = s3.get_object(Bucket=bucket, Key="svc/out/big.bin")["Body"].read()
    assert r.stdout.split()[0] == hashlib.sha256(body).hexdigest()

    [(argv, _, r)] = run_exec("ExecStop")
    assert argv == ["/usr/bin/fusermount3", "-u", str(mp)], argv
    assert_unmounted_and_gone(ns, mp)
    # ExecStop a second time (nothing mounted) fails, and the '-' lets it.
    [(_, ignore, r)] = run_exec("ExecStop")
    assert ignore and r.returncode != 0
