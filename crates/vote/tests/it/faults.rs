//! The database disappears under the running `gatehouse vote` process while clients keep
//! voting: PostgreSQL sits behind an in-test TCP forwarder that is cut (every connection
//! dropped, nothing listening) and later restored on the same port. Votes and pages answer
//! 503 with a clear error meanwhile, never hang and never 500; the process recovers by
//! itself; every vote acknowledged before, during and after the outage is in the table.

use crate::process::binary;
use crate::support::*;
use axum::Router;
use axum::routing::get;
use gatehouse_store::Store;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Past any bound the app sets itself (its queries give up after 5 s): a request still
/// unanswered by then hangs.
const HANG: Duration = Duration::from_secs(20);

/// A TCP forwarder that can be cut (listener and every forwarded connection dropped at
/// once) and restored on the same port.
struct Forwarder {
    addr: SocketAddr,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Forwarder {
    async fn start(target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Forwarder {
            addr: listener.local_addr().unwrap(),
            target,
            task: Some(Forwarder::forward(listener, target)),
        }
    }

    fn forward(listener: TcpListener, target: SocketAddr) -> JoinHandle<()> {
        tokio::spawn(async move {
            // Owned by this task: aborting it drops both ends of every connection.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        })
    }

    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        assert!(TcpStream::connect(self.addr).await.is_err());
    }

    async fn restore(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot listen again: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        self.task = Some(Forwarder::forward(listener, self.target));
    }
}

/// The test database's URL and the server's address, for a forwarder to stand between.
fn server_of(database: &str) -> (url::Url, SocketAddr) {
    let url = url::Url::parse(database).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
        .parse()
        .unwrap_or_else(|_| panic!("the forwarder needs an IP address in {database}"));
    (url, target)
}

/// A token for the real clock (the process reads it).
fn token_now(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = google_claims(sub, &format!("{sub}@example.com"));
    claims["iat"] = json!(now - 10);
    claims["exp"] = json!(now + 3600);
    sign(&claims)
}

/// `gatehouse vote` on `database`, trusting `keys().google` (served from this test).
struct App {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl App {
    async fn start(database: &str) -> App {
        let jwks = json!({"keys": [keys().google.public_jwk().unwrap()]});
        let certs = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let certs_addr = certs.local_addr().unwrap();
        tokio::spawn(async move {
            let app = Router::new().route(
                "/certs",
                get(move || {
                    let jwks = jwks.clone();
                    async move { axum::Json(jwks) }
                }),
            );
            let _ = axum::serve(certs, app).await;
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Kept after the run: scripts/test's secrets suite reads every log a test wrote.
        let (log, stdout, stderr) = gatehouse_testkit::logs::log_both("gatehouse-vote-faults");
        let mut command = Command::new(binary());
        command
            .arg("vote")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--jwks", &format!("http://{certs_addr}/certs")])
            .args(["--client-id", CLIENT_ID, "--database", database])
            .env("GATEHOUSE_LOG_FORMAT", "json")
            .env("RUST_LOG", "debug")
            .stdout(stdout)
            .stderr(stderr);
        for name in [
            "DATABASE_URL",
            "CLOUD_SQL_CREDENTIALS_SECRET",
            "DB_USER",
            "DB_PASSWORD",
            "DB_NAME",
            "DB_HOST",
            "CLOUD_SQL_CONNECTION_NAME",
        ] {
            command.env_remove(name);
        }
        let app = App {
            child: command.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while app.get("/healthz", "*/*").await.map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "gatehouse vote did not start:\n{}",
                app.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        app
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    async fn get(&self, path: &str, accept: &str) -> Option<(u16, String)> {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .header("accept", accept)
            .timeout(HANG)
            .send()
            .await
            .ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the outage stands when a vote is sent.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

#[derive(Debug)]
struct Outcome {
    uid: String,
    sent: u8,
    /// The status, or why there was none.
    answer: Result<(u16, Value), String>,
}

/// Votes as fast as one client can, each with a new uid, until `stop`; records every
/// outcome as it comes.
async fn voter(
    base: String,
    worker: usize,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
) {
    let client = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let uid = format!("w{worker}-{i}");
        i += 1;
        let sent = phase.load(Ordering::SeqCst);
        let answer = client
            .post(format!("{base}/"))
            .bearer_auth(token_now(&uid))
            .header("accept", "application/json")
            .form(&[("team", if i % 2 == 0 { "CATS" } else { "DOGS" })])
            .timeout(HANG)
            .send()
            .await;
        let answer = match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                Ok((
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                ))
            }
            Err(e) => Err(e.to_string()),
        };
        outcomes.lock().unwrap().push(Outcome { uid, sent, answer });
    }
}

/// How many outcomes sent in `sent` (any phase if `None`) got `status`.
fn count(outcomes: &Mutex<Vec<Outcome>>, sent: Option<u8>, status: u16) -> usize {
    outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|o| sent.is_none_or(|p| o.sent == p))
        .filter(|o| matches!(&o.answer, Ok((s, _)) if *s == status))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_under_load_is_503_and_loses_no_acknowledged_vote() {
    const WORKERS: usize = 6;
    let Some(db) = gatehouse_testkit::postgres("vote_outage").await else {
        return;
    };
    let (mut url, target) = server_of(&db.url);
    let mut forwarder = Forwarder::start(target).await;
    url.set_port(Some(forwarder.addr.port())).unwrap();
    // Trust auth ignores it; the logs of a failing database must not show it.
    url.set_password(Some(gatehouse_testkit::logs::PLANTED_DB_PASSWORD))
        .unwrap();
    let mut app = App::start(url.as_str()).await;

    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut voters = JoinSet::new();
    for worker in 0..WORKERS {
        let (base, phase, stop, outcomes) = (
            app.base.clone(),
            phase.clone(),
            stop.clone(),
            outcomes.clone(),
        );
        voters.spawn(voter(base, worker, phase, stop, outcomes));
    }
    let progress = Store::open_url(&db.url).await.unwrap();
    let rows = async || {
        progress
            .fetch_optional("SELECT COUNT(*) FROM pet_votes", &[])
            .await
            .unwrap()
            .unwrap()
            .int(0)
            .unwrap()
    };
    let deadline = Instant::now() + HANG;
    while rows().await < 30 {
        assert!(Instant::now() < deadline, "votes are not being stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    forwarder.cut().await;
    phase.store(DURING, Ordering::SeqCst);
    let cut_at = Instant::now();
    // Pages: the browser's 503 page, the JSON error and the health check, asked at once
    // (each waits out the app's query timeout).
    let (page, tally, health) = tokio::join!(
        app.get("/", "text/html"),
        app.get("/", "application/json"),
        app.get("/healthz", "*/*"),
    );
    let (status, page) = page.expect("no answer for the page");
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("temporarily unavailable"), "{page}");
    let (status, body) = tally.expect("no answer for the tally");
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "database_unavailable", "{body}");
    assert_eq!(health.expect("no health answer").0, 503);
    eprintln!(
        "pages answered 503 within {:?} of the cut",
        cut_at.elapsed()
    );
    // Let the workers meet the outage before the database returns.
    let deadline = Instant::now() + HANG;
    while count(&outcomes, None, 503) < WORKERS {
        assert!(Instant::now() < deadline, "votes were not refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.running(), "the process died:\n{}", app.logs());
    let rows_at_cut = rows().await;

    forwarder.restore().await;
    phase.store(AFTER, Ordering::SeqCst);
    let restored_at = Instant::now();
    let deadline = Instant::now() + HANG;
    while rows().await < rows_at_cut + 30 {
        assert!(
            Instant::now() < deadline,
            "no recovery after the database returned:\n{}",
            app.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "votes stored again {:?} after the database returned",
        restored_at.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    while voters.join_next().await.is_some() {}
    assert!(app.running(), "the process died:\n{}", app.logs());
    assert_eq!(app.get("/healthz", "*/*").await.map(|r| r.0), Some(200));

    let (mut acked, mut refused) = (BTreeSet::new(), BTreeSet::new());
    for o in outcomes.lock().unwrap().iter() {
        match &o.answer {
            Ok((200, _)) => {
                acked.insert(o.uid.clone());
            }
            Ok((503, body)) => {
                assert_eq!(body["error"], "database_unavailable", "{o:?}");
                refused.insert(o.uid.clone());
            }
            // Sent just as the connection was cut: it may or may not be in.
            Ok((504, body)) => assert_eq!(body["error"], "outcome_unknown", "{o:?}"),
            other => panic!(
                "a vote got neither 200, 503 nor 504: {other:?}\n{}",
                app.logs()
            ),
        }
    }
    eprintln!(
        "acknowledged before/during/after the outage: {}/{}/{}; refused (503): {}",
        count(&outcomes, Some(BEFORE), 200),
        count(&outcomes, Some(DURING), 200),
        count(&outcomes, Some(AFTER), 200),
        count(&outcomes, None, 503),
    );
    assert!(count(&outcomes, Some(BEFORE), 200) > 0 && count(&outcomes, Some(AFTER), 200) > 0);

    let stored: BTreeSet<String> = progress
        .fetch_all("SELECT uid FROM pet_votes", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.text(0).unwrap())
        .collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    // A 503 says nothing was written, and invites a retry: it must be true.
    let written: Vec<&String> = refused.intersection(&stored).collect();
    assert!(
        written.is_empty(),
        "refused with 503 but stored: {written:?}"
    );
    let logs = app.logs();
    assert!(
        logs.contains("database unavailable"),
        "the outage is not in the log:\n{logs}"
    );
    assert!(
        !logs.contains(gatehouse_testkit::logs::PLANTED_DB_PASSWORD),
        "the database password reached the log"
    );
    progress.close().await;
    drop(app);
    forwarder.cut().await;
}

/// A forwarder that, once `armed`, lets the next statement run (the vote's INSERT) and
/// swallows what the database answers, closing the app's connection a moment later: a
/// network path or a pooler failing just after a statement went out.
fn swallowing_forwarder(
    listener: TcpListener,
    target: SocketAddr,
    armed: Arc<AtomicBool>,
) -> JoinHandle<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            let armed = armed.clone();
            connections.spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let lost = Arc::new(AtomicBool::new(false));
                let up = tokio::spawn({
                    let lost = lost.clone();
                    async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = from_client.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            // A Bind message ('B', then Execute and Sync) runs a statement;
                            // a pool's ping is a bare Sync, a prepare a Parse ('P').
                            let sent = &buf[..n];
                            if sent.first() == Some(&b'B') && armed.load(Ordering::SeqCst) {
                                lost.store(true, Ordering::SeqCst);
                            }
                            if to_server.write_all(sent).await.is_err() {
                                break;
                            }
                        }
                    }
                });
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = from_server.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if lost.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        break;
                    }
                    if to_client.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    })
}

/// A vote whose INSERT reached PostgreSQL but whose answer was lost: the app cannot know
/// whether it committed, so it says 504 `outcome_unknown` (no `Retry-After`), never 503
/// "nothing written, try again", which would have the client vote twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vote_whose_answer_is_lost_is_504_not_503() {
    let Some(db) = gatehouse_testkit::postgres("vote_lost_answer").await else {
        return;
    };
    let (mut url, target) = server_of(&db.url);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    url.set_port(Some(listener.local_addr().unwrap().port()))
        .unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let forwarder = swallowing_forwarder(listener, target, armed.clone());
    let app = App::start(url.as_str()).await;
    let client = reqwest::Client::new();
    let vote = |uid: &'static str| {
        client
            .post(format!("{}/", app.base))
            .bearer_auth(token_now(uid))
            .header("accept", "application/json")
            .form(&[("team", "CATS")])
            .timeout(HANG)
            .send()
    };
    assert_eq!(vote("before").await.unwrap().status(), 200);
    armed.store(true, Ordering::SeqCst);
    let answer = vote("lost").await.unwrap();
    let status = answer.status().as_u16();
    let retry_after = answer.headers().get("retry-after").cloned();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(status, 504, "{body}\n{}", app.logs());
    assert_eq!(body["error"], "outcome_unknown", "{body}");
    assert!(retry_after.is_none(), "no invitation to try again");
    let direct = Store::open_url(&db.url).await.unwrap();
    let stored = direct
        .fetch_optional(
            "SELECT COUNT(*) FROM pet_votes WHERE uid = $1",
            &["lost".into()],
        )
        .await
        .unwrap()
        .unwrap()
        .int(0)
        .unwrap();
    assert_eq!(stored, 1, "the statement did reach the database");
    direct.close().await;
    drop(app);
    forwarder.abort();
}
