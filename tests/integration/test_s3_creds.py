"""The credential chain, end to end: each source is set up on its own (the
environment is scrubbed by drive.clean_env), the client resolves it, says
where its credentials came from, and signs requests the judging proxy
accepts.  Web identity (STS), container and IMDSv2 endpoints are small local
stand-ins below that speak those services' protocols and count requests."""

import datetime
import json
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import rig
from drive import clean_env, drive, kv

TOKEN = "container-auth-token-123"
IMDS_TOKEN = "imds-session-token-abc"


def iso(delta_s):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=delta_s)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class StandIn:
    """One local HTTP server playing STS, the container endpoint and IMDS."""

    def __init__(self):
        self.hits = []              # (method, path) of every request
        self.expirations = []       # Expiration offsets to hand out, in order
        self.sts_error = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, status, body, ctype="application/json"):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def creds_json(self):
                n = len([h for h in outer.hits if h[2] == "creds"])
                exp = outer.expirations[min(n - 1, len(outer.expirations) - 1)] \
                    if outer.expirations else 3600
                return json.dumps({"Code": "Success", "AccessKeyId": rig.ACCESS_KEY,
                                   "SecretAccessKey": rig.SECRET_KEY,
                                   "Token": f"session-{n}", "Expiration": iso(exp)})

            def do_PUT(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                outer.hits.append(("PUT", self.path, "token"))
                if self.path == "/latest/api/token" and \
                        self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self.reply(200, IMDS_TOKEN, "text/plain")
                self.reply(400, "bad token request", "text/plain")

            def do_GET(self):
                if self.path.startswith("/latest/meta-data/iam/security-credentials/"):
                    if self.headers.get("X-aws-ec2-metadata-token") != IMDS_TOKEN:
                        outer.hits.append(("GET", self.path, "refused"))
                        return self.reply(401, "", "text/plain")
                    role = self.path.rsplit("/", 1)[1]
                    if not role:
                        outer.hits.append(("GET", self.path, "role"))
                        return self.reply(200, "pailfs-role\n", "text/plain")
                    outer.hits.append(("GET", self.path, "creds"))
                    if role != "pailfs-role":
                        return self.reply(404, "", "text/plain")
                    return self.reply(200, self.creds_json())
                if self.path == "/container-creds":
                    if self.headers.get("Authorization") != TOKEN:
                        outer.hits.append(("GET", self.path, "refused"))
                        return self.reply(401, '{"message":"unauthorized"}')
                    outer.hits.append(("GET", self.path, "creds"))
                    return self.reply(200, self.creds_json())
                outer.hits.append(("GET", self.path, "unknown"))
                self.reply(404, "{}")

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(n).decode())
                outer.hits.append(("POST", self.path, "creds"))
                outer.last_form = form
                if outer.sts_error or form.get("WebIdentityToken") != ["the-jwt"]:
                    return self.reply(400, "<ErrorResponse><Error><Type>Sender</Type>"
                                      "<Code>InvalidIdentityToken</Code><Message>token "
                                      "rejected</Message></Error></ErrorResponse>", "text/xml")
                n_creds = len([h for h in outer.hits if h[2] == "creds"])
                exp = outer.expirations[min(n_creds - 1, len(outer.expirations) - 1)] \
                    if outer.expirations else 3600
                xml = ("<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/"
                       "doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials>"
                       f"<AccessKeyId>{rig.ACCESS_KEY}</AccessKeyId>"
                       f"<SecretAccessKey>{rig.SECRET_KEY}</SecretAccessKey>"
                       "<SessionToken>sts-session</SessionToken>"
                       f"<Expiration>{iso(exp)}</Expiration></Credentials>"
                       "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>")
                self.reply(200, xml, "text/xml")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def count(self, kind):
        return len([h for h in self.hits if h[2] == kind])


@pytest.fixture
def standin():
    s = StandIn()
    yield s
    s.close()


def no_keys(**extra):
    return clean_env(keys=False, **extra)


def whoami(proxy, bucket, env, opts=()):
    r = drive(proxy.url, bucket, "whoami", env=env, opts=opts)
    assert r.returncode == 0, r.stderr
    return kv(r.stdout)


def works(proxy, bucket, env, opts=()):
    """A signed request that the judging proxy accepts and the server answers."""
    r = drive(proxy.url, bucket, "head-bucket", env=env, opts=opts)
    assert r.returncode == 0, r.stderr
    return r


def test_env(proxy, bucket):
    env = clean_env()
    assert whoami(proxy, bucket, env)["source"] == "env"
    assert whoami(proxy, bucket, env)["access_key"] == rig.ACCESS_KEY
    works(proxy, bucket, env)


def test_env_session_token_is_signed(proxy, bucket):
    works(proxy, bucket, clean_env(AWS_SESSION_TOKEN="tok-xyz"))
    assert proxy.stats()["requests_total"] == 1


