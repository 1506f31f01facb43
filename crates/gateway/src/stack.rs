//! The request path: one function ([`handle`]) calling small steps in order, each either
//! handing the request on or answering it itself.
//!
//! ```text
//! access log -> select route -> strip identity headers -> CORS -> extract token -> verify
//!            (or recall the connection's last token)
//!            -> /_gatehouse/identity -> authorize -> rate limit -> set identity -> proxy
//! ```
//!
//! Plain calls rather than a tower layer per step: this is the gateway's hot path, and a
//! layer per step cost a boxed future, a cloned service and a request extension each, on
//! every request. Steps that may answer return `Result<_, Response>`; what the access log
//! needs is gathered in one [`Outcome`] the steps write to.

// A refusal travels one frame, from the step to `admit`; boxing it would only add an
// allocation to the refusal path.
#![allow(clippy::result_large_err)]

use crate::endpoints;
use crate::headers;
use crate::proxy::Upstreams;
use crate::routes::{Route, Snapshot, normalize_host};
use crate::server::Shared;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::{BufMut as _, BytesMut};
use gatehouse_verify::jws::SIGNATURE_REMOVED;
use gatehouse_verify::layer::{SERVERLESS_AUTHORIZATION, bearer_value};
use gatehouse_verify::members::RUN_INVOKER;
use gatehouse_verify::verifier::{Identity, Verifier};
use http::StatusCode;
use http::header::{self, HeaderName, HeaderValue};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// What the connection knows: who is on the other end, what this hop tells the upstream
/// of it (the forwarding headers, which also say whether it came over TLS), and the last
/// token its client presented.
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub forwarding: headers::Forwarding,
    last_token: parking_lot::Mutex<Option<LastToken>>,
    /// The connection's place under the limit, until a tunnel takes it over.
    slot: parking_lot::Mutex<Option<crate::server::Slot>>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ConnInfo")
            .field("peer", &self.peer)
            .field("forwarding", &self.forwarding)
            .finish_non_exhaustive()
    }
}

/// The last token a connection's client presented and what it came to. A client sends the
/// same token until it expires: a request carrying the same header value to a route with
/// the same verifier is neither read nor looked up again, only checked to still stand
/// ([`Verifier::still_stands`]: not expired, its key still published), and the value
/// forwarded with its signature removed is made once.
struct LastToken {
    /// The header value as sent, its own copy (the request's shares the whole head's bytes).
    sent: HeaderValue,
    header: HeaderName,
    at: std::ops::Range<usize>,
    verifier: Arc<Verifier>,
    identity: Identity,
    removed: Option<HeaderValue>,
}

impl ConnInfo {
    pub(crate) fn new(peer: SocketAddr, tls: bool, slot: crate::server::Slot) -> Self {
        ConnInfo {
            peer,
            forwarding: headers::Forwarding::new(peer, tls),
            last_token: parking_lot::Mutex::new(None),
            slot: parking_lot::Mutex::new(Some(slot)),
        }
    }

    /// The connection's place under the limit, for the tunnel it becomes to hold.
    pub(crate) fn take_slot(&self) -> Option<crate::server::Slot> {
        self.slot.lock().take()
    }

    /// The token in `header`'s `value` and its identity when it is the last token this
    /// connection presented to the same verifier, and that verification still stands.
    fn recall(
        &self,
        header: &HeaderName,
        value: &HeaderValue,
        ctx: &Ctx,
    ) -> Option<(Token, Identity)> {
        let verifier = ctx.route.verifier.as_ref()?;
        let last = self.last_token.lock();
        let last = last.as_ref()?;
        let same = last.header == *header
            && last.sent == value
            && Arc::ptr_eq(&last.verifier, verifier)
            && verifier.still_stands(&last.identity, ctx.now);
        same.then(|| {
            let token = Token {
                header: header.clone(),
                value: value.clone(),
                at: last.at.clone(),
            };
            (token, last.identity.clone())
        })
    }

