//! What a hostile or broken client may send, over real sockets: each finding of the hardening
//! review (issue 11) has a test here that failed on the hub as it was. The heavier abuse runs
//! (memory growth of the release binary, many slow readers) are in the `abuse` tier
//! (`crates/herald/tests/abuse.rs`).

mod common;

use common::*;
use herald_hub::Settings;
use http::StatusCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn anonymous() -> Settings {
    Settings {
        anonymous: true,
        ..Settings::default()
    }
}

/// Sends `request` as raw bytes and reads until the hub closes the connection or `wait` passes;
/// returns what came back.
async fn raw(hub: &TestHub, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(hub.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// Finding 4: a validly signed token with `exp` >= 2^63 panicked the connection task, and the
/// connection and subscriber gauges leaked one per request.
#[tokio::test]
async fn huge_exp_neither_panics_nor_leaks_gauges() {
    let hub = TestHub::start(Settings::default()).await;
    for exp in [u64::MAX, 1 << 63] {
        let token = token_expiring(SUB_KEY, &["*"], exp);
        let mut sse = hub
            .subscribe("topic=t", &[("authorization", &format!("Bearer {token}"))])
            .await;
        assert_eq!(sse.status, StatusCode::OK);
        let id = hub.publish(&[("topic", "t"), ("data", "x")]).await;
        assert_eq!(sse.next().await.last_event_id, id, "the stream works");
    }
    // Both streams are dropped; the gauges come back to what this one request holds.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, _, text) = hub.get("/metrics").await;
        let (connections, subscribers) = (
            metric(&text, "herald_connections"),
            metric(&text, "herald_subscribers"),
        );
        if subscribers == 0.0 && connections <= 1.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gauges leaked: connections {connections}, subscribers {subscribers}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Finding 8: `earliest` as a published id made a client resuming after it replay everything.
#[tokio::test]
async fn earliest_is_refused_as_a_published_id() {
    let hub = TestHub::start(anonymous()).await;
    let (status, body) = hub
        .publish_with(
            Some(&publisher_token(&["*"])),
            &[("topic", "t"), ("id", "earliest"), ("data", "x")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("\"earliest\" is reserved"), "{body}");
}

/// Finding 9: invalid UTF-8 in `topic`, `id` or `data` was silently replaced with U+FFFD.
#[tokio::test]
async fn invalid_utf8_is_refused_naming_the_field() {
    let hub = TestHub::start(anonymous()).await;
    let token = publisher_token(&["*"]);
    for (body, field) in [
        ("topic=a%FFb&data=x", "topic"),
        ("topic=t&id=%C3%28&data=x", "id"),
        ("topic=t&data=%80abc", "data"),
        ("topic=t&type=%ED%A0%80&data=x", "type"),
    ] {
        let request = format!(
            "POST /.well-known/mercure HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {token}\r\n\
             content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        let response = raw(&hub, request.as_bytes(), WAIT).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{body}: {response}");
        assert!(
            response.contains(&format!("{field:?} is not valid UTF-8")),
            "{body}: {response}"
        );
    }
    // Nothing of it was stored: a subscriber from the start of history sees only this one.
    let id = hub.publish(&[("topic", "t"), ("data", "é ok")]).await;
    let mut sse = hub
        .subscribe("topic=*", &[("last-event-id", "earliest")])
        .await;
    let event = sse.next().await;
    assert_eq!(
        (event.last_event_id.as_str(), event.data.as_str()),
        (id.as_str(), "é ok")
    );

    // The same for a subscribe request's query string.
    let response = raw(
        &hub,
        b"GET /.well-known/mercure?topic=%FF HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("\"topic\" is not valid UTF-8"),
        "{response}"
    );
}

/// Finding 10: the direct subscription path accepted heads that hyper refuses.
#[tokio::test]
async fn direct_path_refuses_what_hyper_refuses() {
    let hub = TestHub::start(anonymous()).await;
    for head in [
        // Two different lengths: a smuggling classic.
        "GET /.well-known/mercure?topic=t HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\
         content-length: 5\r\n\r\n",
        // HTTP/1.1 without a Host, and with two.
        "GET /.well-known/mercure?topic=t HTTP/1.1\r\n\r\n",
        "GET /.well-known/mercure?topic=t HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    ] {
        let response = raw(&hub, head.as_bytes(), Duration::from_secs(2)).await;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{head:?} must be refused, got {response:?}"
        );
    }
}

/// The subscribe query of findings 1 and 2: 100 selectors, each 12 or 13 prefixed expressions.
fn heavy_selectors(unit: &str, repeat: usize) -> String {
    (0..100)
        .map(|i| {
            let selector = format!("{}/{i}", unit.repeat(repeat));
            format!(
                "topic={}",
                percent_encoding::utf8_percent_encode(
                    &selector,
                    percent_encoding::NON_ALPHANUMERIC
                )
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Findings 1 and 2: selectors that cost 3.3 MB and 22 ms per match each (1.25 GB for ten
/// requests; an exact subscriber 9 s late, `/healthz` timing out) are refused, naming the limit.
#[tokio::test]
async fn selectors_that_would_cost_too_much_are_refused() {
    let hub = TestHub::start(anonymous()).await;
    for (unit, repeat) in [("{a:64}", 13), ("{+a:64}", 12)] {
        let (status, _, body) = hub
            .get(&format!(
                "/.well-known/mercure?{}",
                heavy_selectors(unit, repeat)
            ))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.contains("the limit is 64 per selector"), "{body}");
    }
    let too_many = format!(
        "topic={}",
        "/{a}".repeat(17).replace('{', "%7B").replace('}', "%7D")
    );
    let (status, _, body) = hub.get(&format!("/.well-known/mercure?{too_many}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("the limit is 16"), "{body}");
}

/// Finding 2's other half: however many template subscribers there are, an exact-topic
/// subscriber gets its update at once and `/healthz` answers, since templates are matched on
/// their own stage. Here 5 connections of 100 distinct templates at the limits (the costliest
/// shape measured) against a 1,010-byte topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_subscribers_do_not_delay_an_exact_subscriber() {
    let hub = TestHub::start(anonymous()).await;
    let mut heavy = Vec::new();
    for c in 0..5 {
        let query: Vec<String> = (0..100)
            .map(|i| {
                let selector = format!("{}/{c}/{i}", "{a:4}{+b}".repeat(8));
                format!(
                    "topic={}",
                    percent_encoding::utf8_percent_encode(
                        &selector,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                )
            })
            .collect();
        let sse = hub.subscribe(&query.join("&"), &[]).await;
        assert_eq!(sse.status, StatusCode::OK);
        heavy.push(sse);
    }
    let topic = format!("https://example.com/{}", "x".repeat(990));
    let mut exact = hub
        .subscribe(
            &format!(
                "topic={}",
                percent_encoding::utf8_percent_encode(&topic, percent_encoding::NON_ALPHANUMERIC)
            ),
            &[],
        )
        .await;
    for round in 0..5 {
        let started = std::time::Instant::now();
        let id = hub.publish(&[("topic", &topic), ("data", "x")]).await;
        assert_eq!(exact.next().await.last_event_id, id);
        let (status, _, _) = hub.get("/healthz").await;
        assert_eq!(status, StatusCode::OK);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "round {round}: publish, delivery and /healthz took {took:?}"
        );
    }
}
