"""gatehouse token/call against python google-auth: the self-signed assertion that
`gatehouse token --key-file` posts is google-auth's `service_account.IDTokenCredentials`
assertion, field for field; and `call` sends the token the way Cloud Run's callers do.

Both clients post to the same local stand-in token endpoint, which records what it got.
"""

import base64
import json
import os
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import google.auth.transport.requests
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account

GATEHOUSE = os.environ.get("GATEHOUSE_BIN", "target/debug/gatehouse")
SA_EMAIL = "caller@demo-project.iam.gserviceaccount.com"
AUDIENCE = "https://receiver-xyz.a.run.app"
KID = "5f2a4c1e9d7b3a8c6e0f1d2b4a6c8e0f1a3b5c7d"

ISSUER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def issue_id_token(audience, email, life=3600):
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": email,
        "sub": "104215283012345678901",
        "email": email,
        "email_verified": True,
        "iat": now,
        "exp": now + life,
    }
    return jwt.encode(claims, pem(ISSUER_KEY), algorithm="RS256", headers={"kid": "issuer-1"})


def segment(token, index):
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class Recorder(BaseHTTPRequestHandler):
    """Token endpoint (POST /token), metadata server (GET /computeMetadata/...), and a
    receiving service (anything else), recording every request."""

    requests = []
    receiver_status = 200

    def log_message(self, *args):
        pass

    def _record(self, body):
        Recorder.requests.append(
            {"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        )

    def _answer(self, status, body, content_type="application/json", extra=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self._record(body)
        if self.path == "/token":
            form = dict(urllib.parse.parse_qsl(body))
            claims = segment(form["assertion"], 1)
            token = issue_id_token(claims["target_audience"], claims["iss"])
            return self._answer(200, json.dumps({"id_token": token}))
        return self._receiver()

    def do_GET(self):
        self._record("")
        flavor = [("Metadata-Flavor", "Google")]
        if self.path == "/":
            return self._answer(200, "", "application/text", flavor)
        if self.path.startswith("/computeMetadata/v1/instance/service-accounts/default/identity"):
            if self.headers.get("Metadata-Flavor") != "Google":
                return self._answer(403, "Missing Metadata-Flavor", "text/plain", flavor)
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            token = issue_id_token(query["audience"], "runner@demo-project.iam.gserviceaccount.com")
            return self._answer(200, token, "application/text", flavor)
        return self._receiver()

    def _receiver(self):
        status = Recorder.receiver_status
        return self._answer(status, json.dumps({"status": status, "path": self.path}))


@pytest.fixture()
def server():
    Recorder.requests = []
    Recorder.receiver_status = 200
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture()
def key_file(tmp_path, server):
    info = {
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": KID,
        "private_key": pem(SA_KEY),
        "client_email": SA_EMAIL,
        "client_id": "104215283012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": f"{server}/token",
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/caller",
        "universe_domain": "googleapis.com",
    }
    path = tmp_path / "key.json"
    path.write_text(json.dumps(info))
    return path


def gatehouse(*args, env=None, check=True):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_"))}
    full_env.update(env or {})
    result = subprocess.run(
        [GATEHOUSE, *args], capture_output=True, text=True, timeout=60, env=full_env
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def token_posts():
    return [r for r in Recorder.requests if r["path"] == "/token"]


def test_assertion_matches_google_auth_field_for_field(key_file):
    credentials = service_account.IDTokenCredentials.from_service_account_file(
        str(key_file), target_audience=AUDIENCE
    )
    credentials.refresh(google.auth.transport.requests.Request())
    ours = gatehouse("token", "--key-file", str(key_file), "--audience", AUDIENCE)

    python_post, our_post = token_posts()
    python_form = dict(urllib.parse.parse_qsl(python_post["body"]))
    our_form = dict(urllib.parse.parse_qsl(our_post["body"]))
    assert sorted(our_form) == sorted(python_form) == ["assertion", "grant_type"]
    assert our_form["grant_type"] == python_form["grant_type"]
    assert (
        our_post["headers"]["content-type"]
        == python_post["headers"]["content-type"]
        == "application/x-www-form-urlencoded"
    )

    theirs_a, ours_a = python_form["assertion"], our_form["assertion"]
    assert segment(ours_a, 0) == segment(theirs_a, 0) == {"typ": "JWT", "alg": "RS256", "kid": KID}
    theirs_c, ours_c = segment(theirs_a, 1), segment(ours_a, 1)
    assert list(ours_c) == list(theirs_c), "same claims, in the same order"
    for name in theirs_c:
        if name in ("iat", "exp"):
            assert abs(ours_c[name] - theirs_c[name]) <= 60, name
        else:
            assert ours_c[name] == theirs_c[name], name
    assert ours_c["exp"] - ours_c["iat"] == theirs_c["exp"] - theirs_c["iat"] == 3600

    # Our assertion is signed with the key file's key: PyJWT verifies it as Google would.
    verified = jwt.decode(
        ours_a,
        SA_KEY.public_key(),
        algorithms=["RS256"],
        audience="https://oauth2.googleapis.com/token",
    )
    assert verified["iss"] == SA_EMAIL

    # Both got the endpoint's ID token, for the audience asked for.
    token = ours.stdout.strip()
    assert segment(token, 1)["aud"] == AUDIENCE
    assert segment(credentials.token, 1)["aud"] == AUDIENCE


def test_google_application_credentials_is_used_without_flags(key_file, server):
    result = gatehouse(
        "token",
        "--audience",
        AUDIENCE,
        "--idp",
        "http://127.0.0.1:1",
        env={"GOOGLE_APPLICATION_CREDENTIALS": str(key_file)},
    )
    assert segment(result.stdout.strip(), 1)["email"] == SA_EMAIL
    assert len(token_posts()) == 1


def test_gce_metadata_host_is_used_without_flags(server):
    host = server.removeprefix("http://")
    result = gatehouse(
        "token", "--audience", AUDIENCE, "--idp", "http://127.0.0.1:1",
        env={"GCE_METADATA_HOST": host},
    )
    claims = segment(result.stdout.strip(), 1)
    assert claims["aud"] == AUDIENCE
    identity = [r for r in Recorder.requests if "/identity" in r["path"]]
    assert len(identity) == 1
    assert identity[0]["headers"]["metadata-flavor"] == "Google"
    assert "format=full" in identity[0]["path"]


def test_no_credentials_says_what_was_tried():
    result = gatehouse(
        "token", "--audience", AUDIENCE, "--idp", "http://127.0.0.1:1", check=False
    )
    assert result.returncode != 0
    assert "GOOGLE_APPLICATION_CREDENTIALS" in result.stderr
    assert "127.0.0.1:1" in result.stderr
    assert "panicked" not in result.stderr


def test_a_malformed_key_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "service_account", "client_email": SA_EMAIL}))
    result = gatehouse("token", "--key-file", str(bad), "--audience", AUDIENCE, check=False)
    assert result.returncode != 0
    assert "`private_key_id`" in result.stderr, result.stderr
    assert "panicked" not in result.stderr


def test_call_sends_a_token_for_the_origin_and_prints_the_body(server):
    host = server.removeprefix("http://")
    result = gatehouse(
        "call", f"{server}/hello?x=1", "-v", "-H", "X-Test: yes", "--metadata", host
    )
    assert json.loads(result.stdout) == {"status": 200, "path": "/hello?x=1"}
    assert "< 200 OK" in result.stderr
    calls = [r for r in Recorder.requests if r["path"] == "/hello?x=1"]
    assert len(calls) == 1
    authorization = calls[0]["headers"]["authorization"]
    assert authorization.startswith("Bearer ")
    assert segment(authorization.removeprefix("Bearer "), 1)["aud"] == server
    assert calls[0]["headers"]["x-test"] == "yes"
    # The token never reaches the terminal.
    assert authorization.removeprefix("Bearer ") not in result.stderr + result.stdout


def test_call_posts_data_and_exits_non_zero_on_an_error_status(server):
    host = server.removeprefix("http://")
    Recorder.receiver_status = 403
    result = gatehouse(
        "call", f"{server}/vote", "-d", "team=CATS", "--metadata", host, check=False
    )
    assert result.returncode == 22
    assert json.loads(result.stdout)["status"] == 403
    posts = [r for r in Recorder.requests if r["path"] == "/vote"]
    assert posts[0]["method"] == "POST"
    assert posts[0]["body"] == "team=CATS"
    assert posts[0]["headers"]["content-type"] == "application/x-www-form-urlencoded"
