#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The emulator's token endpoints through its router (no sockets, in-memory SQLite):
//! metadata identity tokens on a cache hit (same audience) and a miss (a new audience each
//! time: one RSA-2048 signature), and jwt-bearer exchanges (verify the service account's
//! assertion, sign an ID token).

use axum::body::Body;
use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse_idp::{IdpConfig, IdpState, app};
use gatehouse_store::Store;
use gatehouse_verify::{Algorithm, SigningKey};
use http::Request;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt as _;

async fn call(router: &axum::Router, req: Request<Body>) -> Vec<u8> {
    let resp = router.clone().oneshot(req).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

fn meta(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("Metadata-Flavor", "Google")
        .body(Body::empty())
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (state, router) = rt.block_on(async {
        let store = Store::open_sqlite_memory().await.unwrap();
        let state = IdpState::open(
            IdpConfig::new("http://127.0.0.1:9099", "demo-project"),
            store,
        )
        .await
        .unwrap();
        let router = app(state.clone());
        (state, router)
    });
    let _ = &state;
    let mut g = c.benchmark_group("idp");
    g.throughput(Throughput::Elements(1));

    let hit = "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://a.example&format=full";
    rt.block_on(call(&router, meta(hit)));
    g.bench_function("metadata identity (cache hit)", |b| {
        b.iter(|| rt.block_on(call(&router, meta(hit))))
    });

    let n = AtomicU64::new(0);
    g.bench_function("metadata identity (cache miss, RSA sign)", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let uri = format!(
                "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://{i}.example&format=full"
            );
            rt.block_on(call(&router, meta(&uri)))
        })
    });

    let file: Value = rt.block_on(async {
        let body = call(
            &router,
            Request::post(
                "/v1/projects/-/serviceAccounts/bench@demo-project.iam.gserviceaccount.com/keys",
            )
            .body(Body::empty())
            .unwrap(),
        )
        .await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        let data = base64::engine::general_purpose::STANDARD
            .decode(v["privateKeyData"].as_str().unwrap())
            .unwrap();
        serde_json::from_slice(&data).unwrap()
    });
    let key = SigningKey::from_pkcs8_pem(
        file["private_key_id"].as_str().unwrap(),
        Algorithm::RS256,
        file["private_key"].as_str().unwrap(),
    )
    .unwrap();
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let assertion = key
        .sign_jwt(&json!({
            "iat": now, "exp": now + 3600, "iss": file["client_email"],
            "aud": "https://oauth2.googleapis.com/token", "target_audience": "https://svc.example",
        }))
        .unwrap();
    let form = serde_urlencoded::to_string([
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", assertion.as_str()),
    ])
    .unwrap();
    g.bench_function("jwt-bearer exchange (verify + sign)", |b| {
        b.iter(|| {
            rt.block_on(call(
                &router,
                Request::post("/token")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Body::from(form.clone()))
                    .unwrap(),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
