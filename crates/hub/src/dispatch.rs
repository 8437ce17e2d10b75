//! Dispatch: who receives which update. One task takes committed updates from the history feed,
//! in position order, and hands each to the queues of the subscribers it matches.
//!
//! The index keeps exact topics in a hash map and the rest (templates, `*`) in a short list, so
//! a publish costs the subscribers of its topics, not every subscriber. A subscriber's queue is
//! bounded; when it is full the update is not dropped silently: the subscriber is flagged as
//! lagging and woken, and it catches up from history itself (see `subscriber.rs`).

use crate::auth::Grants;
use crate::history::Feed;
use crate::lock;
use crate::metrics::Metrics;
use crate::topic::SelectorSet;
use crate::update::Update;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc};

/// What a subscription receives: updates on one of its topics, and private ones only where its
/// token's `subscribe` claim matches one of the update's topics.
#[derive(Debug, Clone)]
pub struct Filter {
    pub topics: SelectorSet,
    /// The bearer's grants; `None` for an anonymous subscriber (public updates only).
    pub grants: Option<Grants>,
}

impl Filter {
    pub fn accepts(&self, update: &Update) -> bool {
        let topics = || update.topics().iter().map(String::as_str);
        self.topics.matches_any(topics())
            && (!update.private()
                || self
                    .grants
                    .as_ref()
                    .is_some_and(|g| g.subscribe.matches_any(topics())))
    }
}

/// The signals shared between the dispatcher and one subscriber.
#[derive(Debug, Default)]
pub struct Signals {
    /// Set when an update could not be queued: the subscriber must catch up from history.
    pub lagged: AtomicBool,
    /// Wakes the subscriber when `lagged` is set while its queue is empty.
    pub wake: Notify,
}

struct Entry {
    filter: Arc<Filter>,
    tx: mpsc::Sender<Arc<Update>>,
    signals: Arc<Signals>,
}

#[derive(Default)]
struct Registry {
    next_key: u64,
    entries: HashMap<u64, Entry>,
    by_topic: HashMap<String, Vec<u64>>,
    /// Subscriptions with a template or `*` selector: checked against every update.
    others: Vec<u64>,
    /// Position of the newest update handed out.
    dispatched: u64,
}

/// The hub's dispatcher. Cloning gives another handle to the same one.
#[derive(Clone)]
pub struct Dispatcher {
    registry: Arc<Mutex<Registry>>,
    queue_size: usize,
    metrics: Arc<Metrics>,
}

/// A live subscription; dropping it unregisters.
pub struct Registration {
    key: u64,
    registry: Arc<Mutex<Registry>>,
    pub rx: mpsc::Receiver<Arc<Update>>,
    pub signals: Arc<Signals>,
    /// Every update after this position reaches `rx` (or sets `signals.lagged`).
    pub live_after: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry).remove(self.key);
    }
}

impl Registry {
    fn remove(&mut self, key: u64) {
        let Some(entry) = self.entries.remove(&key) else {
            return;
        };
        for selector in entry.filter.topics.iter() {
            match selector.exact() {
                Some(topic) => {
                    if let Some(keys) = self.by_topic.get_mut(topic) {
                        keys.retain(|&k| k != key);
                        if keys.is_empty() {
                            self.by_topic.remove(topic);
                        }
                    }
                }
                None => self.others.retain(|&k| k != key),
            }
        }
    }
}

impl Dispatcher {
    /// A dispatcher whose subscribers each queue up to `queue_size` updates.
    pub fn new(queue_size: usize, metrics: Arc<Metrics>) -> Self {
        Dispatcher {
            registry: Arc::default(),
            queue_size: queue_size.max(1),
            metrics,
        }
    }

    /// Registers a subscription. Updates dispatched from now on reach the returned queue.
    pub fn register(&self, filter: Arc<Filter>) -> Registration {
        let (tx, rx) = mpsc::channel(self.queue_size);
        let signals = Arc::new(Signals::default());
        let mut reg = lock(&self.registry);
        let key = reg.next_key;
        reg.next_key += 1;
        let mut other = false;
        for selector in filter.topics.iter() {
            match selector.exact() {
                Some(topic) => {
                    let keys = reg.by_topic.entry(topic.to_owned()).or_default();
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                None => other = true,
            }
        }
        if other {
            reg.others.push(key);
        }
        reg.entries.insert(
            key,
            Entry {
                filter,
                tx,
                signals: signals.clone(),
            },
        );
        Registration {
            key,
            live_after: reg.dispatched,
            registry: self.registry.clone(),
            rx,
            signals,
        }
    }

    /// Number of registered subscriptions.
    pub fn len(&self) -> usize {
        lock(&self.registry).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands one committed update to every matching subscriber.
    pub fn dispatch(&self, update: Arc<Update>) {
        let mut reg = lock(&self.registry);
        reg.dispatched = update.position;
        let mut candidates: Vec<u64> = Vec::new();
        for topic in update.topics() {
            if let Some(keys) = reg.by_topic.get(topic) {
                candidates.extend_from_slice(keys);
            }
        }
        candidates.extend_from_slice(&reg.others);
        if update.topics().len() > 1 || !reg.others.is_empty() {
            candidates.sort_unstable();
            candidates.dedup();
        }
        let mut delivered = 0u64;
        for key in candidates {
            let Some(entry) = reg.entries.get(&key) else {
                continue;
            };
            if !entry.filter.accepts(&update) {
                continue;
            }
            match entry.tx.try_send(update.clone()) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.lagged.inc();
                    entry.signals.lagged.store(true, Ordering::Release);
                    entry.signals.wake.notify_one();
                }
                // The connection is going away; its Registration's drop unregisters it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        self.metrics.queued.inc_by(delivered);
    }

    /// Runs the dispatch loop until the feed ends (the history backend was dropped).
    pub async fn run(self, mut feed: Feed) {
        while let Some(update) = feed.recv().await {
            self.dispatch(update);
        }
    }
}
