//! Streaming publish over real sockets: `POST /.well-known/mercure` with a `text/event-stream`
//! body, each event an update, answered as an event stream of what was stored (issue 16).

mod common;

use bytes::Bytes;
use common::*;
use herald_hub::Settings;
use herald_hub::history::{FileHistory, FileOptions};
use http::StatusCode;
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POSTs `body` as an event stream with `query`; the status and the answer's events as
/// `(type, data)`.
async fn stream(hub: &TestHub, query: &str, body: &str) -> (StatusCode, Vec<(String, String)>) {
    let request = http::Request::post(hub.url(&format!("/.well-known/mercure?{query}")))
        .header("content-type", "text/event-stream")
        .header(
            "authorization",
            format!("Bearer {}", publisher_token(&["*"])),
        )
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = hub.request(request).await;
    let status = response.status();
    let text = body_text(response).await;
    if status != StatusCode::OK {
        return (status, vec![("status".into(), text)]);
    }
    let mut decoder = herald_sse::Decoder::new();
    decoder.feed(text.as_bytes()).unwrap();
    let events = std::iter::from_fn(|| decoder.next_event())
        .map(|e| (e.event_type, e.data))
        .collect();
    (status, events)
}

/// Every event of the body is an update, delivered in order, answered with its id; fields as
/// an `EventSource` reads them (multi-line data, `event` as the type, `retry`), the topic from
/// the query string or the event's own `topic` fields.
async fn events_of_the_body_are_updates(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut ticker = hub.subscribe("topic=prices", &[]).await;
    let mut other = hub.subscribe("topic=news", &[]).await;
    let body = "id: a\ndata: 1\n\n: a comment\n\nid: b\nevent: tick\ndata: 2\ndata: two\n\n\
                retry: 900\ndata: 3\r\n\r\ntopic: news\ndata: elsewhere\n\n";
    let (status, answer) = stream(&hub, "topic=prices", body).await;
    assert_eq!(status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.len(), 5, "{answer:?}");
    assert_eq!(answer[0], ("accepted".into(), "a".into()));
    assert_eq!(answer[1], ("accepted".into(), "b".into()));
    assert!(answer[2].1.starts_with("urn:uuid:"), "a generated id");
    assert_eq!(answer[4], ("done".into(), "4".into()));
    let got = ticker.take(3).await;
    assert_eq!(
        got.iter()
            .map(|e| (
                e.data.as_str(),
                e.event_type.as_str(),
                e.last_event_id.as_str()
            ))
            .collect::<Vec<_>>(),
        [
            ("1", "message", "a"),
            ("2\ntwo", "tick", "b"),
            ("3", "message", answer[2].1.as_str())
        ]
    );
    assert_eq!(other.next().await.data, "elsewhere");
    assert!(ticker.quiet_for(Duration::from_millis(200)).await);
    // `retain` in the query string or in an event keeps it as its topic's latest value.
    let (status, _) = stream(&hub, "topic=q&retain=on", "data: q1\n\ndata: q2\n\n").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = stream(&hub, "topic=r", "retain: on\ndata: r1\n\ndata: r2\n\n").await;
    assert_eq!(status, StatusCode::OK);
    let mut latest = hub.subscribe("topic=q&topic=r&retained=1", &[]).await;
    let got: Vec<String> = latest.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["q2", "r1"]);
}

/// At the first event that is not accepted the request ends: the updates before it are
/// stored and reported, that one and those after it are not. Before anything is stored, a
/// refusal is the answer's status.
async fn the_first_refused_event_ends_the_request(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut sse = hub.subscribe("topic=t", &[]).await;
    let body = "data: 1\n\ndata: 2\n\nid: earliest\ndata: 3\n\ndata: 4\n\n";
    let (status, answer) = stream(&hub, "topic=t", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer.len(), 3, "{answer:?}");
    assert_eq!(answer[2].0, "refused");
    assert!(answer[2].1.starts_with("400 event 3: "), "{answer:?}");
    assert!(answer[2].1.contains("reserved"), "{answer:?}");
    assert!(
        answer[2]
            .1
            .contains("2 updates of this request were stored")
    );
    let got: Vec<String> = sse.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["1", "2"]);
    assert!(
        sse.quiet_for(Duration::from_millis(300)).await,
        "3 and 4 not stored"
    );

    for (body, status, says) in [
        ("data: x\n\n", StatusCode::BAD_REQUEST, "missing \"topic\""),
        ("", StatusCode::BAD_REQUEST, "has no event"),
        (
            "data: no blank line after it",
            StatusCode::BAD_REQUEST,
            "middle of an event",
        ),
        ("retry: soon\ndata: x\n\n", StatusCode::BAD_REQUEST, "retry"),
        (
            "topic: /.well-known/mercure/x\ndata: x\n\n",
            StatusCode::FORBIDDEN,
            "reserved",
        ),
    ] {
        let query = if says == "missing \"topic\"" {
            ""
        } else {
            "topic=t"
        };
        let (got, answer) = stream(&hub, query, body).await;
        assert_eq!(got, status, "{body:?}: {answer:?}");
        assert!(answer[0].1.contains(says), "{body:?}: {answer:?}");
    }
    // The publisher's token is checked for every event's topics.
    let request = http::Request::post(hub.url("/.well-known/mercure?topic=mine"))
        .header("content-type", "text/event-stream")
        .header(
            "authorization",
            format!("Bearer {}", publisher_token(&["mine"])),
        )
        .body(Full::new(Bytes::from(
            "data: 1\n\ntopic: theirs\ndata: 2\n\n",
        )))
        .unwrap();
    let response = hub.request(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = body_text(response).await;
    assert!(
        text.contains("event: refused\ndata: 403 event 2:"),
        "{text}"
    );
}

