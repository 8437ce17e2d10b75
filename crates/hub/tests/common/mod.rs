//! A hub started in-process on free loopback ports (one plaintext, one TLS), small HTTP
//! helpers to talk to it over real sockets, and the transports a test can run over: a test
//! written once against `TestHub` runs once per transport with `per_transport!`, in the way
//! ripgrep's `rgtest!` runs each test per regex engine.
#![allow(dead_code)] // each test file uses a different part

use bytes::Bytes;
use herald_hub::auth::{Claims, KeySource, MercureClaim, Verifier, sign_hmac};
use herald_hub::history::{History, MemoryHistory};
use herald_hub::server::Listener;
use herald_hub::tls::Tls;
use herald_hub::{Hub, Settings};
use herald_sse::{Decoder, MessageEvent};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const PUB_KEY: &[u8] = b"publisher-secret";
pub const SUB_KEY: &[u8] = b"subscriber-secret";
/// Every wait in the tests is bounded by this, so a bug fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

/// How a test client reaches the hub.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transport {
    /// Plaintext HTTP/1.1: the direct path (a pooling client, as browsers and `fetch` are).
    Http11,
    /// Plaintext HTTP/1.0 (nginx's default upstream protocol): the direct path, until close.
    Http10,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`): the direct path over TLS.
    TlsHttp11,
    /// HTTP/2 over TLS (ALPN `h2`): hyper, every request a stream of one shared connection.
    TlsHttp2,
    /// HTTP/2 in plaintext with prior knowledge: hyper.
    H2c,
}

impl Transport {
    pub fn version(self) -> http::Version {
        match self {
            Transport::Http10 => http::Version::HTTP_10,
            Transport::Http11 | Transport::TlsHttp11 => http::Version::HTTP_11,
            Transport::TlsHttp2 | Transport::H2c => http::Version::HTTP_2,
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Transport::TlsHttp11 | Transport::TlsHttp2)
    }
}

/// Runs each scenario (an `async fn(Transport)`) once per transport, as a module of five
/// tests named after it. On two worker threads: the hub's tasks and the test's run side by
/// side, as in production.
#[allow(unused_macros)] // not every test file runs per transport
macro_rules! per_transport {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                use crate::common::Transport;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn http_1_1() {
                    super::$scenario(Transport::Http11).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn http_1_0() {
                    super::$scenario(Transport::Http10).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls_http_1_1() {
                    super::$scenario(Transport::TlsHttp11).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls_http_2() {
                    super::$scenario(Transport::TlsHttp2).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn h2c() {
                    super::$scenario(Transport::H2c).await
                }
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use per_transport;

type AnyClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct TestHub {
    /// The plaintext listener (HTTP/1 and h2c).
    pub addr: SocketAddr,
    /// The TLS listener, with a self-signed certificate for `localhost`.
    pub tls_addr: SocketAddr,
    pub tls: Tls,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub hub: Hub,
    /// What `request`, `subscribe`, `publish` and `get` go over.
    pub transport: Transport,
    client: AnyClient,
    stop: Option<oneshot::Sender<()>>,
    pub served: tokio::task::JoinHandle<()>,
    _tls_dir: tempfile::TempDir,
}

/// A self-signed certificate for localhost, as PEM files `name.crt` and `name.key` in `dir`.
pub fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

impl TestHub {
    pub async fn start(settings: Settings) -> TestHub {
        TestHub::start_with(settings, 10_000).await
    }

    pub async fn start_with(settings: Settings, history_size: usize) -> TestHub {
        TestHub::start_on(Arc::new(MemoryHistory::new(history_size)), settings).await
    }

    /// A hub on the given history backend.
    pub async fn start_on(history: Arc<dyn History>, settings: Settings) -> TestHub {
        let verifier = Verifier::new(
            Algorithm::HS256,
            &KeySource::Secret(PUB_KEY.to_vec()),
            &KeySource::Secret(SUB_KEY.to_vec()),
        )
        .unwrap();
        let hub = Hub::start(history, verifier, settings);
        let tls_dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = write_pair(tls_dir.path(), "hub");
        let tls = Tls::from_pem_files(&cert_path, &key_path).unwrap();
        let bind = || herald_hub::server::bind(([127, 0, 0, 1], 0).into());
        let (plain, secure) = (bind().await.unwrap(), bind().await.unwrap());
        let (addr, tls_addr) = (plain.local_addr().unwrap(), secure.local_addr().unwrap());
        let listeners = vec![Listener::plain(plain), Listener::tls(secure, tls.clone())];
        let (stop, stopped) = oneshot::channel::<()>();
        let server_hub = hub.clone();
        let served = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            herald_hub::server::serve_all(server_hub, listeners, stopped)
                .await
                .expect("server runs");
        });
        TestHub {
            addr,
            tls_addr,
            client: client_over(&tls, Transport::Http11),
            tls,
            cert_path,
            key_path,
            hub,
            transport: Transport::Http11,
            stop: Some(stop),
            served,
            _tls_dir: tls_dir,
        }
    }

    /// The same hub, talked to over `transport` from now on.
    pub fn over(mut self, transport: Transport) -> TestHub {
        self.client = client_over(&self.tls, transport);
        self.transport = transport;
        self
    }

    /// A TLS connector that trusts the certificate the hub presents now, offering `alpn`.
    pub fn tls_connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        TlsConnector::from(Arc::new(client_config(&self.tls, alpn)))
    }

    /// A TLS connection to the hub, offering `alpn`.
    pub async fn tls_connect(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.tls_addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(WAIT, self.tls_connector(alpn).connect(name, tcp))
            .await
            .expect("handshake in time")
            .expect("handshake succeeds")
    }

    /// A subscription on a connection of its own over the current transport, whose socket
    /// has a receive buffer of only 4 KiB: not reading it soon blocks the hub's writes (in
    /// HTTP/2, once the stream's window is used up too).
    pub async fn subscribe_on_a_small_buffer(&self, query: &str) -> hyper::Response<Incoming> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let target = if self.transport.is_tls() {
            self.tls_addr
        } else {
            self.addr
        };
        let tcp = socket.connect(target).await.unwrap();
        let io: Box<dyn Io> = if self.transport.is_tls() {
            let alpn: &[u8] = match self.transport {
                Transport::TlsHttp2 => b"h2",
                _ => b"http/1.1",
            };
            let name = ServerName::try_from("localhost").unwrap();
            Box::new(
                self.tls_connector(&[alpn])
                    .connect(name, tcp)
                    .await
                    .expect("handshake"),
            )
        } else {
            Box::new(tcp)
        };
        let io = hyper_util::rt::TokioIo::new(io);
        let url = self.url(&format!("/.well-known/mercure?{query}"));
        let request = Request::get(url.as_str()).version(self.transport.version());
        let response = if self.transport.version() == http::Version::HTTP_2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let request = request.body(http_body_util::Empty::<Bytes>::new()).unwrap();
            tokio::time::timeout(WAIT, sender.send_request(request)).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            // HTTP/1 sends the path, with the authority in `Host`.
            let uri: http::Uri = url.parse().unwrap();
            let request = Request::get(uri.path_and_query().unwrap().as_str())
                .version(self.transport.version())
                .header("host", uri.authority().unwrap().as_str());
            let request = request.body(http_body_util::Empty::<Bytes>::new()).unwrap();
            tokio::time::timeout(WAIT, sender.send_request(request)).await
        };
        response.expect("an answer in time").unwrap()
    }

    /// Starts the graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// The URL of `path_and_query` on the listener of the current transport.
    pub fn url(&self, path_and_query: &str) -> String {
        if self.transport.is_tls() {
            format!(
                "https://localhost:{}{}",
                self.tls_addr.port(),
                path_and_query
            )
        } else {
            format!("http://{}{}", self.addr, path_and_query)
        }
    }

    /// Sends `request` over the current transport (in its HTTP version).
    pub async fn request(&self, mut request: Request<Full<Bytes>>) -> hyper::Response<Incoming> {
        *request.version_mut() = self.transport.version();
        let response = tokio::time::timeout(WAIT, self.client.request(request))
            .await
            .expect("hub answers in time")
            .unwrap_or_else(|err| panic!("{:?}: {err:?}", self.transport));
        if self.transport != Transport::Http10 {
            assert_eq!(
                response.version(),
                self.transport.version(),
                "{:?}",
                self.transport
            );
        }
        response
    }

    /// POSTs a publish form; returns the status and body text.
    pub async fn publish_with(
        &self,
        token: Option<&str>,
        form: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = Request::post(self.url("/.well-known/mercure"))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let response = self
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await;
        let status = response.status();
        (status, body_text(response).await)
    }

    /// Publishes with a token allowed to publish anywhere; panics unless `200`. Returns the id.
    pub async fn publish(&self, form: &[(&str, &str)]) -> String {
        let (status, body) = self
            .publish_with(Some(&publisher_token(&["*"])), form)
            .await;
        assert_eq!(status, StatusCode::OK, "publish failed: {body}");
        body
    }

    /// Opens a subscription (GET with `query` and extra headers).
    pub async fn subscribe(&self, query: &str, headers: &[(&str, &str)]) -> Sse {
        let mut req = Request::get(self.url(&format!("/.well-known/mercure?{query}")));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let response = self.request(req.body(Full::default()).unwrap()).await;
        Sse::new(response)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, HeaderMap, String) {
        let response = self
            .request(Request::get(self.url(path)).body(Full::default()).unwrap())
            .await;
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, body_text(response).await)
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a client connection runs on: a TLS stream or a plain one.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A client of a hub presenting `tls`'s certificate, over `transport`.
fn client_over(tls: &Tls, transport: Transport) -> AnyClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(tls, &[]))
        .https_or_http();
    let connector = match transport {
        Transport::TlsHttp2 => builder.enable_http2().wrap_connector(http),
        _ => builder.enable_http1().wrap_connector(http),
    };
    let mut client = Client::builder(TokioExecutor::new());
    match transport {
        Transport::TlsHttp2 | Transport::H2c => {
            client.http2_only(true);
        }
        // HTTP/1.0 connections are never reused.
        Transport::Http10 => {
            client.pool_max_idle_per_host(0);
        }
        _ => {}
    }
    client.build(connector)
}

/// A client configuration that trusts `tls`'s certificate, offering `alpn`.
fn client_config(tls: &Tls, alpn: &[&[u8]]) -> ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(tls.certificates()[0].clone()).unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// `s` percent-encoded for a query string.
pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub async fn body_text(response: hyper::Response<Incoming>) -> String {
    let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn token(
    key: &[u8],
    publish: Option<&[&str]>,
    subscribe: Option<&[&str]>,
    payload: Option<serde_json::Value>,
) -> String {
    let list = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
    sign_hmac(
        Algorithm::HS256,
        key,
        &Claims {
            mercure: Some(MercureClaim {
                publish: publish.map(list),
                subscribe: subscribe.map(list),
                payload,
            }),
            exp: None,
        },
    )
    .unwrap()
}

pub fn publisher_token(publish: &[&str]) -> String {
    token(PUB_KEY, Some(publish), None, None)
}

pub fn subscriber_token(subscribe: &[&str]) -> String {
    token(SUB_KEY, None, Some(subscribe), None)
}

pub fn subscriber_token_with_payload(subscribe: &[&str], payload: serde_json::Value) -> String {
    token(SUB_KEY, None, Some(subscribe), Some(payload))
}

/// An open SSE response, read with the project's own decoder.
pub struct Sse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    decoder: Decoder,
    /// Every byte received so far (to look at comments, which the decoder skips).
    pub raw: Vec<u8>,
    pub ended: bool,
}

impl Sse {
    pub fn new(response: hyper::Response<Incoming>) -> Sse {
        let (parts, body) = response.into_parts();
        Sse {
            status: parts.status,
            headers: parts.headers,
            body,
            decoder: Decoder::new(),
            raw: Vec::new(),
            ended: false,
        }
    }

    /// The whole body as text, for a response that ends (a refusal).
    pub async fn text(&mut self) -> String {
        while self.read_chunk(WAIT).await == Some(true) {}
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// Reads one more chunk; false at the end of the stream.
    pub async fn read_chunk(&mut self, wait: Duration) -> Option<bool> {
        match tokio::time::timeout(wait, self.body.frame()).await {
            Err(_) => None,
            Ok(None) | Ok(Some(Err(_))) => {
                self.ended = true;
                Some(false)
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    self.raw.extend_from_slice(&data);
                    self.decoder.feed(&data).expect("valid stream");
                }
                Some(true)
            }
        }
    }

    /// The next event, or `None` if none arrives within `wait` (or the stream ends).
    pub async fn next_within(&mut self, wait: Duration) -> Option<MessageEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.decoder.next_event() {
                return Some(event);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_chunk(left).await {
                Some(true) => continue,
                _ => return None,
            }
        }
    }

    /// The next event; panics if none arrives in time.
    pub async fn next(&mut self) -> MessageEvent {
        self.next_within(WAIT)
            .await
            .expect("an event arrives in time")
    }

    /// Collects `n` events.
    pub async fn take(&mut self, n: usize) -> Vec<MessageEvent> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next().await);
        }
        events
    }

    /// True if no event arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        self.next_within(wait).await.is_none()
    }
}

/// A subscriber token granting `subscribe` that expires at `exp` (seconds since the epoch).
/// Seconds since the epoch, for `exp` and `nbf` claims.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token_expiring(key: &[u8], subscribe: &[&str], exp: u64) -> String {
    sign_hmac(
        Algorithm::HS256,
        key,
        &Claims {
            mercure: Some(MercureClaim {
                publish: None,
                subscribe: Some(subscribe.iter().map(|s| s.to_string()).collect()),
                payload: None,
            }),
            exp: Some(exp),
        },
    )
    .unwrap()
}

/// Default settings with anonymous subscribers allowed.
pub fn anonymous() -> Settings {
    Settings {
        anonymous: true,
        ..Settings::default()
    }
}

/// Opens a file store again once the previous hub's store threads have let go of it (they
/// notice a moment after the hub stops); panics after [`WAIT`].
pub async fn reopen<T, E: std::fmt::Display>(open: impl Fn() -> Result<T, E>) -> T {
    let started = std::time::Instant::now();
    loop {
        match open() {
            Ok(opened) => return opened,
            Err(err) if started.elapsed() > WAIT => panic!("{err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
