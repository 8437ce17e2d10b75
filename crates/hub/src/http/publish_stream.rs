//! Streaming publish: `POST /.well-known/mercure` with `Content-Type: text/event-stream`. Each
//! event of the body is an update (`data`, `id`, `event` as its type, `retry`, and Herald's
//! `topic` and `private` fields, else the query string's `topic` and `private`), checked as a
//! form publish is, stored as soon as it is complete (the events that arrived together in one
//! group commit), and answered as an event stream: `event: accepted` with each id, in order,
//! then `event: done` with the count, or `event: refused` with the status and the reason at the
//! first event that is not accepted, which ends the request (the updates before it stay
//! stored). A refusal before anything was stored is the response's own status instead.
//!
//! A service can pipe a model's SSE output straight into a topic, with one request for the
//! whole answer instead of one per token.
//!
//! What a hostile publisher can cost: one event of at most `--max-body` bytes buffered, and each
//! event must be complete within `--body-timeout` of the previous one.

use super::publish::{Rules, check_update, parse_retry, published};
use super::{HttpError, form_pairs};
use crate::auth::Grants;
use crate::hub::Hub;
use crate::update::{NewUpdate, Update};
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use herald_sse::{DecodeError, Event, Lines};
use http::{HeaderValue, StatusCode, header};
use std::collections::VecDeque;
use std::sync::Arc;

/// The media type of a streaming publish's body and of its answer.
pub(super) const EVENT_STREAM: &str = "text/event-stream";

/// What the query string gives every event that does not say it itself.
#[derive(Debug, Default)]
pub(super) struct Defaults {
    topics: Vec<String>,
    private: bool,
    retain: bool,
}

impl Defaults {
    /// Reads `topic` (repeatable), `private` and `retain` from a query string.
    pub(super) fn from_query(query: &str) -> Result<Defaults, HttpError> {
        let mut defaults = Defaults::default();
        for pair in form_pairs(query.as_bytes(), "query parameter") {
            let (key, value) = pair?;
            match &*key {
                "topic" => defaults.topics.push(value),
                "private" => defaults.private = true,
                "retain" => defaults.retain = !value.is_empty(),
                _ => {}
            }
        }
        Ok(defaults)
    }
}

/// The events of a publish body: complete events as lists of fields, strictly decoded. Unlike
/// an `EventSource`, which repairs what it can, a publish refuses what is not UTF-8 and says
/// where, so that nothing is stored that the publisher did not send.
struct Events {
    lines: Lines,
    /// The fields of the event being read.
    fields: Vec<(String, String)>,
    /// Its size so far, against `max_event`.
    size: usize,
    max_event: usize,
    /// Lines read so far, for messages.
    line: u64,
    complete: VecDeque<Vec<(String, String)>>,
}

impl Events {
    fn new(max_event: usize) -> Events {
        Events {
            lines: Lines::new(max_event),
            fields: Vec::new(),
            size: 0,
            max_event,
            line: 0,
            complete: VecDeque::new(),
        }
    }

    /// Reads a chunk of the body; complete events are queued.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), HttpError> {
        let Events {
            lines,
            fields,
            size,
            max_event,
            line,
            complete,
        } = self;
        lines.feed(chunk, |text: &[u8]| {
            *line += 1;
            if text.is_empty() {
                if !fields.is_empty() {
                    complete.push_back(std::mem::take(fields));
                }
                *size = 0;
                return Ok(());
            }
            let Some((name, value)) = herald_sse::field(text) else {
                return Ok(()); // a comment
            };
            *size += text.len() + 1;
            if *size > *max_event {
                return Err(too_large(*max_event));
            }
            let utf8 = |bytes: &[u8]| {
                String::from_utf8(bytes.to_vec()).map_err(|_| {
                    HttpError::bad_request(format!(
                        "line {line} of the event stream is not valid UTF-8: encode text as \
                         UTF-8 (binary data needs an encoding such as base64)"
                    ))
                })
            };
            fields.push((utf8(name)?, utf8(value)?));
            Ok(())
        })
    }

    /// The body ended: an event without its closing blank line is an error, not dropped
    /// silently as an `EventSource` would.
    fn finish(&self) -> Result<(), HttpError> {
        if self.fields.is_empty() && !self.lines.in_line() {
            return Ok(());
        }
        Err(HttpError::bad_request(
            "the body ended in the middle of an event: end every event with a blank line; \
             that last event was not published",
        ))
    }
}