    /// Remembers a token `verifier` accepted.
    fn remember(&self, token: &Token, identity: &Identity, verifier: &Arc<Verifier>) {
        let mut last = self.last_token.lock();
        if let Some(last) = last.as_mut().filter(|l| l.sent == token.value) {
            // The same token to another route: its copy and stripped value still serve.
            last.header = token.header.clone();
            last.verifier = verifier.clone();
            last.identity = identity.clone();
            return;
        }
        let Ok(sent) = HeaderValue::from_bytes(token.value.as_bytes()) else {
            return;
        };
        *last = Some(LastToken {
            sent,
            header: token.header.clone(),
            at: token.at.clone(),
            verifier: verifier.clone(),
            identity: identity.clone(),
            removed: None,
        });
    }

    /// `token`'s header value with the signature removed, made once per token a
    /// connection sends.
    fn signature_removed(&self, token: &Token) -> Option<HeaderValue> {
        let mut last = self.last_token.lock();
        match last.as_mut().filter(|l| l.sent == token.value) {
            Some(last) => {
                if last.removed.is_none() {
                    last.removed = signature_removed(token.as_str());
                }
                last.removed.clone()
            }
            None => signature_removed(token.as_str()),
        }
    }
}

/// The request's route and the one reading of the clock, set by [`select_route`].
#[derive(Debug)]
pub(crate) struct Ctx {
    pub snapshot: Arc<Snapshot>,
    pub route: Arc<Route>,
    /// Unix seconds, read once per request.
    pub now: u64,
    /// The host the client asked for, as sent (for `X-Forwarded-Host` and the upstream's
    /// `Host`); empty when the request named none.
    pub host: HeaderValue,
    pub identity_endpoint: bool,
    /// The connection's peer is a trusted proxy (its forwarding headers are believed).
    pub via_trusted_proxy: bool,
    /// The client's address: the peer's, or behind a trusted proxy the one it reported.
    pub client: IpAddr,
    /// What the request's hop-by-hop headers asked of this hop (they are gone from it).
    pub hop: headers::Hop,
}

/// The token a request carries: the header it came in, whose value is kept whole (a
/// reference-counted clone) so the token can be re-read after the headers change.
struct Token {
    header: HeaderName,
    value: HeaderValue,
    /// Where the token is in `value` (after the scheme), found once.
    at: std::ops::Range<usize>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Token")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Token {
    fn as_str(&self) -> &str {
        self.value
            .as_bytes()
            .get(self.at.clone())
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or_default()
    }
}

/// What verification made of the request's token.
#[derive(Debug)]
enum Verdict {
    Missing,
    /// The header the token is read from came more than once: which one the app reads is
    /// its own guess, so none is judged.
    Repeated,
    Verified(Identity),
    Refused(gatehouse_verify::Error),
}

/// What the steps decided, for the access log and metrics.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub route: Option<Arc<str>>,
    pub reason: Option<&'static str>,
    pub denied: bool,
    pub caller: Option<Identity>,
    /// The client's address when it is not the peer's (behind a trusted proxy).
    pub client: Option<IpAddr>,
}

impl Outcome {
    /// Records a refusal and builds its answer.
    fn refuse(
        &mut self,
        status: StatusCode,
        error: &'static str,
        reason: &'static str,
    ) -> Response {
        self.reason = Some(reason);
        self.denied = true;
        error_response(status, error, reason)
    }
}

