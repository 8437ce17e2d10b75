//! Errors of an [`EventSource`](crate::EventSource), and which of them end it for good.

use http::StatusCode;

/// What went wrong. Transient errors are followed by a reconnection; fatal ones end the stream.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not a valid absolute URL.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Only `http://` is supported.
    #[error("unsupported URL scheme {0:?}: only http:// is supported (TLS is not built yet)")]
    UnsupportedScheme(String),
    /// A header given to the builder is not a valid HTTP header.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: String },
    /// The server answered another status than 200 or 204 (fatal, as in browsers).
    #[error("server answered HTTP {status}{}", body_hint(.body))]
    Status { status: StatusCode, body: String },
    /// The server answered 200 with another content type than `text/event-stream` (fatal).
    #[error("server answered content type {0:?}, not text/event-stream")]
    ContentType(String),
    /// The connection could not be made (transient).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The response body failed while streaming (transient).
    #[error("connection failed while streaming: {0}")]
    Body(String),
    /// The server ended the response (transient: the client reconnects).
    #[error("the server closed the stream")]
    Disconnected,
    /// The stream broke the decoder's size limits (transient: the client reconnects).
    #[error("invalid event stream: {0}")]
    Decode(#[from] herald_sse::DecodeError),
}

fn body_hint(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl Error {
    /// True if the [`EventSource`](crate::EventSource) will not reconnect after this error.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::Connect(_) | Error::Body(_) | Error::Disconnected | Error::Decode(_)
        )
    }
}
