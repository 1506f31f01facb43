//! Reload (file change and explicit), bad reloads, reload under load, graceful drain, TLS.

use crate::support::*;
use std::time::{Duration, Instant};

async fn wait_for_generation(gw: &Running, generation: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.handle.generation() < generation {
        assert!(Instant::now() < deadline, "no reload happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn file_change_reloads_policy_and_a_bad_file_keeps_the_old_one() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "watch_seconds = 1\n{}",
        checked_route(&issuer, up, &["user:alice@example.com"])
    ))
    .await;
    let c = client();
    let bob = issuer.token("bob@example.com");
    assert_eq!(
        c.get(gw.url("/"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(
        &gw.config_path,
        text.replace("user:alice@example.com", "user:bob@example.com"),
    )
    .unwrap();
    wait_for_generation(&gw, 2).await;
    assert_eq!(
        c.get(gw.url("/"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A broken file: refused with its line, the old configuration keeps serving.
    let good = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, format!("{good}\n[[route]\n")).unwrap();
    let error = gw.handle.reload().unwrap_err();
    assert!(error.line.is_some(), "{error}");
    assert_eq!(gw.handle.generation(), 2);
    assert_eq!(
        c.get(gw.url("/"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains("gatehouse_config_reloads_total{result=\"error\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn reload_under_load_fails_no_request() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["user:alice@example.com"])).await;
    let token = issuer.token("alice@example.com");
    let base = std::fs::read_to_string(&gw.config_path).unwrap();
    let stop = Instant::now() + Duration::from_secs(2);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let c = client();
        let url = gw.url("/");
        let token = token.clone();
        workers.push(tokio::spawn(async move {
            let mut ok = 0u32;
            while Instant::now() < stop {
                let r = c.get(&url).bearer_auth(&token).send().await.unwrap();
                assert_eq!(r.status(), 200);
                ok += 1;
            }
            ok
        }));
    }
    let mut reloads = 0;
    while Instant::now() < stop {
        // Alternate between two valid configurations that both admit alice.
        let text = if reloads % 2 == 0 {
            base.replace(
                "[\"user:alice@example.com\"]",
                "[\"user:alice@example.com\", \"user:bob@example.com\"]",
            )
        } else {
            base.clone()
        };
        std::fs::write(&gw.config_path, text).unwrap();
        gw.handle.reload().unwrap();
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert!(
        reloads >= 10 && total > 50,
        "{reloads} reloads, {total} requests"
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
    let url = gw.url("/_slow?ms=1500");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.handle.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused while the old request finishes.
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
    let r = in_flight.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "slow done");
    tokio::time::timeout(Duration::from_secs(5), gw.task)
        .await
        .unwrap()
        .unwrap();
}

/// A gateway serving TLS with a new self-signed certificate for `localhost`, `extra` added
/// to its configuration, in front of an echo route granting `members`: the gateway, the
/// certificate, and the issuer.
async fn tls_gateway(
    extra: &str,
    members: &[&str],
) -> (Running, rcgen::CertifiedKey<rcgen::KeyPair>, Issuer) {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = temp_dir();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let gw = gateway(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}{}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display(),
        checked_route(&issuer, up, members)
    ))
    .await;
    (gw, cert, issuer)
}

#[tokio::test]
async fn tls_with_rustls() {
    let (gw, cert, issuer) = tls_gateway("", &["allAuthenticatedUsers"]).await;
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", gw.addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/", gw.addr.port());
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    let seen = send(c.get(&url).bearer_auth(issuer.token("a@example.com"))).await;
    assert_eq!(seen.status, 200);
    assert_eq!(
        upstream_headers(&seen).header("x-forwarded-proto"),
        Some("https")
    );
    // ALPN decides the protocol: HTTP/2 when offered, HTTP/1.1 when that is all there is.
    let token = issuer.token("a@example.com");
    let r = c.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_2)
    );
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", gw.addr)
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );
}

#[tokio::test]
async fn connection_limit_and_idle_timeout() {
    use tokio::io::AsyncReadExt as _;
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "[limits]\nmax_connections = 1\n[timeouts]\nidle_seconds = 0.6\n{}",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;
    // One silent connection takes the only slot: another request waits...
    let mut held = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let blocked =
        tokio::time::timeout(Duration::from_millis(300), client().get(gw.url("/")).send()).await;
    assert!(
        blocked.is_err(),
        "a second connection was served beyond the limit"
    );
    // ...until the idle timeout closes the silent one (EOF on our side), freeing the slot.
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), held.read(&mut buf))
        .await
        .expect("idle connection was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A gateway with an admin listener, in front of a public echo route, `extra` added to its
/// configuration: its main and admin addresses.
async fn gateway_with_admin_listener(extra: &str) -> (std::net::SocketAddr, std::net::SocketAddr) {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let dir = temp_dir();
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{extra}{}",
            checked_route(&issuer, up, &["allUsers"])
        ),
    )
    .unwrap();
    let config = gatehouse_gateway::Config::from_file(&path).unwrap();
    let gw = gatehouse_gateway::Gateway::bind(config, Some(path))
        .await
        .unwrap();
    let main = gw.local_addr().unwrap();
    let admin = gw.admin_addr().unwrap();
    tokio::spawn(gw.run(std::future::pending()));
    (main, admin)
}

#[tokio::test]
async fn metrics_can_move_to_an_admin_listener() {
    let (main, admin) = gateway_with_admin_listener("").await;
    let c = client();
    let on_main = c
        .get(format!("http://{main}/_gatehouse/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_main.status(), 404);
    let on_admin = c
        .get(format!("http://{admin}/_gatehouse/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_admin.status(), 200);
    assert!(
        on_admin
            .text()
            .await
            .unwrap()
            .contains("gatehouse_requests_total")
    );
    // The admin listener proxies nothing.
    assert_eq!(
        c.get(format!("http://{admin}/"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// A gateway in front of a public echo route, with `header_read_seconds = 0.5`.
async fn public_gateway_reading_heads_for_half_a_second() -> (Issuer, Running) {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "[timeouts]\nheader_read_seconds = 0.5\n{}",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;
    (issuer, gw)
}

#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (_issuer, gw) = public_gateway_reading_heads_for_half_a_second().await;
    let mut slowloris = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slowloris
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slowloris.read_to_end(&mut buf))
        .await
        .expect("a half-sent request head kept its connection");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        client().get(gw.url("/")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn a_kept_alive_connection_gets_no_longer_for_its_next_head_however_it_trickles() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (_issuer, gw) = public_gateway_reading_heads_for_half_a_second().await;
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // One request answered in full, then the next head a byte every 100 ms: each byte is
    // activity, none makes a head.
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answered = Vec::new();
    while !String::from_utf8_lossy(&answered).contains("\r\n\r\n") {
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answered.extend_from_slice(&buf[..n]);
    }
    assert!(answered.starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    let (mut read, mut write) = conn.into_split();
    let trickle = tokio::spawn(async move {
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
            .take(600)
        {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut rest))
        .await
        .expect("a trickled head kept its connection");
    trickle.abort();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed only after {:?}",
        started.elapsed()
    );
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"),
        "the trickled request was answered"
    );
}

/// Collects log output in memory.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn access_log_has_the_decision_and_never_a_token() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || sink.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    // Global (a thread-local default races with other tests over callsite interest); the
    // lines of other tests' gateways land here too and are told apart by path below.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["user:alice@example.com"])).await;
    let good = issuer.token("alice@example.com");
    let other = issuer.token("eve@example.com");
    let c = client();
    c.get(gw.url(&format!("/ok?access_token={good}")))
        .bearer_auth(&good)
        .header(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        )
        .header("user-agent", "probe/1.0")
        .send()
        .await
        .unwrap();
    c.get(gw.url("/denied"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    c.get(gw.url("/bad"))
        .bearer_auth(format!("{good}x"))
        .send()
        .await
        .unwrap();
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let access: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "gatehouse::access")
        .filter(|v| {
            ["/ok", "/denied", "/bad"].contains(&v["fields"]["path"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(access.len(), 3, "{text}");
    assert_eq!(access[0]["fields"]["status"], 200);
    assert_eq!(access[0]["fields"]["email"], "alice@example.com");
    assert_eq!(access[0]["fields"]["route"], "checked");
    assert_eq!(access[0]["fields"]["path"], "/ok");
    assert_eq!(
        access[0]["fields"]["trace"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the trace id joins this line to the app's"
    );
    assert_eq!(access[0]["fields"]["user_agent"], "probe/1.0");
    assert_eq!(access[0]["fields"]["protocol"], "HTTP/1.1");
    assert_eq!(access[1]["fields"]["trace"], "");
    assert_eq!(access[1]["fields"]["status"], 403);
    assert_eq!(access[1]["fields"]["reason"], "not_invoker");
    assert_eq!(access[2]["fields"]["status"], 401);
    assert_eq!(access[2]["fields"]["reason"], "malformed");
    for token in [&good, &other] {
        let (_, payload_and_sig) = token.split_once('.').unwrap();
        assert!(!text.contains(payload_and_sig), "a token reached the log");
    }
}

#[tokio::test]
async fn connections_are_spread_over_the_workers() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "workers = 2\n{}",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;
    // A burst of keep-alive connections, as a load balancer's pool opens them (all queued
    // before a worker wakes): each is answered and then held open.
    let burst: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(gw.addr).unwrap())
        .collect();
    let mut held = Vec::new();
    for stream in burst {
        stream.set_nonblocking(true).unwrap();
        held.push(tokio::net::TcpStream::from_std(stream).unwrap());
    }
    for stream in &mut held {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
    }
    let text = metrics_text(&gw).await;
    let open = |worker: &str| -> i64 {
        let series = format!("gatehouse_worker_connections_open{{worker=\"{worker}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    };
    let (a, b) = (open("0"), open("1"));
    // The 20 held and the one asking for metrics.
    assert_eq!(a + b, 21, "{text}");
    assert!((a - b).abs() <= 3, "one worker holds {a}, the other {b}");
    drop(held);
}

/// The protocol is told from a connection's first bytes however they arrive: split
/// HTTP/1 heads (one that could still be the HTTP/2 preface, one that cannot) and an HTTP/2
/// preface sent in two pieces are each served in their protocol.
#[tokio::test]
async fn protocol_is_told_from_first_bytes_sent_in_pieces() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
    async fn exchange(addr: std::net::SocketAddr, pieces: &[&[u8]]) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        for piece in pieces {
            s.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer))
            .await
            .expect("no answer")
            .unwrap();
        answer.truncate(n);
        answer
    }
    for pieces in [
        &[&b"GE"[..], b"T / HTTP/1.1\r\nHost: a\r\n\r\n"][..],
        &[
            &b"P"[..],
            b"OST / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n",
        ][..],
    ] {
        let answer = exchange(gw.addr, pieces).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    // The preface in two pieces, then an empty SETTINGS frame: the server's first frame
    // back is its own SETTINGS (type 4).
    let answer = exchange(
        gw.addr,
        &[b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0"],
    )
    .await;
    assert!(answer.len() >= 9, "{answer:?}");
    assert_eq!(answer[3], 4, "{answer:?}");
}

/// Reads from `stream` until the gateway closes it; how long that took, or `None` if it
/// stayed open for `within`.
async fn closed_within(
    stream: tokio::net::tcp::OwnedReadHalf,
    within: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt as _;
    let started = Instant::now();
    let mut stream = stream;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn http2_connections_that_open_no_stream_are_closed_whatever_they_send() {
    use tokio::io::AsyncWriteExt as _;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    const PING: &[u8] = &[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let (_issuer, gw) = public_gateway_reading_heads_for_half_a_second().await;

    // A client that keeps its connection busy with pings, never a request: below the idle
    // timeout (300 s), past the header-read one.
    let (read, mut write) = tokio::net::TcpStream::connect(gw.addr)
        .await
        .unwrap()
        .into_split();
    write.write_all(PREFACE).await.unwrap();
    write.write_all(SETTINGS).await.unwrap();
    let pinging = tokio::spawn(async move {
        while write.write_all(PING).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let took = closed_within(read, Duration::from_secs(6)).await;
    pinging.abort();
    let took = took.expect("an HTTP/2 connection pinging without a request kept its place");
    assert!(took < Duration::from_secs(4), "{took:?}");

    // One whose preface trickles in, a byte at a time.
    let (read, mut write) = tokio::net::TcpStream::connect(gw.addr)
        .await
        .unwrap()
        .into_split();
    let trickling = tokio::spawn(async move {
        for byte in PREFACE {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        std::future::pending::<()>().await;
    });
    let took = closed_within(read, Duration::from_secs(6)).await;
    trickling.abort();
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(3)),
        "a trickled preface kept its connection: {took:?}"
    );

    // A request in flight is not cut: an HTTP/2 client waiting longer than the header-read
    // timeout for its answer gets it, and its connection serves the next.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..2 {
        let r = h2.get(gw.url("/_slow?ms=1200")).send().await.unwrap();
        assert_eq!(
            (r.status().as_u16(), r.version()),
            (200, reqwest::Version::HTTP_2)
        );
    }
}

#[tokio::test]
async fn tls_connections_that_say_nothing_are_closed_at_the_header_read_timeout() {
    let (gw, cert, _issuer) =
        tls_gateway("[timeouts]\nheader_read_seconds = 0.5\n", &["allUsers"]).await;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    for alpn in [&[b"h2".to_vec()][..], &[]] {
        let mut config = tokio_rustls::rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = alpn.to_vec();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(
            Duration::from_secs(6),
            tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "ALPN {alpn:?}: a silent TLS connection stayed open"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "ALPN {alpn:?}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn websocket_tunnels_are_drained_on_shutdown() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let issuer = Issuer::start().await;
    let ws_up = websocket_upstream().await;
    let open = |gw: &Running| {
        let url = format!("ws://{}/socket", gw.addr);
        async move { tokio_tungstenite::connect_async(url).await.unwrap().0 }
    };
    let toml = format!(
        "[timeouts]\nshutdown_grace_seconds = 2\n{}",
        checked_route(&issuer, ws_up, &["allUsers"])
    );

    let gw = gateway(&toml).await;
    let mut ws = open(&gw).await;
    gw.handle.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
    // The tunnel goes on while the gateway drains...
    ws.send(Message::text("still here")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the tunnel was cut at shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "still here");
    assert!(
        !gw.task.is_finished(),
        "the drain did not wait for the tunnel"
    );
    // ...and the drain ends when it closes.
    ws.close(None).await.unwrap();
    drop(ws);
    tokio::time::timeout(Duration::from_secs(1), gw.task)
        .await
        .expect("the drain went on after the tunnel closed")
        .unwrap();

    // One left open is cut at the grace period's end.
    let gw = gateway(&toml).await;
    let _ws = open(&gw).await;
    let started = Instant::now();
    gw.handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), gw.task)
        .await
        .expect("the drain outlived its grace period")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test]
async fn the_admin_listener_answers_when_the_main_one_is_full() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (main, admin) = gateway_with_admin_listener("[limits]\nmax_connections = 1\n").await;
    // The main listener's one place taken by a kept-alive connection (answered: taken).
    let mut held = tokio::net::TcpStream::connect(main).await.unwrap();
    held.write_all(b"GET /_gatehouse/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(2), held.read(&mut buf))
            .await
            .expect("the main listener's one place was taken by the admin listener")
            .unwrap();
        assert!(n > 0);
        answer.extend_from_slice(&buf[..n]);
    }
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        client()
            .get(format!("http://{admin}/_gatehouse/healthz"))
            .send(),
    )
    .await
    .expect("the admin listener waited for a place on the main one")
    .unwrap();
    assert_eq!(r.status(), 200);
}
