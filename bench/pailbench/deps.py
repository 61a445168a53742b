"""deps.py: install what the benchmark needs when it is missing, and build
pailfs when there is no binary yet (a fresh clone).

Debian packages come from apt-get; the rig's S3 server from npm ci (through
tests/rig.py). A tool that still cannot be had leaves its contender's row
saying "not installed" rather than stopping the run.
"""

import os
import subprocess

from .util import log, run, which

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# command -> Debian package
TOOLS = {
    "s3fs": "s3fs", "rclone": "rclone", "fio": "fio", "gnuplot": "gnuplot-nox",
    "igzip": "isal", "curl": "curl", "openssl": "openssl", "fusermount3": "fuse3",
    "gzip": "gzip", "node": "nodejs", "npm": "npm",
}


def _has_boto3():
    return subprocess.run(["/usr/bin/python3", "-c", "import boto3"],
                          capture_output=True).returncode == 0


def ensure_packages(install=True):
    missing = sorted({pkg for cmd, pkg in TOOLS.items() if not which(cmd)})
    if not _has_boto3():
        missing.append("python3-boto3")
    if not missing:
        return []
    if not install or os.geteuid() != 0 or not which("apt-get"):
        log(f"deps: missing {' '.join(missing)} (not installing)")
        return missing
    log(f"deps: apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
            timeout=900, env=env)
    if r.rc != 0:
        run(["apt-get", "update", "-qq"], timeout=600, env=env)
        r = run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                timeout=900, env=env)
    if r.rc != 0:
        log(f"deps: apt-get failed: {r.err.strip()[-300:]}")
    still = sorted({pkg for cmd, pkg in TOOLS.items() if not which(cmd)})
    if not _has_boto3():
        still.append("python3-boto3")
    return still


def ensure_s3_server():
    import rig  # tests/rig.py, on sys.path
    rig.ensure_node_modules()


def ensure_pailfs(binary, build=True):
    """Build pailfs as the README does (install-deps, configure out of the
    source tree in build/, make) when the binary is missing."""
    if os.access(binary, os.X_OK) or not build:
        return
    if binary != os.path.join(REPO, "build", "src", "pailfs"):
        return
    log("deps: no pailfs binary; building it in build/")
    steps = [
        (os.path.join(REPO, "contrib", "install-deps.sh"), REPO),
    ]
    if not os.path.exists(os.path.join(REPO, "configure")):
        steps.append(("autoreconf -fi", REPO))
    os.makedirs(os.path.join(REPO, "build"), exist_ok=True)
    steps.append(("test -f Makefile || ../configure -q", os.path.join(REPO, "build")))
    steps.append((f"make -j{os.cpu_count() or 2}", os.path.join(REPO, "build")))
    for cmd, cwd in steps:
        r = run(cmd, timeout=1800, cwd=cwd)
        if r.rc != 0:
            log(f"deps: `{cmd}` failed: {r.err.strip()[-400:]}")
            return
