#![allow(clippy::unwrap_used, clippy::expect_used)]

//! What a caller pays for a token: a cached fetch (the common case, no I/O), and a mint
//! (cache miss) from the metadata server and from a service-account key file, each against
//! a local stand-in that answers with a pre-signed token, so the figures are the client's
//! own cost plus one loopback HTTP round trip.

use axum::routing::{get, post};
use axum::{Json, Router};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use gatehouse_client::{
    IdTokenSource, KeyFileSource, MetadataServer, ServiceAccountKey, TokenCache,
};
use gatehouse_verify::{Clock, SigningKey, SystemClock};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

const AUDIENCE: &str = "https://receiver-xyz.a.run.app";

fn minted_token() -> String {
    let now = SystemClock.now_unix();
    SigningKey::generate_rs256("issuer-1")
        .unwrap()
        .sign_jwt(&json!({
            "iss": "https://accounts.google.com", "aud": AUDIENCE, "azp": "1044",
            "sub": "1044", "email": "caller@demo-project.iam.gserviceaccount.com",
            "email_verified": true, "iat": now, "exp": now + 3600,
        }))
        .unwrap()
}

/// Serves the metadata identity path and a jwt-bearer `/token`, both answering `token`.
fn stand_in(rt: &tokio::runtime::Runtime, token: String) -> std::net::SocketAddr {
    let metadata_token = token.clone();
    let app = Router::new()
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/identity",
            get(move || {
                let token = metadata_token.clone();
                async move { ([("Metadata-Flavor", "Google")], token) }
            }),
        )
        .route(
            "/token",
            post(move || {
                let token = token.clone();
                async move { Json(json!({"id_token": token})) }
            }),
        );
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    })
}

fn key_file_source(addr: std::net::SocketAddr) -> KeyFileSource {
    let key = SigningKey::generate_rs256("0123456789abcdef").unwrap();
    let file = json!({
        "type": "service_account", "project_id": "demo-project",
        "private_key_id": key.kid(), "private_key": key.to_pkcs8_pem().unwrap(),
        "client_email": "caller@demo-project.iam.gserviceaccount.com",
        "client_id": "1044", "token_uri": format!("http://{addr}/token"),
    });
    let key = ServiceAccountKey::from_json(file.to_string().as_bytes(), "bench").unwrap();
    KeyFileSource::new(key, "bench").unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = stand_in(&rt, minted_token());

    let cache = TokenCache::new(MetadataServer::new(&addr.to_string()).unwrap());
    rt.block_on(cache.token(AUDIENCE)).unwrap();
    let mut group = c.benchmark_group("client");
    group.throughput(Throughput::Elements(1));
    // The fast path never awaits, so poll it once: no executor cost in the figure.
    group.bench_function("cached_token", |b| {
        b.iter(|| {
            black_box(
                cache
                    .token(black_box(AUDIENCE))
                    .now_or_never()
                    .unwrap()
                    .unwrap(),
            );
        })
    });
    let shared = Arc::clone(&cache);
    group.bench_function("cached_token_4_threads", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let shared = &shared;
                    s.spawn(move || {
                        for _ in 0..iters {
                            black_box(shared.token(AUDIENCE).now_or_never().unwrap().unwrap());
                        }
                    });
                }
            });
            start.elapsed() / 4
        })
    });

    let metadata = MetadataServer::new(&addr.to_string()).unwrap();
    group.bench_function("mint_metadata_server", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(metadata.mint(AUDIENCE).await.unwrap()) })
    });
    let key_file = key_file_source(addr);
    group.bench_function("mint_key_file_jwt_bearer", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(key_file.mint(AUDIENCE).await.unwrap()) })
    });
    group.bench_function("sign_assertion_only", |b| {
        b.iter(|| black_box(key_file.assertion(AUDIENCE).unwrap()))
    });

    // Against the emulator, when one runs: GATEHOUSE_BENCH_METADATA=HOST:PORT (its metadata
    // server, which reuses a token per audience as Google's does) and
    // GATEHOUSE_BENCH_KEY_FILE=key.json (from `gatehouse keys create-sa-key`: every exchange
    // is a real mint, the emulator checking the assertion and signing a new token).
    if let Ok(host) = std::env::var("GATEHOUSE_BENCH_METADATA") {
        let emulator = MetadataServer::new(&host).unwrap();
        group.bench_function("mint_emulator_metadata", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(emulator.mint(AUDIENCE).await.unwrap()) })
        });
    }
    if let Ok(path) = std::env::var("GATEHOUSE_BENCH_KEY_FILE") {
        let source = rt.block_on(KeyFileSource::from_file(path)).unwrap();
        group.bench_function("mint_emulator_key_file", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(source.mint(AUDIENCE).await.unwrap()) })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
