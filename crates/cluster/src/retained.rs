//! Retained (latest-value) updates on a cluster engine: the engine keeps them durably (Redis:
//! a hash written by the append script, in the same atomic step as the update), and each node
//! keeps a copy in memory, loaded at start and kept up to date by its own appends and by its
//! tail, so that a subscription's snapshot costs no read of every value.
//!
//! The copy may lag the engine by what the tail has not read yet, including updates another
//! node acknowledged before this node's subscription registered, which its live stream will
//! not carry. So a snapshot first waits until the tail has read up to the engine's head as of
//! the snapshot (a moment, normally), and fails with a `503` rather than serve a stale copy.

use herald_hub::history::StoreError;
use herald_hub::history::retained::{Retained, RetainedLimits, now_ms};
use herald_hub::update::Update;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How long a snapshot waits for the tail to reach the engine's head.
const CATCH_UP: Duration = Duration::from_secs(2);

/// One node's copy of the retained updates, and how far its tail has read.
#[derive(Debug)]
pub(crate) struct Mirror {
    set: Mutex<Retained>,
    fed: watch::Sender<u64>,
}

impl Mirror {
    pub(crate) fn new(limits: RetainedLimits, fed: u64) -> Mirror {
        Mirror {
            set: Mutex::new(Retained::new(limits)),
            fed: watch::Sender::new(fed),
        }
    }

    fn set(&self) -> std::sync::MutexGuard<'_, Retained> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts back a retained update read from the engine at start.
    pub(crate) fn restore(&self, topic: String, update: Arc<Update>, time_ms: u64) {
        self.set().restore(topic, update, time_ms);
    }

    /// Keeps `update` if it was published to be retained (from this node's append, or from
    /// the tail: whichever comes first; the second changes nothing).
    pub(crate) fn offer(&self, update: &Arc<Update>) {
        if update.fields.retain {
            self.set().offer(update, now_ms());
        }
    }

    /// The tail has read up to `position`.
    pub(crate) fn fed(&self, position: u64) {
        self.fed.send_if_modified(|fed| {
            let newer = position > *fed;
            *fed = (*fed).max(position);
            newer
        });
    }

    /// The retained updates once the tail has read up to `head` (the engine's newest position
    /// when the snapshot was asked for).
    pub(crate) async fn snapshot(&self, head: u64) -> Result<Vec<Arc<Update>>, StoreError> {
        let mut fed = self.fed.subscribe();
        let caught_up = tokio::time::timeout(CATCH_UP, fed.wait_for(|&fed| fed >= head)).await;
        if !matches!(caught_up, Ok(Ok(_))) {
            return Err(StoreError::unavailable(format!(
                "this node has not read the cluster's updates up to {head} yet, so its \
                 retained updates may be stale"
            )));
        }
        let mut set = self.set();
        set.enforce(now_ms());
        Ok(set.snapshot(now_ms()))
    }
}
