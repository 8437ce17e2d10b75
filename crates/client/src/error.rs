//! Errors of an [`EventSource`](crate::EventSource), and which of them end it for good.
//!
//! The split follows the browser's `EventSource`: trouble with the network or the stream is
//! transient (the `error` event fires, then the browser reconnects), while an answer that says
//! "this is not an event stream" is final (the browser fails the connection and never retries),
//! because retrying a 404 or an HTML login page forever helps nobody.

use http::StatusCode;

/// What went wrong. After a transient error the stream reconnects on the next polls; after a
/// fatal one ([`Error::is_fatal`]) it ends (`None`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not a valid absolute URL (from [`Builder::build`](crate::Builder::build)).
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Only `http://` and `https://` are supported (from
    /// [`Builder::build`](crate::Builder::build)).
    #[error("unsupported URL scheme {0:?}: use http:// or https://")]
    UnsupportedScheme(String),
    /// A certificate given to trust cannot be used (from
    /// [`Builder::build`](crate::Builder::build)).
    #[error("cannot use the certificate to trust: {0}")]
    Certificate(String),
    /// A header given to the builder is not a valid HTTP header (from
    /// [`Builder::build`](crate::Builder::build)).
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header's name as given.
        name: String,
        /// What is wrong with the name or the value.
        reason: String,
    },
    /// The server answered a status other than 200 or 204 (fatal, as in browsers). `body` holds
    /// the start of the response body (up to 512 bytes, lossily decoded), which is usually the
    /// server's explanation.
    #[error("server answered HTTP {status}{}", body_hint(.body))]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of the body, the server's explanation.
        body: String,
    },
    /// The server answered with a redirect (fatal: redirects are not followed).
    #[error("server redirected ({status}) to {location:?}; redirects are not followed")]
    Redirect {
        /// The redirect's status (301, 302, 307, 308...).
        status: StatusCode,
        /// Its `Location` header.
        location: String,
    },
    /// The server answered 200 with a content type other than `text/event-stream` (fatal).
    /// Empty if the response had no `Content-Type`.
    #[error("server answered content type {0:?}, not text/event-stream")]
    ContentType(String),
    /// No response arrived: the connection could not be made, or it closed before the response
    /// head (transient).
    #[error("cannot connect: {}", chain(.0.as_ref()))]
    Connect(#[source] Cause),
    /// The connection broke while the event stream was flowing (transient).
    #[error("connection failed while streaming: {}", chain(.0.as_ref()))]
    Body(#[source] Cause),
    /// The server ended the response (transient: the client reconnects, as browsers do).
    #[error("the server closed the stream")]
    Disconnected,
    /// The stream broke the decoder's size [`Limits`](crate::Limits) (transient: the client
    /// drops the connection and reconnects).
    #[error("invalid event stream: {0}")]
    Decode(#[from] herald_sse::DecodeError),
}

/// The error a transient failure came from (hyper's, with its own causes), kept for
/// [`std::error::Error::source`].
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and its causes, `: `-separated: hyper's own message ("client error (Connect)")
/// says little without them, so the message shows them all, as it always has.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    /// True if the [`EventSource`](crate::EventSource) will not reconnect after this error (the
    /// stream ends after yielding it). Configuration errors are fatal too.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::Connect(_) | Error::Body(_) | Error::Disconnected | Error::Decode(_)
        )
    }
}
