"""Two `gatehouse idp` processes on one PostgreSQL database behave as one emulator: the same
published keys, a service-account key created on one is honoured by the other, and python
google-auth verifies either's tokens with the other's certs.

Needs GATEHOUSE_TEST_POSTGRES (e.g. postgres://postgres@127.0.0.1:5432/test) and psql; skipped
without them unless GATEHOUSE_TEST_REQUIRE lists postgres."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request

import google.auth.transport.requests
import pytest
from google.oauth2 import id_token

from conftest import LogFile, free_port

SA = "replica@demo-project.iam.gserviceaccount.com"


def postgres_or_skip():
    url = os.environ.get("GATEHOUSE_TEST_POSTGRES")
    required = "postgres" in os.environ.get("GATEHOUSE_TEST_REQUIRE", "").split(",")
    if not url or not shutil.which("psql"):
        if required:
            pytest.fail("postgres is required but GATEHOUSE_TEST_POSTGRES or psql is missing")
        pytest.skip("GATEHOUSE_TEST_POSTGRES is unset (or no psql)")
    return url


def with_database(url, name):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
def database():
    server = postgres_or_skip()
    name = f"gh_idp_replicas_{os.getpid()}_{int(time.time() * 1000)}"
    admin = with_database(server, "postgres")
    subprocess.run(["psql", admin, "-qc", f'CREATE DATABASE "{name}"'], check=True, capture_output=True)
    yield with_database(server, name)
    subprocess.run(["psql", admin, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                   capture_output=True)


def start(binary, database_url):
    port = free_port()
    log = LogFile("interop-idp-replica")
    proc = subprocess.Popen(
        [binary, "idp", "--listen", f"127.0.0.1:{port}", "--database", database_url],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"gatehouse idp did not start: {line} {log.read()}")
    proc.log = log
    return proc, f"http://127.0.0.1:{port}"


def get_json(url):
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def test_two_processes_share_keys_users_and_service_accounts(gatehouse_bin, database, tmp_path):
    a, base_a = start(gatehouse_bin, database)
    b, base_b = start(gatehouse_bin, database)
    try:
        assert get_json(base_a + "/oauth2/v3/certs") == get_json(base_b + "/oauth2/v3/certs")
        assert get_json(base_a + "/oauth2/v1/certs") == get_json(base_b + "/oauth2/v1/certs")
        # A key made through A ...
        proc = subprocess.run([gatehouse_bin, "keys", "create-sa-key", SA, "--idp", base_a],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        key = json.loads(proc.stdout)
        # ... exchanged at B by unmodified google-auth (token_uri pointed at B) ...
        key["token_uri"] = base_b + "/token"
        path = tmp_path / "key.json"
        path.write_text(json.dumps(key))
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent("""
                import sys
                import google.auth.transport.requests
                from google.oauth2 import service_account
                creds = service_account.IDTokenCredentials.from_service_account_file(
                    sys.argv[1], target_audience="https://svc.example")
                creds.refresh(google.auth.transport.requests.Request())
                print(creds.token)
            """), str(path)],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        token = out.stdout.strip()
        # ... verifies with A's certs.
        claims = id_token.verify_token(token, google.auth.transport.requests.Request(),
                                       audience="https://svc.example",
                                       certs_url=base_a + "/oauth2/v1/certs")
        assert claims["email"] == SA
        # Test accounts added on B show on A's sign-in page.
        req = urllib.request.Request(base_b + "/emulator/v1/accounts", method="POST",
                                     data=json.dumps({"email": "replica-user@example.com"}).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10)
        emails = [x["email"] for x in get_json(base_a + "/emulator/v1/accounts")["accounts"]]
        assert "replica-user@example.com" in emails
    finally:
        for p in (a, b):
            p.terminate()
            p.wait(timeout=10)
            sys.stderr.write(p.log.read())
