//! Every admission decision: 401 vs 403 vs 503, token sources and their precedence, what
//! goes upstream, public routes.

use crate::support::*;
use gatehouse_verify::jws::SIGNATURE_REMOVED;
use serde_json::json;

#[tokio::test]
async fn missing_token_is_401_with_challenge_and_json_reason() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allAuthenticatedUsers"])).await;
    let seen = send(client().get(gw.url("/hello"))).await;
    assert_eq!(seen.status, 401);
    assert_eq!(
        seen.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\", error_description=\"missing_token\"")
    );
    assert_eq!(
        seen.body,
        json!({"error": "invalid_token", "reason": "missing_token"})
    );
    assert!(seen.header("location").is_none(), "never a redirect");
    // `Bearer` with nothing after it is no token either.
    let seen = send(client().get(gw.url("/")).header("authorization", "Bearer ")).await;
    assert_eq!(seen.status, 401);
}

#[tokio::test]
async fn valid_granted_token_reaches_upstream_with_identity() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["user:alice@example.com"])).await;
    let token = issuer.token("alice@example.com");
    let seen = send(client().get(gw.url("/x?y=1")).bearer_auth(&token)).await;
    assert_eq!(seen.status, 200, "{:?}", seen.body);
    assert_eq!(seen.body["uri"], "/x?y=1");
    let up = upstream_headers(&seen);
    assert_eq!(
        up.header("x-goog-authenticated-user-email"),
        Some("accounts.google.com:alice@example.com")
    );
    assert_eq!(
        up.header("x-goog-authenticated-user-id"),
        Some("issuer.test:sub-alice@example.com")
    );
    assert!(up.header("x-goog-iap-jwt-assertion").is_some());
    // Forwarded as Cloud Run does: signature replaced.
    let (signed, _) = token.rsplit_once('.').unwrap();
    assert_eq!(
        up.header("authorization"),
        Some(format!("Bearer {signed}.{SIGNATURE_REMOVED}").as_str())
    );
}

#[tokio::test]
async fn valid_token_of_a_non_member_is_403() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["user:alice@example.com"])).await;
    let seen = send(
        client()
            .get(gw.url("/"))
            .bearer_auth(issuer.token("mallory@example.com")),
    )
    .await;
    assert_eq!(seen.status, 403);
    assert_eq!(
        seen.body,
        json!({"error": "permission_denied", "reason": "not_invoker"})
    );
    assert!(seen.header("www-authenticate").is_none());
}

#[tokio::test]
async fn refused_tokens_are_401_with_their_reason_code() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allAuthenticatedUsers"])).await;
    let cases = [
        (
            issuer.token_with(
                "a@example.com",
                json!({"exp": now() - 3600, "iat": now() - 7200}),
            ),
            "expired",
        ),
        (
            issuer.token_with("a@example.com", json!({"aud": "https://other.example"})),
            "wrong_audience",
        ),
        (
            issuer.token_with("a@example.com", json!({"iss": "https://evil.test"})),
            "wrong_issuer",
        ),
        ("not.a.jwt".to_owned(), "malformed"),
    ];
    for (token, reason) in cases {
        let seen = send(client().get(gw.url("/")).bearer_auth(&token)).await;
        assert_eq!(seen.status, 401, "{reason}");
        assert_eq!(seen.body["reason"], reason);
        assert_eq!(
            seen.header("www-authenticate"),
            Some(
                format!("Bearer error=\"invalid_token\", error_description=\"{reason}\"").as_str()
            )
        );
    }
}

#[tokio::test]
async fn serverless_authorization_takes_precedence_and_leaves_authorization_to_the_app() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["user:alice@example.com"])).await;
    let token = issuer.token("alice@example.com");
    let app_auth = "Bearer the-apps-own-credential";
    let seen = send(
        client()
            .get(gw.url("/"))
            .header("x-serverless-authorization", format!("Bearer {token}"))
            .header("authorization", app_auth),
    )
    .await;
    assert_eq!(seen.status, 200);
    let up = upstream_headers(&seen);
    assert_eq!(
        up.header("authorization"),
        Some(app_auth),
        "Authorization untouched"
    );
    let (signed, _) = token.rsplit_once('.').unwrap();
    assert_eq!(
        up.header("x-serverless-authorization"),
        Some(format!("Bearer {signed}.{SIGNATURE_REMOVED}").as_str())
    );
    // A bad X-Serverless-Authorization is not rescued by a good Authorization.
    let seen = send(
        client()
            .get(gw.url("/"))
            .header("x-serverless-authorization", "Bearer garbage")
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(seen.status, 401);
}

