//! HTTP: the routes and what they share: errors, the request-head rules, form decoding and
//! token checks. Everything protocol-specific about requests is parsed here, so the core sees
//! selectors and grants. By concern: [`subscribe`] (one answer for every transport),
//! [`publish`], [`subscriptions_api`], [`cors`], [`health`].

pub(crate) mod cors;
mod health;
mod publish;
mod publish_stream;
mod resource_metadata;
pub(crate) mod subscribe;
mod subscriptions_api;

use crate::auth::{self, Grants, Role};
use crate::history::StoreError;
use crate::hub::Hub;
use crate::subscriptions::SUBSCRIPTIONS_PATH;
use crate::topic::SelectorError;
use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

/// The path of the hub.
pub(crate) const HUB_PATH: &str = "/.well-known/mercure";

/// The discovery `Link` header value, on every response.
pub(crate) const LINK: &str = "</.well-known/mercure>; rel=\"mercure\"";
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// An error answered to the client: a status and a message that says what to fix.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub status: StatusCode,
    pub message: String,
    /// The `WWW-Authenticate` challenge of an authorization error (RFC 6750), if made.
    pub challenge: Option<HeaderValue>,
}

/// Where the hub's OAuth 2.0 protected resource metadata (RFC 9728) is: the well-known prefix
/// before the hub's path.
pub(crate) const RESOURCE_METADATA_PATH: &str =
    "/.well-known/oauth-protected-resource/.well-known/mercure";

impl HttpError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
            challenge: None,
        }
    }

    /// The RFC 6750 challenge of an authorization error on a request to `uri`: `Bearer`, the
    /// error code if any (`invalid_token`, `insufficient_scope`, `invalid_request`; none when
    /// no token was given) and where the protected resource metadata is (RFC 9728), so that a
    /// client can find how to get a token.
    pub(crate) fn challenge(
        mut self,
        uri: &http::Uri,
        headers: &HeaderMap,
        error: Option<&str>,
    ) -> Self {
        let mut metadata = hub_url(uri, headers);
        metadata.set_path(RESOURCE_METADATA_PATH);
        let mut value = String::from("Bearer realm=\"mercure\"");
        if let Some(error) = error {
            value.push_str(&format!(", error=\"{error}\""));
        }
        value.push_str(&format!(", resource_metadata=\"{metadata}\""));
        self.challenge = HeaderValue::from_str(&value).ok();
        self
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
        if let Some(challenge) = self.challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        } else if self.status == StatusCode::UNAUTHORIZED {
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
    use subscriptions_api::list_subscriptions;
    Router::new()
        .route(
            HUB_PATH,
            get(subscribe::subscribe)
                .post(publish::publish)
                .fallback(subscribe::other_method),
        )
        .route(SUBSCRIPTIONS_PATH, get(list_subscriptions))
        .route(
            RESOURCE_METADATA_PATH,
            get(resource_metadata::resource_metadata),
        )
        .route(
            &format!("{SUBSCRIPTIONS_PATH}/{{topic}}"),
            get(list_subscriptions),
        )
        .route(
            &format!("{SUBSCRIPTIONS_PATH}/{{topic}}/{{subscriber}}"),
            get(list_subscriptions),
        )
        .route(
            &format!("{SUBSCRIPTIONS_PATH}/{{topic}}/{{subscriber}}/{{third}}"),
            get(list_subscriptions),
        )
        .merge(crate::console::routes())
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(axum::middleware::map_response(add_link))
        .layer(axum::middleware::from_fn(refuse_bad_heads))
        // Outermost: a preflight is answered before anything else looks at the request.
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            cors::layer,
        ))
        .with_state(hub)
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
        .insert(header::LINK, HeaderValue::from_static(LINK));
    response
}

/// Whether Mercure 1.0 forbids `c` in a matcher, a topic, an id or an event type: a control character (C0, DEL, C1) or a
/// Unicode format character (general category Cf: zero-width and bidirectional marks and the
/// like, which make two matchers that look the same differ).
pub(crate) fn forbidden_in_v1(c: char) -> bool {
    use icu_properties::CodePointMapData;
    use icu_properties::props::GeneralCategory;
    c.is_control() || CodePointMapData::<GeneralCategory>::new().get(c) == GeneralCategory::Format
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

/// The host a request was sent to: its `Host` header in HTTP/1, its `:authority` (which
/// hyper puts in the URI) in HTTP/2.
fn authority<'a>(headers: &'a HeaderMap, uri: &'a http::Uri) -> Option<&'a str> {
    match headers.get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => uri.authority().map(|a| a.as_str()),
    }
}

