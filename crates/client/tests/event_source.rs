//! The client against small servers over real sockets: each test scripts, byte for byte, what
//! its server writes on each connection, and checks what the client sent and yielded.
//!
//! Every wait is bounded (`WAIT`), so a bug fails a test instead of hanging it; the servers
//! report requests over channels, so tests wait for facts rather than sleep. Timing assertions
//! use loose upper bounds: the machine may be busy.

use futures_util::StreamExt;
use futures_util::stream::FusedStream;
use herald_client::{Error, EventSource, Item, Limits, MessageEvent, ReadyState};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for a reconnection that must not happen.
const QUIET: Duration = Duration::from_millis(500);

// ---- the scripted server ----------------------------------------------------------------

/// A request as the server saw it.
#[derive(Debug)]
struct Seen {
    head: String,
    at: Instant,
}

impl Seen {
    /// The values of header `name`, in order.
    fn headers(&self, name: &str) -> Vec<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim())
            })
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).first().copied()
    }
}

/// Serves each connection with `respond(n, stream)` (n counts connections from 0) after reading
/// the request head, and reports every request head on the returned channel.
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

/// Writes an SSE response framed by `Content-Length`, then closes the connection.
async fn sse_then_close(mut stream: TcpStream, body: &str) {
    let response = format!("{SSE_HEAD}content-length: {}\r\n\r\n{body}", body.len());
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Writes the head of a chunked SSE response and `body` as one chunk, leaving the response open.
async fn sse_chunked_start(stream: &mut TcpStream, body: &str) {
    let head = format!("{SSE_HEAD}transfer-encoding: chunked\r\n\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    if !body.is_empty() {
        let _ = stream.write_all(chunk(body.as_bytes()).as_slice()).await;
    }
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A chunked SSE response with `body` that stays open (until the client goes).
async fn sse_and_hold(mut stream: TcpStream, body: &str) {
    sse_chunked_start(&mut stream, body).await;
    wait_for_eof(&mut stream).await;
}

/// Reads until the client closes the connection (or a long while passes); true on EOF.
async fn wait_for_eof(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_to_end)
        .await
        .is_ok()
}

/// A raw response, then the connection held open until the client goes.
async fn respond_raw(mut stream: TcpStream, response: Vec<u8>) {
    let _ = stream.write_all(&response).await;
    wait_for_eof(&mut stream).await;
}

// ---- client-side helpers ----------------------------------------------------------------

async fn next(source: &mut EventSource) -> Result<Item, Error> {
    tokio::time::timeout(WAIT, source.next())
        .await
        .expect("an item in time")
        .expect("the stream goes on")
}

async fn open(source: &mut EventSource) {
    match next(source).await {
        Ok(Item::Open) => {}
        other => panic!("expected Open, got {other:?}"),
    }
}

async fn message(source: &mut EventSource) -> MessageEvent {
    match next(source).await {
        Ok(Item::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn data(source: &mut EventSource) -> String {
    message(source).await.data
}

async fn end(source: &mut EventSource) {
    let item = tokio::time::timeout(WAIT, source.next())
        .await
        .expect("the end in time");
    assert!(item.is_none(), "expected the end, got {item:?}");
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a request in time")
        .expect("the server runs")
}

async fn no_request(rx: &mut mpsc::UnboundedReceiver<Seen>) {
    if let Ok(Some(seen)) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("unexpected request:\n{}", seen.head);
    }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

// ---- connecting and receiving -----------------------------------------------------------

#[tokio::test]
async fn receives_events_and_sends_the_right_headers() {
    let (addr, mut requests) = server(|_, s| {
        sse_and_hold(
            s,
            ": hello\n\nid: 1\nevent: add\ndata: a\ndata: b\n\ndata: c\n\n",
        )
    })
    .await;
    let mut source = EventSource::builder(&format!("http://{addr}/events?topic=x&topic=y"))
        .header("authorization", "Bearer secret-token")
        .header("x-tag", "one")
        .header("x-tag", "two")
        .build()
        .unwrap();
    assert_eq!(source.ready_state(), ReadyState::Connecting);
    open(&mut source).await;
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
    let m = message(&mut source).await;
    assert_eq!(
        (
            m.event_type.as_str(),
            m.data.as_str(),
            m.last_event_id.as_str()
        ),
        ("message", "c", "1"),
        "the id persists, the type does not"
    );
    assert_eq!(source.last_event_id(), "1");

    let seen = recv(&mut requests).await;
    assert!(
        seen.head
            .starts_with("GET /events?topic=x&topic=y HTTP/1.1\r\n"),
        "{}",
        seen.head
    );
    assert_eq!(seen.header("host"), Some(addr.to_string().as_str()));
    assert_eq!(seen.header("accept"), Some("text/event-stream"));
    assert_eq!(seen.header("cache-control"), Some("no-store"));
    assert_eq!(seen.header("authorization"), Some("Bearer secret-token"));
    assert_eq!(seen.headers("x-tag"), ["one", "two"]);
    assert_eq!(seen.header("last-event-id"), None, "no id known yet");
}

#[tokio::test]
async fn initial_last_event_id_is_sent_on_the_first_request() {
    let (addr, mut requests) = server(|_, s| sse_and_hold(s, "")).await;
    let mut source = EventSource::builder(&url(addr))
        .last_event_id("urn:uuid:42")
        .build()
        .unwrap();
    assert_eq!(source.last_event_id(), "urn:uuid:42");
    open(&mut source).await;
    assert_eq!(
        recv(&mut requests).await.header("last-event-id"),
        Some("urn:uuid:42")
    );
}

#[tokio::test]
async fn content_type_parameters_and_case_are_accepted() {
    let (addr, _requests) = server(|_, s| {
        let body = "data: ok\n\n";
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: Text/Event-Stream ; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        respond_raw(s, response.into_bytes())
    })
    .await;
    let mut source = EventSource::new(&url(addr)).unwrap();
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "ok");
}

/// Content-Length, read-until-close and chunked bodies all carry events; each connection here
/// ends (or is the last), so the client walks through all three.
#[tokio::test]
async fn every_body_framing_works() {
    let (addr, _requests) = server(|n, mut s| async move {
        match n {
            0 => sse_then_close(s, "retry: 10\ndata: by length\n\n").await,
            1 => {
                // No length, no chunking: the body runs until the server closes.
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: by close\n\n")
                    .await;
                let _ = s.shutdown().await;
            }
            _ => {
                sse_chunked_start(&mut s, "data: by chunks\n\n").await;
                wait_for_eof(&mut s).await;
            }
        }
    })
    .await;
    let mut source = EventSource::builder(&url(addr))
        .jitter(0.0)
        .build()
        .unwrap();
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "by length");
    assert!(matches!(next(&mut source).await, Err(Error::Disconnected)));
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "by close");
    assert!(matches!(next(&mut source).await, Err(Error::Disconnected)));
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "by chunks");
}