fn too_large(limit: usize) -> HttpError {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("an event of the stream is larger than the limit of {limit} bytes (--max-body)"),
    )
}

impl From<DecodeError> for HttpError {
    fn from(err: DecodeError) -> HttpError {
        match err {
            DecodeError::LineTooLong { limit } | DecodeError::EventTooLarge { limit } => {
                too_large(limit)
            }
        }
    }
}

/// An event's fields as an update: `data` lines joined with LF, the last `id`, `event` and
/// `retry` (as an `EventSource` reads them), `topic` fields (repeatable) or else the query
/// string's, `private` if the event or the query string has it. Unknown fields are ignored.
fn to_update(fields: Vec<(String, String)>, defaults: &Defaults) -> Result<NewUpdate, HttpError> {
    let mut data: Option<String> = None;
    let (mut id, mut event_type, mut retry) = (None, None, None);
    let mut topics = Vec::new();
    let mut private = defaults.private;
    let mut retain = defaults.retain;
    for (name, value) in fields {
        match &*name {
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => data = Some(value),
            },
            "id" => id = Some(value),
            "event" => event_type = Some(value),
            "retry" => retry = Some(parse_retry(&value)?),
            "topic" => topics.push(value),
            "private" => private = true,
            "retain" => retain = !value.is_empty(),
            _ => {}
        }
    }
    if topics.is_empty() {
        topics.clone_from(&defaults.topics);
    }
    Ok(published(NewUpdate {
        id: id.unwrap_or_default(),
        topics,
        data: data.unwrap_or_default(),
        private,
        event_type,
        retry,
        retain,
    }))
}

/// One step of a streaming publish.
enum Step {
    /// These updates were stored, in order.
    Stored(Vec<Arc<Update>>),
    /// These were stored, then this event was not accepted: the request ends.
    Refused(Vec<Arc<Update>>, HttpError),
    /// The body ended after every event was stored.
    Done,
}

/// A streaming publish in progress.
struct Publishing {
    hub: Hub,
    grants: Grants,
    rules: Rules,
    defaults: Defaults,
    body: Body,
    events: Events,
    /// An error the body's reader met after the events queued before it.
    failed: Option<HttpError>,
    ended: bool,
    /// Events checked so far (the number of the next is one more), and updates stored.
    checked: u64,
    accepted: u64,
}

