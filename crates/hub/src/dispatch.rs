//! Dispatch: who receives which update. One task takes committed updates from the history feed,
//! in position order, and hands each to the queues of the subscribers it matches.
//!
//! The index keeps exact topics in a hash map and the rest (templates, `*`) in a short list, so
//! a publish costs the subscribers of its topics, not every subscriber. A subscriber's queue is
//! bounded; when it is full the update is not dropped silently: the subscriber is flagged as
//! lagging and woken, and it catches up from history itself (see `subscriber.rs`).
//!
//! Each subscriber shares one small [`Signals`] with the dispatcher: its queue, three flags and
//! one waker. Heartbeats and shutdown are flags set from here too (heartbeats staggered over the
//! period by one ticker task), so an idle subscriber owns no timer, no channel and no watch: it
//! is cheap in memory, and a wake-up costs one waker, not a re-registration with five sources.

use crate::auth::Grants;
use crate::history::Feed;
use crate::lock;
use crate::metrics::Metrics;
use crate::topic::SelectorSet;
use crate::update::Update;
use futures_util::task::AtomicWaker;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::Duration;

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

/// Heartbeats are spread over this many slices of the period, so that not every idle stream
/// writes its comment at the same instant.
const HEARTBEAT_SLICES: u64 = 16;

/// What the dispatcher and one subscriber share.
#[derive(Debug, Default)]
pub struct Signals {
    /// Updates dispatched to the subscriber and not yet written (bounded by the queue size).
    queue: Mutex<VecDeque<Arc<Update>>>,
    /// Set when an update could not be queued: the subscriber must catch up from history.
    pub lagged: AtomicBool,
    /// Set when the hub shuts down: the stream ends.
    pub closed: AtomicBool,
    /// Set when a heartbeat comment is due.
    pub heartbeat_due: AtomicBool,
    waker: AtomicWaker,
}

impl Signals {
    /// Queues `update` unless `capacity` updates are already waiting.
    fn push(&self, update: Arc<Update>, capacity: usize) -> bool {
        let mut queue = lock(&self.queue);
        if queue.len() >= capacity {
            return false;
        }
        queue.push_back(update);
        true
    }

    /// The oldest queued update.
    pub fn pop(&self) -> Option<Arc<Update>> {
        let mut queue = lock(&self.queue);
        let update = queue.pop_front();
        // A burst may have grown the queue; an idle subscriber should not keep that memory.
        if queue.is_empty() && queue.capacity() > 64 {
            queue.shrink_to(8);
        }
        update
    }

    /// Registers the task to wake when anything here changes.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    fn wake(&self) {
        self.waker.wake();
    }
}

struct Entry {
    filter: Arc<Filter>,
    signals: Arc<Signals>,
    /// Subscribed through the exact-topic index only: an indexed, public update needs no
    /// further matching.
    exact_only: bool,
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
    /// The hub is shutting down: new subscriptions start closed.
    closed: bool,
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

    /// Subscriptions registered before the first update arrives are live after `position`
    /// (the feed's start), not after 0. Called before the dispatcher runs.
    pub fn starts_after(&self, position: u64) {
        let mut reg = lock(&self.registry);
        reg.dispatched = reg.dispatched.max(position);
    }

    /// Registers a subscription. Updates dispatched from now on reach the returned queue.
    pub fn register(&self, filter: Arc<Filter>) -> Registration {
        let signals = Arc::new(Signals::default());
        let mut reg = lock(&self.registry);
        if reg.closed {
            signals.closed.store(true, Ordering::Release);
        }
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
                signals: signals.clone(),
                exact_only: !other,
            },
        );
        Registration {
            key,
            live_after: reg.dispatched,
            registry: self.registry.clone(),
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
        if update.position > reg.dispatched + 1 {
            // The feed skipped positions (a node that was cut off from its engine while
            // retention dropped what it had not read yet): every subscriber may be owed one of
            // them, so all catch up from history, which closes those whose updates are gone,
            // rather than letting them go on past a gap.
            tracing::warn!(
                from = reg.dispatched + 1,
                to = update.position - 1,
                "the feed skipped positions; subscribers catch up from history"
            );
            for entry in reg.entries.values() {
                entry.signals.lagged.store(true, Ordering::Release);
                entry.signals.wake();
            }
        }
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
            // An exact-topic subscriber found through the index matches a public update by
            // construction; only templates, `*` and private updates need the full check.
            if (!entry.exact_only || update.private()) && !entry.filter.accepts(&update) {
                continue;
            }
            if entry.signals.push(update.clone(), self.queue_size) {
                delivered += 1;
            } else {
                self.metrics.lagged.inc();
                entry.signals.lagged.store(true, Ordering::Release);
            }
            entry.signals.wake();
        }
        self.metrics.queued.inc_by(delivered);
    }

    /// Ends every subscription, now and registered later (the hub is shutting down).
    pub fn close_all(&self) {
        let mut reg = lock(&self.registry);
        reg.closed = true;
        for entry in reg.entries.values() {
            entry.signals.closed.store(true, Ordering::Release);
            entry.signals.wake();
        }
    }

    /// Sends every subscriber a heartbeat each `period`, staggered over the period, until the
    /// dispatcher is dropped.
    pub async fn heartbeats(self, period: Duration) {
        let registry: Weak<Mutex<Registry>> = Arc::downgrade(&self.registry);
        drop(self);
        let mut tick = tokio::time::interval(period / HEARTBEAT_SLICES as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        for slice in (0..HEARTBEAT_SLICES).cycle() {
            tick.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let reg = lock(&registry);
            for (key, entry) in &reg.entries {
                if key % HEARTBEAT_SLICES == slice {
                    entry.signals.heartbeat_due.store(true, Ordering::Release);
                    entry.signals.wake();
                }
            }
        }
    }

    /// Runs the dispatch loop until the feed ends (the history backend was dropped). Every
    /// update is shown to `observe` first (the subscriptions view).
    pub async fn run(self, mut feed: Feed, observe: impl Fn(&Arc<Update>)) {
        while let Some(update) = feed.updates.recv().await {
            observe(&update);
            self.dispatch(update);
        }
    }
}
