//! Accepting connections: binds, serves HTTP/1.1 and HTTP/2 on each accepted socket, in
//! plaintext or over TLS, and shuts down gracefully (stop accepting, end the SSE streams
//! cleanly, let responses finish).
//!
//! A plaintext connection's first request head is read by `stream.rs`: subscriptions are
//! streamed there directly, everything else (h2c included) is served by hyper with the axum
//! router. A TLS connection is served by hyper after the handshake, HTTP/2 or HTTP/1.1 as ALPN
//! chose.

use crate::hub::Hub;
use crate::stream::{self, Outcome, Prefixed};
use crate::tls::Tls;
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long in-flight responses get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listener and how its connections speak.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    tls: Option<Tls>,
}

impl Listener {
    /// Plaintext HTTP/1.1 (and h2c).
    pub fn plain(listener: TcpListener) -> Listener {
        Listener {
            listener,
            tls: None,
        }
    }

    /// HTTPS: HTTP/2 or HTTP/1.1 over TLS, as ALPN chooses.
    pub fn tls(listener: TcpListener, tls: Tls) -> Listener {
        Listener {
            listener,
            tls: Some(tls),
        }
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Serves `hub` on `listener` (plaintext) until `shutdown` completes, then drains.
pub async fn serve(
    hub: Hub,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_all(hub, vec![Listener::plain(listener)], shutdown).await
}

/// Serves `hub` on every listener until `shutdown` completes, then drains. The limits on
/// connections count them all together.
pub async fn serve_all(
    hub: Hub,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Shared, so that a connection task holds one pointer to them, not copies.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Every request head has a deadline, not only the first (which `stream.rs` reads), and
    // since hyper starts it when it waits for the next request, idle keep-alive connections
    // end too. Without a timer hyper applies no timeout at all.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(hub.inner.settings.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(hub.inner.settings.http2_max_streams)
        // A peer that stops answering pings is gone: its streams end.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let http: Http = Arc::new((builder, crate::http::router(hub.clone())));
    // One stream of every listener's connections, each tagged with its TLS acceptor.
    let mut incoming = futures_util::stream::select_all(listeners.into_iter().map(|l| {
        let acceptor = l.tls.as_ref().map(Tls::acceptor);
        futures_util::stream::unfold(l.listener, move |listener| {
            let acceptor = acceptor.clone();
            async move {
                let accepted = listener.accept().await;
                Some(((accepted, acceptor), listener))
            }
        })
        .boxed()
    }));
    let graceful = GracefulShutdown::new();
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(1);
    let per_ip = Arc::new(PerIp::default());
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, acceptor) = tokio::select! {
            accepted = incoming.next() => match accepted {
                None => break,
                Some((Ok((stream, peer)), acceptor)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    (stream, peer, acceptor)
                }
                Some((Err(err), _)) => {
                    // Out of file descriptors and the like: keep serving the connections we
                    // have, and retry later rather than spin on a failing accept.
                    tracing::warn!(%err, retry_in = ?backoff, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let settings = &hub.inner.settings;
        let open = usize::try_from(hub.metrics().connections.get()).unwrap_or(0);
        if open >= settings.max_connections {
            hub.metrics().refused_connections.inc();
            tokio::spawn(refuse(stream, REFUSED_FULL));
            continue;
        }
        let Some(slot) = per_ip.take(peer.ip(), settings.max_connections_per_ip) else {
            hub.metrics().refused_connections.inc();
            tokio::spawn(refuse(stream, REFUSED_PER_IP));
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Some(idle) = hub.inner.settings.tcp_keepalive {
            // A peer that vanished (no FIN, no RST) is found by keepalive probes, so its
            // connection and whatever it holds go away.
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(Duration::from_secs(10))
                .with_retries(6);
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(lowat) = hub.inner.settings.tcp_notsent_lowat {
            let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(lowat);
        }
        tokio::spawn(connection(
            stream,
            peer,
            acceptor,
            hub.clone(),
            http.clone(),
            graceful.watcher(),
            // Counted here, not in the task, so that a burst of accepts sees every one.
            (
                open_tx.clone(),
                Counted::new(hub.metrics().connections.clone()),
                slot,
            ),
        ));
    }
    tracing::info!("shutting down: closing streams");
    hub.shutdown();
    drop(open_tx);
    let drained = async {
        graceful.shutdown().await;
        // Every connection task holds a sender; all are dropped once the last one ends.
        while open_rx.recv().await.is_some() {}
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    // The ends of the subscriptions just closed, or the other nodes of a cluster would list
    // them forever.
    if let Some(subscriptions) = &hub.inner.subscriptions {
        subscriptions.settle(DRAIN_TIMEOUT).await;
    }
    Ok(())
}

/// The router and hyper's connection builder, shared by every connection task.
type Http = Arc<(auto::Builder<TokioExecutor>, axum::Router)>;

/// The router for one connection: it gives each request the peer's address, as axum's
/// `ConnectInfo` (the console mints tokens for loopback peers only).
#[derive(Clone)]
struct WithPeer {
    router: axum::Router,
    peer: SocketAddr,
    /// `http` or `https`: an HTTP/1 request's path is made absolute with it
    /// (`http::absolute`), so that the hub knows the URL it was sent to.
    scheme: &'static str,
}

impl<B> tower::Service<http::Request<B>> for WithPeer
where
    axum::Router: tower::Service<http::Request<B>>,
{
    type Response = <axum::Router as tower::Service<http::Request<B>>>::Response;
    type Error = <axum::Router as tower::Service<http::Request<B>>>::Error;
    type Future = <axum::Router as tower::Service<http::Request<B>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        *request.uri_mut() = crate::http::absolute(request.uri(), request.headers(), self.scheme);
        self.router.call(request)
    }
}

/// One connection, from its first request head to its end. What an idle subscriber's task
/// holds is this future, so it is kept small: the request checking runs boxed and is freed
/// before streaming starts (`-Zprint-type-sizes`: the task cell is 512 bytes; awaiting the
/// checking inline made it 640; an `async fn` copies its arguments into the future twice).
#[allow(clippy::manual_async_fn)]
fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hub: Hub,
    http: Http,
    watcher: Watcher,
    open: (tokio::sync::mpsc::Sender<()>, Counted, Option<Box<IpSlot>>),
) -> impl Future<Output = ()> {
    async move {
        tracing::debug!(%peer, "connection open");
        if let Some(acceptor) = tls {
            // Boxed: the handshake and a hyper connection are large.
            Box::pin(tls_connection(stream, peer, acceptor, &hub, &http, watcher)).await;
        } else {
            let mut outcome = Box::pin(stream::serve(&hub, stream)).await;
            match &mut outcome {
                // Awaited in place: the task holds the small streaming state and nothing else.
                Outcome::Stream(streaming) => streaming.await,
                Outcome::Hyper(_) => {
                    let Outcome::Hyper(io) = outcome else {
                        unreachable!()
                    };
                    // Boxed: a hyper connection is large and most connections never need one.
                    Box::pin(serve_hyper(io, peer, "http", &http, watcher)).await;
                }
                Outcome::Gone => {}
            }
        }
        tracing::debug!(%peer, "connection closed");
        drop(open);
    }
}

/// Serves one connection with hyper, HTTP/1.1 or HTTP/2 (by ALPN, or h2c's preface).
async fn serve_hyper<IO>(
    io: IO,
    peer: SocketAddr,
    scheme: &'static str,
    http: &Http,
    watcher: Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (builder, router) = &**http;
    let service = TowerToHyperService::new(WithPeer {
        router: router.clone(),
        peer,
        scheme,
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(err) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, %err, "connection error");
    }
}

/// A TLS connection: the handshake (within the header timeout, as a first request head),
/// then HTTP/2 with hyper, or HTTP/1.1 as a plaintext connection is served (a subscription
/// streamed directly, the rest by hyper), with the write timeout on every write.
async fn tls_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    hub: &Hub,
    http: &Http,
    watcher: Watcher,
) {
    let settings = &hub.inner.settings;
    let mut shutdown = hub.shutdown_signal();
    let tls = tokio::select! {
        handshake = tokio::time::timeout(settings.header_timeout, acceptor.accept(stream)) => {
            match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        },
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let io = Prefixed::new(bytes::Bytes::new(), tls, settings.write_timeout);
        serve_hyper(io, peer, "https", http, watcher).await;
        return;
    }
    // HTTP/1.1 over TLS: a subscription takes the direct path, as in plaintext. What rustls
    // may hold encrypted for a client that stopped reading is bounded, beside the owed bytes.
    let mut tls = Box::new(tls);
    tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    match stream::serve(hub, tls).await {
        Outcome::Stream(streaming) => streaming.await,
        Outcome::Hyper(io) => serve_hyper(io, peer, "https", http, watcher).await,
        Outcome::Gone => {}
    }
}

/// Bytes a TLS session of the direct path may hold encrypted and unsent (rustls's default is
/// 64 KiB): what a blocked subscriber holds beyond the owed-bytes budget.
const TLS_BUFFER_LIMIT: usize = 16 * 1024;

/// The accept loop's pause after a failed accept (out of descriptors), doubled each time.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

const REFUSED_FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 50\r\n\r\n\
this hub is at its connection limit; retry later\r\n";
const REFUSED_PER_IP: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 53\r\n\r\n\
too many connections from this address; retry later\r\n";

/// Answers a connection that may not be served, without reading its request, and closes it.
async fn refuse(stream: tokio::net::TcpStream, answer: &'static [u8]) {
    // Bounded: a client that does not read its refusal does not hold the descriptor.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.writable().await?;
        stream.try_write(answer)
    })
    .await;
}

/// Open connections per client address.
#[derive(Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl PerIp {
    /// Counts a connection from `ip` unless it has `limit` already; `Some(None)` when there is
    /// no limit (nothing is counted).
    fn take(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        limit: Option<usize>,
    ) -> Option<Option<Box<IpSlot>>> {
        let Some(limit) = limit else {
            return Some(None);
        };
        let mut counts = crate::lock(&self.0);
        let count = counts.entry(ip).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Some(Box::new(IpSlot {
            ip,
            counts: self.clone(),
        })))
    }
}

/// One connection counted for its address until dropped.
struct IpSlot {
    ip: std::net::IpAddr,
    counts: Arc<PerIp>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = crate::lock(&self.counts.0);
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Counts one in a gauge for as long as it lives (uncounted by its drop, also if the task
/// holding it unwinds).
struct Counted(prometheus_client::metrics::gauge::Gauge);

impl Counted {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
