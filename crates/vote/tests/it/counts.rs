//! The page's counts: right after every vote, carried over from a database that an older
//! version (or the seed's own app) filled, kept right whoever writes the table, and cheap
//! to read however many votes there are (page loads need no token).

use crate::process::temp_dir;
use crate::support::*;
use gatehouse_store::{Store, Value};
use gatehouse_vote::votes::MIGRATIONS;
use gatehouse_vote::{DatabaseTarget, DatabaseUrl};
use http::{Request, StatusCode};
use std::time::{Duration, Instant};

/// The page's `(cats, dogs)`.
async fn counts(t: &TestApp) -> (i64, i64) {
    let body = tally(&t.app).await;
    (
        body["cats"].as_i64().unwrap(),
        body["dogs"].as_i64().unwrap(),
    )
}

/// A vote written straight into the table, as the seed's app or an older replica would.
async fn foreign_vote(store: &Store, team: &str) {
    let sql = match store.backend() {
        gatehouse_store::Backend::Sqlite => {
            "INSERT INTO pet_votes (time_cast, candidate, uid) VALUES ($1, $2, $3)"
        }
        gatehouse_store::Backend::Postgres => {
            "INSERT INTO pet_votes (time_cast, candidate, uid) VALUES (CAST($1 AS TIMESTAMP), $2, $3)"
        }
    };
    let params = [
        Value::from("2026-11-29 11:00:00.000000"),
        Value::from(team),
        Value::from("seed-app-user"),
    ];
    store.execute(sql, &params).await.unwrap();
}

/// A database as the previous version left it (the seed's table only) with votes in it;
/// the app opens it, and the counts follow every writer from then on.
async fn counts_carry_over_and_follow_every_writer(target: DatabaseTarget, old: Store) {
    old.migrate("vote", &MIGRATIONS[..1]).await.unwrap();
    for team in ["CATS", "DOGS", "CATS", "DOGS", "CATS"] {
        foreign_vote(&old, team).await;
    }

    let votes = gatehouse_vote::open_votes(&target).await.unwrap();
    let t = app_with(votes, verifier()).await;
    assert_eq!(counts(&t).await, (3, 2));
    assert_eq!(
        vote(&t.app, "new-voter", "DOGS").await.status,
        StatusCode::OK
    );
    assert_eq!(counts(&t).await, (3, 3));
    let page = tally(&t.app).await;
    assert_eq!(page["leader"], "CATS and DOGS are evenly matched!");

    // Another writer on the same database, still running the old code.
    foreign_vote(&old, "CATS").await;
    assert_eq!(counts(&t).await, (4, 3));
    let removed = old
        .execute(
            "DELETE FROM pet_votes WHERE vote_id = (SELECT MIN(vote_id) FROM pet_votes WHERE candidate = 'DOGS')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(counts(&t).await, (4, 2));
    old.execute(
        "UPDATE pet_votes SET candidate = 'DOGS' WHERE vote_id = (SELECT MIN(vote_id) FROM pet_votes WHERE candidate = 'CATS')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(counts(&t).await, (3, 3));
    // Counted as the table holds them.
    let rows = old
        .fetch_all(
            "SELECT candidate, COUNT(*) FROM pet_votes GROUP BY candidate ORDER BY candidate",
            &[],
        )
        .await
        .unwrap();
    let table: Vec<(String, i64)> = rows
        .iter()
        .map(|r| (r.text(0).unwrap(), r.int(1).unwrap()))
        .collect();
    assert_eq!(table, [("CATS".to_owned(), 3), ("DOGS".to_owned(), 3)]);
    // A second start keeps them.
    t.votes.close().await;
    let votes = gatehouse_vote::open_votes(&target).await.unwrap();
    let t = app_with(votes, verifier()).await;
    assert_eq!(counts(&t).await, (3, 3));
    t.votes.close().await;
    old.close().await;
}

#[tokio::test]
async fn counts_carry_over_and_follow_every_writer_sqlite() {
    let dir = temp_dir("counts");
    let file = dir.join("vote.sqlite3");
    let old = Store::open_sqlite_file(&file).await.unwrap();
    counts_carry_over_and_follow_every_writer(DatabaseTarget::Sqlite(file), old).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn counts_carry_over_and_follow_every_writer_postgres() {
    let Some(db) = gatehouse_testkit::postgres("vote_counts").await else {
        return;
    };
    let old = Store::open_url(&db.url).await.unwrap();
    counts_carry_over_and_follow_every_writer(DatabaseTarget::Url(DatabaseUrl::new(&db.url)), old)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_loads_stay_cheap_with_many_votes() {
    const VOTES: i64 = 300_000;
    const LOADS: u32 = 20;
    let t = sqlite_app().await;
    t.votes
        .store()
        .execute(
            "INSERT INTO pet_votes (time_cast, candidate, uid)
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
             SELECT '2026-11-29 11:00:00.000000',
                    CASE i % 3 WHEN 0 THEN 'DOGS' ELSE 'CATS' END, 'bulk-' || i FROM n",
            &[Value::Int(VOTES)],
        )
        .await
        .unwrap();
    assert_eq!(counts(&t).await, (VOTES - VOTES / 3, VOTES / 3));
    let started = Instant::now();
    for _ in 0..LOADS {
        let page = send(
            &t.app,
            Request::get("/")
                .header("accept", "text/html")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(page.status, StatusCode::OK);
    }
    let each = started.elapsed() / LOADS;
    eprintln!("a page load with {VOTES} votes: {each:?}");
    // Counting the table instead takes ~100 ms here; reading the counts, well under 1 ms.
    assert!(
        each < Duration::from_millis(15),
        "a page load took {each:?}"
    );
}
