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
    // Over HTTP/1.1 (the gateway's own loop) and HTTP/2 (hyper), alike.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for c in [client(), h2] {
        // Checked route with a valid token: exactly one value each, the gateway's.
        let seen = send(spoof(c.get(gw.url("/")).bearer_auth(&token))).await;
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
        let seen = send(spoof(c.get(gw.url("/public/x")))).await;
        assert_eq!(seen.status, 200);
        let up_h = upstream_headers(&seen);
        for (name, _) in SPOOFED {
            assert!(
                up_h.header(&name.to_ascii_lowercase()).is_none(),
                "{name} reached the upstream"
            );
        }
    }
}

/// Behind a load balancer named in `trusted_proxies` its forwarding headers are kept and
/// this hop appended; the client is the last untrusted address in `X-Forwarded-For`, so
/// what a client writes there itself is never taken for its address, and unauthenticated
/// callers are rate-limited per client, not all as the balancer.
#[tokio::test]
async fn a_trusted_proxys_forwarding_headers_are_kept_and_name_the_client() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&format!(
        "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n{}rate_limit = {{ per_second = 0.01, burst = 1 }}\n",
        checked_route(&issuer, up, &["allUsers"])
    ))
    .await;
    let via_balancer = |forwarded_for: &str| {
        client()
            .get(gw.url("/"))
            .header("host", "public.example")
            .header("x-forwarded-for", forwarded_for.to_owned())
            .header("x-forwarded-proto", "https")
            .header("forwarded", "for=203.0.113.7;proto=https")
    };
    // The client wrote 6.6.6.6 itself; the balancer (10.0.0.2) saw 203.0.113.7 connect.
    let seen = send(via_balancer("6.6.6.6, 203.0.113.7, 10.0.0.2")).await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    assert_eq!(
        up_h.header("x-forwarded-for"),
        Some("6.6.6.6, 203.0.113.7, 10.0.0.2, 127.0.0.1")
    );
    assert_eq!(up_h.header("x-forwarded-proto"), Some("https"));
    assert_eq!(up_h.header("x-forwarded-host"), Some("public.example"));
    assert_eq!(
        up_h.header("forwarded"),
        Some("for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=\"public.example\"")
    );
    // One bucket per client: 203.0.113.7 has spent its one request, 198.51.100.9 has not,
    // whatever the client-written entries say.
    let r = via_balancer("1.2.3.4, 203.0.113.7, 10.0.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = via_balancer("203.0.113.7, 198.51.100.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
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

/// CGI, WSGI and Rack servers read `_` as `-` (Puma's CVE-2024-45614): the underscore
/// twins of identity and forwarding headers are removed as the headers are. So are the
/// headers apps read for a client's address (from a peer that is no trusted proxy) and
/// those that re-route a URL (from anyone).
#[tokio::test]
async fn underscore_twins_address_claims_and_url_overrides_never_reach_the_upstream() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let sent = [
        (
            "X-Goog-Authenticated-User_Email",
            "accounts.google.com:ceo@example.com",
        ),
        ("X_Goog_Iap_Jwt_Assertion", "forged"),
        ("X-Forwarded_User", "ceo"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X-Forwarded_Proto", "https"),
        ("X-Real-IP", "6.6.6.6"),
        ("True-Client-IP", "6.6.6.6"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
    ];
    let token = issuer.token("alice@example.com");
    let route = checked_route(&issuer, up, &["user:alice@example.com"]);
    let direct = gateway(&route).await;
    let mut req = client().get(direct.url("/")).bearer_auth(&token);
    for (name, value) in sent {
        req = req.header(name, value);
    }
    let seen = send(req).await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    for name in up_h.headers.keys() {
        assert!(!name.contains('_'), "{name} reached the upstream");
    }
    for name in [
        "x-real-ip",
        "true-client-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(up_h.header(name).is_none(), "{name} reached the upstream");
    }
    assert_eq!(
        up_h.all("x-goog-authenticated-user-email"),
        ["accounts.google.com:alice@example.com"]
    );
    // Behind a trusted proxy, its word on the client's address stands; a URL override
    // and the underscore twins still do not.
    let behind = gateway(&format!("trusted_proxies = [\"127.0.0.1\"]\n{route}")).await;
    let mut req = client().get(behind.url("/")).bearer_auth(&token);
    for (name, value) in sent {
        req = req.header(name, value);
    }
    let up_h = upstream_headers(&send(req).await);
    assert_eq!(up_h.header("x-real-ip"), Some("6.6.6.6"));
    assert_eq!(up_h.header("x-forwarded-port"), Some("443"));
    assert!(up_h.header("x-original-url").is_none());
    assert!(up_h.headers.keys().all(|n| !n.contains('_')));
}

/// `Connection` names the headers of this hop to drop: the client's, never the ones the
/// gateway adds (RFC 9110 §7.6.1: the fields it received).
#[tokio::test]
async fn connection_cannot_name_the_gateways_own_headers_away() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["user:alice@example.com"])).await;
    let seen = send(
        client()
            .get(gw.url("/"))
            .bearer_auth(issuer.token("alice@example.com"))
            .header(
                "connection",
                "keep-alive, X-Goog-Authenticated-User-Email, X-Goog-Authenticated-User-Id, \
                 X-Goog-Iap-Jwt-Assertion, X-Forwarded-For, X-Forwarded-Proto, Forwarded, Host",
            ),
    )
    .await;
    assert_eq!(seen.status, 200);
    let up_h = upstream_headers(&seen);
    assert_eq!(
        up_h.all("x-goog-authenticated-user-email"),
        ["accounts.google.com:alice@example.com"]
    );
    for name in [
        "x-goog-authenticated-user-id",
        "x-goog-iap-jwt-assertion",
        "x-forwarded-for",
        "x-forwarded-proto",
        "forwarded",
        "host",
    ] {
        assert_eq!(up_h.all(name).len(), 1, "{name}");
    }
}

