//! Thin axum handlers over the protocol modules, and [`app`] / [`metadata_app`] which build
//! the routers. Paths mirror Google's so that clients change only a host.

use crate::accounts::{self, NewAccount};
use crate::hosts::AllowedHosts;
use crate::keys::RingName;
use crate::metadata::{self, MetadataError, MetadataRequest};
use crate::oauth::{self, AuthFailure, ClientAuth, OAuthError, Params};
use crate::service_accounts::{self, KeyApiError};
use crate::signin::{self, CSRF_COOKIE, CSRF_FIELD};
use crate::state::IdpState;
use crate::toolkit::{self, Caller, ToolkitError};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use serde_json::{Value as Json, json};
use std::sync::Arc;

/// Largest request body any endpoint reads.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest query string read.
pub const MAX_QUERY: usize = 16 * 1024;

fn json_response(status: StatusCode, body: &Json) -> Response {
    let mut r = (status, serde_json::to_string(body).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn internal() -> Response {
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"error": "server_error", "error_description": "Internal error"}),
    )
}

/// A 500 for an internal failure, logged (the body says nothing of it).
fn internal_error(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(%error, "internal error");
    internal()
}

fn oauth_error(e: &OAuthError) -> Response {
    no_store(json_response(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        &e.body(),
    ))
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        // No form-action: Chromium applies it to the redirect that follows a form post.
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    no_store(r)
}

fn redirect(status: StatusCode, url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(v) => {
            let mut r = status.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            no_store(r)
        }
        Err(_) => html(
            StatusCode::BAD_REQUEST,
            signin::error_page("The redirect URL cannot be sent"),
        ),
    }
}

/// The whole emulator on one port: discovery, keys, sign-in, `/token`, the IAM key API, the
/// Identity Toolkit subset, the emulator's own API, and the metadata server for the default
/// service account.
pub fn app(state: IdpState) -> Router {
    let default_sa = state.config().default_service_account.clone();
    let hosts = allowed_hosts(&state);
    // The emulator's own API and the IAM key API make keys, clients, users and tokens: no
    // other site's page may call them (they read JSON whatever the Content-Type, and a
    // `text/plain` POST is sent cross-site without a preflight).
    let admin = Router::new()
        .route(
            "/v1/projects/{project}/serviceAccounts/{email}/keys",
            post(create_sa_key),
        )
        .route(
            "/v1/projects/{project}/serviceAccounts/{email}/keys/{key_id}",
            axum::routing::delete(delete_sa_key),
        )
        .route(
            "/emulator/v1/clients",
            get(list_clients).post(register_client),
        )
        .route(
            "/emulator/v1/accounts",
            get(list_accounts).post(add_account),
        )
        .route("/emulator/v1/keys", get(list_keys))
        .route("/emulator/v1/keys:rotate", post(rotate_keys))
        .route("/emulator/v1/accounts/token", post(account_token))
        // The name `gatehouse-client` uses for the same thing.
        .route("/emulator/v1/users/token", post(account_token))
        .route_layer(middleware::from_fn_with_state(
            hosts.clone(),
            same_site_only,
        ));
    let toolkit = Router::new()
        .route(
            "/identitytoolkit.googleapis.com/v1/{*rest}",
            post(toolkit_handler).options(preflight),
        )
        .route(
            "/securetoken.googleapis.com/v1/token",
            post(securetoken_handler).options(preflight),
        )
        // Wiping every user is the emulator's own API too: a local page (an emulator UI) may,
        // another site's may not, its preflight included.
        .route(
            "/emulator/v1/projects/{project}/accounts",
            axum::routing::delete(delete_accounts)
                .options(preflight)
                .route_layer(middleware::from_fn_with_state(
                    hosts.clone(),
                    same_site_only,
                )),
        )
        .layer(middleware::from_fn(cors));
    let main = Router::new()
        .route("/", get(root))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oauth2/v3/certs", get(google_jwks))
        .route("/oauth2/v1/certs", get(google_pem))
        .route("/robot/v1/metadata/x509/{email}", get(robot_x509))
        .route("/service_accounts/v1/jwk/{email}", get(robot_jwk))
        .route("/o/oauth2/v2/auth", get(auth_get).post(auth_post))
        .route("/o/oauth2/auth", get(auth_get).post(auth_post))
        .route("/token", post(token))
        .route("/oauth2/v4/token", post(token))
        .route("/revoke", post(revoke))
        .route("/v1/userinfo", get(userinfo).post(userinfo))
        .route("/oauth2/v3/tokeninfo", get(tokeninfo).post(tokeninfo))
        .route("/tokeninfo", get(tokeninfo).post(tokeninfo))
        .route("/oauth2/v3/userinfo", get(userinfo).post(userinfo))
        .route("/avatar/{file}", get(avatar))
        .merge(admin)
        .merge(toolkit)
        .with_state(state.clone());
    main.merge(metadata_routes(state, default_sa))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(hosts, known_host_only))
}

