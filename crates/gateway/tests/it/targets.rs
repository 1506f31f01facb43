//! What a request is for: its path and its host, read the way the upstream will read them.
//! A route's policy covers the resources under its prefix however the path is spelled; a
//! path servers read differently is refused; the host is the target's authority, else the
//! one `Host`.

use crate::support::*;

/// A route under `prefix` to `upstream` (a URL) that checks the test issuer's tokens and
/// admits `allow`.
fn checked(name: &str, prefix: &str, upstream: &str, issuer: &Issuer, allow: &str) -> String {
    format!(
        r#"
[[route]]
name = "{name}"
path_prefix = "{prefix}"
upstream = "{upstream}"
url = "{AUD}"
issuers = [{{ profile = "{ISSUER}", jwks = "{}" }}]
allow = ["{allow}"]
"#,
        issuer.jwks_url()
    )
}

/// Two routes to one upstream: the site public, `/admin` for alice only; and `/tenant-a`
/// whose upstream has a base path.
async fn two_policies_one_upstream() -> (Issuer, Running) {
    let issuer = Issuer::start().await;
    let up = format!("http://{}", echo_upstream().await);
    let gw = gateway(
        &[
            checked("site", "/", &up, &issuer, "allUsers"),
            checked("admin", "/admin", &up, &issuer, "user:alice@example.com"),
            checked(
                "tenant",
                "/tenant-a",
                &format!("{up}/tenant-a"),
                &issuer,
                "allUsers",
            ),
        ]
        .concat(),
    )
    .await;
    (issuer, gw)
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: site.example\r\n{extra}Connection: close\r\n\r\n")
}