/// A refusal: JSON `{"error", "reason"}` with the RFC 6750 challenge where it applies.
pub(crate) fn error_response(status: StatusCode, error: &str, reason: &str) -> Response {
    let body = serde_json::json!({"error": error, "reason": reason}).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        challenge(&mut response, reason);
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

/// The RFC 6750 challenge naming the reason code.
fn challenge(response: &mut Response, reason: &str) {
    // Reason codes are fixed ASCII identifiers, so this never fails.
    if let Ok(v) = HeaderValue::from_str(&format!(
        "Bearer error=\"invalid_token\", error_description=\"{reason}\""
    )) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
}

/// The whole request path, access log outermost so it sees every answer.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    upstreams: &Upstreams,
    conn: &ConnInfo,
    request: Request,
) -> Response {
    let mut outcome = Outcome::default();
    // What the log needs of the request, kept only when the access log is on.
    let logged = tracing::enabled!(target: "gatehouse::access", tracing::Level::INFO)
        .then(|| Logged::of(&request));
    let response = route_request(shared, upstreams, conn, request, &mut outcome).await;
    let status = response.status().as_u16();
    let route = outcome.route.as_deref().unwrap_or("-");
    shared.metrics.request(route, status);
    if let (true, Some(reason)) = (outcome.denied, outcome.reason) {
        shared.metrics.denial(reason);
    }
    let Some(logged) = logged else {
        return response;
    };
    tracing::info!(
        target: "gatehouse::access",
        route,
        method = %logged.method,
        path = truncated(logged.uri.path(), 256),
        protocol = ?logged.version,
        status,
        reason = outcome.reason.unwrap_or(""),
        latency_ms = logged.started.elapsed().as_secs_f64() * 1000.0,
        email = outcome.caller.as_ref().and_then(verified_email).unwrap_or(""),
        client = %outcome.client.unwrap_or(conn.peer.ip()),
        trace = logged.trace.as_ref().map_or("", |t| t.as_str()),
        user_agent = truncated(logged.user_agent.as_ref().map_or("", |v| v.to_str().unwrap_or("")), 256),
        "request"
    );
    response
}

/// What the access log needs of a request, taken before the request moves on. A `Uri` or a
/// `HeaderValue` clone shares its bytes; only the path is logged (a query may carry secrets).
struct Logged {
    /// When the request came: the clock is read for the log alone.
    started: Instant,
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    trace: Option<TraceId>,
    user_agent: Option<HeaderValue>,
}

impl Logged {
    fn of(request: &Request) -> Self {
        let headers = request.headers();
        Logged {
            started: Instant::now(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            trace: TraceId::of(headers),
            user_agent: headers.get(header::USER_AGENT).cloned(),
        }
    }
}

/// The trace a request belongs to, from W3C `traceparent` or, as Cloud Run and Cloud
/// Logging read it, `X-Cloud-Trace-Context`: 32 lowercase hex digits, so that the
/// gateway's line and the app's can be joined. Anything else is not a trace id and is not
/// logged (a client's header is not trusted to be what it says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TraceId([u8; 32]);

impl TraceId {
    fn of(headers: &http::HeaderMap) -> Option<TraceId> {
        if let Some(v) = headers.get("traceparent") {
            // version "-" trace-id "-" parent-id "-" flags; version ff is invalid.
            let mut parts = v.as_bytes().split(|&b| b == b'-');
            let version = parts.next()?;
            if version.len() != 2 || version.eq_ignore_ascii_case(b"ff") {
                return None;
            }
            return TraceId::parse(parts.next()?);
        }
        let v = headers.get("x-cloud-trace-context")?.as_bytes();
        let end = v.iter().position(|&b| b == b'/').unwrap_or(v.len());
        TraceId::parse(&v[..end])
    }

    fn parse(hex: &[u8]) -> Option<TraceId> {
        let id: [u8; 32] = hex.try_into().ok()?;
        // All zeros is the W3C "invalid" id.
        if !id.iter().all(u8::is_ascii_hexdigit) || id.iter().all(|&b| b == b'0') {
            return None;
        }
        Some(TraceId(id.map(|b| b.to_ascii_lowercase())))
    }

