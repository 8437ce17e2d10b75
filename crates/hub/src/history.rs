//! History: where accepted updates are kept, in order, so that subscribers can resume.
//!
//! Every backend implements [`History`]. A backend gives each update a position (1, 2, 3, … in
//! commit order; 0 means "before everything") and feeds committed updates, in position order, to
//! the one dispatcher of the hub ([`History::take_feed`]). The publisher is acknowledged only when
//! `append` returns, i.e. after the backend accepted the update; the dispatcher only ever sees
//! accepted updates, so no subscriber can receive something that is then lost.

use crate::update::{NewUpdate, Update};
use futures_util::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;

pub mod file;
pub mod memory;
pub mod retained;

pub use file::{Damage, FileHistory, FileOptions};
pub use memory::MemoryHistory;
pub use retained::RetainedLimits;

/// Committed updates in position order, for the dispatcher.
#[derive(Debug)]
pub struct Feed {
    /// The feed delivers exactly the updates after this position (the newest one committed
    /// when the feed was made): a subscriber that registers before the first update arrives
    /// is live from here, not from the start of history.
    pub after: u64,
    /// The updates, as they are committed.
    pub updates: mpsc::UnboundedReceiver<Arc<Update>>,
}

impl Feed {
    /// A feed and the sender a backend fills it with.
    pub fn channel(after: u64) -> (mpsc::UnboundedSender<Arc<Update>>, Feed) {
        let (tx, updates) = mpsc::unbounded_channel();
        (tx, Feed { after, updates })
    }
}

/// How much history a store keeps, the same for every backend: the newest `max_updates`,
/// together at most `max_bytes`, none older than `max_age`. The oldest updates go first.
/// (Built once by `herald serve` from `--history-size`, `--history-max-bytes` and
/// `--history-max-age`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Updates kept; the oldest beyond are dropped.
    pub max_updates: usize,
    /// Bytes of updates kept, each counted as the size the backend stores it in (its data,
    /// fields and a small overhead); the newest update is kept whatever its size. `None`: no
    /// limit but the count (the memory store still stops at [`memory::MAX_BYTES`]).
    pub max_bytes: Option<u64>,
    /// Updates older than this are dropped; `None` keeps them until another limit drops them.
    /// (The memory store does not apply it: `herald serve` refuses it there.)
    pub max_age: Option<std::time::Duration>,
    /// The bounds of the retained (latest-value) updates, kept apart from history.
    pub retained: RetainedLimits,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_updates: 10_000,
            max_bytes: None,
            max_age: None,
            retained: RetainedLimits::default(),
        }
    }
}

/// The positions a history holds: every one from `oldest` to `newest` (positions are dense).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    /// The oldest position kept; `None` when history is empty.
    pub oldest: Option<u64>,
    /// The newest position ever given (0 before the first update).
    pub newest: u64,
}

impl Span {
    /// Updates held.
    pub fn len(&self) -> u64 {
        self.oldest.map_or(0, |oldest| self.newest + 1 - oldest)
    }

    /// Whether it holds no update.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The error a store failed with, kept as the source of [`StoreError::Unavailable`].
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `context: cause`, or whichever of the two there is.
fn joined(
    context: &str,
    cause: Option<&(dyn std::error::Error + Send + Sync + 'static)>,
) -> String {
    match cause {
        None => context.to_owned(),
        Some(cause) if context.is_empty() => cause.to_string(),
        Some(cause) => format!("{context}: {cause}"),
    }
}

impl StoreError {
    /// [`StoreError::Unavailable`] with no cause but what `context` says.
    pub fn unavailable(context: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            context: context.into(),
            cause: None,
        }
    }

    /// [`StoreError::Unavailable`]: `context` failed because of `cause`.
    pub fn failed(context: impl Into<String>, cause: impl Into<Cause>) -> StoreError {
        StoreError::Unavailable {
            context: context.into(),
            cause: Some(cause.into()),
        }
    }
}

/// A store error: the hub answers `503` to the publisher, and nothing half-written is visible.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot serve now (I/O, a lost connection, a corrupt entry): `context` says
    /// what failed, `cause` (kept typed, as the error's source) why.
    #[error("history store unavailable: {}", joined(context, cause.as_deref()))]
    Unavailable {
        /// What failed.
        context: String,
        /// Why, if an error said.
        #[source]
        cause: Option<Cause>,
    },
    /// The update cannot be written as an event without changing its meaning (`400`).
    #[error("update cannot be encoded: {0}")]
    Invalid(#[from] herald_sse::EncodeError),
    /// At start: the store recovered less than it had acknowledged (see [`Damage`]).
    #[error(transparent)]
    Damaged(Box<Damage>),
}

/// Where a resuming subscriber starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After this position (replay everything later).
    After(u64),
    /// The id is not (or no longer) in history.
    Unknown,
}

