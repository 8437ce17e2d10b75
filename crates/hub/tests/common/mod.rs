//! A hub started in-process on a free loopback port, and small HTTP helpers to talk to it over
//! real sockets.
#![allow(dead_code)] // each test file uses a different part

use bytes::Bytes;
use herald_hub::auth::{Claims, KeySource, MercureClaim, Verifier, sign_hmac};
use herald_hub::history::{History, MemoryHistory};
use herald_hub::{Hub, Settings};
use herald_sse::{Decoder, MessageEvent};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

pub const PUB_KEY: &[u8] = b"publisher-secret";
pub const SUB_KEY: &[u8] = b"subscriber-secret";
/// Every wait in the tests is bounded by this, so a bug fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestHub {
    pub addr: SocketAddr,
    pub hub: Hub,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    pub served: tokio::task::JoinHandle<()>,
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
        TestHub::start_serving(history, settings, Vec::new()).await
    }

    /// A hub on the given history backend, serving `extra` listeners besides its plaintext
    /// one (`addr`).
    pub async fn start_serving(
        history: Arc<dyn History>,
        settings: Settings,
        extra: Vec<herald_hub::server::Listener>,
    ) -> TestHub {
        let verifier = Verifier::new(
            Algorithm::HS256,
            &KeySource::Secret(PUB_KEY.to_vec()),
            &KeySource::Secret(SUB_KEY.to_vec()),
        )
        .unwrap();
        let hub = Hub::start(history, verifier, settings);
        let listener = herald_hub::server::bind(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server_hub = hub.clone();
        let served = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            let mut listeners = vec![herald_hub::server::Listener::plain(listener)];
            listeners.extend(extra);
            herald_hub::server::serve_all(server_hub, listeners, stopped)
                .await
                .expect("server runs");
        });
        TestHub {
            addr,
            hub,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stop: Some(stop),
            served,
        }
    }

    /// Starts the graceful shutdown.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub async fn request(&self, request: Request<Full<Bytes>>) -> hyper::Response<Incoming> {
        tokio::time::timeout(WAIT, self.client.request(request))
            .await
            .expect("hub answers in time")
            .expect("request succeeds")
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
