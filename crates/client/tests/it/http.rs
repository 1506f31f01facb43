//! The authenticated client against a stand-in receiving service.

use crate::metadata::Stand;
use crate::support::{Counter, clock, serve};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use gatehouse_client::{AuthorizedClient, MetadataServer, TokenCache};
use gatehouse_verify::unverified::danger_decode_unverified;
use serde_json::{Value, json};
use std::sync::Arc;

/// A receiver that records the token's audience and the body, and answers 401 to the
/// first `reject_first` requests.
#[derive(Clone, Default)]
struct Receiver {
    hits: Counter,
    reject_first: usize,
    seen: Arc<parking_lot::Mutex<Vec<Value>>>,
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let n = receiver.hits.hit();
    let authorizations: Vec<_> = headers.get_all("authorization").iter().collect();
    let token = authorizations
        .first()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let aud = danger_decode_unverified(token)
        .map(|d| d.claims["aud"].clone())
        .unwrap_or(Value::Null);
    receiver.seen.lock().push(json!({
        "aud": aud,
        "authorizations": authorizations.len(),
        "token": token,
        "body": body,
        "x-test": headers.get("x-test").and_then(|v| v.to_str().ok()),
    }));
    if n <= receiver.reject_first {
        return (StatusCode::UNAUTHORIZED, "stale token".into());
    }
    (StatusCode::OK, format!("hello #{n}"))
}

async fn setup(reject_first: usize) -> (AuthorizedClient, String, Receiver, Counter) {
    let (pinned, _) = clock();
    let stand = Stand::new(pinned.clone());
    let mints = stand.hits.clone();
    let metadata = stand.start().await;
    let cache = TokenCache::with_clock(
        MetadataServer::new(&metadata.to_string()).unwrap(),
        Arc::new(pinned.clone()),
    );
    let (client, url, receiver) = receiving(cache, reject_first).await;
    (client, url, receiver, mints)
}

/// A receiver answering 401 to its first `reject_first` requests, and a client calling it
/// with tokens from `cache`: the client, the receiver's URL, and the receiver.
async fn receiving(
    cache: Arc<TokenCache>,
    reject_first: usize,
) -> (AuthorizedClient, String, Receiver) {
    let receiver = Receiver {
        reject_first,
        ..Receiver::default()
    };
    let addr = serve(
        Router::new()
            .fallback(any(receive))
            .with_state(receiver.clone()),
    )
    .await;
    let client = AuthorizedClient::new(cache).unwrap();
    (client, format!("http://{addr}"), receiver)
}

#[tokio::test]
async fn the_audience_is_the_origin_and_the_header_is_ours_alone() {
    let (client, base, receiver, mints) = setup(0).await;
    let response = client
        .post(&format!("{base}/api/vote?x=1"))
        .header("Authorization", "Bearer spoofed")
        .header("X-Test", "yes")
        .body("team=CATS")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello #1");
    let seen = receiver.seen.lock().clone();
    assert_eq!(seen[0]["aud"], base.as_str());
    assert_eq!(seen[0]["authorizations"], 1);
    assert_ne!(seen[0]["token"], "spoofed");
    assert_eq!(seen[0]["body"], "team=CATS");
    assert_eq!(seen[0]["x-test"], "yes");

    // A second call reuses the cached token.
    client.get(&format!("{base}/other")).send().await.unwrap();
    assert_eq!(mints.get(), 1);
}

#[tokio::test]
async fn a_custom_audience_is_used_when_told() {
    let (client, base, receiver, _) = setup(0).await;
    client
        .get(&format!("{base}/"))
        .audience("custom-audience")
        .send()
        .await
        .unwrap();
    assert_eq!(receiver.seen.lock()[0]["aud"], "custom-audience");
}

#[tokio::test]
async fn a_401_is_retried_once_with_a_fresh_token() {
    let (client, base, receiver, mints) = setup(1).await;
    let response = client
        .post(&format!("{base}/"))
        .body("replayable")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        mints.get(),
        2,
        "the rejected token was dropped and a new one minted"
    );
    let seen = receiver.seen.lock().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1]["body"], "replayable");
}

#[tokio::test]
async fn a_second_401_is_returned_not_retried_again() {
    let (client, base, receiver, mints) = setup(usize::MAX).await;
    let response = client.get(&format!("{base}/")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(receiver.hits.get(), 2);
    assert_eq!(mints.get(), 2);
}

#[tokio::test]
async fn a_streamed_body_is_not_replayed() {
    let (client, base, receiver, _) = setup(1).await;
    // A body wrapped as a stream cannot be cloned, so it is sent once.
    let response = client
        .post(&format!("{base}/"))
        .body(reqwest::Body::wrap("chunk".to_owned()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(receiver.hits.get(), 1);
}

#[tokio::test]
async fn a_bad_url_is_an_error_before_any_token_is_minted() {
    let (client, _, _, mints) = setup(0).await;
    let error = client.get("not a url").send().await.unwrap_err();
    assert!(
        error.to_string().contains("invalid URL `not a url`"),
        "{error}"
    );
    let error = client.get("ftp://host/").send().await.unwrap_err();
    assert!(error.to_string().contains("http(s)"), "{error}");
    assert_eq!(mints.get(), 0);
}

/// Mints one good token, then fails as a token service that went down would.
#[derive(Debug)]
struct OneTokenThenDown {
    mints: Counter,
}

impl gatehouse_client::IdTokenSource for OneTokenThenDown {
    fn mint<'a>(
        &'a self,
        audience: &'a str,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<gatehouse_client::IdToken, gatehouse_client::Error>,
    > {
        Box::pin(async move {
            if self.mints.hit() > 1 {
                return Err(gatehouse_client::Error::Unreachable {
                    service: "token endpoint",
                    url: "http://127.0.0.1:9/token".into(),
                    detail: "connection failed".into(),
                });
            }
            let token = crate::support::id_token(
                audience,
                crate::support::SA_EMAIL,
                crate::support::T0,
                3600,
            );
            gatehouse_client::IdToken::from_minted("token endpoint", "http://t/", &token)
        })
    }

    fn describe(&self) -> String {
        "one token, then down".into()
    }
}

#[tokio::test]
async fn a_401_whose_retry_cannot_get_a_token_returns_the_receivers_answer() {
    let (pinned, _) = clock();
    let mints = Counter::default();
    let cache = TokenCache::with_clock(
        OneTokenThenDown {
            mints: mints.clone(),
        },
        Arc::new(pinned),
    );
    let (client, url, receiver) = receiving(cache, usize::MAX).await;
    // The receiver's 401 is what happened; the token service's outage is only why there
    // was no second try.
    let response = client
        .get(&format!("{url}/"))
        .send()
        .await
        .expect("the receiver's answer, not the retry's token error");
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().await.unwrap(), "stale token");
    assert_eq!(receiver.hits.get(), 1);
    assert_eq!(mints.get(), 2);
}
