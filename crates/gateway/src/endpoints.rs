//! The gateway's own endpoints under `/_gatehouse/`: assertion keys, who-am-I, health,
//! readiness (issuer keys loaded) and metrics.

use crate::routes::Route;
use crate::server::Shared;
use crate::stack::error_response;
use axum::body::Body;
use axum::response::Response;
use gatehouse_verify::verifier::Identity;
use http::StatusCode;
use http::header::{self, HeaderValue};
use std::sync::Arc;

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Answers `/_gatehouse/{own}` for everything but `identity` (which needs the stack).
pub(crate) async fn answer(shared: &Arc<Shared>, own: &str, now: u64) -> Response {
    match own {
        "healthz" => with_type(StatusCode::OK, "text/plain", "ok\n".into()),
        "readyz" => readyz(shared, now).await,
        "public_key-jwk" => public_keys(shared),
        "metrics" if shared.metrics_on_main => metrics(shared),
        _ => error_response(StatusCode::NOT_FOUND, "not_found", "no_such_endpoint"),
    }
}

pub(crate) fn public_keys(shared: &Shared) -> Response {
    match shared.assertions.jwk_set() {
        Ok(set) => {
            let mut r = with_type(StatusCode::OK, "application/json", set.to_string());
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            r
        }
        Err(_) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no_keys"),
    }
}

pub(crate) fn metrics(shared: &Shared) -> Response {
    let snapshot = shared.snapshot();
    let mut jwks: Vec<(String, u64)> = Vec::new();
    for route in &snapshot.routes {
        if let Some(v) = &route.verifier {
            for cache in v.key_caches() {
                if !jwks.iter().any(|(u, _)| u == cache.url()) {
                    jwks.push((cache.url().to_owned(), cache.fetch_count()));
                }
            }
        }
    }
    with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        shared.metrics.render(&jwks),
    )
}

/// Ready when every route's issuer keys are loaded (fetching them now if needed; a fetch
/// is single-flight and backs off after a failure, so probes cannot cause a storm).
async fn readyz(shared: &Shared, now: u64) -> Response {
    let snapshot = shared.snapshot();
    let mut missing = Vec::new();
    for route in &snapshot.routes {
        if let Some(v) = &route.verifier {
            for cache in v.key_caches() {
                if cache.keys(now).await.is_err() {
                    missing.push(serde_json::json!({"route": route.name(), "keys": cache.url()}));
                }
            }
        }
    }
    if missing.is_empty() {
        with_type(
            StatusCode::OK,
            "application/json",
            r#"{"ready":true}"#.into(),
        )
    } else {
        with_type(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            serde_json::json!({"ready": false, "keys_unavailable": missing}).to_string(),
        )
    }
}

/// The verified caller as JSON.
pub(crate) fn identity(identity: &Identity, route: &Route, granted: bool) -> Response {
    let claims = identity.claims();
    let body = serde_json::json!({
        "email": identity.email(),
        "email_verified": identity.email_verified(),
        "sub": identity.subject(),
        "iss": identity.issuer(),
        "aud": claims.audiences(),
        "exp": identity.expires_at(),
        "profile": identity.profile(),
        "service_account": identity.is_service_account(),
        "route": route.name(),
        "invoker": granted,
    });
    let mut r = with_type(StatusCode::OK, "application/json", body.to_string());
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
