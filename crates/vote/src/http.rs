//! The app's routes and their thin handlers. The rules live in [`crate::votes`]; this
//! module maps requests to them and their outcomes to status codes.
//!
//! Layers, outermost first: request log (trace id, status, latency: never a header
//! value) -> token verification in `Optional` mode (a handler decides whether it needs
//! the [`Identity`]) -> routes. The vote route must refuse before it writes, so it
//! checks the identity first and the team second, as the samples do.

use crate::config::{CALLBACK_PATH, SignInConfig};
use crate::page;
use crate::time::{Clock, SystemClock, VerifyClock};
use crate::votes::{MAX_UID_CHARS, Tally, Team, VoteStore, VoteStoreError};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use gatehouse_verify::{AuthRejection, Identity, Mode, Verifier, VerifyLayer};
use http::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Scripts and styles from this origin only; fetches to this origin and, in Firebase mode,
/// to the Identity Toolkit's. The sign-in popup is a navigation, which CSP does not govern.
fn content_security_policy(sign_in: &SignInConfig) -> HeaderValue {
    let mut connect = String::from("'self'");
    for origin in sign_in.connect_origins() {
        connect.push(' ');
        connect.push_str(&origin);
    }
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    );
    HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    votes: VoteStore,
    verifier: Arc<Verifier>,
    sign_in: SignInConfig,
    clock: Arc<dyn Clock>,
    trace_project: String,
    allowed_origins: Vec<String>,
    csp: HeaderValue,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("votes", &self.inner.votes)
            .field("verifier", &self.inner.verifier)
            .field("sign_in", &self.inner.sign_in)
            .finish_non_exhaustive()
    }
}

/// Builds an [`AppState`].
#[derive(Debug)]
pub struct AppStateBuilder {
    votes: VoteStore,
    verifier: Arc<Verifier>,
    sign_in: SignInConfig,
    clock: Option<Arc<dyn Clock>>,
    trace_project: String,
    allowed_origins: Vec<String>,
}

impl AppStateBuilder {
    /// The clock votes are stamped with and tokens are checked against.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
    /// The project in `logging.googleapis.com/trace` (`projects/PROJECT/traces/ID`).
    pub fn trace_project(mut self, project: impl Into<String>) -> Self {
        self.trace_project = project.into();
        self
    }
    /// Origins allowed to call the JSON endpoints cross-origin (`*` = any, without
    /// credentials, as seed 000's `ALLOWED_ORIGIN` default).
    pub fn allowed_origins(mut self, origins: Vec<String>) -> Self {
        self.allowed_origins = origins;
        self
    }
    pub fn build(self) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                csp: content_security_policy(&self.sign_in),
                votes: self.votes,
                verifier: self.verifier,
                sign_in: self.sign_in,
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                trace_project: self.trace_project,
                allowed_origins: self.allowed_origins,
            }),
        }
    }
}

impl AppState {
    pub fn builder(
        votes: VoteStore,
        verifier: Arc<Verifier>,
        sign_in: SignInConfig,
    ) -> AppStateBuilder {
        AppStateBuilder {
            votes,
            verifier,
            sign_in,
            clock: None,
            trace_project: "local".to_owned(),
            allowed_origins: vec!["*".to_owned()],
        }
    }

    pub fn votes(&self) -> &VoteStore {
        &self.inner.votes
    }
}

/// The app: `GET /` and `POST /` (seed 001), `POST /run-secure-endpoint` (seed 000),
/// `GET /api/votes/hourly`, the sign-in callback page and the static assets.
pub fn app(state: AppState) -> Router {
    let cors = cors_layer(&state.inner.allowed_origins);
    let api = Router::new()
        .route("/run-secure-endpoint", axum::routing::post(secure_endpoint))
        .route("/api/votes/hourly", get(hourly))
        .layer(cors);
    let verify = VerifyLayer::new(state.inner.verifier.clone())
        .mode(Mode::Optional)
        .clock(Arc::new(VerifyClock(state.inner.clock.clone())));
    Router::new()
        .route("/", get(index).post(cast_vote))
        .route(CALLBACK_PATH, get(callback))
        .route("/static/{name}", get(static_asset))
        .route("/healthz", get(healthz))
        .merge(api)
        .layer(verify)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            log_request,
        ))
        .with_state(state)
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([http::header::AUTHORIZATION, CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600))
}

