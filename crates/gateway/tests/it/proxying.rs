//! Proxying: streaming both ways with flat memory, WebSocket, h2c both sides, limits,
//! timeouts, upstream failures, rate limits, keep-alive.

use crate::support::*;
use futures_util::StreamExt as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// A request body made up on the fly: `remaining` bytes in `chunk`-sized frames.
struct Generated {
    remaining: u64,
    chunk: bytes::Bytes,
}

impl http_body::Body for Generated {
    type Data = bytes::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        Poll::Ready(Some(Ok(http_body::Frame::data(
            self.chunk.slice(..n as usize),
        ))))
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

const MB: u64 = 1024 * 1024;

#[tokio::test]
async fn hundred_megabytes_stream_both_ways_with_flat_memory() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allAuthenticatedUsers"])).await;
    let token = issuer.token("a@example.com");
    let c = client();
    // Warm up (pools, caches) before measuring.
    c.get(gw.url("/")).bearer_auth(&token).send().await.unwrap();
    let before = rss_kib();

    // Upload: 100 MB generated on the fly; the echo counts it without keeping it.
    let total = 100 * MB;
    let body = Generated {
        remaining: total,
        chunk: bytes::Bytes::from(vec![b'u'; 256 * 1024]),
    };
    let seen = send(
        c.post(gw.url("/upload"))
            .bearer_auth(&token)
            .body(reqwest::Body::wrap(body)),
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.body["body_bytes"].as_u64(), Some(total));

    // Download: 100 MB streamed by the upstream, counted chunk by chunk here.
    let r = c
        .get(gw.url(&format!("/_download?bytes={total}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut r = r;
    let mut got = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        got += chunk.len() as u64;
    }
    assert_eq!(got, total);
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 40,
        "memory grew by {grown_mib} MiB moving 200 MB"
    );
}

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let issuer = Issuer::start().await;
    let ws_up = websocket_upstream().await;
    let gw = gateway(&checked_route(&issuer, ws_up, &["allAuthenticatedUsers"])).await;
    // Without a token the upgrade is refused before it reaches the upstream.
    let anon = format!("ws://{}/socket", gw.addr)
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(anon).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let mut request = format!("ws://{}/socket", gw.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", issuer.token("a@example.com"))
            .parse()
            .unwrap(),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data().len(), 100_000);
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn h2c_from_clients_and_to_upstreams() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "{}\n[[route]]\nname = \"h2up\"\npath_prefix = \"/h2\"\nupstream = \"http://{up}\"\nupstream_h2c = true\nallow = [\"allUsers\"]\n",
        checked_route(&issuer, up, &["allAuthenticatedUsers"])
    ))
    .await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .get(gw.url("/x"))
        .bearer_auth(issuer.token("a@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["version"], "HTTP/1.1");
    let seen = send(client().get(gw.url("/h2/y")).header("te", "trailers")).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.body["version"], "HTTP/2.0");
    // The one hop-by-hop value an HTTP/2 upstream needs (gRPC) survives.
    assert_eq!(upstream_headers(&seen).header("te"), Some("trailers"));
    // And the unauthenticated h2 request is still refused.
    assert_eq!(h2.get(gw.url("/x")).send().await.unwrap().status(), 401);
}

