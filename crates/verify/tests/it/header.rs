//! Structure and header rules: size cap, segments, base64url, UTF-8, duplicate members,
//! algorithms, key-carrying headers, `crit`, `kid`, `typ`, signatures.

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gatehouse_verify::jws::SIGNATURE_REMOVED;
use gatehouse_verify::{Error, IssuerProfile, KeySource, Malformed, SigningKey, unverified};
use serde_json::json;
use std::sync::Arc;

fn sign_segments(key: &SigningKey, header_seg: &str, payload_seg: &str) -> String {
    let input = format!("{header_seg}.{payload_seg}");
    let signature = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(signature))
}

fn claims_json() -> String {
    google_claims().to_string()
}

async fn err(token: &str) -> Error {
    google_verifier().verify(token, NOW).await.unwrap_err()
}

#[tokio::test]
async fn a_well_formed_token_verifies() {
    let identity = google_verifier()
        .verify(&sign(&RSA, &google_claims()), NOW)
        .await
        .unwrap();
    assert_eq!(identity.subject(), "110169484474386276334");
    assert_eq!(identity.email(), Some("alice@example.com"));
    assert_eq!(identity.profile(), "google");
}

// ---- size cap -------------------------------------------------------------------------

/// A correctly signed token of exactly `len` bytes (padding claim and header member).
fn token_of_length(len: usize) -> String {
    for header_pad in 0..4 {
        let header = format!(
            r#"{{"alg":"RS256","kid":"rsa-1","typ":"JWT","x":"{}"}}"#,
            "h".repeat(header_pad)
        );
        let fixed = b64(&header).len() + 2 + 342;
        let base = claims_with(|c| {
            c.insert("pad".into(), json!(""));
        })
        .to_string()
        .len();
        for pad in 0..=(len * 3 / 4) {
            let payload_len = (base + pad).div_ceil(3) * 4 - [0, 2, 1][(base + pad) % 3];
            if fixed + payload_len == len {
                let claims = claims_with(|c| {
                    c.insert("pad".into(), json!("p".repeat(pad)));
                });
                let token = sign_raw(&RSA, &header, &claims.to_string());
                assert_eq!(token.len(), len);
                return token;
            }
        }
    }
    panic!("no token of length {len}");
}

#[tokio::test]
async fn size_cap_is_16_kib_by_default_exactly() {
    let v = google_verifier();
    let at_cap = token_of_length(16 * 1024);
    v.verify(&at_cap, NOW).await.unwrap();
    let over = token_of_length(16 * 1024 + 1);
    assert_eq!(
        v.verify(&over, NOW).await.unwrap_err(),
        Error::TooLarge {
            size: 16 * 1024 + 1,
            max: 16 * 1024
        }
    );
}

#[tokio::test]
async fn size_cap_applies_before_any_decoding() {
    // Garbage that would be `malformed` if it were looked at.
    let garbage = "!".repeat(16 * 1024 + 1);
    assert_eq!(
        refusal(&google_verifier(), &garbage, NOW).await,
        "too_large"
    );
    let garbage = "!".repeat(16 * 1024);
    assert_eq!(
        refusal(&google_verifier(), &garbage, NOW).await,
        "malformed"
    );
}

#[tokio::test]
async fn size_cap_is_configurable_per_profile() {
    let token = sign(&RSA, &google_claims());
    let small = verifier(google_profile(&[&RSA]).with_max_token_bytes(token.len() - 1));
    assert_eq!(refusal(&small, &token, NOW).await, "too_large");
    let exact = verifier(google_profile(&[&RSA]).with_max_token_bytes(token.len()));
    exact.verify(&token, NOW).await.unwrap();

    let big_token = token_of_length(20_000);
    let large = verifier(google_profile(&[&RSA]).with_max_token_bytes(32 * 1024));
    large.verify(&big_token, NOW).await.unwrap();
    assert_eq!(
        refusal(&google_verifier(), &big_token, NOW).await,
        "too_large"
    );

    // With two profiles the larger cap admits the bytes, and the token's own profile
    // (found by `iss`) still applies its smaller one.
    let firebase = IssuerProfile::firebase("proj").with_static_keys(keyset(&[&RSA]));
    let two = gatehouse_verify::Verifier::builder()
        .profile(google_profile(&[&RSA]).with_max_token_bytes(1000))
        .profile(firebase.with_max_token_bytes(32 * 1024))
        .token_cache_capacity(0)
        .build()
        .unwrap();
    assert!(token_of_length(2000).len() > 1000);
    assert_eq!(
        two.verify(&token_of_length(2000), NOW).await.unwrap_err(),
        Error::TooLarge {
            size: 2000,
            max: 1000
        }
    );
}

