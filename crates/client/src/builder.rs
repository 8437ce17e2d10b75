//! Configuration of an [`EventSource`](crate::EventSource): collected freely by [`Builder`],
//! checked once by [`Builder::build`], so that the event source itself never meets an invalid
//! URL or header while (re)connecting.

use crate::backoff;
use crate::error::Error;
use crate::event_source::EventSource;
use crate::tls::TlsOptions;
use herald_sse::Limits;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use std::time::Duration;

/// Builds an [`EventSource`]. Mistakes in what was given are reported by [`Builder::build`],
/// not by the setters, so that a chain of calls needs one `?`.
#[derive(Debug, Clone)]
pub struct Builder {
    url: String,
    headers: Vec<(String, String)>,
    last_event_id: String,
    retry: Duration,
    max_backoff: Duration,
    jitter: f64,
    limits: Limits,
    tls: TlsOptions,
}

/// Validated configuration, owned by the event source.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub uri: Uri,
    pub headers: HeaderMap,
    pub last_event_id: String,
    pub retry: Duration,
    pub max_backoff: Duration,
    pub jitter: f64,
    pub limits: Limits,
    /// For `https://` URLs.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Builder {
    pub(crate) fn new(url: &str) -> Self {
        Builder {
            url: url.to_owned(),
            headers: Vec::new(),
            last_event_id: String::new(),
            // Browsers start from a few seconds too (the standard leaves it to them).
            retry: Duration::from_secs(3),
            max_backoff: Duration::from_secs(60),
            jitter: 0.5,
            limits: Limits::default(),
            tls: TlsOptions::default(),
        }
    }

    /// Adds a header to every request, e.g. `Authorization`. Repeatable; the same name given
    /// twice sends both values. `Accept`, `Cache-Control` and `Last-Event-ID` are set by the
    /// client itself and replace any given here (use [`Builder::last_event_id`] to resume).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The last event id to send as `Last-Event-ID` on the first request, to resume where an
    /// earlier session stopped. Later requests send the last id the stream itself set.
    pub fn last_event_id(mut self, id: &str) -> Self {
        self.last_event_id = id.to_owned();
        self
    }

    /// The reconnection time until the server sets one with `retry:` (default 3 s).
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// The longest delay that consecutive failures can grow the reconnection time to (default
    /// 60 s). A server's `retry:` above it is still honoured.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// The fraction (0 to 1, default 0.5) of each delay that may randomly be cut off: the delay
    /// is drawn uniformly from `[d * (1 - jitter), d]`. Out-of-range values are clamped; 0 makes
    /// delays exact.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = backoff::unit(jitter);
        self
    }

    /// Bounds on line and event size (default 8 MiB each). A stream that breaks them gets
    /// [`Error::Decode`] and a reconnection.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Which servers an `https://` URL may reach (default: those the system's roots vouch
    /// for).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Checks the configuration and makes the event source. Nothing happens on the network
    /// (and no runtime is needed) until the source is first polled.
    pub fn build(self) -> Result<EventSource, Error> {
        let invalid_url = |reason: String| Error::InvalidUrl {
            url: self.url.clone(),
            reason,
        };
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid_url(e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => None,
            // Made once here: it reads the system's certificate store.
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
                Some(std::sync::Arc::new(self.tls.client_config()?))
            }
            Some(other) => return Err(Error::UnsupportedScheme(other.to_owned())),
            None => {
                return Err(invalid_url("not an absolute URL (http://host/path)".into()));
            }
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid_url("no host".into()));
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
        Ok(EventSource::from_config(Config {
            uri,
            headers,
            last_event_id: self.last_event_id,
            retry: self.retry,
            max_backoff: self.max_backoff,
            jitter: self.jitter,
            limits: self.limits,
            tls,
        }))
    }
}
