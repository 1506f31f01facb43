//! One worker's plain HTTP/1.1 upstream connections: idle ones kept per upstream origin
//! and reused most recently used first, a connection handed back only once its answer has
//! been read to the end and its request's body has gone out in full.
//!
//! Why not hyper-util's pooled client, as for h2c and TLS upstreams: it is built for many
//! threads and guards every step accordingly (checkout, a task spawned per request to hand
//! a connection back, origin hashing: ~9,000 of ~54,000 instructions a proxied request
//! cost), and under it each connection is a hyper client connection, a task of its own fed
//! through a channel. Here a worker owns its connections and the request's own task talks
//! to the socket (`exchange`), so taking and returning one is a short lock held by one
//! thread.

use crate::exchange::{self, AnswerBody, Conn, ExchangeError, Head, Release, Room};
use axum::body::Body;
use http::uri::{Authority, Uri};
use http::{Method, Request, Response};
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tower::Service as _;

/// How long an idle connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(90);
/// A connection idle this long may be closed by the upstream (its own keep-alive timeout:
/// 2 s for gunicorn, 5 s for Node.js) just as a request goes out on it.
const STALE_AFTER: Duration = Duration::from_secs(1);
/// The most idle connections kept per origin.
const MAX_IDLE: usize = 1024;

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    #[error("upstream URL has no host")]
    NoAuthority,
    #[error("connect: {0}")]
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// A WebSocket handshake, which goes through hyper.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

impl PoolError {
    /// Whether the upstream's answer was framed in a way this proxy does not forward.
    pub(crate) fn is_bad_framing(&self) -> bool {
        matches!(self, PoolError::Exchange(ExchangeError::Framing(_)))
    }

    /// Whether the client's body did not match the length its head declared.
    pub(crate) fn is_body_length(&self) -> bool {
        matches!(self, PoolError::Exchange(ExchangeError::BodyLength))
    }
}

pub(crate) struct Http1Pool {
    connector: HttpConnector,
    /// Per origin, oldest first. A list searched in order, not a hash map: a worker talks
    /// to a handful of origins, and hashing an `Authority` (byte by byte, lowercased) cost
    /// more than the rest of taking and returning a connection. Origins are told apart by
    /// their spelling (see [`same_origin`]).
    idle: parking_lot::Mutex<Vec<(Authority, VecDeque<Idle>)>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl std::fmt::Debug for Http1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Pool").finish_non_exhaustive()
    }
}

/// Where an answer's connection goes back to.
struct Home {
    pool: Arc<Http1Pool>,
    origin: Authority,
}

impl Release for Home {
    fn release(self, conn: Conn) {
        self.pool.put(self.origin, conn);
    }
}

