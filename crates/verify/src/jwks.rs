//! A cache of one issuer's key document, fetched over HTTP(S) off the hot path.
//!
//! - `Cache-Control: max-age` (minus `Age`) sets freshness, clamped to configured bounds;
//! - ahead of expiry a background task refreshes, so requests never wait on a fetch while
//!   usable keys exist;
//! - fetches are single-flight: however many requests wait, one request goes out;
//! - an unknown `kid` triggers at most one refetch per cooldown, so random kids cannot
//!   cause a fetch storm;
//! - when the key server fails, the last good keys keep serving for a bounded time;
//! - documents and key counts are bounded.
//!
//! Time is the caller's `now` (Unix seconds), like everywhere in this crate.

use crate::error::Error;
use crate::keys::{KeyLimits, KeySet, PublicKey};
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Freshness when the server sends no usable `max-age`.
    pub default_max_age: u64,
    /// Lower bound on freshness (a server saying `max-age=0` must not make us fetch per request).
    pub min_max_age: u64,
    /// Upper bound on freshness (rotation must be noticed eventually).
    pub max_max_age: u64,
    /// Refresh in the background once this fraction of the freshness has passed.
    pub refresh_ahead_fraction: f64,
    /// How long past freshness the last good keys still serve while fetches fail.
    pub max_stale: u64,
    /// At most one refetch per this many seconds for kids we do not know.
    pub unknown_kid_cooldown: u64,
    /// After a failed fetch, wait this long before the next attempt.
    pub failure_backoff: u64,
    pub fetch_timeout: Duration,
    pub limits: KeyLimits,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            default_max_age: 300,
            min_max_age: 30,
            max_max_age: 24 * 3600,
            refresh_ahead_fraction: 0.8,
            max_stale: 6 * 3600,
            unknown_kid_cooldown: 30,
            failure_backoff: 5,
            fetch_timeout: Duration::from_secs(5),
            limits: KeyLimits::default(),
        }
    }
}

#[derive(Debug)]
struct Snapshot {
    keys: Arc<KeySet>,
    fetched_at: u64,
    refresh_at: u64,
    fresh_until: u64,
    usable_until: u64,
}

