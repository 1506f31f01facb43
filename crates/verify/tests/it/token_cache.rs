//! The verified-token cache: a reused token costs a lookup, keyed by the whole token,
//! never past `exp`, never past its key (withdrawn by the issuer, or past the staleness
//! bound), bounded.
//!
//! A hit is observed from outside by [`Identity::same_verification`]: a hit returns the
//! verification the cache keeps, a verification afresh a new one. A hit is judged at its own
//! time as a verification would be: [`BEFORE_IAT`] (issued in the future) refuses a cached
//! token as it does a new one.

use crate::support::*;
use gatehouse_verify::{CacheConfig, Identity, Verifier};
use serde_json::json;

fn short_lived_keys() -> CacheConfig {
    // Keys fetched at NOW are unusable from NOW + 200 on.
    CacheConfig {
        max_stale: 100,
        ..cache_config()
    }
}

/// A verifier that checked `tokens` at NOW (their identities returned in order), its key
/// server then gone.
async fn verifier_with_server_gone(
    token_cache: usize,
    tokens: &[String],
) -> (Verifier, Vec<Identity>) {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_cache_control("max-age=100");
    let v = url_verifier(&server.jwks_url(), short_lived_keys(), token_cache);
    let mut identities = Vec::new();
    for t in tokens {
        identities.push(v.verify(t, NOW).await.unwrap());
    }
    server.stop().await;
    (v, identities)
}

/// Ten minutes before the tokens' `iat`: refused (`issued_in_future`), cached or not.
const BEFORE_IAT: u64 = NOW - 600;

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
    let (cached, first) = verifier_with_server_gone(16, std::slice::from_ref(&t)).await;
    let later = cached.verify(&t, NOW + 10).await.unwrap();
    assert_eq!(later.subject(), "user-1");
    assert!(
        later.same_verification(&first[0]),
        "not served from the cache"
    );
    // Without the cache the same reuse is verified afresh.
    let (uncached, first) = verifier_with_server_gone(0, std::slice::from_ref(&t)).await;
    let later = uncached.verify(&t, NOW + 10).await.unwrap();
    assert!(!later.same_verification(&first[0]));

    // The keys that checked it are past their staleness bound (NOW + 200, the key server
    // gone): the cached token is verified afresh, as an uncached one, and cannot be.
    assert_eq!(refusal(&cached, &t, NOW + 1000).await, "keys_unavailable");
}

/// A hit is judged at its own time, as a verification is: a cached token presented before
/// its `iat` or `nbf` (a clock stepped back, a caller's earlier `now`) is refused as it
/// would be uncached, and still served at a time it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_refused_before_its_time_as_an_uncached_one() {
    let t = token(1);
    let nbf = sign(
        &RSA,
        &claims_with(|c| {
            c.insert("nbf".into(), json!(NOW + 30));
        }),
    );
    let (v, first) = verifier_with_server_gone(16, &[t.clone(), nbf.clone()]).await;
    assert_eq!(refusal(&v, &t, BEFORE_IAT).await, "issued_in_future");
    assert_eq!(refusal(&v, &nbf, NOW - 31).await, "not_yet_valid");
    assert!(!v.still_stands(&first[0], BEFORE_IAT));
    assert!(!v.still_stands(&first[1], NOW - 31));
    // Within the leeway, and later, the kept verification answers.
    assert!(
        v.verify(&nbf, NOW - 30)
            .await
            .unwrap()
            .same_verification(&first[1])
    );
    assert!(
        v.verify(&t, NOW + 1)
            .await
            .unwrap()
            .same_verification(&first[0])
    );
}

/// A key server publishing RSA (max-age 100 s), a verifier caching tokens from it, and
/// `token(1)` verified and cached at NOW.
async fn cached_token() -> (KeyServer, Verifier, String, Identity) {
    let server = KeyServer::start(jwks_document(&[&RSA])).await;
    server.set_cache_control("max-age=100");
    let v = url_verifier(&server.jwks_url(), cache_config(), 16);
    let t = token(1);
    let first = v.verify(&t, NOW).await.unwrap();
    assert!(
        v.verify(&t, NOW + 1)
            .await
            .unwrap()
            .same_verification(&first)
    );
    (server, v, t, first)
}

