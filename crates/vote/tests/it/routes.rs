//! Routes and rules through `app.oneshot`: counts, the leader message, the recent five,
//! every refusal code, injection attempts, and that a refused request writes nothing.

use crate::support::*;
use axum::body::Body;
use gatehouse_verify::{IssuerProfile, Verifier};
use http::{Request, StatusCode};
use serde_json::json;
use std::sync::Arc;

#[tokio::test]
async fn empty_tally_is_a_tie() {
    let t = sqlite_app().await;
    let body = tally(&t.app).await;
    assert_eq!(
        body,
        json!({"cats": 0, "dogs": 0, "leader": "CATS and DOGS are evenly matched!", "recent": []})
    );
}

#[tokio::test]
async fn a_vote_is_recorded_with_uid_and_server_time() {
    let t = sqlite_app().await;
    let answer = vote(&t.app, "alice-uid", "CATS").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer
            .body
            .starts_with("Vote successfully cast for 'CATS' at time 2026-11-29 12:00:00"),
        "{}",
        answer.body
    );
    assert!(answer.body.ends_with("!"));
    let body = tally(&t.app).await;
    assert_eq!(body["cats"], 1);
    assert_eq!(body["dogs"], 0);
    assert_eq!(body["leader"], "CATS are winning by 1 vote");
    assert_eq!(body["recent"][0]["candidate"], "CATS");
    assert!(
        body["recent"][0]["time_cast"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-29T12:00:00.")
    );
    let rows = t
        .votes
        .store()
        .fetch_all("SELECT candidate, uid FROM pet_votes", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].text(0).unwrap(), "CATS");
    assert_eq!(rows[0].text(1).unwrap(), "alice-uid");
}

