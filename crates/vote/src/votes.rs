//! The voting rules and the `pet_votes` table: which teams exist, who leads, and the
//! queries (SQLite or PostgreSQL, always with bound parameters).

use crate::time::Timestamp;
use gatehouse_store::{Backend, Migration, QueryLimits, Store, StoreError, Value};
use std::time::Duration;

/// The two candidates. Their names are exactly what the form posts and the table stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Team {
    Cats,
    Dogs,
}

impl Team {
    /// `CATS` or `DOGS`, exactly (the samples compare case-sensitively).
    pub fn parse(value: &str) -> Option<Team> {
        match value {
            "CATS" => Some(Team::Cats),
            "DOGS" => Some(Team::Dogs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Team::Cats => "CATS",
            Team::Dogs => "DOGS",
        }
    }
}

/// The samples' leader message: `"CATS are winning by 2 votes"`, `"DOGS are winning by 1
/// vote"`, or `"CATS and DOGS are evenly matched!"`.
pub fn leader_message(cats: i64, dogs: i64) -> String {
    let (leader, diff) = match cats.cmp(&dogs) {
        std::cmp::Ordering::Equal => return "CATS and DOGS are evenly matched!".to_owned(),
        std::cmp::Ordering::Greater => (Team::Cats, cats - dogs),
        std::cmp::Ordering::Less => (Team::Dogs, dogs - cats),
    };
    let unit = if diff == 1 { "vote" } else { "votes" };
    format!("{} are winning by {diff} {unit}", leader.as_str())
}

/// Which team leads, if either does.
pub fn leading_team(cats: i64, dogs: i64) -> Option<Team> {
    match cats.cmp(&dogs) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(Team::Cats),
        std::cmp::Ordering::Less => Some(Team::Dogs),
    }
}

/// One of the most recent votes, as the page lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentVote {
    pub candidate: String,
    pub time_cast: Timestamp,
}

/// What the page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub cats: i64,
    pub dogs: i64,
    /// The five newest votes, newest first.
    pub recent: Vec<RecentVote>,
}

impl Tally {
    pub fn leader_message(&self) -> String {
        leader_message(self.cats, self.dogs)
    }
}

/// Votes per candidate in one UTC hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HourlyCount {
    /// The hour's start.
    pub hour: Timestamp,
    pub cats: i64,
    pub dogs: i64,
}

/// How many recent votes the page lists (`ORDER BY time_cast DESC LIMIT 5`).
pub const RECENT_VOTES: i64 = 5;

/// The longest uid the table holds (`uid VARCHAR(128)`); Firebase uids are 1–128 chars.
pub const MAX_UID_CHARS: usize = 128;

