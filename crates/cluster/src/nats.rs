//! The `nats` backend: history in a NATS JetStream stream shared by every hub node.
//!
//! - **Layout.** Stream `NAME` (default `HERALD`, file storage) captures `NAME.u.>`. Each update
//!   is one message on `NAME.u.TOKEN`, payload = the update as JSON, where `TOKEN` is the update
//!   id made into one subject token ([`id_token`]). An update's position is its stream sequence:
//!   given by the server, dense, the same on every node. The subjects are the `Last-Event-ID`
//!   index: the server finds the first message of a subject at once, so resolving an id (to
//!   the earliest update with it kept) is one lookup, and retention trims the index together
//!   with the messages.
//! - **Append** is one publish with `Nats-Expected-Last-Subject-Sequence: 0`, which the server
//!   refuses atomically when the id is already in the stream. Then (ids may repeat) the
//!   earliest message with the id is read: the same JSON is a retry, answered with its
//!   position and stored nothing; another update is published on the subject without the
//!   condition. The publisher's `200` comes after the JetStream acknowledgement (stored; on a
//!   replicated stream, on a quorum).
//! - **Feed.** Every node tails the stream with an ephemeral pull consumer of its own (no acks,
//!   the client keeping pulls outstanding, server heartbeats every [`TAIL_BLOCK`] so that a
//!   silent server is noticed) and feeds its dispatcher in stream order, its own
//!   updates included; so every node delivers the same updates in the same order. After an
//!   outage the tail makes a new consumer that starts after the last message it fed: no gap, no
//!   duplicate.
//! - **Outages.** Calls have a bounded wait ([`COMMAND_TIMEOUT`]): a publish answers `503`
//!   quickly, `/readyz` says not ready until the tail reads again; subscribers stay connected.
//!   The connection does not outlive an outage: when the server goes away the client tries each
//!   server once and otherwise dies with whatever it had queued, and the next call connects
//!   anew. Left to itself the client would keep reconnecting and send its queue once the server
//!   is back: a publish that already got `503` would then be stored after all.
//! - **Reads** (`read_after`, `resolve`) ask the stream leader (`STREAM.MSG.GET`), not any
//!   replica (direct get): a node reads everything any node has acknowledged.
//! - **Retention** is the stream's own limits: `max_msgs` = `--history-size`, `max_bytes` =
//!   `--history-max-bytes` (counted by the server: payload, subject and headers), `max_age` =
//!   `--history-max-age`, discard old. Set when a node starts: the stream is created, or its
//!   limits updated, so every node enforces the same thing without a timer of its own.

use crate::retained::Mirror;
use crate::tail::{self, Feeder, Readiness};
use async_nats::connection::State;
use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use async_nats::jetstream::context::{GetStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::stream::{
    Config, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, consumer, message::StreamMessage};
use async_nats::{Client, ConnectOptions, HeaderMap, ServerAddr};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt};
use herald_hub::history::{Cause, EARLIEST, Feed, History, Retention, Start, StoreError};
use herald_hub::update::{NewUpdate, Update};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest a call may take before the hub gives up (and a publisher gets `503`).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one pull of the tail waits for new messages; also how often an idle tail checks
/// the connection.
pub(crate) const TAIL_BLOCK: Duration = Duration::from_secs(1);
/// Most messages one pull of the tail asks for.
const TAIL_BATCH: usize = 1024;
/// Messages `read_after` fetches at once (one request each).
const READ_CONCURRENCY: usize = 32;
/// A tail consumer nobody pulls from for this long is deleted by the server (after a crash, or
/// when the tail moved on to a new one).
const CONSUMER_INACTIVE: Duration = Duration::from_secs(10);
/// How often the client pings: a silent peer is declared dead after three missed pongs.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Ids up to this many bytes are their own subject token (encoded); longer ones are hashed,
/// to stay far below the server's 4 KiB limit on a protocol line.
const PLAIN_ID_MAX: usize = 128;
const DEFAULT_STREAM: &str = "HERALD";

/// `--store nats://HOST:PORT[,HOST:PORT…][?stream=NAME][&replicas=N]`, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NatsUrl {
    /// The servers to connect to, each with its scheme (`nats://` when none was given).
    pub(crate) servers: Vec<String>,
    /// The JetStream stream (default `HERALD`).
    pub(crate) stream: String,
    /// `replicas=N`: the stream's replica count (1 to 5, JetStream's range) when Herald creates
    /// the stream or updates its limits; without it, a new stream has one replica and an
    /// existing one keeps what it has.
    pub(crate) replicas: Option<usize>,
}

