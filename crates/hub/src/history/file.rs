//! The `file` backend, the default: history in an embedded fjall database (an LSM tree with a
//! write-ahead journal), durable before the publisher is acknowledged.
//!
//! - **Group commit.** One writer thread owns all appends. It takes every request waiting in its
//!   queue (up to [`MAX_BATCH`]), gives them consecutive positions, writes them in one atomic
//!   batch and syncs the journal once (`PersistMode::SyncAll`); only then does it answer the
//!   publishers and feed the dispatcher, in position order. Concurrent publishers share syncs,
//!   a lone publisher pays one sync per update.
//! - **Layout.** Keyspace `updates`: position (u64, big-endian, so keys sort by position) -> the
//!   update as JSON with its acceptance time. Keyspace `ids`: update id -> position, for
//!   `Last-Event-ID` lookups (O(log n)). Keyspace `meta`: `head`, the highest position ever
//!   given, so positions are never reused even when retention has emptied the history.
//! - **Failures.** If a batch cannot be written, every publisher in it gets an error (`503`),
//!   nothing of it is visible (fjall batches are atomic, the in-memory state only moves after the
//!   sync), and the store is marked not ready. The next append first reopens the database (fjall
//!   refuses writes after a failed journal write until reopened), so the hub recovers by itself
//!   once the disk works again.
//! - **Retention** by count and by age runs on its own thread, so publishes never wait for it.
//! - **Damage is refused, not served.** fjall opens whatever its files still hold, silently (a
//!   truncated journal just ends early; without `keyspaces/0` it drops every keyspace). So a record
//!   beside the directory (`PATH.head`, see `file/record.rs`) keeps what was acknowledged: a head
//!   and the start of the range retention has not dropped. The retention thread rewrites it at most
//!   once a second and before it deletes anything, and a clean shutdown writes it last, so
//!   publishes never wait for it. A start that recovers less than the record (a lower head, a
//!   missing directory, the kept range short at either end or with holes) fails with [`Damage`],
//!   unless [`FileOptions::accept_loss`]: then it warns, serves what is left, fills lost positions
//!   with placeholders no subscriber receives (positions stay dense) and keeps the recorded head as
//!   the floor of new positions, so none is given twice. Not seen: a loss of only the updates
//!   acknowledged since the last record write (up to about a second before a crash), or damage that
//!   fjall's counts do not show (see `file/record.rs`).
//! - **Tail cache.** The newest updates stay in memory (the same window the memory backend uses),
//!   so live subscribers catching up after a burst do not touch the disk. Older updates read back
//!   for catch-up are decoded once and shared through a read cache (`file/read_cache.rs`).
//! - **Memory** is bounded by [`FileOptions::memory`], shared out by [`MemoryPlan`] between the
//!   tail cache, the read cache, fjall's block cache and its memtables.

mod read_cache;
mod record;

pub use record::Damage;

use super::retained::{Retained, RetainedLimits, now_ms};
use super::{EARLIEST, Feed, History, Retention, Span, Start, StoreError, Window};
use crate::lock;
use crate::update::{NewUpdate, Update};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use futures_util::future::{BoxFuture, FutureExt};
use read_cache::ReadCache;
use record::{Finding, Found, Record};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc as std_mpsc};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Most updates written in one group commit.
pub const MAX_BATCH: usize = 1024;
/// Updates kept in memory for replay without disk reads, at most this many (and
/// [`MemoryPlan::tail_bytes`]).
const TAIL_CACHE: usize = 4096;
/// Default of [`FileOptions::memory`].
pub const DEFAULT_MEMORY: usize = 64 << 20;
/// Smallest [`FileOptions::memory`]: below, fjall flushes tiny tables all the time.
pub const MIN_MEMORY: usize = 4 << 20;
/// How often retention looks for updates to drop.
const RETENTION_PERIOD: Duration = Duration::from_millis(250);
/// Most updates one retention pass deletes, so a pass stays short.
const RETENTION_BATCH: usize = 10_000;
/// How often, at most, the record follows the head: each write costs two fsyncs, kept off the
/// publish path. Updates acknowledged since the last write are the window a start cannot check.
const RECORD_PERIOD: Duration = Duration::from_secs(1);
const HEAD_KEY: &[u8] = b"head";

/// Settings of the file backend.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// How much history is kept.
    pub retention: Retention,
    /// Open even if the store recovered less than its record says was acknowledged: warn, serve
    /// what is left, and rewrite the record. Without it such a store is refused with
    /// [`StoreError::Damaged`].
    pub accept_loss: bool,
    /// Bytes of memory the store may use for caches and write buffers, shared out by
    /// [`MemoryPlan`] (at least [`MIN_MEMORY`]).
    pub memory: usize,
}

impl Default for FileOptions {
    fn default() -> FileOptions {
        FileOptions {
            retention: Retention::default(),
            accept_loss: false,
            memory: DEFAULT_MEMORY,
        }
    }
}

/// How [`FileOptions::memory`] is shared out, a quarter each: the tail cache (newest updates,
/// decoded), the read cache (older updates read back for catch-up, decoded), fjall's block cache
/// (raw blocks read from its tables), and fjall's memtables (writes not yet flushed to a table:
/// three quarters of that for the `updates` keyspace, one for `ids`). A memtable being flushed
/// is held until its table is written, so for a moment the write part may be twice its share;
/// fjall's journal is on disk and not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The newest updates, decoded.
    pub tail_bytes: usize,
    /// Older updates read back for catch-up, decoded, shared by their readers.
    pub read_cache_bytes: usize,
    /// fjall's cache of blocks read from its tables.
    pub block_cache_bytes: u64,
    /// fjall's memtable of the `updates` keyspace.
    pub updates_memtable_bytes: u64,
    /// fjall's memtable of the `ids` keyspace.
    pub ids_memtable_bytes: u64,
}

impl MemoryPlan {
    /// The plan for `memory` bytes (at least [`MIN_MEMORY`]).
    pub fn new(memory: usize) -> MemoryPlan {
        let quarter = memory.max(MIN_MEMORY) / 4;
        MemoryPlan {
            tail_bytes: quarter,
            read_cache_bytes: quarter,
            block_cache_bytes: quarter as u64,
            updates_memtable_bytes: (quarter / 4 * 3) as u64,
            ids_memtable_bytes: (quarter / 4) as u64,
        }
    }
}

/// The open fjall database and its keyspaces.
struct Store {
    db: Database,
    updates: Keyspace,
    ids: Keyspace,
    meta: Keyspace,
    /// Topic -> its retained update (`RetainedRecord`), kept apart from history's retention.
    retained: Keyspace,
}