    fn as_str(&self) -> &str {
        // Hex digits only, checked in `parse`.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub(crate) fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn route_request(
    shared: &Arc<Shared>,
    upstreams: &Upstreams,
    conn: &ConnInfo,
    mut request: Request,
    outcome: &mut Outcome,
) -> Response {
    // A front door, not a forward proxy.
    if request.method() == http::Method::CONNECT {
        return outcome.refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "connect_refused",
        );
    }
    // Routed by, and sent upstream as, the one spelling of its path.
    let respelled = match crate::paths::normalize(request.uri().path()) {
        Ok(path) => match path {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(path) => Some(path),
        },
        Err(error) => {
            tracing::debug!(%error, "path refused");
            return outcome.refuse(StatusCode::BAD_REQUEST, "bad_request", "bad_path");
        }
    };
    if let Some(path) = respelled {
        match with_path(request.uri(), &path) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(_) => return outcome.refuse(StatusCode::BAD_REQUEST, "bad_request", "bad_path"),
        }
    }
    let head = (request.uri(), request.headers(), request.version());
    let mut ctx = match select_route(shared, conn, head, outcome).await {
        Ok(ctx) => ctx,
        Err(answer) => return answer,
    };
    // Before anything adds identity: nothing below ever sees an identity header the client
    // sent, whatever happens later.
    let removed = headers::strip_identity(request.headers_mut(), ctx.via_trusted_proxy);
    if removed > 0 {
        tracing::debug!(removed, "removed client-sent identity headers");
    }
    // Before the gateway adds its own headers, which a client's `Connection` could
    // otherwise name for removal.
    ctx.hop = headers::take_hop_by_hop(&mut request);
    if ctx.hop.unsupported_coding {
        return outcome.refuse(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "unsupported_transfer_coding",
        );
    }
    // Before the token is required: a browser's preflight carries no credentials.
    let cors = &ctx.route.config.cors;
    let mut preflight_passes = false;
    if crate::cors::is_preflight(request.method(), request.headers()) {
        match cors.mode {
            crate::config::CorsMode::Answer => {
                return crate::cors::answer_preflight(cors, request.headers());
            }
            crate::config::CorsMode::Pass => {
                // It passes unauthenticated, so it passes as what a preflight is: a
                // question without a body or credentials (a browser sends none with it),
                // not a way to drive a handler that ignores the method, nor to have an
                // identity asserted for a policy never checked.
                preflight_passes = true;
                *request.body_mut() = Body::empty();
                let h = request.headers_mut();
                for name in [
                    header::CONTENT_LENGTH,
                    header::TRANSFER_ENCODING,
                    header::AUTHORIZATION,
                    HeaderName::from_static(SERVERLESS_AUTHORIZATION),
                ] {
                    h.remove(name);
                }
            }
            crate::config::CorsMode::RequireAuth => {}
        }
    }
    let decorate = cors.mode == crate::config::CorsMode::Answer;
    let origin = if decorate {
        request.headers().get(header::ORIGIN).cloned()
    } else {
        None
    };
    let mut response = admit(
        shared,
        upstreams,
        conn,
        &ctx,
        request,
        preflight_passes,
        outcome,
    )
    .await;
    if decorate {
        crate::cors::decorate(cors, origin.as_ref(), &mut response);
    }
    response
}

/// `uri` with its path replaced, its query kept.
fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, http::Error> {
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(target.parse()?);
    Ok(http::Uri::from_parts(parts)?)
}

/// The host a request is for: the request target's authority when it has one (absolute
/// form, HTTP/2's `:authority`; RFC 9112 §3.2.2), else its one `Host`. Several `Host`
/// fields, none in HTTP/1.1, or a `host` naming another than `:authority` is no request
/// to route (RFC 9112 §3.2, RFC 9113 §8.3.1).
fn requested_host(
    uri: &http::Uri,
    headers: &http::HeaderMap,
    version: http::Version,
) -> Result<HeaderValue, ()> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (header, more) = (hosts.next(), hosts.next());
    if more.is_some() {
        return Err(());
    }
    match (uri.authority(), header) {
        (Some(authority), header) => {
            // Userinfo in a request target is no host (RFC 9110 §4.2.4).
            if authority.as_str().contains('@') {
                return Err(());
            }
            let named = HeaderValue::from_str(authority.as_str()).map_err(|_| ())?;
            if version == http::Version::HTTP_2 {
                if let Some(h) = header {
                    let authority_host = normalize_host(authority.as_str());
                    let same = authority_host.is_some()
                        && h.to_str().ok().and_then(normalize_host) == authority_host;
                    if !same {
                        return Err(());
                    }
                }
            }
            Ok(named)
        }
        (None, Some(h)) => Ok(h.clone()),
        (None, None) if version == http::Version::HTTP_11 => Err(()),
        (None, None) => Ok(HeaderValue::from_static("")),
    }
}

