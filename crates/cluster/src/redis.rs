//! The `redis` backend: history in a Redis stream shared by every hub node.
//!
//! - **Layout.** Stream `KEY` holds one entry per update, field `u` = the update as JSON. Its
//!   entry id is `POSITION-MS`: the position first, so that positions order the stream and
//!   `XRANGE`/`XREAD` can start after any position without a lookup, and the Redis server's
//!   clock second, for retention by age. `KEY:pos` is the counter that gives positions (dense,
//!   the same on every node). `KEY:ids` is a sorted set, member = update id, score = position:
//!   the `Last-Event-ID` index, trimmed together with the stream.
//! - **Append** is one Lua script (atomic on the server): refuse a known id, take the next
//!   position, `XADD` with `MAXLEN ~` (`--history-size`), index the id, drop index entries the
//!   trim removed. The publisher's `200` comes after Redis answered it.
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
//!   a publish needs it. A failed publish is never retried: the client reports a request it
//!   never wrote and one whose reply was lost with the same error, and a retry of the latter
//!   would store the update twice or answer `409` for a stored one.
//! - **Age retention** (`--history-max-age`) runs on every node every few seconds as a script
//!   that trims the oldest entries by the time in their ids (idempotent, so nodes need not
//!   coordinate).

use futures_util::future::{BoxFuture, FutureExt};
use herald_hub::history::{EARLIEST, Feed, History, Retention, Start, StoreError};
use herald_hub::update::{NewUpdate, Update};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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

/// `--store redis://HOST:PORT/DB[?stream=KEY]`, split into what the Redis client needs and
/// the stream key (default `herald`).
pub(crate) fn parse_url(url: &str) -> Result<(String, String), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut key = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("stream", value)) if !value.is_empty() => key = Some(value.to_owned()),
            Some(("stream", _)) => return Err("`stream=` needs a key name".into()),
            // The tail reads RESP2 replies; RESP3 would turn them into maps.
            Some(("protocol", _)) => {
                return Err("`protocol=` is not supported: herald speaks RESP2 to redis".into());
            }
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

/// History in a Redis stream (see the module documentation).
pub struct RedisHistory {
    inner: Arc<RedisState>,
    feed: Mutex<Option<Feed>>,
}

impl std::fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHistory")
            .field("stream", &self.inner.keys.stream)
            .finish_non_exhaustive()
    }
}

struct RedisState {
    keys: Keys,
    retention: Retention,
    commands: ConnectionManager,
    /// The tail's last read worked.
    tail_ok: AtomicBool,
    /// The last command on `commands` worked.
    commands_ok: AtomicBool,
    /// When a command last got an answer, in milliseconds since `epoch`.
    commands_answered: AtomicU64,
    epoch: Instant,
    append: Script,
    resolve: Script,
    trim_age: Script,
}

struct Keys {
    stream: String,
    counter: String,
    ids: String,
}

impl RedisHistory {
    /// Connects to Redis at `url` (`redis://HOST:PORT/DB[?stream=KEY]`) and starts tailing the
    /// stream after its current end.
    pub async fn open(url: &str, retention: Retention) -> Result<RedisHistory, StoreError> {
        let (client_url, key) = parse_url(url).map_err(StoreError::unavailable)?;
        let client = Client::open(client_url.as_str()).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1);
        let commands = bounded(ConnectionManager::new_with_config(client.clone(), config)).await?;
        let inner = Arc::new(RedisState {
            keys: Keys {
                counter: format!("{key}:pos"),
                ids: format!("{key}:ids"),
                stream: key,
            },
            retention,
            commands,
            tail_ok: AtomicBool::new(true),
            commands_ok: AtomicBool::new(true),
            commands_answered: AtomicU64::new(0),
            epoch: Instant::now(),
            append: Script::new(APPEND),
            resolve: Script::new(RESOLVE),
            trim_age: Script::new(TRIM_AGE),
        });
        let head = inner.head().await?;
        let tail = tail_connection(&client).await?;
        let (feed_tx, feed) = Feed::channel(head);
        tokio::spawn(tail_loop(
            Arc::downgrade(&inner),
            client,
            tail,
            head,
            feed_tx,
        ));
        if let Some(max_age) = inner.retention.max_age {
            tokio::spawn(age_retention(Arc::downgrade(&inner), max_age));
        }
        Ok(RedisHistory {
            inner,
            feed: Mutex::new(Some(feed)),
        })
    }
}