/// `Authorization` (or `X-Serverless-Authorization`) sent twice: judging one value while
/// the app may read the other would let an unverified token ride on a verified one.
#[tokio::test]
async fn a_token_header_sent_twice_is_refused_and_names_nobody_on_a_public_route() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let checked = |name: &str, prefix: &str, allow: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"http://{up}\"\nurl = \"{AUD}\"\nissuers = [{{ profile = \"{ISSUER}\", jwks = \"{}\" }}]\nallow = [\"{allow}\"]\nforward_token = \"keep\"\n",
            issuer.jwks_url()
        )
    };
    let gw = gateway(&format!(
        "{}{}",
        checked("api", "/api", "user:alice@example.com"),
        checked("public", "/", "allUsers")
    ))
    .await;
    let alice = issuer.token("alice@example.com");
    let mallory = issuer.token_with("mallory@example.com", json!({"aud": "elsewhere"}));
    for header in ["authorization", "x-serverless-authorization"] {
        let seen = send(
            client()
                .get(gw.url("/api/x"))
                .header(header, format!("Bearer {alice}"))
                .header(header, format!("Bearer {mallory}")),
        )
        .await;
        assert_eq!(seen.status, 400, "{header}");
        assert_eq!(
            seen.body,
            json!({"error": "invalid_request", "reason": "repeated_token"})
        );
        assert!(
            seen.body.get("headers").is_none(),
            "the upstream saw nothing"
        );
        // The same token twice is no better.
        let seen = send(
            client()
                .get(gw.url("/api/x"))
                .header(header, format!("Bearer {alice}"))
                .header(header, format!("Bearer {alice}")),
        )
        .await;
        assert_eq!(seen.status, 400, "{header}");
    }
    // Once, the same token is admitted: the refusal above is the repetition's.
    let seen = send(client().get(gw.url("/api/x")).bearer_auth(&alice)).await;
    assert_eq!(seen.status, 200);
    // A public route refuses nothing, but a repeated header names nobody: both values go
    // to the app as sent, and no identity is added.
    let seen = send(
        client()
            .get(gw.url("/"))
            .header("authorization", format!("Bearer {alice}"))
            .header("authorization", format!("Bearer {mallory}")),
    )
    .await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    assert_eq!(
        up_h.all("authorization"),
        [format!("Bearer {alice}"), format!("Bearer {mallory}")]
    );
    assert!(up_h.header("x-goog-authenticated-user-email").is_none());
    assert!(up_h.header("x-goog-iap-jwt-assertion").is_none());
}

#[tokio::test]
async fn forward_token_keep_and_strip() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let route = |name: &str, prefix: &str, mode: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"http://{up}\"\nurl = \"{AUD}\"\nissuers = [{{ profile = \"{ISSUER}\", jwks = \"{}\" }}]\nallow = [\"allAuthenticatedUsers\"]\nforward_token = \"{mode}\"\n",
            issuer.jwks_url()
        )
    };
    let gw = gateway(&format!(
        "{}{}",
        route("keep", "/keep", "keep"),
        route("strip", "/strip", "strip")
    ))
    .await;
    let token = issuer.token("a@example.com");
    let seen = send(client().get(gw.url("/keep")).bearer_auth(&token)).await;
    assert_eq!(
        upstream_headers(&seen).header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    let seen = send(client().get(gw.url("/strip/x")).bearer_auth(&token)).await;
    assert_eq!(seen.status, 200);
    assert_eq!(upstream_headers(&seen).header("authorization"), None);
}

