//! Dispatch: who receives which update. One task takes committed updates from the history feed,
//! in position order, and hands each to the queues of the subscribers it matches.
//!
//! Two stages, so that no subscriber's selectors can delay another's delivery:
//! - the **exact stage** (the dispatcher task) serves subscribers whose selectors are all exact
//!   topics, through a hash map from topic to subscribers: a publish costs the subscribers of
//!   its topics, never a template match. It then passes the update on;
//! - the **template stage** (its own thread, `herald-match`) serves every subscriber with a URI
//!   template or `*`. It evaluates each distinct compiled template once per update (templates
//!   are interned, and a `MatchCache` remembers each result for the update), however many
//!   subscribers share it. Matching is CPU work; on its own thread it never holds the
//!   registry lock that subscribe requests take, nor a runtime worker that serves `/healthz`.
//!   If it falls behind by more than [`STAGE_BACKLOG`] updates or [`STAGE_BACKLOG_BYTES`], the
//!   updates it has not taken are not queued for it: its subscribers are flagged as lagging
//!   and catch up from history, so its memory stays bounded and nothing is skipped.
//!
//! The exact stage sends subscriptions to the template stage on the same channel as updates,
//! under the same lock that orders updates: a subscription registered "live after position P"
//! reaches the template stage after every update up to P and before every later one.
//!
//! A subscriber's queue is bounded; when it is full the update is not dropped silently: the
//! subscriber is flagged as lagging and woken, and it catches up from history itself (see
//! `subscriber.rs`).
//!
//! Each subscriber shares one small [`Signals`] with the dispatcher (`signals.rs`: its queue,
//! three flags and one waker, and the argument for their orderings). Heartbeats (staggered over
//! the period by one ticker task) and shutdown are signalled from here too.

use crate::auth::Grants;
use crate::history::Feed;
use crate::lock;
use crate::metrics::Metrics;
use crate::signals::Capacity;
pub(crate) use crate::signals::Signals;
use crate::topic::{Selector, SelectorSet};
use crate::update::Update;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::Duration;

/// Most updates passed to the template stage and not yet taken by it.
pub(crate) const STAGE_BACKLOG: usize = 4096;
/// Most bytes of updates passed to the template stage and not yet taken by it.
pub(crate) const STAGE_BACKLOG_BYTES: usize = 64 << 20;

/// What a subscription receives: updates on one of its topics, and private ones only where its
/// token's `subscribe` claim matches one of the update's topics.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub topics: SelectorSet,
    /// The bearer's grants; `None` for an anonymous subscriber (public updates only).
    pub grants: Option<Grants>,
}

impl Filter {
    pub(crate) fn accepts(&self, update: &Update) -> bool {
        self.accepts_with(update, &mut MatchCache::default())
    }

    /// [`Filter::accepts`], with template results shared through `cache` (one per update).
    pub(crate) fn accepts_with(&self, update: &Update, cache: &mut MatchCache) -> bool {
        cache.any_matches(&self.topics, update)
            && (!update.private()
                || self
                    .grants
                    .as_ref()
                    .is_some_and(|g| cache.any_matches(&g.subscribe, update)))
    }
}

/// For one update: whether each distinct compiled template matches one of its topics, so that
/// a template shared by many subscribers (or listed in many tokens) is evaluated once.
#[derive(Default)]
pub(crate) struct MatchCache {
    /// By [`crate::topic::Template::key`]. Valid for one update, while the filters being
    /// checked keep their templates alive.
    templates: HashMap<usize, bool>,
}

impl MatchCache {
    /// Whether a selector of `set` matches one of `update`'s topics.
    fn any_matches(&mut self, set: &SelectorSet, update: &Update) -> bool {
        let topics = update.topics();
        set.iter().any(|selector| match selector {
            Selector::Any => true,
            Selector::Exact(exact) => topics.iter().any(|t| t == exact),
            Selector::Template(template) => *self
                .templates
                .entry(template.identity())
                .or_insert_with(|| topics.iter().any(|t| selector.matches(t))),
        })
    }
}

