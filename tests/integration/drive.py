"""drive.py: run tests/s3drive (the test-only command line over src/s3).

Every run gets a clean environment: no AWS_* variable from the machine, no
shared config files, instance metadata off, and the rig's keys in the
environment unless the test says otherwise. That way a test sees exactly
the credential sources it sets up and nothing of the machine it runs on.
"""

import os
import subprocess
from pathlib import Path

import rig

ROOT = Path(__file__).resolve().parent.parent.parent
BUILD = Path(os.environ.get("PAILFS_BUILD_DIR", ROOT))
S3DRIVE = BUILD / "tests" / "s3drive"


def clean_env(keys=True, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent/credentials"
    env["AWS_CONFIG_FILE"] = "/nonexistent/config"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    if keys:
        env["AWS_ACCESS_KEY_ID"] = rig.ACCESS_KEY
        env["AWS_SECRET_ACCESS_KEY"] = rig.SECRET_KEY
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def drive(endpoint, bucket, *args, env=None, opts=(), input=None, timeout=300,
          check=False):
    """Run s3drive; returns CompletedProcess (text mode)."""
    argv = [str(S3DRIVE), "--endpoint", endpoint, "--bucket", bucket,
            "--retry-base-ms", "20", *opts, *args]
    r = subprocess.run(argv, env=env if env is not None else clean_env(),
                       input=input, capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"s3drive {args} failed: {r.stderr}")
    return r


def put_file(tmp_path, name, data):
    """Write data to tmp_path/name (a local file for s3drive to upload);
    returns its path as a str."""
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def kv(stdout):
    """key=value lines to a dict."""
    out = {}
    for line in stdout.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out
