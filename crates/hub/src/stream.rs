//! The direct stream path: a subscribe request answered without hyper.
//!
//! Why: measured with heaptrack, a hyper HTTP/1 connection holding an SSE response keeps about
//! 16 KiB of read buffer and 8 KiB of write buffer for as long as it lives, ~25 KiB per idle
//! subscriber in all, and hyper offers no knob below 8 KiB for either. An idle subscriber needs
//! neither: it sends one request and then only receives. So the accept loop reads the first
//! request head itself (`httparse`, hyper's own parser); a `GET` of the hub path in HTTP/1.1 or
//! HTTP/1.0 with no body is answered by the same code as the hyper route
//! (`http::subscribe::respond`), rendered here and then streamed, chunk by chunk, straight from the shared
//! encoded `Bytes` with one vectored write, holding no buffer while idle: in the chunked coding
//! for HTTP/1.1, delimited by the connection's close for HTTP/1.0 (which has no chunks; an
//! HTTP/1.0 proxy such as nginx's default upstream speaks it). Either way the connection ends
//! with the stream, and the head says so. Everything else (publishing, other routes, refused
//! subscriptions, anything odd) is handed to hyper with the bytes already read, so errors,
//! CORS preflights and keep-alive behave exactly as before.

use crate::http::subscribe::{SubscriptionResponse, respond};
use crate::hub::Hub;
use crate::subscriber::{Chunk, Subscriber};
use crate::tls_record::SealedStream;
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The most request-head bytes read before handing the connection to hyper.
const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed by the direct path; a request with more goes to hyper.
const MAX_HEADERS: usize = 32;

/// What became of a connection after its first request head.
pub(crate) enum Outcome<S: Accepting = TcpStream> {
    /// A subscription to stream: await it (a small, hand-written future).
    Stream(Streaming<S::Streamed>),
    /// Not for the direct path: serve it with hyper, replaying the bytes already read.
    Hyper(Prefixed<S>),
    /// The client went away (or sent nothing in time) before a request head.
    Gone,
}

/// Reads the first request head of `stream` and decides who serves the connection.
pub(crate) async fn serve<S: Accepting>(hub: &Hub, mut stream: S) -> Outcome<S> {
    // The caller boxes this future: checking a request (parsed headers, token verification,
    // history lookup) takes far more state than streaming, and it is freed before the stream
    // starts.
    match accept(hub, &mut stream).await {
        Accepted::Stream(head, framing, answer) => {
            let limits = hub.inner.write_limits.clone();
            let handover = tokio::time::timeout(limits.timeout, stream.for_streaming());
            match handover.await {
                Ok(Ok(stream)) => {
                    Outcome::Stream(Streaming::new(stream, head, framing, answer, limits))
                }
                Ok(Err(err)) => {
                    tracing::debug!(%err, "cannot stream on this connection");
                    Outcome::Gone
                }
                Err(_) => Outcome::Gone,
            }
        }
        Accepted::Hyper(prefix) => Outcome::Hyper(Prefixed::new(
            prefix,
            stream,
            hub.inner.write_limits.timeout,
        )),
        Accepted::Gone => Outcome::Gone,
    }
}

enum Accepted {
    Stream(Vec<u8>, Framing, SubscriptionResponse),
    Hyper(Bytes),
    Gone,
}

async fn accept<S: Accepting>(hub: &Hub, stream: &mut S) -> Accepted {
    let mut head = BytesMut::with_capacity(1024);
    let mut shutdown = hub.shutdown_signal();
    let parsed = tokio::select! {
        read = tokio::time::timeout(
            hub.inner.settings.header_timeout,
            read_head(stream, &mut head),
        ) => match read {
            Err(_) | Ok(Err(_)) => return Accepted::Gone,
            Ok(Ok(parsed)) => parsed,
        },
        _ = shutdown.wait_for(|stop| *stop) => return Accepted::Gone,
    };
    let Some(request) = parsed.filter(|r| r.is_plain_subscribe()) else {
        return Accepted::Hyper(head.freeze());
    };
    let uri = crate::http::absolute(&request.uri, &request.headers, S::SCHEME);
    match respond(hub, &uri, &request.headers, b"").await {
        Ok(answer) => {
            let framing = request.framing();
            Accepted::Stream(response_head(framing, &answer), framing, answer)
        }
        // Refusals are answered by the hyper route, which runs the same checks.
        Err(_) => Accepted::Hyper(head.freeze()),
    }
}

