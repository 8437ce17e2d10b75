//! HTTP: routes, the Mercure request shapes, response headers, CORS and errors. Everything
//! protocol-specific about requests is parsed here, so the core sees selectors and grants.

use crate::auth::{self, Grants, Role};
use crate::dispatch::Filter;
use crate::history::{EARLIEST, Start, StoreError};
use crate::hub::Hub;
use crate::subscriber::Subscriber;
use crate::subscriptions::{SUBSCRIPTIONS_PATH, SubscriptionGuard, SubscriptionList};
use crate::topic::{SelectorError, SelectorSet};
use crate::update::{NewUpdate, new_id};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The path of the hub.
pub(crate) const HUB_PATH: &str = "/.well-known/mercure";

const LINK_VALUE: &str = "</.well-known/mercure>; rel=\"mercure\"";
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// An error answered to the client: a status and a message that says what to fix.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::UNAUTHORIZED, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 here is a passing condition (a full hub, a store outage).
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mercure\""),
            );
        }
        response
    }
}

/// The hub's routes, with CORS and the discovery `Link` header.
pub fn router(hub: Hub) -> Router {
    let cors = cors_layer(&hub.inner.settings.cors_origins);
    let mut router = Router::new()
        .route(HUB_PATH, get(subscribe).post(publish))
        .route(SUBSCRIPTIONS_PATH, get(list_subscriptions))
        .route(
            &format!("{SUBSCRIPTIONS_PATH}/{{topic}}"),
            get(list_subscriptions),
        )
        .route(
            &format!("{SUBSCRIPTIONS_PATH}/{{topic}}/{{subscriber}}"),
            get(list_subscriptions),
        )
        .merge(crate::console::routes())
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::map_response(add_link))
        .layer(axum::middleware::from_fn(refuse_bad_heads));
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router.with_state(hub)
}

/// The request-head rules hyper's parser does not apply itself, checked in this one place
/// for every transport: the direct subscription path hands a head that fails them to hyper,
/// whose router answers it here.
pub(crate) fn check_head(version: http::Version, headers: &HeaderMap) -> Result<(), HttpError> {
    // RFC 9112 section 3.2: a server must answer 400 to an HTTP/1.1 request without a Host
    // header, and to any request with more than one (proxies and virtual hosts could disagree
    // on which applies).
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(HttpError::bad_request(format!(
            "a request may have one Host header, this one has {hosts}"
        )));
    }
    if version == http::Version::HTTP_11 && hosts == 0 {
        return Err(HttpError::bad_request(
            "an HTTP/1.1 request needs a Host header, this one has none",
        ));
    }
    Ok(())
}

async fn refuse_bad_heads(request: Request, next: axum::middleware::Next) -> Response {
    match check_head(request.version(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

async fn add_link(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::LINK, HeaderValue::from_static(LINK_VALUE));
    response
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    // Credentials (cookies) rule out a literal `*`; echoing the request's origin is how `*`
    // keeps working with the mercureAuthorization cookie.
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CACHE_CONTROL,
                header::CONTENT_TYPE,
                LAST_EVENT_ID,
            ])
            .expose_headers([header::LINK, LAST_EVENT_ID]),
    )
}

/// The fields of a subscribe request's query string.
#[derive(Default)]
struct SubscribeQuery {
    topics: Vec<String>,
    last_event_id: Option<String>,
    authorization: Option<String>,
}

fn parse_subscribe_query(query: &str) -> Result<SubscribeQuery, HttpError> {
    let mut q = SubscribeQuery::default();
    for pair in form_pairs(query.as_bytes(), "query parameter") {
        let (key, value) = pair?;
        match &*key {
            "topic" => q.topics.push(value),
            // `Last-Event-ID` as a query parameter is the older spelling of `lastEventID`.
            "lastEventID" | "Last-Event-ID" => {
                q.last_event_id.get_or_insert(value);
            }
            auth::QUERY_PARAM => q.authorization = Some(value),
            _ => {}
        }
    }
    Ok(q)
}

/// The token in the request's `authorization` query parameter, if any.
fn query_token(request: &Request) -> Result<Option<String>, HttpError> {
    let Some(query) = request.uri().query() else {
        return Ok(None);
    };
    for pair in form_pairs(query.as_bytes(), "query parameter") {
        let (key, value) = pair?;
        if key == auth::QUERY_PARAM {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// The `key=value` pairs of an `application/x-www-form-urlencoded` body or query string,
/// decoded strictly: a name or value whose percent-decoded bytes are not UTF-8 is an error
/// naming it (`what` says where it was), never silently replaced with U+FFFD as
/// `form_urlencoded::parse` would, which would store and deliver data the publisher never
/// sent.
pub(crate) fn form_pairs<'a>(
    input: &'a [u8],
    what: &'static str,
) -> impl Iterator<Item = Result<(String, String), HttpError>> + 'a {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(move |pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[..0]),
            };
            let key = form_decode(key).map_err(|_| {
                HttpError::bad_request(format!(
                    "a {what} name is not valid UTF-8 once percent-decoded: encode text as UTF-8"
                ))
            })?;
            let value = form_decode(value).map_err(|_| {
                HttpError::bad_request(format!(
                    "the {what} {key:?} is not valid UTF-8 once percent-decoded: encode text \
                     as UTF-8 (binary data needs an encoding such as base64)"
                ))
            })?;
            Ok((key, value))
        })
}

