"""Peer: python google-auth verifying the same RS256 tokens with its certs already in memory
(what `id_token.verify_token` does after its certs fetch). Prints ops/s as JSON."""
import json
import sys
import time

from google.auth import jwt

fixture = json.load(open(sys.argv[1]))
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
certs = {fixture["kid"]: fixture["public_key_pem"]}
tokens = fixture["tokens"]
audience = fixture["audience"]

for t in tokens[:20]:
    jwt.decode(t, certs=certs, audience=audience)

n = 0
start = time.perf_counter()
while time.perf_counter() - start < seconds:
    jwt.decode(tokens[n % len(tokens)], certs=certs, audience=audience)
    n += 1
elapsed = time.perf_counter() - start
print(json.dumps({"peer": "python google-auth jwt.decode", "ops_per_sec": n / elapsed}))
