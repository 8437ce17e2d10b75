//! The connection state machine — start, wait, connect, stream, reconnect or close — exposed as
//! a `Stream` of [`Item`]s.
//!
//! It is a hand-written `poll_next` rather than an `async` block turned into a stream so that
//! the state it keeps (ready state, last event id, reconnection time) can be read between items,
//! and so that `close()` takes effect at once by dropping whatever is in flight.
//!
//! Order of what one poll yields: events already decoded come first, then an error that was
//! held back behind them (so the events completed before a disconnection are not lost), then
//! whatever the current state produces.

use crate::backoff;
use crate::builder::{Builder, Config};
use crate::error::Error;
use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::FusedStream;
use herald_sse::{Decoder, MessageEvent};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Empty;
use hyper::body::{Body as _, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, ResponseFuture, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::Sleep;

/// What an [`EventSource`] yields besides errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A connection was established (status 200, `text/event-stream`): the browser's `open`
    /// event. One per connection, so a reconnection shows up as `Err(..)` then `Open`.
    Open,
    /// An event was dispatched: the browser's `message` (or named) event.
    Message(MessageEvent),
}

/// The browser's `EventSource.readyState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    /// Not connected yet, or waiting to reconnect, or waiting for the response.
    Connecting,
    /// Connected: events are flowing.
    Open,
    /// Closed for good (by [`EventSource::close`], HTTP 204, or a fatal error).
    Closed,
}

enum State {
    /// Connect on the next poll. The first attempt does not wait, and holds no timer, so that
    /// an event source can be built outside a tokio runtime.
    Start,
    /// Waiting out the reconnection delay.
    Waiting(Pin<Box<Sleep>>),
    /// Request sent, waiting for the response head.
    Connecting(ResponseFuture),
    /// Reading the event stream.
    Streaming(Incoming),
    /// Reading the start of an error response, to show the server's explanation; then closed.
    Refused(Box<Refused>),
    Closed,
}

/// How much of an error response body is kept, and how long it may take to arrive: enough for
/// a one-line explanation, without letting a slow server hold a failed source open.
const ERROR_BODY_LIMIT: usize = 512;
const ERROR_BODY_WAIT: Duration = Duration::from_secs(2);

/// How many body frames one `poll_next` reads when none of them completes an event (comments,
/// heartbeats, pieces of a large event) before yielding to the runtime, so that a fast stream
/// cannot starve the other tasks of its thread.
const FRAMES_PER_POLL: u32 = 64;

struct Refused {
    status: StatusCode,
    body: Incoming,
    text: Vec<u8>,
    deadline: Pin<Box<Sleep>>,
}

/// What to do with a response.
enum Verdict {
    Stream(Incoming),
    NoContent,
    Fatal(Error),
    ReadErrorBody(StatusCode, Incoming),
}

/// A Server-Sent Events client: poll it as a [`Stream`] of `Result<Item, Error>`. See the crate
/// documentation for its behaviour. It is `Send`, so it can be moved into a spawned task, and
/// it must be polled inside a tokio runtime (the connection runs on it).
pub struct EventSource {
    config: Config,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    state: State,
    decoder: Decoder,
    /// Events taken from the decoder, not yet yielded.
    ready: VecDeque<MessageEvent>,
    /// Reconnection time: the server's latest `retry:`, or the configured default.
    retry: Duration,
    /// Consecutive failed attempts since the last successful connection (doubles the delay).
    failures: u32,
    /// An error to yield once the events completed before it have been yielded.
    pending: Option<Error>,
}

impl EventSource {
    /// An event source for `url` with the default configuration. It connects on first poll.
    pub fn new(url: &str) -> Result<EventSource, Error> {
        EventSource::builder(url).build()
    }

    /// Configures an event source for `url` (an absolute `http://` or `https://` URL).
    pub fn builder(url: &str) -> Builder {
        Builder::new(url)
    }