/// Decodes one form component: `+` is a space, `%XX` a byte; the result must be UTF-8.
fn form_decode(raw: &[u8]) -> Result<String, std::string::FromUtf8Error> {
    let plus_as_space: std::borrow::Cow<'_, [u8]> = if raw.contains(&b'+') {
        raw.iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect::<Vec<u8>>()
            .into()
    } else {
        raw.into()
    };
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes)
}

/// Verifies the request's token, if any, for `role`.
fn grants(
    hub: &Hub,
    role: Role,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Option<Grants>, HttpError> {
    let located = auth::locate_token(headers, query_token)
        .map_err(|err| HttpError::unauthorized(err.to_string()))?;
    if role == Role::Publisher
        && let Some((_, auth::Location::Cookie)) = located
    {
        check_cookie_origin(hub, headers)?;
    }
    match located.map(|(token, _)| token) {
        None => Ok(None),
        Some(token) => hub
            .inner
            .verifier
            .verify(role, token)
            .map(Some)
            .map_err(|err| match err {
                auth::AuthError::Selector(SelectorError::OverBudget { .. }) => {
                    HttpError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
                }
                err => HttpError::unauthorized(format!("{err}")),
            }),
    }
}

/// A browser sends the cookie with any request to the hub, including one forged by another
/// site; publishing with it is only allowed from the hub's own origin or a configured CORS origin.
fn check_cookie_origin(hub: &Hub, headers: &HeaderMap) -> Result<(), HttpError> {
    let origin = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let uri: http::Uri = v.parse().ok()?;
            Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
        });
    let Some(origin) = origin else {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "publishing with the mercureAuthorization cookie needs an Origin header from an \
             allowed origin; send the JWT in the Authorization header instead",
        ));
    };
    let own = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| origin.ends_with(&format!("://{host}")));
    let allowed = hub
        .inner
        .settings
        .cors_origins
        .iter()
        .any(|o| o == "*" || *o == origin);
    if own || allowed {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "origin {origin} may not publish with the mercureAuthorization cookie (add it with --cors-origin)"
            ),
        ))
    }
}

