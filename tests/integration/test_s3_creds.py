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
        self.token = None           # the Token to hand out instead of session-N
        self.placement_region = "eu-north-1"
        self.authorizations = []    # Authorization headers of AssumeRole calls
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
                                   "Token": outer.token or f"session-{n}",
                                   "Expiration": iso(exp)})

            def do_PUT(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                outer.hits.append(("PUT", self.path, "token"))
                if self.path == "/latest/api/token" and \
                        self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    return self.reply(200, IMDS_TOKEN, "text/plain")
                self.reply(400, "bad token request", "text/plain")

            def do_GET(self):
                if self.path == "/latest/meta-data/placement/region":
                    if self.headers.get("X-aws-ec2-metadata-token") != IMDS_TOKEN:
                        outer.hits.append(("GET", self.path, "refused"))
                        return self.reply(401, "", "text/plain")
                    outer.hits.append(("GET", self.path, "region"))
                    return self.reply(200, outer.placement_region, "text/plain")
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
                action = form.get("Action", [""])[0]
                if action == "AssumeRole":
                    outer.authorizations.append(self.headers.get("Authorization") or "")
                if outer.sts_error or (action != "AssumeRole" and
                                       form.get("WebIdentityToken") != ["the-jwt"]):
                    return self.reply(400, "<ErrorResponse><Error><Type>Sender</Type>"
                                      "<Code>InvalidIdentityToken</Code><Message>token "
                                      "rejected</Message></Error></ErrorResponse>", "text/xml")
                n_creds = len([h for h in outer.hits if h[2] == "creds"])
                exp = outer.expirations[min(n_creds - 1, len(outer.expirations) - 1)] \
                    if outer.expirations else 3600
                xml = (f"<{action}Response xmlns=\"https://sts.amazonaws.com/"
                       f"doc/2011-06-15/\"><{action}Result><Credentials>"
                       f"<AccessKeyId>{rig.ACCESS_KEY}</AccessKeyId>"
                       f"<SecretAccessKey>{rig.SECRET_KEY}</SecretAccessKey>"
                       "<SessionToken>sts-session</SessionToken>"
                       f"<Expiration>{iso(exp)}</Expiration></Credentials>"
                       f"</{action}Result></{action}Response>")
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


@pytest.mark.parametrize("where", ["container", "env"])
def test_credentials_with_a_control_character_are_never_sent(proxy, bucket, standin, where):
    """A token or key holding CR LF would split a request header (a
    header of the answerer's choosing): refused, whatever the source,
    and no request carries it."""
    evil = "tok\r\nX-Injected: 1"
    if where == "container":
        standin.token = evil
        env = no_keys(AWS_CONTAINER_CREDENTIALS_FULL_URI=standin.url + "/container-creds",
                      AWS_CONTAINER_AUTHORIZATION_TOKEN=TOKEN)
    else:
        env = clean_env(AWS_SESSION_TOKEN=evil)
    proxy.reset()
    r = drive(proxy.url, bucket, "whoami", env=env)
    assert r.returncode == 1, r.stdout
    assert f"the credentials from {where} hold a control character" in r.stderr, r.stderr
    assert "X-Injected" not in r.stderr
    assert proxy.stats()["requests_total"] == 0


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


# ---- credential_process (issue 20 item 8) ---------------------------------

PROCESS_SCRIPT = r'''
import datetime, json, pathlib, sys
d = pathlib.Path(__file__).parent
runs = d / "runs"
n = len(runs.read_text().splitlines()) if runs.exists() else 0
with open(runs, "a") as f:
    f.write("run\n")
mode = (d / "mode").read_text().strip()
exps = [int(x) for x in (d / "expirations").read_text().split(",")]
exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
    seconds=exps[min(n, len(exps) - 1)])
creds = {"Version": 1, "AccessKeyId": sys.argv[1], "SecretAccessKey": sys.argv[2],
         "SessionToken": "process-token", "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}
if mode == "fail":
    sys.stderr.write("get-creds: not logged in\n")
    sys.exit(3)
if mode == "garbage":
    creds = "I am not JSON"
if mode == "nosecret":
    del creds["SecretAccessKey"]
if mode == "version2":
    creds["Version"] = 2
if mode == "huge":
    sys.stdout.write(" " * (1 << 20))
print(creds if mode == "garbage" else json.dumps(creds))
'''


def process_profile(tmp_path, mode="ok", expirations="3600"):
    """A profile `p` whose credential_process is a script in a directory
    whose name holds a space (the command's quoting is tested with it)."""
    d = tmp_path / "dir with space"
    d.mkdir(exist_ok=True)
    (d / "get-creds.py").write_text(PROCESS_SCRIPT)
    (d / "mode").write_text(mode)
    (d / "expirations").write_text(expirations)
    # longer than 200 bytes, as real commands are: the whole line is read
    cmd = f"/usr/bin/python3 '{d}/get-creds.py' \"{rig.ACCESS_KEY}\" {rig.SECRET_KEY} " + \
        "--unused-padding-" + "x" * 200
    files = shared_files(tmp_path, config=f"[profile p]\ncredential_process = {cmd}\n")
    return d, no_keys(AWS_PROFILE="p", **files)


def runs(d):
    p = d / "runs"
    return len(p.read_text().splitlines()) if p.exists() else 0


def test_credential_process(proxy, bucket, tmp_path):
    d, env = process_profile(tmp_path)
    info = whoami(proxy, bucket, env)
    assert info["source"] == "profile-process:p" and info["access_key"] == rig.ACCESS_KEY
    works(proxy, bucket, env)
    assert runs(d) == 2  # once per s3drive run
    rec = proxy.stats()["recent"][-1]
    assert dict((k.lower(), v) for k, v in rec["headers"])["x-amz-security-token"] == \
        "process-token"


def test_credential_process_refreshed_before_expiry(proxy, bucket, tmp_path):
    """Credentials 60 s from expiry are asked for again before the first
    request is signed; the fresh ones (an hour) are not."""
    d, env = process_profile(tmp_path, expirations="60,3600")
    works(proxy, bucket, env)
    assert runs(d) == 2
    works(proxy, bucket, env)
    assert runs(d) == 3  # the second run's first answer was an hour: kept


@pytest.mark.parametrize("mode,says", [
    ("fail", "failed (exit status 3)"),
    ("garbage", "not a JSON object"),
    ("nosecret", "no SecretAccessKey"),
    ("version2", "Version"),
    ("huge", "printed more than 64 KiB"),
])
def test_credential_process_refused(proxy, bucket, tmp_path, mode, says):
    d, env = process_profile(tmp_path, mode=mode)
    r = drive(proxy.url, bucket, "whoami", env=env)
    assert r.returncode == 1 and says in r.stderr, r.stderr
    assert "credential_process" in r.stderr
    assert "process-token" not in r.stderr  # nothing it printed is repeated
    assert proxy.stats()["requests_total"] == 0


def test_credential_process_missing_program(proxy, bucket, tmp_path):
    files = shared_files(tmp_path, config="[profile p]\n"
                         "credential_process = /nonexistent/get-creds --flag\n")
    r = drive(proxy.url, bucket, "whoami", env=no_keys(AWS_PROFILE="p", **files))
    assert r.returncode == 1
    assert "cannot run /nonexistent/get-creds" in r.stderr, r.stderr


def test_credential_process_is_not_a_shell(proxy, bucket, tmp_path):
    """Words are split as a shell would, but nothing is expanded or run by
    a shell: `&&`, `|` and `$HOME` reach the program as they are.  (A ` ;`
    starts a comment in the shared files, as the INI parser reads them.)"""
    out = tmp_path / "argv"
    script = tmp_path / "show.py"
    script.write_text("import json, sys\n"
                      f"open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                      f"print(json.dumps({{'Version': 1, 'AccessKeyId': {rig.ACCESS_KEY!r}, "
                      f"'SecretAccessKey': {rig.SECRET_KEY!r}}}))\n")
    files = shared_files(tmp_path, config="[profile p]\ncredential_process = "
                         f"/usr/bin/python3 {script} $HOME && touch {tmp_path}/pwned|x\n")
    info = whoami(proxy, bucket, no_keys(AWS_PROFILE="p", **files))
    assert info["source"] == "profile-process:p"
    assert json.loads(out.read_text()) == ["$HOME", "&&", "touch", f"{tmp_path}/pwned|x"]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned|x").exists()


# ---- role_arn + source_profile (issue 20 item 8) ----------------------------

SOURCE_KEY, SOURCE_SECRET = "AKIDSOURCEPROFILE", "source/secret+key"


def role_config(extra=""):
    return ("[profile src]\n"
            f"aws_access_key_id = {SOURCE_KEY}\naws_secret_access_key = {SOURCE_SECRET}\n"
            "[profile r]\nrole_arn = arn:aws:iam::123456789012:role/pailfs-reader\n"
            "source_profile = src\nrole_session_name = my-session\n"
            "external_id = the-external-id\nduration_seconds = 900\n" + extra)


def test_assume_role_with_source_profile(proxy, bucket, tmp_path, standin):
    files = shared_files(tmp_path, config=role_config())
    env = no_keys(AWS_PROFILE="r", AWS_ENDPOINT_URL_STS=standin.url + "/", **files)
    info = whoami(proxy, bucket, env)
    assert info["source"] == "profile-assume-role:r" and info["access_key"] == rig.ACCESS_KEY
    form = standin.last_form
    assert form["Action"] == ["AssumeRole"]
    assert form["RoleArn"] == ["arn:aws:iam::123456789012:role/pailfs-reader"]
    assert form["RoleSessionName"] == ["my-session"]
    assert form["ExternalId"] == ["the-external-id"]
    assert form["DurationSeconds"] == ["900"]
    # signed with the source profile's key, for STS in the signing region
    assert standin.authorizations[-1].startswith(
        f"AWS4-HMAC-SHA256 Credential={SOURCE_KEY}/")
    assert "/us-east-1/sts/aws4_request" in standin.authorizations[-1]
    works(proxy, bucket, env)


def test_assumed_role_refreshed_before_expiry(proxy, bucket, tmp_path, standin):
    standin.expirations = [60, 3600]
    files = shared_files(tmp_path, config=role_config())
    env = no_keys(AWS_PROFILE="r", AWS_ENDPOINT_URL_STS=standin.url + "/", **files)
    works(proxy, bucket, env)
    assert standin.count("creds") == 2
    assert all(a.startswith(f"AWS4-HMAC-SHA256 Credential={SOURCE_KEY}/")
               for a in standin.authorizations)


def test_assume_role_chain(proxy, bucket, tmp_path, standin):
    """r2's source is r, itself a role: r is assumed first, and r2 with
    the credentials (and session token) r gave."""
    files = shared_files(tmp_path, config=role_config(
        "[profile r2]\nrole_arn = arn:aws:iam::123456789012:role/second\nsource_profile = r\n"))
    env = no_keys(AWS_PROFILE="r2", AWS_ENDPOINT_URL_STS=standin.url + "/", **files)
    assert whoami(proxy, bucket, env)["source"] == "profile-assume-role:r2"
    assert len(standin.authorizations) == 2
    assert standin.authorizations[0].startswith(f"AWS4-HMAC-SHA256 Credential={SOURCE_KEY}/")
    assert standin.authorizations[1].startswith(
        f"AWS4-HMAC-SHA256 Credential={rig.ACCESS_KEY}/")
    assert "x-amz-security-token" in standin.authorizations[1]
    assert standin.last_form["RoleArn"] == ["arn:aws:iam::123456789012:role/second"]


@pytest.mark.parametrize("config,says", [
    ("[profile r]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = r2\n"
     "[profile r2]\nrole_arn = arn:aws:iam::1:role/y\nsource_profile = r\n", "(a loop?)"),
    ("[profile r]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = ghost\n",
     "its source_profile ghost has no credentials"),
    ("[profile r]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = r\n",
     "is its own source_profile but has no keys"),
    ("[profile r]\nrole_arn = arn:aws:iam::1:role/x\n", "has role_arn but no source_profile"),
    ("[profile r]\nrole_arn = arn:aws:iam::1:role/x\ncredential_source = Ec2InstanceMetadata\n",
     "credential_source is not supported"),
    (role_config("mfa_serial = arn:aws:iam::1:mfa/me\n"), "needs an MFA code"),
    (role_config().replace("duration_seconds = 900", "duration_seconds = 60"),
     "duration_seconds must be a number from 900 to 43200"),
])
def test_assume_role_refused(proxy, bucket, tmp_path, standin, config, says):
    files = shared_files(tmp_path, config=config)
    env = no_keys(AWS_PROFILE="r", AWS_ENDPOINT_URL_STS=standin.url + "/", **files)
    r = drive(proxy.url, bucket, "whoami", env=env)
    assert r.returncode == 1 and says in r.stderr, r.stderr
    assert SOURCE_SECRET not in r.stderr
    assert proxy.stats()["requests_total"] == 0


def test_assume_role_refused_by_sts(proxy, bucket, tmp_path, standin):
    standin.sts_error = True
    files = shared_files(tmp_path, config=role_config())
    env = no_keys(AWS_PROFILE="r", AWS_ENDPOINT_URL_STS=standin.url + "/", **files)
    r = drive(proxy.url, bucket, "whoami", env=env)
    assert r.returncode == 1
    assert "assume role" in r.stderr and "arn:aws:iam::123456789012:role/pailfs-reader" in \
        r.stderr and "HTTP 400" in r.stderr, r.stderr


# ---- AssumeRole against moto's STS ------------------------------------------

MOTO = "/root/.pyenv/shims/moto_server"


@pytest.fixture
def moto_sts(tmp_path):
    """moto_server (an independent implementation of STS) on a free port,
    recording the requests it receives (its /moto-api/recorder)."""
    if not os.path.exists(MOTO):
        pytest.skip(f"moto_server is not installed ({MOTO})")
    import socket
    import subprocess
    import time
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "moto.log", "wb")
    # the recorder appends to a file, in the working directory unless told
    env = dict(os.environ, MOTO_RECORDER_FILEPATH=str(tmp_path / "moto-recording"))
    proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            cwd=str(tmp_path))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("moto_server did not start: " +
                                (tmp_path / "moto.log").read_text()[-2000:])
                time.sleep(0.2)
        urllib.request.urlopen(urllib.request.Request(
            url + "/moto-api/recorder/start-recording", method="POST")).read()

        def recorded():
            data = urllib.request.urlopen(
                url + "/moto-api/recorder/download-recording").read().decode()
            return [json.loads(line) for line in data.splitlines() if line.strip()]
        yield url, recorded
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def sigv4_valid(rec, access_key, secret_key, region, service):
    """Recompute the SigV4 signature of a recorded request with botocore."""
    import base64
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    headers = rec["headers"]
    auth = headers["Authorization"]
    cred = auth.split("Credential=")[1].split(",")[0]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    body = base64.b64decode(rec["body"]) if rec.get("body_encoded") else rec["body"].encode()
    req = AWSRequest(method=rec["method"], url=rec["url"], data=body,
                     headers={k: v for k, v in headers.items() if k.lower() in signed})
    req.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(access_key, secret_key), service, region)
    canonical = signer.canonical_request(req)
    want = signer.signature(signer.string_to_sign(req, canonical), req)
    return cred.startswith(access_key + "/") and auth.endswith("Signature=" + want)


def test_assume_role_against_moto(proxy, bucket, tmp_path, moto_sts):
    """pailfs asks moto's STS for the role, signing with the source
    profile's keys (checked here by recomputing the signature), and signs
    its S3 requests with the temporary key moto gave it.  The rig's proxy
    knows only its own keys, so it refuses that key (InvalidAccessKeyId):
    the key it refused is the one pailfs says it got from the assumed
    role, and no configuration holds it, so only moto can have made it."""
    from mount import run_pailfs
    url, recorded = moto_sts
    files = shared_files(tmp_path, config=role_config())
    env = no_keys(AWS_PROFILE="r", AWS_ENDPOINT_URL_STS=url + "/", **files)
    mp = tmp_path / "mnt"
    mp.mkdir()
    rc, _, err, _ = run_pailfs(["-o", f"endpoint={proxy.url},path_style,cache_dir={tmp_path}/c",
                                bucket, str(mp)], env=env, tmp_path=tmp_path)
    assert rc == 1
    assert "(from profile-assume-role:r)" in err, err
    key = err.split("refused for access key ")[1].split(" ")[0]
    assert key.startswith("ASIA") and key not in (SOURCE_KEY, rig.ACCESS_KEY)
    # the one request moto received: AssumeRole with the profile's settings,
    # signed with the source profile's keys
    [rec] = [r for r in recorded() if "/moto-api/" not in r["url"]]
    body = urllib.parse.parse_qs(__import__("base64").b64decode(rec["body"]).decode()
                                 if rec.get("body_encoded") else rec["body"])
    assert body["Action"] == ["AssumeRole"] and body["ExternalId"] == ["the-external-id"]
    assert sigv4_valid(rec, SOURCE_KEY, SOURCE_SECRET, "us-east-1", "sts")
    assert not sigv4_valid(rec, SOURCE_KEY, "wrong", "us-east-1", "sts")
    # the S3 requests the proxy refused were signed with moto's key
    refused = [r for r in proxy.stats()["recent"] if r["sig_error"]]
    assert refused and all(
        f"Credential={key}/" in dict((k.lower(), v) for k, v in r["headers"])["authorization"]
        for r in refused)
    assert {r["sig_error"] for r in refused} == {"InvalidAccessKeyId"}


# ---- the region from the instance metadata (issue 20 item 8) -----------------

def whoami_aws(env):
    """s3drive without --endpoint (AWS's): creating the client contacts no
    S3 server, so whoami shows the region chosen."""
    from drive import S3DRIVE
    import subprocess
    r = subprocess.run([str(S3DRIVE), "--bucket", "any-bucket", "whoami"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return kv(r.stdout)


def test_region_from_imds_placement(standin):
    env = clean_env(AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=standin.url)
    assert whoami_aws(env)["region"] == "eu-north-1"
    # IMDSv2: the token first, and the metadata GET carried it
    assert standin.hits[0][:2] == ("PUT", "/latest/api/token")
    assert standin.count("region") == 1 and standin.count("refused") == 0


def test_region_from_imds_only_when_nothing_names_one(standin, tmp_path):
    imds = {"AWS_EC2_METADATA_DISABLED": None, "AWS_EC2_METADATA_SERVICE_ENDPOINT": standin.url}
    assert whoami_aws(clean_env(AWS_REGION="ap-south-1", **imds))["region"] == "ap-south-1"
    files = shared_files(tmp_path, config="[default]\nregion = sa-east-1\n")
    assert whoami_aws(clean_env(**files, **imds))["region"] == "sa-east-1"
    # disabled: not asked
    assert whoami_aws(clean_env(AWS_EC2_METADATA_SERVICE_ENDPOINT=standin.url))["region"] == \
        "us-east-1"
    assert standin.hits == []


def test_region_from_imds_not_asked_with_an_endpoint(proxy, bucket, standin):
    env = clean_env(AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=standin.url)
    assert whoami(proxy, bucket, env)["region"] == "us-east-1"
    assert standin.hits == []


def test_region_from_imds_refused_when_not_a_region(standin):
    standin.placement_region = "evil.example.com/x"
    env = clean_env(AWS_EC2_METADATA_DISABLED=None, AWS_EC2_METADATA_SERVICE_ENDPOINT=standin.url)
    assert whoami_aws(env)["region"] == "us-east-1"
    assert standin.count("region") == 1


def test_credential_process_that_lingers_is_killed(proxy, bucket, tmp_path):
    """A process that prints its credentials, closes its output and then
    never exits is killed at its bound (60 s; 3 s here, set as only the
    test program can): the mount is not held forever, and no process is
    left behind."""
    import time
    pidfile = tmp_path / "pid"
    script = tmp_path / "linger.py"
    script.write_text("import json, os, sys, time\n"
                      f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
                      f"print(json.dumps({{'Version': 1, 'AccessKeyId': {rig.ACCESS_KEY!r}, "
                      f"'SecretAccessKey': {rig.SECRET_KEY!r}}}), flush=True)\n"
                      "os.close(1)\n"
                      "time.sleep(600)\n")
    files = shared_files(tmp_path, config="[profile p]\ncredential_process = "
                         f"/usr/bin/python3 {script}\n")
    t0 = time.monotonic()
    r = drive(proxy.url, bucket, "whoami", env=no_keys(AWS_PROFILE="p", **files),
              opts=("--process-timeout-ms", "3000"))
    took = time.monotonic() - t0
    assert r.returncode == 1 and "did not finish within 3 s (killed)" in r.stderr, r.stderr
    assert 2.9 < took < 15, took
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)


def test_long_profile_name_refreshed(proxy, bucket, tmp_path, standin):
    """The profile's name is what a refresh reads again: a 200-byte name
    is kept whole (refreshed), a 400-byte one refused with a message."""
    standin.expirations = [60, 3600]
    long_name = "p" * 200
    files = shared_files(tmp_path, config=role_config().replace("[profile r]",
                                                                f"[profile {long_name}]"))
    env = no_keys(AWS_PROFILE=long_name, AWS_ENDPOINT_URL_STS=standin.url + "/", **files)
    works(proxy, bucket, env)
    assert standin.count("creds") == 2
    too_long = "q" * 400
    files = shared_files(tmp_path, config=role_config().replace("[profile r]",
                                                                f"[profile {too_long}]"))
    env = no_keys(AWS_PROFILE=too_long, AWS_ENDPOINT_URL_STS=standin.url + "/", **files)
    r = drive(proxy.url, bucket, "whoami", env=env)
    assert r.returncode == 1 and "is longer than" in r.stderr, r.stderr
