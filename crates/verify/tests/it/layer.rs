//! The tower layer and the axum extractor, driven with `oneshot` (no socket).

use crate::support::*;
use axum::Router;
use axum::body::Body;
use axum::routing::get;
use gatehouse_verify::{
    FixedClock, Identity, IssuerProfile, Mode, Verifier, VerifyLayer, bearer_token,
};
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt as _;

async fn whoami(identity: Identity) -> String {
    format!("{}|{}", identity.subject(), identity.email().unwrap_or(""))
}

async fn maybe(identity: Option<Identity>) -> String {
    identity.map_or_else(|| "anonymous".to_owned(), |i| i.subject().to_owned())
}

fn app_with(verifier: Verifier, clock: FixedClock, mode: Mode, serverless: bool) -> Router {
    Router::new()
        .route("/", get(whoami))
        .route("/maybe", get(maybe))
        .layer(
            VerifyLayer::new(Arc::new(verifier))
                .clock(Arc::new(clock))
                .mode(mode)
                .serverless_header(serverless),
        )
}

fn app(mode: Mode, serverless: bool) -> Router {
    app_with(google_verifier(), FixedClock::at(NOW), mode, serverless)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    fn challenge(&self) -> &str {
        self.headers
            .get(header::WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap()
    }
}

async fn call(app: Router, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().uri(path);
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_str(value).unwrap());
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn valid() -> String {
    sign(&RSA, &google_claims())
}

#[tokio::test]
async fn the_handler_receives_the_verified_identity() {
    let reply = call(
        app(Mode::Required, false),
        "/",
        &[("authorization", &bearer(&valid()))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "110169484474386276334|alice@example.com");
    // The scheme is case-insensitive.
    let reply = call(
        app(Mode::Required, false),
        "/",
        &[("authorization", &format!("bearer {}", valid()))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn an_invalid_token_is_401_with_an_rfc6750_challenge_and_the_reason() {
    let cases = [
        (
            sign(
                &RSA,
                &claims_with(|c| {
                    c.insert("exp".into(), json!(NOW - 61));
                }),
            ),
            "expired",
        ),
        (sign(&ATTACKER, &google_claims()), "bad_signature"),
        (
            sign(
                &RSA,
                &claims_with(|c| {
                    c.insert("aud".into(), json!("other"));
                }),
            ),
            "wrong_audience",
        ),
        ("not.a.token".to_owned(), "malformed"),
    ];
    for (token, code) in cases {
        let reply = call(
            app(Mode::Required, false),
            "/",
            &[("authorization", &bearer(&token))],
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{code}");
        assert_eq!(
            reply.challenge(),
            format!(r#"Bearer error="invalid_token", error_description="{code}""#)
        );
        assert_eq!(
            reply.json(),
            json!({"error": "invalid_token", "reason": code})
        );
        assert_eq!(
            reply.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        // Nothing of the token comes back.
        assert!(!reply.body.contains(&token));
    }
}

#[tokio::test]
async fn a_missing_or_empty_token_is_401() {
    let cases: [&[(&str, &str)]; 8] = [
        &[],
        &[("authorization", "Bearer")],
        &[("authorization", "Bearer ")],
        &[("authorization", "Bearer    ")],
        &[("authorization", "Basic dXNlcjpwYXNz")],
        &[("authorization", "Bearer a b")],
        &[("authorization", "Token abc")],
        &[("x-serverless-authorization", "Bearer abc")],
    ];
    for headers in cases {
        let reply = call(app(Mode::Required, false), "/", headers).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(reply.challenge(), "Bearer");
        assert_eq!(
            reply.json(),
            json!({"error": "unauthenticated", "reason": "missing_token"})
        );
    }
}

#[tokio::test]
async fn the_serverless_header_is_preferred_when_enabled() {
    let good = bearer(&valid());
    // Cloud Run leaves `Authorization` to the app: the serverless header wins.
    let reply = call(
        app(Mode::Required, true),
        "/",
        &[
            ("x-serverless-authorization", &good),
            ("authorization", "Bearer app-token"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // Preferred, not a fallback: a bad serverless token is not rescued by Authorization.
    let reply = call(
        app(Mode::Required, true),
        "/",
        &[
            ("x-serverless-authorization", "Bearer garbage"),
            ("authorization", &good),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["reason"], "malformed");
    // Without it, Authorization is used.
    let reply = call(app(Mode::Required, true), "/", &[("authorization", &good)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Disabled: the serverless header is ignored.
    let reply = call(
        app(Mode::Required, false),
        "/",
        &[("x-serverless-authorization", &good)],
    )
    .await;
    assert_eq!(reply.json()["reason"], "missing_token");

    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_static("Bearer a"));
    headers.insert(
        "x-serverless-authorization",
        HeaderValue::from_static("Bearer b"),
    );
    assert_eq!(bearer_token(&headers, true), Ok(Some("b")));
    assert_eq!(bearer_token(&headers, false), Ok(Some("a")));
}

/// The header the token comes from sent twice is a malformed request (RFC 6750 §3.1), in
/// either mode: judging one value while something behind reads the other would let an
/// unchecked token ride on a checked one.
#[tokio::test]
async fn a_token_header_sent_twice_is_400() {
    let good = bearer(&valid());
    let other = bearer(&sign(&EC, &google_claims()));
    for (mode, serverless, name) in [
        (Mode::Required, false, "authorization"),
        (Mode::Optional, false, "authorization"),
        (Mode::Required, true, "x-serverless-authorization"),
    ] {
        for second in [&good, &other] {
            let reply = call(
                app(mode, serverless),
                "/maybe",
                &[(name, &good), (name, second)],
            )
            .await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{mode:?} {name}");
            assert_eq!(
                reply.json(),
                json!({"error": "invalid_request", "reason": "repeated_token"})
            );
        }
    }
    // One of each, the serverless header read: not a repetition.
    let reply = call(
        app(Mode::Required, true),
        "/",
        &[
            ("x-serverless-authorization", &good),
            ("authorization", &other),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// A handler behind two layers gets the inner one's verdict only: an identity an outer
/// layer (other audiences) put on the request does not survive the inner one's refusal.
#[tokio::test]
async fn an_inner_layer_judges_alone() {
    let inner = verifier(
        IssuerProfile::google()
            .with_audiences(["another-audience"])
            .with_static_keys(keyset(&[&RSA])),
    );
    let app = Router::new()
        .route("/maybe", get(maybe))
        .route("/", get(whoami))
        .layer(
            VerifyLayer::new(Arc::new(inner))
                .clock(Arc::new(FixedClock::at(NOW)))
                .mode(Mode::Optional),
        )
        .layer(
            VerifyLayer::new(Arc::new(google_verifier()))
                .clock(Arc::new(FixedClock::at(NOW)))
                .mode(Mode::Optional),
        );
    let token = bearer(&valid());
    let reply = call(app.clone(), "/maybe", &[("authorization", &token)]).await;
    assert_eq!(reply.body, "anonymous");
    let reply = call(app, "/", &[("authorization", &token)]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["reason"], "wrong_audience");
}

#[tokio::test]
async fn optional_mode_passes_without_an_identity() {
    let reply = call(app(Mode::Optional, false), "/maybe", &[]).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "anonymous")
    );
    let reply = call(
        app(Mode::Optional, false),
        "/maybe",
        &[("authorization", &bearer(&valid()))],
    )
    .await;
    assert_eq!(reply.body, "110169484474386276334");
    // A refused token in optional mode: no identity for optional handlers...
    let expired = sign(
        &RSA,
        &claims_with(|c| {
            c.insert("exp".into(), json!(NOW - 100));
        }),
    );
    let reply = call(
        app(Mode::Optional, false),
        "/maybe",
        &[("authorization", &bearer(&expired))],
    )
    .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "anonymous")
    );
    // ...and a handler that needs one refuses with the reason.
    let reply = call(
        app(Mode::Optional, false),
        "/",
        &[("authorization", &bearer(&expired))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["reason"], "expired");
    let reply = call(app(Mode::Optional, false), "/", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["reason"], "missing_token");
}

#[tokio::test]
async fn an_identity_handler_without_the_layer_refuses() {
    let app = Router::new().route("/", get(whoami));
    let reply = call(app, "/", &[("authorization", &bearer(&valid()))]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_layer_reads_time_from_its_clock() {
    let clock = FixedClock::at(NOW);
    let exp = NOW + 3590;
    let app = app_with(google_verifier(), clock.clone(), Mode::Required, false);
    let auth = bearer(&valid());
    clock.set(exp + 59);
    assert_eq!(
        call(app.clone(), "/", &[("authorization", &auth)])
            .await
            .status,
        StatusCode::OK
    );
    clock.set(exp + 60);
    let reply = call(app, "/", &[("authorization", &auth)]).await;
    assert_eq!(reply.json()["reason"], "expired");
}

#[tokio::test]
async fn unavailable_keys_are_503_not_401() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    drop(listener);
    let v = url_verifier(&url, cache_config(), 0);
    let reply = call(
        app_with(v, FixedClock::at(NOW), Mode::Required, false),
        "/",
        &[("authorization", &bearer(&valid()))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.json(),
        json!({"error": "temporarily_unavailable", "reason": "keys_unavailable"})
    );
    assert_eq!(
        reply.challenge(),
        r#"Bearer error="invalid_token", error_description="keys_unavailable""#
    );
}
