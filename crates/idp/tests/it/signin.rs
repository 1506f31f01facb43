//! The sign-in page, implicit and code flows, clients and redirect URIs.

use crate::*;
use axum::body::Body;
use serde_json::json;

pub const CLIENT: &str = "gatehouse-web.apps.googleusercontent.com";
pub const CB: &str = "http://127.0.0.1:5555/callback";

pub(crate) fn auth_query(pairs: &[(&str, &str)]) -> String {
    format!(
        "/o/oauth2/v2/auth?{}",
        serde_urlencoded::to_string(pairs).unwrap()
    )
}

/// GETs the chooser and returns (cookie, csrf field value).
async fn open_chooser(h: &Harness, pairs: &[(&str, &str)]) -> (String, String, String) {
    let r = h.get(&auth_query(pairs)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = r.text();
    let marker = "name=\"csrf_token\" value=\"";
    let start = page.find(marker).unwrap() + marker.len();
    let csrf = page[start..start + page[start..].find('"').unwrap()].to_owned();
    (cookie, csrf, page)
}

async fn post_chooser(h: &Harness, cookie: Option<&str>, form: &[(&str, &str)]) -> Reply {
    let mut req = Request::post("/o/oauth2/v2/auth")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    h.send(
        req.body(Body::from(serde_urlencoded::to_string(form).unwrap()))
            .unwrap(),
    )
    .await
}

pub(crate) fn fragment_params(location: &str) -> std::collections::HashMap<String, String> {
    let (_, frag) = location.split_once('#').unwrap();
    serde_urlencoded::from_str(frag).unwrap()
}

pub(crate) fn query_params(location: &str) -> std::collections::HashMap<String, String> {
    let (_, q) = location.split_once('?').unwrap();
    serde_urlencoded::from_str(q).unwrap()
}

#[tokio::test]
async fn choose_an_account_implicit_flow() {
    let h = harness().await;
    let base = [
        ("client_id", CLIENT),
        ("redirect_uri", CB),
        ("response_type", "id_token"),
        ("scope", "openid email profile"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("state", "st&ate=1"),
    ];
    let (cookie, csrf, page) = open_chooser(&h, &base).await;
    assert!(page.contains("alice@example.com") && page.contains("bob@example.com"));
    assert!(page.contains("Use another account"));
    let mut form: Vec<(&str, &str)> = base.to_vec();
    form.extend([
        ("csrf_token", csrf.as_str()),
        ("action", "choose"),
        ("email", "alice@example.com"),
    ]);
    // Without the cookie: refused, nothing minted.
    let r = post_chooser(&h, None, &form).await;
    assert_eq!(r.status, 403);
    assert!(r.header("location").is_none());
    let r = post_chooser(&h, Some(&cookie), &form).await;
    assert_eq!(r.status, 303);
    let loc = r.header("location").unwrap();
    assert!(loc.starts_with(&format!("{CB}#")));
    let p = fragment_params(loc);
    assert_eq!(p["state"], "st&ate=1");
    let token = &p["id_token"];
    let v = h.google_verifier(&[CLIENT]).await;
    let id = v.verify(token, h.now()).await.unwrap();
    assert_eq!(id.email(), Some("alice@example.com"));
    let c = claims(token);
    assert_eq!(c["iss"], "https://accounts.google.com");
    assert_eq!(c["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(c["aud"], CLIENT);
    assert_eq!(c["azp"], CLIENT);
    assert_eq!(c["name"], "Alice");
    assert_eq!(c["given_name"], "Alice");
    assert!(c["picture"].is_string());
    assert_eq!(c["sub"].as_str().unwrap().len(), 21);
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        3600
    );
}

#[tokio::test]
async fn use_another_account_adds_it() {
    let h = harness().await;
    let base = [
        ("client_id", CLIENT),
        ("redirect_uri", CB),
        ("response_type", "id_token token"),
        ("scope", "openid email"),
        ("nonce", "n1"),
    ];
    let (cookie, csrf, _) = open_chooser(&h, &base).await;
    let mut form: Vec<(&str, &str)> = base.to_vec();
    form.extend([
        ("csrf_token", csrf.as_str()),
        ("action", "add"),
        ("new_email", "Dana.Scully@fbi.example"),
        ("new_hd", "fbi.example"),
    ]);
    let r = post_chooser(&h, Some(&cookie), &form).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let p = fragment_params(r.header("location").unwrap());
    let c = claims(&p["id_token"]);
    assert_eq!(c["email"], "dana.scully@fbi.example");
    assert_eq!(c["hd"], "fbi.example");
    assert!(c.get("name").is_none(), "no profile scope");
    assert_eq!(
        c["at_hash"],
        gatehouse_idp::oauth::at_hash(&p["access_token"]).as_str()
    );
    let (_, _, page) = open_chooser(&h, &base).await;
    assert!(page.contains("dana.scully@fbi.example"));
    // A bad email re-renders the page with an error and adds nothing.
    let before = count(&h.state, "idp_accounts").await;
    let mut form: Vec<(&str, &str)> = base.to_vec();
    form.extend([
        ("csrf_token", csrf.as_str()),
        ("action", "add"),
        ("new_email", "not an email"),
    ]);
    let r = post_chooser(&h, Some(&cookie), &form).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not a valid email"));
    assert_eq!(count(&h.state, "idp_accounts").await, before);
}

#[tokio::test]
async fn bad_client_or_redirect_gets_an_error_page_never_a_redirect() {
    let h = harness().await;
    for pairs in [
        vec![
            ("client_id", CLIENT),
            ("redirect_uri", "https://evil.example/cb"),
            ("response_type", "id_token"),
            ("scope", "openid"),
            ("nonce", "n"),
        ],
        vec![
            ("client_id", "unknown.apps.googleusercontent.com"),
            ("redirect_uri", CB),
            ("response_type", "id_token"),
            ("scope", "openid"),
            ("nonce", "n"),
        ],
        vec![
            ("client_id", CLIENT),
            ("response_type", "id_token"),
            ("scope", "openid"),
            ("nonce", "n"),
        ],
        vec![
            ("client_id", CLIENT),
            ("redirect_uri", "http://127.0.0.1:5555/cb#frag"),
            ("response_type", "id_token"),
            ("scope", "openid"),
            ("nonce", "n"),
        ],
    ] {
        let r = h.get(&auth_query(&pairs)).await;
        assert_eq!(r.status, 400, "{pairs:?}");
        assert!(r.header("location").is_none());
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
    }
    // Errors after the redirect URI is trusted go back to it.
    let r = h
        .get(&auth_query(&[
            ("client_id", CLIENT),
            ("redirect_uri", CB),
            ("response_type", "id_token"),
            ("scope", "openid"),
            ("state", "s"),
        ]))
        .await;
    assert_eq!(r.status, 302);
    let p = fragment_params(r.header("location").unwrap());
    assert_eq!(p["error"], "invalid_request", "nonce is required");
    assert_eq!(p["state"], "s");
    let r = h
        .get(&auth_query(&[
            ("client_id", CLIENT),
            ("redirect_uri", CB),
            ("response_type", "bogus"),
            ("scope", "openid"),
        ]))
        .await;
    assert_eq!(r.status, 302);
}

#[tokio::test]
async fn prompt_none_with_login_hint() {
    let h = harness().await;
    let mut pairs = vec![
        ("client_id", CLIENT),
        ("redirect_uri", CB),
        ("response_type", "id_token"),
        ("scope", "openid email"),
        ("nonce", "nn"),
        ("prompt", "none"),
        ("login_hint", "bob@example.com"),
    ];
    let r = h.get(&auth_query(&pairs)).await;
    assert_eq!(r.status, 302);
    let p = fragment_params(r.header("location").unwrap());
    assert_eq!(claims(&p["id_token"])["email"], "bob@example.com");
    // Without login_hint: the browser's last chosen account (cookie), else login_required.
    let no_hint: Vec<(&str, &str)> = pairs[..6].to_vec();
    let r = h.get(&auth_query(&no_hint)).await;
    assert_eq!(
        fragment_params(r.header("location").unwrap())["error"],
        "login_required"
    );
    let (cookie, csrf, _) = open_chooser(&h, &pairs[..5]).await;
    let mut form: Vec<(&str, &str)> = pairs[..5].to_vec();
    form.extend([
        ("csrf_token", csrf.as_str()),
        ("action", "choose"),
        ("email", "alice@example.com"),
    ]);
    let r = post_chooser(&h, Some(&cookie), &form).await;
    let session = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(session.starts_with("gatehouse_account="));
    let r = h
        .send(
            Request::get(auth_query(&no_hint))
                .header("cookie", session)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let p = fragment_params(r.header("location").unwrap());
    assert_eq!(claims(&p["id_token"])["email"], "alice@example.com");
    pairs[6] = ("login_hint", "nobody@example.com");
    let r = h.get(&auth_query(&pairs)).await;
    let p = fragment_params(r.header("location").unwrap());
    assert_eq!(p["error"], "login_required");
    assert!(!p.contains_key("id_token"));
}

#[tokio::test]
async fn code_flow_with_pkce_refresh_and_replay() {
    let h = harness().await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let pairs = [
        ("client_id", CLIENT),
        ("redirect_uri", CB),
        ("response_type", "code"),
        ("scope", "openid email profile"),
        ("nonce", "cn"),
        ("state", "cs"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("prompt", "none"),
        ("login_hint", "alice@example.com"),
    ];
    let r = h.get(&auth_query(&pairs)).await;
    assert_eq!(r.status, 302);
    let loc = r.header("location").unwrap();
    assert!(loc.starts_with(&format!("{CB}?")), "code goes in the query");
    let q = query_params(loc);
    assert_eq!(q["state"], "cs");
    let code = q["code"].clone();
    let codes_before = count(&h.state, "idp_refresh_tokens").await;
    // Wrong verifier: refused, and the code is not consumed.
    let r = h
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CB),
                ("client_id", CLIENT),
                ("code_verifier", &"a".repeat(43)),
            ],
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    // Wrong redirect URI.
    let r = h
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:5555/other"),
                ("client_id", CLIENT),
                ("code_verifier", verifier),
            ],
        )
        .await;
    assert_eq!(r.json()["error"], "redirect_uri_mismatch");
    assert_eq!(count(&h.state, "idp_refresh_tokens").await, codes_before);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CB),
        ("client_id", CLIENT),
        ("code_verifier", verifier),
    ];
    let r = h.post_form("/token", &form).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    let id_token = t["id_token"].as_str().unwrap();
    let c = claims(id_token);
    assert_eq!(c["nonce"], "cn");
    assert_eq!(
        c["at_hash"],
        gatehouse_idp::oauth::at_hash(t["access_token"].as_str().unwrap()).as_str()
    );
    h.google_verifier(&[CLIENT])
        .await
        .verify(id_token, h.now())
        .await
        .unwrap();
    // Refresh.
    let r = h
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", t["refresh_token"].as_str().unwrap()),
                ("client_id", CLIENT),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["id_token"].is_string());
    let refreshed = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = h
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "1//nope"),
                ("client_id", CLIENT),
            ],
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_grant");
    // Userinfo with the access token.
    let r = h
        .send(
            Request::get("/v1/userinfo")
                .header(
                    "authorization",
                    format!("Bearer {}", t["access_token"].as_str().unwrap()),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.json()["email"], "alice@example.com");
    assert_eq!(r.json()["name"], "Alice");
    let r = h.get("/v1/userinfo").await;
    assert_eq!(r.status, 401);
    // Tokeninfo for both kinds of token; garbage is invalid_token.
    let r = h
        .get(&format!("/oauth2/v3/tokeninfo?id_token={id_token}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["email"], "alice@example.com");
    assert_eq!(r.json()["aud"], CLIENT);
    assert_eq!(r.json()["alg"], "RS256");
    assert!(r.json()["exp"].is_string());
    let r = h
        .post_form(
            "/oauth2/v3/tokeninfo",
            &[("access_token", t["access_token"].as_str().unwrap())],
        )
        .await;
    assert_eq!(r.json()["email"], "alice@example.com");
    assert_eq!(r.json()["scope"], "openid email profile");
    let r = h.get("/oauth2/v3/tokeninfo?id_token=a.b.c").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_token");

    // Replay refused, and what the code's first use issued is revoked (RFC 6749 4.1.2):
    // someone else has held the code.
    let r = h.post_form("/token", &form).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    let r = h
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", t["refresh_token"].as_str().unwrap()),
                ("client_id", CLIENT),
            ],
        )
        .await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.text());
    // Access tokens minted by refresh came from that code too.
    for access in [t["access_token"].as_str().unwrap(), refreshed.as_str()] {
        let r = h
            .post_form("/oauth2/v3/tokeninfo", &[("access_token", access)])
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
}

