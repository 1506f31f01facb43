//! The edges of talking to upstreams: which upgrades are tunnelled (h2c smuggling), what a
//! tunnel holds while it is open (its connection's slot, the idle timeout), which upstream
//! connections go back to the pool, and how an upstream's contradictory, malformed or
//! unusual framing is passed on (or refused).

use crate::support::*;
use futures_util::{SinkExt as _, StreamExt as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// What an HTTP/2 client sends first, and what an h2c tunnel would carry.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

/// Reads one HTTP/1.1 response (its body framed by `Content-Length`): its head and body.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("no response head within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("no response body within 10 s")
            .unwrap();
        assert!(n > 0, "closed mid-body: {head}");
        buf.extend_from_slice(&chunk[..n]);
    }
    (head, buf[head_end..head_end + length].to_vec())
}

/// Everything `stream` sends until it closes, or until `wait` passes.
async fn read_for(stream: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = timeout(wait, async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    got
}

/// An upstream that answers the first request head on every connection, WebSocket
/// handshake or not, with a 101 to h2c (as Hypercorn answers `Upgrade: h2c`), then echoes
/// every byte as a tunnel would. Every byte it was sent, on any connection, is recorded.
async fn h2c_switching_upstream() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    record.lock().unwrap().extend_from_slice(&chunk[..n]);
                    head.extend_from_slice(&chunk[..n]);
                    if contains(&head, b"\r\n\r\n") {
                        break;
                    }
                }
                let switch = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
                if stream.write_all(switch).await.is_err() {
                    return;
                }
                loop {
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    record.lock().unwrap().extend_from_slice(&chunk[..n]);
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

fn lowercase(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_ascii_lowercase()
}

/// After a refused upgrade, bytes the client sends on as if it had its tunnel (an HTTP/2
/// preface and an empty SETTINGS frame) do not come back echoed: no tunnel opened.
async fn no_tunnel_after(client: &mut TcpStream) {
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    // The gateway may already have closed the connection: a write error is no tunnel too.
    let _ = client.write_all(&bytes).await;
    let back = read_for(client, Duration::from_secs(3)).await;
    assert!(
        !contains(&back, PREFACE),
        "the preface came back through a tunnel: {:?}",
        String::from_utf8_lossy(&back)
    );
}

/// The h2c smuggling attack (`Connection: Upgrade, HTTP2-Settings`, `Upgrade: h2c`): the
/// upgrade is not forwarded, the request goes on as an ordinary one, and the upstream's 101
/// to it (Hypercorn's answer to h2c) is a 502 `upstream_bad_upgrade`, not a tunnel that
/// would carry further requests past routing and policy. Guards `headers::take_hop_by_hop`
/// (only a WebSocket handshake is an upgrade) and `proxy::forward` (a 101 nobody asked for
/// is refused); before them the upstream saw `Upgrade: h2c`, the client got the 101 and its
/// preface reached the upstream through the tunnel.
#[tokio::test]
async fn h2c_upgrade_is_not_forwarded_and_an_unasked_101_opens_no_tunnel() {
    let issuer = Issuer::start().await;
    let (up, received) = h2c_switching_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(
            b"GET /x HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, body) = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "bad_gateway", "reason": "upstream_bad_upgrade"})
    );
    no_tunnel_after(&mut client).await;

    let seen = lowercase(&received.lock().unwrap());
    assert!(seen.starts_with("get /x http/1.1\r\n"), "{seen}");
    assert!(!seen.contains("upgrade: h2c"), "h2c was forwarded: {seen}");
    assert!(
        !seen.contains("\r\nupgrade:"),
        "an upgrade was forwarded: {seen}"
    );
    assert!(!seen.contains("http2-settings"), "{seen}");
    assert!(
        !seen.contains("pri * http/2.0"),
        "the preface reached the upstream: {seen}"
    );
}

/// A WebSocket handshake is forwarded as one, but a 101 to it that switches to another
/// protocol (h2c) is a 502 `upstream_bad_upgrade` and opens no tunnel; and a handshake as
/// Firefox sends it (`Connection: keep-alive, Upgrade`, `Upgrade: WebSocket`) still
/// tunnels to a real WebSocket upstream. Guards `proxy::forward`'s check of the 101's
/// `Upgrade` (before it, the h2c 101 was passed on and the tunnel opened) without the fix
/// refusing real handshakes.
#[tokio::test]
async fn a_websocket_handshake_switched_to_another_protocol_is_refused_and_real_ones_tunnel() {
    let issuer = Issuer::start().await;
    let (up, received) = h2c_switching_upstream().await;
    let ws_up = websocket_upstream().await;
    let gw = gateway(&format!(
        "{}\n[[route]]\nname = \"ws\"\npath_prefix = \"/ws\"\nupstream = \"http://{ws_up}\"\nallow = [\"allUsers\"]\n",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;

    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(
            b"GET /socket HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, body) = read_response(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "bad_gateway", "reason": "upstream_bad_upgrade"})
    );
    no_tunnel_after(&mut client).await;
    let seen = lowercase(&received.lock().unwrap());
    // The handshake itself went to the upstream as one.
    assert!(seen.starts_with("get /socket http/1.1\r\n"), "{seen}");
    assert!(seen.contains("\r\nupgrade: websocket\r\n"), "{seen}");
    assert!(
        !seen.contains("pri * http/2.0"),
        "the preface reached the upstream: {seen}"
    );

    let mut request = format!("ws://{}/ws/socket", gw.addr)
        .into_client_request()
        .unwrap();
    let h = request.headers_mut();
    h.insert("connection", "keep-alive, Upgrade".parse().unwrap());
    h.insert("upgrade", "WebSocket".parse().unwrap());
    let (mut ws, response) = timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("no handshake within 10 s")
    .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("still tunnelled")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "still tunnelled");
    ws.close(None).await.unwrap();
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket through the gateway (within 10 s), shown live by one echoed message.
async fn open_ws(addr: SocketAddr, hello: &str) -> Ws {
    let request = format!("ws://{addr}/socket").into_client_request().unwrap();
    let (mut ws, response) = timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("no WebSocket handshake within 10 s")
    .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text(hello)).await.unwrap();
    let echoed = timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no echo within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), hello);
    ws
}

