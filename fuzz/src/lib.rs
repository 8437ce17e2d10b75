//! Shared pieces of the fuzz targets: the keys and tokens, a hand-made HS256 signer (so claims
//! the hub's own types could never serialize still carry a valid signature), and one in-process
//! hub on one current-thread tokio runtime, reused by every execution.

pub mod bounds;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_hub::auth::{Claims, KeySource, MercureClaim, Verifier, sign_hmac};
use herald_hub::history::MemoryHistory;
use herald_hub::{Hub, Settings};
use hmac::{Hmac, Mac};
use jsonwebtoken::Algorithm;
use sha2::Sha256;
use std::sync::{Arc, OnceLock};
use tokio::runtime::Runtime;

pub const PUBLISHER_SECRET: &[u8] = b"herald-fuzz-publisher-secret";
pub const SUBSCRIBER_SECRET: &[u8] = b"herald-fuzz-subscriber-secret";
/// The JOSE header of every token signed here, unless a target fuzzes the header too.
pub const HS256_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// The audience a Mercure 1.0 access token must name (`--jwt-audience`): the in-process hub's
/// URL, as the targets' requests name it (`Host: hub.example`).
pub const AUDIENCE: &str = "https://hub.example/.well-known/mercure";

/// HS256 verifier with distinct publisher and subscriber secrets, as `herald serve` builds it,
/// with [`AUDIENCE`] pinned so that 1.0 access tokens verify without a request too.
pub fn verifier() -> Verifier {
    Verifier::new(
        Algorithm::HS256,
        &KeySource::Secret(PUBLISHER_SECRET.to_vec()),
        &KeySource::Secret(SUBSCRIBER_SECRET.to_vec()),
    )
    .expect("HS256 with secrets is a valid configuration")
    .with_audience(Some(AUDIENCE.into()))
}

/// A compact JWS: base64url(header) . base64url(payload) . base64url(HMAC-SHA256), over any
/// bytes, JSON or not.
pub fn sign_raw(secret: &[u8], header: &[u8], payload: &[u8]) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(token.as_bytes());
    let signature = mac.finalize().into_bytes();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

/// A token signed by the hub's own `sign_hmac`, granting `publish` and `subscribe`.
pub fn token(secret: &[u8], publish: &[&str], subscribe: &[&str], exp: Option<u64>) -> String {
    let claims = Claims {
        mercure: Some(MercureClaim {
            publish: Some(publish.iter().map(|s| s.to_string()).collect()),
            subscribe: Some(subscribe.iter().map(|s| s.to_string()).collect()),
            payload: Some(serde_json::json!({"user": "fuzz"})),
        }),
        exp,
    };
    sign_hmac(Algorithm::HS256, secret, &claims).expect("HS256 signing cannot fail")
}

/// The runtime every execution of a target runs on: created once, current-thread (libFuzzer
/// runs the target on one thread; the hub's tasks run whenever a request is driven).
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

/// The hub's router, over one hub (memory history of 1000 updates, default settings) started
/// once on [`runtime`]. Clone it for each request.
pub fn router() -> &'static axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let _guard = runtime().enter();
        let hub = Hub::start(
            Arc::new(MemoryHistory::new(1000)),
            verifier(),
            Settings::default(),
        );
        herald_hub::router(hub)
    })
}

/// Sends `request` to the hub and returns the response status; the body (a live SSE stream
/// for an accepted subscription) is dropped unread, which ends the subscription.
pub fn send(request: http::Request<axum::body::Body>) -> http::StatusCode {
    use tower::ServiceExt as _;
    runtime().block_on(async {
        let response = router()
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        drop(response);
        let_the_hub_run().await;
        status
    })
}

/// Lets the hub's own tasks (the dispatcher) run. On this current-thread runtime they run only
/// while `block_on` waits, and a request the router answers without waiting (a publish to the
/// memory store) never does: the dispatcher's feed of updates would then grow with every
/// execution (about 1.6 KB a publish; the publish_form target reached 900 MB at 6.5 million),
/// which a hub on a multi-thread runtime never sees.
pub async fn let_the_hub_run() {
    tokio::task::yield_now().await;
}

/// The answers a subscribe request may get, whatever it carries: never a 5xx.
pub fn assert_subscribe_answer(status: http::StatusCode, what: &str) {
    use http::StatusCode;
    assert!(
        matches!(
            status,
            StatusCode::OK
                | StatusCode::BAD_REQUEST
                | StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
        ),
        "{what} answered {status}"
    );
}
