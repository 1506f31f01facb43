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
    a_store.close().await;
    b_store.close().await;
}
