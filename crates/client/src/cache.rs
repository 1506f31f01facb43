//! Tokens cached per audience and refreshed ahead of expiry. One mint at a time per audience
//! however many callers wait (they share its result, success or failure, so a failing token
//! service sees one request per round of callers, not one per caller). The cache holds a
//! bounded number of audiences: the audience is often a URL's origin, and whoever chooses the
//! URLs (a push endpoint, a webhook) must not be able to grow it without end.

use crate::error::Error;
use crate::source::{IdToken, IdTokenSource};
use gatehouse_verify::{Clock, SystemClock};
use parking_lot::RwLock;
use quick_cache::sync::Cache;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Refresh this long before `exp` (the extension and the metadata server use 5 minutes).
pub const REFRESH_BEFORE_EXPIRY_SECS: u64 = 300;

/// Below this much remaining life a token is not handed out even when a refresh fails.
const MIN_REMAINING_SECS: u64 = 10;

/// After a failed refresh, keep serving a still-valid token this long before trying again.
const RETRY_AFTER_FAILURE_SECS: u64 = 5;

/// The most audiences a [`TokenCache`] holds. Past it, audiences asked for once are
/// forgotten before those asked for again (a flood of new origins does not push out the
/// receiver a service keeps calling), and a forgotten audience's next token is minted anew.
pub const MAX_AUDIENCES: usize = 1024;

/// How often, at most, audiences whose token has expired are dropped (when a new audience
/// comes): a sweep visits every audience, so it is not done on every insert.
const SWEEP_EVERY_SECS: u64 = 60;

/// A token source with a per-audience cache in front, holding at most [`MAX_AUDIENCES`]
/// audiences and dropping those whose token has expired.
pub struct TokenCache {
    source: Box<dyn IdTokenSource>,
    clock: Arc<dyn Clock>,
    refresh_before: u64,
    slots: Cache<String, Arc<Slot>>,
    /// When the next sweep of expired audiences may run (Unix seconds).
    next_sweep: AtomicU64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("source", &self.source.describe())
            .field("refresh_before", &self.refresh_before)
            .field("audiences", &self.slots.len())
            .finish()
    }
}

#[derive(Default)]
struct Slot {
    current: RwLock<Option<Cached>>,
    /// Finished mint attempts; a waiter that sees it move knows an attempt ended meanwhile.
    attempts: AtomicU64,
    /// Held while minting: the single flight.
    minting: tokio::sync::Mutex<MintState>,
}

#[derive(Default)]
struct MintState {
    last_error: Option<Error>,
    failed_at: u64,
}

struct Cached {
    token: IdToken,
    /// When to mint the next one: the buffer before `exp`, or half-way through the token's
    /// life when it was issued for less than twice the buffer.
    refresh_at: u64,
}

impl Slot {
    /// The token, if `now` is before its refresh time.
    fn fresh(&self, now: u64) -> Option<IdToken> {
        self.current
            .read()
            .as_ref()
            .filter(|c| now < c.refresh_at)
            .map(|c| c.token.clone())
    }

    /// The token, if it has more than `MIN_REMAINING_SECS` left (refresh due or not).
    fn still_valid(&self, now: u64) -> Option<IdToken> {
        self.current
            .read()
            .as_ref()
            .filter(|c| now.saturating_add(MIN_REMAINING_SECS) < c.token.expires_at())
            .map(|c| c.token.clone())
    }

    /// Whether it holds a token that has not expired.
    fn holds_unexpired(&self, now: u64) -> bool {
        self.current
            .read()
            .as_ref()
            .is_some_and(|c| now < c.token.expires_at())
    }
}

impl TokenCache {
    /// A cache in front of `source`, on the system clock.
    pub fn new(source: impl IdTokenSource + 'static) -> Arc<Self> {
        TokenCache::with_clock(source, Arc::new(SystemClock))
    }

    /// A cache in front of `source`, on `clock` (tests pin it).
    pub fn with_clock(source: impl IdTokenSource + 'static, clock: Arc<dyn Clock>) -> Arc<Self> {
        let now = clock.now_unix();
        Arc::new(TokenCache {
            source: Box::new(source),
            clock,
            refresh_before: REFRESH_BEFORE_EXPIRY_SECS,
            slots: Cache::new(MAX_AUDIENCES),
            next_sweep: AtomicU64::new(now.saturating_add(SWEEP_EVERY_SECS)),
        })
    }

