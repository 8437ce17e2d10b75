//! The subscriptions API, with an `ETag` for polling, in each generation's shape: Mercure 0.x,
//! `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]` as JSON-LD; Mercure 1.0,
//! `GET /.well-known/mercure/subscriptions[/{match_type}/{match}[/{subscriber}]]` as plain
//! JSON. A path whose first segment is a 1.0 matcher type (`exact`, `urlpattern`) is 1.0, as
//! is the bare list asked for with a 1.0 access token.

use super::{HttpError, grants, query_token};
use crate::auth::Role;
use crate::history::EARLIEST;
use crate::hub::Hub;
use crate::subscriptions::{SubscriptionList, SubscriptionListV1};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;

/// `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]`: the active subscriptions,
/// for a bearer whose `mercure.subscribe` claim matches this URL (as for private updates).
pub(super) async fn list_subscriptions(
    State(hub): State<Hub>,
    axum::extract::Path(segments): axum::extract::Path<Vec<(String, String)>>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, HttpError> {
    let Some(registry) = &hub.inner.subscriptions else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "the subscriptions API is disabled: start the hub with --subscriptions",
        ));
    };
    let query_token = query_token(&request)?;
    let Some(grants) = grants(
        &hub,
        Role::Subscriber,
        &headers,
        request.uri(),
        query_token.as_deref(),
        super::ANY_COOKIE,
    )?
    else {
        return Err(HttpError::unauthorized(
            "the subscriptions API requires a subscriber JWT whose mercure.subscribe claim \
             matches this URL",
        )
        .challenge(request.uri(), &headers, None));
    };
    let path = request.uri().path();
    if !grants.subscribe.matches(path) {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!("the JWT's mercure.subscribe claim does not match {path:?}"),
        )
        .challenge(request.uri(), &headers, Some("insufficient_scope")));
    }
    let segment = |name: &str| {
        segments
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (first, second, third) = (segment("topic"), segment("subscriber"), segment("third"));
    let is_v1 = match first {
        None => grants.access_token,
        Some(first) => MATCH_TYPES.contains(&first) && second.is_some(),
    };
    if is_v1 {
        // 1.0: /{match_type}/{match}[/{subscriber}].
        let matcher = first.zip(second);
        let (list, last_event_id) = registry.list_v1(matcher, third);
        let last_event_id = last_event_id.unwrap_or_else(|| EARLIEST.to_owned());
        let body = document(
            list,
            third.is_some(),
            |mut one| {
                one.last_event_id = Some(last_event_id.clone());
                one
            },
            |list| SubscriptionListV1::new(path.to_owned(), last_event_id.clone(), list),
        )?;
        return Ok(answer(&headers, &last_event_id, "application/json", body));
    }
    if third.is_some() {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "a subscription's URL has three segments only in Mercure 1.0, whose first is \
             the matcher type (exact or urlpattern)",
        ));
    }
    let (topic, subscriber) = (first, second);
    let (list, last_event_id) = registry.list(topic, subscriber);
    let last_event_id = last_event_id.unwrap_or_else(|| EARLIEST.to_owned());
    let body = document(
        list,
        subscriber.is_some(),
        |mut one| {
            one.context = Some("https://mercure.rocks/");
            one.last_event_id = Some(last_event_id.clone());
            one
        },
        |list| SubscriptionList::new(path.to_owned(), last_event_id.clone(), list),
    )?;
    Ok(answer(
        &headers,
        &last_event_id,
        "application/ld+json",
        body,
    ))
}

/// The body of a subscriptions document, in either generation's shape: the one subscription
/// a URL names (`single`; `404` if it is not active), made a document of its own by
/// `standalone`, else the list `listed` makes.
fn document<T: Serialize, L: Serialize>(
    list: Vec<T>,
    single: bool,
    standalone: impl FnOnce(T) -> T,
    listed: impl FnOnce(Vec<T>) -> L,
) -> Result<String, HttpError> {
    let body = if single {
        let Some(one) = list.into_iter().next() else {
            return Err(HttpError::new(
                StatusCode::NOT_FOUND,
                "no such active subscription",
            ));
        };
        serde_json::to_string(&standalone(one))
    } else {
        serde_json::to_string(&listed(list))
    };
    body.map_err(|err| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
}

/// The matcher types of Mercure 1.0, the first segment of its subscription URLs.
const MATCH_TYPES: [&str; 2] = ["exact", "urlpattern"];

/// A subscriptions document, or `304` if the client has it already.
fn answer(
    headers: &HeaderMap,
    last_event_id: &str,
    content_type: &'static str,
    body: String,
) -> Response {
    // The view changes only with an event, so its last event id identifies the document (as
    // the spec's examples show): a client polling with If-None-Match gets 304 until it changes.
    let etag = format!("\"{}\"", last_event_id.replace(['"', '\\'], "_"));
    let etag = HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"_\""));
    let unchanged = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag.to_str().unwrap_or_default()
        });
    if unchanged {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response()
}
