//! Storage shared by Gatehouse's stateful parts: one [`Store`] over SQLite (the default, a
//! file under a data directory) or PostgreSQL (for several replicas), with migrations given
//! by the caller and a deliberately small, dynamically typed query API.
//!
//! Why dynamic values instead of sqlx's generic `Database` machinery: callers write one SQL
//! string (`$1`-style placeholders work in both engines) and bind a handful of integers,
//! strings and blobs; a generic layer would cost more code than the queries it serves.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, so a write that has been acknowledged
//! survives a crash or power loss.
//!
//! [`QueryLimits`] are enforced by the database, not by dropping a future: a statement that
//! runs out of time is refused or rolled back by the engine itself, so a caller that gives
//! up never sees its write committed later.

use futures_util::TryStreamExt as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row as _, TypeInfo as _, ValueRef as _};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

/// Rows a single query may return; a query that needs more is a bug, not a workload.
pub const MAX_ROWS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("unsupported database URL (expected sqlite:... or postgres://...)")]
    UnsupportedUrl,
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration {component}/{version} ({description}) failed: {source}")]
    Migration {
        component: String,
        version: i64,
        description: String,
        source: sqlx::Error,
    },
    #[error("the database has migration {component}/{version}, newer than this program knows")]
    NewerSchema { component: String, version: i64 },
    #[error("column {index}: expected {expected}, found {found}")]
    Column {
        index: usize,
        expected: &'static str,
        found: &'static str,
    },
    #[error("query returned more than {MAX_ROWS} rows")]
    TooManyRows,
    /// The connection failed after a statement that changes data went out, before its
    /// answer came back: it may have been carried out ([`Store::write`]).
    #[error("no answer to a statement that was sent: {0}")]
    Unanswered(sqlx::Error),
}

/// Which engine a [`Store`] talks to, for the rare query whose SQL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One schema change, written once per engine (types differ: `BLOB`/`BYTEA`, ...).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// A bound parameter or a column value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl fmt::Debug for Value {
    // Values are often secrets (hashes, keys); show only their shape.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("Null"),
            Value::Int(_) => f.write_str("Int(..)"),
            Value::Text(s) => write!(f, "Text(<{} bytes>)", s.len()),
            Value::Bytes(b) => write!(f, "Bytes(<{} bytes>)", b.len()),
        }
    }
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "integer",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row, columns in `SELECT` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn col(&self, index: usize) -> Result<&Value, StoreError> {
        self.0.get(index).ok_or(StoreError::Column {
            index,
            expected: "a column",
            found: "end of row",
        })
    }

    pub fn int(&self, index: usize) -> Result<i64, StoreError> {
        match self.col(index)? {
            Value::Int(v) => Ok(*v),
            other => Err(StoreError::Column {
                index,
                expected: "integer",
                found: other.kind(),
            }),
        }
    }

    pub fn text(&self, index: usize) -> Result<String, StoreError> {
        match self.col(index)? {
            Value::Text(v) => Ok(v.clone()),
            other => Err(StoreError::Column {
                index,
                expected: "text",
                found: other.kind(),
            }),
        }
    }

    pub fn opt_text(&self, index: usize) -> Result<Option<String>, StoreError> {
        match self.col(index)? {
            Value::Null => Ok(None),
            _ => self.text(index).map(Some),
        }
    }

    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, StoreError> {
        match self.col(index)? {
            Value::Null => Ok(None),
            _ => self.int(index).map(Some),
        }
    }

    pub fn bytes(&self, index: usize) -> Result<Vec<u8>, StoreError> {
        match self.col(index)? {
            Value::Bytes(v) => Ok(v.clone()),
            other => Err(StoreError::Column {
                index,
                expected: "bytes",
                found: other.kind(),
            }),
        }
    }

    pub fn bool(&self, index: usize) -> Result<bool, StoreError> {
        self.int(index).map(|v| v != 0)
    }
}

/// A statement for [`Store::transaction`].
#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Statement {
            sql: sql.into(),
            params,
        }
    }
}

/// How long the database lets one statement wait, enforced by the engine itself.
///
/// Why not a client-side timeout around the call: dropping a query's future does not stop
/// it. SQLite's worker thread runs a queued statement to its end, and PostgreSQL runs and
/// commits a statement whose client stopped listening. A caller that answered "failed"
/// would then find the write done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Waiting for a pooled connection, opening one included. Nothing has been sent to
    /// the database when this runs out.
    pub acquire: Duration,
    /// Waiting for a lock another connection holds: SQLite's busy timeout, PostgreSQL's
    /// `lock_timeout`. The statement then fails and changes nothing.
    pub lock_wait: Duration,
    /// PostgreSQL's `statement_timeout`: the server cancels the statement and rolls it
    /// back. SQLite has no equivalent; its statements wait only on locks. `None`: no limit.
    pub statement: Option<Duration>,
}

