//! Listeners and connections: HTTP/1.1 keep-alive and h2c (or TLS with ALPN), header size
//! and read-time limits, an idle timeout, a connection limit, graceful shutdown (stop
//! accepting, drain in-flight requests within a deadline), and configuration reload that
//! swaps the routing table without touching a connection.
//!
//! The main listener is served by `workers` threads, each a single-threaded event loop
//! with its own upstream connection pool, all accepting from the one listening socket; a
//! worker that accepts a connection while another has fewer open hands it over ([`Balance`]).
//! A connection then lives and dies on one thread: its requests, the upstream exchanges and
//! the answers never cross threads, which a work-stealing runtime would make them do
//! (measured: 15% more CPU per proxied request, bench/README.md "Gateway").

use crate::assertion::{AssertionKeyError, AssertionSigner};
use crate::config::{Config, ConfigError, Limits, Timeouts};
use crate::http1::{self, Rewind, Served};
use crate::idle::{Ending, IdleIo, InFlight, LateHead, Order, Watchdog};
use crate::metrics::Metrics;
use crate::proxy::Upstreams;
use crate::routes::Snapshot;
use crate::stack::{self, ConnInfo};
use axum::body::Body;
use futures_util::future::Either;
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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::task::TaskTracker;

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
    pub(crate) limits: Limits,
    pub(crate) timeouts: Timeouts,
    pub(crate) metrics_on_main: bool,
    /// TLS to `https://` upstreams: the system's roots and `upstream_ca`, read at start.
    pub(crate) upstream_tls: Arc<rustls::ClientConfig>,
    /// The access log's and metrics' route label for the gateway's own endpoints.
    pub(crate) own_route_name: Arc<str>,
    source: Option<PathBuf>,
    watched: Mutex<crate::config::Sources>,
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
    workers: usize,
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
            *shared.watched.lock() = config.sources.clone();
            shared.metrics.reloaded(true);
            tracing::info!(
                generation,
                routes = config.routes.len(),
                "configuration reloaded (listen, TLS, upstream_ca, limits, timeouts and assertion settings take effect on restart)"
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
        let upstream_tls = upstream_tls(config.upstream_ca.as_deref())?;
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
            limits: config.limits.clone(),
            timeouts: config.timeouts.clone(),
            metrics_on_main: config.admin_listen.is_none(),
            upstream_tls,
            own_route_name: "_gatehouse".into(),
            watched: Mutex::new(config.sources.clone()),
            source: source.clone(),
            reload_lock: Mutex::new(()),
        });
        let (shutdown_tx, _) = watch::channel(false);
        Ok(Gateway {
            shared,
            listener,
            workers: config.workers,
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
            workers,
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
            // Limits of its own: health checks and metrics answer when the main listener is
            // full, the time they are needed most, and take none of its places.
            let admin_connections = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
            tokio::spawn(accept_loop(
                admin,
                None,
                Listener::Admin,
                shared.clone(),
                admin_connections,
                None,
                shutdown_tx.subscribe(),
            ));
        }
        let listener = match listener.into_std() {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot hand the listener to the workers");
                return;
            }
        };
        // Dropping this future (a test's runtime ending, say) stops the workers at once.
        let (abort_tx, abort_rx) = watch::channel(false);
        let _abort_on_drop = AbortOnDrop(abort_tx);
        let mut done = Vec::with_capacity(workers);
        let (balance, inboxes) = Balance::new(workers);
        shared.metrics.watch_workers(balance.open.clone());
        for (index, inbox) in inboxes.into_iter().enumerate() {
            let listener = match listener.try_clone() {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, index, "cannot start a worker");
                    continue;
                }
            };
            let worker = Worker {
                listener,
                tls: tls.clone(),
                shared: shared.clone(),
                connections: connections.clone(),
                shutdown: shutdown_tx.subscribe(),
                abort: abort_rx.clone(),
                seat: Seat {
                    index,
                    balance: balance.clone(),
                    inbox,
                },
            };
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let spawned = std::thread::Builder::new()
                .name(format!("gatehouse-worker-{index}"))
                .spawn(move || {
                    worker.run();
                    let _ = done_tx.send(());
                });
            match spawned {
                Ok(_) => done.push(done_rx),
                Err(error) => tracing::error!(%error, index, "cannot start a worker thread"),
            }
        }
        drop(listener);
        if done.is_empty() {
            tracing::error!("no worker could start; not serving");
        }
        for worker in done {
            let _ = worker.await;
        }
    }
}

