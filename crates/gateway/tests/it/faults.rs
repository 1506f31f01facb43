//! Faults around the gateway, each on real sockets: the key server vanishes and returns,
//! the upstream vanishes and returns (both on the same port, the gateway never restarted),
//! and slow-loris clients (dribbled heads, stalled and dribbled bodies, idle keep-alive
//! connections) against a small connection limit.

use crate::support::*;
use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse as _;
use axum::routing::get;
use gatehouse_verify::{FixedClock, SigningKey};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Longer than any answer may take here; reaching it means the request hung.
const HANG: Duration = Duration::from_secs(10);

/// A server that can vanish as its process would (listener and every open connection
/// closed at once) and come back on the same port.
struct Restartable {
    addr: SocketAddr,
    router: Router,
    task: Option<JoinHandle<()>>,
}

impl Restartable {
    async fn start(router: Router) -> Restartable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = Some(Restartable::serve(listener, router.clone()));
        Restartable { addr, router, task }
    }

    fn serve(listener: TcpListener, router: Router) -> JoinHandle<()> {
        tokio::spawn(async move {
            // Owned by this task: aborting it drops every connection with it.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let router = router.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(
                        move |r: hyper::Request<hyper::body::Incoming>| {
                            tower::ServiceExt::oneshot(router.clone(), r.map(Body::new))
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        })
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        assert!(
            TcpStream::connect(self.addr).await.is_err(),
            "still listening after stop"
        );
    }

    async fn restart(&mut self) {
        // The port was ours a moment ago; retry in case the kernel is slow to free it.
        let deadline = Instant::now() + HANG;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.task = Some(Restartable::serve(listener, self.router.clone()));
    }
}

/// An issuer whose key server can be stopped and restarted; its keys say `max-age=300`.
async fn restartable_issuer() -> (Issuer, Restartable) {
    let key = Arc::new(SigningKey::generate_rs256("k1").unwrap());
    let ec_key = Arc::new(SigningKey::generate_es256("e1").unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    let jwks = json!({"keys": [key.public_jwk().unwrap(), ec_key.public_jwk().unwrap()]});
    let counter = fetches.clone();
    let server = Restartable::start(Router::new().route(
        "/certs",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let jwks = jwks.clone();
            async move { ([("cache-control", "public, max-age=300")], axum::Json(jwks)) }
        }),
    ))
    .await;
    let issuer = Issuer {
        key,
        ec_key,
        addr: server.addr,
        fetches,
    };
    (issuer, server)
}

