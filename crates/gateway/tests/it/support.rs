//! Test fixtures on real sockets: an issuer key server, an echo upstream that reports what
//! it received, a WebSocket echo upstream, token minting, and a gateway started from TOML.

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use gatehouse_gateway::{Config, Gateway, Handle};
use gatehouse_verify::{FixedClock, SigningKey};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "https://issuer.test";
pub const AUD: &str = "https://svc.example";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// An issuer: an RS256 key and a server publishing its JWK set at `/certs`.
pub struct Issuer {
    pub key: Arc<SigningKey>,
    /// An ES256 key published beside the RSA one (kid `e1`).
    pub ec_key: Arc<SigningKey>,
    pub addr: SocketAddr,
    pub fetches: Arc<AtomicUsize>,
}

impl Issuer {
    pub async fn start() -> Issuer {
        let key = Arc::new(SigningKey::generate_rs256("k1").unwrap());
        let ec_key = Arc::new(SigningKey::generate_es256("e1").unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let jwks = json!({"keys": [key.public_jwk().unwrap(), ec_key.public_jwk().unwrap()]});
        let counter = fetches.clone();
        let router = Router::new().route(
            "/certs",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let jwks = jwks.clone();
                async move { ([("cache-control", "public, max-age=300")], axum::Json(jwks)) }
            }),
        );
        Issuer {
            key,
            ec_key,
            addr: serve(router).await,
            fetches,
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/certs", self.addr)
    }

    /// Standard claims for `email`, overridden/extended by `extra` (a `null` removes).
    pub fn claims(&self, email: &str, extra: Value) -> Value {
        let now = now();
        let mut claims = json!({
            "iss": ISSUER,
            "aud": AUD,
            "sub": format!("sub-{email}"),
            "email": email,
            "email_verified": true,
            "iat": now,
            "exp": now + 3600,
        });
        let map = claims.as_object_mut().unwrap();
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                if v.is_null() {
                    map.remove(&k);
                } else {
                    map.insert(k, v);
                }
            }
        }
        claims
    }

    pub fn token(&self, email: &str) -> String {
        self.key.sign_jwt(&self.claims(email, json!({}))).unwrap()
    }

    pub fn token_with(&self, email: &str, extra: Value) -> String {
        self.key.sign_jwt(&self.claims(email, extra)).unwrap()
    }
}

/// What the echo upstream saw.
#[derive(Debug)]
pub struct Seen {
    pub status: u16,
    pub headers: HashMap<String, Vec<String>>,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers.get(name).cloned().unwrap_or_default()
    }
}

async fn echo(request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    // Count the body as it streams: never holds more than a chunk.
    let mut stream = body.into_data_stream();
    let mut bytes = 0u64;
    use futures_util::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => bytes += c.len() as u64,
            Err(_) => break,
        }
    }
    axum::Json(json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": bytes,
    }))
    .into_response()
}

async fn download(Query(q): Query<HashMap<String, u64>>) -> Response {
    let total = q.get("bytes").copied().unwrap_or(0);
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = (total - sent).min(chunk.len() as u64);
            Some((Ok::<_, std::io::Error>(chunk.slice(..n as usize)), sent + n))
        }
    });
    Body::from_stream(stream).into_response()
}

async fn slow(Query(q): Query<HashMap<String, u64>>) -> Response {
    tokio::time::sleep(Duration::from_millis(q.get("ms").copied().unwrap_or(500))).await;
    "slow done".into_response()
}

/// An upstream answering every path with a JSON report of what it received; also
/// `/_download?bytes=N` (a streamed body) and `/_slow?ms=N`.
pub async fn echo_upstream() -> SocketAddr {
    serve(
        Router::new()
            .route("/_download", get(download))
            .route("/_slow", get(slow))
            .fallback(any(echo)),
    )
    .await
}

/// A TLS listener for `localhost` with a self-signed certificate, offering `alpn` (as
/// Google's front ends offer `h2` and `http/1.1`), each accepted stream given to `serve`:
/// its port and the certificate's PEM (to trust it).
async fn tls_upstream<F, Fut>(alpn: &[&[u8]], serve: F) -> (u16, String)
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tokio_rustls::rustls;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, serve) = (acceptor.clone(), serve.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls).await;
                }
            });
        }
    });
    (port, pem)
}

