//! Fuzzes the hub's two Mercure requests end to end, in process, through the real router
//! (`herald_hub::router` over a memory-history hub with default settings): the publish
//! form and the subscribe query string.
//!
//! Input: one mode byte, then the body or query. Mode bit 0: publish (0) or subscribe (1).
//! Bit 1 picks the token:
//! - publish: a publisher token for `*`, or one for `https://example.com/books/{id}` and
//!   `https://example.com/public` only (so 403 is reachable);
//!   `POST /.well-known/mercure`, `content-type: application/x-www-form-urlencoded`, the rest
//!   of the input as the body. Status must be 200/400/403/413/415/503 (never 500, no
//!   panic); a 200's body is the update's id: the form's first `id` when it is not empty.
//!   With bit 2 set, a streaming publish instead (Herald's extension): `content-type:
//!   text/event-stream`, `?topic=https://example.com/public`, the rest as the event stream.
//!   Status 200/400/403/413/503; a 200's body is an event stream of `accepted` events, each
//!   with an id, then exactly one `done` (with their count) or `refused` (saying how many were
//!   stored before it), and nothing after it.
//! - subscribe: a subscriber token in `Authorization`, or none (then only an `authorization`
//!   parameter in the query can authorize); `GET /.well-known/mercure?<rest of the input>`,
//!   skipped unless that is a valid URI whose query is exactly the input. Status must be
//!   200/400/401/403; only the response head is read (the stream is dropped).
#![no_main]

use axum::body::Body;
use herald_fuzz::{
    PUBLISHER_SECRET, SUBSCRIBER_SECRET, assert_subscribe_answer, router, runtime, send, token,
};
use http::{Request, StatusCode, Uri, header};
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tower::ServiceExt as _;

struct Tokens {
    publish_any: String,
    publish_some: String,
    subscribe: String,
}

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| Tokens {
        publish_any: token(PUBLISHER_SECRET, &["*"], &[], None),
        publish_some: token(
            PUBLISHER_SECRET,
            &[
                "https://example.com/books/{id}",
                "https://example.com/public",
            ],
            &[],
            None,
        ),
        subscribe: token(
            SUBSCRIBER_SECRET,
            &[],
            &["https://example.com/books/{id}"],
            Some(4_102_444_800),
        ),
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode & 1 == 0 && mode & 4 != 0 {
        publish_stream(mode & 2 == 0, rest);
    } else if mode & 1 == 0 {
        publish(mode & 2 == 0, rest);
    } else {
        subscribe(mode & 2 == 0, rest);
    }
});

/// POSTs `body` to the hub in process with a publisher token (for `*`, or for two selectors
/// only); the status and the whole answer.
fn post(
    any_topic: bool,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (StatusCode, axum::body::Bytes) {
    let t = tokens();
    let token = if any_topic {
        &t.publish_any
    } else {
        &t.publish_some
    };
    // Every request says its Host: an HTTP/1.1 request without one is refused (400) before
    // anything else is looked at, and the run would fuzz nothing but that refusal.
    let request = Request::post(path)
        .header(header::HOST, "hub.example")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_vec()))
        .expect("a valid request");
    runtime().block_on(async {
        let response = router().clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a buffered body")
            .to_bytes();
        herald_fuzz::let_the_hub_run().await;
        (status, body)
    })
}

fn publish(any_topic: bool, body: &[u8]) {
    let (status, response_body) = post(
        any_topic,
        "/.well-known/mercure",
        "application/x-www-form-urlencoded",
        body,
    );
    assert!(
        matches!(
            status,
            StatusCode::OK
                | StatusCode::BAD_REQUEST
                | StatusCode::FORBIDDEN
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNSUPPORTED_MEDIA_TYPE
                | StatusCode::SERVICE_UNAVAILABLE
        ),
        "publish answered {status}: {}",
        String::from_utf8_lossy(&response_body)
    );
    if status == StatusCode::OK {
        // A field given twice keeps its first value (as the reference hub does); an empty
        // first `id` asks for a generated one.
        let id = form_urlencoded::parse(body)
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v.into_owned())
            .filter(|id| !id.is_empty());
        let answered = std::str::from_utf8(&response_body).expect("an id is UTF-8");
        match id {
            Some(id) => assert_eq!(answered, id),
            None => assert!(answered.starts_with("urn:uuid:"), "{answered:?}"),
        }
    }
}

fn publish_stream(any_topic: bool, body: &[u8]) {
    let (status, answer) = post(
        any_topic,
        "/.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Fpublic",
        "text/event-stream",
        body,
    );
    assert!(
        matches!(
            status,
            StatusCode::OK
                | StatusCode::BAD_REQUEST
                | StatusCode::FORBIDDEN
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::SERVICE_UNAVAILABLE
        ),
        "streaming publish answered {status}: {}",
        String::from_utf8_lossy(&answer)
    );
    if status != StatusCode::OK {
        return;
    }
    let mut decoder = herald_sse::Decoder::new();
    decoder
        .feed(&answer)
        .expect("the answer is a valid event stream");
    let events: Vec<_> = std::iter::from_fn(|| decoder.next_event()).collect();
    let (last, accepted) = events.split_last().expect("at least the closing event");
    assert!(!accepted.is_empty(), "a 200 stored something: {events:?}");
    for event in accepted {
        assert_eq!(event.event_type, "accepted", "{events:?}");
        assert!(!event.data.is_empty());
    }
    match &*last.event_type {
        "done" => assert_eq!(last.data, accepted.len().to_string()),
        "refused" => assert!(
            last.data.ends_with(&format!(
                "({} updates of this request were stored before it)",
                accepted.len()
            )),
            "{events:?}"
        ),
        other => panic!("the answer ends with {other:?}: {events:?}"),
    }
}

fn subscribe(with_token: bool, query: &[u8]) {
    let mut uri = b"/.well-known/mercure?".to_vec();
    uri.extend_from_slice(query);
    let Ok(uri) = Uri::from_maybe_shared(uri) else {
        return;
    };
    if uri.query().map(str::as_bytes) != Some(query) {
        return;
    }
    let mut request = Request::get(uri).header(header::HOST, "hub.example");
    if with_token {
        request = request.header(
            header::AUTHORIZATION,
            format!("Bearer {}", tokens().subscribe),
        );
    }
    let request = request.body(Body::empty()).expect("a valid request");
    // The response, and with it an accepted subscription, is dropped unread.
    assert_subscribe_answer(send(request), "subscribe");
}
