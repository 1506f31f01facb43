//! Wycheproof vectors (C2SP/wycheproof, testvectors_v1) from `shared/testvectors/wycheproof`
//! beside the repository. Missing vectors fail the test rather than skip it.
//!
//! JWS and JWK vectors are checked at the signature level (their payloads are not JWT
//! claims): every `invalid` case is refused; every `valid` RS256/ES256 case is accepted;
//! `valid` cases of algorithms this crate never verifies (HS*, PS*, RS384/512, ES512) must be
//! refused. Raw ECDSA P-256 (P1363) and RSA-2048 PKCS#1 v1.5 vectors check each signature;
//! `acceptable` cases are recorded, not asserted.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_verify::jws::verify_signature_only;
use gatehouse_verify::{Algorithm, KeyLimits, KeySet, PublicKey};
use serde_json::{Value, json};
use std::path::PathBuf;

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testvectors/wycheproof")
}

fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "Wycheproof vectors are required at {} ({e}); the checkout must have shared/ beside the repository",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// What a verifier configured with this group's key would hold: the public JWK (or JWK set)
/// when there is one, else the private one (symmetric keys), parsed as a key document.
fn group_keys(group: &Value) -> KeySet {
    let key = group
        .get("public")
        .or_else(|| group.get("private"))
        .unwrap();
    let document = if key.get("keys").is_some() {
        key.clone()
    } else {
        json!({ "keys": [key] })
    };
    KeySet::from_document(
        &serde_json::to_vec(&document).unwrap(),
        KeyLimits::default(),
    )
    .unwrap_or_default()
}