impl Default for QueryLimits {
    /// Patient limits for components without a request budget.
    fn default() -> Self {
        QueryLimits {
            acquire: Duration::from_secs(10),
            lock_wait: Duration::from_secs(10),
            statement: None,
        }
    }
}

/// How long a migration may wait for another process's lock (one running the same
/// migration, say): longer than requests wait, because that migration may be rewriting a
/// large table.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A connection pool to SQLite or PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Where it points, without credentials, for logs.
    label: String,
    limits: QueryLimits,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("at", &self.label)
            .finish()
    }
}

/// A database URL with its password hidden, for logs: the userinfo's and any query
/// parameter whose name holds `password` (`?password=`, `&sslpassword=`).
pub fn redact(url: &str) -> String {
    const HIDDEN: &str = "REDACTED";
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparsable database URL>".to_owned();
    };
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have a password, which this one has.
        let _ = parsed.set_password(Some(HIDDEN));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let value = if key.to_ascii_lowercase().contains("password") {
                    HIDDEN.to_owned()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

impl Store {
    /// SQLite file `file_name` under `dir` (created if missing).
    pub async fn open_data_dir(dir: &Path, file_name: &str) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
        Store::open_sqlite_file(&dir.join(file_name)).await
    }

    /// A SQLite database file, created if missing; WAL + `synchronous=FULL`.
    pub async fn open_sqlite_file(path: &Path) -> Result<Store, StoreError> {
        Store::open_sqlite_file_with(path, QueryLimits::default()).await
    }

    /// As [`open_sqlite_file`](Store::open_sqlite_file), with the given limits.
    pub async fn open_sqlite_file_with(
        path: &Path,
        limits: QueryLimits,
    ) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(limits.lock_wait);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(limits.acquire)
            .connect_with(options)
            .await?;
        Ok(Store {
            pool: Pool::Sqlite(pool),
            label: path.display().to_string(),
            limits,
        })
    }

    /// A private in-memory SQLite database (one connection), for tests.
    pub async fn open_sqlite_memory() -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true)
            .busy_timeout(QueryLimits::default().lock_wait);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Ok(Store {
            pool: Pool::Sqlite(pool),
            label: ":memory:".into(),
            limits: QueryLimits::default(),
        })
    }

    /// `postgres://...`/`postgresql://...`, or `sqlite:PATH`.
    pub async fn open_url(url: &str) -> Result<Store, StoreError> {
        Store::open_url_with(url, QueryLimits::default()).await
    }

    /// As [`open_url`](Store::open_url), with the given limits.
    pub async fn open_url_with(url: &str, limits: QueryLimits) -> Result<Store, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // No prepared-statement cache: a statement is prepared with the types of its
            // first parameters, and a NULL (whose type the server inferred) followed by a
            // value of another type in the same position would be sent in the wrong format.
            // Unnamed statements are prepared per execution with the actual types.
            let mut options = PgConnectOptions::from_str(url)?.statement_cache_capacity(0);
            // Session settings sent with the connection's startup, so they hold for every
            // statement without a round trip; they come after any `options=` in the URL
            // and so win over it.
            options = options.options([("lock_timeout", pg_millis(limits.lock_wait))]);
            if let Some(statement) = limits.statement {
                options = options.options([("statement_timeout", pg_millis(statement))]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(limits.acquire)
                .connect_with(options)
                .await?;
            Ok(Store {
                pool: Pool::Postgres(pool),
                label: redact(url),
                limits,
            })
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
        {
            if path.is_empty() || path == ":memory:" {
                return Store::open_sqlite_memory().await;
            }
            Store::open_sqlite_file_with(Path::new(path), limits).await
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the `component`'s migrations not yet applied, in version order, each in its
    /// own transaction. Several processes may start at once: PostgreSQL serialises them with
    /// an advisory lock, SQLite with its write lock.
    pub async fn migrate(
        &self,
        component: &str,
        migrations: &[Migration],
    ) -> Result<(), StoreError> {
        let mut sorted: Vec<&Migration> = migrations.iter().collect();
        sorted.sort_by_key(|m| m.version);
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                // A migration may wait behind another process's, which may be rewriting a
                // large table: longer than the per-statement wait meant for requests.
                sqlx::raw_sql(&sqlite_busy_timeout(MIGRATION_LOCK_WAIT))
                    .execute(&mut *conn)
                    .await?;
                let result = migrate_sqlite(&mut conn, component, &sorted, migrations).await;
                let restored = sqlx::raw_sql(&sqlite_busy_timeout(self.limits.lock_wait))
                    .execute(&mut *conn)
                    .await;
                if restored.is_err() {
                    // Never hand a connection with the migration's wait back to requests.
                    conn.close_on_drop();
                }
                result?;
                restored?;
                Ok(())
            }
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                // The connection's per-statement limits are for requests: a migration may
                // wait for another process's and may rewrite a large table. The connection
                // is closed after use rather than reset, so no request runs with these.
                conn.close_on_drop();
                sqlx::raw_sql(&format!(
                    "SET lock_timeout = '{}'; SET statement_timeout = 0",
                    pg_millis(MIGRATION_LOCK_WAIT)
                ))
                .execute(&mut *conn)
                .await?;
                // One lock id for all Gatehouse migrations.
                sqlx::query("SELECT pg_advisory_lock(7243190411)")
                    .execute(&mut *conn)
                    .await?;
                let result = async {
                    sqlx::raw_sql(
                        "CREATE TABLE IF NOT EXISTS gatehouse_migrations (
                            component TEXT NOT NULL, version BIGINT NOT NULL,
                            description TEXT NOT NULL, PRIMARY KEY (component, version))",
                    )
                    .execute(&mut *conn)
                    .await?;
                    for m in sorted {
                        let done: Option<(i64,)> = sqlx::query_as(
                            "SELECT version FROM gatehouse_migrations WHERE component = $1 AND version = $2",
                        )
                        .bind(component)
                        .bind(m.version)
                        .fetch_optional(&mut *conn)
                        .await?;
                        if done.is_some() {
                            continue;
                        }
                        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                        let applied = async {
                            sqlx::raw_sql(m.postgres).execute(&mut *tx).await?;
                            sqlx::query(
                                "INSERT INTO gatehouse_migrations (component, version, description) VALUES ($1, $2, $3)",
                            )
                            .bind(component)
                            .bind(m.version)
                            .bind(m.description)
                            .execute(&mut *tx)
                            .await?;
                            Ok::<(), sqlx::Error>(())
                        }
                        .await;
                        match applied {
                            Ok(()) => tx.commit().await?,
                            Err(source) => {
                                let _ = tx.rollback().await;
                                return Err(migration_error(component, m, source));
                            }
                        }
                    }
                    let newest: Option<(Option<i64>,)> = sqlx::query_as(
                        "SELECT MAX(version) FROM gatehouse_migrations WHERE component = $1",
                    )
                    .bind(component)
                    .fetch_optional(&mut *conn)
                    .await?;
                    check_newest(component, migrations, newest.and_then(|n| n.0))
                }
                .await;
                let _ = sqlx::query("SELECT pg_advisory_unlock(7243190411)")
                    .execute(&mut *conn)
                    .await;
                result
            }
        }
    }

    /// Runs one statement; returns the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => bind_sqlite(sql, params)
                .execute(pool)
                .await?
                .rows_affected(),
            Pool::Postgres(pool) => bind_pg(sql, params).execute(pool).await?.rows_affected(),
        })
    }

    /// Runs a statement that changes data, on a connection taken first, so that its
    /// failures are told apart: taking the connection failed or the database answered with
    /// an error, and nothing was done ([`StoreError::Database`]); or the connection failed
    /// once the statement was out ([`StoreError::Unanswered`]), and it may have been done:
    /// a caller must not answer "not written, try again" then, or the retry counts twice.
    pub async fn write(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let unanswered = |e: sqlx::Error| match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unanswered(e),
            e => StoreError::Database(e),
        };
        Ok(match &self.pool {
            Pool::Sqlite(pool) => {
                let mut connection = pool.acquire().await?;
                bind_sqlite(sql, params)
                    .execute(&mut *connection)
                    .await
                    .map_err(unanswered)?
                    .rows_affected()
            }
            Pool::Postgres(pool) => {
                let mut connection = pool.acquire().await?;
                bind_pg(sql, params)
                    .execute(&mut *connection)
                    .await
                    .map_err(unanswered)?
                    .rows_affected()
            }
        })
    }

    /// Runs a query expected to return at most one row.
    pub async fn fetch_optional(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Row>, StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => bind_sqlite(sql, params)
                .fetch_optional(pool)
                .await?
                .map(|r| sqlite_row(&r))
                .transpose(),
            Pool::Postgres(pool) => bind_pg(sql, params)
                .fetch_optional(pool)
                .await?
                .map(|r| pg_row(&r))
                .transpose(),
        }
    }

    /// Runs a query and collects its rows (at most [`MAX_ROWS`]).
    pub async fn fetch_all(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut rows = Vec::new();
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut stream = bind_sqlite(sql, params).fetch(pool);
                while let Some(r) = stream.try_next().await? {
                    if rows.len() >= MAX_ROWS {
                        return Err(StoreError::TooManyRows);
                    }
                    rows.push(sqlite_row(&r)?);
                }
            }
            Pool::Postgres(pool) => {
                let mut stream = bind_pg(sql, params).fetch(pool);
                while let Some(r) = stream.try_next().await? {
                    if rows.len() >= MAX_ROWS {
                        return Err(StoreError::TooManyRows);
                    }
                    rows.push(pg_row(&r)?);
                }
            }
        }
        Ok(rows)
    }

    /// Runs the statements in one transaction: all or nothing. Returns each one's count of
    /// changed rows. When `expect_changes` is set, a statement that changes no row aborts
    /// the transaction and the call answers `Ok(None)` (e.g. "consume this code once").
    pub async fn transaction(
        &self,
        statements: &[Statement],
        expect_changes: bool,
    ) -> Result<Option<Vec<u64>>, StoreError> {
        let mut counts = Vec::with_capacity(statements.len());
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for s in statements {
                    let n = bind_sqlite(&s.sql, &s.params)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if expect_changes && n == 0 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    counts.push(n);
                }
                tx.commit().await?;
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for s in statements {
                    let n = bind_pg(&s.sql, &s.params)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if expect_changes && n == 0 {
                        tx.rollback().await?;
                        return Ok(None);
                    }
                    counts.push(n);
                }
                tx.commit().await?;
            }
        }
        Ok(Some(counts))
    }

    /// Closes the pool, waiting for connections to finish (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// A duration as a PostgreSQL setting: whole milliseconds, at least 1 (0 means no limit).
