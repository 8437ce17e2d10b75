//! Publishing: `POST /.well-known/mercure` with a form, checked (token, content type, size,
//! time, fields) and stored; the answer is the update's id.

use super::{HUB_PATH, HttpError, form_pairs, grants, query_token, read_body, store_error};
use crate::auth::Role;
use crate::history::{EARLIEST, StoreError};
use crate::hub::Hub;
use crate::update::{NewUpdate, new_id};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::publish_stream::{Defaults, EVENT_STREAM, publish_stream};
use super::subscribe::FORM;
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
    let rules = if grants.access_token {
        Rules::V1
    } else {
        Rules::V0
    };
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if essence.eq_ignore_ascii_case(EVENT_STREAM) {
            let defaults = Defaults::from_query(request.uri().query().unwrap_or(""))?;
            return publish_stream(hub, grants, rules, defaults, request.into_body()).await;
        }
        if !essence.eq_ignore_ascii_case(FORM) {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "publish with Content-Type: {FORM} (one update), or {EVENT_STREAM} (one \
                     update per event; got {essence:?})"
                ),
            ));
        }
    }
    let uri = request.uri().clone();
    let body = read_body(request.into_body(), &hub.inner.settings).await?;
    let update = parse_publish_form(&body)?;
    check_update(&update, rules)?;
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

/// Parses the fields of a publish request.
fn parse_publish_form(body: &Bytes) -> Result<NewUpdate, HttpError> {
    let mut topics = Vec::new();
    let mut data = None;
    let mut private = false;
    let mut id = None;
    let mut event_type = None;
    let mut retry = None;
    let mut retain = false;
    for pair in form_pairs(body, "form field") {
        let (key, value) = pair?;
        // A field given twice keeps its first value, as the reference hub does.
        match &*key {
            "topic" => topics.push(value),
            "data" if data.is_none() => data = Some(value),
            "private" => private = true,
            // A Herald extension, ignored by other hubs: `retain=on` (any value but empty).
            "retain" => retain = !value.is_empty(),
            "id" if id.is_none() => id = Some(value),
            "type" if event_type.is_none() => event_type = Some(value),
            "retry" if retry.is_none() => retry = Some(parse_retry(&value)?),
            _ => {}
        }
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

/// An update as published, whatever the body's format: an empty `id` asks for a generated one,
/// an empty `type` is none.
pub(super) fn published(mut update: NewUpdate) -> NewUpdate {
    if update.id.is_empty() {
        update.id = new_id();
    }
    update.event_type = update.event_type.filter(|t| !t.is_empty());
    update
}

/// A `retry` field: the reconnection time in milliseconds, digits only (as SSE reads it).
pub(super) fn parse_retry(value: &str) -> Result<u64, HttpError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            HttpError::bad_request(format!(
                "invalid \"retry\" {value:?}: give the reconnection time in milliseconds, as \
                 digits"
            ))
        })
}

/// Which generation's publishing rules an update follows: its publisher's token's. Mercure
/// 1.0 refuses some ids, types and topics that 0.x accepts; a 0.x publisher keeps 0.x's rules
/// (the update still reaches subscribers of both generations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rules {
    V0,
    V1,
}

/// Checks an update against the publishing rules: what every generation refuses (no topic, a
/// reserved topic, id or type, a field that would break the stream), and 1.0's own.
pub(super) fn check_update(update: &NewUpdate, rules: Rules) -> Result<(), HttpError> {
    let NewUpdate {
        topics,
        id,
        event_type,
        ..
    } = update;
    if topics.is_empty() {
        return Err(HttpError::bad_request(
            "missing \"topic\" field: publish at least one topic (topic=<iri>, repeatable)",
        ));
    }
    if topics.iter().any(|t| t.is_empty()) {
        return Err(HttpError::bad_request("a \"topic\" field is empty"));
    }
    if let Some(reserved) = topics.iter().find(|t| is_reserved(t)) {
        // The hub's own subscription events live there: a publisher could forge them.
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the topic {reserved:?} is reserved: topics under {HUB_PATH} carry the hub's \
                 own subscription events"
            ),
        ));
    }
    if id == EARLIEST {
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
    update.validate().map_err(|err| {
        HttpError::bad_request(format!(
            "{err}: the \"id\" and \"type\" fields must be single-line"
        ))
    })?;
    if rules == Rules::V1 {
        let forbidden = |text: &str| text.chars().any(super::forbidden_in_v1);
        if let Some(topic) = topics.iter().find(|t| forbidden(t)) {
            return Err(HttpError::bad_request(format!(
                "the topic {topic:?} has a control or format character, which Mercure 1.0 \
                 does not allow in topics"
            )));
        }
        if id.starts_with('#') || forbidden(id) {
            return Err(HttpError::bad_request(format!(
                "the update id {id:?} is not allowed by Mercure 1.0: an id may not start with \
                 \"#\" (the hub's generated ids may) nor have a control or format character"
            )));
        }
        if let Some(event_type) = event_type.as_deref().filter(|t| forbidden(t)) {
            return Err(HttpError::bad_request(format!(
                "the event type {event_type:?} has a control or format character, which \
                 Mercure 1.0 does not allow"
            )));
        }
    }
    Ok(())
}

/// Whether `topic` names the hub's own namespace: resolved against the hub's URL (as Mercure
/// 1.0 resolves topics for URL patterns, so `mercure/x` and `https://any.host/.well-known/mercure/x`
/// count), with dot segments removed and percent-encoding decoded, its path is the hub's path
/// or under it.
fn is_reserved(topic: &str) -> bool {
    static BASE: std::sync::LazyLock<url::Url> = std::sync::LazyLock::new(|| {
        url::Url::parse(&format!("https://hub.invalid{HUB_PATH}")).expect("a valid URL")
    });
    let Ok(url) = BASE.join(topic) else {
        return topic.starts_with(HUB_PATH);
    };
    let path = percent_encoding::percent_decode_str(url.path()).decode_utf8_lossy();
    path == HUB_PATH || path.starts_with(&format!("{HUB_PATH}/"))
}
