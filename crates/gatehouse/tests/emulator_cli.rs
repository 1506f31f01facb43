// Test helpers outside #[test] functions panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The CLI against a running emulator (`gatehouse idp`) and loopback receivers, as a user
//! types it, under the usual umask (022):
//! - `keys create-sa-key` leaves a private key readable by its owner only, whether written
//!   with `--output` or printed into a file by the shell; the emulator's data directory and
//!   database are private too;
//! - `token`, `call` and `keys` reach the emulator, its metadata server and loopback
//!   receivers directly, whatever proxy the environment names;
//! - `call --user` without `--audience` gets a token for the emulator's web client;
//! - `call` waits for a slow answer (no total limit) unless `--max-time` says otherwise;
//! - error text from servers reaches the terminal without its control characters;
//! - `--help` never prints the value of a variable that may hold a password.

// The testkit's log helper, compiled in (this crate does not depend on the testkit).
#[path = "../../testkit/src/logs.rs"]
#[allow(dead_code)]
mod logs;

use base64::Engine as _;
use gatehouse_testkit::free_port;
use std::io::BufRead as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WEB_CLIENT_ID: &str = "gatehouse-web.apps.googleusercontent.com";
const SA: &str = "runner@demo-project.iam.gserviceaccount.com";

/// GATEHOUSE_BIN (as scripts/test and the vote tests take it), else the one cargo built.
fn binary() -> PathBuf {
    std::env::var_os("GATEHOUSE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_gatehouse")),
        PathBuf::from,
    )
}