/// Status and JSON body of a GET with `token`, failing the test if no answer comes in time.
async fn get_with(c: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = c.get(url).timeout(HANG);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: no answer: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn key_server_outage_serves_cached_keys_within_the_staleness_bound_and_recovers() {
    // The cache's defaults: the server's max-age=300 is the freshness; the last good keys
    // keep serving for max_stale = 6 h past it; a failed fetch is not retried for 5 s.
    const FRESH: u64 = 300;
    const MAX_STALE: u64 = 6 * 3600;
    const BACKOFF: u64 = 5;
    let (issuer, mut key_server) = restartable_issuer().await;
    let up = echo_upstream().await;
    let t0 = now();
    let clock = FixedClock::at(t0);
    let (addr, _handle) = gateway_at(
        &checked_route(&issuer, up, &["allAuthenticatedUsers"]),
        &clock,
    )
    .await;
    let url = format!("http://{addr}/");
    let c = client();
    let (status, body) = get_with(&c, &url, Some(&token_at(&issuer, "a@example.com", t0))).await;
    assert_eq!(status, 200, "{body}");
    let fetched = issuer.fetches.load(Ordering::SeqCst);
    assert!(fetched >= 1);

    key_server.stop().await;

    // Fresh keys: nothing to fetch, tokens verify.
    clock.set(t0 + 60);
    let (status, body) =
        get_with(&c, &url, Some(&token_at(&issuer, "b@example.com", t0 + 60))).await;
    assert_eq!(status, 200, "{body}");

    // A kid the cache lacks: the refetch fails, and the token is refused for what it is.
    let stranger = SigningKey::generate_rs256("rotated-away").unwrap();
    let unknown = stranger
        .sign_jwt(&issuer.claims("c@example.com", json!({"iat": t0 + 60, "exp": t0 + 3660})))
        .unwrap();
    let (status, body) = get_with(&c, &url, Some(&unknown)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "unknown_kid", "{body}");
    assert_eq!(body["error"], "invalid_token", "{body}");

    // Stale but within the bound: background refreshes fail, the cached keys still serve,
    // to concurrent requests too.
    let stale = t0 + FRESH + MAX_STALE - 60;
    clock.set(stale);
    let mut batch = JoinSet::new();
    for i in 0..8 {
        let (c, url) = (c.clone(), url.clone());
        let token = token_at(&issuer, &format!("d{i}@example.com"), stale);
        batch.spawn(async move { get_with(&c, &url, Some(&token)).await });
    }
    while let Some(answer) = batch.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = get_with(&c, &format!("http://{addr}/_gatehouse/healthz"), None).await;
    assert_eq!(status, 200);

    // Past the bound: refused as the verifier's failure (503), never as the token's.
    let past = t0 + FRESH + MAX_STALE + 1;
    clock.set(past);
    let late = token_at(&issuer, "e@example.com", past);
    let (status, body) = get_with(&c, &url, Some(&late)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "keys_unavailable", "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let (status, _) = get_with(&c, &format!("http://{addr}/_gatehouse/healthz"), None).await;
    assert_eq!(status, 200, "the gateway stopped serving");

    // The key server returns on the same port: once the failure backoff has passed, the
    // next request fetches and verification works again, with no restart.
    key_server.restart().await;
    let deadline = Instant::now() + HANG;
    let mut at = past;
    loop {
        at += BACKOFF + 1;
        clock.set(at);
        let (status, body) =
            get_with(&c, &url, Some(&token_at(&issuer, "f@example.com", at))).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "no recovery: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(issuer.fetches.load(Ordering::SeqCst) > fetched);
    key_server.stop().await;
}

async fn slow_answer() -> axum::response::Response {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "late".into_response()
}

#[tokio::test]
async fn upstream_outage_is_502_without_hangs_and_recovers_on_the_same_port() {
    outage_and_recovery("").await;
}

/// The same over h2c: the worker's one connection to the upstream, gone with it, is
/// replaced once the upstream is back.
#[tokio::test]
async fn an_h2c_upstream_outage_is_502_without_hangs_and_recovers_on_the_same_port() {
    outage_and_recovery("upstream_h2c = true\n").await;
}

/// An upstream (the route's `options` set) dies under a request and while requests come,
/// then comes back on its port.
async fn outage_and_recovery(options: &str) {
    let issuer = Issuer::start().await;
    let mut upstream = Restartable::start(
        Router::new()
            .route("/_slow", get(slow_answer))
            .fallback(|| async { "up" }),
    )
    .await;
    let route = checked_route(&issuer, upstream.addr, &["allAuthenticatedUsers"]);
    let gw = gateway(&format!("{route}{options}")).await;
    let token = issuer.token("alice@example.com");
    let c = client();
    let burst = |path: &'static str| {
        let mut set = JoinSet::new();
        for _ in 0..16 {
            let (c, url, token) = (c.clone(), gw.url(path), token.clone());
            set.spawn(async move { get_with(&c, &url, Some(&token)).await });
        }
        set
    };
    // Concurrent requests leave several pooled keep-alive connections to the upstream.
    let mut warm = burst("/");
    while let Some(answer) = warm.join_next().await {
        assert_eq!(answer.unwrap().0, 200);
    }
    let in_flight = {
        let (c, url, token) = (c.clone(), gw.url("/_slow"), token.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            (get_with(&c, &url, Some(&token)).await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    upstream.stop().await;
    // The request the upstream died under is answered, not left hanging.
    let ((status, body), took) = in_flight.await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["reason"], "upstream_unavailable", "{body}");
    assert!(took < HANG, "{took:?}");
    // Every request, whether it draws a dead pooled connection or dials, is a quick 502.
    let mut down = burst("/");
    while let Some(answer) = down.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"], "bad_gateway", "{body}");
        assert_eq!(body["reason"], "upstream_unavailable", "{body}");
    }
    let (status, _) = get_with(&c, &gw.url("/_gatehouse/healthz"), None).await;
    assert_eq!(status, 200);

    upstream.restart().await;
    let deadline = Instant::now() + HANG;
    loop {
        let response = c
            .get(gw.url("/"))
            .bearer_auth(&token)
            .timeout(HANG)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            assert_eq!(response.text().await.unwrap(), "up");
            break;
        }
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut back = burst("/");
    while let Some(answer) = back.join_next().await {
        assert_eq!(answer.unwrap().0, 200);
    }
    assert_eq!(gw.handle.generation(), 1, "the gateway was reconfigured");
    let metrics = metric_text(&gw).await;
    // The request the upstream died under and the burst are counted as what they were.
    assert_eq!(
        gauge(
            &metrics,
            "gatehouse_requests_total{route=\"checked\",status=\"502\"}"
        ),
        17,
        "{metrics}"
    );
    upstream.stop().await;
}

/// Reads until the peer closes (EOF or reset); panics if it stays open past `HANG`.
async fn closed_by_peer(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let until = tokio::time::timeout(HANG, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        until.is_ok(),
        "the gateway kept the connection open; it sent {:?}",
        String::from_utf8_lossy(&seen)
    );
    seen
}

/// Connections the slow-loris clients opened, and how many of them the gateway closed.
#[derive(Default)]
struct Tally {
    opened: AtomicUsize,
    closed: AtomicUsize,
}

/// One slow-loris client: opens a connection and sends a request head a byte at a time,
/// forever; whenever the gateway closes it, counts that and opens another.
async fn slowloris(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: ";
    while !stop.load(Ordering::SeqCst) {
        let Ok(stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tally.opened.fetch_add(1, Ordering::SeqCst);
        let (mut read, mut write) = stream.into_split();
        let mut sent = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let byte = HEAD.get(sent).copied().unwrap_or(b'a');
                    sent += 1;
                    if write.write_all(&[byte]).await.is_err() {
                        tally.closed.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
                r = read.read(&mut buf) => {
                    if matches!(r, Ok(0) | Err(_)) {
                        tally.closed.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
        }
    }
}

async fn metric_text(gw: &Running) -> String {
    let response = client()
        .get(gw.url("/_gatehouse/metrics"))
        .timeout(HANG)
        .send()
        .await
        .unwrap();
    response.text().await.unwrap()
}

/// The value of the metric line `name` (a name with its labels).
fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_cannot_exhaust_the_connection_limit() {
    const LIMIT: usize = 4;
    const ATTACKERS: usize = 12;
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "[limits]\nmax_connections = {LIMIT}\n[timeouts]\nheader_read_seconds = 1\nidle_seconds = 30\n{}",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut attackers = JoinSet::new();
    for _ in 0..ATTACKERS {
        attackers.spawn(slowloris(gw.addr, stop.clone(), tally.clone()));
    }
    // Every attacker connected: they hold every slot and queue (the accept backlog is
    // first in, first out) ahead of the legitimate client.
    let deadline = Instant::now() + HANG;
    while tally.opened.load(Ordering::SeqCst) < ATTACKERS {
        assert!(Instant::now() < deadline, "the attackers could not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let served = tokio::time::timeout(
        Duration::from_secs(15),
        client().get(gw.url("/legit")).send(),
    )
    .await
    .expect("a legitimate client was starved by slow-loris connections")
    .unwrap();
    assert_eq!(served.status(), 200);
    eprintln!(
        "legitimate request served after {:?} behind {ATTACKERS} slow-loris clients (limit {LIMIT}, header_read 1 s); {} slow connections closed so far",
        started.elapsed(),
        tally.closed.load(Ordering::SeqCst)
    );
    // Not one of the dribbling clients ever completed a head, yet their connections end:
    // the header-read deadline is not extended by each byte.
    assert!(
        tally.closed.load(Ordering::SeqCst) >= LIMIT,
        "slow heads were not cut off"
    );

    stop.store(true, Ordering::SeqCst);
    while attackers.join_next().await.is_some() {}
    // Healthy afterwards: every slot is free again and requests are served at the limit.
    let deadline = Instant::now() + HANG;
    loop {
        let metrics = metric_text(&gw).await;
        // The connection asking is the one left open.
        if gauge(&metrics, "gatehouse_connections_open") <= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "slots stayed taken:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut batch = JoinSet::new();
    for _ in 0..LIMIT * 2 {
        let url = gw.url("/after");
        batch.spawn(async move { get_with(&client(), &url, None).await.0 });
    }
    while let Some(status) = batch.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
}

#[tokio::test]
async fn stalled_and_dribbled_bodies_and_idle_keep_alive_are_closed_by_their_timeouts() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "[timeouts]\nheader_read_seconds = 1\nidle_seconds = 1.5\nupstream_seconds = 4\n{}",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;
    let head = |len: usize| {
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").into_bytes()
    };

    // A body that stops after a few bytes: no byte moves either way, the idle timeout ends it.
    let mut stalled = TcpStream::connect(gw.addr).await.unwrap();
    stalled.write_all(&head(1000)).await.unwrap();
    stalled.write_all(b"0123456789").await.unwrap();
    let answered = closed_by_peer(&mut stalled).await;
    assert!(
        answered.is_empty() || !answered.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answered)
    );

    // A body dribbled a byte at a time keeps the connection busy, but the upstream (which
    // waits for the whole body) does not answer within upstream_seconds: 504, then closed.
    let mut dribbled = TcpStream::connect(gw.addr).await.unwrap();
    dribbled.write_all(&head(1000)).await.unwrap();
    let (mut read, mut write) = dribbled.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..1000 {
            if write.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(HANG, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("a dribbled body kept its connection past every timeout");
    writer.abort();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("upstream_timeout"), "{text}");

    // Keep-alive: one full exchange, then silence; the gateway closes the connection.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /_gatehouse/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"ok\n") {
        let n = tokio::time::timeout(HANG, idle.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200"));
    let rest = closed_by_peer(&mut idle).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));

    assert_eq!(
        client().get(gw.url("/")).send().await.unwrap().status(),
        200
    );
}