def passwd(tmp_path, text, mode=0o600):
    p = tmp_path / "passwd"
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


def test_passwd_file_wins_over_env(proxy, bucket, tmp_path):
    f = passwd(tmp_path, f"{rig.ACCESS_KEY}:{rig.SECRET_KEY}\n")
    env = clean_env(AWS_ACCESS_KEY_ID="ENVKEY", AWS_SECRET_ACCESS_KEY="ENVSECRET")
    info = whoami(proxy, bucket, env, opts=["--passwd-file", f])
    assert info["source"] == "passwd_file" and info["access_key"] == rig.ACCESS_KEY
    works(proxy, bucket, env, opts=["--passwd-file", f])


def test_passwd_file_bucket_line(proxy, bucket, tmp_path):
    f = passwd(tmp_path, f"WRONG:WRONG\n{bucket}:{rig.ACCESS_KEY}:{rig.SECRET_KEY}\n")
    assert whoami(proxy, bucket, no_keys(), opts=["--passwd-file", f])["access_key"] == \
        rig.ACCESS_KEY
    works(proxy, bucket, no_keys(), opts=["--passwd-file", f])


def test_passwd_file_readable_by_others_refused(proxy, bucket, tmp_path):
    f = passwd(tmp_path, f"{rig.ACCESS_KEY}:{rig.SECRET_KEY}\n", mode=0o644)
    r = drive(proxy.url, bucket, "whoami", env=no_keys(), opts=["--passwd-file", f])
    assert r.returncode == 1
    assert "readable by group or others" in r.stderr and "chmod 600" in r.stderr
    assert rig.SECRET_KEY + "\n" not in r.stderr
    assert proxy.stats()["requests_total"] == 0


def shared_files(tmp_path, credentials="", config=""):
    c = tmp_path / "credentials"
    c.write_text(credentials)
    g = tmp_path / "config"
    g.write_text(config)
    return {"AWS_SHARED_CREDENTIALS_FILE": str(c), "AWS_CONFIG_FILE": str(g)}


def test_profile_from_env_and_option(proxy, bucket, tmp_path):
    files = shared_files(tmp_path, credentials=(
        "[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = nope\n"
        f"[work]\naws_access_key_id = {rig.ACCESS_KEY}\n"
        f"aws_secret_access_key = {rig.SECRET_KEY}\n"))
    env = no_keys(AWS_PROFILE="work", **files)
    assert whoami(proxy, bucket, env)["source"] == "profile:work"
    works(proxy, bucket, env)
    env = no_keys(**files)
    assert whoami(proxy, bucket, env)["access_key"] == "DEFAULTKEY"
    assert whoami(proxy, bucket, env, opts=["--profile", "work"])["source"] == "profile:work"
    works(proxy, bucket, env, opts=["--profile", "work"])
    # the default profile's secret is wrong: refused by the judge, and the
    # message names the key id but never the secret
    r = drive(proxy.url, bucket, "head-bucket", env=env)
    assert r.returncode == 1 and "errno=EACCES" in r.stderr
    assert "nope" not in r.stderr


def test_profile_in_config_file_and_region(proxy, bucket, tmp_path):
    files = shared_files(tmp_path, config=(
        "[default]\nregion = eu-west-1\n"
        f"[profile cfg]\nregion = us-east-1\naws_access_key_id = {rig.ACCESS_KEY}\n"
        f"aws_secret_access_key = {rig.SECRET_KEY}\n"))
    info = whoami(proxy, bucket, no_keys(AWS_PROFILE="cfg", **files))
    assert info["source"] == "profile:cfg" and info["region"] == "us-east-1"
    works(proxy, bucket, no_keys(AWS_PROFILE="cfg", **files))
    # AWS_REGION wins over the profile's region
    info = whoami(proxy, bucket, no_keys(AWS_PROFILE="cfg", AWS_REGION="ca-central-1", **files))
    assert info["region"] == "ca-central-1"


def test_env_wins_over_profile(proxy, bucket, tmp_path):
    files = shared_files(tmp_path, credentials="[default]\naws_access_key_id=P\n"
                                               "aws_secret_access_key=P\n")
    assert whoami(proxy, bucket, clean_env(**files))["source"] == "env"


def test_missing_profile_named(proxy, bucket, tmp_path):
    files = shared_files(tmp_path, credentials="[default]\naws_access_key_id=a\n"
                                               "aws_secret_access_key=b\n")
    r = drive(proxy.url, bucket, "whoami", env=no_keys(**files), opts=["--profile", "ghost"])
    assert r.returncode == 1 and "profile ghost has no credentials" in r.stderr


def test_nothing_configured(proxy, bucket):
    r = drive(proxy.url, bucket, "whoami", env=no_keys())
    assert r.returncode == 1
    assert "no credentials found" in r.stderr and "instance metadata is disabled" in r.stderr