/// The variables that name a proxy for HTTP clients (reqwest reads both spellings).
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// `gatehouse ARGS` under umask 022 (what makes files world-readable unless we say
/// otherwise), with no proxy or credential variables from the test's own environment.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 022 && exec \"$0\" \"$@\""])
        .arg(binary())
        .args(args);
    for var in PROXY_VARS.into_iter().chain([
        "NO_PROXY",
        "no_proxy",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GCE_METADATA_HOST",
        "GCE_METADATA_ROOT",
        "GCE_METADATA_IP",
        "GATEHOUSE_IDP_DATABASE",
        "DATABASE_URL",
    ]) {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs a short command; its stderr is kept under test-logs for the secrets check (stdout
/// may hold a token or a key and is not).
async fn run(mut cmd: Command) -> Output {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let (_, mut log) = logs::log_file("gatehouse-emulator-cli");
    std::io::Write::write_all(&mut log, &out.stderr).unwrap();
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn scratch_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "gh-emulator-cli-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `gatehouse idp` on a free port with its data under a directory it creates itself.
struct Idp {
    child: Child,
    url: String,
    addr: String,
    data: PathBuf,
    root: PathBuf,
}

impl Idp {
    fn start(name: &str) -> Idp {
        let root = scratch_dir(name);
        let data = root.join("fresh").join(".gatehouse");
        let addr = format!("127.0.0.1:{}", free_port());
        let (log, stderr) = logs::log_stdio("gatehouse-idp-cli");
        let mut child = command(&["idp", "--listen", &addr, "--data", data.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // The first line says it listens; the rest of the banner is drained so the emulator
        // never writes into a closed pipe.
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => assert!(line.contains("listening on"), "{line}"),
            Err(_) => panic!(
                "gatehouse idp did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
        Idp {
            child,
            url: format!("http://{addr}"),
            addr,
            data,
            root,
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Serves `app` on a loopback port; its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A receiver answering with the `aud` of the bearer token it got (the signature is the
/// emulator's business; here only the claim matters).
async fn audience_echo() -> String {
    async fn echo(headers: axum::http::HeaderMap) -> String {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let payload = token.split('.').nth(1).unwrap_or_default();
        let claims: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        claims["aud"].as_str().unwrap_or("no token").to_owned()
    }
    serve(axum::Router::new().route("/", axum::routing::get(echo).post(echo))).await
}

fn assert_is_key_file(text: &str) {
    let key: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(key["type"], "service_account");
    assert_eq!(key["client_email"], SA);
    assert!(
        key["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_keys_and_the_emulators_data_are_readable_by_their_owner_only() {
    let idp = Idp::start("keys");

    // The data directory `idp` created, and the database holding its signing keys.
    assert_eq!(mode(&idp.data), 0o700);
    assert_eq!(mode(&idp.data.join("idp.db")), 0o600);
    for companion in ["idp.db-wal", "idp.db-shm"] {
        let path = idp.data.join(companion);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{companion}");
        }
    }

    // --output FILE: a new file, and a world-readable one replaced.
    let dir = idp.root.join("keys");
    std::fs::create_dir(&dir).unwrap();
    let written = dir.join("key.json");
    let stale = dir.join("stale.json");
    std::fs::write(&stale, "old").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
    for path in [&written, &stale] {
        let out = run(command(&[
            "keys",
            "create-sa-key",
            SA,
            "--idp",
            &idp.url,
            "--output",
            path.to_str().unwrap(),
        ]))
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "the key went to the file only");
        assert_eq!(mode(path), 0o600, "{}", path.display());
        assert_is_key_file(&std::fs::read_to_string(path).unwrap());
    }

    // `> key.json`: the shell made the file 0644; the key must not stay readable in it.
    let redirected = dir.join("redirected.json");
    let file = std::fs::File::create(&redirected).unwrap();
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .unwrap();
    let mut cmd = command(&["keys", "create-sa-key", SA, "--idp", &idp.url]);
    cmd.stdout(file);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&redirected), 0o600);
    assert_is_key_file(&std::fs::read_to_string(&redirected).unwrap());

    // A pipe is left alone and still gets the key.
    let out = run(command(&["keys", "create-sa-key", SA, "--idp", &idp.url])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_is_key_file(&stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_do_not_reroute_requests_to_this_machine() {
    let idp = Idp::start("proxy");
    let receiver = audience_echo().await;
    // A proxy that is not there: any request sent to it fails.
    let proxy = format!("http://127.0.0.1:{}", free_port());
    let with_proxy = |args: &[&str]| {
        let mut cmd = command(args);
        for var in PROXY_VARS {
            cmd.env(var, &proxy);
        }
        cmd
    };

    // The metadata server, named and found by ADC (the emulator's, as the fallback).
    for args in [
        vec![
            "token",
            "--metadata",
            idp.addr.as_str(),
            "--audience",
            "https://svc.example",
        ],
        vec![
            "token",
            "--idp",
            idp.url.as_str(),
            "--audience",
            "https://svc.example",
        ],
    ] {
        let out = run(with_proxy(&args)).await;
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim().split('.').count(), 3, "{args:?}");
    }

    // The emulator's user tokens, and a receiver on loopback called with one.
    let out = run(with_proxy(&[
        "call",
        &format!("{receiver}/"),
        "--user",
        "alice@example.com",
        "--audience",
        WEB_CLIENT_ID,
        "--idp",
        &idp.url,
    ]))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), WEB_CLIENT_ID);

    // A private key, then a token for it from its token_uri (the emulator's /token).
    let out = run(with_proxy(&[
        "keys",
        "create-sa-key",
        SA,
        "--idp",
        &idp.url,
    ]))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_is_key_file(&stdout(&out));
    let key_file = idp.root.join("key.json");
    std::fs::write(&key_file, &out.stdout).unwrap();
    let out = run(with_proxy(&[
        "call",
        &format!("{receiver}/"),
        "--key-file",
        key_file.to_str().unwrap(),
    ]))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        receiver,
        "the receiver's origin, Cloud Run's rule"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_as_a_test_user_defaults_to_the_emulators_web_client() {
    let idp = Idp::start("user");
    let receiver = audience_echo().await;
    let out = run(command(&[
        "call",
        &format!("{receiver}/"),
        "-d",
        "team=CATS",
        "--user",
        "alice@example.com",
        "--idp",
        &idp.url,
        "-v",
    ]))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        WEB_CLIENT_ID,
        "the audience `token --user` gives"
    );
    // As `token --user` does.
    let out = run(command(&[
        "token",
        "--user",
        "alice@example.com",
        "--idp",
        &idp.url,
    ]))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Takes half a minute on purpose: the token services' limit is 30 s, and `call` must
/// outlast it (a long report, a stream), as curl does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_waits_for_a_slow_answer_unless_given_a_max_time() {
    let idp = Idp::start("slow");
    // Plain TCP, not a server framework with timers of its own: the answer comes after 32 s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let mut request = [0u8; 8192];
                let _ = socket.read(&mut request).await;
                tokio::time::sleep(Duration::from_secs(32)).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nthe report",
                    )
                    .await;
            });
        }
    });
    let url = format!("{slow}/report");
    let limited = tokio::spawn(run(command(&[
        "call",
        &url,
        "--metadata",
        &idp.addr,
        "--max-time",
        "1.5",
    ])));
    let started = Instant::now();
    let out = run(command(&["call", &url, "--metadata", &idp.addr])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "the report");
    assert!(started.elapsed() >= Duration::from_secs(31));

    let out = limited.await.unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_text_reaches_the_terminal_inert() {
    let hostile = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}";
    let body = serde_json::json!({"error": "invalid_request", "error_description": hostile});
    let metadata = serve(axum::Router::new().fallback(move || {
        let body = body.to_string();
        async move {
            (
                axum::http::StatusCode::BAD_REQUEST,
                [("metadata-flavor", "Google")],
                body,
            )
        }
    }))
    .await;
    // An emulator answering an error in plain text (as axum's own 404 and 405 are).
    let emulator = serve(axum::Router::new().fallback(move || async move {
        (
            axum::http::StatusCode::FORBIDDEN,
            format!("denied{hostile}"),
        )
    }))
    .await;

    let out = run(command(&[
        "token",
        "--metadata",
        metadata.trim_start_matches("http://"),
        "--audience",
        "https://svc.example",
    ]))
    .await;
    assert!(!out.status.success());
    let shown = stderr(&out);
    assert!(shown.contains("invalid_request"), "{shown}");
    assert!(
        !shown.contains(&['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'][..]),
        "{shown:?}"
    );

    let out = run(command(&["keys", "create-sa-key", SA, "--idp", &emulator])).await;
    assert!(!out.status.success());
    let shown = stderr(&out);
    assert!(shown.contains("403"), "the status is reported: {shown}");
    assert!(shown.contains("denied"), "{shown}");
    assert!(
        !shown.contains(&['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'][..]),
        "{shown:?}"
    );
}

#[tokio::test]
async fn help_never_prints_a_variable_that_may_hold_a_password() {
    let secret = format!("postgres://u:{}@db.example/idp", logs::PLANTED_DB_PASSWORD);
    for (subcommand, var) in [
        ("idp", "GATEHOUSE_IDP_DATABASE"),
        ("up", "DATABASE_URL"),
        ("vote", "DATABASE_URL"),
    ] {
        let mut cmd = command(&[subcommand, "--help"]);
        cmd.env(var, &secret);
        let out = run(cmd).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let help = stdout(&out);
        assert!(help.contains(var), "{subcommand} --help names {var}");
        assert!(
            !help.contains(logs::PLANTED_DB_PASSWORD),
            "{subcommand} --help shows the password"
        );
    }
}

/// A mistyped method, header or `-d @FILE` is said as such before any token is asked for:
/// the token service is not troubled for a call that cannot be made, and when it is down the
/// user still learns what is wrong with the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_checks_its_arguments_before_minting_a_token() {
    // Nothing listens here: a token request would fail with "cannot reach".
    let dead = format!("127.0.0.1:{}", free_port());
    let missing = scratch_dir("call-args").join("no-such-body");
    let missing_arg = format!("@{}", missing.display());
    for (extra, expected) in [
        (vec!["-X", "B@D"], "is not an HTTP method"),
        (vec!["-H", "no colon here"], "is not `Name: value`"),
        (vec!["-H", "Bad Name: x"], "is not a header name"),
        (vec!["-d", missing_arg.as_str()], "no-such-body"),
    ] {
        let mut args = vec!["call", "http://127.0.0.1:9/x", "--metadata", &dead];
        args.extend(extra.iter().copied());
        let out = run(command(&args)).await;
        assert!(!out.status.success(), "{extra:?}");
        let err = stderr(&out);
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(!err.contains("cannot reach"), "{extra:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(missing.parent().unwrap());
}

/// A GCE_METADATA_HOST that does not answer falls through to the emulator (DESIGN §2's
/// order), whose default service account is another identity than the one that host would
/// have given: never silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_says_when_gce_metadata_host_does_not_answer_and_the_emulator_mints_instead() {
    let idp = Idp::start("adc-fallthrough");
    let dead = format!("127.0.0.1:{}", free_port());
    let mut cmd = command(&[
        "token",
        "--audience",
        "https://receiver.example",
        "--idp",
        &idp.url,
    ]);
    cmd.env("GCE_METADATA_HOST", &dead);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("GCE_METADATA_HOST") && err.contains(&dead),
        "no word of the fall-through: {err}"
    );
}

/// "curl with a token" shows a streamed answer (server-sent events, a long report) as it
/// comes, not when the receiver finally closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_a_streamed_answer_as_it_arrives() {
    let idp = Idp::start("stream");
    // Plain TCP: the first chunk at once, the end of the answer only much later.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut request = [0u8; 8192];
        let _ = socket.read(&mut request).await;
        let _ = socket
            .write_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n\
                  c\r\ndata: first\n\r\n",
            )
            .await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let _ = socket.write_all(b"0\r\n\r\n").await;
    });
    let mut child = command(&["call", &url, "--metadata", &idp.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = [0u8; 12];
        let read = std::io::Read::read_exact(&mut out, &mut first).map(|()| first);
        let _ = tx.send(read);
    });
    let first = rx.recv_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let first = first
        .expect("nothing printed 10 s after the first event arrived")
        .unwrap();
    assert_eq!(&first, b"data: first\n");
}
