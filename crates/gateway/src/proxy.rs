//! Forwarding to the upstream: pooled connections, bodies streamed both ways (never
//! buffered whole), hop-by-hop headers removed, forwarding headers set, body-size limit,
//! upstream timeout, and protocol upgrades (WebSocket) tunnelled byte for byte.

use crate::config::{Limits, Timeouts};
use crate::h2c::H2cPool;
use crate::headers;
use crate::pool::{Http1Pool, PoolError};
use crate::server::Shared;
use crate::stack::{ConnInfo, Ctx, Outcome, error_response};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{StatusCode, Version};
use http_body_util::{BodyExt as _, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future as _;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio_rustls::rustls;

/// The pooled upstream clients: HTTP/1.1, h2c (prior knowledge) for routes that ask, and
/// TLS for `https://` upstreams: HTTP/2 or HTTP/1.1 as the upstream's ALPN answer picks,
/// HTTP/1.1 alone for protocol upgrades (a WebSocket handshake is an HTTP/1.1 exchange).
/// One per worker: its connections are driven by that worker's event loop.
#[derive(Debug, Clone)]
pub(crate) struct Upstreams {
    http1: Arc<Http1Pool>,
    h2c: Arc<H2cPool>,
    https: Client<HttpsConnector<HttpConnector>, Body>,
    https_http1: Client<HttpsConnector<HttpConnector>, Body>,
}

impl Upstreams {
    pub(crate) fn new(timeouts: &Timeouts, tls: &Arc<rustls::ClientConfig>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let mut tls_connector = connector.clone();
        // The TLS layer above it takes `https://` URLs; this one only opens the TCP stream.
        tls_connector.enforce_http(false);
        let tls_builder = || {
            HttpsConnectorBuilder::new()
                .with_tls_config(rustls::ClientConfig::clone(tls))
                .https_only()
        };
        let https = tls_builder()
            .enable_all_versions()
            .wrap_connector(tls_connector.clone());
        let https_http1 = tls_builder().enable_http1().wrap_connector(tls_connector);
        let base = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(1024)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new());
            b
        };
        Upstreams {
            http1: Arc::new(Http1Pool::new(connector.clone())),
            h2c: Arc::new(H2cPool::new(connector)),
            https: base().build(https),
            https_http1: base().build(https_http1),
        }
    }

    /// Lets go of the pools' connections past their idle time (hyper-util's clients sweep
    /// their own).
    pub(crate) fn sweep(&self) {
        self.http1.sweep();
        self.h2c.sweep();
    }
}

/// The upstream request target for `request_uri`: its path and query under the upstream's
/// base path. The worker's pool sends it as it is (origin form); hyper-util's clients take
/// it joined to the upstream's scheme and host ([`absolute`]).
fn upstream_target(base: &Uri, request_uri: &Uri) -> Result<PathAndQuery, http::Error> {
    let base_path = base.path().trim_end_matches('/');
    match request_uri.path_and_query() {
        // An upstream at its root takes the request's path as it came (a shared clone).
        // `OPTIONS *` is about the server, under any base path.
        Some(pq) if base_path.is_empty() || pq.as_str() == "*" => Ok(pq.clone()),
        pq => {
            let pq = pq.map_or("/", PathAndQuery::as_str);
            Ok(PathAndQuery::try_from(format!("{base_path}{pq}"))?)
        }
    }
}

fn absolute(
    base: &Uri,
    authority: Option<Authority>,
    target: PathAndQuery,
) -> Result<Uri, http::Error> {
    let mut parts = base.clone().into_parts();
    if authority.is_some() {
        parts.authority = authority;
    }
    parts.path_and_query = Some(target);
    Ok(Uri::from_parts(parts)?)
}

