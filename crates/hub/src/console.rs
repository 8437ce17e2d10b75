//! The web console the hub serves at `/`: one self-contained page (`console.html`, no build
//! step, no request to anything but the hub), and the two endpoints only it needs:
//!
//! - `GET /console/stats`: the hub's counters as JSON (the page polls it once a second and
//!   charts the differences), so that the browser never parses Prometheus text;
//! - `POST /console/token`: in development, when the hub made its own key
//!   ([`Settings::mint_key`](crate::Settings::mint_key)), a token for the console's user.
//!   Whoever may mint may publish anything, so minting is refused unless the request comes from
//!   this machine in every way a browser can show it: a loopback peer, a loopback `Host` (a DNS
//!   rebinding page has its own name there) and, when the browser sends one, an `Origin` equal
//!   to the hub's own (another site's page cannot mint through the user's browser).

use crate::auth::{Claims, Role, sign_hmac};
use crate::http::HttpError;
use crate::hub::Hub;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use jsonwebtoken::Algorithm;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a minted token is valid.
const MINTED_FOR: Duration = Duration::from_secs(24 * 3600);
/// Largest mint request body: a role and a few selectors.
const MAX_MINT_BODY: usize = 16 << 10;

/// The HMAC key the console may mint tokens with (the hub's own, when it made it). Its `Debug`
/// does not show the key.
#[derive(Clone)]
pub struct MintKey {
    /// The hub's HMAC algorithm.
    pub alg: Algorithm,
    /// The hub's HMAC secret.
    pub secret: Arc<[u8]>,
}

impl std::fmt::Debug for MintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

pub(crate) fn routes() -> Router<Hub> {
    Router::new()
        .route("/", get(page))
        .route("/console/stats", get(stats))
        .route("/console/token", post(mint))
}

async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            // Everything the page needs is in it, and it talks to this hub only.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                     form-action 'none'; frame-ancestors 'none'",
                ),
            ),
        ],
        include_str!("console.html"),
    )
        .into_response()
}

/// What the console shows, read from the metrics and the history.
#[derive(serde::Serialize)]
struct Stats {
    version: &'static str,
    connections: i64,
    subscribers: i64,
    published: u64,
    delivered: u64,
    sent_bytes: u64,
    lagged: u64,
    closed_slow: u64,
    closed_stalled: u64,
    closed_budget: u64,
    refused_connections: u64,
    store_errors: u64,
    owed_bytes: i64,
    history: HistoryStats,
    anonymous: bool,
    subscriptions: bool,
    /// Whether this client may mint tokens (`POST /console/token`).
    mint: bool,
}

#[derive(serde::Serialize)]
struct HistoryStats {
    ready: bool,
    /// Updates held, and the positions they span; absent where the backend cannot tell.
    updates: Option<u64>,
    oldest: Option<u64>,
    newest: Option<u64>,
}

async fn stats(State(hub): State<Hub>, request: Request) -> Response {
    let inner = &hub.inner;
    let m = &inner.metrics;
    let span = inner.history.span();
    let stats = Stats {
        version: env!("CARGO_PKG_VERSION"),
        connections: m.connections.get(),
        subscribers: m.subscribers.get(),
        published: m.published.get(),
        delivered: m.delivered.get(),
        sent_bytes: m.bytes_sent.get(),
        lagged: m.lagged.get(),
        closed_slow: m.closed_slow.get(),
        closed_stalled: m.closed_stalled.get(),
        closed_budget: m.closed_budget.get(),
        refused_connections: m.refused_connections.get(),
        store_errors: m.store_errors.get(),
        owed_bytes: m.owed_bytes.get(),
        history: HistoryStats {
            ready: inner.history.is_ready(),
            updates: span.map(|s| s.len()),
            oldest: span.and_then(|s| s.oldest),
            newest: span.map(|s| s.newest),
        },
        anonymous: inner.settings.anonymous,
        subscriptions: inner.settings.subscriptions,
        mint: may_mint(&hub, &request).is_ok(),
    };
    // axum's `Json` needs its `json` feature; this is the one JSON response.
    let body = serde_json::to_vec(&stats).unwrap_or_default();
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// Why this request may not mint, if it may not.
fn may_mint(hub: &Hub, request: &Request) -> Result<MintKey, HttpError> {
    let Some(key) = hub.inner.settings.mint_key.clone() else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "this hub mints no tokens: it has a configured key, so tokens come from whoever \
             holds it (`herald token`)",
        ));
    };
    let forbidden = |why: &str| {
        HttpError::new(
            StatusCode::FORBIDDEN,
            format!("the console mints tokens only for this machine: {why}"),
        )
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    if !peer.is_some_and(|peer| peer.ip().is_loopback()) {
        return Err(forbidden("the request did not come over loopback"));
    }
    let host = loopback_host(request.headers()).ok_or_else(|| {
        forbidden("open the console as http://127.0.0.1:PORT/ or http://localhost:PORT/")
    })?;
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && origin.as_bytes() != format!("http://{host}").as_bytes()
    {
        return Err(forbidden("the request came from another site's page"));
    }
    Ok(key)
}

/// The request's `Host` if it names this machine (`localhost`, `127.0.0.1`, `[::1]`, with a
/// port or not).
fn loopback_host(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next()?, // [::1]:8080
        None => host.split(':').next()?,
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback.then_some(host)
}

/// `POST /console/token` with `role=publisher|subscriber` and `topic=SELECTOR` (repeatable;
/// `*` when none): a token of that role for those selectors, valid 24 h.
async fn mint(State(hub): State<Hub>, request: Request) -> Result<Response, HttpError> {
    let key = may_mint(&hub, &request)?;
    let body = http_body_util::Limited::new(request.into_body(), MAX_MINT_BODY)
        .collect()
        .await
        .map_err(|_| {
            HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a mint request is at most {MAX_MINT_BODY} bytes"),
            )
        })?
        .to_bytes();
    let mut role = None;
    let mut topics = Vec::new();
    for pair in crate::http::form_pairs(&body, "form field") {
        let (name, value) = pair?;
        match name.as_str() {
            "role" => role = Some(value),
            "topic" => topics.push(value),
            _ => {}
        }
    }
    if topics.is_empty() {
        topics.push("*".to_owned());
    }
    crate::topic::SelectorSet::parse(&topics)
        .map_err(|err| HttpError::new(StatusCode::BAD_REQUEST, err.to_string()))?;
    let role = match role.as_deref() {
        Some("publisher") => Role::Publisher,
        Some("subscriber") => Role::Subscriber,
        _ => {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "role must be `publisher` or `subscriber`",
            ));
        }
    };
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(MINTED_FOR)
        .as_secs();
    let claims = Claims::for_role(role, topics, Some(exp));
    let token = sign_hmac(key.alg, &key.secret, &claims)
        .map_err(|err| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        token,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_only() {
        let host = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(value).unwrap());
            loopback_host(&headers).map(str::to_owned)
        };
        for good in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1:8080",
            "127.0.0.2",
            "[::1]:8080",
            "[::1]",
        ] {
            assert_eq!(host(good).as_deref(), Some(good), "{good}");
        }
        for bad in [
            "example.com",
            "example.com:8080",
            "localhost.example.com:8080",
            "10.0.0.1:8080",
            "[::2]:80",
            "127.0.0.1.nip.io:8080",
        ] {
            assert_eq!(host(bad), None, "{bad}");
        }
    }
}