impl Http1Pool {
    pub(crate) fn new(connector: HttpConnector) -> Self {
        Http1Pool {
            connector,
            idle: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (origin-form target, `Host` set, hop-by-hop headers gone) to
    /// `upstream`'s origin on an idle connection, or a new one, and returns the answer,
    /// its body streaming. A connection found closed before the request went out is passed
    /// over and the request tried on the next. An idempotent request without a body that
    /// a connection idle for a while lost (closed by the upstream as it went out, no answer
    /// begun) is sent again once, on a new connection, as nginx does.
    pub(crate) async fn send(
        self: &Arc<Self>,
        upstream: &Uri,
        request: Request<Body>,
        added: &[(http::HeaderName, http::HeaderValue)],
    ) -> Result<Response<Body>, PoolError> {
        let origin = upstream.authority().ok_or(PoolError::NoAuthority)?.clone();
        let head = Head::encode(&request, added);
        let (parts, body) = request.into_parts();
        let mut room = Room::new(parts.headers);
        if head.has_body() {
            let conn = match self.take(&origin) {
                Some((conn, _)) => conn,
                None => self.connect(upstream).await?,
            };
            let (conn, answer, upload) = exchange::with_body(conn, head, body, room).await?;
            let body = AnswerBody::new(conn, &answer, upload, self.home(origin));
            return Ok(exchange::response(answer, body));
        }
        drop(body);
        while let Some((mut conn, idle_for)) = self.take(&origin) {
            match exchange::without_body(&mut conn, &head, &mut room).await {
                Ok(answer) => return Ok(self.respond(origin, conn, answer)),
                // Gone before the request went out: nothing was asked of the upstream.
                Err(ExchangeError::Unsent(_)) => continue,
                Err(ExchangeError::ClosedBeforeAnswer)
                    if idle_for >= STALE_AFTER && idempotent(head.method()) =>
                {
                    tracing::debug!(upstream = %origin, "idle upstream connection closed under a request; sending it again");
                    break;
                }
                Err(error) => return Err(error.into()),
            }
        }
        let mut conn = self.connect(upstream).await?;
        let answer = exchange::without_body(&mut conn, &head, &mut room).await?;
        Ok(self.respond(origin, conn, answer))
    }

    /// Sends a WebSocket handshake on a new connection of its own, through hyper, whose
    /// upgrade the tunnel takes over; the connection is never pooled.
    pub(crate) async fn send_upgrade(
        &self,
        upstream: &Uri,
        request: Request<Body>,
    ) -> Result<Response<Body>, PoolError> {
        let (mut sender, connection) =
            http1::handshake(open(&self.connector, upstream).await?).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        let response = sender.send_request(request).await?;
        Ok(response.map(Body::new))
    }

    async fn connect(&self, upstream: &Uri) -> Result<Conn, PoolError> {
        Ok(Conn::new(
            open(&self.connector, upstream).await?.into_inner(),
        ))
    }

    fn home(self: &Arc<Self>, origin: Authority) -> Home {
        Home {
            pool: self.clone(),
            origin,
        }
    }

    fn respond(
        self: &Arc<Self>,
        origin: Authority,
        conn: Conn,
        answer: exchange::Answer,
    ) -> Response<Body> {
        let body = AnswerBody::new(conn, &answer, None, self.home(origin));
        exchange::response(answer, body)
    }

    /// The most recently used idle connection still open, and how long it was idle.
    fn take(&self, origin: &Authority) -> Option<(Conn, Duration)> {
        let mut idle = self.idle.lock();
        let (_, list) = idle.iter_mut().find(|(o, _)| same_origin(o, origin))?;
        while let Some(entry) = list.pop_back() {
            let idle_for = entry.since.elapsed();
            if idle_for < IDLE_FOR && entry.conn.is_open() {
                return Some((entry.conn, idle_for));
            }
        }
        None
    }

    fn put(&self, origin: Authority, mut conn: Conn) {
        // An idle connection holds no buffer: the next exchange takes a new one (the last
        // answer's bytes may still be on their way to the client in this one's memory).
        conn.drop_buffer();
        let now = Instant::now();
        let mut idle = self.idle.lock();
        let at = match idle.iter().position(|(o, _)| same_origin(o, &origin)) {
            Some(at) => at,
            None => {
                idle.push((origin, VecDeque::new()));
                idle.len() - 1
            }
        };
        let list = &mut idle[at].1;
        // The oldest are at the front: drop those past their time, or beyond the bound.
        while list
            .front()
            .is_some_and(|e| now.duration_since(e.since) >= IDLE_FOR)
            || list.len() >= MAX_IDLE
        {
            list.pop_front();
        }
        list.push_back(Idle { conn, since: now });
    }

    /// Drops idle connections past their time or closed by the upstream, and origins left
    /// with none (a route removed by a reload leaves its connections here otherwise).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.idle.lock().retain_mut(|(_, list)| {
            list.retain(|e| now.duration_since(e.since) < IDLE_FOR && e.conn.is_open());
            !list.is_empty()
        });
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().iter().map(|(_, list)| list.len()).sum()
    }
}

/// A new TCP connection to `upstream`'s origin (connect timeout, `TCP_NODELAY`, keep-alive
/// probes as the connector is set).
pub(crate) async fn open(
    connector: &HttpConnector,
    upstream: &Uri,
) -> Result<TokioIo<TcpStream>, PoolError> {
    connector
        .clone()
        .call(upstream.clone())
        .await
        .map_err(|e| PoolError::Connect(e.into()))
}

