//! One worker's h2c (HTTP/2 with prior knowledge) upstream connections: one per upstream
//! origin, its streams shared by the worker's requests to it.
//!
//! Why not hyper-util's pooled client: it keys its connections by the request URL's
//! authority, and HTTP/2 sends that authority upstream as `:authority`. Given the upstream's
//! URL, the app would see its own address where an HTTP/1.1 upstream sees the `Host` the
//! client asked for; given the client's host, the pool would be keyed by a value the client
//! chooses, a new upstream connection for every name it sends. Here the connection is the
//! route's upstream's and the request's URL carries the client's host.

use crate::pool::{PoolError, open, same_origin};
use axum::body::Body;
use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a connection no request has used is kept.
const IDLE_FOR: Duration = Duration::from_secs(90);

pub(crate) struct H2cPool {
    connector: HttpConnector,
    /// Per origin (a handful: the routes' upstreams), its connection. An origin's slot is
    /// locked across a connect, so that a burst of requests opens one connection, not one
    /// each.
    origins: parking_lot::Mutex<Vec<(Authority, Arc<tokio::sync::Mutex<Slot>>)>>,
}

#[derive(Default)]
struct Slot {
    sender: Option<SendRequest<Body>>,
    /// Counts the connections opened: a request that lost one replaces it only if no other
    /// request has already.
    opened: u64,
    used: Option<Instant>,
}

impl std::fmt::Debug for H2cPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2cPool").finish_non_exhaustive()
    }
}