/// A metadata server alone, speaking for service account `email` (one per
/// `--metadata ADDR=EMAIL`).
pub fn metadata_app(state: IdpState, email: String) -> Router {
    let hosts = allowed_hosts(&state);
    Router::new()
        .route("/", get(metadata_ping))
        .merge(metadata_routes(state, email))
        // Every answer of a metadata server carries the flavor header, 404s included.
        .fallback(|| async { meta_text(StatusCode::NOT_FOUND, "Not Found\n".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(hosts, known_host_only))
}

fn allowed_hosts(state: &IdpState) -> Arc<AllowedHosts> {
    let config = state.config();
    Arc::new(AllowedHosts::new(&config.base_url, &config.allowed_hosts))
}

/// 403 for a request naming a host this emulator does not answer to (DNS rebinding; see
/// [`crate::hosts`]). A request without `Host` (HTTP/1.0) comes from no browser.
async fn known_host_only(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    match request_host(&request) {
        Some(host) if !hosts.allows_host_header(host) => refused_site(
            "this emulator does not answer to that host name (DNS rebinding protection); \
             add it with --allowed-host",
        ),
        _ => next.run(request).await,
    }
}

/// The request's `Host` (HTTP/1.1), or its URI's authority (HTTP/2).
fn request_host(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or(""))
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
}

/// 403 for a browser request from a page of another site (CSRF); clients that are not
/// browsers send no `Origin`.
async fn same_site_only(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request_host(&request);
    let cross_site = request
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| !o.to_str().is_ok_and(|o| hosts.allows_origin(o, host)));
    if cross_site {
        return refused_site("the emulator's own API is not for other sites' pages");
    }
    next.run(request).await
}

fn refused_site(why: &str) -> Response {
    json_response(
        StatusCode::FORBIDDEN,
        &json!({"error": "access_denied", "error_description": why}),
    )
}

#[derive(Clone)]
struct MetaCtx {
    state: IdpState,
    email: String,
}

fn metadata_routes(state: IdpState, email: String) -> Router {
    Router::new()
        // `any`: the handler answers other methods itself, with the flavor header.
        .route("/computeMetadata", any(metadata_handler))
        .route("/computeMetadata/", any(metadata_handler))
        .route("/computeMetadata/v1", any(metadata_handler))
        .route("/computeMetadata/v1/", any(metadata_handler))
        .route("/computeMetadata/v1/{*path}", any(metadata_handler))
        .with_state(MetaCtx { state, email })
}

// ---------------------------------------------------------------------------------------
// Discovery and keys

async fn root() -> Response {
    // One answer serves both the Firebase emulator check and the metadata libraries' ping.
    let mut r = json_response(StatusCode::OK, &json!({"authEmulator": {"ready": true}}));
    r.headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    r
}