// ---- segments, base64url, UTF-8 --------------------------------------------------------

#[tokio::test]
async fn exactly_three_non_empty_segments() {
    let token = sign(&RSA, &google_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    for bad in [
        String::new(),
        h.to_owned(),
        format!("{h}.{p}"),
        format!("{h}.{p}."),
        format!("{h}..{s}"),
        format!(".{p}.{s}"),
        format!("{h}.{p}.{s}."),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}.{p}.{s}.."),
        format!("{h}.{h}.{p}.{s}"),
    ] {
        assert_eq!(
            google_verifier().verify(&bad, NOW).await.unwrap_err(),
            Error::Malformed(Malformed::Segments),
            "{bad:.60}"
        );
    }
}

/// The same bytes with the last character changed so that unused trailing bits are set.
fn non_canonical(segment: &str) -> String {
    assert_ne!(segment.len() % 4, 0, "needs trailing bits");
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *segment.as_bytes().last().unwrap();
    let index = ALPHABET.iter().position(|c| *c == last).unwrap();
    let mut s = segment[..segment.len() - 1].to_owned();
    s.push(ALPHABET[index + 1] as char);
    s
}

#[tokio::test]
async fn base64url_is_strict_even_when_the_signature_covers_the_odd_encoding() {
    let header = header_json(&RSA);
    // `?>` makes the standard alphabet's `/` and `+` appear.
    let claims = claims_with(|c| {
        c.insert("note".into(), json!("???>>>~~~"));
    })
    .to_string();
    let standard = STANDARD.encode(&claims).trim_end_matches('=').to_owned();
    assert!(standard.contains(['+', '/']));
    let mut padded_claims = claims.clone();
    while padded_claims.len() % 3 == 0 {
        padded_claims.push(' ');
    }
    let padded = STANDARD
        .encode(&padded_claims)
        .replace('+', "-")
        .replace('/', "_");
    assert!(padded.ends_with('='));
    let canonical = b64(&padded_claims);
    let cases = [
        (
            "standard alphabet",
            sign_segments(&RSA, &b64(&header), &standard),
        ),
        ("padding", sign_segments(&RSA, &b64(&header), &padded)),
        (
            "non-canonical trailing bits",
            sign_segments(&RSA, &b64(&header), &non_canonical(&canonical)),
        ),
        (
            "whitespace",
            sign_segments(
                &RSA,
                &b64(&header),
                &format!("{}\n{}", &canonical[..10], &canonical[10..]),
            ),
        ),
        (
            "percent-encoding",
            sign_segments(&RSA, &b64(&header), &canonical.replacen('-', "%2D", 1)),
        ),
    ];
    // The canonical form of the same claims verifies.
    google_verifier()
        .verify(&sign_segments(&RSA, &b64(&header), &canonical), NOW)
        .await
        .unwrap();
    for (what, token) in cases {
        assert_eq!(
            google_verifier().verify(&token, NOW).await.unwrap_err(),
            Error::Malformed(Malformed::Base64),
            "{what}"
        );
    }
    // In the header and the signature too.
    let h = b64(header_json(&RSA));
    let token = sign_segments(&RSA, &non_canonical(&h), &b64(claims_json()));
    assert_eq!(err(&token).await, Error::Malformed(Malformed::Base64));
    let good = sign(&RSA, &google_claims());
    let (input, sig) = good.rsplit_once('.').unwrap();
    let sig_bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    for bad_sig in [
        STANDARD.encode(&sig_bytes),
        format!("{sig}="),
        non_canonical(sig),
    ] {
        if bad_sig != sig {
            assert_eq!(
                err(&format!("{input}.{bad_sig}")).await,
                Error::Malformed(Malformed::Base64),
                "{bad_sig}"
            );
        }
    }
}

#[tokio::test]
async fn header_and_claims_must_be_utf8() {
    let mut claims = claims_json().into_bytes();
    // Put a lone 0xff inside the `sub` string.
    let at = claims.windows(3).position(|w| w == b"110").unwrap();
    claims[at] = 0xff;
    let token = sign_segments(&RSA, &b64(header_json(&RSA)), &b64(&claims));
    assert_eq!(err(&token).await, Error::Malformed(Malformed::Utf8));

    let header = b"{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"typ\":\"J\xc3\x28T\"}";
    let token = sign_segments(&RSA, &b64(header), &b64(claims_json()));
    assert_eq!(err(&token).await, Error::Malformed(Malformed::Utf8));
}