fn pg_millis(duration: Duration) -> String {
    format!("{}ms", duration.as_millis().max(1))
}

fn migration_error(component: &str, m: &Migration, source: sqlx::Error) -> StoreError {
    StoreError::Migration {
        component: component.to_owned(),
        version: m.version,
        description: m.description.to_owned(),
        source,
    }
}

fn check_newest(
    component: &str,
    migrations: &[Migration],
    newest: Option<i64>,
) -> Result<(), StoreError> {
    let known = migrations.iter().map(|m| m.version).max();
    match (newest, known) {
        (Some(newest), Some(known)) if newest > known => Err(StoreError::NewerSchema {
            component: component.to_owned(),
            version: newest,
        }),
        _ => Ok(()),
    }
}

/// The SQLite migrations on one connection, each under the write lock.
async fn migrate_sqlite(
    conn: &mut sqlx::SqliteConnection,
    component: &str,
    sorted: &[&Migration],
    migrations: &[Migration],
) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS gatehouse_migrations (
            component TEXT NOT NULL, version INTEGER NOT NULL,
            description TEXT NOT NULL, PRIMARY KEY (component, version))",
    )
    .execute(&mut *conn)
    .await?;
    for m in sorted.iter().copied() {
        // BEGIN IMMEDIATE takes the write lock first, so the check and the
        // change cannot interleave with another process's.
        sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let done: Option<(i64,)> = sqlx::query_as(
                "SELECT version FROM gatehouse_migrations WHERE component = $1 AND version = $2",
            )
            .bind(component)
            .bind(m.version)
            .fetch_optional(&mut *conn)
            .await?;
            if done.is_none() {
                sqlx::raw_sql(m.sqlite).execute(&mut *conn).await?;
                sqlx::query(
                    "INSERT INTO gatehouse_migrations (component, version, description) VALUES ($1, $2, $3)",
                )
                .bind(component)
                .bind(m.version)
                .bind(m.description)
                .execute(&mut *conn)
                .await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        match result {
            Ok(()) => {
                sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
            }
            Err(source) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                return Err(migration_error(component, m, source));
            }
        }
    }
    check_not_newer_sqlite(conn, component, migrations).await
}

