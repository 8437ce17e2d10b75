//! The `redis` backend: history in a Redis stream shared by every hub node.
//!
//! - **Layout.** Stream `KEY` holds one entry per update, field `u` = the update as JSON. Its
//!   entry id is `POSITION-MS`: the position first, so that positions order the stream and
//!   `XRANGE`/`XREAD` can start after any position without a lookup, and the Redis server's
//!   clock second, for retention by age. `KEY:pos` is the counter that gives positions (dense,
//!   the same on every node). `KEY:ids` is a sorted set, member = update id, score = position:
//!   the `Last-Event-ID` index, trimmed together with the stream. `KEY:bytes` counts the bytes
//!   of the entries, for `--history-max-bytes`.
//! - **Append** is one Lua script (atomic on the server): answer the update indexed with the
//!   same id if its JSON is the same (a retry stores nothing), else take the next position,
//!   `XADD`, index the id unless an earlier update has it (ids resolve to the earliest), trim
//!   the oldest entries beyond `--history-size` and `--history-max-bytes`, drop index entries
//!   the trim removed. The publisher's `200` comes after Redis answered it. The index holds
//!   one position per id: once the earliest update with an id leaves history, the id is
//!   unknown even if a later update with it is kept (the client re-fetches the state, as for
//!   any unknown id).
//! - **Feed.** Every node tails the stream with `XREAD BLOCK` on a connection of its own and
//!   feeds its dispatcher in stream order, its own updates included; so every node delivers
//!   the same updates in the same order. After an outage the tail resumes after the last
//!   entry it fed: no gap, no duplicate.
//! - **Outages.** Commands have a bounded wait ([`COMMAND_TIMEOUT`]): a publish answers `503`
//!   quickly, `/readyz` says not ready until the tail reads again *and* the command connection
//!   answers; subscribers stay connected. The command connection reconnects only when a command
//!   fails on it, so a connection that died unnoticed (the engine restarted while nobody
//!   published, or the server closed it as idle) would fail the next publish with `broken
//!   pipe`; the tail therefore PINGs it after every outage of its own and whenever it has not
//!   answered for `COMMAND_KEEPALIVE`, and the first PING's failure makes it reconnect before
//!   a publish needs it. A failed publish is not retried by the hub: the client reports a
//!   request it never wrote and one whose reply was lost with the same error. The publisher
//!   gets `503` and retries; an identical retry stores nothing twice.
//! - **Age retention** (`--history-max-age`) runs on every node every few seconds as a script
//!   that trims the oldest entries by the time in their ids (idempotent, so nodes need not
//!   coordinate).

use crate::retained::Mirror;
use crate::tail::{self, Feeder, Readiness};
use futures_util::future::{BoxFuture, FutureExt};
use herald_hub::history::{EARLIEST, Feed, History, Retention, Start, StoreError};
use herald_hub::update::{NewUpdate, Update};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The longest a command may take before the hub gives up (and a publisher gets `503`).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one `XREAD` blocks; also how often an idle tail checks the connection.
const TAIL_BLOCK_MS: u64 = 1000;
/// The tail PINGs the command connection when no command got an answer for this long, so
/// that a dead connection is replaced before a publish finds it dead (see "Outages").
const COMMAND_KEEPALIVE: Duration = Duration::from_millis(TAIL_BLOCK_MS);
/// Most entries one `XREAD` returns.
const TAIL_BATCH: usize = 1024;
/// How often age retention runs.
const AGE_RETENTION_PERIOD: Duration = Duration::from_secs(2);
/// The largest sequence part of a stream id: `P-MAX_SEQ` sorts after every entry of position P.
const MAX_SEQ: &str = "18446744073709551615";

/// What is wrong with a Redis store URL.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UrlError {
    #[error("`stream=` needs a key name")]
    EmptyStream,
    // The tail reads RESP2 replies; RESP3 would turn them into maps.
    #[error("`protocol=` is not supported: herald speaks RESP2 to redis")]
    Protocol,
}

