"""Seed 000's backend: Flask verifying the caller's Google ID token with google-auth on
every request (`id_token.verify_*`, which fetches the certs each call), then answering.
The certs URL is the benchmark's local key server instead of Google's.
Usage: flask_backend.py PORT CERTS_URL AUDIENCE"""
import sys

import google.auth.transport.requests as greq
from flask import Flask, jsonify, request
from google.oauth2 import id_token

port, certs_url, audience = int(sys.argv[1]), sys.argv[2], sys.argv[3]
app = Flask(__name__)


def verify_google_id_token(token):
    return id_token.verify_token(token, greq.Request(), audience=audience, certs_url=certs_url)


@app.route("/", methods=["GET", "POST"])
def secure():
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return jsonify(error="missing token"), 401
    try:
        claims = verify_google_id_token(auth.split(" ", 1)[1])
    except Exception as e:  # noqa: BLE001 - the sample answers 401 for any failure
        return jsonify(error=str(e)), 401
    return "ok\n"


if __name__ == "__main__":
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app.run(host="127.0.0.1", port=port, threaded=True)
