//! The attack catalogue: each forged or broken token is refused with 401 (never 5xx,
//! never a crash) and the gateway keeps serving.

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_verify::SigningKey;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn b64_raw(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s.as_bytes())
}

fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fn pem(der: &[u8], label: &str, eol: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----{eol}");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push_str(eol);
    }
    out.push_str(&format!("-----END {label}-----{eol}"));
    out
}

/// A server standing in for an attacker's key host; counts fetches (there must be none).
async fn attacker_host(key: &SigningKey) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let jwks = json!({"keys": [key.public_jwk().unwrap()]});
    let addr = serve(axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let jwks = jwks.clone();
        async move { axum::Json(jwks) }
    }))
    .await;
    (format!("http://{addr}/certs"), hits)
}

#[tokio::test]
async fn attack_catalogue_is_refused_with_401_and_the_gateway_keeps_serving() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "[limits]\nmax_header_bytes = 524288\n{}",
        checked_route(&issuer, up, &["allAuthenticatedUsers"])
    ))
    .await;
    let c = client();
    let claims = issuer.claims("admin@example.com", json!({}));
    let valid = issuer.token("alice@example.com");
    let (v_head, v_rest) = valid.split_once('.').unwrap();
    let (v_payload, v_sig) = v_rest.split_once('.').unwrap();
    let attacker = SigningKey::generate_rs256("k1").unwrap();
    let (attacker_url, attacker_hits) = attacker_host(&attacker).await;
    let spki = issuer.key.public_spki_der().unwrap();
    let jwk_text = issuer.key.public_jwk().unwrap().to_string();

    let mut cases: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, token: String| cases.push((name.to_owned(), token));

    // alg none, in any case, with and without a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "kid": "k1", "typ": "JWT"});
        add(
            &format!("alg {alg}"),
            format!("{}.{}.", b64(&h), b64(&claims)),
        );
        add(
            &format!("alg {alg} + sig"),
            format!("{}.{}.{v_sig}", b64(&h), b64(&claims)),
        );
    }
    // HS256 keyed with the RSA public key in every shape an attacker might guess.
    let hs_header = json!({"alg": "HS256", "kid": "k1", "typ": "JWT"});
    for (name, secret) in [
        ("spki der", spki.clone()),
        ("pem lf", pem(&spki, "PUBLIC KEY", "\n").into_bytes()),
        ("pem crlf", pem(&spki, "PUBLIC KEY", "\r\n").into_bytes()),
        (
            "pem no final newline",
            pem(&spki, "PUBLIC KEY", "\n")
                .trim_end()
                .as_bytes()
                .to_vec(),
        ),
        (
            "pem rsa label",
            pem(&spki, "RSA PUBLIC KEY", "\n").into_bytes(),
        ),
        ("jwk json", jwk_text.clone().into_bytes()),
    ] {
        add(
            &format!("HS256 with {name}"),
            hs256(&secret, &hs_header, &claims),
        );
    }
    // Payload swapped under a valid signature.
    add(
        "payload swapped",
        format!("{v_head}.{}.{v_sig}", b64(&claims)),
    );
    // Signature stripped or replaced as a front door would.
    add("signature stripped", format!("{v_head}.{v_payload}."));
    add("two segments", format!("{v_head}.{v_payload}"));
    add(
        "SIGNATURE_REMOVED_BY_GOOGLE",
        format!("{v_head}.{v_payload}.SIGNATURE_REMOVED_BY_GOOGLE"),
    );
    // Unknown kid (a key the issuer never published).
    let stranger = SigningKey::generate_rs256("k-unknown").unwrap();
    add("unknown kid", stranger.sign_jwt(&claims).unwrap());
    // Key injection through the header: the attacker's own key and URLs.
    for (name, extra) in [
        ("jwk", json!({"jwk": attacker.public_jwk().unwrap()})),
        ("jku", json!({"jku": attacker_url})),
        ("x5u", json!({"x5u": attacker_url})),
    ] {
        let mut h = json!({"alg": "RS256", "kid": "k1", "typ": "JWT"});
        h.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        add(
            &format!("{name} injection"),
            attacker.sign_jwt_with_header(&h, &claims).unwrap(),
        );
    }
    // kid path traversal and oddities.
    for kid in [
        "../../../../etc/passwd",
        "/dev/null",
        "k1/../k1",
        "k1\u{0000}",
        "",
    ] {
        let h = json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
        add(
            &format!("kid {kid:?}"),
            attacker.sign_jwt_with_header(&h, &claims).unwrap(),
        );
    }
    // ES256 with r = s = 0 (psychic signature), against the issuer's real EC key.
    let es = json!({"alg": "ES256", "kid": "e1", "typ": "JWT"});
    add(
        "ES256 r=s=0",
        format!(
            "{}.{}.{}",
            b64(&es),
            b64(&claims),
            URL_SAFE_NO_PAD.encode([0u8; 64])
        ),
    );
    // A key of one type named as the other: the EC key's signature under the RSA kid.
    let confused = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
    add(
        "ES256 under an RSA kid",
        issuer
            .ec_key
            .sign_jwt_with_header(&confused, &claims)
            .unwrap(),
    );
    // Time claims.
    let now = now();
    add(
        "expired",
        issuer.token_with(
            "a@example.com",
            json!({"exp": now - 120, "iat": now - 3720}),
        ),
    );
    add(
        "nbf in the future",
        issuer.token_with("a@example.com", json!({"nbf": now + 3600})),
    );
    add(
        "iat in the future",
        issuer.token_with("a@example.com", json!({"iat": now + 3600})),
    );
    add(
        "string exp",
        issuer.token_with("a@example.com", json!({"exp": (now + 3600).to_string()})),
    );
    add(
        "no exp",
        issuer.token_with("a@example.com", json!({"exp": null})),
    );
    // Wrong and look-alike audiences and issuers.
    for aud in [
        json!("https://svc.example.evil"),
        json!("https://svc.example/"),
        json!("HTTPS://SVC.EXAMPLE"),
        json!(["https://other"]),
        json!(""),
    ] {
        add(
            &format!("aud {aud}"),
            issuer.token_with("a@example.com", json!({"aud": aud})),
        );
    }
    for iss in [
        "https://issuer.test.evil",
        "https://issuer.test/",
        "issuer.test",
        "http://issuer.test",
    ] {
        add(
            &format!("iss {iss}"),
            issuer.token_with("a@example.com", json!({"iss": iss})),
        );
    }
    // Structure.
    add("four segments", format!("{valid}.extra"));
    add("one segment", "abc".into());
    add(
        "bad base64 header",
        format!("{}!.{v_payload}.{v_sig}", &v_head[..v_head.len() - 1]),
    );
    add("padded base64", format!("{v_head}==.{v_payload}.{v_sig}"));
    let std_sig = v_sig.replace('-', "+").replace('_', "/");
    assert_ne!(std_sig, v_sig);
    add(
        "standard alphabet",
        format!("{v_head}.{v_payload}.{std_sig}"),
    );
    for payload in ["[]", "\"string\"", "1", "null", "{"] {
        let h = json!({"alg": "RS256", "kid": "k1", "typ": "JWT"});
        let input = format!("{}.{}", b64(&h), b64_raw(payload));
        let sig = issuer.key.sign(input.as_bytes()).unwrap();
        add(
            &format!("payload {payload}"),
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)),
        );
    }
    // An unknown critical header, validly signed.
    let crit = json!({"alg": "RS256", "kid": "k1", "typ": "JWT", "crit": ["exp"], "exp": 1});
    add(
        "unknown crit",
        issuer.key.sign_jwt_with_header(&crit, &claims).unwrap(),
    );
    // 200 KB of token.
    let big = issuer.token_with("a@example.com", json!({"pad": "x".repeat(200 * 1024)}));
    add("200 KB token", big);

    for (name, token) in &cases {
        let r = c.get(gw.url("/")).bearer_auth(token).send().await;
        let r = r.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.status(), 401, "{name} was not refused with 401");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token", "{name}");
    }
    assert_eq!(
        attacker_hits.load(Ordering::SeqCst),
        0,
        "an attacker URL was fetched"
    );

    // Still serving.
    let r = c.get(gw.url("/")).bearer_auth(&valid).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn oversized_headers_are_refused_without_harm_at_the_default_limit() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allAuthenticatedUsers"])).await;
    let big = "a".repeat(200 * 1024);
    let r = client().get(gw.url("/")).bearer_auth(&big).send().await;
    // hyper refuses the head (431) or closes the connection; either way nothing is served.
    if let Ok(r) = r {
        assert!(r.status() == 431 || r.status() == 400, "{}", r.status());
    }
    let r = client()
        .get(gw.url("/"))
        .bearer_auth(issuer.token("a@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn random_kid_storm_does_not_storm_the_key_server() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allAuthenticatedUsers"])).await;
    let c = client();
    // Load the keys once.
    let r = c
        .get(gw.url("/"))
        .bearer_auth(issuer.token("a@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let before = issuer.fetches.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let key = SigningKey::generate_es256(format!("random-{i}")).unwrap();
        let token = key
            .sign_jwt(&issuer.claims("a@example.com", json!({})))
            .unwrap();
        let c = c.clone();
        let url = gw.url("/");
        tasks.push(tokio::spawn(async move {
            c.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    let fetched = issuer.fetches.load(Ordering::SeqCst) - before;
    assert!(fetched <= 1, "{fetched} key fetches for 200 random kids");
    let r = c
        .get(gw.url("/"))
        .bearer_auth(issuer.token("a@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
