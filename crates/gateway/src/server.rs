//! Listeners and connections: HTTP/1.1 keep-alive and h2c (or TLS with ALPN), header size
//! and read-time limits, an idle timeout, a connection limit, graceful shutdown (stop
//! accepting, drain in-flight requests within a deadline), and configuration reload that
//! swaps the routing table without touching a connection.

use crate::assertion::{AssertionKeyError, AssertionSigner};
use crate::config::{Config, ConfigError, Limits, Timeouts};
use crate::metrics::Metrics;
use crate::proxy::Upstreams;
use crate::routes::Snapshot;
use crate::stack::{self, ConnInfo};
use axum::body::Body;
use gatehouse_verify::clock::{Clock, SystemClock};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::{Mutex, RwLock};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Assertion(#[from] AssertionKeyError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// State every request reads. The routing table is swapped whole on reload.
pub(crate) struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) assertions: AssertionSigner,
    pub(crate) upstreams: Upstreams,
    pub(crate) limits: Limits,
    pub(crate) timeouts: Timeouts,
    pub(crate) metrics_on_main: bool,
    /// The access log's and metrics' route label for the gateway's own endpoints.
    pub(crate) own_route_name: Arc<str>,
    source: Option<PathBuf>,
    watched: Mutex<Vec<PathBuf>>,
    /// Serialises reloads (SIGHUP and the file watcher may race).
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().clone()
    }
}

/// A bound gateway, ready to [`run`](Gateway::run).
pub struct Gateway {
    shared: Arc<Shared>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    watch_interval: Option<Duration>,
    shutdown_tx: watch::Sender<bool>,
}

/// Controls a running gateway from elsewhere (signal handlers, tests).
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
}

impl Handle {
    /// Re-reads the configuration file and swaps the routing table in. On error the old
    /// configuration stays and the error says why (it is also logged).
    pub fn reload(&self) -> Result<u64, ConfigError> {
        reload(&self.shared)
    }

    /// Stops accepting and drains in-flight requests (within the configured grace).
    pub fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The routing table's generation: 1 at start, one more per successful reload.
    pub fn generation(&self) -> u64 {
        self.shared.snapshot().generation
    }
}

fn reload(shared: &Shared) -> Result<u64, ConfigError> {
    let _guard = shared.reload_lock.lock();
    let Some(path) = &shared.source else {
        return Err(ConfigError {
            file: None,
            line: None,
            column: None,
            reason: "no configuration file to reload (flags-only form)".into(),
        });
    };
    let result = Config::from_file(path).and_then(|config| {
        let current = shared.snapshot();
        let next = Snapshot::build(&config, Some(&current))?;
        Ok((config, next))
    });
    match result {
        Ok((config, next)) => {
            let generation = next.generation;
            *shared.snapshot.write() = Arc::new(next);
            *shared.watched.lock() = config.watched_files.clone();
            shared.metrics.reloaded(true);
            tracing::info!(
                generation,
                routes = config.routes.len(),
                "configuration reloaded (listen, TLS, limits, timeouts and assertion settings take effect on restart)"
            );
            Ok(generation)
        }
        Err(error) => {
            shared.metrics.reloaded(false);
            tracing::error!(%error, "new configuration refused; keeping the old one");
            Err(error)
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Binds the listeners and prepares everything; nothing is served until [`run`].
    /// `source` is the file to re-read on reload.
    ///
    /// [`run`]: Gateway::run
    pub async fn bind(config: Config, source: Option<PathBuf>) -> Result<Gateway, ServeError> {
        Gateway::bind_with_clock(config, source, Arc::new(SystemClock)).await
    }

    /// As [`bind`](Gateway::bind), with the clock requests are judged by.
    pub async fn bind_with_clock(
        config: Config,
        source: Option<PathBuf>,
        clock: Arc<dyn Clock>,
    ) -> Result<Gateway, ServeError> {
        let snapshot = Snapshot::build(&config, None)?;
        let assertions = AssertionSigner::new(
            &config.assertion.issuer,
            config.assertion.lifetime,
            config.assertion.key_file.as_deref(),
        )?;
        let tls = match &config.tls {
            Some(tls) => Some(tls_acceptor(tls)?),
            None => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServeError::Bind(config.listen, e))?;
        let admin = match config.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| ServeError::Bind(addr, e))?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            snapshot: RwLock::new(Arc::new(snapshot)),
            clock,
            metrics: Arc::new(Metrics::default()),
            assertions,
            upstreams: Upstreams::new(&config.timeouts),
            limits: config.limits.clone(),
            timeouts: config.timeouts.clone(),
            metrics_on_main: config.admin_listen.is_none(),
            own_route_name: "_gatehouse".into(),
            watched: Mutex::new(config.watched_files.clone()),
            source: source.clone(),
            reload_lock: Mutex::new(()),
        });
        let (shutdown_tx, _) = watch::channel(false);
        Ok(Gateway {
            shared,
            listener,
            admin,
            tls,
            watch_interval: config.watch_interval.filter(|_| source.is_some()),
            shutdown_tx,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
            shutdown_tx: self.shutdown_tx.clone(),
        }
    }

    /// Serves until `shutdown` completes or [`Handle::shutdown`] is called, then stops
    /// accepting and waits up to the grace period for open requests to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Gateway {
            shared,
            listener,
            admin,
            tls,
            watch_interval,
            shutdown_tx,
        } = self;
        {
            let tx = shutdown_tx.clone();
            tokio::spawn(async move {
                shutdown.await;
                let _ = tx.send(true);
            });
        }
        warm_keys(&shared);
        if let Some(interval) = watch_interval {
            tokio::spawn(watch_files(
                Arc::downgrade(&shared),
                interval,
                shutdown_tx.subscribe(),
            ));
        }
        let connections = Arc::new(Semaphore::new(shared.limits.max_connections));
        if let Some(admin) = admin {
            tokio::spawn(accept_loop(
                admin,
                None,
                Listener::Admin,
                shared.clone(),
                connections.clone(),
                shutdown_tx.subscribe(),
            ));
        }
        accept_loop(
            listener,
            tls,
            Listener::Main,
            shared.clone(),
            connections,
            shutdown_tx.subscribe(),
        )
        .await;
    }
}

