#![deny(missing_docs, unreachable_pub, missing_debug_implementations)]
#![forbid(unsafe_code)]
//! An async `EventSource` for Rust: the Server-Sent Events client a browser has, for tokio.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use herald_client::{EventSource, Item};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), herald_client::Error> {
//! let mut source = EventSource::builder("http://127.0.0.1:8080/.well-known/mercure?topic=*")
//!     .header("authorization", "Bearer <jwt>")
//!     .last_event_id("urn:uuid:1234") // optional: resume after a known event
//!     .retry(Duration::from_secs(3))   // until the server says otherwise with `retry:`
//!     .build()?;
//! while let Some(item) = source.next().await {
//!     match item {
//!         Ok(Item::Open) => println!("connected"),
//!         Ok(Item::Message(m)) => println!("{} {}: {}", m.last_event_id, m.event_type, m.data),
//!         Err(e) if e.is_fatal() => return Err(e),
//!         Err(e) => eprintln!("{e}; reconnecting"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Behaviour
//! It does what the WHATWG `EventSource` does, and yields every state change so that the caller
//! can log or stop:
//! - Every request is a `GET` with `Accept: text/event-stream`, `Cache-Control: no-store`, the
//!   configured headers, and `Last-Event-ID` whenever an id is known: the initial one from
//!   [`Builder::last_event_id`] on the first request, then the last `id:` the stream set.
//! - A response with status 200 and content type `text/event-stream` (parameters such as
//!   `charset` ignored, case-insensitive) yields [`Item::Open`], then one [`Item::Message`] per
//!   event. Framing does not matter: chunked, `Content-Length` or read-until-close.
//! - Transient trouble — connection refused or reset, the server ending the response, a stream
//!   over the size [`Limits`] — yields an `Err` whose [`Error::is_fatal`] is false, then the
//!   source reconnects on the following polls. Events completed before a drop are yielded
//!   before the error; an unfinished one is dropped.
//! - HTTP 204 ends the stream (`None`) without an error: the server's way of saying "stop".
//! - Any other status, or a 200 with another content type, yields a fatal error and the stream
//!   ends: retrying a 404 or a login page forever helps nobody. A status error carries the start
//!   of the body, which is usually the server's explanation.
//!
//! # Reconnection delay
//! The base is the reconnection time: the server's latest `retry:` or [`Builder::retry`]
//! (default 3 s, like browsers). Each consecutive failure doubles it, up to
//! [`Builder::max_backoff`] (default 60 s; a server's `retry:` above the cap is still honoured).
//! Jitter ([`Builder::jitter`], default 0.5) then cuts a random part off: the delay is uniform
//! in `[d * (1 - jitter), d]`, so that clients dropped together by a hub restart do not return
//! together. A connection that opens (200, `text/event-stream`) resets the count, so after a
//! working stream drops the first reconnection waits about the base time. The first connection
//! does not wait.
//!
//! # Limits and choices
//! - `http://` and `https://` (rustls; HTTP/2 when the server's ALPN offers it, else
//!   HTTP/1.1). The system's roots are trusted; [`Builder::tls`] with a [`TlsOptions`] adds a
//!   certificate to trust (a development hub's self-signed one) or turns checking off.
//! - Redirects are not followed: a 3xx with a `Location` is a fatal [`Error::Redirect`] naming
//!   the target, so that the URL can be fixed.
//! - No read timeout: like browsers, a connection that goes silent without closing is trusted.
//!   Hubs that send heartbeat comments keep it alive; detecting a dead peer is left to TCP.
//! - [`Item::Open`] does not carry the response headers: nothing needs them yet.
//! - Connections are not pooled: each (re)connection opens a fresh one.
//!
//! # Layout
//! - `event_source` — [`EventSource`], the connection state machine, a `Stream` of [`Item`]s.
//! - `builder` — configuration ([`Builder`]), validated once by [`Builder::build`].
//! - `backoff` — reconnection delays (doubling, cap, jitter).
//! - `error` — [`Error`], and which failures are final.
//! - `tls` — [`TlsOptions`]: which servers an `https://` URL may reach.
//!
//! [`EventSource`] is `Send` and a `FusedStream`; it can be built anywhere but must be polled
//! inside a tokio runtime. Reconnection decisions are logged with `tracing` at debug level.

mod backoff;
mod builder;
mod error;
mod event_source;
mod tls;

pub use builder::Builder;
pub use error::{Cause, Error};
pub use event_source::{EventSource, Item, ReadyState};
pub use herald_sse::{DecodeError, Limits, MessageEvent};
pub use tls::TlsOptions;