/// Heartbeats are spread over this many slices of the period, so that not every idle stream
/// writes its comment at the same instant.
const HEARTBEAT_SLICES: u64 = 16;

struct Entry {
    filter: Arc<Filter>,
    signals: Arc<Signals>,
}

/// What the exact stage tells the template stage, in order.
enum Msg {
    /// A subscription with a template or `*`, live after every update sent before it.
    Add(u64, Entry),
    Remove(u64),
    Update(Arc<Update>),
    /// Updates were not passed on (the stage fell behind, or the feed skipped positions):
    /// every subscriber of the stage catches up from history.
    Lag,
    /// Heartbeats are due for the subscribers in this slice.
    Heartbeat(u64),
    /// The hub is shutting down.
    Close,
}

/// The exact stage's registry: subscriptions whose selectors are all exact topics.
struct Registry {
    next_key: u64,
    entries: HashMap<u64, Entry>,
    by_topic: HashMap<String, Vec<u64>>,
    /// Position of the newest update handed out.
    dispatched: u64,
    /// The hub is shutting down: new subscriptions start closed.
    closed: bool,
    /// To the template stage; sent to only with this registry locked, which orders
    /// subscriptions and updates alike.
    stage: mpsc::Sender<Msg>,
    /// Subscriptions the template stage serves: while there are none, updates are not passed
    /// to it (a subscription added later is live only after what was dispatched before it).
    templated: usize,
}

/// What the stages share about the template stage's backlog.
#[derive(Default)]
struct Backlog {
    updates: AtomicUsize,
    bytes: AtomicUsize,
    /// A `Lag` is on its way and not yet handled: further updates not passed on are covered
    /// by it (the stage flags its subscribers after they were committed to history).
    lag_pending: AtomicBool,
}

/// The hub's dispatcher. Cloning gives another handle to the same one.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    registry: Arc<Mutex<Registry>>,
    /// The newest position this node acknowledged to a publisher. The feed hands it to the
    /// dispatcher a moment later; a subscription opened in between starts live after it
    /// all the same, so it never receives what was published before it was asked for.
    acknowledged: Arc<AtomicU64>,
    backlog: Arc<Backlog>,
    capacity: Capacity,
    metrics: Arc<Metrics>,
}

/// A live subscription; dropping it unregisters.
pub(crate) struct Registration {
    key: u64,
    /// Served by the template stage (it has a template or `*` selector).
    templated: bool,
    registry: Arc<Mutex<Registry>>,
    pub signals: Arc<Signals>,
    /// Every update after this position reaches the queue (or sets `signals.lagged`); those
    /// queued up to it were acknowledged before the registration and are not for it.
    pub live_after: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut reg = lock(&self.registry);
        if self.templated {
            reg.templated -= 1;
            let _ = reg.stage.send(Msg::Remove(self.key));
        } else {
            reg.remove(self.key);
        }
    }
}

impl Registry {
    fn remove(&mut self, key: u64) {
        let Some(entry) = self.entries.remove(&key) else {
            return;
        };
        for topic in entry.filter.topics.iter().filter_map(Selector::exact) {
            if let Some(keys) = self.by_topic.get_mut(topic) {
                keys.retain(|&k| k != key);
                if keys.is_empty() {
                    self.by_topic.remove(topic);
                }
            }
        }
    }
}

impl Dispatcher {
    /// A dispatcher whose subscribers each queue up to `queue_size` updates. Starts the
    /// template stage's thread, which ends when the dispatcher and its registrations are gone.
    pub(crate) fn new(queue_size: usize, queue_bytes: usize, metrics: Arc<Metrics>) -> Self {
        let capacity = Capacity {
            updates: queue_size.max(1),
            bytes: queue_bytes,
        };
        let (stage, inbox) = mpsc::channel();
        let backlog = Arc::new(Backlog::default());
        let template_stage = TemplateStage {
            entries: HashMap::new(),
            capacity,
            metrics: metrics.clone(),
            backlog: backlog.clone(),
        };
        std::thread::Builder::new()
            .name("herald-match".into())
            .spawn(move || template_stage.run(inbox))
            .expect("the template matching thread starts");
        Dispatcher {
            registry: Arc::new(Mutex::new(Registry {
                next_key: 0,
                entries: HashMap::new(),
                by_topic: HashMap::new(),
                dispatched: 0,
                closed: false,
                stage,
                templated: 0,
            })),
            acknowledged: Arc::new(AtomicU64::new(0)),
            backlog,
            capacity,
            metrics,
        }
    }