/// The parts of a request head the direct path needs.
pub(crate) struct Head {
    method: http::Method,
    uri: http::Uri,
    /// HTTP/1.1 or HTTP/1.0 (httparse knows no other).
    version: http::Version,
    headers: http::HeaderMap,
}

/// How the end of the response body is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// The chunked transfer coding, ended by its last chunk (HTTP/1.1).
    Chunked,
    /// The bytes as they are, ended by closing the connection (HTTP/1.0, which has no chunks).
    UntilClose,
}

impl Head {
    fn framing(&self) -> Framing {
        if self.version == http::Version::HTTP_11 {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    }

    /// A subscription this path can serve: anything else, including every head that breaks a
    /// rule, goes to hyper, which applies its parser's rules and then `http::check_head`, so
    /// both paths refuse exactly the same requests.
    fn is_plain_subscribe(&self) -> bool {
        let h = &self.headers;
        let mut lengths = h.get_all(http::header::CONTENT_LENGTH).iter();
        let no_body = match (lengths.next(), lengths.next()) {
            (None, _) => true,
            (Some(v), None) => v.as_bytes() == b"0",
            // Several lengths, even equal ones: hyper decides.
            (Some(_), Some(_)) => false,
        };
        // `Connection: close` needs nothing more: the stream always ends its connection.
        self.method == http::Method::GET
            && self.uri.path() == crate::http::HUB_PATH
            && no_body
            && crate::http::check_head(self.version, h).is_ok()
            && !h.contains_key(http::header::UPGRADE)
            && !h.contains_key(http::header::TRANSFER_ENCODING)
    }
}

/// Reads until a complete request head is in `buf`; `None` if it is not one this path can
/// parse (hyper will answer it).
async fn read_head<S: Accepting>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> std::io::Result<Option<Head>> {
    loop {
        buf.reserve(1024);
        if stream.read_some(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match parse_head(buf) {
            Parsed::Partial => continue,
            Parsed::Done(head) => return Ok(head.map(|head| *head)),
        }
    }
}

/// What the bytes read so far make of a request head.
pub(crate) enum Parsed {
    /// Not complete yet, and still short enough to wait for the rest.
    Partial,
    /// A complete head this path can parse, or `None` for anything else (too long, too many
    /// headers, malformed: hyper answers it with the right error).
    Done(Option<Box<Head>>),
}

/// Parses the bytes read so far of a connection's first request head. Pure, so the fuzz
/// target can drive it with any bytes.
pub(crate) fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => Parsed::Done(to_head(&request).map(Box::new)),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Parsed::Partial,
        _ => Parsed::Done(None),
    }
}

/// For the fuzz target: parses `bytes` as a first request head; `Some(true)` if the direct
/// path would stream it as a subscription, `Some(false)` if it goes to hyper, `None` if more
/// bytes are needed.
#[cfg(feature = "fuzzing")]
pub fn fuzz_head(bytes: &[u8]) -> Option<bool> {
    match parse_head(bytes) {
        Parsed::Partial => None,
        Parsed::Done(head) => Some(head.is_some_and(|h| h.is_plain_subscribe())),
    }
}

fn to_head(request: &httparse::Request<'_, '_>) -> Option<Head> {
    let method = http::Method::from_bytes(request.method?.as_bytes()).ok()?;
    let uri: http::Uri = request.path?.parse().ok()?;
    let mut headers = http::HeaderMap::with_capacity(request.headers.len());
    for header in request.headers.iter() {
        let name = http::HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = http::HeaderValue::from_bytes(header.value).ok()?;
        headers.append(name, value);
    }
    Some(Head {
        method,
        uri,
        version: match request.version? {
            1 => http::Version::HTTP_11,
            0 => http::Version::HTTP_10,
            _ => return None,
        },
        headers,
    })
}

/// The response head: [`SubscriptionResponse`]'s headers and this transport's framing.
/// (`HTTP/1.1` also to an HTTP/1.0 request: a server sends the highest version it conforms
/// to, RFC 9110 section 2.5; the framing is what must suit the client.)
fn response_head(framing: Framing, answer: &SubscriptionResponse) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in &answer.headers {
        for part in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            head.extend_from_slice(part);
        }
    }
    if framing == Framing::Chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    // The connection ends with the stream (it never serves a second request): say so, or a
    // pooling client that sees the stream end cleanly reuses the closed socket.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    for part in [b"connection: close\r\ndate: ", date.as_bytes(), b"\r\n\r\n"] {
        head.extend_from_slice(part);
    }
    head
}

