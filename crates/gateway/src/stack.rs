//! The request path, built in one function ([`request_path`]): a stack of small layers, each
//! doing one thing and handing the request on or answering it itself.
//!
//! ```text
//! access log -> select route -> strip identity headers -> CORS -> extract token -> verify
//!            -> /_gatehouse/identity -> authorize -> rate limit -> set identity -> proxy
//! ```
//!
//! Layers talk through request extensions: [`Ctx`] (route, time), [`Token`], [`Verdict`],
//! and the [`Outcome`] slot the access log reads after the answer.

use crate::endpoints;
use crate::headers;
use crate::routes::{Route, Snapshot, normalize_host};
use crate::server::Shared;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::Response;
use gatehouse_verify::jws::SIGNATURE_REMOVED;
use gatehouse_verify::layer::{SERVERLESS_AUTHORIZATION, bearer_token};
use gatehouse_verify::members::RUN_INVOKER;
use gatehouse_verify::verifier::Identity;
use http::StatusCode;
use http::header::{self, HeaderName, HeaderValue};
use parking_lot::Mutex;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

pub(crate) type RequestPath = BoxCloneSyncService<Request, Response, Infallible>;

/// What the connection knows: who is on the other end, and whether over TLS.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// The request's route and the one reading of the clock, set by [`select_route`].
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub snapshot: Arc<Snapshot>,
    pub route: Arc<Route>,
    /// Unix seconds, read once per request.
    pub now: u64,
    /// The host the client asked for (for `X-Forwarded-Host` and the upstream's `Host`).
    pub host: String,
    pub identity_endpoint: bool,
}

/// The token a request carries and the header it came in.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: String,
    pub header: HeaderName,
}

/// What verification made of the request's token.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    Missing,
    Verified(Identity),
    Refused(gatehouse_verify::Error),
}

/// A CORS preflight the route passes to the app without authentication.
#[derive(Debug, Clone, Copy)]
struct PreflightPass;

/// What the layers decided, for the access log and metrics.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub route: Option<Arc<str>>,
    pub reason: Option<&'static str>,
    pub denied: bool,
    pub email: Option<String>,
}

pub(crate) type OutcomeSlot = Arc<Mutex<Outcome>>;

/// The whole request path. Order matters and is explained beside each layer.
pub(crate) fn request_path(shared: Arc<Shared>) -> RequestPath {
    let proxy = tower::service_fn({
        let shared = shared.clone();
        move |request: Request| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(crate::proxy::forward(&shared, request).await) }
        }
    });
    let stack = ServiceBuilder::new()
        // Outermost, so it sees every answer, including those the layers below give.
        .layer(from_fn_with_state(shared.clone(), access_log))
        // Reads the clock once and picks the route; answers the gateway's own endpoints
        // that need no caller (health, readiness, keys, metrics).
        .layer(from_fn_with_state(shared.clone(), select_route))
        // Before anything adds identity: nothing below ever sees an identity header the
        // client sent, whatever happens later.
        .layer(from_fn(strip_identity_headers))
        // Before the token is required: a browser's preflight carries no credentials.
        .layer(from_fn(cors))
        .layer(from_fn(extract_token))
        .layer(from_fn_with_state(shared.clone(), verify))
        // Who-am-I answers after verification and before the invoker check, as IAP's
        // `gcp-iap-mode=IDENTITY`.
        .layer(from_fn(identity_endpoint))
        .layer(from_fn(authorize))
        // After authorize, so buckets are per verified identity, never per claimed one.
        .layer(from_fn(rate_limit))
        .layer(from_fn_with_state(shared, set_identity))
        .service(proxy);
    BoxCloneSyncService::new(stack)
}

