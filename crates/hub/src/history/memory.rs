//! The `memory` backend: a bounded ring of the newest updates. Fast, and gone on restart; for
//! tests and for deployments that accept losing history on a restart.

use super::retained::{Retained, now_ms};
use super::{EARLIEST, Feed, History, Retention, Start, StoreError, Window};
use crate::update::{NewUpdate, Update};
use futures_util::future::{BoxFuture, FutureExt, ready};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Most bytes the ring holds when [`Retention::max_bytes`] does not say, whatever
/// `--history-size` says: large updates shorten history rather than exhaust memory.
pub const MAX_BYTES: usize = 512 << 20;

/// A bounded in-memory history.
pub struct MemoryHistory {
    capacity: usize,
    max_bytes: usize,
    state: Mutex<State>,
}

struct State {
    window: Window,
    retained: Retained,
    feed_tx: mpsc::UnboundedSender<Arc<Update>>,
    feed_rx: Option<Feed>,
}

impl std::fmt::Debug for MemoryHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHistory")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl MemoryHistory {
    /// Keeps the newest `capacity` updates (at least one), at most [`MAX_BYTES`].
    pub fn new(capacity: usize) -> Self {
        MemoryHistory::with_retention(Retention {
            max_updates: capacity,
            ..Retention::default()
        })
    }

    /// Keeps what `retention` says by count and by bytes (at least the newest update); its
    /// `max_age` is not applied.
    pub fn with_retention(retention: Retention) -> Self {
        let (feed_tx, feed_rx) = Feed::channel(0);
        let max_bytes = retention
            .max_bytes
            .map_or(MAX_BYTES, |b| usize::try_from(b).unwrap_or(usize::MAX));
        MemoryHistory {
            capacity: retention.max_updates.max(1),
            max_bytes,
            state: Mutex::new(State {
                window: Window::default(),
                retained: Retained::new(retention.retained),
                feed_tx,
                feed_rx: Some(feed_rx),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    fn append_now(&self, update: NewUpdate) -> Result<Arc<Update>, StoreError> {
        let mut state = self.lock();
        let window = &mut state.window;
        if let Some(earliest) = window.earliest_with_id(&update.id)
            && earliest.fields == update
        {
            return Ok(earliest.clone()); // a retry
        }
        let position = window.head + 1;
        let update = Arc::new(update.into_update(position)?);
        window.push(update.clone(), self.capacity, self.max_bytes);
        state.retained.offer(&update, now_ms());
        // Sent under the lock, so the feed is in position order. The dispatcher lives as long
        // as the hub; if it is gone the hub is shutting down and nobody is left to tell.
        let _ = state.feed_tx.send(update.clone());
        Ok(update)
    }
}

impl History for MemoryHistory {
    fn append(&self, update: NewUpdate) -> BoxFuture<'_, Result<Arc<Update>, StoreError>> {
        ready(self.append_now(update)).boxed()
    }

    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>> {
        ready(Ok(self.lock().window.read_after(after, limit))).boxed()
    }

    fn retained(&self) -> Option<BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>>> {
        Some(ready(Ok(self.lock().retained.snapshot(now_ms()))).boxed())
    }

    fn resolve(&self, last_event_id: &str) -> BoxFuture<'_, Result<Start, StoreError>> {
        let state = self.lock();
        let window = &state.window;
        let start = if last_event_id == EARLIEST {
            Start::After(window.first_position() - 1)
        } else {
            match window.earliest_position(last_event_id) {
                Some(position) => Start::After(position),
                None => Start::Unknown,
            }
        };
        ready(Ok(start)).boxed()
    }

    fn last_id(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let id = self.lock().window.updates.back().map(|u| u.id().to_owned());
        ready(Ok(id)).boxed()
    }

    fn span(&self) -> Option<super::Span> {
        Some(self.lock().window.span())
    }

    fn take_feed(&self) -> Option<Feed> {
        self.lock().feed_rx.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: &str) -> NewUpdate {
        let mut u = NewUpdate::new(vec!["t".into()], "d");
        u.id = id.into();
        u
    }

    #[tokio::test]
    async fn positions_ring_and_lookup() {
        let h = MemoryHistory::new(3);
        let mut feed = h.take_feed().unwrap();
        assert!(h.take_feed().is_none());
        for i in 1..=5 {
            let u = h.append(update(&format!("id{i}"))).await.unwrap();
            assert_eq!(u.position, i);
            assert_eq!(feed.updates.recv().await.unwrap().position, i);
        }
        assert_eq!(h.resolve("id1").await.unwrap(), Start::Unknown, "evicted");
        assert_eq!(h.resolve("id3").await.unwrap(), Start::After(3));
        assert_eq!(h.resolve(EARLIEST).await.unwrap(), Start::After(2));
        let ids = |v: Vec<Arc<Update>>| v.iter().map(|u| u.id().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(h.read_after(3, 10).await.unwrap()), ["id4", "id5"]);
        assert_eq!(ids(h.read_after(0, 2).await.unwrap()), ["id3", "id4"]);
        assert!(h.read_after(5, 10).await.unwrap().is_empty());
        assert_eq!(h.last_id().await.unwrap().as_deref(), Some("id5"));
    }

    /// A repeated id is stored again when the update differs, and resolves to the earliest;
    /// the same update again (a retry) is the one stored, not a second; once the earliest
    /// leaves history the id resolves to the next one kept.
    #[tokio::test]
    async fn duplicate_ids_resolve_to_the_earliest_and_retries_store_nothing() {
        let h = MemoryHistory::new(3);
        let mut feed = h.take_feed().unwrap();
        let first = h.append(update("a")).await.unwrap();
        let retry = h.append(update("a")).await.unwrap();
        assert!(Arc::ptr_eq(&first, &retry), "the stored one");
        let mut other = update("a");
        other.data = "changed".into();
        let second = h.append(other).await.unwrap();
        assert_eq!((first.position, second.position), (1, 2));
        assert_eq!(h.resolve("a").await.unwrap(), Start::After(1));
        let fed: Vec<u64> = [feed.updates.recv().await, feed.updates.recv().await]
            .map(|u| u.unwrap().position)
            .into();
        assert_eq!(fed, [1, 2], "the retry was not fed");
        assert!(feed.updates.try_recv().is_err());
        h.append(update("b")).await.unwrap();
        assert_eq!(h.resolve("a").await.unwrap(), Start::After(1));
        h.append(update("c")).await.unwrap();
        assert_eq!(h.resolve("a").await.unwrap(), Start::After(2));
        h.append(update("d")).await.unwrap();
        assert_eq!(h.resolve("a").await.unwrap(), Start::Unknown);
    }

    #[tokio::test]
    async fn retention_by_bytes_keeps_the_newest_that_fit() {
        let sized = |id: &str, len: usize| {
            let mut u = NewUpdate::new(vec!["t".into()], "x".repeat(len));
            u.id = id.into();
            u
        };
        let first = MemoryHistory::new(10)
            .append(sized("probe", 1000))
            .await
            .unwrap();
        let one = super::super::footprint(&first) as u64;
        let h = MemoryHistory::with_retention(Retention {
            max_updates: 100,
            max_bytes: Some(3 * one),
            max_age: None,
            ..Retention::default()
        });
        for i in 1..=5 {
            h.append(sized(&format!("u{i}"), 1000)).await.unwrap();
        }
        assert_eq!(h.resolve("u2").await.unwrap(), Start::Unknown, "dropped");
        assert_eq!(h.resolve(EARLIEST).await.unwrap(), Start::After(2));
        assert_eq!(h.read_after(0, 10).await.unwrap().len(), 3);
        // An update larger than the limit is kept alone.
        h.append(sized("big", 10_000)).await.unwrap();
        let kept = h.read_after(0, 10).await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].id(), "big");
    }

    #[tokio::test]
    async fn empty_history_earliest_is_from_the_start() {
        let h = MemoryHistory::new(10);
        assert_eq!(h.resolve(EARLIEST).await.unwrap(), Start::After(0));
        assert_eq!(h.last_id().await.unwrap(), None);
    }
}