/// The `alg` the JWS header claims, read leniently (some vectors corrupt the encoding).
fn claimed_alg(jws: &str) -> Option<String> {
    let header = jws.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: Value = serde_json::from_slice(&bytes).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

#[derive(Debug, Default)]
struct Tally {
    valid_accepted: usize,
    valid_unsupported_refused: usize,
    invalid_refused: usize,
    acceptable: usize,
}

fn run_jws_file(name: &str) -> Tally {
    let file = load(name);
    let mut tally = Tally::default();
    let allowed = [Algorithm::RS256, Algorithm::ES256];
    let mut count = 0;
    for group in file["testGroups"].as_array().unwrap() {
        let keys = group_keys(group);
        for case in group["tests"].as_array().unwrap() {
            count += 1;
            let id = &case["tcId"];
            let comment = case["comment"].as_str().unwrap_or("");
            // JSON-serialised JWS appear as objects or JSON text; both must be refused.
            let jws = match &case["jws"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let result = verify_signature_only(&jws, &keys, &allowed);
            match case["result"].as_str().unwrap() {
                "invalid" => {
                    assert!(
                        result.is_err(),
                        "{name} tcId {id} ({comment}) is invalid but was accepted"
                    );
                    tally.invalid_refused += 1;
                }
                "valid" => match claimed_alg(&jws).as_deref() {
                    Some("RS256" | "ES256") => {
                        let payload = result.unwrap_or_else(|e| {
                            panic!("{name} tcId {id} ({comment}) is valid but refused: {e}")
                        });
                        let expected = URL_SAFE_NO_PAD.decode(jws.split('.').nth(1).unwrap());
                        assert_eq!(payload, expected.unwrap(), "tcId {id}: payload");
                        tally.valid_accepted += 1;
                    }
                    alg => {
                        assert!(
                            result.is_err(),
                            "{name} tcId {id} ({comment}): {alg:?} must never verify here"
                        );
                        tally.valid_unsupported_refused += 1;
                    }
                },
                "acceptable" => tally.acceptable += 1,
                other => panic!("unknown result {other}"),
            }
        }
    }
    assert_eq!(count, file["numberOfTests"].as_u64().unwrap() as usize);
    eprintln!("{name}: {tally:?}");
    tally
}

#[test]
fn json_web_signature_vectors() {
    let tally = run_jws_file("json_web_signature_test.json");
    // tcIds 18, 33, 259-263, 345, 349, 378: the RS256/ES256 cases that must verify.
    assert_eq!(tally.valid_accepted, 10, "{tally:?}");
    assert!(tally.valid_unsupported_refused >= 30, "{tally:?}");
    assert_eq!(tally.invalid_refused, 355);
}

#[test]
fn json_web_key_vectors() {
    let tally = run_jws_file("json_web_key_test.json");
    assert_eq!(tally.valid_accepted, 1, "{tally:?}");
    assert_eq!(tally.valid_unsupported_refused, 4, "{tally:?}");
    assert_eq!(tally.invalid_refused, 21);
}

/// The JWK vectors' unsafe keys are refused when the key document is parsed, not only when
/// a signature fails.
#[test]
fn json_web_key_vectors_unsafe_keys_are_not_loaded() {
    let file = load("json_web_key_test.json");
    for group in file["testGroups"].as_array().unwrap() {
        let comment = group["comment"].as_str().unwrap();
        let all_invalid = group["tests"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["result"] == "invalid");
        if !all_invalid {
            continue;
        }
        let keys = group_keys(group);
        for case in group["tests"].as_array().unwrap() {
            let jws = case["jws"].as_str().unwrap();
            let Some(kid) = jws
                .split('.')
                .next()
                .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
                .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
                .and_then(|h| h["kid"].as_str().map(str::to_owned))
            else {
                continue;
            };
            let loaded = keys.get(&kid);
            // A usable P-256 or RSA key may be loaded only if this group's problem is
            // elsewhere (a symmetric-key confusion or HS token), never for a bad key.
            if let Some(key) = loaded {
                let alg = claimed_alg(jws).unwrap_or_default();
                assert!(
                    alg.starts_with("HS"),
                    "group {comment}: key {kid} ({:?}) should have been refused",
                    key.algorithm()
                );
            }
        }
    }
}

/// The one JWK vector that our original key parser accepted: `key_ops` without `verify`.
#[test]
fn jwk_key_ops_must_allow_verify() {
    let file = load("json_web_signature_test.json");
    let jwk = file["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["public"])
        .find(|k| k["key_ops"] == json!(["encrypt"]) && k.get("n").is_some())
        .unwrap()
        .clone();
    let map = jwk.as_object().unwrap();
    assert!(PublicKey::from_jwk(map).is_err());
    let mut ok = map.clone();
    ok.insert("key_ops".into(), json!(["verify"]));
    PublicKey::from_jwk(&ok).unwrap();
    for bad in [json!([]), json!(["sign"]), json!("verify"), json!([1])] {
        let mut m = map.clone();
        m.insert("key_ops".into(), bad.clone());
        assert!(PublicKey::from_jwk(&m).is_err(), "{bad}");
    }
}

fn run_raw_file(name: &str, expected_alg: Algorithm) -> Tally {
    let file = load(name);
    let mut tally = Tally::default();
    let mut count = 0;
    for group in file["testGroups"].as_array().unwrap() {
        let der = hex(group["publicKeyDer"].as_str().unwrap());
        let key = PublicKey::from_spki_der("w", &der);
        for case in group["tests"].as_array().unwrap() {
            count += 1;
            let id = &case["tcId"];
            let comment = case["comment"].as_str().unwrap_or("");
            let msg = hex(case["msg"].as_str().unwrap());
            let sig = hex(case["sig"].as_str().unwrap());
            let verified = match &key {
                Ok(key) => {
                    assert_eq!(key.algorithm(), expected_alg);
                    key.verify_signature_for_tests(&msg, &sig)
                }
                // A key we refuse to load verifies nothing.
                Err(_) => false,
            };
            match case["result"].as_str().unwrap() {
                "valid" => {
                    assert!(
                        key.is_ok(),
                        "{name}: key of valid tcId {id} refused: {:?}",
                        key.as_ref().err()
                    );
                    assert!(
                        verified,
                        "{name} tcId {id} ({comment}) is valid but refused"
                    );
                    tally.valid_accepted += 1;
                }
                "invalid" => {
                    assert!(
                        !verified,
                        "{name} tcId {id} ({comment}) is invalid but verified"
                    );
                    tally.invalid_refused += 1;
                }
                "acceptable" => {
                    eprintln!("{name} tcId {id} ({comment}) acceptable: verified = {verified}");
                    tally.acceptable += 1;
                }
                other => panic!("unknown result {other}"),
            }
        }
    }
    assert_eq!(count, file["numberOfTests"].as_u64().unwrap() as usize);
    eprintln!("{name}: {tally:?}");
    tally
}

#[test]
fn ecdsa_p256_sha256_p1363_vectors() {
    let tally = run_raw_file("ecdsa_secp256r1_sha256_p1363_test.json", Algorithm::ES256);
    assert_eq!(tally.valid_accepted, 173);
    assert_eq!(tally.invalid_refused, 89);
}

#[test]
fn rsa_2048_pkcs1_sha256_vectors() {
    let tally = run_raw_file("rsa_signature_2048_sha256_test.json", Algorithm::RS256);
    assert_eq!(tally.valid_accepted, 9);
    assert_eq!(tally.invalid_refused, 249);
    assert_eq!(tally.acceptable, 1);
}
