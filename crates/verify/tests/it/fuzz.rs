//! Fuzz targets of the token parser and the key-document parser, shared with the
//! coverage-guided harness in `fuzz/` (which compiles this file in): one check per target,
//! run here on stable over the committed corpus (`fuzz/corpus/<target>/`) and over
//! proptest cases (100,000 per target; `GATEHOUSE_FUZZ_CASES` scales that).
//!
//! Invariants: nothing panics; a token is accepted only if it is byte for byte one the
//! test keys signed; no error text or `Debug` output carries the token; a key document
//! parses into 1 to `max_keys` keys with unique kids, or into a clear error.

use crate::support::*;
use gatehouse_verify::{
    Algorithm, IssuerProfile, KeyLimits, KeySet, KeySource, SigningKey, Verifier, jws, unverified,
};
use serde_json::{Value, json};
use std::sync::{Arc, LazyLock};

pub const FIREBASE_PROJECT: &str = "fuzz-project";

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
});

/// Google's issuer with both algorithms (so every mutation reaches as far as it can) and Firebase (its own RS256 key), no token cache, so
/// every input is really parsed and checked.
static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    Verifier::builder()
        .profile(
            IssuerProfile::literal(
                GOOGLE_ISS,
                KeySource::Static(Arc::new(keyset(&[&RSA, &EC]))),
            )
            .with_audiences([AUD]),
        )
        .profile(IssuerProfile::firebase(FIREBASE_PROJECT).with_static_keys(keyset(&[&RSA_2])))
        .token_cache_capacity(0)
        .build()
        .unwrap()
});

static KEYS: LazyLock<KeySet> = LazyLock::new(|| keyset(&[&RSA, &EC, &RSA_2]));

/// Tokens the test keys signed that verify at [`NOW`]: the seeds of the token target and
/// the only strings it may accept.
pub static TOKENS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let firebase = json!({
        "iss": format!("https://securetoken.google.com/{FIREBASE_PROJECT}"),
        "aud": FIREBASE_PROJECT,
        "sub": "uid-1",
        "user_id": "uid-1",
        "auth_time": NOW - 100,
        "iat": NOW - 10,
        "exp": NOW + 3590,
        "email": "fb@example.com",
        "email_verified": true,
        "firebase": {"sign_in_provider": "google.com", "identities": {"email": ["fb@example.com"]}},
    });
    let tokens = vec![
        sign(&RSA, &google_claims()),
        sign(&EC, &google_claims()),
        sign(&RSA_2, &firebase),
        sign(
            &RSA,
            &claims_with(|c| {
                c.insert("name".into(), json!("Zoë Ñandú 🦀"));
                c.insert("nested".into(), json!({"a": [1, {"b": null}], "c": 1.5e3}));
                c.insert("aud".into(), json!([AUD]));
                c.insert("nbf".into(), json!(NOW - 20));
                c.insert("hd".into(), json!("example.com"));
            }),
        ),
    ];
    for t in &tokens {
        assert!(verify(t).is_ok(), "fixture token must verify: {t}");
    }
    tokens
});

fn verify(token: &str) -> Result<gatehouse_verify::Identity, gatehouse_verify::Error> {
    RUNTIME.block_on(VERIFIER.verify(token, NOW))
}

/// The token target: every entry point that reads a token string.
pub fn check_token(data: &[u8]) {
    check_token_with(&VERIFIER, data);
}

fn check_token_with(verifier: &Verifier, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    // Error texts may quote a kid or an issuer (cut short), never a whole token. Only a
    // token-shaped input counts: any other string could simply be an error text itself.
    let token_shaped = text.len() >= 64 && text.split('.').filter(|s| !s.is_empty()).count() == 3;
    let quotes_token = |shown: String| token_shaped && shown.contains(text);

    if let Ok(decoded) = unverified::danger_decode_unverified(text) {
        let _ = format!("{decoded:?}");
    }
    match unverified::trusted_front_door_claims(text) {
        Ok(claims) => {
            let _ = (claims.as_map().len(), claims.issuer(), claims.audiences());
            let _ = format!("{claims:?}");
        }
        Err(e) => assert!(
            !quotes_token(format!("{e} {e:?}")),
            "error quotes the token"
        ),
    }
    let _ = jws::verify_signature_only(text, &KEYS, &[Algorithm::RS256, Algorithm::ES256]);
    match RUNTIME.block_on(verifier.verify(text, NOW)) {
        Ok(identity) => {
            assert!(
                TOKENS.iter().any(|t| t == text),
                "accepted a token the test keys did not sign: {text:?}"
            );
            let (_, signature) = text.rsplit_once('.').unwrap();
            assert!(
                !format!("{identity:?}").contains(signature),
                "Debug of an identity shows the signature"
            );
            let _ = identity.claims().as_map().len();
        }
        Err(e) => {
            assert!(!e.code().is_empty());
            assert!(
                !quotes_token(format!("{e} {e:?}")),
                "error quotes the token"
            );
        }
    }
}