/// The hub's URL as a request to it names it, which Mercure 1.0 resolves relative URL
/// patterns and topics against. The scheme is the request's when it says (HTTP/2), else
/// `https`: what matters is that patterns and topics resolve against the same base.
pub(crate) fn hub_url(uri: &http::Uri, headers: &HeaderMap) -> url::Url {
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = authority(headers, uri).unwrap_or("localhost");
    url::Url::parse(&format!("{scheme}://{authority}{}", HUB_PATH))
        .or_else(|_| url::Url::parse(&format!("https://localhost{}", HUB_PATH)))
        .expect("a valid URL")
}

/// `uri` in absolute form (`scheme://host/path?query`) when it is a path (HTTP/1) and the
/// request says its host, so that the hub's URL as the request named it (`hub_url`: the base of
/// Mercure 1.0's relative URL patterns, the audience of its tokens, the metadata address in
/// challenges) has the connection's real scheme. HTTP/2 requests are absolute already.
pub(crate) fn absolute(uri: &http::Uri, headers: &HeaderMap, scheme: &str) -> http::Uri {
    if uri.scheme().is_some() {
        return uri.clone();
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return uri.clone();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{path}")
        .parse()
        .unwrap_or_else(|_| uri.clone())
}

/// The token cookies a request may carry, for a request that says nothing of its generation
/// (a publish, the subscriptions API): Mercure 0.x's, then 1.0's.
const ANY_COOKIE: &[&str] = &[auth::COOKIE_NAME, auth::COOKIE_NAME_V1];

/// Verifies the token, if any, of a request to `uri` for `role`, looking for the cookie among
/// `cookies`.
fn grants(
    hub: &Hub,
    role: Role,
    headers: &HeaderMap,
    uri: &http::Uri,
    query_token: Option<&str>,
    cookies: &[&str],
) -> Result<Option<Grants>, HttpError> {
    let located = auth::locate_token_in(headers, query_token, cookies).map_err(|err| {
        HttpError::unauthorized(err.to_string()).challenge(uri, headers, Some("invalid_request"))
    })?;
    if role == Role::Publisher
        && let Some((_, auth::Location::Cookie)) = located
    {
        check_cookie_origin(hub, headers, authority(headers, uri))?;
    }
    match located.map(|(token, _)| token) {
        None => Ok(None),
        Some(token) => hub
            .inner
            .verifier
            .verify_at(role, token, || Some(hub_url(uri, headers)))
            .map(Some)
            .map_err(|err| match err {
                auth::AuthError::Selector(SelectorError::OverBudget { .. }) => {
                    HttpError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
                }
                err => HttpError::unauthorized(format!("{err}")).challenge(
                    uri,
                    headers,
                    Some("invalid_token"),
                ),
            }),
    }
}

/// A browser sends the cookie with any request to the hub, including one forged by another
/// site; publishing with it is only allowed from the hub's own origin or a configured CORS origin.
fn check_cookie_origin(
    hub: &Hub,
    headers: &HeaderMap,
    authority: Option<&str>,
) -> Result<(), HttpError> {
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
    let own = authority.is_some_and(|host| origin.ends_with(&format!("://{host}")));
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

/// Reads a request body (a publish, a `QUERY` subscription) within its bounds: at most `max_body` bytes, and in time, where the
/// time allowed is `body_timeout` plus a second per `body_min_rate` bytes received. A body that
/// stops half-way or trickles must not hold its connection and buffer for long.
pub(crate) async fn read_body(
    mut body: axum::body::Body,
    settings: &crate::Settings,
) -> Result<bytes::Bytes, HttpError> {
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
            0 => std::time::Duration::ZERO,
            rate => std::time::Duration::from_millis(
                (received.len() as u64).saturating_mul(1000) / rate,
            ),
        };
        let deadline = started + settings.body_timeout.saturating_add(earned);
        let frame = match tokio::time::timeout_at(
            deadline,
            http_body_util::BodyExt::frame(&mut body),
        )
        .await
        {
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

fn store_error(err: StoreError) -> HttpError {
    match err {
        StoreError::Invalid(_) => HttpError::bad_request(err.to_string()),
        // `Damaged` only comes from opening a store, never from a request.
        StoreError::Unavailable { .. } | StoreError::Damaged(_) => HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{err}; retry later"),
        ),
    }
}