#[tokio::test]
async fn events_split_across_writes_are_reassembled() {
    let (addr, _requests) = server(|_, mut s| async move {
        sse_chunked_start(&mut s, "").await;
        // One event cut inside the BOM, a field name, a multi-byte character and a CRLF, each
        // piece its own chunk and its own TCP write, with pauses so that they arrive apart.
        let event: &[u8] = b"\xEF\xBB\xBFdata: caf\xC3\xA9\r\n\r\n";
        for piece in [
            &event[..2],
            &event[2..5],
            &event[5..13],
            &event[13..15],
            &event[15..],
        ] {
            let _ = s.write_all(&chunk(piece)).await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And one event split inside a chunk header's data: the chunk framing itself is cut.
        let framed = chunk(b"data: second\n\n");
        let (a, b) = framed.split_at(5);
        let _ = s.write_all(a).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = s.write_all(b).await;
        wait_for_eof(&mut s).await;
    })
    .await;
    let mut source = EventSource::new(&url(addr)).unwrap();
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "caf\u{e9}");
    assert_eq!(data(&mut source).await, "second");
}

// ---- reconnecting -----------------------------------------------------------------------

#[tokio::test]
async fn reconnects_after_a_drop_with_last_event_id() {
    let (addr, mut requests) = server(|n, s| async move {
        match n {
            0 => sse_then_close(
                s,
                "retry: 50\nid: 7\ndata: first\n\nid: 8\ndata: second\n\nid: 99\ndata: unfinished",
            )
            .await,
            _ => sse_and_hold(s, "data: third\n\nid: 9\ndata: fourth\n\n").await,
        }
    })
    .await;
    let mut source = EventSource::builder(&url(addr))
        .jitter(0.0)
        .build()
        .unwrap();
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "first");
    assert_eq!(data(&mut source).await, "second");
    // Events completed before the drop came first; now the drop itself.
    let err = next(&mut source).await.unwrap_err();
    assert!(matches!(err, Error::Disconnected), "{err}");
    assert!(!err.is_fatal());
    assert_eq!(source.ready_state(), ReadyState::Connecting);
    // `id: 99` was read, so it is the last event id even though its event never completed.
    assert_eq!(source.last_event_id(), "99");
    open(&mut source).await;
    let m = message(&mut source).await;
    assert_eq!(
        (m.data.as_str(), m.last_event_id.as_str()),
        ("third", "99"),
        "the unfinished event was dropped, not glued to the next stream"
    );
    assert_eq!(message(&mut source).await.last_event_id, "9");
    assert_eq!(recv(&mut requests).await.header("last-event-id"), None);
    assert_eq!(
        recv(&mut requests).await.header("last-event-id"),
        Some("99")
    );
}