    /// Records that the update at `position` was acknowledged to its publisher: subscriptions
    /// registered from now on are live after it, even before the feed brings it.
    pub(crate) fn acknowledged(&self, position: u64) {
        self.acknowledged.fetch_max(position, Ordering::AcqRel);
    }

    /// Subscriptions registered before the first update arrives are live after `position`
    /// (the feed's start), not after 0. Called before the dispatcher runs.
    pub(crate) fn starts_after(&self, position: u64) {
        let mut reg = lock(&self.registry);
        reg.dispatched = reg.dispatched.max(position);
    }

    /// Registers a subscription. Updates dispatched from now on reach the returned queue.
    pub(crate) fn register(&self, filter: Arc<Filter>) -> Registration {
        let signals = Arc::new(Signals::default());
        let mut reg = lock(&self.registry);
        if reg.closed {
            signals.close();
        }
        let key = reg.next_key;
        reg.next_key += 1;
        let templated = filter.topics.iter().any(|s| s.exact().is_none());
        let entry = Entry {
            filter: filter.clone(),
            signals: signals.clone(),
        };
        if templated {
            // Sent under the lock: the stage sees it after every update up to `dispatched`.
            reg.templated += 1;
            let _ = reg.stage.send(Msg::Add(key, entry));
        } else {
            for topic in filter.topics.iter().filter_map(Selector::exact) {
                let keys = reg.by_topic.entry(topic.to_owned()).or_default();
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            reg.entries.insert(key, entry);
        }
        Registration {
            key,
            templated,
            live_after: reg
                .dispatched
                .max(self.acknowledged.load(Ordering::Acquire)),
            registry: self.registry.clone(),
            signals,
        }
    }

    /// Hands one committed update to every matching subscriber of the exact stage, then to the
    /// template stage.
    pub(crate) fn dispatch(&self, update: Arc<Update>) {
        let mut reg = lock(&self.registry);
        let mut lag_stage = false;
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
            flag_all(&reg.entries, Signals::mark_lagged);
            lag_stage = true;
        }
        reg.dispatched = update.position;
        let mut candidates: Vec<u64> = Vec::new();
        for topic in update.topics() {
            if let Some(keys) = reg.by_topic.get(topic) {
                candidates.extend_from_slice(keys);
            }
        }
        if update.topics().len() > 1 {
            candidates.sort_unstable();
            candidates.dedup();
        }
        let mut cache = MatchCache::default();
        let mut delivered = 0u64;
        for key in candidates {
            let Some(entry) = reg.entries.get(&key) else {
                continue;
            };
            // Found through the index, a subscriber matches a public update by construction;
            // a private one needs its grants checked.
            if update.private() && !entry.filter.accepts_with(&update, &mut cache) {
                continue;
            }
            delivered += u64::from(push(entry, &update, self.capacity, &self.metrics));
        }
        self.metrics.queued.inc_by(delivered);
        self.pass_on(&reg, update, lag_stage);
    }

    /// Passes `update` to the template stage, or, when the stage is too far behind, a `Lag`
    /// in its place; nothing while the stage serves no subscription.
    fn pass_on(&self, reg: &Registry, update: Arc<Update>, lag: bool) {
        if reg.templated == 0 {
            return;
        }
        let backlog = &self.backlog;
        let size = update.encoded.len();
        let behind = backlog.updates.load(Ordering::Acquire) >= STAGE_BACKLOG
            || backlog.bytes.load(Ordering::Acquire) + size > STAGE_BACKLOG_BYTES;
        if lag || behind {
            if !backlog.lag_pending.swap(true, Ordering::AcqRel) {
                let _ = reg.stage.send(Msg::Lag);
            }
            if behind {
                return;
            }
        }
        backlog.updates.fetch_add(1, Ordering::AcqRel);
        backlog.bytes.fetch_add(size, Ordering::AcqRel);
        let _ = reg.stage.send(Msg::Update(update));
    }