/// Sends `request` to its route's upstream and returns the upstream's answer, streaming.
pub(crate) async fn forward(
    shared: &Shared,
    upstreams: &Upstreams,
    conn: &ConnInfo,
    ctx: &Ctx,
    mut request: Request,
    mut added: headers::Added,
    outcome: &mut Outcome,
) -> Response {
    let limits: &Limits = &shared.limits;
    if let Some(len) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limits.max_body_bytes {
            outcome.reason = Some("body_too_large");
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "body_too_large",
            );
        }
    }
    let route = &ctx.route;
    let tls_upstream = route.config.upstream.scheme() == Some(&Scheme::HTTPS);
    let upgrade = ctx.hop.websocket;
    // A WebSocket handshake to an h2c upstream goes as HTTP/1.1 on a connection of its own
    // (hyper's HTTP/2 client drops `Upgrade`, and RFC 8441's extended CONNECT is not spoken
    // here); a prior-knowledge h2c server speaks HTTP/1.1 too. (The configuration refuses
    // h2c to an `https://` upstream.)
    let h2c = route.config.upstream_h2c && !upgrade;
    // hyper's clients (h2c, TLS) take an absolute URL; the worker's HTTP/1.1 pool the target
    // alone. Over h2c the URL's authority is `:authority`: the host the client asked for, as
    // an HTTP/1.1 upstream gets it in `Host`.
    let through_hyper = tls_upstream || h2c;
    let uri = match upstream_target(&route.config.upstream, request.uri()).and_then(|target| {
        if h2c {
            let asked = Authority::try_from(ctx.host.as_bytes()).ok();
            absolute(&route.config.upstream, asked, target)
        } else if through_hyper {
            absolute(&route.config.upstream, None, target)
        } else {
            Ok(Uri::from(target))
        }
    }) {
        Ok(uri) => uri,
        Err(_) => {
            outcome.reason = Some("bad_path");
            return error_response(StatusCode::BAD_REQUEST, "bad_request", "bad_path");
        }
    };
    // The request's hop-by-hop headers are gone already (`headers::take_hop_by_hop`);
    // what they asked for is in `ctx.hop`.
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    if request.version() == Version::HTTP_2 {
        headers::join_cookies(request.headers_mut());
    }
    let (mut parts, body) = request.into_parts();
    // `TE: trailers` is the one hop-by-hop value an HTTP/2 upstream needs (gRPC); a TLS
    // upstream may answer in HTTP/2.
    if ctx.hop.te_trailers && (route.config.upstream_h2c || tls_upstream) {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    headers::set_forwarded(
        &mut parts.headers,
        &mut added,
        &conn.forwarding,
        &ctx.host,
        ctx.via_trusted_proxy,
    );
    // The worker's pool writes the added fields into the head it sends; hyper's clients
    // (and the pool's upgrades, sent through hyper) take them in the map.
    if through_hyper || upgrade {
        headers::insert_added(&mut parts.headers, std::mem::take(&mut added));
    }
    if tls_upstream {
        // Over TLS the upstream is a named host (its certificate, its virtual host): it gets
        // its own name, set from the URL by the client; the client's is `X-Forwarded-Host`.
        parts.headers.remove(header::HOST);
    } else if !ctx.host.is_empty() {
        // The app sees the host the client asked for, as behind Cloud Run's front end.
        parts.headers.insert(header::HOST, ctx.host.clone());
    }
    let limited = Limited::new(body, clamp_usize(limits.max_body_bytes));
    // Trailers are headers too: none may claim an identity or a hop's business. (An
    // HTTP/1.1 upstream gets none: `Trailer` is hop-by-hop and gone.)
    let limited = if through_hyper {
        Body::new(limited.map_frame(|frame| match frame.into_trailers() {
            Ok(mut trailers) => {
                headers::strip_identity(&mut trailers, false);
                headers::remove_forwarding(&mut trailers);
                headers::strip_hop_by_hop(&mut trailers);
                http_body::Frame::trailers(trailers)
            }
            Err(frame) => frame,
        }))
    } else {
        Body::new(limited)
    };
    let mut outgoing = Request::new(limited);
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = parts.headers;
    *outgoing.version_mut() = Version::HTTP_11;
    if h2c {
        *outgoing.version_mut() = Version::HTTP_2;
        outgoing.headers_mut().remove(header::HOST);
    }

    let started = Instant::now();
    let upstream_timeout = route
        .config
        .upstream_timeout
        .unwrap_or(shared.timeouts.upstream);
    // Waiting for a permit counts against the upstream timeout, as a queued request does on
    // Cloud Run.
    // `sent`: when the request goes upstream, after any wait for a permit; the upstream
    // latency metric is the upstream's own time, not the queue's.
    let (permit, sent) = match &route.concurrency {
        None => (None, started),
        Some(permits) => {
            match tokio::time::timeout(upstream_timeout, permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => (Some(permit), Instant::now()),
                Ok(Err(_)) | Err(_) => {
                    outcome.reason = Some("upstream_busy");
                    return error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "upstream_busy",
                    );
                }
            }
        }
    };
    let answer = async {
        if h2c {
            upstreams
                .h2c
                .send(&route.config.upstream, outgoing)
                .await
                .map_err(BoxError::from)
        } else if tls_upstream {
            let pending = if upgrade {
                upstreams.https_http1.request(outgoing)
            } else {
                upstreams.https.request(outgoing)
            };
            pending
                .await
                .map(|r| r.map(Body::new))
                .map_err(BoxError::from)
        } else {
            // The pool's connections need a `Host` (hyper-util's clients add one).
            if !outgoing.headers().contains_key(header::HOST) {
                if let Some(authority) = route.config.upstream.authority() {
                    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                        outgoing.headers_mut().insert(header::HOST, host);
                    }
                }
            }
            let pool = &upstreams.http1;
            if upgrade {
                pool.send_upgrade(&route.config.upstream, outgoing).await
            } else {
                pool.send(&route.config.upstream, outgoing, &added).await
            }
            .map_err(BoxError::from)
        }
    };
    // Pinned where it is made and polled beside its deadline, not moved into a `Timeout`
    // and that into the awaited slot: the exchange's future is ~1.8 KB, and every move of
    // it a copy (~170 instructions apiece in bench/gateway/instructions).
    tokio::pin!(answer);
    // From `started`, read already, rather than the clock read again; timeouts are under
    // 1e7 s (config), so the sum cannot overflow.
    let deadline =
        tokio::time::sleep_until(tokio::time::Instant::from_std(started) + upstream_timeout);
    tokio::pin!(deadline);
    let result = std::future::poll_fn(|cx| match answer.as_mut().poll(cx) {
        Poll::Ready(answered) => Poll::Ready(Some(answered)),
        Poll::Pending => deadline.as_mut().poll(cx).map(|()| None),
    })
    .await;
    shared.metrics.upstream_answered(sent.elapsed());
    let mut response = match result {
        Some(Ok(answered)) => answered,
        Some(Err(error))
            if error
                .downcast_ref::<PoolError>()
                .is_some_and(PoolError::is_bad_framing) =>
        {
            tracing::warn!(route = %route.name, error = %error_chain(&*error), "upstream answer framed in a way not forwarded");
            outcome.reason = Some("upstream_bad_framing");
            return error_response(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "upstream_bad_framing",
            );
        }
        Some(Err(error)) => match request_body_failure(&*error) {
            Some(BodyFailure::TooLarge) => {
                outcome.reason = Some("body_too_large");
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "body_too_large",
                );
            }
            Some(BodyFailure::Malformed) => {
                outcome.reason = Some("bad_request_body");
                return error_response(StatusCode::BAD_REQUEST, "bad_request", "bad_request_body");
            }
            None => {
                tracing::warn!(route = %route.name, error = %error_chain(&*error), "upstream request failed");
                outcome.reason = Some("upstream_unavailable");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "upstream_unavailable",
                );
            }
        },
        None => {
            outcome.reason = Some("upstream_timeout");
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "upstream_timeout",
            );
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // Only to the WebSocket handshake it was asked for: a 101 to anything else would
        // tunnel a protocol nobody here reads.
        let client_upgrade = match client_upgrade {
            Some(c) if headers::is_websocket(response.headers()) => c,
            _ => {
                tracing::warn!(route = %route.name, "upstream switched protocols unasked, or not to WebSocket");
                outcome.reason = Some("upstream_bad_upgrade");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "upstream_bad_upgrade",
                );
            }
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let route_name = route.name.clone();
        // The tunnel is the client's connection going on: it keeps its place under the
        // connection limit, and closes as an idle connection does.
        let slot = conn.take_slot();
        let tasks = slot.as_ref().map(crate::server::Slot::tasks);
        let idle = shared.timeouts.idle;
        let tunnel = async move {
            // A tunnel is one request in flight for as long as it is open.
            let _permit = permit;
            let _slot = slot;
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client_io, upstream_io)) => {
                    let activity = Arc::new(crate::idle::Activity::new());
                    let mut client_io =
                        crate::idle::IdleIo::new(TokioIo::new(client_io), activity.clone());
                    let mut upstream_io = TokioIo::new(upstream_io);
                    let copied = tokio::io::copy_bidirectional(&mut client_io, &mut upstream_io);
                    match crate::idle::until_idle(copied, &activity, idle).await {
                        Some(Err(error)) => {
                            tracing::debug!(route = %route_name, %error, "upgraded connection ended");
                        }
                        None => {
                            tracing::debug!(route = %route_name, "closing idle upgraded connection")
                        }
                        Some(Ok(_)) => {}
                    }
                }
                Err(error) => {
                    tracing::debug!(route = %route_name, %error, "upgrade did not complete");
                }
            }
        };
        match tasks {
            Some(tasks) => drop(tasks.spawn(tunnel)),
            None => drop(tokio::spawn(tunnel)),
        }
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = response.into_parts();
    if !headers::strip_answer_hop_by_hop(&mut parts.headers) {
        tracing::warn!(route = %route.name, "upstream used a transfer coding other than chunked");
        outcome.reason = Some("upstream_bad_framing");
        return error_response(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "upstream_bad_framing",
        );
    }
    let body = match permit {
        // The request holds its permit until the response body is finished (or dropped):
        // the upstream connection is busy until then.
        Some(permit) => Body::new(body.map_frame(move |frame| {
            let _held = &permit;
            frame
        })),
        None => Body::new(body),
    };
    Response::from_parts(parts, body)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the client's request body failed while it was being forwarded.
