//! The token cache in front of a real (stand-in) metadata server, on a pinned clock.

use crate::metadata::Stand;
use crate::support::{T0, clock, id_token};
use axum::http::StatusCode;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use gatehouse_client::{
    Error, IdToken, IdTokenSource, MAX_AUDIENCES, MetadataServer, REFRESH_BEFORE_EXPIRY_SECS,
    TokenCache,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn cache_for(stand: Stand) -> Arc<TokenCache> {
    let clock: Arc<dyn gatehouse_verify::Clock> = Arc::new(stand.clock.clone());
    let addr = stand.start().await;
    TokenCache::with_clock(MetadataServer::new(&addr.to_string()).unwrap(), clock)
}

#[tokio::test]
async fn a_second_fetch_makes_no_request() {
    let (pinned, _) = clock();
    let stand = Stand::new(pinned);
    let hits = stand.hits.clone();
    let cache = cache_for(stand).await;
    let first = cache.token("https://a.example").await.unwrap();
    let second = cache.token("https://a.example").await.unwrap();
    assert_eq!(first, second);
    assert_eq!(hits.get(), 1);
    // Per audience: another audience is another token.
    let other = cache.token("https://b.example").await.unwrap();
    assert_ne!(other, first);
    assert_eq!(hits.get(), 2);
}

#[tokio::test]
async fn refresh_happens_at_the_buffer_before_expiry() {
    let (pinned, _) = clock();
    let stand = Stand::new(pinned.clone());
    let hits = stand.hits.clone();
    let cache = cache_for(stand).await;
    let first = cache.token("https://a.example").await.unwrap();
    assert_eq!(first.expires_at(), T0 + 3600);
    let refresh_at = T0 + 3600 - REFRESH_BEFORE_EXPIRY_SECS;

    pinned.set(refresh_at - 1);
    assert_eq!(cache.token("https://a.example").await.unwrap(), first);
    assert_eq!(hits.get(), 1, "one second before the buffer: still cached");

    pinned.set(refresh_at);
    let second = cache.token("https://a.example").await.unwrap();
    assert_eq!(hits.get(), 2, "at the buffer: minted again");
    assert_eq!(second.expires_at(), refresh_at + 3600);
    assert_eq!(cache.token("https://a.example").await.unwrap(), second);
    assert_eq!(hits.get(), 2);
}

#[tokio::test]
async fn short_lived_tokens_refresh_half_way() {
    let (pinned, _) = clock();
    let mut stand = Stand::new(pinned.clone());
    stand.life = 120; // less than twice the buffer
    let hits = stand.hits.clone();
    let cache = cache_for(stand).await;
    cache.token("https://a.example").await.unwrap();
    pinned.set(T0 + 59);
    cache.token("https://a.example").await.unwrap();
    assert_eq!(hits.get(), 1);
    pinned.set(T0 + 60);
    cache.token("https://a.example").await.unwrap();
    assert_eq!(hits.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_callers_cause_one_mint() {
    let (pinned, _) = clock();
    let mut stand = Stand::new(pinned);
    stand.delay = Duration::from_millis(100);
    let hits = stand.hits.clone();
    let cache = cache_for(stand).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token("https://a.example").await })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(task.await.unwrap().unwrap());
    }
    assert_eq!(hits.get(), 1);
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_failure() {
    let (pinned, _) = clock();
    let mut stand = Stand::new(pinned);
    stand.delay = Duration::from_millis(100);
    stand.fail_with = Some(StatusCode::INTERNAL_SERVER_ERROR);
    let hits = stand.hits.clone();
    let cache = cache_for(stand).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token("https://a.example").await })
        })
        .collect();
    for task in tasks {
        let error = task.await.unwrap().unwrap_err();
        assert!(
            matches!(error, Error::Refused { status: 500, .. }),
            "{error:?}"
        );
    }
    assert_eq!(
        hits.get(),
        1,
        "no retry storm: the waiters shared the one failure"
    );
    // A later call tries again.
    cache.token("https://a.example").await.unwrap_err();
    assert_eq!(hits.get(), 2);
}

#[tokio::test]
async fn a_failed_refresh_keeps_serving_the_still_valid_token_and_backs_off() {
    let (pinned, _) = clock();
    let stand = Stand::new(pinned.clone());
    let hits = stand.hits.clone();
    let broken = stand.broken.clone();
    let cache = cache_for(stand).await;
    let first = cache.token("https://a.example").await.unwrap();

    broken.store(true, Ordering::SeqCst);
    pinned.set(T0 + 3600 - REFRESH_BEFORE_EXPIRY_SECS); // refresh due, token still valid
    assert_eq!(cache.token("https://a.example").await.unwrap(), first);
    assert_eq!(hits.get(), 2, "the refresh was tried");
    assert_eq!(cache.token("https://a.example").await.unwrap(), first);
    assert_eq!(hits.get(), 2, "and not tried again at once");
    pinned.advance(5);
    assert_eq!(cache.token("https://a.example").await.unwrap(), first);
    assert_eq!(hits.get(), 3, "a few seconds later it is tried again");

    // Too close to expiry to hand out: the error surfaces.
    pinned.set(T0 + 3600 - 5);
    let error = cache.token("https://a.example").await.unwrap_err();
    assert!(
        matches!(error, Error::Refused { status: 503, .. }),
        "{error:?}"
    );

    broken.store(false, Ordering::SeqCst);
    let fresh = cache.token("https://a.example").await.unwrap();
    assert_ne!(fresh, first);
}

