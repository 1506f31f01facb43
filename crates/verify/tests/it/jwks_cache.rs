//! The JWKS cache against a real local HTTP server that counts fetches.

use crate::support::*;
use gatehouse_verify::{
    CacheConfig, Error, IssuerProfile, KeyLimits, KeySet, KeySource, SigningKey, Verifier,
};
use serde_json::{Value, json};
use std::time::Duration;
// Wall-clock waits only (for background tasks); the cache itself runs on the pinned `now`.
use tokio::time::Instant;

fn token_for(key: &SigningKey, sub: usize) -> String {
    sign(
        key,
        &claims_with(|c| {
            c.insert("sub".into(), json!(format!("user-{sub}")));
        }),
    )
}

/// A token naming `kid` whose signature is never reached (the kid is unknown).
fn token_with_kid(kid: &str) -> String {
    format!(
        "{}.{}.{}",
        b64(format!(r#"{{"alg":"RS256","kid":"{kid}","typ":"JWT"}}"#)),
        b64(google_claims().to_string()),
        b64([7u8; 256])
    )
}

/// Gives any wrongly started background fetch time to show up.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_cache_fetches_once_for_100_concurrent_verifications() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_delay(Duration::from_millis(200));
    let v = url_verifier(&server.jwks_url(), cache_config(), 0);
    let tokens: Vec<String> = (0..100).map(|i| token_for(&RSA, i)).collect();
    let results = futures_util::future::join_all(tokens.iter().map(|t| v.verify(t, NOW))).await;
    for r in results {
        r.unwrap();
    }
    assert_eq!(server.jwks_fetches(), 1);
    assert_eq!(v.key_caches()[0].fetch_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_kid_is_fetched_once_for_100_concurrent_verifications() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    let v = url_verifier(&server.jwks_url(), cache_config(), 0);
    v.verify(&token_for(&RSA, 0), NOW).await.unwrap();
    assert_eq!(server.jwks_fetches(), 1);

    server.set_document(jwks_document(&[&RSA, &RSA_2]));
    server.set_delay(Duration::from_millis(200));
    // Past the unknown-kid cooldown since the first fetch.
    let tokens: Vec<String> = (0..100).map(|i| token_for(&RSA_2, i)).collect();
    let v = std::sync::Arc::new(v);
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let v = v.clone();
            tokio::spawn(async move { v.verify(&t, NOW + 31).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(server.jwks_fetches(), 2);
}

/// Concurrent verifications of a new kid, with no artificial delay: waiters that arrive
/// just after the fetch must still find the new key rather than hit the cooldown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_arrivals_after_a_kid_refetch_still_find_the_key() {
    for round in 0..20 {
        let server = KeyServer::start(jwks_document(&[&RSA])).await;
        let v = std::sync::Arc::new(url_verifier(&server.jwks_url(), cache_config(), 0));
        v.verify(&token_for(&RSA, 0), NOW).await.unwrap();
        server.set_document(jwks_document(&[&RSA, &RSA_2]));
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let v = v.clone();
                let t = token_for(&RSA_2, i);
                tokio::spawn(async move { v.verify(&t, NOW + 31).await })
            })
            .collect();
        for task in tasks {
            let result = task.await.unwrap();
            assert!(result.is_ok(), "round {round}: {result:?}");
        }
        assert_eq!(server.jwks_fetches(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_kids_cause_at_most_one_fetch_per_cooldown() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_cache_control("public, max-age=86400");
    let config = CacheConfig {
        unknown_kid_cooldown: 30,
        ..cache_config()
    };
    let v = std::sync::Arc::new(url_verifier(&server.jwks_url(), config, 0));
    v.verify(&token_for(&RSA, 0), NOW).await.unwrap();
    assert_eq!(server.jwks_fetches(), 1);

    // Within the cooldown of that fetch, unknown kids fetch nothing.
    assert_eq!(
        refusal(&v, &token_with_kid("early"), NOW + 29).await,
        "unknown_kid"
    );
    assert_eq!(server.jwks_fetches(), 1);

    // A burst of 1,000 random kids at one instant: one refetch at most.
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let v = v.clone();
            let t = token_with_kid(&format!("random-{i}-{}", i * 7919 % 1013));
            tokio::spawn(async move { v.verify(&t, NOW + 31).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err().code(), "unknown_kid");
    }
    assert_eq!(
        server.jwks_fetches(),
        2,
        "the first unknown kid refetches once"
    );

    // 1,000 more, one per second: one refetch per 30-second window.
    for i in 0..1000u64 {
        let t = token_with_kid(&format!("later-{i}"));
        assert_eq!(
            refusal(&v, &t, NOW + 32 + i).await,
            "unknown_kid",
            "kid {i}"
        );
    }
    let fetches = server.jwks_fetches();
    let windows = 1000u64.div_ceil(30) + 1;
    assert!(
        fetches <= 2 + windows,
        "{fetches} fetches for {windows} cooldown windows"
    );
    assert!(
        fetches >= 2 + windows - 2,
        "unknown kids refetch each window: {fetches}"
    );
    // The known key was never disturbed.
    v.verify(&token_for(&RSA, 1), NOW + 1100).await.unwrap();
}

/// Verifies `token` at `now` and checks that the call took no fetch on the request path.
async fn verify_without_fetching(v: &Verifier, server: &KeyServer, token: &str, now: u64) {
    let before = server.jwks_fetches();
    v.verify(token, now).await.unwrap();
    settle().await;
    assert_eq!(
        server.jwks_fetches(),
        before,
        "unexpected fetch at now={now}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_is_honoured_and_refresh_runs_ahead_of_expiry() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_cache_control("public, max-age=100, must-revalidate, no-transform");
    let v = url_verifier(&server.jwks_url(), cache_config(), 0);
    let token = token_for(&RSA, 0);
    v.verify(&token, NOW).await.unwrap();
    assert_eq!(server.jwks_fetches(), 1);
    // refresh_ahead_fraction 0.8: nothing before 80 s...
    verify_without_fetching(&v, &server, &token, NOW + 79).await;
    // ...then a background refresh.
    v.verify(&token, NOW + 80).await.unwrap();
    wait_for_fetches(&server, 2).await;
    // The refreshed document is fresh for another 100 s from NOW + 80.
    verify_without_fetching(&v, &server, &token, NOW + 80 + 79).await;
    v.verify(&token, NOW + 80 + 80).await.unwrap();
    wait_for_fetches(&server, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_is_clamped_to_the_configured_bounds() {
    let config = CacheConfig {
        min_max_age: 30,
        max_max_age: 1000,
        default_max_age: 300,
        ..cache_config()
    };
    let token = token_for(&RSA, 0);
    // (Cache-Control, seconds until the background refresh is due)
    for (cache_control, due) in [
        (Some("max-age=0"), 24),
        (Some("no-store"), 24),
        (Some("no-cache, max-age=3600"), 24),
        (Some("max-age=5"), 24),
        (Some("max-age=1000000000"), 800),
        (Some("max-age=500"), 400),
        (None, 240),
    ] {
        let server = KeyServer::start(jwks_document(&[&RSA])).await;
        if let Some(cc) = cache_control {
            server.set_cache_control(cc);
        }
        let v = url_verifier(&server.jwks_url(), config.clone(), 0);
        v.verify(&token, NOW).await.unwrap();
        verify_without_fetching(&v, &server, &token, NOW + due - 1).await;
        v.verify(&token, NOW + due).await.unwrap();
        wait_for_fetches(&server, 2).await;
        eprintln!("{cache_control:?}: refresh due after {due} s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_age_header_is_subtracted_from_max_age() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    // A cached copy that has already spent 400 of its 500 seconds.
    server.set_cache_control("public, max-age=500");
    server.set_age("400");
    let v = url_verifier(&server.jwks_url(), cache_config(), 0);
    let token = token_for(&RSA, 0);
    v.verify(&token, NOW).await.unwrap();
    verify_without_fetching(&v, &server, &token, NOW + 79).await;
    v.verify(&token, NOW + 80).await.unwrap();
    wait_for_fetches(&server, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_refused_before_the_key_lookup_never_cause_a_fetch() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    let v = url_verifier(&server.jwks_url(), cache_config(), 0);
    let garbage = [
        "x".to_owned(),
        "a.b.c".to_owned(),
        sign(
            &RSA,
            &claims_with(|c| {
                c.insert("iss".into(), json!("https://evil.example"));
            }),
        ),
        sign_raw(
            &RSA,
            r#"{"alg":"HS256","kid":"rsa-1"}"#,
            &google_claims().to_string(),
        ),
        sign_raw(
            &EC,
            r#"{"alg":"ES256","kid":"ec-1"}"#,
            &google_claims().to_string(),
        ),
        sign_raw(&RSA, r#"{"alg":"RS256"}"#, &google_claims().to_string()),
        sign_raw(
            &RSA,
            r#"{"alg":"RS256","kid":"rsa-1","crit":["x"]}"#,
            &google_claims().to_string(),
        ),
        "!".repeat(20_000),
    ];
    for t in &garbage {
        assert!(v.verify(t, NOW).await.is_err());
    }
    assert_eq!(server.jwks_fetches(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_refresh_does_not_block_and_picks_up_rotation() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_cache_control("max-age=100");
    let v = url_verifier(&server.jwks_url(), cache_config(), 0);
    let token = token_for(&RSA, 0);
    v.verify(&token, NOW).await.unwrap();

    server.set_document(jwks_document(&[&RSA, &RSA_2]));
    server.set_delay(Duration::from_millis(1500));
    let start = Instant::now();
    v.verify(&token, NOW + 90).await.unwrap();
    v.verify(&token, NOW + 91).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "verification waited for the refresh: {:?}",
        start.elapsed()
    );
    wait_for_fetches(&server, 2).await;
    // One background fetch however many requests saw it due.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(server.jwks_fetches(), 2);
    // The refreshed document already has the new key: no fetch for it.
    server.set_delay(Duration::ZERO);
    verify_without_fetching(&v, &server, &token_for(&RSA_2, 1), NOW + 92).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_is_picked_up_on_an_unknown_kid() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_cache_control("max-age=3600");
    let v = url_verifier(&server.jwks_url(), cache_config(), 0);
    v.verify(&token_for(&RSA, 0), NOW).await.unwrap();
    // The issuer rotates: the old key is gone, a new one is published.
    server.set_document(jwks_document(&[&RSA_2]));
    v.verify(&token_for(&RSA_2, 0), NOW + 31).await.unwrap();
    assert_eq!(server.jwks_fetches(), 2);
    // The retired key no longer verifies, within the cooldown or after it.
    assert_eq!(
        refusal(&v, &token_for(&RSA, 1), NOW + 32).await,
        "unknown_kid"
    );
    assert_eq!(
        refusal(&v, &token_for(&RSA, 1), NOW + 100).await,
        "unknown_kid"
    );
    assert_eq!(server.jwks_fetches(), 3);
}

/// Keys first fetched while the host clock ran a week fast, the clock then corrected: the
/// times the cache took from the fast clock must not keep it from noticing a rotation
/// (withdrawn keys trusted, new ones refused, for that week).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_back_does_not_freeze_the_keys() {
    const WEEK: u64 = 7 * 86_400;
    for unknown_kid_first in [true, false] {
        let server = KeyServer::start(jwks_document(&[&RSA])).await;
        server.set_cache_control("max-age=3600");
        let v = url_verifier(&server.jwks_url(), cache_config(), 0);
        v.key_caches()[0].keys(NOW + WEEK).await.unwrap();
        server.set_document(jwks_document(&[&RSA_2]));
        if unknown_kid_first {
            // The new key's kid is fetched for, no cooldown held over from the fast clock.
            v.verify(&token_for(&RSA_2, 0), NOW).await.unwrap();
        } else {
            // The old key still verifies from the cache, and a refresh starts.
            v.verify(&token_for(&RSA, 0), NOW).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while server.jwks_fetches() < 2 {
                assert!(
                    Instant::now() < deadline,
                    "no refresh after the clock stepped back"
                );
                settle().await;
            }
        }
        assert_eq!(server.jwks_fetches(), 2);
        assert_eq!(
            refusal(&v, &token_for(&RSA, 1), NOW + 1).await,
            "unknown_kid"
        );
        v.verify(&token_for(&RSA_2, 2), NOW + 2).await.unwrap();
    }
}

async fn server_failure_serves_cached_keys_until_the_staleness_bound(take_down: bool) {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_cache_control("max-age=100");
    let config = CacheConfig {
        max_stale: 1000,
        failure_backoff: 5,
        ..cache_config()
    };
    let v = url_verifier(&server.jwks_url(), config, 0);
    let token = token_for(&RSA, 0);
    v.verify(&token, NOW).await.unwrap();
    if take_down {
        server.stop().await;
    } else {
        server.set_status(500);
    }
    // Usable until fresh (100 s) + max_stale (1000 s).
    for at in [50, 99, 100, 500, 1000, 1099] {
        v.verify(&token, NOW + at).await.unwrap();
        settle().await;
    }
    let err = v.verify(&token, NOW + 1100).await.unwrap_err();
    assert_eq!(err.code(), "keys_unavailable", "{err}");
    assert!(err.is_unavailable());
    // The reason names the failure, never the URL.
    assert!(!err.to_string().contains("/jwks"), "{err}");
    assert_eq!(refusal(&v, &token, NOW + 1101).await, "keys_unavailable");
    if !take_down {
        // Within the failure backoff (5 s from the last failure, at NOW + 1099 or + 1100)
        // nothing is fetched; after it, recovery.
        server.set_status(200);
        let before = server.jwks_fetches();
        assert_eq!(refusal(&v, &token, NOW + 1102).await, "keys_unavailable");
        assert_eq!(server.jwks_fetches(), before);
        v.verify(&token, NOW + 1106).await.unwrap();
        assert_eq!(server.jwks_fetches(), before + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_serves_cached_keys_until_the_staleness_bound() {
    server_failure_serves_cached_keys_until_the_staleness_bound(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_serve_cached_keys_until_the_staleness_bound() {
    server_failure_serves_cached_keys_until_the_staleness_bound(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_ever_fetched_is_keys_unavailable() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_status(500);
    let v = url_verifier(&server.jwks_url(), cache_config(), 0);
    let err = v.verify(&token_for(&RSA, 0), NOW).await.unwrap_err();
    assert_eq!(
        err,
        Error::KeysUnavailable {
            reason: "key server answered 500 Internal Server Error".into()
        }
    );
    server.stop().await;
    assert_eq!(
        refusal(&v, &token_for(&RSA, 0), NOW + 100).await,
        "keys_unavailable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_certificate_maps_work_like_jwk_sets() {
    let document = json!({
        RSA.kid(): self_signed_pem(&RSA),
        EC.kid(): self_signed_pem(&EC),
    });
    let server = KeyServer::start(serde_json::to_vec_pretty(&document).unwrap()).await;
    server.set_cache_control("public, max-age=19800, must-revalidate, no-transform");
    let v = Verifier::builder()
        .profile(
            IssuerProfile::literal(GOOGLE_ISS, KeySource::Url(server.jwks_url()))
                .with_audiences([AUD]),
        )
        .http_client(http_client())
        .token_cache_capacity(0)
        .build()
        .unwrap();
    v.verify(&sign(&RSA, &google_claims()), NOW).await.unwrap();
    v.verify(&sign(&EC, &google_claims()), NOW).await.unwrap();
    assert_eq!(
        refusal(&v, &sign(&ATTACKER, &google_claims()), NOW).await,
        "bad_signature"
    );
    assert_eq!(server.jwks_fetches(), 1);

    // Firebase's robot metadata has exactly this shape.
    let firebase = Verifier::builder()
        .profile(IssuerProfile::firebase("proj").with_jwks_url(&server.jwks_url()))
        .http_client(http_client())
        .build()
        .unwrap();
    let claims = json!({
        "iss": "https://securetoken.google.com/proj", "aud": "proj", "sub": "uid",
        "auth_time": NOW - 5, "iat": NOW - 5, "exp": NOW + 3000,
    });
    firebase.verify(&sign(&RSA, &claims), NOW).await.unwrap();
}

#[test]
fn key_documents_are_told_apart_by_content_and_bounded() {
    let limits = KeyLimits::default();
    let jwks = KeySet::from_document(&jwks_document(&[&RSA, &EC]), limits).unwrap();
    assert_eq!(jwks.len(), 2);
    let pem = json!({ "a": self_signed_pem(&RSA) });
    let set = KeySet::from_document(pem.to_string().as_bytes(), limits).unwrap();
    assert_eq!(set.kids().collect::<Vec<_>>(), ["a"]);
    for bad in [
        json!({}),
        json!({"keys": []}),
        json!({"keys": "x"}),
        json!({"a": 1}),
        json!({"a": "not a certificate"}),
        json!([]),
    ] {
        assert!(
            KeySet::from_document(bad.to_string().as_bytes(), limits).is_err(),
            "{bad}"
        );
    }
    // Too many keys (the same key under many kids).
    let many = |n: usize| {
        let jwk = RSA.public_jwk().unwrap();
        let keys: Vec<Value> = (0..n)
            .map(|i| {
                let mut k = jwk.clone();
                k["kid"] = json!(format!("k{i}"));
                k
            })
            .collect();
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    };
    assert_eq!(KeySet::from_document(&many(64), limits).unwrap().len(), 64);
    assert!(KeySet::from_document(&many(65), limits).is_err());
    // Duplicate kids are dropped, never chosen between.
    let mut impostor = RSA_2.public_jwk().unwrap();
    impostor["kid"] = json!("rsa-1");
    let doc = json!({"keys": [impostor, RSA.public_jwk().unwrap(), EC.public_jwk().unwrap()]});
    let set = KeySet::from_document(doc.to_string().as_bytes(), limits).unwrap();
    assert!(set.get("rsa-1").is_none());
    assert!(set.get("ec-1").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_documents_and_too_many_keys_are_refused() {
    let config = CacheConfig {
        limits: KeyLimits {
            max_document_bytes: 4096,
            max_keys: 4,
        },
        ..cache_config()
    };
    let token = token_for(&RSA, 0);
    // Fits.
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    url_verifier(&server.jwks_url(), config.clone(), 0)
        .verify(&token, NOW)
        .await
        .unwrap();
    // Too large with a Content-Length.
    let mut big = jwks_document(&[&RSA]);
    big.pop();
    big.extend(std::iter::repeat_n(b' ', 4096));
    big.push(b'}');
    let server = KeyServer::start(big).await;
    let err = url_verifier(&server.jwks_url(), config.clone(), 0)
        .verify(&token, NOW)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "keys_unavailable");
    assert!(err.to_string().contains("too large"), "{err}");
    // Too large while streaming, no Content-Length.
    let server = KeyServer::start(Vec::new()).await;
    server.stream_oversize(64 * 1024);
    let err = url_verifier(&server.jwks_url(), config.clone(), 0)
        .verify(&token, NOW)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "keys_unavailable");
    assert!(err.to_string().contains("too large"), "{err}");
    // More keys than allowed.
    let keys: Vec<Value> = (0..5)
        .map(|i| {
            let mut k = RSA.public_jwk().unwrap();
            k["kid"] = json!(format!("k{i}"));
            k
        })
        .collect();
    let server = KeyServer::start(serde_json::to_vec(&json!({ "keys": keys })).unwrap()).await;
    assert_eq!(
        refusal(&url_verifier(&server.jwks_url(), config, 0), &token, NOW).await,
        "keys_unavailable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_discovery_finds_jwks_uri_and_checks_the_issuer() {
    let server = KeyServer::start(jwks_document(&[&RSA, &EC])).await;
    let issuer = server.base.clone();
    server.set_discovery(json!({
        "issuer": issuer,
        "jwks_uri": server.jwks_url(),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }));
    let v = Verifier::builder()
        .profile(IssuerProfile::oidc(&issuer).with_audiences([AUD]))
        .http_client(http_client())
        .token_cache_capacity(0)
        .build()
        .unwrap();
    let claims = claims_with(|c| {
        c.insert("iss".into(), json!(issuer));
    });
    let identity = v.verify(&sign(&RSA, &claims), NOW).await.unwrap();
    assert_eq!(identity.issuer(), issuer);
    v.verify(&sign(&EC, &claims), NOW).await.unwrap();
    assert_eq!(server.discovery_fetches(), 1);
    assert_eq!(server.jwks_fetches(), 1);
    assert_eq!(v.key_caches()[0].url(), server.jwks_url());
    // `iss` must still match exactly.
    let other = claims_with(|c| {
        c.insert("iss".into(), json!(format!("{issuer}/")));
    });
    assert_eq!(refusal(&v, &sign(&RSA, &other), NOW).await, "wrong_issuer");

    // A discovery document that names another issuer is refused.
    for named in [
        json!("https://accounts.google.com"),
        json!(format!("{issuer}/")),
        Value::Null,
    ] {
        let evil = KeyServer::start(jwks_document(&[&RSA])).await;
        evil.set_discovery(json!({"issuer": named, "jwks_uri": evil.jwks_url()}));
        let v = Verifier::builder()
            .profile(IssuerProfile::oidc(&evil.base).with_audiences([AUD]))
            .http_client(http_client())
            .build()
            .unwrap();
        let claims = claims_with(|c| {
            c.insert("iss".into(), json!(evil.base));
        });
        let err = v.verify(&sign(&RSA, &claims), NOW).await.unwrap_err();
        assert_eq!(err.code(), "keys_unavailable", "{named}");
        assert!(err.to_string().contains("another issuer"), "{err}");
        assert_eq!(evil.jwks_fetches(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_discovery_is_not_retried_per_request() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    // No discovery document yet: 404.
    let config = CacheConfig {
        failure_backoff: 5,
        ..cache_config()
    };
    let v = std::sync::Arc::new(
        Verifier::builder()
            .profile(IssuerProfile::oidc(&server.base).with_audiences([AUD]))
            .http_client(http_client())
            .cache_config(config)
            .token_cache_capacity(0)
            .build()
            .unwrap(),
    );
    let token = sign(
        &RSA,
        &claims_with(|c| {
            c.insert("iss".into(), json!(server.base));
        }),
    );
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (v, t) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&t, NOW).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err().code(), "keys_unavailable");
    }
    for at in 1..5 {
        assert_eq!(refusal(&v, &token, NOW + at).await, "keys_unavailable");
    }
    assert_eq!(server.discovery_fetches(), 1);
    // After the backoff, discovery is asked again, and succeeds once the issuer is back.
    server.set_discovery(json!({"issuer": server.base, "jwks_uri": server.jwks_url()}));
    v.verify(&token, NOW + 5).await.unwrap();
    assert_eq!(server.discovery_fetches(), 2);
}

/// While the key server fails, an unknown kid waits out the failure backoff like any other
/// fetch: a storm of random kids during an outage does not become a storm of fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_do_not_fetch_during_the_failure_backoff() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_cache_control("public, max-age=86400");
    let config = CacheConfig {
        unknown_kid_cooldown: 30,
        failure_backoff: 120,
        ..cache_config()
    };
    let v = url_verifier(&server.jwks_url(), config, 0);
    v.verify(&token_for(&RSA, 0), NOW).await.unwrap();
    server.set_status(500);
    assert_eq!(
        refusal(&v, &token_with_kid("first"), NOW + 31).await,
        "unknown_kid"
    );
    assert_eq!(server.jwks_fetches(), 2, "past the cooldown: one refetch");
    // Past the cooldown again, still within the backoff of that failure.
    for (i, at) in [NOW + 62, NOW + 100, NOW + 150].into_iter().enumerate() {
        let t = token_with_kid(&format!("later-{i}"));
        assert_eq!(refusal(&v, &t, at).await, "unknown_kid");
    }
    assert_eq!(server.jwks_fetches(), 2);
    // The cached keys keep verifying throughout.
    v.verify(&token_for(&RSA, 1), NOW + 150).await.unwrap();
    // After the backoff, an unknown kid may ask again.
    assert_eq!(
        refusal(&v, &token_with_kid("after"), NOW + 152).await,
        "unknown_kid"
    );
    assert_eq!(server.jwks_fetches(), 3);
}

/// Settings that make no sense (a minimum freshness above the maximum, staleness for ever,
/// no cooldown, a fraction that is not a number) neither panic nor break the cache: the
/// maximum freshness wins, sums saturate, and unknown kids still fetch at most once a
/// second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonsense_cache_settings_neither_panic_nor_storm() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    let config = CacheConfig {
        min_max_age: 100,
        max_max_age: 10,
        max_stale: u64::MAX,
        unknown_kid_cooldown: 0,
        refresh_ahead_fraction: f64::NAN,
        ..cache_config()
    };
    let v = url_verifier(&server.jwks_url(), config, 0);
    v.verify(&token_for(&RSA, 0), NOW).await.unwrap();
    v.verify(&token_for(&RSA, 1), NOW + 5).await.unwrap();
    for i in 0..100 {
        let t = token_with_kid(&format!("random-{i}"));
        assert_eq!(refusal(&v, &t, NOW + 6).await, "unknown_kid");
    }
    assert!(
        server.jwks_fetches() <= 2,
        "{} fetches for 100 unknown kids in one second",
        server.jwks_fetches()
    );
}

/// The discovery document is bounded like a key document (read through the same bounded
/// reader, which stops at the limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_discovery_document_is_refused() {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_discovery(json!({
        "issuer": server.base,
        "jwks_uri": server.jwks_url(),
        "padding": "x".repeat(8192),
    }));
    let config = CacheConfig {
        limits: gatehouse_verify::KeyLimits {
            max_document_bytes: 4096,
            ..Default::default()
        },
        ..cache_config()
    };
    let v = Verifier::builder()
        .profile(IssuerProfile::oidc(&server.base).with_audiences([AUD]))
        .http_client(http_client())
        .cache_config(config)
        .build()
        .unwrap();
    let claims = claims_with(|c| {
        c.insert("iss".into(), json!(server.base));
    });
    let err = v.verify(&sign(&RSA, &claims), NOW).await.unwrap_err();
    assert_eq!(err.code(), "keys_unavailable");
    assert!(err.to_string().contains("too large"), "{err}");
    assert_eq!(server.jwks_fetches(), 0);
}