#[tokio::test]
async fn a_non_ascii_last_event_id_is_sent_as_utf8() {
    let (addr, mut requests) = server(|n, s| async move {
        match n {
            0 => sse_then_close(s, "retry: 10\nid: café-1\ndata: x\n\n").await,
            _ => sse_and_hold(s, "").await,
        }
    })
    .await;
    let mut source = EventSource::builder(&url(addr))
        .jitter(0.0)
        .build()
        .unwrap();
    open(&mut source).await;
    data(&mut source).await;
    assert!(next(&mut source).await.is_err());
    open(&mut source).await;
    recv(&mut requests).await;
    assert_eq!(
        recv(&mut requests).await.header("last-event-id"),
        Some("café-1")
    );
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
    // A configured reconnection time of 5 s: only the server's retry can bring it back sooner.
    let mut source = EventSource::builder(&url(addr))
        .retry(Duration::from_secs(5))
        .jitter(0.0)
        .build()
        .unwrap();
    assert_eq!(source.retry(), Duration::from_secs(5));
    open(&mut source).await;
    let first = recv(&mut requests).await;
    data(&mut source).await;
    assert_eq!(source.retry(), Duration::from_millis(300));
    assert!(matches!(next(&mut source).await, Err(Error::Disconnected)));
    let dropped_at = Instant::now();
    open(&mut source).await;
    let second = recv(&mut requests).await;
    let gap = second.at.duration_since(dropped_at.max(first.at));
    assert!(
        gap >= Duration::from_millis(280),
        "reconnected after {gap:?}, sooner than retry"
    );
    assert!(
        gap < Duration::from_millis(2500),
        "reconnected after {gap:?}: retry ignored"
    );
}

