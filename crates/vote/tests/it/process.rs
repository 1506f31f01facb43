//! The `gatehouse vote` process: `--database`, Cloud SQL credentials over TCP and over a
//! unix socket, SIGTERM (exit 0), and SIGKILL while votes stream (every acknowledged vote
//! is there after a restart). Runs the built binary: GATEHOUSE_BIN, else
//! `target/debug/gatehouse` (scripts/test builds it first).

use crate::support::*;
use axum::Router;
use axum::routing::get;
use gatehouse_store::Store;
use gatehouse_testkit::free_port;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("GATEHOUSE_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let bin = target.join("debug/gatehouse");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin gatehouse` first (scripts/test does)",
        bin.display()
    );
    bin
}

pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("gh-vote-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token for the real clock (the process reads it).
fn live_token(sub: &str) -> String {
    let now = unix_now();
    sign(&json!({
        "iss": "https://accounts.google.com",
        "aud": CLIENT_ID,
        "sub": sub,
        "email": format!("{sub}@example.com"),
        "email_verified": true,
        "iat": now - 10,
        "exp": now + 3600,
    }))
}

/// Serves `keys().google` as a JWK set, as the emulator's /oauth2/v3/certs would.
async fn key_server() -> String {
    let jwks = json!({"keys": [keys().google.public_jwk().unwrap()]});
    let app = Router::new().route(
        "/oauth2/v3/certs",
        get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/oauth2/v3/certs")
}

struct VoteProcess {
    child: Child,
    base: String,
    log: PathBuf,
}

impl VoteProcess {
    async fn start(
        jwks: &str,
        data: &std::path::Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> VoteProcess {
        let port = free_port();
        let (log, stdout, stderr) = gatehouse_testkit::logs::log_both("gatehouse-vote");
        let mut cmd = Command::new(binary());
        cmd.arg("vote")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--jwks", jwks, "--client-id", CLIENT_ID])
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("CLOUD_SQL_CREDENTIALS_SECRET")
            .env("GATEHOUSE_LOG_FORMAT", "json")
            .env("RUST_LOG", "debug")
            .current_dir(data)
            .stdout(stdout)
            .stderr(stderr);
        for name in [
            "DB_USER",
            "DB_PASSWORD",
            "DB_NAME",
            "DB_HOST",
            "CLOUD_SQL_CONNECTION_NAME",
            "DB_SOCKET_DIR",
        ] {
            cmd.env_remove(name);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let p = VoteProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        p.wait_ready().await;
        p
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gatehouse vote did not start:\n{}", self.logs());
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn vote(
        &self,
        client: &reqwest::Client,
        sub: &str,
        team: &str,
    ) -> Result<(u16, String), reqwest::Error> {
        let r = client
            .post(format!("{}/", self.base))
            .bearer_auth(live_token(sub))
            .form(&[("team", team)])
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    async fn tally(&self) -> Value {
        reqwest::Client::new()
            .get(format!("{}/", self.base))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// SIGTERM; the process must exit 0 within a few seconds.
    fn terminate(mut self) -> String {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "exit after SIGTERM: {status}\n{}",
                    self.logs()
                );
                return self.logs();
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for VoteProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigterm_closes_and_exits_zero_sqlite() {
    let jwks = key_server().await;
    let data = temp_dir("term");
    let p = VoteProcess::start(&jwks, &data, &["--data", data.to_str().unwrap()], &[]).await;
    let client = reqwest::Client::new();
    let (status, body) = p.vote(&client, "alice", "CATS").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("Vote successfully cast for 'CATS' at time "),
        "{body}"
    );
    let (status, _) = p.vote(&client, "alice", "BIRDS").await.unwrap();
    assert_eq!(status, 400);
    let logs = p.terminate();
    // JSON logs with severity; the token never appears in them.
    let request_line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["method"] == "POST")
        .unwrap_or_else(|| panic!("no request log line:\n{logs}"));
    assert_eq!(request_line["severity"], "INFO");
    assert!(!logs.contains("eyJ"), "a token reached the log:\n{logs}");
    assert!(data.join("vote.sqlite3").exists());
    // A second start keeps the vote.
    let p = VoteProcess::start(&jwks, &data, &["--data", data.to_str().unwrap()], &[]).await;
    assert_eq!(p.tally().await["cats"], 1);
    p.terminate();
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn trace_header_reaches_the_log() {
    let jwks = key_server().await;
    let data = temp_dir("trace");
    let p = VoteProcess::start(
        &jwks,
        &data,
        &["--data", data.to_str().unwrap(), "--project", "my-proj"],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    client
        .get(format!("{}/", p.base))
        .header(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )
        .send()
        .await
        .unwrap();
    client
        .get(format!("{}/", p.base))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    let logs = p.terminate();
    let traces: Vec<String> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            v["logging.googleapis.com/trace"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|t| !t.is_empty())
        .collect();
    assert!(
        traces.contains(&"projects/my-proj/traces/105445aa7843bc8bf206b12000100000".to_owned()),
        "{logs}"
    );
    assert!(
        traces.contains(&"projects/my-proj/traces/4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
        "{logs}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// Streams votes from several clients, SIGKILLs the process mid-stream, restarts it, and
/// checks that every vote that was answered 200 is in the table.
async fn kill_while_voting(
    jwks: &str,
    data: &std::path::Path,
    args: &[&str],
    env: &[(&str, String)],
    open: impl AsyncFnOnce() -> Store,
) {
    let p = VoteProcess::start(jwks, data, args, env).await;
    let acked = Arc::new(parking_lot_free::Acked::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let client = reqwest::Client::new();
        let base_vote = (p.base.clone(), acked.clone(), stop.clone());
        tasks.spawn(async move {
            let (base, acked, stop) = base_vote;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let sub = format!("w{worker}-{i}");
                i += 1;
                let team = if i % 2 == 0 { "CATS" } else { "DOGS" };
                let result = client
                    .post(format!("{base}/"))
                    .bearer_auth(live_token(&sub))
                    .form(&[("team", team)])
                    .send()
                    .await;
                match result {
                    Ok(r) if r.status().as_u16() == 200 => acked.push(sub),
                    Ok(_) => {}
                    Err(_) => break, // the process is gone
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    p.signal("KILL");
    stop.store(true, Ordering::SeqCst);
    while tasks.join_next().await.is_some() {}
    drop(p);
    let acked = acked.take();
    assert!(
        acked.len() > 20,
        "too few votes acknowledged before the kill: {}",
        acked.len()
    );

    // Restart on the same data: the app opens cleanly and every acknowledged vote is there.
    let p = VoteProcess::start(jwks, data, args, env).await;
    let t = p.tally().await;
    let total = t["cats"].as_i64().unwrap() + t["dogs"].as_i64().unwrap();
    assert!(
        total >= acked.len() as i64,
        "{total} rows < {} acknowledged",
        acked.len()
    );
    p.terminate();
    let store = open().await;
    let rows = store
        .fetch_all("SELECT uid FROM pet_votes", &[])
        .await
        .unwrap();
    let stored: BTreeSet<String> = rows.iter().map(|r| r.text(0).unwrap()).collect();
    let missing: Vec<&String> = acked.iter().filter(|s| !stored.contains(*s)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    store.close().await;
}

mod parking_lot_free {
    /// Acknowledged uids, shared by the voting tasks.
    #[derive(Default)]
    pub struct Acked(std::sync::Mutex<Vec<String>>);
    impl Acked {
        pub fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_vote_sqlite() {
    let jwks = key_server().await;
    let data = temp_dir("kill");
    let file = data.join("vote.sqlite3");
    kill_while_voting(
        &jwks,
        &data,
        &["--data", data.to_str().unwrap()],
        &[],
        async || Store::open_sqlite_file(&file).await.unwrap(),
    )
    .await;
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_vote_postgres() {
    let Some(db) = gatehouse_testkit::postgres("vote_kill").await else {
        return;
    };
    let jwks = key_server().await;
    let data = temp_dir("kill-pg");
    let url = db.url.clone();
    kill_while_voting(&jwks, &data, &["--database", &db.url], &[], async || {
        Store::open_url(&url).await.unwrap()
    })
    .await;
    let _ = std::fs::remove_dir_all(&data);
}

/// The test database's name and server, from its URL.
fn db_parts(url: &str) -> (String, String, u16) {
    let u = url::Url::parse(url).unwrap();
    (
        u.path().trim_start_matches('/').to_owned(),
        u.host_str().unwrap().to_owned(),
        u.port().unwrap_or(5432),
    )
}

async fn rows_in(url: &str) -> Vec<(String, String)> {
    let store = Store::open_url(url).await.unwrap();
    let rows = store
        .fetch_all("SELECT candidate, uid FROM pet_votes ORDER BY vote_id", &[])
        .await
        .unwrap();
    store.close().await;
    rows.iter()
        .map(|r| (r.text(0).unwrap(), r.text(1).unwrap()))
        .collect()
}

#[tokio::test]
async fn database_flag_puts_votes_in_postgres() {
    let Some(db) = gatehouse_testkit::postgres("vote_flag").await else {
        return;
    };
    let jwks = key_server().await;
    let data = temp_dir("flag");
    // A password in the URL (ignored under trust auth) that no log may show.
    let url = db.url.replacen(
        "://postgres@",
        &format!(
            "://postgres:{}@",
            gatehouse_testkit::logs::PLANTED_DB_PASSWORD
        ),
        1,
    );
    assert_ne!(url, db.url, "the test server URL has an unexpected form");
    let p = VoteProcess::start(&jwks, &data, &["--database", &url], &[]).await;
    let (status, body) = p
        .vote(&reqwest::Client::new(), "flag-user", "DOGS")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    p.terminate();
    assert_eq!(
        rows_in(&db.url).await,
        [("DOGS".to_owned(), "flag-user".to_owned())]
    );
    assert!(
        !data.join("vote.sqlite3").exists(),
        "SQLite used despite --database"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn cloud_sql_secret_over_tcp() {
    let Some(db) = gatehouse_testkit::postgres("vote_secret_tcp").await else {
        return;
    };
    let (name, host, port) = db_parts(&db.url);
    let password = gatehouse_testkit::logs::PLANTED_DB_PASSWORD;
    let secret = json!({
        "DB_USER": "postgres",
        "DB_PASSWORD": password,
        "DB_NAME": name,
        "DB_HOST": format!("{host}:{port}"),
    })
    .to_string();
    let jwks = key_server().await;
    let data = temp_dir("secret-tcp");
    let p = VoteProcess::start(
        &jwks,
        &data,
        &[],
        &[("CLOUD_SQL_CREDENTIALS_SECRET", secret)],
    )
    .await;
    let (status, body) = p
        .vote(&reqwest::Client::new(), "tcp-user", "CATS")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let logs = p.terminate();
    assert!(
        !logs.contains(password),
        "the password reached the log:\n{logs}"
    );
    assert!(
        logs.contains(&name),
        "the log should say which database:\n{logs}"
    );
    assert_eq!(
        rows_in(&db.url).await,
        [("CATS".to_owned(), "tcp-user".to_owned())]
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn cloud_sql_secret_over_unix_socket() {
    let Some(db) = gatehouse_testkit::postgres("vote_secret_unix").await else {
        return;
    };
    // PostgreSQL's own socket directory, named as Cloud Run mounts an instance:
    // <DB_SOCKET_DIR>/<PROJECT:REGION:INSTANCE>/.s.PGSQL.5432.
    let store = Store::open_url(&db.url).await.unwrap();
    let row = store
        .fetch_optional(
            "SELECT setting FROM pg_settings WHERE name = 'unix_socket_directories'",
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    let pg_dir = row
        .text(0)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let (name, _, port) = db_parts(&db.url);
    let socket_dir = temp_dir("sock");
    let instance = "demo-project:us-central1:votes";
    std::os::unix::fs::symlink(&pg_dir, socket_dir.join(instance)).unwrap();
    if port != 5432 {
        eprintln!(
            "note: SKIPPED cloud_sql_secret_over_unix_socket: the socket name assumes port 5432"
        );
        return;
    }
    let secret = json!({
        "CLOUD_SQL_CONNECTION_NAME": instance,
        "DB_NAME": name,
        "DB_USER": "postgres",
        // Ignored under trust auth; planted for the secrets check of every log.
        "DB_PASSWORD": gatehouse_testkit::logs::PLANTED_DB_PASSWORD,
    })
    .to_string();
    let jwks = key_server().await;
    let data = temp_dir("secret-unix");
    let p = VoteProcess::start(
        &jwks,
        &data,
        &[],
        &[
            ("CLOUD_SQL_CREDENTIALS_SECRET", secret),
            ("DB_SOCKET_DIR", socket_dir.to_string_lossy().into_owned()),
        ],
    )
    .await;
    let (status, body) = p
        .vote(&reqwest::Client::new(), "unix-user", "DOGS")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let logs = p.terminate();
    assert!(
        !logs.contains(gatehouse_testkit::logs::PLANTED_DB_PASSWORD),
        "the password reached the log:\n{logs}"
    );
    assert_eq!(
        rows_in(&db.url).await,
        [("DOGS".to_owned(), "unix-user".to_owned())]
    );
    // The same with separate variables instead of the secret.
    let p = VoteProcess::start(
        &jwks,
        &data,
        &[],
        &[
            ("DB_USER", "postgres".to_owned()),
            ("DB_NAME", name.clone()),
            ("CLOUD_SQL_CONNECTION_NAME", instance.to_owned()),
            ("DB_SOCKET_DIR", socket_dir.to_string_lossy().into_owned()),
        ],
    )
    .await;
    let (status, _) = p
        .vote(&reqwest::Client::new(), "unix-user-2", "CATS")
        .await
        .unwrap();
    assert_eq!(status, 200);
    p.terminate();
    assert_eq!(rows_in(&db.url).await.len(), 2);
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&socket_dir);
}

/// A request head cut off before its blank line.
const HALF_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: vote\r\n";

#[tokio::test]
async fn a_half_sent_request_neither_stays_open_nor_holds_up_sigterm() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let jwks = key_server().await;
    let data = temp_dir("drain");
    let mut p = VoteProcess::start(
        &jwks,
        &data,
        &[
            "--data",
            data.to_str().unwrap(),
            "--header-read-seconds",
            "3",
            "--shutdown-grace-seconds",
            "0.5",
        ],
        &[],
    )
    .await;
    let addr = p.base.trim_start_matches("http://").to_owned();

    // --header-read-seconds: the connection is closed once its head is late.
    let mut late = tokio::net::TcpStream::connect(&addr).await.unwrap();
    late.write_all(HALF_HEAD).await.unwrap();
    let sent = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), late.read_to_end(&mut rest))
        .await
        .expect("a half-sent head still open 10 s later")
        .ok();
    assert!(
        sent.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        sent.elapsed()
    );

    // SIGTERM with a half-sent head open: exit 0 once the grace is over, well before
    // that connection's header timeout would have closed it.
    let mut held = tokio::net::TcpStream::connect(&addr).await.unwrap();
    held.write_all(HALF_HEAD).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    p.signal("TERM");
    let status = loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(2500),
            "still running {:?} after SIGTERM\n{}",
            signalled.elapsed(),
            p.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        p.logs()
    );
    let logs = p.logs();
    assert!(logs.contains("drain deadline passed"), "{logs}");
    drop(held);
    let _ = std::fs::remove_dir_all(&data);
}