#[tokio::test]
async fn public_route_refuses_nothing_and_adds_identity_only_for_a_verified_token() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "[[route]]\nname = \"vote\"\nupstream = \"http://{up}\"\nurl = \"{AUD}\"\nissuers = [{{ profile = \"{ISSUER}\", jwks = \"{}\" }}]\nallow = [\"allUsers\"]\n",
        issuer.jwks_url()
    ))
    .await;
    // No token: passes, no identity.
    let seen = send(client().post(gw.url("/"))).await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    assert!(up_h.header("x-goog-authenticated-user-email").is_none());
    // A token that does not verify: passes untouched, no identity.
    let bad = issuer.token_with("a@example.com", json!({"aud": "elsewhere"}));
    let seen = send(client().post(gw.url("/")).bearer_auth(&bad)).await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    assert_eq!(
        up_h.header("authorization"),
        Some(format!("Bearer {bad}").as_str())
    );
    assert!(up_h.header("x-goog-authenticated-user-email").is_none());
    assert!(up_h.header("x-goog-iap-jwt-assertion").is_none());
    // A token that verifies: Authorization untouched (the app verifies it itself) and
    // identity headers added.
    let good = issuer.token("bob@example.com");
    let seen = send(client().post(gw.url("/")).bearer_auth(&good)).await;
    let up_h = upstream_headers(&seen);
    assert_eq!(
        up_h.header("authorization"),
        Some(format!("Bearer {good}").as_str())
    );
    assert_eq!(
        up_h.header("x-goog-authenticated-user-email"),
        Some("accounts.google.com:bob@example.com")
    );
}

/// An email the issuer does not vouch for (`email_verified: false`: a fresh
/// email/password sign-up names any address) is asserted nowhere: no email header, no
/// `email` in the assertion, no bucket of that name. The caller is its subject.
#[tokio::test]
async fn an_unverified_email_is_never_asserted() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "{}rate_limit = {{ per_second = 0.01, burst = 1 }}\n",
        checked_route(&issuer, up, &["allAuthenticatedUsers"])
    ))
    .await;
    let claimed = issuer.token_with("ceo@example.com", json!({"email_verified": false}));
    let seen = send(client().get(gw.url("/")).bearer_auth(&claimed)).await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    assert!(up_h.header("x-goog-authenticated-user-email").is_none());
    assert_eq!(
        up_h.header("x-goog-authenticated-user-id"),
        Some("issuer.test:sub-ceo@example.com")
    );
    let assertion = up_h.header("x-goog-iap-jwt-assertion").unwrap();
    let claims = jwt_claims(assertion);
    assert!(claims.get("email").is_none(), "{claims}");
    assert_eq!(claims["sub"], "issuer.test:sub-ceo@example.com");
    // The real ceo's bucket is not the claimant's to spend.
    let real = issuer.token("ceo@example.com");
    let r = client()
        .get(gw.url("/"))
        .bearer_auth(&real)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the claimant spent the real user's bucket");
}

#[tokio::test]
async fn unreachable_issuer_keys_are_503_not_401() {
    let up = echo_upstream().await;
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = gateway(&format!(
        "[[route]]\nupstream = \"http://{up}\"\nurl = \"{AUD}\"\nissuers = [{{ profile = \"{ISSUER}\", jwks = \"http://{dead}/certs\" }}]\nallow = [\"allAuthenticatedUsers\"]\n"
    ))
    .await;
    let issuer = Issuer::start().await;
    let seen = send(
        client()
            .get(gw.url("/"))
            .bearer_auth(issuer.token("a@example.com")),
    )
    .await;
    assert_eq!(seen.status, 503);
    assert_eq!(seen.body["reason"], "keys_unavailable");
    assert!(seen.header("retry-after").is_some());
    let ready = client()
        .get(gw.url("/_gatehouse/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn groups_domains_and_membership_edge_cases() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        r#"
[groups]
ops = ["user:Ops@Example.com"]

[[route]]
upstream = "http://{up}"
url = "{AUD}"
issuers = [{{ profile = "{ISSUER}", jwks = "{jwks}" }}]
policy = '{{"bindings":[{{"role":"roles/run.invoker","members":["group:ops","domain:corp.example"]}},{{"role":"roles/run.admin","members":["user:eve@example.com"]}}]}}'
"#,
        jwks = issuer.jwks_url()
    ))
    .await;
    let status = |token: String| {
        let url = gw.url("/");
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Group member, email case differs.
    assert_eq!(status(issuer.token("OPS@example.COM")).await, 200);
    // Domain member.
    assert_eq!(status(issuer.token("carol@corp.example")).await, 200);
    // Look-alike and sub-domains are not the domain.
    assert_eq!(status(issuer.token("carol@evilcorp.example")).await, 403);
    assert_eq!(status(issuer.token("carol@sub.corp.example")).await, 403);
    assert_eq!(status(issuer.token("carol@corp.example.evil")).await, 403);
    // Unverified email matches nothing.
    assert_eq!(
        status(issuer.token_with("ops@example.com", json!({"email_verified": false}))).await,
        403
    );
    // No email at all.
    assert_eq!(
        status(issuer.token_with(
            "ops@example.com",
            json!({"email": null, "email_verified": null})
        ))
        .await,
        403
    );
    // Another role is not the invoker role.
    assert_eq!(status(issuer.token("eve@example.com")).await, 403);
}

#[tokio::test]
async fn no_route_is_404_json() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "[[route]]\nhost = \"only.example\"\nupstream = \"http://{up}\"\nurl = \"{AUD}\"\nissuers = [{{ profile = \"{ISSUER}\", jwks = \"{}\" }}]\nallow = [\"allUsers\"]\n",
        issuer.jwks_url()
    ))
    .await;
    let seen = send(client().get(gw.url("/"))).await;
    assert_eq!(seen.status, 404);
    assert_eq!(seen.body["reason"], "no_route");
    let seen = send(
        client()
            .get(gw.url("/"))
            .header("host", "ONLY.example:8080"),
    )
    .await;
    assert_eq!(seen.status, 200);
}

