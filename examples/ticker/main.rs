//! ticker: a price feed on latest-value topics. A fake exchange publishes the price of 20
//! symbols, 10 times a second each, as retained updates on conflated topics; the page shows
//! every current price at once (it subscribes with `retained=1`) and keeps up live. A page
//! that falls behind, or comes back after losing its connection, gets the newest price of each
//! symbol rather than every tick it missed (`--conflate`).
//!
//! ```sh
//! cargo run -p herald-hub --example ticker            # then open the printed address
//! cargo run -p herald-hub --example ticker -- 127.0.0.1:0   # on a free port
//! ```

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use herald_hub::auth::{KeySource, Verifier};
use herald_hub::history::{History, MemoryHistory};
use herald_hub::update::NewUpdate;
use herald_hub::{Hub, Settings};
use jsonwebtoken::Algorithm;
use std::sync::Arc;
use std::time::Duration;

const PAGE: &str = include_str!("index.html");
const SYMBOLS: [&str; 20] = [
    "AAPL", "AMZN", "ASML", "BABA", "BRK", "COST", "CRM", "GOOG", "IBM", "INTC", "JPM", "KO", "MA",
    "META", "MSFT", "NFLX", "NVDA", "ORCL", "TSLA", "V",
];
/// Ticks per second, per symbol.
const RATE: u64 = 10;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args().nth(1).unwrap_or("127.0.0.1:3002".into());
    let key = KeySource::Secret(b"ticker example key".to_vec());
    let verifier = Verifier::new(Algorithm::HS256, &key, &key)?;
    let settings = Settings {
        anonymous: true,
        conflate: vec!["https://example.com/prices/{symbol}".into()],
        ..Settings::default()
    };
    let history: Arc<dyn History> = Arc::new(MemoryHistory::new(100_000));
    let hub = Hub::start(history.clone(), verifier, settings);
    tokio::spawn(exchange(history));
    let app = Router::new()
        .route("/ticker/", get(|| async { Html(PAGE) }))
        .merge(herald_hub::router(hub));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "ticker listening on http://{}/ticker/",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// The fake exchange: every symbol's price takes a small random step at each tick.
async fn exchange(history: Arc<dyn History>) {
    let mut prices: Vec<f64> = (0..SYMBOLS.len())
        .map(|i| 100.0 + 10.0 * i as f64)
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let mut seq: u64 = 0;
    loop {
        tick.tick().await;
        for (symbol, price) in SYMBOLS.iter().zip(prices.iter_mut()) {
            seq += 1;
            *price = (*price * (1.0 + (rand_step(seq) - 0.5) / 100.0)).max(1.0);
            let data =
                serde_json::json!({ "symbol": symbol, "price": format!("{price:.2}"), "seq": seq });
            let mut update = NewUpdate::new(
                vec![format!("https://example.com/prices/{symbol}")],
                data.to_string(),
            );
            update.retain = true; // the current price, for pages that open later
            if let Err(err) = history.append(update).await {
                eprintln!("cannot publish a price: {err}");
            }
        }
    }
}

/// A pseudo-random number in [0, 1) from `n` (no dependency needed for a demo).
fn rand_step(n: u64) -> f64 {
    let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ 0xD1B5_4A32_D192_ED03;
    (x >> 11) as f64 / (1u64 << 53) as f64
}
