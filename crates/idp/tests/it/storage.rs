//! Persistence: a restart keeps keys and users; two emulators on one PostgreSQL agree.

use crate::*;
use gatehouse_verify::FixedClock;
use serde_json::json;

#[tokio::test]
async fn sqlite_restart_keeps_keys_and_users() {
    let dir = std::env::temp_dir().join(format!("gh-idp-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open_data_dir(&dir, "idp.db").await.unwrap();
    let h = harness_on(config(), store.clone(), FixedClock::at(T0)).await;
    let certs = h.get("/oauth2/v3/certs").await.json();
    let r = h
        .post_json(
            "/emulator/v1/accounts",
            &json!({"email": "carol@example.com"}),
        )
        .await;
    assert_eq!(r.status, 200);
    store.close().await;
    drop(h);
    let store = Store::open_data_dir(&dir, "idp.db").await.unwrap();
    let h = harness_on(config(), store.clone(), FixedClock::at(T0 + 10)).await;
    assert_eq!(h.get("/oauth2/v3/certs").await.json(), certs);
    let accounts = h.get("/emulator/v1/accounts").await.json();
    let emails: Vec<&str> = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        ["alice@example.com", "bob@example.com", "carol@example.com"]
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn two_emulators_on_one_postgres_agree() {
    let Some(db) = gatehouse_testkit::postgres("idp_replicas").await else {
        return;
    };
    let a_store = Store::open_url(&db.url).await.unwrap();
    let b_store = Store::open_url(&db.url).await.unwrap();
    // Start both at once: migrations and first keys race.
    let (a, b) = tokio::join!(
        harness_on(config(), a_store.clone(), FixedClock::at(T0)),
        harness_on(config(), b_store.clone(), FixedClock::at(T0)),
    );
    a.state.maintain().await.unwrap();
    b.state.maintain().await.unwrap();
    assert_eq!(
        a.get("/oauth2/v3/certs").await.json(),
        b.get("/oauth2/v3/certs").await.json()
    );
    // A key issued by one is honoured by the other; its tokens verify with either's keys.
    let f = crate::token::key_file(&a, crate::token::SA).await;
    let now = b.now();
    let r = b
        .post_form(
            "/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                (
                    "assertion",
                    &crate::token::assertion(&f, now, json!({"target_audience": "aud"})),
                ),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["id_token"].as_str().unwrap().to_owned();
    a.google_verifier(&["aud"])
        .await
        .verify(&token, now)
        .await
        .unwrap();
    // Firebase users are shared.
    let r = a
        .post_json(
            "/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k",
            &json!({"email": "pg@example.com", "password": "secret123", "returnSecureToken": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = b
        .post_json(
            "/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=k",
            &json!({"email": "pg@example.com", "password": "secret123", "returnSecureToken": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // NULL and non-NULL values in the same positions, alternately, on both replicas.
    for (i, h) in [&a, &b, &a, &b].into_iter().enumerate() {
        let body = if i % 2 == 0 {
            json!({"email": format!("shape{i}@corp.example"), "name": "Two Names", "hd": "corp.example"})
        } else {
            json!({"email": format!("shape{i}@example.com")})
        };
        let r = h.post_json("/emulator/v1/accounts", &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = h
            .post_json(
                "/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k",
                &if i % 2 == 0 {
                    json!({})
                } else {
                    json!({"email": format!("fb{i}@example.com"), "password": "secret123"})
                },
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = h
            .post_json(
                "/identitytoolkit.googleapis.com/v1/accounts:update?key=k",
                &json!({"idToken": r.json()["idToken"], "displayName": "X", "deleteAttribute": ["PHOTO_URL"]}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // A code issued by one replica is redeemed once, at the other.
    let cb = "http://127.0.0.1:5555/cb";
    let q = serde_urlencoded::to_string([
        ("client_id", crate::signin::CLIENT),
        ("redirect_uri", cb),
        ("response_type", "code"),
        ("scope", "openid email"),
        ("prompt", "none"),
        ("login_hint", "shape0@corp.example"),
    ])
    .unwrap();
    let r = a.get(&format!("/o/oauth2/v2/auth?{q}")).await;
    let loc = r.header("location").unwrap().to_owned();
    let code: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str(loc.split_once('?').unwrap().1).unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code["code"].as_str()),
        ("redirect_uri", cb),
        ("client_id", crate::signin::CLIENT),
    ];
    let r = b.post_form("/token", &form).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        claims(r.json()["id_token"].as_str().unwrap())["hd"],
        "corp.example"
    );
    assert_eq!(
        a.post_form("/token", &form).await.json()["error"],
        "invalid_grant"
    );
    a_store.close().await;
    b_store.close().await;
}

/// Stored as the emulator stores bearer secrets: base64url(SHA-256).
fn secret_hash(secret: &str) -> String {
    use base64::Engine as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A database written before grants were recorded (schema version 2) keeps its tokens
/// working after the upgrade, and they join grants: a refresh token from before migration 2
/// (no code recorded) is a grant of its own; one from after it keeps its code's grant.
async fn tokens_from_before_grants_keep_working(store: Store) {
    use gatehouse_idp::db;
    store
        .migrate(db::COMPONENT, &db::MIGRATIONS[..2])
        .await
        .unwrap();
    let now = T0 as i64;
    let client = crate::signin::CLIENT;
    let refresh_insert = "INSERT INTO idp_refresh_tokens (token_hash, kind, audience, subject, scope, auth_time, created_at, code_hash)
         VALUES ($1, 'google', $2, 'to-be-set', 'openid email', $3, $3, $4)";
    let legacy = "1//legacy-refresh-token";
    let coded = "1//coded-refresh-token";
    let code_access = "ya29.coded-access-token";
    for (token, code) in [(legacy, None), (coded, Some("code-hash"))] {
        store
            .execute(
                refresh_insert,
                &[
                    secret_hash(token).into(),
                    client.into(),
                    now.into(),
                    code.into(),
                ],
            )
            .await
            .unwrap();
    }
    store
        .execute(
            "INSERT INTO idp_access_tokens (token_hash, subject_kind, subject, client_id, scope, expires_at, code_hash)
             VALUES ($1, 'user', 'to-be-set', $2, 'openid email', $3, 'code-hash')",
            &[
                secret_hash(code_access).into(),
                client.into(),
                (now + 3600).into(),
            ],
        )
        .await
        .unwrap();
    let h = harness_on(config(), store.clone(), FixedClock::at(T0)).await;
    // Alice exists once the emulator has started; the rows are hers.
    for table in ["idp_refresh_tokens", "idp_access_tokens"] {
        store
            .execute(
                &format!(
                    "UPDATE {table} SET subject = (SELECT sub FROM idp_accounts WHERE email = 'alice@example.com') WHERE subject = 'to-be-set'"
                ),
                &[],
            )
            .await
            .unwrap();
    }
    let refresh = |token| crate::signin::refresh_with(&h, token);
    let r = refresh(legacy).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        h.post_form("/revoke", &[("token", &access)]).await.status,
        200
    );
    assert_eq!(refresh(legacy).await.json()["error"], "invalid_grant");
    // The token minted under schema 2 still names its code's grant.
    assert_eq!(refresh(coded).await.status, 200);
    assert_eq!(
        h.post_form("/revoke", &[("token", code_access)])
            .await
            .status,
        200
    );
    assert_eq!(refresh(coded).await.json()["error"], "invalid_grant");
    store.close().await;
}

#[tokio::test]
async fn tokens_from_before_grants_keep_working_sqlite() {
    tokens_from_before_grants_keep_working(Store::open_sqlite_memory().await.unwrap()).await;
}

#[tokio::test]
async fn tokens_from_before_grants_keep_working_postgres() {
    let Some(db) = gatehouse_testkit::postgres("idp_grant_migration").await else {
        return;
    };
    tokens_from_before_grants_keep_working(Store::open_url(&db.url).await.unwrap()).await;
}
