"""gatehouse verify and python google-auth / PyJWT agree: tokens signed by the official
libraries verify with gatehouse, against the same certs document that google-auth's own
`id_token.verify_token` accepts, in both of Google's formats (v1 PEM map, v3 JWK set)."""
import base64
import datetime
import hashlib
import hmac
import json
import time

import google.auth.transport.requests
import jwt as pyjwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt
from google.auth import jwt as gjwt
from google.oauth2 import id_token

from conftest import run

AUDIENCE = "https://receiver-abc123-uc.a.run.app"


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed_pem(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "interop")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def private_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def claims(**over):
    now = int(time.time())
    c = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "sub": "104488163283749123456",
        "email": "caller@demo-project.iam.gserviceaccount.com",
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
    c.update(over)
    return c


def google_auth_sign(key, kid, payload):
    signer = crypt.RSASigner.from_string(private_pem(key), key_id=kid)
    return gjwt.encode(signer, payload).decode()


def gatehouse_verify(bin, token, certs_url, audience=AUDIENCE, issuer="google"):
    return run([bin, "verify", token, "--issuer", issuer, "--jwks", certs_url, "--audience", audience])


@pytest.mark.parametrize("fmt", ["v1-pem-map", "v3-jwk-set"])
def test_google_auth_signed_token_verifies_in_both(gatehouse_bin, documents, fmt):
    key = rsa_key()
    kid = "interop-key-1"
    if fmt == "v1-pem-map":
        documents.docs["/certs"] = {kid: self_signed_pem(key)}
    else:
        jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
        documents.docs["/certs"] = {"keys": [jwk]}
    url = documents.url("/certs")
    token = google_auth_sign(key, kid, claims())

    # The official library accepts the document and the token...
    info = id_token.verify_token(token, google.auth.transport.requests.Request(), audience=AUDIENCE, certs_url=url)
    assert info["email"] == "caller@demo-project.iam.gserviceaccount.com"

    # ...and so do we, with the same claims.
    out = gatehouse_verify(gatehouse_bin, token, url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["claims"]["sub"] == info["sub"]

    # Both refuse the same forgeries.
    other = google_auth_sign(rsa_key(), kid, claims())
    with pytest.raises(Exception):
        id_token.verify_token(other, google.auth.transport.requests.Request(), audience=AUDIENCE, certs_url=url)
    out = gatehouse_verify(gatehouse_bin, other, url)
    assert (out.returncode, out.stdout.strip()) == (1, "bad_signature")

    out = gatehouse_verify(gatehouse_bin, token, url, audience="https://other.example")
    assert (out.returncode, out.stdout.strip()) == (1, "wrong_audience")


def test_pyjwt_rs256_and_es256_tokens_verify(gatehouse_bin, documents):
    rkey, ekey = rsa_key(), ec.generate_private_key(ec.SECP256R1())
    rjwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(rkey.public_key()))
    ejwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(ekey.public_key()))
    rjwk.update({"kid": "r1", "use": "sig"})
    ejwk.update({"kid": "e1", "use": "sig"})
    documents.docs["/jwks"] = {"keys": [rjwk, ejwk]}
    url = documents.url("/jwks")
    issuer = "https://issuer.interop.test"

    for key, alg, kid in [(rkey, "RS256", "r1"), (ekey, "ES256", "e1")]:
        token = pyjwt.encode(claims(iss=issuer), key, algorithm=alg, headers={"kid": kid})
        out = gatehouse_verify(gatehouse_bin, token, url, issuer=issuer)
        assert out.returncode == 0, (alg, out.stdout + out.stderr)

    # The key's type fixes the algorithm: an RS256 token naming the EC key's kid is refused.
    token = pyjwt.encode(claims(iss=issuer), rkey, algorithm="RS256", headers={"kid": "e1"})
    out = gatehouse_verify(gatehouse_bin, token, url, issuer=issuer)
    assert (out.returncode, out.stdout.strip()) == (1, "bad_algorithm")

    # HS256 keyed with the RSA public key (the classic confusion attack) is refused.
    pub_pem = rkey.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "kid": "r1", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims(iss=issuer)).encode())
    sig = b64(hmac.new(pub_pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    out = gatehouse_verify(gatehouse_bin, f"{head}.{body}.{sig}", url, issuer=issuer)
    assert (out.returncode, out.stdout.strip()) == (1, "bad_algorithm")