/// A retained update as the `retained` keyspace holds it: the update, where it was in
/// history, and when it was accepted.
#[derive(serde::Serialize, serde::Deserialize)]
struct RetainedRecord {
    position: u64,
    #[serde(flatten)]
    stored: Stored,
}

/// The `meta` keyspace holds one small key: its memtable never needs more.
const META_MEMTABLE: u64 = 1 << 20;

impl Store {
    fn open(path: &Path, plan: MemoryPlan) -> Result<Store, fjall::Error> {
        let db = Database::builder(path)
            .worker_threads(1)
            .cache_size(plan.block_cache_bytes)
            .open()?;
        let memtable = |bytes| move || KeyspaceCreateOptions::default().max_memtable_size(bytes);
        let updates = db.keyspace("updates", memtable(plan.updates_memtable_bytes))?;
        let ids = db.keyspace("ids", memtable(plan.ids_memtable_bytes))?;
        let meta = db.keyspace("meta", memtable(META_MEMTABLE))?;
        let retained = db.keyspace("retained", memtable(4 * META_MEMTABLE))?;
        Ok(Store {
            db,
            updates,
            ids,
            meta,
            retained,
        })
    }

    /// The retained updates kept here, within `limits` (what they no longer allow is
    /// deleted). A record that cannot be read is dropped with a warning: it is a latest value,
    /// which the next retained publish to its topic replaces.
    fn load_retained(&self, limits: RetainedLimits) -> Result<Retained, StoreError> {
        let mut retained = Retained::new(limits);
        let mut unreadable = Vec::new();
        for kv in self.retained.iter() {
            let (key, value) = kv.into_inner().map_err(unavailable)?;
            let topic = String::from_utf8(key.to_vec());
            let record = serde_json::from_slice::<RetainedRecord>(&value);
            match (topic, record) {
                (Ok(topic), Ok(record)) => {
                    match record.stored.update.into_update(record.position) {
                        Ok(update) => retained.restore(topic, Arc::new(update), record.stored.time),
                        Err(err) => {
                            tracing::warn!(%err, "dropping a retained update that cannot be sent");
                            unreadable.push(key.to_vec());
                        }
                    }
                }
                _ => {
                    tracing::warn!("dropping an unreadable retained update");
                    unreadable.push(key.to_vec());
                }
            }
        }
        let dropped = retained.enforce(now_ms());
        for key in unreadable
            .into_iter()
            .chain(dropped.into_iter().map(String::into_bytes))
        {
            self.retained.remove(key).map_err(unavailable)?;
        }
        Ok(retained)
    }

    /// The highest position ever given.
    fn head(&self) -> Result<u64, StoreError> {
        let meta = self.meta.get(HEAD_KEY).map_err(unavailable)?;
        let from_meta = meta.map_or(Ok(0), |v| decode_position(&v))?;
        let last = match self.updates.last_key_value() {
            Some(kv) => decode_position(&kv.key().map_err(unavailable)?)?,
            None => 0,
        };
        Ok(from_meta.max(last))
    }

    /// What the store holds, for the check against the record: no scan, only the ends and
    /// fjall's approximate count.
    fn found(&self) -> Result<Found, StoreError> {
        let last = match self.updates.last_key_value() {
            Some(kv) => Some(decode_position(&kv.key().map_err(unavailable)?)?),
            None => None,
        };
        Ok(Found {
            head: self.head()?,
            range: self.first_position()?.zip(last),
            approximate_len: self.updates.approximate_len() as u64,
            approximate_ids: self.ids.approximate_len() as u64,
        })
    }

    /// The bytes of every update stored: one pass over the keyspace, made only when retention
    /// by bytes needs it.
    fn stored_bytes(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for kv in self.updates.iter() {
            total += u64::from(kv.size().map_err(unavailable)?);
        }
        Ok(total)
    }

    /// The position of the earliest update kept with this id.
    ///
    /// The id index has one entry per update kept, so that its size vouches for it at start
    /// (`record.rs`). The earliest update with an id is indexed under the id itself; one with
    /// the same id stored while another is indexed goes under [`later_key`], which sorts by
    /// position after the id. So the id's own key, when there is one, is the earliest; when
    /// retention took it, the first later key is.
    fn earliest_position(&self, id: &str) -> Result<Option<u64>, StoreError> {
        if let Some(position) = self.ids.get(id).map_err(unavailable)? {
            return decode_position(&position).map(Some);
        }
        match self.ids.prefix(later_key(id, None)).next() {
            Some(kv) => {
                let (_, position) = kv.into_inner().map_err(unavailable)?;
                decode_position(&position).map(Some)
            }
            None => Ok(None),
        }
    }

    fn first_position(&self) -> Result<Option<u64>, StoreError> {
        match self.updates.first_key_value() {
            Some(kv) => Ok(Some(decode_position(&kv.key().map_err(unavailable)?)?)),
            None => Ok(None),
        }
    }

    fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Arc<Update>>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .updates
            .range(after.saturating_add(1).to_be_bytes()..)
            .take(limit)
        {
            let (key, value) = kv.into_inner().map_err(unavailable)?;
            let position = decode_position(&key)?;
            let stored: Stored = serde_json::from_slice(&value)
                .map_err(|e| StoreError::failed(format!("corrupt update at {position}"), e))?;
            out.push(Arc::new(stored.update.into_update(position)?));
        }
        Ok(out)
    }
}

/// The index key of an update whose id was indexed already: the id, 0xFF (which UTF-8 never
/// has, so no other id's keys start the same) and the position; without a position, the prefix
/// of them all.
fn later_key(id: &str, position: Option<u64>) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 9);
    key.extend_from_slice(id.as_bytes());
    key.push(0xFF);
    if let Some(position) = position {
        key.extend_from_slice(&position.to_be_bytes());
    }
    key
}

/// An update as written to disk.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    update: NewUpdate,
    /// When it was accepted, in milliseconds since the epoch (for retention by age).
    time: u64,
}

struct Request {
    update: NewUpdate,
    reply: oneshot::Sender<Result<Arc<Update>, StoreError>>,
}

/// State shared by the handle, the writer and the retention thread.
struct Shared {
    path: PathBuf,
    options: FileOptions,
    plan: MemoryPlan,
    /// `None` while the database is being reopened after a failure.
    store: RwLock<Option<Arc<Store>>>,
    tail: Mutex<Window>,
    read_cache: Mutex<ReadCache>,
    /// The oldest position kept (one past the head when history is empty), followed by
    /// retention: reading it from the store would step over the tombstones of every update
    /// retention deleted since the last compaction.
    oldest: AtomicU64,
    /// The bytes of the updates stored, as written (kept only with a retention by bytes).
    bytes: AtomicU64,
    ready: AtomicBool,
    /// The retained updates, as the `retained` keyspace holds them (read at start, then kept
    /// by the writer).
    retained: Mutex<Retained>,
    /// Test hook: makes the writer fail its commits as a broken disk would.
    fail_writes: AtomicBool,
    record: Mutex<RecordKeeper>,
}

