//! The Herald hub as a library: a Mercure-compatible Server-Sent Events hub that can run alone
//! (`herald serve`) or be embedded in another tokio program.
//!
//! # Layout
//! - [`topic`] — topic selectors (exact, URI template, `*`) and their matching.
//! - [`auth`] — JWTs with the `mercure` claim: where they are found, what they grant.
//! - [`update`] — an update and its once-encoded SSE bytes.
//! - [`history`] — the history trait (positions, replay, the feed to the dispatcher) and its
//!   backends.
//! - [`dispatch`] — which subscribers receive an update; bounded queues, lag signalling.
//! - [`subscriber`] — one SSE connection: replay, hand-over to live, catch-up, heartbeats.
//! - [`http`] — routes, Mercure request parsing, headers, CORS, errors.
//! - [`subscriptions`] — subscription events and the subscriptions API.
//! - [`server`] — accepting connections, graceful shutdown.
//! - [`hub`] — the running hub and its settings; [`metrics`] — Prometheus metrics.

pub mod auth;
pub mod console;
pub mod dispatch;
pub mod history;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod server;
mod signals;
mod stream;
pub mod subscriber;
pub mod subscriptions;
pub mod topic;
pub mod update;

pub use hub::{Hub, Settings};

/// Entry points for the fuzz targets (`fuzz/`) into parsers that are otherwise private.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::stream::fuzz_head as head;
}

/// Locks a mutex, also after a panic elsewhere poisoned it: every structure the hub guards
/// stays consistent between statements, so serving on beats stopping the hub. Public for the
/// history backends of other crates.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
