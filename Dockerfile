# The `gatehouse` binary in a small image, for Cloud Run or any container platform.
# docs/deploy.md shows how to build it (Cloud Build or `docker build .`) and deploy it.
#
# No Docker engine runs in this project's CI: this file is not built or tested there, and
# nothing in CI may depend on building it. It uses only the classic builder's syntax (no
# heredocs, no cache mounts), so `gcloud builds submit --tag ...` builds it as it is.
#
#   docker build -t gatehouse .
#   docker run --rm -p 8080:8080 -e PORT=8080 gatehouse vote       # the voting app, SQLite
#   docker run --rm -p 8080:8080 -e PORT=8080 -v "$PWD/gw:/etc/gatehouse:ro" gatehouse \
#     proxy --config /etc/gatehouse/gateway.toml                    # the gateway
#
# PORT, as Cloud Run sets it: `gatehouse vote` reads it itself (0.0.0.0:$PORT); for
# `proxy` and `idp` the entrypoint adds `--listen 0.0.0.0:$PORT` unless the arguments
# already give --listen. Without PORT the binary's own defaults apply (loopback only).

ARG RUST_VERSION=1

# ---------------------------------------------------------------------------------------
# Build: the release profile of Cargo.toml, the exact dependency versions of Cargo.lock.
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Debug info is dropped from the image's binary (about 100 MB -> 25 MB); symbol names
# stay, so a panic's backtrace still names its functions.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    CARGO_TERM_COLOR=never
# Only what the build reads: the workspace manifest, the lock file and the crates (the
# vote app's page assets are compiled in from crates/vote/src/static).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN cargo build --release --locked --bin gatehouse \
 && install -D -m 0755 target/release/gatehouse /out/gatehouse \
 && /out/gatehouse --version

# ---------------------------------------------------------------------------------------
# Runtime: Debian slim (the binary needs glibc and libgcc_s; /bin/sh runs the entrypoint),
# CA certificates for Google's key and token endpoints, and an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gatehouse \
 && useradd --system --uid 10001 --gid gatehouse --home-dir /var/lib/gatehouse \
      --create-home --shell /usr/sbin/nologin gatehouse
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
# The entrypoint maps Cloud Run's PORT to --listen for the subcommands that do not read
# PORT themselves, then execs the binary (so it is PID 1 and gets SIGTERM directly).
RUN printf '%s\n' \
      '#!/bin/sh' \
      '# Cloud Run sets PORT; `gatehouse vote` reads it itself, `proxy` and `idp` take --listen.' \
      'set -e' \
      'if [ -n "${PORT:-}" ]; then' \
      '  case "${1:-}" in' \
      '    proxy|idp)' \
      '      for arg in "$@"; do' \
      '        case "$arg" in --listen|--listen=*) exec /usr/local/bin/gatehouse "$@" ;; esac' \
      '      done' \
      '      command="$1"; shift' \
      '      exec /usr/local/bin/gatehouse "$command" --listen "0.0.0.0:${PORT}" "$@" ;;' \
      '  esac' \
      'fi' \
      'exec /usr/local/bin/gatehouse "$@"' \
      > /usr/local/bin/gatehouse-entrypoint \
 && chmod 0755 /usr/local/bin/gatehouse-entrypoint
USER 10001:10001
# --data (SQLite, the emulator's keys) defaults to ./.gatehouse: keep it writable.
WORKDIR /var/lib/gatehouse
# One JSON line per event with `severity`, as Cloud Logging reads it.
ENV GATEHOUSE_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gatehouse-entrypoint"]
CMD ["vote"]