/// The record beside the store and when it was last written.
struct RecordKeeper {
    path: PathBuf,
    written: Record,
    at: Instant,
    failed: bool,
}

/// A durable history in a directory. Its `Debug` shows the directory.
pub struct FileHistory {
    shared: Arc<Shared>,
    requests: std_mpsc::Sender<Request>,
    feed: Mutex<Option<Feed>>,
}

fn unavailable(err: impl Into<super::Cause>) -> StoreError {
    StoreError::failed("", err)
}

fn decode_position(bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::unavailable(format!("corrupt position key {bytes:?}")))?;
    Ok(u64::from_be_bytes(array))
}

impl Shared {
    fn read_blocking(&self, after: u64, limit: usize) -> Result<Vec<Arc<Update>>, StoreError> {
        {
            let tail = lock(&self.tail);
            if tail.covers(after) {
                return Ok(tail.read_after(after, limit));
            }
        }
        // What another reader brought in lately, then the rest from disk, kept for the next.
        let mut out = Vec::with_capacity(limit.min(1024));
        lock(&self.read_cache).run_after(after, limit, &mut out);
        if out.len() < limit {
            let read = self
                .store()?
                .read_after(after + out.len() as u64, limit - out.len())?;
            let mut cache = lock(&self.read_cache);
            out.extend(read.into_iter().map(|update| cache.share(update)));
        }
        Ok(out)
    }

    fn resolve_blocking(&self, id: &str) -> Result<Start, StoreError> {
        let store = self.store()?;
        if id == EARLIEST {
            return Ok(Start::After(self.oldest.load(Ordering::Acquire) - 1));
        }
        // The index on disk, not the tail's: with a repeated id, the tail may hold only a
        // later one, and ids resolve to the earliest.
        let Some(position) = store.earliest_position(id)? else {
            return Ok(Start::Unknown);
        };
        // The id index is trimmed with the updates, but a pass may be halfway: check.
        let retained = store
            .updates
            .contains_key(position.to_be_bytes())
            .map_err(unavailable)?;
        Ok(if retained {
            Start::After(position)
        } else {
            Start::Unknown
        })
    }

    fn store(&self) -> Result<Arc<Store>, StoreError> {
        self.store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| unavailable("history store is reopening after a write failure"))
    }

    /// Drops the current database and opens it again.
    fn reopen(&self) -> Result<Arc<Store>, StoreError> {
        let old = self.store.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut old) = old {
            // Readers hold the store only for the length of one read: wait for them, so the
            // database's lock file is released before it is opened again.
            for _ in 0..1000 {
                match Arc::try_unwrap(old) {
                    Ok(store) => {
                        drop(store);
                        break;
                    }
                    Err(still_shared) => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        // fjall's background workers release the lock file shortly after the drop.
        let mut attempt = 0;
        let store = loop {
            match Store::open(&self.path, self.plan) {
                Ok(store) => break Arc::new(store),
                Err(fjall::Error::Locked) if attempt < 100 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(err) => return Err(unavailable(err)),
            }
        };
        *self.store.write().unwrap_or_else(|e| e.into_inner()) = Some(store.clone());
        Ok(store)
    }

    /// Brings the record up to date with the head, at most every [`RECORD_PERIOD`] unless
    /// `force`; when retention wants to drop the updates below `drop_below`, first makes the
    /// record stop vouching for them. Returns the position below which retention may drop.
    fn keep_record(&self, drop_below: u64, force: bool) -> u64 {
        let mut keeper = lock(&self.record);
        // The tail's head moves only after the batch was synced: the record is never ahead
        // of the disk.
        let head = lock(&self.tail).head.max(keeper.written.head);
        let wanted = Record {
            head,
            intact_from: keeper.written.intact_from.max(drop_below),
        };
        let waited = keeper.at.elapsed() >= RECORD_PERIOD;
        let due = if force {
            true
        } else if keeper.failed && !waited {
            false // retry a failing disk once per period, not on every pass
        } else {
            wanted.intact_from > keeper.written.intact_from || waited
        };
        if due && wanted != keeper.written {
            keeper.at = Instant::now();
            match wanted.write(&keeper.path) {
                Ok(()) => {
                    keeper.written = wanted;
                    keeper.failed = false;
                }
                Err(err) => {
                    keeper.failed = true;
                    tracing::warn!(
                        %err,
                        record = %keeper.path.display(),
                        "cannot update the history record; retention waits for it"
                    );
                }
            }
        }
        keeper.written.intact_from
    }
}

impl std::fmt::Debug for FileHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHistory")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl FileHistory {
    /// Opens (or creates) the history in `path`, and its record beside it
    /// ([`FileHistory::record_path`]). Fails with [`StoreError::Damaged`] if it holds less than
    /// the record says was acknowledged, unless `options.accept_loss`.
    pub fn open(path: impl AsRef<Path>, options: FileOptions) -> Result<FileHistory, StoreError> {
        let path = path.as_ref().to_path_buf();
        let record_path = FileHistory::record_path(&path)?;
        let damage = |finding| {
            StoreError::Damaged(Box::new(Damage {
                store: path.clone(),
                record: record_path.clone(),
                finding,
            }))
        };
        let recorded = match Record::read(&record_path) {
            Ok(recorded) => recorded,
            Err(err) if options.accept_loss => {
                tracing::warn!(
                    "{}; accepted: starting without it",
                    damage(Finding::RecordUnreadable(err))
                );
                None
            }
            Err(err) => return Err(damage(Finding::RecordUnreadable(err))),
        };
        let existed = path
            .try_exists()
            .map_err(|e| unavailable(format!("cannot look for {}: {e}", path.display())))?;
        // Checked before the directory is made again, so that a refused start leaves it as found.
        let directory_missing = recorded
            .filter(|r| !existed && r.head > 0)
            .map(|r| Finding::DirectoryMissing { head: r.head });
        if let Some(finding) = &directory_missing
            && !options.accept_loss
        {
            return Err(damage(finding.clone()));
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", path.display())))?;
        let plan = MemoryPlan::new(options.memory);
        let store = Store::open(&path, plan).map_err(|e| match e {
            fjall::Error::Locked => unavailable(format!(
                "another process (another herald serve?) is using the history store in {}: stop \
                 it, or give this hub a store of its own with --store file:OTHER_PATH",
                path.display()
            )),
            e => unavailable(format!("cannot open history in {}: {e}", path.display())),
        })?;
        let found = store.found()?;
        let checked = match directory_missing {
            Some(finding) => Err(finding),
            None => record::check(recorded, &found),
        };
        let record = match checked {
            Ok(record) => record,
            Err(finding) if options.accept_loss => {
                // New positions continue after the recorded head: an id index entry that
                // outlived its update must not come to point at another update.
                let head = recorded.map_or(0, |r| r.head).max(found.head);
                let filled = fill_lost(&store, head)?;
                tracing::warn!(
                    "{}; the loss was accepted: serving what is left, {filled} lost positions \
                     are now empty placeholders, new positions continue after {head}",
                    damage(finding)
                );
                // Whole again: every position from the oldest kept one to the head is there.
                Record {
                    head,
                    intact_from: store.first_position()?.unwrap_or(head + 1),
                }
            }
            Err(finding) => return Err(damage(finding)),
        };
        if recorded != Some(record) {
            record.write(&record_path).map_err(|e| {
                unavailable(format!(
                    "cannot write the history record {} (the directory holding the store \
                     directory must be writable): {e}",
                    record_path.display()
                ))
            })?;
        }
        let mut tail = Window {
            head: store.head()?,
            ..Window::default()
        };
        let oldest = store.first_position()?.unwrap_or(tail.head + 1);
        let cached = store.read_after(tail.head.saturating_sub(TAIL_CACHE as u64), TAIL_CACHE)?;
        for update in cached {
            tail.push(update, TAIL_CACHE, plan.tail_bytes);
        }
        let bytes = match options.retention.max_bytes {
            Some(_) => store.stored_bytes()?,
            None => 0,
        };
        let retained = store.load_retained(options.retention.retained)?;
        let shared = Arc::new(Shared {
            path,
            options,
            plan,
            store: RwLock::new(Some(Arc::new(store))),
            tail: Mutex::new(tail),
            read_cache: Mutex::new(ReadCache::new(plan.read_cache_bytes)),
            oldest: AtomicU64::new(oldest),
            bytes: AtomicU64::new(bytes),
            ready: AtomicBool::new(true),
            retained: Mutex::new(retained),
            fail_writes: AtomicBool::new(false),
            record: Mutex::new(RecordKeeper {
                path: record_path,
                written: record,
                at: Instant::now(),
                failed: false,
            }),
        });
        let (requests, inbox) = std_mpsc::channel();
        let (feed_tx, feed_rx) = Feed::channel(lock(&shared.tail).head);
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("herald-history-writer".into())
            .spawn(move || write_loop(&writer, &inbox, &feed_tx))
            .map_err(unavailable)?;
        let retention = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("herald-history-retention".into())
            .spawn(move || {
                // Ends when the history is dropped.
                while let Some(shared) = retention.upgrade() {
                    if let Err(err) = retain(&shared) {
                        tracing::warn!(%err, "history retention pass failed");
                    }
                    shared.keep_record(0, false);
                    drop(shared);
                    std::thread::sleep(RETENTION_PERIOD);
                }
            })
            .map_err(unavailable)?;
        Ok(FileHistory {
            shared,
            requests,
            feed: Mutex::new(Some(feed_rx)),
        })
    }

    /// Where the record of the store in `path` is kept: `PATH.head`, beside the directory, so
    /// that it outlives the directory. Whoever deletes a store on purpose deletes this too.
    pub fn record_path(path: impl AsRef<Path>) -> Result<PathBuf, StoreError> {
        let path = path.as_ref();
        record::path_beside(path).map_err(|e| {
            unavailable(format!(
                "cannot place the record of the history store {}: {e}",
                path.display()
            ))
        })
    }

    /// Test hook: while set, writes fail as on a broken disk (publishes get `503`).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_write_failure(&self, fail: bool) {
        self.shared.fail_writes.store(fail, Ordering::SeqCst);
    }
}

