//! The verified-token cache: a reused token costs a lookup, keyed by the whole token,
//! never past `exp`, bounded.
//!
//! The cache is observed from outside by taking the key server away and moving `now` past
//! the keys' staleness bound: only a cached token can still verify then.

use crate::support::*;
use gatehouse_verify::{CacheConfig, Verifier};
use serde_json::json;

fn short_lived_keys() -> CacheConfig {
    // Keys fetched at NOW are unusable from NOW + 200 on.
    CacheConfig {
        max_stale: 100,
        ..cache_config()
    }
}

async fn verifier_with_server_gone(token_cache: usize, tokens: &[String]) -> Verifier {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_cache_control("max-age=100");
    let v = url_verifier(&server.jwks_url(), short_lived_keys(), token_cache);
    for t in tokens {
        v.verify(t, NOW).await.unwrap();
    }
    server.stop().await;
    v
}

fn token(sub: usize) -> String {
    sign(
        &RSA,
        &claims_with(|c| {
            c.insert("sub".into(), json!(format!("user-{sub}")));
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_token_is_served_from_the_cache() {
    let t = token(1);
    let cached = verifier_with_server_gone(16, std::slice::from_ref(&t)).await;
    let first = cached.verify(&t, NOW).await.unwrap();
    let later = cached.verify(&t, NOW + 1000).await.unwrap();
    assert_eq!(later.subject(), "user-1");
    assert!(later.claims() == first.claims());
    // A token never seen needs the keys, which are gone.
    assert_eq!(
        refusal(&cached, &token(2), NOW + 1000).await,
        "keys_unavailable"
    );

    // Without the cache the same reuse needs the keys too.
    let uncached = verifier_with_server_gone(0, std::slice::from_ref(&t)).await;
    assert_eq!(refusal(&uncached, &t, NOW + 1000).await, "keys_unavailable");
}

#[tokio::test]
async fn the_cache_is_keyed_by_the_whole_token() {
    let v = Verifier::builder()
        .profile(google_profile(&[&RSA]))
        .build()
        .unwrap();
    let t = token(1);
    v.verify(&t, NOW).await.unwrap();
    // Same header and claims, another signature: not the cached token.
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut forged: Vec<char> = sig.chars().collect();
    forged[10] = if forged[10] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    assert_eq!(
        refusal(&v, &format!("{input}.{forged}"), NOW).await,
        "bad_signature"
    );
    assert_eq!(
        refusal(&v, &format!("{input}.{sig}x"), NOW).await,
        "malformed"
    );
    assert_eq!(refusal(&v, input, NOW).await, "malformed");
}

#[tokio::test]
async fn a_cached_token_never_outlives_exp() {
    let v = Verifier::builder()
        .profile(google_profile(&[&RSA]))
        .build()
        .unwrap();
    let exp = NOW + 3590;
    let t = token(1);
    v.verify(&t, NOW).await.unwrap();
    v.verify(&t, exp - 1).await.unwrap();
    // Within the leeway it is verified afresh and still accepted...
    v.verify(&t, exp + 59).await.unwrap();
    // ...and at exp + leeway it is refused, cached or not.
    assert_eq!(refusal(&v, &t, exp + 60).await, "expired");
    assert_eq!(refusal(&v, &t, exp + 10_000).await, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_served_only_until_exp() {
    // With the keys gone, a cache hit is the only way to succeed: at `exp` the entry must
    // no longer answer.
    let exp = NOW + 150;
    let t = sign(
        &RSA,
        &claims_with(|c| {
            c.insert("exp".into(), json!(exp));
        }),
    );
    let v = verifier_with_server_gone(16, std::slice::from_ref(&t)).await;
    v.verify(&t, exp - 1).await.unwrap();
    // Keys are still usable until NOW + 200: re-verified with the leeway.
    v.verify(&t, exp).await.unwrap();
    assert_eq!(refusal(&v, &t, exp + 60).await, "keys_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_bounded() {
    let tokens: Vec<String> = (0..300).map(token).collect();
    let v = verifier_with_server_gone(8, &tokens).await;
    let mut hits = 0;
    for t in &tokens {
        if v.verify(t, NOW + 1000).await.is_ok() {
            hits += 1;
        }
    }
    eprintln!("{hits} of 300 tokens still cached with capacity 8");
    assert!(hits <= 16, "{hits} cached entries with a capacity of 8");
    assert!(hits >= 1, "nothing cached");
}