/// What is wrong with a NATS store URL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UrlError {
    #[error(
        "`stream={0}` is not a usable stream name: it needs 1 to 255 characters, none of them \
         a space, a control character, `.`, `*`, `>`, `/` or `\\`"
    )]
    StreamName(String),
    #[error("`replicas={0}` must be a number from 1 to 5")]
    Replicas(String),
    #[error("unknown parameter {0:?}: only `stream=NAME` and `replicas=N` are known")]
    UnknownParameter(String),
    #[error("empty server address in {0:?}")]
    EmptyServer(String),
    #[error("invalid server address {server:?}: {source}")]
    Server {
        server: String,
        #[source]
        source: std::io::Error,
    },
}

impl NatsUrl {
    pub(crate) fn parse(url: &str) -> Result<NatsUrl, UrlError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut stream = None;
        let mut replicas = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("stream", name)) if valid_stream_name(name) => {
                    stream = Some(name.to_owned());
                }
                Some(("stream", name)) => return Err(UrlError::StreamName(name.to_owned())),
                Some(("replicas", value)) => match value.parse::<usize>() {
                    Ok(n @ 1..=5) => replicas = Some(n),
                    _ => return Err(UrlError::Replicas(value.to_owned())),
                },
                _ => return Err(UrlError::UnknownParameter(pair.to_owned())),
            }
        }
        let mut servers = Vec::new();
        for server in base.split(',').map(str::trim) {
            if server.is_empty() || server.ends_with("://") {
                return Err(UrlError::EmptyServer(base.to_owned()));
            }
            let server = if server.contains("://") {
                server.to_owned()
            } else {
                format!("nats://{server}")
            };
            if let Err(source) = server.parse::<ServerAddr>() {
                return Err(UrlError::Server { server, source });
            }
            servers.push(server);
        }
        Ok(NatsUrl {
            servers,
            stream: stream.unwrap_or_else(|| DEFAULT_STREAM.to_owned()),
            replicas,
        })
    }
}

/// A stream name is also the first token of its subjects: it must be a valid token too.
fn valid_stream_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
}

/// The subject token for an update id: `b` + the id in unpadded base64url when it is at most
/// 128 bytes, else `h` + the unpadded base64url of its SHA-256. Either way only
/// `[A-Za-z0-9_-]`, never empty, at most 172 characters; distinct ids give distinct tokens (the
/// prefixes keep the two forms apart; two long ids only by a SHA-256 collision, which
/// `resolve` would notice).
pub(crate) fn id_token(id: &str) -> String {
    if id.len() <= PLAIN_ID_MAX {
        format!("b{}", URL_SAFE_NO_PAD.encode(id))
    } else {
        format!("h{}", URL_SAFE_NO_PAD.encode(Sha256::digest(id)))
    }
}

/// History in a JetStream stream (see the module documentation). [`NatsHistory::open`] gives it
/// as an `Arc`: the tail it starts runs for as long as one is held.
pub struct NatsHistory {
    servers: Vec<ServerAddr>,
    stream: String,
    /// `NAME.u.>`: every update subject.
    filter: String,
    /// The connection every call and the tail share, while it is up.
    conn: Mutex<Option<Conn>>,
    /// Held while connecting, so that concurrent calls make one connection, not one each.
    connecting: tokio::sync::Mutex<()>,
    connections: AtomicU64,
    readiness: Readiness,
    feed: Mutex<Option<Feed>>,
    /// This node's copy of the retained updates; the engine's are in the stream
    /// `NAME_retained` (subject `NAME.r.TOPIC`, one message per topic).
    mirror: Arc<Mirror>,
}

/// A retained update as the `NAME_retained` stream holds it.
#[derive(serde::Serialize, serde::Deserialize)]
struct RetainedRecord {
    /// Its position in history.
    p: u64,
    /// When it was accepted, in ms since the epoch.
    t: u64,
    u: NewUpdate,
}

impl std::fmt::Debug for NatsHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsHistory")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// One client connection and its JetStream context.
#[derive(Clone)]
struct Conn {
    /// Tells connections apart: the tail's consumer belongs to the one it was made on.
    id: u64,
    client: Client,
    js: jetstream::Context,
}

impl Conn {
    fn is_up(&self) -> bool {
        self.client.connection_state() == State::Connected
    }
}