async fn discovery(State(state): State<IdpState>) -> Response {
    let mut r = json_response(StatusCode::OK, &oauth::discovery(&state.config().base_url));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

fn key_document(state: &IdpState, ring: RingName, pem: bool) -> Response {
    let Ok(snapshot) = state.snapshot(ring) else {
        return internal();
    };
    let body = if pem {
        snapshot.pem_map.clone()
    } else {
        snapshot.jwks.clone()
    };
    let mut r = (StatusCode::OK, Body::from(body.to_vec())).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    let cc = format!(
        "public, max-age={}, must-revalidate, no-transform",
        state.config().key_max_age
    );
    if let Ok(v) = HeaderValue::from_str(&cc) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

/// A ring's keys as `/emulator/v1/keys` shows them: which signs, which are published, and
/// every key's schedule (never key material).
fn ring_json(state: &IdpState, ring: RingName, keys: &[crate::keys::KeyTimes]) -> Json {
    let snapshot = state.snapshot(ring).ok();
    json!({
        "ring": ring.as_str(),
        "signing": snapshot.as_ref().map(|s| s.signer().kid().to_owned()),
        "published": snapshot.as_ref().map(|s| s.kids()).unwrap_or_default(),
        "keys": keys.iter().map(|k| json!({
            "kid": k.kid, "generation": k.generation,
            "createdAt": k.created_at, "signsFrom": k.signs_from,
        })).collect::<Vec<_>>(),
    })
}

fn keys_response(state: &IdpState, rings: &[(RingName, Vec<crate::keys::KeyTimes>)]) -> Response {
    let schedule = state.ring(RingName::Google).schedule();
    no_store(json_response(
        StatusCode::OK,
        &json!({
            "now": state.now(),
            "maxAge": schedule.max_age,
            "reloadInterval": schedule.reload_interval(),
            "rings": rings.iter().map(|(r, k)| ring_json(state, *r, k)).collect::<Vec<_>>(),
        }),
    ))
}

/// The emulator's keys as this replica has loaded them.
async fn list_keys(State(state): State<IdpState>) -> Response {
    let rings = [RingName::Google, RingName::SecureToken].map(|r| (r, state.ring(r).key_times()));
    keys_response(&state, &rings)
}

/// Rotates both rings now: the successor is published at once and signs one key max-age
/// (plus two reload intervals) later, on every replica of the database.
async fn rotate_keys(State(state): State<IdpState>) -> Response {
    match state.rotate().await {
        Ok(rings) => keys_response(&state, &rings),
        Err(e) => internal_error(&e),
    }
}

async fn google_jwks(State(state): State<IdpState>) -> Response {
    key_document(&state, RingName::Google, false)
}

async fn google_pem(State(state): State<IdpState>) -> Response {
    key_document(&state, RingName::Google, true)
}

const SECURETOKEN: &str = "securetoken@system.gserviceaccount.com";

async fn robot_x509(State(state): State<IdpState>, Path(email): Path<String>) -> Response {
    if email == SECURETOKEN {
        key_document(&state, RingName::SecureToken, true)
    } else {
        not_found()
    }
}

async fn robot_jwk(State(state): State<IdpState>, Path(email): Path<String>) -> Response {
    if email == SECURETOKEN {
        key_document(&state, RingName::SecureToken, false)
    } else {
        not_found()
    }
}

fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": {"code": 404, "message": "Not Found"}}),
    )
}

// ---------------------------------------------------------------------------------------
// Sign-in

fn query_params(raw: Option<&str>) -> Result<Params, OAuthError> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY {
        return Err(OAuthError::new("invalid_request", "Query too long"));
    }
    Params::parse(raw)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| signin::cookie_value(h, name).map(str::to_owned))
}

fn csrf_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, CSRF_COOKIE)
}