/// The most connections the admin listener holds at once: probes and scrapers, not
/// clients.
const ADMIN_CONNECTIONS: usize = 64;

/// Tells the workers to stop now, when [`Gateway::run`]'s future is dropped unfinished.
struct AbortOnDrop(watch::Sender<bool>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// One thread serving the main listener: its own event loop and upstream connections.
struct Worker {
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
    seat: Seat,
}

impl Worker {
    /// Serves until shutdown has drained (or abort); every connection still open when it
    /// returns is closed with its event loop.
    fn run(self) {
        let Worker {
            listener,
            tls,
            shared,
            connections,
            shutdown,
            mut abort,
            seat,
        } = self;
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "cannot start a worker's event loop");
                return;
            }
        };
        runtime.block_on(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "a worker cannot use the listener");
                    return;
                }
            };
            let upstreams = Arc::new(Upstreams::new(&shared.timeouts, &shared.upstream_tls));
            let pools = Arc::downgrade(&upstreams);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(30));
                every.tick().await;
                loop {
                    every.tick().await;
                    match pools.upgrade() {
                        Some(pools) => pools.sweep(),
                        None => return,
                    }
                }
            });
            let serve = accept_loop(
                listener,
                tls,
                Listener::Main(upstreams),
                shared,
                connections,
                Some(seat),
                shutdown,
            );
            tokio::select! {
                _ = serve => {}
                _ = abort.wait_for(|a| *a) => {}
            }
        });
    }
}

/// Which requests a listener answers.
#[derive(Debug, Clone)]
enum Listener {
    /// Everything: routes (to these upstream connections) and the gateway's own endpoints.
    Main(Arc<Upstreams>),
    /// Only the gateway's own endpoints (metrics among them).
    Admin,
}

/// Spreads connections over the workers. All of them wait on the one socket, and whichever
/// wakes first would take a whole burst of new connections (a load tester's, a front load
/// balancer's pool) and leave the others idle for those connections' lifetime; instead,
/// whoever accepts hands the connection to the worker with the fewest open.
#[derive(Debug)]
struct Balance {
    open: Arc<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Accepted>]>,
}

/// A connection accepted by one worker for another.
#[derive(Debug)]
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
}

/// A worker's place in the [`Balance`].
#[derive(Debug)]
struct Seat {
    index: usize,
    balance: Arc<Balance>,
    inbox: mpsc::UnboundedReceiver<Accepted>,
}

impl Balance {
    fn new(workers: usize) -> (Arc<Balance>, Vec<mpsc::UnboundedReceiver<Accepted>>) {
        let (senders, receivers) = (0..workers)
            .map(|_| mpsc::unbounded_channel())
            .unzip::<_, _, Vec<_>, Vec<_>>();
        let balance = Balance {
            open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: senders.into(),
        };
        (Arc::new(balance), receivers)
    }

    /// The worker to serve a new connection accepted by `me`, counted as open there from
    /// now (so that a burst is spread before any of it is served).
    fn pick(&self, me: usize) -> usize {
        let load = |i: usize| self.open[i].load(Ordering::Relaxed);
        let best =
            (0..self.open.len()).fold(me, |best, i| if load(i) < load(best) { i } else { best });
        self.open[best].fetch_add(1, Ordering::Relaxed);
        best
    }

