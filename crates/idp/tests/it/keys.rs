//! Discovery, key documents, and rotation end to end.

use crate::*;
use gatehouse_idp::keys::RingName;

#[tokio::test]
async fn discovery_has_googles_fields() {
    let h = harness().await;
    let r = h.get("/.well-known/openid-configuration").await;
    assert_eq!(r.status, 200);
    let d = r.json();
    assert_eq!(d["issuer"], "https://accounts.google.com");
    assert_eq!(d["jwks_uri"], format!("{BASE}/oauth2/v3/certs"));
    assert_eq!(d["token_endpoint"], format!("{BASE}/token"));
    assert_eq!(
        d["authorization_endpoint"],
        format!("{BASE}/o/oauth2/v2/auth")
    );
    for field in [
        "userinfo_endpoint",
        "revocation_endpoint",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
        "scopes_supported",
        "token_endpoint_auth_methods_supported",
        "claims_supported",
        "code_challenge_methods_supported",
        "grant_types_supported",
    ] {
        assert!(d.get(field).is_some(), "{field}");
    }
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
}

#[tokio::test]
async fn key_documents_agree_and_are_cacheable() {
    let h = harness().await;
    let v3 = h.get("/oauth2/v3/certs").await;
    let v1 = h.get("/oauth2/v1/certs").await;
    for r in [&v3, &v1] {
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=3600, must-revalidate, no-transform")
        );
    }
    let jwks = KeySet::from_document(&v3.body, KeyLimits::default()).unwrap();
    let pems = KeySet::from_document(&v1.body, KeyLimits::default()).unwrap();
    let mut a: Vec<_> = jwks.kids().collect();
    let mut b: Vec<_> = pems.kids().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(a.len(), 1);
    let doc = v3.json();
    assert_eq!(doc["keys"][0]["alg"], "RS256");
    assert_eq!(doc["keys"][0]["kty"], "RSA");
    assert!(v1.text().contains("BEGIN CERTIFICATE"));
    // Firebase's keys are a different ring.
    let fx = h
        .get("/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com")
        .await;
    let fj = h
        .get("/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com")
        .await;
    assert_eq!(fx.status, 200);
    assert_eq!(fj.status, 200);
    let fkeys = KeySet::from_document(&fx.body, KeyLimits::default()).unwrap();
    assert!(fkeys.kids().all(|k| jwks.get(k).is_none()));
    assert!(
        fx.header("cache-control")
            .unwrap()
            .starts_with("public, max-age=")
    );
    assert_eq!(
        h.get("/robot/v1/metadata/x509/other@example.com")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn rotation_publishes_ahead_and_keeps_retired_keys() {
    let mut config = config();
    config.key_max_age = 600;
    config.key_rotation = 7200;
    config.token_lifetime = 3600;
    let h = harness_with(config).await;
    let aud = "https://service.example";
    let mint = |h: &Harness| {
        let sa = gatehouse_idp::service_accounts::ServiceAccount {
            email: "sa@demo-project.iam.gserviceaccount.com".into(),
            unique_id: "100000000000000000001".into(),
            project_id: "demo-project".into(),
        };
        let claims =
            gatehouse_idp::service_accounts::id_token_claims(&sa, aud, h.now() as i64, 3600);
        h.state.sign(RingName::Google, &claims).unwrap()
    };
    let before = mint(&h);
    let kid0 = header(&before)["kid"].as_str().unwrap().to_owned();
    // Just before the successor must exist: a new key appears, published but not signing.
    h.clock.advance(7200 - 600 - 60);
    h.state.maintain().await.unwrap();
    let doc = h.get("/oauth2/v3/certs").await;
    let keys = KeySet::from_document(&doc.body, KeyLimits::default()).unwrap();
    assert_eq!(keys.len(), 2, "successor published ahead of signing");
    assert_eq!(
        header(&mint(&h))["kid"],
        kid0.as_str(),
        "old key still signs"
    );
    // After the rotation time the new key signs; the old one is still published.
    h.clock.advance(600 + 60);
    h.state.maintain().await.unwrap();
    let after = mint(&h);
    assert_ne!(header(&after)["kid"], kid0.as_str());
    let now = h.now();
    let v = h.google_verifier(&[aud]).await;
    v.verify(&after, now).await.unwrap();
    // A token signed by the old key just before the rotation still verifies.
    h.clock.set(now - 1);
    h.state.maintain().await.unwrap();
    let last_old = mint(&h);
    assert_eq!(header(&last_old)["kid"], kid0.as_str());
    h.clock.set(now + 3000);
    h.state.maintain().await.unwrap();
    let v = h.google_verifier(&[aud]).await;
    v.verify(&last_old, h.now()).await.unwrap();
    // Once its last token has expired (+ leeway) the old key is withdrawn.
    h.clock.set(now + 3600 + 300 + 1);
    h.state.maintain().await.unwrap();
    let doc = h.get("/oauth2/v3/certs").await;
    let keys = KeySet::from_document(&doc.body, KeyLimits::default()).unwrap();
    assert!(keys.get(&kid0).is_none());
    assert!(h.get("/oauth2/v1/certs").await.json().get(&kid0).is_none());
    let _ = before;
}