/// `--store redis://HOST:PORT/DB[?stream=KEY]`, split into what the Redis client needs and
/// the stream key (default `herald`).
pub(crate) fn parse_url(url: &str) -> Result<(String, String), UrlError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut key = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("stream", value)) if !value.is_empty() => key = Some(value.to_owned()),
            Some(("stream", _)) => return Err(UrlError::EmptyStream),
            Some(("protocol", _)) => return Err(UrlError::Protocol),
            _ => rest.push(pair),
        }
    }
    let client_url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((client_url, key.unwrap_or_else(|| "herald".to_owned())))
}

/// History in a Redis stream (see the module documentation). [`RedisHistory::open`] gives it
/// as an `Arc`: the tail it starts runs for as long as one is held.
pub struct RedisHistory {
    keys: Keys,
    retention: Retention,
    /// For the tail's connections.
    client: Client,
    commands: ConnectionManager,
    readiness: Readiness,
    /// When a command last got an answer, in milliseconds since `epoch`.
    commands_answered: AtomicU64,
    epoch: Instant,
    append: Script,
    resolve: Script,
    trim_age: Script,
    feed: Mutex<Option<Feed>>,
    /// This node's copy of the retained updates (`KEY:retained` is the engine's).
    mirror: Arc<Mirror>,
}

impl std::fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory")
            .field("stream", &self.keys.stream)
            .finish_non_exhaustive()
    }
}

struct Keys {
    stream: String,
    counter: String,
    ids: String,
    /// The bytes of the stream's entries (see [`APPEND`]).
    bytes: String,
    /// Retained updates: topic -> `POSITION MILLISECONDS JSON`; their topics by position (the
    /// oldest are dropped first); their bytes.
    retained: String,
    retained_order: String,
    retained_bytes: String,
}

impl RedisHistory {
    /// Connects to Redis at `url` (`redis://HOST:PORT/DB[?stream=KEY]`) and starts tailing the
    /// stream after its current end.
    pub async fn open(url: &str, retention: Retention) -> Result<Arc<RedisHistory>, StoreError> {
        let (client_url, key) = parse_url(url).map_err(|e| StoreError::failed("", e))?;
        let client = Client::open(client_url.as_str()).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1);
        let commands = bounded(ConnectionManager::new_with_config(client.clone(), config)).await?;
        // The tail's first connection is made before `open` returns, so that a bad URL or an
        // unreachable server fails the start rather than the first read.
        let tail = tail_connection(&client).await?;
        let mut history = RedisHistory {
            keys: Keys {
                counter: format!("{key}:pos"),
                ids: format!("{key}:ids"),
                bytes: format!("{key}:bytes"),
                retained: format!("{key}:retained"),
                retained_order: format!("{key}:retained-order"),
                retained_bytes: format!("{key}:retained-bytes"),
                stream: key,
            },
            retention,
            client,
            commands,
            readiness: Readiness::new(),
            commands_answered: AtomicU64::new(0),
            epoch: Instant::now(),
            append: Script::new(&format!("{SIZES}{APPEND}")),
            resolve: Script::new(RESOLVE),
            trim_age: Script::new(&format!("{SIZES}{TRIM_AGE}")),
            feed: Mutex::new(None),
            mirror: Arc::new(Mirror::new(retention.retained, 0)),
        };
        let head = history.head().await?;
        history.mirror.fed(head);
        history.load_retained().await?;
        let (feed_tx, feed) = Feed::channel(head);
        history.feed = Mutex::new(Some(feed));
        let history = Arc::new(history);
        tokio::spawn(tail::drive(
            Arc::downgrade(&history),
            head,
            Some(tail),
            feed_tx,
            Some(history.mirror.clone()),
        ));
        if let Some(max_age) = history.retention.max_age {
            tokio::spawn(age_retention(Arc::downgrade(&history), max_age));
        }
        Ok(history)
    }
}

