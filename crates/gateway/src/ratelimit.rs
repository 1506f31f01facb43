//! Per-caller token buckets: `burst` requests at once, refilled at `per_second`. The table
//! is bounded; an evicted caller starts again with a full bucket.

use crate::config::RateLimit;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;

const MAX_CALLERS: usize = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: quick_cache::sync::Cache<String, Arc<Mutex<Bucket>>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: quick_cache::sync::Cache::new(MAX_CALLERS),
        }
    }

    /// Takes one token for `caller` at `now`, or says in how many whole seconds one will
    /// be available (the `Retry-After` value, at least 1).
    pub(crate) fn check(&self, caller: &str, now: Instant) -> Result<(), u64> {
        let burst = f64::from(self.limit.burst);
        let bucket = self.buckets.get_or_insert_with(caller, || {
            Ok::<_, std::convert::Infallible>(Arc::new(Mutex::new(Bucket {
                tokens: burst,
                last: now,
            })))
        });
        let Ok(bucket) = bucket;
        let mut b = bucket.lock();
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.limit.per_second).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.limit.per_second;
            Err((wait.ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let rl = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 2,
        });
        let t = Instant::now();
        assert!(rl.check("a", t).is_ok());
        assert!(rl.check("a", t).is_ok());
        assert_eq!(rl.check("a", t), Err(1));
        assert!(rl.check("b", t).is_ok(), "callers are separate");
        assert!(rl.check("a", t + Duration::from_millis(1100)).is_ok());
    }
}