/// The keys of one URL. Cheap to share (`Arc`); all methods take `&self`.
pub struct JwksCache {
    url: String,
    http: reqwest::Client,
    config: CacheConfig,
    current: RwLock<Option<Arc<Snapshot>>>,
    /// Bumped on every successful fetch; waiters use it to see that someone else fetched.
    generation: AtomicU64,
    /// The current snapshot's `refresh_at` and `usable_until`, readable without its lock
    /// (the verified-token cache asks on every hit).
    refresh_at: AtomicU64,
    usable_until: AtomicU64,
    /// The current snapshot's `fetched_at`, likewise: a `now` before it is a clock that
    /// stepped back (see [`stepped_back`]).
    fetched_at: AtomicU64,
    fetch_lock: tokio::sync::Mutex<()>,
    background_in_flight: AtomicBool,
    last_failure: Mutex<Option<(u64, String)>>,
    /// When `last_failure` happened (0: it did not), readable without its lock: every
    /// request that sees a refresh due asks, and during an outage that is every request.
    failed_at: AtomicU64,
    last_unknown_kid_fetch: AtomicU64,
    fetches: AtomicU64,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &redacted(&self.url))
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    pub fn new(url: impl Into<String>, http: reqwest::Client, config: CacheConfig) -> Self {
        JwksCache {
            url: url.into(),
            http,
            config,
            current: RwLock::new(None),
            generation: AtomicU64::new(0),
            refresh_at: AtomicU64::new(0),
            usable_until: AtomicU64::new(0),
            fetched_at: AtomicU64::new(0),
            fetch_lock: tokio::sync::Mutex::new(()),
            background_in_flight: AtomicBool::new(false),
            last_failure: Mutex::new(None),
            failed_at: AtomicU64::new(0),
            last_unknown_kid_fetch: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many fetches were attempted (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.read().clone()
    }

    /// Which key set is current: read it before taking keys to verify with, and a later
    /// [`vouches`](Self::vouches) knows whether the set has changed since.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a signature checked with `key` of generation `seen` still stands at `now`:
    /// the keys are within their staleness bound and, if they were fetched again since,
    /// still hold that key, material and all (a key the issuer withdrew, or replaced under
    /// the same kid, vouches for nothing). Returns the
    /// current generation when it does. Starts a background refresh when one is due, as
    /// [`keys`](Self::keys) does, so a cache that only ever hits still notices rotation.
    pub fn vouches(self: &Arc<Self>, key: &PublicKey, seen: u64, now: u64) -> Option<u64> {
        let generation = self.generation.load(Ordering::Acquire);
        if now >= self.usable_until.load(Ordering::Acquire) {
            return None;
        }
        if now >= self.refresh_at.load(Ordering::Relaxed)
            || stepped_back(now, self.fetched_at.load(Ordering::Relaxed))
        {
            self.refresh_in_background(now);
        }
        if generation == seen {
            return Some(generation);
        }
        let snapshot = self.snapshot()?;
        let published = snapshot
            .keys
            .get(key.kid())
            .is_some_and(|k| k.same_key(key));
        (now < snapshot.usable_until && published).then_some(generation)
    }

    /// The keys to verify with at `now`: the cached set while usable (starting a background
    /// refresh when it is due), else a fetch that this call waits for.
    pub async fn keys(self: &Arc<Self>, now: u64) -> Result<Arc<KeySet>, Error> {
        match self.snapshot() {
            Some(s) if now < s.usable_until => {
                if now >= s.refresh_at || stepped_back(now, s.fetched_at) {
                    self.refresh_in_background(now);
                }
                Ok(s.keys.clone())
            }
            _ => self.refresh_now(now).await,
        }
    }

    /// Called when a token names a kid we lack: refetch, unless one happened within the
    /// cooldown. Concurrent callers share one fetch.
    pub async fn keys_for_unknown_kid(
        self: &Arc<Self>,
        kid: &str,
        now: u64,
    ) -> Result<Arc<KeySet>, Error> {
        let seen = self.generation.load(Ordering::Acquire);
        let _guard = self.fetch_lock.lock().await;
        // Someone fetched while we waited, or just before we looked (our caller's keys
        // may predate that fetch): use what is there rather than hit the cooldown.
        if let Some(s) = self.snapshot() {
            if self.generation.load(Ordering::Acquire) != seen || s.keys.get(kid).is_some() {
                return Ok(s.keys.clone());
            }
        }
        // While the key server is failing, an unknown kid waits out the backoff like any
        // other fetch.
        if self.in_failure_backoff(now) {
            return Err(Error::UnknownKid {
                kid: kid.chars().take(64).collect(),
            });
        }
        // Keys fetched within the cooldown (for any reason) would not know the kid either.
        // Never zero: random kids must not each cause a fetch.
        let cooldown = self.config.unknown_kid_cooldown.max(1);
        let last = self.last_unknown_kid_fetch.load(Ordering::Acquire);
        let within = |at: u64| !stepped_back(now, at) && now < at.saturating_add(cooldown);
        let fetched_recently = self.snapshot().is_some_and(|s| within(s.fetched_at));
        if fetched_recently || (last != 0 && within(last)) {
            return Err(Error::UnknownKid {
                kid: kid.chars().take(64).collect(),
            });
        }
        self.last_unknown_kid_fetch
            .store(now.max(1), Ordering::Release);
        self.fetch_locked(now).await
    }

    fn refresh_in_background(self: &Arc<Self>, now: u64) {
        // A plain load first: while a refresh runs, the requests that see it due only read.
        if self.background_in_flight.load(Ordering::Relaxed) || self.in_failure_backoff(now) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .background_in_flight
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        /// Clears the flag however the task ends (a panic included), or no refresh would
        /// ever start again.
        struct InFlight(Arc<JwksCache>);
        impl Drop for InFlight {
            fn drop(&mut self) {
                self.0.background_in_flight.store(false, Ordering::Release);
            }
        }
        let in_flight = InFlight(Arc::clone(self));
        handle.spawn(async move {
            let this = &in_flight.0;
            let seen = this.generation.load(Ordering::Acquire);
            let _guard = this.fetch_lock.lock().await;
            if this.generation.load(Ordering::Acquire) == seen {
                if let Err(error) = this.fetch_locked(now).await {
                    tracing::warn!(url = %redacted(&this.url), %error, "background key refresh failed; serving cached keys");
                }
            }
        });
    }

    fn in_failure_backoff(&self, now: u64) -> bool {
        let at = self.failed_at.load(Ordering::Acquire);
        at != 0 && !stepped_back(now, at) && now < at.saturating_add(self.config.failure_backoff)
    }

    /// Fetch while holding nothing: waits for an in-flight fetch, then fetches only if
    /// that one did not already produce usable keys.
    pub async fn refresh_now(self: &Arc<Self>, now: u64) -> Result<Arc<KeySet>, Error> {
        let seen = self.generation.load(Ordering::Acquire);
        let _guard = self.fetch_lock.lock().await;
        if let Some(s) = self.snapshot() {
            if self.generation.load(Ordering::Acquire) != seen && now < s.usable_until {
                return Ok(s.keys.clone());
            }
        }
        if self.in_failure_backoff(now) {
            let reason = self
                .last_failure
                .lock()
                .as_ref()
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            return Err(Error::KeysUnavailable { reason });
        }
        self.fetch_locked(now).await
    }

    /// Fetch and install. Callers hold `fetch_lock`.
    async fn fetch_locked(&self, now: u64) -> Result<Arc<KeySet>, Error> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch(now).await {
            Ok(snapshot) => {
                let keys = snapshot.keys.clone();
                tracing::debug!(url = %redacted(&self.url), keys = keys.len(), fresh_until = snapshot.fresh_until, "fetched issuer keys");
                self.refresh_at
                    .store(snapshot.refresh_at, Ordering::Relaxed);
                self.fetched_at
                    .store(snapshot.fetched_at, Ordering::Relaxed);
                self.usable_until
                    .store(snapshot.usable_until, Ordering::Release);
                *self.current.write() = Some(Arc::new(snapshot));
                *self.last_failure.lock() = None;
                self.failed_at.store(0, Ordering::Release);
                self.generation.fetch_add(1, Ordering::AcqRel);
                Ok(keys)
            }
            Err(reason) => {
                tracing::warn!(url = %redacted(&self.url), %reason, "fetching issuer keys failed");
                *self.last_failure.lock() = Some((now, reason.clone()));
                self.failed_at.store(now.max(1), Ordering::Release);
                // The last good keys still serve within their staleness bound.
                match self.snapshot() {
                    Some(s) if now < s.usable_until => Ok(s.keys.clone()),
                    _ => Err(Error::KeysUnavailable { reason }),
                }
            }
        }
    }

    async fn fetch(&self, now: u64) -> Result<Snapshot, String> {
        let limits = self.config.limits;
        let response = self
            .http
            .get(&self.url)
            .timeout(self.config.fetch_timeout)
            .send()
            .await
            .map_err(|e| format!("request failed: {}", without_url(&e)))?;
        if !response.status().is_success() {
            return Err(format!("key server answered {}", response.status()));
        }
        let max_age = max_age(response.headers());
        let body = read_bounded(response, limits.max_document_bytes)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => "key document too large".to_owned(),
                ReadError::Transport(e) => format!("reading body failed: {e}"),
            })?;
        let keys = KeySet::from_document(&body, limits).map_err(|e| e.to_string())?;
        let c = &self.config;
        // Not `clamp`, which panics on a minimum above the maximum: the maximum wins.
        let fresh = max_age
            .unwrap_or(c.default_max_age)
            .max(c.min_max_age)
            .min(c.max_max_age);
        let fraction = if c.refresh_ahead_fraction.is_finite() {
            c.refresh_ahead_fraction.clamp(0.1, 1.0)
        } else {
            0.8
        };
        let ahead = (fresh as f64 * fraction) as u64;
        let fresh_until = now.saturating_add(fresh);
        Ok(Snapshot {
            keys: Arc::new(keys),
            fetched_at: now,
            refresh_at: now.saturating_add(ahead),
            fresh_until,
            usable_until: fresh_until.saturating_add(c.max_stale),
        })
    }
}