#[tokio::test]
async fn backoff_grows_on_consecutive_connect_failures_and_is_capped() {
    // A port with nothing listening: every attempt fails with connection refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut source = EventSource::builder(&url(addr))
        .retry(Duration::from_millis(25))
        .max_backoff(Duration::from_millis(100))
        .jitter(0.0)
        .build()
        .unwrap();
    let mut times = vec![];
    for _ in 0..8 {
        let err = next(&mut source).await.unwrap_err();
        assert!(matches!(err, Error::Connect(_)) && !err.is_fatal(), "{err}");
        // The cause is kept, typed, and still shown in the message.
        let cause = std::error::Error::source(&err).expect("the connect error's cause");
        assert!(err.to_string().contains(&cause.to_string()), "{err}");
        assert_eq!(source.ready_state(), ReadyState::Connecting);
        times.push(Instant::now());
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Delays 25, 50, then 100 (capped; doubling would give 200, 400, 800, 1600).
    for (gap, min) in gaps.iter().zip([25u64, 50, 100, 100, 100, 100, 100]) {
        assert!(*gap >= Duration::from_millis(min - 5), "gaps {gaps:?}");
    }
    assert!(gaps[6] < Duration::from_millis(800), "not capped: {gaps:?}");
}

/// Failures double the delay; a connection that opens resets it, so the reconnection after a
/// working stream drops waits the base time again.
#[tokio::test]
async fn a_successful_connection_resets_the_backoff() {
    let (addr, mut requests) = server(|n, s| async move {
        match n {
            // Accepted, then closed before any response: a connect failure.
            0..=2 => drop(s),
            3 => sse_then_close(s, "data: up\n\n").await,
            _ => sse_and_hold(s, "").await,
        }
    })
    .await;
    let mut source = EventSource::builder(&url(addr))
        .retry(Duration::from_millis(100))
        .jitter(0.0)
        .build()
        .unwrap();
    for _ in 0..3 {
        let err = next(&mut source).await.unwrap_err();
        assert!(matches!(err, Error::Connect(_)) && !err.is_fatal(), "{err}");
    }
    // Waited 100, 200, then 400 ms before this attempt.
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "up");
    assert!(matches!(next(&mut source).await, Err(Error::Disconnected)));
    let dropped_at = Instant::now();
    open(&mut source).await;
    let seen: Vec<Seen> = [(); 5]
        .iter()
        .map(|_| requests.try_recv().unwrap())
        .collect();
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[2] >= Duration::from_millis(395), "grew: {gaps:?}");
    let gap = seen[4].at.duration_since(dropped_at);
    assert!(
        gap < Duration::from_millis(600),
        "waited {gap:?} after a working stream (doubling again would be 800 ms)"
    );
}

/// A broken chunked body (the server vanishes mid-stream) is a transient `Body` error.
#[tokio::test]
async fn a_broken_body_is_reported_then_reconnected() {
    let (addr, mut requests) = server(|n, mut s| async move {
        match n {
            0 => {
                sse_chunked_start(&mut s, "retry: 10\ndata: before\n\n").await;
                // Half a chunk, then gone without the terminating zero-length chunk.
                let _ = s.write_all(b"20\r\ndata: cut").await;
                drop(s);
            }
            _ => sse_and_hold(s, "data: after\n\n").await,
        }
    })
    .await;
    let mut source = EventSource::builder(&url(addr))
        .jitter(0.0)
        .build()
        .unwrap();
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "before");
    let err = next(&mut source).await.unwrap_err();
    assert!(matches!(err, Error::Body(_)) && !err.is_fatal(), "{err}");
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "after");
    recv(&mut requests).await;
    recv(&mut requests).await;
}