/// A history backend.
pub trait History: Send + Sync + 'static {
    /// Stores the update and gives it the next position. Returns only once the backend has
    /// accepted it (for durable backends: once it is durable).
    ///
    /// Ids need not be unique (Mercure 1.0: "duplicate ids resolve to the earliest"). An id
    /// already in history is stored again, except when the update `resolve` finds for it (the
    /// earliest kept) has the same fields: then that one is returned and nothing is stored,
    /// so that a publisher's retry after a lost answer is idempotent.
    fn append(&self, update: NewUpdate) -> BoxFuture<'_, Result<Arc<Update>, StoreError>>;

    /// Stores `updates` in this order, each as [`History::append`] would, and answers each
    /// in the same order. Backends whose `append` takes its place when called (not when first
    /// polled) commit them together (the file store's group commit); the default appends one
    /// after the other and stops at the first error, which is then the last answer.
    fn append_all(
        &self,
        updates: Vec<NewUpdate>,
    ) -> BoxFuture<'_, Vec<Result<Arc<Update>, StoreError>>> {
        use futures_util::FutureExt as _;
        async move {
            let mut answers = Vec::with_capacity(updates.len());
            for update in updates {
                let answer = self.append(update).await;
                let failed = answer.is_err();
                answers.push(answer);
                if failed {
                    break;
                }
            }
            answers
        }
        .boxed()
    }

    /// The retained (latest-value) updates: the newest update published with `retain` of
    /// each topic, each once, in position order, as of now (every one acknowledged so far is
    /// in it). `None` where the backend does not keep them (yet).
    fn retained(&self) -> Option<BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>>> {
        None
    }

    /// Up to `limit` updates with a position greater than `after`, in position order.
    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>>;

    /// Where to resume after the update with this id (the earliest one with it that history
    /// holds, or knew of: once that one is gone, a later one with the same id may not be
    /// found), or `earliest` (everything retained).
    fn resolve(&self, last_event_id: &str) -> BoxFuture<'_, Result<Start, StoreError>>;

    /// The id of the newest update in history, if any.
    fn last_id(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// The committed updates in order, for the dispatcher; `None` after the first call.
    fn take_feed(&self) -> Option<Feed>;

    /// The positions history holds now, for the console; `None` where the backend cannot tell
    /// cheaply (the cluster engines).
    fn span(&self) -> Option<Span> {
        None
    }

    /// Whether the backend can serve now (`/readyz`).
    fn is_ready(&self) -> bool {
        true
    }
}

/// The value of `Last-Event-ID` meaning "from the oldest update kept".
pub const EARLIEST: &str = "earliest";

/// Shared by in-process backends: a position-ordered window of updates with an id index.
#[derive(Debug, Default)]
pub(crate) struct Window {
    updates: VecDeque<Arc<Update>>,
    /// The positions of the updates in the window with each id, oldest first.
    by_id: HashMap<String, Positions>,
    /// The position of the newest update ever stored (survives eviction).
    head: u64,
    /// Bytes of data and encoded SSE held, to bound memory as well as the count.
    bytes: usize,
}

/// The positions of the updates with one id, oldest first: nearly always one, which needs no
/// allocation of its own.
#[derive(Debug)]
enum Positions {
    One(u64),
    Many(VecDeque<u64>),
}

impl Positions {
    fn earliest(&self) -> u64 {
        match self {
            Positions::One(position) => *position,
            Positions::Many(positions) => positions[0],
        }
    }

    fn push(&mut self, position: u64) {
        match self {
            Positions::One(first) => *self = Positions::Many(VecDeque::from([*first, position])),
            Positions::Many(positions) => positions.push_back(position),
        }
    }

    /// Forgets the oldest, which is `position`; false when none is left.
    fn pop(&mut self, position: u64) -> bool {
        match self {
            Positions::One(first) => *first != position,
            Positions::Many(positions) => {
                if positions.front() == Some(&position) {
                    positions.pop_front();
                }
                match positions.len() {
                    0 => false,
                    1 => {
                        *self = Positions::One(positions[0]);
                        true
                    }
                    _ => true,
                }
            }
        }
    }
}