/// Whether `now` is before `then`, a time this cache took from an earlier `now`: the clock
/// stepped back (a host clock corrected, a caller passing an earlier time). Times taken
/// before the step say nothing then: a refresh is due, a cooldown or backoff is over, or a
/// clock that once ran a week fast would keep withdrawn keys trusted for that week.
fn stepped_back(now: u64, then: u64) -> bool {
    now < then
}

/// Why a bounded read failed.
pub(crate) enum ReadError {
    TooLarge,
    Transport(String),
}

/// A response's body, refused once it passes `max` bytes: by its `Content-Length` before
/// reading, else as it streams in. Never more than `max` bytes held.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Transport(without_url(&e)))?
    {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A URL for logs: scheme, host, port and path; never its query or user info, which may
/// carry a key.
pub(crate) fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

/// A fetch error for logs and `keys_unavailable` reasons: the kind and cause, without the
/// URL's query (which may carry a key) and bounded in length.
fn without_url(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "transport error".to_owned()
    };
    if let Some(source) = e.source() {
        text.push_str(": ");
        text.push_str(&source.to_string());
    }
    text.truncate(200);
    text
}

/// Freshness from `Cache-Control: max-age=N` minus `Age`; `no-store`/`no-cache` mean zero
/// (then clamped up to the configured minimum).
pub(crate) fn max_age(headers: &http::HeaderMap) -> Option<u64> {
    let mut max_age = None;
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return Some(0);
            }
            if let Some(n) = lower.strip_prefix("max-age=") {
                max_age = n.trim_matches('"').parse::<u64>().ok();
            }
        }
    }
    let age = headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    max_age.map(|m| m.saturating_sub(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// The window no integration test can hold open: a request read the keys just before
    /// another request's unknown-kid refetch installed the new kid, then asks for the kid
    /// within the cooldown. It must find the installed key, not be refused.
    #[tokio::test]
    async fn unknown_kid_path_sees_a_key_installed_just_before_it() {
        let cache = Arc::new(JwksCache::new(
            "http://127.0.0.1:9/unreachable",
            reqwest::Client::new(),
            CacheConfig::default(),
        ));
        let key = crate::sign::SigningKey::generate_es256("new")
            .unwrap()
            .public_key()
            .unwrap();
        *cache.current.write() = Some(Arc::new(Snapshot {
            keys: Arc::new(KeySet::new([key])),
            fetched_at: 0,
            refresh_at: u64::MAX,
            fresh_until: u64::MAX,
            usable_until: u64::MAX,
        }));
        cache.generation.store(1, Ordering::Release);
        cache.last_unknown_kid_fetch.store(1000, Ordering::Release);
        let keys = cache.keys_for_unknown_kid("new", 1001).await.unwrap();
        assert!(keys.get("new").is_some());
        assert_eq!(cache.fetch_count(), 0);
        // A kid that really is unknown is still refused within the cooldown, unfetched.
        assert_eq!(
            cache.keys_for_unknown_kid("other", 1002).await.unwrap_err(),
            Error::UnknownKid {
                kid: "other".into()
            }
        );
        assert_eq!(cache.fetch_count(), 0);
    }

    #[test]
    fn max_age_reads_cache_control_and_age() {
        assert_eq!(
            max_age(&headers(&[(
                "cache-control",
                "public, max-age=21421, must-revalidate, no-transform"
            )])),
            Some(21421)
        );
        assert_eq!(
            max_age(&headers(&[("cache-control", "max-age=100"), ("age", "40")])),
            Some(60)
        );
        assert_eq!(max_age(&headers(&[("cache-control", "no-store")])), Some(0));
        assert_eq!(max_age(&headers(&[])), None);
        assert_eq!(max_age(&headers(&[("cache-control", "max-age=abc")])), None);
    }
}