#[tokio::test]
async fn leader_message_lead_tie_singular_plural() {
    let t = sqlite_app().await;
    let expect = [
        ("DOGS", "DOGS are winning by 1 vote"),
        ("DOGS", "DOGS are winning by 2 votes"),
        ("CATS", "DOGS are winning by 1 vote"),
        ("CATS", "CATS and DOGS are evenly matched!"),
        ("CATS", "CATS are winning by 1 vote"),
        ("CATS", "CATS are winning by 2 votes"),
        ("CATS", "CATS are winning by 3 votes"),
    ];
    for (i, (team, leader)) in expect.iter().enumerate() {
        let answer = vote(&t.app, &format!("user-{i}"), team).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(tally(&t.app).await["leader"], *leader, "after vote {i}");
    }
    let body = tally(&t.app).await;
    assert_eq!(
        (body["cats"].as_i64(), body["dogs"].as_i64()),
        (Some(5), Some(2))
    );
    // The page highlights the leading card and says the same.
    let page = send(&t.app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert!(
        page.body.contains("class=\"card cats leading\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("class=\"card dogs\""));
    assert!(page.body.contains("CATS are winning by 3 votes"));
}

#[tokio::test]
async fn recent_lists_five_newest_first() {
    let t = sqlite_app().await;
    let teams = ["CATS", "DOGS", "DOGS", "CATS", "DOGS", "CATS", "CATS"];
    for (i, team) in teams.iter().enumerate() {
        // A minute apart, so order by time is unambiguous.
        t.clock.advance_seconds(60);
        assert_eq!(
            vote(&t.app, &format!("u{i}"), team).await.status,
            StatusCode::OK
        );
    }
    let body = tally(&t.app).await;
    let recent = body["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 5);
    let got: Vec<&str> = recent
        .iter()
        .map(|v| v["candidate"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["CATS", "CATS", "DOGS", "CATS", "DOGS"]);
    let times: Vec<&str> = recent
        .iter()
        .map(|v| v["time_cast"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    // And the HTML lists them in the seed's words.
    let page = send(&t.app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(page.body.matches("A vote for <b>'").count(), 5);
    assert!(
        page.body
            .contains("A vote for <b>'CATS'</b> was cast at <time")
    );
}

/// Every refusal, and that none of them wrote a row.
#[tokio::test]
async fn refusals_have_their_codes_and_write_nothing() {
    let t = sqlite_app().await;
    let good = token_for("alice");
    let mut expired = google_claims("alice", "alice@example.com");
    expired["iat"] = json!(NOW - 7200);
    expired["exp"] = json!(NOW - 3600);
    let mut wrong_aud = google_claims("alice", "alice@example.com");
    wrong_aud["aud"] = json!("someone-else.apps.googleusercontent.com");
    let mut wrong_iss = google_claims("alice", "alice@example.com");
    wrong_iss["iss"] = json!("https://evil.example");
    let mut future = google_claims("alice", "alice@example.com");
    future["iat"] = json!(NOW + 3600);
    future["nbf"] = json!(NOW + 3600);
    future["exp"] = json!(NOW + 7200);
    let mut no_sub = google_claims("alice", "alice@example.com");
    no_sub.as_object_mut().unwrap().remove("sub");
    let long_uid = "u".repeat(129);
    let forged = keys()
        .forger
        .sign_jwt(&google_claims("alice", "alice@example.com"))
        .unwrap();
    let unsigned = {
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[2] = "SIGNATURE_REMOVED_BY_GOOGLE";
        parts.join(".")
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let cases: Vec<(Option<String>, &str, StatusCode, &str)> = vec![
        (None, "team=CATS", StatusCode::UNAUTHORIZED, ""),
        (
            Some("Bearer".into()),
            "team=CATS",
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            Some("Bearer ".into()),
            "team=CATS",
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            Some("Basic YWxpY2U6eA==".into()),
            "team=CATS",
            StatusCode::UNAUTHORIZED,
            "",
        ),
        (
            Some(bearer("not-a-jwt")),
            "team=CATS",
            StatusCode::FORBIDDEN,
            "malformed",
        ),
        (
            Some(bearer(&sign(&expired))),
            "team=CATS",
            StatusCode::FORBIDDEN,
            "expired",
        ),
        (
            Some(bearer(&sign(&wrong_aud))),
            "team=CATS",
            StatusCode::FORBIDDEN,
            "wrong_audience",
        ),
        (
            Some(bearer(&sign(&wrong_iss))),
            "team=CATS",
            StatusCode::FORBIDDEN,
            "wrong_issuer",
        ),
        (
            Some(bearer(&sign(&future))),
            "team=CATS",
            StatusCode::FORBIDDEN,
            "not_yet_valid",
        ),
        (
            Some(bearer(&sign(&no_sub))),
            "team=CATS",
            StatusCode::FORBIDDEN,
            "missing_claim",
        ),
        (
            Some(bearer(&forged)),
            "team=CATS",
            StatusCode::FORBIDDEN,
            "bad_signature",
        ),
        (
            Some(bearer(&unsigned)),
            "team=CATS",
            StatusCode::FORBIDDEN,
            "",
        ),
        (
            Some(bearer(&"a".repeat(20_000))),
            "team=CATS",
            StatusCode::FORBIDDEN,
            "too_large",
        ),
        (
            Some(bearer(&token_for(&long_uid))),
            "team=CATS",
            StatusCode::FORBIDDEN,
            "invalid_claim",
        ),
        // Identity is checked first: a bad team with no token is still 401.
        (None, "team=BIRDS", StatusCode::UNAUTHORIZED, ""),
        (
            Some(bearer(&good)),
            "team=BIRDS",
            StatusCode::BAD_REQUEST,
            "Invalid team specified.",
        ),
        (
            Some(bearer(&good)),
            "team=cats",
            StatusCode::BAD_REQUEST,
            "Invalid team specified.",
        ),
        (
            Some(bearer(&good)),
            "",
            StatusCode::BAD_REQUEST,
            "Invalid team specified.",
        ),
        (
            Some(bearer(&good)),
            "team=CATS&team=DOGS",
            StatusCode::BAD_REQUEST,
            "Invalid team specified.",
        ),
        (
            Some(bearer(&good)),
            "team=%FF%FE",
            StatusCode::BAD_REQUEST,
            "Invalid team specified.",
        ),
    ];
    for (authorization, body, status, needle) in &cases {
        let answer = send(&t.app, vote_request(authorization.as_deref(), body)).await;
        assert_eq!(
            answer.status, *status,
            "{authorization:?} {body:?}: {}",
            answer.body
        );
        assert!(
            answer.body.contains(needle),
            "{body:?}: {} lacks {needle}",
            answer.body
        );
        if *status == StatusCode::UNAUTHORIZED {
            assert_eq!(answer.headers["www-authenticate"], "Bearer");
        }
        if *status == StatusCode::FORBIDDEN && !needle.is_empty() {
            let challenge = answer.headers["www-authenticate"].to_str().unwrap();
            assert!(challenge.contains(needle), "{challenge}");
            assert!(answer.body.starts_with("Error with authentication: "));
        }
    }
    // A form in another type than the seed's Flask reads is no vote, and says why.
    for content_type in [
        Some("application/json"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut request = Request::post("/").header("authorization", bearer(&good));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let answer = send(&t.app, request.body(Body::from("team=CATS")).unwrap()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{content_type:?}");
        assert!(
            answer.body.contains("application/x-www-form-urlencoded"),
            "{}",
            answer.body
        );
    }
    let answer = send(
        &t.app,
        Request::post("/")
            .header("authorization", bearer(&good))
            .header(
                "content-type",
                "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            )
            .body(Body::from("team=CATS"))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // A form past a vote's size.
    let long = format!("team=CATS&x={}", "y".repeat(2000));
    let answer = send(&t.app, vote_request(Some(&bearer(&good)), &long)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    // A uid with a control character: PostgreSQL refuses a NUL that SQLite keeps, so
    // neither stores it.
    let answer = send(
        &t.app,
        vote_request(Some(&bearer(&token_for("a\u{0}b"))), "team=CATS"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(answer.body.contains("invalid_claim"), "{}", answer.body);
    // No token: answered at once, the body never waited for (a client trickling one
    // holds no connection for it).
    let never_ends = Body::from_stream(futures_util::stream::pending::<
        Result<axum::body::Bytes, std::io::Error>,
    >());
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        send(
            &t.app,
            Request::post("/")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(never_ends)
                .unwrap(),
        ),
    )
    .await
    .expect("a request without a token waited for its body");
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        t.votes.count().await.unwrap(),
        1,
        "a refused request wrote a row (the one row is the form in its type, accepted)"
    );
    // JSON clients get the code in JSON.
    let answer = send(
        &t.app,
        Request::post("/")
            .header("accept", "application/json")
            .header("authorization", bearer(&sign(&expired)))
            .body(Body::from("team=CATS"))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["error"], "expired");
}

#[tokio::test]
async fn keys_unavailable_is_503_and_writes_nothing() {
    // Keys from a port nobody listens on.
    let verifier = Arc::new(
        Verifier::new(
            IssuerProfile::google()
                .with_jwks_url("http://127.0.0.1:9/oauth2/v3/certs")
                .with_audiences([CLIENT_ID]),
        )
        .unwrap(),
    );
    let votes = gatehouse_vote::VoteStore::open(
        gatehouse_store::Store::open_sqlite_memory().await.unwrap(),
    )
    .await
    .unwrap();
    let t = app_with(votes, verifier).await;
    let answer = vote(&t.app, "alice", "CATS").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(t.votes.count().await.unwrap(), 0);
}

#[tokio::test]
async fn injection_attempts_are_stored_nowhere() {
    let t = sqlite_app().await;
    for team in [
        "CATS'); DROP TABLE pet_votes;--",
        "CATS' OR '1'='1",
        "<script>alert(1)</script>",
        "DOGS\0",
    ] {
        let body = serde_urlencoded::to_string([("team", team)]).unwrap();
        let answer = send(
            &t.app,
            vote_request(Some(&format!("Bearer {}", token_for("mallory"))), &body),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{team:?}");
    }
    assert_eq!(t.votes.count().await.unwrap(), 0);
    // A hostile uid (the token's `sub`) is bound as a parameter: stored verbatim, harmless.
    let uid = "x'); DROP TABLE pet_votes;--<b>";
    assert_eq!(vote(&t.app, uid, "DOGS").await.status, StatusCode::OK);
    let rows = t
        .votes
        .store()
        .fetch_all("SELECT uid FROM pet_votes", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].text(0).unwrap(), uid);
    // The uid never reaches the page.
    let page = send(&t.app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert!(!page.body.contains("DROP TABLE"));
}

#[tokio::test]
async fn firebase_tokens_vote_with_their_uid() {
    let t = sqlite_app().await;
    let answer = send(
        &t.app,
        vote_request(
            Some(&format!("Bearer {}", firebase_token("fb-uid-1"))),
            "team=DOGS",
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let row = t
        .votes
        .store()
        .fetch_optional("SELECT uid FROM pet_votes", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.text(0).unwrap(), "fb-uid-1");
}

#[tokio::test]
async fn page_has_the_seed_layout_and_local_assets() {
    let t = sqlite_app().await;
    let page = send(
        &t.app,
        Request::get("/")
            .header("accept", "text/html")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    for needle in [
        "CATS v DOGS",
        "Sign In with Google",
        "Sign Out",
        "CATS and DOGS are evenly matched!",
        "🐱",
        "🐶",
        "<span id=\"cats-count\">0</span> votes",
        "Vote for CATS",
        "Vote for DOGS",
        "Recent Votes",
        "You are signed out",
        "\"authorizationEndpoint\":\"http://127.0.0.1:9099/o/oauth2/v2/auth\"",
    ] {
        assert!(page.body.contains(needle), "page lacks {needle}");
    }
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"));
    // Every script and stylesheet is local; nothing from a CDN.
    assert!(!page.body.contains("https://"), "{}", page.body);
    for (path, kind) in [
        ("/static/app.js", "text/javascript"),
        ("/static/signin.js", "text/javascript"),
        ("/static/callback.js", "text/javascript"),
        ("/static/style.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
    ] {
        let a = send(&t.app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(
            a.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert!(!a.body.contains("https://www.gstatic.com"), "{path}");
    }
    let missing = send(
        &t.app,
        Request::get("/static/../Cargo.toml")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let cb = send(
        &t.app,
        Request::get("/auth/callback").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(cb.status, StatusCode::OK);
    assert!(cb.body.contains("/static/callback.js"));
}

#[tokio::test]
async fn secure_endpoint_echoes_identity_with_cors() {
    let t = sqlite_app().await;
    let preflight = send(
        &t.app,
        Request::options("/run-secure-endpoint")
            .header("origin", "chrome-extension://abcdefghijklmnop")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(preflight.status.is_success(), "{}", preflight.status);
    assert_eq!(preflight.headers["access-control-allow-origin"], "*");
    let allowed = preflight.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"));

    let none = send(
        &t.app,
        Request::post("/run-secure-endpoint")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"url":"https://example.com/"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.json()["reason"], "missing_token");

    let ok = send(
        &t.app,
        Request::post("/run-secure-endpoint")
            .header("content-type", "application/json")
            .header("origin", "chrome-extension://abcdefghijklmnop")
            .header("authorization", format!("Bearer {}", token_for("alice")))
            .body(Body::from(r#"{"url":"https://example.com/page"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.headers["access-control-allow-origin"], "*");
    let body = ok.json();
    assert_eq!(body["ok"], true);
    assert_eq!(body["email"], "alice@example.com");
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["issuer"], "https://accounts.google.com");
    assert_eq!(body["url"], "https://example.com/page");

    let bad = send(
        &t.app,
        Request::post("/run-secure-endpoint")
            .header("authorization", format!("Bearer {}", token_for("alice")))
            .body(Body::from("not json"))
            .unwrap(),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let mut expired = google_claims("alice", "alice@example.com");
    expired["exp"] = json!(NOW - 3600);
    expired["iat"] = json!(NOW - 7200);
    let refused = send(
        &t.app,
        Request::post("/run-secure-endpoint")
            .header("authorization", format!("Bearer {}", sign(&expired)))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json()["reason"], "expired");
}

#[tokio::test]
async fn hourly_aggregate_needs_a_token_and_counts_per_hour() {
    let t = sqlite_app().await;
    // Two hours ago: 2 cats; this hour: 1 cat, 2 dogs.
    t.clock.advance_seconds(-7200);
    vote(&t.app, "a", "CATS").await;
    vote(&t.app, "b", "CATS").await;
    t.clock.advance_seconds(7200);
    vote(&t.app, "c", "CATS").await;
    vote(&t.app, "d", "DOGS").await;
    vote(&t.app, "e", "DOGS").await;
    let unauthenticated = send(
        &t.app,
        Request::get("/api/votes/hourly")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    let answer = send(
        &t.app,
        Request::get("/api/votes/hourly?hours=3")
            .header("authorization", format!("Bearer {}", token_for("alice")))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body = answer.json();
    assert_eq!(
        body["hours"],
        json!([
            {"hour": "2026-11-29T10:00:00.000000Z", "cats": 2, "dogs": 0},
            {"hour": "2026-11-29T12:00:00.000000Z", "cats": 1, "dogs": 2},
        ])
    );
    let narrow = send(
        &t.app,
        Request::get("/api/votes/hourly?hours=1")
            .header("authorization", format!("Bearer {}", token_for("alice")))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(narrow.json()["hours"].as_array().unwrap().len(), 1);
    let bad = send(
        &t.app,
        Request::get("/api/votes/hourly?hours=0")
            .header("authorization", format!("Bearer {}", token_for("alice")))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn database_gone_is_503_with_a_page() {
    let t = sqlite_app().await;
    t.votes.close().await;
    let page = send(
        &t.app,
        Request::get("/")
            .header("accept", "text/html")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        page.body.contains("temporarily unavailable"),
        "{}",
        page.body
    );
    assert_eq!(page.headers["retry-after"], "5");
    // HTML at `/` like the voting page, it is hardened as that one is: a CSP allowing no
    // script and no framing, nosniff, no referrer, no caching.
    let csp = page
        .headers
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    for directive in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive}");
    }
    assert!(!csp.contains("script-src"), "the page has no script: {csp}");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert_eq!(page.headers["referrer-policy"], "no-referrer");
    assert_eq!(page.headers["cache-control"], "no-store");
    let json = send(
        &t.app,
        Request::get("/")
            .header("accept", "application/json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(json.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json.json()["error"], "database_unavailable");
    let answer = vote(&t.app, "alice", "CATS").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let health = send(
        &t.app,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn hourly_checks_the_token_before_the_query() {
    let t = sqlite_app().await;
    let get = |auth: Option<String>| {
        let mut request = Request::get("/api/votes/hourly?hours=abc");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.body(Body::empty()).unwrap()
    };
    // A caller without a token learns that first, whatever its query says.
    let anonymous = send(&t.app, get(None)).await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        anonymous.body
    );
    let forged = send(&t.app, get(Some("Bearer x.y.z".into()))).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED, "{}", forged.body);
    // A signed-in caller is told what is wrong with the query.
    let signed_in = send(&t.app, get(Some(format!("Bearer {}", token_for("alice"))))).await;
    assert_eq!(
        signed_in.status,
        StatusCode::BAD_REQUEST,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.json()["error"], "bad_request");
}