impl RedisHistory {
    fn conn(&self) -> ConnectionManager {
        self.commands.clone()
    }

    /// Runs a command with the bounded wait, and keeps the readiness of commands up to date.
    async fn run<T, F>(&self, command: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let result = bounded(command).await;
        if result.is_ok() {
            self.commands_answered
                .store(self.millis(), Ordering::Release);
        }
        self.readiness.set_commands(result.is_ok());
        result
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the tail should PING the command connection: its last command failed, or it
    /// has been idle long enough to have died unnoticed.
    fn commands_need_check(&self) -> bool {
        let idle = self
            .millis()
            .saturating_sub(self.commands_answered.load(Ordering::Acquire));
        !self.readiness.commands_ok() || idle >= COMMAND_KEEPALIVE.as_millis() as u64
    }

    /// PINGs the command connection, twice if need be: on a connection that died unnoticed
    /// the first PING fails and makes the manager reconnect, the second waits for the new
    /// connection. (A PING, unlike a publish, may be repeated blindly.)
    async fn ping_commands(&self) -> Result<(), StoreError> {
        let ping = || async {
            let mut conn = self.conn();
            self.run(redis::cmd("PING").query_async::<()>(&mut conn))
                .await
        };
        match ping().await {
            Ok(()) => Ok(()),
            Err(err) => {
                tracing::debug!(%err, "redis: the command connection failed a PING; again");
                ping().await
            }
        }
    }

    /// The newest position given so far (0 if none): the counter, or the newest entry if the
    /// counter fell behind it (evicted or deleted), so a starting node never replays history
    /// as if it were new.
    async fn head(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let counter: Option<u64> = self
            .run(
                redis::cmd("GET")
                    .arg(&self.keys.counter)
                    .query_async(&mut conn),
            )
            .await?;
        let newest = self.newest().await?.map_or(0, |e| e.position);
        Ok(counter.unwrap_or(0).max(newest))
    }

    /// Fills this node's copy of the retained updates from the engine's.
    async fn load_retained(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let all: Vec<(String, Vec<u8>)> = self
            .run(
                redis::cmd("HGETALL")
                    .arg(&self.keys.retained)
                    .query_async(&mut conn),
            )
            .await?;
        for (topic, value) in all {
            let mut parts = value.splitn(3, |&b| b == b' ');
            let number = |part: Option<&[u8]>| {
                part.and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|p| p.parse::<u64>().ok())
            };
            let (Some(position), Some(time), Some(json)) =
                (number(parts.next()), number(parts.next()), parts.next())
            else {
                tracing::warn!(topic, "redis: an unreadable retained update is ignored");
                continue;
            };
            self.mirror
                .restore(topic, crate::decode(position, json), time);
        }
        Ok(())
    }

    /// The newest entry of the stream, if any.
    async fn newest(&self) -> Result<Option<Entry>, StoreError> {
        let mut conn = self.conn();
        let reply: Value = self
            .run(
                redis::cmd("XREVRANGE")
                    .arg(&self.keys.stream)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(entries(reply)?.into_iter().next())
    }

    async fn append_update(&self, update: NewUpdate) -> Result<Arc<Update>, StoreError> {
        update.validate()?;
        let json = serde_json::to_string(&update).map_err(|e| StoreError::failed("", e))?;
        let mut conn = self.conn();
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.counter)
            .key(&self.keys.ids)
            .key(&self.keys.bytes)
            .arg(&update.id)
            .arg(json)
            .arg(self.retention.max_updates.max(1))
            .arg(self.retention.max_bytes.unwrap_or(0))
            .key(&self.keys.retained)
            .key(&self.keys.retained_order)
            .key(&self.keys.retained_bytes)
            .arg(u8::from(update.retain))
            .arg(self.retention.retained.max_topics)
            .arg(self.retention.retained.max_bytes);
        for topic in &update.topics {
            invocation.arg(topic);
        }
        // The same fields at the position answered, whether stored now or before (a retry).
        let position: u64 = self.run(invocation.invoke_async(&mut conn)).await?;
        let update = Arc::new(update.into_update(position)?);
        // Before the answer: a subscription registered after it finds it.
        self.mirror.offer(&update);
        Ok(update)
    }