#[tokio::test]
async fn invalidate_drops_only_the_rejected_token() {
    let (pinned, _) = clock();
    let stand = Stand::new(pinned.clone());
    let hits = stand.hits.clone();
    let cache = cache_for(stand).await;
    let first = cache.token("https://a.example").await.unwrap();
    pinned.advance(1); // so the next token differs
    cache.invalidate("https://a.example", &first);
    let second = cache.token("https://a.example").await.unwrap();
    assert_ne!(first, second);
    assert_eq!(hits.get(), 2);
    cache.invalidate("https://a.example", &first); // stale rejection: keep the new one
    assert_eq!(cache.token("https://a.example").await.unwrap(), second);
    assert_eq!(hits.get(), 2);
    cache.invalidate("https://never.example", &first); // unknown audience: nothing happens
}

#[tokio::test]
async fn debug_shows_no_token() {
    let (pinned, _) = clock();
    let cache = cache_for(Stand::new(pinned)).await;
    let token = cache.token("https://a.example").await.unwrap();
    let shown = format!("{cache:?} {token:?}");
    assert!(!shown.contains(token.as_str()), "{shown}");
    assert!(shown.contains("<hidden>"), "{shown}");
}

/// A source without a network, for thousands of audiences: it hands out one pre-signed token
/// (the cache reads only its `exp`) and counts mints per audience.
#[derive(Debug)]
struct Counting {
    token: parking_lot::Mutex<String>,
    mints: parking_lot::Mutex<HashMap<String, usize>>,
}

impl Counting {
    fn issuing(token: String) -> Arc<Self> {
        Arc::new(Counting {
            token: parking_lot::Mutex::new(token),
            mints: Default::default(),
        })
    }
    fn mints(&self, audience: &str) -> usize {
        self.mints.lock().get(audience).copied().unwrap_or(0)
    }
}

impl IdTokenSource for Counting {
    fn mint<'a>(&'a self, audience: &'a str) -> BoxFuture<'a, Result<IdToken, Error>> {
        *self.mints.lock().entry(audience.to_owned()).or_default() += 1;
        let token = self.token.lock().clone();
        async move { IdToken::from_minted("test", "test:", &token) }.boxed()
    }
    fn describe(&self) -> String {
        "counting test source".into()
    }
}

#[tokio::test]
async fn many_audiences_stay_within_the_bound_and_a_busy_audience_keeps_its_token() {
    let (_, clock) = clock();
    let source = Counting::issuing(id_token("any", "sa@example.com", T0, 3600));
    let cache = TokenCache::with_clock(source.clone(), clock);
    // The receiver a service really calls, among origins an attacker registers one by one.
    let busy = "https://receiver.example";
    cache.token(busy).await.unwrap();
    let flood = 4 * MAX_AUDIENCES;
    for i in 0..flood {
        cache
            .token(&format!("https://a{i}.evil.example"))
            .await
            .unwrap();
        if i % 16 == 0 {
            cache.token(busy).await.unwrap();
        }
        assert!(
            cache.audiences() <= MAX_AUDIENCES,
            "{} audiences after {i}",
            cache.audiences()
        );
    }
    assert_eq!(source.mints(busy), 1, "the busy audience's token was kept");
    // The audience asked for last is cached too.
    let last = format!("https://a{}.evil.example", flood - 1);
    cache.token(&last).await.unwrap();
    assert_eq!(source.mints(&last), 1);
}

#[tokio::test]
async fn audiences_whose_token_expired_are_dropped() {
    let (pinned, clock) = clock();
    let source = Counting::issuing(id_token("any", "sa@example.com", T0, 3600));
    let cache = TokenCache::with_clock(source.clone(), clock);
    for i in 0..100 {
        cache.token(&format!("https://a{i}.example")).await.unwrap();
    }
    cache.token("https://kept.example").await.unwrap();
    assert_eq!(cache.audiences(), 101);

    // One audience is still in use: its token is refreshed before the others expire.
    pinned.set(T0 + 3400);
    *source.token.lock() = id_token("any", "sa@example.com", T0 + 3400, 3600);
    cache.token("https://kept.example").await.unwrap();
    assert_eq!(source.mints("https://kept.example"), 2);

    pinned.set(T0 + 3600 + 60);
    cache.token("https://new.example").await.unwrap();
    assert_eq!(
        cache.audiences(),
        2,
        "only the audience with a live token and the new one remain"
    );
    cache.token("https://kept.example").await.unwrap();
    assert_eq!(source.mints("https://kept.example"), 2, "still cached");
}
