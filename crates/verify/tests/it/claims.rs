//! Claim rules: issuers, audiences, NumericDates and every time edge, IAP and Firebase
//! rules, `email_verified`, the stable reason codes, and what `Debug` may show.

use crate::support::*;
use gatehouse_verify::{
    Error, Identity, IssuerProfile, KeySource, Malformed, SigningKey, Verifier, unverified,
};
use serde_json::{Value, json};

async fn check(v: &Verifier, claims: &Value, now: u64) -> Result<Identity, Error> {
    v.verify(&sign(&RSA, claims), now).await
}

fn set(claim: &'static str, value: Value) -> Value {
    claims_with(|c| {
        c.insert(claim.into(), value);
    })
}

fn without(claim: &'static str) -> Value {
    claims_with(|c| {
        c.remove(claim);
    })
}

// ---- issuer -----------------------------------------------------------------------------

#[tokio::test]
async fn google_accepts_exactly_its_two_issuer_strings() {
    let v = google_verifier();
    for iss in ["accounts.google.com", "https://accounts.google.com"] {
        let identity = check(&v, &set("iss", json!(iss)), NOW).await.unwrap();
        assert_eq!(identity.issuer(), iss);
    }
    for iss in [
        "https://accounts.google.com/",
        "http://accounts.google.com",
        "https://accounts.google.com:443",
        "HTTPS://ACCOUNTS.GOOGLE.COM",
        "accounts.google.com.evil.example",
        "https://accounts.google.co",
        " accounts.google.com",
        "",
    ] {
        assert_eq!(
            check(&v, &set("iss", json!(iss)), NOW).await.unwrap_err(),
            Error::WrongIssuer { iss: iss.into() },
            "{iss:?}"
        );
    }
    assert_eq!(
        check(&v, &without("iss"), NOW).await.unwrap_err(),
        Error::MissingClaim { claim: "iss" }
    );
    assert_eq!(
        check(&v, &set("iss", json!(["accounts.google.com"])), NOW)
            .await
            .unwrap_err()
            .code(),
        "invalid_claim"
    );
}

// ---- audience -----------------------------------------------------------------------------

#[tokio::test]
async fn aud_string_or_array_must_contain_an_accepted_audience() {
    let v = google_verifier();
    for aud in [json!(AUD), json!([AUD])] {
        let identity = check(&v, &set("aud", aud.clone()), NOW).await.unwrap();
        assert!(
            identity.claims().audiences().iter().any(|a| a == AUD),
            "{aud}"
        );
    }
    // OIDC Core 3.1.3.7: a token also naming an audience this verifier does not trust is
    // that audience's token too, to replay here; refused (Google's libraries refuse any
    // array).
    for aud in [json!(["other", AUD]), json!([AUD, "x"])] {
        assert_eq!(
            check(&v, &set("aud", aud.clone()), NOW).await.unwrap_err(),
            Error::WrongAudience,
            "{aud}"
        );
    }
    for aud in [
        json!("other"),
        json!(["other", "another"]),
        json!(""),
        json!(AUD.to_uppercase()),
        json!(&AUD[1..]),
        json!(format!("{AUD} ")),
        json!(format!("{AUD},other")),
    ] {
        assert_eq!(
            check(&v, &set("aud", aud.clone()), NOW).await.unwrap_err(),
            Error::WrongAudience,
            "{aud}"
        );
    }
    for aud in [
        json!(5),
        json!([]),
        json!([AUD, 5]),
        json!({"aud": AUD}),
        json!(null),
    ] {
        assert_eq!(
            check(&v, &set("aud", aud.clone()), NOW)
                .await
                .unwrap_err()
                .code(),
            "invalid_claim",
            "{aud}"
        );
    }
    assert_eq!(
        check(&v, &without("aud"), NOW).await.unwrap_err(),
        Error::MissingClaim { claim: "aud" }
    );
    assert_eq!(Error::WrongAudience.code(), "wrong_audience");
}

#[test]
fn a_profile_must_name_an_audience() {
    let err = Verifier::builder()
        .profile(IssuerProfile::google().with_static_keys(keyset(&[&RSA])))
        .build()
        .unwrap_err();
    assert!(matches!(err, gatehouse_verify::BuildError::NoAudience(_)));
}

// ---- NumericDate --------------------------------------------------------------------------