/// Bytes that are not UTF-8 are refused, naming the line, never stored with U+FFFD; an event
/// larger than `--max-body` is a `413`.
async fn bad_bytes_and_big_events_are_refused(transport: Transport) {
    let hub = TestHub::start(Settings {
        max_body: 64,
        ..anonymous()
    })
    .await
    .over(transport);
    let request = |body: Vec<u8>| {
        http::Request::post(hub.url("/.well-known/mercure?topic=t"))
            .header("content-type", "text/event-stream")
            .header(
                "authorization",
                format!("Bearer {}", publisher_token(&["*"])),
            )
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let response = hub
        .request(request(b"data: ok\n\ndata: \xff\n\n".to_vec()))
        .await;
    let text = body_text(response).await;
    assert!(
        text.contains("400 line 3 of the event stream is not valid UTF-8"),
        "{text}"
    );
    let response = hub
        .request(request(
            format!("data: {}\n\n", "x".repeat(100)).into_bytes(),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body_text(response).await.contains("--max-body"));
}

/// Each update is answered as soon as it is stored, while the publisher is still sending: a
/// model's tokens reach subscribers one by one. An event not completed within
/// `--body-timeout` ends the request with a `408` refusal.
#[tokio::test]
async fn updates_are_answered_while_the_body_is_still_coming() {
    let hub = TestHub::start(Settings {
        body_timeout: Duration::from_millis(500),
        ..anonymous()
    })
    .await;
    let mut sse = hub.subscribe("topic=answer", &[]).await;
    let mut socket = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let head = format!(
        "POST /.well-known/mercure?topic=answer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        publisher_token(&["*"])
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    for token in ["Hello", ",", " world"] {
        let event = format!("data: {token}\n\n");
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        socket.write_all(chunk.as_bytes()).await.unwrap();
        assert_eq!(
            sse.next().await.data,
            token,
            "delivered before the body ends"
        );
        // And acknowledged to the publisher before it sends the next one.
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        answer.extend_from_slice(&buf[..n]);
        assert!(
            String::from_utf8_lossy(&answer)
                .matches("event: accepted")
                .count()
                >= 1,
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // Then half an event, and nothing more.
    socket.write_all(b"6\r\ndata: \r\n").await.unwrap();
    let mut rest = String::new();
    let _ = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    rest.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if rest.contains("refused") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(rest.contains("event: refused\ndata: 408 "), "{rest}");
    assert!(rest.contains("--body-timeout"), "{rest}");
    let all = String::from_utf8_lossy(&answer);
    assert_eq!(
        all.matches("event: accepted").count() + rest.matches("event: accepted").count(),
        3
    );
}

/// On the file store, a streamed request's events are stored in order, durably, across a
/// restart; the events that arrive together are committed together.
#[tokio::test]
async fn a_stream_on_the_file_store_keeps_its_order() {
    let dir = std::env::temp_dir().join(format!("herald-stream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = || FileHistory::open(&dir, FileOptions::default()).map(Arc::new);
    let body: String = (1..=500)
        .map(|i| format!("id: e{i}\ndata: {i}\n\n"))
        .collect();
    {
        let mut hub = TestHub::start_on(open().unwrap(), anonymous()).await;
        let (status, answer) = stream(&hub, "topic=t", &body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            answer.last().unwrap(),
            &("done".to_string(), "500".to_string())
        );
        let ids: Vec<&str> = answer[..500].iter().map(|(_, id)| id.as_str()).collect();
        let expected: Vec<String> = (1..=500).map(|i| format!("e{i}")).collect();
        assert_eq!(ids, expected);
        hub.stop();
    }
    // The store's threads let go of it once they notice.
    let history = reopen(open).await;
    let hub = TestHub::start_on(history, anonymous()).await;
    let mut sse = hub.subscribe("topic=t&lastEventID=e250", &[]).await;
    let got: Vec<String> = sse.take(250).await.into_iter().map(|e| e.data).collect();
    let expected: Vec<String> = (251..=500).map(|i| i.to_string()).collect();
    assert_eq!(got, expected);
    let _ = std::fs::remove_dir_all(&dir);
}

per_transport!(
    events_of_the_body_are_updates,
    the_first_refused_event_ends_the_request,
    bad_bytes_and_big_events_are_refused,
);