/// Runs a blocking store operation off the async runtime's worker threads.
fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> BoxFuture<'static, Result<T, StoreError>> {
    async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| unavailable(format!("history task failed: {e}")))?
    }
    .boxed()
}

impl History for FileHistory {
    fn append(&self, update: NewUpdate) -> BoxFuture<'_, Result<Arc<Update>, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(Request { update, reply });
        async move {
            sent.map_err(|_| unavailable("history writer stopped"))?;
            answer
                .await
                .map_err(|_| unavailable("history writer stopped"))?
        }
        .boxed()
    }

    fn append_all(
        &self,
        updates: Vec<NewUpdate>,
    ) -> BoxFuture<'_, Vec<Result<Arc<Update>, StoreError>>> {
        // Every request is queued before the first answer is awaited: the writer takes them
        // in this order, and as many as are queued into one commit.
        let answers: Vec<_> = updates.into_iter().map(|u| self.append(u)).collect();
        futures_util::future::join_all(answers).boxed()
    }

    fn retained(&self) -> Option<BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>>> {
        let snapshot = lock(&self.shared.retained).snapshot(now_ms());
        Some(futures_util::future::ready(Ok(snapshot)).boxed())
    }

    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>> {
        {
            let tail = lock(&self.shared.tail);
            if tail.covers(after) {
                let updates = tail.read_after(after, limit);
                return futures_util::future::ready(Ok(updates)).boxed();
            }
        }
        let shared = self.shared.clone();
        blocking(move || shared.read_blocking(after, limit))
    }

    fn resolve(&self, last_event_id: &str) -> BoxFuture<'_, Result<Start, StoreError>> {
        let shared = self.shared.clone();
        let id = last_event_id.to_owned();
        blocking(move || shared.resolve_blocking(&id))
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let tail = lock(&self.shared.tail);
        // The tail cache always holds the newest update, if history holds any.
        let id = tail.updates.back().map(|u| u.id().to_owned());
        futures_util::future::ready(Ok(id)).boxed()
    }

    fn take_feed(&self) -> Option<Feed> {
        lock(&self.feed).take()
    }

    fn span(&self) -> Option<Span> {
        let newest = lock(&self.shared.tail).head;
        let oldest = self.shared.oldest.load(Ordering::Acquire);
        Some(Span {
            oldest: (oldest <= newest).then_some(oldest),
            newest,
        })
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }
}

impl Drop for FileHistory {
    fn drop(&mut self) {
        // A clean shutdown: the record then holds the exact head, so the next start checks
        // everything that was acknowledged.
        self.shared.keep_record(0, true);
    }
}

