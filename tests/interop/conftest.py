"""Shared fixtures for the interop suites: the gatehouse binary, free ports, a tiny static
HTTP server for key documents, log files for the processes the tests start."""
import http.server
import itertools
import json
import os
import socket
import subprocess
import threading

import pytest


@pytest.fixture(scope="session")
def gatehouse_bin():
    path = os.environ.get("GATEHOUSE_BIN")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("GATEHOUSE_BIN must point at the built gatehouse binary (scripts/test sets it)")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Documents:
    """Serves JSON documents by path; counts requests."""

    def __init__(self):
        self.docs = {}
        self.hits = {}
        docs, hits = self.docs, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits[self.path] = hits.get(self.path, 0) + 1
                body = docs.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=300")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path):
        return self.base + path


@pytest.fixture
def documents():
    d = Documents()
    yield d
    d.server.shutdown()


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)


_log_numbers = itertools.count()


class LogFile:
    """Where a started process writes its output: GATEHOUSE_TEST_LOGS (scripts/test sets it,
    default target/test-logs), kept after the run for the secrets check of every log. Pass
    it as Popen's stdout/stderr; read() gives the tail for a failure message."""

    def __init__(self, name):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(root, "target")
        directory = os.environ.get("GATEHOUSE_TEST_LOGS") or os.path.join(target, "test-logs")
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"{name}-{os.getpid()}-{next(_log_numbers)}.log")
        # Append mode: the child's writes land at the end whatever this side does.
        self._file = open(self.path, "ab")

    def fileno(self):
        return self._file.fileno()

    def read(self, limit=4000):
        with open(self.path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-limit:]
