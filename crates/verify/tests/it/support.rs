//! Shared fixtures: keys, claims, verifiers at a pinned time, and a local key server.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_verify::{CacheConfig, IssuerProfile, KeySet, SigningKey, Verifier};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The pinned "now" of every test (2025-06-15).
pub const NOW: u64 = 1_750_000_000;
pub const AUD: &str = "1234-abc.apps.googleusercontent.com";
pub const GOOGLE_ISS: &str = "https://accounts.google.com";

pub static RSA: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::generate_rs256("rsa-1").unwrap());
pub static RSA_2: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::generate_rs256("rsa-2").unwrap());
pub static EC: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::generate_es256("ec-1").unwrap());
/// Someone else's key that claims the issuer's kid.
pub static ATTACKER: LazyLock<SigningKey> =
    LazyLock::new(|| SigningKey::generate_rs256("rsa-1").unwrap());

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn keyset(keys: &[&SigningKey]) -> KeySet {
    KeySet::new(keys.iter().map(|k| k.public_key().unwrap()))
}

/// Claims of a Google ID token valid at [`NOW`].
pub fn google_claims() -> Value {
    json!({
        "iss": GOOGLE_ISS,
        "azp": AUD,
        "aud": AUD,
        "sub": "110169484474386276334",
        "email": "alice@example.com",
        "email_verified": true,
        "iat": NOW - 10,
        "exp": NOW + 3590,
    })
}

/// [`google_claims`] with `edit` applied.
pub fn claims_with(edit: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut claims = google_claims();
    edit(claims.as_object_mut().unwrap());
    claims
}

pub fn sign(key: &SigningKey, claims: &Value) -> String {
    key.sign_jwt(claims).unwrap()
}

/// A token whose header and claims are exactly these JSON texts (duplicates and all),
/// correctly signed by `key`.
pub fn sign_raw(key: &SigningKey, header_json: &str, claims_json: &str) -> String {
    let mut token = format!("{}.{}", b64(header_json), b64(claims_json));
    let signature = key.sign(token.as_bytes()).unwrap();
    token.push('.');
    token.push_str(&b64(signature));
    token
}

/// The standard header of `key`'s tokens, as JSON text.
pub fn header_json(key: &SigningKey) -> String {
    format!(
        r#"{{"alg":"{}","kid":"{}","typ":"JWT"}}"#,
        key.algorithm().jws_name(),
        key.kid()
    )
}

/// The Google profile with static keys and [`AUD`], no token cache (so that each call
/// really verifies).
pub fn google_profile(keys: &[&SigningKey]) -> IssuerProfile {
    IssuerProfile::google()
        .with_audiences([AUD])
        .with_static_keys(keyset(keys))
}

pub fn verifier(profile: IssuerProfile) -> Verifier {
    Verifier::builder()
        .profile(profile)
        .token_cache_capacity(0)
        .build()
        .unwrap()
}

pub fn google_verifier() -> Verifier {
    verifier(google_profile(&[&RSA, &EC]))
}

/// The reason code `verifier` gives for `token` at `now`; panics if it is accepted.
pub async fn refusal(verifier: &Verifier, token: &str, now: u64) -> &'static str {
    match verifier.verify(token, now).await {
        Ok(identity) => panic!("accepted: {identity:?}"),
        Err(e) => e.code(),
    }
}

/// An HTTP client that never reuses connections, so a stopped server is really gone.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub fn jwks_document(keys: &[&SigningKey]) -> Vec<u8> {
    let keys: Vec<Value> = keys.iter().map(|k| k.public_jwk().unwrap()).collect();
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

