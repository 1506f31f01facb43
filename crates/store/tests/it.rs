//! The store against both engines: migrations, typed values, transactions, persistence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_store::{Migration, Statement, Store, Value};

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "things",
        sqlite: "CREATE TABLE things (id TEXT PRIMARY KEY, n INTEGER NOT NULL, blob BLOB, note TEXT)",
        postgres: "CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL, blob BYTEA, note TEXT)",
    },
    Migration {
        version: 2,
        description: "index",
        sqlite: "CREATE INDEX things_n ON things (n)",
        postgres: "CREATE INDEX things_n ON things (n)",
    },
];

async fn exercise(store: &Store) {
    store.migrate("test", MIGRATIONS).await.unwrap();
    // Idempotent, and a second component has its own versions.
    store.migrate("test", MIGRATIONS).await.unwrap();
    store.migrate("other", &MIGRATIONS[..0]).await.unwrap();

    let n = store
        .execute(
            "INSERT INTO things (id, n, blob, note) VALUES ($1, $2, $3, $4)",
            &["a".into(), 7i64.into(), vec![1u8, 2, 3].into(), Value::Null],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let row = store
        .fetch_optional(
            "SELECT id, n, blob, note FROM things WHERE id = $1",
            &["a".into()],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.text(0).unwrap(), "a");
    assert_eq!(row.int(1).unwrap(), 7);
    assert_eq!(row.bytes(2).unwrap(), vec![1, 2, 3]);
    assert_eq!(row.opt_text(3).unwrap(), None);
    assert!(row.text(1).is_err());

    // The same statement with a NULL and then a value in one position (PostgreSQL must not
    // reuse a statement prepared for the NULL's type).
    for (id, note) in [
        ("n1", Value::Null),
        ("n2", "text".into()),
        ("n3", Value::Null),
        ("n4", "more".into()),
    ] {
        store
            .execute(
                "INSERT INTO things (id, n, blob, note) VALUES ($1, $2, $3, $4)",
                &[id.into(), 0i64.into(), Value::Null, note],
            )
            .await
            .unwrap();
    }
    let row = store
        .fetch_optional("SELECT note FROM things WHERE id = $1", &["n4".into()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.opt_text(0).unwrap().as_deref(), Some("more"));
    store
        .execute("DELETE FROM things WHERE id LIKE $1", &["n%".into()])
        .await
        .unwrap();

    // Duplicate key is an error and changes nothing.
    assert!(
        store
            .execute(
                "INSERT INTO things (id, n) VALUES ($1, $2)",
                &["a".into(), 8i64.into()],
            )
            .await
            .is_err()
    );

    // A transaction whose second statement changes nothing is rolled back entirely.
    let out = store
        .transaction(
            &[
                Statement::new(
                    "INSERT INTO things (id, n) VALUES ($1, $2)",
                    vec!["b".into(), 1i64.into()],
                ),
                Statement::new(
                    "UPDATE things SET n = 0 WHERE id = $1",
                    vec!["missing".into()],
                ),
            ],
            true,
        )
        .await
        .unwrap();
    assert!(out.is_none());
    let all = store
        .fetch_all("SELECT id FROM things ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(all.len(), 1);

    let out = store
        .transaction(
            &[Statement::new(
                "INSERT INTO things (id, n) VALUES ($1, $2)",
                vec!["b".into(), 1i64.into()],
            )],
            true,
        )
        .await
        .unwrap();
    assert_eq!(out, Some(vec![1]));
    // Aggregates come back as integers on both engines.
    let row = store
        .fetch_optional("SELECT COUNT(*) FROM things", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.int(0).unwrap(), 2);

    // Newer schema than known is refused.
    let err = store.migrate("test", &MIGRATIONS[..1]).await.unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn sqlite_file_persists_across_reopen() {
    let dir = std::env::temp_dir().join(format!("gh-store-{}-{}", std::process::id(), line!()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open_data_dir(&dir, "t.db").await.unwrap();
    exercise(&store).await;
    store.close().await;
    let store = Store::open_data_dir(&dir, "t.db").await.unwrap();
    store.migrate("test", MIGRATIONS).await.unwrap();
    let all = store
        .fetch_all("SELECT id FROM things ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let mode = store
        .fetch_optional("PRAGMA journal_mode", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mode.text(0).unwrap(), "wal");
    let sync = store
        .fetch_optional("PRAGMA synchronous", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sync.int(0).unwrap(), 2, "synchronous=FULL");
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sqlite_memory() {
    let store = Store::open_url("sqlite::memory:").await.unwrap();
    exercise(&store).await;
}

#[tokio::test]
async fn postgres() {
    let Some(db) = gatehouse_testkit::postgres("store_postgres").await else {
        return;
    };
    let store = Store::open_url(&db.url).await.unwrap();
    exercise(&store).await;
    store.close().await;
}

#[tokio::test]
async fn unsupported_url() {
    assert!(Store::open_url("mysql://x").await.is_err());
}