/// Closes a WebSocket and reads it to its end.
async fn close_ws(mut ws: Ws) {
    ws.close(None).await.unwrap();
    let _ = timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// `gatehouse_connections_open`, asked on a connection of its own that closes after the
/// answer (so that it holds no place afterwards); waits up to 10 s to be served.
async fn connections_open(gw: &Running) -> u64 {
    let text = timeout(Duration::from_secs(10), async {
        client()
            .get(gw.url("/_gatehouse/metrics"))
            .header("connection", "close")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    })
    .await
    .expect("the metrics were not served within 10 s");
    text.lines()
        .find_map(|l| l.strip_prefix("gatehouse_connections_open "))
        .unwrap_or_else(|| panic!("no gatehouse_connections_open in\n{text}"))
        .parse()
        .unwrap()
}

/// A WebSocket tunnel is its client connection going on: it keeps that connection's place
/// under `[limits] max_connections` and in `gatehouse_connections_open` while open, and
/// gives it back when it closes. At the limit the gateway stops accepting (new connections
/// wait in the kernel's backlog, they are not refused), so "not served" is observed as a
/// client timing out after 1.5 s. Guards `server::Slot` held by the tunnel: before it, the
/// slot was given back at the upgrade, so the gauge missed open tunnels and a third
/// connection was served beside two tunnels with `max_connections = 2`.
#[tokio::test]
async fn a_websocket_tunnel_holds_its_connection_slot_until_it_closes() {
    let issuer = Issuer::start().await;
    let ws_up = websocket_upstream().await;
    let gw = gateway(&format!(
        "[limits]\nmax_connections = 2\n{}",
        checked_route(&issuer, ws_up, &["allUsers"])
    ))
    .await;

    let first = open_ws(gw.addr, "first").await;
    // The tunnel and the connection asking.
    assert_eq!(
        connections_open(&gw).await,
        2,
        "an open tunnel is not counted"
    );

    let second = open_ws(gw.addr, "second").await;
    // Two tunnels fill the limit: a third connection waits, unserved.
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    match patient.get(gw.url("/_gatehouse/metrics")).send().await {
        Err(error) => assert!(error.is_timeout(), "{error}"),
        Ok(r) => panic!(
            "served beside two open tunnels with max_connections = 2: {}",
            r.status()
        ),
    }

    // Closing one tunnel gives its place back: served again (the second tunnel and the
    // connection asking are open).
    close_ws(first).await;
    assert_eq!(connections_open(&gw).await, 2);

    close_ws(second).await;
    let mut open = connections_open(&gw).await;
    for _ in 0..100 {
        if open == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        open = connections_open(&gw).await;
    }
    assert_eq!(open, 1, "a closed tunnel still counted open");
}

/// A tunnel with nothing moving for `[timeouts] idle_seconds` is closed, as an idle
/// connection is; one that keeps exchanging messages more often than that stays open.
/// Guards the idle timeout on tunnels in `proxy::forward` (`server::until_idle`): before
/// it, a silent tunnel stayed open for ever (and with it its place under the limit).
#[tokio::test]
async fn an_idle_tunnel_closes_and_a_busy_one_stays_open() {
    let issuer = Issuer::start().await;
    let ws_up = websocket_upstream().await;
    let gw = gateway(&format!(
        "[timeouts]\nidle_seconds = 1\n{}",
        checked_route(&issuer, ws_up, &["allUsers"])
    ))
    .await;

    let busy = async {
        let mut ws = open_ws(gw.addr, "busy").await;
        // Every 300 ms for 3 s, three times the idle timeout in all.
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let text = format!("message {i}");
            ws.send(Message::text(text.clone()))
                .await
                .unwrap_or_else(|e| panic!("a busy tunnel closed before message {i}: {e}"));
            let echoed = timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("no echo within 5 s")
                .unwrap_or_else(|| panic!("a busy tunnel closed before echo {i}"))
                .unwrap_or_else(|e| panic!("a busy tunnel failed at echo {i}: {e}"));
            assert_eq!(echoed.into_text().unwrap().as_str(), text);
        }
        close_ws(ws).await;
    };

    let silent = async {
        let mut ws = open_ws(gw.addr, "silent").await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        match timeout(Duration::from_secs(5), ws.next()).await {
            Err(_) => panic!("a tunnel silent for 4 s with idle_seconds = 1 is still open"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {}
            Ok(Some(Ok(other))) => panic!("unexpected message on an idle tunnel: {other:?}"),
        }
    };

    tokio::join!(busy, silent);
}

/// An upstream that answers every request head at once with `200 ok`, without reading the
/// body (an early answer, as to an upload it refuses), and keeps the connection open,
/// reading and discarding whatever comes. Counts the connections it was given.
async fn early_answer_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&chunk[..n]);
                    while let Some(i) = find(&pending, b"\r\n\r\n") {
                        pending.drain(..i + 4);
                        if stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    // Only a terminator's start can straddle two reads.
                    let keep = pending.len().saturating_sub(3);
                    pending.drain(..keep);
                }
            });
        }
    });
    (addr, connections)
}