#[tokio::test]
async fn cors_preflight_answered_from_the_allow_list() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "{}[route.cors]\nallow_origins = [\"https://app.example\"]\nallow_credentials = true\n",
        checked_route(&issuer, up, &["allAuthenticatedUsers"])
    ))
    .await;
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, gw.url("/api"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
    };
    let ok = preflight("https://app.example").send().await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let evil = preflight("https://evil.example").send().await.unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    // The actual request's refusal is readable by the allowed page.
    let r = client()
        .get(gw.url("/api"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test]
async fn cors_preflight_pass_and_require_auth_modes() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "{}[route.cors]\nmode = \"pass\"\n[[route]]\nname = \"strict\"\npath_prefix = \"/strict\"\nupstream = \"http://{up}\"\nurl = \"{AUD}\"\nissuers = [{{ profile = \"{ISSUER}\", jwks = \"{}\" }}]\nallow = [\"allAuthenticatedUsers\"]\n",
        checked_route(&issuer, up, &["allAuthenticatedUsers"]),
        issuer.jwks_url()
    ))
    .await;
    let preflight = |path: &str| {
        client()
            .request(reqwest::Method::OPTIONS, gw.url(path))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
    };
    // pass: the app answers the preflight, no token asked, no identity added.
    let seen = send(preflight("/api")).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.body["method"], "OPTIONS");
    assert!(
        upstream_headers(&seen)
            .header("x-goog-authenticated-user-email")
            .is_none()
    );
    // It passes unauthenticated as what a preflight is, a question without a body: a body
    // sent with it (to drive a handler that ignores the method) goes no further.
    let seen = send(preflight("/api").body("x".repeat(1000))).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.body["body_bytes"], 0);
    // Nor with credentials, which no browser sends with one: the policy was not checked,
    // so no token, no identity and no assertion signed by the gateway reach the app.
    let token = issuer.token("mallory@example.com");
    let seen = send(
        preflight("/api")
            .bearer_auth(&token)
            .header("x-serverless-authorization", format!("Bearer {token}")),
    )
    .await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    for name in [
        "authorization",
        "x-serverless-authorization",
        "x-goog-authenticated-user-email",
        "x-goog-authenticated-user-id",
        "x-goog-iap-jwt-assertion",
    ] {
        assert!(up_h.header(name).is_none(), "{name}");
    }
    // pass covers only preflights: the actual request still needs a token.
    assert_eq!(send(client().post(gw.url("/api"))).await.status, 401);
    // require_auth (the default, Cloud Run's behaviour): a preflight is a request like any other.
    assert_eq!(send(preflight("/strict")).await.status, 401);
}

