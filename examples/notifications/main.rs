//! notifications: per-user private notifications. The app logs a user in and sets the
//! `mercureAuthorization` cookie to a subscriber token for that user's topic only; the page
//! subscribes with the browser's own `EventSource`. Notifications are published private, so
//! the hub sends each only to subscribers whose token grants its topic: a user never sees
//! another's, even subscribed to every user's topic.
//!
//! ```sh
//! cargo run -p herald-hub --example notifications            # then open the printed address
//! cargo run -p herald-hub --example notifications -- 127.0.0.1:0   # on a free port
//! ```
//!
//! One process: the hub (embedded), the page at `/app/`, `POST /app/login` (form `user`),
//! `GET /app/me`, and `POST /app/notify` (form `to`, `text`), which stands for whatever in an
//! application makes a notification.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use herald_hub::auth::{Claims, KeySource, MercureClaim, Verifier, sign_hmac};
use herald_hub::history::{History, MemoryHistory};
use herald_hub::update::NewUpdate;
use herald_hub::{Hub, Settings};
use jsonwebtoken::Algorithm;
use std::sync::Arc;

const KEY: &[u8] = b"notifications example key";
const PAGE: &str = include_str!("index.html");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args().nth(1).unwrap_or("127.0.0.1:3001".into());
    let key = KeySource::Secret(KEY.to_vec());
    let verifier = Verifier::new(Algorithm::HS256, &key, &key)?;
    // Subscribers need a token: the app gives one per user, in the cookie.
    let history: Arc<dyn History> = Arc::new(MemoryHistory::new(10_000));
    let hub = Hub::start(history.clone(), verifier, Settings::default());
    let app = Router::new()
        .route("/app/", get(|| async { Html(PAGE) }))
        .route("/app/login", post(login))
        .route("/app/me", get(me))
        .route("/app/notify", post(notify))
        .with_state(history)
        .merge(herald_hub::router(hub));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "notifications listening on http://{}/app/",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// The topic of `user`'s notifications.
fn topic_of(user: &str) -> String {
    format!("https://example.com/users/{user}/notifications")
}

fn field(form: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(form)
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// A user name the example accepts: letters and digits (it goes into a topic and a cookie).
fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= 32 && user.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Logs `user` in (no password: this is about the hub, not about logins) and gives the
/// browser a subscriber token for that user's topic only, in the cookie the hub reads.
async fn login(form: Bytes) -> Response {
    let Some(user) = field(&form, "user").filter(|u| valid_user(u)) else {
        return (StatusCode::BAD_REQUEST, "user: letters and digits\n").into_response();
    };
    let claims = Claims {
        mercure: Some(MercureClaim {
            publish: None,
            subscribe: Some(vec![topic_of(&user)]),
            payload: Some(serde_json::json!({ "user": user })),
        }),
        exp: None,
    };
    let token = sign_hmac(Algorithm::HS256, KEY, &claims).expect("HS256 signing");
    let mut response = Redirect::to("/app/").into_response();
    let headers = response.headers_mut();
    for cookie in [
        // Sent only to the hub's path; scripts cannot read it.
        format!(
            "mercureAuthorization={token}; Path=/.well-known/mercure; HttpOnly; SameSite=Strict"
        ),
        format!("user={user}; Path=/app; SameSite=Strict"),
    ] {
        headers.append(header::SET_COOKIE, cookie.parse().expect("a valid cookie"));
    }
    response
}

/// Who is logged in, from the app's own cookie.
async fn me(headers: HeaderMap) -> Response {
    let user = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("user="))
        .find(|user| valid_user(user));
    match user {
        Some(user) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "user": user, "topic": topic_of(user) }).to_string(),
        )
            .into_response(),
        None => (StatusCode::UNAUTHORIZED, "not logged in\n").into_response(),
    }
}

/// Sends `text` to user `to`: a private update on that user's topic.
async fn notify(State(history): State<Arc<dyn History>>, form: Bytes) -> Response {
    let (Some(to), Some(text)) = (
        field(&form, "to").filter(|u| valid_user(u)),
        field(&form, "text"),
    ) else {
        return (StatusCode::BAD_REQUEST, "to (a user) and text\n").into_response();
    };
    let mut update = NewUpdate::new(vec![topic_of(&to)], text);
    update.private = true;
    match history.append(update).await {
        Ok(update) => format!("{}\n", update.id()).into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response(),
    }
}
