//! One worker's plain HTTP/1.1 upstream connections: each a hyper client connection driven
//! by a task on the worker, idle ones kept per upstream origin and reused most recently
//! used first, a connection handed back only once its response has been read to the end.
//!
//! Why not hyper-util's pooled client, as for h2c and TLS upstreams: it is built for many
//! threads and guards every step accordingly. Its checkout, hand-back (a task spawned per
//! request to wait for the connection to be ready again), origin hashing and response
//! extensions were ~9,000 of the ~54,000 instructions a proxied request cost (callgrind).
//! Here a worker owns its connections, so taking and returning one is a short lock held
//! by one thread.

use axum::body::Body;
use bytes::Bytes;
use http::uri::{Authority, Uri};
use http::{Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
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
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

pub(crate) struct Http1Pool {
    connector: HttpConnector,
    /// Per origin, oldest first. A list searched in order, not a hash map: a worker talks
    /// to a handful of origins, and hashing an `Authority` (byte by byte, lowercased) cost
    /// more than the rest of taking and returning a connection.
    idle: parking_lot::Mutex<Vec<(Authority, VecDeque<Idle>)>>,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

impl std::fmt::Debug for Http1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Pool").finish_non_exhaustive()
    }
}

/// A connection lent to one exchange; [`release`](Lease::release) hands it back.
pub(crate) struct Lease {
    pool: Arc<Http1Pool>,
    origin: Authority,
    sender: http1::SendRequest<Body>,
    /// Set once the request's body has gone out in full (`None`: it had none).
    body_sent: Option<Arc<AtomicBool>>,
}

impl Lease {
    /// Hands the connection back once its response has been read to the end, unless its
    /// request's body is still going out (an upstream may answer before reading it all):
    /// the next request would wait behind that upload. Such a connection is closed when
    /// its exchange ends.
    fn release(self) {
        if self
            .body_sent
            .as_ref()
            .is_some_and(|sent| !sent.load(Ordering::Acquire))
        {
            return;
        }
        self.pool.put(self.origin, self.sender);
    }
}

