"""gatehouse proxy, the real binary, against official Python libraries: the IAP-shaped
assertion it adds verifies with google-auth's `id_token.verify_token` against
`/_gatehouse/public_key-jwk`; tokens minted by PyJWT are admitted or refused as Cloud Run
would; SIGHUP reloads the config file; SIGTERM drains in-flight requests and exits 0; a bad
config file is refused at start with its line."""
import http.server
import json
import os
import signal
import subprocess
import threading
import time

import google.auth.transport.requests
import jwt as pyjwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import id_token
from jwt.algorithms import RSAAlgorithm

from conftest import LogFile, free_port

ISSUER = "https://issuer.interop.test"
AUDIENCE = "https://svc-abc123-uc.a.run.app"


class Echo:
    """An upstream that answers every request with the headers it received, as JSON;
    `/slow` waits a while first."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self):
                if self.path.startswith("/slow"):
                    time.sleep(1.5)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                data = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = answer
            do_POST = answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def echo():
    e = Echo()
    yield e
    e.server.shutdown()


@pytest.fixture
def issuer(documents):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "interop-1", "alg": "RS256", "use": "sig"})
    documents.docs["/certs"] = {"keys": [jwk]}

    def mint(email, **over):
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": f"uid-{email}", "email": email,
                  "email_verified": True, "iat": now, "exp": now + 600}
        claims.update(over)
        return pyjwt.encode(claims, key, algorithm="RS256", headers={"kid": "interop-1"})

    mint.jwks = documents.url("/certs")
    return mint


class Proxy:
    def __init__(self, gatehouse_bin, args):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = LogFile("interop-proxy")
        self.proc = subprocess.Popen(
            [gatehouse_bin, "proxy", "--listen", f"127.0.0.1:{self.port}", *args],
            stdout=self.log, stderr=self.log,
        )
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"gatehouse proxy exited: {self.log.read()}")
            try:
                if requests.get(self.base + "/_gatehouse/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.time() > deadline:
                raise AssertionError("gatehouse proxy did not start")
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def start(gatehouse_bin):
    started = []

    def go(*args):
        p = Proxy(gatehouse_bin, args)
        started.append(p)
        return p

    yield go
    for p in started:
        p.stop()


def flags(echo, issuer, *allow):
    args = ["--upstream", echo.url, "--audience", AUDIENCE, "--issuer", ISSUER, "--jwks", issuer.jwks]
    for member in allow:
        args += ["--allow", member]
    return args


def test_assertion_verifies_with_google_auth_verify_token(start, echo, issuer):
    proxy = start(*flags(echo, issuer, "user:alice@example.com"))
    r = requests.get(proxy.base + "/hello", headers={"Authorization": "Bearer " + issuer("alice@example.com")})
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    assert seen["x-goog-authenticated-user-email"] == "accounts.google.com:alice@example.com"
    assert seen["x-goog-authenticated-user-id"] == "issuer.interop.test:uid-alice@example.com"
    assert seen["authorization"].endswith(".SIGNATURE_REMOVED_BY_GOOGLE")

    assertion = seen["x-goog-iap-jwt-assertion"]
    claims = id_token.verify_token(
        assertion,
        google.auth.transport.requests.Request(),
        audience=AUDIENCE,
        certs_url=proxy.base + "/_gatehouse/public_key-jwk",
    )
    assert claims["iss"] == "https://cloud.google.com/iap"
    assert claims["email"] == "alice@example.com"
    assert claims["sub"] == seen["x-goog-authenticated-user-id"] == "issuer.interop.test:uid-alice@example.com"
    assert claims["exp"] - claims["iat"] == 600
    # Signed for this audience only.
    with pytest.raises(Exception):
        id_token.verify_token(assertion, google.auth.transport.requests.Request(),
                              audience="https://other.example",
                              certs_url=proxy.base + "/_gatehouse/public_key-jwk")


def test_decisions_and_header_hygiene_through_the_binary(start, echo, issuer):
    proxy = start(*flags(echo, issuer, "user:alice@example.com"))
    r = requests.get(proxy.base + "/")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer error="invalid_token", error_description="missing_token"'
    assert r.json() == {"error": "invalid_token", "reason": "missing_token"}
    r = requests.get(proxy.base + "/", headers={"Authorization": "Bearer " + issuer("bob@example.com")})
    assert r.status_code == 403
    assert r.json()["reason"] == "not_invoker"
    r = requests.get(proxy.base + "/", headers={"Authorization": "Bearer " + issuer("alice@example.com", aud="x")})
    assert r.status_code == 401
    assert r.json()["reason"] == "wrong_audience"
    # X-Serverless-Authorization first; Authorization goes to the app untouched.
    r = requests.get(proxy.base + "/", headers={
        "X-Serverless-Authorization": "Bearer " + issuer("alice@example.com"),
        "Authorization": "Basic YXBwOnNlY3JldA==",
        "X-Goog-Authenticated-User-Email": "accounts.google.com:root@example.com",
        "X-Forwarded-User": "root",
    })
    assert r.status_code == 200
    seen = r.json()["headers"]
    assert seen["authorization"] == "Basic YXBwOnNlY3JldA=="
    assert seen["x-goog-authenticated-user-email"] == "accounts.google.com:alice@example.com"
    assert "x-forwarded-user" not in seen


def config_text(echo, issuer, member):
    return f"""
[[route]]
name = "svc"
upstream = "{echo.url}"
url = "{AUDIENCE}"
issuers = [{{ profile = "{ISSUER}", jwks = "{issuer.jwks}" }}]
policy = '{{"bindings":[{{"role":"roles/run.invoker","members":["{member}"]}}],"etag":"BwX","version":1}}'
"""


def test_sighup_reloads_and_a_bad_file_keeps_the_old_config(start, echo, issuer, tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text("watch_seconds = 0\n" + config_text(echo, issuer, "user:alice@example.com"))
    proxy = start("--config", str(path))
    bob = {"Authorization": "Bearer " + issuer("bob@example.com")}
    assert requests.get(proxy.base + "/", headers=bob).status_code == 403
    path.write_text("watch_seconds = 0\n" + config_text(echo, issuer, "user:bob@example.com"))
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while requests.get(proxy.base + "/", headers=bob).status_code != 200:
        assert time.time() < deadline, "SIGHUP did not reload"
        time.sleep(0.1)
    path.write_text("this is = not [valid toml")
    proxy.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert requests.get(proxy.base + "/", headers=bob).status_code == 200
    assert proxy.proc.poll() is None


def test_bad_config_is_refused_at_start_with_its_line(gatehouse_bin, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[route]]\nupstream = "http://127.0.0.1:1"\nurl = "https://a"\nallow = ["user:not-an-email"]\n')
    r = subprocess.run([gatehouse_bin, "proxy", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"{path}:4:" in r.stderr, r.stderr
    assert "invalid IAM member" in r.stderr


def test_sigterm_drains_in_flight_requests_and_exits_zero(start, echo, issuer):
    proxy = start(*flags(echo, issuer, "allUsers"))
    result = {}

    def slow():
        result["response"] = requests.get(proxy.base + "/slow", timeout=10)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.4)
    proxy.proc.send_signal(signal.SIGTERM)
    t.join(10)
    assert result["response"].status_code == 200
    assert proxy.proc.wait(timeout=10) == 0
