//! An async `EventSource` for Rust: the Server-Sent Events client a browser has, for tokio.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use herald_client::{EventSource, Item};
//!
//! # async fn run() -> Result<(), herald_client::Error> {
//! let mut source = EventSource::builder("http://127.0.0.1:8080/.well-known/mercure?topic=*")
//!     .header("authorization", "Bearer <jwt>")
//!     .build()?;
//! while let Some(item) = source.next().await {
//!     match item {
//!         Ok(Item::Open) => println!("connected"),
//!         Ok(Item::Message(m)) => println!("{}: {}", m.last_event_id, m.data),
//!         Err(e) if e.is_fatal() => return Err(e),
//!         Err(e) => eprintln!("{e}; reconnecting"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! It behaves as the WHATWG `EventSource` does:
//! - every request sends `Accept: text/event-stream`, and `Last-Event-ID` once an id is known;
//! - when the connection drops or cannot be made, it reports the error and reconnects after the
//!   reconnection time (the server's `retry:`, default 3 s), doubled after each further failure
//!   up to a cap, with jitter so that many clients do not return in lockstep;
//! - HTTP 204 ends the stream for good; another status than 200, or a content type other than
//!   `text/event-stream`, fails for good (no reconnect loop).
//!
//! # Layout
//! - [`event_source`] — the connection state machine, a `Stream` of [`Item`]s.
//! - [`builder`] — configuration ([`Builder`]).
//! - [`backoff`] — reconnection delays.
//! - [`error`] — what can go wrong, and which failures are final.
//!
//! Plain `http://` only for now: TLS (`https://`) is refused with [`Error::UnsupportedScheme`].
//! Redirects are not followed (a 3xx is a fatal [`Error::Status`]).

pub mod backoff;
pub mod builder;
pub mod error;
pub mod event_source;

pub use builder::Builder;
pub use error::Error;
pub use event_source::{EventSource, Item, ReadyState};
pub use herald_sse::{Limits, MessageEvent};
