//! ai-stream: a fake language model streams its answers into Herald token by token, with one
//! streaming publish per answer (`Content-Type: text/event-stream`, an update per token), and
//! a page renders each answer as it grows with the browser's own `EventSource`. If the
//! connection drops mid-answer, the `EventSource` reconnects by itself with `Last-Event-ID`
//! and the hub replays exactly the tokens it missed: none missing, none repeated.
//!
//! ```sh
//! cargo run -p herald-hub --example ai-stream            # then open the printed address
//! cargo run -p herald-hub --example ai-stream -- 127.0.0.1:0   # on a free port
//! ```
//!
//! One process: the hub (embedded, as in `crates/hub/examples/embed.rs`), the page at `/ai/`,
//! `POST /ai/ask` which starts an answer and says its topic, and the model, which publishes to
//! the hub over HTTP like any other service would.

use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use bytes::Bytes;
use herald_hub::auth::{Claims, KeySource, MercureClaim, Verifier, sign_hmac};
use herald_hub::history::MemoryHistory;
use herald_hub::{Hub, Settings};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use jsonwebtoken::Algorithm;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const KEY: &[u8] = b"ai-stream example key";
const PAGE: &str = include_str!("index.html");
/// Time between two tokens of the fake model.
const TOKEN_EVERY: Duration = Duration::from_millis(60);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args().nth(1).unwrap_or("127.0.0.1:3000".into());
    let key = KeySource::Secret(KEY.to_vec());
    let verifier = Verifier::new(Algorithm::HS256, &key, &key)?;
    // Subscribers are anonymous: an answer's topic is a secret of the page that asked.
    let settings = Settings {
        anonymous: true,
        ..Settings::default()
    };
    let hub = Hub::start(Arc::new(MemoryHistory::new(10_000)), verifier, settings);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/ai/", get(|| async { Html(PAGE) }))
        .route("/ai/ask", post(ask))
        .with_state(addr)
        .merge(herald_hub::router(hub));
    println!("ai-stream listening on http://{addr}/ai/");
    axum::serve(listener, app).await?;
    Ok(())
}

/// Starts the model on an answer to the form's `q`; answers the answer's topic at once.
async fn ask(State(hub): State<SocketAddr>, form: Bytes) -> impl IntoResponse {
    let question = form_urlencoded::parse(&form)
        .find(|(name, _)| name == "q")
        .map(|(_, q)| q.into_owned())
        .unwrap_or_default();
    let topic = format!("https://example.com/answers/{}", uuid::Uuid::new_v4());
    tokio::spawn(model(hub, topic.clone(), question));
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "topic": topic }).to_string(),
    )
}

/// The fake model: an answer, a word at a time, each word an event of one streaming publish.
async fn model(hub: SocketAddr, topic: String, question: String) {
    let answer = format!(
        "You asked: \"{}\". Server-Sent Events carry text from a server to a browser over one \
         long HTTP response; the browser's EventSource reconnects by itself and says the last \
         event it saw, so the hub can send exactly what it missed. That is why this answer \
         survives a dropped connection without a missing or a repeated word.",
        question.trim()
    );
    let words: Vec<String> = answer.split_inclusive(' ').map(str::to_owned).collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let bytes = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let body = StreamBody::new(Box::pin(frames));
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("topic", &topic)
        .finish();
    let request = http::Request::post(format!("http://{hub}/.well-known/mercure?{query}"))
        .header("content-type", "text/event-stream")
        .header("authorization", format!("Bearer {}", publisher_token()))
        .body(body)
        .expect("a valid request");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let publishing = tokio::spawn(async move {
        match client.request(request).await {
            Ok(response) => {
                // The hub's answer: an `accepted` event per token, then `done` (or `refused`).
                let answer = response.into_body().collect().await.map(|b| b.to_bytes());
                if let Ok(answer) = answer
                    && !answer.ends_with(b"\n\n")
                {
                    eprintln!("the hub cut the answer short");
                }
            }
            Err(err) => eprintln!("cannot publish the answer: {err}"),
        }
    });
    let id = topic.rsplit('/').next().unwrap_or("answer").to_owned();
    for (n, word) in words.iter().enumerate() {
        let data = serde_json::json!({ "n": n, "text": word });
        // The first token sets the reconnection delay: resume fast after a drop.
        let retry = if n == 0 { "retry: 250\n" } else { "" };
        let event = format!("{retry}id: {id}-{n}\nevent: token\ndata: {data}\n\n");
        if tx.send(Bytes::from(event)).await.is_err() {
            return;
        }
        tokio::time::sleep(TOKEN_EVERY).await;
    }
    let done = serde_json::json!({ "tokens": words.len() });
    let _ = tx
        .send(Bytes::from(format!(
            "id: {id}-done\nevent: done\ndata: {done}\n\n"
        )))
        .await;
    drop(tx); // the end of the body: the hub answers `done`
    let _ = publishing.await;
}

/// A publisher token for every topic, signed with the hub's key.
fn publisher_token() -> String {
    let claims = Claims {
        mercure: Some(MercureClaim {
            publish: Some(vec!["*".into()]),
            subscribe: None,
            payload: None,
        }),
        exp: None,
    };
    sign_hmac(Algorithm::HS256, KEY, &claims).expect("HS256 signing")
}
