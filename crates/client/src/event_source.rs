//! The connection state machine: connect, stream, wait, reconnect; a `Stream` of [`Item`]s.
//!
//! Written as a hand-made poll loop rather than an async block so that the state (ready state,
//! last event id, reconnection time) stays readable from outside between items.

use crate::backoff;
use crate::builder::{Builder, Config};
use crate::error::Error;
use bytes::Bytes;
use futures_util::Stream;
use herald_sse::{Decoder, MessageEvent};
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Empty;
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, ResponseFuture, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// What an [`EventSource`] yields besides errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A connection was established (status 200, `text/event-stream`): `open` in browsers.
    Open,
    /// An event was dispatched.
    Message(MessageEvent),
}

/// As `EventSource.readyState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    Connecting,
    Open,
    Closed,
}

enum State {
    /// Waiting before (re)connecting.
    Waiting(Pin<Box<tokio::time::Sleep>>),
    Connecting(ResponseFuture),
    Streaming(Incoming),
    /// Reading the start of an error response, to show the server's explanation.
    Refused(Box<Refused>),
    Closed,
}

/// How much of an error response body is kept, and how long it may take to arrive.
const ERROR_BODY_LIMIT: usize = 512;
const ERROR_BODY_WAIT: Duration = Duration::from_secs(2);

struct Refused {
    status: StatusCode,
    body: Incoming,
    text: Vec<u8>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// A Server-Sent Events client. Poll it as a [`Stream`]; see the crate documentation.
pub struct EventSource {
    config: Config,
    client: Client<HttpConnector, Empty<Bytes>>,
    state: State,
    decoder: Decoder,
    ready: VecDeque<MessageEvent>,
    /// Reconnection time: the server's `retry:` or the configured default.
    retry: Duration,
    /// Consecutive failed attempts since the last successful connection.
    failures: u32,
    /// An error to report once the events completed before it are delivered.
    pending: Option<Error>,
}

impl EventSource {
    /// An event source for `url` with the default configuration.
    pub fn new(url: &str) -> Result<EventSource, Error> {
        EventSource::builder(url).build()
    }

    /// Configures an event source for `url`.
    pub fn builder(url: &str) -> Builder {
        Builder::new(url)
    }

    pub(crate) fn from_parts(config: Config, builder: &Builder) -> EventSource {
        let mut decoder = Decoder::with_limits(builder.limits);
        decoder.set_last_event_id(builder.last_event_id.clone());
        EventSource {
            config,
            client: Client::builder(TokioExecutor::new()).build_http(),
            state: State::Waiting(Box::pin(tokio::time::sleep(Duration::ZERO))),
            decoder,
            ready: VecDeque::new(),
            retry: builder.retry,
            failures: 0,
            pending: None,
        }
    }

    pub fn ready_state(&self) -> ReadyState {
        match self.state {
            State::Waiting(_) | State::Connecting(_) => ReadyState::Connecting,
            State::Streaming(_) => ReadyState::Open,
            State::Refused(_) => ReadyState::Closed,
            State::Closed => ReadyState::Closed,
        }
    }

    /// The last event id: sent as `Last-Event-ID` on the next connection.
    pub fn last_event_id(&self) -> &str {
        self.decoder.last_event_id()
    }

    /// The current reconnection time.
    pub fn retry(&self) -> Duration {
        self.retry
    }

    /// Closes the connection for good; the stream then ends.
    pub fn close(&mut self) {
        self.state = State::Closed;
        self.ready.clear();
        self.pending = None;
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut request = Request::get(self.config.uri.clone())
            .body(Empty::new())
            .expect("a GET with a validated URI is a valid request");
        let headers = request.headers_mut();
        headers.clone_from(&self.config.headers);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let id = self.decoder.last_event_id();
        if !id.is_empty()
            && let Ok(value) = HeaderValue::from_str(id)
        {
            headers.insert("last-event-id", value);
        }
        request
    }

    /// Schedules the next attempt and returns the error that caused it.
    fn reconnect_after(&mut self, error: Error) -> Error {
        let random: f64 = rand::random();
        let delay = backoff::delay(
            self.retry,
            self.failures,
            self.config.max_backoff,
            self.config.jitter,
            random,
        );
        self.failures = self.failures.saturating_add(1);
        tracing::debug!(%error, ?delay, failures = self.failures, "event source reconnecting");
        self.state = State::Waiting(Box::pin(tokio::time::sleep(delay)));
        error
    }

    fn fail(&mut self, error: Error) -> Error {
        tracing::debug!(%error, "event source closed");
        self.state = State::Closed;
        error
    }

    fn take_events(&mut self) {
        while let Some(event) = self.decoder.next_event() {
            self.ready.push_back(event);
        }
        if let Some(ms) = self.decoder.retry() {
            self.retry = Duration::from_millis(ms);
        }
    }

    /// Checks a response: `Ok(Some(body))` to stream, `Ok(None)` for 204, `Err` for fatal.
    fn accept(
        response: hyper::Response<Incoming>,
    ) -> Result<Option<Incoming>, (StatusCode, Incoming, Option<String>)> {
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let is_sse = content_type.as_deref().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
        });
        if status == StatusCode::OK && is_sse {
            Ok(Some(response.into_body()))
        } else {
            Err((status, response.into_body(), content_type))
        }
    }
}

impl Stream for EventSource {
    type Item = Result<Item, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Item::Message(event))));
            }
            if let Some(err) = this.pending.take() {
                return Poll::Ready(Some(Err(err)));
            }
            match &mut this.state {
                State::Closed => return Poll::Ready(None),
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    let request = this.request();
                    this.state = State::Connecting(this.client.request(request));
                }
                State::Connecting(future) => {
                    let response = match ready!(Pin::new(future).poll(cx)) {
                        Ok(response) => response,
                        Err(err) => {
                            let err = Error::Connect(error_chain(&err));
                            this.pending = Some(this.reconnect_after(err));
                            continue;
                        }
                    };
                    match EventSource::accept(response) {
                        Ok(Some(body)) => {
                            this.failures = 0;
                            this.decoder.reset();
                            this.state = State::Streaming(body);
                            return Poll::Ready(Some(Ok(Item::Open)));
                        }
                        Ok(None) => {
                            tracing::debug!("event source got 204: closed");
                            this.state = State::Closed;
                            return Poll::Ready(None);
                        }
                        Err((status, _, content_type)) if status == StatusCode::OK => {
                            let err = Error::ContentType(content_type.unwrap_or_default());
                            this.pending = Some(this.fail(err));
                        }
                        Err((status, body, _)) => {
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
                State::Streaming(body) => match ready!(Pin::new(body).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let fed = this.decoder.feed(data);
                            this.take_events();
                            if let Err(err) = fed {
                                this.pending = Some(this.reconnect_after(err.into()));
                            }
                        }
                    }
                    end => {
                        // The stream ended or broke: an unfinished event is dropped, finished
                        // ones are delivered before the error.
                        this.decoder.finish();
                        this.take_events();
                        let err = match end {
                            Some(Err(err)) => Error::Body(error_chain(&err)),
                            _ => Error::Disconnected,
                        };
                        this.pending = Some(this.reconnect_after(err));
                    }
                },
            }
        }
    }
}

/// An error and its causes in one line (hyper's top-level messages alone are vague).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