/// An h2c upstream recording, per request, the URL it was asked for (its authority is
/// `:authority`) and the port of the connection it came on.
async fn h2c_recording_upstream() -> (SocketAddr, Arc<std::sync::Mutex<Vec<(String, u16)>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let router = axum::Router::new().fallback({
        let seen = seen.clone();
        move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
              request: axum::extract::Request| {
            let seen = seen.clone();
            async move {
                assert_eq!(request.version(), http::Version::HTTP_2);
                seen.lock()
                    .unwrap()
                    .push((request.uri().to_string(), peer.port()));
                "ok"
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });
    (addr, seen)
}

/// Over h2c the app sees the host the client asked for, as `:authority`, as an HTTP/1.1
/// app sees it in `Host`; and the upstream connection is the route's, whatever hosts the
/// clients name (a pool keyed by the asked host would open one per name). Before the h2c
/// pool of its own, the upstream saw its own address as `:authority`.
#[tokio::test]
async fn an_h2c_upstream_sees_the_asked_host_on_one_connection() {
    let (up, seen) = h2c_recording_upstream().await;
    let gw = gateway(&format!(
        "workers = 1\n[[route]]\nupstream = \"http://{up}\"\nupstream_h2c = true\nallow = [\"allUsers\"]\n"
    ))
    .await;
    let c = client();
    for i in 0..12 {
        let r = c
            .get(gw.url(&format!("/n/{i}?q=1")))
            .header("host", format!("app-{i}.example:8443"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Without a `Host` (HTTP/1.0), the upstream's own authority.
    let mut raw = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    raw.write_all(b"GET /bare HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let seen = seen.lock().unwrap().clone();
    let urls: Vec<&str> = seen.iter().map(|(url, _)| url.as_str()).collect();
    let mut expected: Vec<String> = (0..12)
        .map(|i| format!("http://app-{i}.example:8443/n/{i}?q=1"))
        .collect();
    expected.push(format!("http://{up}/bare"));
    assert_eq!(urls, expected);
    let connections: std::collections::HashSet<u16> = seen.iter().map(|(_, port)| *port).collect();
    assert_eq!(connections.len(), 1, "upstream connections: {seen:?}");
}

#[tokio::test]
async fn limits_timeouts_and_upstream_failures() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = gateway(&format!(
        "[limits]\nmax_body_bytes = 1024\n[timeouts]\nupstream_seconds = 0.3\n{}\n[[route]]\nname = \"dead\"\npath_prefix = \"/dead\"\nupstream = \"http://{dead}\"\nallow = [\"allUsers\"]\n[[route]]\nname = \"patient\"\nhost = \"patient.example\"\nupstream = \"http://{up}\"\nupstream_seconds = 5\nallow = [\"allUsers\"]\n",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;
    let c = client();
    let seen = send(c.post(gw.url("/")).body(vec![0u8; 2048])).await;
    assert_eq!(seen.status, 413);
    assert_eq!(seen.body["reason"], "body_too_large");
    let seen = send(c.post(gw.url("/")).body(vec![0u8; 1000])).await;
    assert_eq!(seen.status, 200);
    // Streamed without a length: cut off at the limit, mid-stream.
    let chunked = Generated {
        remaining: 64 * 1024,
        chunk: bytes::Bytes::from(vec![b'c'; 512]),
    };
    let r = c
        .post(gw.url("/"))
        .body(reqwest::Body::wrap(chunked))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    let seen = send(c.get(gw.url("/_slow?ms=3000"))).await;
    assert_eq!(seen.status, 504);
    assert_eq!(seen.body["reason"], "upstream_timeout");
    // A route with its own upstream timeout (Cloud Run's per-service request timeout)
    // waits longer for the same upstream.
    let seen = send(
        c.get(gw.url("/_slow?ms=1000"))
            .header("host", "patient.example"),
    )
    .await;
    assert_eq!(seen.status, 200);
    let seen = send(c.get(gw.url("/dead/x"))).await;
    assert_eq!(seen.status, 502);
    assert_eq!(seen.body["reason"], "upstream_unavailable");
}

#[tokio::test]
async fn rate_limit_is_per_identity_with_retry_after() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "{}rate_limit = {{ per_second = 0.01, burst = 2 }}\n",
        checked_route(&issuer, up, &["allAuthenticatedUsers"])
    ))
    .await;
    let c = client();
    let alice = issuer.token("alice@example.com");
    for _ in 0..2 {
        assert_eq!(
            c.get(gw.url("/"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let r = c.get(gw.url("/")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // Another identity has its own bucket; a fresh token of the same identity does not.
    let bob = issuer.token("bob@example.com");
    assert_eq!(
        c.get(gw.url("/"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let alice2 = issuer.token_with("alice@example.com", serde_json::json!({"jti": "2"}));
    assert_eq!(
        c.get(gw.url("/"))
            .bearer_auth(&alice2)
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
    let c = client();
    for _ in 0..5 {
        assert_eq!(c.get(gw.url("/")).send().await.unwrap().status(), 200);
    }
    // Asked on the same client: its one connection serves this too.
    let text = metrics_via(&c, gw.addr).await;
    assert!(text.contains("gatehouse_connections_total 1\n"), "{text}");
}

/// An upstream that takes a while per request and records the most it ever had in flight.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let router = axum::Router::new().fallback({
        let (in_flight, most) = (in_flight.clone(), most.clone());
        move || {
            let (in_flight, most) = (in_flight.clone(), most.clone());
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        }
    });
    (serve(router).await, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bounds_requests_in_flight_to_the_upstream_and_queues_the_rest() {
    let issuer = Issuer::start().await;
    let (up, most) = counting_upstream().await;
    let gw = gateway(&format!(
        "{}concurrency = 2\n",
        checked_route(&issuer, up, &["allAuthenticatedUsers"])
    ))
    .await;
    let token = issuer.token("a@example.com");
    let c = client();
    let requests = (0..8).map(|_| c.get(gw.url("/")).bearer_auth(&token).send());
    for response in futures_util::future::join_all(requests).await {
        // Queued, not refused: every request gets its turn within the upstream timeout.
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "at most two in flight, and two were"
    );
    // The upstream latency is the upstream's own (150 ms each, 1.2 s for the eight), not the
    // queue's: counting the waits for a permit it would be ~3 s.
    let text = metrics_text(&gw).await;
    let sum: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_upstream_duration_seconds_sum "))
        .unwrap_or_else(|| panic!("no upstream latency in\n{text}"))
        .parse()
        .unwrap();
    assert!((1.2..2.2).contains(&sum), "upstream latency sum {sum} s");
}

#[tokio::test]
async fn concurrency_outside_cloud_runs_range_is_refused_at_start() {
    let issuer = Issuer::start().await;
    for bad in ["0", "1001"] {
        let toml = format!(
            "listen = \"127.0.0.1:0\"\n{}concurrency = {bad}\n",
            checked_route(&issuer, "127.0.0.1:9".parse().unwrap(), &["allUsers"])
        );
        let error = gatehouse_gateway::Config::from_toml(&toml, None).unwrap_err();
        assert!(error.to_string().contains("concurrency"), "{error}");
    }
}

/// A body malformed from its first chunk is a 400 `bad_request_body`, and the upstream is
/// sent nothing of the request (its head goes out with the body's first bytes): a request
/// the gateway refuses writes nothing. Before that, the head went out first and the
/// upstream saw a request cut short.
#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_error_not_the_upstreams() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let issuer = Issuer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let received = Arc::new(parking_lot::Mutex::new(Vec::<u8>::new()));
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    log.lock().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            b"POST /x HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\nnot chunked at all\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("bad_request_body"), "{head}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let seen = received.lock().clone();
    assert!(
        seen.is_empty(),
        "the upstream was sent: {}",
        String::from_utf8_lossy(&seen)
    );
}

/// An `https://` upstream: its certificate is checked (a self-signed one is refused unless
/// `upstream_ca` names it), it is sent its own name as `Host` (SNI and virtual host) with
/// the client's in `X-Forwarded-Host`, and it gets the identity headers as any upstream.
#[tokio::test]
async fn https_upstreams_are_checked_and_get_their_own_host() {
    let issuer = Issuer::start().await;
    let (port, ca) = tls_echo_upstream(&[]).await;
    let dir = temp_dir();
    std::fs::write(dir.join("upstream-ca.pem"), ca).unwrap();
    let route = checked_route(
        &issuer,
        "127.0.0.1:1".parse().unwrap(),
        &["allAuthenticatedUsers"],
    )
    .replace("http://127.0.0.1:1", &format!("https://localhost:{port}"));
    let token = issuer.token("a@example.com");

    let trusting = gateway(&format!(
        "upstream_ca = \"{}\"\n{route}",
        dir.join("upstream-ca.pem").display()
    ))
    .await;
    let seen = send(
        client()
            .get(trusting.url("/tls?x=1"))
            .header("host", "app.example")
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(seen.status, 200, "{:?}", seen.body);
    let up = upstream_headers(&seen);
    assert_eq!(seen.body["uri"], "/tls?x=1");
    assert_eq!(
        up.header("host"),
        Some(format!("localhost:{port}").as_str())
    );
    assert_eq!(up.header("x-forwarded-host"), Some("app.example"));
    assert_eq!(
        up.header("x-goog-authenticated-user-email"),
        Some("accounts.google.com:a@example.com")
    );
    assert!(
        up.header("authorization")
            .is_some_and(|v| v.ends_with(".SIGNATURE_REMOVED_BY_GOOGLE"))
    );

    // Without the CA the certificate is not trusted: a 502, and nothing reaches the app.
    let wary = gateway(&route).await;
    let r = client()
        .get(wary.url("/tls"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "upstream_unavailable");

    // A CA file that holds no certificate refuses the start, naming it.
    std::fs::write(dir.join("not-a-ca.pem"), "hello").unwrap();
    let config = gatehouse_gateway::Config::from_toml(
        &format!(
            "listen = \"127.0.0.1:0\"\nupstream_ca = \"{}\"\n{route}",
            dir.join("not-a-ca.pem").display()
        ),
        None,
    )
    .unwrap();
    let Err(error) = gatehouse_gateway::Gateway::bind(config, None).await else {
        panic!("a CA file without a certificate was accepted");
    };
    assert!(error.to_string().contains("not-a-ca.pem"), "{error}");
}

/// A TLS upstream that offers HTTP/2 by ALPN (as Cloud Run's front end does) is spoken to
/// in HTTP/2, with gRPC's `TE: trailers` kept; a WebSocket handshake to a TLS upstream
/// that offers both still goes in HTTP/1.1, the only version it exists in.
#[tokio::test]
async fn https_upstreams_speak_http2_when_offered_and_upgrades_in_http1() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let issuer = Issuer::start().await;
    let (h2_port, h2_ca) = tls_echo_upstream(&[b"h2", b"http/1.1"]).await;
    let (ws_port, ws_ca) = tls_websocket_upstream().await;
    let dir = temp_dir();
    std::fs::write(dir.join("upstream-ca.pem"), format!("{h2_ca}{ws_ca}")).unwrap();
    let route = checked_route(
        &issuer,
        "127.0.0.1:1".parse().unwrap(),
        &["allAuthenticatedUsers"],
    )
    .replace(
        "http://127.0.0.1:1",
        &format!("https://localhost:{h2_port}"),
    );
    let gw = gateway(&format!(
        "upstream_ca = \"{}\"\n{route}\n[[route]]\nname = \"ws\"\npath_prefix = \"/ws\"\nupstream = \"https://localhost:{ws_port}\"\nallow = [\"allUsers\"]\n",
        dir.join("upstream-ca.pem").display()
    ))
    .await;
    let token = issuer.token("a@example.com");

    for _ in 0..3 {
        let seen = send(
            client()
                .get(gw.url("/h2?x=1"))
                .header("host", "app.example")
                .header("te", "trailers")
                .bearer_auth(&token),
        )
        .await;
        assert_eq!(seen.status, 200, "{:?}", seen.body);
        assert_eq!(seen.body["version"], "HTTP/2.0");
        assert_eq!(
            seen.body["uri"],
            format!("https://localhost:{h2_port}/h2?x=1")
        );
        let up = upstream_headers(&seen);
        assert_eq!(up.header("te"), Some("trailers"));
        assert_eq!(up.header("x-forwarded-host"), Some("app.example"));
        assert_eq!(
            up.header("x-goog-authenticated-user-email"),
            Some("accounts.google.com:a@example.com")
        );
    }

    let request = format!("ws://{}/ws/socket", gw.addr)
        .into_client_request()
        .unwrap();
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("over TLS")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "over TLS");
    ws.close(None).await.unwrap();
}

/// The gateway serves a plain request (no body) itself and hands the connection to hyper at
/// the first that carries one: pipelined on one connection, every request is answered, in
/// order, each with its own body, none of the bytes read before the hand-over lost.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_hand_over() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
    let request = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n\
                   GET /two HTTP/1.1\r\nHost: a\r\n\r\n\
                   POST /three HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nfives\
                   GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (status, answer) = raw(gw.addr, request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{answer}");
    let at = |uri: &str| {
        answer
            .find(&format!("\"uri\":\"{uri}\""))
            .unwrap_or_else(|| panic!("no answer for {uri}: {answer}"))
    };
    assert!(at("/one") < at("/two") && at("/two") < at("/three") && at("/three") < at("/four"));
    assert_eq!(answer.matches("\"body_bytes\":5").count(), 1, "{answer}");
    assert_eq!(answer.matches("\"body_bytes\":0").count(), 3, "{answer}");
    // The last asked for the connection to close: it says so, and it closed (raw read to
    // its end within the time allowed).
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_websocket_to_an_h2c_route_goes_upstream_as_http1() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let ws_up = websocket_upstream().await;
    let gw = gateway(&format!(
        "[[route]]\nupstream = \"http://{ws_up}\"\nupstream_h2c = true\nallow = [\"allUsers\"]\n"
    ))
    .await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/socket", gw.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("over h2c's route")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "over h2c's route");
}