/// The echo upstream over TLS (HTTP/1.1, or HTTP/2 when `alpn` offers it and the client
/// takes it): its port and its certificate's PEM.
pub async fn tls_echo_upstream(alpn: &[&[u8]]) -> (u16, String) {
    let router = Router::new().fallback(any(echo));
    tls_upstream(alpn, move |tls| {
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        async move {
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        }
    })
    .await
}

/// A WebSocket upstream over TLS offering `h2` and `http/1.1` by ALPN, echoing every
/// message: a handshake only succeeds in HTTP/1.1.
pub async fn tls_websocket_upstream() -> (u16, String) {
    tls_upstream(&[b"h2", b"http/1.1"], |tls| async move {
        use futures_util::{SinkExt as _, StreamExt as _};
        let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// A WebSocket upstream echoing every message.
pub async fn websocket_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use futures_util::{SinkExt as _, StreamExt as _};
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A gateway running in this process on a real socket, from a config file.
pub struct Running {
    pub addr: SocketAddr,
    pub handle: Handle,
    pub config_path: PathBuf,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn temp_dir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("gatehouse-gw-it-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts a gateway from TOML text (written to a file so reload can be tested). The
/// listen address is always a fresh loopback port.
pub async fn gateway(toml: &str) -> Running {
    let dir = temp_dir();
    let path = dir.join("gateway.toml");
    let text = format!("listen = \"127.0.0.1:0\"\n{toml}");
    std::fs::write(&path, &text).unwrap();
    let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::bind(config, Some(path.clone())).await.unwrap();
    let addr = gw.local_addr().unwrap();
    let handle = gw.handle();
    let task = tokio::spawn(gw.run(std::future::pending()));
    Running {
        addr,
        handle,
        config_path: path,
        task,
    }
}

/// One checked route for `issuer` granting `members`, to `upstream`.
pub fn checked_route(issuer: &Issuer, upstream: SocketAddr, members: &[&str]) -> String {
    format!(
        r#"
[[route]]
name = "checked"
upstream = "http://{upstream}"
url = "{AUD}"
issuers = [{{ profile = "{ISSUER}", jwks = "{jwks}" }}]
allow = {members:?}
"#,
        jwks = issuer.jwks_url(),
    )
}

/// The gateway's `/_gatehouse/metrics` text.
pub async fn metrics_text(gw: &Running) -> String {
    metrics_via(&client(), gw.addr).await
}

/// The `/_gatehouse/metrics` text of the gateway at `addr`, asked with `c` (on its pooled
/// connection, when a test counts connections).
pub async fn metrics_via(c: &reqwest::Client, addr: SocketAddr) -> String {
    c.get(format!("http://{addr}/_gatehouse/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sends a request and parses the echo's report (or the gateway's JSON error).
pub async fn send(req: reqwest::RequestBuilder) -> Seen {
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    let mut headers: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in response.headers() {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(v.to_str().unwrap_or_default().to_owned());
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Seen {
        status,
        headers,
        body,
    }
}

/// The headers the upstream saw, from the echo's report.
pub fn upstream_headers(seen: &Seen) -> Seen {
    let mut headers = HashMap::new();
    if let Some(map) = seen.body.get("headers").and_then(Value::as_object) {
        for (k, v) in map {
            let values = v
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            headers.insert(k.clone(), values);
        }
    }
    Seen {
        status: seen.status,
        headers,
        body: Value::Null,
    }
}

/// A gateway judging tokens by `clock`, from TOML text.
pub async fn gateway_at(toml: &str, clock: &FixedClock) -> (SocketAddr, Handle) {
    let path = temp_dir().join("gateway.toml");
    std::fs::write(&path, format!("listen = \"127.0.0.1:0\"\n{toml}")).unwrap();
    let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let gw = Gateway::bind_with_clock(config, Some(path), Arc::new(clock.clone()))
        .await
        .unwrap();
    let addr = gw.local_addr().unwrap();
    let handle = gw.handle();
    tokio::spawn(gw.run(std::future::pending()));
    (addr, handle)
}

/// An issuer token valid from `at` (the gateway's clock), one hour long.
pub fn token_at(issuer: &Issuer, email: &str, at: u64) -> String {
    issuer.token_with(email, json!({"iat": at, "exp": at + 3600}))
}

/// Sends `request` (a whole HTTP/1.1 request, written as the test means it, unnormalized)
/// on a new connection to `addr`; returns the status and the rest of the answer, read
/// until the gateway closes (the request should say `Connection: close`).
pub async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The payload of a JWT the gateway made (its assertion), unverified: for claims a test
/// checks after the signature was checked elsewhere, or where only the shape matters.
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}
