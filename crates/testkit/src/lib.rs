//! Test helpers shared by Gatehouse crates (dev-dependency only).
//!
//! [`postgres`] gives each test its own throwaway PostgreSQL database, created from the
//! server named by `GATEHOUSE_TEST_POSTGRES` and dropped when the guard goes out of scope.
//! Without that variable the test is skipped with a note, unless `GATEHOUSE_TEST_REQUIRE`
//! lists `postgres`, in which case it fails.
//!
//! [`logs`] says where processes a test starts write their output, so that the `secrets`
//! suite can read every log a run wrote.

pub mod logs;

/// A loopback port nothing listens on now, for a process a test starts (it binds it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

use sqlx::Connection as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A database that exists for one test. Dropping it drops the database.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

fn required() -> bool {
    std::env::var("GATEHOUSE_TEST_REQUIRE")
        .map(|v| v.split(',').any(|s| s.trim() == "postgres"))
        .unwrap_or(false)
}

/// `url` with its database path replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{}", &base[..host_end], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A fresh, empty database for `test_name`, or `None` (after printing why) when PostgreSQL
/// tests are not configured. Panics when they are required but impossible.
pub async fn postgres(test_name: &str) -> Option<TestDatabase> {
    let Ok(server) = std::env::var("GATEHOUSE_TEST_POSTGRES") else {
        if required() {
            panic!(
                "GATEHOUSE_TEST_REQUIRE lists postgres but GATEHOUSE_TEST_POSTGRES is unset ({test_name})"
            );
        }
        eprintln!("note: SKIPPED {test_name}: GATEHOUSE_TEST_POSTGRES is unset");
        return None;
    };
    let sanitized: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "gh_{}_{}_{}_{}",
        sanitized,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    let admin_url = with_database(&server, "postgres");
    let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
        Ok(c) => c,
        Err(e) => {
            if required() {
                panic!("cannot connect to PostgreSQL for {test_name}: {e}");
            }
            eprintln!("note: SKIPPED {test_name}: cannot connect to PostgreSQL: {e}");
            return None;
        }
    };
    if let Err(e) = sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
    {
        panic!("cannot create database {name}: {e}");
    }
    let _ = admin.close().await;
    Some(TestDatabase {
        url: with_database(&server, &name),
        admin_url,
        name,
    })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime (a test's), so do the async work on a thread of its own.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ =
                        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut admin)
                            .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/test?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