#[tokio::test]
async fn dates_are_json_numbers_only() {
    let v = google_verifier();
    for claim in ["exp", "iat", "nbf"] {
        let good = match claim {
            "exp" => NOW + 100,
            _ => NOW - 100,
        };
        for bad in [
            json!(good.to_string()),
            json!(-1),
            json!(null),
            json!(true),
            json!([good]),
            json!({"t": good}),
            json!(1e300),
        ] {
            assert_eq!(
                check(&v, &set(claim, bad.clone()), NOW).await.unwrap_err(),
                Error::Malformed(Malformed::NumericDate),
                "{claim} = {bad}"
            );
        }
        // A fractional NumericDate is a number (RFC 7519 §2).
        check(&v, &set(claim, json!(good as f64 + 0.5)), NOW)
            .await
            .unwrap();
    }
    assert_eq!(
        check(&v, &without("exp"), NOW).await.unwrap_err(),
        Error::MissingClaim { claim: "exp" }
    );
    assert_eq!(
        check(&v, &without("iat"), NOW).await.unwrap_err(),
        Error::MissingClaim { claim: "iat" }
    );
}

// ---- time edges ----------------------------------------------------------------------------

#[tokio::test]
async fn expiry_edges_with_the_default_leeway_of_60_seconds() {
    let v = google_verifier();
    let exp = NOW + 3590;
    let token = sign(&RSA, &google_claims());
    v.verify(&token, exp - 1).await.unwrap();
    v.verify(&token, exp).await.unwrap();
    v.verify(&token, exp + 60 - 1).await.unwrap();
    assert_eq!(
        v.verify(&token, exp + 60).await.unwrap_err(),
        Error::Expired {
            now: exp + 60,
            exp,
            leeway: 60
        }
    );
    assert_eq!(
        v.verify(&token, exp + 61).await.unwrap_err().code(),
        "expired"
    );
    assert_eq!(
        v.verify(&token, u64::MAX).await.unwrap_err().code(),
        "expired"
    );
}

#[tokio::test]
async fn leeway_is_configurable() {
    let exp = NOW + 3590;
    let token = sign(&RSA, &google_claims());
    let strict = verifier(google_profile(&[&RSA]).with_leeway(0));
    strict.verify(&token, exp - 1).await.unwrap();
    assert_eq!(
        strict.verify(&token, exp).await.unwrap_err().code(),
        "expired"
    );
    let lax = verifier(google_profile(&[&RSA]).with_leeway(300));
    lax.verify(&token, exp + 299).await.unwrap();
    assert_eq!(
        lax.verify(&token, exp + 300).await.unwrap_err().code(),
        "expired"
    );
}

#[tokio::test]
async fn nbf_and_iat_in_the_future_beyond_leeway_are_refused() {
    let v = google_verifier();
    let nbf = NOW + 100;
    let token = sign(&RSA, &set("nbf", json!(nbf)));
    v.verify(&token, nbf - 60).await.unwrap();
    assert_eq!(
        v.verify(&token, nbf - 61).await.unwrap_err(),
        Error::NotYetValid {
            now: nbf - 61,
            nbf,
            leeway: 60
        }
    );
    assert_eq!(
        Error::NotYetValid {
            now: 0,
            nbf: 0,
            leeway: 0
        }
        .code(),
        "not_yet_valid"
    );

    let iat = NOW + 100;
    let token = sign(&RSA, &set("iat", json!(iat)));
    v.verify(&token, iat - 60).await.unwrap();
    assert_eq!(
        v.verify(&token, iat - 61).await.unwrap_err(),
        Error::IssuedInFuture {
            now: iat - 61,
            iat,
            leeway: 60
        }
    );
}

#[tokio::test]
async fn max_lifetime_when_configured() {
    let v = verifier(google_profile(&[&RSA]).with_max_lifetime(3600));
    let iat = NOW - 10;
    check(&v, &set("exp", json!(iat + 3600)), NOW)
        .await
        .unwrap();
    assert_eq!(
        check(&v, &set("exp", json!(iat + 3601)), NOW)
            .await
            .unwrap_err(),
        Error::LifetimeTooLong {
            lifetime: 3601,
            max: 3600
        }
    );
    // Google's profile allows a day, as google-auth-library-nodejs does; one second more
    // is refused.
    check(&google_verifier(), &set("exp", json!(iat + 86400)), NOW)
        .await
        .unwrap();
    assert_eq!(
        check(&google_verifier(), &set("exp", json!(iat + 86401)), NOW)
            .await
            .unwrap_err(),
        Error::LifetimeTooLong {
            lifetime: 86401,
            max: 86400
        }
    );
    // The largest integer `exp` there is: no NumericDate here (those end in the year
    // 33,658, fractions and integers alike), so no profile, capped or not, keeps it forever.
    assert_eq!(
        check(&v, &set("exp", json!(u64::MAX)), NOW)
            .await
            .unwrap_err()
            .code(),
        "malformed"
    );
}

