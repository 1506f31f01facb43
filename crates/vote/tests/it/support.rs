//! Shared helpers: a signing key the app trusts through a static-key profile, tokens
//! minted with it, an app over an in-memory SQLite store, and request helpers.

use axum::body::Body;
use gatehouse_store::Store;
use gatehouse_verify::{IssuerProfile, KeySet, SigningKey, Verifier};
use gatehouse_vote::{AppState, ManualClock, SignInConfig, Timestamp, VoteStore};
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt as _;

pub const CLIENT_ID: &str = "vote-test.apps.googleusercontent.com";
pub const FIREBASE_PROJECT: &str = "vote-demo";
/// 2026-11-29 12:00:00 UTC.
pub const NOW: i64 = 1_795_953_600;

pub struct Keys {
    pub google: SigningKey,
    pub firebase: SigningKey,
    /// Same kid as `google`, different key: a forged signature.
    pub forger: SigningKey,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        google: SigningKey::generate_rs256("google-1").unwrap(),
        firebase: SigningKey::generate_rs256("firebase-1").unwrap(),
        forger: SigningKey::generate_rs256("google-1").unwrap(),
    })
}

/// Trusts `keys().google` as Google (aud CLIENT_ID) and `keys().firebase` as Firebase.
pub fn verifier() -> Arc<Verifier> {
    let k = keys();
    Arc::new(
        Verifier::builder()
            .profile(
                IssuerProfile::google()
                    .with_static_keys(KeySet::new([k.google.public_key().unwrap()]))
                    .with_audiences([CLIENT_ID]),
            )
            .profile(
                IssuerProfile::firebase(FIREBASE_PROJECT)
                    .with_static_keys(KeySet::new([k.firebase.public_key().unwrap()])),
            )
            .build()
            .unwrap(),
    )
}

pub fn google_claims(sub: &str, email: &str) -> Value {
    json!({
        "iss": "https://accounts.google.com",
        "aud": CLIENT_ID,
        "azp": CLIENT_ID,
        "sub": sub,
        "email": email,
        "email_verified": true,
        // Early enough for votes cast with the clock set back a few hours.
        "iat": NOW - 4 * 3600,
        "exp": NOW + 3590,
    })
}

pub fn token_for(sub: &str) -> String {
    keys()
        .google
        .sign_jwt(&google_claims(sub, &format!("{sub}@example.com")))
        .unwrap()
}

pub fn sign(claims: &Value) -> String {
    keys().google.sign_jwt(claims).unwrap()
}

pub fn firebase_token(uid: &str) -> String {
    keys()
        .firebase
        .sign_jwt(&json!({
            "iss": format!("https://securetoken.google.com/{FIREBASE_PROJECT}"),
            "aud": FIREBASE_PROJECT,
            "sub": uid,
            "user_id": uid,
            "auth_time": NOW - 100,
            "iat": NOW - 10,
            "exp": NOW + 3590,
            "email": "fb@example.com",
            "email_verified": true,
            "firebase": {"sign_in_provider": "google.com"},
        }))
        .unwrap()
}

pub struct TestApp {
    pub app: axum::Router,
    pub votes: VoteStore,
    pub clock: ManualClock,
}

/// A clock at NOW that steps one millisecond per read, so votes have distinct times.
pub fn clock() -> ManualClock {
    ManualClock::at(Timestamp::from_unix_seconds(NOW)).stepping(1000)
}

pub async fn app_with(votes: VoteStore, verifier: Arc<Verifier>) -> TestApp {
    let clock = clock();
    let state = AppState::builder(
        votes.clone(),
        verifier,
        SignInConfig::emulator("http://127.0.0.1:9099", CLIENT_ID),
    )
    .clock(Arc::new(clock.clone()))
    .build();
    TestApp {
        app: gatehouse_vote::app(state),
        votes,
        clock,
    }
}

pub async fn sqlite_app() -> TestApp {
    let votes = VoteStore::open(Store::open_sqlite_memory().await.unwrap())
        .await
        .unwrap();
    app_with(votes, verifier()).await
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub async fn send(app: &axum::Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `POST /` with a form body and an optional `Authorization` value.
pub fn vote_request(authorization: Option<&str>, body: &str) -> Request<Body> {
    let mut builder =
        Request::post("/").header("content-type", "application/x-www-form-urlencoded");
    if let Some(value) = authorization {
        builder = builder.header("authorization", value);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

pub async fn vote(app: &axum::Router, sub: &str, team: &str) -> Answer {
    send(
        app,
        vote_request(
            Some(&format!("Bearer {}", token_for(sub))),
            &format!("team={team}"),
        ),
    )
    .await
}

pub async fn tally(app: &axum::Router) -> Value {
    let answer = send(
        app,
        Request::get("/")
            .header("accept", "application/json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.json()
}
