//! CORS, in one place for every route and transport: the headers of a simple request (which
//! the direct subscription path writes too) and the answer to a preflight.
//!
//! With `--cors-origin` the hub answers browsers from those origins with credentials allowed
//! (the `mercureAuthorization` cookie); `*` allows any origin, by echoing it, since a literal
//! `*` rules out credentials.

use crate::hub::Hub;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

/// What a browser may send in a request (`Access-Control-Allow-Headers`).
const ALLOW_HEADERS: &str = "authorization,cache-control,content-type,last-event-id";
/// The methods of the hub's routes (`Access-Control-Allow-Methods`).
const ALLOW_METHODS: &str = "GET,POST,QUERY,OPTIONS";
/// What a page's script may read of a response (`Access-Control-Expose-Headers`).
const EXPOSE_HEADERS: &str = "link,last-event-id,mercure-last-event-id,accept-query";
/// Responses differ with these request headers (`Vary`).
const VARY: &str = "origin, access-control-request-method, access-control-request-headers";

/// The CORS headers of a simple (non-preflight) request from `origin`; none when CORS is off.
pub(crate) fn simple_headers(
    origins: &[String],
    origin: Option<&[u8]>,
) -> Vec<(HeaderName, HeaderValue)> {
    with_expose(common_headers(origins, origin))
}

/// [`simple_headers`] for a Mercure 1.0 subscription. 1.0 forbids answering a credentialed
/// request with `*` or with an origin that is not on a list: where the list is `*`, the answer
/// is `Access-Control-Allow-Origin: *` without credentials (cookies are not sent across
/// origins then); a listed origin is answered as for 0.x.
pub(crate) fn simple_headers_v1(
    origins: &[String],
    origin: Option<&[u8]>,
) -> Vec<(HeaderName, HeaderValue)> {
    let listed = origin
        .and_then(|o| std::str::from_utf8(o).ok())
        .is_some_and(|o| origins.iter().any(|allowed| allowed == o));
    if listed || !origins.iter().any(|o| o == "*") {
        return simple_headers(origins, origin);
    }
    with_expose(vec![
        (header::VARY, HeaderValue::from_static(VARY)),
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
    ])
}

/// `headers` and, unless there are none, the exposed headers.
fn with_expose(mut headers: Vec<(HeaderName, HeaderValue)>) -> Vec<(HeaderName, HeaderValue)> {
    if !headers.is_empty() {
        headers.push((
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        ));
    }
    headers
}

/// What a simple request and a preflight have in common.
fn common_headers(origins: &[String], origin: Option<&[u8]>) -> Vec<(HeaderName, HeaderValue)> {
    if origins.is_empty() {
        return Vec::new();
    }
    let mut headers = vec![
        (header::VARY, HeaderValue::from_static(VARY)),
        (
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ),
    ];
    if let Some(origin) = origin.and_then(|o| std::str::from_utf8(o).ok())
        && origins.iter().any(|o| o == "*" || o == origin)
        && let Ok(value) = HeaderValue::from_str(origin)
    {
        headers.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, value));
    }
    headers
}

fn origin(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(header::ORIGIN).map(HeaderValue::as_bytes)
}

/// The middleware of every route: answers preflights, adds the headers to the rest.
pub(crate) async fn layer(
    State(hub): State<Hub>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let origins = &hub.inner.settings.cors_origins;
    if origins.is_empty() {
        return next.run(request).await;
    }
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = StatusCode::OK.into_response();
        let h = response.headers_mut();
        for (name, value) in common_headers(origins, origin(request.headers())) {
            h.insert(name, value);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        return response;
    }
    let headers = simple_headers(origins, origin(request.headers()));
    let mut response = next.run(request).await;
    // A subscription's answer carries its own (`subscribe::respond`, by generation).
    if response
        .headers()
        .contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS)
    {
        return response;
    }
    for (name, value) in headers {
        response.headers_mut().insert(name, value);
    }
    response
}