// ---- IAP --------------------------------------------------------------------------------------

const IAP_AUD: &str = "/projects/123/global/backendServices/456";

fn iap_verifier() -> Verifier {
    verifier(
        IssuerProfile::iap()
            .with_audiences([IAP_AUD])
            .with_static_keys(keyset(&[&EC])),
    )
}

fn iap_claims(iat: u64, exp: u64) -> Value {
    json!({
        "iss": "https://cloud.google.com/iap",
        "aud": IAP_AUD,
        "sub": "accounts.google.com:110169484474386276334",
        "email": "alice@example.com",
        "hd": "example.com",
        "iat": iat,
        "exp": exp,
    })
}

#[tokio::test]
async fn iap_has_30_seconds_of_leeway_and_at_most_600_of_lifetime() {
    let v = iap_verifier();
    let (iat, exp) = (NOW, NOW + 600);
    let token = sign(&EC, &iap_claims(iat, exp));
    let identity = v.verify(&token, NOW).await.unwrap();
    assert_eq!(identity.profile(), "iap");
    v.verify(&token, exp + 29).await.unwrap();
    assert_eq!(
        v.verify(&token, exp + 30).await.unwrap_err(),
        Error::Expired {
            now: exp + 30,
            exp,
            leeway: 30
        }
    );
    assert_eq!(
        v.verify(&sign(&EC, &iap_claims(NOW, NOW + 601)), NOW)
            .await
            .unwrap_err(),
        Error::LifetimeTooLong {
            lifetime: 601,
            max: 600
        }
    );
    let future = sign(&EC, &iap_claims(NOW + 31, NOW + 300));
    assert_eq!(
        v.verify(&future, NOW).await.unwrap_err().code(),
        "issued_in_future"
    );
    v.verify(&sign(&EC, &iap_claims(NOW + 30, NOW + 300)), NOW)
        .await
        .unwrap();
    assert_eq!(IssuerProfile::iap().leeway(), 30);
}

// ---- Firebase ------------------------------------------------------------------------------------

fn firebase_verifier() -> Verifier {
    verifier(IssuerProfile::firebase("my-project").with_static_keys(keyset(&[&RSA])))
}

fn firebase_claims(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut claims = json!({
        "iss": "https://securetoken.google.com/my-project",
        "aud": "my-project",
        "auth_time": NOW - 1000,
        "user_id": "uid-1",
        "sub": "uid-1",
        "iat": NOW - 10,
        "exp": NOW + 3590,
        "email": "alice@example.com",
        "email_verified": true,
        "firebase": {"identities": {"email": ["alice@example.com"]}, "sign_in_provider": "password"},
    });
    edit(claims.as_object_mut().unwrap());
    claims
}

/// A cached Firebase token is judged at its own time as a fresh one is, `auth_time`
/// included: presented at an earlier `now` (a clock stepped back) before its sign-in, it is
/// refused as uncached, not served from the cache.
#[tokio::test]
async fn a_cached_firebase_token_is_refused_before_its_sign_in() {
    let v = Verifier::builder()
        .profile(IssuerProfile::firebase("my-project").with_static_keys(keyset(&[&RSA])))
        .token_cache_capacity(16)
        .build()
        .unwrap();
    let token = sign(
        &RSA,
        &firebase_claims(|c| {
            c.insert("iat".into(), json!(NOW - 10));
            c.insert("auth_time".into(), json!(NOW + 50));
        }),
    );
    v.verify(&token, NOW).await.unwrap();
    assert!(
        v.verify(&token, NOW + 1).await.is_ok(),
        "a later hit stands"
    );
    let error = v.verify(&token, NOW - 20).await.unwrap_err();
    assert_eq!(error.code(), "invalid_claim", "{error}");
}

