//! Embedding the hub in an axum application: the app's own routes and the hub's (`/`,
//! `/.well-known/mercure`, `/healthz`, `/metrics`...) on one listener.
//!
//! ```sh
//! cargo run -p herald-hub --example embed
//! curl -N 'http://127.0.0.1:3000/.well-known/mercure?topic=greetings'   # any client
//! curl http://127.0.0.1:3000/hello                                       # publishes one
//! ```
//!
//! Subscribers are anonymous here (`Settings::anonymous`); publishing goes through the app,
//! which signs its own publisher token with the hub's key.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use herald_hub::auth::{Claims, KeySource, MercureClaim, Verifier, sign_hmac};
use herald_hub::history::{History, MemoryHistory};
use herald_hub::update::NewUpdate;
use herald_hub::{Hub, Settings};
use jsonwebtoken::Algorithm;
use std::sync::Arc;

const KEY: &[u8] = b"change me";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let history: Arc<dyn History> = Arc::new(MemoryHistory::new(1000));
    let key = KeySource::Secret(KEY.to_vec());
    let verifier = Verifier::new(Algorithm::HS256, &key, &key)?;
    let settings = Settings {
        anonymous: true,
        ..Settings::default()
    };
    let hub = Hub::start(history.clone(), verifier, settings);

    // The app's own route publishes straight into the hub's history; the hub's router serves
    // everything else. (A publisher elsewhere would POST to /.well-known/mercure with a token:
    // `publisher_token()` below makes one.)
    let app = Router::new()
        .route("/hello", get(hello))
        .with_state(history)
        .merge(herald_hub::router(hub));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "listening on http://{}; publisher token: {}",
        listener.local_addr()?,
        publisher_token()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

async fn hello(State(history): State<Arc<dyn History>>) -> String {
    let update = NewUpdate::new(vec!["greetings".into()], "hello from the app");
    match history.append(update).await {
        Ok(update) => format!("published {}\n", update.id()),
        Err(err) => format!("not published: {err}\n"),
    }
}

/// A token that may publish to any topic, for publishers outside the app.
fn publisher_token() -> Result<String, jsonwebtoken::errors::Error> {
    let claims = Claims {
        mercure: Some(MercureClaim {
            publish: Some(vec!["*".into()]),
            subscribe: None,
            payload: None,
        }),
        exp: None,
    };
    sign_hmac(Algorithm::HS256, KEY, &claims)
}
