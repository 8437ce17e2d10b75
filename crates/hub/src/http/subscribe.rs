//! Subscribing: `GET /.well-known/mercure?topic=…`, checked (selectors, token, limits,
//! `Last-Event-ID`) and answered with one [`SubscriptionResponse`] that every transport renders.

use super::{
    HUB_PATH, HttpError, LAST_EVENT_ID, LINK, cors, form_pairs, grants, read_body, store_error,
};
use crate::auth::{self, Role};
use crate::dispatch::Filter;
use crate::history::{EARLIEST, Start};
use crate::hub::Hub;
use crate::subscriber::Subscriber;
use crate::subscriptions::{SubscriptionGuard, Watched};
use crate::topic::{Selector, SelectorError, SelectorSet};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use std::sync::Arc;

/// Which generation of Mercure a subscribe request speaks. One hub serves both: a request
/// with a parameter of 1.0's `match` namespace is 1.0, any other 0.x. The generation decides
/// how selectors are read, which query parameter carries `Last-Event-ID`, which cookie
/// carries the token, and the name of the response header that says where the stream resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Generation {
    /// draft-dunglas-mercure-07 and the 0.x hubs: `topic=` (URI templates), `lastEventID`,
    /// the `authorization` parameter or the `mercureAuthorization` cookie, `Last-Event-ID`.
    #[default]
    V0,
    /// Mercure 1.0: `match=` / `match_exact=` (exact) and `match_urlpattern=` (WHATWG URL
    /// Pattern), `last_event_id`, no token in the URL, the `__Secure-mercure_access_token`
    /// cookie, `Mercure-Last-Event-ID`.
    V1,
}

/// The media type of a publish body and of a `QUERY` subscription's body.
pub(super) const FORM: &str = "application/x-www-form-urlencoded";
/// The methods of the hub's path.
const ALLOW: &str = "GET, HEAD, POST, QUERY, OPTIONS";
/// The header that says a resource takes `QUERY` requests, and in what media type.
const ACCEPT_QUERY: HeaderName = HeaderName::from_static("accept-query");

/// The response header of a Mercure 1.0 subscription that says where the stream resumed.
pub(crate) const MERCURE_LAST_EVENT_ID: &str = "mercure-last-event-id";

/// A selector as asked for, and how to read it.
enum Asked {
    /// 0.x `topic=`: `*`, a URI template or an exact topic.
    Topic(String),
    /// 1.0 `match=` or `match_exact=`.
    Exact(String),
    /// 1.0 `match_urlpattern=`.
    UrlPattern(String),
}

impl Asked {
    /// Its text, as the request gave it.
    fn text(&self) -> &str {
        match self {
            Asked::Topic(s) | Asked::Exact(s) | Asked::UrlPattern(s) => s,
        }
    }

    /// What the subscription events and the API call it.
    fn watched(&self) -> Watched {
        let matcher = |match_type: &str, text: &str| Watched::Match {
            match_type: match_type.to_owned(),
            text: text.to_owned(),
        };
        match self {
            Asked::Topic(topic) => Watched::Topic(topic.clone()),
            Asked::Exact(text) => matcher("exact", text),
            Asked::UrlPattern(text) => matcher("urlpattern", text),
        }
    }
}

/// The fields of a subscribe request's query string.
#[derive(Default)]
struct SubscribeQuery {
    generation: Generation,
    asked: Vec<Asked>,
    last_event_id: Option<String>,
    authorization: Option<String>,
    /// `retained=1` (a Herald extension): the retained updates of matching topics first.
    retained: bool,
}

