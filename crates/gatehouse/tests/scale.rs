// Test helpers outside #[test] functions panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Scale (DESIGN §7): two emulators, two gateways and two voting apps, each its own
//! `gatehouse` process, on one PostgreSQL database. Gateway 1 and vote app 1 take their keys
//! from emulator A, gateway 2 and vote app 2 from emulator B, so every cross check below
//! goes through the shared database:
//! - a token minted by either emulator verifies at either gateway;
//! - a key rotation asked of A is published by A at once and by B within a reload interval,
//!   signs (on both) only after one key max-age, and its first tokens verify at both
//!   gateways on the first try; tokens of the retired key keep verifying;
//! - a sign-in page account added on A signs in on B's page; a Firebase (Identity Toolkit)
//!   account made on A signs in on B;
//! - a vote cast through one voting app is counted on the other's page.
//!
//! The key max-age is 30 s (`--key-max-age`), the shortest that means what it says at a
//! gateway: its key cache keeps a document at least 30 s and refetches for an unknown kid
//! at most every 30 s. The users and votes checks run while the rotation waits.

use gatehouse_testkit::TestDatabase;
use gatehouse_testkit::free_port;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_AGE: i64 = 30;
const CLIENT_ID: &str = "gatehouse-web.apps.googleusercontent.com";
const PROJECT: &str = "demo-project";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const SECURETOKEN: &str = "securetoken@system.gserviceaccount.com";

/// GATEHOUSE_BIN (as scripts/test and the vote tests take it), else the one cargo built.
fn binary() -> PathBuf {
    std::env::var_os("GATEHOUSE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_gatehouse")),
        PathBuf::from,
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One `gatehouse` process, killed when dropped; its stderr goes to `log`.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    base: String,
}

