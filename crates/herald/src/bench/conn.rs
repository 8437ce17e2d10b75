//! The bench's own SSE subscriber: a raw HTTP/1.1 GET on a socket bound to a chosen loopback
//! source address (over TLS for an `https://` target), the response head checked, then the body de-chunked and decoded with
//! `herald-sse`. Hand-written rather than `herald-client` because the bench holds tens of
//! thousands of these: each is one socket, a 4 KiB buffer and a decoder, and it must cost the
//! machine as little as possible so that the server, not the load generator, is measured.

use super::target::Target;
use herald_sse::Decoder;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

const READ_BUFFER: usize = 4096;
/// A response head longer than this is not an SSE server's.
const MAX_HEAD: usize = 16 * 1024;

/// Why a subscription could not be opened; grouped by kind in the report.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("bad response: {0}")]
    Response(String),
}

/// A subscriber's connection: plaintext, or TLS for an `https://` target.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One open SSE subscription: an HTTP/1.1 connection of its own, or a stream of a shared
/// HTTP/2 connection (`h2.rs`).
pub struct Subscription(Stream);

enum Stream {
    Http1 {
        stream: Io,
        buf: Box<[u8]>,
        body: Body,
    },
    Http2 {
        body: hyper::body::Incoming,
        sse: Decoder,
    },
}

/// The loopback source address of connection `index`: 127.0.0.2, 127.0.0.3, … in turn, so that
/// each address has its own ephemeral port range.
pub fn source_address(index: usize, sources: usize) -> Ipv4Addr {
    let n = 2 + (index % sources.max(1)) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n)
}

impl Subscription {
    /// Connects from `source` (a loopback address) and sends the subscribe request; returns
    /// once the response head says `200`. With `recv_buffer`, the socket's receive buffer is
    /// set to that many bytes before connecting (a client on a slow link, whose window stays
    /// small).
    pub async fn open(
        target: &Target,
        source: Ipv4Addr,
        request: &[u8],
        recv_buffer: Option<u32>,
    ) -> Result<Self, OpenError> {
        let stream = connect(target.addr, source, recv_buffer)
            .await
            .map_err(OpenError::Connect)?;
        let stream = match &target.tls {
            None => Io::Plain(stream),
            Some(config) => Io::Tls(Box::new(
                tokio_rustls::TlsConnector::from(config.clone())
                    .connect(target.server_name(), stream)
                    .await
                    .map_err(OpenError::Connect)?,
            )),
        };
        Self::start(stream, request).await
    }

    async fn start(mut stream: Io, request: &[u8]) -> Result<Self, OpenError> {
        stream
            .write_all(request)
            .await
            .map_err(OpenError::Connect)?;
        let mut head = Vec::with_capacity(1024);
        let mut buf = vec![0u8; READ_BUFFER].into_boxed_slice();
        let end = loop {
            let n = stream.read(&mut buf).await.map_err(OpenError::Connect)?;
            if n == 0 {
                return Err(OpenError::Response(
                    "closed before the response head".into(),
                ));
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if head.len() > MAX_HEAD {
                return Err(OpenError::Response("response head too long".into()));
            }
        };
        let text = String::from_utf8_lossy(&head[..end]);
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| OpenError::Response(format!("no status line in {text:?}")))?;
        if status != 200 {
            return Err(OpenError::Status(status));
        }
        let chunked = text.lines().any(|line| {
            let line = line.to_ascii_lowercase();
            line.starts_with("transfer-encoding:") && line.contains("chunked")
        });
        let mut body = Body::new(chunked);
        body.feed(&head[end..], &mut |_| {})
            .map_err(OpenError::Response)?;
        Ok(Subscription(Stream::Http1 { stream, buf, body }))
    }

    /// The subscription an HTTP/2 response's body carries.
    pub fn http2(body: hyper::body::Incoming) -> Self {
        Subscription(Stream::Http2 {
            body,
            sse: Decoder::new(),
        })
    }

    /// Reads what has arrived and hands the data of every complete event to `on_event`.
    /// `Ok(false)` means the server ended the stream.
    pub async fn read_events(&mut self, on_event: &mut impl FnMut(&str)) -> Result<bool, String> {
        Ok(self.read_counted(on_event).await?.is_some())
    }

