"""gatehouse token / call against the emulator (`gatehouse idp`), end to end: each token
source (a metadata listener per service account, the default service account on the main
port, a key file made by `keys create-sa-key`, a test user, GOOGLE_APPLICATION_CREDENTIALS)
mints a token that python google-auth verifies against the emulator's certs; and `call`
reaches a receiver that admits only a token for its own origin."""

import base64
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import google.auth.transport.requests
import pytest
from google.oauth2 import id_token, service_account

from conftest import LogFile, free_port

CALLER = "caller@demo-project.iam.gserviceaccount.com"
AUDIENCE = "https://receiver.example"


def claims_of(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class Emulator:
    def __init__(self, binary):
        self.binary = binary
        self.port = free_port()
        self.metadata_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.metadata = f"127.0.0.1:{self.metadata_port}"
        self.data = tempfile.TemporaryDirectory()
        self.log = LogFile("interop-idp")
        self.proc = subprocess.Popen(
            [
                binary, "idp", "--listen", f"127.0.0.1:{self.port}", "--data", self.data.name,
                "--metadata", f"{self.metadata}={CALLER}",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.base + "/.well-known/openid-configuration", timeout=1)
                urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://{self.metadata}/", headers={"Metadata-Flavor": "Google"}
                    ),
                    timeout=1,
                )
                return
            except Exception:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        pytest.fail("gatehouse idp did not start: " + self.log.read(2000))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.data.cleanup()

    def verify(self, token, audience):
        """python google-auth's verdict, against the emulator's v1 certs."""
        request = google.auth.transport.requests.Request()
        return id_token.verify_token(
            token, request, audience=audience, certs_url=self.base + "/oauth2/v1/certs"
        )


@pytest.fixture(scope="module")
def emulator(gatehouse_bin):
    e = Emulator(gatehouse_bin)
    yield e
    e.stop()


def gatehouse(binary, *args, env=None, check=True, input=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_"))}
    full_env.update(env or {})
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, env=full_env, input=input
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def key_file(emulator, tmp_path_factory):
    result = gatehouse(emulator.binary, "keys", "create-sa-key", CALLER, "--idp", emulator.base)
    path = tmp_path_factory.mktemp("keys") / "key.json"
    path.write_text(result.stdout)
    return path


def test_a_metadata_listener_per_service_account(emulator):
    token = gatehouse(
        emulator.binary, "token", "--audience", AUDIENCE, "--metadata", emulator.metadata
    ).stdout.strip()
    claims = emulator.verify(token, AUDIENCE)
    assert claims["email"] == CALLER
    assert claims["aud"] == AUDIENCE
    assert "google" in claims, "format=full"


def test_no_flag_falls_back_to_the_emulators_default_service_account(emulator):
    token = gatehouse(
        emulator.binary, "token", "--audience", AUDIENCE, "--idp", emulator.base
    ).stdout.strip()
    claims = emulator.verify(token, AUDIENCE)
    assert claims["email"].endswith("-compute@developer.gserviceaccount.com")


def test_gce_metadata_host_wins_over_the_emulator(emulator):
    token = gatehouse(
        emulator.binary, "token", "--audience", AUDIENCE, "--idp", emulator.base,
        env={"GCE_METADATA_HOST": emulator.metadata},
    ).stdout.strip()
    assert emulator.verify(token, AUDIENCE)["email"] == CALLER


def test_a_key_file_made_by_keys_create_sa_key(emulator, key_file):
    ours = gatehouse(
        emulator.binary, "token", "--audience", AUDIENCE, "--key-file", str(key_file)
    ).stdout.strip()
    claims = emulator.verify(ours, AUDIENCE)
    assert claims["email"] == CALLER
    # google-auth, given the same key file, gets a token of the same shape.
    credentials = service_account.IDTokenCredentials.from_service_account_file(
        str(key_file), target_audience=AUDIENCE
    )
    credentials.refresh(google.auth.transport.requests.Request())
    theirs = emulator.verify(credentials.token, AUDIENCE)
    assert sorted(theirs) == sorted(claims)
    assert (theirs["email"], theirs["aud"], theirs["sub"]) == (
        claims["email"], claims["aud"], claims["sub"],
    )


def test_google_application_credentials(emulator, key_file):
    token = gatehouse(
        emulator.binary, "token", "--audience", AUDIENCE, "--idp", "http://127.0.0.1:1",
        env={"GOOGLE_APPLICATION_CREDENTIALS": str(key_file)},
    ).stdout.strip()
    assert emulator.verify(token, AUDIENCE)["email"] == CALLER


def test_a_test_user_is_added_and_gets_a_token(emulator):
    token = gatehouse(
        emulator.binary, "token", "--user", "dave@example.com", "--idp", emulator.base
    ).stdout.strip()
    aud = claims_of(token)["aud"]
    claims = emulator.verify(token, aud)
    assert claims["email"] == "dave@example.com"
    assert claims["email_verified"] is True


def test_a_user_token_for_an_unregistered_audience_is_refused_clearly(emulator):
    result = gatehouse(
        emulator.binary, "token", "--user", "dave@example.com", "--audience", "https://nope.example",
        "--idp", emulator.base, check=False,
    )
    assert result.returncode != 0
    assert "invalid_client" in result.stderr
    assert "panicked" not in result.stderr


def test_a_key_the_emulator_never_issued_is_refused_clearly(emulator, key_file, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    info = json.loads(key_file.read_text())
    info["private_key"] = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(info))
    result = gatehouse(
        emulator.binary, "token", "--audience", AUDIENCE, "--key-file", str(forged), check=False
    )
    assert result.returncode != 0
    assert "token endpoint" in result.stderr and "refused" in result.stderr, result.stderr
    assert "panicked" not in result.stderr


class Receiver:
    """A receiving service that admits only tokens for its own origin from CALLER."""

    def __init__(self, emulator):
        origin_box = {}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                auth = self.headers.get("Authorization", "")
                status, body = 401, {"error": "no token"}
                if auth.startswith("Bearer "):
                    try:
                        claims = emulator.verify(auth[7:], origin_box["origin"])
                        if claims["email"] == CALLER:
                            status, body = 200, {"hello": claims["email"]}
                        else:
                            status, body = 403, {"error": "not invited", "who": claims["email"]}
                    except Exception as e:  # wrong audience, bad signature, expired
                        status, body = 401, {"error": str(e)[:200]}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        origin_box["origin"] = self.origin
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def receiver(emulator):
    r = Receiver(emulator)
    yield r
    r.server.shutdown()


def test_call_reaches_a_receiver_that_admits_only_the_caller(emulator, receiver):
    ok = gatehouse(
        emulator.binary, "call", receiver.origin + "/hello", "-v", "--metadata", emulator.metadata
    )
    assert json.loads(ok.stdout) == {"hello": CALLER}
    assert "< 200 OK" in ok.stderr

    # Another service account: a valid token, but not invited.
    refused = gatehouse(
        emulator.binary, "call", receiver.origin + "/hello", "--idp", emulator.base, check=False
    )
    assert refused.returncode == 22
    assert json.loads(refused.stdout)["error"] == "not invited"

    # The wrong audience: the receiver refuses the token itself.
    wrong = gatehouse(
        emulator.binary, "call", receiver.origin + "/hello", "--audience", "https://elsewhere.example",
        "--metadata", emulator.metadata, check=False,
    )
    assert wrong.returncode == 22
    assert "error" in json.loads(wrong.stdout)
