"""The emulator (`gatehouse idp`) with unmodified python google-auth: ID tokens from the
metadata server (fetch_id_token via GCE_METADATA_HOST/GCE_METADATA_IP), google.auth.default()
access tokens, service_account.IDTokenCredentials from a key made by `gatehouse keys
create-sa-key`, GOOGLE_APPLICATION_CREDENTIALS, and id_token.verify_token against the
emulator's v1 (PEM) and v3 (JWK) certs.

google-auth reads the metadata variables at import time, so every client scenario runs in a
subprocess with its own environment."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

import google.auth.exceptions
import google.auth.transport.requests
import pytest
from google.oauth2 import id_token

from conftest import LogFile, free_port

WORKER = "worker@demo-project.iam.gserviceaccount.com"
KEYED = "keyed@demo-project.iam.gserviceaccount.com"
AUDIENCE = "https://svc.example/api"


class Idp:
    def __init__(self, binary):
        self.binary = binary
        self.port = free_port()
        self.metadata_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.metadata_host = f"127.0.0.1:{self.metadata_port}"
        self.data = tempfile.TemporaryDirectory()
        self.log = LogFile("interop-idp")
        self.proc = subprocess.Popen(
            [
                binary, "idp", "--listen", f"127.0.0.1:{self.port}", "--data", self.data.name,
                "--metadata", f"{self.metadata_host}={WORKER}",
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()
        if "listening" not in line:
            self.proc.kill()
            raise RuntimeError(f"gatehouse idp did not start: {line} {self.log.read()}")
        deadline = time.time() + 10
        while True:
            try:
                urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://{self.metadata_host}/", headers={"Metadata-Flavor": "Google"}
                    ),
                    timeout=1,
                )
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def default_sa(self):
        req = urllib.request.Request(
            self.base + "/computeMetadata/v1/instance/service-accounts/default/email",
            headers={"Metadata-Flavor": "Google"},
        )
        return urllib.request.urlopen(req, timeout=5).read().decode()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.data.cleanup()


@pytest.fixture(scope="module")
def idp(gatehouse_bin):
    server = Idp(gatehouse_bin)
    yield server
    server.stop()


def client_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GCE_METADATA") and k != "GOOGLE_APPLICATION_CREDENTIALS"}
    env["GCE_METADATA_MTLS_MODE"] = "none"
    # No real Google anywhere: a stray lookup must fail fast, not hang.
    env["NO_PROXY"] = "*"
    env.update(extra)
    return env


def run_client(script, env):
    """Runs `script` in a fresh interpreter (google-auth reads its env at import) and returns
    its stdout; fails the test with stderr on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


FETCH_ID_TOKEN = """
    import sys
    import google.auth.transport.requests
    from google.oauth2 import id_token
    print(id_token.fetch_id_token(google.auth.transport.requests.Request(), sys.argv[1] if len(sys.argv) > 1 else "%s"))
""" % AUDIENCE


def verify_both(idp, token, audience=AUDIENCE):
    request = google.auth.transport.requests.Request()
    v1 = id_token.verify_token(token, request, audience=audience, certs_url=idp.base + "/oauth2/v1/certs")
    v3 = id_token.verify_token(token, request, audience=audience, certs_url=idp.base + "/oauth2/v3/certs")
    assert v1 == v3
    assert v1["iss"] == "https://accounts.google.com"
    return v1


def test_fetch_id_token_from_a_metadata_listener(idp):
    env = client_env(GCE_METADATA_HOST=idp.metadata_host, GCE_METADATA_IP=idp.metadata_host)
    token = run_client(FETCH_ID_TOKEN, env)
    claims = verify_both(idp, token)
    assert claims["email"] == WORKER
    assert claims["email_verified"] is True
    assert claims["aud"] == AUDIENCE
    assert claims["sub"].isdigit()
    # Reused (same token) on a second fetch, as the real metadata server does.
    assert run_client(FETCH_ID_TOKEN, env) == token
    # A wrong audience is refused by the verifier.
    with pytest.raises(ValueError):
        id_token.verify_token(token, google.auth.transport.requests.Request(),
                              audience="https://other.example", certs_url=idp.base + "/oauth2/v1/certs")