impl NatsHistory {
    /// Connects to NATS at `url` (`nats://HOST:PORT[?stream=NAME]`), creates the stream or
    /// updates its limits, and starts tailing it after its current end.
    pub async fn open(url: &str, retention: Retention) -> Result<Arc<NatsHistory>, StoreError> {
        let NatsUrl {
            servers,
            stream,
            replicas,
        } = NatsUrl::parse(url).map_err(|e| StoreError::failed("", e))?;
        let servers = servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|e| StoreError::failed("", e))
            })
            .collect::<Result<_, _>>()?;
        let mut history = NatsHistory {
            servers,
            filter: format!("{stream}.u.>"),
            stream,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            connections: AtomicU64::new(0),
            readiness: Readiness::new(),
            feed: Mutex::new(None),
            mirror: Arc::new(Mirror::new(retention.retained, 0)),
        };
        let head = history
            .run(history.ensure_stream(&retention, replicas))
            .await?;
        history.mirror.fed(head);
        history
            .run(history.ensure_retained_stream(&retention, replicas))
            .await?;
        history.run(history.load_retained()).await?;
        let (feed_tx, feed) = Feed::channel(head);
        history.feed = Mutex::new(Some(feed));
        let history = Arc::new(history);
        tokio::spawn(tail::drive(
            Arc::downgrade(&history),
            head,
            None,
            feed_tx,
            Some(history.mirror.clone()),
        ));
        Ok(history)
    }
}

impl NatsHistory {
    /// The shared connection, or a new one if it is down (see "Outages" in the module docs).
    async fn connection(&self) -> Result<Conn, StoreError> {
        if let Some(conn) = self.live_connection() {
            return Ok(conn);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(conn) = self.live_connection() {
            return Ok(conn);
        }
        // Dropping the dead client lets its task end (once the tail lets go of it too).
        *crate::lock(&self.conn) = None;
        let id = self.connections.fetch_add(1, Ordering::Relaxed);
        let conn = bounded(connect(&self.servers, id)).await?;
        *crate::lock(&self.conn) = Some(conn.clone());
        Ok(conn)
    }

    fn live_connection(&self) -> Option<Conn> {
        crate::lock(&self.conn)
            .as_ref()
            .filter(|c| c.is_up())
            .cloned()
    }

    /// Runs a call with the bounded wait, and keeps the readiness of commands up to date (a
    /// refused duplicate is an answer, so it counts as reachable).
    async fn run<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = bounded(call).await;
        let reachable = !matches!(result, Err(StoreError::Unavailable { .. }));
        self.readiness.set_commands(reachable);
        result
    }

    /// Creates the stream, or brings the limits of an existing one to `options` (keeping what
    /// an operator may have set, such as replicas). Returns its last sequence.
    async fn ensure_stream(
        &self,
        retention: &Retention,
        replicas: Option<usize>,
    ) -> Result<u64, StoreError> {
        let conn = self.connection().await?;
        let max_messages = i64::try_from(retention.max_updates.max(1)).unwrap_or(i64::MAX);
        let max_age = retention.max_age.unwrap_or(Duration::ZERO);
        let max_bytes = retention
            .max_bytes
            .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
        // Twice: a node starting at the same time may create the stream between our look and
        // our create.
        for _ in 0..2 {
            match conn.js.get_stream(&self.stream).await {
                Ok(stream) => {
                    let info = stream.cached_info();
                    let mut config = info.config.clone();
                    if config.max_messages == max_messages
                        && config.max_bytes == max_bytes
                        && config.max_age == max_age
                        && config.discard == DiscardPolicy::Old
                        && config.subjects.contains(&self.filter)
                        && replicas.is_none_or(|r| config.num_replicas == r)
                    {
                        return Ok(info.state.last_sequence);
                    }
                    config.max_messages = max_messages;
                    config.max_bytes = max_bytes;
                    config.max_age = max_age;
                    config.discard = DiscardPolicy::Old;
                    if let Some(replicas) = replicas {
                        config.num_replicas = replicas;
                    }
                    // The server refuses a duplicate window longer than the max age (and we do
                    // not use it: ids are checked by subject).
                    if !max_age.is_zero() && config.duplicate_window > max_age {
                        config.duplicate_window = max_age;
                    }
                    if !config.subjects.contains(&self.filter) {
                        config.subjects.push(self.filter.clone());
                    }
                    let info = conn.js.update_stream(&config).await.map_err(|e| {
                        StoreError::failed(
                            format!("nats: cannot update the limits of stream {}", self.stream),
                            e,
                        )
                    })?;
                    return Ok(info.state.last_sequence);
                }
                Err(err) if stream_not_found(err.kind()) => {
                    let config = Config {
                        name: self.stream.clone(),
                        subjects: vec![self.filter.clone()],
                        max_messages,
                        max_age,
                        max_bytes,
                        discard: DiscardPolicy::Old,
                        retention: RetentionPolicy::Limits,
                        storage: StorageType::File,
                        num_replicas: replicas.unwrap_or(1),
                        ..Default::default()
                    };
                    match conn.js.create_stream(config).await {
                        Ok(stream) => return Ok(stream.cached_info().state.last_sequence),
                        Err(err) => tracing::debug!(%err, "stream creation failed; looking again"),
                    }
                }
                Err(err) => return Err(unavailable(err)),
            }
        }
        Err(StoreError::unavailable(format!(
            "nats: cannot create stream {} (subjects {})",
            self.stream, self.filter
        )))
    }