async fn chooser(
    state: &IdpState,
    params: &Params,
    client_id: &str,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let (csrf, set_cookie) = match csrf_cookie(headers) {
        Some(c) if c.len() >= 16 && c.len() <= 64 => (c, false),
        _ => (signin::new_csrf_token(), true),
    };
    let list = match accounts::list(state.store()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "listing accounts failed");
            return internal();
        }
    };
    let client_name = match oauth::client(state, client_id).await {
        Ok(Some(c)) => c.name,
        _ => client_id.to_owned(),
    };
    let page = signin::chooser_page(
        "/o/oauth2/v2/auth",
        params,
        &client_name,
        &list,
        &csrf,
        error,
    );
    let mut r = html(status, page);
    if set_cookie {
        let cookie = format!("{CSRF_COOKIE}={csrf}; Path=/o/oauth2; HttpOnly; SameSite=Strict");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

fn auth_failure(f: AuthFailure) -> Response {
    match f {
        AuthFailure::Page(msg) => html(StatusCode::BAD_REQUEST, signin::error_page(&msg)),
        AuthFailure::Redirect { url } => redirect(StatusCode::FOUND, &url),
    }
}

async fn auth_get(
    State(state): State<IdpState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = match query_params(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return html(StatusCode::BAD_REQUEST, signin::error_page(&e.description)),
    };
    let req = match oauth::check_auth_request(&state, &params).await {
        Ok(r) => r,
        Err(f) => return auth_failure(f),
    };
    let now = state.now();
    if req.prompt_none() {
        // The account named by login_hint, else the browser's last signed-in account (the
        // emulator's stand-in for a Google session; test accounts need no password anyway).
        let account = match (&req.login_hint, cookie(&headers, signin::SESSION_COOKIE)) {
            (Some(hint), _) => accounts::by_email(state.store(), hint).await,
            (None, Some(sub)) if sub.len() <= 32 => accounts::by_sub(state.store(), &sub).await,
            _ => Ok(None),
        };
        return match account {
            Ok(Some(a)) => match oauth::complete(&state, &req, &a, now).await {
                Ok(url) => redirect(StatusCode::FOUND, &url),
                Err(e) => {
                    tracing::error!(error = %e, "completing sign-in failed");
                    internal()
                }
            },
            Ok(None) => redirect(
                StatusCode::FOUND,
                &req.error_redirect("login_required", "The user must sign in"),
            ),
            Err(e) => internal_error(&e),
        };
    }
    chooser(
        &state,
        &params,
        &req.client_id,
        &headers,
        StatusCode::OK,
        None,
    )
    .await
}

async fn auth_post(State(state): State<IdpState>, headers: HeaderMap, body: Bytes) -> Response {
    let params = match std::str::from_utf8(&body)
        .map_err(|_| OAuthError::new("invalid_request", "Body is not UTF-8"))
        .and_then(Params::parse)
    {
        Ok(p) => p,
        Err(e) => return html(StatusCode::BAD_REQUEST, signin::error_page(&e.description)),
    };
    let cookie = csrf_cookie(&headers);
    if !signin::csrf_ok(cookie.as_deref(), params.get(CSRF_FIELD)) {
        return html(
            StatusCode::FORBIDDEN,
            signin::error_page(
                "The sign-in form expired or was not sent by this page (CSRF check failed). Go back and try again.",
            ),
        );
    }
    let req = match oauth::check_auth_request(&state, &params).await {
        Ok(r) => r,
        Err(f) => return auth_failure(f),
    };
    let now = state.now();
    let account = match params.get("action") {
        Some("choose") => {
            let Some(email) = params.get("email") else {
                return chooser(
                    &state,
                    &params,
                    &req.client_id,
                    &headers,
                    StatusCode::BAD_REQUEST,
                    Some("Choose an account"),
                )
                .await;
            };
            match accounts::by_email(state.store(), email).await {
                Ok(Some(a)) => a,
                Ok(None) => {
                    return chooser(
                        &state,
                        &params,
                        &req.client_id,
                        &headers,
                        StatusCode::BAD_REQUEST,
                        Some("That account is not on this emulator"),
                    )
                    .await;
                }
                Err(e) => return internal_error(&e),
            }
        }
        Some("add") => {
            let new = NewAccount {
                email: params.get("new_email").unwrap_or("").to_owned(),
                name: params.get("new_name").map(str::to_owned),
                hd: params.get("new_hd").map(str::to_owned),
                email_verified: None,
            };
            let account = match new.build(&state.config().base_url) {
                Ok(a) => a,
                Err(e) => {
                    return chooser(
                        &state,
                        &params,
                        &req.client_id,
                        &headers,
                        StatusCode::BAD_REQUEST,
                        Some(&e.to_string()),
                    )
                    .await;
                }
            };
            match accounts::upsert(state.store(), &account, now).await {
                Ok(a) => a,
                Err(e) => return internal_error(&e),
            }
        }
        _ => {
            return chooser(
                &state,
                &params,
                &req.client_id,
                &headers,
                StatusCode::BAD_REQUEST,
                Some("Choose an account"),
            )
            .await;
        }
    };
    match oauth::complete(&state, &req, &account, now).await {
        Ok(url) => {
            let mut r = redirect(StatusCode::SEE_OTHER, &url);
            // Lax: sent on the app's top-level navigation back here (prompt=none).
            let session = format!(
                "{}={}; Path=/o/oauth2; HttpOnly; SameSite=Lax",
                signin::SESSION_COOKIE,
                account.sub
            );
            if let Ok(v) = HeaderValue::from_str(&session) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "completing sign-in failed");
            internal()
        }
    }
}

async fn avatar(State(state): State<IdpState>, Path(file): Path<String>) -> Response {
    let Some(sub) = file.strip_suffix(".svg") else {
        return not_found();
    };
    match accounts::by_sub(state.store(), sub).await {
        Ok(Some(a)) => {
            let mut r = (StatusCode::OK, accounts::avatar_svg(&a)).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            );
            r
        }
        Ok(None) => not_found(),
        Err(e) => internal_error(&e),
    }
}

// ---------------------------------------------------------------------------------------
// Tokens