/// `PRAGMA busy_timeout` for `wait`.
fn sqlite_busy_timeout(wait: Duration) -> String {
    format!("PRAGMA busy_timeout = {}", wait.as_millis())
}

async fn check_not_newer_sqlite(
    conn: &mut sqlx::SqliteConnection,
    component: &str,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let newest: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT MAX(version) FROM gatehouse_migrations WHERE component = $1")
            .bind(component)
            .fetch_optional(&mut *conn)
            .await?;
    check_newest(component, migrations, newest.and_then(|n| n.0))
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_sqlite<'q>(sql: &'q str, params: &[Value]) -> SqliteQuery<'q> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = match p {
            Value::Null => q.bind(None::<i64>),
            Value::Int(v) => q.bind(*v),
            Value::Text(v) => q.bind(v.clone()),
            Value::Bytes(v) => q.bind(v.clone()),
        };
    }
    q
}

/// A NULL whose parameter type PostgreSQL infers from the statement (OID 0), so one NULL
/// fits a column of any type.
struct PgNull;

impl sqlx::Type<sqlx::Postgres> for PgNull {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for PgNull {
    fn encode_by_ref(
        &self,
        _buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

fn bind_pg<'q>(sql: &'q str, params: &[Value]) -> PgQuery<'q> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = match p {
            Value::Null => q.bind(PgNull),
            Value::Int(v) => q.bind(*v),
            Value::Text(v) => q.bind(v.clone()),
            Value::Bytes(v) => q.bind(v.clone()),
        };
    }
    q
}

