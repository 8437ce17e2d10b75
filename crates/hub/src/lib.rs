#![deny(missing_docs, unreachable_pub, missing_debug_implementations)]
#![forbid(unsafe_code)]
//! The Herald hub as a library: a Mercure-compatible Server-Sent Events hub that can run alone
//! (`herald serve`) or be embedded in another tokio program.
//!
//! # What an embedder uses
//! - [`Hub`] and its [`Settings`]: start one on a [`history`] backend and a [`auth::Verifier`];
//!   serve it with [`server::serve`] on a listener from [`server::bind`], or mount [`router`]
//!   in an axum app (`examples/embed.rs`).
//! - [`history`]: the [`history::History`] trait (positions, replay, the feed to the
//!   dispatcher) and its backends; [`update`]: an update and its once-encoded SSE bytes.
//! - [`auth`]: JWTs with the `mercure` claim: where they are found, what they grant; [`topic`]:
//!   topic selectors (exact, URI template, `*`) and their matching.
//! - [`console`]: the web console's settings; [`Metrics`]: the hub's Prometheus metrics.
//! - [`tls`]: HTTPS (rustls), with a certificate that can be replaced while the hub runs;
//!   [`server::Listener`] serves a listener in plaintext or over TLS.
//!
//! # Inside (private)
//! `dispatch` (which subscribers receive an update, in two stages), `signals` (what the
//! dispatcher and a subscriber share), `subscriber` (one SSE subscription: replay, hand-over to
//! live, catch-up, heartbeats), `stream` (the direct HTTP/1.1 subscription path), `http`
//! (routes, Mercure request parsing, headers, CORS, errors), `subscriptions` (subscription
//! events and the subscriptions API), `hub` and `metrics`.

pub mod auth;
pub mod conflate;
pub mod console;
mod dispatch;
pub mod history;
mod http;
mod hub;
mod metrics;
pub mod server;
mod signals;
mod stream;
mod subscriber;
mod subscriptions;
pub mod tls;
mod tls_record;
pub mod topic;
pub mod update;

pub use http::router;
pub use hub::{Hub, Protocol, Settings};
pub use metrics::Metrics;

/// Entry points for the fuzz targets (`fuzz/`) into parsers that are otherwise private.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::stream::fuzz_head as head;
}

/// Locks a mutex, also after a panic elsewhere poisoned it: every structure the hub guards
/// stays consistent between statements, so serving on beats stopping the hub.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