/// Reads the clock once and picks the route; answers the gateway's own endpoints that need
/// no caller (health, readiness, keys, metrics).
async fn select_route(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    (uri, headers, version): (&http::Uri, &http::HeaderMap, http::Version),
    outcome: &mut Outcome,
) -> Result<Ctx, Response> {
    let now = shared.clock.now_unix();
    let mut identity_endpoint = false;
    if let Some(own) = uri.path().strip_prefix(crate::OWN_PREFIX) {
        outcome.route = Some(shared.own_route_name.clone());
        match own {
            "identity" => identity_endpoint = true,
            _ => return Err(endpoints::answer(shared, own, now).await),
        }
    }
    let snapshot = shared.snapshot();
    let Ok(host) = requested_host(uri, headers, version) else {
        return Err(outcome.refuse(StatusCode::BAD_REQUEST, "bad_request", "bad_host"));
    };
    let Some(normalized) = host.to_str().ok().and_then(normalize_host) else {
        return Err(outcome.refuse(StatusCode::BAD_REQUEST, "bad_request", "bad_host"));
    };
    let path = uri.path();
    let route = snapshot
        .select(Some(&normalized), path)
        .cloned()
        .or_else(|| {
            // Who-am-I is asked of the host, whichever prefixes its routes take.
            identity_endpoint
                .then(|| {
                    snapshot
                        .routes
                        .iter()
                        .find(|r| r.config.host.as_deref().is_none_or(|h| *h == *normalized))
                        .cloned()
                })
                .flatten()
        });
    let Some(route) = route else {
        return Err(outcome.refuse(StatusCode::NOT_FOUND, "not_found", "no_route"));
    };
    // A path that servers reading it otherwise (parameters dropped, case folded) would
    // route elsewhere is no request to judge by this route's policy.
    if snapshot.has_prefixes() && !identity_endpoint {
        let readings = crate::paths::readings(path);
        let same = |other: Option<&Arc<Route>>| other.is_some_and(|o| Arc::ptr_eq(o, &route));
        // Case matters as soon as either side has upper case: `/admin` is `/Admin`'s to a
        // server that folds it. Both readings at once too: `/ADMIN;x/users`.
        let fold = readings.has_upper_case || snapshot.has_upper_case_prefixes();
        let folded_elsewhere =
            |p: &str| fold && !same(snapshot.select_folded(Some(&normalized), p));
        let elsewhere = folded_elsewhere(path)
            || readings.without_params.as_deref().is_some_and(|p| {
                !same(snapshot.select(Some(&normalized), p)) || folded_elsewhere(p)
            });
        if elsewhere {
            return Err(outcome.refuse(StatusCode::BAD_REQUEST, "bad_request", "ambiguous_path"));
        }
    }
    if !identity_endpoint {
        outcome.route = Some(route.name.clone());
    }
    let peer = conn.peer.ip().to_canonical();
    let via_trusted_proxy = snapshot.trusts(peer);
    let client = if via_trusted_proxy {
        let client = headers::forwarded_client(headers, |ip| snapshot.trusts(ip)).unwrap_or(peer);
        outcome.client = Some(client);
        client
    } else {
        peer
    };
    Ok(Ctx {
        snapshot,
        route,
        now,
        host,
        identity_endpoint,
        via_trusted_proxy,
        client,
        hop: headers::Hop::default(),
    })
}

