//! Every transport over real sockets (HTTP/1.1 and HTTP/1.0 on the direct path, HTTP/1.1 and
//! HTTP/2 over TLS, h2c): each in its own framing, one answer's headers for all of them; and
//! what HTTPS adds: HTTP/2 by ALPN with many subscriptions on one
//! connection, one of them not read or ending; the certificate replaced under live
//! subscribers; a stuck TLS subscriber closed.

mod common;

use bytes::Bytes;
use common::*;
use herald_hub::Settings;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Reads from `stream` until what arrived contains `want`; everything read.
async fn read_until(stream: &mut TlsStream<TcpStream>, got: &mut String, want: &str) {
    let mut buf = [0u8; 4096];
    while !got.contains(want) {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in time; got {got:?}"))
            .unwrap();
        assert!(n > 0, "the stream ended before {want:?}: {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

async fn subscribe_h1(hub: &TestHub, topic: &str) -> (TlsStream<TcpStream>, String) {
    let mut stream = hub.tls_connect(&[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream
        .write_all(
            format!("GET /.well-known/mercure?topic={topic} HTTP/1.1\r\nhost: localhost\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut got = String::new();
    read_until(&mut stream, &mut got, "\r\n\r\n").await;
    (stream, got)
}

#[tokio::test]
async fn http_1_1_over_tls_subscribes_and_publishes() {
    let hub = TestHub::start(anonymous()).await;
    let (mut stream, mut got) = subscribe_h1(&hub, "t").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        got.to_lowercase()
            .contains("content-type: text/event-stream"),
        "{got}"
    );
    // Published over TLS too, on a connection of its own.
    let mut publisher = hub.tls_connect(&[b"http/1.1"]).await;
    let token = publisher_token(&["*"]);
    let body = "topic=t&data=over+tls";
    publisher
        .write_all(
            format!(
                "POST /.well-known/mercure HTTP/1.1\r\nhost: localhost\r\n\
                 authorization: Bearer {token}\r\n\
                 content-type: application/x-www-form-urlencoded\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    read_until(&mut publisher, &mut answer, "urn:uuid:").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    read_until(&mut stream, &mut got, "data: over tls\n\n").await;
}

/// What one HTTP/2 subscription received so far.
async fn read_h2(body: &mut hyper::body::Incoming, got: &mut String, want: &str) {
    while !got.contains(want) {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap_or_else(|_| panic!("not all in time: {} bytes", got.len()))
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            got.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

/// Twelve subscriptions on one HTTP/2 connection (a browser's page with twelve
/// `EventSource`s, beyond HTTP/1.1's six connections), and a publish on the same connection:
/// every subscription receives it. One of them is then never read while 4 MB are published:
/// flow control holds that stream back, not the others.
#[tokio::test]
async fn http_2_carries_many_subscriptions_on_one_connection() {
    let hub = TestHub::start(anonymous()).await;
    let tls = hub.tls_connect(&[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for _ in 0..12 {
        let request = http::Request::get("https://localhost/.well-known/mercure?topic=t")
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap();
        let response = tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), http::Version::HTTP_2);
        streams.push((response.into_body(), String::new()));
    }
    let token = publisher_token(&["*"]);
    let publish = |data: String| {
        http::Request::post("https://localhost/.well-known/mercure")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                Full::new(Bytes::from(format!("topic=t&data={data}")))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap()
    };
    let response = sender.send_request(publish("hello".into())).await.unwrap();
    assert_eq!(response.status(), 200);
    for (body, got) in &mut streams {
        read_h2(body, got, "data: hello\n\n").await;
    }
    // The first stream is no longer read; the others read everything.
    let big = "x".repeat(100 << 10);
    for k in 0..40 {
        let response = sender
            .send_request(publish(format!("{big}{k}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // Read side by side, as a browser does: a stream read only after the others would hold
    // the connection's window with what it was sent.
    let want = format!("{big}39\n\n");
    futures_util::future::join_all(
        streams
            .iter_mut()
            .skip(1)
            .map(|(body, got)| read_h2(body, got, &want)),
    )
    .await;
}

/// A new certificate (files replaced, then a reload, as on SIGHUP): live subscriptions keep
/// their connection and receive, new connections get the new certificate.
#[tokio::test]
async fn a_reloaded_certificate_serves_new_connections_and_keeps_live_ones() {
    let hub = TestHub::start(anonymous()).await;
    let old = hub.tls.certificates()[0].clone();
    let old_client = hub.tls_connector(&[b"http/1.1"]);
    let (mut live, mut got) = subscribe_h1(&hub, "t").await;
    let dir = hub.cert_path.parent().unwrap();
    let (cert, key) = write_pair(dir, "next");
    std::fs::copy(&cert, &hub.cert_path).unwrap();
    std::fs::copy(&key, &hub.key_path).unwrap();
    hub.tls.reload().unwrap();
    let new = CertificateDer::from(
        std::fs::read(&cert)
            .map(|pem| {
                use rustls_pki_types::pem::PemObject;
                CertificateDer::from_pem_slice(&pem).unwrap().to_vec()
            })
            .unwrap(),
    );
    assert_ne!(new, old);
    // A client that trusts only the new certificate gets in.
    let fresh = hub.tls_connect(&[b"http/1.1"]).await;
    assert_eq!(
        fresh.get_ref().1.peer_certificates().unwrap()[0],
        new,
        "new connections get the new certificate"
    );
    // One that trusts only the old one does not.
    let tcp = TcpStream::connect(hub.tls_addr).await.unwrap();
    let refused = old_client
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(refused.is_err(), "the old certificate is gone");
    // The subscription opened before still receives.
    let id = hub
        .publish(&[("topic", "t"), ("data", "after reload")])
        .await;
    read_until(
        &mut live,
        &mut got,
        &format!("id: {id}\ndata: after reload\n\n"),
    )
    .await;
}

/// A client that opens a TLS connection and sends nothing is cut off after the header
/// timeout, as a plaintext one is.
#[tokio::test]
async fn a_silent_tls_client_is_cut_off_at_the_header_timeout() {
    let hub = TestHub::start(Settings {
        header_timeout: Duration::from_secs(1),
        ..anonymous()
    })
    .await;
    let mut silent = TcpStream::connect(hub.tls_addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The headers of a raw HTTP/1 response head, lowercased, without the framing ones each
/// transport adds itself.
fn head_headers(head: &str) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .filter(|(n, _)| !["transfer-encoding", "connection", "date"].contains(&n.as_str()))
        .collect();
    headers.sort();
    headers
}

/// One subscription answer for every transport: the direct HTTP/1.1 writer, HTTP/1.0, a
/// subscription behind another request of a keep-alive connection (hyper), HTTP/1.1 over
/// TLS, HTTP/2 over TLS and h2c answer the same request with the same status and headers
/// (SSE, `Last-Event-ID`, `Link`, CORS), apart from each one's framing.
#[tokio::test]
async fn every_transport_answers_a_subscription_with_the_same_headers() {
    let hub = TestHub::start(Settings {
        cors_origins: vec!["https://app.example".into()],
        ..anonymous()
    })
    .await;
    let id = hub.publish(&[("topic", "t"), ("data", "x")]).await;
    let target = "/.well-known/mercure?topic=t";
    let fields = format!("origin: https://app.example\r\nlast-event-id: {id}\r\n");
    let h1 = |version: &str, before: &str| {
        let host = if version == "1.1" {
            "host: localhost\r\n"
        } else {
            ""
        };
        format!("{before}GET {target} HTTP/{version}\r\n{host}{fields}\r\n")
    };
    let mut heads = Vec::new();
    // Plaintext: direct (HTTP/1.1, HTTP/1.0) and hyper (after another request).
    let healthz = "GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n";
    for (name, request) in [
        ("direct HTTP/1.1", h1("1.1", "")),
        ("direct HTTP/1.0", h1("1.0", "")),
        ("hyper HTTP/1.1 keep-alive", h1("1.1", healthz)),
    ] {
        let mut stream = TcpStream::connect(hub.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        // Up to the end of the subscription's head, the last one.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got);
            if let Some(start) = text.rfind("HTTP/1.")
                && text[start..].contains("text/event-stream")
                && text[start..].contains("\r\n\r\n")
            {
                break;
            }
            let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "{name}: {text}");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let start = text.rfind("HTTP/1.").unwrap();
        let head = text[start..].split("\r\n\r\n").next().unwrap().to_owned();
        assert!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{name}: {head}"
        );
        heads.push((name.to_owned(), head_headers(&head)));
    }
    // HTTP/1.1 over TLS.
    let mut tls = hub.tls_connect(&[b"http/1.1"]).await;
    tls.write_all(h1("1.1", "").as_bytes()).await.unwrap();
    let mut got = String::new();
    read_until(&mut tls, &mut got, "\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    heads.push((
        "TLS HTTP/1.1".into(),
        head_headers(got.split("\r\n\r\n").next().unwrap()),
    ));
    // HTTP/2 over TLS, and h2c.
    let tls = hub.tls_connect(&[b"h2"]).await;
    let plain = TcpStream::connect(hub.addr).await.unwrap();
    for (name, io) in [
        ("TLS HTTP/2", Box::new(tls) as Box<dyn Io>),
        ("h2c", Box::new(plain) as Box<dyn Io>),
    ] {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get(format!("https://localhost{target}"))
            .header("origin", "https://app.example")
            .header("last-event-id", &id)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(response.version(), http::Version::HTTP_2, "{name}");
        let mut headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .filter(|(n, _)| n != "date")
            .collect();
        headers.sort();
        heads.push((name.into(), headers));
    }
    let (first, want) = &heads[0];
    assert!(
        want.iter().any(|(n, v)| n == "last-event-id" && *v == id),
        "{want:?}"
    );
    assert!(
        want.iter().any(|(n, _)| n == "access-control-allow-origin"),
        "{want:?}"
    );
    assert!(want.iter().any(|(n, _)| n == "link"), "{want:?}");
    for (name, headers) in &heads[1..] {
        assert_eq!(headers, want, "{name} differs from {first}");
    }
}

/// `herald-client` over HTTPS: trusting the hub's certificate (as `--ca-file` does) it opens,
/// over HTTP/2, and receives; not trusting it, it cannot connect (a transient error naming the
/// certificate, as a browser's); with checking off (`--insecure`) it connects.
#[tokio::test]
async fn the_client_subscribes_over_https() {
    use futures_util::StreamExt;
    use herald_client::{EventSource, Item, TlsOptions};
    let hub = TestHub::start(anonymous()).await;
    let url = format!(
        "https://localhost:{}/.well-known/mercure?topic=t",
        hub.tls_addr.port()
    );
    let pem = std::fs::read(&hub.cert_path).unwrap();
    let mut trusted = EventSource::builder(&url)
        .tls(TlsOptions::default().add_root_pem(&pem))
        .build()
        .unwrap();
    let opened = tokio::time::timeout(WAIT, trusted.next()).await.unwrap();
    assert!(matches!(opened, Some(Ok(Item::Open))), "{opened:?}");
    let id = hub.publish(&[("topic", "t"), ("data", "secure")]).await;
    match tokio::time::timeout(WAIT, trusted.next()).await.unwrap() {
        Some(Ok(Item::Message(m))) => {
            assert_eq!(
                (m.last_event_id.as_str(), m.data.as_str()),
                (id.as_str(), "secure")
            );
        }
        other => panic!("{other:?}"),
    }

    let mut untrusted = EventSource::new(&url).unwrap();
    match tokio::time::timeout(WAIT, untrusted.next()).await.unwrap() {
        Some(Err(err)) => {
            assert!(!err.is_fatal(), "{err}");
            assert!(
                err.to_string().to_lowercase().contains("certificate"),
                "{err}"
            );
        }
        other => panic!("{other:?}"),
    }

    let mut insecure = EventSource::builder(&url)
        .tls(TlsOptions::default().accept_invalid_certificates(true))
        .build()
        .unwrap();
    let opened = tokio::time::timeout(WAIT, insecure.next()).await.unwrap();
    assert!(matches!(opened, Some(Ok(Item::Open))), "{opened:?}");
}

/// A subscription over TLS (HTTP/1.1) is streamed by the direct path, under its bounds: a
/// client that stops reading is closed after the write timeout, and nothing stays owed.
#[tokio::test]
async fn a_stuck_tls_subscriber_is_closed_after_the_write_timeout() {
    let hub = TestHub::start(Settings {
        write_timeout: Duration::from_secs(1),
        ..anonymous()
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(hub.tls_addr).await.unwrap();
    let mut stuck = hub
        .tls_connector(&[b"http/1.1"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    stuck
        .write_all(b"GET /.well-known/mercure?topic=big HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = String::new();
    read_until(&mut stuck, &mut got, "\r\n\r\n").await;
    let big = "x".repeat(256 << 10);
    for _ in 0..48 {
        hub.publish(&[("topic", "big"), ("data", &big)]).await;
    }
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, _, text) = hub.get("/metrics").await;
        if metric(&text, "herald_subscriber_closed_stalled_total") == 1.0 {
            assert_eq!(metric(&text, "herald_owed_bytes"), 0.0, "nothing left owed");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not closed: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Over HTTP/2 a subscription that must end (here its token expires) ends its own stream, not
/// the connection: the other subscriptions on it go on receiving, with their heartbeats.
#[tokio::test]
async fn an_ending_http_2_subscription_leaves_the_others_on_its_connection() {
    let hub = TestHub::start(Settings {
        heartbeat: Some(Duration::from_millis(300)),
        ..Settings::default()
    })
    .await;
    let tls = hub.tls_connect(&[b"h2"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let now = unix_now();
    let mut open = |token: String| {
        let request = http::Request::get("https://localhost/.well-known/mercure?topic=t")
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request)
    };
    let ending = open(token_expiring(SUB_KEY, &["*"], now + 1))
        .await
        .unwrap();
    let lasting = open(token_expiring(SUB_KEY, &["*"], now + 3600))
        .await
        .unwrap();
    assert_eq!(
        (ending.status().as_u16(), lasting.status().as_u16()),
        (200, 200)
    );
    let (mut ending, mut lasting) = (ending.into_body(), lasting.into_body());
    // The expiring stream ends cleanly, within its token's life and a little.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ending.frame().await {
                Some(Ok(_)) => {}
                other => return other.map(|r| r.map(|_| ())),
            }
        }
    })
    .await
    .expect("the expired subscription's stream ends");
    assert!(ended.is_none(), "a clean end of stream: {ended:?}");
    // The other one, on the same connection, still gets heartbeats and updates.
    let mut got = String::new();
    read_h2(&mut lasting, &mut got, ":\n").await;
    let id = hub.publish(&[("topic", "t"), ("data", "still here")]).await;
    read_h2(
        &mut lasting,
        &mut got,
        &format!("id: {id}\ndata: still here\n\n"),
    )
    .await;
}

/// Published, then received by a subscriber, with the framing of the transport: chunks in
/// HTTP/1.1, the connection's end in HTTP/1.0 (so the request really went as HTTP/1.0),
/// frames in HTTP/2. (The protocol, replay and subscriptions tests run over each transport
/// too; this one checks that each transport is the one it says.)
async fn each_transport_streams_in_its_own_framing(transport: Transport) {
    let hub = TestHub::start(anonymous()).await.over(transport);
    let mut sse = hub.subscribe("topic=t", &[]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    let chunked = sse
        .headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked");
    assert_eq!(
        chunked,
        matches!(transport, Transport::Http11 | Transport::TlsHttp11),
        "{:?}",
        sse.headers
    );
    let id = hub.publish(&[("topic", "t"), ("data", "a\nb")]).await;
    let event = sse.next().await;
    assert_eq!(
        (event.last_event_id.as_str(), event.data.as_str()),
        (id.as_str(), "a\nb")
    );
}

per_transport!(each_transport_streams_in_its_own_framing);

/// Over TLS 1.3 a streamed subscription's records are sealed by the hub (`tls_record.rs`):
/// an event larger than one record (16 KiB) and many small ones arrive intact and in order,
/// and each record decrypts with the session's keys (the client is rustls). TLS 1.2 stays with
/// rustls and works the same.
#[tokio::test]
async fn records_sealed_by_the_hub_carry_large_and_many_events() {
    let hub = TestHub::start(anonymous()).await;
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(hub.tls.certificates()[0].clone()).unwrap();
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[versions])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(hub.tls_addr).await.unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /.well-known/mercure?topic=t HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut got = String::new();
        read_until(&mut tls, &mut got, "\r\n\r\n").await;
        let big = "y".repeat(100 << 10);
        let big_id = hub.publish(&[("topic", "t"), ("data", &big)]).await;
        let mut last = String::new();
        for k in 0..50 {
            last = hub
                .publish(&[("topic", "t"), ("data", &format!("small {k}"))])
                .await;
        }
        read_until(
            &mut tls,
            &mut got,
            &format!("id: {last}\ndata: small 49\n\n"),
        )
        .await;
        assert!(
            got.contains(&format!("id: {big_id}\ndata: {big}\n\n")),
            "{:?}",
            versions.version
        );
        let order: Vec<usize> = (0..50)
            .map(|k| {
                got.find(&format!("data: small {k}\n"))
                    .expect("every small event")
            })
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "in order");
    }
}