/// Which requests a listener answers.
#[derive(Debug, Clone, Copy)]
enum Listener {
    /// Everything: routes and the gateway's own endpoints.
    Main,
    /// Only the gateway's own endpoints (metrics among them).
    Admin,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    kind: Listener,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = Arc::new(http_builder(&shared.limits, &shared.timeouts));
    loop {
        // At the limit, stop accepting: new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            shared.metrics.connection_opened();
            match tls {
                None => {
                    let conn = ConnInfo { peer, tls: false };
                    serve_connection(stream, conn, kind, &shared, &builder, watcher).await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(shared.timeouts.header_read, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let conn = ConnInfo { peer, tls: true };
                            serve_connection(stream, conn, kind, &shared, &builder, watcher).await
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            shared.metrics.connection_closed();
            drop(permit);
        });
    }
    // Stop accepting: the listener closes here, so new connections are refused.
    drop(listener);
    let grace = shared.timeouts.shutdown_grace;
    tracing::info!(
        open = graceful.count(),
        grace_seconds = grace.as_secs_f64(),
        "stopped accepting; draining in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed; closing the remaining connections");
    } else {
        tracing::info!("all connections drained");
    }
}

fn http_builder(limits: &Limits, timeouts: &Timeouts) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Bounds both the time to send a request head and the keep-alive wait between
        // requests (hyper starts it when it begins reading the next head).
        .header_read_timeout(timeouts.header_read)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

async fn serve_connection<IO>(
    io: IO,
    conn: ConnInfo,
    kind: Listener,
    shared: &Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let idle = shared.timeouts.idle;
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(IdleIo {
        inner: io,
        activity: activity.clone(),
    });
    let shared = shared.clone();
    let hyper_service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let shared = shared.clone();
        async move {
            let request = request.map(Body::new);
            let response = match kind {
                Listener::Main => stack::handle(&shared, conn, request).await,
                Listener::Admin => stack::admin(&shared, request).await,
            };
            Ok::<_, Infallible>(response)
        }
    });
    let connection = builder
        .serve_connection_with_upgrades(io, hyper_service)
        .into_owned();
    let connection = watcher.watch(connection);
    tokio::pin!(connection);
    let check = (idle / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            result = &mut connection => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(check) => {
                if activity.idle_for() >= idle {
                    tracing::debug!(%peer, "closing idle connection");
                    return;
                }
            }
        }
    }
}

/// When the connection last moved a byte, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// An IO that records activity, for the idle timeout.
struct IdleIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn tls_acceptor(tls: &crate::config::TlsConfig) -> Result<TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServeError::Tls(format!("certificate {}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "no certificate in {}",
            tls.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| ServeError::Tls(format!("private key {}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Loads every route's issuer keys in the background at start, so the first request does
/// not wait for a fetch and `/readyz` turns ready on its own.
fn warm_keys(shared: &Arc<Shared>) {
    let snapshot = shared.snapshot();
    let now = shared.clock.now_unix();
    for route in &snapshot.routes {
        if let Some(verifier) = &route.verifier {
            for cache in verifier.key_caches() {
                tokio::spawn(async move {
                    if let Err(error) = cache.keys(now).await {
                        tracing::warn!(url = cache.url(), %error, "issuer keys not loaded yet");
                    }
                });
            }
        }
    }
}

/// Polls the configuration file and the policy files it names; a change reloads.
async fn watch_files(
    shared: std::sync::Weak<Shared>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let fingerprint = |files: &[PathBuf]| -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for f in files {
            f.hash(&mut h);
            std::fs::read(f).ok().hash(&mut h);
        }
        h.finish()
    };
    let mut last = match shared.upgrade() {
        Some(s) => fingerprint(&s.watched.lock()),
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let files = shared.watched.lock().clone();
        let now = tokio::task::spawn_blocking(move || fingerprint(&files))
            .await
            .unwrap_or(last);
        if now != last {
            tracing::info!("configuration file changed; reloading");
            let _ = reload(&shared);
            // Re-read: a successful reload may watch other files now.
            let files = shared.watched.lock().clone();
            last = tokio::task::spawn_blocking(move || fingerprint(&files))
                .await
                .unwrap_or(now);
        }
    }
}