/// Verifies, authorizes and forwards: everything after routing and CORS.
async fn admit(
    shared: &Arc<Shared>,
    upstreams: &Upstreams,
    conn: &ConnInfo,
    ctx: &Ctx,
    mut request: Request,
    preflight_passes: bool,
    outcome: &mut Outcome,
) -> Response {
    let (token, verdict) = 'judged: {
        let Ok(sent) = token_header(request.headers()) else {
            break 'judged (None, Verdict::Repeated);
        };
        let recalled = sent
            .as_ref()
            .and_then(|(header, value)| conn.recall(header, value, ctx));
        if let Some((token, identity)) = recalled {
            break 'judged (Some(token), Verdict::Verified(identity));
        }
        let token = sent.and_then(|(header, value)| token_in(header, value));
        let verdict = verify(shared, ctx, token.as_ref()).await;
        if let (Some(token), Verdict::Verified(identity), Some(verifier)) =
            (&token, &verdict, &ctx.route.verifier)
        {
            conn.remember(token, identity, verifier);
        }
        (token, verdict)
    };
    // Who-am-I answers after verification and before the invoker check, as IAP's
    // `gcp-iap-mode=IDENTITY`.
    if ctx.identity_endpoint {
        return identity_endpoint(ctx, &verdict, outcome);
    }
    if !preflight_passes {
        if let Err(refusal) = authorize(ctx, &verdict, outcome) {
            return refusal;
        }
    }
    // After authorize, so buckets are per verified identity, never per claimed one.
    if let Err(refusal) = rate_limit(ctx, &verdict, outcome) {
        return refusal;
    }
    let mut added = headers::Added::with_capacity(headers::ADDED);
    if let Verdict::Verified(identity) = &verdict {
        set_identity(
            shared,
            conn,
            ctx,
            identity,
            token.as_ref(),
            request.headers_mut(),
            &mut added,
        );
    }
    crate::proxy::forward(shared, upstreams, conn, ctx, request, added, outcome).await
}

/// The caller's email, when its issuer vouches for it: an unverified one (a fresh
/// email/password sign-up says anything) names nobody, in headers, buckets or logs.
pub(crate) fn verified_email(identity: &Identity) -> Option<&str> {
    identity.email().filter(|_| identity.email_verified())
}

/// The bearer token in `header`'s `value`, found once.
fn token_in(header: HeaderName, value: &HeaderValue) -> Option<Token> {
    let token = bearer_value(value)?;
    let start = token.as_ptr() as usize - value.as_bytes().as_ptr() as usize;
    Some(Token {
        header,
        value: value.clone(),
        at: start..start + token.len(),
    })
}

/// The header the token is read from came more than once.
struct Repeated;

/// The header the token is read from, and its value: `X-Serverless-Authorization` first
/// (then `Authorization` is the app's), else `Authorization`, as Cloud Run. Either is a
/// single field (RFC 9110 §11.6.2); sent twice, it is refused rather than one of its values
/// judged while the app may read the other.
#[inline]
fn token_header(headers: &http::HeaderMap) -> Result<Option<(HeaderName, &HeaderValue)>, Repeated> {
    const SERVERLESS: HeaderName = HeaderName::from_static(SERVERLESS_AUTHORIZATION);
    let mut values = headers.get_all(SERVERLESS).iter();
    let (name, value) = match values.next() {
        Some(value) => (SERVERLESS, value),
        None => {
            values = headers.get_all(header::AUTHORIZATION).iter();
            match values.next() {
                Some(value) => (header::AUTHORIZATION, value),
                None => return Ok(None),
            }
        }
    };
    match values.next() {
        None => Ok(Some((name, value))),
        Some(_) => Err(Repeated),
    }
}

async fn verify(shared: &Shared, ctx: &Ctx, token: Option<&Token>) -> Verdict {
    let (Some(token), Some(verifier)) = (token, &ctx.route.verifier) else {
        // A public route with no audience has nothing to verify against.
        return Verdict::Missing;
    };
    let started = Instant::now();
    let result = verifier.verify(token.as_str(), ctx.now).await;
    shared.metrics.verified(started.elapsed());
    match result {
        Ok(identity) => Verdict::Verified(identity),
        Err(error) => {
            tracing::debug!(route = %ctx.route.name, reason = error.code(), %error, "token refused");
            Verdict::Refused(error)
        }
    }
}