/// A connection remembers the last token its client presented (a client sends the same one
/// until it expires), never past what a fresh verification would decide: another token on
/// the same connection is its own caller, a route with another audience judges the token
/// itself, and the token stops at its `exp`.
#[tokio::test]
async fn a_connection_remembers_its_token_no_further_than_verification_would() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let t0 = now();
    let clock = gatehouse_verify::FixedClock::at(t0);
    // The same issuer, another audience.
    let elsewhere = checked_route(&issuer, up, &["allAuthenticatedUsers"])
        .replace(
            "name = \"checked\"",
            "name = \"elsewhere\"\npath_prefix = \"/elsewhere\"",
        )
        .replace(AUD, "https://elsewhere.example");
    let (addr, _handle) = gateway_at(
        &format!(
            "{}{elsewhere}",
            checked_route(&issuer, up, &["allAuthenticatedUsers"])
        ),
        &clock,
    )
    .await;
    let c = client();
    let get = |path: &str, token: &str| {
        c.get(format!("http://{addr}{path}"))
            .bearer_auth(token.to_owned())
    };
    let a = token_at(&issuer, "a@example.com", t0);
    let b = token_at(&issuer, "b@example.com", t0);
    for (token, who) in [(&a, "a"), (&a, "a"), (&b, "b"), (&a, "a")] {
        let seen = send(get("/x", token)).await;
        assert_eq!(seen.status, 200, "{:?}", seen.body);
        assert_eq!(
            upstream_headers(&seen).header("x-goog-authenticated-user-email"),
            Some(format!("accounts.google.com:{who}@example.com").as_str())
        );
    }
    let seen = send(get("/elsewhere/x", &a)).await;
    assert_eq!(seen.status, 401);
    assert_eq!(seen.body["reason"], "wrong_audience");
    assert_eq!(send(get("/x", &a)).await.status, 200);

    clock.set(t0 + 3600 + 600);
    let seen = send(get("/x", &a)).await;
    assert_eq!(seen.status, 401);
    assert_eq!(seen.body["reason"], "expired");
    // All of it on one connection.
    let metrics = metrics_via(&c, addr).await;
    assert!(
        metrics.contains("gatehouse_connections_total 1\n"),
        "{metrics}"
    );
}

/// Anonymous callers are bucketed by address, and an IPv6 client holds a /64 at least: its
/// addresses share one bucket, or each would be a bucket of its own.
#[tokio::test]
async fn anonymous_ipv6_callers_are_limited_per_64() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "trusted_proxies = [\"127.0.0.1\"]\n{}rate_limit = {{ per_second = 0.01, burst = 1 }}\n",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;
    let from = |ip: &str| {
        client()
            .get(gw.url("/"))
            .header("x-forwarded-for", ip.to_owned())
            .send()
    };
    assert_eq!(from("2001:db8:1:2::1").await.unwrap().status(), 200);
    assert_eq!(from("2001:db8:1:2::ffff").await.unwrap().status(), 429);
    assert_eq!(from("2001:db8:1:2:aaaa::7").await.unwrap().status(), 429);
    assert_eq!(from("2001:db8:1:3::1").await.unwrap().status(), 200);
}

/// A `sub` is unique only within its issuer. Two issuers on one route, each with a user whose
/// `sub` is "7": the app must see two ids, in the header and in the assertion alike.
#[tokio::test]
async fn the_same_sub_from_two_issuers_is_two_callers() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    const OTHER: &str = "https://other-issuer.test/tenant";
    let gw = gateway(&format!(
        r#"
[[route]]
name = "two-issuers"
upstream = "http://{up}"
url = "{AUD}"
issuers = [{{ profile = "{ISSUER}", jwks = "{jwks}" }}, {{ profile = "{OTHER}", jwks = "{jwks}" }}]
allow = ["allAuthenticatedUsers"]
"#,
        jwks = issuer.jwks_url(),
    ))
    .await;
    let mut seen_ids = Vec::new();
    for iss in [ISSUER, OTHER] {
        let token = issuer.token_with("alice@example.com", json!({"iss": iss, "sub": "7"}));
        let seen = send(client().get(gw.url("/")).bearer_auth(&token)).await;
        assert_eq!(seen.status, 200, "{iss}: {:?}", seen.body);
        let up_h = upstream_headers(&seen);
        let id = up_h
            .header("x-goog-authenticated-user-id")
            .unwrap()
            .to_owned();
        let assertion = up_h.header("x-goog-iap-jwt-assertion").unwrap();
        let claims = jwt_claims(assertion);
        assert_eq!(
            claims["sub"],
            id.as_str(),
            "the assertion names the same id"
        );
        seen_ids.push(id);
    }
    assert_eq!(
        seen_ids,
        ["issuer.test:7", "other-issuer.test/tenant:7"],
        "one id per issuer"
    );
}