/// Whether the client prefers JSON to HTML (`Accept` with q-values; ties go to HTML).
pub fn prefers_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // For each type, the most specific matching range decides its q (RFC 9110 §12.5.1).
    let (mut json, mut html) = ((0u8, 0.0f32), (0u8, 0.0f32));
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let (json_rank, html_rank) = match media.as_str() {
            "application/json" => (3, 0),
            "application/*" => (2, 0),
            "text/html" => (0, 3),
            "text/*" => (0, 2),
            "*/*" => (1, 1),
            _ => (0, 0),
        };
        if json_rank > json.0 {
            json = (json_rank, q);
        }
        if html_rank > html.0 {
            html = (html_rank, q);
        }
    }
    // Equal q: the type the client named more specifically wins; a plain `*/*` gets HTML.
    json.1 > 0.0 && (json.1 > html.1 || (json.1 == html.1 && json.0 > html.0))
}

/// A request's Cloud Trace id, from `X-Cloud-Trace-Context` or W3C `traceparent`.
#[derive(Debug, Clone, Default)]
pub struct RequestTrace(pub Option<String>);

/// `TRACE_ID/SPAN_ID;o=1` or `00-TRACE_ID-SPAN_ID-FLAGS` -> `TRACE_ID` (32 hex digits).
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    let hex32 = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(value) = headers
        .get("x-cloud-trace-context")
        .and_then(|v| v.to_str().ok())
    {
        let id = value.split(['/', ';']).next().unwrap_or("");
        if hex32(id) {
            return Some(id.to_ascii_lowercase());
        }
    }
    let value = headers.get("traceparent").and_then(|v| v.to_str().ok())?;
    let mut parts = value.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (hex32(id) && id != "00000000000000000000000000000000").then(|| id.to_ascii_lowercase())
}

impl<S: Send + Sync> FromRequestParts<S> for RequestTrace {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<RequestTrace>()
            .cloned()
            .unwrap_or_default())
    }
}

/// What went wrong inside a handler, for the request log (never sent to the client).
#[derive(Debug, Clone)]
struct ErrorDetail(String);