/// Byte for byte, not `Authority`'s comparison (case-insensitive, a byte at a time): the
/// origins come from the configuration's upstream URLs, so one upstream is one spelling, and
/// two spellings of one host only keep two lists.
pub(crate) fn same_origin(a: &Authority, b: &Authority) -> bool {
    a.as_str() == b.as_str()
}

/// Whether a request may be sent twice: an idempotent method (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// An upstream that answers `n` requests per connection with `body`, counting
    /// connections.
    async fn upstream(
        body: &'static str,
        per_connection: usize,
    ) -> (Uri, Arc<std::sync::atomic::AtomicUsize>) {
        upstream_then(body, per_connection, false).await
    }

    /// As [`upstream`]; with `drop_next`, each connection then reads one more request and
    /// closes without answering it, as an upstream whose keep-alive timeout ends just as
    /// the request arrives.
    async fn upstream_then(
        body: &'static str,
        per_connection: usize,
        drop_next: bool,
    ) -> (Uri, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    for answered in 0..per_connection + usize::from(drop_next) {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if s.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        if answered == per_connection {
                            return;
                        }
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    // Then the upstream closes the connection, as one whose keep-alive
                    // ran out (with `drop_next`, just as a request arrived).
                });
            }
        });
        (format!("http://{addr}").parse().unwrap(), connections)
    }

    fn get(upstream: &Uri) -> Request<Body> {
        Request::builder()
            .uri("/")
            .header("host", upstream.authority().unwrap().as_str())
            .body(Body::empty())
            .unwrap()
    }

    async fn exchange(pool: &Arc<Http1Pool>, upstream: &Uri) -> String {
        let response = pool.send(upstream, get(upstream), &[]).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn connections_are_reused_once_read_and_replaced_once_closed() {
        let (uri, connections) = upstream("hello", 3).await;
        let pool = Arc::new(Http1Pool::new(HttpConnector::new()));
        for _ in 0..3 {
            assert_eq!(exchange(&pool, &uri).await, "hello");
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The upstream closed it after three: the pool finds it closed (now or when the
        // request fails to go out) and opens another, without failing the request.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(exchange(&pool, &uri).await, "hello");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idempotent_request_lost_on_a_stale_connection_is_sent_again_once() {
        let (uri, connections) = upstream_then("hello", 1, true).await;
        let pool = Arc::new(Http1Pool::new(HttpConnector::new()));
        assert_eq!(exchange(&pool, &uri).await, "hello");
        tokio::time::sleep(STALE_AFTER + Duration::from_millis(100)).await;
        // The upstream takes the GET on the idle connection and closes it unanswered: the
        // pool sends it again on a new one.
        assert_eq!(exchange(&pool, &uri).await, "hello");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);

        // A POST with a body is not sent twice: its body went with the first attempt.
        tokio::time::sleep(STALE_AFTER + Duration::from_millis(100)).await;
        let post = Request::builder()
            .method(Method::POST)
            .uri("/")
            .header("host", uri.authority().unwrap().as_str())
            .body(Body::from("vote"))
            .unwrap();
        assert!(pool.send(&uri, post, &[]).await.is_err());
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn each_origin_keeps_its_own_connections() {
        let (a, a_connections) = upstream("from a", 10).await;
        let (b, b_connections) = upstream("from b", 10).await;
        let pool = Arc::new(Http1Pool::new(HttpConnector::new()));
        for _ in 0..3 {
            assert_eq!(exchange(&pool, &a).await, "from a");
            assert_eq!(exchange(&pool, &b).await, "from b");
        }
        assert_eq!(a_connections.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(b_connections.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_takes_its_connection_with_it() {
        // Longer than one read: the answer streams, and is dropped part read.
        let long: &'static str = Box::leak("x".repeat(1 << 20).into_boxed_str());
        let (uri, connections) = upstream(long, 10).await;
        let pool = Arc::new(Http1Pool::new(HttpConnector::new()));
        let response = pool.send(&uri, get(&uri), &[]).await.unwrap();
        drop(response);
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(exchange(&pool, &uri).await, long);
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 1);
        pool.sweep();
        assert_eq!(pool.idle_count(), 1);
    }
}