impl RedisState {
    fn conn(&self) -> ConnectionManager {
        self.commands.clone()
    }

    /// Runs a command with the bounded wait, and keeps `commands_ok` up to date.
    async fn run<T, F>(&self, command: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let result = bounded(command).await;
        if result.is_ok() {
            self.commands_answered
                .store(self.millis(), Ordering::Release);
        }
        self.commands_ok.store(result.is_ok(), Ordering::Release);
        result
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_ready(&self) -> bool {
        self.tail_ok.load(Ordering::Acquire) && self.commands_ok.load(Ordering::Acquire)
    }

    /// Whether the tail should PING the command connection: its last command failed, or it
    /// has been idle long enough to have died unnoticed.
    fn commands_need_check(&self) -> bool {
        let idle = self
            .millis()
            .saturating_sub(self.commands_answered.load(Ordering::Acquire));
        !self.commands_ok.load(Ordering::Acquire) || idle >= COMMAND_KEEPALIVE.as_millis() as u64
    }

    /// PINGs the command connection, twice if need be: on a connection that died unnoticed
    /// the first PING fails and makes the manager reconnect, the second waits for the new
    /// connection. (A PING, unlike a publish, may be repeated blindly.)
    async fn check_commands(&self) -> Result<(), StoreError> {
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

    async fn append(&self, update: NewUpdate) -> Result<Arc<Update>, StoreError> {
        update.validate()?;
        let json = serde_json::to_string(&update).map_err(|e| StoreError::failed("", e))?;
        let mut conn = self.conn();
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.counter)
            .key(&self.keys.ids)
            .arg(&update.id)
            .arg(json)
            .arg(self.retention.max_updates.max(1));
        let position: i64 = self.run(invocation.invoke_async(&mut conn)).await?;
        if position < 0 {
            return Err(StoreError::DuplicateId(update.id));
        }
        Ok(Arc::new(update.into_update(position as u64)?))
    }

    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Arc<Update>>, StoreError> {
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

    async fn resolve(&self, last_event_id: &str) -> Result<Start, StoreError> {
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

    async fn last_id(&self) -> Result<Option<String>, StoreError> {
        Ok(self.newest().await?.map(|e| decode(e).id().to_owned()))
    }
}

impl History for RedisHistory {
    fn append(&self, update: NewUpdate) -> BoxFuture<'_, Result<Arc<Update>, StoreError>> {
        self.inner.append(update).boxed()
    }

    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>> {
        self.inner.read_after(after, limit).boxed()
    }

    fn resolve(&self, last_event_id: &str) -> BoxFuture<'_, Result<Start, StoreError>> {
        let id = last_event_id.to_owned();
        async move { self.inner.resolve(&id).await }.boxed()
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        self.inner.last_id().boxed()
    }

    fn take_feed(&self) -> Option<Feed> {
        crate::lock(&self.feed).take()
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
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

/// Feeds the dispatcher with every entry after position `after`, in stream order, for as long
/// as the hub lives; reconnects after errors and resumes after the last entry fed.
async fn tail_loop(
    inner: std::sync::Weak<RedisState>,
    client: Client,
    conn: MultiplexedConnection,
    mut after: u64,
    feed: mpsc::UnboundedSender<Arc<Update>>,
) {
    let mut conn = Some(conn);
    let mut backoff = Duration::from_millis(50);
    let mut was_ready = true;
    loop {
        let Some(this) = inner.upgrade() else { return };
        if feed.is_closed() {
            return;
        }
        let connection = match conn.take() {
            Some(c) => Ok(c),
            None => tail_connection(&client).await,
        };
        let result = match connection {
            Ok(mut c) => {
                let read = read_tail(&this, &mut c, after).await;
                if read.is_ok() {
                    conn = Some(c);
                }
                read
            }
            Err(err) => Err(err),
        };
        match result {
            Ok(updates) => {
                backoff = Duration::from_millis(50);
                for update in updates {
                    if update.position <= after {
                        continue;
                    }
                    after = update.position;
                    if feed.send(update).is_err() {
                        return;
                    }
                }
                // Whatever broke the tail's connection (an engine restart) broke the command
                // connection too, but that one only finds out when a command fails on it:
                // make sure it works before saying ready (see "Outages").
                let tail_recovered = !this.tail_ok.load(Ordering::Acquire);
                let check = if tail_recovered || this.commands_need_check() {
                    this.check_commands().await
                } else {
                    Ok(())
                };
                this.tail_ok.store(true, Ordering::Release);
                let ready = this.is_ready();
                if ready && !was_ready {
                    tracing::info!("redis reachable again; the feed resumes after {after}");
                } else if !ready && was_ready {
                    let err = check
                        .err()
                        .map_or_else(|| "a command failed".to_owned(), |e| e.to_string());
                    tracing::error!(
                        %err,
                        "redis does not answer commands; publishes get 503 until it does"
                    );
                }
                was_ready = ready;
            }
            Err(err) => {
                this.tail_ok.store(false, Ordering::Release);
                if was_ready {
                    tracing::error!(%err, "redis unreachable; publishes get 503 until it is back");
                }
                was_ready = false;
                drop(this);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn read_tail(
    this: &RedisState,
    conn: &mut MultiplexedConnection,
    after: u64,
) -> Result<Vec<Arc<Update>>, StoreError> {
    let reply: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(TAIL_BATCH)
        .arg("BLOCK")
        .arg(TAIL_BLOCK_MS)
        .arg("STREAMS")
        .arg(&this.keys.stream)
        .arg(format!("{after}-{MAX_SEQ}"))
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    // Nil: nothing new within the block time. Otherwise [[stream, entries]].
    let Value::Array(streams) = reply else {
        return Ok(Vec::new());
    };
    let mut updates = Vec::new();
    for stream in streams {
        let Value::Array(mut pair) = stream else {
            return Err(corrupt("XREAD reply"));
        };
        if pair.len() == 2 {
            for entry in entries(pair.pop().expect("two items"))? {
                updates.push(decode(entry));
            }
        }
    }
    Ok(updates)
}

async fn age_retention(inner: std::sync::Weak<RedisState>, max_age: Duration) {
    let mut tick = tokio::time::interval(AGE_RETENTION_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(this) = inner.upgrade() else { return };
        let mut conn = this.conn();
        let mut invocation = this.trim_age.prepare_invoke();
        invocation
            .key(&this.keys.stream)
            .key(&this.keys.ids)
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

/// KEYS: stream, counter, ids. ARGV: id, json, max updates. Returns the position, or -1 when
/// the id is already in history.
const APPEND: &str = r#"
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return -1 end
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
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], string.format('%d-%d', pos, ms), 'u', ARGV[2])
redis.call('ZADD', KEYS[3], pos, ARGV[1])
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

/// KEYS: stream, ids. ARGV: max age in ms. Drops entries older than that (by the time in their
/// ids) and their index entries; returns how many.
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
  for _, e in ipairs(batch) do
    local pos, ms = string.match(e[1], '^(%d+)-(%d+)$')
    if tonumber(ms) >= cutoff then keep = pos break end
    last_old = pos
  end
  if last_old then
    local upto = keep or (tonumber(last_old) + 1)
    removed = removed + redis.call('XTRIM', KEYS[1], 'MINID', upto .. '-0')
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. upto)
  end
  if keep or #batch < 100 then break end
end
return removed
"#;