fn basic_auth(headers: &HeaderMap) -> Result<ClientAuth, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(ClientAuth::default());
    };
    let bad = || OAuthError::new("invalid_client", "Malformed client credentials");
    let value = value.to_str().map_err(|_| bad())?;
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return Ok(ClientAuth::default());
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    let unescape = |s: &str| -> Result<String, OAuthError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(&format!("v={s}")).map_err(|_| bad())?;
        Ok(pairs.into_iter().next().map(|p| p.1).unwrap_or_default())
    };
    Ok(ClientAuth {
        basic: Some((unescape(id)?, unescape(secret)?)),
    })
}

fn form_params(body: &[u8]) -> Result<Params, OAuthError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| OAuthError::new("invalid_request", "Body is not UTF-8"))?;
    Params::parse(text)
}

async fn token(State(state): State<IdpState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = form_params(&body)?;
        let auth = basic_auth(&headers)?;
        oauth::token(&state, &params, &auth, state.now()).await
    }
    .await;
    match result {
        Ok(body) => no_store(json_response(StatusCode::OK, &body)),
        Err(e) => oauth_error(&e),
    }
}

async fn revoke(State(state): State<IdpState>, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    let result = async {
        let mut params = form_params(&body)?;
        if params.get("token").is_none() {
            params = query_params(raw.as_deref())?;
        }
        let token = params.require("token")?.to_owned();
        oauth::revoke(&state, &token).await
    }
    .await;
    match result {
        Ok(()) => json_response(StatusCode::OK, &json!({})),
        Err(e) => oauth_error(&e),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

async fn userinfo(
    State(state): State<IdpState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let token = bearer(&headers).or_else(|| {
        query_params(raw.as_deref())
            .ok()
            .and_then(|p| p.get("access_token").map(str::to_owned))
    });
    let unauthorized = || {
        let mut r = json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_request", "error_description": "Invalid Credentials"}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
            ),
        );
        r
    };
    let Some(token) = token else {
        return unauthorized();
    };
    match oauth::userinfo(&state, &token, state.now()).await {
        Ok(Some(info)) => no_store(json_response(StatusCode::OK, &info)),
        Ok(None) => unauthorized(),
        Err(e) => internal_error(&e),
    }
}

async fn tokeninfo(
    State(state): State<IdpState>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = match form_params(&body).and_then(|p| {
        if p.get("id_token").is_some() || p.get("access_token").is_some() {
            Ok(p)
        } else {
            query_params(raw.as_deref())
        }
    }) {
        Ok(p) => p,
        Err(e) => return oauth_error(&e),
    };
    match oauth::tokeninfo(
        &state,
        params.get("id_token"),
        params.get("access_token"),
        state.now(),
    )
    .await
    {
        Ok(Some(info)) => no_store(json_response(StatusCode::OK, &info)),
        Ok(None) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_token", "error_description": "Invalid Value"}),
        ),
        Err(e) => internal_error(&e),
    }
}

fn google_api_error(status: StatusCode, message: &str, reason: &str) -> Response {
    let code = status.as_u16();
    json_response(
        status,
        &json!({"error": {"code": code, "message": message, "status": reason}}),
    )
}

fn key_api_error(e: &KeyApiError) -> Response {
    let (status, reason) = match e {
        KeyApiError::BadEmail => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        KeyApiError::TooManyKeys => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
        KeyApiError::NoSuchKey => (StatusCode::NOT_FOUND, "NOT_FOUND"),
    };
    google_api_error(status, &e.to_string(), reason)
}

async fn create_sa_key(
    State(state): State<IdpState>,
    Path((_project, email)): Path<(String, String)>,
) -> Response {
    match service_accounts::create_key(&state, &email, state.now()).await {
        Ok(Ok(body)) => no_store(json_response(StatusCode::OK, &body)),
        Ok(Err(e)) => key_api_error(&e),
        Err(e) => {
            tracing::error!(error = %e, "creating a service-account key failed");
            internal()
        }
    }
}

/// As IAM: `{}` once deleted, 404 `NOT_FOUND` for a key the account does not have.
async fn delete_sa_key(
    State(state): State<IdpState>,
    Path((_project, email, key_id)): Path<(String, String, String)>,
) -> Response {
    match service_accounts::delete_key(&state, &email, &key_id).await {
        Ok(Ok(())) => json_response(StatusCode::OK, &json!({})),
        Ok(Err(e)) => key_api_error(&e),
        Err(e) => {
            tracing::error!(error = %e, "deleting a service-account key failed");
            internal()
        }
    }
}

// ---------------------------------------------------------------------------------------
// The emulator's own API

