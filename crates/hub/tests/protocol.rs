//! The Mercure protocol over real sockets: publish, subscribe, authorization, selectors,
//! private updates, response headers, discovery.

mod common;

use common::*;
use herald_hub::Settings;
use http::StatusCode;
use std::time::Duration;

const SHORT: Duration = Duration::from_millis(300);

async fn publish_then_receive_with_all_fields(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut sse = hub
        .subscribe("topic=https://example.com/books/1", &[])
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    let id = hub
        .publish(&[
            ("topic", "https://example.com/books/1"),
            ("data", "line one\nline two"),
            ("id", "book-1-v1"),
            ("type", "update"),
            ("retry", "2500"),
        ])
        .await;
    assert_eq!(
        id, "book-1-v1",
        "the publish response body is the update id"
    );
    let event = sse.next().await;
    assert_eq!(event.data, "line one\nline two");
    assert_eq!(event.event_type, "update");
    assert_eq!(event.last_event_id, "book-1-v1");
    let raw = String::from_utf8_lossy(&sse.raw);
    assert!(raw.contains("retry: 2500\n"), "retry passed through: {raw}");
}

async fn generated_ids_are_urn_uuids(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let id = hub.publish(&[("topic", "t"), ("data", "x")]).await;
    assert!(id.starts_with("urn:uuid:") && id.len() == 45, "{id}");
}

async fn sse_response_headers(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let sse = hub.subscribe("topic=a", &[]).await;
    let h = &sse.headers;
    assert_eq!(h["content-type"], "text/event-stream");
    assert!(h["cache-control"].to_str().unwrap().contains("no-store"));
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(h["link"], "</.well-known/mercure>; rel=\"mercure\"");
    assert!(
        !h.contains_key("last-event-id"),
        "only when the request resumes"
    );
}

async fn headers_arrive_before_any_update(transport: Transport) {
    // The subscribe call returns once the status line and headers arrived; with no update
    // published, that only happens if the hub flushes them at once.
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut sse = hub.subscribe("topic=a", &[]).await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.read_chunk(WAIT).await, Some(true));
    assert_eq!(sse.raw, b":\n", "an initial comment, nothing else");
}

async fn discovery_link_on_other_responses(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    for path in ["/", "/healthz", "/.well-known/mercure"] {
        let (_, headers, _) = hub.get(path).await;
        assert_eq!(
            headers["link"], "</.well-known/mercure>; rel=\"mercure\"",
            "{path}"
        );
    }
}

async fn subscribe_without_topic_is_400_with_a_hint(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let (status, _, body) = hub.get("/.well-known/mercure").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("topic"), "{body}");
}

/// Issue 15's audit: a selector that is not a URI template was a `400`; the spec says a
/// selector can be any string, and the reference matches it as an exact topic.
async fn a_selector_that_is_not_a_template_matches_exactly(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut sse = hub.subscribe("topic=https://a/%7Bid", &[]).await;
    assert_eq!(sse.status, StatusCode::OK);
    hub.publish(&[("topic", "https://a/1"), ("data", "not this")])
        .await;
    hub.publish(&[("topic", "https://a/{id"), ("data", "this")])
        .await;
    assert_eq!(sse.next().await.data, "this");
}

