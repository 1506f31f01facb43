//! Header hygiene: identity headers sent by a client never reach the upstream; forwarding
//! headers are the gateway's; hop-by-hop headers stop at the gateway.

use crate::support::*;

const SPOOFED: [(&str, &str); 9] = [
    (
        "X-Goog-Authenticated-User-Email",
        "accounts.google.com:admin@example.com",
    ),
    (
        "x-goog-authenticated-user-email",
        "accounts.google.com:root@example.com",
    ),
    ("X-Goog-Authenticated-User-Id", "accounts.google.com:0"),
    ("X-Goog-Authenticated-User-Anything", "x"),
    (
        "X-Goog-Iap-Jwt-Assertion",
        "eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImFkbWluIn0.",
    ),
    ("X-Forwarded-User", "admin"),
    ("X-Forwarded-Email", "admin@example.com"),
    ("X-Forwarded-Groups", "admins"),
    ("X-Gatehouse-Identity", "admin"),
];

fn spoof(mut req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    for (k, v) in SPOOFED {
        req = req.header(k, v);
    }
    req
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "{}\n[[route]]\nname = \"public\"\npath_prefix = \"/public\"\nupstream = \"http://{up}\"\nurl = \"{AUD}\"\nissuers = [{{ profile = \"{ISSUER}\", jwks = \"{}\" }}]\nallow = [\"allUsers\"]\n",
        checked_route(&issuer, up, &["user:alice@example.com"]),
        issuer.jwks_url()
    ))
    .await;
    let token = issuer.token("alice@example.com");
    // Checked route with a valid token: exactly one value each, the gateway's.
    let seen = send(spoof(client().get(gw.url("/")).bearer_auth(&token))).await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    assert_eq!(
        up_h.all("x-goog-authenticated-user-email"),
        ["accounts.google.com:alice@example.com"]
    );
    assert_eq!(up_h.all("x-goog-authenticated-user-id").len(), 1);
    assert_eq!(up_h.all("x-goog-iap-jwt-assertion").len(), 1);
    assert_ne!(up_h.header("x-goog-iap-jwt-assertion"), Some(SPOOFED[4].1));
    for name in [
        "x-goog-authenticated-user-anything",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-gatehouse-identity",
    ] {
        assert!(up_h.header(name).is_none(), "{name} reached the upstream");
    }
    // Public route without a token: none of them, and none of the gateway's either.
    let seen = send(spoof(client().get(gw.url("/public/x")))).await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    for (name, _) in SPOOFED {
        assert!(
            up_h.header(&name.to_ascii_lowercase()).is_none(),
            "{name} reached the upstream"
        );
    }
}

#[tokio::test]
async fn forwarding_headers_are_set_and_hop_by_hop_removed() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
    let seen = send(
        client()
            .get(gw.url("/"))
            .header("host", "public.example")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .header("forwarded", "for=6.6.6.6")
            .header("connection", "x-hop")
            .header("x-hop", "secret")
            .header("proxy-authorization", "Basic Zm9vOmJhcg=="),
    )
    .await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    assert_eq!(up_h.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(up_h.header("x-forwarded-proto"), Some("http"));
    assert_eq!(up_h.header("x-forwarded-host"), Some("public.example"));
    assert_eq!(up_h.header("host"), Some("public.example"));
    assert_eq!(
        up_h.header("forwarded"),
        Some("for=127.0.0.1;proto=http;host=\"public.example\"")
    );
    assert!(up_h.header("x-hop").is_none());
    assert!(up_h.header("proxy-authorization").is_none());
}