    /// Ends every subscription, now and registered later (the hub is shutting down).
    pub(crate) fn close_all(&self) {
        let mut reg = lock(&self.registry);
        reg.closed = true;
        flag_all(&reg.entries, Signals::close);
        let _ = reg.stage.send(Msg::Close);
    }

    /// Sends every subscriber a heartbeat each `period`, staggered over the period, until the
    /// dispatcher is dropped.
    pub(crate) async fn heartbeats(self, period: Duration) {
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
            heartbeat(&reg.entries, slice);
            let _ = reg.stage.send(Msg::Heartbeat(slice));
        }
    }

    /// Runs the dispatch loop until the feed ends (the history backend was dropped). Every
    /// update is shown to `observe` first (the subscriptions view).
    pub(crate) async fn run(self, mut feed: Feed, observe: impl Fn(&Arc<Update>)) {
        while let Some(update) = feed.updates.recv().await {
            observe(&update);
            self.dispatch(update);
        }
    }
}

/// Queues `update` for one subscriber, or flags it as lagging; true if queued.
fn push(entry: &Entry, update: &Arc<Update>, capacity: Capacity, metrics: &Metrics) -> bool {
    let queued = entry.signals.offer(update.clone(), capacity);
    if !queued {
        metrics.lagged.inc();
    }
    queued
}

/// Signals every subscriber in `entries` (lagged, or closed).
fn flag_all(entries: &HashMap<u64, Entry>, signal: fn(&Signals)) {
    for entry in entries.values() {
        signal(&entry.signals);
    }
}

fn heartbeat(entries: &HashMap<u64, Entry>, slice: u64) {
    for (key, entry) in entries {
        if key % HEARTBEAT_SLICES == slice {
            entry.signals.heartbeat();
        }
    }
}

/// The template stage: subscriptions with a template or `*` selector, matched on their own
/// thread.
struct TemplateStage {
    entries: HashMap<u64, Entry>,
    capacity: Capacity,
    metrics: Arc<Metrics>,
    backlog: Arc<Backlog>,
}

impl TemplateStage {
    fn run(mut self, inbox: mpsc::Receiver<Msg>) {
        let mut closed = false;
        while let Ok(msg) = inbox.recv() {
            match msg {
                Msg::Add(key, entry) => {
                    if closed {
                        entry.signals.close();
                    }
                    self.entries.insert(key, entry);
                }
                Msg::Remove(key) => {
                    self.entries.remove(&key);
                }
                Msg::Update(update) => {
                    self.backlog.updates.fetch_sub(1, Ordering::AcqRel);
                    self.backlog
                        .bytes
                        .fetch_sub(update.encoded.len(), Ordering::AcqRel);
                    self.dispatch(&update);
                }
                Msg::Lag => {
                    // Cleared first: an update not passed on after this sends another `Lag`;
                    // one not passed on before it was committed before these flags are set,
                    // so the catch-up they start reads it.
                    self.backlog.lag_pending.store(false, Ordering::Release);
                    self.metrics.lagged.inc_by(self.entries.len() as u64);
                    flag_all(&self.entries, Signals::mark_lagged);
                }
                Msg::Heartbeat(slice) => heartbeat(&self.entries, slice),
                Msg::Close => {
                    closed = true;
                    flag_all(&self.entries, Signals::close);
                }
            }
        }
    }