/// An upstream connection whose request body is still going out when its response has
/// ended is not put back in the pool: the next request would wait behind that upload
/// (here for ever, the uploading client having stalled) and end in a 504. Guards
/// `exchange::AnswerBody::finish`, which reuses a connection only once its upload is done. One worker, so that both requests share
/// its pool; the route's `upstream_seconds = 2` makes the failure show within the test.
#[tokio::test]
async fn an_upstream_connection_still_taking_an_upload_is_not_reused() {
    let issuer = Issuer::start().await;
    let (up, upstream_connections) = early_answer_upstream().await;
    let gw = gateway(&format!(
        "workers = 1\n{}upstream_seconds = 2\n",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;

    let mut uploader = TcpStream::connect(gw.addr).await.unwrap();
    uploader
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: app.example\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n",
        )
        .await
        .unwrap();
    uploader.write_all(&[b'a'; 300]).await.unwrap();
    // The upstream answered without waiting for the rest, which never comes: the uploader
    // stalls with its connection open.
    let (head, body) = read_response(&mut uploader).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok");

    let r = client()
        .get(gw.url("/"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(
        status, 200,
        "the next request waited behind a stalled upload: {text}"
    );
    assert_eq!(text, "ok");
    assert_eq!(upstream_connections.load(Ordering::SeqCst), 2);
    drop(uploader);
}

/// An upstream answering with both `Transfer-Encoding: chunked` and `Content-Length: 5` and
/// a 20-byte chunked body: the encoding frames it (RFC 9112 §6.3), and the client gets all
/// 20 bytes, correctly framed. Guards `headers::strip_hop_by_hop` dropping the length
/// along with `Transfer-Encoding`: before it, the stale `Content-Length: 5` was passed on
/// with 20 bytes of body.
#[tokio::test]
async fn a_chunked_answer_with_a_content_length_too_reaches_the_client_whole() {
    const BODY: &str = "abcdefghijklmnopqrst";
    let up = answering_upstream(format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n{:x}\r\n{BODY}\r\n0\r\n\r\n",
        BODY.len()
    ))
    .await;
    let issuer = Issuer::start().await;
    let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
    let r = client()
        .get(gw.url("/"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), BODY);
}

/// An answer under a transfer coding besides `chunked` (`gzip, chunked`): hyper takes off
/// only `chunked`, so the client would get gzip bytes under no label. A 502
/// `upstream_bad_framing` instead.
#[tokio::test]
async fn an_answer_in_a_coding_not_understood_is_a_502() {
    let up = answering_upstream(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            .to_owned(),
    )
    .await;
    let issuer = Issuer::start().await;
    let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
    let seen = send(client().get(gw.url("/"))).await;
    assert_eq!(seen.status, 502);
    assert_eq!(seen.body["reason"], "upstream_bad_framing");
}

/// An upstream answering with bytes past the end of its answer (a second answer, as a
/// response-splitting bug would send): the connection that carried them is never used
/// again, so no later request gets the smuggled answer. One worker, so that every request
/// would share the one pooled connection.
#[tokio::test]
async fn bytes_past_an_answers_end_never_answer_the_next_request() {
    let up = answering_upstream(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
            .to_owned(),
    )
    .await;
    let issuer = Issuer::start().await;
    let gw = gateway(&format!(
        "workers = 1\n{}",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;
    let client = client();
    for i in 0..5 {
        let r = client.get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok", "request {i}");
    }
}

/// Interim answers (`100 Continue`, `103 Early Hints`) before the final one are passed
/// over; a chunked answer's trailers are read and dropped, its body arriving whole; an
/// answer with no length runs until the upstream closes (HTTP/1.0 style).
#[tokio::test]
async fn interim_answers_trailers_and_close_delimited_bodies() {
    let issuer = Issuer::start().await;
    let interim = answering_upstream(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nmade"
            .to_owned(),
    )
    .await;
    let gw = gateway(&checked_route(&issuer, interim, &["allUsers"])).await;
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().await.unwrap(), "made");

    let trailers = answering_upstream(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"
            .to_owned(),
    )
    .await;
    let gw = gateway(&checked_route(&issuer, trailers, &["allUsers"])).await;
    for _ in 0..3 {
        let r = client().get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "abcde");
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closing = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while find(&head, b"\r\n\r\n").is_none() {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil ").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = stream.write_all(b"the end").await;
                // Dropped: the close ends the body.
            });
        }
    });
    let gw = gateway(&checked_route(&issuer, closing, &["allUsers"])).await;
    for _ in 0..3 {
        let r = client().get(gw.url("/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "until the end");
    }
}

/// Answers no proxy should pass on: a head past 64 KiB, a malformed head, a
/// `Content-Length` that is not one number, bytes that end mid-head. Each is a 502 and
/// the gateway goes on serving.
#[tokio::test]
async fn malformed_answers_are_a_502() {
    let issuer = Issuer::start().await;
    let long = "v".repeat(70 * 1024);
    for (answer, reason) in [
        (
            format!("HTTP/1.1 200 OK\r\nX-Long: {long}\r\nContent-Length: 2\r\n\r\nok"),
            "upstream_unavailable",
        ),
        (
            "HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 2\r\n\r\nok".to_owned(),
            "upstream_unavailable",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".to_owned(),
            "upstream_bad_framing",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok".to_owned(),
            "upstream_bad_framing",
        ),
    ] {
        let up = answering_upstream(answer).await;
        let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
        let seen = send(client().get(gw.url("/"))).await;
        assert_eq!(seen.status, 502, "{reason}");
        assert_eq!(seen.body["reason"], reason);
        let healthz = client()
            .get(gw.url("/_gatehouse/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(healthz.status(), 200);
    }
}

/// A raw upstream giving every request head the same `answer`, on keep-alive connections.
async fn answering_upstream(answer: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    head.extend_from_slice(&chunk[..n]);
                    if let Some(i) = find(&head, b"\r\n\r\n") {
                        head.drain(..i + 4);
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    up
}

/// A connection's requests and answers pass through one header map in turn (the request's,
/// emptied, holds the answer; hyper hands the answer's back for the next request): an
/// answer carries only the upstream's fields, never the request's (its token, the
/// gateway's identity headers), and a request none of the previous answer's.
#[tokio::test]
async fn requests_and_answers_on_one_connection_never_share_a_field() {
    use axum::response::IntoResponse as _;
    let up = serve(axum::Router::new().fallback(axum::routing::any(
        |request: axum::extract::Request| async move {
            let names: Vec<String> = request
                .headers()
                .keys()
                .map(|k| k.as_str().to_owned())
                .collect();
            let mut response = names.join(",").into_response();
            for i in 0..24 {
                response.headers_mut().insert(
                    http::HeaderName::try_from(format!("x-answer-only-{i}")).unwrap(),
                    http::HeaderValue::from_static("a"),
                );
            }
            response
        },
    )))
    .await;
    let issuer = Issuer::start().await;
    let gw = gateway(&format!(
        "workers = 1\n{}",
        checked_route(&issuer, up, &["allAuthenticatedUsers"])
    ))
    .await;
    let client = client();
    let token = issuer.token("alice@example.com");
    for i in 0..4 {
        let r = client
            .get(gw.url("/"))
            .bearer_auth(&token)
            .header("x-client-only", "c")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        for name in [
            "x-client-only",
            "authorization",
            "x-goog-authenticated-user-email",
            "x-goog-authenticated-user-id",
            "x-goog-iap-jwt-assertion",
            "x-forwarded-for",
            "forwarded",
        ] {
            assert!(!r.headers().contains_key(name), "answer {i} carries {name}");
        }
        assert_eq!(r.headers().get("x-answer-only-23").unwrap(), "a");
        let seen = r.text().await.unwrap();
        let seen: Vec<&str> = seen.split(',').collect();
        assert!(seen.contains(&"x-client-only"), "request {i}: {seen:?}");
        assert!(
            seen.contains(&"x-goog-iap-jwt-assertion"),
            "request {i}: {seen:?}"
        );
        assert!(
            !seen.iter().any(|n| n.starts_with("x-answer-only")),
            "request {i} carried the previous answer's fields: {seen:?}"
        );
    }
}
