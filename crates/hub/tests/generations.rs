//! Mercure 1.0 beside 0.x on one hub, over every transport: a subscribe request with a
//! parameter of 1.0's `match` namespace is read as 1.0 (`match` / `match_exact` exact,
//! `match_urlpattern` WHATWG URL patterns, `last_event_id`, `Mercure-Last-Event-ID`, the
//! `__Secure-mercure_access_token` cookie, no token in the URL); any other as 0.x.

mod common;

use common::*;
use herald_hub::Settings;
use http::StatusCode;
use std::time::Duration;

const SHORT: Duration = Duration::from_millis(300);

fn anonymous() -> Settings {
    Settings {
        anonymous: true,
        ..Settings::default()
    }
}

fn data(events: Vec<herald_sse::MessageEvent>) -> Vec<String> {
    events.into_iter().map(|e| e.data).collect()
}

/// `match` is exact (braces are not a template in 1.0), `match_urlpattern` a URL pattern,
/// `*` every topic; relative patterns and topics resolve against the hub's URL.
async fn matchers_select_as_1_0_says(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut exact = hub
        .subscribe("match=https://example.com/books/%7Bid%7D", &[])
        .await;
    let mut pattern = hub
        .subscribe("match_urlpattern=https://example.com/books/:id", &[])
        .await;
    let mut every = hub.subscribe("match_exact=*", &[]).await;
    let mut relative = hub.subscribe("match_urlpattern=/rel/:x", &[]).await;
    for sse in [&exact, &pattern, &every, &relative] {
        assert_eq!(sse.status, StatusCode::OK);
    }
    for topic in [
        "https://example.com/books/1",
        "https://example.com/books/{id}",
        "https://example.com/books/1/reviews",
        "https://other.example/books/2",
        "/rel/1",
    ] {
        hub.publish(&[("topic", topic), ("data", topic)]).await;
    }
    assert_eq!(
        data(exact.take(1).await),
        ["https://example.com/books/{id}"]
    );
    assert_eq!(
        data(pattern.take(2).await),
        [
            "https://example.com/books/1",
            "https://example.com/books/{id}"
        ]
    );
    assert_eq!(every.take(5).await.len(), 5);
    assert_eq!(data(relative.take(1).await), ["/rel/1"]);
    for sse in [&mut exact, &mut pattern, &mut relative] {
        assert!(sse.quiet_for(SHORT).await);
    }
}

/// 1.0 resumes from `last_event_id` (the `Last-Event-ID` header still wins) and answers
/// `Mercure-Last-Event-ID`, never 0.x's `Last-Event-ID` response header; `lastEventID` is
/// 0.x's and a 1.0 request does not read it.
async fn last_event_id_in_1_0(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut ids = Vec::new();
    for n in ["one", "two", "three"] {
        ids.push(hub.publish(&[("topic", "t"), ("data", n)]).await);
    }
    let mut by_param = hub
        .subscribe(&format!("match=t&last_event_id={}", ids[0]), &[])
        .await;
    assert_eq!(by_param.headers["mercure-last-event-id"], ids[0].as_str());
    assert!(!by_param.headers.contains_key("last-event-id"));
    assert_eq!(data(by_param.take(2).await), ["two", "three"]);
    let mut by_header = hub
        .subscribe(
            &format!("match=t&last_event_id={}", ids[0]),
            &[("last-event-id", &ids[1])],
        )
        .await;
    assert_eq!(data(by_header.take(1).await), ["three"]);
    let unknown = hub.subscribe("match=t&last_event_id=no-such-id", &[]).await;
    assert_eq!(unknown.headers["mercure-last-event-id"], "earliest");
    let mut old_spelling = hub
        .subscribe(&format!("match=t&lastEventID={}", ids[0]), &[])
        .await;
    assert!(!old_spelling.headers.contains_key("mercure-last-event-id"));
    assert!(old_spelling.quiet_for(SHORT).await, "nothing replayed");
    // 0.x, on the same hub, as before.
    let zero = hub
        .subscribe(&format!("topic=t&lastEventID={}", ids[0]), &[])
        .await;
    assert_eq!(zero.headers["last-event-id"], ids[0].as_str());
    assert!(!zero.headers.contains_key("mercure-last-event-id"));
}

/// What 1.0 refuses, with a `400` that says what to fix.
async fn refusals_of_1_0(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let token = subscriber_token(&["*"]);
    for (query, says) in [
        ("matchURLPattern=x", "unknown matcher parameter"),
        ("match_regexp=x", "unknown matcher parameter"),
        ("topic=a&match=b", "not both"),
        (
            &*format!("match=a&authorization={token}"),
            "no token in the URL",
        ),
        ("match_urlpattern=https://x/(?=a)", "invalid URL pattern"),
    ] {
        let (status, _, body) = hub.get(&format!("/.well-known/mercure?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    let (status, body) = hub
        .publish_with(
            Some(&publisher_token(&["*"])),
            &[("topic", "t"), ("type", "mercure"), ("data", "x")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("reserved"), "{body}");
}

/// A 1.0 subscriber's token travels in the `__Secure-mercure_access_token` cookie; a 0.x one
/// in `mercureAuthorization`. Each generation reads its own.
async fn each_generation_reads_its_cookie(transport: Transport) {
    let hub = TestHub::start(Settings::default()).await.over(transport);
    let token = subscriber_token(&["*"]);
    let v1 = format!("__Secure-mercure_access_token={token}");
    let v0 = format!("mercureAuthorization={token}");
    let mut modern = hub.subscribe("match=p", &[("cookie", &v1)]).await;
    assert_eq!(modern.status, StatusCode::OK);
    assert_eq!(
        hub.subscribe("match=p", &[("cookie", &v0)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        hub.subscribe("topic=p", &[("cookie", &v1)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut legacy = hub.subscribe("topic=p", &[("cookie", &v0)]).await;
    assert_eq!(legacy.status, StatusCode::OK);
    hub.publish(&[("topic", "p"), ("data", "private"), ("private", "on")])
        .await;
    assert_eq!(modern.next().await.data, "private");
    assert_eq!(legacy.next().await.data, "private");
}

per_transport!(
    matchers_select_as_1_0_says,
    last_event_id_in_1_0,
    refusals_of_1_0,
    each_generation_reads_its_cookie,
);