/// What an update costs a window in memory, roughly: its data and its encoded bytes.
pub(crate) fn footprint(update: &Update) -> usize {
    update.data().len() + update.encoded.len() + 128
}

impl Window {
    fn first_position(&self) -> u64 {
        self.updates.front().map_or(self.head + 1, |u| u.position)
    }

    fn span(&self) -> Span {
        Span {
            oldest: self.updates.front().map(|u| u.position),
            newest: self.head,
        }
    }

    /// Appends the newest update, keeping at most `capacity` updates and `max_bytes` (the
    /// newest update is always kept).
    fn push(&mut self, update: Arc<Update>, capacity: usize, max_bytes: usize) {
        self.head = update.position;
        self.bytes += footprint(&update);
        match self.by_id.get_mut(update.id()) {
            Some(positions) => positions.push(update.position),
            None => {
                self.by_id
                    .insert(update.id().to_owned(), Positions::One(update.position));
            }
        }
        self.updates.push_back(update);
        while self.updates.len() > capacity || (self.bytes > max_bytes && self.updates.len() > 1) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) -> Option<Arc<Update>> {
        let old = self.updates.pop_front()?;
        self.bytes -= footprint(&old);
        if let Some(positions) = self.by_id.get_mut(old.id())
            && !positions.pop(old.position)
        {
            self.by_id.remove(old.id());
        }
        Some(old)
    }

    /// The update at `position`, if the window holds it.
    fn at(&self, position: u64) -> Option<&Arc<Update>> {
        let index = position.checked_sub(self.first_position())?;
        self.updates.get(usize::try_from(index).ok()?)
    }

    /// The position of the earliest update in the window with this id.
    fn earliest_position(&self, id: &str) -> Option<u64> {
        self.by_id.get(id).map(Positions::earliest)
    }

    /// The earliest update in the window with this id.
    fn earliest_with_id(&self, id: &str) -> Option<&Arc<Update>> {
        self.at(self.earliest_position(id)?)
    }

    /// Whether everything after `after` is in this window.
    fn covers(&self, after: u64) -> bool {
        after + 1 >= self.first_position()
    }

    fn read_after(&self, after: u64, limit: usize) -> Vec<Arc<Update>> {
        let first = self.first_position();
        let skip = after.saturating_add(1).saturating_sub(first);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        self.updates
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::update::test_update as update;

    #[test]
    fn an_unavailable_store_keeps_its_cause_and_says_it() {
        let io = std::io::Error::other("disk on fire");
        let err = StoreError::failed("cannot write batch", io);
        assert_eq!(
            err.to_string(),
            "history store unavailable: cannot write batch: disk on fire"
        );
        let cause = std::error::Error::source(&err).expect("a source");
        assert!(cause.downcast_ref::<std::io::Error>().is_some(), "typed");
        assert_eq!(
            StoreError::failed("", std::io::Error::other("x")).to_string(),
            "history store unavailable: x"
        );
        let bare = StoreError::unavailable("reopening");
        assert_eq!(bare.to_string(), "history store unavailable: reopening");
        assert!(std::error::Error::source(&bare).is_none());
    }

    #[test]
    fn window_is_bounded_by_count_and_bytes() {
        let mut w = Window::default();
        for p in 1..=5 {
            w.push(update(p, 10), 3, usize::MAX);
        }
        assert_eq!(w.read_after(0, 10).len(), 3);
        assert!(w.by_id.contains_key("u3") && !w.by_id.contains_key("u2"));

        let mut w = Window::default();
        for p in 1..=5 {
            w.push(update(p, 1000), 100, 5000);
        }
        let kept: Vec<u64> = w.read_after(0, 10).iter().map(|u| u.position).collect();
        assert_eq!(
            kept,
            [4, 5],
            "two updates of about 2.2 KB each fit in 5000 bytes"
        );
        assert_eq!(w.head, 5);
        assert!(!w.covers(2) && w.covers(3));

        w.push(update(6, 10_000), 100, 5000);
        assert_eq!(
            w.read_after(0, 10).len(),
            1,
            "the newest is kept even when over budget"
        );
        while w.pop_oldest().is_some() {}
        assert_eq!(w.bytes, 0, "the byte count follows every eviction");
    }
}
