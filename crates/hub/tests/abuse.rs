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
        // Two Hosts in HTTP/1.0 too (which may have none), now that it is streamed directly.
        "GET /.well-known/mercure?topic=t HTTP/1.0\r\nhost: a\r\nhost: b\r\n\r\n",
        // A body, in HTTP/1.0.
        "GET /.well-known/mercure?topic=t HTTP/1.0\r\ncontent-length: 0\r\n\
         content-length: 5\r\n\r\n",
    ] {
        let response = raw(&hub, head.as_bytes(), Duration::from_secs(2)).await;
        assert!(
            response.starts_with("HTTP/1.1 400") || response.starts_with("HTTP/1.0 400"),
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

/// Reads until the hub closes the connection; the time it took, or `None` if it stayed open
/// for `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut sink = vec![0u8; 64 << 10];
    tokio::time::timeout(wait, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

fn timeouts(header: u64, body: u64) -> Settings {
    Settings {
        header_timeout: Duration::from_secs(header),
        body_timeout: Duration::from_secs(body),
        ..anonymous()
    }
}

/// Finding 5: only the first request head had a deadline. A keep-alive connection idled
/// forever after one `GET /healthz`, a second head sent byte by byte was never cut off, and a
/// publish body that stopped half-way held its connection indefinitely.
#[tokio::test]
async fn every_request_head_and_body_has_a_deadline() {
    let hub = TestHub::start(timeouts(1, 1)).await;
    // Idle keep-alive.
    let mut idle = TcpStream::connect(hub.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut idle, WAIT).await;
    assert!(took.is_some(), "an idle keep-alive connection is closed");

    // A second head, sent slowly: a header line every 250 ms, for up to 10 s.
    let slow = TcpStream::connect(hub.addr).await.unwrap();
    let (mut read, mut write) = slow.into_split();
    write
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: h\r\n\r\nGET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if write.write_all(b"x-slow: y\r\n").await.is_err() {
                break;
            }
        }
    });
    let started = std::time::Instant::now();
    let mut answers = Vec::new();
    let closed = tokio::time::timeout(WAIT, read.read_to_end(&mut answers)).await;
    writer.abort();
    assert!(
        closed.is_ok() && started.elapsed() < Duration::from_secs(5),
        "a head sent slowly is cut off by the header timeout (took {:?})",
        started.elapsed()
    );
    let answers = String::from_utf8_lossy(&answers);
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 1, "{answers}");

    // A publish body that stops half-way.
    let token = publisher_token(&["*"]);
    let mut half = TcpStream::connect(hub.addr).await.unwrap();
    half.write_all(
        format!(
            "POST /.well-known/mercure HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {token}\r\n\
             content-type: application/x-www-form-urlencoded\r\ncontent-length: 1000\r\n\r\n\
             topic=t&data="
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, half.read(&mut answer))
        .await
        .expect("the hub answers a stalled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// Sends a publish of `total` body bytes in pieces of `piece` every `every`, and returns the
/// status line of the answer and when it came.
async fn publish_slowly(
    hub: &TestHub,
    total: usize,
    piece: usize,
    every: Duration,
) -> (String, Duration) {
    let token = publisher_token(&["*"]);
    let stream = TcpStream::connect(hub.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let body = format!("topic=t&data={}", "x".repeat(total - 13));
    write
        .write_all(
            format!(
                "POST /.well-known/mercure HTTP/1.1\r\nhost: h\r\nauthorization: Bearer {token}\r\n\
                 content-type: application/x-www-form-urlencoded\r\ncontent-length: {total}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        for chunk in body.as_bytes().chunks(piece) {
            if write.write_all(chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
        }
        write // kept open until the answer is read
    });
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, read.read(&mut answer))
        .await
        .expect("the hub answers")
        .unwrap();
    let took = started.elapsed();
    writer.abort();
    let answer = String::from_utf8_lossy(&answer[..n]);
    (answer.lines().next().unwrap_or("").to_owned(), took)
}

/// The body timeout was for the whole body: a large publish on a slow link was cut off however
/// steadily it arrived. Now each `--body-min-rate` bytes received earn a second more, and only a
/// body slower than that rate is cut off.
#[tokio::test]
async fn a_slow_steady_body_arrives_and_a_trickle_is_cut_off() {
    let hub = TestHub::start(Settings {
        body_timeout: Duration::from_secs(1),
        body_min_rate: 1000,
        ..anonymous()
    })
    .await;
    // 2,000 bytes/s for 2.5 s: past the 1 s timeout, above the minimum rate.
    let (status, took) = publish_slowly(&hub, 5000, 200, Duration::from_millis(100)).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "after {took:?}");
    assert!(took > Duration::from_secs(2), "{took:?}");
    // 200 bytes/s: cut off once 1 s plus its earned time has passed (about 1.25 s).
    let (status, took) = publish_slowly(&hub, 5000, 20, Duration::from_millis(100)).await;
    assert_eq!(status, "HTTP/1.1 408 Request Timeout", "after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Declared too large: refused before any of it is sent.
    let (status, _) = publish_slowly(&hub, 2 << 20, 1 << 20, Duration::from_secs(5)).await;
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
}

/// A subscriber that reads its response head and then nothing more, with a 4 KiB receive
/// buffer (as finding 3's slow consumers).
async fn stuck_subscriber(hub: &TestHub) -> TcpStream {
    stuck_subscriber_sending(
        hub,
        b"GET /.well-known/mercure?topic=big HTTP/1.1\r\nhost: h\r\n\r\n",
    )
    .await
}

/// [`stuck_subscriber`] with the given request (or requests, of which the last subscribes).
async fn stuck_subscriber_sending(hub: &TestHub, request: &[u8]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(hub.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    // Up to the subscription's head (after a first response, if there is one).
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&got).contains("text/event-stream") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "the connection ended: {}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    stream
}

async fn publish_big(hub: &TestHub, count: usize) {
    let data = "x".repeat(256 << 10);
    for _ in 0..count {
        hub.publish(&[("topic", "big"), ("data", &data)]).await;
    }
}

async fn wait_for_metric(hub: &TestHub, name: &str, at_least: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, _, text) = hub.get("/metrics").await;
        let value = metric(&text, name);
        if value >= at_least || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finding 3: subscribers that never read were never disconnected while 1 MB updates piled up
/// for them. A socket that takes no byte for the write timeout is now closed.
#[tokio::test]
async fn a_subscriber_that_stops_reading_is_closed_after_the_write_timeout() {
    let hub = TestHub::start(Settings {
        write_timeout: Duration::from_secs(1),
        ..anonymous()
    })
    .await;
    let mut stuck = stuck_subscriber(&hub).await;
    // Enough to fill the loopback socket's buffers several times over.
    publish_big(&hub, 48).await;
    assert_eq!(
        wait_for_metric(&hub, "herald_subscriber_closed_stalled_total", 1.0).await,
        1.0
    );
    // The client finds a closed stream once it reads what the kernel had buffered.
    assert!(closed_within(&mut stuck, WAIT).await.is_some());
    let (_, _, text) = hub.get("/metrics").await;
    assert_eq!(metric(&text, "herald_owed_bytes"), 0.0, "nothing left owed");
}

/// Subscriptions in HTTP/1.0 (as nginx speaks upstream by default) or with `Connection: close`
/// went through hyper, which bounds neither the write time nor the bytes owed. They are now
/// streamed by the direct path (HTTP/1.0 delimited by the connection's close, as it has no
/// chunks), under the same bounds.
#[tokio::test]
async fn http_1_0_and_connection_close_subscriptions_are_streamed_under_the_same_bounds() {
    let hub = TestHub::start(Settings {
        write_timeout: Duration::from_secs(1),
        ..anonymous()
    })
    .await;
    // An HTTP/1.0 subscription: no chunks, the connection's end is the body's.
    let mut old = TcpStream::connect(hub.addr).await.unwrap();
    old.write_all(b"GET /.well-known/mercure?topic=t HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, old.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let id = hub.publish(&[("topic", "t"), ("data", "hello")]).await;
    let want = format!("id: {id}\ndata: hello\n\n");
    while !String::from_utf8_lossy(&got).contains(&want) {
        let n = tokio::time::timeout(WAIT, old.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_lowercase();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(
        body.starts_with(":") || body.starts_with("id:"),
        "unframed: {body:?}"
    );

    // Stuck subscribers of both kinds are closed after the write timeout, by the direct path.
    let mut stuck = vec![
        stuck_subscriber_sending(&hub, b"GET /.well-known/mercure?topic=big HTTP/1.0\r\n\r\n")
            .await,
        stuck_subscriber_sending(
            &hub,
            b"GET /.well-known/mercure?topic=big HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n",
        )
        .await,
    ];
    publish_big(&hub, 48).await;
    assert_eq!(
        wait_for_metric(&hub, "herald_subscriber_closed_stalled_total", 2.0).await,
        2.0
    );
    for stream in &mut stuck {
        assert!(closed_within(stream, WAIT).await.is_some());
    }
}

/// A subscription opened by a later request of a keep-alive connection is served by hyper,
/// which wrote to a client that stopped reading for as long as the connection lived. Writes on
/// hyper's connections now have the same write timeout.
#[tokio::test]
async fn a_subscription_behind_another_request_is_closed_after_the_write_timeout() {
    let hub = TestHub::start(Settings {
        write_timeout: Duration::from_secs(1),
        ..anonymous()
    })
    .await;
    let mut stuck = stuck_subscriber_sending(
        &hub,
        b"GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n\
          GET /.well-known/mercure?topic=big HTTP/1.1\r\nhost: h\r\n\r\n",
    )
    .await;
    publish_big(&hub, 48).await;
    // Not read meanwhile: reading would unblock the hub's writes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let closed = closed_within(&mut stuck, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "the connection is still open");
}

/// Finding 3: what is owed to blocked subscribers together is bounded by a budget; beyond it
/// they are closed (here well before the write timeout).
#[tokio::test]
async fn blocked_subscribers_are_closed_when_owed_bytes_exceed_the_budget() {
    let hub = TestHub::start(Settings {
        max_owed_bytes: 1 << 20,
        ..anonymous()
    })
    .await;
    let mut stuck = Vec::new();
    for _ in 0..6 {
        stuck.push(stuck_subscriber(&hub).await);
    }
    publish_big(&hub, 48).await;
    assert!(wait_for_metric(&hub, "herald_subscriber_closed_budget_total", 1.0).await >= 1.0);
    let (_, _, text) = hub.get("/metrics").await;
    let owed = metric(&text, "herald_owed_bytes");
    assert!(
        owed <= f64::from(2 << 20),
        "owed bytes stay near the budget: {owed}"
    );
}

/// Finding 6: at the descriptor limit, `/healthz` and publishers timed out behind idle
/// subscribers. Connections are now limited below it, with a reserve that subscriptions cannot
/// take: a refused subscriber gets `503` and `Retry-After` at once, health checks and
/// publishers still get in, and beyond the total limit a connection gets `503`, not a hang.
#[tokio::test]
async fn subscribers_cannot_take_the_connections_kept_for_others() {
    let hub = TestHub::start(Settings {
        max_connections: 12,
        reserved_connections: 4,
        ..anonymous()
    })
    .await;
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..12 {
        let mut stream = TcpStream::connect(hub.addr).await.unwrap();
        stream
            .write_all(b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nhost: h\r\n\r\n")
            .await
            .unwrap();
        let mut head = vec![0u8; 1024];
        let n = tokio::time::timeout(WAIT, stream.read(&mut head))
            .await
            .expect("an answer, not a hang")
            .unwrap();
        let head = String::from_utf8_lossy(&head[..n]).into_owned();
        if head.starts_with("HTTP/1.1 200") {
            held.push(stream);
        } else {
            refused = Some(head);
            break;
        }
    }
    assert_eq!(held.len(), 8, "12 connections minus 4 kept for the rest");
    let refused = refused.expect("the ninth subscription is refused");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(
        refused.contains("all the subscriptions it may"),
        "{refused}"
    );
    // The reserve lets health checks and publishers in.
    let (status, _, _) = hub.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    hub.publish(&[("topic", "t"), ("data", "still served")])
        .await;
    // Past the total limit, a connection is answered 503 at once.
    let mut extra = Vec::new();
    for _ in 0..4 {
        extra.push(TcpStream::connect(hub.addr).await.unwrap());
    }
    let answer = raw(&hub, b"GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n", WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("connection limit"), "{answer}");
}

#[tokio::test]
async fn connections_per_address_are_limited_when_configured() {
    let hub = TestHub::start(Settings {
        max_connections_per_ip: Some(2),
        ..anonymous()
    })
    .await;
    let _a = TcpStream::connect(hub.addr).await.unwrap();
    let _b = TcpStream::connect(hub.addr).await.unwrap();
    let answer = raw(&hub, b"GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n", WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    drop(_a);
    // Once one leaves, the address may connect again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = raw(
            &hub,
            b"GET /healthz HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n",
            WAIT,
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