fn sqlite_row(row: &SqliteRow) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(row.columns().len());
    for i in 0..row.columns().len() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            out.push(Value::Null);
            continue;
        }
        // SQLite reports the value's storage class, whatever the column was declared as.
        let ty = raw.type_info().name().to_owned();
        out.push(match ty.as_str() {
            "INTEGER" | "BOOLEAN" | "INT8" | "BIGINT" => Value::Int(row.try_get_unchecked(i)?),
            "TEXT" => Value::Text(row.try_get_unchecked(i)?),
            "BLOB" => Value::Bytes(row.try_get_unchecked(i)?),
            "REAL" => Value::Int(row.try_get_unchecked::<f64, _>(i)? as i64),
            _ => {
                return Err(StoreError::Column {
                    index: i,
                    expected: "integer, text or blob",
                    found: "another type",
                });
            }
        });
    }
    Ok(Row(out))
}

fn pg_row(row: &PgRow) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(row.columns().len());
    for i in 0..row.columns().len() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            out.push(Value::Null);
            continue;
        }
        let ty = raw.type_info().name().to_owned();
        out.push(match ty.as_str() {
            "INT8" => Value::Int(row.try_get(i)?),
            "INT4" => Value::Int(i64::from(row.try_get::<i32, _>(i)?)),
            "INT2" => Value::Int(i64::from(row.try_get::<i16, _>(i)?)),
            "BOOL" => Value::Int(i64::from(row.try_get::<bool, _>(i)?)),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::Text(row.try_get(i)?),
            "BYTEA" => Value::Bytes(row.try_get(i)?),
            _ => {
                return Err(StoreError::Column {
                    index: i,
                    expected: "integer, text or bytea",
                    found: "another type",
                });
            }
        });
    }
    Ok(Row(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_credentials() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/x"),
            "postgres://u:REDACTED@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
    }

    #[test]
    fn redact_hides_passwords_in_the_query() {
        // The shapes sqlx and libpq accept: no userinfo at all, a user in the userinfo, a
        // password in both places, a different case, and libpq's `sslpassword`.
        for (url, kept) in [
            (
                "postgres://db/x?user=u&password=S3CRET",
                "postgres://db/x?user=u&password=REDACTED",
            ),
            (
                "postgres://u@db/x?password=S3CRET&sslmode=disable",
                "postgres://u@db/x?password=REDACTED&sslmode=disable",
            ),
            (
                "postgresql://u:S3CRET@db/x?PASSWORD=S3CRET",
                "postgresql://u:REDACTED@db/x?PASSWORD=REDACTED",
            ),
            (
                "postgres://db/x?host=%2Fcloudsql%2Fp%3Ar%3Ai&sslpassword=S3CRET",
                "postgres://db/x?host=%2Fcloudsql%2Fp%3Ar%3Ai&sslpassword=REDACTED",
            ),
        ] {
            let shown = redact(url);
            assert!(!shown.contains("S3CRET"), "{url} -> {shown}");
            assert_eq!(shown, kept);
        }
        assert_eq!(redact("not a url S3CRET"), "<unparsable database URL>");
    }

    #[tokio::test]
    async fn debug_never_shows_the_password() {
        let store = Store {
            pool: Pool::Sqlite(SqlitePool::connect_lazy("sqlite::memory:").unwrap()),
            label: redact("postgres://db/x?password=S3CRET"),
            limits: QueryLimits::default(),
        };
        assert!(!format!("{store:?}").contains("S3CRET"));
    }

    #[test]
    fn value_debug_hides_content() {
        let v = Value::Text("secret".into());
        assert!(!format!("{v:?}").contains("secret"));
    }
}
