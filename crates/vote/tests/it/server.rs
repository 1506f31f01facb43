//! The app on a real socket ([`gatehouse_vote::server::serve`]): a client that sends half a
//! request head is cut off after the header timeout and cannot hold up a shutdown past its
//! deadline; a request in flight at the stop still gets its answer; connections past the
//! cap wait until one closes.

use crate::support::*;
use gatehouse_vote::server::{ServerLimits, serve};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A request head cut off before its blank line.
const HALF_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: vote\r\n";

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(limits: ServerLimits) -> Server {
        let t = sqlite_app().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, t.app, &limits, async {
                let _ = stopped.await;
            })
            .await;
        });
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn half_head(&self) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(HALF_HEAD).await.unwrap();
        stream
    }

    /// `GET /healthz` on a new connection, closing it after the answer.
    async fn health(&self) -> String {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: vote\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut stream).await
    }

    fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// How long until the server closes `stream` (EOF or reset), if it does within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    tokio::time::timeout(limit, read_to_close(stream))
        .await
        .ok()
        .map(|_| started.elapsed())
}

fn limits(header_read: Duration, max_connections: usize, grace: Duration) -> ServerLimits {
    ServerLimits {
        header_read_timeout: header_read,
        max_connections,
        shutdown_grace: grace,
    }
}

#[tokio::test]
async fn a_half_sent_head_or_a_silent_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(limits(Duration::from_secs(1), 16, Duration::from_secs(5))).await;
    let mut half = server.half_head().await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let (half_closed, silent_closed) = tokio::join!(
        closed_within(&mut half, Duration::from_secs(5)),
        closed_within(&mut silent, Duration::from_secs(5)),
    );
    for (what, closed) in [("half head", half_closed), ("silent", silent_closed)] {
        let after = closed.unwrap_or_else(|| panic!("{what}: still open after 5 s"));
        assert!(
            after >= Duration::from_millis(900),
            "{what}: closed after {after:?}"
        );
    }
    // Complete requests are served as before.
    assert!(server.health().await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_half_sent_head_does_not_hold_up_the_shutdown_past_its_deadline() {
    let grace = Duration::from_secs(1);
    let mut server = Server::start(limits(Duration::from_secs(30), 16, grace)).await;
    let mut half = server.half_head().await;
    // A keep-alive connection idle after its answer does not hold it up either.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: vote\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let stopped = Instant::now();
    server.stop();
    tokio::time::timeout(grace + Duration::from_secs(2), &mut server.task)
        .await
        .expect("serve still running 2 s past the shutdown deadline")
        .unwrap();
    assert!(stopped.elapsed() >= grace - Duration::from_millis(100));
    assert!(
        closed_within(&mut half, Duration::from_secs(1))
            .await
            .is_some()
    );
    // The listener is closed: new connections are refused.
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn a_request_in_flight_at_the_stop_gets_its_answer() {
    let mut server =
        Server::start(limits(Duration::from_secs(30), 16, Duration::from_secs(10))).await;
    let token = token_for("drain");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: vote\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\n\r\nteam="
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = Instant::now();
    server.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(b"CATS").await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("Vote successfully cast for 'CATS'"),
        "{answer}"
    );
    // Drained, so done long before the deadline.
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("serve did not finish after its last request")
        .unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let server = Server::start(limits(Duration::from_secs(30), 2, Duration::from_secs(1))).await;
    let first = server.half_head().await;
    let _second = server.half_head().await;
    let waiting = tokio::spawn({
        let addr = server.addr;
        async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: vote\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            (Instant::now(), read_to_close(&mut stream).await)
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served past the cap of 2"
    );
    let freed = Instant::now();
    drop(first);
    let (_, answer) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("still waiting after a slot was freed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(freed.elapsed() < Duration::from_secs(5));
}