fn write_loop(
    shared: &Shared,
    inbox: &std_mpsc::Receiver<Request>,
    feed: &mpsc::UnboundedSender<Arc<Update>>,
) {
    while let Ok(first) = inbox.recv() {
        let mut requests = vec![first];
        while requests.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }
        match write_batch(shared, &requests) {
            Ok(accepted) => {
                shared.ready.store(true, Ordering::Release);
                let mut tail = lock(&shared.tail);
                let mut retained = lock(&shared.retained);
                let mut dropped = Vec::new();
                let time = now_ms();
                for (request, outcome) in requests.into_iter().zip(accepted) {
                    let outcome = outcome.map(|written| match written {
                        Written::New(update) => {
                            tail.push(update.clone(), TAIL_CACHE, shared.plan.tail_bytes);
                            // Before the answer: a subscription registered after it finds it.
                            dropped.extend(retained.offer(&update, time));
                            // Gone only when the hub is shutting down.
                            let _ = feed.send(update.clone());
                            update
                        }
                        Written::Retry(update) => update,
                    });
                    let _ = request.reply.send(outcome);
                }
                // Topics whose retained update the bounds dropped (and no later one replaced).
                dropped.retain(|topic| !retained.contains(topic));
                drop((tail, retained));
                if !dropped.is_empty()
                    && let Ok(store) = shared.store()
                {
                    for topic in dropped {
                        if let Err(err) = store.retained.remove(topic.as_bytes()) {
                            tracing::warn!(%err, "cannot delete a dropped retained update");
                        }
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, "history write failed; publishes get 503 until it works");
                shared.ready.store(false, Ordering::Release);
                // Every publisher of the batch gets the same cause.
                let err = Arc::new(err);
                for request in requests {
                    let _ = request.reply.send(Err(unavailable(err.clone())));
                }
            }
        }
    }
}

/// What became of one request of a batch.
enum Written {
    /// Stored now.
    New(Arc<Update>),
    /// The same as the update history has for its id, stored before: nothing was stored.
    Retry(Arc<Update>),
}

/// The earliest update `store` holds with this id, for the check of a retry.
fn earliest_with_id(
    shared: &Shared,
    store: &Store,
    id: &str,
) -> Result<Option<Arc<Update>>, StoreError> {
    let Some(position) = store.earliest_position(id)? else {
        return Ok(None);
    };
    if let Some(update) = lock(&shared.tail).at(position) {
        return Ok(Some(update.clone()));
    }
    // Older than the tail (or the index entry of an update retention just removed).
    Ok(store
        .read_after(position - 1, 1)?
        .into_iter()
        .find(|update| update.position == position))
}

/// Writes one group of updates durably. Returns, per request, the stored update (or the one
/// it repeats) or why that request alone was refused; `Err` if nothing could be written.
fn write_batch(
    shared: &Shared,
    requests: &[Request],
) -> Result<Vec<Result<Written, StoreError>>, StoreError> {
    // After a failure, start from a freshly opened database.
    let store = if shared.ready.load(Ordering::Acquire) {
        shared.store()?
    } else {
        shared.reopen()?
    };
    let head = store.head()?;
    let time = now_ms();
    let mut batch = store.db.batch().durability(Some(PersistMode::SyncAll));
    // The earliest update with each id this batch met: from the store, or from the batch.
    let mut earliest: HashMap<&str, Option<Arc<Update>>> = HashMap::new();
    let mut next = head;
    let mut written = 0u64;
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        let update = &request.update;
        let known = match earliest.entry(update.id.as_str()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(earliest_with_id(shared, &store, &update.id)?),
        };
        if let Some(known) = known
            && known.fields == *update
        {
            outcomes.push(Ok(Written::Retry(known.clone())));
            continue;
        }
        let first_with_id = known.is_none();
        let stored = Stored {
            update: update.clone(),
            time,
        };
        let encoded = match update.clone().into_update(next + 1) {
            Ok(encoded) => encoded,
            Err(err) => {
                outcomes.push(Err(err.into()));
                continue;
            }
        };
        next += 1;
        let json = serde_json::to_vec(&stored).map_err(unavailable)?;
        written += json.len() as u64;
        if update.retain {
            // In the same commit as the update: a retained value is never newer or older
            // than what history acknowledged.
            let record = serde_json::to_vec(&RetainedRecord {
                position: next,
                stored,
            })
            .map_err(unavailable)?;
            for topic in &update.topics {
                batch.insert(&store.retained, topic.as_bytes(), record.clone());
            }
        }
        batch.insert(&store.updates, next.to_be_bytes(), json);
        let encoded = Arc::new(encoded);
        if first_with_id {
            batch.insert(&store.ids, update.id.as_bytes(), next.to_be_bytes());
            earliest.insert(update.id.as_str(), Some(encoded.clone()));
        } else {
            batch.insert(
                &store.ids,
                later_key(&update.id, Some(next)),
                next.to_be_bytes(),
            );
        }
        outcomes.push(Ok(Written::New(encoded)));
    }
    if next == head {
        return Ok(outcomes); // nothing to write
    }
    batch.insert(&store.meta, HEAD_KEY, next.to_be_bytes());
    if shared.fail_writes.load(Ordering::SeqCst) {
        return Err(unavailable("injected write failure"));
    }
    batch.commit().map_err(unavailable)?;
    shared.bytes.fetch_add(written, Ordering::AcqRel);
    Ok(outcomes)
}

/// After an accepted loss: makes the store whole up to `head`. Every position missing between
/// the oldest update kept and `head` gets a placeholder that no subscriber receives (no topic),
/// because positions in history must stay dense: a subscriber resuming across a gap would be
/// closed as owed what is gone, again at every reconnection. Then `head` is stored, so new
/// positions continue after it. Returns how many placeholders were written. This scans what is
/// kept, once, when an operator accepted a loss; an interrupted fill is redone by the next start.
fn fill_lost(store: &Store, head: u64) -> Result<u64, StoreError> {
    let time = now_ms();
    let mut batch = store.db.batch();
    let mut pending = 0;
    let mut filled = 0;
    if let Some(first) = store.first_position()? {
        let mut expected = first;
        for kv in store.updates.iter() {
            let position = decode_position(&kv.key().map_err(unavailable)?)?;
            pending += placeholders(store, &mut batch, expected..position, time)?;
            expected = position + 1;
            // Bounded batches: the gap may be as long as the history.
            if pending >= RETENTION_BATCH {
                std::mem::replace(&mut batch, store.db.batch())
                    .commit()
                    .map_err(unavailable)?;
                filled += pending;
                pending = 0;
            }
        }
        pending += placeholders(store, &mut batch, expected..head + 1, time)?;
    }
    batch.insert(&store.meta, HEAD_KEY, head.to_be_bytes());
    batch.commit().map_err(unavailable)?;
    store
        .db
        .persist(PersistMode::SyncAll)
        .map_err(unavailable)?;
    Ok((filled + pending) as u64)
}