    async fn read_range(&self, after: u64, limit: usize) -> Result<Vec<Arc<Update>>, StoreError> {
        let mut conn = self.conn();
        let reply: Value = self
            .run(
                redis::cmd("XRANGE")
                    .arg(&self.keys.stream)
                    .arg(format!("{}-0", after + 1))
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit.max(1))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(entries(reply)?.into_iter().map(decode).collect())
    }

    async fn resolve_id(&self, last_event_id: &str) -> Result<Start, StoreError> {
        let mut conn = self.conn();
        let mut invocation = self.resolve.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.counter)
            .key(&self.keys.ids)
            .arg(last_event_id)
            .arg(u8::from(last_event_id == EARLIEST));
        let position: i64 = self.run(invocation.invoke_async(&mut conn)).await?;
        Ok(if position < 0 {
            Start::Unknown
        } else {
            Start::After(position as u64)
        })
    }

    async fn newest_id(&self) -> Result<Option<String>, StoreError> {
        Ok(self.newest().await?.map(|e| decode(e).id().to_owned()))
    }
}

impl History for RedisHistory {
    fn retained(&self) -> Option<BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>>> {
        Some(
            async move {
                let head = self.head().await?;
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

/// A connection for the blocking `XREAD`: its own, since a blocked command holds the
/// connection, and without a response timeout shorter than the block.
async fn tail_connection(client: &Client) -> Result<MultiplexedConnection, StoreError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(Duration::from_millis(TAIL_BLOCK_MS) + COMMAND_TIMEOUT));
    bounded(client.get_multiplexed_async_connection_with_config(&config)).await
}

impl tail::Engine for RedisHistory {
    const NAME: &'static str = "redis";
    type Reader = MultiplexedConnection;

    fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// One `XREAD BLOCK` of what follows the position fed last.
    async fn read(
        &self,
        reader: &mut Option<MultiplexedConnection>,
        feeder: &mut Feeder,
    ) -> Result<(), StoreError> {
        let mut conn = match reader.take() {
            Some(conn) => conn,
            None => tail_connection(&self.client).await?,
        };
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(TAIL_BATCH)
            .arg("BLOCK")
            .arg(TAIL_BLOCK_MS)
            .arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(format!("{}-{MAX_SEQ}", feeder.after()))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        *reader = Some(conn);
        // Nil: nothing new within the block time. Otherwise [[stream, entries]].
        let Value::Array(streams) = reply else {
            return Ok(());
        };
        for stream in streams {
            let Value::Array(mut pair) = stream else {
                return Err(corrupt("XREAD reply"));
            };
            if pair.len() == 2 {
                for entry in entries(pair.pop().expect("two items"))? {
                    if !feeder.feed(decode(entry)) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Whatever broke the tail's connection (an engine restart) broke the command connection
    /// too, but that one only finds out when a command fails on it: PING it (see "Outages").
    async fn check_commands(&self, recovered: bool) -> Result<(), StoreError> {
        if recovered || self.commands_need_check() {
            self.ping_commands().await
        } else {
            Ok(())
        }
    }
}

async fn age_retention(history: Weak<RedisHistory>, max_age: Duration) {
    let mut tick = tokio::time::interval(AGE_RETENTION_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(this) = history.upgrade() else {
            return;
        };
        let mut conn = this.conn();
        let mut invocation = this.trim_age.prepare_invoke();
        invocation
            .key(&this.keys.stream)
            .key(&this.keys.ids)
            .key(&this.keys.bytes)
            .arg(max_age.as_millis() as u64);
        let trimmed: Result<i64, _> = bounded(invocation.invoke_async(&mut conn)).await;
        match trimmed {
            Ok(n) if n > 0 => tracing::debug!(n, "history: dropped updates older than the max age"),
            Ok(_) => {}
            Err(err) => tracing::debug!(%err, "age retention skipped"),
        }
    }
}

/// One stream entry: its position and its JSON.
struct Entry {
    position: u64,
    json: Vec<u8>,
}

/// Parses `[[id, [field, value, …]], …]`.
fn entries(reply: Value) -> Result<Vec<Entry>, StoreError> {
    let Value::Array(items) = reply else {
        return match reply {
            Value::Nil => Ok(Vec::new()),
            _ => Err(corrupt("stream reply")),
        };
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(mut parts) = item else {
                return Err(corrupt("stream entry"));
            };
            let (Some(Value::Array(fields)), Some(id)) = (parts.pop(), parts.pop()) else {
                return Err(corrupt("stream entry"));
            };
            let id = text(id).ok_or_else(|| corrupt("stream entry id"))?;
            let position = id
                .split_once('-')
                .and_then(|(p, _)| p.parse().ok())
                .ok_or_else(|| corrupt("stream entry id"))?;
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                if text(name).as_deref() == Some("u") {
                    let json = match value {
                        Value::BulkString(bytes) => bytes,
                        _ => return Err(corrupt("update field")),
                    };
                    return Ok(Entry { position, json });
                }
            }
            Err(corrupt("update field"))
        })
        .collect()
}

fn decode(entry: Entry) -> Arc<Update> {
    crate::decode(entry.position, &entry.json)
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::unavailable(format!("unexpected {what} from redis"))
}

fn unavailable(err: redis::RedisError) -> StoreError {
    StoreError::unavailable(format!("redis: {err}"))
}

/// Awaits a Redis call for at most [`COMMAND_TIMEOUT`] (plus the block time of a tail read).
async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
    match tokio::time::timeout(COMMAND_TIMEOUT + Duration::from_millis(500), call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::unavailable(format!(
            "redis did not answer within {COMMAND_TIMEOUT:?}"
        ))),
    }
}

/// Lua shared by the scripts: the size of an entry (its JSON), and the sum over the stream.
const SIZES: &str = r#"
local function entry_size(e)
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == 'u' then return string.len(f[i + 1]) end
  end
  return 0
end
local function stream_bytes(key)
  local total = 0
  local from = '-'
  while true do
    local batch = redis.call('XRANGE', key, from, '+', 'COUNT', 1000)
    if #batch == 0 then return total end
    for _, e in ipairs(batch) do total = total + entry_size(e) end
    from = '(' .. batch[#batch][1]
  end
end
"#;

/// KEYS: stream, counter, ids, bytes, retained, retained-order, retained-bytes. ARGV: id,
/// json, max updates, max bytes (0: no limit), 1 to retain, retained topics and bytes at most,
/// then the update's topics.
/// Returns the position: of the update indexed with this id if it is the same (a retry), else
/// of the one stored now. The index keeps the earliest update with each id.
///
/// Trimming is exact, oldest first, keeping the newest entry: by count and, with a limit, by
/// bytes, which `KEY:bytes` counts (made by summing the stream the first time; `XADD MAXLEN`
/// would trim without telling how much).
const APPEND: &str = r#"
local known = redis.call('ZSCORE', KEYS[3], ARGV[1])
if known then
  local same = redis.call('XRANGE', KEYS[1], known, known, 'COUNT', 1)
  if same[1] and same[1][2][2] == ARGV[2] then return tonumber(known) end
end
local pos = redis.call('INCR', KEYS[2])
-- The counter must stay ahead of the stream (it could have been evicted or deleted).
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if newest[1] then
  local newest_pos = tonumber(string.match(newest[1][1], '^(%d+)-'))
  if pos <= newest_pos then
    pos = newest_pos + 1
    redis.call('SET', KEYS[2], pos)
  end
end
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], string.format('%d-%d', pos, ms), 'u', ARGV[2])
redis.call('ZADD', KEYS[3], 'NX', pos, ARGV[1])
if ARGV[5] == '1' then
  -- Retained: the topics' latest value, in the same atomic step as the update.
  local value = pos .. ' ' .. ms .. ' ' .. ARGV[2]
  local rbytes = tonumber(redis.call('GET', KEYS[7]) or '0')
  for i = 8, #ARGV do
    local topic = ARGV[i]
    local old = redis.call('HGET', KEYS[5], topic)
    if old then rbytes = rbytes - string.len(old) - string.len(topic) end
    redis.call('HSET', KEYS[5], topic, value)
    redis.call('ZADD', KEYS[6], pos, topic)
    rbytes = rbytes + string.len(value) + string.len(topic)
  end
  while redis.call('ZCARD', KEYS[6]) > tonumber(ARGV[6]) or rbytes > tonumber(ARGV[7]) do
    local oldest = redis.call('ZRANGE', KEYS[6], 0, 0)[1]
    if not oldest then break end
    local v = redis.call('HGET', KEYS[5], oldest)
    if v then rbytes = rbytes - string.len(v) - string.len(oldest) end
    redis.call('HDEL', KEYS[5], oldest)
    redis.call('ZREM', KEYS[6], oldest)
  end
  redis.call('SET', KEYS[7], rbytes)
end
local total
if redis.call('EXISTS', KEYS[4]) == 1 then
  total = redis.call('INCRBY', KEYS[4], string.len(ARGV[2]))
else
  total = stream_bytes(KEYS[1])
end
local max_len = tonumber(ARGV[3])
local max_bytes = tonumber(ARGV[4])
local len = redis.call('XLEN', KEYS[1])
local function over()
  return len > 1 and (len > max_len or (max_bytes > 0 and total > max_bytes))
end
while over() do
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 16)) do
    if not over() then break end
    redis.call('XDEL', KEYS[1], e[1])
    total = total - entry_size(e)
    len = len - 1
  end
