"""Security: TLS certificate checks against a proxy that speaks TLS with a
self-signed certificate (refused by default, trusted with -o cafile=,
skipped loudly with -o no_verify_ssl), and secrets that never reach a log:
a debug-level run through every kind of request, retries and errors, with
a secret key and session token of their own, grepped afterwards."""

import gzip
import hashlib
import os
import urllib.parse

import pytest

import rig
from drive import clean_env
from mount import (Mount, assert_nothing_left, base_opts,  # noqa: F401
                   is_mounted, mounter, run_pailfs)


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (cert.pem, key.pem)."""
    return rig.self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_proxy(s3server, tls_cert, tmp_path):
    with rig.Proxy(s3server.url, tls=tls_cert,
                   log_path=tmp_path / "s3proxy-tls.log") as p:
        yield p


def test_self_signed_certificate_refused_by_default(tls_proxy, bucket,
                                                    tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    assert tls_proxy.url.startswith("https://")
    rc, _, err, took = run_pailfs(
        [*base_opts(tls_proxy.url), bucket, str(mp)], tmp_path=tmp_path)
    assert rc == 1, err
    assert took < 15, took
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"pailfs: TLS with endpoint {tls_proxy.url} "
                               "failed: "), err
    assert "cafile=" in err, err
    assert_nothing_left(str(mp))
    # refused during the handshake: no request ever reached the judge
    assert tls_proxy.stats()["requests_total"] == 0


def test_cafile_trusts_the_certificate(tls_proxy, tls_cert, s3, bucket,
                                       mounter):
    m = mounter(endpoint=tls_proxy, opts=[f"cafile={tls_cert[0]}"])
    data = os.urandom(3 * 1024 * 1024 + 17)
    with open(m.p("over-tls"), "wb") as f:
        f.write(data)
    assert s3.get_object(Bucket=bucket, Key="over-tls")["Body"].read() == data
    with open(m.p("over-tls"), "rb") as f:
        assert f.read() == data
    st = tls_proxy.stats()
    assert st["by_op"].get("PutObject", 0) >= 1
    assert st["sig_rejections"] == {}
    assert "verification is OFF" not in m.stderr_text()


def test_missing_cafile_is_a_clear_error(tls_proxy, bucket, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    rc, _, err, _ = run_pailfs(
        [*base_opts(tls_proxy.url, f"cafile={tmp_path}/no-such.pem"),
         bucket, str(mp)], tmp_path=tmp_path)
    assert rc == 1
    assert err.startswith(f"pailfs: TLS with endpoint {tls_proxy.url} "
                          "failed: "), err
    assert "no-such.pem" in err, err
    assert_nothing_left(str(mp))


def test_no_verify_ssl_works_with_a_loud_warning(tls_proxy, s3, bucket,
                                                 mounter):
    m = mounter(endpoint=tls_proxy, opts=["no_verify_ssl"])
    with open(m.p("unverified"), "wb") as f:
        f.write(b"x" * 1000)
    assert s3.get_object(Bucket=bucket, Key="unverified")["Body"].read() == \
        b"x" * 1000
    assert "TLS certificate verification is OFF (no_verify_ssl)" in \
        m.stderr_text()


# --------------------------------------------------------------------------
# Secrets never reach a log
# --------------------------------------------------------------------------

SECRET_AK = "AKIDLOGTESTPAILFS01"
SECRET_SK = "sEcReT+log/test=Never9Printed4Anywhere"
SECRET_TOKEN = "FwoGZXIvYXdzE+session/token=Xyz123NeverLogged"


def forms(secret):
    """The ways a secret could be written: as is, URL-encoded, lower case."""
    return {secret, urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret), secret.lower()}


@pytest.fixture
def own_keys_rig(tmp_path):
    """A server and judge that know only SECRET_AK/SECRET_SK, so that the
    secret differs from the access key id (the rig's own pair is equal)."""
    with rig.S3Server(tmp_path / "srv", buckets=["secrets"],
                      keys=[(SECRET_AK, SECRET_SK)]) as srv, \
            rig.Proxy(srv.url, keys=[(SECRET_AK, SECRET_SK)],
                      log_path=tmp_path / "proxy.log") as proxy:
        yield srv, proxy


def test_debug_log_of_a_full_run_holds_no_secret(own_keys_rig, tmp_path):
    srv, proxy = own_keys_rig
    env = clean_env(keys=False, AWS_ACCESS_KEY_ID=SECRET_AK,
                    AWS_SECRET_ACCESS_KEY=SECRET_SK,
                    AWS_SESSION_TOKEN=SECRET_TOKEN)
    s3 = rig.boto3_client(srv.url, access_key=SECRET_AK,
                          secret_key=SECRET_SK)
    s3.put_object(Bucket="secrets", Key="log.json",
                  Body=gzip.compress(b'{"a": 1}\n' * 50000),
                  ContentEncoding="gzip")
    m = Mount(proxy, "secrets", tmp_path / "mnt", env=env, log_dir=tmp_path,
              log_level="debug", opts=["part_size=5M", "retries=3"])
    try:
        big = os.urandom(12 * 1024 * 1024 + 5)
        with open(m.p("big"), "wb") as f:   # multipart: create, parts, complete
            f.write(big)
        with open(m.p("small"), "wb") as f:  # PutObject
            f.write(b"small")
        os.makedirs(m.p("d"))
        os.rename(m.p("small"), m.p("d", "moved"))  # copy + delete
        os.chmod(m.p("d", "moved"), 0o600)
        with open(m.p("big"), "rb") as f:
            assert hashlib.sha256(f.read()).digest() == \
                hashlib.sha256(big).digest()
        with open(m.p("log.json"), "rb") as f:  # gzip view via HEAD + GET
            assert f.read() == b'{"a": 1}\n' * 50000
        # retries and an error, which log at warn/error with details
        proxy.config(p503=0.3, seed=7)
        with open(m.p("big"), "r+b") as f:  # staged edit with part copies
            f.seek(6 * 1024 * 1024)
            f.write(b"edit")
        proxy.config(p503=0.0, fail_next=[
            {"status": 403, "code": "AccessDenied", "op": "DeleteObject"}])
        with pytest.raises(PermissionError):
            os.unlink(m.p("d", "moved"))
        assert sorted(os.listdir(m.p("d"))) == ["moved"]
    finally:
        m.unmount()
    log = m.stderr_text()
    stats = proxy.stats()
    assert stats["sig_rejections"] == {}
    assert stats["faults"].get("503", 0) > 0  # the retries did happen
    # the log is a real debug log of this run: requests, retries, the 403
    assert "UploadPart" in log and "CompleteMultipartUpload" in log
    assert "DeleteObject" in log and "AccessDenied" in log
    assert "retry" in log.lower()
    for secret in (SECRET_SK, SECRET_TOKEN):
        for form in forms(secret):
            assert form not in log, f"a secret reached the log as {form!r}"
    for marker in ("Signature=", "X-Amz-Signature", "x-amz-security-token:",
                   "Authorization:"):
        assert marker not in log, marker
    assert not is_mounted(m.path)