#[tokio::test]
async fn header_and_claims_must_be_json_objects() {
    for claims in ["[1,2]", "\"x\"", "null", "{", "{} {}", "{\"a\":1,}"] {
        let token = sign_raw(&RSA, &header_json(&RSA), claims);
        assert_eq!(refusal(&google_verifier(), &token, NOW).await, "malformed");
    }
    let token = sign_raw(&RSA, "[\"RS256\"]", &claims_json());
    assert_eq!(err(&token).await, Error::Malformed(Malformed::HeaderShape));
}

// ---- duplicate members -------------------------------------------------------------------

#[tokio::test]
async fn duplicate_members_are_refused_in_header_and_claims_at_any_depth() {
    let c = claims_json();
    let body = &c[1..c.len() - 1];
    let cases = [
        (
            r#"{"alg":"RS256","kid":"rsa-2","kid":"rsa-1","typ":"JWT"}"#.to_owned(),
            c.clone(),
        ),
        (
            r#"{"alg":"none","alg":"RS256","kid":"rsa-1"}"#.to_owned(),
            c.clone(),
        ),
        (
            header_json(&RSA),
            format!(r#"{{"aud":"someone-else",{body}}}"#),
        ),
        (header_json(&RSA), format!(r#"{{"exp":1,{body}}}"#)),
        // Escapes do not make a different name.
        (
            header_json(&RSA),
            format!(r#"{{"\u0061ud":"someone-else",{body}}}"#),
        ),
        (
            header_json(&RSA),
            format!(r#"{{"nested":{{"a":1,"b":{{"c":1,"c":2}}}},{body}}}"#),
        ),
        (
            header_json(&RSA),
            format!(r#"{{"list":[1,{{"c":1,"c":1}}],{body}}}"#),
        ),
        (
            r#"{"alg":"RS256","kid":"rsa-1","x":{"y":1,"y":2}}"#.to_owned(),
            c.clone(),
        ),
    ];
    for (header, claims) in cases {
        let token = sign_raw(&RSA, &header, &claims);
        assert_eq!(
            err(&token).await,
            Error::Malformed(Malformed::DuplicateKey),
            "{header} {claims:.80}"
        );
    }
    // Same names in different objects are fine.
    let token = sign_raw(
        &RSA,
        &header_json(&RSA),
        &format!(r#"{{"a":{{"sub":1}},"b":{{"sub":2}},{body}}}"#),
    );
    google_verifier().verify(&token, NOW).await.unwrap();
}

// ---- algorithms -------------------------------------------------------------------------

#[tokio::test]
async fn alg_none_is_refused() {
    let header = b64(r#"{"alg":"none","kid":"rsa-1","typ":"JWT"}"#);
    let payload = b64(claims_json());
    assert_eq!(
        err(&format!("{header}.{payload}.")).await,
        Error::Malformed(Malformed::Segments)
    );
    assert_eq!(
        err(&format!("{header}.{payload}.{}", b64("x")))
            .await
            .code(),
        "bad_algorithm"
    );
    for alg in ["None", "NONE", "nOnE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","kid":"rsa-1"}}"#));
        assert_eq!(
            err(&format!("{header}.{payload}.{}", b64("x")))
                .await
                .code(),
            "bad_algorithm"
        );
    }
}

fn hmac_token(alg: &str, secret: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let algorithm = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        _ => hmac::HMAC_SHA512,
    };
    let input = format!(
        "{}.{}",
        b64(format!(r#"{{"alg":"{alg}","kid":"rsa-1","typ":"JWT"}}"#)),
        b64(claims_json())
    );
    let tag = hmac::sign(&hmac::Key::new(algorithm, secret), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

#[tokio::test]
async fn hmac_is_refused_even_keyed_with_the_issuers_public_key() {
    // The classic confusion: HS256 keyed with the bytes of the RSA public key.
    let spki = RSA.public_spki_der().unwrap();
    let jwk = RSA.public_jwk().unwrap().to_string();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&spki)
    );
    for secret in [spki.as_slice(), jwk.as_bytes(), pem.as_bytes()] {
        for alg in ["HS256", "HS384", "HS512"] {
            assert_eq!(
                err(&hmac_token(alg, secret)).await,
                Error::BadAlgorithm { alg: alg.into() }
            );
        }
    }
}

/// A profile that allows both algorithms, so only the key's type decides.
fn both_algorithms() -> gatehouse_verify::Verifier {
    verifier(
        IssuerProfile::literal(
            GOOGLE_ISS,
            KeySource::Static(Arc::new(keyset(&[&RSA, &EC]))),
        )
        .with_audiences([AUD]),
    )
}

#[tokio::test]
async fn the_key_type_fixes_the_algorithm() {
    let v = both_algorithms();
    // Each key verifies its own algorithm...
    v.verify(&sign(&RSA, &google_claims()), NOW).await.unwrap();
    v.verify(&sign(&EC, &google_claims()), NOW).await.unwrap();
    // ...and never the other, whatever the header says.
    let rs_header_ec_kid = sign_raw(
        &RSA,
        r#"{"alg":"RS256","kid":"ec-1","typ":"JWT"}"#,
        &claims_json(),
    );
    assert_eq!(
        v.verify(&rs_header_ec_kid, NOW).await.unwrap_err(),
        Error::BadAlgorithm {
            alg: "RS256".into()
        }
    );
    let es_header_rsa_kid = sign_raw(
        &EC,
        r#"{"alg":"ES256","kid":"rsa-1","typ":"JWT"}"#,
        &claims_json(),
    );
    assert_eq!(
        v.verify(&es_header_rsa_kid, NOW).await.unwrap_err(),
        Error::BadAlgorithm {
            alg: "ES256".into()
        }
    );
}

#[tokio::test]
async fn an_algorithm_outside_the_profile_is_refused() {
    // `google` allows RS256 only, even with a P-256 key in its set.
    let v = verifier(google_profile(&[&RSA, &EC]));
    assert_eq!(
        v.verify(&sign(&EC, &google_claims()), NOW)
            .await
            .unwrap_err(),
        Error::BadAlgorithm {
            alg: "ES256".into()
        }
    );
    // `iap` allows ES256 only, even with an RSA key in its set.
    let iap = verifier(
        IssuerProfile::iap()
            .with_audiences([AUD])
            .with_static_keys(keyset(&[&RSA, &EC])),
    );
    let claims = claims_with(|c| {
        c.insert("iss".into(), json!("https://cloud.google.com/iap"));
        c.insert("exp".into(), json!(NOW + 500));
    });
    iap.verify(&sign(&EC, &claims), NOW).await.unwrap();
    assert_eq!(
        iap.verify(&sign(&RSA, &claims), NOW).await.unwrap_err(),
        Error::BadAlgorithm {
            alg: "RS256".into()
        }
    );
    // Algorithms we do not implement at all.
    for alg in [
        "RS384", "RS512", "PS256", "ES384", "ES512", "EdDSA", "rs256", "",
    ] {
        let token = sign_raw(
            &RSA,
            &format!(r#"{{"alg":"{alg}","kid":"rsa-1"}}"#),
            &claims_json(),
        );
        assert_eq!(err(&token).await.code(), "bad_algorithm", "{alg}");
    }
    let token = sign_raw(&RSA, r#"{"kid":"rsa-1"}"#, &claims_json());
    assert_eq!(err(&token).await, Error::Malformed(Malformed::HeaderShape));
}

// ---- headers that carry keys ----------------------------------------------------------

fn attacker_header(extra: serde_json::Value, kid: &str) -> String {
    let mut header = json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
    for (k, v) in extra.as_object().unwrap() {
        header[k] = v.clone();
    }
    header.to_string()
}

fn attacker_cert_der() -> Vec<u8> {
    let der = ATTACKER.to_pkcs8_der().unwrap();
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &der.as_slice().into(),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    rcgen::CertificateParams::new(vec!["attacker.example".into()])
        .unwrap()
        .self_signed(&pair)
        .unwrap()
        .der()
        .to_vec()
}

#[tokio::test]
async fn jwk_jku_x5u_x5c_headers_are_never_used() {
    let server = KeyServer::start(jwks_document(&[&ATTACKER])).await;
    let evil_url = format!("{}/evil-keys", server.base);
    let mut attacker_jwk = ATTACKER.public_jwk().unwrap();
    let x5c = vec![STANDARD.encode(attacker_cert_der())];
    let headers = [
        json!({"jwk": attacker_jwk.clone()}),
        json!({"jku": evil_url}),
        json!({"x5u": evil_url}),
        json!({"x5c": x5c}),
        json!({"jwk": attacker_jwk.clone(), "jku": evil_url, "x5u": evil_url, "x5c": x5c}),
    ];
    let v = google_verifier();
    for extra in &headers {
        // The attacker's key under the issuer's kid: the issuer's key decides.
        let token = sign_raw(
            &ATTACKER,
            &attacker_header(extra.clone(), "rsa-1"),
            &claims_json(),
        );
        assert_eq!(
            v.verify(&token, NOW).await.unwrap_err(),
            Error::BadSignature,
            "{extra}"
        );
        // The attacker's key under its own kid: not a key of the issuer.
        let token = sign_raw(
            &ATTACKER,
            &attacker_header(extra.clone(), "evil"),
            &claims_json(),
        );
        assert_eq!(
            v.verify(&token, NOW).await.unwrap_err().code(),
            "unknown_kid"
        );
    }
    attacker_jwk["kid"] = json!("evil");
    let token = sign_raw(
        &ATTACKER,
        &attacker_header(json!({"jwk": attacker_jwk}), "evil"),
        &claims_json(),
    );
    assert_eq!(
        v.verify(&token, NOW).await.unwrap_err().code(),
        "unknown_kid"
    );
    // Nothing was fetched from the URLs the headers named.
    assert_eq!(server.other_requests(), 0);
    assert_eq!(server.jwks_fetches(), 0);
    // The same headers on a token the issuer did sign change nothing.
    let token = sign_raw(
        &RSA,
        &attacker_header(headers[4].clone(), "rsa-1"),
        &claims_json(),
    );
    v.verify(&token, NOW).await.unwrap();
}

#[tokio::test]
async fn crit_is_refused() {
    for crit in [
        json!(["exp"]),
        json!(["b64"]),
        json!([]),
        json!("kid"),
        json!(null),
    ] {
        let header = json!({"alg": "RS256", "kid": "rsa-1", "crit": crit, "exp": 1, "b64": false});
        let token = sign_raw(&RSA, &header.to_string(), &claims_json());
        assert_eq!(err(&token).await, Error::CriticalHeader, "{crit}");
        assert_eq!(Error::CriticalHeader.code(), "unsupported_crit");
    }
}

// ---- kid, signature, typ -----------------------------------------------------------------

#[tokio::test]
async fn kid_is_required_and_must_be_known() {
    let token = sign_raw(&RSA, r#"{"alg":"RS256","typ":"JWT"}"#, &claims_json());
    assert_eq!(err(&token).await, Error::MissingKid);
    assert_eq!(Error::MissingKid.code(), "missing_kid");

    let token = sign_raw(&RSA, r#"{"alg":"RS256","kid":"nope"}"#, &claims_json());
    assert_eq!(err(&token).await, Error::UnknownKid { kid: "nope".into() });
    // A kid that differs only in case is another kid.
    let token = sign_raw(&RSA, r#"{"alg":"RS256","kid":"RSA-1"}"#, &claims_json());
    assert_eq!(err(&token).await.code(), "unknown_kid");
    for kid in ["1", "null", "[\"rsa-1\"]", "{}"] {
        let token = sign_raw(
            &RSA,
            &format!(r#"{{"alg":"RS256","kid":{kid}}}"#),
            &claims_json(),
        );
        assert_eq!(err(&token).await, Error::Malformed(Malformed::HeaderShape));
    }
    // A long unknown kid is not echoed whole into the error.
    let long = "k".repeat(5000);
    let token = sign_raw(
        &RSA,
        &format!(r#"{{"alg":"RS256","kid":"{long}"}}"#),
        &claims_json(),
    );
    let e = err(&token).await;
    assert_eq!(e.code(), "unknown_kid");
    assert!(e.to_string().len() < 200);
}

#[tokio::test]
async fn signatures_must_verify_with_the_issuers_key() {
    let v = google_verifier();
    let token = sign(&RSA, &google_claims());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig_bytes[100] ^= 0x01;
    assert_eq!(
        v.verify(&format!("{input}.{}", b64(&sig_bytes)), NOW)
            .await
            .unwrap_err(),
        Error::BadSignature
    );
    // Signed by someone else under the issuer's kid.
    assert_eq!(
        v.verify(&sign(&ATTACKER, &google_claims()), NOW)
            .await
            .unwrap_err(),
        Error::BadSignature
    );
    // Claims changed after signing.
    let other = sign(
        &RSA,
        &claims_with(|c| {
            c.insert("email".into(), json!("mallory@example.com"));
        }),
    );
    let (h, p, _) = {
        let mut it = other.split('.');
        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
    };
    assert_eq!(
        v.verify(&format!("{h}.{p}.{sig}"), NOW).await.unwrap_err(),
        Error::BadSignature
    );
    // A signature of the wrong length never reaches the crypto.
    sig_bytes.pop();
    assert_eq!(
        v.verify(&format!("{input}.{}", b64(&sig_bytes)), NOW)
            .await
            .unwrap_err(),
        Error::Malformed(Malformed::SignatureLength)
    );
    // ES256 too.
    let token = sign(&EC, &google_claims());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig_bytes[5] ^= 0x80;
    assert_eq!(
        both_algorithms()
            .verify(&format!("{input}.{}", b64(&sig_bytes)), NOW)
            .await
            .unwrap_err(),
        Error::BadSignature
    );
}

#[tokio::test]
async fn typ_other_than_jwt_is_refused() {
    let v = google_verifier();
    for ok in [
        r#"{"alg":"RS256","kid":"rsa-1","typ":"JWT"}"#,
        r#"{"alg":"RS256","kid":"rsa-1","typ":"jwt"}"#,
        r#"{"alg":"RS256","kid":"rsa-1"}"#,
    ] {
        v.verify(&sign_raw(&RSA, ok, &claims_json()), NOW)
            .await
            .unwrap();
    }
    for typ in [
        "\"at+jwt\"",
        "\"at+JWT\"",
        "\"logout+jwt\"",
        "\"JOSE\"",
        "\"\"",
        "1",
        "null",
    ] {
        let header = format!(r#"{{"alg":"RS256","kid":"rsa-1","typ":{typ}}}"#);
        assert_eq!(
            v.verify(&sign_raw(&RSA, &header, &claims_json()), NOW)
                .await
                .unwrap_err(),
            Error::Malformed(Malformed::HeaderShape),
            "{typ}"
        );
    }
}

// ---- SIGNATURE_REMOVED_BY_GOOGLE ------------------------------------------------------------

fn front_door_token(claims: &str) -> String {
    format!(
        "{}.{}.{SIGNATURE_REMOVED}",
        b64(header_json(&RSA)),
        b64(claims)
    )
}

#[tokio::test]
async fn removed_signatures_are_refused_by_verify() {
    let token = front_door_token(&claims_json());
    assert_eq!(err(&token).await, Error::SignatureRemoved);
    assert_eq!(Error::SignatureRemoved.code(), "signature_removed");
}

#[test]
fn removed_signatures_are_read_only_by_the_trusted_front_door_api() {
    let claims = unverified::trusted_front_door_claims(&front_door_token(&claims_json())).unwrap();
    assert_eq!(claims.subject(), Some("110169484474386276334"));
    assert_eq!(claims.issuer(), GOOGLE_ISS);
    assert_eq!(claims.expires_at(), NOW + 3590);

    // A signed token (or anything else in the signature's place) is not read here.
    let signed = sign(&RSA, &google_claims());
    assert_eq!(
        unverified::trusted_front_door_claims(&signed).unwrap_err(),
        Error::BadSignature
    );
    let input = signed.rsplit_once('.').unwrap().0;
    for tail in [
        "SIGNATURE_REMOVED_BY_GOOGLEX",
        "signature_removed_by_google",
        "U0lHTkFUVVJFX1JFTU9WRURfQllfR09PR0xF",
        "x",
    ] {
        assert_eq!(
            unverified::trusted_front_door_claims(&format!("{input}.{tail}")).unwrap_err(),
            Error::BadSignature,
            "{tail}"
        );
    }
    // It is still strict about everything else.
    for bad in [
        format!("{input}.{SIGNATURE_REMOVED}.x"),
        input.to_owned(),
        front_door_token(r#"{"iss":"a","iss":"b","aud":"x","exp":1}"#),
        front_door_token(r#"{"iss":"a","aud":"x","exp":"1"}"#),
        format!(
            "{}.{}.{SIGNATURE_REMOVED}",
            b64(r#"{"alg":"none"}"#),
            b64(claims_json())
        ),
    ] {
        assert!(
            unverified::trusted_front_door_claims(&bad).is_err(),
            "{bad:.80}"
        );
    }
}