    /// The name of the stream of retained updates.
    fn retained_stream(&self) -> String {
        format!("{}_retained", self.stream)
    }

    /// The subject of `topic`'s retained update.
    fn retained_subject(&self, topic: &str) -> String {
        format!("{}.r.{}", self.stream, id_token(topic))
    }

    /// Creates the stream of retained updates, or brings its limits to `retention`'s: one
    /// message per topic, at most so many topics and bytes (the oldest go first), none older
    /// than the age.
    async fn ensure_retained_stream(
        &self,
        retention: &Retention,
        replicas: Option<usize>,
    ) -> Result<(), StoreError> {
        let conn = self.connection().await?;
        let limits = retention.retained;
        let name = self.retained_stream();
        let wanted = Config {
            name: name.clone(),
            subjects: vec![format!("{}.r.>", self.stream)],
            max_messages_per_subject: 1,
            max_messages: i64::try_from(limits.max_topics.max(1)).unwrap_or(i64::MAX),
            max_bytes: i64::try_from(limits.max_bytes).unwrap_or(i64::MAX),
            max_age: limits.max_age.unwrap_or(Duration::ZERO),
            discard: DiscardPolicy::Old,
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: replicas.unwrap_or(1),
            ..Default::default()
        };
        for _ in 0..2 {
            match conn.js.get_stream(&name).await {
                Ok(stream) => {
                    let mut config = stream.cached_info().config.clone();
                    if config.max_messages == wanted.max_messages
                        && config.max_bytes == wanted.max_bytes
                        && config.max_age == wanted.max_age
                    {
                        return Ok(());
                    }
                    config.max_messages = wanted.max_messages;
                    config.max_bytes = wanted.max_bytes;
                    config.max_age = wanted.max_age;
                    conn.js.update_stream(&config).await.map_err(|e| {
                        StoreError::failed(format!("nats: cannot update stream {name}"), e)
                    })?;
                    return Ok(());
                }
                Err(err) if stream_not_found(err.kind()) => {
                    match conn.js.create_stream(wanted.clone()).await {
                        Ok(_) => return Ok(()),
                        Err(err) => tracing::debug!(%err, "stream creation failed; looking again"),
                    }
                }
                Err(err) => return Err(unavailable(err)),
            }
        }
        Err(StoreError::unavailable(format!(
            "nats: cannot create stream {name}"
        )))
    }