/// A request body that says when it has been sent in full.
struct Tracked {
    body: Body,
    sent: Arc<AtomicBool>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.sent.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // hyper stops at a body that says it is done, without polling it to `None`.
        let end = self.body.is_end_stream();
        if end {
            self.sent.store(true, Ordering::Release);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Http1Pool {
    pub(crate) fn new(connector: HttpConnector) -> Self {
        Http1Pool {
            connector,
            idle: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (origin-form target, `Host` set) to `upstream`'s origin on an idle
    /// connection, or a new one. A connection found closed before the request went out is
    /// passed over and the request tried on the next. An idempotent request without a body
    /// that a connection idle for a while lost (closed by the upstream as it went out, no
    /// answer begun) is sent again once, on a new connection, as nginx does.
    pub(crate) async fn send(
        self: &Arc<Self>,
        upstream: &Uri,
        mut request: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        let origin = upstream.authority().ok_or(PoolError::NoAuthority)?.clone();
        let body_sent = (!request.body().is_end_stream()).then(|| {
            let sent = Arc::new(AtomicBool::new(false));
            let tracked = sent.clone();
            request = std::mem::take(&mut request).map(|body| {
                Body::new(Tracked {
                    body,
                    sent: tracked,
                })
            });
            sent
        });
        while let Some((mut sender, idle_for)) = self.take(&origin) {
            if sender.ready().await.is_err() {
                continue;
            }
            let again = (idle_for >= STALE_AFTER)
                .then(|| replayable(&request))
                .flatten();
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(origin, sender, body_sent))),
                Err(mut failed) => match (failed.take_message(), again) {
                    // Not sent: the connection closed as it was taken.
                    (Some(unsent), _) => request = unsent,
                    (None, Some(copy)) if lost_in_flight(failed.error()) => {
                        tracing::debug!(upstream = %origin, "idle upstream connection closed under a request; sending it again");
                        request = copy;
                        break;
                    }
                    (None, _) => return Err(failed.into_error().into()),
                },
            }
        }
        let io = self
            .connector
            .clone()
            .call(upstream.clone())
            .await
            .map_err(|e| PoolError::Connect(e.into()))?;
        let (mut sender, connection) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        let response = sender.send_request(request).await?;
        Ok((response, self.lease(origin, sender, body_sent)))
    }

    fn lease(
        self: &Arc<Self>,
        origin: Authority,
        sender: http1::SendRequest<Body>,
        body_sent: Option<Arc<AtomicBool>>,
    ) -> Lease {
        Lease {
            pool: self.clone(),
            origin,
            sender,
            body_sent,
        }
    }

    /// The most recently used idle connection still open, and how long it was idle.
    fn take(&self, origin: &Authority) -> Option<(http1::SendRequest<Body>, Duration)> {
        let mut idle = self.idle.lock();
        let (_, list) = idle.iter_mut().find(|(o, _)| o == origin)?;
        while let Some(entry) = list.pop_back() {
            let idle_for = entry.since.elapsed();
            if !entry.sender.is_closed() && idle_for < IDLE_FOR {
                return Some((entry.sender, idle_for));
            }
        }
        None
    }

    fn put(&self, origin: Authority, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock();
        let at = match idle.iter().position(|(o, _)| *o == origin) {
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
            .is_some_and(|e| now.duration_since(e.since) >= IDLE_FOR || e.sender.is_closed())
            || list.len() >= MAX_IDLE
        {
            list.pop_front();
        }
        list.push_back(Idle { sender, since: now });
    }

    /// Drops idle connections past their time or closed by the upstream, and origins left
    /// with none (a route removed by a reload leaves its connections here otherwise).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.idle.lock().retain_mut(|(_, list)| {
            list.retain(|e| now.duration_since(e.since) < IDLE_FOR && !e.sender.is_closed());
            !list.is_empty()
        });
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().iter().map(|(_, list)| list.len()).sum()
    }
}

/// A copy of `request` to send again should its connection be lost under it: only for an
/// idempotent method and no body (a body, once streamed, is gone).
fn replayable(request: &Request<Body>) -> Option<Request<Body>> {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    if !idempotent || !request.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// Whether the connection closed under a request before any of the answer came: the
/// upstream's end of an idle connection, not its judgement of the request.
fn lost_in_flight(error: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    if error.is_incomplete_message() {
        return true;
    }
    let io = std::error::Error::source(error).and_then(|e| e.downcast_ref::<std::io::Error>());
    io.is_some_and(|e| {
        matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
        )
    })
}

/// An upstream response body that hands its connection back once read to the end. Dropped
/// before that, the connection goes with it: its remaining bytes would precede the next
/// response.
pub(crate) struct Leased {
    body: Incoming,
    lease: Option<Lease>,
}

impl Leased {
    pub(crate) fn new(body: Incoming, lease: Lease) -> Self {
        Leased {
            body,
            lease: Some(lease),
        }
    }
}

impl HttpBody for Leased {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = self.lease.take() {
                    lease.release();
                }
            }
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304) may never be polled: it is finished all the same.
        if self.body.is_end_stream() {
            if let Some(lease) = self.lease.take() {
                lease.release();
            }
        }
    }
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
        let (response, lease) = pool.send(upstream, get(upstream)).await.unwrap();
        let body = Leased::new(response.into_body(), lease);
        let bytes = body.collect().await.unwrap().to_bytes();
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
        assert!(pool.send(&uri, post).await.is_err());
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
        let (uri, connections) = upstream("a longer body than nothing", 10).await;
        let pool = Arc::new(Http1Pool::new(HttpConnector::new()));
        let (response, lease) = pool.send(&uri, get(&uri)).await.unwrap();
        drop(Leased::new(response.into_body(), lease));
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(exchange(&pool, &uri).await, "a longer body than nothing");
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 1);
        pool.sweep();
        assert_eq!(pool.idle_count(), 1);
    }
}
