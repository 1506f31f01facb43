//! The app on a socket: HTTP/1.1 with a deadline for every request head, a cap on open
//! connections, and a shutdown that drains open requests within a deadline and then drops
//! whatever is left, so a client can neither hold the process up nor use up its file
//! descriptors.
//!
//! Why not `axum::serve`: it sets no timer, so hyper enforces no header-read timeout; it
//! accepts without limit; and its graceful shutdown waits for every connection, including
//! one that sent half a request head and then nothing (hyper closes only idle ones).
//!
//! Why HTTP/1.1 only: hyper's header-read timeout exists only for HTTP/1, and detecting
//! HTTP/2 first waits for the preface without any limit. Browsers, Cloud Run's front end
//! and the gateway all talk HTTP/1.1 to the app.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// How long clients may take, and how many may be connected at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// To send a whole request head, counted from the connection's start or the end of
    /// its previous answer (so it also closes idle keep-alive connections). A request body
    /// may pause for as long between chunks.
    pub header_read_timeout: Duration,
    /// Open connections; more wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
    /// After the stop signal, how long open requests have to finish before their
    /// connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(30),
            // Under the common 1024 open-files limit, with room for the database pool,
            // the listener and the logs.
            max_connections: 512,
            // Cloud Run sends SIGKILL 10 s after SIGTERM; this leaves time to close the
            // database pool before that.
            shutdown_grace: Duration::from_secs(8),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting (the
/// listener closes, so new connections are refused), lets open requests finish for up
/// to [`ServerLimits::shutdown_grace`], and drops every connection still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let app = tower::ServiceBuilder::new()
        .layer(RequestBodyTimeoutLayer::new(limits.header_read_timeout))
        .service(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection's task: aborted, and its connection closed, when this set drops.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (slot, accepted) = tokio::select! {
            () = &mut shutdown => break,
            accepted = async {
                // At the cap, stop accepting: new connections wait in the kernel's backlog.
                let slot = slots.clone().acquire_owned().await;
                (slot, listener.accept().await)
            } => accepted,
        };
        // The semaphore is never closed, so there is always a slot here.
        let Ok(slot) = slot else { continue };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(severity = "WARNING", %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (http, app, mut stop) = (http.clone(), app.clone(), stop_rx.clone());
        connections.spawn(async move {
            // Held for the connection's life: its place under the cap is freed on close.
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let connection =
                http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            tokio::pin!(connection);
            let mut draining = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                        return;
                    }
                    // Finish the request in flight, if any, then close; a half-sent head
                    // is left to the header timeout or the shutdown deadline.
                    _ = stop.wait_for(|stopping| *stopping), if !draining => {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(
        severity = "INFO",
        open = connections.len(),
        grace_seconds = limits.shutdown_grace.as_secs_f64(),
        "stopped accepting; draining open requests"
    );
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::info!(severity = "INFO", "all connections drained"),
        Err(_) => {
            tracing::warn!(
                severity = "WARNING",
                open = connections.len(),
                "drain deadline passed; closing the remaining connections"
            );
            connections.shutdown().await;
        }
    }
}
