//! The gateway's own endpoints and its assertions.

use crate::support::*;
use gatehouse_verify::{IssuerProfile, Verifier};
use serde_json::Value;

#[tokio::test]
async fn assertion_verifies_against_public_key_jwk_and_is_cached() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allAuthenticatedUsers"])).await;
    let jwks: Value = client()
        .get(gw.url("/_gatehouse/public_key-jwk"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["crv"], "P-256");

    let token = issuer.token("alice@example.com");
    let first = upstream_headers(&send(client().get(gw.url("/")).bearer_auth(&token)).await);
    let second = upstream_headers(&send(client().get(gw.url("/b")).bearer_auth(&token)).await);
    let assertion = first.header("x-goog-iap-jwt-assertion").unwrap().to_owned();
    assert_eq!(
        second.header("x-goog-iap-jwt-assertion"),
        Some(assertion.as_str()),
        "one signature per identity and route, reused"
    );

    // Verified as an IAP backend would: the `iap` profile with the gateway's keys.
    let verifier = Verifier::new(
        IssuerProfile::iap()
            .with_jwks_url(&gw.url("/_gatehouse/public_key-jwk"))
            .with_audiences([AUD]),
    )
    .unwrap();
    let identity = verifier.verify(&assertion, now()).await.unwrap();
    assert_eq!(identity.email(), Some("alice@example.com"));
    assert_eq!(identity.subject(), "issuer.test:sub-alice@example.com");
    assert_eq!(identity.issuer(), "https://cloud.google.com/iap");
    let claims = identity.claims();
    assert_eq!(claims.expires_at() - claims.issued_at().unwrap(), 600);
    // A different identity gets a different assertion.
    let other = upstream_headers(
        &send(
            client()
                .get(gw.url("/"))
                .bearer_auth(issuer.token("bob@example.com")),
        )
        .await,
    );
    assert_ne!(
        other.header("x-goog-iap-jwt-assertion"),
        Some(assertion.as_str())
    );
}

#[tokio::test]
async fn identity_health_ready_and_metrics() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["user:alice@example.com"])).await;
    let c = client();
    assert_eq!(
        c.get(gw.url("/_gatehouse/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = c.get(gw.url("/_gatehouse/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let who = send(
        c.get(gw.url("/_gatehouse/identity"))
            .bearer_auth(issuer.token("bob@example.com")),
    )
    .await;
    assert_eq!(who.status, 200);
    assert_eq!(who.body["email"], "bob@example.com");
    assert_eq!(who.body["invoker"], false);
    assert_eq!(who.body["route"], "checked");
    let anon = send(c.get(gw.url("/_gatehouse/identity"))).await;
    assert_eq!(anon.status, 401);
    assert_eq!(
        c.get(gw.url("/_gatehouse/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Traffic to count.
    c.get(gw.url("/"))
        .bearer_auth(issuer.token("alice@example.com"))
        .send()
        .await
        .unwrap();
    c.get(gw.url("/")).send().await.unwrap();
    c.get(gw.url("/"))
        .bearer_auth(issuer.token("eve@example.com"))
        .send()
        .await
        .unwrap();
    let text = c
        .get(gw.url("/_gatehouse/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "gatehouse_requests_total{route=\"checked\",status=\"200\"} 1",
        "gatehouse_requests_total{route=\"checked\",status=\"401\"} 1",
        "gatehouse_requests_total{route=\"checked\",status=\"403\"} 1",
        // The anonymous who-am-I above and the anonymous request.
        "gatehouse_denials_total{reason=\"missing_token\"} 2",
        "gatehouse_denials_total{reason=\"not_invoker\"} 1",
        "gatehouse_verify_duration_seconds_count",
        "gatehouse_upstream_duration_seconds_count 1",
        "gatehouse_jwks_fetches_total{url=",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[tokio::test]
async fn assertion_key_file_and_issuer_are_configurable() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let dir = temp_dir();
    let key = gatehouse_verify::SigningKey::generate_es256("x").unwrap();
    std::fs::write(dir.join("assertion.pem"), key.to_pkcs8_pem().unwrap()).unwrap();
    let toml = format!(
        "[assertion]\nissuer = \"https://gw.example\"\nkey_file = \"{}\"\n{}assertion_audience = \"/projects/123/apps/demo\"\n",
        dir.join("assertion.pem").display(),
        checked_route(&issuer, up, &["allAuthenticatedUsers"])
    );
    let a = gateway(&toml).await;
    let b = gateway(&toml).await;
    let keys = |gw: &Running| {
        let url = gw.url("/_gatehouse/public_key-jwk");
        async move {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // Two gateways with one key file publish the same key, under the same kid.
    assert_eq!(keys(&a).await, keys(&b).await);
    let seen = upstream_headers(
        &send(
            client()
                .get(a.url("/"))
                .bearer_auth(issuer.token("a@example.com")),
        )
        .await,
    );
    let assertion = seen.header("x-goog-iap-jwt-assertion").unwrap().to_owned();
    let verifier = Verifier::new(
        IssuerProfile::parse(
            "https://gw.example",
            Some(&b.url("/_gatehouse/public_key-jwk")),
        )
        .unwrap()
        .with_audiences(["/projects/123/apps/demo"]),
    )
    .unwrap();
    let id = verifier.verify(&assertion, now()).await.unwrap();
    assert_eq!(id.issuer(), "https://gw.example");
    assert_eq!(id.email(), Some("a@example.com"));
}