/// A cache hit at `at` (past the refresh due at 80% of max-age) starts a background key
/// refresh, as a verification would; returns once the `fetches`th fetch is installed.
async fn refreshed_by_a_hit(server: &KeyServer, v: &Verifier, t: &str, at: u64, fetches: u64) {
    v.verify(t, at).await.unwrap();
    wait_for_fetches(server, fetches).await;
    // The fetch is counted when served; give the cache a moment to install it.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_verified_afresh_once_the_issuer_withdraws_its_key() {
    let (server, v, t, _) = cached_token().await;
    // The issuer rotates RSA out.
    server.set_document(jwks_document(&[&RSA_2]));
    refreshed_by_a_hit(&server, &v, &t, NOW + 90, 2).await;
    // The withdrawn key vouches for nothing: the token is verified again and refused.
    assert_eq!(refusal(&v, &t, NOW + 91).await, "unknown_kid");
    // A token signed with a key still published stays cached across the refresh.
    let kept = sign(&RSA_2, &claims_with(|_| {}));
    let first = v.verify(&kept, NOW + 92).await.unwrap();
    assert!(
        v.verify(&kept, NOW + 93)
            .await
            .unwrap()
            .same_verification(&first)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_verified_afresh_once_its_kid_names_another_key() {
    let (server, v, t, first) = cached_token().await;
    // A refresh that brings the same key back (parsed anew) leaves the entry standing.
    refreshed_by_a_hit(&server, &v, &t, NOW + 90, 2).await;
    assert!(
        v.verify(&t, NOW + 91)
            .await
            .unwrap()
            .same_verification(&first)
    );

    // The issuer now publishes other key material under the same kid: the key that
    // checked the cached token is gone even though its kid is not.
    server.set_document(jwks_document(&[&ATTACKER]));
    refreshed_by_a_hit(&server, &v, &t, NOW + 180, 3).await;
    assert_eq!(refusal(&v, &t, NOW + 181).await, "bad_signature");
}

/// What a caller remembering the last token it saw (a connection) relies on:
/// `still_stands` answers as a cache hit would (the token's time, its key's standing), and
/// never for a verifier that keeps no tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn still_stands_answers_as_a_cache_hit_would() {
    let (server, v, t, identity) = cached_token().await;
    assert!(v.still_stands(&identity, NOW + 1));
    // Not for another verifier, even of the same profile and keys.
    let other = url_verifier(&server.jwks_url(), cache_config(), 16);
    assert!(!other.still_stands(&identity, NOW + 1));
    assert!(!v.still_stands(&identity, identity.expires_at()));
    server.set_document(jwks_document(&[&RSA_2]));
    refreshed_by_a_hit(&server, &v, &t, NOW + 90, 2).await;
    assert!(!v.still_stands(&identity, NOW + 91));

    let (uncached, _) = verifier_with_server_gone(0, std::slice::from_ref(&t)).await;
    let identity = uncached.verify(&t, NOW).await.unwrap();
    assert!(!uncached.still_stands(&identity, NOW));
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
    let (v, _) = verifier_with_server_gone(16, std::slice::from_ref(&t)).await;
    v.verify(&t, exp - 1).await.unwrap();
    // Keys are still usable until NOW + 200: re-verified with the leeway.
    v.verify(&t, exp).await.unwrap();
    assert_eq!(refusal(&v, &t, exp + 60).await, "keys_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_bounded() {
    let tokens: Vec<String> = (0..300).map(token).collect();
    let (v, first) = verifier_with_server_gone(8, &tokens).await;
    let mut hits = 0;
    for (t, first) in tokens.iter().zip(&first) {
        if v.verify(t, NOW + 1).await.unwrap().same_verification(first) {
            hits += 1;
        }
    }
    eprintln!("{hits} of 300 tokens still cached with capacity 8");
    assert!(hits <= 16, "{hits} cached entries with a capacity of 8");
    assert!(hits >= 1, "nothing cached");
}