impl Publishing {
    /// Reads until at least one event is complete (or the body ends or fails), then checks
    /// and stores every complete event, stopping at the first that is refused.
    async fn step(&mut self) -> Step {
        let settings = &self.hub.inner.settings;
        while self.events.complete.is_empty() && self.failed.is_none() && !self.ended {
            // Each event must be complete within --body-timeout of the previous one.
            let frame = tokio::time::timeout(
                settings.body_timeout,
                http_body_util::BodyExt::frame(&mut self.body),
            )
            .await;
            match frame {
                Err(_) => {
                    self.failed = Some(HttpError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "no complete event for {:?} (--body-timeout): end each event with a \
                             blank line, and send the next one sooner",
                            settings.body_timeout
                        ),
                    ));
                }
                Ok(None) => {
                    self.ended = true;
                    if let Err(err) = self.events.finish() {
                        self.failed = Some(err);
                    }
                }
                Ok(Some(Err(err))) => {
                    self.failed = Some(HttpError::bad_request(format!(
                        "could not read the request body: {err}"
                    )));
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && let Err(err) = self.events.feed(&data)
                    {
                        self.failed = Some(err);
                    }
                }
            }
        }
        let mut batch = Vec::with_capacity(self.events.complete.len());
        let mut refusal = None;
        while let Some(fields) = self.events.complete.pop_front() {
            match self.check(fields) {
                Ok(update) => batch.push(update),
                Err(err) => {
                    refusal = Some(err);
                    break;
                }
            }
        }
        if refusal.is_none() && self.events.complete.is_empty() {
            refusal = self.failed.take();
        }
        let inner = &self.hub.inner;
        let mut stored = Vec::with_capacity(batch.len());
        for answer in inner.history.append_all(batch).await {
            match answer {
                Ok(update) => {
                    inner.dispatcher.acknowledged(update.position);
                    inner.metrics.published.inc();
                    stored.push(update);
                }
                Err(err) => {
                    if matches!(err, crate::history::StoreError::Unavailable { .. }) {
                        inner.metrics.store_errors.inc();
                    }
                    refusal = Some(super::store_error(err));
                    break;
                }
            }
        }
        self.accepted += stored.len() as u64;
        match refusal {
            Some(err) => Step::Refused(stored, err),
            None if stored.is_empty() && self.ended => Step::Done,
            None => Step::Stored(stored),
        }
    }

    /// An event as an update its publisher may publish.
    fn check(&mut self, fields: Vec<(String, String)>) -> Result<NewUpdate, HttpError> {
        self.checked += 1;
        let at = self.checked;
        let update = to_update(fields, &self.defaults)
            .and_then(|update| check_update(&update, self.rules).map(|()| update))
            .map_err(|err| HttpError::new(err.status, format!("event {at}: {}", err.message)))?;
        if let Some(topic) = update
            .topics
            .iter()
            .find(|topic| !self.grants.publish.matches(topic))
        {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "event {at}: the JWT's mercure.publish claim does not allow publishing to \
                     {topic:?}"
                ),
            ));
        }
        Ok(update)
    }
}

/// The answer's bytes for stored updates: one `accepted` event each.
fn accepted(stored: &[Arc<Update>], out: &mut BytesMut) {
    for update in stored {
        let event = Event::new(update.id()).event("accepted");
        // An id is single-line (checked when published), so it always encodes.
        if let Ok(bytes) = event.encode() {
            out.extend_from_slice(&bytes);
        }
    }
}

fn closing(event: &str, data: String, out: &mut BytesMut) {
    if let Ok(bytes) = Event::new(data).event(event).encode() {
        out.extend_from_slice(&bytes);
    }
}

/// Serves a streaming publish whose publisher was authorized with `grants`.
pub(super) async fn publish_stream(
    hub: Hub,
    grants: Grants,
    rules: Rules,
    defaults: Defaults,
    body: Body,
) -> Result<Response, HttpError> {
    let max_event = hub.inner.settings.max_body;
    let mut publishing = Publishing {
        hub,
        grants,
        rules,
        defaults,
        body,
        events: Events::new(max_event),
        failed: None,
        ended: false,
        checked: 0,
        accepted: 0,
    };
    // Until something is stored, a refusal is the answer's status.
    let first = match publishing.step().await {
        Step::Refused(stored, err) if stored.is_empty() => return Err(err),
        Step::Done => {
            return Err(HttpError::bad_request(
                "the event stream has no event: send events such as \"data: hello\" each \
                 followed by a blank line",
            ));
        }
        step => step,
    };
    let body = futures_util::stream::unfold(
        (publishing, Some(first), false),
        |(mut publishing, step, finished)| async move {
            if finished {
                return None;
            }
            let step = match step {
                Some(step) => step,
                None => publishing.step().await,
            };
            let mut out = BytesMut::new();
            let finished = match step {
                Step::Stored(stored) => {
                    accepted(&stored, &mut out);
                    false
                }
                Step::Refused(stored, err) => {
                    accepted(&stored, &mut out);
                    let data = format!(
                        "{} {} ({} updates of this request were stored before it)",
                        err.status.as_u16(),
                        err.message,
                        publishing.accepted
                    );
                    closing("refused", data, &mut out);
                    true
                }
                Step::Done => {
                    closing("done", publishing.accepted.to_string(), &mut out);
                    true
                }
            };
            let chunk = Ok::<Bytes, std::convert::Infallible>(out.freeze());
            Some((chunk, (publishing, None, finished)))
        },
    );
    let mut response = Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
