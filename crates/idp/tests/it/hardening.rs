//! What the emulator refuses so that it is no weaker than Google, and no door into this
//! machine for a web page: secrets of confidential clients, PKCE as RFC 7636 says, the hybrid
//! flow's `c_hash`, bounded nonces, and the names and origins it answers to.

use crate::signin::{CB, CLIENT, auth_query, fragment_params, query_params};
use crate::*;
use axum::body::Body;
use serde_json::json;

const WEB: &str = "web-1.apps.googleusercontent.com";
const WEB_CB: &str = "https://app.example/cb";

async fn register_confidential(h: &Harness) {
    let r = h
        .post_json(
            "/emulator/v1/clients",
            &json!({"clientId": WEB, "clientSecret": "s3cret", "redirectUris": [WEB_CB]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A code for alice, for `client`, with `extra` authorization parameters.
async fn code_for(h: &Harness, client: &str, redirect: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("client_id", client),
        ("redirect_uri", redirect),
        ("response_type", "code"),
        ("scope", "openid email"),
        ("prompt", "none"),
        ("login_hint", "alice@example.com"),
    ];
    pairs.extend_from_slice(extra);
    let r = h.get(&auth_query(&pairs)).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.header("location").unwrap();
    query_params(location)
        .remove("code")
        .unwrap_or_else(|| panic!("no code in {location}"))
}

#[tokio::test]
async fn a_confidential_clients_codes_and_refresh_tokens_need_its_secret_with_pkce_too() {
    let h = harness().await;
    register_confidential(&h).await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let code = code_for(
        &h,
        WEB,
        WEB_CB,
        &[
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", WEB_CB),
        ("client_id", WEB),
        ("code_verifier", verifier),
    ];
    let r = h.post_form("/token", &form).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_client");
    // The refusal did not use the code up.
    form.push(("client_secret", "s3cret"));
    let r = h.post_form("/token", &form).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();

    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("client_id", WEB),
    ];
    let r = h.post_form("/token", &form).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_client");
    form.push(("client_secret", "s3cret"));
    let r = h.post_form("/token", &form).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn plain_pkce_works_as_rfc_7636_says_and_discovery_lists_only_what_works() {
    let h = harness().await;
    let verifier = "plain-verifier-0123456789-0123456789-0123456789";
    for method in [Some("plain"), None] {
        let mut extra = vec![("code_challenge", verifier)];
        if let Some(method) = method {
            extra.push(("code_challenge_method", method));
        }
        let code = code_for(&h, CLIENT, CB, &extra).await;
        let exchange = |verifier: &'static str| {
            let code = code.clone();
            let h = &h;
            async move {
                h.post_form(
                    "/token",
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("redirect_uri", CB),
                        ("client_id", CLIENT),
                        ("code_verifier", verifier),
                    ],
                )
                .await
            }
        };
        // The challenge's hash is no verifier: a plain challenge is compared as sent.
        let r = exchange("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").await;
        assert_eq!(r.json()["error"], "invalid_grant", "{method:?}");
        let r = exchange("plain-verifier-0123456789-0123456789-0123456789").await;
        assert_eq!(r.status, 200, "{method:?}: {}", r.text());
    }
    // A plain challenge must be a verifier's shape.
    let r = h
        .get(&auth_query(&[
            ("client_id", CLIENT),
            ("redirect_uri", CB),
            ("response_type", "code"),
            ("scope", "openid"),
            ("code_challenge", "short"),
            ("code_challenge_method", "plain"),
        ]))
        .await;
    assert_eq!(
        query_params(r.header("location").unwrap())["error"],
        "invalid_request"
    );

    let d = h.get("/.well-known/openid-configuration").await.json();
    assert_eq!(
        d["code_challenge_methods_supported"],
        json!(["plain", "S256"])
    );
    assert!(d.get("device_authorization_endpoint").is_none());
    let types = d["response_types_supported"].as_array().unwrap();
    assert!(!types.contains(&json!("none")), "{types:?}");
    let grants = d["grant_types_supported"].as_array().unwrap();
    assert!(
        grants
            .iter()
            .all(|g| !g.as_str().unwrap().contains("device_code")),
        "{grants:?}"
    );
}

#[tokio::test]
async fn the_hybrid_flows_id_token_binds_its_code() {
    let h = harness().await;
    let r = h
        .get(&auth_query(&[
            ("client_id", CLIENT),
            ("redirect_uri", CB),
            ("response_type", "code id_token"),
            ("scope", "openid email"),
            ("nonce", "n-1"),
            ("prompt", "none"),
            ("login_hint", "alice@example.com"),
        ]))
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    let p = fragment_params(r.header("location").unwrap());
    let c_hash = claims(&p["id_token"])["c_hash"].clone();
    // OIDC Core 3.3.2.11: base64url of the left half of SHA-256 of the code.
    assert_eq!(c_hash, json!(gatehouse_idp::oauth::at_hash(&p["code"])));
    // The implicit flow's token has none.
    let r = h
        .get(&auth_query(&[
            ("client_id", CLIENT),
            ("redirect_uri", CB),
            ("response_type", "id_token"),
            ("scope", "openid email"),
            ("nonce", "n-2"),
            ("prompt", "none"),
            ("login_hint", "alice@example.com"),
        ]))
        .await;
    let p = fragment_params(r.header("location").unwrap());
    assert!(!claims(&p["id_token"]).contains_key("c_hash"));
}

#[tokio::test]
async fn a_nonce_too_long_for_a_verifier_is_refused_not_signed() {
    let h = harness().await;
    let long = "n".repeat(gatehouse_idp::oauth::MAX_NONCE + 1);
    let r = h
        .get(&auth_query(&[
            ("client_id", CLIENT),
            ("redirect_uri", CB),
            ("response_type", "id_token"),
            ("scope", "openid email"),
            ("nonce", &long),
            ("prompt", "none"),
            ("login_hint", "alice@example.com"),
        ]))
        .await;
    let p = fragment_params(r.header("location").unwrap());
    assert_eq!(p["error"], "invalid_request");
    assert!(!p.contains_key("id_token"));
    let r = h
        .post_json(
            "/emulator/v1/accounts/token",
            &json!({"email": "eve@example.com", "nonce": long}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let fits = "n".repeat(gatehouse_idp::oauth::MAX_NONCE);
    let r = h
        .post_json(
            "/emulator/v1/accounts/token",
            &json!({"email": "eve@example.com", "nonce": fits}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn with_header(method: &str, uri: &str, name: &str, value: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(name, value)
        .header("content-type", "text/plain")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn only_names_that_cannot_be_rebound_reach_the_emulator() {
    let h = harness().await;
    // DNS rebinding: a page at attacker.example:9099 whose name now resolves to 127.0.0.1.
    let steal = "/v1/projects/-/serviceAccounts/runner@demo-project.iam.gserviceaccount.com/keys";
    let before = count(&h.state, "idp_sa_keys").await;
    let r = h
        .send(with_header(
            "POST",
            steal,
            "host",
            "attacker.example:9099",
            "{}",
        ))
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(!r.text().contains("privateKeyData"));
    assert_eq!(count(&h.state, "idp_sa_keys").await, before);
    let r = h
        .send(with_header(
            "GET",
            "/oauth2/v3/certs",
            "host",
            "attacker.example",
            "",
        ))
        .await;
    assert_eq!(r.status, 403);
    for host in [
        "127.0.0.1:9099",
        "localhost:9099",
        "[::1]:9099",
        "oauth2.googleapis.com",
    ] {
        let r = h
            .send(with_header("GET", "/oauth2/v3/certs", "host", host, ""))
            .await;
        assert_eq!(r.status, 200, "{host}");
    }
    // A metadata server on its own port too.
    let app = gatehouse_idp::metadata_app(
        h.state.clone(),
        "worker@demo-project.iam.gserviceaccount.com".into(),
    );
    let token = "/computeMetadata/v1/instance/service-accounts/default/identity?audience=x";
    let mut request = with_header("GET", token, "host", "rebind.attacker.example", "");
    request
        .headers_mut()
        .insert("metadata-flavor", "Google".parse().unwrap());
    let r = send(app.clone(), request).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let mut request = with_header("GET", token, "host", "metadata.google.internal", "");
    request
        .headers_mut()
        .insert("metadata-flavor", "Google".parse().unwrap());
    assert_eq!(send(app, request).await.status, 200);

    // Names added with --allowed-host.
    let mut config = crate::config();
    config.allowed_hosts = vec!["idp".to_owned()];
    let h = harness_with(config).await;
    let r = h
        .send(with_header(
            "GET",
            "/oauth2/v3/certs",
            "host",
            "idp:9099",
            "",
        ))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn other_sites_pages_cannot_use_the_emulators_own_api() {
    let h = harness().await;
    // A `text/plain` POST from any page needs no preflight: registering a client whose
    // redirect the attacker owns would hand it tokens for any user.
    let evil = r#"{"clientId":"evil","redirectUris":["https://evil.example/cb"]}"#;
    let before = count(&h.state, "idp_clients").await;
    // Pages served from a public or LAN address are other sites too, and so are Google's
    // own pages: only a hosts file could point those names here.
    for origin in [
        "https://evil.example",
        "null",
        "http://203.0.113.7",
        "http://192.168.1.20:8080",
        "http://[2001:db8::1]:8080",
        "https://accounts.google.com",
        "http://metadata.google.internal",
    ] {
        let r = h
            .send(with_header(
                "POST",
                "/emulator/v1/clients",
                "origin",
                origin,
                evil,
            ))
            .await;
        assert_eq!(r.status, 403, "{origin}: {}", r.text());
    }
    let r = h
        .send(with_header(
            "POST",
            "/emulator/v1/accounts/token",
            "origin",
            "https://evil.example",
            r#"{"email":"alice@example.com"}"#,
        ))
        .await;
    assert_eq!(r.status, 403);
    assert!(!r.text().contains("id_token"));
    assert_eq!(count(&h.state, "idp_clients").await, before);
    // A local page (a test harness in the browser) and non-browser clients may.
    let r = h
        .send(with_header(
            "POST",
            "/emulator/v1/clients",
            "origin",
            "http://127.0.0.1:8080",
            evil,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // An emulator reached at a LAN address accepts pages of that same address.
    let mut request = with_header(
        "POST",
        "/emulator/v1/clients",
        "origin",
        "http://192.168.1.20:3000",
        "",
    );
    request
        .headers_mut()
        .insert("host", "192.168.1.20:9099".parse().unwrap());
    *request.body_mut() = Body::from(evil.replace("\"evil\"", "\"lan\""));
    let r = h.send(request).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Wiping the project's users: not for another site's page, nor its preflight.
    let users = count(&h.state, "idp_fb_users").await;
    let r = h
        .post_json(
            "/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k",
            &json!({"email": "carol@example.com", "password": "carol-password", "returnSecureToken": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(count(&h.state, "idp_fb_users").await, users + 1);
    let wipe = "/emulator/v1/projects/demo-project/accounts";
    for origin in ["https://evil.example", "http://203.0.113.7"] {
        for method in ["OPTIONS", "DELETE"] {
            let r = h
                .send(with_header(method, wipe, "origin", origin, ""))
                .await;
            assert_eq!(r.status, 403, "{origin} {method}: {}", r.text());
        }
    }
    assert_eq!(count(&h.state, "idp_fb_users").await, users + 1);
    let r = h
        .send(with_header(
            "DELETE",
            wipe,
            "origin",
            "http://127.0.0.1:4000",
            "",
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(count(&h.state, "idp_fb_users").await, 0);
    // Google's own endpoints keep answering any page (the sign-in flow is cross-site).
    let r = h
        .send(with_header(
            "GET",
            "/oauth2/v3/certs",
            "origin",
            "https://evil.example",
            "",
        ))
        .await;
    assert_eq!(r.status, 200);
}

#[test]
fn a_client_registrations_debug_hides_its_secret() {
    let request: gatehouse_idp::oauth::ClientRequest =
        serde_json::from_value(json!({"clientId": "c", "clientSecret": "s3cret-value"})).unwrap();
    let shown = format!("{request:?}");
    assert!(!shown.contains("s3cret-value"), "{shown}");
    assert!(shown.contains("<hidden>"));
}