enum BodyFailure {
    /// It passed `max_body_bytes`.
    TooLarge,
    /// It could not be read as framed (a bad chunk, a connection cut mid-body).
    Malformed,
}

/// Whether forwarding failed because of the client's body, not the upstream. The outgoing
/// request's body is the client's in axum's `Body` (around `Limited`, around the client's
/// `Body`): an `axum::Error` anywhere in the chain is the client's body failing, and a
/// `LengthLimitError` under it says it was too long.
fn request_body_failure(error: &(dyn std::error::Error + 'static)) -> Option<BodyFailure> {
    let chain = std::iter::successors(Some(error), |e| e.source());
    let mut failure = None;
    for e in chain {
        if e.is::<http_body_util::LengthLimitError>() {
            return Some(BodyFailure::TooLarge);
        }
        if e.downcast_ref::<PoolError>()
            .is_some_and(PoolError::is_body_length)
        {
            return Some(BodyFailure::Malformed);
        }
        if e.is::<axum::Error>() {
            failure = Some(BodyFailure::Malformed);
        }
    }
    failure
}

fn clamp_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    // At a character's boundary: an error may quote a name or a value past ASCII.
    let end = crate::stack::truncated(&text, 300).len();
    text.truncate(end);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_are_cut_short_between_characters() {
        let error = std::io::Error::other(format!("{}é and more", "x".repeat(299)));
        let text = error_chain(&error);
        assert_eq!(text, "x".repeat(299));
    }

    #[test]
    fn upstream_uri_joins_base_path_and_query() {
        let upstream_uri = |base: &Uri, req: &Uri| {
            upstream_target(base, req).and_then(|target| absolute(base, None, target))
        };
        let base: Uri = "http://127.0.0.1:9000/base/".parse().unwrap();
        let req: Uri = "/x/y?q=1".parse().unwrap();
        assert_eq!(
            upstream_uri(&base, &req).unwrap().to_string(),
            "http://127.0.0.1:9000/base/x/y?q=1"
        );
        assert_eq!(upstream_target(&base, &req).unwrap(), "/base/x/y?q=1");
        let base: Uri = "http://up:80".parse().unwrap();
        assert_eq!(
            upstream_uri(&base, &"/".parse().unwrap())
                .unwrap()
                .to_string(),
            "http://up:80/"
        );
        assert_eq!(
            upstream_target(&base, &"/a?b".parse().unwrap()).unwrap(),
            "/a?b"
        );
        // The authority asked for (h2c's `:authority`) in place of the upstream's.
        let target = upstream_target(&base, &"/a?b".parse().unwrap()).unwrap();
        let asked = Authority::from_static("app.example:8443");
        assert_eq!(
            absolute(&base, Some(asked), target).unwrap().to_string(),
            "http://app.example:8443/a?b"
        );
    }
}