/// The seed's table, created at start, and the per-team counts the page reads.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "pet_votes",
        sqlite: "CREATE TABLE IF NOT EXISTS pet_votes (
            vote_id INTEGER PRIMARY KEY AUTOINCREMENT,
            time_cast TIMESTAMP NOT NULL,
            candidate VARCHAR(6) NOT NULL,
            uid VARCHAR(128) NOT NULL);
        CREATE INDEX IF NOT EXISTS pet_votes_time_cast ON pet_votes (time_cast)",
        postgres: "CREATE TABLE IF NOT EXISTS pet_votes (
            vote_id SERIAL PRIMARY KEY,
            time_cast TIMESTAMP NOT NULL,
            candidate VARCHAR(6) NOT NULL,
            uid VARCHAR(128) NOT NULL);
        CREATE INDEX IF NOT EXISTS pet_votes_time_cast ON pet_votes (time_cast)",
    },
    // Counting the table on every page load costs a scan of every vote, and page loads
    // need no token. Triggers keep the counts in the transaction of each change, so they
    // are exact on every replica and whoever writes (an older replica during a rolling
    // upgrade, the seed's own app on the same database). The backfill runs under the
    // migration's lock: SQLite's write lock, and on PostgreSQL the CREATE TRIGGER's table
    // lock, which waits for open inserts and holds new ones until the counts are in.
    Migration {
        version: 2,
        description: "pet_vote_counts",
        sqlite: "CREATE TABLE IF NOT EXISTS pet_vote_counts (
            candidate VARCHAR(6) PRIMARY KEY,
            votes INTEGER NOT NULL);
        CREATE TRIGGER IF NOT EXISTS pet_votes_counted_insert AFTER INSERT ON pet_votes
        BEGIN
            INSERT INTO pet_vote_counts (candidate, votes) VALUES (NEW.candidate, 1)
                ON CONFLICT (candidate) DO UPDATE SET votes = votes + 1;
        END;
        CREATE TRIGGER IF NOT EXISTS pet_votes_counted_delete AFTER DELETE ON pet_votes
        BEGIN
            UPDATE pet_vote_counts SET votes = votes - 1 WHERE candidate = OLD.candidate;
        END;
        CREATE TRIGGER IF NOT EXISTS pet_votes_counted_update
            AFTER UPDATE OF candidate ON pet_votes
        BEGIN
            UPDATE pet_vote_counts SET votes = votes - 1 WHERE candidate = OLD.candidate;
            INSERT INTO pet_vote_counts (candidate, votes) VALUES (NEW.candidate, 1)
                ON CONFLICT (candidate) DO UPDATE SET votes = votes + 1;
        END;
        DELETE FROM pet_vote_counts;
        INSERT INTO pet_vote_counts (candidate, votes)
            SELECT candidate, COUNT(*) FROM pet_votes GROUP BY candidate",
        postgres: "CREATE TABLE IF NOT EXISTS pet_vote_counts (
            candidate VARCHAR(6) PRIMARY KEY,
            votes BIGINT NOT NULL);
        CREATE OR REPLACE FUNCTION pet_votes_count() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('DELETE', 'UPDATE') THEN
                UPDATE pet_vote_counts SET votes = votes - 1 WHERE candidate = OLD.candidate;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO pet_vote_counts (candidate, votes) VALUES (NEW.candidate, 1)
                    ON CONFLICT (candidate) DO UPDATE SET votes = pet_vote_counts.votes + 1;
            END IF;
            RETURN NULL;
        END $$;
        CREATE OR REPLACE FUNCTION pet_votes_count_truncate() RETURNS trigger
            LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM pet_vote_counts;
            RETURN NULL;
        END $$;
        DROP TRIGGER IF EXISTS pet_votes_counted ON pet_votes;
        CREATE TRIGGER pet_votes_counted AFTER INSERT OR DELETE OR UPDATE OF candidate
            ON pet_votes FOR EACH ROW EXECUTE FUNCTION pet_votes_count();
        DROP TRIGGER IF EXISTS pet_votes_counted_truncate ON pet_votes;
        CREATE TRIGGER pet_votes_counted_truncate AFTER TRUNCATE
            ON pet_votes FOR EACH STATEMENT EXECUTE FUNCTION pet_votes_count_truncate();
        DELETE FROM pet_vote_counts;
        INSERT INTO pet_vote_counts (candidate, votes)
            SELECT candidate, COUNT(*) FROM pet_votes GROUP BY candidate",
    },
];

/// A storage failure, split by what the caller should tell the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VoteStoreError {
    /// The database cannot be reached right now (down, restarting, pool exhausted, a lock
    /// held past the wait) and nothing was written: 503, try again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A write was sent but no answer came, within the budget or at all (the connection
    /// failed once it was out), so whether it committed is unknown: 504, and no
    /// invitation to try again.
    #[error("database gave no answer: {0}")]
    OutcomeUnknown(String),
    /// Anything else: 500.
    #[error("database error: {0}")]
    Failed(String),
}

impl VoteStoreError {
    fn from_store(error: StoreError) -> Self {
        match &error {
            StoreError::Database(e) if is_connection_error(e) => {
                VoteStoreError::Unavailable(error.to_string())
            }
            StoreError::Unanswered(_) => VoteStoreError::OutcomeUnknown(error.to_string()),
            _ => VoteStoreError::Failed(error.to_string()),
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, VoteStoreError::Unavailable(_))
    }

    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, VoteStoreError::OutcomeUnknown(_))
    }
}

/// Errors that mean "the database is not there right now" rather than "this query is wrong".
fn is_connection_error(error: &sqlx::Error) -> bool {
    use sqlx::Error as E;
    match error {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        E::Protocol(_) => true,
        E::Database(db) => {
            db.code().is_some_and(|code| {
                // 08: connection exception; 57P0x: shutdown / cannot connect now;
                // 53: insufficient resources; 3D000: database does not exist (yet);
                // 55P03 and 57014: `lock_timeout` and `statement_timeout` ran out, and the
                // server rolled the statement back.
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code.starts_with("53")
                    || code == "3D000"
                    || code == "55P03"
                    || code == "57014"
            }) || db.message().contains("database is locked")
        }
        _ => false,
    }
}