/// Reads a subscribe request's fields: its query string, then (for `QUERY`) its form body.
fn parse_subscribe_query(query: &str, form: &[u8]) -> Result<SubscribeQuery, HttpError> {
    let mut q = SubscribeQuery::default();
    let (mut topics, mut matchers) = (false, false);
    let (mut id_v0, mut id_v1) = (None, None);
    let fields =
        form_pairs(query.as_bytes(), "query parameter").chain(form_pairs(form, "form field"));
    for pair in fields {
        let (key, value) = pair?;
        match &*key {
            "topic" => {
                topics = true;
                q.asked.push(Asked::Topic(value));
            }
            "match" | "match_exact" => {
                matchers = true;
                q.asked.push(Asked::Exact(value));
            }
            "match_urlpattern" => {
                matchers = true;
                q.asked.push(Asked::UrlPattern(value));
            }
            // 1.0 reserves the namespace: a matcher type the hub does not know is an error,
            // not a parameter to ignore.
            // (Compared as bytes: a parameter name may have a multi-byte character anywhere.)
            other
                if other
                    .as_bytes()
                    .get(..5)
                    .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"match")) =>
            {
                return Err(HttpError::bad_request(format!(
                    "unknown matcher parameter {other:?}: this hub supports \"match\" (or \
                     \"match_exact\") and \"match_urlpattern\""
                )));
            }
            // `Last-Event-ID` as a query parameter is the older spelling of `lastEventID`.
            "lastEventID" | "Last-Event-ID" => {
                id_v0.get_or_insert(value);
            }
            "last_event_id" => {
                id_v1.get_or_insert(value);
            }
            auth::QUERY_PARAM => q.authorization = Some(value),
            "retained" => q.retained = !matches!(&*value, "" | "0" | "false" | "off"),
            _ => {}
        }
    }
    if topics && matchers {
        return Err(HttpError::bad_request(
            "a subscribe request is Mercure 0.x (\"topic\" parameters) or 1.0 (\"match\" and \"match_urlpattern\" parameters), not both",
        ));
    }
    if matchers {
        q.generation = Generation::V1;
        if let Some(bad) = q
            .asked
            .iter()
            .find(|a| a.text().chars().any(super::forbidden_in_v1))
        {
            return Err(HttpError::bad_request(format!(
                "the matcher {:?} has a control or format character, which Mercure 1.0 does \
                 not allow in matchers",
                bad.text()
            )));
        }
        q.last_event_id = id_v1;
        if q.authorization.is_some() {
            return Err(HttpError::bad_request(
                "Mercure 1.0 requests carry no token in the URL: send it as `Authorization: \
                 Bearer <jwt>` or in the __Secure-mercure_access_token cookie",
            ));
        }
    } else {
        q.last_event_id = id_v0;
    }
    Ok(q)
}

/// The headers of every subscription stream (beside `Last-Event-ID`, CORS and `Link`).
const SSE_HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    (
        "cache-control",
        "private, no-cache, no-store, must-revalidate, max-age=0",
    ),
    // Tells nginx not to buffer the stream.
    ("x-accel-buffering", "no"),
];

/// A subscribe request that passed every check: the answer's headers and the subscriber that
/// makes its body. Built once, by [`respond`], whatever the transport; each transport only
/// renders it (the status is always `200`), adding its own framing: the direct HTTP/1 writer
/// (`stream.rs`) a chunked or close-delimited body and `Connection: close`, hyper (HTTP/2, and
/// HTTP/1 requests the direct path leaves to it) its frames.
pub(crate) struct SubscriptionResponse {
    /// Every header of the answer: SSE, `Last-Event-ID`, `Link` and CORS.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub subscriber: Subscriber,
}

