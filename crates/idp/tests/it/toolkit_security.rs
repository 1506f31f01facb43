//! The Identity Toolkit's security properties: revocation on credential changes (validSince),
//! account pre-hijacking, bounded password hashing, admin calls from web pages, PostgreSQL
//! updates, and audience checks.

use crate::*;
use axum::body::Body;
use gatehouse_verify::FixedClock;
use serde_json::json;

const TK: &str = "/identitytoolkit.googleapis.com/v1";

async fn call(h: &Harness, action: &str, body: &Value) -> Reply {
    h.post_json(&format!("{TK}/accounts:{action}?key=fake"), body)
        .await
}

async fn admin(h: &Harness, action: &str, body: &Value) -> Reply {
    h.send(
        Request::post(format!("{TK}/projects/demo-project/accounts:{action}"))
            .header("authorization", "Bearer owner")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

async fn refresh(h: &Harness, token: &Value) -> Reply {
    h.post_form(
        "/securetoken.googleapis.com/v1/token?key=fake",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token.as_str().unwrap()),
        ],
    )
    .await
}

fn message(r: &Reply) -> String {
    r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn refresh_tokens_of(h: &Harness, uid: &str) -> i64 {
    h.state
        .store()
        .fetch_optional(
            "SELECT COUNT(*) FROM idp_refresh_tokens WHERE kind = 'firebase' AND subject = $1",
            &[uid.into()],
        )
        .await
        .unwrap()
        .unwrap()
        .int(0)
        .unwrap()
}

#[tokio::test]
async fn password_and_email_changes_revoke_earlier_sessions() {
    let h = harness().await;
    let up = call(
        &h,
        "signUp",
        &json!({"email": "vic@example.com", "password": "first-pw", "returnSecureToken": true}),
    )
    .await
    .json();
    let uid = up["localId"].as_str().unwrap().to_owned();
    // The thief's copy of the session, from before the change.
    let stolen = call(
        &h,
        "signInWithPassword",
        &json!({"email": "vic@example.com", "password": "first-pw", "returnSecureToken": true}),
    )
    .await
    .json();
    assert_eq!(refresh_tokens_of(&h, &uid).await, 2);

    h.clock.advance(10);
    let r = call(
        &h,
        "update",
        &json!({"idToken": up["idToken"], "password": "second-pw", "returnSecureToken": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let changed = r.json();
    assert_eq!(changed["validSince"], (T0 + 10).to_string());
    // Only the token the change returned is left.
    assert_eq!(refresh_tokens_of(&h, &uid).await, 1);
    for t in [&up["refreshToken"], &stolen["refreshToken"]] {
        let r = refresh(&h, t).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(message(&r), "INVALID_REFRESH_TOKEN");
    }
    for t in [&up["idToken"], &stolen["idToken"]] {
        let r = call(&h, "lookup", &json!({"idToken": t})).await;
        assert_eq!(message(&r), "TOKEN_EXPIRED", "{}", r.text());
    }
    // Minted in the second of the change: still good.
    let r = call(&h, "lookup", &json!({"idToken": changed["idToken"]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = refresh(&h, &changed["refreshToken"]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // An email change does the same.
    h.clock.advance(10);
    let r = call(
        &h,
        "update",
        &json!({"idToken": changed["idToken"], "email": "vic2@example.com", "returnSecureToken": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let moved = r.json();
    assert_eq!(
        message(&refresh(&h, &changed["refreshToken"]).await),
        "INVALID_REFRESH_TOKEN"
    );
    let r = call(&h, "lookup", &json!({"idToken": changed["idToken"]})).await;
    assert_eq!(message(&r), "TOKEN_EXPIRED");
    assert_eq!(refresh(&h, &moved["refreshToken"]).await.status, 200);

    // So does an Admin SDK password reset (no token returned).
    h.clock.advance(10);
    let r = admin(
        &h,
        "update",
        &json!({"localId": uid, "password": "third-pw"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(refresh_tokens_of(&h, &uid).await, 0);
    let r = call(&h, "lookup", &json!({"idToken": moved["idToken"]})).await;
    assert_eq!(message(&r), "TOKEN_EXPIRED");

    // A display-name change revokes nothing.
    let s = call(
        &h,
        "signInWithPassword",
        &json!({"email": "vic2@example.com", "password": "third-pw", "returnSecureToken": true}),
    )
    .await
    .json();
    h.clock.advance(10);
    let r = call(
        &h,
        "update",
        &json!({"idToken": s["idToken"], "displayName": "Vic"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(refresh(&h, &s["refreshToken"]).await.status, 200);
    let r = call(&h, "lookup", &json!({"idToken": s["idToken"]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn refresh_token_older_than_valid_since_is_expired() {
    let h = harness().await;
    let up = call(
        &h,
        "signUp",
        &json!({"email": "rt@example.com", "password": "secret-pw", "returnSecureToken": true}),
    )
    .await
    .json();
    let uid = up["localId"].as_str().unwrap().to_owned();
    h.clock.advance(5);
    let now = i64::try_from(h.now()).unwrap();
    // A revocation that left the rows in place (another replica's change, say).
    h.state
        .store()
        .execute(
            "UPDATE idp_fb_users SET valid_since = $1 WHERE uid = $2",
            &[now.into(), uid.as_str().into()],
        )
        .await
        .unwrap();
    let r = refresh(&h, &up["refreshToken"]).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(message(&r), "TOKEN_EXPIRED");
    // Issued in the very second of validSince: still good.
    let s = call(
        &h,
        "signInWithPassword",
        &json!({"email": "rt@example.com", "password": "secret-pw", "returnSecureToken": true}),
    )
    .await
    .json();
    let r = refresh(&h, &s["refreshToken"]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn google_token(h: &Harness, body: &Value) -> String {
    let r = h.post_json("/emulator/v1/accounts/token", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id_token"].as_str().unwrap().to_owned()
}

fn idp_body(google: &str) -> Value {
    json!({
        "postBody": format!("id_token={google}&providerId=google.com"),
        "requestUri": "http://localhost",
        "returnSecureToken": true,
    })
}

#[tokio::test]
async fn google_sign_in_unlinks_an_unverified_password() {
    let h = harness().await;
    // The attacker registers the victim's email first.
    let planted = call(
        &h,
        "signUp",
        &json!({"email": "victim@example.com", "password": "attacker-pw", "returnSecureToken": true}),
    )
    .await
    .json();
    let uid = planted["localId"].as_str().unwrap().to_owned();
    h.clock.advance(10);
    let google = google_token(&h, &json!({"email": "victim@example.com"})).await;
    let r = call(&h, "signInWithIdp", &idp_body(&google)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let victim = r.json();
    assert_eq!(victim["localId"], uid.as_str());
    assert_eq!(victim["isNewUser"], false);
    assert_eq!(victim["emailVerified"], true);

    let r = call(
        &h,
        "signInWithPassword",
        &json!({"email": "victim@example.com", "password": "attacker-pw", "returnSecureToken": true}),
    )
    .await;
    assert_eq!(message(&r), "INVALID_PASSWORD", "{}", r.text());
    let r = refresh(&h, &planted["refreshToken"]).await;
    assert_eq!(message(&r), "INVALID_REFRESH_TOKEN", "{}", r.text());
    let r = call(&h, "lookup", &json!({"idToken": planted["idToken"]})).await;
    assert_eq!(message(&r), "TOKEN_EXPIRED", "{}", r.text());
    let user = call(&h, "lookup", &json!({"idToken": victim["idToken"]}))
        .await
        .json()["users"][0]
        .clone();
    assert!(user.get("passwordHash").is_none(), "{user}");
    assert!(user.get("passwordUpdatedAt").is_none(), "{user}");
    assert_eq!(user["providerUserInfo"].as_array().unwrap().len(), 1);
    assert_eq!(user["providerUserInfo"][0]["providerId"], "google.com");
    assert_eq!(refresh(&h, &victim["refreshToken"]).await.status, 200);
}

#[tokio::test]
async fn google_sign_in_keeps_a_verified_password() {
    let h = harness().await;
    let up = call(
        &h,
        "signUp",
        &json!({"email": "owner@example.com", "password": "owner-pw1", "returnSecureToken": true}),
    )
    .await
    .json();
    let uid = up["localId"].as_str().unwrap().to_owned();
    let r = admin(
        &h,
        "update",
        &json!({"localId": uid, "emailVerified": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let google = google_token(&h, &json!({"email": "owner@example.com"})).await;
    let r = call(&h, "signInWithIdp", &idp_body(&google)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["localId"], uid.as_str());
    let r = call(
        &h,
        "signInWithPassword",
        &json!({"email": "owner@example.com", "password": "owner-pw1", "returnSecureToken": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(refresh(&h, &up["refreshToken"]).await.status, 200);
}

/// firebase-admin's `updateUser(uid, {email, emailVerified: true})`, and a name set and
/// deleted in one call: each names one column twice.
async fn update_naming_a_column_twice(h: &Harness) {
    let up = call(
        h,
        "signUp",
        &json!({"email": "twice@example.com", "password": "secret-pw", "displayName": "Old", "returnSecureToken": true}),
    )
    .await
    .json();
    let uid = up["localId"].as_str().unwrap().to_owned();
    let r = call(
        h,
        "update",
        &json!({"idToken": up["idToken"], "displayName": "New", "deleteAttribute": ["DISPLAY_NAME"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("displayName").is_none(), "{}", r.text());
    let r = admin(
        h,
        "update",
        &json!({"localId": uid, "email": "twice2@example.com", "emailVerified": true}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let user = admin(h, "lookup", &json!({"localId": [uid]})).await.json()["users"][0].clone();
    assert_eq!(user["email"], "twice2@example.com");
    assert_eq!(user["emailVerified"], true);
    assert!(user.get("displayName").is_none(), "{user}");
}

#[tokio::test]
async fn update_naming_a_column_twice_sqlite() {
    update_naming_a_column_twice(&harness().await).await;
}

#[tokio::test]
async fn update_naming_a_column_twice_postgres() {
    let Some(db) = gatehouse_testkit::postgres("idp_update_twice").await else {
        return;
    };
    let store = Store::open_url(&db.url).await.unwrap();
    let h = harness_on(config(), store.clone(), FixedClock::at(T0)).await;
    update_naming_a_column_twice(&h).await;
    store.close().await;
}

#[tokio::test]
async fn google_sign_in_checks_the_audience_it_names_among_any_number_of_clients() {
    let h = harness().await;
    // Older than the default client, so a list of the first 1,000 would leave it out.
    let statements: Vec<gatehouse_store::Statement> = (0..1000)
        .map(|i| {
            gatehouse_store::Statement::new(
                "INSERT INTO idp_clients (client_id, kind, redirect_uris, name, created_at) VALUES ($1, 'web', '[]', 'filler', 0)",
                vec![format!("filler-{i}.apps.googleusercontent.com").into()],
            )
        })
        .collect();
    h.state
        .store()
        .transaction(&statements, false)
        .await
        .unwrap();
    let google = google_token(&h, &json!({"email": "late@example.com"})).await;
    let r = call(&h, "signInWithIdp", &idp_body(&google)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A client that no longer exists is not an audience.
    let r = h
        .post_json(
            "/emulator/v1/clients",
            &json!({"clientId": "gone.apps.googleusercontent.com", "redirectUris": ["https://app.example/cb"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let google = google_token(
        &h,
        &json!({"email": "late@example.com", "audience": "gone.apps.googleusercontent.com"}),
    )
    .await;
    h.state
        .store()
        .execute(
            "DELETE FROM idp_clients WHERE client_id = $1",
            &["gone.apps.googleusercontent.com".into()],
        )
        .await
        .unwrap();
    let r = call(&h, "signInWithIdp", &idp_body(&google)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(message(&r), "INVALID_IDP_RESPONSE : wrong_audience");
    // Nor is a client the signature does not cover.
    let mut parts: Vec<String> = google.split('.').map(str::to_owned).collect();
    parts[1] = base64_url(
        &json!({"aud": crate::signin::CLIENT, "iss": "https://accounts.google.com", "sub": "1", "exp": T0 + 600, "iat": T0})
            .to_string(),
    );
    let r = call(&h, "signInWithIdp", &idp_body(&parts.join("."))).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        message(&r).starts_with("INVALID_IDP_RESPONSE : "),
        "{}",
        r.text()
    );
    assert_ne!(message(&r), "INVALID_IDP_RESPONSE : wrong_audience");
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_is_bounded_process_wide() {
    let h = harness().await;
    let (limit, _) = gatehouse_idp::toolkit::password_work_limits();
    assert!(limit >= 1);
    let n = 2 * limit + 6;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let app = h.app();
        set.spawn(async move {
            send(
                app,
                Request::post(format!("{TK}/accounts:signUp?key=fake"))
                    .header("content-type", "application/json")
                    .body(Body::from(
                        json!({"email": format!("flood{i}@example.com"), "password": "flood-pw"})
                            .to_string(),
                    ))
                    .unwrap(),
            )
            .await
        });
    }
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        // Everyone gets through, in turn.
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (_, peak) = gatehouse_idp::toolkit::password_work_limits();
    assert!(peak >= 1);
    assert!(peak <= limit, "{peak} hashes ran at once, limit {limit}");
}

fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (k, v) in pairs {
        m.append(*k, http::HeaderValue::from_static(v));
    }
    m
}

#[tokio::test]
async fn a_request_with_an_origin_is_never_admin() {
    use gatehouse_idp::toolkit::{self, Caller};
    for (pairs, want) in [
        (&[("authorization", "Bearer owner")][..], Caller::Admin),
        (&[("authorization", "bearer  owner ")][..], Caller::Admin),
        (&[("authorization", "Bearer nobody")][..], Caller::User),
        (&[][..], Caller::User),
        (
            &[
                ("authorization", "Bearer owner"),
                ("origin", "https://evil.example"),
            ][..],
            Caller::User,
        ),
        (
            &[("authorization", "Bearer owner"), ("origin", "null")][..],
            Caller::User,
        ),
        (
            &[
                ("origin", "http://localhost:5173"),
                ("authorization", "Bearer owner"),
            ][..],
            Caller::User,
        ),
    ] {
        assert_eq!(Caller::from_headers(&headers(pairs)), want, "{pairs:?}");
    }
    // What a page's admin call then gets: the answer to a user call without a token.
    let h = harness().await;
    let up = call(
        &h,
        "signUp",
        &json!({"email": "page@example.com", "password": "secret-pw"}),
    )
    .await
    .json();
    let from_page = Caller::from_headers(&headers(&[
        ("authorization", "Bearer owner"),
        ("origin", "https://evil.example"),
    ]));
    let now = i64::try_from(h.now()).unwrap();
    for (action, body) in [
        ("lookup", json!({"localId": [up["localId"]]})),
        (
            "update",
            json!({"localId": up["localId"], "password": "taken-over"}),
        ),
        ("delete", json!({"localId": up["localId"]})),
    ] {
        let e = toolkit::dispatch(&h.state, "demo-project", action, &body, from_page, now)
            .await
            .unwrap_err();
        assert_eq!(e.message, "INVALID_ID_TOKEN", "{action}");
    }
    let r = call(
        &h,
        "signInWithPassword",
        &json!({"email": "page@example.com", "password": "secret-pw"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The same through the router.
#[tokio::test]
async fn a_page_cannot_make_admin_calls_through_the_router() {
    let h = harness().await;
    let up = call(
        &h,
        "signUp",
        &json!({"email": "page2@example.com", "password": "secret-pw"}),
    )
    .await
    .json();
    let r = h
        .send(
            Request::post(format!("{TK}/projects/demo-project/accounts:lookup"))
                .header("authorization", "Bearer owner")
                .header("origin", "https://evil.example")
                .header("content-type", "application/json")
                .body(Body::from(json!({"localId": [up["localId"]]}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(message(&r), "INVALID_ID_TOKEN");
    // Without the Origin, the Admin SDK's call still works.
    let r = admin(&h, "lookup", &json!({"localId": [up["localId"]]})).await;
    assert_eq!(r.json()["users"][0]["email"], "page2@example.com");
}
