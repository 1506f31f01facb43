//! CORS as a front door does it: preflights answered from the route's exact origin list
//! (never a reflection of any origin with credentials), or passed to the app, or treated as
//! ordinary requests.

use crate::config::Cors;
use axum::body::Body;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The value for `Access-Control-Allow-Origin`, when `origin` may read responses.
fn allowed_origin(cors: &Cors, origin: &HeaderValue) -> Option<HeaderValue> {
    let origin_str = origin.to_str().ok()?;
    if cors.allow_origins.iter().any(|o| o == origin_str) {
        return Some(origin.clone());
    }
    // `*` is refused with credentials at config load; here it means "any site, no cookies".
    (!cors.allow_credentials && cors.allow_origins.iter().any(|o| o == "*"))
        .then(|| HeaderValue::from_static("*"))
}

/// The gateway's own answer to a preflight.
pub(crate) fn answer_preflight(cors: &Cors, headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Origin"));
    let Some(allow) = headers
        .get(header::ORIGIN)
        .and_then(|o| allowed_origin(cors, o))
    else {
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    };
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    if let Ok(v) = HeaderValue::from_str(&cors.allow_methods.join(", ")) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cors.allow_headers.join(", ")) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age),
    );
    response
}

/// Adds the CORS headers to an actual response (including the gateway's own 401/403, so a
/// page can read why) when the request's origin is allowed.
pub(crate) fn decorate(cors: &Cors, origin: Option<&HeaderValue>, response: &mut Response<Body>) {
    let Some(allow) = origin.and_then(|o| allowed_origin(cors, o)) else {
        return;
    };
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if cors.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !cors.expose_headers.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cors.expose_headers.join(", ")) {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CorsMode;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors {
            mode: CorsMode::Answer,
            allow_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            allow_credentials: credentials,
            ..Cors::default()
        }
    }

    fn preflight(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            "POST".parse().unwrap(),
        );
        h
    }

    #[test]
    fn listed_origin_is_answered_unlisted_is_not_reflected() {
        let c = cors(&["https://app.example"], true);
        let ok = answer_preflight(&c, &preflight("https://app.example"));
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            ok.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
        let evil = answer_preflight(&c, &preflight("https://evil.example"));
        assert_eq!(evil.status(), StatusCode::FORBIDDEN);
        assert!(!evil.headers().contains_key("access-control-allow-origin"));
    }

    #[test]
    fn star_means_any_origin_without_credentials() {
        let c = cors(&["*"], false);
        let r = answer_preflight(&c, &preflight("https://any.example"));
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert!(!r.headers().contains_key("access-control-allow-credentials"));
    }
}
