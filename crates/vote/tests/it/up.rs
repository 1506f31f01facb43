//! `gatehouse up` as a newcomer runs it: the banner's three commands work as it says, the
//! gateway guards what it should, SIGTERM stops everything with exit 0, and a second `up` on
//! the same data keeps the votes. (The browser flow: tests/browser/vote.test.mjs.)

use gatehouse_testkit::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn binary() -> PathBuf {
    crate::process::binary()
}

struct Up {
    child: Child,
    gateway: String,
    idp: String,
    caller: String,
    other: String,
    out: PathBuf,
}

impl Up {
    async fn start(data: &Path) -> Up {
        let ports = [free_port(), free_port(), free_port(), free_port()];
        Up::start_with(data, ports, &[]).await
    }

    async fn start_with(data: &Path, ports: [u16; 4], extra: &[&str]) -> Up {
        // The banner (stdout) and the logs (stderr), both kept for the secrets check.
        let (out, stdout) = gatehouse_testkit::logs::log_stdio("gatehouse-up-stdout");
        let (_, stderr) = gatehouse_testkit::logs::log_stdio("gatehouse-up");
        let child = Command::new(binary())
            .arg("up")
            .args(extra)
            .args(["--data", data.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
            .args(["--idp-listen", &format!("127.0.0.1:{}", ports[1])])
            .args(["--caller-metadata", &format!("127.0.0.1:{}", ports[2])])
            .args(["--other-metadata", &format!("127.0.0.1:{}", ports[3])])
            // The caller service's default (8082) may be taken: tests run side by side.
            .args(["--caller-listen", &format!("127.0.0.1:{}", free_port())])
            .env_remove("DATABASE_URL")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let up = Up {
            child,
            gateway: format!("http://127.0.0.1:{}", ports[0]),
            idp: format!("http://127.0.0.1:{}", ports[1]),
            caller: format!("127.0.0.1:{}", ports[2]),
            other: format!("127.0.0.1:{}", ports[3]),
            out,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for url in [
            format!("{}/.well-known/openid-configuration", up.idp),
            format!("{}/_gatehouse/healthz", up.gateway),
            format!("{}/healthz", up.gateway),
        ] {
            loop {
                if client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{url} never answered:\n{}",
                    up.banner()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        up
    }

    fn banner(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn call(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .arg("call")
            .args(args)
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env_remove("GCE_METADATA_HOST")
            .output()
            .unwrap()
    }

    fn terminate(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "gatehouse up exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "gatehouse up ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_commands_work_and_up_keeps_its_data() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let data = std::env::temp_dir().join(format!("gh-up-{}-{nanos}", std::process::id()));
    let up = Up::start(&data).await;
    let banner = up.banner();
    for needle in [
        "Gatehouse is up.",
        &format!("Open {}/", up.gateway),
        "allUsers",
        "allAuthenticatedUsers",
        "serviceAccount:vote-caller@demo-project.iam.gserviceaccount.com",
        "gatehouse call",
    ] {
        assert!(banner.contains(needle), "banner lacks {needle}:\n{banner}");
    }
    let web = "gatehouse-web.apps.googleusercontent.com";

    // 1. Vote as a user.
    let vote = up.call(&[
        &format!("{}/", up.gateway),
        "-d",
        "team=CATS",
        "--user",
        "alice@example.com",
        "--audience",
        web,
        "--idp",
        &up.idp,
    ]);
    assert!(vote.status.success(), "{}\n{}", text(&vote), up.banner());
    assert!(
        String::from_utf8_lossy(&vote.stdout).contains("Vote successfully cast for 'CATS'"),
        "{}",
        text(&vote)
    );

    // 2. The secure endpoint, as any signed-in user.
    let secure = up.call(&[
        &format!("{}/run-secure-endpoint", up.gateway),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"url":"https://example.com/x"}"#,
        "--user",
        "bob@example.com",
        "--audience",
        web,
        "--idp",
        &up.idp,
    ]);
    assert!(secure.status.success(), "{}", text(&secure));
    let echoed: serde_json::Value = serde_json::from_slice(&secure.stdout).unwrap();
    assert_eq!(echoed["email"], "bob@example.com");
    assert_eq!(echoed["url"], "https://example.com/x");

    // 3. Service to service: the named account in, the other out.
    let admitted = up.call(&[
        &format!("{}/api/votes/hourly", up.gateway),
        "--metadata",
        &up.caller,
    ]);
    assert!(admitted.status.success(), "{}", text(&admitted));
    let hourly: serde_json::Value = serde_json::from_slice(&admitted.stdout).unwrap();
    assert_eq!(hourly["hours"][0]["cats"], 1, "{hourly}");
    let refused = up.call(&[
        &format!("{}/api/votes/hourly", up.gateway),
        "--metadata",
        &up.other,
    ]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("403"), "{}", text(&refused));

    // The gateway guards the secure endpoint; the public app refuses unsigned votes itself.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/run-secure-endpoint", up.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(format!("{}/", up.gateway))
        .form(&[("team", "DOGS")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.text().await.unwrap(),
        "Unauthorized: sign in and send the ID token as Authorization: Bearer."
    );
    up.terminate();

    // A second `up` on the same data keeps the vote.
    let up = Up::start(&data).await;
    let tally: serde_json::Value = client
        .get(format!("{}/", up.gateway))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tally["cats"], 1, "{tally}");
    up.terminate();
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_own_gateway_layout_from_a_file() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let data = std::env::temp_dir().join(format!("gh-up-own-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let vote = format!("127.0.0.1:{}", free_port());
    let printed = Command::new(binary())
        .args(["up", "--print-gateway-config", "--vote-listen", &vote])
        .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
        .args(["--idp-listen", &format!("127.0.0.1:{}", ports[1])])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", text(&printed));
    let toml = String::from_utf8(printed.stdout).unwrap();
    // The user's change: only bob may call the secure endpoint.
    let own = toml.replacen(
        r#"allow = ["allAuthenticatedUsers"]"#,
        r#"allow = ["user:bob@example.com"]"#,
        1,
    );
    assert_ne!(own, toml);
    let file = data.join("gateway.toml");
    std::fs::write(&file, own).unwrap();
    let up = Up::start_with(
        &data.join("data"),
        ports,
        &[
            "--gateway-config",
            file.to_str().unwrap(),
            "--vote-listen",
            &vote,
        ],
    )
    .await;
    assert!(up.banner().contains("routes from"), "{}", up.banner());
    let web = "gatehouse-web.apps.googleusercontent.com";
    let call = |user: &str| {
        up.call(&[
            &format!("{}/run-secure-endpoint", up.gateway),
            "-H",
            "Content-Type: application/json",
            "-d",
            "{}",
            "--user",
            user,
            "--audience",
            web,
            "--idp",
            &up.idp,
        ])
    };
    let alice = call("alice@example.com");
    assert!(
        !alice.status.success() && text(&alice).contains("403"),
        "{}",
        text(&alice)
    );
    let bob = call("bob@example.com");
    assert!(bob.status.success(), "{}", text(&bob));
    up.terminate();
    let _ = std::fs::remove_dir_all(&data);
}
