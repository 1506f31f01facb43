"""Writes the benchmark's issuer key set and one long-lived RS256 token for it.
Usage: fixture.py OUT_DIR ISSUER AUDIENCE"""
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

out, issuer, audience = sys.argv[1:4]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
jwk.update({"kid": "bench-1", "alg": "RS256", "use": "sig"})
json.dump({"keys": [jwk]}, open(f"{out}/jwks.json", "w"))
now = int(time.time())
claims = {"iss": issuer, "aud": audience, "sub": "bench-user", "email": "bench@example.com",
          "email_verified": True, "iat": now, "exp": now + 3600}
open(f"{out}/token", "w").write(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench-1"}))