    /// Fills this node's copy of the retained updates from the engine's.
    async fn load_retained(&self) -> Result<(), StoreError> {
        let conn = self.connection().await?;
        let name = self.retained_stream();
        let stream = conn.js.get_stream(&name).await.map_err(unavailable)?;
        let state = stream.cached_info().state.clone();
        if state.messages == 0 {
            return Ok(());
        }
        let stream = conn
            .js
            .get_stream_no_info(&name)
            .await
            .map_err(unavailable)?;
        let mut gets = futures_util::stream::iter(state.first_sequence..=state.last_sequence)
            .map(|sequence| message(&stream, sequence))
            .buffered(READ_CONCURRENCY);
        while let Some(got) = gets.next().await {
            let Some(msg) = got? else { continue };
            match serde_json::from_slice::<RetainedRecord>(&msg.payload) {
                Ok(record) => {
                    let t = record.t;
                    let topics = record.u.topics.clone();
                    if let Ok(update) = record.u.into_update(record.p) {
                        let update = Arc::new(update);
                        // The message is one topic's; the update may name several.
                        for topic in topics {
                            if msg.subject.as_str() == self.retained_subject(&topic) {
                                self.mirror.restore(topic, update.clone(), t);
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(%err, "nats: an unreadable retained update is ignored"),
            }
        }
        Ok(())
    }

    /// Makes `update` its topics' retained update in the engine, unless a newer one is there
    /// already (two nodes may retain values of one topic at once): each topic's message is
    /// replaced only if it is still the one read (`Nats-Expected-Last-Subject-Sequence`).
    async fn keep_retained(&self, update: &Update) -> Result<(), StoreError> {
        let record = serde_json::to_vec(&RetainedRecord {
            p: update.position,
            t: herald_hub::history::retained::now_ms(),
            u: update.fields.clone(),
        })
        .map_err(|e| StoreError::failed("", e))?;
        let record = bytes::Bytes::from(record);
        let conn = self.connection().await?;
        let stream = conn
            .js
            .get_stream_no_info(self.retained_stream())
            .await
            .map_err(unavailable)?;
        for topic in update.topics() {
            let subject = self.retained_subject(topic);
            for _ in 0..8 {
                let expected = match stream.get_last_raw_message_by_subject(&subject).await {
                    Ok(msg) => {
                        let kept = serde_json::from_slice::<RetainedRecord>(&msg.payload)
                            .map_or(0, |r| r.p);
                        if kept >= update.position {
                            break; // a newer (or the same) value is kept
                        }
                        msg.sequence
                    }
                    Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => 0,
                    Err(err) => return Err(unavailable(err)),
                };
                let mut headers = HeaderMap::new();
                headers.insert(
                    NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    expected.to_string().as_str(),
                );
                let ack = conn
                    .js
                    .publish_with_headers(subject.clone(), headers, record.clone())
                    .await
                    .map_err(unavailable)?;
                match ack.await {
                    Ok(_) => break,
                    Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => continue,
                    Err(err) => return Err(unavailable(err)),
                }
            }
        }
        Ok(())
    }

    /// The stream's message count and first and last sequences.
    async fn state(&self, conn: &Conn) -> Result<jetstream::stream::State, StoreError> {
        let stream = conn
            .js
            .get_stream(&self.stream)
            .await
            .map_err(unavailable)?;
        Ok(stream.cached_info().state.clone())
    }

    /// The stream, for reads by sequence or subject (without asking the server for its info).
    async fn stream_of(&self, conn: &Conn) -> Result<jetstream::stream::Stream<()>, StoreError> {
        conn.js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(unavailable)
    }

    /// The subject of the updates with this id.
    fn subject(&self, id: &str) -> String {
        format!("{}.u.{}", self.stream, id_token(id))
    }

    async fn append_update(&self, update: NewUpdate) -> Result<Arc<Update>, StoreError> {
        update.validate()?;
        let json: Vec<u8> = serde_json::to_vec(&update).map_err(|e| StoreError::failed("", e))?;
        let json = bytes::Bytes::from(json);
        let subject = self.subject(&update.id);
        let position = self
            .run(async {
                let conn = self.connection().await?;
                let mut headers = HeaderMap::new();
                headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
                let ack = conn
                    .js
                    .publish_with_headers(subject.clone(), headers, json.clone())
                    .await
                    .map_err(unavailable)?;
                match ack.await {
                    Ok(ack) => Ok(Some(ack.sequence)),
                    // The subject has a message already: this id is in history.
                    Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
                    Err(err) => Err(unavailable(err)),
                }
            })
            .await?;
        let position = match position {
            Some(position) => position,
            None => self.append_repeated(&subject, json.clone()).await?,
        };
        let update = Arc::new(update.into_update(position)?);
        if update.fields.retain {
            // Before the answer: a subscription registered after it finds it. (A retry of this
            // publish after a failure here stores nothing twice and retains it again.)
            self.run(self.keep_retained(&update)).await?;
            self.mirror.offer(&update);
        }
        Ok(update)
    }

    /// Appends an update whose id is in the stream already: answers the earliest message with
    /// it if that is the same update (a retry stores nothing), else stores this one after it.
    async fn append_repeated(&self, subject: &str, json: bytes::Bytes) -> Result<u64, StoreError> {
        self.run(async {
            let conn = self.connection().await?;
            let stream = self.stream_of(&conn).await?;
            match stream.get_first_raw_message_by_subject(subject, 0).await {
                Ok(msg) if msg.payload == json => return Ok(msg.sequence),
                Ok(_) => {}
                // Gone since: retention took it.
                Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => {}
                Err(err) => return Err(unavailable(err)),
            }
            let ack = conn
                .js
                .publish(subject.to_owned(), json)
                .await
                .map_err(unavailable)?;
            Ok(ack.await.map_err(unavailable)?.sequence)
        })
        .await
    }

    async fn read_range(&self, after: u64, limit: usize) -> Result<Vec<Arc<Update>>, StoreError> {
        self.run(async {
            let conn = self.connection().await?;
            let stream = self.stream_of(&conn).await?;
            loop {
                let state = self.state(&conn).await?;
                if state.messages == 0 || state.last_sequence <= after {
                    return Ok(Vec::new());
                }
                // Sequences are dense between the first and the last: retention only removes
                // the oldest. Fetch the range at once, in order.
                let first = (after + 1).max(state.first_sequence);
                let last = state
                    .last_sequence
                    .min(first.saturating_add(limit.max(1) as u64 - 1));
                let mut gets = futures_util::stream::iter(first..=last)
                    .map(|sequence| message(&stream, sequence))
                    .buffered(READ_CONCURRENCY);
                let mut updates = Vec::new();
                while let Some(got) = gets.next().await {
                    // Missing: retention removed it while we read (or an operator deleted
                    // it). Never fill the hole: a first position past `after + 1` tells the
                    // hub what was lost.
                    if let Some(msg) = got? {
                        updates.push(decode(msg.sequence, &msg.payload));
                    }
                }
                if !updates.is_empty() || last >= state.last_sequence {
                    return Ok(updates);
                }
                // The whole range left history while we read, and there is more: look again.
            }
        })
        .await
    }

    async fn resolve_id(&self, last_event_id: &str) -> Result<Start, StoreError> {
        self.run(async {
            let conn = self.connection().await?;
            if last_event_id == EARLIEST {
                let state = self.state(&conn).await?;
                return Ok(Start::After(if state.messages == 0 {
                    state.last_sequence
                } else {
                    state.first_sequence - 1
                }));
            }
            let stream = self.stream_of(&conn).await?;
            let subject = self.subject(last_event_id);
            // The earliest message with the id (ids may repeat; they resolve to the earliest).
            match stream.get_first_raw_message_by_subject(&subject, 0).await {
                // Found, so still in history: everything after it is too (retention only
                // removes the oldest). The id check guards against a hash collision.
                Ok(msg) => Ok(
                    if decode(msg.sequence, &msg.payload).id() == last_event_id {
                        Start::After(msg.sequence)
                    } else {
                        Start::Unknown
                    },
                ),
                Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    Ok(Start::Unknown)
                }
                Err(err) => Err(unavailable(err)),
            }
        })
        .await
    }

    async fn newest_id(&self) -> Result<Option<String>, StoreError> {
        self.run(async {
            let conn = self.connection().await?;
            let state = self.state(&conn).await?;
            if state.messages == 0 {
                return Ok(None);
            }
            let stream = self.stream_of(&conn).await?;
            let newest = message(&stream, state.last_sequence).await?;
            newest
                .map(|msg| Ok(decode(msg.sequence, &msg.payload).id().to_owned()))
                .transpose()
        })
        .await
    }
}

impl History for NatsHistory {
    fn retained(&self) -> Option<BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>>> {
        Some(
            async move {
                let head = self
                    .run(async {
                        let conn = self.connection().await?;
                        Ok(self.state(&conn).await?.last_sequence)
                    })
                    .await?;
                self.mirror.snapshot(head).await
            }
            .boxed(),
        )
    }

    fn append(&self, update: NewUpdate) -> BoxFuture<'_, Result<Arc<Update>, StoreError>> {
        self.append_update(update).boxed()
    }

    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>> {
        self.read_range(after, limit).boxed()
    }

    fn resolve(&self, last_event_id: &str) -> BoxFuture<'_, Result<Start, StoreError>> {
        let id = last_event_id.to_owned();
        async move { self.resolve_id(&id).await }.boxed()
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        self.newest_id().boxed()
    }

    fn take_feed(&self) -> Option<Feed> {
        crate::lock(&self.feed).take()
    }

    fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }
}