async fn publish_errors(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let any = publisher_token(&["*"]);
    /// Token, form, expected status, a word the error message must contain.
    type Case<'a> = (Option<String>, Vec<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            None,
            vec![("topic", "a")],
            StatusCode::UNAUTHORIZED,
            "publisher JWT",
        ),
        (
            Some("not.a.jwt".into()),
            vec![("topic", "a")],
            StatusCode::UNAUTHORIZED,
            "JWT",
        ),
        // Signed with the subscriber key: not a publisher token.
        (
            Some(subscriber_token(&["*"])),
            vec![("topic", "a")],
            StatusCode::UNAUTHORIZED,
            "JWT",
        ),
        (
            Some(publisher_token(&["https://example.com/books/{id}"])),
            vec![
                ("topic", "https://example.com/books/1"),
                ("topic", "https://other/1"),
            ],
            StatusCode::FORBIDDEN,
            "https://other/1",
        ),
        (
            Some(any.clone()),
            vec![("data", "x")],
            StatusCode::BAD_REQUEST,
            "topic",
        ),
        (
            Some(any.clone()),
            vec![("topic", "a"), ("retry", "soon")],
            StatusCode::BAD_REQUEST,
            "retry",
        ),
        (
            Some(any.clone()),
            vec![("topic", "a"), ("retry", "-5")],
            StatusCode::BAD_REQUEST,
            "retry",
        ),
        (
            Some(any.clone()),
            vec![("topic", "a"), ("id", "x\nid: y")],
            StatusCode::BAD_REQUEST,
            "id",
        ),
        (
            Some(any.clone()),
            vec![("topic", "a"), ("type", "x\r\ndata: y")],
            StatusCode::BAD_REQUEST,
            "type",
        ),
    ];
    for (token, form, status, hint) in cases {
        let (got, body) = hub.publish_with(token.as_deref(), &form).await;
        assert_eq!(got, status, "{form:?}: {body}");
        assert!(
            body.contains(hint),
            "{form:?}: {body:?} should mention {hint:?}"
        );
    }
    // Nothing refused went into history.
    let mut sse = hub
        .subscribe("topic=*", &[("last-event-id", "earliest")])
        .await;
    assert!(sse.quiet_for(SHORT).await);
}