/// 401 for a missing or refused token, 503 when the issuer's keys are unavailable.
fn require_token<'v>(
    verdict: &'v Verdict,
    outcome: &mut Outcome,
) -> Result<&'v Identity, Response> {
    match verdict {
        Verdict::Verified(identity) => Ok(identity),
        Verdict::Missing => {
            Err(outcome.refuse(StatusCode::UNAUTHORIZED, "invalid_token", "missing_token"))
        }
        // RFC 6750 §3.1: a request that repeats the token is malformed, 400.
        Verdict::Repeated => {
            Err(outcome.refuse(StatusCode::BAD_REQUEST, "invalid_request", "repeated_token"))
        }
        // The token could not be judged: the caller may retry the same token.
        Verdict::Refused(e) if e.is_unavailable() => {
            let mut refusal = outcome.refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                e.code(),
            );
            challenge(&mut refusal, e.code());
            Err(refusal)
        }
        Verdict::Refused(e) => {
            Err(outcome.refuse(StatusCode::UNAUTHORIZED, "invalid_token", e.code()))
        }
    }
}

fn identity_endpoint(ctx: &Ctx, verdict: &Verdict, outcome: &mut Outcome) -> Response {
    let identity = match require_token(verdict, outcome) {
        Ok(identity) => identity,
        Err(refusal) => return refusal,
    };
    let granted =
        ctx.route
            .config
            .policy
            .is_granted(RUN_INVOKER, Some(identity), &ctx.snapshot.groups);
    endpoints::identity(identity, &ctx.route, granted)
}

/// The invoker check. A public route refuses nothing: a token that did not verify earns no
/// identity headers, and the reason still reaches the log.
fn authorize(ctx: &Ctx, verdict: &Verdict, outcome: &mut Outcome) -> Result<(), Response> {
    if ctx.route.public {
        match verdict {
            Verdict::Refused(e) => outcome.reason = Some(e.code()),
            Verdict::Repeated => outcome.reason = Some("repeated_token"),
            Verdict::Verified(id) => outcome.caller = Some(id.clone()),
            Verdict::Missing => {}
        }
        return Ok(());
    }
    let identity = require_token(verdict, outcome)?;
    outcome.caller = Some(identity.clone());
    if ctx
        .route
        .config
        .policy
        .is_granted(RUN_INVOKER, Some(identity), &ctx.snapshot.groups)
    {
        Ok(())
    } else {
        Err(outcome.refuse(StatusCode::FORBIDDEN, "permission_denied", "not_invoker"))
    }
}

fn rate_limit(ctx: &Ctx, verdict: &Verdict, outcome: &mut Outcome) -> Result<(), Response> {
    let Some(limiter) = &ctx.route.limiter else {
        return Ok(());
    };
    let caller = match verdict {
        Verdict::Verified(id) => match verified_email(id) {
            Some(email) => format!("email:{}", email.to_ascii_lowercase()),
            None => format!("sub:{}:{}", id.issuer(), id.subject()),
        },
        // An IPv6 client holds a /64 at least: one bucket per /64, or each of its
        // addresses would be a bucket of its own.
        _ => match ctx.client {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            v4 => format!("ip:{v4}"),
        },
    };
    match limiter.check(&caller, Instant::now()) {
        Ok(()) => Ok(()),
        Err(retry_after) => {
            let mut response = outcome.refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate_limited",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            Err(response)
        }
    }
}

/// Adds the identity headers for a verified caller (to `added`: exactly one value of each,
/// the gateway's, the client's having been stripped), and on a checked route forwards the
/// token as Cloud Run does (signature removed), or as configured.
fn set_identity(
    shared: &Shared,
    conn: &ConnInfo,
    ctx: &Ctx,
    identity: &Identity,
    token: Option<&Token>,
    h: &mut http::HeaderMap,
    added: &mut headers::Added,
) {
    let route = &ctx.route;
    match shared
        .assertions
        .identity_headers(&route.assertion_audience, identity, ctx.now)
    {
        Ok(identity_headers) => {
            if let Some(email) = identity_headers.email {
                added.push((headers::EMAIL, email));
            }
            added.push((headers::USER_ID, identity_headers.user_id));
            added.push((headers::ASSERTION, identity_headers.assertion));
        }
        Err(error) => tracing::error!(%error, "could not sign the identity assertion"),
    }
    if route.public {
        return;
    }
    let Some(token) = token else {
        return;
    };
    match route.config.forward_token {
        crate::config::ForwardToken::SignatureRemoved => {
            if let Some(v) = conn.signature_removed(token) {
                h.insert(token.header.clone(), v);
            }
        }
        crate::config::ForwardToken::Keep => {}
        crate::config::ForwardToken::Strip => {
            h.remove(&token.header);
        }
    }
}