async fn list_clients(State(state): State<IdpState>) -> Response {
    match oauth::list_clients(&state).await {
        Ok(list) => json_response(
            StatusCode::OK,
            &json!({"clients": list.iter().map(oauth::Client::to_json).collect::<Vec<_>>()}),
        ),
        Err(e) => internal_error(&e),
    }
}

async fn register_client(State(state): State<IdpState>, body: Bytes) -> Response {
    let req: oauth::ClientRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return oauth_error(&OAuthError::new(
                "invalid_request",
                format!("Malformed client registration: {e}"),
            ));
        }
    };
    match oauth::register_client(&state, req, state.now()).await {
        Ok(c) => json_response(StatusCode::OK, &c.to_json()),
        Err(e) => oauth_error(&e),
    }
}

fn account_json(a: &accounts::Account) -> Json {
    json!({
        "sub": a.sub, "email": a.email, "emailVerified": a.email_verified, "name": a.name,
        "givenName": a.given_name, "familyName": a.family_name, "picture": a.picture, "hd": a.hd,
    })
}

async fn list_accounts(State(state): State<IdpState>) -> Response {
    match accounts::list(state.store()).await {
        Ok(list) => json_response(
            StatusCode::OK,
            &json!({"accounts": list.iter().map(account_json).collect::<Vec<_>>()}),
        ),
        Err(e) => internal_error(&e),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccountRequest {
    email: String,
    name: Option<String>,
    hd: Option<String>,
    email_verified: Option<bool>,
    /// Only for `/emulator/v1/accounts/token`: a registered client id (default: the
    /// default web client).
    audience: Option<String>,
    nonce: Option<String>,
}

async fn upsert_account(
    state: &IdpState,
    body: &[u8],
) -> Result<(accounts::Account, AccountRequest), Response> {
    let req: AccountRequest = serde_json::from_slice(body).map_err(|e| {
        oauth_error(&OAuthError::new(
            "invalid_request",
            format!("Malformed account: {e}"),
        ))
    })?;
    if req
        .nonce
        .as_ref()
        .is_some_and(|n| n.len() > oauth::MAX_NONCE)
    {
        return Err(oauth_error(&OAuthError::new(
            "invalid_request",
            "nonce is too long",
        )));
    }
    let new = NewAccount {
        email: req.email.clone(),
        name: req.name.clone(),
        hd: req.hd.clone(),
        email_verified: req.email_verified,
    };
    let account = new
        .build(&state.config().base_url)
        .map_err(|e| oauth_error(&OAuthError::new("invalid_request", e.to_string())))?;
    let stored = accounts::upsert(state.store(), &account, state.now())
        .await
        .map_err(|e| internal_error(&e))?;
    Ok((stored, req))
}

async fn add_account(State(state): State<IdpState>, body: Bytes) -> Response {
    match upsert_account(&state, &body).await {
        Ok((a, _)) => json_response(StatusCode::OK, &account_json(&a)),
        Err(r) => r,
    }
}

/// A test user's Google ID token without the browser (`gatehouse token --user`): adds the
/// account if new, as "use another account" does.
async fn account_token(State(state): State<IdpState>, body: Bytes) -> Response {
    let (account, req) = match upsert_account(&state, &body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let audience = req
        .audience
        .unwrap_or_else(|| state.config().default_client_id.clone());
    match oauth::client(&state, &audience).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return oauth_error(&OAuthError::new(
                "invalid_client",
                "audience must be a registered client id",
            ));
        }
        Err(e) => return internal_error(&e),
    }
    let now = state.now();
    let claims = oauth::user_id_token_claims(
        &account,
        &audience,
        oauth::ScopeFlags {
            email: true,
            profile: true,
        },
        req.nonce.as_deref(),
        None,
        now,
        state.config().token_lifetime,
    );
    match state.sign(RingName::Google, &claims) {
        Ok(t) => no_store(json_response(
            StatusCode::OK,
            &json!({"id_token": t, "expires_in": state.config().token_lifetime}),
        )),
        Err(e) => internal_error(&e),
    }
}

// ---------------------------------------------------------------------------------------
// Identity Toolkit

/// CORS for browser SDKs: the origin is reflected (as the Firebase emulator does); no
/// credentials are allowed.
async fn cors(req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut r = next.run(req).await;
    if let Some(origin) = origin {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    r
}

async fn preflight(headers: HeaderMap) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    if let Some(req_headers) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, req_headers.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    r
}

fn toolkit_error(e: &ToolkitError) -> Response {
    json_response(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        &e.body(),
    )
}

/// The Admin SDKs in emulator mode send `Authorization: Bearer owner`; a web page's request
/// never counts as theirs (see [`Caller::from_headers`]).
fn caller(headers: &HeaderMap) -> Caller {
    Caller::from_headers(headers)
}

async fn toolkit_handler(
    State(state): State<IdpState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // `accounts:ACTION` or `projects/P/accounts:ACTION`.
    let (project, action) = match rest.split_once("accounts:") {
        Some(("", action)) => (state.config().project_id.clone(), action.to_owned()),
        Some((prefix, action)) => match prefix
            .strip_prefix("projects/")
            .and_then(|p| p.strip_suffix('/'))
        {
            Some(p) if !p.is_empty() && !p.contains('/') => (p.to_owned(), action.to_owned()),
            _ => {
                return toolkit_error(&ToolkitError {
                    status: 404,
                    message: "NOT_FOUND".into(),
                });
            }
        },
        None => {
            return toolkit_error(&ToolkitError {
                status: 404,
                message: "NOT_FOUND".into(),
            });
        }
    };
    let body: Json = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Json::Object(_)) => v,
            _ => {
                return toolkit_error(&ToolkitError::new(
                    "INVALID_JSON : the body must be a JSON object",
                ));
            }
        }
    };
    match toolkit::dispatch(
        &state,
        &project,
        &action,
        &body,
        caller(&headers),
        state.now(),
    )
    .await
    {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => toolkit_error(&e),
    }
}

