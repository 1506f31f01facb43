//! The metadata server as the official clients use it.

use crate::*;
use axum::body::Body;
use gatehouse_idp::metadata_app;

fn meta(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("Metadata-Flavor", "Google")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn requires_the_flavor_header_and_always_sends_it() {
    let h = harness().await;
    let r = h.get("/computeMetadata/v1/project/project-id").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("metadata-flavor"), Some("Google"));
    let r = h.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("metadata-flavor"), Some("Google"));
    assert_eq!(r.json()["authEmulator"]["ready"], true);
    let r = h.send(meta("/computeMetadata/v1/project/project-id")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "demo-project");
    assert_eq!(r.header("metadata-flavor"), Some("Google"));
    let r = h.send(meta("/computeMetadata/v1/instance")).await;
    assert_eq!(r.status, 200);
    let r = h.send(meta("/computeMetadata/v1/nope")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("metadata-flavor"), Some("Google"));
    // A request with a wrong flavor value is refused too.
    let r = h
        .send(
            Request::get("/computeMetadata/v1/project/project-id")
                .header("Metadata-Flavor", "google-ish")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 403);
    // Proxied requests are refused, as by the real server.
    let r = h
        .send(
            Request::get("/computeMetadata/v1/project/project-id")
                .header("Metadata-Flavor", "Google")
                .header("X-Forwarded-For", "203.0.113.7")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn project_instance_and_account_paths() {
    let h = harness().await;
    let c = h.state.config().clone();
    let num = h
        .send(meta("/computeMetadata/v1/project/numeric-project-id"))
        .await
        .text();
    assert_eq!(num, c.project_number);
    assert_eq!(num.len(), 12);
    assert_eq!(
        h.send(meta("/computeMetadata/v1/instance/region"))
            .await
            .text(),
        format!("projects/{num}/regions/us-central1")
    );
    assert_eq!(
        h.send(meta("/computeMetadata/v1/instance/zone"))
            .await
            .text(),
        format!("projects/{num}/zones/us-central1-a")
    );
    assert_eq!(
        h.send(meta(
            "/computeMetadata/v1/instance/service-accounts/default/email"
        ))
        .await
        .text(),
        c.default_service_account
    );
    let r = h
        .send(meta(
            "/computeMetadata/v1/instance/service-accounts/default/?recursive=true",
        ))
        .await;
    // Exactly this: python google-auth before its PR #1382 (2023) JSON-decodes only on an
    // equal Content-Type and otherwise hands back text, which then fails at `info["email"]`.
    assert_eq!(r.header("content-type"), Some("application/json"));
    let info = r.json();
    assert_eq!(info["email"], c.default_service_account.as_str());
    assert_eq!(info["aliases"], serde_json::json!(["default"]));
    let r = h.send(meta("/computeMetadata/v1/?recursive=true")).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let root = r.json();
    assert_eq!(root["project"]["projectId"], "demo-project");
    assert!(root["instance"]["serviceAccounts"]["default"]["email"].is_string());
    let r = h
        .send(meta(
            "/computeMetadata/v1/instance/service-accounts/default/token",
        ))
        .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let tok = r.json();
    assert_eq!(tok["token_type"], "Bearer");
    assert!(tok["access_token"].as_str().unwrap().starts_with("ya29."));
    assert!(tok["expires_in"].as_i64().unwrap() > 3000);
    // The access token works at userinfo.
    let r = h
        .send(
            Request::get("/oauth2/v3/userinfo")
                .header(
                    "authorization",
                    format!("Bearer {}", tok["access_token"].as_str().unwrap()),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["email"], c.default_service_account.as_str());
}

#[tokio::test]
async fn identity_tokens_are_signed_and_reused_until_five_minutes_before_expiry() {
    let h = harness().await;
    let aud = "https://svc.example/path";
    let uri = format!(
        "/computeMetadata/v1/instance/service-accounts/default/identity?audience={}&format=full",
        "https%3A%2F%2Fsvc.example%2Fpath"
    );
    let r = h.send(meta(&uri)).await;
    assert_eq!(r.status, 200);
    assert!(!r.header("content-type").unwrap().contains("json"));
    let token = r.text();
    let v = h.google_verifier(&[aud]).await;
    let id = v.verify(&token, h.now()).await.unwrap();
    let c = claims(&token);
    let sa = h.state.config().default_service_account.clone();
    assert_eq!(c["iss"], "https://accounts.google.com");
    assert_eq!(c["aud"], aud);
    assert_eq!(c["email"], sa.as_str());
    assert_eq!(c["email_verified"], true);
    assert_eq!(c["sub"], c["azp"]);
    assert!(
        c["sub"]
            .as_str()
            .unwrap()
            .chars()
            .all(|ch| ch.is_ascii_digit())
    );
    assert_eq!(
        c["exp"].as_u64().unwrap(),
        c["iat"].as_u64().unwrap() + 3600
    );
    assert_eq!(c["google"]["compute_engine"]["project_id"], "demo-project");
    assert!(id.is_service_account());
    assert!(header(&token)["kid"].is_string());
    // Reused while more than five minutes remain; a fresh one after that.
    h.clock.advance(3600 - 301);
    assert_eq!(h.send(meta(&uri)).await.text(), token);
    h.clock.advance(2);
    let fresh = h.send(meta(&uri)).await.text();
    assert_ne!(fresh, token);
    // Without format=full: no compute_engine claims; distinct cache entry.
    let plain = h
        .send(meta(
            "/computeMetadata/v1/instance/service-accounts/default/identity?audience=x",
        ))
        .await
        .text();
    assert!(claims(&plain).get("google").is_none());
    // Node's gcp-metadata sends the audience unencoded.
    let raw = h
        .send(meta("/computeMetadata/v1/instance/service-accounts/default/identity?format=full&audience=https://a.example/x?y"))
        .await;
    assert_eq!(raw.status, 200);
    // An audience is required.
    let r = h
        .send(meta(
            "/computeMetadata/v1/instance/service-accounts/default/identity",
        ))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn a_token_revoked_at_revoke_is_not_handed_out_again() {
    let h = harness().await;
    let uri = "/computeMetadata/v1/instance/service-accounts/default/token";
    let token = |r: Reply| r.json()["access_token"].as_str().unwrap().to_owned();
    let first = token(h.send(meta(uri)).await);
    assert_eq!(token(h.send(meta(uri)).await), first, "reused while live");
    let r = h.post_form("/revoke", &[("token", &first)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = token(h.send(meta(uri)).await);
    assert_ne!(second, first);
    let r = h
        .post_form("/oauth2/v3/tokeninfo", &[("access_token", &second)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The `scope` tokeninfo reports for an access token.
async fn scope_of(h: &Harness, token: &str) -> String {
    let r = h
        .post_form("/oauth2/v3/tokeninfo", &[("access_token", token)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["scope"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn token_scopes_are_checked_and_kept_space_separated() {
    let h = harness().await;
    let uri = "/computeMetadata/v1/instance/service-accounts/default/token";
    let before = count(&h.state, "idp_access_tokens").await;
    let too_many = (0..51)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(",");
    for scopes in [
        String::new(),
        ",".to_owned(),
        "a,,b".to_owned(),
        "a".repeat(5000),
        "a%0Ab".to_owned(),
        "a%20b".to_owned(),
        too_many,
    ] {
        let r = h.send(meta(&format!("{uri}?scopes={scopes}"))).await;
        assert_eq!(r.status, 400, "{scopes:.40}: {}", r.text());
        assert_eq!(r.header("metadata-flavor"), Some("Google"));
    }
    assert_eq!(count(&h.state, "idp_access_tokens").await, before);
    let token = |r: Reply| r.json()["access_token"].as_str().unwrap().to_owned();
    // The default scopes, as Google reports scopes: separated by spaces.
    let default = token(h.send(meta(uri)).await);
    let scope = scope_of(&h, &default).await;
    assert!(scope.contains(' ') && !scope.contains(','), "{scope}");
    // The same set in another order (or repeated) is the same request.
    let ab = token(h.send(meta(&format!("{uri}?scopes=b,a,b"))).await);
    assert_eq!(token(h.send(meta(&format!("{uri}?scopes=a,b"))).await), ab);
    assert_eq!(scope_of(&h, &ab).await, "a b");
}

#[tokio::test]
async fn a_metadata_listener_speaks_for_its_own_account() {
    let h = harness().await;
    let email = "worker@demo-project.iam.gserviceaccount.com";
    let app = metadata_app(h.state.clone(), email.into());
    let r = send(app.clone(), Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("metadata-flavor"), Some("Google"));
    let r = send(
        app.clone(),
        meta("/computeMetadata/v1/instance/service-accounts/default/email"),
    )
    .await;
    assert_eq!(r.text(), email);
    let r = send(
        app.clone(),
        meta(&format!(
            "/computeMetadata/v1/instance/service-accounts/{email}/identity?audience=a"
        )),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(claims(&r.text())["email"], email);
    // Another account's path is not served here.
    let r = send(
        app,
        meta("/computeMetadata/v1/instance/service-accounts/other@x.iam.gserviceaccount.com/email"),
    )
    .await;
    assert_eq!(r.status, 404);
    // Every answer carries the flavor header: unknown paths and other methods too.
    let r = send(
        metadata_app(h.state.clone(), email.into()),
        Request::get("/nope").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("metadata-flavor"), Some("Google"));
    let r = h
        .send(
            Request::post("/computeMetadata/v1/project/project-id")
                .header("Metadata-Flavor", "Google")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("metadata-flavor"), Some("Google"));
}