    pub(crate) fn from_config(config: Config) -> EventSource {
        let mut decoder = Decoder::with_limits(config.limits);
        decoder.set_last_event_id(config.last_event_id.clone());
        // No idle pool: an event stream holds its connection for as long as it lives, and a
        // connection the server has just closed must never be picked up again for the
        // reconnection (that would turn a clean reconnect into a spurious failure).
        let tls = config.tls.clone().unwrap_or_else(|| {
            // Plain http://: the connector never uses it.
            std::sync::Arc::new(crate::tls::TlsOptions::default().client_config_without_roots())
        });
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(crate::tls::connector(tls));
        EventSource {
            retry: config.retry,
            config,
            client,
            state: State::Start,
            decoder,
            ready: VecDeque::new(),
            failures: 0,
            pending: None,
        }
    }

    /// Connecting, open, or closed for good. After a transient error it is `Connecting`.
    pub fn ready_state(&self) -> ReadyState {
        match self.state {
            State::Start | State::Waiting(_) | State::Connecting(_) => ReadyState::Connecting,
            State::Streaming(_) => ReadyState::Open,
            State::Refused(_) | State::Closed => ReadyState::Closed,
        }
    }

    /// The last event id: the latest `id:` of the stream, or the configured initial id. It is
    /// sent as `Last-Event-ID` on the next connection when not empty.
    pub fn last_event_id(&self) -> &str {
        self.decoder.last_event_id()
    }

    /// The current reconnection time: the server's latest `retry:`, or the configured one.
    /// The actual delay grows from it on consecutive failures and is shortened by jitter.
    pub fn retry(&self) -> Duration {
        self.retry
    }

    /// Closes the source for good: the connection (or pending attempt) is dropped at once and
    /// the stream ends; events not yet taken are discarded, as in browsers.
    pub fn close(&mut self) {
        self.state = State::Closed;
        self.ready.clear();
        self.pending = None;
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = self.config.uri.clone();
        let headers = request.headers_mut();
        headers.clone_from(&self.config.headers);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        // Proxies must not answer from a cache nor hold the stream back to store it.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let id = self.decoder.last_event_id();
        if !id.is_empty() {
            // `from_bytes`, not `from_str`: an id may be any text, and its UTF-8 bytes are what
            // browsers send. Only control characters (never sendable) make it fail.
            match HeaderValue::from_bytes(id.as_bytes()) {
                Ok(value) => {
                    headers.insert("last-event-id", value);
                }
                Err(_) => tracing::debug!(id, "last event id cannot be sent as a header"),
            }
        }
        request
    }

    /// Schedules the next attempt after a transient `error`, and returns the error.
    fn reconnect_after(&mut self, error: Error) -> Error {
        let delay = backoff::delay(
            self.retry,
            self.failures,
            self.config.max_backoff,
            self.config.jitter,
            rand::random(),
        );
        self.failures = self.failures.saturating_add(1);
        tracing::debug!(%error, ?delay, failures = self.failures, "event source will reconnect");
        self.state = State::Waiting(Box::pin(tokio::time::sleep(delay)));
        error
    }

    /// Closes the source after a fatal `error`, and returns the error.
    fn fail(&mut self, error: Error) -> Error {
        tracing::debug!(%error, "event source closed for good");
        self.state = State::Closed;
        error
    }

    /// Moves decoded events to the queue and picks up a new `retry:`.
    fn take_events(&mut self) {
        self.ready
            .extend(std::iter::from_fn(|| self.decoder.next_event()));
        if let Some(ms) = self.decoder.retry() {
            self.retry = Duration::from_millis(ms);
        }
    }

    /// The browser's rules for a response: 200 + `text/event-stream` streams, 204 closes
    /// quietly, anything else fails for good.
    fn judge(response: Response<Incoming>) -> Verdict {
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Verdict::NoContent;
        }
        let header_text = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        if status.is_redirection()
            && let Some(location) = header_text(header::LOCATION)
        {
            return Verdict::Fatal(Error::Redirect { status, location });
        }
        if status != StatusCode::OK {
            return Verdict::ReadErrorBody(status, response.into_body());
        }
        let content_type = header_text(header::CONTENT_TYPE).unwrap_or_default();
        // The essence (type/subtype) decides; parameters such as `charset` do not, and MIME
        // types are case-insensitive.
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if essence.eq_ignore_ascii_case("text/event-stream") {
            Verdict::Stream(response.into_body())
        } else {
            Verdict::Fatal(Error::ContentType(content_type))
        }
    }
}