async fn publish_template_grant_allows_matching_topics(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let token = publisher_token(&["https://example.com/books/{id}"]);
    let (status, _) = hub
        .publish_with(
            Some(&token),
            &[("topic", "https://example.com/books/7"), ("data", "x")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// Issue 15's audit: a repeated id was refused with `409`, where the 0.x conformance suite
/// (which reuses ids) and Mercure 1.0 ("duplicate ids resolve to the earliest") accept it.
/// Three cases: the same update again is a retry (answered with its id, stored and delivered
/// once); the same id with other fields is a new update; `Last-Event-ID` resumes after the
/// earliest.
async fn repeated_ids_are_accepted_and_resolve_to_the_earliest(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut live = hub.subscribe("topic=a", &[]).await;
    let first = [("topic", "a"), ("id", "same"), ("data", "first")];
    assert_eq!(hub.publish(&first).await, "same");
    assert_eq!(hub.publish(&first).await, "same", "a retry");
    hub.publish(&[("topic", "a"), ("id", "same"), ("data", "second")])
        .await;
    hub.publish(&[("topic", "a"), ("id", "next"), ("data", "third")])
        .await;
    let data = |events: Vec<herald_sse::MessageEvent>| {
        events.into_iter().map(|e| e.data).collect::<Vec<_>>()
    };
    assert_eq!(data(live.take(3).await), ["first", "second", "third"]);
    assert!(live.quiet_for(SHORT).await, "the retry was not stored");
    let mut resumed = hub.subscribe("topic=a", &[("last-event-id", "same")]).await;
    assert_eq!(data(resumed.take(2).await), ["second", "third"]);
    assert!(resumed.quiet_for(SHORT).await);
}

async fn wrong_content_type_and_oversized_body(transport: Transport) {
    let hub = TestHub::start(Settings {
        max_body: 1000,
        ..anonymous()
    })
    .await
    .over(transport);
    let token = publisher_token(&["*"]);
    let req = http::Request::post(hub.url("/.well-known/mercure"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let response = hub.request(req).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body_text(response).await.contains("x-www-form-urlencoded"));
    let big = "x".repeat(2000);
    let (status, body) = hub
        .publish_with(Some(&token), &[("topic", "a"), ("data", &big)])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body.contains("1000"), "{body}");
}

async fn anonymous_subscribers_only_when_allowed(transport: Transport) {
    let closed = TestHub::start(Settings::default()).await.over(transport);
    let sse = closed.subscribe("topic=a", &[]).await;
    assert_eq!(sse.status, StatusCode::UNAUTHORIZED);
    assert!(sse.headers.contains_key("www-authenticate"));
    // A token (even one granting no private topic) is enough to receive public updates.
    let token = subscriber_token(&[]);
    let mut sse = closed
        .subscribe("topic=a", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    closed.publish(&[("topic", "a"), ("data", "public")]).await;
    assert_eq!(sse.next().await.data, "public");
}

async fn invalid_subscriber_token_is_401_even_when_anonymous_is_allowed(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let forged = publisher_token(&["*"]); // wrong key for subscribers
    let sse = hub
        .subscribe("topic=a", &[("authorization", &format!("Bearer {forged}"))])
        .await;
    assert_eq!(sse.status, StatusCode::UNAUTHORIZED);
}

async fn private_updates_reach_only_authorized_subscribers(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let topic = "https://example.com/users/42";
    let mut anon = hub.subscribe(&format!("topic={topic}"), &[]).await;
    let allowed = subscriber_token(&["https://example.com/users/{id}"]);
    let mut authorized = hub
        .subscribe(
            &format!("topic={topic}"),
            &[("authorization", &format!("Bearer {allowed}"))],
        )
        .await;
    let other = subscriber_token(&["https://example.com/groups/{id}"]);
    let mut unauthorized = hub
        .subscribe(
            &format!("topic={topic}"),
            &[("authorization", &format!("Bearer {other}"))],
        )
        .await;
    hub.publish(&[("topic", topic), ("data", "secret"), ("private", "on")])
        .await;
    hub.publish(&[("topic", topic), ("data", "public")]).await;
    assert_eq!(authorized.next().await.data, "secret");
    assert_eq!(authorized.next().await.data, "public");
    assert_eq!(
        anon.next().await.data,
        "public",
        "the private one was skipped"
    );
    assert_eq!(unauthorized.next().await.data, "public");
}

async fn private_update_authorized_by_any_of_its_topics(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let token = subscriber_token(&["https://example.com/alt"]);
    let mut sse = hub
        .subscribe(
            "topic=https://example.com/main",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    hub.publish(&[
        ("topic", "https://example.com/main"),
        ("topic", "https://example.com/alt"),
        ("data", "both"),
        ("private", "on"),
    ])
    .await;
    assert_eq!(sse.next().await.data, "both");
}

async fn token_in_cookie_and_in_query_parameter(transport: Transport) {
    let hub = TestHub::start(Settings::default()).await.over(transport);
    let token = subscriber_token(&["*"]);
    let mut by_cookie = hub
        .subscribe(
            "topic=p",
            &[(
                "cookie",
                &format!("theme=dark; mercureAuthorization={token}"),
            )],
        )
        .await;
    assert_eq!(by_cookie.status, StatusCode::OK);
    let mut by_query = hub
        .subscribe(&format!("topic=p&authorization={token}"), &[])
        .await;
    assert_eq!(by_query.status, StatusCode::OK);
    hub.publish(&[("topic", "p"), ("data", "private"), ("private", "1")])
        .await;
    assert_eq!(by_cookie.next().await.data, "private");
    assert_eq!(by_query.next().await.data, "private");
}

async fn selectors_exact_template_and_star(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut exact = hub
        .subscribe("topic=https://example.com/books/1", &[])
        .await;
    let mut template = hub
        .subscribe("topic=https://example.com/books/%7Bid%7D", &[])
        .await;
    let mut star = hub.subscribe("topic=*", &[]).await;
    let mut two = hub
        .subscribe(
            "topic=https://example.com/authors/1&topic=https://example.com/books/2",
            &[],
        )
        .await;
    for topic in [
        "https://example.com/books/1",
        "https://example.com/books/2",
        "https://example.com/books/2/reviews",
        "https://example.com/authors/1",
    ] {
        hub.publish(&[("topic", topic), ("data", topic)]).await;
    }
    let data = |events: Vec<herald_sse::MessageEvent>| {
        events.into_iter().map(|e| e.data).collect::<Vec<_>>()
    };
    assert_eq!(data(exact.take(1).await), ["https://example.com/books/1"]);
    assert_eq!(
        data(template.take(2).await),
        ["https://example.com/books/1", "https://example.com/books/2"]
    );
    assert_eq!(star.take(4).await.len(), 4);
    assert_eq!(
        data(two.take(2).await),
        [
            "https://example.com/books/2",
            "https://example.com/authors/1"
        ]
    );
    assert!(exact.quiet_for(SHORT).await);
    assert!(template.quiet_for(Duration::from_millis(50)).await);
}

async fn an_update_matching_two_selectors_arrives_once(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut sse = hub.subscribe("topic=a&topic=*&topic=b", &[]).await;
    hub.publish(&[("topic", "a"), ("topic", "b"), ("data", "once")])
        .await;
    hub.publish(&[("topic", "c"), ("data", "next")]).await;
    assert_eq!(sse.next().await.data, "once");
    assert_eq!(sse.next().await.data, "next");
}

async fn heartbeats_on_idle_streams(transport: Transport) {
    let hub = TestHub::start(Settings {
        heartbeat: Some(Duration::from_millis(100)),
        ..anonymous()
    })
    .await
    .over(transport);
    let mut sse = hub.subscribe("topic=a", &[]).await;
    for _ in 0..3 {
        assert_eq!(sse.read_chunk(WAIT).await, Some(true));
    }
    assert_eq!(sse.raw, b":\n:\n:\n", "initial comment then two heartbeats");
}

async fn no_heartbeat_when_disabled(transport: Transport) {
    let hub = TestHub::start(Settings {
        heartbeat: None,
        ..anonymous()
    })
    .await
    .over(transport);
    let mut sse = hub.subscribe("topic=a", &[]).await;
    assert_eq!(sse.read_chunk(WAIT).await, Some(true));
    assert_eq!(
        sse.read_chunk(SHORT).await,
        None,
        "nothing after the initial comment"
    );
}

async fn health_ready_metrics_and_index(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut sse = hub.subscribe("topic=a", &[]).await;
    hub.publish(&[("topic", "a"), ("data", "x")]).await;
    sse.next().await;
    assert_eq!(hub.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(hub.get("/readyz").await.0, StatusCode::OK);
    let (status, headers, metrics) = hub.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    for line in [
        "herald_subscribers 1",
        "herald_updates_published_total 1",
        "herald_updates_delivered_total 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing in\n{metrics}"
        );
    }
    assert!(metrics.contains("herald_connections "), "{metrics}");
    let (status, headers, page) = hub.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.contains("EventSource"));
}

async fn cors_preflight_and_credentials(transport: Transport) {
    let hub = TestHub::start(Settings {
        cors_origins: vec!["https://app.example".into()],
        ..anonymous()
    })
    .await
    .over(transport);
    let preflight = http::Request::builder()
        .method("OPTIONS")
        .uri(hub.url("/.well-known/mercure"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, last-event-id",
        )
        .body(http_body_util::Full::default())
        .unwrap();
    let response = hub.request(preflight).await;
    assert!(response.status().is_success(), "{}", response.status());
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("last-event-id"),
        "{allowed}"
    );

    let sse = hub
        .subscribe("topic=a", &[("origin", "https://app.example")])
        .await;
    assert_eq!(
        sse.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(sse.headers["access-control-allow-credentials"], "true");
    let other = hub
        .subscribe("topic=a", &[("origin", "https://evil.example")])
        .await;
    assert!(!other.headers.contains_key("access-control-allow-origin"));
}

async fn cors_star_echoes_the_origin_for_credentials(transport: Transport) {
    let hub = TestHub::start(Settings {
        cors_origins: vec!["*".into()],
        ..anonymous()
    })
    .await
    .over(transport);
    let sse = hub
        .subscribe("topic=a", &[("origin", "https://any.example")])
        .await;
    assert_eq!(
        sse.headers["access-control-allow-origin"],
        "https://any.example"
    );
    assert_eq!(sse.headers["access-control-allow-credentials"], "true");
}

async fn publishing_with_the_cookie_needs_an_allowed_origin(transport: Transport) {
    let hub = TestHub::start(Settings {
        cors_origins: vec!["https://app.example".into()],
        ..anonymous()
    })
    .await
    .over(transport);
    let token = publisher_token(&["*"]);
    let publish = |origin: Option<String>| {
        let hub = &hub;
        let token = token.clone();
        async move {
            let mut req = http::Request::post(hub.url("/.well-known/mercure"))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", format!("mercureAuthorization={token}"));
            if let Some(origin) = origin {
                req = req.header("origin", origin);
            }
            let response = hub
                .request(
                    req.body(http_body_util::Full::new(bytes::Bytes::from_static(
                        b"topic=a&data=x",
                    )))
                    .unwrap(),
                )
                .await;
            let status = response.status();
            (status, body_text(response).await)
        }
    };
    assert_eq!(
        publish(Some("https://app.example".into())).await.0,
        StatusCode::OK
    );
    let own = hub.url("");
    assert_eq!(
        publish(Some(own)).await.0,
        StatusCode::OK,
        "the hub's own origin"
    );
    let (status, body) = publish(Some("https://evil.example".into())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("evil.example"), "{body}");
    let (status, body) = publish(None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("Authorization header"), "{body}");
}

async fn a_subscription_ends_when_its_token_expires(transport: Transport) {
    let hub = TestHub::start(Settings::default()).await.over(transport);
    let now = unix_now();
    let token = token_expiring(SUB_KEY, &["*"], now + 2);
    let mut sse = hub
        .subscribe("topic=a", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert_eq!(sse.status, StatusCode::OK);
    let started = std::time::Instant::now();
    assert!(sse.next_within(Duration::from_secs(6)).await.is_none());
    assert!(sse.ended, "the stream ended rather than timing out");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// Found with a pooling client (Node's `eventsource` beside `fetch`): when the hub ended a
/// subscription (an expired token, a slow subscriber closed), it sent the last chunk and closed
/// the socket without having said `Connection: close`, so the client pooled the socket and its
/// next request failed with "other side closed". A streamed subscription never serves a second
/// request on its connection: its head now says so.
#[tokio::test]
async fn a_streamed_subscription_says_it_closes_its_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = TestHub::start(Settings::default()).await;
    let now = unix_now();
    let token = token_expiring(SUB_KEY, &["*"], now + 1);
    let mut stream = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /.well-known/mercure?topic=a HTTP/1.1\r\nhost: h\r\n\
                 authorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the hub ends the stream when the token expires")
        .unwrap();
    let response = String::from_utf8_lossy(&response).to_lowercase();
    let head = response.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(response.ends_with("0\r\n\r\n"), "a clean end: {response:?}");

    // The same through a pooling client: requests after the end never meet the closed socket.
    let token = token_expiring(SUB_KEY, &["*"], now + 1);
    let mut sse = hub
        .subscribe("topic=a", &[("authorization", &format!("Bearer {token}"))])
        .await;
    assert!(sse.next_within(Duration::from_secs(6)).await.is_none());
    for _ in 0..20 {
        let (status, _, _) = hub.get("/healthz").await;
        assert_eq!(status, StatusCode::OK);
    }
}

/// Issue 15's audit: a field given twice kept its last value (the reference keeps the first).
async fn a_repeated_publish_field_keeps_its_first_value(transport: Transport) {
    let hub = TestHub::start(Settings {
        anonymous: true,
        ..Settings::default()
    })
    .await
    .over(transport);
    let mut sse = hub.subscribe("topic=t", &[]).await;
    let id = hub
        .publish(&[
            ("topic", "t"),
            ("data", "first"),
            ("data", "second"),
            ("id", "one"),
            ("id", "two"),
            ("type", "a"),
            ("type", "b"),
            ("retry", "100"),
            ("retry", "not a number"),
        ])
        .await;
    assert_eq!(id, "one");
    let event = sse.next().await;
    assert_eq!(
        (
            event.data.as_str(),
            event.event_type.as_str(),
            event.last_event_id.as_str()
        ),
        ("first", "a", "one")
    );
}

/// Issue 15's audit: a publisher could post to a topic under /.well-known/mercure and forge
/// the hub's subscription events.
async fn topics_under_the_hub_path_are_reserved(transport: Transport) {
    let hub = TestHub::start(Settings::default()).await.over(transport);
    let token = publisher_token(&["*"]);
    for topic in [
        "/.well-known/mercure/subscriptions/t/urn:uuid:1",
        "/.well-known/mercure",
    ] {
        let (status, body) = hub
            .publish_with(
                Some(&token),
                &[("topic", "ok"), ("topic", topic), ("data", "{}")],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{topic}: {body}");
        assert!(body.contains("reserved"), "{body}");
    }
}

/// Issue 15's audit: a token valid only from the future (`nbf`) was accepted, and an expired
/// one was accepted for 5 s more without anyone having asked for a leeway.
async fn nbf_is_checked_and_exp_has_no_silent_leeway(transport: Transport) {
    let hub = TestHub::start(Settings::default()).await.over(transport);
    let now = unix_now();
    let later = serde_json::json!({"mercure": {"subscribe": ["*"]}, "nbf": now + 60});
    let not_yet = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &later,
        &jsonwebtoken::EncodingKey::from_secret(SUB_KEY),
    )
    .unwrap();
    let just_expired = token_expiring(SUB_KEY, &["*"], now - 2);
    for (token, says) in [(not_yet, "not valid yet"), (just_expired, "expired")] {
        let sse = hub
            .subscribe("topic=t", &[("authorization", &format!("Bearer {token}"))])
            .await;
        assert_eq!(sse.status, StatusCode::UNAUTHORIZED, "{says}");
    }
}

/// Issue 15's audit: a non-Bearer `Authorization` header fell through to the cookie, and the
/// cookie won over the query parameter. The header alone decides when present; then the query
/// parameter; then the cookie.
async fn the_token_is_read_from_the_header_else_the_query_else_the_cookie(transport: Transport) {
    let hub = TestHub::start(Settings::default()).await.over(transport);
    let good = subscriber_token(&["*"]);
    let cookie = format!("mercureAuthorization={good}");
    let sse = hub
        .subscribe(
            "topic=t",
            &[("authorization", "Basic dXNlcjpwYXNz"), ("cookie", &cookie)],
        )
        .await;
    assert_eq!(
        sse.status,
        StatusCode::UNAUTHORIZED,
        "no fall-back to the cookie"
    );
    let sse = hub
        .subscribe(
            &format!("topic=t&authorization={good}"),
            &[("cookie", "mercureAuthorization=not-a-jwt")],
        )
        .await;
    assert_eq!(
        sse.status,
        StatusCode::OK,
        "the query parameter before the cookie"
    );
}

/// Issue 15: the limit on `topic` selectors per subscribe request is the reference's 1000, a
/// setting, and going past it is a `400` that names it.
async fn the_topic_limit_is_a_setting_and_named_when_passed(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let query = |n: usize| {
        (0..n)
            .map(|i| format!("topic=t{i}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    let sse = hub.subscribe(&query(1000), &[]).await;
    assert_eq!(sse.status, StatusCode::OK);
    drop(sse);
    let (status, _, body) = hub
        .get(&format!("/.well-known/mercure?{}", query(1001)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("--max-topics") && body.contains("1001"),
        "{body}"
    );
}

per_transport!(
    publish_then_receive_with_all_fields,
    generated_ids_are_urn_uuids,
    sse_response_headers,
    headers_arrive_before_any_update,
    discovery_link_on_other_responses,
    subscribe_without_topic_is_400_with_a_hint,
    a_selector_that_is_not_a_template_matches_exactly,
    publish_errors,
    publish_template_grant_allows_matching_topics,
    repeated_ids_are_accepted_and_resolve_to_the_earliest,
    wrong_content_type_and_oversized_body,
    anonymous_subscribers_only_when_allowed,
    invalid_subscriber_token_is_401_even_when_anonymous_is_allowed,
    private_updates_reach_only_authorized_subscribers,
    private_update_authorized_by_any_of_its_topics,
    token_in_cookie_and_in_query_parameter,
    selectors_exact_template_and_star,
    an_update_matching_two_selectors_arrives_once,
    heartbeats_on_idle_streams,
    no_heartbeat_when_disabled,
    health_ready_metrics_and_index,
    cors_preflight_and_credentials,
    cors_star_echoes_the_origin_for_credentials,
    publishing_with_the_cookie_needs_an_allowed_origin,
    a_subscription_ends_when_its_token_expires,
    a_repeated_publish_field_keeps_its_first_value,
    topics_under_the_hub_path_are_reserved,
    nbf_is_checked_and_exp_has_no_silent_leeway,
    the_token_is_read_from_the_header_else_the_query_else_the_cookie,
    the_topic_limit_is_a_setting_and_named_when_passed,
);