#[tokio::test]
async fn firebase_rules() {
    let v = firebase_verifier();
    let identity = check(&v, &firebase_claims(|_| {}), NOW).await.unwrap();
    assert_eq!(identity.subject(), "uid-1");
    assert_eq!(identity.profile(), "firebase:my-project");

    // sub: 1 to 128 characters.
    check(
        &v,
        &firebase_claims(|c| {
            c.insert("sub".into(), json!("u".repeat(128)));
        }),
        NOW,
    )
    .await
    .unwrap();
    // Characters, not bytes: 128 two-byte characters are a valid uid.
    check(
        &v,
        &firebase_claims(|c| {
            c.insert("sub".into(), json!("é".repeat(128)));
        }),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(
        check(
            &v,
            &firebase_claims(|c| {
                c.insert("sub".into(), json!("u".repeat(129)));
            }),
            NOW
        )
        .await
        .unwrap_err()
        .code(),
        "invalid_claim"
    );
    for edit in [json!(""), Value::Null] {
        let claims = firebase_claims(|c| {
            if edit.is_null() {
                c.remove("sub");
            } else {
                c.insert("sub".into(), edit.clone());
            }
        });
        assert_eq!(
            check(&v, &claims, NOW).await.unwrap_err(),
            Error::MissingClaim { claim: "sub" }
        );
    }

    // auth_time: present, a number, not in the future (beyond leeway).
    check(
        &v,
        &firebase_claims(|c| {
            c.insert("auth_time".into(), json!(NOW + 60));
        }),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(
        check(
            &v,
            &firebase_claims(|c| {
                c.insert("auth_time".into(), json!(NOW + 61));
            }),
            NOW
        )
        .await
        .unwrap_err(),
        Error::InvalidClaim {
            claim: "auth_time",
            why: "in the future"
        }
    );
    assert_eq!(
        check(
            &v,
            &firebase_claims(|c| {
                c.remove("auth_time");
            }),
            NOW
        )
        .await
        .unwrap_err(),
        Error::MissingClaim { claim: "auth_time" }
    );
    assert_eq!(
        check(
            &v,
            &firebase_claims(|c| {
                c.insert("auth_time".into(), json!((NOW - 5).to_string()));
            }),
            NOW
        )
        .await
        .unwrap_err()
        .code(),
        "invalid_claim"
    );

    // aud is the project; iss names the project.
    for aud in [json!(AUD), json!("other-project"), json!("my-project ")] {
        assert_eq!(
            check(
                &v,
                &firebase_claims(|c| {
                    c.insert("aud".into(), aud.clone());
                }),
                NOW
            )
            .await
            .unwrap_err(),
            Error::WrongAudience
        );
    }
    assert_eq!(
        check(
            &v,
            &firebase_claims(|c| {
                c.insert(
                    "iss".into(),
                    json!("https://securetoken.google.com/other-project"),
                );
            }),
            NOW
        )
        .await
        .unwrap_err()
        .code(),
        "wrong_issuer"
    );
}

// ---- email_verified ---------------------------------------------------------------------------

#[tokio::test]
async fn require_email_verified() {
    let v = verifier(google_profile(&[&RSA]).require_email_verified(true));
    check(&v, &google_claims(), NOW).await.unwrap();
    check(&v, &set("email_verified", json!("true")), NOW)
        .await
        .unwrap();
    for claims in [
        set("email_verified", json!(false)),
        set("email_verified", json!("false")),
        without("email_verified"),
        without("email"),
    ] {
        assert_eq!(
            check(&v, &claims, NOW).await.unwrap_err(),
            Error::EmailUnverified,
            "{claims}"
        );
    }
    for odd in [json!("yes"), json!(1), json!("TRUE")] {
        assert_eq!(
            check(&v, &set("email_verified", odd.clone()), NOW)
                .await
                .unwrap_err()
                .code(),
            "invalid_claim",
            "{odd}"
        );
    }
    // Off by default: an unverified email still authenticates (members decide later).
    let identity = check(
        &google_verifier(),
        &set("email_verified", json!(false)),
        NOW,
    )
    .await
    .unwrap();
    assert!(!identity.email_verified());
}

// ---- reason codes --------------------------------------------------------------------------

#[test]
fn reason_codes_are_a_stable_contract() {
    let cases = [
        (Error::Malformed(Malformed::Base64), "malformed"),
        (Error::TooLarge { size: 2, max: 1 }, "too_large"),
        (
            Error::BadAlgorithm {
                alg: "HS256".into(),
            },
            "bad_algorithm",
        ),
        (Error::CriticalHeader, "unsupported_crit"),
        (Error::MissingKid, "missing_kid"),
        (Error::UnknownKid { kid: "k".into() }, "unknown_kid"),
        (Error::BadSignature, "bad_signature"),
        (Error::SignatureRemoved, "signature_removed"),
        (
            Error::Expired {
                now: 2,
                exp: 1,
                leeway: 0,
            },
            "expired",
        ),
        (
            Error::NotYetValid {
                now: 1,
                nbf: 2,
                leeway: 0,
            },
            "not_yet_valid",
        ),
        (
            Error::IssuedInFuture {
                now: 1,
                iat: 2,
                leeway: 0,
            },
            "issued_in_future",
        ),
        (
            Error::LifetimeTooLong {
                lifetime: 2,
                max: 1,
            },
            "lifetime_too_long",
        ),
        (Error::WrongIssuer { iss: "x".into() }, "wrong_issuer"),
        (Error::WrongAudience, "wrong_audience"),
        (Error::MissingClaim { claim: "sub" }, "missing_claim"),
        (
            Error::InvalidClaim {
                claim: "aud",
                why: "x",
            },
            "invalid_claim",
        ),
        (Error::EmailUnverified, "email_unverified"),
        (
            Error::KeysUnavailable {
                reason: "down".into(),
            },
            "keys_unavailable",
        ),
    ];
    for (error, code) in &cases {
        assert_eq!(error.code(), *code, "{error:?}");
        assert_eq!(error.is_unavailable(), *code == "keys_unavailable");
    }
    let codes: Vec<&str> = cases.iter().map(|(_, c)| *c).collect();
    assert_eq!(Error::CODES, codes.as_slice());
    for m in [
        Malformed::Segments,
        Malformed::Base64,
        Malformed::Utf8,
        Malformed::Json,
        Malformed::DuplicateKey,
        Malformed::HeaderShape,
        Malformed::ClaimsShape,
        Malformed::NumericDate,
        Malformed::SignatureLength,
    ] {
        assert_eq!(Error::Malformed(m).code(), "malformed");
    }
}

// ---- what Debug and Display may show -------------------------------------------------------

/// Every 12-character window of `secret`, so that a partial leak is caught too.
fn assert_no_part_of(text: &str, secret: &str, what: &str) {
    let chars: Vec<char> = secret.chars().collect();
    for window in chars.windows(12) {
        let needle: String = window.iter().collect();
        assert!(!text.contains(&needle), "{what} leaks {needle:?} in {text}");
    }
}

fn key_material(key: &SigningKey) -> Vec<String> {
    use base64::Engine as _;
    let der = key.to_pkcs8_der().unwrap();
    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        base64::engine::general_purpose::STANDARD.encode(&der),
        b64(&der),
        hex,
        format!("{der:?}"),
    ]
}

/// A key URL's query, fragment and user-info may carry a key (an API key, a signed URL):
/// `Debug` of a profile or a verifier shows the URL without them, as logs do.
#[test]
fn debug_shows_key_urls_without_their_secrets() {
    let url = "https://user:pass-secret@keys.example/jwks?key=query-secret#frag-secret";
    let profile = IssuerProfile::oidc("https://issuer.example").with_jwks_url(url);
    let discovered =
        IssuerProfile::literal("https://issuer.example", KeySource::Discovery(url.into()));
    let verifier = Verifier::builder().profile(profile.clone());
    for shown in [
        format!("{profile:?} {profile:#?}"),
        format!("{discovered:?}"),
        format!("{verifier:?}"),
    ] {
        assert!(shown.contains("keys.example/jwks"), "{shown}");
        for secret in ["pass-secret", "query-secret", "frag-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}

#[tokio::test]
async fn debug_never_shows_tokens_or_key_material() {
    for key in [&*RSA, &*EC] {
        let debug = format!("{key:?} {key:#?}");
        assert!(debug.contains(key.kid()));
        for material in key_material(key) {
            assert_no_part_of(&debug, &material, "SigningKey");
        }
        let public = format!("{:?}", key.public_key().unwrap());
        for material in key_material(key) {
            assert_no_part_of(&public, &material, "PublicKey");
        }
    }
    let token = sign(&RSA, &google_claims());
    let identity = google_verifier().verify(&token, NOW).await.unwrap();
    let signature = token.rsplit('.').next().unwrap();
    let shown = [
        format!("{identity:?} {identity:#?}"),
        format!("{:?}", identity.claims()),
        format!(
            "{:?}",
            unverified::trusted_front_door_claims(&format!(
                "{}.SIGNATURE_REMOVED_BY_GOOGLE",
                token.rsplit_once('.').unwrap().0
            ))
            .unwrap()
        ),
    ];
    for text in &shown {
        assert!(!text.contains(&token));
        for segment in token.split('.') {
            assert_no_part_of(text, segment, "Identity/Claims");
        }
        assert_no_part_of(text, signature, "Identity/Claims");
    }
    // Refusals carry no token either.
    let v = google_verifier();
    let bad_sig = sign(&ATTACKER, &google_claims());
    for bad in [
        bad_sig.clone(),
        sign(&RSA, &set("exp", json!(NOW - 1000))),
        sign(&RSA, &set("aud", json!("other"))),
        format!("{}.x", bad_sig),
    ] {
        let e = v.verify(&bad, NOW).await.unwrap_err();
        let text = format!("{e} {e:?}");
        for segment in bad.split('.').filter(|s| s.len() >= 12) {
            assert_no_part_of(&text, segment, "Error");
        }
    }
}

// ---- several profiles ---------------------------------------------------------------------

#[tokio::test]
async fn the_profile_named_by_iss_chooses_the_keys() {
    let v = Verifier::builder()
        .profile(google_profile(&[&RSA]))
        .profile(IssuerProfile::firebase("my-project").with_static_keys(keyset(&[&RSA_2])))
        .token_cache_capacity(0)
        .build()
        .unwrap();
    v.verify(&sign(&RSA, &google_claims()), NOW).await.unwrap();
    let firebase = firebase_claims(|_| {});
    let identity = v.verify(&sign(&RSA_2, &firebase), NOW).await.unwrap();
    assert_eq!(identity.profile(), "firebase:my-project");
    // Google's key does not sign for Firebase, nor Firebase's for Google.
    assert_eq!(
        v.verify(&sign(&RSA, &firebase), NOW).await.unwrap_err(),
        Error::UnknownKid {
            kid: "rsa-1".into()
        }
    );
    assert_eq!(
        v.verify(&sign(&RSA_2, &google_claims()), NOW)
            .await
            .unwrap_err()
            .code(),
        "unknown_kid"
    );
    // Two profiles may not claim one issuer.
    let err = Verifier::builder()
        .profile(google_profile(&[&RSA]))
        .profile(google_profile(&[&RSA_2]).with_name("google-2"))
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        gatehouse_verify::BuildError::AmbiguousIssuer(..)
    ));
    assert!(matches!(
        Verifier::builder().build().unwrap_err(),
        gatehouse_verify::BuildError::NoProfiles
    ));
}

#[test]
fn profile_specs_parse() {
    use gatehouse_verify::{KeySource, ProfileKind};
    let google = IssuerProfile::parse("google", None).unwrap();
    assert_eq!(google.kind(), &ProfileKind::Google);
    assert_eq!(
        google.issuers(),
        ["accounts.google.com", "https://accounts.google.com"]
    );
    assert!(
        matches!(google.key_source(), KeySource::Url(u) if u == "https://www.googleapis.com/oauth2/v3/certs")
    );
    let firebase = IssuerProfile::parse("firebase:proj-1", None).unwrap();
    assert_eq!(
        firebase.issuers(),
        ["https://securetoken.google.com/proj-1"]
    );
    assert_eq!(firebase.audiences(), ["proj-1"]);
    let iap = IssuerProfile::parse("iap", None).unwrap();
    assert_eq!(
        (iap.issuers()[0].as_str(), iap.leeway()),
        ("https://cloud.google.com/iap", 30)
    );
    let oidc = IssuerProfile::parse("oidc:https://idp.example", None).unwrap();
    assert!(matches!(oidc.key_source(), KeySource::Discovery(i) if i == "https://idp.example"));
    let literal =
        IssuerProfile::parse("https://idp.example", Some("http://127.0.0.1:1/jwks")).unwrap();
    assert_eq!(literal.issuers(), ["https://idp.example"]);
    assert!(matches!(literal.key_source(), KeySource::Url(u) if u == "http://127.0.0.1:1/jwks"));
    let pinned = IssuerProfile::parse("google", Some("http://127.0.0.1:1/certs")).unwrap();
    assert!(matches!(pinned.key_source(), KeySource::Url(u) if u == "http://127.0.0.1:1/certs"));
    for bad in ["", "firebase:", "oidc:", "a b"] {
        assert!(IssuerProfile::parse(bad, None).is_err(), "{bad:?}");
    }
}
