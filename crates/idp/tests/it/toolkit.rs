//! The Identity Toolkit subset and securetoken refresh.

use crate::*;
use axum::body::Body;
use serde_json::json;

const TK: &str = "/identitytoolkit.googleapis.com/v1";

async fn sign_up(h: &Harness, email: &str, password: &str) -> Reply {
    h.post_json(
        &format!("{TK}/accounts:signUp?key=fake"),
        &json!({"email": email, "password": password, "returnSecureToken": true}),
    )
    .await
}

#[tokio::test]
async fn email_password_lifecycle() {
    let h = harness().await;
    let r = sign_up(&h, "Fay@Example.com", "hunter22").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let up = r.json();
    assert_eq!(up["kind"], "identitytoolkit#SignupNewUserResponse");
    assert_eq!(up["email"], "fay@example.com");
    assert_eq!(up["expiresIn"], "3600");
    let uid = up["localId"].as_str().unwrap().to_owned();
    assert_eq!(uid.len(), 28);
    let v = h.firebase_verifier("demo-project").await;
    let id = v
        .verify(up["idToken"].as_str().unwrap(), h.now())
        .await
        .unwrap();
    assert_eq!(id.subject(), uid);
    let c = claims(up["idToken"].as_str().unwrap());
    assert_eq!(c["iss"], "https://securetoken.google.com/demo-project");
    assert_eq!(c["aud"], "demo-project");
    assert_eq!(c["user_id"], uid.as_str());
    assert_eq!(c["firebase"]["sign_in_provider"], "password");
    assert_eq!(
        c["firebase"]["identities"]["email"],
        json!(["fay@example.com"])
    );
    assert!(c["auth_time"].is_u64());

    // Duplicate, weak, missing.
    let users = count(&h.state, "idp_fb_users").await;
    let r = sign_up(&h, "fay@example.com", "hunter22").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "EMAIL_EXISTS");
    assert_eq!(r.json()["error"]["code"], 400);
    assert!(
        sign_up(&h, "g@example.com", "123").await.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("WEAK_PASSWORD : ")
    );
    assert_eq!(
        sign_up(&h, "bad", "hunter22").await.json()["error"]["message"],
        "INVALID_EMAIL"
    );
    assert_eq!(count(&h.state, "idp_fb_users").await, users);

    // Sign in; wrong password; unknown email.
    let signin = |email: &'static str, pw: &'static str| {
        let h = &h;
        async move {
            h.post_json(
                &format!("{TK}/accounts:signInWithPassword?key=fake"),
                &json!({"email": email, "password": pw, "returnSecureToken": true}),
            )
            .await
        }
    };
    let r = signin("fay@example.com", "hunter22").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["registered"], true);
    let session = r.json();
    assert_eq!(
        signin("fay@example.com", "wrong-pw").await.json()["error"]["message"],
        "INVALID_PASSWORD"
    );
    assert_eq!(
        signin("nobody@example.com", "hunter22").await.json()["error"]["message"],
        "EMAIL_NOT_FOUND"
    );

    // Lookup.
    let r = h
        .post_json(
            &format!("{TK}/accounts:lookup?key=fake"),
            &json!({"idToken": session["idToken"]}),
        )
        .await;
    let user = &r.json()["users"][0];
    assert_eq!(user["localId"], uid.as_str());
    assert_eq!(user["providerUserInfo"][0]["providerId"], "password");
    assert!(user["createdAt"].is_string());
    let r = h
        .post_json(
            &format!("{TK}/accounts:lookup?key=fake"),
            &json!({"idToken": "x.y.z"}),
        )
        .await;
    assert_eq!(r.json()["error"]["message"], "INVALID_ID_TOKEN");

    // Refresh (form, as the JS SDK sends it).
    h.clock.advance(60);
    let r = h
        .post_form(
            "/securetoken.googleapis.com/v1/token?key=fake",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", session["refreshToken"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(t["user_id"], uid.as_str());
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], "3600");
    let fresh = t["id_token"].as_str().unwrap();
    assert_ne!(fresh, session["idToken"].as_str().unwrap());
    assert_eq!(
        claims(fresh)["auth_time"],
        claims(session["idToken"].as_str().unwrap())["auth_time"]
    );
    let r = h
        .post_form(
            "/securetoken.googleapis.com/v1/token",
            &[("grant_type", "refresh_token"), ("refresh_token", "nope")],
        )
        .await;
    assert_eq!(r.json()["error"]["message"], "INVALID_REFRESH_TOKEN");

    // Sign-in methods for an email.
    let r = h
        .post_json(
            &format!("{TK}/accounts:createAuthUri?key=fake"),
            &json!({"identifier": "fay@example.com", "continueUri": "http://localhost"}),
        )
        .await;
    assert_eq!(r.json()["registered"], true);
    assert_eq!(r.json()["signinMethods"], json!(["password"]));

    // Update display name; delete.
    let r = h
        .post_json(
            &format!("{TK}/accounts:update?key=fake"),
            &json!({"idToken": fresh, "displayName": "Fay", "returnSecureToken": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["displayName"], "Fay");
    let r = h
        .post_json(
            &format!("{TK}/accounts:delete?key=fake"),
            &json!({"idToken": fresh}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        signin("fay@example.com", "hunter22").await.json()["error"]["message"],
        "EMAIL_NOT_FOUND"
    );
}

#[tokio::test]
async fn google_sign_in_through_our_own_id_token() {
    let h = harness().await;
    let r = h
        .post_json(
            "/emulator/v1/accounts/token",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    let google = r.json()["id_token"].as_str().unwrap().to_owned();
    let body = json!({
        "postBody": format!("id_token={google}&providerId=google.com"),
        "requestUri": "http://localhost",
        "returnSecureToken": true,
        "returnIdpCredential": true,
    });
    let r = h
        .post_json(&format!("{TK}/accounts:signInWithIdp?key=fake"), &body)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let a = r.json();
    assert_eq!(a["kind"], "identitytoolkit#VerifyAssertionResponse");
    assert_eq!(a["providerId"], "google.com");
    assert_eq!(a["email"], "alice@example.com");
    assert_eq!(a["isNewUser"], true);
    let c = claims(a["idToken"].as_str().unwrap());
    assert_eq!(c["firebase"]["sign_in_provider"], "google.com");
    assert_eq!(
        c["firebase"]["identities"]["google.com"][0],
        claims(&google)["sub"]
    );
    let again = h
        .post_json(&format!("{TK}/accounts:signInWithIdp?key=fake"), &body)
        .await
        .json();
    assert_eq!(again["isNewUser"], false);
    assert_eq!(again["localId"], a["localId"]);
    // An access token of the emulator's works too (same Google account, same user).
    let q = serde_urlencoded::to_string([
        ("client_id", crate::signin::CLIENT),
        ("redirect_uri", "http://127.0.0.1:5555/cb"),
        ("response_type", "token"),
        ("scope", "openid email profile"),
        ("prompt", "none"),
        ("login_hint", "alice@example.com"),
    ])
    .unwrap();
    let r = h.get(&format!("/o/oauth2/v2/auth?{q}")).await;
    let loc = r.header("location").unwrap().to_owned();
    let frag: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str(loc.split_once('#').unwrap().1).unwrap();
    let body_at = json!({
        "postBody": format!("access_token={}&providerId=google.com", frag["access_token"]),
        "requestUri": "http://localhost",
        "returnSecureToken": true,
    });
    let r = h
        .post_json(&format!("{TK}/accounts:signInWithIdp?key=fake"), &body_at)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["localId"], a["localId"]);
    // A token we did not sign is refused.
    let body = json!({"postBody": "id_token=a.b.c&providerId=google.com", "requestUri": "http://localhost"});
    let r = h
        .post_json(&format!("{TK}/accounts:signInWithIdp?key=fake"), &body)
        .await;
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("INVALID_IDP_RESPONSE")
    );
}

#[tokio::test]
async fn cors_emulator_endpoints_and_admin() {
    let h = harness().await;
    let r = h
        .send(
            Request::options(format!("{TK}/accounts:signUp"))
                .header("origin", "http://localhost:5173")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "content-type,x-client-version",
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type,x-client-version")
    );
    let r = h
        .send(
            Request::post(format!("{TK}/accounts:signUp"))
                .header("origin", "http://localhost:5173")
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "anonymous sign-up: {}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(
        claims(r.json()["idToken"].as_str().unwrap())["firebase"]["sign_in_provider"],
        "anonymous"
    );
    let r = sign_up(&h, "h@example.com", "password1").await;
    let uid = r.json()["localId"].as_str().unwrap().to_owned();
    // The Admin SDK looks users up by localId with `Bearer owner`.
    let r = h
        .send(
            Request::post(format!("{TK}/projects/demo-project/accounts:lookup"))
                .header("authorization", "Bearer owner")
                .header("content-type", "application/json")
                .body(Body::from(json!({"localId": [uid]}).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.json()["users"][0]["email"], "h@example.com");
    // Bad JSON is an Identity Toolkit error.
    let r = h
        .send(
            Request::post(format!("{TK}/accounts:signUp"))
                .body(Body::from("[1]"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("INVALID_JSON")
    );
    // Clear all accounts.
    let r = h
        .send(
            Request::delete("/emulator/v1/projects/demo-project/accounts")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(count(&h.state, "idp_fb_users").await, 0);
}
