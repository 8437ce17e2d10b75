//! Configuration of an [`EventSource`](crate::EventSource).

use crate::error::Error;
use crate::event_source::EventSource;
use herald_sse::Limits;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use std::time::Duration;

/// Builds an [`EventSource`]. Errors in what was given are reported by [`Builder::build`].
#[derive(Debug)]
pub struct Builder {
    url: String,
    headers: Vec<(String, String)>,
    pub(crate) last_event_id: String,
    pub(crate) retry: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) jitter: f64,
    pub(crate) limits: Limits,
}

/// Validated configuration, owned by the event source.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub uri: Uri,
    pub headers: HeaderMap,
    pub max_backoff: Duration,
    pub jitter: f64,
}

impl Builder {
    pub(crate) fn new(url: &str) -> Self {
        Builder {
            url: url.to_owned(),
            headers: Vec::new(),
            last_event_id: String::new(),
            retry: Duration::from_secs(3),
            max_backoff: Duration::from_secs(60),
            jitter: 0.5,
            limits: Limits::default(),
        }
    }

    /// Adds a header to every request (e.g. `Authorization`). Repeatable.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The last event id to send on the first request (to resume where another session ended).
    pub fn last_event_id(mut self, id: &str) -> Self {
        self.last_event_id = id.to_owned();
        self
    }

    /// The reconnection time until the server sets one with `retry:` (default 3 s).
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// The longest delay that repeated failures can grow the reconnection time to (default 60 s).
    /// A server's `retry:` above it is still honoured.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// The fraction (0 to 1, default 0.5) by which a delay is randomly shortened.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Bounds on line and event size (default 8 MiB each).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Checks the configuration and makes the event source. It connects on first poll.
    pub fn build(self) -> Result<EventSource, Error> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| Error::InvalidUrl {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(Error::UnsupportedScheme(other.to_owned())),
            None => {
                return Err(Error::InvalidUrl {
                    url: self.url.clone(),
                    reason: "not an absolute URL (http://host/path)".into(),
                });
            }
        }
        if uri.host().is_none() {
            return Err(Error::InvalidUrl {
                url: self.url.clone(),
                reason: "no host".into(),
            });
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let invalid = |reason: String| Error::InvalidHeader {
                name: name.clone(),
                reason,
            };
            let name = HeaderName::try_from(name.as_str()).map_err(|e| invalid(e.to_string()))?;
            let value =
                HeaderValue::try_from(value.as_str()).map_err(|e| invalid(e.to_string()))?;
            headers.append(name, value);
        }
        let config = Config {
            uri,
            headers,
            max_backoff: self.max_backoff,
            jitter: self.jitter,
        };
        Ok(EventSource::from_parts(config, &self))
    }
}