    fn closed(&self, worker: usize) {
        self.open[worker].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The next connection for this loop to serve.
enum Next {
    Accepted(
        io::Result<(tokio::net::TcpStream, SocketAddr)>,
        OwnedSemaphorePermit,
    ),
    HandedOver(Accepted),
    Stop,
}

async fn next_connection(
    listener: &TcpListener,
    connections: &Arc<Semaphore>,
    seat: Option<&mut Seat>,
    shutdown: &mut watch::Receiver<bool>,
) -> Next {
    let accept = async {
        // At the limit, stop accepting: new connections wait in the kernel's backlog.
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return Next::Stop;
        };
        Next::Accepted(listener.accept().await, permit)
    };
    let handed_over = async {
        match seat {
            Some(seat) => match seat.inbox.recv().await {
                Some(accepted) => Next::HandedOver(accepted),
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        next = accept => next,
        next = handed_over => next,
        _ = shutdown.wait_for(|s| *s) => Next::Stop,
    }
}

/// Serves a connection this worker accepted here, or hands it to a less busy worker
/// (`None`).
fn hand_over(
    seat: &Seat,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) -> Option<(tokio::net::TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let balance = &seat.balance;
    let target = balance.pick(seat.index);
    if target == seat.index {
        return Some((stream, peer, permit));
    }
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%peer, %error, "cannot hand a connection over");
            balance.closed(target);
            return None;
        }
    };
    let returned = balance.inboxes[target]
        .send(Accepted {
            stream,
            peer,
            permit,
        })
        .err()?;
    // That worker has stopped: serve it here after all.
    balance.closed(target);
    let Accepted {
        stream,
        peer,
        permit,
    } = returned.0;
    let stream = tokio::net::TcpStream::from_std(stream).ok()?;
    balance.open[seat.index].fetch_add(1, Ordering::Relaxed);
    Some((stream, peer, permit))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    kind: Listener,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    mut seat: Option<Seat>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every connection's task, so that a shutdown can wait for them to finish.
    let connections_open = TaskTracker::new();
    let builders = Arc::new(Builders::new(&shared.limits, &shared.timeouts));
    // Watches until the loop returns, after the drain.
    let (watchdog, _watching) = Watchdog::start(
        shared.timeouts.idle,
        shared.timeouts.header_read,
        shutdown.clone(),
    );
    loop {
        let (stream, peer, permit) =
            match next_connection(&listener, &connections, seat.as_mut(), &mut shutdown).await {
                Next::Stop => break,
                Next::Accepted(Ok((stream, peer)), permit) => match &seat {
                    None => (stream, peer, permit),
                    Some(seat) => match hand_over(seat, stream, peer, permit) {
                        Some(mine) => mine,
                        None => continue,
                    },
                },
                Next::Accepted(Err(error), _permit) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Next::HandedOver(Accepted {
                    stream,
                    peer,
                    permit,
                }) => match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => (stream, peer, permit),
                    Err(error) => {
                        tracing::debug!(%peer, %error, "cannot take a connection over");
                        if let Some(seat) = &seat {
                            seat.balance.closed(seat.index);
                        }
                        continue;
                    }
                },
            };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builders = builders.clone();
        let watchdog = watchdog.clone();
        let mut stop = shutdown.clone();
        // A connection that sends nothing is idle, and has not started a head either.
        let first_bytes_within = shared.timeouts.header_read.min(shared.timeouts.idle);
        let tls = tls.clone();
        let kind = kind.clone();
        let served_by = seat.as_ref().map(|s| (s.balance.clone(), s.index));
        let tasks = connections_open.clone();
        connections_open.spawn(async move {
            shared.metrics.connection_opened();
            let slot = Slot {
                shared: shared.clone(),
                served_by,
                tasks,
                _permit: permit,
            };
            match tls {
                None => {
                    let protocol = tokio::select! {
                        protocol = sniff(&stream, first_bytes_within) => protocol,
                        _ = stop.wait_for(|stopping| *stopping) => None,
                    };
                    if let Some(protocol) = protocol {
                        let conn = ConnInfo::new(peer, false, slot);
                        let served = (&shared, &*builders, &*watchdog);
                        serve_connection(stream, protocol, conn, kind, served).await
                    }
                }
                Some(acceptor) => {
                    // Boxed: a TLS connection's future is several times a plain one's, and
                    // every plain connection would otherwise be allocated at its size.
                    Box::pin(async {
                        let handshake = tokio::time::timeout(
                            shared.timeouts.header_read,
                            acceptor.accept(stream),
                        );
                        match handshake.await {
                            Ok(Ok(stream)) => {
                                let protocol = match stream.get_ref().1.alpn_protocol() {
                                    Some(b"http/1.1") => Protocol::Http1,
                                    _ => Protocol::Detect,
                                };
                                let conn = ConnInfo::new(peer, true, slot);
                                let served = (&shared, &*builders, &*watchdog);
                                serve_connection(stream, protocol, conn, kind, served).await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    })
                    .await
                }
            }
        });
    }
    // Stop accepting: the listener closes here, so new connections are refused.
    drop(listener);
    connections_open.close();
    let grace = shared.timeouts.shutdown_grace;
    tracing::info!(
        open = connections_open.len(),
        grace_seconds = grace.as_secs_f64(),
        "stopped accepting; draining in-flight requests"
    );
    if tokio::time::timeout(grace, connections_open.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed; closing the remaining connections");
    } else {
        tracing::info!("all connections drained");
    }
}

/// A connection's place: under the connection limit, counted open, on its worker. Held by
/// the connection, or by the tunnel it became (a WebSocket is the same connection going
/// on); given back when dropped.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    served_by: Option<(Arc<Balance>, usize)>,
    /// The accept loop's connection tasks, which a drain waits for.
    tasks: TaskTracker,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    /// Where the tunnel a connection becomes runs (hyper's own task for the connection ends
    /// once the upgrade is handed out): among the accept loop's connections, so that a
    /// drain waits for it as for any request in flight, up to the grace period.
    pub(crate) fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.metrics.connection_closed();
        if let Some((balance, index)) = &self.served_by {
            balance.closed(*index);
        }
    }
}