/// A code exchange for alice at the default client: (access, refresh) tokens.
async fn alices_grant(h: &Harness) -> (String, String) {
    let code = alices_code(h, CLIENT, CB).await;
    let r = h
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CB),
                ("client_id", CLIENT),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    (
        t["access_token"].as_str().unwrap().to_owned(),
        t["refresh_token"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn refresh_with(h: &Harness, refresh: &str) -> Reply {
    h.post_form(
        "/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", CLIENT),
        ],
    )
    .await
}

async fn access_token_is_live(h: &Harness, access: &str) -> bool {
    let r = h
        .post_form("/oauth2/v3/tokeninfo", &[("access_token", access)])
        .await;
    r.status == 200
}

#[tokio::test]
async fn revoking_either_token_of_a_grant_revokes_the_whole_grant() {
    let h = harness().await;
    // Google: "If the token is an access token and it has a corresponding refresh token, the
    // refresh token will also be revoked." A client's "disconnect" revokes its access token.
    let (access, refresh) = alices_grant(&h).await;
    let r = refresh_with(&h, &refresh).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refreshed = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = h.post_form("/revoke", &[("token", &access)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = refresh_with(&h, &refresh).await;
    assert_eq!(r.json()["error"], "invalid_grant", "{}", r.text());
    assert!(!access_token_is_live(&h, &refreshed).await);
    // Revoking the refresh token ends the access tokens it and its code issued.
    let (access, refresh) = alices_grant(&h).await;
    let r = refresh_with(&h, &refresh).await;
    let refreshed = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = h.post_form("/revoke", &[("token", &refresh)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!access_token_is_live(&h, &access).await);
    assert!(!access_token_is_live(&h, &refreshed).await);
    // Another grant of the same user and client is untouched.
    let (access, refresh) = alices_grant(&h).await;
    let (other_access, _) = alices_grant(&h).await;
    let r = h.post_form("/revoke", &[("token", &access)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(access_token_is_live(&h, &other_access).await);
    assert_eq!(
        refresh_with(&h, &refresh).await.json()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn registered_clients_secrets_and_extension_redirects() {
    let h = harness().await;
    let r = h
        .post_json(
            "/emulator/v1/clients",
            &json!({"clientId": "web-1.apps.googleusercontent.com", "clientSecret": "s3cret", "redirectUris": ["https://app.example/cb"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("clientSecret").is_none());
    let ext = "abcdefghijklmnopabcdefghijklmnop";
    let r = h
        .post_json(
            "/emulator/v1/clients",
            &json!({"clientId": "ext-1", "type": "extension", "extensionId": ext}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let redirect = format!("https://{ext}.chromiumapp.org/");
    let r = h
        .get(&auth_query(&[
            ("client_id", "ext-1"),
            ("redirect_uri", &redirect),
            ("response_type", "id_token"),
            ("scope", "openid email"),
            ("nonce", "x"),
            ("prompt", "none"),
            ("login_hint", "alice@example.com"),
        ]))
        .await;
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with(&format!("{redirect}#id_token="))
    );
    // The extension client accepts no other host, the web client only its exact URI.
    let r = h
        .get(&auth_query(&[
            ("client_id", "ext-1"),
            ("redirect_uri", "https://other.chromiumapp.org/"),
            ("response_type", "id_token"),
            ("scope", "openid"),
            ("nonce", "x"),
        ]))
        .await;
    assert_eq!(r.status, 400);
    let r = h
        .get(&auth_query(&[
            ("client_id", "web-1.apps.googleusercontent.com"),
            ("redirect_uri", "https://app.example/cb/"),
            ("response_type", "code"),
            ("scope", "openid"),
        ]))
        .await;
    assert_eq!(r.status, 400);
    // Code flow for a confidential client: the secret is required and checked.
    let r = h
        .get(&auth_query(&[
            ("client_id", "web-1.apps.googleusercontent.com"),
            ("redirect_uri", "https://app.example/cb"),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("prompt", "none"),
            ("login_hint", "bob@example.com"),
        ]))
        .await;
    let code = query_params(r.header("location").unwrap())["code"].clone();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "https://app.example/cb"),
        ("client_id", "web-1.apps.googleusercontent.com"),
        ("client_secret", "wrong"),
    ];
    let r = h.post_form("/token", &form).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    form[4] = ("client_secret", "s3cret");
    let r = h.post_form("/token", &form).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A duplicate registration is refused.
    let r = h
        .post_json(
            "/emulator/v1/clients",
            &json!({"clientId": "ext-1", "type": "extension", "extensionId": ext}),
        )
        .await;
    assert_eq!(r.status, 400);
}

/// A code for alice at `client`'s `redirect` (no PKCE).
async fn alices_code(h: &Harness, client: &str, redirect: &str) -> String {
    let r = h
        .get(&auth_query(&[
            ("client_id", client),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("prompt", "none"),
            ("login_hint", "alice@example.com"),
        ]))
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    query_params(r.header("location").unwrap())["code"].clone()
}

/// `POST /token` with `Authorization: Basic` for `id:secret` (RFC 6749 §2.3.1).
async fn token_with_basic(h: &Harness, id: &str, secret: &str, form: &[(&str, &str)]) -> Reply {
    use base64::Engine as _;
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    h.send(
        Request::post("/token")
            .header("authorization", format!("Basic {credentials}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(serde_urlencoded::to_string(form).unwrap()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn http_basic_client_credentials_with_and_without_a_secret() {
    let h = harness().await;
    // A public client's empty secret in the header is no secret, as `client_secret=` in the
    // form is (requests-oauthlib and Go's oauth2 in header style send `id:`).
    let code = alices_code(&h, CLIENT, CB).await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CB),
    ];
    let r = token_with_basic(&h, CLIENT, "", &exchange).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let r = token_with_basic(
        &h,
        CLIENT,
        "",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Credentials in both places, or two different client ids: refused.
    let both = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("client_secret", "x"),
    ];
    let r = token_with_basic(&h, CLIENT, "", &both).await;
    assert_eq!(r.json()["error"], "invalid_request", "{}", r.text());
    let mismatch = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("client_id", CLIENT),
    ];
    let r = token_with_basic(&h, "other.apps.googleusercontent.com", "", &mismatch).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_client");

    // A confidential client: its secret by Basic works, an empty one is a missing one.
    let web = "web-1.apps.googleusercontent.com";
    let web_cb = "https://app.example/cb";
    let r = h
        .post_json(
            "/emulator/v1/clients",
            &json!({"clientId": web, "clientSecret": "s3cret", "redirectUris": [web_cb]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let code = alices_code(&h, web, web_cb).await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", web_cb),
    ];
    let r = token_with_basic(&h, web, "", &exchange).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error_description"], "client_secret is missing.");
    let r = token_with_basic(&h, web, "s3cret", &exchange).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn test_user_token_api() {
    let h = harness().await;
    let r = h
        .post_json(
            "/emulator/v1/accounts/token",
            &json!({"email": "eve@example.com"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json()["id_token"].as_str().unwrap().to_owned();
    let id = h
        .google_verifier(&[CLIENT])
        .await
        .verify(&t, h.now())
        .await
        .unwrap();
    assert_eq!(id.email(), Some("eve@example.com"));
    let r = h
        .post_json(
            "/emulator/v1/accounts/token",
            &json!({"email": "eve@example.com", "audience": "nope"}),
        )
        .await;
    assert_eq!(r.status, 401);
}