impl Process {
    fn start(name: &'static str, dir: &Path, args: &[&str]) -> Process {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .args(["--listen", &listen])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for var in [
            "DATABASE_URL",
            "GATEHOUSE_IDP_DATABASE",
            "CLOUD_SQL_CREDENTIALS_SECRET",
            "DB_USER",
            "DB_PASSWORD",
            "DB_NAME",
            "DB_HOST",
            "CLOUD_SQL_CONNECTION_NAME",
            "PORT",
        ] {
            cmd.env_remove(var);
        }
        Process {
            name,
            child: cmd.spawn().unwrap(),
            log,
            base: format!("http://{listen}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until `path` answers 200.
    async fn ready(&mut self, path: &str) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(self.url(path)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited with {status}:\n{}", self.name, self.logs());
            }
            assert!(Instant::now() < deadline, "{} never got ready", self.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole layout; dropped processes first, then the database and the directory.
struct Cluster {
    idp_a: Process,
    idp_b: Process,
    vote_1: Process,
    vote_2: Process,
    gateway_1: Process,
    gateway_2: Process,
    dir: PathBuf,
    _db: TestDatabase,
    http: reqwest::Client,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in [
                &self.idp_a,
                &self.idp_b,
                &self.vote_1,
                &self.vote_2,
                &self.gateway_1,
                &self.gateway_2,
            ] {
                eprintln!("----- {} log -----\n{}", p.name, p.logs());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn gateway_config(dir: &Path, name: &str, idp: &Process, vote: &Process) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let toml = format!(
        r#"
[assertion]
key_file = "assertion.pem"

[[route]]
name = "vote"
upstream = "{vote}"
audiences = ["{CLIENT_ID}", "{PROJECT}"]
issuers = [
  {{ profile = "google", jwks = "{google}" }},
  {{ profile = "firebase:{PROJECT}", jwks = "{firebase}" }},
]
allow = ["allAuthenticatedUsers"]
# The voting app verifies the token itself.
forward_token = "keep"
"#,
        vote = vote.base,
        google = idp.url("/oauth2/v3/certs"),
        firebase = idp.url(&format!("/robot/v1/metadata/x509/{SECURETOKEN}")),
    );
    std::fs::write(&path, toml).unwrap();
    path
}

impl Cluster {
    async fn start(db: TestDatabase) -> Cluster {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("gh-scale-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let max_age = MAX_AGE.to_string();
        let idp = |name| {
            let args = [
                "idp",
                "--database",
                &db.url,
                "--project",
                PROJECT,
                "--key-max-age",
                &max_age,
            ];
            Process::start(name, &dir, &args)
        };
        // Both at once: the migration and the first keys race, as replicas' would.
        let (mut idp_a, mut idp_b) = (idp("idp-a"), idp("idp-b"));
        idp_a.ready("/").await;
        idp_b.ready("/").await;
        let vote = |name, idp: &Process| {
            let args = [
                "vote",
                "--database",
                &db.url,
                "--idp",
                &idp.base,
                "--firebase-project",
                PROJECT,
            ];
            Process::start(name, &dir, &args)
        };
        let (mut vote_1, mut vote_2) = (vote("vote-1", &idp_a), vote("vote-2", &idp_b));
        // One assertion key for both gateways: an upstream checking X-Goog-Iap-Jwt-Assertion
        // accepts either's.
        let key = gatehouse_verify::SigningKey::generate_es256("scale").unwrap();
        std::fs::write(dir.join("assertion.pem"), key.to_pkcs8_pem().unwrap()).unwrap();
        let config_1 = gateway_config(&dir, "gateway-1", &idp_a, &vote_1);
        let config_2 = gateway_config(&dir, "gateway-2", &idp_b, &vote_2);
        let gateway = |name, config: &Path| {
            Process::start(name, &dir, &["proxy", "--config", config.to_str().unwrap()])
        };
        let mut gateway_1 = gateway("gateway-1", &config_1);
        let mut gateway_2 = gateway("gateway-2", &config_2);
        vote_1.ready("/healthz").await;
        vote_2.ready("/healthz").await;
        gateway_1.ready("/_gatehouse/healthz").await;
        gateway_2.ready("/_gatehouse/healthz").await;
        Cluster {
            idp_a,
            idp_b,
            vote_1,
            vote_2,
            gateway_1,
            gateway_2,
            dir,
            _db: db,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn get_json(&self, url: &str) -> Value {
        let r = self.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {url}");
        r.json().await.unwrap()
    }

    async fn post_json(&self, url: &str, body: &Value) -> Value {
        let r = self.http.post(url).json(body).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "POST {url}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// A test user's Google ID token from `idp`'s API.
    async fn user_token(&self, idp: &Process, email: &str) -> String {
        let r = self
            .post_json(
                &idp.url("/emulator/v1/accounts/token"),
                &json!({"email": email}),
            )
            .await;
        r["id_token"].as_str().unwrap().to_owned()
    }

    /// Who `gateway` says the token's bearer is, or the refusal's status.
    async fn identity(&self, gateway: &Process, token: &str) -> Result<Value, StatusCode> {
        let r = self
            .http
            .get(gateway.url("/_gatehouse/identity"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            Ok(r.json().await.unwrap())
        } else {
            Err(r.status())
        }
    }

    /// Asserts that both gateways admit `token` as `sub`, on the first try.
    async fn admitted_by_both(&self, token: &str, sub: &str, what: &str) {
        for gateway in [&self.gateway_1, &self.gateway_2] {
            let id = self
                .identity(gateway, token)
                .await
                .unwrap_or_else(|s| panic!("{} refused {what}: {s}", gateway.name));
            assert_eq!(id["sub"], sub, "{} on {what}: {id}", gateway.name);
            assert_eq!(id["invoker"], true, "{} on {what}: {id}", gateway.name);
        }
    }

    /// One sign-in on `idp`'s page: opens the chooser, posts `form` (choose or add), and
    /// returns the ID token of the redirect and the page as first shown.
    async fn sign_in_page(&self, idp: &Process, form: &[(&str, &str)]) -> (String, String) {
        let query = [
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("response_type", "id_token"),
            ("scope", "openid email profile"),
            ("nonce", "scale-nonce"),
        ];
        let r = self
            .http
            .get(idp.url("/o/oauth2/v2/auth"))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let page = r.text().await.unwrap();
        let marker = "name=\"csrf_token\" value=\"";
        let start = page.find(marker).unwrap() + marker.len();
        let csrf = page[start..start + page[start..].find('"').unwrap()].to_owned();
        let mut fields: Vec<(&str, &str)> = query.to_vec();
        fields.push(("csrf_token", &csrf));
        fields.extend_from_slice(form);
        let r = self
            .http
            .post(idp.url("/o/oauth2/v2/auth"))
            .header("cookie", cookie)
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "{}",
            r.text().await.unwrap()
        );
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let (_, fragment) = location.split_once('#').unwrap();
        let token = fragment
            .split('&')
            .find_map(|kv| kv.strip_prefix("id_token="))
            .unwrap()
            .to_owned();
        (token, page)
    }

    /// The Identity Toolkit on `idp`.
    async fn toolkit(&self, idp: &Process, action: &str, body: &Value) -> Value {
        self.post_json(
            &idp.url(&format!(
                "/identitytoolkit.googleapis.com/v1/accounts:{action}?key=scale-api-key"
            )),
            body,
        )
        .await
    }

    async fn tally(&self, vote: &Process) -> (i64, i64) {
        let r = self
            .http
            .get(vote.url("/"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        let t: Value = r.json().await.unwrap();
        (t["cats"].as_i64().unwrap(), t["dogs"].as_i64().unwrap())
    }

    /// A vote through `via` (a gateway or a voting app).
    async fn vote(&self, via: &Process, token: &str, team: &str) {
        let r = self
            .http
            .post(via.url("/"))
            .bearer_auth(token)
            .form(&[("team", team)])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "vote through {}: {text}", via.name);
    }

    /// The kids in `idp`'s published key document at `path`.
    async fn published(&self, idp: &Process, path: &str) -> Vec<String> {
        let doc = self.get_json(&idp.url(path)).await;
        match doc.get("keys") {
            Some(keys) => keys
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect(),
            None => doc.as_object().unwrap().keys().cloned().collect(),
        }
    }
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let part = |i: usize| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    let mut c = part(1);
    c["kid"] = part(0)["kid"].clone();
    c
}

fn kid(token: &str) -> String {
    claims(token)["kid"].as_str().unwrap().to_owned()
}

/// A ring's entry in `/emulator/v1/keys` or `keys:rotate`.
fn ring<'a>(keys: &'a Value, name: &str) -> &'a Value {
    keys["rings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ring"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_everything_on_one_postgres_share_keys_users_and_votes() {
    let Some(db) = gatehouse_testkit::postgres("scale").await else {
        return;
    };
    let c = Cluster::start(db).await;
    let (a, b) = (&c.idp_a, &c.idp_b);

    // --- Either emulator's tokens verify at either gateway.
    let from_a = c.user_token(a, "erin@example.com").await;
    let from_b = c.user_token(b, "frank@example.com").await;
    assert_eq!(kid(&from_a), kid(&from_b), "one signing key for both");
    for token in [&from_a, &from_b] {
        let sub = claims(token)["sub"].as_str().unwrap().to_owned();
        c.admitted_by_both(token, &sub, "a token minted before the rotation")
            .await;
    }
    let mut forged = from_a.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    for gateway in [&c.gateway_1, &c.gateway_2] {
        assert_eq!(
            c.identity(gateway, &forged).await.unwrap_err(),
            StatusCode::UNAUTHORIZED
        );
    }
    // One assertion key file, one published assertion key.
    assert_eq!(
        c.get_json(&c.gateway_1.url("/_gatehouse/public_key-jwk"))
            .await,
        c.get_json(&c.gateway_2.url("/_gatehouse/public_key-jwk"))
            .await
    );

    // --- Rotate on A. Gateways hold key documents fetched before it.
    let before = c.get_json(&a.url("/emulator/v1/keys")).await;
    let old_google = ring(&before, "google")["signing"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_firebase = ring(&before, "securetoken")["signing"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated_at = unix_now();
    let started = Instant::now();
    let rotated = c
        .post_json(&a.url("/emulator/v1/keys:rotate"), &json!({}))
        .await;
    let successor = |name: &str| {
        let keys = ring(&rotated, name)["keys"].as_array().unwrap();
        let newest = keys.last().unwrap();
        (
            newest["kid"].as_str().unwrap().to_owned(),
            newest["signsFrom"].as_i64().unwrap(),
        )
    };
    let (new_google, signs_from) = successor("google");
    let (new_firebase, _) = successor("securetoken");
    assert_ne!(new_google, old_google);
    assert_ne!(new_firebase, old_firebase);
    assert!(
        signs_from >= rotated_at + MAX_AGE,
        "the new key must wait one max-age: signs from {signs_from}, rotated at {rotated_at}"
    );
    assert_eq!(ring(&rotated, "google")["signing"], old_google.as_str());
    // A publishes the successor at once and still signs with the old key.
    assert!(
        c.published(a, "/oauth2/v3/certs")
            .await
            .contains(&new_google)
    );
    assert_eq!(kid(&c.user_token(a, "erin@example.com").await), old_google);
    // B publishes it within its reload interval (3 s here), before anyone signs with it.
    let firebase_path = format!("/robot/v1/metadata/x509/{SECURETOKEN}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let google = c.published(b, "/oauth2/v3/certs").await;
        let firebase = c.published(b, &firebase_path).await;
        if google.contains(&new_google) && firebase.contains(&new_firebase) {
            assert!(google.contains(&old_google) && firebase.contains(&old_firebase));
            break;
        }
        assert_eq!(kid(&c.user_token(b, "frank@example.com").await), old_google);
        assert!(Instant::now() < deadline, "B never published the new keys");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let published_by_b = started.elapsed();
    // Asking again (of either replica) while the successor waits changes nothing.
    let again = c
        .post_json(&b.url("/emulator/v1/keys:rotate"), &json!({}))
        .await;
    assert_eq!(
        ring(&again, "google")["keys"],
        ring(&rotated, "google")["keys"]
    );

    // --- While the new key waits: users and votes are shared.
    // A sign-in page account added on A is on B's page and signs in there as the same person.
    let (on_a, _) = c
        .sign_in_page(a, &[("action", "add"), ("new_email", "grace@example.com")])
        .await;
    let (on_b, page_b) = c
        .sign_in_page(b, &[("action", "choose"), ("email", "grace@example.com")])
        .await;
    assert!(
        page_b.contains("grace@example.com"),
        "B's chooser lacks her"
    );
    assert_eq!(claims(&on_b)["email"], "grace@example.com");
    assert_eq!(claims(&on_a)["sub"], claims(&on_b)["sub"]);
    // A Firebase email/password account made on A signs in on B.
    let credentials = json!({
        "email": "heidi@example.com", "password": "correct horse", "returnSecureToken": true,
    });
    let signed_up = c.toolkit(a, "signUp", &credentials).await;
    let uid = signed_up["localId"].as_str().unwrap().to_owned();
    let signed_in = c.toolkit(b, "signInWithPassword", &credentials).await;
    assert_eq!(signed_in["localId"], uid.as_str());
    let firebase_token = signed_in["idToken"].as_str().unwrap().to_owned();
    c.admitted_by_both(&firebase_token, &uid, "a Firebase token from B")
        .await;
    // A vote through gateway 1 (to vote app 1) is counted on vote app 2's page, and back.
    let (cats, dogs) = c.tally(&c.vote_2).await;
    c.vote(&c.gateway_1, &from_b, "CATS").await;
    assert_eq!(c.tally(&c.vote_2).await, (cats + 1, dogs));
    c.vote(&c.gateway_2, &firebase_token, "DOGS").await;
    assert_eq!(c.tally(&c.vote_1).await, (cats + 1, dogs + 1));

    // --- The successor signs from its time on, on both emulators, and its very first
    // tokens verify at both gateways (publication before use: no retry, no 401 window).
    let deadline = Instant::now() + Duration::from_secs((MAX_AGE + 60) as u64);
    let mut first_new = [None, None];
    while first_new.iter().any(Option::is_none) {
        for (i, idp) in [a, b].into_iter().enumerate() {
            if first_new[i].is_some() {
                continue;
            }
            let token = c.user_token(idp, "erin@example.com").await;
            if kid(&token) == new_google {
                assert!(
                    unix_now() >= signs_from,
                    "{} signed with the new key before its time",
                    idp.name
                );
                let sub = claims(&token)["sub"].as_str().unwrap().to_owned();
                c.admitted_by_both(&token, &sub, &format!("{}'s first new-key token", idp.name))
                    .await;
                first_new[i] = Some(started.elapsed());
            } else {
                assert_eq!(kid(&token), old_google);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the new key never signed (signs from {signs_from}, now {})",
            unix_now()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The Firebase ring rotated too: B's new tokens verify at gateway 1, whose keys come
    // from A.
    let deadline = Instant::now() + Duration::from_secs(30);
    let firebase_new = loop {
        let r = c.toolkit(b, "signInWithPassword", &credentials).await;
        let token = r["idToken"].as_str().unwrap().to_owned();
        if kid(&token) == new_firebase {
            break token;
        }
        assert!(
            Instant::now() < deadline,
            "B never signed with the new Firebase key"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    c.admitted_by_both(&firebase_new, &uid, "B's new-key Firebase token")
        .await;
    // Tokens of the retired keys keep verifying until they expire.
    let sub_a = claims(&from_a)["sub"].as_str().unwrap().to_owned();
    c.admitted_by_both(&from_a, &sub_a, "an old-key token after the rotation")
        .await;
    c.admitted_by_both(&firebase_token, &uid, "an old-key Firebase token")
        .await;
    // B lists the same keys as A, signing with the same one.
    let keys_a = c.get_json(&a.url("/emulator/v1/keys")).await;
    let keys_b = c.get_json(&b.url("/emulator/v1/keys")).await;
    for name in ["google", "securetoken"] {
        for field in ["keys", "published", "signing"] {
            assert_eq!(
                ring(&keys_a, name)[field],
                ring(&keys_b, name)[field],
                "{name} {field}"
            );
        }
    }
    // And the voting apps, which verify tokens themselves, take new-key tokens too.
    let newest = c.user_token(a, "ivan@example.com").await;
    assert_eq!(kid(&newest), new_google);
    c.vote(&c.vote_2, &newest, "CATS").await;
    assert_eq!(c.tally(&c.vote_1).await, (cats + 2, dogs + 1));
    eprintln!(
        "scale: B published the new keys {:.1} s after the rotation; first new-key tokens \
         from A and B (both verified at both gateways) at {:.1} s and {:.1} s (max-age {MAX_AGE} s)",
        published_by_b.as_secs_f64(),
        first_new[0].unwrap().as_secs_f64(),
        first_new[1].unwrap().as_secs_f64(),
    );
}