/// An HTTP/2 client may send its cookies as several fields; the HTTP/1.1 upstream gets
/// one, joined with "; " (RFC 9113 §8.2.3), not several lines of which servers read one.
#[tokio::test]
async fn http2_cookie_fields_reach_an_http1_upstream_as_one() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let gw = gateway(&checked_route(&issuer, up, &["allUsers"])).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let seen = send(
        h2.get(gw.url("/"))
            .header("cookie", "theme=dark")
            .header("cookie", "session=xyz"),
    )
    .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.body["version"], "HTTP/1.1");
    assert_eq!(
        upstream_headers(&seen).all("cookie"),
        ["theme=dark; session=xyz"]
    );
}

/// Trailers are headers too: an HTTP/2 upstream (gRPC's kind) never receives identity,
/// forwarding or hop-by-hop names in a request's trailers; other trailers
/// (`grpc-status`-like) pass.
#[tokio::test]
async fn request_trailers_claim_no_identity_upstream() {
    use http_body_util::BodyExt as _;
    let issuer = Issuer::start().await;
    let up = trailer_reporting_upstream().await;
    let gw = gateway(&format!(
        "{}upstream_h2c = true\n",
        checked_route(&issuer, up, &["user:alice@example.com"])
    ))
    .await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut trailers = http::HeaderMap::new();
    trailers.insert(
        "x-goog-authenticated-user-email",
        "accounts.google.com:ceo@example.com".parse().unwrap(),
    );
    trailers.insert("x-gatehouse-role", "admin".parse().unwrap());
    // Nor where the request came from: the gateway's own fields, believed from nobody here.
    trailers.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
    trailers.insert("x-forwarded-host", "admin.example".parse().unwrap());
    trailers.insert("x-forwarded-proto", "https".parse().unwrap());
    trailers.insert("forwarded", "for=10.0.0.1".parse().unwrap());
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
        Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"payload",
        ))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let request = http::Request::post(gw.url("/"))
        .header(
            "authorization",
            format!("Bearer {}", issuer.token("alice@example.com")),
        )
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let report = response.into_body().collect().await.unwrap().to_bytes();
    let seen: Vec<String> = serde_json::from_slice(&report).unwrap();
    assert_eq!(seen, ["x-checksum"], "trailers the upstream received");
}

/// An h2c upstream answering with the names of the request trailers it received.
async fn trailer_reporting_upstream() -> std::net::SocketAddr {
    use http_body_util::BodyExt as _;
    serve(axum::Router::new().fallback(axum::routing::any(
        |request: axum::extract::Request| async move {
            let collected = request.into_body().collect().await.unwrap();
            let mut names: Vec<String> = collected
                .trailers()
                .map(|t| t.keys().map(|k| k.as_str().to_owned()).collect())
                .unwrap_or_default();
            names.sort();
            axum::Json(names)
        },
    )))
    .await
}