/// Checks a subscribe request (selectors, token, `Last-Event-ID`), registers the
/// subscription and builds its answer. Every transport answers with this, so all of them
/// accept and refuse exactly the same requests with the same headers.
///
/// `form` is the body of a `QUERY` request (fields as in the query string, which they add
/// to), empty for a `GET`.
pub(crate) async fn respond(
    hub: &Hub,
    uri: &http::Uri,
    headers: &HeaderMap,
    form: &[u8],
) -> Result<SubscriptionResponse, HttpError> {
    let (subscriber, resumed_from, generation) = open(hub, uri, headers, form).await?;
    let mut answer = Vec::with_capacity(8);
    for (name, value) in SSE_HEADERS {
        answer.push((
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }
    // Ids are validated single-line when published; one a header cannot carry is left out.
    if let Some(id) = resumed_from.and_then(|id| HeaderValue::from_str(&id).ok()) {
        // 1.0 renamed it: `Last-Event-ID` is a request header.
        let name = match generation {
            Generation::V0 => LAST_EVENT_ID,
            Generation::V1 => HeaderName::from_static(MERCURE_LAST_EVENT_ID),
        };
        answer.push((name, id));
    }
    answer.push((header::LINK, HeaderValue::from_static(LINK)));
    answer.push((ACCEPT_QUERY, HeaderValue::from_static(FORM)));
    let origin = headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
    let cors = match generation {
        Generation::V0 => cors::simple_headers,
        Generation::V1 => cors::simple_headers_v1,
    };
    answer.extend(cors(&hub.inner.settings.cors_origins, origin));
    Ok(SubscriptionResponse {
        headers: answer,
        subscriber,
    })
}

/// Checks a subscribe request and registers the subscription: its subscriber, the
/// `Last-Event-ID` to answer (the id resumed from, or `earliest`) and the request's generation.
async fn open(
    hub: &Hub,
    uri: &http::Uri,
    headers: &HeaderMap,
    form: &[u8],
) -> Result<(Subscriber, Option<String>, Generation), HttpError> {
    let query = parse_subscribe_query(uri.query().unwrap_or(""), form)?;
    let protocol = hub.inner.settings.protocol;
    match query.generation {
        Generation::V0 if !protocol.serves_v0() => {
            return Err(HttpError::bad_request(
                "this hub serves Mercure 1.0 only (--protocol 1): subscribe with ?match=<topic> \
                 or ?match_urlpattern=<URL pattern>, not ?topic=",
            ));
        }
        Generation::V1 if !protocol.serves_v1() => {
            return Err(HttpError::bad_request(
                "this hub serves Mercure 0.x only (--protocol 0): subscribe with ?topic=<selector>",
            ));
        }
        _ => {}
    }
    if query.asked.is_empty() {
        return Err(HttpError::bad_request(
            "missing \"topic\" query parameter: subscribe with ?topic=<selector> (repeatable; \
             a topic, a URI template or *), or in Mercure 1.0 with ?match=<topic> or \
             ?match_urlpattern=<URL pattern>",
        ));
    }
    let settings = &hub.inner.settings;
    let open = usize::try_from(hub.metrics().connections.get()).unwrap_or(0);
    let for_subscribers = settings
        .max_connections
        .saturating_sub(settings.reserved_connections);
    if open > for_subscribers {
        // The rest is kept so that health checks and publishers always get in.
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this hub holds all the subscriptions it may ({for_subscribers} connections); \
                 retry later or on another node"
            ),
        ));
    }
    if query.asked.len() > settings.max_topics {
        return Err(HttpError::bad_request(format!(
            "too many \"topic\" parameters: {} given, at most {} allowed (the hub's \
             --max-topics)",
            query.asked.len(),
            settings.max_topics
        )));
    }
    let cookie = match query.generation {
        Generation::V0 => auth::COOKIE_NAME,
        Generation::V1 => auth::COOKIE_NAME_V1,
    };
    let grants = grants(
        hub,
        Role::Subscriber,
        headers,
        uri,
        query.authorization.as_deref(),
        &[cookie],
    )?;
    if grants.is_none() && !settings.anonymous {
        return Err(HttpError::unauthorized(
            "this hub requires a subscriber JWT: send it as `Authorization: Bearer <jwt>`, in the \
             authorization query parameter or in the mercureAuthorization cookie (Mercure 1.0: \
             the __Secure-mercure_access_token cookie)",
        )
        .challenge(uri, headers, None));
    }
    let base = (query.generation == Generation::V1).then(|| super::hub_url(uri, headers));
    let selectors = query
        .asked
        .iter()
        .map(|asked| match asked {
            Asked::Topic(s) => Selector::parse(s),
            Asked::Exact(s) => Selector::exact_match(s),
            Asked::UrlPattern(s) => Selector::url_pattern(s, base.as_ref().expect("1.0")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| match err {
            SelectorError::OverBudget { .. } => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
            }
            err => HttpError::bad_request(format!("invalid topic selector: {err}")),
        })?;
    let topics = SelectorSet::from_selectors(selectors);
    let last_event_id = headers
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id.clone())
        .filter(|id| !id.is_empty());

    let inner = &hub.inner;
    // Each subscription's payload, for its subscription events (before the grants move).
    let watched: Vec<(Watched, Option<serde_json::Value>)> = query
        .asked
        .iter()
        .map(|asked| {
            let payload = grants.as_ref().and_then(|g| g.payload_for(asked.text()));
            (asked.watched(), payload)
        })
        .collect();
    let filter = Arc::new(Filter { topics, grants });
    // Register first, then look up history: see subscriber.rs for why this order is gap-free.
    let registration = inner.dispatcher.register(filter.clone());
    let live_after = registration.live_after;
    // As the reference hub does: a known id (or `earliest`) resumes there and the response's
    // `Last-Event-ID` names it; an id the hub does not know replays nothing (live updates only)
    // and the response says `earliest`, the protocol's signal to re-fetch the state.
    let (replay_after, resumed_from) = match &last_event_id {
        None => (None, None),
        Some(id) => match inner.history.resolve(id).await.map_err(store_error)? {
            Start::After(position) => (Some(position), Some(id.clone())),
            Start::Unknown => (None, Some(EARLIEST.to_owned())),
        },
    };
    // A resuming subscriber gets its replay instead (it has seen the retained values). One
    // whose id the hub does not know has lost its place: the latest values are the state it
    // should re-fetch, so it gets them as a new subscriber does.
    let retained = match replay_after {
        None => Some(retained_prelude(hub, &filter, query.retained, live_after).await?),
        Some(_) => None,
    };
    let mut subscriber = Subscriber::new(
        registration,
        filter,
        inner.history.clone(),
        inner.metrics.clone(),
        replay_after,
    );
    if last_event_id.as_deref() == Some(EARLIEST) {
        subscriber = subscriber.replaying_from_earliest();
    }
    if let Some(retained) = retained {
        subscriber = subscriber.with_prelude(retained);
    }
    subscriber = subscriber.with_conflation(inner.conflation.clone());
    if let Some(registry) = &inner.subscriptions {
        let (id, events) = registry.connect(watched);
        let started = registry.announce(inner.history.clone(), None, events);
        // The guard first: if this request is dropped while the start is announced, its end
        // is announced all the same, after the start.
        subscriber = subscriber.with_subscription(SubscriptionGuard::new(
            id,
            registry.clone(),
            inner.history.clone(),
            started.clone(),
        ));
        started.await;
    }
    Ok((subscriber, resumed_from, query.generation))
}

