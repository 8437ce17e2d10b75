#![deny(missing_docs, unreachable_pub, missing_debug_implementations)]
#![forbid(unsafe_code)]
//! The Server-Sent Events wire format, and nothing else: no I/O, no async runtime.
//!
//! # Layout
//! - [`Event`] — one event a server wants to send (id, type, data, retry, comment), and
//!   [`Event::encode`] which turns it into the bytes of a `text/event-stream`. Values that could
//!   end an event early (CR/LF in `id` or `event`, NUL in `id`) are refused with an
//!   [`EncodeError`]; multi-line data and comments are split into one field line per line.
//! - [`Decoder`] — an incremental parser: feed it chunks of any size, take [`MessageEvent`]s out.
//!   It follows the WHATWG HTML "event stream interpretation" rules to the letter, and bounds the
//!   memory a hostile stream can make it hold ([`Limits`], [`DecodeError`]). Its line
//!   splitting ([`Lines`]) and field syntax ([`field`]) serve other readers of the format too.
//!
//! ```
//! use herald_sse::{Decoder, Event};
//!
//! let bytes = Event::new("line one\nline two").id("42").event("greeting").encode().unwrap();
//! let mut decoder = Decoder::new();
//! decoder.feed(&bytes).unwrap();
//! let msg = decoder.next_event().unwrap();
//! assert_eq!(msg.event_type, "greeting");
//! assert_eq!(msg.data, "line one\nline two");
//! assert_eq!(msg.last_event_id, "42");
//! ```

mod decode;
mod encode;

pub use decode::{DecodeError, Decoder, Limits, Lines, MessageEvent, field};
pub use encode::{EncodeError, Event, comment};