/// Connects to the first server that answers. The client may reconnect once per server by
/// itself (a blip), and otherwise gives up (logging "max reconnection attempts reached"): see
/// "Outages" in the module docs.
async fn connect(servers: &[ServerAddr], id: u64) -> Result<Conn, StoreError> {
    let client = ConnectOptions::new()
        .name("herald")
        .connection_timeout(COMMAND_TIMEOUT)
        .request_timeout(Some(COMMAND_TIMEOUT))
        .ping_interval(PING_INTERVAL)
        .max_reconnects(servers.len().max(1))
        .connect(servers.to_vec())
        .await
        .map_err(unavailable)?;
    let js = jetstream::ContextBuilder::new()
        .timeout(COMMAND_TIMEOUT)
        .ack_timeout(COMMAND_TIMEOUT)
        .build(client.clone());
    Ok(Conn { id, client, js })
}

/// The tail's consumer and how far it delivered.
pub(crate) struct Tail {
    conn: Conn,
    /// The consumer's continuous message stream: the client keeps pull requests outstanding
    /// (renewing them before they expire) and reports missed server heartbeats as errors.
    /// Waiting for each pull to end instead stalled the feed for seconds under load when the
    /// end of a pull arrived late.
    messages: consumer::pull::Stream,
    /// The client's connection count when the consumer was made. The client may reconnect by
    /// itself (a blip); what the server sent in between is lost, and if nothing follows, no
    /// gap in `delivered` would ever show it: so a reconnect means a new consumer.
    connects: u64,
    /// The consumer sequence of the last message received: the next must be one more, or a
    /// delivery was lost on the way.
    delivered: u64,
}