    fn dispatch(&self, update: &Arc<Update>) {
        let mut cache = MatchCache::default();
        let mut delivered = 0u64;
        for entry in self.entries.values() {
            if entry.filter.accepts_with(update, &mut cache) {
                delivered += u64::from(push(entry, update, self.capacity, &self.metrics));
            }
        }
        self.metrics.queued.inc_by(delivered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::NewUpdate;

    fn update(position: u64, topic: &str) -> Arc<Update> {
        let mut new = NewUpdate::new(vec![topic.into()], "x");
        new.id = format!("u{position}");
        Arc::new(new.into_update(position).unwrap())
    }

    fn filter(selectors: &[&str]) -> Arc<Filter> {
        Arc::new(Filter {
            topics: SelectorSet::parse(selectors).unwrap(),
            grants: None,
        })
    }

    /// The positions queued for `registration`, waiting for the template stage's thread to
    /// have queued `expected` of them.
    fn queued(registration: &Registration, expected: usize) -> Vec<u64> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.len() < expected && std::time::Instant::now() < deadline {
            match registration.signals.pop() {
                Some(update) => got.push(update.position),
                None => std::thread::yield_now(),
            }
        }
        got
    }

    #[test]
    fn both_stages_get_what_is_dispatched_after_registration() {
        let dispatcher = Dispatcher::new(16, usize::MAX, Arc::default());
        dispatcher.dispatch(update(1, "https://a/1"));
        let exact = dispatcher.register(filter(&["https://a/1"]));
        let template = dispatcher.register(filter(&["https://a/{id}"]));
        let mixed = dispatcher.register(filter(&["https://a/1", "*"]));
        assert_eq!(
            (exact.live_after, template.live_after, mixed.live_after),
            (1, 1, 1)
        );
        dispatcher.dispatch(update(2, "https://a/1"));
        dispatcher.dispatch(update(3, "https://a/2"));
        dispatcher.dispatch(update(4, "https://b"));
        assert_eq!(queued(&exact, 1), [2]);
        assert_eq!(queued(&template, 2), [2, 3]);
        assert_eq!(queued(&mixed, 3), [2, 3, 4], "each update once, in order");
        // A subscription registered now is live after 4: the stage, which may still be busy
        // with 2..4, must not queue those for it.
        let late = dispatcher.register(filter(&["*"]));
        assert_eq!(late.live_after, 4);
        dispatcher.dispatch(update(5, "https://b"));
        assert_eq!(queued(&late, 1), [5]);
        drop(template);
        dispatcher.dispatch(update(6, "https://a/3"));
        assert_eq!(queued(&mixed, 2), [5, 6]);
    }

    #[test]
    fn a_full_queue_flags_the_subscriber_in_either_stage() {
        let dispatcher = Dispatcher::new(1, usize::MAX, Arc::default());
        let exact = dispatcher.register(filter(&["t"]));
        let template = dispatcher.register(filter(&["{x}"]));
        dispatcher.dispatch(update(1, "t"));
        dispatcher.dispatch(update(2, "t"));
        assert!(exact.signals.is_lagged());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !template.signals.is_lagged() {
            assert!(
                std::time::Instant::now() < deadline,
                "template stage flags it"
            );
            std::thread::yield_now();
        }
        assert_eq!(queued(&template, 1), [1]);
    }

    #[test]
    fn shutdown_reaches_both_stages_and_later_subscriptions() {
        let dispatcher = Dispatcher::new(4, usize::MAX, Arc::default());
        let exact = dispatcher.register(filter(&["t"]));
        let template = dispatcher.register(filter(&["*"]));
        dispatcher.close_all();
        let late = dispatcher.register(filter(&["{x}"]));
        for registration in [&exact, &template, &late] {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !registration.signals.is_closed() {
                assert!(std::time::Instant::now() < deadline);
                std::thread::yield_now();
            }
        }
    }

    #[test]
    fn a_template_is_evaluated_once_per_update_however_many_share_it() {
        let shared = filter(&["https://a/{id}"]);
        let other = filter(&["https://a/{id}", "x"]);
        let (a, b) = (
            shared.topics.iter().next().unwrap().as_template().unwrap(),
            other.topics.iter().next().unwrap().as_template().unwrap(),
        );
        assert!(Arc::ptr_eq(a, b), "equal templates are compiled once");
        let u = update(1, "https://a/1");
        let mut cache = MatchCache::default();
        assert!(shared.accepts_with(&u, &mut cache) && other.accepts_with(&u, &mut cache));
        assert_eq!(cache.templates.len(), 1, "one evaluation, remembered");
    }
}