/// Key documents worth starting from: a JWK set of every key type we take (and one we
/// skip), and a kid -> PEM certificate map as Google and Firebase publish.
pub static KEY_DOCUMENTS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let mut jwks: Value = serde_json::from_slice(&jwks_document(&[&RSA, &EC])).unwrap();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}));
    let pem_map = json!({
        RSA.kid(): self_signed_pem(&RSA),
        EC.kid(): self_signed_pem(&EC),
    });
    vec![
        serde_json::to_vec(&jwks).unwrap(),
        serde_json::to_vec_pretty(&pem_map).unwrap(),
    ]
});

/// The key-document target: JWK sets and PEM maps as fetched from an issuer.
pub fn check_key_document(data: &[u8]) {
    let limits = KeyLimits {
        max_document_bytes: 64 * 1024,
        max_keys: 8,
    };
    match KeySet::from_document(data, limits) {
        Ok(set) => {
            assert!((1..=limits.max_keys).contains(&set.len()), "{}", set.len());
            let kids: Vec<&str> = set.kids().collect();
            for (i, kid) in kids.iter().enumerate() {
                assert!(!kids[..i].contains(kid), "duplicate kid {kid:?} kept");
                let key = set.get(kid).unwrap();
                assert_eq!(key.kid(), *kid);
                assert!(matches!(
                    key.algorithm(),
                    Algorithm::RS256 | Algorithm::ES256
                ));
            }
            let _ = format!("{set:?}");
        }
        Err(e) => {
            let _ = (e.to_string(), format!("{e:?}"));
        }
    }
}