impl Stream for EventSource {
    type Item = Result<Item, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut budget = FRAMES_PER_POLL;
        loop {
            if let Some(event) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Item::Message(event))));
            }
            if let Some(err) = this.pending.take() {
                return Poll::Ready(Some(Err(err)));
            }
            match &mut this.state {
                State::Closed => return Poll::Ready(None),
                State::Start => {
                    this.state = State::Connecting(this.client.request(this.request()));
                }
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    tracing::debug!(
                        last_event_id = this.last_event_id(),
                        "event source reconnecting"
                    );
                    this.state = State::Connecting(this.client.request(this.request()));
                }
                State::Connecting(future) => {
                    let response = match ready!(Pin::new(future).poll(cx)) {
                        Ok(response) => response,
                        Err(err) => {
                            let err = Error::Connect(Box::new(err));
                            this.pending = Some(this.reconnect_after(err));
                            continue;
                        }
                    };
                    match EventSource::judge(response) {
                        Verdict::Stream(body) => {
                            tracing::debug!("event source open");
                            this.failures = 0;
                            // A new stream: no partial line or BOM state from the last one.
                            this.decoder.reset();
                            this.state = State::Streaming(body);
                            return Poll::Ready(Some(Ok(Item::Open)));
                        }
                        Verdict::NoContent => {
                            // The server's way of saying "stop": no error, no reconnection.
                            tracing::debug!("event source got 204 No Content: closed");
                            this.state = State::Closed;
                            return Poll::Ready(None);
                        }
                        Verdict::Fatal(err) => this.pending = Some(this.fail(err)),
                        Verdict::ReadErrorBody(status, body) => {
                            this.state = State::Refused(Box::new(Refused {
                                status,
                                body,
                                text: Vec::new(),
                                deadline: Box::pin(tokio::time::sleep(ERROR_BODY_WAIT)),
                            }));
                        }
                    }
                }
                State::Refused(refused) => {
                    let done = match Pin::new(&mut refused.body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(data) = frame.data_ref() {
                                refused.text.extend_from_slice(data);
                            }
                            refused.text.len() >= ERROR_BODY_LIMIT
                        }
                        // End of body, or it broke: report what arrived.
                        Poll::Ready(_) => true,
                        Poll::Pending => {
                            ready!(refused.deadline.as_mut().poll(cx));
                            true
                        }
                    };
                    if done {
                        refused.text.truncate(ERROR_BODY_LIMIT);
                        let err = Error::Status {
                            status: refused.status,
                            body: String::from_utf8_lossy(&refused.text).into_owned(),
                        };
                        this.pending = Some(this.fail(err));
                    }
                }
                State::Streaming(body) => {
                    if budget == 0 {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    budget -= 1;
                    match ready!(Pin::new(body).poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                let fed = this.decoder.feed(data);
                                // Events completed before a limit was broken are still good.
                                this.take_events();
                                if let Err(err) = fed {
                                    this.pending = Some(this.reconnect_after(err.into()));
                                }
                            }
                        }
                        end => {
                            // The stream ended or broke: an unfinished event is dropped (as the
                            // standard says), finished ones are yielded before the error.
                            this.decoder.finish();
                            this.take_events();
                            let err = match end {
                                Some(Err(err)) => Error::Body(Box::new(err)),
                                _ => Error::Disconnected,
                            };
                            this.pending = Some(this.reconnect_after(err));
                        }
                    }
                }
            }
        }
    }
}

impl FusedStream for EventSource {
    fn is_terminated(&self) -> bool {
        matches!(self.state, State::Closed) && self.ready.is_empty() && self.pending.is_none()
    }
}

impl fmt::Debug for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSource")
            .field("url", &self.config.uri)
            .field("ready_state", &self.ready_state())
            .field("last_event_id", &self.last_event_id())
            .field("retry", &self.retry)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}
