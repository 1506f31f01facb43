//! Time as an input: the [`Clock`] the app reads when a vote is cast, and the UTC
//! [`Timestamp`] stored in `pet_votes.time_cast` (microseconds, as PostgreSQL keeps them).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A UTC instant with microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    micros: i64,
}

const MICROS: i64 = 1_000_000;

impl Timestamp {
    pub fn from_unix_micros(micros: i64) -> Self {
        Timestamp { micros }
    }

    pub fn from_unix_seconds(secs: i64) -> Self {
        Timestamp {
            micros: secs.saturating_mul(MICROS),
        }
    }

    pub fn unix_micros(self) -> i64 {
        self.micros
    }

    pub fn unix_seconds(self) -> i64 {
        self.micros.div_euclid(MICROS)
    }

    /// `secs` earlier (for "the last N hours").
    pub fn minus_seconds(self, secs: i64) -> Self {
        Timestamp {
            micros: self.micros.saturating_sub(secs.saturating_mul(MICROS)),
        }
    }

    fn parts(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let secs = self.micros.div_euclid(MICROS);
        let micros = self.micros.rem_euclid(MICROS) as u32;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        (y, m, d, rem / 3600, rem / 60 % 60, rem % 60, micros)
    }

    /// `YYYY-MM-DD HH:MM:SS.ffffff`: how `time_cast` is written to and read from the
    /// database (SQLite compares it as text, PostgreSQL casts it to `TIMESTAMP`).
    pub fn to_db(self) -> String {
        let (y, mo, d, h, mi, s, us) = self.parts();
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
    }

    /// Parses [`Timestamp::to_db`]'s format (fraction optional, 0–6 digits).
    pub fn parse_db(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        if b[10] != b' ' && b[10] != b'T' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let s = text.get(r)?;
            if !s.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let mut micros = 0i64;
        let rest = text.get(19..)?;
        if let Some(fraction) = rest.strip_prefix('.') {
            if fraction.is_empty()
                || fraction.len() > 6
                || !fraction.bytes().all(|c| c.is_ascii_digit())
            {
                return None;
            }
            micros = fraction.parse::<i64>().ok()? * 10i64.pow(6 - fraction.len() as u32);
        } else if !rest.is_empty() {
            return None;
        }
        let days = days_from_civil(y, mo as u32, d as u32);
        let secs = days * 86_400 + h * 3600 + mi * 60 + s;
        Some(Timestamp {
            micros: secs * MICROS + micros,
        })
    }

    /// RFC 3339 in UTC with microseconds: `2026-11-23T14:55:05.123456Z`.
    pub fn rfc3339(self) -> String {
        let (y, mo, d, h, mi, s, us) = self.parts();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
    }
}

impl fmt::Display for Timestamp {
    /// What people read on the page and in the success message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s, _) = self.parts();
        write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 -> (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Where the app reads the time. Tests pin or step it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

impl std::fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        #[allow(clippy::disallowed_methods)] // the one place the app reads the real clock
        let now = std::time::SystemTime::now();
        let micros = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        Timestamp::from_unix_micros(micros)
    }
}

/// A clock that moves only when told to (tests). Each read can also step it, so votes
/// cast in a row get distinct, increasing times.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
    step: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn at(now: Timestamp) -> Self {
        ManualClock {
            micros: Arc::new(AtomicI64::new(now.unix_micros())),
            step: Arc::new(AtomicI64::new(0)),
        }
    }
    /// Every read advances the clock by `micros` after returning the current time.
    pub fn stepping(self, micros: i64) -> Self {
        self.step.store(micros, Ordering::SeqCst);
        self
    }
    pub fn set(&self, now: Timestamp) {
        self.micros.store(now.unix_micros(), Ordering::SeqCst);
    }
    pub fn advance_seconds(&self, secs: i64) {
        self.micros.fetch_add(secs * MICROS, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let step = self.step.load(Ordering::SeqCst);
        Timestamp::from_unix_micros(self.micros.fetch_add(step, Ordering::SeqCst))
    }
}

/// Lets the token verifier read the app's clock, so one pinned clock governs both.
pub(crate) struct VerifyClock(pub(crate) Arc<dyn Clock>);

impl gatehouse_verify::Clock for VerifyClock {
    fn now_unix(&self) -> u64 {
        u64::try_from(self.0.now().unix_seconds()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t = Timestamp::from_unix_micros(1_795_964_105_123_456);
        assert_eq!(t.to_db(), "2026-11-29 14:55:05.123456");
        assert_eq!(t.rfc3339(), "2026-11-29T14:55:05.123456Z");
        assert_eq!(t.to_string(), "2026-11-29 14:55:05 UTC");
        assert_eq!(Timestamp::parse_db(&t.to_db()), Some(t));
        assert_eq!(
            Timestamp::parse_db("1970-01-01 00:00:01"),
            Some(Timestamp::from_unix_seconds(1))
        );
        assert_eq!(
            Timestamp::parse_db("2000-02-29 12:00:00.5"),
            Some(Timestamp::from_unix_micros(951_825_600_500_000))
        );
        assert_eq!(Timestamp::parse_db("2000-02-29 12:00"), None);
        assert_eq!(Timestamp::parse_db("2000-13-01 00:00:00"), None);
        assert_eq!(Timestamp::parse_db("2000-01-01 00:00:00x"), None);
    }

    #[test]
    fn round_trips_many_days() {
        for day in (0i64..2_900_000).step_by(997) {
            let t = Timestamp::from_unix_seconds(day * 86_400 + 3661);
            assert_eq!(Timestamp::parse_db(&t.to_db()), Some(t), "{}", t.to_db());
        }
    }

    #[test]
    fn manual_clock_steps() {
        let c = ManualClock::at(Timestamp::from_unix_seconds(10)).stepping(5);
        assert_eq!(c.now().unix_micros(), 10_000_000);
        assert_eq!(c.now().unix_micros(), 10_000_005);
    }
}
