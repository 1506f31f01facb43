//! The request budget holds at the database: a vote that cannot be written in time is
//! answered 503 and is never written afterwards, so the client's retry is not a second
//! vote. While a vote comes in, another writer holds what the insert needs for longer than
//! the budget (SQLite's write lock, as a backup or `sqlite3` with `BEGIN IMMEDIATE` would;
//! on PostgreSQL a row another transaction has not committed), or PostgreSQL takes longer
//! than the budget to run the insert.

use crate::process::temp_dir;
use crate::support::*;
use gatehouse_vote::votes::QUERY_TIMEOUT;
use gatehouse_vote::{DatabaseTarget, DatabaseUrl};
use http::StatusCode;
use sqlx::Connection as _;
use std::time::Duration;
use tokio::time::Instant;

/// How long the other writer keeps its lock: past the budget, and past it by more than a
/// statement left running behind the 503 would need to commit.
const HELD: Duration = Duration::from_secs(7);

/// The refused vote's answer: 503 with `Retry-After`, within the budget.
fn assert_refused_in_time(answer: &Answer, asked: Instant) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.headers["retry-after"], "5");
    assert!(
        asked.elapsed() <= QUERY_TIMEOUT + Duration::from_millis(500),
        "answered after {:?}",
        asked.elapsed()
    );
}

/// After the lock is gone, and time enough for a statement left behind to land: the
/// table holds only the vote from before, and the page says so.
async fn assert_only_the_first_vote(t: &TestApp) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(t.votes.count().await.unwrap(), 1);
    let body = tally(&t.app).await;
    assert_eq!(
        (body["cats"].as_i64(), body["dogs"].as_i64()),
        (Some(1), Some(0))
    );
    // And the database takes votes again.
    assert_eq!(vote(&t.app, "after", "DOGS").await.status, StatusCode::OK);
    assert_eq!(t.votes.count().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_refused_behind_a_held_sqlite_lock_is_never_written() {
    let dir = temp_dir("budget");
    let file = dir.join("vote.sqlite3");
    let votes = gatehouse_vote::open_votes(&DatabaseTarget::Sqlite(file.clone()))
        .await
        .unwrap();
    let t = app_with(votes, verifier()).await;
    assert_eq!(vote(&t.app, "before", "CATS").await.status, StatusCode::OK);

    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite:{}", file.display()))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let locked = Instant::now();
    let answer = vote(&t.app, "during", "DOGS").await;
    assert_refused_in_time(&answer, locked);
    tokio::time::sleep_until(locked + HELD).await;
    sqlx::raw_sql("COMMIT").execute(&mut other).await.unwrap();
    other.close().await.unwrap();

    assert_only_the_first_vote(&t).await;
    t.votes.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The app on a fresh PostgreSQL database, opened as `gatehouse vote` opens it, with one
/// vote in; and a second connection for the other writer.
async fn postgres_app(
    name: &str,
) -> Option<(gatehouse_testkit::TestDatabase, TestApp, sqlx::PgConnection)> {
    let db = gatehouse_testkit::postgres(name).await?;
    let votes = gatehouse_vote::open_votes(&DatabaseTarget::Url(DatabaseUrl::new(&db.url)))
        .await
        .unwrap();
    let t = app_with(votes, verifier()).await;
    assert_eq!(vote(&t.app, "before", "CATS").await.status, StatusCode::OK);
    let other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    Some((db, t, other))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_refused_behind_a_held_postgres_row_lock_is_never_written() {
    let Some((_db, t, mut other)) = postgres_app("vote_budget_lock").await else {
        return;
    };
    // Another transaction holds, uncommitted, the row the vote's insert will need (the next
    // vote_id), so the insert is parsed and sent and then waits, as behind a long import.
    let mut tx = other.begin().await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO pet_votes (vote_id, time_cast, candidate, uid) \
         SELECT nextval('pet_votes_vote_id_seq') + 1, now(), 'CATS', 'importer'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let locked = Instant::now();
    let answer = vote(&t.app, "during", "DOGS").await;
    assert_refused_in_time(&answer, locked);
    tokio::time::sleep_until(locked + HELD).await;
    tx.rollback().await.unwrap();
    other.close().await.unwrap();

    assert_only_the_first_vote(&t).await;
    t.votes.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_too_slow_for_postgres_is_never_written() {
    let Some((_db, t, mut other)) = postgres_app("vote_budget_slow").await else {
        return;
    };
    // The insert itself takes longer than the budget (slow storage, a stalled replica).
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION slow_vote() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep({}); RETURN NEW; END $$; \
         CREATE TRIGGER slow_vote BEFORE INSERT ON pet_votes \
         FOR EACH ROW EXECUTE FUNCTION slow_vote()",
        HELD.as_secs()
    ))
    .execute(&mut other)
    .await
    .unwrap();
    let asked = Instant::now();
    let answer = vote(&t.app, "during", "DOGS").await;
    assert_refused_in_time(&answer, asked);
    tokio::time::sleep_until(asked + HELD).await;
    sqlx::raw_sql("DROP TRIGGER slow_vote ON pet_votes")
        .execute(&mut other)
        .await
        .unwrap();
    other.close().await.unwrap();

    assert_only_the_first_vote(&t).await;
    t.votes.close().await;
}