    /// How many audiences the cache holds now (at most [`MAX_AUDIENCES`]).
    pub fn audiences(&self) -> usize {
        self.slots.len()
    }

    /// The source behind the cache.
    pub fn source(&self) -> &dyn IdTokenSource {
        &*self.source
    }

    /// A token for `audience` with more than the refresh buffer left: the cached one, or a
    /// new one (minted once however many callers ask at the same time).
    pub async fn token(&self, audience: &str) -> Result<IdToken, Error> {
        let now = self.clock.now_unix();
        // Fast path: one shared lock on the map's shard, one on the slot, two `Arc` clones.
        let slot = match self.slots.get(audience) {
            Some(slot) => slot,
            None => self.new_slot(audience, now),
        };
        if let Some(token) = slot.fresh(now) {
            return Ok(token);
        }
        let seen = slot.attempts.load(Ordering::Acquire);
        let mut state = match slot.minting.try_lock() {
            Ok(state) => state,
            Err(_) => {
                // A refresh is under way. A token that is merely inside the buffer is
                // still good: hand it out rather than queue behind the refresh.
                if let Some(token) = slot.still_valid(now) {
                    return Ok(token);
                }
                slot.minting.lock().await
            }
        };
        let now = self.clock.now_unix();
        if let Some(token) = slot.fresh(now) {
            return Ok(token); // minted while we waited
        }
        let stale = slot.still_valid(now);
        if slot.attempts.load(Ordering::Acquire) != seen {
            // An attempt ended while we waited: share its outcome, do not repeat it.
            if let Some(token) = stale {
                return Ok(token);
            }
            if let Some(error) = &state.last_error {
                return Err(error.clone());
            }
        }
        if state.last_error.is_some() {
            if let Some(token) = &stale {
                if now < state.failed_at.saturating_add(RETRY_AFTER_FAILURE_SECS) {
                    return Ok(token.clone()); // back off after a failed refresh
                }
            }
        }
        let minted = self.source.mint(audience).await;
        slot.attempts.fetch_add(1, Ordering::AcqRel);
        match minted {
            Ok(token) => {
                let life = token.expires_at().saturating_sub(now);
                let refresh_at = token.expires_at() - self.refresh_before.min(life / 2);
                *slot.current.write() = Some(Cached {
                    token: token.clone(),
                    refresh_at,
                });
                state.last_error = None;
                Ok(token)
            }
            Err(error) => {
                state.last_error = Some(error.clone());
                state.failed_at = now;
                match stale {
                    Some(token) => {
                        tracing::warn!(
                            audience,
                            %error,
                            "ID token refresh failed; using the current token until it expires"
                        );
                        Ok(token)
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// Forget `rejected` for `audience` (a server answered 401 to it), so the next
    /// [`token`](Self::token) mints. A newer token, minted meanwhile, is kept.
    pub fn invalidate(&self, audience: &str, rejected: &IdToken) {
        if let Some(slot) = self.slots.peek(audience) {
            let mut current = slot.current.write();
            if current.as_ref().is_some_and(|c| &c.token == rejected) {
                *current = None;
            }
        }
    }

    /// The slot for an audience not found in the map: inserted, unless another caller
    /// inserted one meanwhile. Past [`MAX_AUDIENCES`] the map evicts another audience; a
    /// caller still holding the evicted slot finishes with it, only the token is not kept.
    fn new_slot(&self, audience: &str, now: u64) -> Arc<Slot> {
        self.drop_expired(now);
        match self
            .slots
            .get_or_insert_with(audience, || Ok::<_, Infallible>(Arc::default()))
        {
            Ok(slot) => slot,
            Err(never) => match never {},
        }
    }

    /// Drops the audiences whose token has expired (or that never got one), unless a caller
    /// is using them, at most once every [`SWEEP_EVERY_SECS`].
    fn drop_expired(&self, now: u64) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due
            || self
                .next_sweep
                .compare_exchange(
                    due,
                    now.saturating_add(SWEEP_EVERY_SECS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return; // not due, or another caller sweeps
        }
        // A count above one: a caller holds the slot (minting, or waiting on a mint).
        self.slots
            .retain(|_, slot| Arc::strong_count(slot) > 1 || slot.holds_unexpired(now));
    }
}