/// A local key server on 127.0.0.1:0: serves `/jwks` (and, when set, an OIDC discovery
/// document), counts requests, and can switch documents, fail, be slow, or go away.
pub struct KeyServer {
    pub base: String,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ServerState {
    jwks_fetches: AtomicU64,
    discovery_fetches: AtomicU64,
    other_requests: AtomicU64,
    document: Mutex<Vec<u8>>,
    cache_control: Mutex<Option<String>>,
    age: Mutex<Option<String>>,
    discovery: Mutex<Option<Value>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    stream_oversize: Mutex<Option<usize>>,
}

async fn serve_jwks(State(state): State<Arc<ServerState>>) -> Response {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
    if status != StatusCode::OK {
        return (status, "key server failure").into_response();
    }
    let stream_oversize = *state.stream_oversize.lock();
    let mut response = if let Some(size) = stream_oversize {
        // A chunked body with no Content-Length: the limit must hold while reading.
        let chunks = (0..size.div_ceil(1024))
            .map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 1024])));
        axum::body::Body::from_stream(futures_util::stream::iter(chunks)).into_response()
    } else {
        state.document.lock().clone().into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(cc) = state.cache_control.lock().as_deref() {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
    }
    if let Some(age) = state.age.lock().as_deref() {
        headers.insert(header::AGE, HeaderValue::from_str(age).unwrap());
    }
    response
}

async fn serve_discovery(State(state): State<Arc<ServerState>>) -> Response {
    state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    match state.discovery.lock().clone() {
        Some(doc) => axum::Json(doc).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serve_other(State(state): State<Arc<ServerState>>, _headers: HeaderMap) -> Response {
    state.other_requests.fetch_add(1, Ordering::SeqCst);
    (StatusCode::OK, jwks_document(&[&ATTACKER])).into_response()
}

impl KeyServer {
    pub async fn start(document: Vec<u8>) -> KeyServer {
        let state = Arc::new(ServerState {
            document: Mutex::new(document),
            status: AtomicU16::new(200),
            ..ServerState::default()
        });
        let app = Router::new()
            .route("/jwks", get(serve_jwks))
            .route("/.well-known/openid-configuration", get(serve_discovery))
            .fallback(serve_other)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        KeyServer { base, state, task }
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base)
    }
    pub fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }
    pub fn discovery_fetches(&self) -> u64 {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }
    pub fn other_requests(&self) -> u64 {
        self.state.other_requests.load(Ordering::SeqCst)
    }
    pub fn set_document(&self, document: Vec<u8>) {
        *self.state.document.lock() = document;
    }
    pub fn set_cache_control(&self, value: &str) {
        *self.state.cache_control.lock() = Some(value.to_owned());
    }
    pub fn set_age(&self, value: &str) {
        *self.state.age.lock() = Some(value.to_owned());
    }
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
    pub fn set_discovery(&self, document: Value) {
        *self.state.discovery.lock() = Some(document);
    }
    pub fn stream_oversize(&self, bytes: usize) {
        *self.state.stream_oversize.lock() = Some(bytes);
    }
    /// Stops listening: later connections are refused.
    pub async fn stop(&self) {
        self.task.abort();
        // Wait until the listener is really closed.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.base.trim_start_matches("http://"))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("key server did not stop");
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Cache settings for tests: default except where a test says otherwise.
pub fn cache_config() -> CacheConfig {
    CacheConfig {
        fetch_timeout: Duration::from_secs(5),
        ..CacheConfig::default()
    }
}

/// A Google-issuer profile whose keys come from `url`, and a verifier for it.
pub fn url_verifier(url: &str, config: CacheConfig, token_cache: usize) -> Verifier {
    Verifier::builder()
        .profile(
            IssuerProfile::google()
                .with_audiences([AUD])
                .with_jwks_url(url),
        )
        .http_client(http_client())
        .cache_config(config)
        .token_cache_capacity(token_cache)
        .build()
        .unwrap()
}

/// A self-signed X.509 certificate carrying `key`, as Google's PEM certificate maps do.
pub fn self_signed_pem(key: &SigningKey) -> String {
    let der = key.to_pkcs8_der().unwrap();
    let alg = match key.algorithm() {
        gatehouse_verify::Algorithm::RS256 => &rcgen::PKCS_RSA_SHA256,
        _ => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), alg).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["securetoken.system.gserviceaccount.com".into()])
            .unwrap();
    // Google's certificates expire a day or two after publication; validity is not
    // what trust rests on, so an expired one still carries its key.
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.self_signed(&pair).unwrap().pem()
}

/// Polls until the server has seen `n` fetches (background refreshes run on their own).
pub async fn wait_for_fetches(server: &KeyServer, n: u64) {
    // Wall-clock waits only; the cache itself runs on the pinned `now`.
    let start = tokio::time::Instant::now();
    while server.jwks_fetches() < n {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "expected {n} fetches, saw {}",
            server.jwks_fetches()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