impl tail::Engine for NatsHistory {
    const NAME: &'static str = "nats";
    type Reader = Tail;

    fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Feeds what arrives within [`TAIL_BLOCK`], on the tail's consumer (a new one, starting
    /// after the position fed last, when there is none or its connection changed).
    async fn read(&self, tail: &mut Option<Tail>, feeder: &mut Feeder) -> Result<(), StoreError> {
        let conn = bounded(self.connection()).await?;
        let connects = conn.client.statistics().connects.load(Ordering::Acquire);
        let tail = match tail.take() {
            Some(t) if t.conn.id == conn.id && t.connects == connects => tail.insert(t),
            _ => {
                let config = consumer::pull::Config {
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: feeder.after() + 1,
                    },
                    ack_policy: consumer::AckPolicy::None,
                    filter_subject: self.filter.clone(),
                    inactive_threshold: CONSUMER_INACTIVE,
                    memory_storage: true,
                    num_replicas: 1,
                    ..Default::default()
                };
                let messages = bounded(async {
                    let consumer = conn
                        .js
                        .create_consumer_on_stream(config, &self.stream)
                        .await
                        .map_err(unavailable)?;
                    consumer
                        .stream()
                        .max_messages_per_batch(TAIL_BATCH)
                        .expires(TAIL_BLOCK * 5)
                        .heartbeat(TAIL_BLOCK)
                        .messages()
                        .await
                        .map_err(unavailable)
                })
                .await?;
                tail.insert(Tail {
                    conn,
                    messages,
                    connects,
                    delivered: 0,
                })
            }
        };
        // Everything that arrives within one block time; an idle stream just comes back.
        let deadline = tokio::time::Instant::now() + TAIL_BLOCK;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, tail.messages.next()).await else {
                break;
            };
            let Some(message) = next else {
                return Err(StoreError::unavailable(
                    "nats: the consumer's message stream ended",
                ));
            };
            let message = message.map_err(|e| StoreError::failed("nats pull", e))?;
            let (sequence, delivered) = {
                let info = message.info().map_err(|e| corrupt(&e.to_string()))?;
                (info.stream_sequence, info.consumer_sequence)
            };
            if delivered != tail.delivered + 1 {
                return Err(StoreError::unavailable(format!(
                    "nats feed: delivery {} lost; resuming after {}",
                    tail.delivered + 1,
                    feeder.after()
                )));
            }
            tail.delivered = delivered;
            if sequence <= feeder.after() {
                continue; // fed already: skip the decoding
            }
            if !feeder.feed(decode(sequence, &message.payload)) {
                return Ok(());
            }
        }
        // A pull also ends when the connection died under it.
        if !tail.conn.is_up() {
            return Err(StoreError::unavailable(
                "nats: connection lost during a pull",
            ));
        }
        Ok(())
    }

    /// Calls share the connection the tail has just read on: they work as well.
    async fn check_commands(&self, _recovered: bool) -> Result<(), StoreError> {
        self.readiness.set_commands(true);
        Ok(())
    }
}

/// The message at `sequence`, `None` if it is not (or no longer) in the stream.
async fn message(
    stream: &jetstream::stream::Stream<()>,
    sequence: u64,
) -> Result<Option<StreamMessage>, StoreError> {
    match stream.get_raw_message(sequence).await {
        Ok(msg) => Ok(Some(msg)),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(unavailable(err)),
    }
}

use crate::decode;

fn stream_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(err) if err.code() == 404)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::unavailable(format!("unexpected message from nats: {what}"))
}

