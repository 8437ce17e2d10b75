//! Publishing: `POST /.well-known/mercure` with a form, checked (token, content type, size,
//! time, fields) and stored; the answer is the update's id.

use super::{HUB_PATH, HttpError, form_pairs, grants, query_token, store_error};
use crate::auth::Role;
use crate::history::{EARLIEST, StoreError};
use crate::hub::Hub;
use crate::update::{NewUpdate, new_id};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use std::time::Duration;

const FORM: &str = "application/x-www-form-urlencoded";
/// The SSE event type Mercure 1.0 reserves for the hub's subscription events.
const RESERVED_TYPE: &str = "mercure";

/// `POST /.well-known/mercure`: checks the publisher and the form, stores the update, answers
/// its id.
pub(super) async fn publish(
    State(hub): State<Hub>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, HttpError> {
    let query_token = query_token(&request)?;
    let Some(grants) = grants(
        &hub,
        Role::Publisher,
        &headers,
        request.uri(),
        query_token.as_deref(),
        super::ANY_COOKIE,
    )?
    else {
        return Err(HttpError::unauthorized(
            "publishing requires a publisher JWT with a mercure.publish claim: send it as \
             `Authorization: Bearer <jwt>`",
        )
        .challenge(request.uri(), &headers, None));
    };
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !essence.eq_ignore_ascii_case(FORM) {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("publish with Content-Type: {FORM} (got {essence:?})"),
            ));
        }
    }
    let uri = request.uri().clone();
    let body = read_body(request.into_body(), &hub.inner.settings).await?;
    let update = parse_publish_form(&body)?;
    if let Some(topic) = update
        .topics
        .iter()
        .find(|topic| !grants.publish.matches(topic))
    {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!("the JWT's mercure.publish claim does not allow publishing to {topic:?}"),
        )
        .challenge(&uri, &headers, Some("insufficient_scope")));
    }
    let inner = &hub.inner;
    let update = inner.history.append(update).await.map_err(|err| {
        if matches!(err, StoreError::Unavailable { .. }) {
            inner.metrics.store_errors.inc();
        }
        store_error(err)
    })?;
    inner.dispatcher.acknowledged(update.position);
    inner.metrics.published.inc();
    tracing::debug!(id = update.id(), position = update.position, "published");
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        update.id().to_owned(),
    )
        .into_response())
}

/// Reads a publish body within its bounds: at most `max_body` bytes, and in time, where the
/// time allowed is `body_timeout` plus a second per `body_min_rate` bytes received. A body that
/// stops half-way or trickles must not hold its connection and buffer for long.
async fn read_body(mut body: Body, settings: &crate::Settings) -> Result<Bytes, HttpError> {
    let started = tokio::time::Instant::now();
    let rate = settings.body_min_rate as u64;
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body larger than the limit of {} bytes",
                settings.max_body
            ),
        )
    };
    if axum::body::HttpBody::size_hint(&body).lower() > settings.max_body as u64 {
        return Err(too_large()); // declared by Content-Length: no need to wait for it
    }
    let mut received = bytes::BytesMut::new();
    loop {
        let earned = match rate {
            0 => Duration::ZERO,
            rate => Duration::from_millis((received.len() as u64).saturating_mul(1000) / rate),
        };
        let deadline = started + settings.body_timeout.saturating_add(earned);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                let extension = match rate {
                    0 => String::new(),
                    rate => format!(" plus a second per {rate} bytes received"),
                };
                return Err(HttpError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body arrived too slowly: {} bytes in {:.1?}; the hub \
                         waits {:?}{extension} (--body-timeout, --body-min-rate)",
                        received.len(),
                        started.elapsed(),
                        settings.body_timeout,
                    ),
                ));
            }
            Ok(None) => return Ok(received.freeze()),
            Ok(Some(Err(err))) => {
                return Err(HttpError::bad_request(format!(
                    "could not read the request body: {err}"
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if received.len() + data.len() > settings.max_body {
                return Err(too_large());
            }
            received.extend_from_slice(&data);
        }
    }
}

/// Parses and validates the fields of a publish request.
fn parse_publish_form(body: &Bytes) -> Result<NewUpdate, HttpError> {
    let mut topics = Vec::new();
    let mut data = None;
    let mut private = false;
    let mut id = None;
    let mut event_type = None;
    let mut retry = None;
    for pair in form_pairs(body, "form field") {
        let (key, value) = pair?;
        // A field given twice keeps its first value, as the reference hub does.
        match &*key {
            "topic" => topics.push(value),
            "data" if data.is_none() => data = Some(value),
            "private" => private = true,
            "id" if id.is_none() => id = Some(value),
            "type" if event_type.is_none() => event_type = Some(value),
            "retry" if retry.is_none() => {
                let parsed = value
                    .parse::<u64>()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()));
                retry = Some(parsed.ok_or_else(|| {
                    HttpError::bad_request(format!(
                        "invalid \"retry\" {value:?}: give the reconnection time in milliseconds, as digits"
                    ))
                })?);
            }
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err(HttpError::bad_request(
            "missing \"topic\" field: publish at least one topic (topic=<iri>, repeatable)",
        ));
    }
    if topics.iter().any(|t| t.is_empty()) {
        return Err(HttpError::bad_request("a \"topic\" field is empty"));
    }
    if let Some(reserved) = topics.iter().find(|t| t.starts_with(HUB_PATH)) {
        // The hub's own subscription events live there: a publisher could forge them.
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the topic {reserved:?} is reserved: topics under {HUB_PATH} carry the hub's \
                 own subscription events"
            ),
        ));
    }
    if id.as_deref() == Some(EARLIEST) {
        // A client whose last event had this id would resume with `Last-Event-ID: earliest`
        // and be sent the whole history again.
        return Err(HttpError::bad_request(format!(
            "the update id {EARLIEST:?} is reserved (it means \"from the oldest update\" in \
             Last-Event-ID): choose another id, or leave \"id\" out to get a generated one"
        )));
    }
    if event_type.as_deref() == Some(RESERVED_TYPE) {
        // Mercure 1.0 sends the hub's subscription events as `event: mercure`; an update of
        // that type would pass for one in a client listening for them.
        return Err(HttpError::bad_request(format!(
            "the event type {RESERVED_TYPE:?} is reserved for the hub's own subscription events (Mercure 1.0): choose another \"type\""
        )));
    }
    let update = NewUpdate {
        id: id.filter(|id| !id.is_empty()).unwrap_or_else(new_id),
        topics,
        data: data.unwrap_or_default(),
        private,
        event_type: event_type.filter(|t| !t.is_empty()),
        retry,
    };
    update.validate().map_err(|err| {
        HttpError::bad_request(format!(
            "{err}: the \"id\" and \"type\" fields must be single-line"
        ))
    })?;
    Ok(update)
}