/// `Bearer <header>.<payload>.SIGNATURE_REMOVED_BY_GOOGLE`, built in one buffer.
fn signature_removed(token: &str) -> Option<HeaderValue> {
    let (signed, _) = token.rsplit_once('.')?;
    let mut value = BytesMut::with_capacity(8 + signed.len() + SIGNATURE_REMOVED.len());
    value.put_slice(b"Bearer ");
    value.put_slice(signed.as_bytes());
    value.put_u8(b'.');
    value.put_slice(SIGNATURE_REMOVED.as_bytes());
    HeaderValue::from_maybe_shared(value.freeze()).ok()
}

/// The admin listener's answer: the gateway's own endpoints (metrics among them), nothing
/// proxied.
pub(crate) async fn admin(shared: &Arc<Shared>, request: Request) -> Response {
    let now = shared.clock.now_unix();
    match request.uri().path().strip_prefix(crate::OWN_PREFIX) {
        Some("metrics") => endpoints::metrics(shared),
        Some(own) => endpoints::answer(shared, own, now).await,
        None => error_response(StatusCode::NOT_FOUND, "not_found", "no_such_endpoint"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("/short", 256), "/short");
        assert_eq!(truncated("/abcdef", 4), "/abc");
        // 'é' is two bytes: a cut inside it backs off to the boundary.
        assert_eq!(truncated("/é", 2), "/");
    }

    fn trace_of(pairs: &[(&'static str, &'static str)]) -> Option<String> {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        TraceId::of(&headers).map(|t| t.as_str().to_owned())
    }

    #[test]
    fn trace_id_comes_from_traceparent_then_cloud_trace_context() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_of(&[("traceparent", w3c)]).as_deref(), Some(id));
        assert_eq!(
            trace_of(&[(
                "x-cloud-trace-context",
                "4BF92F3577B34DA6A3CE929D0E0E4736/1;o=1"
            )])
            .as_deref(),
            Some(id),
            "Cloud Run's header, upper case folded"
        );
        assert_eq!(
            trace_of(&[("x-cloud-trace-context", "4bf92f3577b34da6a3ce929d0e0e4736")]).as_deref(),
            Some(id),
            "span and options are optional"
        );
        assert_eq!(
            trace_of(&[
                (
                    "x-cloud-trace-context",
                    "11111111111111111111111111111111/1"
                ),
                ("traceparent", w3c),
            ])
            .as_deref(),
            Some(id),
            "traceparent wins"
        );
        assert_eq!(trace_of(&[]), None);
    }

    #[test]
    fn what_is_not_a_trace_id_is_not_logged() {
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", // 31 digits
            "00-4bf92f3577b34da6a3ce929d0e0e4736a-00f067aa0ba902b7-01", // 33
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // invalid id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // invalid version
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01", // not hex
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ] {
            assert_eq!(trace_of(&[("traceparent", bad)]), None, "{bad}");
        }
        assert_eq!(
            trace_of(&[("x-cloud-trace-context", "\"}{\"a\":1/1")]),
            None
        );
    }

    #[test]
    fn signature_removed_keeps_header_and_payload() {
        let v = signature_removed("aGVhZA.cGF5bG9hZA.c2ln").unwrap();
        assert_eq!(
            v.to_str().unwrap(),
            format!("Bearer aGVhZA.cGF5bG9hZA.{SIGNATURE_REMOVED}")
        );
        assert!(signature_removed("no-dots").is_none());
    }
}
