//! The client against small servers over real sockets: each test scripts what its server writes
//! on each connection, byte for byte, and checks what the client sent and yielded.

use futures_util::StreamExt;
use herald_client::{Error, EventSource, Item, ReadyState};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// A request as the server saw it.
#[derive(Debug)]
struct Seen {
    head: String,
    at: Instant,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Serves each connection with `respond(n, stream)` (n counts from 0) and reports requests.
async fn server<F, Fut>(respond: F) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>)
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let at = Instant::now();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let _ = tx.send(Seen {
                head: String::from_utf8_lossy(&head).into_owned(),
                at,
            });
            tokio::spawn(respond(n, stream));
        }
    });
    (addr, rx)
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n";

/// Writes an SSE response with the given body and closes the connection.
async fn sse_then_close(mut stream: TcpStream, body: &str) {
    let response = format!("{SSE_HEAD}content-length: {}\r\n\r\n{body}", body.len());
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Writes a chunked SSE response with `body` and keeps the connection open.
async fn sse_and_hold(mut stream: TcpStream, body: &str) {
    let head = format!("{SSE_HEAD}transfer-encoding: chunked\r\n\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    if !body.is_empty() {
        let _ = stream
            .write_all(format!("{:x}\r\n{body}\r\n", body.len()).as_bytes())
            .await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
}

async fn next(source: &mut EventSource) -> Result<Item, Error> {
    tokio::time::timeout(WAIT, source.next())
        .await
        .expect("an item in time")
        .expect("the stream goes on")
}

async fn message(source: &mut EventSource) -> herald_client::MessageEvent {
    match next(source).await {
        Ok(Item::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a request in time")
        .unwrap()
}

#[tokio::test]
async fn receives_events_and_sends_the_right_headers() {
    let (addr, mut requests) =
        server(|_, s| sse_and_hold(s, "id: 1\nevent: add\ndata: a\ndata: b\n\n")).await;
    let mut source = EventSource::builder(&format!("http://{addr}/events?topic=x"))
        .header("authorization", "Bearer secret-token")
        .build()
        .unwrap();
    assert_eq!(source.ready_state(), ReadyState::Connecting);
    assert!(matches!(next(&mut source).await, Ok(Item::Open)));
    assert_eq!(source.ready_state(), ReadyState::Open);
    let m = message(&mut source).await;
    assert_eq!(
        (
            m.event_type.as_str(),
            m.data.as_str(),
            m.last_event_id.as_str()
        ),
        ("add", "a\nb", "1")
    );
    let seen = recv(&mut requests).await;
    assert!(
        seen.head.starts_with("GET /events?topic=x HTTP/1.1\r\n"),
        "{}",
        seen.head
    );
    assert_eq!(seen.header("accept"), Some("text/event-stream"));
    assert_eq!(seen.header("authorization"), Some("Bearer secret-token"));
    assert_eq!(seen.header("last-event-id"), None, "no id known yet");
    assert_eq!(source.last_event_id(), "1");
}

#[tokio::test]
async fn reconnects_after_a_drop_with_last_event_id() {
    let (addr, mut requests) = server(|n, s| async move {
        match n {
            0 => {
                sse_then_close(
                    s,
                    "retry: 50\nid: 7\ndata: first\n\nid: 8\ndata: second\n\ndata: unfinished",
                )
                .await
            }
            _ => sse_and_hold(s, "id: 9\ndata: third\n\n").await,
        }
    })
    .await;
    let mut source = EventSource::builder(&format!("http://{addr}/"))
        .jitter(0.0)
        .build()
        .unwrap();
    assert!(matches!(next(&mut source).await, Ok(Item::Open)));
    assert_eq!(message(&mut source).await.data, "first");
    assert_eq!(message(&mut source).await.data, "second");
    let err = next(&mut source).await.unwrap_err();
    assert!(matches!(err, Error::Disconnected), "{err}");
    assert!(!err.is_fatal());
    assert_eq!(source.ready_state(), ReadyState::Connecting);
    assert!(matches!(next(&mut source).await, Ok(Item::Open)));
    let m = message(&mut source).await;
    assert_eq!(
        (m.data.as_str(), m.last_event_id.as_str()),
        ("third", "9"),
        "the unfinished event was dropped"
    );
    assert_eq!(recv(&mut requests).await.header("last-event-id"), None);
    assert_eq!(recv(&mut requests).await.header("last-event-id"), Some("8"));
}

#[tokio::test]
async fn retry_field_sets_the_reconnection_time() {
    let (addr, mut requests) = server(|n, s| async move {
        match n {
            0 => sse_then_close(s, "retry: 300\ndata: x\n\n").await,
            _ => sse_and_hold(s, "").await,
        }
    })
    .await;
    // Default reconnection time 5 s: only the server's retry can make it come back sooner.
    let mut source = EventSource::builder(&format!("http://{addr}/"))
        .retry(Duration::from_secs(5))
        .jitter(0.0)
        .build()
        .unwrap();
    assert!(matches!(next(&mut source).await, Ok(Item::Open)));
    let first = recv(&mut requests).await;
    message(&mut source).await;
    assert!(next(&mut source).await.is_err());
    assert_eq!(source.retry(), Duration::from_millis(300));
    let closed_at = Instant::now();
    assert!(matches!(next(&mut source).await, Ok(Item::Open)));
    let second = recv(&mut requests).await;
    let gap = second.at.duration_since(closed_at.max(first.at));
    assert!(
        gap >= Duration::from_millis(280),
        "waited {gap:?}, less than retry"
    );
    assert!(
        gap < Duration::from_millis(2500),
        "waited {gap:?}: retry ignored"
    );
}

#[tokio::test]
async fn backoff_grows_on_consecutive_connect_failures() {
    // A port with nothing listening: every attempt fails with connection refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut source = EventSource::builder(&format!("http://{addr}/"))
        .retry(Duration::from_millis(40))
        .max_backoff(Duration::from_millis(200))
        .jitter(0.0)
        .build()
        .unwrap();
    let mut times = vec![Instant::now()];
    for _ in 0..5 {
        let err = next(&mut source).await.unwrap_err();
        assert!(matches!(err, Error::Connect(_)) && !err.is_fatal(), "{err}");
        times.push(Instant::now());
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Attempt 1 is immediate, then 40, 80, 160, 200 (capped) ms.
    for (gap, min) in gaps[1..].iter().zip([40u64, 80, 160, 200]) {
        assert!(*gap >= Duration::from_millis(min - 5), "gaps {gaps:?}");
    }
    assert!(gaps[4] < Duration::from_millis(1000), "capped: {gaps:?}");
}

#[tokio::test]
async fn status_204_stops_for_good() {
    let (addr, mut requests) = server(|_, mut s| async move {
        let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let mut source = EventSource::builder(&format!("http://{addr}/"))
        .retry(Duration::from_millis(10))
        .build()
        .unwrap();
    assert!(
        tokio::time::timeout(WAIT, source.next())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(source.ready_state(), ReadyState::Closed);
    recv(&mut requests).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), requests.recv())
            .await
            .is_err(),
        "no second request"
    );
}

#[tokio::test]
async fn wrong_content_type_is_fatal() {
    let (addr, mut requests) = server(|_, mut s| async move {
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 5\r\n\r\nhello",
            )
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let mut source = EventSource::builder(&format!("http://{addr}/"))
        .retry(Duration::from_millis(10))
        .build()
        .unwrap();
    let err = next(&mut source).await.unwrap_err();
    assert!(
        matches!(&err, Error::ContentType(ct) if ct == "text/html"),
        "{err}"
    );
    assert!(err.is_fatal());
    assert!(
        tokio::time::timeout(WAIT, source.next())
            .await
            .unwrap()
            .is_none()
    );
    recv(&mut requests).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), requests.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn content_type_parameters_are_accepted() {
    let (addr, _requests) = server(|_, mut s| async move {
        let body = "data: ok\n\n";
        let _ = s
            .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: Text/Event-Stream; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes())
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let mut source = EventSource::new(&format!("http://{addr}/")).unwrap();
    assert!(matches!(next(&mut source).await, Ok(Item::Open)));
    assert_eq!(message(&mut source).await.data, "ok");
}

#[tokio::test]
async fn error_status_is_fatal_and_carries_the_body() {
    let (addr, mut requests) = server(|_, mut s| async move {
        let body = "missing topic parameter";
        let _ = s
            .write_all(format!("HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes())
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let mut source = EventSource::builder(&format!("http://{addr}/"))
        .retry(Duration::from_millis(10))
        .build()
        .unwrap();
    let err = next(&mut source).await.unwrap_err();
    match &err {
        Error::Status { status, body } => {
            assert_eq!(status.as_u16(), 400);
            assert_eq!(body, "missing topic parameter");
        }
        other => panic!("{other}"),
    }
    assert!(err.is_fatal());
    assert!(err.to_string().contains("missing topic"), "{err}");
    assert!(
        tokio::time::timeout(WAIT, source.next())
            .await
            .unwrap()
            .is_none()
    );
    recv(&mut requests).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), requests.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn initial_last_event_id_is_sent_on_the_first_request() {
    let (addr, mut requests) = server(|_, s| sse_and_hold(s, "")).await;
    let mut source = EventSource::builder(&format!("http://{addr}/"))
        .last_event_id("urn:uuid:42")
        .build()
        .unwrap();
    assert!(matches!(next(&mut source).await, Ok(Item::Open)));
    assert_eq!(
        recv(&mut requests).await.header("last-event-id"),
        Some("urn:uuid:42")
    );
}

#[tokio::test]
async fn events_split_across_writes_are_reassembled() {
    let (addr, _requests) = server(|_, mut s| async move {
        let _ = s
            .write_all(format!("{SSE_HEAD}transfer-encoding: chunked\r\n\r\n").as_bytes())
            .await;
        // One event cut inside the BOM, a field name, a multi-byte character and a CRLF.
        let event: &[u8] = b"\xEF\xBB\xBFdata: caf\xC3\xA9\r\n\r\n";
        for piece in [
            &event[..2],
            &event[2..5],
            &event[5..13],
            &event[13..15],
            &event[15..],
        ] {
            let _ = s
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .await;
            let _ = s.write_all(piece).await;
            let _ = s.write_all(b"\r\n").await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let mut source = EventSource::new(&format!("http://{addr}/")).unwrap();
    assert!(matches!(next(&mut source).await, Ok(Item::Open)));
    assert_eq!(message(&mut source).await.data, "caf\u{e9}");
}

#[tokio::test]
async fn configuration_errors() {
    assert!(
        matches!(EventSource::new("https://example.com/"), Err(Error::UnsupportedScheme(s)) if s == "https")
    );
    assert!(matches!(
        EventSource::new("not a url"),
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        EventSource::new("/relative"),
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        EventSource::builder("http://127.0.0.1/")
            .header("bad header", "x")
            .build(),
        Err(Error::InvalidHeader { .. })
    ));
}

#[tokio::test]
async fn close_ends_the_stream() {
    let (addr, _requests) = server(|_, s| sse_and_hold(s, "data: x\n\n")).await;
    let mut source = EventSource::new(&format!("http://{addr}/")).unwrap();
    assert!(matches!(next(&mut source).await, Ok(Item::Open)));
    source.close();
    assert_eq!(source.ready_state(), ReadyState::Closed);
    assert!(source.next().await.is_none());
}
