//! Stand-in servers and fixtures.

use axum::Router;
use gatehouse_verify::{Clock, FixedClock, SigningKey};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// A pinned "now" for tests that pin time.
pub const T0: u64 = 1_800_000_000;

/// The stand-in issuer's key (generated once per test binary: RSA generation is slow).
pub fn issuer_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate_rs256("issuer-key-1").unwrap())
}

/// A service account's key (the one its key file holds).
pub fn service_account_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        SigningKey::generate_rs256("0123456789abcdef0123456789abcdef01234567").unwrap()
    })
}

pub const SA_EMAIL: &str = "caller@demo-project.iam.gserviceaccount.com";

/// A Google-style ID token for `aud`, issued at `now`, living `life` seconds.
pub fn id_token(aud: &str, email: &str, now: u64, life: u64) -> String {
    issuer_key()
        .sign_jwt(&json!({
            "iss": "https://accounts.google.com",
            "aud": aud,
            "azp": email,
            "sub": "1234567890",
            "email": email,
            "email_verified": true,
            "iat": now,
            "exp": now + life,
        }))
        .unwrap()
}

/// Serve `app` on an ephemeral loopback port.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// A loopback address where nothing listens.
pub async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A request counter shared with a stand-in server.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A clock for the stand-ins and the client both.
pub fn clock() -> (FixedClock, Arc<dyn Clock>) {
    let clock = FixedClock::at(T0);
    (clock.clone(), Arc::new(clock))
}

/// The JSON of a Google-format key file for [`service_account_key`], `token_uri` as given.
pub fn key_file_json(token_uri: &str) -> Value {
    let key = service_account_key();
    json!({
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": key.kid(),
        "private_key": key.to_pkcs8_pem().unwrap(),
        "client_email": SA_EMAIL,
        "client_id": "104215283012345678901",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/caller%40demo-project.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com"
    })
}

/// A file under the target's temp dir, removed on drop.
#[derive(Debug)]
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn with_contents(name: &str, contents: &[u8]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("gatehouse-client-it-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{name}", N.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
