// Test helpers outside #[test] functions panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The service-to-service demo inside `gatehouse up`: its caller service calls the gateway's
//! `/api` route with `gatehouse-client`, as the admitted service account (the receiver
//! answers 200) and as the other one (the gateway's 403 is passed on, the demo answers 200).
//! The data directory `up` creates, and its databases, are its user's only.

// The testkit's log helper, compiled in (this crate does not depend on the testkit).
#[path = "../../testkit/src/logs.rs"]
#[allow(dead_code)]
mod logs;

use gatehouse_testkit::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// GATEHOUSE_BIN (as scripts/test and the vote tests take it), else the one cargo built.
fn binary() -> PathBuf {
    std::env::var_os("GATEHOUSE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_gatehouse")),
        PathBuf::from,
    )
}

struct Up {
    child: Child,
    data: PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_service_is_admitted_and_the_other_account_refused() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let data = std::env::temp_dir().join(format!("gh-up-s2s-{}-{nanos}", std::process::id()));
    let [gateway, idp, caller_md, other_md, caller] = [(); 5].map(|()| free_port());
    let addr = |port: u16| format!("127.0.0.1:{port}");
    // Kept under target/test-logs for the secrets check of every log.
    let (log, stderr) = logs::log_stdio("gatehouse-up-s2s");
    let mut up = Up {
        // Under the usual umask, which would leave new files readable by everyone.
        child: Command::new("sh")
            .args([
                "-c",
                "umask 022 && exec \"$0\" \"$@\"",
                binary().to_str().unwrap(),
            ])
            .arg("up")
            .args(["--data", data.to_str().unwrap()])
            .args(["--listen", &addr(gateway)])
            .args(["--idp-listen", &addr(idp)])
            .args(["--caller-metadata", &addr(caller_md)])
            .args(["--other-metadata", &addr(other_md)])
            .args(["--caller-listen", &addr(caller)])
            .env_remove("DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap(),
        data,
    };
    let client = reqwest::Client::new();
    let demo = format!("http://127.0.0.1:{caller}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let admitted = loop {
        if let Ok(r) = client.get(format!("{demo}/")).send().await {
            break r;
        }
        if let Some(status) = up.child.try_wait().unwrap() {
            panic!(
                "gatehouse up exited early with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the caller service never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(admitted.status(), 200);

    // The emulator's signing keys and the votes: not for other local users.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |name: &str| {
            let path = up.data.join(name);
            std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(""), 0o700, "the data directory");
        for name in ["idp.db", "vote.sqlite3"] {
            assert_eq!(mode(name), 0o600, "{name}");
            for companion in [format!("{name}-wal"), format!("{name}-shm")] {
                if up.data.join(&companion).exists() {
                    assert_eq!(mode(&companion), 0o600, "{companion}");
                }
            }
        }
    }
    let admitted: serde_json::Value = admitted.json().await.unwrap();
    assert_eq!(
        admitted["caller"], "vote-caller@demo-project.iam.gserviceaccount.com",
        "{admitted}"
    );
    assert_eq!(admitted["status"], 200, "{admitted}");
    assert!(admitted["body"]["hours"].is_array(), "{admitted}");

    let refused = client
        .get(format!("{demo}/?as=other"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 200);
    let refused: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        refused["caller"], "other-service@demo-project.iam.gserviceaccount.com",
        "{refused}"
    );
    assert_eq!(refused["status"], 403, "{refused}");
    assert_eq!(refused["body"]["reason"], "not_invoker", "{refused}");

    // The banner says how to trigger it.
    let ok = Command::new("kill")
        .args(["-TERM", &up.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = up.child.wait().unwrap();
    assert!(status.success(), "gatehouse up exited with {status}");
    let mut banner = String::new();
    std::io::Read::read_to_string(&mut up.child.stdout.take().unwrap(), &mut banner).unwrap();
    for needle in [format!("curl {demo}/"), format!("curl '{demo}/?as=other'")] {
        assert!(banner.contains(&needle), "banner lacks {needle}:\n{banner}");
    }
}

/// Starts `gatehouse up` on free ports with a fresh data directory; answers it, the
/// emulator's port and the caller service's port once the caller service accepts.
async fn start_up(label: &str) -> (Up, u16, u16) {
    start_up_with(label, free_port(), &[]).await
}

/// [`start_up`], the emulator on port `idp`, with `extra` arguments.
async fn start_up_with(label: &str, idp: u16, extra: &[String]) -> (Up, u16, u16) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let data = std::env::temp_dir().join(format!("gh-{label}-{}-{nanos}", std::process::id()));
    let [gateway, caller_md, other_md, caller] = [(); 4].map(|()| free_port());
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let (log, stderr) = logs::log_stdio(&format!("gatehouse-{label}"));
    let mut up = Up {
        child: Command::new(binary())
            .arg("up")
            .args(["--data", data.to_str().unwrap()])
            .args(["--listen", &addr(gateway)])
            .args(["--idp-listen", &addr(idp)])
            .args(["--caller-metadata", &addr(caller_md)])
            .args(["--other-metadata", &addr(other_md)])
            .args(["--caller-listen", &addr(caller)])
            .args(extra)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
        data,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr(caller)).is_err() {
        if let Some(status) = up.child.try_wait().unwrap() {
            panic!(
                "gatehouse up exited early with {status}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "gatehouse up never listened");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (up, idp, caller)
}

fn signal(up: &Up, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &up.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name}");
}

/// The exit status, if `up` exits within `limit`.
async fn exits_within(up: &mut Up, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = up.child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Clients that never finish a request (a stalled browser tab, a slowloris) are connected to
/// the emulator and the caller service, whose servers drain without a deadline of their own.
fn stall_requests(ports: &[u16]) -> Vec<std::net::TcpStream> {
    ports
        .iter()
        .map(|port| {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", *port)).unwrap();
            std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            stream
        })
        .collect()
}

/// `up` started, a request half-sent to the emulator and to the caller service and left so,
/// then SIGTERM: the stalled connections are returned, to be held open.
async fn terminated_while_stalled(label: &str) -> (Up, Vec<std::net::TcpStream>) {
    let (up, idp, caller) = start_up(label).await;
    let stalled = stall_requests(&[idp, caller]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&up, "TERM");
    (up, stalled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_up_at_once_whatever_is_still_draining() {
    let (mut up, _stalled) = terminated_while_stalled("up-second-signal").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&up, "INT");
    let status = exits_within(&mut up, Duration::from_secs(5)).await;
    assert!(
        status.is_some(),
        "gatehouse up still runs 5 s after a second signal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stops_within_the_drain_deadline_though_a_client_never_finishes_its_request() {
    let (mut up, _stalled) = terminated_while_stalled("up-stalled-stop").await;
    // The gateway's grace period (30 s) and a little more; the stalled clients stay
    // connected past it.
    let status = exits_within(&mut up, Duration::from_secs(45)).await;
    assert!(
        status.is_some(),
        "gatehouse up still runs 45 s after SIGTERM: a stalled client holds it"
    );
}

/// DESIGN §2: every issuer is configurable. The emulator's URL is the one --issuer names, in
/// its discovery document, and the other parts reach it there (the gateway's keys included:
/// the caller service is admitted through it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_emulator_at_the_issuer_it_is_given() {
    let idp = free_port();
    let issuer = format!("http://localhost:{idp}");
    let (_up, _, caller) =
        start_up_with("up-issuer", idp, &["--issuer".into(), issuer.clone()]).await;
    let client = reqwest::Client::new();
    let discovery: serde_json::Value = client
        .get(format!(
            "http://127.0.0.1:{idp}/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let auth = discovery["authorization_endpoint"].as_str().unwrap();
    assert!(auth.starts_with(&format!("{issuer}/")), "{discovery}");
    let admitted: serde_json::Value = client
        .get(format!("http://127.0.0.1:{caller}/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(admitted["status"], 200, "{admitted}");
}