async fn securetoken_handler(
    State(state): State<IdpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let params = if is_json {
        match serde_json::from_slice::<serde_json::Map<String, Json>>(&body) {
            Ok(m) => Params::from_pairs(
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
                    .collect(),
            ),
            Err(_) => return toolkit_error(&ToolkitError::new("INVALID_JSON")),
        }
    } else {
        form_params(&body)
    };
    let Ok(params) = params else {
        return toolkit_error(&ToolkitError::new("INVALID_ARGUMENT"));
    };
    let project = state.config().project_id.clone();
    match toolkit::refresh(&state, &project, &params, state.now()).await {
        Ok(v) => no_store(json_response(StatusCode::OK, &v)),
        Err(e) => toolkit_error(&e),
    }
}

async fn delete_accounts(State(state): State<IdpState>, Path(project): Path<String>) -> Response {
    match toolkit::delete_all(&state, &project).await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => toolkit_error(&e),
    }
}

// ---------------------------------------------------------------------------------------
// Metadata server

fn with_flavor(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("metadata-flavor", HeaderValue::from_static("Google"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static("Metadata Server for VM"),
    );
    h.insert("x-xss-protection", HeaderValue::from_static("0"));
    h.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
    r
}

fn meta_text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/text"),
    );
    with_flavor(r)
}

fn meta_json(body: &Json) -> Response {
    let mut r = json_response(StatusCode::OK, body);
    // Exactly this, as the real server sends: python google-auth before its PR #1382 (2023)
    // JSON-decodes only when Content-Type equals `application/json`, and otherwise returns
    // the text, which then fails at `token["expires_in"]`.
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_flavor(r)
}

async fn metadata_ping() -> Response {
    meta_text(StatusCode::OK, "computeMetadata/\n".into())
}

async fn metadata_handler(
    State(ctx): State<MetaCtx>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return meta_text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed\n".into(),
        );
    }
    // The real server refuses proxied requests (an SSRF guard): a request that passed
    // through a proxy carries X-Forwarded-For.
    if headers.contains_key("x-forwarded-for") {
        return meta_text(
            StatusCode::FORBIDDEN,
            "X-Forwarded-For header is not allowed.\n".into(),
        );
    }
    let flavored = headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google");
    if !flavored {
        return meta_text(
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.\n".into(),
        );
    }
    let path = uri.path();
    let Some(rest) = path
        .strip_prefix("/computeMetadata/v1")
        .map(|r| r.trim_start_matches('/'))
    else {
        return meta_text(StatusCode::OK, "v1/\n".into());
    };
    let query: Vec<(String, String)> = match uri.query() {
        Some(q) if q.len() > MAX_QUERY => {
            return meta_text(StatusCode::BAD_REQUEST, "query too long\n".into());
        }
        // Node's gcp-metadata does not URL-encode the audience; take the raw text after
        // `audience=` up to the next `&` when the strict parse fails.
        Some(q) => serde_urlencoded::from_str(q).unwrap_or_else(|_| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        }),
        None => Vec::new(),
    };
    let request = match metadata::route(rest, &query) {
        Ok(r) => r,
        Err(MetadataError::NotFound) => {
            return meta_text(StatusCode::NOT_FOUND, "Not Found\n".into());
        }
        Err(MetadataError::BadRequest(msg)) => {
            return meta_text(StatusCode::BAD_REQUEST, format!("{msg}\n"));
        }
    };
    answer_metadata(&ctx, request).await
}