/// Adds a placeholder at each of `positions` to `batch`; how many.
fn placeholders(
    store: &Store,
    batch: &mut fjall::OwnedWriteBatch,
    positions: std::ops::Range<u64>,
    time: u64,
) -> Result<usize, StoreError> {
    let mut count = 0;
    for position in positions {
        let placeholder = NewUpdate::placeholder(format!("herald:lost:{position}"));
        // Indexed like any update, so that a client resuming from one resumes right after it.
        batch.insert(
            &store.ids,
            placeholder.id.as_bytes(),
            position.to_be_bytes(),
        );
        let stored = Stored {
            update: placeholder,
            time,
        };
        let json = serde_json::to_vec(&stored).map_err(unavailable)?;
        batch.insert(&store.updates, position.to_be_bytes(), json);
        count += 1;
    }
    Ok(count)
}

/// One retention pass: drops the oldest updates beyond the count limit, the bytes limit or the
/// age limit (the newest update stays, whatever its size).
fn retain(shared: &Shared) -> Result<(), StoreError> {
    let Ok(store) = shared.store() else {
        return Ok(()); // reopening; the next pass will do it
    };
    let head = lock(&shared.tail).head;
    let keep_from_count = head.saturating_sub(shared.options.retention.max_updates as u64) + 1;
    let oldest_time = shared
        .options
        .retention
        .max_age
        .map(|age| now_ms().saturating_sub(age.as_millis() as u64));
    let mut excess_bytes = shared.options.retention.max_bytes.map_or(0, |max| {
        shared.bytes.load(Ordering::Acquire).saturating_sub(max)
    });
    let mut doomed = Vec::new();
    for kv in store.updates.iter().take(RETENTION_BATCH) {
        let (key, value) = kv.into_inner().map_err(unavailable)?;
        let position = decode_position(&key)?;
        let stored: Stored = serde_json::from_slice(&value)
            .map_err(|e| StoreError::failed(format!("corrupt update at {position}"), e))?;
        let too_many = position < keep_from_count;
        let too_big = excess_bytes > 0 && position < head;
        let too_old = oldest_time.is_some_and(|t| stored.time < t);
        if !too_many && !too_big && !too_old {
            break;
        }
        let size = value.len() as u64;
        excess_bytes = excess_bytes.saturating_sub(size);
        doomed.push((position, key, stored.update.id, size));
    }
    // The record stops vouching for these before they go, so that a start after a crash does
    // not take them for lost; if it cannot be written, they stay.
    let drop_below = doomed.last().map_or(0, |(position, ..)| position + 1);
    let allowed = shared.keep_record(drop_below, false);
    let mut batch = store.db.batch();
    let mut dropped = 0usize;
    let mut dropped_bytes = 0;
    let mut last_dropped = 0;
    for (position, key, id, size) in doomed {
        if position >= allowed {
            break;
        }
        batch.remove(&store.updates, key);
        // Indexed under its id if it was the earliest with it, else under a later key.
        if store
            .ids
            .get(id.as_bytes())
            .map_err(unavailable)?
            .as_deref()
            == Some(&position.to_be_bytes()[..])
        {
            batch.remove(&store.ids, id.as_bytes());
        } else {
            batch.remove(&store.ids, later_key(&id, Some(position)));
        }
        dropped += 1;
        dropped_bytes += size;
        last_dropped = position;
    }
    if dropped == 0 {
        return Ok(());
    }
    // Deletions need no sync of their own: if they are lost in a crash, the next pass redoes them.
    batch.commit().map_err(unavailable)?;
    shared.bytes.fetch_sub(dropped_bytes, Ordering::AcqRel);
    let mut tail = lock(&shared.tail);
    while tail
        .updates
        .front()
        .is_some_and(|u| u.position <= last_dropped)
    {
        tail.pop_oldest();
    }
    drop(tail);
    shared.oldest.fetch_max(last_dropped + 1, Ordering::AcqRel);
    lock(&shared.read_cache).drop_through(last_dropped);
    tracing::debug!(dropped, up_to = last_dropped, "history retention");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_updates: usize) -> FileOptions {
        FileOptions {
            retention: Retention {
                max_updates,
                ..Retention::default()
            },
            accept_loss: false,
            ..FileOptions::default()
        }
    }

    fn update(id: &str) -> NewUpdate {
        let mut u = NewUpdate::new(vec!["t".into()], format!("data of {id}"));
        u.id = id.into();
        u
    }

    fn ids(v: &[Arc<Update>]) -> Vec<String> {
        v.iter().map(|u| u.id().to_owned()).collect()
    }

    /// A fresh, absent path for one test's store, in a temporary directory of its own that is
    /// removed with everything in it (the store and the record beside it) when this is dropped.
    struct TestDir {
        path: PathBuf,
        _parent: tempfile::TempDir,
    }

    impl std::ops::Deref for TestDir {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.path
        }
    }

    impl AsRef<std::path::Path> for TestDir {
        fn as_ref(&self) -> &std::path::Path {
            &self.path
        }
    }

    fn tempdir(name: &str) -> TestDir {
        let parent = tempfile::Builder::new()
            .prefix("herald-file-")
            .tempdir()
            .expect("a temporary directory");
        TestDir {
            path: parent.path().join(name),
            _parent: parent,
        }
    }

    /// Drops the history and waits until its threads have let go of the database.
    fn close(h: FileHistory) {
        drop(h);
        std::thread::sleep(Duration::from_millis(400));
    }

    fn damage(result: Result<FileHistory, StoreError>) -> String {
        match result {
            Err(StoreError::Damaged(damage)) => damage.to_string(),
            Err(err) => panic!("another error: {err}"),
            Ok(_) => panic!("a damaged store opened"),
        }
    }

    #[test]
    fn memory_is_shared_out_and_reaches_fjall() {
        let plan = MemoryPlan::new(64 << 20);
        assert_eq!(plan.tail_bytes, 16 << 20);
        assert_eq!(plan.read_cache_bytes, 16 << 20);
        assert_eq!(plan.block_cache_bytes, 16 << 20);
        assert_eq!(
            plan.updates_memtable_bytes + plan.ids_memtable_bytes,
            16 << 20
        );
        assert_eq!(MemoryPlan::new(0), MemoryPlan::new(MIN_MEMORY));

        let dir = tempdir("plan");
        let store = Store::open(&dir, MemoryPlan::new(8 << 20)).unwrap();
        assert_eq!(store.db.cache_capacity(), 2 << 20);
        drop(store);
        std::thread::sleep(Duration::from_millis(400));
    }

    /// Subscribers catching up from older than the tail cache share what one of them read: the
    /// same `Arc`s, not a copy each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_up_reads_from_disk_are_shared_between_readers() {
        let dir = tempdir("shared-reads");
        let small = FileOptions {
            memory: MIN_MEMORY, // a 1 MiB tail cache: 15 updates of 64 KiB
            ..options(1000)
        };
        let h = FileHistory::open(&dir, small).unwrap();
        for i in 1..=40 {
            let mut u = NewUpdate::new(vec!["t".into()], "x".repeat(64 << 10));
            u.id = format!("big{i}");
            h.append(u).await.unwrap();
        }
        assert!(
            !lock(&h.shared.tail).covers(0),
            "the tail cache holds them all"
        );

        // Six of them (about 128 KiB each, data and event) fit the 1 MiB read cache.
        let first = h.read_after(0, 6).await.unwrap();
        let second = h.read_after(0, 6).await.unwrap();
        assert_eq!(
            ids(&first),
            (1..=6).map(|i| format!("big{i}")).collect::<Vec<_>>()
        );
        assert!(first.iter().zip(&second).all(|(a, b)| Arc::ptr_eq(a, b)));
        // Partly cached: the cached run, then the disk, as one ordered batch.
        let longer = h.read_after(4, 4).await.unwrap();
        assert_eq!(
            ids(&longer),
            (5..=8).map(|i| format!("big{i}")).collect::<Vec<_>>()
        );
        assert!(Arc::ptr_eq(&longer[0], &first[4]));
        // Bounded: a quarter of the memory, however much is read.
        for after in (0..40).step_by(8) {
            h.read_after(after, 8).await.unwrap();
        }
        assert!(lock(&h.shared.read_cache).bytes() <= MIN_MEMORY / 4);
        close(h);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_read_resolve_and_reopen() {
        let dir = tempdir("reopen");
        {
            let h = FileHistory::open(&dir, options(100)).unwrap();
            let mut feed = h.take_feed().unwrap();
            for i in 1..=5 {
                let u = h.append(update(&format!("u{i}"))).await.unwrap();
                assert_eq!(u.position, i);
                assert_eq!(feed.updates.recv().await.unwrap().position, i);
            }
            // A retry is the update stored before; nothing new is fed.
            assert_eq!(h.append(update("u3")).await.unwrap().position, 3);
            assert!(feed.updates.try_recv().is_err());
            assert_eq!(h.resolve("u2").await.unwrap(), Start::After(2));
            assert_eq!(ids(&h.read_after(3, 10).await.unwrap()), ["u4", "u5"]);
        }
        // The writer and retention threads hold the database until they notice the drop.
        std::thread::sleep(Duration::from_millis(400));
        let h = FileHistory::open(&dir, options(100)).unwrap();
        assert_eq!(
            h.resolve("u2").await.unwrap(),
            Start::After(2),
            "ids survive"
        );
        assert_eq!(
            ids(&h.read_after(0, 10).await.unwrap()),
            ["u1", "u2", "u3", "u4", "u5"]
        );
        assert_eq!(h.last_id().await.unwrap().as_deref(), Some("u5"));
        let next = h.append(update("u6")).await.unwrap();
        assert_eq!(next.position, 6, "positions continue after a restart");
        assert_eq!(
            h.append(update("u1")).await.unwrap().position,
            1,
            "a retry, recognised after a restart"
        );
        // The same id with other fields is a new update; the id resolves to the earliest,
        // also after the next restart.
        let mut changed = update("u1");
        changed.data = "changed".into();
        assert_eq!(h.append(changed).await.unwrap().position, 7);
        assert_eq!(h.resolve("u1").await.unwrap(), Start::After(1));
        drop(h);
        std::thread::sleep(Duration::from_millis(400));
        let h = FileHistory::open(&dir, options(100)).unwrap();
        assert_eq!(h.resolve("u1").await.unwrap(), Start::After(1));
        assert_eq!(ids(&h.read_after(5, 10).await.unwrap()), ["u6", "u1"]);
    }

    /// Updates of one group commit that repeat an id: a retry of one written in the same
    /// batch is that one; a changed one is stored, and the index keeps the first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_ids_in_one_batch() {
        let dir = tempdir("batch-ids");
        let h = FileHistory::open(&dir, options(100)).unwrap();
        let mut changed = update("x");
        changed.data = "changed".into();
        let (a, b, c) = tokio::join!(
            h.append(update("x")),
            h.append(update("x")),
            h.append(changed)
        );
        let mut positions = [a, b, c].map(|u| u.unwrap().position);
        positions.sort();
        assert!(
            positions == [1, 1, 2] || positions == [1, 2, 2],
            "one of the two same updates is a retry: {positions:?}"
        );
        assert_eq!(h.read_after(0, 10).await.unwrap().len(), 2);
        assert_eq!(h.resolve("x").await.unwrap(), Start::After(1));
        close(h);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_beyond_the_tail_cache_come_from_disk() {
        let dir = tempdir("disk");
        let h = FileHistory::open(&dir, options(100_000)).unwrap();
        let n = TAIL_CACHE as u64 + 50;
        let appends: Vec<_> = (1..=n)
            .map(|i| h.append(update(&format!("d{i}"))))
            .collect();
        for result in futures_util::future::join_all(appends).await {
            result.unwrap();
        }
        let first = h.read_after(0, 3).await.unwrap();
        assert_eq!(ids(&first), ["d1", "d2", "d3"]);
        assert_eq!(&first[0].encoded[..], b"id: d1\ndata: data of d1\n\n");
        assert_eq!(h.resolve("d1").await.unwrap(), Start::After(1));
        assert_eq!(h.resolve(EARLIEST).await.unwrap(), Start::After(0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_failure_refuses_then_recovers() {
        let dir = tempdir("fail");
        let h = FileHistory::open(&dir, options(100)).unwrap();
        let mut feed = h.take_feed().unwrap();
        h.append(update("ok1")).await.unwrap();
        feed.updates.recv().await.unwrap();
        h.set_write_failure(true);
        assert!(matches!(
            h.append(update("lost")).await,
            Err(StoreError::Unavailable { .. })
        ));
        assert!(!h.is_ready());
        assert!(
            feed.updates.try_recv().is_err(),
            "nothing refused reaches subscribers"
        );
        h.set_write_failure(false);
        let next = h.append(update("ok2")).await.unwrap();
        assert_eq!(next.position, 2, "the refused update took no position");
        assert!(h.is_ready());
        assert_eq!(h.resolve("lost").await.unwrap(), Start::Unknown);
        assert_eq!(ids(&h.read_after(0, 10).await.unwrap()), ["ok1", "ok2"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_by_count_and_by_age() {
        let dir = tempdir("retain");
        let h = FileHistory::open(&dir, options(3)).unwrap();
        let empty = Span {
            oldest: None,
            newest: 0,
        };
        assert_eq!(h.span(), Some(empty));
        for i in 1..=8 {
            h.append(update(&format!("r{i}"))).await.unwrap();
        }
        tokio::time::sleep(RETENTION_PERIOD * 3).await;
        assert_eq!(h.resolve(EARLIEST).await.unwrap(), Start::After(5));
        let kept = Span {
            oldest: Some(6),
            newest: 8,
        };
        assert_eq!(h.span(), Some(kept));
        assert_eq!(kept.len(), 3);
        assert_eq!(ids(&h.read_after(0, 10).await.unwrap()), ["r6", "r7", "r8"]);
        assert_eq!(h.resolve("r2").await.unwrap(), Start::Unknown);

        let dir = tempdir("age");
        let h = FileHistory::open(
            &dir,
            FileOptions {
                retention: Retention {
                    max_updates: 1000,
                    max_age: Some(Duration::from_millis(300)),
                    max_bytes: None,
                    ..Retention::default()
                },
                accept_loss: false,
                ..FileOptions::default()
            },
        )
        .unwrap();
        h.append(update("old")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        h.append(update("new")).await.unwrap();
        assert_eq!(ids(&h.read_after(0, 10).await.unwrap()), ["new"]);
        assert_eq!(h.resolve("old").await.unwrap(), Start::Unknown);
        assert_eq!(h.append(update("newer")).await.unwrap().position, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_by_bytes_also_after_a_restart() {
        let sized = |id: &str, len: usize| {
            let mut u = NewUpdate::new(vec!["t".into()], "x".repeat(len));
            u.id = id.into();
            u
        };
        let by_bytes = |max_bytes| FileOptions {
            retention: Retention {
                max_updates: 1000,
                max_bytes: Some(max_bytes),
                max_age: None,
                ..Retention::default()
            },
            ..FileOptions::default()
        };
        let dir = tempdir("bytes");
        // Each update is stored as a little over 1,000 bytes.
        let h = FileHistory::open(&dir, by_bytes(3_500)).unwrap();
        for i in 1..=6 {
            h.append(sized(&format!("b{i}"), 1000)).await.unwrap();
        }
        tokio::time::sleep(RETENTION_PERIOD * 3).await;
        assert_eq!(ids(&h.read_after(0, 10).await.unwrap()), ["b4", "b5", "b6"]);
        assert_eq!(h.resolve("b3").await.unwrap(), Start::Unknown);
        close(h);
        // A smaller limit at the next start counts what the store holds already.
        let h = FileHistory::open(&dir, by_bytes(2_500)).unwrap();
        tokio::time::sleep(RETENTION_PERIOD * 3).await;
        assert_eq!(ids(&h.read_after(0, 10).await.unwrap()), ["b5", "b6"]);
        // An update over the limit stays, alone.
        h.append(sized("huge", 10_000)).await.unwrap();
        tokio::time::sleep(RETENTION_PERIOD * 3).await;
        assert_eq!(ids(&h.read_after(0, 10).await.unwrap()), ["huge"]);
        assert_eq!(h.resolve(EARLIEST).await.unwrap(), Start::After(6));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn less_than_recorded_is_refused_until_accepted_and_positions_stay_above() {
        let dir = tempdir("loss");
        let h = FileHistory::open(&dir, options(100)).unwrap();
        for i in 1..=5 {
            h.append(update(&format!("l{i}"))).await.unwrap();
        }
        close(h);
        let record = FileHistory::record_path(&dir).unwrap();
        let text = std::fs::read_to_string(&record).unwrap();
        assert!(
            text.contains("\nhead 5\n"),
            "a clean shutdown records the head: {text}"
        );
        // As if positions 6..=9 had been acknowledged and then lost with the journal's end.
        Record {
            head: 9,
            intact_from: 1,
        }
        .write(&record)
        .unwrap();
        let refused = damage(FileHistory::open(&dir, options(100)));
        assert!(
            refused.contains("recovered positions 1..=5")
                && refused.contains("positions 6..=9 are missing"),
            "{refused}"
        );
        let accepting = FileOptions {
            accept_loss: true,
            ..options(100)
        };
        let h = FileHistory::open(&dir, accepting).unwrap();
        assert_eq!(
            ids(&h.read_after(0, 10).await.unwrap()),
            ["l1", "l2", "l3", "l4", "l5"]
                .into_iter()
                .map(String::from)
                .chain((6..=9).map(|p| format!("herald:lost:{p}")))
                .collect::<Vec<_>>(),
            "what is left, then placeholders that keep positions dense"
        );
        let next = h.append(update("after")).await.unwrap();
        assert_eq!(
            next.position, 10,
            "positions never go back below the recorded head"
        );
        assert_eq!(h.resolve("l5").await.unwrap(), Start::After(5));
        close(h);
        let h = FileHistory::open(&dir, options(100)).expect("accepted once, fine after");
        assert_eq!(h.append(update("later")).await.unwrap().position, 11);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_directory_is_refused_unless_the_record_goes_too() {
        let dir = tempdir("gone");
        let h = FileHistory::open(&dir, options(100)).unwrap();
        h.append(update("g1")).await.unwrap();
        close(h);
        std::fs::remove_dir_all(&dir).unwrap();
        let refused = damage(FileHistory::open(&dir, options(100)));
        assert!(refused.contains("is missing"), "{refused}");
        assert!(
            !dir.exists(),
            "a refused start leaves things as it found them"
        );
        std::fs::remove_file(FileHistory::record_path(&dir).unwrap()).unwrap();
        let h = FileHistory::open(&dir, options(100)).expect("a deliberate reset");
        assert_eq!(h.append(update("g1")).await.unwrap().position, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_is_not_loss() {
        let dir = tempdir("kept");
        let h = FileHistory::open(&dir, options(3)).unwrap();
        for i in 1..=8 {
            h.append(update(&format!("k{i}"))).await.unwrap();
        }
        tokio::time::sleep(RETENTION_PERIOD * 3).await;
        assert_eq!(h.resolve(EARLIEST).await.unwrap(), Start::After(5));
        close(h);
        let h = FileHistory::open(&dir, options(3)).expect("dropped by retention, not lost");
        assert_eq!(ids(&h.read_after(0, 10).await.unwrap()), ["k6", "k7", "k8"]);
        close(h);
        // The record vouches for 6..=8 only: losing one of them is loss.
        let text = std::fs::read_to_string(FileHistory::record_path(&dir).unwrap()).unwrap();
        assert!(text.contains("\nintact-from 6\n"), "{text}");

        let dir = tempdir("aged");
        let by_age = FileOptions {
            retention: Retention {
                max_updates: 1000,
                max_age: Some(Duration::from_millis(200)),
                max_bytes: None,
                ..Retention::default()
            },
            accept_loss: false,
            ..FileOptions::default()
        };
        let h = FileHistory::open(&dir, by_age.clone()).unwrap();
        h.append(update("a1")).await.unwrap();
        h.append(update("a2")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(h.read_after(0, 10).await.unwrap().is_empty());
        close(h);
        let h = FileHistory::open(&dir, by_age).expect("all aged out, nothing lost");
        assert_eq!(h.append(update("a3")).await.unwrap().position, 3);
    }
}