/// A stream over the size limits is dropped by the client (it must not keep reading it) and
/// then reconnected; events completed before the offending line are still delivered.
#[tokio::test]
async fn a_stream_over_the_limits_is_dropped_and_reconnected() {
    let (eof_tx, mut eof_rx) = mpsc::unbounded_channel();
    let (addr, mut requests) = server(move |n, mut s| {
        let eof_tx = eof_tx.clone();
        async move {
            if n == 0 {
                let long = "x".repeat(200);
                sse_chunked_start(
                    &mut s,
                    &format!("retry: 10\ndata: fine\n\ndata: {long}\n\ndata: never\n\n"),
                )
                .await;
                let _ = eof_tx.send(wait_for_eof(&mut s).await);
            } else {
                sse_and_hold(s, "data: again\n\n").await;
            }
        }
    })
    .await;
    let mut source = EventSource::builder(&url(addr))
        .limits(Limits {
            max_line: 64,
            max_event: 1024,
        })
        .jitter(0.0)
        .build()
        .unwrap();
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "fine");
    let err = next(&mut source).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Decode(herald_client::DecodeError::LineTooLong { limit: 64 })
        ),
        "{err}"
    );
    assert!(!err.is_fatal());
    let eof = tokio::time::timeout(WAIT, eof_rx.recv()).await.unwrap();
    assert_eq!(eof, Some(true), "the client closed the first connection");
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "again");
    recv(&mut requests).await;
    recv(&mut requests).await;
}

// ---- stopping for good ------------------------------------------------------------------

#[tokio::test]
async fn status_204_stops_for_good() {
    let (addr, mut requests) =
        server(|_, s| respond_raw(s, b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())).await;
    let mut source = EventSource::builder(&url(addr))
        .retry(Duration::from_millis(10))
        .build()
        .unwrap();
    end(&mut source).await;
    assert_eq!(source.ready_state(), ReadyState::Closed);
    assert!(source.is_terminated());
    recv(&mut requests).await;
    no_request(&mut requests).await;
    assert!(source.next().await.is_none(), "still ended");
}

#[tokio::test]
async fn wrong_content_type_is_fatal() {
    for (header, expected) in [
        ("content-type: text/html\r\n", "text/html"),
        ("content-type: text/event-streamx\r\n", "text/event-streamx"),
        ("", ""),
    ] {
        let (addr, mut requests) = server(move |_, s| {
            let response =
                format!("HTTP/1.1 200 OK\r\n{header}content-length: 10\r\n\r\ndata: x\n\n\n");
            respond_raw(s, response.into_bytes())
        })
        .await;
        let mut source = EventSource::builder(&url(addr))
            .retry(Duration::from_millis(10))
            .build()
            .unwrap();
        let err = next(&mut source).await.unwrap_err();
        assert!(
            matches!(&err, Error::ContentType(ct) if ct == expected),
            "{err}"
        );
        assert!(err.is_fatal());
        assert_eq!(source.ready_state(), ReadyState::Closed);
        end(&mut source).await;
        recv(&mut requests).await;
        no_request(&mut requests).await;
    }
}

#[tokio::test]
async fn error_status_is_fatal_and_carries_the_body() {
    for (status, body) in [
        ("500 Internal Server Error", "hub storage unavailable"),
        ("400 Bad Request", "missing topic parameter"),
        ("201 Created", ""),
    ] {
        let (addr, mut requests) = server(move |_, s| {
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            respond_raw(s, response.into_bytes())
        })
        .await;
        let mut source = EventSource::builder(&url(addr))
            .retry(Duration::from_millis(10))
            .build()
            .unwrap();
        let err = next(&mut source).await.unwrap_err();
        match &err {
            Error::Status { status: s, body: b } => {
                assert_eq!(s.as_str(), &status[..3]);
                assert_eq!(b, body);
            }
            other => panic!("{other}"),
        }
        assert!(err.is_fatal());
        assert!(err.to_string().contains(body), "{err}");
        end(&mut source).await;
        recv(&mut requests).await;
        no_request(&mut requests).await;
    }
}