/// The retained updates a new subscription receives first (a Herald extension): with
/// `retained=1`, those its filter accepts; else those of topics `--retain` names, if any. Only
/// those at or before `live_after`, where its live stream starts: a newer one comes live.
async fn retained_prelude(
    hub: &Hub,
    filter: &Filter,
    asked: bool,
    live_after: u64,
) -> Result<Vec<Arc<crate::update::Update>>, HttpError> {
    let settings = &hub.inner.settings;
    if !asked && settings.retain.is_empty() {
        return Ok(Vec::new());
    }
    let Some(snapshot) = hub.inner.history.retained() else {
        if !asked {
            return Ok(Vec::new()); // a store of an embedding application, without them
        }
        return Err(HttpError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this hub's history store does not keep retained updates (Herald's memory, file, \
             redis and nats stores do): subscribe without \"retained\"",
        ));
    };
    let always = if asked {
        None
    } else {
        Some(SelectorSet::parse(&settings.retain).map_err(|err| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("--retain: {err}"),
            )
        })?)
    };
    let mut updates = snapshot.await.map_err(store_error)?;
    updates.retain(|update| {
        update.position <= live_after
            && filter.accepts(update)
            && always
                .as_ref()
                .is_none_or(|set| set.matches_any(update.topics().iter().map(String::as_str)))
    });
    Ok(updates)
}

/// `GET /.well-known/mercure` through hyper: [`respond`]'s answer as a streamed body.
pub(super) async fn subscribe(
    State(hub): State<Hub>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, HttpError> {
    let answer = respond(&hub, request.uri(), &headers, b"").await?;
    Ok(streamed(answer))
}

/// Any other method on the hub's path: `QUERY` subscribes (a reference hub extension of
/// Mercure 1.0: the fields travel in a form body, which has no URL length limit and stays out
/// of access logs), the rest get `405`.
pub(super) async fn other_method(
    State(hub): State<Hub>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, HttpError> {
    if request.method().as_str() != "QUERY" {
        let mut refusal = HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not a method of {HUB_PATH}: GET or QUERY subscribes, POST publishes",
                request.method()
            ),
        )
        .into_response();
        refusal
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        return Ok(refusal);
    }
    let essence = headers.get(header::CONTENT_TYPE).map(|ct| {
        ct.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
    });
    match essence {
        None | Some("") => {
            return Err(HttpError::bad_request(format!(
                "a QUERY subscription carries its fields in a body with Content-Type: {FORM}"
            )));
        }
        Some(essence) if !essence.eq_ignore_ascii_case(FORM) => {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("a QUERY subscription's body is {FORM} (got {essence:?})"),
            ));
        }
        Some(_) => {}
    }
    let uri = request.uri().clone();
    let form = read_body(request.into_body(), &hub.inner.settings).await?;
    let answer = respond(&hub, &uri, &headers, &form).await?;
    Ok(streamed(answer))
}

/// A subscription's answer as a hyper response with a streamed body.
fn streamed(answer: SubscriptionResponse) -> Response {
    let SubscriptionResponse {
        headers: answer,
        mut subscriber,
    } = answer;
    // hyper takes one buffer per frame: the parts of a chunk are sent as frames of their own.
    let mut parts = std::collections::VecDeque::new();
    let body = futures_util::stream::poll_fn(move |cx| {
        loop {
            if let Some(part) = parts.pop_front() {
                return std::task::Poll::Ready(Some(Ok::<_, std::convert::Infallible>(part)));
            }
            match std::task::ready!(subscriber.poll_next_chunk(cx)) {
                Some(chunk) => parts.extend(chunk.into_parts()),
                None => return std::task::Poll::Ready(None),
            }
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    for (name, value) in answer {
        h.append(name, value);
    }
    response
}
