"""Serves one HTTP/1.1 request on 127.0.0.1:PORT, answers 200, and writes the request's
header fields but Host as nginx `proxy_set_header` lines to OUT. bench/gateway/rounds sends it
a request through a gateway and puts the lines on an nginx proxy, so that one baseline sends
the upstream the same request the gateway does (its identity headers, its forwarding headers,
the token with its signature removed). OUT.listening appears once it listens.
Usage: headers.py PORT OUT"""
import socket
import sys

port, out = int(sys.argv[1]), sys.argv[2]

with socket.create_server(("127.0.0.1", port)) as server:
    server.settimeout(30)
    open(f"{out}.listening", "w").close()  # the caller waits for it before sending
    conn, _ = server.accept()
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                sys.exit("headers.py: the connection closed before the request's head ended")
            head += chunk
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")

lines = []
for field in head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]:
    name, value = field.split(":", 1)
    name, value = name.strip().lower(), value.strip()
    if name == "host":
        continue
    if "'" in value or "\\" in value:
        sys.exit(f"headers.py: {name}'s value needs quoting nginx's way; not written")
    lines.append(f"proxy_set_header {name} '{value}';")
with open(out, "w") as f:
    f.write(" ".join(lines))
