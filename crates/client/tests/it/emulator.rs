//! The emulator-user source against a stand-in for the emulator's user-token endpoint.

use crate::support::{Counter, T0, clock, id_token, serve};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use gatehouse_client::{EMULATOR_USER_TOKEN_PATH, EmulatorUser, Error, IdTokenSource};
use gatehouse_verify::FixedClock;
use gatehouse_verify::unverified::danger_decode_unverified;
use serde_json::{Value, json};
use std::sync::Arc;

const DEFAULT_CLIENT: &str = "gatehouse-web.apps.googleusercontent.com";

#[derive(Clone)]
struct Emulator {
    clock: FixedClock,
    hits: Counter,
    requests: Arc<parking_lot::Mutex<Vec<Value>>>,
}

async fn user_token(State(emulator): State<Emulator>, Json(body): Json<Value>) -> Response {
    use gatehouse_verify::Clock as _;
    emulator.hits.hit();
    emulator.requests.lock().push(body.clone());
    let audience = body
        .get("audience")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_CLIENT);
    if audience == "unregistered" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_client", "error_description": "no such client"})),
        )
            .into_response();
    }
    let email = body["email"].as_str().unwrap_or_default();
    Json(json!({"id_token": id_token(audience, email, emulator.clock.now_unix(), 3600)}))
        .into_response()
}

async fn start() -> (String, Emulator) {
    let (clock, _) = clock();
    let emulator = Emulator {
        clock,
        hits: Counter::default(),
        requests: Default::default(),
    };
    let app = Router::new()
        .route(EMULATOR_USER_TOKEN_PATH, post(user_token))
        .with_state(emulator.clone());
    let addr = serve(app).await;
    (format!("http://{addr}"), emulator)
}

#[tokio::test]
async fn asks_the_emulator_for_a_users_token() {
    let (idp, emulator) = start().await;
    let user = EmulatorUser::new(&idp, "alice@example.com").unwrap();
    let token = user.mint("https://receiver.example").await.unwrap();
    assert_eq!(token.expires_at(), T0 + 3600);
    let claims = danger_decode_unverified(token.as_str()).unwrap().claims;
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["aud"], "https://receiver.example");

    let token = user.mint_for(None).await.unwrap();
    let claims = danger_decode_unverified(token.as_str()).unwrap().claims;
    assert_eq!(claims["aud"], DEFAULT_CLIENT);
    assert_eq!(
        *emulator.requests.lock(),
        [
            json!({"email": "alice@example.com", "audience": "https://receiver.example"}),
            json!({"email": "alice@example.com"}),
        ]
    );
}

#[tokio::test]
async fn a_refused_audience_is_a_clear_error() {
    let (idp, emulator) = start().await;
    let user = EmulatorUser::new(&idp, "alice@example.com").unwrap();
    let error = user.mint("unregistered").await.unwrap_err();
    assert!(
        matches!(error, Error::Refused { status: 400, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("invalid_client: no such client"),
        "{error}"
    );
    assert_eq!(emulator.hits.get(), 1);
}

#[tokio::test]
async fn bad_arguments_are_refused_before_any_request() {
    assert!(matches!(
        EmulatorUser::new("http://127.0.0.1:9099", "alice").unwrap_err(),
        Error::InvalidEmail { .. }
    ));
    assert!(matches!(
        EmulatorUser::new("http://127.0.0.1:9099/some/path", "a@b.c").unwrap_err(),
        Error::InvalidUrl { .. }
    ));
}
