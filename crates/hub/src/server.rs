//! Accepting connections: binds, serves HTTP/1.1 on each accepted socket, and shuts down
//! gracefully (stop accepting, end the SSE streams cleanly, let responses finish).

use crate::hub::Hub;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long in-flight responses get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `hub` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    hub: Hub,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(crate::http::router(hub.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: keep serving the connections we have.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn.into_owned());
        let metrics_hub = hub.clone();
        tokio::spawn(async move {
            metrics_hub.metrics().connections.inc();
            tracing::debug!(%peer, "connection open");
            if let Err(err) = conn.await {
                tracing::debug!(%peer, %err, "connection error");
            }
            tracing::debug!(%peer, "connection closed");
            metrics_hub.metrics().connections.dec();
        });
    }
    tracing::info!("shutting down: closing streams");
    hub.shutdown();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    Ok(())
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