def test_fetch_id_token_from_the_main_port_is_the_default_account(idp):
    host = f"127.0.0.1:{idp.port}"
    env = client_env(GCE_METADATA_HOST=host, GCE_METADATA_IP=host)
    claims = verify_both(idp, run_client(FETCH_ID_TOKEN, env))
    assert claims["email"] == idp.default_sa()
    assert claims["email"].endswith("-compute@developer.gserviceaccount.com")


def test_default_credentials_access_token_from_metadata(idp):
    env = client_env(GCE_METADATA_HOST=idp.metadata_host, GCE_METADATA_IP=idp.metadata_host)
    out = json.loads(run_client("""
        import json
        import google.auth, google.auth.transport.requests
        creds, project = google.auth.default()
        creds.refresh(google.auth.transport.requests.Request())
        print(json.dumps({"token": creds.token, "project": project,
                          "email": creds.service_account_email, "type": type(creds).__module__}))
    """, env))
    assert out["project"] == "demo-project"
    assert out["email"] == WORKER
    assert out["type"] == "google.auth.compute_engine.credentials"
    info = userinfo(idp, out["token"])
    assert info["email"] == WORKER


def userinfo(idp, access_token):
    req = urllib.request.Request(idp.base + "/oauth2/v3/userinfo",
                                 headers={"Authorization": f"Bearer {access_token}"})
    return json.loads(urllib.request.urlopen(req, timeout=5).read())


@pytest.fixture(scope="module")
def key_file(idp, gatehouse_bin, tmp_path_factory):
    proc = subprocess.run(
        [gatehouse_bin, "keys", "create-sa-key", KEYED, "--idp", idp.base],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    key = json.loads(proc.stdout)
    assert key["type"] == "service_account"
    assert key["client_email"] == KEYED
    assert key["token_uri"] == idp.base + "/token"
    path = tmp_path_factory.mktemp("keys") / "key.json"
    path.write_text(proc.stdout)
    return str(path)


def test_id_token_credentials_from_a_created_key(idp, key_file):
    token = run_client("""
        import sys
        import google.auth.transport.requests
        from google.oauth2 import service_account
        creds = service_account.IDTokenCredentials.from_service_account_file(
            sys.argv[1], target_audience=sys.argv[2])
        creds.refresh(google.auth.transport.requests.Request())
        print(creds.token)
    """.replace("sys.argv[1]", repr(key_file)).replace("sys.argv[2]", repr(AUDIENCE)), client_env())
    claims = verify_both(idp, token)
    assert claims["email"] == KEYED


def test_google_application_credentials(idp, key_file):
    env = client_env(GOOGLE_APPLICATION_CREDENTIALS=key_file)
    claims = verify_both(idp, run_client(FETCH_ID_TOKEN, env))
    assert claims["email"] == KEYED
    # google.auth.default() with scopes: an access token from the key file's token_uri.
    out = json.loads(run_client("""
        import json
        import google.auth, google.auth.transport.requests
        creds, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        creds.refresh(google.auth.transport.requests.Request())
        print(json.dumps({"token": creds.token, "project": project}))
    """, env))
    assert out["project"] == "demo-project"
    assert userinfo(idp, out["token"])["email"] == KEYED


def test_a_tampered_key_is_refused(idp, key_file, tmp_path):
    # Same key id and account, another private key: the emulator never issued it.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = json.loads(open(key_file).read())
    rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key["private_key"] = rogue.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "rogue.json"
    path.write_text(json.dumps(key))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import google.auth.transport.requests
            from google.oauth2 import service_account
            creds = service_account.IDTokenCredentials.from_service_account_file(%r, target_audience="a")
            creds.refresh(google.auth.transport.requests.Request())
        """ % str(path))],
        env=client_env(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "invalid_grant" in proc.stderr
