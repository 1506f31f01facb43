# Shared by bench/gateway/run and bench/load/run (sourced, not run): the release binary, the
# Python venv, free ports, an nginx upstream, a gateway route, waiting for a server, cleanup.
# The caller sets `root` (the repository) and `bench` (its name, for messages) first.

ulimit -n 65536 2>/dev/null || ulimit -n 4096

bench_need() { # tool how-to-get-it
  command -v "$1" >/dev/null || { echo "$bench: $1 not found ($2)" >&2; exit 1; }
}

bench_fail() { echo "$bench: $*" >&2; exit 1; }

# The release binary; with GATEHOUSE_BENCH_REUSE set, a failed build (someone else's
# half-done edit) falls back to the last one built; GATEHOUSE_BENCH_BIN names a binary to
# measure as it is, unbuilt.
bench_build() {
  if [[ -n "${GATEHOUSE_BENCH_BIN:-}" ]]; then
    bin=$(realpath "$GATEHOUSE_BENCH_BIN")
    [[ -x $bin ]] || bench_fail "GATEHOUSE_BENCH_BIN=$GATEHOUSE_BENCH_BIN is not an executable"
    return
  fi
  cargo build --release --locked --bin gatehouse >&2 || {
    [[ -n "${GATEHOUSE_BENCH_REUSE:-}" && -x $root/target/release/gatehouse ]] || exit 1
    echo "$bench: build failed; reusing target/release/gatehouse" >&2
  }
  bin=$root/target/release/gatehouse
}

# The Flask/google-auth/PyJWT venv (bench/gateway/requirements.txt) under target/.
bench_venv() {
  venv=$root/target/bench-venv
  if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "import flask, google.auth, jwt" 2>/dev/null; then
    python3 -m venv "$venv" \
      && "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/bench/gateway/requirements.txt" >&2
  fi
}

bench_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bench_pids=()
bench_cleanup() {
  for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap bench_cleanup EXIT

bench_wait_for() { # url [header]
  for _ in $(seq 1 400); do
    if curl -fsS -o /dev/null ${2:+-H "$2"} "$1" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  bench_fail "$1 did not come up"
}

# An nginx configuration in DIR/nginx.conf: with UPSTREAM_PORT given, nginx answering 200 "ok"
# there (the trivial upstream); with PROXY_PORT given, nginx proxying to UPSTREAM_PORT without
# authentication (the baseline proxy); WORKERS worker processes (default auto). Access log
# off. TOP and SERVER are extra lines for the top level and the proxy's server block.
bench_nginx_conf() { # dir serve-upstream(yes|no) upstream-port [proxy-port] [workers] [top] [server]
  local dir=$1 serve=$2 up=$3 proxy=${4:-} workers=${5:-auto} top=${6:-} server=${7:-}
  mkdir -p "$dir"
  {
    cat <<NGINX
$top
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
daemon off;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$up; keepalive 256; }
NGINX
    if [[ $serve == yes ]]; then
      echo "  server { listen 127.0.0.1:$up; location / { return 200 \"ok\\n\"; } }"
    fi
    if [[ -n $proxy ]]; then
      cat <<NGINX
  server {
    listen 127.0.0.1:$proxy;
    $server
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
NGINX
    fi
    echo "}"
  } >"$dir/nginx.conf"
}

# Starts nginx on DIR/nginx.conf in the background, on the CPUs listed (taskset) if any.
bench_nginx_start() { # dir [cpus]
  ${2:+taskset -c "$2"} nginx -c "$1/nginx.conf" &
  bench_pids+=($!)
}

# The trivial upstream on UPSTREAM_PORT and, with PROXY_PORT, the baseline proxy to it, an
# nginx of its own (in DIR-proxy), as the gateway is a process apart from the upstream: in
# one nginx, a worker would serve a proxied request and the upstream's answer to it in one
# pass of its event loop, without waking another process.
bench_nginx() { # dir upstream-port [proxy-port]
  bench_nginx_conf "$1" yes "$2"
  bench_nginx_start "$1"
  if [[ -n ${3:-} ]]; then
    bench_nginx_conf "$1-proxy" no "$2" "$3"
    bench_nginx_start "$1-proxy"
  fi
}

# A second baseline, in DIR on PORT: nginx proxying to UPSTREAM_PORT without
# authentication but sending the upstream the request the gateway BINARY sends for one
# carrying HEADER (its identity and forwarding headers, the token with its signature
# removed), captured by bench/gateway/headers.py through a gateway of its own (a route with
# the issuer and audience given) and set as static `proxy_set_header` values. It tells the
# proxy's own cost from the cost, to the upstream, of what the gateway must send.
bench_nginx_same() { # dir upstream-port port binary issuer jwks-url audience header
  local dir=$1 up=$2 port=$3 binary=$4 capture gw capturing capturer
  capture=$(bench_port) gw=$(bench_port)
  mkdir -p "$dir"
  bench_gateway_toml "$gw" "$capture" "$5" "$6" "$7" 16384 >"$dir/capture.toml"
  python3 "$root/bench/gateway/headers.py" "$capture" "$dir/upstream-headers" & capturing=$!
  for _ in $(seq 1 400); do [[ -e $dir/upstream-headers.listening ]] && break; sleep 0.05; done
  RUST_LOG=warn "$binary" proxy --config "$dir/capture.toml" >/dev/null & capturer=$!
  bench_pids+=("$capturer")
  bench_wait_for "http://127.0.0.1:$gw/_gatehouse/readyz"
  curl -fsS -o /dev/null -H "User-Agent:" -H "Accept:" -H "$8" "http://127.0.0.1:$gw/"
  wait "$capturing" || bench_fail "the gateway's upstream request was not captured"
  kill "$capturer"
  # nginx replaces proxy_set_header lists per level, so the lines go beside the location's.
  bench_nginx_conf "$dir" no "$up" "$port"
  python3 - "$dir/nginx.conf" "$(cat "$dir/upstream-headers")" <<'PY'
import sys
path, lines = sys.argv[1:3]
conf = open(path).read()
anchor = 'proxy_set_header Connection "";'
assert anchor in conf, "bench_nginx_conf's location changed"
open(path, "w").write(conf.replace(anchor, f"{anchor} {lines}"))
PY
  bench_nginx_start "$dir"
  bench_wait_for "http://127.0.0.1:$port/"
}

# A gateway config: one route to the upstream, the token's issuer with its JWKS URL, any
# authenticated caller allowed. Access log off (RUST_LOG=warn when started).
bench_gateway_toml() { # listen-port upstream-port issuer jwks-url audience cache-entries [route-line]
  cat <<TOML
listen = "127.0.0.1:$1"
watch_seconds = 0
[[route]]
upstream = "http://127.0.0.1:$2"
url = "$5"
issuers = [{ profile = "$3", jwks = "$4" }]
allow = ["allAuthenticatedUsers"]
verified_token_cache = $6
${7:-}
TOML
}