end
redis.call('SET', KEYS[4], total)
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if first[1] then
  local first_pos = tonumber(string.match(first[1][1], '^(%d+)-'))
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. first_pos)
end
return pos
"#;

/// KEYS: stream, counter, ids. ARGV: id, 1 for `earliest`. Returns the position to resume
/// after, or -1 when the id is unknown or its successors have left history.
const RESOLVE: &str = r#"
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first_pos
if first[1] then
  first_pos = tonumber(string.match(first[1][1], '^(%d+)-'))
else
  first_pos = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
end
if ARGV[2] == '1' then return first_pos - 1 end
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not score then return -1 end
local pos = tonumber(score)
if pos < first_pos - 1 then return -1 end
return pos
"#;

/// KEYS: stream, ids, bytes. ARGV: max age in ms. Drops entries older than that (by the time in
/// their ids), their index entries and their bytes from the count; returns how many.
const TRIM_AGE: &str = r#"
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
local removed = 0
-- Bounded work per run (a script blocks Redis): the next run goes on.
for _ = 1, 50 do
  local batch = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 100)
  if #batch == 0 then break end
  local keep
  local last_old
  local old_bytes = 0
  for _, e in ipairs(batch) do
    local pos, ms = string.match(e[1], '^(%d+)-(%d+)$')
    if tonumber(ms) >= cutoff then keep = pos break end
    last_old = pos
    old_bytes = old_bytes + entry_size(e)
  end
  if last_old then
    local upto = keep or (tonumber(last_old) + 1)
    removed = removed + redis.call('XTRIM', KEYS[1], 'MINID', upto .. '-0')
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. upto)
    if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('DECRBY', KEYS[3], old_bytes) end
  end
  if keep or #batch < 100 then break end
end
return removed
"#;