/// How a connection's protocol is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Its first bytes (or ALPN) say HTTP/1: its plain requests served by [`http1`], the
    /// rest of it, from the first request that asks for more, by hyper's HTTP/1 server.
    Http1,
    /// HTTP/2 or not yet known: hyper-util reads the preface and picks.
    Detect,
}

/// A plain connection's protocol from its first bytes, peeked (left for hyper to read);
/// `None` if it closed or sent nothing within `deadline`.
///
/// Why not let hyper-util's auto server pick every time: it reads the 24-byte HTTP/2
/// preface's worth of bytes first and hands them to the HTTP/1 server ahead of the rest, so
/// the first read is always partial and hyper grows the connection's read buffer from 8 to
/// 16 KiB to fit the rest: 8 KiB more for every HTTP/1 connection for its whole life.
async fn sniff(stream: &tokio::net::TcpStream, deadline: Duration) -> Option<Protocol> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut first = [0u8; PREFACE.len()];
    match tokio::time::timeout(deadline, stream.peek(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => None,
        // Only a prefix of the preface can still be HTTP/2 (or a method named `PRI`).
        Ok(Ok(n)) if PREFACE.starts_with(&first[..n]) => Some(Protocol::Detect),
        Ok(Ok(_)) => Some(Protocol::Http1),
    }
}

/// The HTTP servers a connection is handed to, configured alike.
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
}

impl Builders {
    fn new(limits: &Limits, timeouts: &Timeouts) -> Self {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            // Bounds both the time to send a request head and the keep-alive wait between
            // requests (hyper starts it when it begins reading the next head). Connections
            // known to be HTTP/1 have it kept by their watchdog instead (`http1` below).
            .header_read_timeout(timeouts.header_read)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .keep_alive(true);
        // No keep-alive pings: a connection's idleness is the idle timeout's to judge, and
        // the server's own pings (and their answers) would keep an unused connection, and
        // its place under the connection limit, for ever. hyper keeps no deadline for a
        // connection with no stream open; its watchdog does (`LateHead::Drain`).
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        // No header-read timeout of hyper's: the connection's watchdog keeps it
        // (`Watchdog::watch`), without a timer armed and dropped for every request.
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .keep_alive(true);
        Builders { auto, http1 }
    }
}

