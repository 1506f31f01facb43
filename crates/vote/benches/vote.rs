//! Throughput of the voting app over real HTTP on loopback: votes/s on SQLite (WAL,
//! synchronous=FULL) and on PostgreSQL (when GATEHOUSE_TEST_POSTGRES is set), and page
//! renders/s (HTML and JSON). `cargo bench -p gatehouse-vote --bench vote`;
//! GATEHOUSE_BENCH_SECONDS (default 5) and GATEHOUSE_BENCH_CONCURRENCY (default 32).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_store::Store;
use gatehouse_verify::{IssuerProfile, KeySet, SigningKey, Verifier};
use gatehouse_vote::{AppState, SignInConfig, VoteStore};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CLIENT_ID: &str = "bench.apps.googleusercontent.com";
const TOKENS: usize = 2000;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn serve(votes: VoteStore, key: &SigningKey) -> String {
    let verifier = Verifier::new(
        IssuerProfile::google()
            .with_static_keys(KeySet::new([key.public_key().unwrap()]))
            .with_audiences([CLIENT_ID]),
    )
    .unwrap();
    let state = AppState::builder(
        votes,
        Arc::new(verifier),
        SignInConfig::emulator("http://127.0.0.1:9099", CLIENT_ID),
    )
    .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, gatehouse_vote::app(state))
            .await
            .unwrap();
    });
    format!("http://{addr}/")
}

#[derive(Clone, Copy)]
enum Load {
    Vote,
    Html,
    Json,
}

/// Runs `concurrency` clients for `seconds`; returns (requests/s, failures).
async fn run(url: &str, load: Load, tokens: Arc<Vec<String>>) -> (f64, u64) {
    let seconds = env_num("GATEHOUSE_BENCH_SECONDS", 5);
    let concurrency = env_num("GATEHOUSE_BENCH_CONCURRENCY", 32);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (url, done, failed, tokens) =
            (url.to_owned(), done.clone(), failed.clone(), tokens.clone());
        tasks.spawn(async move {
            let client = reqwest::Client::new();
            let mut i = worker as usize;
            while Instant::now() < deadline {
                let request = match load {
                    Load::Vote => {
                        i += concurrency as usize;
                        let team = if i.is_multiple_of(2) { "CATS" } else { "DOGS" };
                        client
                            .post(&url)
                            .bearer_auth(&tokens[i % tokens.len()])
                            .form(&[("team", team)])
                    }
                    Load::Html => client.get(&url),
                    Load::Json => client.get(&url).header("accept", "application/json"),
                };
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    (rate, failed.load(Ordering::Relaxed))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let key = SigningKey::generate_rs256("bench").unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let tokens: Arc<Vec<String>> = Arc::new(
            (0..TOKENS)
                .map(|i| {
                    key.sign_jwt(&json!({
                        "iss": "https://accounts.google.com", "aud": CLIENT_ID,
                        "sub": format!("voter-{i}"), "email": format!("voter{i}@example.com"),
                        "email_verified": true, "iat": now, "exp": now + 3600,
                    }))
                    .unwrap()
                })
                .collect(),
        );
        println!("| what | requests/s | failures |");
        println!("|---|---|---|");
        let dir = std::env::temp_dir().join(format!("gh-vote-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sqlite = VoteStore::open(
            Store::open_sqlite_file(&dir.join("vote.sqlite3"))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        let url = serve(sqlite.clone(), &key).await;
        let (rate, failed) = run(&url, Load::Vote, tokens.clone()).await;
        println!("| vote, SQLite (WAL, synchronous=FULL) | {rate:.0} | {failed} |");
        let (rate, failed) = run(&url, Load::Html, tokens.clone()).await;
        println!("| page render (HTML, counts + 5 recent), SQLite | {rate:.0} | {failed} |");
        let (rate, failed) = run(&url, Load::Json, tokens.clone()).await;
        println!("| tally as JSON, SQLite | {rate:.0} | {failed} |");
        println!("<!-- SQLite rows: {} -->", sqlite.count().await.unwrap());
        sqlite.close().await;
        let _ = std::fs::remove_dir_all(&dir);

        if let Some(db) = gatehouse_testkit::postgres("vote_bench").await {
            let pg = VoteStore::open(Store::open_url(&db.url).await.unwrap())
                .await
                .unwrap();
            let url = serve(pg.clone(), &key).await;
            let (rate, failed) = run(&url, Load::Vote, tokens.clone()).await;
            println!("| vote, PostgreSQL | {rate:.0} | {failed} |");
            let (rate, failed) = run(&url, Load::Html, tokens.clone()).await;
            println!("| page render (HTML), PostgreSQL | {rate:.0} | {failed} |");
            println!("<!-- PostgreSQL rows: {} -->", pg.count().await.unwrap());
            pg.close().await;
        }
    });
}