impl H2cPool {
    pub(crate) fn new(connector: HttpConnector) -> Self {
        H2cPool {
            connector,
            origins: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (absolute URL: the host the client asked for, or the upstream's; no
    /// `Host`; hop-by-hop headers gone) on `upstream`'s connection, opened if there is none
    /// or it has closed, and returns the answer, its body streaming. A request the
    /// connection closed before taking (a `GOAWAY` as it went out) is sent once more, on a
    /// new connection: nothing of it reached the upstream.
    pub(crate) async fn send(
        &self,
        upstream: &Uri,
        request: Request<Body>,
    ) -> Result<Response<Body>, PoolError> {
        let origin = upstream.authority().ok_or(PoolError::NoAuthority)?;
        let slot = self.slot(origin);
        let (mut sender, reused, opened) = self.sender(&slot, upstream, None).await?;
        let request = match sender.try_send_request(request).await {
            Ok(response) => return Ok(response.map(Body::new)),
            Err(mut refused) => match refused.take_message() {
                Some(request) if reused => request,
                _ => return Err(refused.into_error().into()),
            },
        };
        tracing::debug!(upstream = %origin, "upstream h2c connection closed under a request; sending it on a new one");
        let (mut sender, ..) = self.sender(&slot, upstream, Some(opened)).await?;
        let response = sender.send_request(request).await?;
        Ok(response.map(Body::new))
    }

    fn slot(&self, origin: &Authority) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut origins = self.origins.lock();
        if let Some((_, slot)) = origins.iter().find(|(o, _)| same_origin(o, origin)) {
            return slot.clone();
        }
        let slot = Arc::new(tokio::sync::Mutex::new(Slot::default()));
        origins.push((origin.clone(), slot.clone()));
        slot
    }

    /// The origin's open connection and `true`, or a new one and `false`, with the
    /// connection's number. `lost` is the number of a connection that closed under a
    /// request: it is replaced even if it does not know it is closed yet.
    async fn sender(
        &self,
        slot: &tokio::sync::Mutex<Slot>,
        upstream: &Uri,
        lost: Option<u64>,
    ) -> Result<(SendRequest<Body>, bool, u64), PoolError> {
        let mut held = slot.lock().await;
        held.used = Some(Instant::now());
        let current = held.opened;
        if let Some(sender) = held.sender.as_ref().filter(|s| !s.is_closed()) {
            if lost != Some(current) {
                return Ok((sender.clone(), true, current));
            }
        }
        let sender = self.handshake(upstream).await?;
        held.sender = Some(sender.clone());
        held.opened += 1;
        Ok((sender, false, held.opened))
    }

    async fn handshake(&self, upstream: &Uri) -> Result<SendRequest<Body>, PoolError> {
        let io = open(&self.connector, upstream).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await?;
        // Ends when the upstream closes it, or once every sender is dropped (`sweep`) and
        // its streams are done.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream h2c connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Lets go of connections no request has used for a while, and of origins left with
    /// none (a route removed by a reload leaves its connection here otherwise).
    pub(crate) fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        self.origins.lock().retain(|(_, slot)| {
            // A slot in use (a connect under way) is left for the next sweep.
            let Ok(mut held) = slot.try_lock() else {
                return true;
            };
            let idle = held
                .used
                .is_none_or(|used| now.duration_since(used) >= IDLE_FOR);
            if idle || held.sender.as_ref().is_some_and(SendRequest::is_closed) {
                held.sender = None;
            }
            held.sender.is_some()
        });
    }

    /// The connections held open (or closed by the upstream and not yet replaced).
    #[cfg(test)]
    fn connections(&self) -> Vec<bool> {
        self.origins
            .lock()
            .iter()
            .filter_map(|(_, slot)| {
                slot.try_lock()
                    .ok()?
                    .sender
                    .as_ref()
                    .map(|s| !s.is_closed())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An h2c server answering "ok", each connection's first request only if
    /// `close_after_answer` (then it closes it gracefully, with a `GOAWAY`); counts the
    /// connections accepted and those closed.
    async fn h2c_upstream(
        close_after_answer: bool,
    ) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counts = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counts.0.fetch_add(1, Ordering::SeqCst);
                let closed = counts.1.clone();
                tokio::spawn(async move {
                    let answered = Arc::new(tokio::sync::Notify::new());
                    let tell = answered.clone();
                    let service = hyper::service::service_fn(move |_: Request<_>| {
                        tell.notify_one();
                        async { Ok::<_, std::convert::Infallible>(Response::new(Body::from("ok"))) }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        () = answered.notified(), if close_after_answer => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (addr, accepted, closed)
    }

    /// A request as `proxy::forward` makes it: the asked host in the URL.
    fn get() -> Request<Body> {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = Uri::from_static("http://app.example/x");
        *request.version_mut() = http::Version::HTTP_2;
        request
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced_and_an_idle_one_let_go() {
        let (addr, accepted, closed) = h2c_upstream(true).await;
        let upstream: Uri = format!("http://{addr}").parse().unwrap();
        let pool = H2cPool::new(HttpConnector::new());
        for n in 1..=3 {
            let response = pool.send(&upstream, get()).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(accepted.load(Ordering::SeqCst), n);
            // Until this side has read the upstream's close: the next request then takes a
            // new connection (the one sent into a `GOAWAY` is another path).
            for _ in 0..500 {
                if closed.load(Ordering::SeqCst) == n && pool.connections() == [false] {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                pool.connections(),
                [false],
                "connection {n} not seen closed"
            );
        }

        // A connection kept open: let go once idle past its time, not before.
        let (addr, accepted, _) = h2c_upstream(false).await;
        let upstream: Uri = format!("http://{addr}").parse().unwrap();
        let pool = H2cPool::new(HttpConnector::new());
        for _ in 0..3 {
            assert_eq!(pool.send(&upstream, get()).await.unwrap().status(), 200);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for the three"
        );
        pool.sweep_at(Instant::now() + IDLE_FOR / 2);
        assert_eq!(pool.connections(), [true]);
        pool.sweep_at(Instant::now() + IDLE_FOR);
        assert_eq!(pool.connections(), Vec::<bool>::new());
        assert_eq!(pool.send(&upstream, get()).await.unwrap().status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