    /// As [`Subscription::read_events`], saying how many bytes were read (`None`: the server
    /// ended the stream), for a reader that paces itself.
    pub async fn read_counted(
        &mut self,
        on_event: &mut impl FnMut(&str),
    ) -> Result<Option<usize>, String> {
        match &mut self.0 {
            Stream::Http1 { stream, buf, body } => {
                let n = stream.read(buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(None);
                }
                body.feed(&buf[..n], on_event)?;
                Ok((!body.ended).then_some(n))
            }
            Stream::Http2 { body, sse } => {
                use http_body_util::BodyExt;
                match body.frame().await {
                    None => Ok(None),
                    Some(Err(err)) => Err(err.to_string()),
                    Some(Ok(frame)) => {
                        let mut n = 0;
                        if let Ok(data) = frame.into_data() {
                            n = data.len();
                            sse.feed(&data).map_err(|e| e.to_string())?;
                            while let Some(event) = sse.next_event() {
                                on_event(&event.data);
                            }
                        }
                        Ok(Some(n))
                    }
                }
            }
        }
    }
}

async fn connect(
    addr: SocketAddr,
    source: Ipv4Addr,
    recv_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The response body: chunked transfer coding undone (when used), then SSE decoding.
struct Body {
    chunked: bool,
    /// Bytes left in the current chunk.
    remaining: usize,
    /// A chunk-size line not yet complete.
    line: Vec<u8>,
    sse: Decoder,
    ended: bool,
}

impl Body {
    fn new(chunked: bool) -> Self {
        Body {
            chunked,
            remaining: 0,
            line: Vec::new(),
            sse: Decoder::new(),
            ended: false,
        }
    }

    fn feed(&mut self, mut data: &[u8], on_event: &mut impl FnMut(&str)) -> Result<(), String> {
        if !self.chunked {
            return self.decode(data, on_event);
        }
        while !data.is_empty() && !self.ended {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.decode(&data[..n], on_event)?;
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            // A chunk-size line, or the empty line that ends the previous chunk's data.
            let Some(newline) = data.iter().position(|&b| b == b'\n') else {
                self.line.extend_from_slice(data);
                if self.line.len() > 1024 {
                    return Err("chunk-size line too long".into());
                }
                return Ok(());
            };
            self.line.extend_from_slice(&data[..newline]);
            data = &data[newline + 1..];
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            let size = line.split(';').next().unwrap_or("").trim();
            if size.is_empty() {
                continue;
            }
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                self.ended = true;
            }
            self.remaining = size;
        }
        Ok(())
    }

    fn decode(&mut self, data: &[u8], on_event: &mut impl FnMut(&str)) -> Result<(), String> {
        self.sse.feed(data).map_err(|e| e.to_string())?;
        while let Some(event) = self.sse.next_event() {
            on_event(&event.data);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunked: bool, pieces: &[&[u8]]) -> (Vec<String>, bool) {
        let mut body = Body::new(chunked);
        let mut out = Vec::new();
        for piece in pieces {
            body.feed(piece, &mut |d| out.push(d.to_owned())).unwrap();
        }
        (out, body.ended)
    }

    #[test]
    fn dechunks_events_split_anywhere() {
        let mut wire = Vec::new();
        for piece in [":hello\n\n", "data: a\n", "\ndata: b\n\n"] {
            wire.extend_from_slice(format!("{:x};ext=1\r\n{piece}\r\n", piece.len()).as_bytes());
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let wire = &wire[..];
        for split in 0..wire.len() {
            let (out, ended) = events(true, &[&wire[..split], &wire[split..]]);
            assert_eq!(out, ["a", "b"], "split at {split}");
            assert!(ended);
        }
        let (out, ended) = events(true, &wire.chunks(1).collect::<Vec<_>>());
        assert_eq!(out, ["a", "b"]);
        assert!(ended);
    }

    #[test]
    fn plain_body_is_decoded_as_is() {
        let (out, ended) = events(false, &[b"data: x\n\nda", b"ta: y\n\n"]);
        assert_eq!(out, ["x", "y"]);
        assert!(!ended);
    }

    #[test]
    fn bad_chunk_size_is_an_error() {
        let mut body = Body::new(true);
        assert!(body.feed(b"zz\r\n", &mut |_| {}).is_err());
    }

    #[test]
    fn source_addresses_rotate() {
        assert_eq!(source_address(0, 3), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(2, 3), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(source_address(3, 3), Ipv4Addr::new(127, 0, 0, 2));
    }
}