/// The path the upstream was sent, from the echo's report in a raw answer.
fn upstream_path(answer: &str) -> String {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    report["uri"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_path_spelled_otherwise_is_judged_by_the_route_it_names() {
    let (issuer, gw) = two_policies_one_upstream().await;
    let alice = format!(
        "Authorization: Bearer {}\r\n",
        issuer.token("alice@example.com")
    );
    // Each names /admin/users: Go, Flask, Django and Spring decode `%61`, nginx, Tomcat
    // and Node resolve dot segments, servers that merge slashes read `//` as `/`.
    for spelled in [
        "/%61dmin/users",
        "/%61%64%6D%69%6E/users",
        "/static/../admin/users",
        "/static/%2e%2e/admin/users",
        "/static/%2E./admin/users",
        "//admin/users",
        "/admin/./users",
        "/admin//users",
    ] {
        let (status, answer) = raw(gw.addr, &get(spelled, "")).await;
        assert_eq!(status, 401, "{spelled} without a token: {answer}");
        assert!(answer.contains("missing_token"), "{spelled}: {answer}");
        let (status, answer) = raw(gw.addr, &get(spelled, &alice)).await;
        assert_eq!(status, 200, "{spelled} as alice: {answer}");
        assert_eq!(upstream_path(&answer), "/admin/users", "{spelled}");
    }
    // The query is the client's, untouched.
    let (_, answer) = raw(gw.addr, &get("/x/../admin/users?next=/a/../b", &alice)).await;
    assert_eq!(upstream_path(&answer), "/admin/users?next=/a/../b");
    // Dot segments never climb out of an upstream's base path.
    let (status, answer) = raw(gw.addr, &get("/tenant-a/../../tenant-b/secret", "")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(upstream_path(&answer), "/tenant-b/secret");
    let (_, answer) = raw(gw.addr, &get("/tenant-a/x/../../../etc/passwd", "")).await;
    assert_eq!(upstream_path(&answer), "/etc/passwd");
    let (_, answer) = raw(gw.addr, &get("/tenant-a/%2e%2e/x", "")).await;
    assert_eq!(
        upstream_path(&answer),
        "/x",
        "routed by /x: the site, not the tenant"
    );
}

#[tokio::test]
async fn a_path_servers_read_differently_is_refused() {
    let (issuer, gw) = two_policies_one_upstream().await;
    let alice = format!(
        "Authorization: Bearer {}\r\n",
        issuer.token("alice@example.com")
    );
    // Read as /admin/... by Tomcat, Jetty and Spring (path parameters dropped) or by IIS
    // (case folded), as something else here: no route can be trusted to judge it.
    for path in [
        "/admin;x/users",
        "/static/..;/admin/users",
        "/ADMIN/users",
        "/Admin",
        // Both readings at once.
        "/ADMIN;x/users",
        "/Admin;jsessionid=1/users",
        "/static/..;/ADMIN/users",
    ] {
        for token in ["", alice.as_str()] {
            let (status, answer) = raw(gw.addr, &get(path, token)).await;
            assert_eq!(status, 400, "{path}: {answer}");
            assert!(answer.contains("ambiguous_path"), "{path}: {answer}");
        }
    }
    // An encoded or literal separator, NUL, or a broken escape: refused whatever the route.
    for path in [
        "/admin%2Fusers",
        "/x%2fadmin",
        "/x%5Cadmin",
        "/x%00",
        "/x%zz",
        "/x%4",
    ] {
        let (status, answer) = raw(gw.addr, &get(path, "")).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer.contains("bad_path"), "{path}: {answer}");
    }
    // Readings that land on the same route pass: parameters and capitals where no other
    // route could take them.
    for path in ["/Static/App.JS", "/page;jsessionid=1", "/admin/Users;v=2"] {
        let token = if path.starts_with("/admin") {
            alice.as_str()
        } else {
            ""
        };
        let (status, answer) = raw(gw.addr, &get(path, token)).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
}

/// A prefix is read as paths are: written with capitals, a lower-case path is its to a
/// server folding case; written with a character past ASCII, raw or encoded in either
/// case, it takes that character however the client spells it.
#[tokio::test]
async fn a_prefix_takes_every_spelling_of_its_paths() {
    let issuer = Issuer::start().await;
    let up = format!("http://{}", echo_upstream().await);
    let alice = "user:alice@example.com";
    let gw = gateway(
        &[
            checked("site", "/", &up, &issuer, "allUsers"),
            checked("admin", "/Admin", &up, &issuer, alice),
            checked("cafe", "/café", &up, &issuer, alice),
        ]
        .concat(),
    )
    .await;
    for path in ["/admin/x", "/admin", "/ADMIN;x/y"] {
        let (status, answer) = raw(gw.addr, &get(path, "")).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer.contains("ambiguous_path"), "{path}: {answer}");
    }
    let (status, answer) = raw(gw.addr, &get("/Admin/x", "")).await;
    assert_eq!(status, 401, "{answer}");
    for path in ["/café/x", "/caf%C3%A9/x", "/caf%c3%a9/x"] {
        let (status, answer) = raw(gw.addr, &get(path, "")).await;
        assert_eq!(status, 401, "{path}: {answer}");
    }
    let alice = format!(
        "Authorization: Bearer {}\r\n",
        issuer.token("alice@example.com")
    );
    let (status, answer) = raw(gw.addr, &get("/café/x", &alice)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(upstream_path(&answer), "/caf%C3%A9/x");
}

#[tokio::test]
async fn the_host_is_the_targets_authority_else_the_one_host_header() {
    let issuer = Issuer::start().await;
    let up = echo_upstream().await;
    let jwks = issuer.jwks_url();
    let gw = gateway(&format!(
        r#"
[[route]]
name = "public"
upstream = "http://{up}"
allow = ["allUsers"]

[[route]]
name = "admin"
host = "admin.example"
upstream = "http://{up}"
url = "{AUD}"
issuers = [{{ profile = "{ISSUER}", jwks = "{jwks}" }}]
allow = ["user:alice@example.com"]
"#
    ))
    .await;
    let refused = |answer: &str, reason: &str| answer.contains(reason);
    // Two Host fields: which one a server behind believes is anyone's guess.
    let (status, answer) = raw(
        gw.addr,
        "GET / HTTP/1.1\r\nHost: public.example\r\nHost: admin.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(refused(&answer, "bad_host"), "{answer}");
    // HTTP/1.1 without a Host.
    let (status, answer) = raw(gw.addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "{answer}");
    // An absolute target names the host (RFC 9112 §3.2.2), whatever `Host` says: the
    // admin route judges it, and the upstream is told that host.
    let (status, answer) = raw(
        gw.addr,
        "GET http://admin.example/ HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    let alice = issuer.token("alice@example.com");
    let (status, answer) = raw(
        gw.addr,
        &format!("GET http://admin.example/ HTTP/1.1\r\nHost: public.example\r\nAuthorization: Bearer {alice}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""host":["admin.example"]"#), "{answer}");
    // The gateway is no forward proxy.
    let (status, answer) = raw(
        gw.addr,
        "CONNECT admin.example:443 HTTP/1.1\r\nHost: admin.example:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405, "{answer}");
    // HTTP/1.0 may name no host: the host-less route serves it.
    let (status, answer) = raw(gw.addr, "GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{answer}");
    // What is no host is refused, not routed as a host no route names while the server
    // behind reads `admin.example` out of it (nginx and Go do).
    for host in [
        "admin.example:abc",
        "admin.example:80x",
        "ADMIN.example:443443",
        "admin.example\u{ff}",
        "[::1]admin.example",
    ] {
        let request = format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (status, answer) = raw(gw.addr, &request).await;
        assert_eq!(status, 400, "{host:?}: {answer}");
        assert!(refused(&answer, "bad_host"), "{host:?}: {answer}");
    }
    let (status, answer) = raw(
        gw.addr,
        "GET http://admin.example:abc/x HTTP/1.1\r\nHost: admin.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    // A port of digits is a port: the admin route judges the request.
    let (status, answer) = raw(
        gw.addr,
        "GET /x HTTP/1.1\r\nHost: Admin.Example.:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 401, "{answer}");
}

/// A body under a transfer coding hyper does not take off (only `chunked` is) would go
/// upstream still encoded and unlabelled: refused, 501 (RFC 9112 §6.1).
#[tokio::test]
async fn a_body_in_a_coding_not_understood_is_refused() {
    let (_issuer, gw) = two_policies_one_upstream().await;
    let body = "5\r\nhello\r\n0\r\n\r\n";
    let (status, answer) = raw(
        gw.addr,
        &format!("POST /x HTTP/1.1\r\nHost: site.example\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n{body}"),
    )
    .await;
    assert_eq!(status, 501, "{answer}");
    assert!(answer.contains("unsupported_transfer_coding"), "{answer}");
    let (status, answer) = raw(
        gw.addr,
        &format!("POST /x HTTP/1.1\r\nHost: site.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""body_bytes":5"#), "{answer}");
}
