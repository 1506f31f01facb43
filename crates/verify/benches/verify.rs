#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The verifier's hot path against its floor, in one run:
//! raw aws-lc-rs RSA-2048 verify, full RS256 and ES256 verification of distinct tokens,
//! and cached re-verification. `bench/verify/run` adds the Python and Node peers and
//! prints the table; it reads the fixtures this bench writes under target/bench-fixtures.

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse_verify::{IssuerProfile, KeySet, SigningKey, Verifier};
use serde_json::json;
use std::hint::black_box;
use std::path::PathBuf;

const AUDIENCE: &str = "https://hello-abc123-uc.a.run.app";
const DISTINCT: usize = 512;

/// A token shaped like a metadata-server identity token (format=full), ~900 bytes. Times are
/// real so that the peers, which read the wall clock, accept the same tokens.
fn token(key: &SigningKey, i: usize, now: u64) -> String {
    key.sign_jwt(&json!({
        "aud": AUDIENCE,
        "azp": "104488163283749123456",
        "email": "caller@demo-project.iam.gserviceaccount.com",
        "email_verified": true,
        "exp": now + 3600,
        "google": {"compute_engine": {
            "instance_creation_timestamp": 1_700_000_000u64,
            "instance_id": format!("{}", 4_000_000_000_000_000_000u64 + i as u64),
            "instance_name": "caller-1", "project_id": "demo-project",
            "project_number": 123_456_789_012u64, "zone": "us-central1-a"}},
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": "104488163283749123456",
    }))
    .unwrap()
}

fn verifier(keys: KeySet, cache_entries: usize) -> Verifier {
    // A literal-issuer profile allows RS256 and ES256 (each key only its own); the `google`
    // profile would refuse ES256 outright.
    let keys = gatehouse_verify::KeySource::Static(std::sync::Arc::new(keys));
    Verifier::builder()
        .profile(
            IssuerProfile::literal("https://accounts.google.com", keys).with_audiences([AUDIENCE]),
        )
        .token_cache_capacity(cache_entries)
        .build()
        .unwrap()
}

fn fixtures_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let now = gatehouse_verify::Clock::now_unix(&gatehouse_verify::SystemClock);
    let rsa = SigningKey::generate_rs256("bench-rsa").unwrap();
    let ec = SigningKey::generate_es256("bench-ec").unwrap();
    let rs_tokens: Vec<String> = (0..DISTINCT).map(|i| token(&rsa, i, now)).collect();
    let es_tokens: Vec<String> = (0..DISTINCT).map(|i| token(&ec, i, now)).collect();
    let keys = KeySet::new([rsa.public_key().unwrap(), ec.public_key().unwrap()]);

    // Fixtures for the peers: the same tokens and keys, the same `now`.
    let dir = fixtures_dir();
    let spki = rsa.public_spki_der().unwrap();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &spki)
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let fixture = json!({
        "now": now, "audience": AUDIENCE, "tokens": rs_tokens,
        "kid": rsa.kid(), "public_key_pem": pem, "jwk": rsa.public_jwk().unwrap(),
    });
    std::fs::write(dir.join("verify.json"), fixture.to_string()).unwrap();

    let mut group = c.benchmark_group("verify");
    group.throughput(Throughput::Elements(1));

    // The floor: one RSA-2048 PKCS#1 v1.5 SHA-256 verification with a pre-parsed key,
    // over the same signing input a token carries.
    let (input, sig) = {
        let t = &rs_tokens[0];
        let dot = t.rfind('.').unwrap();
        let sig = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &t[dot + 1..],
        )
        .unwrap();
        (t.as_bytes()[..dot].to_vec(), sig)
    };
    let raw = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &spki).unwrap();
    group.bench_function("aws_lc_rsa2048_raw", |b| {
        b.iter(|| raw.verify_sig(black_box(&input), black_box(&sig)).unwrap())
    });

    let uncached = verifier(keys.clone(), 0);
    let mut i = 0;
    group.bench_function("rs256_full", |b| {
        b.iter(|| {
            i = (i + 1) % DISTINCT;
            rt.block_on(uncached.verify(black_box(&rs_tokens[i]), now))
                .unwrap()
        })
    });
    let mut i = 0;
    group.bench_function("es256_full", |b| {
        b.iter(|| {
            i = (i + 1) % DISTINCT;
            rt.block_on(uncached.verify(black_box(&es_tokens[i]), now))
                .unwrap()
        })
    });

    let cached = verifier(keys, 16_384);
    for t in &rs_tokens {
        rt.block_on(cached.verify(t, now)).unwrap();
    }
    let mut i = 0;
    group.bench_function("rs256_cached", |b| {
        b.iter(|| {
            i = (i + 1) % DISTINCT;
            rt.block_on(cached.verify(black_box(&rs_tokens[i]), now))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