/// A subscription being streamed: writes the response head, then every chunk the subscriber
/// produces, until the subscriber ends (shutdown, expired token, fell out of history) or the
/// client goes away. Hand-written rather than an `async fn` because it is what every idle
/// subscriber holds: this is about 300 bytes, the equivalent `async fn` with its write futures
/// was about 970 (`-Zprint-type-sizes`).
///
/// What a client that stops reading may cost is bounded: a write that makes no progress for
/// the hub's write timeout closes the stream, and so does a blocked write while the bytes
/// owed to all subscribers (taken from their queues or history, not yet written) exceed the
/// hub's budget. Either way the client resumes with `Last-Event-ID`.
pub(crate) struct Streaming<S: Socket = TcpStream> {
    stream: S,
    subscriber: Subscriber,
    /// What is being written, if anything.
    out: Option<Out>,
    /// The terminating chunk is being written: the stream is over once it is out.
    ending: bool,
    framing: Framing,
    limits: Arc<WriteLimits>,
    /// Runs while a write is blocked; reset whenever the socket takes bytes. Only a
    /// subscriber with a blocked write holds one.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// What a blocked subscriber may hold, shared by every stream of a hub.
#[derive(Debug)]
pub(crate) struct WriteLimits {
    /// A write that makes no progress for this long closes the stream.
    pub timeout: Duration,
    /// Most bytes owed to all subscribers together before blocked ones are closed.
    pub max_owed: usize,
}

/// One write in progress: an optional chunk-size line, the data, and the chunk's CRLF.
struct Out {
    size_line: [u8; 18],
    size_len: u8,
    data: Chunk,
    /// Bytes of `data`, counted in the hub's owed bytes while this write lives.
    len: usize,
    framed: bool,
    written: usize,
}

impl Out {
    /// The data as is (the response head, the terminating chunk).
    fn raw(data: Bytes) -> Self {
        Out::unframed(Chunk::One(data))
    }

    /// The data as is (a body delimited by the connection's close).
    fn unframed(data: Chunk) -> Self {
        Out {
            size_line: [0; 18],
            size_len: 0,
            len: data.len(),
            data,
            framed: false,
            written: 0,
        }
    }

    /// The data as one chunk of the chunked transfer coding.
    fn chunk(data: Chunk) -> Self {
        use std::io::Write;
        let len = data.len();
        let mut out = Out {
            size_line: [0; 18],
            size_len: 0,
            data,
            len,
            framed: true,
            written: 0,
        };
        let mut cursor = std::io::Cursor::new(&mut out.size_line[..]);
        let _ = write!(cursor, "{len:x}\r\n");
        out.size_len = cursor.position() as u8;
        out
    }

    /// Writes what is left; `Ready(Ok)` once all of it is out.
    fn poll_write<S: Socket>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let crlf: &[u8] = if self.framed { b"\r\n" } else { b"" };
        let total = self.size_len as usize + self.len + crlf.len();
        let parts = self.data.parts();
        while self.written < total {
            let head = IoSlice::new(&self.size_line[..self.size_len as usize]);
            let tail = IoSlice::new(crlf);
            // The common case, one update, without allocating.
            let mut one;
            let mut many: Vec<IoSlice<'_>>;
            let mut slices: &mut [IoSlice<'_>] = if let [part] = parts {
                one = [head, IoSlice::new(part), tail];
                &mut one
            } else {
                many = std::iter::once(head)
                    .chain(parts.iter().map(|p| IoSlice::new(p)))
                    .chain(std::iter::once(tail))
                    .collect();
                &mut many
            };
            IoSlice::advance_slices(&mut slices, self.written);
            match std::task::ready!(stream.poll_write_parts(cx, slices)) {
                Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // Out of what a TLS session buffered, too (nothing to do on a plain socket).
        stream.poll_flush_out(cx)
    }
}

impl<S: Socket> Streaming<S> {
    fn new(
        stream: S,
        head: Vec<u8>,
        framing: Framing,
        answer: SubscriptionResponse,
        limits: Arc<WriteLimits>,
    ) -> Self {
        let mut streaming = Streaming {
            stream,
            subscriber: answer.subscriber,
            out: None,
            ending: false,
            framing,
            limits,
            stalled: None,
        };
        streaming.start(Out::raw(Bytes::from(head)));
        streaming
    }