/// An error body that never ends does not hold the error back for long, and only its start is
/// kept.
#[tokio::test]
async fn error_body_is_truncated() {
    let (addr, _requests) = server(|_, mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let _ = s.write_all(&chunk(&[b'e'; 2000])).await;
        wait_for_eof(&mut s).await;
    })
    .await;
    let mut source = EventSource::new(&url(addr)).unwrap();
    match next(&mut source).await {
        Err(Error::Status { status, body }) => {
            assert_eq!(status.as_u16(), 503);
            assert_eq!(body.len(), 512);
        }
        other => panic!("{other:?}"),
    }
    end(&mut source).await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (target, mut target_requests) = server(|_, s| sse_and_hold(s, "data: x\n\n")).await;
    let location = format!("http://{target}/moved");
    let (addr, mut requests) = server({
        let location = location.clone();
        move |_, s| {
            let response = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"
            );
            respond_raw(s, response.into_bytes())
        }
    })
    .await;
    let mut source = EventSource::builder(&url(addr))
        .retry(Duration::from_millis(10))
        .build()
        .unwrap();
    let err = next(&mut source).await.unwrap_err();
    match &err {
        Error::Redirect {
            status,
            location: l,
        } => {
            assert_eq!(status.as_u16(), 307);
            assert_eq!(l, &location);
        }
        other => panic!("{other}"),
    }
    assert!(err.is_fatal());
    end(&mut source).await;
    recv(&mut requests).await;
    no_request(&mut requests).await;
    no_request(&mut target_requests).await;
}

#[tokio::test]
async fn close_drops_the_connection_and_ends_the_stream() {
    let (eof_tx, mut eof_rx) = mpsc::unbounded_channel();
    let (addr, _requests) = server(move |_, mut s| {
        let eof_tx = eof_tx.clone();
        async move {
            sse_chunked_start(&mut s, "data: x\n\ndata: y\n\n").await;
            let _ = eof_tx.send(wait_for_eof(&mut s).await);
        }
    })
    .await;
    let mut source = EventSource::new(&url(addr)).unwrap();
    open(&mut source).await;
    assert_eq!(data(&mut source).await, "x");
    assert!(!source.is_terminated());
    source.close();
    assert_eq!(source.ready_state(), ReadyState::Closed);
    assert!(source.is_terminated());
    assert!(source.next().await.is_none(), "undelivered events dropped");
    let eof = tokio::time::timeout(WAIT, eof_rx.recv()).await.unwrap();
    assert_eq!(eof, Some(true), "the server saw the connection close");
}

// ---- configuration ----------------------------------------------------------------------

#[test]
fn configuration_errors() {
    assert!(EventSource::new("https://example.com/").is_ok());
    let err = EventSource::new("ftp://example.com/").unwrap_err();
    assert!(matches!(&err, Error::UnsupportedScheme(s) if s == "ftp"));
    assert!(err.to_string().contains("use http:// or https://"), "{err}");
    assert!(err.is_fatal());
    let not_pem = herald_client::TlsOptions::default().add_root_pem(b"not a certificate");
    let err = EventSource::builder("https://example.com/")
        .tls(not_pem)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Certificate(_)), "{err}");
    for bad in ["not a url", "/relative", "http://", ""] {
        assert!(
            matches!(EventSource::new(bad), Err(Error::InvalidUrl { .. })),
            "{bad:?}"
        );
    }
    assert!(matches!(
        EventSource::builder("http://127.0.0.1/")
            .header("bad header", "x")
            .build(),
        Err(Error::InvalidHeader { name, .. }) if name == "bad header"
    ));
    assert!(matches!(
        EventSource::builder("http://127.0.0.1/")
            .header("x-ok", "line\nbreak")
            .build(),
        Err(Error::InvalidHeader { .. })
    ));
}

/// Building touches neither the network nor the runtime: it works outside one, and the source
/// can be moved into a spawned task.
#[test]
fn building_needs_no_runtime_and_the_source_is_send() {
    fn is_send<T: Send + Unpin + 'static>(_: &T) {}
    let source = EventSource::builder("http://127.0.0.1:1/")
        .jitter(f64::NAN)
        .build()
        .unwrap();
    is_send(&source);
    assert_eq!(source.ready_state(), ReadyState::Connecting);
    assert_eq!(source.retry(), Duration::from_secs(3), "the default");
    assert!(format!("{source:?}").contains("127.0.0.1:1"));
}