/// A signing key of each type, for the coverage-guided targets' seed files.
pub fn seed_keys() -> [&'static SigningKey; 3] {
    [&RSA, &EC, &RSA_2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutations::{Edit, apply, edit, json_value};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::path::PathBuf;

    /// 100,000 unless `GATEHOUSE_FUZZ_CASES` says otherwise.
    fn cases() -> u32 {
        std::env::var("GATEHOUSE_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000)
    }

    fn runner() -> TestRunner {
        TestRunner::new(Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        })
    }

    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect()
    }

    /// Every committed input, replayed; a crash the fuzzer found stays fixed.
    fn replay(target: &str, check: fn(&[u8])) {
        let files = corpus(target);
        assert!(
            files.len() >= 10,
            "{target}: corpus has {} files",
            files.len()
        );
        for (path, bytes) in files {
            if std::panic::catch_unwind(|| check(&bytes)).is_err() {
                panic!("{target}: {} fails its invariants", path.display());
            }
        }
    }

    /// `cargo test -p gatehouse-verify --test it write_fuzz_seeds -- --ignored` writes the
    /// fixtures as the fuzzers' starting points.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        for (target, seeds) in [
            (
                "token",
                TOKENS
                    .iter()
                    .map(|t| t.as_bytes().to_vec())
                    .collect::<Vec<_>>(),
            ),
            ("key_document", KEY_DOCUMENTS.clone()),
        ] {
            std::fs::create_dir_all(root.join(target)).unwrap();
            for (i, seed) in seeds.iter().enumerate() {
                std::fs::write(root.join(target).join(format!("seed-{i}")), seed).unwrap();
            }
        }
    }

    #[test]
    fn token_corpus_replays() {
        replay("token", check_token);
    }

    #[test]
    fn key_document_corpus_replays() {
        replay("key_document", check_key_document);
    }

    /// Inputs for the token target: valid tokens edited, tokens assembled from JSON of any
    /// shape, segments spliced across tokens, and strings of any characters.
    fn token_input() -> impl Strategy<Value = String> {
        let n = TOKENS.len();
        prop_oneof![
            3 => (0..n, prop::collection::vec(edit(), 1..6)).prop_map(|(which, edits)| {
                edits.iter().fold(TOKENS[which].clone(), |t, e: &Edit| {
                    if t.is_empty() { t } else { apply(&t, e) }
                })
            }),
            2 => (json_value(), json_value(), 0..n).prop_map(|(h, c, which)| {
                // Signed for real half the time, so the claims rules are reached.
                let key = super::seed_keys()[which % 3];
                if which % 2 == 0 {
                    sign_raw(key, &h.to_string(), &c.to_string())
                } else {
                    let sig = TOKENS[which].rsplit_once('.').unwrap().1;
                    format!("{}.{}.{sig}", b64(h.to_string()), b64(c.to_string()))
                }
            }),
            1 => (0..n, json_value()).prop_map(|(which, c)| {
                // A real header over any claims, signed: every claim rule is reached.
                let key = super::seed_keys()[which % 3];
                sign_raw(key, &header_json(key), &c.to_string())
            }),
            1 => prop::collection::vec((0..n, 0usize..3), 1..5).prop_map(|picks| {
                picks
                    .iter()
                    .map(|(t, s)| TOKENS[*t].split('.').nth(*s).unwrap())
                    .collect::<Vec<_>>()
                    .join(".")
            }),
            1 => ".{0,200}",
        ]
    }

    #[test]
    fn token_target_holds_for_100k_cases() {
        runner()
            .run(&token_input(), |token| {
                check_token(token.as_bytes());
                Ok(())
            })
            .unwrap();
    }

    /// One JWK member spoiled: removed, replaced by another value, or its base64 edited.
    fn jwk_input() -> impl Strategy<Value = Value> {
        let jwks: Value = serde_json::from_slice(&KEY_DOCUMENTS[0]).unwrap();
        let keys = jwks["keys"].as_array().unwrap().clone();
        let n = keys.len();
        let names = prop::sample::select(vec![
            "kty", "kid", "use", "alg", "key_ops", "n", "e", "x", "y", "crv", "x5c",
        ]);
        (
            0..n,
            prop::collection::vec((names, 0u8..4, json_value(), edit()), 0..4),
        )
            .prop_map(move |(which, spoils)| {
                let mut jwk = keys[which].as_object().unwrap().clone();
                for (name, how, value, e) in spoils {
                    match how {
                        0 => {
                            jwk.remove(name);
                        }
                        1 => {
                            jwk.insert(name.into(), value);
                        }
                        _ => {
                            if let Some(Value::String(s)) = jwk.get(name).cloned() {
                                if s.is_ascii() && !s.is_empty() {
                                    jwk.insert(name.into(), json!(apply(&s, &e)));
                                }
                            }
                        }
                    }
                }
                Value::Object(jwk)
            })
    }

    fn key_document_input() -> impl Strategy<Value = Vec<u8>> {
        let pem_map: serde_json::Map<String, Value> =
            serde_json::from_slice(&KEY_DOCUMENTS[1]).unwrap();
        let pems: Vec<String> = pem_map
            .values()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        prop_oneof![
            3 => prop::collection::vec(jwk_input(), 0..4)
                .prop_map(|keys| serde_json::to_vec(&json!({"keys": keys})).unwrap()),
            2 => prop::collection::vec(
                ("[a-z0-9-]{0,8}", 0..pems.len(), prop::collection::vec(edit(), 0..3)),
                0..4,
            )
            .prop_map(move |entries| {
                let map: serde_json::Map<String, Value> = entries
                    .into_iter()
                    .map(|(kid, which, edits)| {
                        let pem = edits
                            .iter()
                            .fold(pems[which].clone(), |p, e| if p.is_empty() { p } else { apply(&p, e) });
                        (kid, json!(pem))
                    })
                    .collect();
                serde_json::to_vec(&map).unwrap()
            }),
            1 => (0..KEY_DOCUMENTS.len(), prop::collection::vec(edit(), 1..8)).prop_map(
                |(which, edits)| {
                    let text = String::from_utf8(KEY_DOCUMENTS[which].clone()).unwrap();
                    edits.iter().fold(text, |t, e| if t.is_empty() { t } else { apply(&t, e) }).into_bytes()
                }
            ),
            1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            1 => prop::collection::vec(any::<u8>(), 0..400),
        ]
    }

    #[test]
    fn key_document_target_holds_for_100k_cases() {
        runner()
            .run(&key_document_input(), |document| {
                check_key_document(&document);
                Ok(())
            })
            .unwrap();
    }

    /// The invariants can fail: a verifier that trusted a stranger's key would accept a
    /// token the test keys never signed, and the target says so.
    #[test]
    fn the_targets_catch_what_they_claim_to() {
        let stranger = SigningKey::generate_rs256("rsa-1").unwrap();
        let forged = sign(&stranger, &google_claims());
        check_token(forged.as_bytes());
        let fooled = verifier(google_profile(&[&stranger]));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_token_with(&fooled, forged.as_bytes())
        }));
        assert!(
            caught.is_err(),
            "the token target missed an accepted forgery"
        );

        let duplicate_kids =
            json!({"keys": [RSA.public_jwk().unwrap(), RSA.public_jwk().unwrap()]});
        check_key_document(&serde_json::to_vec(&duplicate_kids).unwrap());
    }
}