async fn answer_metadata(ctx: &MetaCtx, request: MetadataRequest) -> Response {
    use MetadataRequest as R;
    let state = &ctx.state;
    let config = state.config();
    let email = &ctx.email;
    let account_ok = |a: &str| metadata::names_account(a, email);
    let now = state.now();
    let missing = || meta_text(StatusCode::NOT_FOUND, "Not Found\n".into());
    match request {
        R::Listing(entries) => meta_text(
            StatusCode::OK,
            entries.iter().map(|e| format!("{e}\n")).collect(),
        ),
        R::ProjectId => meta_text(StatusCode::OK, config.project_id.clone()),
        R::NumericProjectId => meta_text(StatusCode::OK, config.project_number.clone()),
        R::InstanceId => meta_text(StatusCode::OK, metadata::instance_id(config)),
        R::InstanceName => meta_text(StatusCode::OK, "gatehouse".into()),
        R::Hostname => meta_text(StatusCode::OK, "gatehouse.internal".into()),
        R::Zone => meta_text(
            StatusCode::OK,
            format!("projects/{}/zones/{}", config.project_number, config.zone),
        ),
        R::Region => meta_text(
            StatusCode::OK,
            format!(
                "projects/{}/regions/{}",
                config.project_number, config.region
            ),
        ),
        R::RootRecursive => meta_json(&metadata::root_tree(config, email)),
        R::ServiceAccounts => meta_text(StatusCode::OK, format!("default/\n{email}/\n")),
        R::AccountInfo { account } if account_ok(&account) => {
            meta_json(&metadata::account_info(email))
        }
        R::AccountListing { account } if account_ok(&account) => meta_text(
            StatusCode::OK,
            "aliases\nemail\nidentity\nscopes\ntoken\n".into(),
        ),
        R::Email { account } if account_ok(&account) => meta_text(StatusCode::OK, email.clone()),
        R::Aliases { account } if account_ok(&account) => {
            meta_text(StatusCode::OK, "default\n".into())
        }
        R::Scopes { account } if account_ok(&account) => meta_text(
            StatusCode::OK,
            metadata::DEFAULT_SCOPES
                .iter()
                .map(|s| format!("{s}\n"))
                .collect(),
        ),
        R::Token { account, scopes } if account_ok(&account) => {
            let result = service_accounts::cached_access_token(state, email, &scopes, now).await;
            match result {
                Ok((token, expires_in)) => meta_json(&json!({
                    "access_token": token, "expires_in": expires_in, "token_type": "Bearer"
                })),
                Err(e) => {
                    tracing::error!(error = %e, "minting a metadata access token failed");
                    with_flavor(internal())
                }
            }
        }
        R::Identity {
            account,
            audience,
            full,
        } if account_ok(&account) => {
            let result =
                service_accounts::cached_id_token(state, email, &audience, full, now).await;
            match result {
                Ok(token) => meta_text(StatusCode::OK, token),
                Err(e) => {
                    tracing::error!(error = %e, "minting a metadata identity token failed");
                    with_flavor(internal())
                }
            }
        }
        _ => missing(),
    }
}

/// Serves the main app on `main` and one metadata server per `(listener, email)` until
/// `shutdown` resolves.
pub async fn serve(
    state: IdpState,
    main: tokio::net::TcpListener,
    metadata: Vec<(tokio::net::TcpListener, String)>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, email) in metadata {
        let router = metadata_app(state.clone(), email);
        let mut rx = tx.subscribe();
        tasks.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.recv().await;
                })
                .await
        });
    }
    let router = app(state);
    let mut rx = tx.subscribe();
    tasks.spawn(async move {
        axum::serve(main, router)
            .with_graceful_shutdown(async move {
                let _ = rx.recv().await;
            })
            .await
    });
    shutdown.await;
    let _ = tx.send(());
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            return Err(e);
        }
    }
    Ok(())
}