    /// Starts writing `out`, counting its bytes as owed until it is written or dropped.
    fn start(&mut self, out: Out) {
        self.release();
        self.subscriber.metrics().owed_bytes.inc_by(out.len as i64);
        self.out = Some(out);
    }

    fn finish_write(&mut self) {
        self.release();
        // An idle subscriber holds no timer.
        self.stalled = None;
    }

    /// Drops the write in progress, if any, and its bytes from the owed count.
    fn release(&mut self) {
        if let Some(done) = self.out.take() {
            self.subscriber.metrics().owed_bytes.dec_by(done.len as i64);
        }
    }

    /// A write is blocked: whether to give up on this client.
    fn poll_stalled(&mut self, cx: &mut Context<'_>, progressed: bool) -> bool {
        let metrics = self.subscriber.metrics();
        if metrics.owed_bytes.get() > self.limits.max_owed as i64 {
            metrics.closed_budget.inc();
            tracing::debug!("bytes owed to subscribers over budget; closing a blocked one");
            return true;
        }
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if progressed {
            stalled.as_mut().reset(deadline);
        }
        if stalled.as_mut().poll(cx).is_ready() {
            metrics.closed_stalled.inc();
            tracing::debug!("subscriber took no bytes for the write timeout; closing");
            return true;
        }
        false
    }
}

impl<S: Socket> Drop for Streaming<S> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<S: Socket> Future for Streaming<S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if let Some(out) = &mut this.out {
                let before = out.written;
                match out.poll_write(&mut this.stream, cx) {
                    Poll::Ready(Ok(())) => this.finish_write(),
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {
                        let progressed = out.written != before;
                        return if this.poll_stalled(cx, progressed) {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        };
                    }
                }
                if this.ending {
                    return Poll::Ready(());
                }
            }
            if this.stream.poll_gone(cx).is_ready() {
                return Poll::Ready(());
            }
            match this.subscriber.poll_next_chunk(cx) {
                // An empty chunk would end the body; the subscriber never makes one, but a
                // zero-length write must not be framed as the terminator.
                Poll::Ready(Some(chunk)) if chunk.is_empty() => {}
                Poll::Ready(Some(chunk)) => this.start(match this.framing {
                    Framing::Chunked => Out::chunk(chunk),
                    Framing::UntilClose => Out::unframed(chunk),
                }),
                // The end of an unframed body is the end of the connection.
                Poll::Ready(None) if this.framing == Framing::UntilClose => {
                    return Poll::Ready(());
                }
                Poll::Ready(None) => {
                    // The last chunk: a clean end the client can tell from a broken connection.
                    this.start(Out::raw(Bytes::from_static(b"0\r\n\r\n")));
                    this.ending = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A connection whose first request head the direct path reads: a plain TCP socket, or a TLS
/// session on one.
pub(crate) trait Accepting: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// What a subscription is streamed over once its request is read.
    type Streamed: Socket;

    /// The URL scheme of requests on this connection (`http`, `https`).
    const SCHEME: &'static str;

    /// Reads what has arrived into `buf` (0 at the end of the stream).
    fn read_some(
        &mut self,
        buf: &mut BytesMut,
    ) -> impl Future<Output = std::io::Result<usize>> + Send;

    /// Becomes what a subscription is streamed over.
    fn for_streaming(self) -> impl Future<Output = std::io::Result<Self::Streamed>> + Send;
}

/// What the direct path streams a subscription over.
pub(crate) trait Socket: Unpin + Send + 'static {
    /// Writes some of `slices`; `Pending` registers for the socket's writability.
    fn poll_write_parts(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>>;

    /// Writes out whatever was accepted but is still buffered on the way to the socket.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;

    /// Ready when the client closed its side (`Ok`) or the connection failed. Bytes it sends
    /// after the request (a pipelined request, which SSE clients do not do) are discarded.
    /// Pending registers the task for the connection's next read readiness.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl Accepting for TcpStream {
    type Streamed = TcpStream;
    const SCHEME: &'static str = "http";

    async fn read_some(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        loop {
            // Readiness first: an idle connection holds no read buffer while it waits.
            self.readable().await?;
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                read => return read,
            }
        }
    }

    async fn for_streaming(self) -> std::io::Result<TcpStream> {
        Ok(self)
    }
}

impl Socket for TcpStream {
    fn poll_write_parts(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            // Try first: the socket is almost always writable, and asking for readiness first
            // would cost a registration per chunk.
            match self.try_write_vectored(slices) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::task::ready!(self.poll_write_ready(cx))?;
                }
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush_out(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut sink = [0u8; 64];
        loop {
            std::task::ready!(self.poll_read_ready(cx))?;
            match self.try_read(&mut sink) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A TLS session, before and while its first request head is read.
impl Accepting for Box<tokio_rustls::server::TlsStream<TcpStream>> {
    type Streamed = TlsStreaming;
    const SCHEME: &'static str = "https";

    async fn read_some(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        self.read_buf(buf).await
    }

    /// TLS 1.3: the hub seals records itself and rustls is dropped (see `tls_record.rs`);
    /// TLS 1.2 stays with rustls. Whatever rustls had queued (session tickets) is written first.
    async fn for_streaming(mut self) -> std::io::Result<TlsStreaming> {
        use tokio::io::AsyncWriteExt;
        if self.get_ref().1.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return Ok(TlsStreaming::Rustls(self));
        }
        self.flush().await?;
        let (tcp, connection) = (*self).into_inner();
        SealedStream::take_over(tcp, connection)
            .map(TlsStreaming::Sealed)
            .map_err(|_| std::io::Error::other("the TLS session could not be taken over"))
    }
}

/// A subscription streamed over TLS. (The sealed variant is the larger, holding its AEAD key
/// inline, and the common one: boxing it would add an allocation, not save memory.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum TlsStreaming {
    /// TLS 1.3, records sealed by the hub.
    Sealed(SealedStream),
    /// TLS 1.2, through rustls: it encrypts what it is given into its own buffer (bounded by
    /// its buffer limit) and writes that to the socket; what the socket did not take yet is
    /// written by `poll_flush_out`, so a write only counts as done once it left the process.
    Rustls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Socket for TlsStreaming {
    fn poll_write_parts(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self {
            TlsStreaming::Sealed(sealed) => sealed.poll_write_parts(cx, slices),
            TlsStreaming::Rustls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, slices),
        }
    }

    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            TlsStreaming::Sealed(sealed) => sealed.poll_flush_out(cx),
            TlsStreaming::Rustls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self {
            TlsStreaming::Sealed(sealed) => sealed.poll_gone(cx),
            TlsStreaming::Rustls(tls) => {
                let mut sink = [0u8; 64];
                loop {
                    let mut buf = ReadBuf::new(&mut sink);
                    std::task::ready!(Pin::new(&mut **tls).poll_read(cx, &mut buf))?;
                    if buf.filled().is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}

/// A connection whose first bytes were already read: they are read again first, so hyper sees
/// the whole request.
///
/// Writes have the same bound as the direct path's: a write that makes no progress for the
/// hub's write timeout fails (`TimedOut`), and hyper closes the connection. So a client that
/// stops reading cannot hold a response forever, whatever it is: a subscription opened by a
/// later request of a keep-alive connection, or over h2c, streams through hyper.
pub(crate) struct Prefixed<IO = TcpStream> {
    prefix: Bytes,
    inner: IO,
    write_timeout: Duration,
    /// Runs while a write is blocked; cleared when the socket takes bytes.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> Prefixed<IO> {
    pub(crate) fn new(prefix: Bytes, inner: IO, write_timeout: Duration) -> Self {
        Prefixed {
            prefix,
            inner,
            write_timeout,
            stalled: None,
        }
    }

    /// Passes on the result of a write, failing one that has been blocked for the write
    /// timeout. A pending write also waits on the timer, so its expiry wakes the connection.
    fn bound_write(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        match result {
            Poll::Pending => {
                let timeout = self.write_timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stalled.as_mut().poll(cx).is_ready() {
                    self.stalled = None;
                    tracing::debug!("a connection took no bytes for the write timeout; closing");
                    return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
                }
                Poll::Pending
            }
            done => {
                self.stalled = None;
                done
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let bytes = self.prefix.split_to(n);
            buf.put_slice(&bytes);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.bound_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.bound_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