fn unavailable(err: impl Into<Cause>) -> StoreError {
    StoreError::failed("nats", err)
}

/// Awaits a call for at most [`COMMAND_TIMEOUT`] (and a little more, so that the client's own
/// timeouts, which say more, usually come first).
async fn bounded<T>(call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    match tokio::time::timeout(COMMAND_TIMEOUT + Duration::from_millis(500), call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::unavailable(format!(
            "nats did not answer within {COMMAND_TIMEOUT:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_token(token: &str) -> bool {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn id_tokens_are_single_subject_tokens() {
        for id in [
            "",
            "a",
            "urn:uuid:2b7d3f5e-8c1a-4f0e-9d6b-1a2b3c4d5e6f",
            "a.b.*.>",
            "with space\tand tab",
            "é ☃ 🦀",
            "/path?q=1&x=.",
        ] {
            let token = id_token(id);
            assert!(is_token(&token), "{id:?} -> {token:?}");
            assert!(token.starts_with('b'));
            assert_eq!(
                URL_SAFE_NO_PAD.decode(&token[1..]).unwrap(),
                id.as_bytes(),
                "short ids are their own token"
            );
        }
    }

    #[test]
    fn long_ids_are_hashed_to_a_short_token() {
        let at_limit = "x".repeat(PLAIN_ID_MAX);
        assert!(id_token(&at_limit).starts_with('b'));
        let long = "x".repeat(PLAIN_ID_MAX + 1);
        let token = id_token(&long);
        assert!(token.starts_with('h') && is_token(&token), "{token}");
        assert_eq!(token.len(), 44);
        assert_eq!(token, id_token(&long), "stable");
        assert_ne!(token, id_token(&"x".repeat(PLAIN_ID_MAX + 2)));
        assert!(id_token(&"y".repeat(100_000)).len() <= 172);
        assert!(id_token(&at_limit).len() <= 172);
    }

    #[test]
    fn distinct_ids_give_distinct_tokens() {
        let ids = ["a", "b", "ab", "a.b", "a_b", "a-b", "A", "", " "];
        let tokens: std::collections::HashSet<String> = ids.iter().map(|i| id_token(i)).collect();
        assert_eq!(tokens.len(), ids.len());
    }

    #[test]
    fn urls() {
        let parse = |url: &str| NatsUrl::parse(url).unwrap();
        let url = |servers: &[&str], stream: &str, replicas| NatsUrl {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            stream: stream.into(),
            replicas,
        };
        assert_eq!(
            parse("nats://127.0.0.1:4222"),
            url(&["nats://127.0.0.1:4222"], "HERALD", None)
        );
        assert_eq!(
            parse("nats://h:1?stream=TEST"),
            url(&["nats://h:1"], "TEST", None)
        );
        assert_eq!(
            parse("nats://a:1,b:2,nats://c:3?stream=x-y_z"),
            url(&["nats://a:1", "nats://b:2", "nats://c:3"], "x-y_z", None)
        );
        assert_eq!(
            parse("nats://user:secret@h:1").servers,
            ["nats://user:secret@h:1"]
        );
        assert_eq!(
            parse("nats://h:1?stream=S&replicas=3"),
            url(&["nats://h:1"], "S", Some(3))
        );
        for (bad, says) in [
            ("nats://h:1?stream=", "not a usable stream name"),
            ("nats://h:1?stream=a.b", "not a usable stream name"),
            ("nats://h:1?stream=a*", "not a usable stream name"),
            ("nats://h:1?stream=a>", "not a usable stream name"),
            ("nats://h:1?stream=a/b", "not a usable stream name"),
            ("nats://h:1?stream=a b", "not a usable stream name"),
            ("nats://h:1?db=0", "unknown parameter"),
            ("nats://h:1?stream", "unknown parameter"),
            ("nats://h:1,,h:2", "empty server address"),
            ("nats://h:1,http://h:2", "invalid server address"),
            ("nats://h:1?replicas=0", "from 1 to 5"),
            ("nats://h:1?replicas=6", "from 1 to 5"),
            ("nats://h:1?replicas=x", "from 1 to 5"),
        ] {
            let err = NatsUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let long = format!("nats://h:1?stream={}", "s".repeat(256));
        assert!(NatsUrl::parse(&long).is_err());
        // The server's own parse error is kept as the cause.
        let err = NatsUrl::parse("nats://h:1,http://h:2").unwrap_err();
        assert!(std::error::Error::source(&err).is_some());
    }
}