/// One structured log line per request, with `severity` and `logging.googleapis.com/trace`
/// as Cloud Logging reads them. Logs the path without its query, and no header values.
async fn log_request(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let trace = trace_id(request.headers())
        .map(|id| format!("projects/{}/traces/{id}", state.inner.trace_project));
    request.extensions_mut().insert(RequestTrace(trace.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let detail = response
        .extensions()
        .get::<ErrorDetail>()
        .map(|d| d.0.clone())
        .unwrap_or_default();
    // The trace field only when there is a trace, so logs never carry an empty one.
    macro_rules! request_log {
        ($level:ident, $severity:literal, $($rest:tt)*) => {
            match &trace {
                Some(trace) => tracing::$level!(
                    severity = $severity, "logging.googleapis.com/trace" = %trace, $($rest)*
                ),
                None => tracing::$level!(severity = $severity, $($rest)*),
            }
        };
    }
    if status >= 500 {
        request_log!(error, "ERROR", %method, %path, status, latency_ms, error = %detail, "request failed");
    } else if status >= 400 {
        request_log!(warn, "WARNING", %method, %path, status, latency_ms, reason = %detail, "request refused");
    } else {
        request_log!(info, "INFO", %method, %path, status, latency_ms, "request");
    }
    response
}

/// Why a request was not served. Clients get a status, a stable code and a short
/// message; the details go to the log.
#[derive(Debug)]
pub enum AppError {
    /// No bearer token (or `Bearer` with nothing after it): 401.
    Unauthenticated,
    /// A token was presented and refused: 403 with the reason code (as the samples).
    Forbidden {
        reason: &'static str,
    },
    /// The issuer's keys could not be fetched: 503.
    KeysUnavailable,
    /// Not `CATS` or `DOGS`: 400.
    InvalidTeam,
    /// A JSON body that is not what the endpoint takes: 400.
    BadRequest(&'static str),
    Database(VoteStoreError),
}

impl From<VoteStoreError> for AppError {
    fn from(e: VoteStoreError) -> Self {
        AppError::Database(e)
    }
}

impl AppError {
    fn from_rejection(rejection: AuthRejection) -> Self {
        match rejection {
            AuthRejection::Missing => AppError::Unauthenticated,
            // The layer refuses these before a handler runs; said here for completeness.
            AuthRejection::Repeated => {
                AppError::BadRequest("send the ID token in one Authorization header")
            }
            AuthRejection::Invalid(e) if e.is_unavailable() => AppError::KeysUnavailable,
            AuthRejection::Invalid(e) => AppError::Forbidden { reason: e.code() },
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            AppError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "Unauthorized: sign in and send the ID token as Authorization: Bearer.".into(),
            ),
            AppError::Forbidden { reason } => (
                StatusCode::FORBIDDEN,
                reason,
                format!("Error with authentication: {reason}"),
            ),
            AppError::KeysUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "keys_unavailable",
                "The identity provider's keys are unavailable; try again shortly.".into(),
            ),
            AppError::InvalidTeam => (
                StatusCode::BAD_REQUEST,
                "invalid_team",
                "Invalid team specified.".into(),
            ),
            AppError::BadRequest(why) => (StatusCode::BAD_REQUEST, "bad_request", (*why).into()),
            AppError::Database(e) if e.is_unavailable() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "The database is unavailable; try again shortly.".into(),
            ),
            // No Retry-After: the vote may be in, and a retry could count it twice.
            AppError::Database(e) if e.is_outcome_unknown() => (
                StatusCode::GATEWAY_TIMEOUT,
                "outcome_unknown",
                "The database did not confirm the vote in time; it may have been recorded. \
                 Reload the page before voting again."
                    .into(),
            ),
            AppError::Database(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "database_error",
                "Unable to complete the request; see logs for details.".into(),
            ),
        }
    }

    /// Plain text (what the page alerts), JSON when asked, or the 503 page for a browser.
    fn respond(self, headers: &HeaderMap) -> Response {
        let (status, code, message) = self.parts();
        let mut response = if prefers_json(headers) {
            (
                status,
                axum::Json(serde_json::json!({"error": code, "message": message})),
            )
                .into_response()
        } else if status == StatusCode::SERVICE_UNAVAILABLE && wants_html(headers) {
            let mut page = (status, Html(page::unavailable())).into_response();
            // A stylesheet and an icon from this origin, nothing else: the page has no script.
            harden_html(
                page.headers_mut(),
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; img-src 'self'; \
                     frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                ),
            );
            page
        } else {
            (status, message).into_response()
        };
        let h = response.headers_mut();
        match &self {
            AppError::Unauthenticated => {
                h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AppError::Forbidden { reason } => {
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "Bearer error=\"invalid_token\", error_description=\"{reason}\""
                )) {
                    h.insert(WWW_AUTHENTICATE, v);
                }
            }
            _ => {}
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        }
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let detail = match self {
            AppError::Database(e) => e.to_string(),
            _ => code.to_owned(),
        };
        response.extensions_mut().insert(ErrorDetail(detail));
        response
    }
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

fn html_response(state: &AppState, body: String) -> Response {
    let mut response = Html(body).into_response();
    harden_html(response.headers_mut(), state.inner.csp.clone());
    response
}

/// The headers every HTML page of the app carries, whichever handler made it.
fn harden_html(h: &mut HeaderMap, csp: HeaderValue) {
    h.insert(CONTENT_SECURITY_POLICY, csp);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
}

