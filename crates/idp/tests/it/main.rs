//! Integration tests of the emulator through its router (no sockets), against SQLite and,
//! when configured, PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod garbage;
mod hardening;
mod keys;
mod metadata;
mod signin;
mod storage;
mod token;
mod toolkit;
mod toolkit_security;

use axum::Router;
use axum::body::Body;
use gatehouse_idp::{IdpConfig, IdpState, app};
use gatehouse_store::Store;
use gatehouse_verify::{FixedClock, IssuerProfile, KeyLimits, KeySet, Verifier};
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt as _;

pub const BASE: &str = "http://127.0.0.1:9099";
pub const T0: u64 = 1_800_000_000;

#[allow(missing_debug_implementations)]
pub struct Harness {
    pub state: IdpState,
    pub clock: FixedClock,
}

pub fn config() -> IdpConfig {
    IdpConfig::new(BASE, "demo-project")
}

pub async fn harness() -> Harness {
    harness_with(config()).await
}

pub async fn harness_with(config: IdpConfig) -> Harness {
    let store = Store::open_sqlite_memory().await.unwrap();
    harness_on(config, store, FixedClock::at(T0)).await
}

pub async fn harness_on(config: IdpConfig, store: Store, clock: FixedClock) -> Harness {
    let state = IdpState::open_with_clock(config, store, Arc::new(clock.clone()))
        .await
        .unwrap();
    Harness { state, clock }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Harness {
    pub fn app(&self) -> Router {
        app(self.state.clone())
    }

    pub fn now(&self) -> u64 {
        gatehouse_verify::Clock::now_unix(&self.clock)
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        send(self.app(), req).await
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    pub async fn post_form(&self, uri: &str, form: &[(&str, &str)]) -> Reply {
        self.send(
            Request::post(uri)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
                .unwrap(),
        )
        .await
    }

    pub async fn post_json(&self, uri: &str, body: &Value) -> Reply {
        self.send(
            Request::post(uri)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    /// A verifier for Google ID tokens with this emulator's published JWK set.
    pub async fn google_verifier(&self, audiences: &[&str]) -> Verifier {
        let doc = self.get("/oauth2/v3/certs").await;
        let keys = KeySet::from_document(&doc.body, KeyLimits::default()).unwrap();
        Verifier::new(
            IssuerProfile::google()
                .with_static_keys(keys)
                .with_audiences(audiences.iter().copied()),
        )
        .unwrap()
    }

    /// A verifier for Firebase ID tokens with the emulator's securetoken PEM map.
    pub async fn firebase_verifier(&self, project: &str) -> Verifier {
        let doc = self
            .get("/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com")
            .await;
        let keys = KeySet::from_document(&doc.body, KeyLimits::default()).unwrap();
        Verifier::new(IssuerProfile::firebase(project).with_static_keys(keys)).unwrap()
    }
}

pub async fn send(app: Router, req: Request<Body>) -> Reply {
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// The claims of a JWT, unverified (for asserting shapes after a separate verification).
pub fn claims(token: &str) -> serde_json::Map<String, Value> {
    gatehouse_verify::unverified::danger_decode_unverified(token)
        .unwrap()
        .claims
}

pub fn header(token: &str) -> serde_json::Map<String, Value> {
    gatehouse_verify::unverified::danger_decode_unverified(token)
        .unwrap()
        .header
}

/// Count of rows in a table (to prove refused requests wrote nothing).
pub async fn count(state: &IdpState, table: &str) -> i64 {
    state
        .store()
        .fetch_optional(&format!("SELECT COUNT(*) FROM {table}"), &[])
        .await
        .unwrap()
        .unwrap()
        .int(0)
        .unwrap()
}