async fn subscribe(
    State(hub): State<Hub>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, HttpError> {
    let opened = open_subscription(&hub, request.uri(), &headers).await?;
    let mut subscriber = opened.subscriber;
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
    for (name, value) in SSE_HEADERS {
        h.insert(*name, HeaderValue::from_static(value));
    }
    if let Some(v) = opened
        .resumed_from
        .and_then(|id| HeaderValue::from_str(&id).ok())
    {
        h.insert(LAST_EVENT_ID, v);
    }
    Ok(response)
}

/// The response headers of every subscription stream (beside `Last-Event-ID`, CORS and `Link`).
pub(crate) const SSE_HEADERS: &[(&str, &str)] = &[
    ("content-type", "text/event-stream"),
    (
        "cache-control",
        "private, no-cache, no-store, must-revalidate, max-age=0",
    ),
    // Tells nginx not to buffer the stream.
    ("x-accel-buffering", "no"),
];

/// A subscription that passed every check, ready to stream.
pub(crate) struct Opened {
    pub subscriber: Subscriber,
    /// The `Last-Event-ID` response header: the id resumed from, or `earliest`.
    pub resumed_from: Option<String>,
}

/// Checks a subscribe request (selectors, token, `Last-Event-ID`) and registers the
/// subscription. Shared by the hyper route and the direct stream path (`stream.rs`), so both
/// accept and refuse exactly the same requests.
pub(crate) async fn open_subscription(
    hub: &Hub,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<Opened, HttpError> {
    let query = parse_subscribe_query(uri.query().unwrap_or(""))?;
    if query.topics.is_empty() {
        return Err(HttpError::bad_request(
            "missing \"topic\" query parameter: subscribe with ?topic=<selector> (repeatable; \
             a topic, a URI template or *)",
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
    if query.topics.len() > settings.max_topics {
        return Err(HttpError::bad_request(format!(
            "too many \"topic\" parameters: {} given, at most {} allowed (the hub's \
             --max-topics)",
            query.topics.len(),
            settings.max_topics
        )));
    }
    let grants = grants(
        hub,
        Role::Subscriber,
        headers,
        query.authorization.as_deref(),
    )?;
    if grants.is_none() && !settings.anonymous {
        return Err(HttpError::unauthorized(
            "this hub requires a subscriber JWT: send it as `Authorization: Bearer <jwt>`, in the \
             authorization query parameter or in the mercureAuthorization cookie",
        ));
    }
    let topics = SelectorSet::parse(&query.topics).map_err(|err| match err {
        SelectorError::OverBudget { .. } => {
            HttpError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
        err => HttpError::bad_request(format!("invalid topic selector: {err}")),
    })?;
    let last_event_id = headers
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id.clone())
        .filter(|id| !id.is_empty());

    let inner = &hub.inner;
    let payload = grants.as_ref().and_then(|g| g.payload.clone());
    let filter = Arc::new(Filter { topics, grants });
    // Register first, then look up history: see subscriber.rs for why this order is gap-free.
    let registration = inner.dispatcher.register(filter.clone());
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
    if let Some(registry) = &inner.subscriptions {
        let (id, events) = registry.connect(query.topics, payload);
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
    Ok(Opened {
        subscriber,
        resumed_from,
    })
}

/// The CORS headers of a simple (non-preflight) request from `origin`, as the CORS layer adds
/// them on the hyper path; `None` when CORS is off.
pub(crate) fn cors_simple_headers(
    origins: &[String],
    origin: Option<&[u8]>,
) -> Option<Vec<(&'static str, String)>> {
    if origins.is_empty() {
        return None;
    }
    let mut headers = vec![
        (
            "vary",
            "origin, access-control-request-method, access-control-request-headers".to_owned(),
        ),
        ("access-control-allow-credentials", "true".to_owned()),
    ];
    if let Some(origin) = origin.and_then(|o| std::str::from_utf8(o).ok())
        && origins.iter().any(|o| o == "*" || o == origin)
    {
        headers.push(("access-control-allow-origin", origin.to_owned()));
    }
    headers.push((
        "access-control-expose-headers",
        "link,last-event-id".to_owned(),
    ));
    Some(headers)
}

/// The discovery `Link` header value.
pub(crate) const LINK: &str = LINK_VALUE;

fn store_error(err: StoreError) -> HttpError {
    match err {
        StoreError::DuplicateId(_) => HttpError::new(StatusCode::CONFLICT, err.to_string()),
        StoreError::Invalid(_) => HttpError::bad_request(err.to_string()),
        // `Damaged` only comes from opening a store, never from a request.
        StoreError::Unavailable { .. } | StoreError::Damaged(_) => HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{err}; retry later"),
        ),
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

async fn publish(
    State(hub): State<Hub>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, HttpError> {
    let query_token = query_token(&request)?;
    let Some(grants) = grants(&hub, Role::Publisher, &headers, query_token.as_deref())? else {
        return Err(HttpError::unauthorized(
            "publishing requires a publisher JWT with a mercure.publish claim: send it as \
             `Authorization: Bearer <jwt>`",
        ));
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
        ));
    }
    let inner = &hub.inner;
    let update = inner.history.append(update).await.map_err(|err| {
        if matches!(err, StoreError::Unavailable { .. }) {
            inner.metrics.store_errors.inc();
        }
        store_error(err)
    })?;
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

async fn readyz(State(hub): State<Hub>) -> Response {
    if hub.inner.history.is_ready() {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "history store not ready\n").into_response()
    }
}

async fn metrics(State(hub): State<Hub>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        hub.metrics().render(),
    )
        .into_response()
}

/// `GET /.well-known/mercure/subscriptions[/{topic}[/{subscriber}]]`: the active subscriptions,
/// for a bearer whose `mercure.subscribe` claim matches this URL (as for private updates).
async fn list_subscriptions(
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
    let Some(grants) = grants(&hub, Role::Subscriber, &headers, query_token.as_deref())? else {
        return Err(HttpError::unauthorized(
            "the subscriptions API requires a subscriber JWT whose mercure.subscribe claim \
             matches this URL",
        ));
    };
    let path = request.uri().path();
    if !grants.subscribe.matches(path) {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!("the JWT's mercure.subscribe claim does not match {path:?}"),
        ));
    }
    let segment = |name: &str| {
        segments
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (topic, subscriber) = (segment("topic"), segment("subscriber"));
    let (list, last_event_id) = registry.list(topic, subscriber);
    let last_event_id = last_event_id.unwrap_or_else(|| EARLIEST.to_owned());
    let body = if subscriber.is_some() {
        let Some(mut one) = list.into_iter().next() else {
            return Err(HttpError::new(
                StatusCode::NOT_FOUND,
                "no such active subscription",
            ));
        };
        one.context = Some("https://mercure.rocks/");
        one.last_event_id = Some(last_event_id.clone());
        serde_json::to_string(&one)
    } else {
        serde_json::to_string(&SubscriptionList::new(
            path.to_owned(),
            last_event_id.clone(),
            list,
        ))
    }
    .map_err(|err| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
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
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/ld+json"),
            ),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response())
}
