#![allow(clippy::unwrap_used, clippy::expect_used)]

//! `gatehouse decode` and `gatehouse verify` as a user runs them: the real binary against a
//! real key server.

// The testkit's log helper, compiled in (this crate does not depend on the testkit).
#[path = "../../testkit/src/logs.rs"]
#[allow(dead_code)]
mod logs;

use gatehouse_verify::SigningKey;
use serde_json::json;
use std::process::Command;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn serve_keys(key: &SigningKey) -> String {
    let doc = json!({"keys": [key.public_jwk().unwrap()]}).to_string();
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { ([("content-type", "application/json")], doc) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/certs")
}

fn token(key: &SigningKey, aud: &str, exp: u64) -> String {
    key.sign_jwt(&json!({
        "iss": "https://accounts.google.com", "aud": aud, "sub": "1234567890",
        "email": "alice@example.com", "email_verified": true,
        "iat": exp - 3600, "exp": exp,
    }))
    .unwrap()
}

fn gatehouse(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .output()
        .unwrap();
    // Stdout is the command's answer (claims, by design); stderr is its log, kept for the
    // secrets check of every log.
    let (_, mut log) = logs::log_file("gatehouse-cli");
    std::io::Write::write_all(&mut log, &out.stderr).unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_accepts_a_good_token_and_names_the_reason_for_a_bad_one() {
    let key = SigningKey::generate_rs256("k1").unwrap();
    let jwks = serve_keys(&key).await;
    let good = token(&key, "https://svc.example", now() + 3600);

    let (code, stdout, _) = tokio::task::spawn_blocking({
        let (good, jwks) = (good.clone(), jwks.clone());
        move || {
            gatehouse(&[
                "verify",
                &good,
                "--jwks",
                &jwks,
                "--audience",
                "https://svc.example",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["claims"]["email"], "alice@example.com");
    assert_eq!(out["profile"], "google");

    let cases = [
        (good.clone(), "https://other.example", "wrong_audience"),
        (
            token(&key, "https://svc.example", now() - 120),
            "https://svc.example",
            "expired",
        ),
        // Same kid, another key: what a forger without the private key produces.
        (
            token(
                &SigningKey::generate_rs256("k1").unwrap(),
                "https://svc.example",
                now() + 3600,
            ),
            "https://svc.example",
            "bad_signature",
        ),
        ("not-a-token".to_owned(), "https://svc.example", "malformed"),
    ];
    for (tok, aud, reason) in cases {
        let jwks = jwks.clone();
        let (code, stdout, _) = tokio::task::spawn_blocking(move || {
            gatehouse(&["verify", &tok, "--jwks", &jwks, "--audience", aud])
        })
        .await
        .unwrap();
        assert_eq!(code, 1, "{reason}");
        assert_eq!(stdout.trim(), reason);
    }
}

#[test]
fn decode_prints_header_claims_and_expiry_in_words() {
    let key = SigningKey::generate_rs256("kid-7").unwrap();
    let tok = token(&key, "aud", now() + 1800);
    let (code, stdout, stderr) = gatehouse(&["decode", &tok]);
    assert_eq!(code, 0);
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["header"]["kid"], "kid-7");
    assert_eq!(out["claims"]["aud"], "aud");
    assert!(
        out["expiry"]
            .as_str()
            .unwrap()
            .starts_with("expires in 29 minutes")
            || out["expiry"]
                .as_str()
                .unwrap()
                .starts_with("expires in 30 minutes")
    );
    assert!(stderr.contains("not checked"));

    let (code, stdout, _) = gatehouse(&["decode", "a.b"]);
    assert_eq!(code, 1);
    assert_eq!(stdout.trim(), "malformed");
}

#[tokio::test(flavor = "multi_thread")]
async fn decode_and_verify_print_a_hostile_token_inertly() {
    let key = SigningKey::generate_rs256("k1").unwrap();
    let jwks = serve_keys(&key).await;
    // A right-to-left override makes the email read as another; C1 CSI and OSC sequences
    // would drive the terminal.
    let claims = json!({
        "iss": "https://accounts.google.com", "aud": "https://svc.example", "sub": "1",
        "email": "admin\u{202e}moc.elgoog@evil.example", "email_verified": true,
        "name": "\u{9b}2J\u{1b}]0;owned\u{7}\u{2066}x\u{7f}",
        "iat": now() - 10, "exp": now() + 600,
    });
    let tok = key.sign_jwt(&claims).unwrap();
    let raw = &[
        '\u{202e}', '\u{9b}', '\u{1b}', '\u{7}', '\u{2066}', '\u{7f}',
    ][..];

    let (code, stdout, _) = tokio::task::spawn_blocking({
        let tok = tok.clone();
        move || gatehouse(&["decode", &tok])
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert!(!stdout.contains(raw), "{stdout:?}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        out["claims"]["email"], claims["email"],
        "the same claims, escaped"
    );
    assert_eq!(out["claims"]["name"], claims["name"]);

    let (code, stdout, _) = tokio::task::spawn_blocking(move || {
        gatehouse(&[
            "verify",
            &tok,
            "--jwks",
            &jwks,
            "--audience",
            "https://svc.example",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains(raw), "{stdout:?}");
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["claims"]["email"], claims["email"]);
}