def web_identity_env(tmp_path, standin, token="the-jwt"):
    t = tmp_path / "token"
    t.write_text(token + "\n")
    return no_keys(AWS_WEB_IDENTITY_TOKEN_FILE=str(t),
                   AWS_ROLE_ARN="arn:aws:iam::123456789012:role/pailfs",
                   AWS_ENDPOINT_URL_STS=standin.url + "/")


def test_web_identity(proxy, bucket, tmp_path, standin):
    env = web_identity_env(tmp_path, standin)
    info = whoami(proxy, bucket, env)
    assert info["source"] == "web-identity" and info["access_key"] == rig.ACCESS_KEY
    assert standin.last_form["Action"] == ["AssumeRoleWithWebIdentity"]
    assert standin.last_form["RoleArn"] == ["arn:aws:iam::123456789012:role/pailfs"]
    works(proxy, bucket, env)


def test_web_identity_from_profile(proxy, bucket, tmp_path, standin):
    t = tmp_path / "token"
    t.write_text("the-jwt")
    files = shared_files(tmp_path, config=(
        "[profile wi]\nrole_arn = arn:aws:iam::1:role/r\n"
        f"web_identity_token_file = {t}\n"))
    env = no_keys(AWS_PROFILE="wi", AWS_ENDPOINT_URL_STS=standin.url + "/", **files)
    assert whoami(proxy, bucket, env)["source"] == "profile-web-identity:wi"
    works(proxy, bucket, env)


def test_web_identity_refused(proxy, bucket, tmp_path, standin):
    env = web_identity_env(tmp_path, standin, token="forged")
    r = drive(proxy.url, bucket, "whoami", env=env)
    assert r.returncode == 1
    assert "InvalidIdentityToken" in r.stderr and "arn:aws:iam::123456789012:role/pailfs" in \
        r.stderr


def test_container_credentials(proxy, bucket, tmp_path, standin):
    env = no_keys(AWS_CONTAINER_CREDENTIALS_FULL_URI=standin.url + "/container-creds",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN=TOKEN)
    assert whoami(proxy, bucket, env)["source"] == "container"
    works(proxy, bucket, env)
    tf = tmp_path / "auth"
    tf.write_text(TOKEN + "\n")
    env = no_keys(AWS_CONTAINER_CREDENTIALS_FULL_URI=standin.url + "/container-creds",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN="ignored-when-file-set",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(tf))
    works(proxy, bucket, env)


def test_container_wrong_token(proxy, bucket, standin):
    env = no_keys(AWS_CONTAINER_CREDENTIALS_FULL_URI=standin.url + "/container-creds",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN="wrong")
    r = drive(proxy.url, bucket, "whoami", env=env)
    assert r.returncode == 1 and "container credentials" in r.stderr and "401" in r.stderr
    assert standin.count("refused") == 1


def test_imds_v2(proxy, bucket, standin):
    env = no_keys(AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=standin.url)
    info = whoami(proxy, bucket, env)
    assert info["source"] == "imds" and info["access_key"] == rig.ACCESS_KEY
    # the session token came first, and every metadata GET carried it
    assert standin.hits[0][:2] == ("PUT", "/latest/api/token")
    assert standin.count("refused") == 0
    assert standin.count("role") == 1 and standin.count("creds") == 1
    works(proxy, bucket, env)


def test_imds_disabled(proxy, bucket, standin):
    env = no_keys(AWS_EC2_METADATA_DISABLED="true", AWS_EC2_METADATA_SERVICE_ENDPOINT=standin.url)
    r = drive(proxy.url, bucket, "whoami", env=env)
    assert r.returncode == 1 and standin.hits == []


def test_expiring_credentials_refreshed_before_use(proxy, bucket, standin):
    """Credentials 60 s from expiry are refreshed before the next request is
    signed, and the request still succeeds."""
    standin.expirations = [60, 3600]
    env = no_keys(AWS_CONTAINER_CREDENTIALS_FULL_URI=standin.url + "/container-creds",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN=TOKEN)
    works(proxy, bucket, env)
    assert standin.count("creds") == 2


def test_expired_credentials_refreshed(proxy, bucket, standin):
    standin.expirations = [-10, 3600]
    env = no_keys(AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=standin.url)
    works(proxy, bucket, env)
    assert standin.count("creds") == 2


def test_fresh_credentials_not_refetched(proxy, bucket, standin):
    standin.expirations = [3600]
    env = no_keys(AWS_CONTAINER_CREDENTIALS_FULL_URI=standin.url + "/container-creds",
                  AWS_CONTAINER_AUTHORIZATION_TOKEN=TOKEN)
    works(proxy, bucket, env)
    assert standin.count("creds") == 1