/// How long one query may take before the request answers instead of hanging.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The limits the database itself enforces, inside [`QUERY_TIMEOUT`]: a vote that cannot
/// be written in time is refused and rolled back by the database, so the 503 the client
/// gets is true (nothing was written) and its retry is not a second vote. Waiting for a
/// connection and then for the statement fit in the budget together, with room for the
/// round trips.
pub const DATABASE_LIMITS: QueryLimits = QueryLimits {
    acquire: Duration::from_millis(1500),
    lock_wait: Duration::from_millis(2500),
    statement: Some(Duration::from_secs(3)),
};

const _: () = {
    let statement = match DATABASE_LIMITS.statement {
        Some(statement) => statement,
        None => DATABASE_LIMITS.lock_wait,
    };
    assert!(DATABASE_LIMITS.lock_wait.as_millis() <= statement.as_millis());
    assert!(
        DATABASE_LIMITS.acquire.as_millis() + statement.as_millis() + 250
            <= QUERY_TIMEOUT.as_millis()
    );
};

/// The `pet_votes` table in a [`Store`].
#[derive(Debug, Clone)]
pub struct VoteStore {
    store: Store,
}

impl VoteStore {
    /// Creates the table if it is missing (migrations), then wraps the store.
    pub async fn open(store: Store) -> Result<Self, StoreError> {
        store.migrate("vote", MIGRATIONS).await?;
        Ok(VoteStore { store })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// Closes the pool (SIGTERM).
    pub async fn close(&self) {
        self.store.close().await;
    }

    /// A read within the budget; giving up on a read changes nothing.
    async fn timed<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, VoteStoreError> {
        match tokio::time::timeout(QUERY_TIMEOUT, work).await {
            Ok(result) => result.map_err(VoteStoreError::from_store),
            Err(_) => Err(VoteStoreError::Unavailable(format!(
                "no answer within {} s",
                QUERY_TIMEOUT.as_secs()
            ))),
        }
    }

    /// A write within the budget. The database's own limits ([`DATABASE_LIMITS`]) end it
    /// first and roll it back; this bound is only for a database that stopped answering
    /// altogether, after which the write may still commit, so it is not "unavailable".
    async fn timed_write<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, VoteStoreError> {
        match tokio::time::timeout(QUERY_TIMEOUT, work).await {
            Ok(result) => result.map_err(VoteStoreError::from_store),
            Err(_) => Err(VoteStoreError::OutcomeUnknown(format!(
                "no answer to a write within {} s",
                QUERY_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Records one vote. Returns once the database has committed it.
    pub async fn cast(&self, team: Team, uid: &str, at: Timestamp) -> Result<(), VoteStoreError> {
        let sql = match self.backend() {
            Backend::Sqlite => {
                "INSERT INTO pet_votes (time_cast, candidate, uid) VALUES ($1, $2, $3)"
            }
            Backend::Postgres => {
                "INSERT INTO pet_votes (time_cast, candidate, uid) VALUES (CAST($1 AS TIMESTAMP), $2, $3)"
            }
        };
        let params = [
            Value::Text(at.to_db()),
            Value::from(team.as_str()),
            Value::from(uid),
        ];
        self.timed_write(self.store.write(sql, &params)).await?;
        Ok(())
    }

    /// Counts per team and the five newest votes.
    pub async fn tally(&self) -> Result<Tally, VoteStoreError> {
        let counts = self
            .timed(
                self.store
                    .fetch_all("SELECT candidate, votes FROM pet_vote_counts", &[]),
            )
            .await?;
        let (mut cats, mut dogs) = (0, 0);
        for row in counts {
            let count = row.int(1).map_err(VoteStoreError::from_store)?;
            // Summed: a table the seed created with padded names may hold both spellings.
            match Team::parse(row.text(0).map_err(VoteStoreError::from_store)?.trim()) {
                Some(Team::Cats) => cats += count,
                Some(Team::Dogs) => dogs += count,
                None => {}
            }
        }
        let sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT candidate, time_cast FROM pet_votes \
                 ORDER BY time_cast DESC, vote_id DESC LIMIT $1"
            }
            Backend::Postgres => {
                "SELECT candidate, to_char(time_cast, 'YYYY-MM-DD HH24:MI:SS.US') FROM pet_votes \
                 ORDER BY time_cast DESC, vote_id DESC LIMIT $1"
            }
        };
        let rows = self
            .timed(self.store.fetch_all(sql, &[Value::Int(RECENT_VOTES)]))
            .await?;
        let mut recent = Vec::with_capacity(rows.len());
        for row in rows {
            let candidate = row.text(0).map_err(VoteStoreError::from_store)?;
            let time = row.text(1).map_err(VoteStoreError::from_store)?;
            let time_cast = Timestamp::parse_db(&time)
                .ok_or_else(|| VoteStoreError::Failed(format!("unreadable time_cast {time:?}")))?;
            recent.push(RecentVote {
                candidate: candidate.trim().to_owned(),
                time_cast,
            });
        }
        Ok(Tally { cats, dogs, recent })
    }

    /// Votes per UTC hour and team since `since`, oldest hour first (the aggregate query
    /// that stands in for seed 000's optional BigQuery call).
    pub async fn hourly(&self, since: Timestamp) -> Result<Vec<HourlyCount>, VoteStoreError> {
        let sql = match self.backend() {
            Backend::Sqlite => {
                "SELECT substr(time_cast, 1, 13), candidate, COUNT(*) FROM pet_votes \
                 WHERE time_cast >= $1 GROUP BY 1, 2 ORDER BY 1, 2"
            }
            Backend::Postgres => {
                "SELECT to_char(date_trunc('hour', time_cast), 'YYYY-MM-DD HH24'), candidate, COUNT(*) \
                 FROM pet_votes WHERE time_cast >= CAST($1 AS TIMESTAMP) GROUP BY 1, 2 ORDER BY 1, 2"
            }
        };
        let rows = self
            .timed(self.store.fetch_all(sql, &[Value::Text(since.to_db())]))
            .await?;
        let mut hours: Vec<HourlyCount> = Vec::new();
        for row in rows {
            let hour_text = row.text(0).map_err(VoteStoreError::from_store)?;
            let hour = Timestamp::parse_db(&format!("{hour_text}:00:00"))
                .ok_or_else(|| VoteStoreError::Failed(format!("unreadable hour {hour_text:?}")))?;
            let team = Team::parse(row.text(1).map_err(VoteStoreError::from_store)?.trim());
            let count = row.int(2).map_err(VoteStoreError::from_store)?;
            if hours.last().is_none_or(|h| h.hour != hour) {
                hours.push(HourlyCount {
                    hour,
                    cats: 0,
                    dogs: 0,
                });
            }
            if let Some(last) = hours.last_mut() {
                match team {
                    Some(Team::Cats) => last.cats += count,
                    Some(Team::Dogs) => last.dogs += count,
                    None => {}
                }
            }
        }
        Ok(hours)
    }

    /// Total rows (tests and operators).
    pub async fn count(&self) -> Result<i64, VoteStoreError> {
        let row = self
            .timed(
                self.store
                    .fetch_optional("SELECT COUNT(*) FROM pet_votes", &[]),
            )
            .await?;
        match row {
            Some(row) => row.int(0).map_err(VoteStoreError::from_store),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_wording() {
        assert_eq!(leader_message(0, 0), "CATS and DOGS are evenly matched!");
        assert_eq!(leader_message(3, 3), "CATS and DOGS are evenly matched!");
        assert_eq!(leader_message(1, 0), "CATS are winning by 1 vote");
        assert_eq!(leader_message(5, 3), "CATS are winning by 2 votes");
        assert_eq!(leader_message(2, 3), "DOGS are winning by 1 vote");
        assert_eq!(leader_message(0, 10), "DOGS are winning by 10 votes");
    }

    #[test]
    fn teams_are_exact() {
        assert_eq!(Team::parse("CATS"), Some(Team::Cats));
        assert_eq!(Team::parse("DOGS"), Some(Team::Dogs));
        for bad in ["cats", "Cats", " CATS", "CATS ", "BIRDS", "", "CATS'--"] {
            assert_eq!(Team::parse(bad), None, "{bad:?}");
        }
    }
}