/// The tally as the JSON view of `GET /` shows it.
pub fn tally_json(tally: &Tally) -> serde_json::Value {
    serde_json::json!({
        "cats": tally.cats,
        "dogs": tally.dogs,
        "leader": tally.leader_message(),
        "recent": tally.recent.iter().map(|v| serde_json::json!({
            "candidate": v.candidate,
            "time_cast": v.time_cast.rfc3339(),
        })).collect::<Vec<_>>(),
    })
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match state.inner.votes.tally().await {
        Ok(tally) if prefers_json(&headers) => {
            let mut response = axum::Json(tally_json(&tally)).into_response();
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Ok(tally) => html_response(&state, page::index(&tally, &state.inner.sign_in)),
        Err(e) => AppError::from(e).respond(&headers),
    }
}

/// The most a vote's form may hold: `team=CATS`, with room for fields a client adds.
const MAX_VOTE_BYTES: usize = 1024;
/// The most the secure endpoint's JSON may hold.
const MAX_SECURE_BYTES: usize = 16 * 1024;
/// How long a request body may take to arrive once the caller is known: a client
/// trickling one must not hold a connection for as long as it likes.
const BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A request's body, read only now (after the caller was judged: a refused request is
/// answered without waiting for it), within `max` bytes and [`BODY_DEADLINE`].
async fn read_body(body: Body, max: usize) -> Result<Bytes, AppError> {
    match tokio::time::timeout(BODY_DEADLINE, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(AppError::BadRequest(
            "the request body is too large or was cut off",
        )),
        Err(_) => Err(AppError::BadRequest(
            "the request body did not arrive in time",
        )),
    }
}

/// `POST /`: identity first (nothing is read or written for a refused token), then the
/// form (`application/x-www-form-urlencoded`, as the seed's Flask reads it) and its team,
/// then one insert stamped with the server's time.
async fn cast_vote(
    State(state): State<AppState>,
    headers: HeaderMap,
    identity: Result<Identity, AuthRejection>,
    body: Body,
) -> Response {
    let result = async {
        let identity = identity.map_err(AppError::from_rejection)?;
        let uid = identity.subject();
        // A control character (NUL above all, which PostgreSQL's text refuses and SQLite
        // keeps) is no uid either backend would store alike.
        if uid.is_empty()
            || uid.chars().count() > MAX_UID_CHARS
            || uid.chars().any(char::is_control)
        {
            return Err(AppError::Forbidden {
                reason: "invalid_claim",
            });
        }
        let form_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !form_type {
            return Err(AppError::BadRequest(
                "send the vote as application/x-www-form-urlencoded: team=CATS or team=DOGS",
            ));
        }
        let body = read_body(body, MAX_VOTE_BYTES).await?;
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let mut teams = form.iter().filter(|(k, _)| k == "team");
        let team = match (teams.next(), teams.next()) {
            (Some((_, value)), None) => Team::parse(value).ok_or(AppError::InvalidTeam)?,
            _ => return Err(AppError::InvalidTeam),
        };
        let now = state.inner.clock.now();
        state.inner.votes.cast(team, uid, now).await?;
        Ok(format!(
            "Vote successfully cast for '{}' at time {now}!",
            team.as_str()
        ))
    }
    .await;
    match result {
        Ok(message) => {
            let mut response = message.into_response();
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => e.respond(&headers),
    }
}

#[derive(Debug, Deserialize)]
struct SecureRequest {
    url: Option<String>,
}

/// Seed 000's endpoint: echoes the verified identity and the posted `{"url"}`. Refusals
/// follow RFC 6750 (401 `invalid_token` with the reason; 503 when keys are unavailable).
async fn secure_endpoint(identity: Result<Identity, AuthRejection>, body: Body) -> Response {
    let identity = match identity {
        Ok(identity) => identity,
        Err(rejection) => {
            let code = rejection.reason();
            let mut response = rejection.into_response();
            response
                .extensions_mut()
                .insert(ErrorDetail(code.to_owned()));
            return response;
        }
    };
    let json = HeaderMap::from_iter([(ACCEPT, HeaderValue::from_static("application/json"))]);
    let body = match read_body(body, MAX_SECURE_BYTES).await {
        Ok(body) => body,
        Err(error) => return error.respond(&json),
    };
    let url = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<SecureRequest>(&body) {
            Ok(request) => request.url,
            Err(_) => {
                return AppError::BadRequest("expected a JSON object like {\"url\": \"...\"}")
                    .respond(&json);
            }
        }
    };
    axum::Json(serde_json::json!({
        "ok": true,
        "email": identity.email(),
        "email_verified": identity.email_verified(),
        "sub": identity.subject(),
        "issuer": identity.issuer(),
        "profile": identity.profile(),
        "url": url,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct HourlyQuery {
    hours: Option<i64>,
}

/// Votes per hour over the last `hours` (default 24, at most 720), for a signed-in caller.
/// The query is taken as a `Result` so that a caller without a token learns that first,
/// whatever its query says.
async fn hourly(
    State(state): State<AppState>,
    identity: Result<Identity, AuthRejection>,
    query: Result<Query<HourlyQuery>, QueryRejection>,
) -> Response {
    if let Err(rejection) = identity {
        let code = rejection.reason();
        let mut response = rejection.into_response();
        response
            .extensions_mut()
            .insert(ErrorDetail(code.to_owned()));
        return response;
    }
    let json = HeaderMap::from_iter([(ACCEPT, HeaderValue::from_static("application/json"))]);
    let Ok(Query(query)) = query else {
        return AppError::BadRequest("hours must be a whole number").respond(&json);
    };
    let hours = query.hours.unwrap_or(24);
    if !(1..=720).contains(&hours) {
        return AppError::BadRequest("hours must be between 1 and 720").respond(&json);
    }
    let now = state.inner.clock.now();
    // From the start of the hour `hours - 1` hours ago, so the window holds whole hours.
    let hour_start = now.unix_seconds() - now.unix_seconds().rem_euclid(3600);
    let since = crate::time::Timestamp::from_unix_seconds(hour_start - (hours - 1) * 3600);
    match state.inner.votes.hourly(since).await {
        Ok(rows) => axum::Json(serde_json::json!({
            "since": since.rfc3339(),
            "hours": rows.iter().map(|h| serde_json::json!({
                "hour": h.hour.rfc3339(),
                "cats": h.cats,
                "dogs": h.dogs,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => AppError::from(e).respond(&json),
    }
}

async fn callback(State(state): State<AppState>) -> Response {
    html_response(&state, page::callback())
}

async fn static_asset(Path(name): Path<String>) -> Response {
    match page::asset(&name) {
        Some(asset) => (
            [
                (CONTENT_TYPE, asset.content_type),
                (CACHE_CONTROL, "no-cache"),
                (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            asset.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "Not found").into_response(),
    }
}

/// Liveness plus a database round trip: 200 `ok`, or 503 while the database is away.
async fn healthz(State(state): State<AppState>) -> Response {
    match state.inner.votes.count().await {
        Ok(_) => "ok".into_response(),
        Err(e) => {
            let headers = HeaderMap::new();
            AppError::from(e).respond(&headers)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        HeaderMap::from_iter([(ACCEPT, HeaderValue::from_str(v).unwrap())])
    }

    #[test]
    fn negotiation() {
        assert!(!prefers_json(&HeaderMap::new()));
        assert!(prefers_json(&accept("application/json")));
        assert!(!prefers_json(&accept("*/*")));
        assert!(!prefers_json(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(prefers_json(&accept("application/json, text/plain, */*")));
        assert!(prefers_json(&accept("text/html;q=0.5, application/json")));
        assert!(!prefers_json(&accept("text/html, application/json;q=0.9")));
        assert!(!prefers_json(&accept("application/json;q=0")));
    }

    #[test]
    fn trace_ids() {
        let h = |name: &'static str, v: &str| {
            HeaderMap::from_iter([(
                http::HeaderName::from_static(name),
                HeaderValue::from_str(v).unwrap(),
            )])
        };
        let id = "105445aa7843bc8bf206b12000100000";
        assert_eq!(
            trace_id(&h("x-cloud-trace-context", &format!("{id}/1;o=1"))).as_deref(),
            Some(id)
        );
        assert_eq!(
            trace_id(&h(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            ))
            .as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id(&h("traceparent", "garbage")), None);
        assert_eq!(trace_id(&h("x-cloud-trace-context", "short/1")), None);
    }
}