/// A refusal: JSON `{"error", "reason"}` with the RFC 6750 challenge where it applies.
pub(crate) fn refuse(
    request: &Request,
    status: StatusCode,
    error: &'static str,
    reason: &'static str,
) -> Response {
    if let Some(slot) = request.extensions().get::<OutcomeSlot>() {
        let mut o = slot.lock();
        o.reason = Some(reason);
        o.denied = true;
    }
    error_response(status, error, reason)
}

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
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::SERVICE_UNAVAILABLE {
        // Reason codes are fixed ASCII identifiers, so this never fails.
        if let Ok(v) = HeaderValue::from_str(&format!(
            "Bearer error=\"invalid_token\", error_description=\"{reason}\""
        )) {
            h.insert(header::WWW_AUTHENTICATE, v);
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}

fn outcome(request: &Request) -> Option<OutcomeSlot> {
    request.extensions().get::<OutcomeSlot>().cloned()
}

async fn access_log(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let slot = OutcomeSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().clone();
    // A `Uri` clone shares its bytes; only the path is logged (a query may carry secrets).
    let uri = request.uri().clone();
    let client = request.extensions().get::<ConnInfo>().map(|c| c.peer.ip());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let o = slot.lock();
    let route = o.route.as_deref().unwrap_or("-");
    shared.metrics.request(route, status);
    if o.denied {
        if let Some(reason) = o.reason {
            shared.metrics.denial(reason);
        }
    }
    tracing::info!(
        target: "gatehouse::access",
        route,
        method = %method,
        path = truncated(uri.path(), 256),
        status,
        reason = o.reason.unwrap_or(""),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        email = o.email.as_deref().unwrap_or(""),
        client = %client.map(|c| c.to_string()).unwrap_or_default(),
        "request"
    );
    response
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn select_route(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = shared.clock.now_unix();
    let mut identity_endpoint = false;
    if let Some(own) = request.uri().path().strip_prefix(crate::OWN_PREFIX) {
        if let Some(slot) = outcome(&request) {
            slot.lock().route = Some("_gatehouse".into());
        }
        match own {
            "identity" => identity_endpoint = true,
            _ => return endpoints::answer(&shared, own, now).await,
        }
    }
    let snapshot = shared.snapshot();
    let raw_host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_owned();
    let host = normalize_host(&raw_host);
    let path = request.uri().path();
    let route = snapshot.select(Some(&host), path).cloned().or_else(|| {
        // Who-am-I is asked of the host, whichever prefixes its routes take.
        identity_endpoint
            .then(|| {
                snapshot
                    .routes
                    .iter()
                    .find(|r| r.config.host.as_deref().is_none_or(|h| h == host))
                    .cloned()
            })
            .flatten()
    });
    let Some(route) = route else {
        return refuse(&request, StatusCode::NOT_FOUND, "not_found", "no_route");
    };
    if let Some(slot) = outcome(&request) {
        if !identity_endpoint {
            slot.lock().route = Some(route.name.clone());
        }
    }
    request.extensions_mut().insert(Arc::new(Ctx {
        snapshot: snapshot.clone(),
        route,
        now,
        host: raw_host,
        identity_endpoint,
    }));
    next.run(request).await
}

/// The request's context; shared (`Arc`) so each layer's look-up is a reference count.
fn ctx(request: &Request) -> Option<Arc<Ctx>> {
    request.extensions().get::<Arc<Ctx>>().cloned()
}

/// A layer found no [`Ctx`]: the stack was built wrong. Answer 500 rather than panic.
fn no_ctx() -> Response {
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "no_route_context",
    )
}

async fn strip_identity_headers(mut request: Request, next: Next) -> Response {
    let removed = headers::strip_identity(request.headers_mut());
    if removed > 0 {
        tracing::debug!(removed, "removed client-sent identity headers");
    }
    next.run(request).await
}

async fn cors(mut request: Request, next: Next) -> Response {
    let Some(ctx) = ctx(&request) else {
        return no_ctx();
    };
    let cors = &ctx.route.config.cors;
    let origin = request.headers().get(header::ORIGIN).cloned();
    if crate::cors::is_preflight(request.method(), request.headers()) {
        match cors.mode {
            crate::config::CorsMode::Answer => {
                return crate::cors::answer_preflight(cors, request.headers());
            }
            crate::config::CorsMode::Pass => {
                request.extensions_mut().insert(PreflightPass);
            }
            crate::config::CorsMode::RequireAuth => {}
        }
    }
    let mut response = next.run(request).await;
    if cors.mode == crate::config::CorsMode::Answer {
        crate::cors::decorate(cors, origin.as_ref(), &mut response);
    }
    response
}

/// `X-Serverless-Authorization` first (then `Authorization` is the app's), else
/// `Authorization: Bearer`, as Cloud Run.
async fn extract_token(mut request: Request, next: Next) -> Response {
    let token = bearer_token(request.headers(), true).map(|value| Token {
        value: value.to_owned(),
        header: if request.headers().contains_key(SERVERLESS_AUTHORIZATION) {
            HeaderName::from_static(SERVERLESS_AUTHORIZATION)
        } else {
            header::AUTHORIZATION
        },
    });
    if let Some(token) = token {
        request.extensions_mut().insert(token);
    }
    next.run(request).await
}

async fn verify(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    let Some(ctx) = ctx(&request) else {
        return no_ctx();
    };
    let token = request.extensions().get::<Token>();
    let verdict = match (token, &ctx.route.verifier) {
        (Some(token), Some(verifier)) => {
            let started = Instant::now();
            let result = verifier.verify(&token.value, ctx.now).await;
            shared.metrics.verify_latency.observe(started.elapsed());
            match result {
                Ok(identity) => Verdict::Verified(identity),
                Err(error) => {
                    tracing::debug!(route = %ctx.route.name, reason = error.code(), %error, "token refused");
                    Verdict::Refused(error)
                }
            }
        }
        // A public route with no audience has nothing to verify against.
        _ => Verdict::Missing,
    };
    request.extensions_mut().insert(verdict);
    next.run(request).await
}

fn verdict(request: &Request) -> Verdict {
    request
        .extensions()
        .get::<Verdict>()
        .cloned()
        .unwrap_or(Verdict::Missing)
}

/// 401 for a missing or refused token, 503 when the issuer's keys are unavailable.
fn refuse_token(request: &Request, verdict: &Verdict) -> Option<Response> {
    match verdict {
        Verdict::Verified(_) => None,
        Verdict::Missing => Some(refuse(
            request,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "missing_token",
        )),
        Verdict::Refused(e) if e.is_unavailable() => Some(refuse(
            request,
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            e.code(),
        )),
        Verdict::Refused(e) => Some(refuse(
            request,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            e.code(),
        )),
    }
}

async fn identity_endpoint(request: Request, next: Next) -> Response {
    let Some(ctx) = ctx(&request) else {
        return no_ctx();
    };
    if !ctx.identity_endpoint {
        return next.run(request).await;
    }
    let verdict = verdict(&request);
    if let Some(refusal) = refuse_token(&request, &verdict) {
        return refusal;
    }
    let Verdict::Verified(identity) = verdict else {
        return no_ctx();
    };
    let granted =
        ctx.route
            .config
            .policy
            .is_granted(RUN_INVOKER, Some(&identity), &ctx.snapshot.groups);
    endpoints::identity(&identity, &ctx.route, granted)
}

async fn authorize(request: Request, next: Next) -> Response {
    let Some(ctx) = ctx(&request) else {
        return no_ctx();
    };
    if request.extensions().get::<PreflightPass>().is_some() {
        return next.run(request).await;
    }
    let verdict = verdict(&request);
    let slot = outcome(&request);
    if ctx.route.public {
        // Public: refuse nothing. A token that did not verify earns no identity headers,
        // and the reason still reaches the log.
        if let (Some(slot), Verdict::Refused(e)) = (&slot, &verdict) {
            slot.lock().reason = Some(e.code());
        }
        if let (Some(slot), Verdict::Verified(id)) = (&slot, &verdict) {
            slot.lock().email = id.email().map(str::to_owned);
        }
        return next.run(request).await;
    }
    if let Some(refusal) = refuse_token(&request, &verdict) {
        return refusal;
    }
    let Verdict::Verified(identity) = &verdict else {
        return no_ctx();
    };
    if let Some(slot) = &slot {
        slot.lock().email = identity.email().map(str::to_owned);
    }
    if !ctx
        .route
        .config
        .policy
        .is_granted(RUN_INVOKER, Some(identity), &ctx.snapshot.groups)
    {
        return refuse(
            &request,
            StatusCode::FORBIDDEN,
            "permission_denied",
            "not_invoker",
        );
    }
    next.run(request).await
}

async fn rate_limit(request: Request, next: Next) -> Response {
    let Some(ctx) = ctx(&request) else {
        return no_ctx();
    };
    let Some(limiter) = &ctx.route.limiter else {
        return next.run(request).await;
    };
    let caller = match verdict(&request) {
        Verdict::Verified(id) => match id.email() {
            Some(email) => format!("email:{}", email.to_ascii_lowercase()),
            None => format!("sub:{}:{}", id.issuer(), id.subject()),
        },
        _ => format!(
            "ip:{}",
            request
                .extensions()
                .get::<ConnInfo>()
                .map(|c| c.peer.ip().to_string())
                .unwrap_or_default()
        ),
    };
    if let Err(retry_after) = limiter.check(&caller, Instant::now()) {
        let mut response = refuse(
            &request,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "rate_limited",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }
    next.run(request).await
}

/// Adds the identity headers for a verified caller, and on a checked route forwards the
/// token as Cloud Run does (signature removed), or as configured.
async fn set_identity(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(ctx) = ctx(&request) else {
        return no_ctx();
    };
    let Verdict::Verified(identity) = verdict(&request) else {
        return next.run(request).await;
    };
    let route = &ctx.route;
    let assertion = shared
        .assertions
        .assertion(&route.assertion_audience, &identity, ctx.now);
    let token = request.extensions().get::<Token>().cloned();
    let h = request.headers_mut();
    // Insert, never append: exactly one value, the gateway's.
    if let Some(email) = identity.email() {
        if let Ok(v) = HeaderValue::from_str(&format!("{}{email}", headers::ACCOUNTS_PREFIX)) {
            h.insert(headers::EMAIL, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{}{}",
        headers::ACCOUNTS_PREFIX,
        identity.subject()
    )) {
        h.insert(headers::USER_ID, v);
    }
    match assertion {
        Ok(assertion) => {
            if let Ok(v) = HeaderValue::from_str(&assertion) {
                h.insert(headers::ASSERTION, v);
            }
        }
        Err(error) => tracing::error!(%error, "could not sign the identity assertion"),
    }
    if !route.public {
        if let Some(token) = token {
            match route.config.forward_token {
                crate::config::ForwardToken::SignatureRemoved => {
                    if let Some((signed, _)) = token.value.rsplit_once('.') {
                        if let Ok(v) =
                            HeaderValue::from_str(&format!("Bearer {signed}.{SIGNATURE_REMOVED}"))
                        {
                            h.insert(token.header.clone(), v);
                        }
                    }
                }
                crate::config::ForwardToken::Keep => {}
                crate::config::ForwardToken::Strip => {
                    h.remove(&token.header);
                }
            }
        }
    }
    next.run(request).await
}

/// The admin listener's service: the gateway's own endpoints (metrics among them), nothing
/// proxied.
pub(crate) fn admin_path(shared: Arc<Shared>) -> RequestPath {
    BoxCloneSyncService::new(tower::service_fn(move |request: Request| {
        let shared = shared.clone();
        async move {
            let now = shared.clock.now_unix();
            let response = match request.uri().path().strip_prefix(crate::OWN_PREFIX) {
                Some("metrics") => endpoints::metrics(&shared),
                Some(own) => endpoints::answer(&shared, own, now).await,
                None => error_response(StatusCode::NOT_FOUND, "not_found", "no_such_endpoint"),
            };
            Ok::<_, Infallible>(response)
        }
    }))
}

#[cfg(test)]
mod truncation_tests {
    use super::truncated;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("/short", 256), "/short");
        assert_eq!(truncated("/abcdef", 4), "/abc");
        // 'é' is two bytes: a cut inside it backs off to the boundary.
        assert_eq!(truncated("/é", 2), "/");
    }
}