async fn serve_connection<IO>(
    io: IO,
    protocol: Protocol,
    conn: ConnInfo,
    kind: Listener,
    (shared, builders, watchdog): (&Arc<Shared>, &Builders, &Watchdog),
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let watched = watchdog.watch(match protocol {
        Protocol::Http1 => LateHead::Close,
        Protocol::Detect => LateHead::Drain,
    });
    let io = IdleIo::new(io, watched.activity.clone());
    // Per connection, so that what each request clones is not shared with other threads.
    let state = Arc::new((shared.clone(), kind, conn, watched.clone()));
    let (io, read) = match protocol {
        Protocol::Http1 => {
            let (shared, kind, conn, _) = &*state;
            let max_head = shared.limits.max_header_bytes.max(8192);
            let served = http1::serve(io, &watched, max_head, |request| match kind {
                Listener::Main(upstreams) => Either::Left(boxed_in_place(|| {
                    stack::handle(shared, upstreams, conn, request)
                })),
                Listener::Admin => Either::Right(boxed_in_place(|| stack::admin(shared, request))),
            })
            .await;
            match served {
                Served::Closed => return,
                Served::HandedOver { io, read } => (io, read),
            }
        }
        Protocol::Detect => (io, bytes::Bytes::new()),
    };
    let io = TokioIo::new(Rewind::new(io, read));
    let hyper_service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let state = state.clone();
        let in_flight = InFlight::begin(state.3.clone());
        // Here, before hyper reads again, not in the future: see `headers::detach`.
        let request = if request.version() < http::Version::HTTP_2 {
            let (mut head, body) = request.into_parts();
            crate::headers::detach(&mut head);
            hyper::Request::from_parts(head, body)
        } else {
            request
        };
        async move {
            let (shared, kind, conn, _) = &*state;
            let request = request.map(Body::new);
            let response = match kind {
                // Boxed: hyper keeps room for one request's future in every connection for
                // as long as it is open, idle or not; boxed, that room is a pointer and the
                // request's state exists only while it is in flight.
                Listener::Main(upstreams) => {
                    boxed_in_place(|| stack::handle(shared, upstreams, conn, request)).await
                }
                Listener::Admin => boxed_in_place(|| stack::admin(shared, request)).await,
            };
            Ok::<_, Infallible>(response.map(|body| Ending::new(body, in_flight)))
        }
    });
    let connection = match protocol {
        Protocol::Http1 => Either::Left(
            builders
                .http1
                .serve_connection(io, hyper_service)
                .with_upgrades(),
        ),
        Protocol::Detect => Either::Right(
            builders
                .auto
                .serve_connection_with_upgrades(io, hyper_service)
                .into_owned(),
        ),
    };
    tokio::pin!(connection);
    let mut draining = false;
    let served = std::future::poll_fn(|cx| {
        match watched.order(cx) {
            Order::Serve => {}
            Order::Drain if draining => {}
            // Finish the request in flight (if any), then close.
            Order::Drain => {
                draining = true;
                match connection.as_mut().as_pin_mut() {
                    Either::Left(http1) => http1.graceful_shutdown(),
                    Either::Right(detected) => detected.graceful_shutdown(),
                }
            }
            Order::Close => {
                tracing::debug!(%peer, "closing idle connection");
                return Poll::Ready(Ok(()));
            }
        }
        match connection.as_mut().as_pin_mut() {
            Either::Left(http1) => http1.poll(cx).map_err(|e| e.to_string()),
            Either::Right(detected) => detected.poll(cx).map_err(|e| e.to_string()),
        }
    });
    if let Err(error) = served.await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// `make()`'s future, made in its box. `Box::pin(make())` makes it first and then copies it
/// into the box whole, at its full size (the request's is ~5 KB), though a future not yet
/// polled holds only its arguments: with the box there first, the compiler makes it there
/// (bench/gateway/instructions: ~400 fewer instructions a request). `Box::write` is why the
/// workspace's rust-version is 1.87.
fn boxed_in_place<F: Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
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

/// The client side of TLS to upstreams: the system's root certificates plus those in
/// `ca` (a private CA, a self-signed upstream). A system root that does not parse is
/// skipped; a bad `ca` file refuses the start.
fn upstream_tls(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, ServeError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::debug!(%error, "a system root certificate could not be read");
    }
    let (_, skipped) = roots.add_parsable_certificates(system.certs);
    if skipped > 0 {
        tracing::debug!(skipped, "system root certificates skipped");
    }
    if let Some(ca) = ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ServeError::Tls(format!("upstream_ca {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(ServeError::Tls(format!(
                "upstream_ca {}: no certificate in it",
                ca.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ServeError::Tls(format!("upstream_ca {}: {e}", ca.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // No ALPN here: the connector sets it to the protocols it is built for.
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
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

/// Polls the configuration file and the policy files it names; a change reloads, once the
/// files have stayed the same for one interval (a file still being written is not read
/// half-way, where it may parse with routes missing).
async fn watch_files(
    shared: std::sync::Weak<Shared>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // What the running configuration was read from: a change made since its read, even
    // between the read and this line, is a change.
    let mut loaded = match shared.upgrade() {
        Some(s) => s.watched.lock().fingerprint,
        None => return,
    };
    let mut seen = loaded;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let sources = shared.watched.lock().clone();
        let now = tokio::task::spawn_blocking(move || sources.fingerprint_now())
            .await
            .unwrap_or(seen);
        let settled = now == seen;
        seen = now;
        if now == loaded || !settled {
            continue;
        }
        tracing::info!("configuration file changed; reloading");
        loaded = match reload(&shared) {
            // What this reload read, which may already be newer than `now`.
            Ok(_) => shared.watched.lock().fingerprint,
            // Tried once: the files are not read again until they change again.
            Err(_) => now,
        };
    }
}
