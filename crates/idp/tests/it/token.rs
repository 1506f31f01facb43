//! `/token`'s jwt-bearer grant, the IAM-shaped key API, and error shapes.

use crate::*;
use base64::Engine as _;
use gatehouse_verify::{Algorithm, SigningKey};
use serde_json::json;

pub const SA: &str = "runner@demo-project.iam.gserviceaccount.com";

/// Creates a key through the IAM-shaped API and returns the decoded key file.
pub async fn key_file(h: &Harness, email: &str) -> Value {
    let r = h
        .post_json(
            &format!("/v1/projects/-/serviceAccounts/{email}/keys"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert!(body["name"].as_str().unwrap().contains(email));
    assert_eq!(body["keyAlgorithm"], "KEY_ALG_RSA_2048");
    let data = base64::engine::general_purpose::STANDARD
        .decode(body["privateKeyData"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&data).unwrap()
}

/// An assertion as python google-auth builds it.
pub fn assertion(file: &Value, now: u64, extra: Value) -> String {
    let key = SigningKey::from_pkcs8_pem(
        file["private_key_id"].as_str().unwrap(),
        Algorithm::RS256,
        file["private_key"].as_str().unwrap(),
    )
    .unwrap();
    let mut claims = json!({
        "iat": now,
        "exp": now + 3600,
        "iss": file["client_email"],
        "aud": "https://oauth2.googleapis.com/token",
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    key.sign_jwt(&claims).unwrap()
}

async fn exchange(h: &Harness, assertion: &str) -> Reply {
    h.post_form(
        "/token",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ],
    )
    .await
}

#[tokio::test]
async fn key_file_is_google_format() {
    let h = harness().await;
    let f = key_file(&h, SA).await;
    assert_eq!(f["type"], "service_account");
    assert_eq!(f["project_id"], "demo-project");
    assert_eq!(f["client_email"], SA);
    assert_eq!(f["token_uri"], format!("{BASE}/token"));
    assert_eq!(f["private_key_id"].as_str().unwrap().len(), 40);
    assert!(
        f["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    assert!(
        f["client_id"]
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_digit())
    );
    for k in [
        "auth_uri",
        "auth_provider_x509_cert_url",
        "client_x509_cert_url",
        "universe_domain",
    ] {
        assert!(f[k].is_string(), "{k}");
    }
    // Bad email: a Google-shaped error, nothing written.
    let before = count(&h.state, "idp_sa_keys").await;
    let r = h
        .post_json(
            "/v1/projects/-/serviceAccounts/not-an-email/keys",
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(count(&h.state, "idp_sa_keys").await, before);
}

#[tokio::test]
async fn jwt_bearer_gives_id_and_access_tokens() {
    let h = harness().await;
    let f = key_file(&h, SA).await;
    let now = h.now();
    let r = exchange(
        &h,
        &assertion(&f, now, json!({"target_audience": "https://svc.example"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let token = r.json()["id_token"].as_str().unwrap().to_owned();
    let v = h.google_verifier(&["https://svc.example"]).await;
    let id = v.verify(&token, now).await.unwrap();
    assert_eq!(id.email(), Some(SA));
    assert!(id.is_service_account());
    assert_eq!(claims(&token)["sub"], f["client_id"]);
    // The emulator's own token URL is an accepted audience too.
    let r = exchange(
        &h,
        &assertion(&f, now, json!({"aud": format!("{BASE}/token"), "scope": "https://www.googleapis.com/auth/cloud-platform"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let at = r.json();
    assert_eq!(at["token_type"], "Bearer");
    let ui = h
        .send(
            Request::get("/v1/userinfo")
                .header(
                    "authorization",
                    format!("Bearer {}", at["access_token"].as_str().unwrap()),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ui.json()["email"], SA);
}

#[tokio::test]
async fn bad_assertions_are_refused_and_write_nothing() {
    let h = harness().await;
    let f = key_file(&h, SA).await;
    let now = h.now();
    let tokens_before = count(&h.state, "idp_access_tokens").await;
    let check = |r: Reply, error: &str| {
        assert_eq!(r.json()["error"], error, "{}", r.text());
        assert!(r.json()["error_description"].is_string());
    };
    // Wrong audience.
    check(
        exchange(
            &h,
            &assertion(
                &f,
                now,
                json!({"aud": "https://evil.example/token", "scope": "x"}),
            ),
        )
        .await,
        "invalid_grant",
    );
    // Lifetime over an hour.
    check(
        exchange(
            &h,
            &assertion(&f, now, json!({"exp": now + 3601, "scope": "x"})),
        )
        .await,
        "invalid_grant",
    );
    // Expired.
    check(
        exchange(&h, &assertion(&f, now - 7200, json!({"scope": "x"}))).await,
        "invalid_grant",
    );
    // iss of another account.
    check(
        exchange(
            &h,
            &assertion(
                &f,
                now,
                json!({"iss": "other@demo-project.iam.gserviceaccount.com", "scope": "x"}),
            ),
        )
        .await,
        "invalid_grant",
    );
    // A key the emulator never issued (same kid, another private key).
    let rogue = SigningKey::generate_rs256(f["private_key_id"].as_str().unwrap()).unwrap();
    let forged = rogue
        .sign_jwt(&json!({"iat": now, "exp": now + 3600, "iss": SA, "aud": "https://oauth2.googleapis.com/token", "scope": "x"}))
        .unwrap();
    check(exchange(&h, &forged).await, "invalid_grant");
    // An unknown kid.
    let unknown = SigningKey::generate_rs256("0".repeat(40)).unwrap();
    let t = unknown
        .sign_jwt(&json!({"iat": now, "exp": now + 3600, "iss": SA, "aud": "https://oauth2.googleapis.com/token", "scope": "x"}))
        .unwrap();
    check(exchange(&h, &t).await, "invalid_grant");
    // Neither scope nor target_audience.
    check(
        exchange(&h, &assertion(&f, now, json!({}))).await,
        "invalid_scope",
    );
    // Garbage.
    check(exchange(&h, "a.b.c").await, "invalid_grant");
    check(exchange(&h, &"x".repeat(20_000)).await, "invalid_request");
    // Missing assertion, unknown grant type, no grant type.
    check(
        h.post_form(
            "/token",
            &[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")],
        )
        .await,
        "invalid_request",
    );
    let r = h.post_form("/token", &[("grant_type", "password")]).await;
    assert_eq!(r.status, 400);
    check(r, "unsupported_grant_type");
    check(h.post_form("/token", &[]).await, "unsupported_grant_type");
    // Duplicate parameters.
    check(
        h.post_form("/token", &[("grant_type", "a"), ("grant_type", "b")])
            .await,
        "invalid_request",
    );
    assert_eq!(count(&h.state, "idp_access_tokens").await, tokens_before);
}

fn keys_uri(email: &str) -> String {
    format!("/v1/projects/-/serviceAccounts/{email}/keys")
}

async fn delete_key(h: &Harness, email: &str, key_id: &str, origin: Option<&str>) -> Reply {
    let mut request = Request::delete(format!("{}/{key_id}", keys_uri(email)));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    h.send(request.body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn a_deleted_keys_assertions_are_refused_and_free_its_place() {
    let h = harness().await;
    let mut files = Vec::new();
    for _ in 0..10 {
        files.push(key_file(&h, SA).await);
    }
    let r = h.post_json(&keys_uri(SA), &json!({})).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["status"], "RESOURCE_EXHAUSTED");
    let gone = &files[0];
    let key_id = gone["private_key_id"].as_str().unwrap();
    let now = h.now();
    let signed = assertion(gone, now, json!({"target_audience": "https://svc.example"}));
    assert_eq!(exchange(&h, &signed).await.status, 200);
    // Behind the same guard as creation: not for another site's page.
    let r = delete_key(&h, SA, key_id, Some("https://evil.example")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // A key is deleted only under its own account.
    let r = delete_key(
        &h,
        "other@demo-project.iam.gserviceaccount.com",
        key_id,
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND");
    let r = delete_key(&h, SA, key_id, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    let r = delete_key(&h, SA, key_id, None).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND");
    let r = exchange(&h, &signed).await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.text());
    // The account's other keys still sign, and there is room for one more.
    let other = assertion(
        &files[1],
        now,
        json!({"target_audience": "https://svc.example"}),
    );
    assert_eq!(exchange(&h, &other).await.status, 200);
    key_file(&h, SA).await;
    assert_eq!(h.post_json(&keys_uri(SA), &json!({})).await.status, 429);
}

/// Five creations at once for an account holding eight keys: two succeed, whatever the
/// interleaving (each task reads the count, then spends a while generating its key).
async fn concurrent_key_creation_stays_within_the_cap(h: Harness) {
    for _ in 0..8 {
        key_file(&h, SA).await;
    }
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let request = Request::post(keys_uri(SA))
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            tokio::spawn(send(h.app(), request))
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let r = task.await.unwrap();
        match r.status.as_u16() {
            200 => created += 1,
            429 => {}
            other => panic!("{other}: {}", r.text()),
        }
    }
    assert_eq!(created, 2);
    assert_eq!(count(&h.state, "idp_sa_keys").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 5)]
async fn concurrent_key_creation_stays_within_the_cap_sqlite() {
    concurrent_key_creation_stays_within_the_cap(harness().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 5)]
async fn concurrent_key_creation_stays_within_the_cap_postgres() {
    let Some(db) = gatehouse_testkit::postgres("idp_sa_key_race").await else {
        return;
    };
    let store = Store::open_url(&db.url).await.unwrap();
    concurrent_key_creation_stays_within_the_cap(
        harness_on(
            config(),
            store.clone(),
            gatehouse_verify::FixedClock::at(T0),
        )
        .await,
    )
    .await;
    store.close().await;
}
