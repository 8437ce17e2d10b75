//! One subscriber connection: replays history, then streams live updates from its queue, with
//! heartbeats, until the client goes away or the hub shuts down. It is a hand-written poll
//! function rather than an `async fn` with a `select!`, so that a wake-up re-registers one waker
//! (the one in its `Signals`) instead of building five futures, and an idle subscriber holds no
//! future state at all.
//!
//! Replay and catch-up are one mechanism. The subscriber remembers `last`, the newest position it
//! has accounted for (sent, or skipped because it did not match). Catching up reads history after
//! `last` until it is exhausted; afterwards, queued updates at or before `last` are skipped. The
//! subscription is registered with the dispatcher *before* the first read, so every update after
//! the read is in the queue: the hand-over from history to live has no gap and no duplicate. A
//! full queue (a slow reader) triggers the same catch-up, so nothing owed is skipped; if history
//! no longer holds what is owed, the stream ends and the client resumes with `Last-Event-ID`.

use crate::dispatch::{Filter, Registration};
use crate::history::{History, StoreError};
use crate::metrics::Metrics;
use crate::subscriptions::SubscriptionGuard;
use crate::update::Update;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Most updates read from history per step of a replay.
const REPLAY_BATCH: usize = 256;
/// Bytes a replay step aims at: the next read asks for about this much given the size of the
/// updates just read, so a history of large updates is replayed a few at a time. A backend
/// that reads from disk makes this subscriber its own copies (shared ones cost nothing), and a
/// slow reader holds its step until the socket takes it: the soak found 500 slow readers
/// resuming from old positions holding 1 MiB steps each (RSS +1.2 GB), so steps are small.
const REPLAY_BYTES: usize = 256 << 10;
/// Updates the first read of a replay asks for, before their size is known.
const FIRST_REPLAY_BATCH: u16 = 4;
/// Queued updates written together in one chunk: fewer, larger writes under load.
const COALESCE: usize = 64;
/// Bytes of queued updates written together in one chunk.
const COALESCE_BYTES: usize = 256 << 10;
/// Queued updates skipped (already sent, or superseded) before a drain yields to other tasks.
const SKIP_BUDGET: usize = 4096;

/// What draining the queue gave.
enum Drained {
    Chunk(Chunk),
    /// Nothing to write before the queue was empty (or a lag was signalled).
    Empty,
    /// [`SKIP_BUDGET`] updates skipped and none to write yet: poll again soon.
    Yield,
}
/// The comment that opens a stream and serves as heartbeat.
const COMMENT: Bytes = Bytes::from_static(b":\n");

type Read = BoxFuture<'static, Result<Vec<Arc<Update>>, StoreError>>;

/// Bytes for the response body, as the shared encoded updates they are made of: several
/// updates are written together with one vectored write, never copied into a buffer of their
/// own (a copy per subscriber is what took a hub with 500 slow readers of 1 MB updates to
/// 8.2 GB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chunk {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Chunk {
    /// The number of bytes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Chunk::One(bytes) => bytes.len(),
            Chunk::Many(parts) => parts.iter().map(Bytes::len).sum(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parts, in order.
    pub(crate) fn parts(&self) -> &[Bytes] {
        match self {
            Chunk::One(bytes) => std::slice::from_ref(bytes),
            Chunk::Many(parts) => parts,
        }
    }

    /// The parts, owned (for a transport that sends them one by one).
    pub(crate) fn into_parts(self) -> Vec<Bytes> {
        match self {
            Chunk::One(bytes) => vec![bytes],
            Chunk::Many(parts) => parts,
        }
    }

    fn push(chunk: &mut Option<Chunk>, bytes: Bytes) {
        *chunk = Some(match chunk.take() {
            None => Chunk::One(bytes),
            Some(Chunk::One(first)) => Chunk::Many(vec![first, bytes]),
            Some(Chunk::Many(mut parts)) => {
                parts.push(bytes);
                Chunk::Many(parts)
            }
        });
    }
}

/// The state of one subscriber's stream.
pub(crate) struct Subscriber {
    registration: Registration,
    filter: Arc<Filter>,
    history: Arc<dyn History>,
    metrics: Arc<Metrics>,
    /// The newest position accounted for.
    last: u64,
    catching_up: bool,
    /// Replaying from `earliest`: the first history read may start later than asked.
    from_earliest: bool,
    /// A lag was signalled while a history read was in flight: that read may have been
    /// answered before the update that did not fit was stored, so an empty answer does not
    /// end the catch-up.
    reread: bool,
    started: bool,
    /// A history read in flight while catching up.
    reading: Option<Read>,
    /// How many updates the next history read asks for (see [`REPLAY_BYTES`]).
    batch: u16,
    /// The subscriber's token expires then; the stream ends so the client must re-authorize.
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Announces the end of the subscription when the connection goes away.
    /// Boxed: only hubs with `--subscriptions` have one, and every subscriber holds the field.
    _subscription: Option<Box<SubscriptionGuard>>,
    /// Retained updates to send before anything else (a Herald extension): each at or before
    /// `last`, so none of them comes again from the queue. Sent a chunk at a time like queued
    /// updates; 8 bytes each while waiting (the updates are the retained set's, shared).
    prelude: std::collections::VecDeque<Arc<Update>>,
    /// Latest-value topics: their superseded updates are skipped when catching up.
    conflation: Option<Arc<crate::conflate::Conflation>>,
}

impl Subscriber {
    /// A subscriber that first replays history after position `replay_after` (or, with `None`,
    /// starts with what is dispatched after its registration). Heartbeats and shutdown reach it
    /// through its registration's signals.
    pub(crate) fn new(
        registration: Registration,
        filter: Arc<Filter>,
        history: Arc<dyn History>,
        metrics: Arc<Metrics>,
        replay_after: Option<u64>,
    ) -> Self {
        let expiry = filter
            .grants
            .as_ref()
            .and_then(|g| g.expires_at)
            .map(|exp| Box::pin(tokio::time::sleep(until_epoch(exp))));
        // Counted once the subscriber exists, so that its `Drop` (which uncounts it) always
        // pairs with this, whatever happens in between.
        metrics.subscribers.inc();
        Subscriber {
            expiry,
            last: replay_after.unwrap_or(registration.live_after),
            catching_up: replay_after.is_some(),
            reread: false,
            from_earliest: false,
            registration,
            filter,
            history,
            metrics,
            started: false,
            reading: None,
            batch: FIRST_REPLAY_BATCH,
            _subscription: None,
            prelude: std::collections::VecDeque::new(),
            conflation: None,
        }
    }

    /// Replays from the oldest update kept (`Last-Event-ID: earliest`).
    pub(crate) fn replaying_from_earliest(mut self) -> Self {
        self.from_earliest = true;
        self
    }

    /// Sends `retained` first: updates at or before the position the subscription went live
    /// after, in position order (the caller filters them).
    pub(crate) fn with_prelude(mut self, retained: Vec<Arc<Update>>) -> Self {
        debug_assert!(retained.iter().all(|u| u.position <= self.last));
        self.prelude = retained.into();
        self
    }

    /// Catches up with only the newest update of each conflated topic (`--conflate`).
    pub(crate) fn with_conflation(
        mut self,
        conflation: Option<Arc<crate::conflate::Conflation>>,
    ) -> Self {
        self.conflation = conflation;
        self
    }

    /// Ties the subscription's registry entry to this connection's life.
    pub(crate) fn with_subscription(mut self, guard: SubscriptionGuard) -> Self {
        self._subscription = Some(Box::new(guard));
        self
    }

    /// The next chunk of the response body; `Ready(None)` ends the stream.
    pub(crate) fn poll_next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        if !self.started {
            self.started = true;
            // An initial comment makes proxies and clients see the response start at once.
            return Poll::Ready(Some(Chunk::One(COMMENT)));
        }
        if !self.prelude.is_empty() {
            let mut chunk = None;
            let mut bytes = 0;
            for _ in 0..COALESCE {
                if bytes >= COALESCE_BYTES {
                    break;
                }
                let Some(update) = self.prelude.pop_front() else {
                    break;
                };
                self.metrics.delivered.inc();
                bytes += update.encoded.len();
                Chunk::push(&mut chunk, update.encoded.clone());
            }
            if let Some(chunk) = chunk {
                return Poll::Ready(Some(self.sent(chunk)));
            }
        }
        // Registered before the flags and the queue are looked at, so no wake-up is lost. (The
        // caller polls again after writing a chunk, so more queued than one chunk takes is not
        // left behind.)
        self.registration.signals.register(cx.waker());
        loop {
            let signals = &self.registration.signals;
            if signals.is_closed() {
                return Poll::Ready(None);
            }
            if signals.take_lagged() {
                self.catching_up = true;
                self.reread |= self.reading.is_some();
            }
            if self.catching_up {
                match self.poll_catch_up(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Step::Chunk(chunk)) => return Poll::Ready(Some(self.sent(chunk))),
                    Poll::Ready(Step::Continue) => continue,
                    Poll::Ready(Step::Done) => self.catching_up = false,
                    Poll::Ready(Step::Close) => return Poll::Ready(None),
                }
            }
            match self.drain_queue() {
                Drained::Chunk(chunk) => return Poll::Ready(Some(self.sent(chunk))),
                Drained::Yield => {
                    // More to skip: let other tasks run, and come back at once.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Drained::Empty => {}
            }
            if self.registration.signals.is_lagged() {
                continue;
            }
            if self.registration.signals.take_heartbeat() {
                return Poll::Ready(Some(Chunk::One(COMMENT)));
            }
            if let Some(expiry) = &mut self.expiry
                && expiry.as_mut().poll(cx).is_ready()
            {
                tracing::debug!("subscriber token expired; closing");
                return Poll::Ready(None);
            }
            return Poll::Pending;
        }
    }

    /// Writes the queued updates (up to [`COALESCE`] and [`COALESCE_BYTES`]) as one chunk,
    /// skipping updates already sent by a catch-up and superseded ones of latest-value topics.
    /// Skipped updates do not count towards the chunk: a queue whose first entries are all
    /// skipped must still give the ones behind them now, not at the next wake-up (which, on a
    /// quiet topic, may never come).
    fn drain_queue(&mut self) -> Drained {
        let signals = &self.registration.signals;
        let mut chunk: Option<Chunk> = None;
        let (mut taken, mut bytes, mut skipped) = (0, 0, 0);
        while taken < COALESCE && bytes < COALESCE_BYTES {
            let Some(update) = signals.pop() else { break };
            // An update popped while a lag is signalled may come after one that did not fit:
            // writing it would skip that one for good. Leave it (history holds both) and
            // catch up (`signals.rs` says why the lag is visible here).
            if signals.is_lagged() {
                break;
            }
            // Already sent by a catch-up, or a newer update of its latest-value topic was
            // dispatched (it follows).
            let superseded = update.position > self.last && update.is_superseded();
            if update.position <= self.last || superseded {
                self.last = self.last.max(update.position);
                if superseded {
                    self.metrics.conflated.inc();
                }
                skipped += 1;
                if skipped >= SKIP_BUDGET && chunk.is_none() {
                    return Drained::Yield;
                }
                continue;
            }
            self.last = update.position;
            self.metrics.delivered.inc();
            bytes += update.encoded.len();
            taken += 1;
            Chunk::push(&mut chunk, update.encoded.clone());
        }
        chunk.map_or(Drained::Empty, Drained::Chunk)
    }

    fn poll_catch_up(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        if self.reading.is_none() {
            // This read starts after every lag signalled so far.
            self.reread = false;
        }
        let reading = self.reading.get_or_insert_with(|| {
            let (history, after, limit) = (self.history.clone(), self.last, self.batch);
            Box::pin(async move { history.read_after(after, usize::from(limit)).await })
        });
        let result = std::task::ready!(reading.as_mut().poll(cx));
        self.reading = None;
        let batch = match result {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(%err, "history read failed; closing subscriber so it resumes");
                return Poll::Ready(Step::Close);
            }
        };
        // Only the first read of an `earliest` replay may start late.
        let from_earliest = std::mem::take(&mut self.from_earliest);
        let Some(first) = batch.first() else {
            return Poll::Ready(if std::mem::take(&mut self.reread) {
                Step::Continue
            } else {
                Step::Done
            });
        };
        // From `earliest`, nothing before the oldest update kept is owed: retention may have
        // moved the start between the lookup and this read.
        if from_earliest {
            self.last = self.last.max(first.position - 1);
        }
        // Positions are dense in history: a hole anywhere in the batch (retention racing a
        // read) is an update this subscriber would never get.
        let contiguous = batch
            .iter()
            .zip(self.last + 1..)
            .all(|(update, expected)| update.position == expected);
        if !contiguous {
            // What this subscriber is owed has left history: end the stream rather than skip.
            self.metrics.closed_slow.inc();
            tracing::debug!(
                owed = self.last + 1,
                oldest = first.position,
                "subscriber fell behind history; closing"
            );
            return Poll::Ready(Step::Close);
        }
        let mut chunk = None;
        let mut bytes = 0;
        let skip = self
            .conflation
            .as_ref()
            .map(|conflation| conflation.superseded_in(&batch));
        for (n, update) in batch.iter().enumerate() {
            bytes += update.encoded.len();
            let superseded = skip.as_ref().is_some_and(|skip| skip[n]);
            if self.filter.accepts(update) {
                if superseded {
                    self.metrics.conflated.inc();
                } else {
                    Chunk::push(&mut chunk, update.encoded.clone());
                    self.metrics.delivered.inc();
                }
            }
        }
        // Aim the next read at REPLAY_BYTES, from the size of the updates just read.
        let average = (bytes / batch.len()).max(1);
        self.batch = (REPLAY_BYTES / average).clamp(1, REPLAY_BATCH) as u16;
        self.last = batch.last().map_or(self.last, |u| u.position);
        Poll::Ready(match chunk {
            None => Step::Continue,
            Some(chunk) => Step::Chunk(chunk),
        })
    }

    /// The hub's metrics (the stream's writer counts owed bytes and closes there).
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn sent(&self, chunk: Chunk) -> Chunk {
        self.metrics.bytes_sent.inc_by(chunk.len() as u64);
        chunk
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.metrics.subscribers.dec();
    }
}

enum Step {
    Chunk(Chunk),
    Continue,
    Done,
    Close,
}

/// How long from now until `epoch_secs` (zero if past). An `exp` too far in the future for the
/// clock to represent (a token may say anything up to 2^64 - 1) means "never" in practice:
/// a century is as good as forever for one connection, and adding it cannot overflow.
fn until_epoch(epoch_secs: u64) -> Duration {
    const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(epoch_secs))
        .map_or(FOREVER, |at| {
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(FOREVER)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::dispatch::Dispatcher;
    use crate::history::{Feed, Start};
    use crate::lock;
    use crate::topic::SelectorSet;
    use crate::update::NewUpdate;
    use futures_util::FutureExt;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A history whose reads take their answer when they are made but deliver it only once the
    /// test opens the gate: a read "answered before" a later append, delivered after it.
    #[derive(Default)]
    struct GatedHistory {
        updates: Mutex<Vec<Arc<Update>>>,
        open: Arc<AtomicBool>,
        reads: AtomicUsize,
    }

    impl GatedHistory {
        fn store(&self, position: u64) -> Arc<Update> {
            let mut new = NewUpdate::new(vec!["t".into()], format!("data {position}"));
            new.id = format!("u{position}");
            let update = Arc::new(new.into_update(position).unwrap());
            lock(&self.updates).push(update.clone());
            update
        }
    }

    impl History for GatedHistory {
        fn append(&self, _: NewUpdate) -> BoxFuture<'_, Result<Arc<Update>, StoreError>> {
            unimplemented!("the test stores updates itself")
        }

        fn read_after(
            &self,
            after: u64,
            limit: usize,
        ) -> BoxFuture<'_, Result<Vec<Arc<Update>>, StoreError>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let answer: Vec<_> = lock(&self.updates)
                .iter()
                .filter(|u| u.position > after)
                .take(limit)
                .cloned()
                .collect();
            let open = self.open.clone();
            std::future::poll_fn(move |_| {
                if open.load(Ordering::SeqCst) {
                    Poll::Ready(Ok(answer.clone()))
                } else {
                    Poll::Pending
                }
            })
            .boxed()
        }

        fn resolve(&self, _: &str) -> BoxFuture<'_, Result<Start, StoreError>> {
            unimplemented!()
        }

        fn last_id(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
            unimplemented!()
        }

        fn take_feed(&self) -> Option<Feed> {
            None
        }
    }

    /// The positions of the updates in a chunk.
    fn positions(chunk: &Chunk) -> Vec<String> {
        chunk
            .parts()
            .iter()
            .filter_map(|b| {
                let text = std::str::from_utf8(b).ok()?;
                text.lines()
                    .find_map(|l| l.strip_prefix("id: ").map(str::to_owned))
            })
            .collect()
    }

    /// The lag race found in the cluster work: a lag is signalled while a catch-up read is in
    /// flight, for an update stored after that read took its answer. The read comes back
    /// without it (here: empty); ending the catch-up then would lose that update for good,
    /// since it was never queued. The subscriber must read again. Deterministic: one thread,
    /// the test decides every interleaving.
    #[test]
    fn a_lag_during_a_catch_up_read_makes_it_read_again() {
        let history = Arc::new(GatedHistory::default());
        history.store(1);
        let dispatcher = Dispatcher::new(16, usize::MAX, Arc::default());
        dispatcher.starts_after(1);
        let filter = Arc::new(Filter {
            topics: SelectorSet::parse(["t"]).unwrap(),
            grants: None,
        });
        let registration = dispatcher.register(filter.clone());
        let signals = registration.signals.clone();
        let mut subscriber =
            Subscriber::new(registration, filter, history.clone(), Arc::default(), None);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut poll = || subscriber.poll_next_chunk(&mut cx);
        assert!(
            matches!(poll(), Poll::Ready(Some(_))),
            "the opening comment"
        );
        assert!(poll().is_pending(), "nothing yet");

        // A lag (the template stage fell behind, say): catch up from history after 1.
        signals.mark_lagged();
        assert!(poll().is_pending(), "the read is in flight");
        assert_eq!(history.reads.load(Ordering::SeqCst), 1);
        // Meanwhile 2 is stored and does not fit the queue: only the lag says so.
        history.store(2);
        signals.mark_lagged();
        assert!(poll().is_pending());
        // The read comes back with what it saw: nothing after 1.
        history.open.store(true, Ordering::SeqCst);
        let mut delivered = Vec::new();
        for _ in 0..10 {
            match poll() {
                Poll::Ready(Some(chunk)) => delivered.extend(positions(&chunk)),
                Poll::Ready(None) => panic!("the stream ended"),
                Poll::Pending => break,
            }
        }
        assert_eq!(
            delivered,
            ["u2"],
            "reads: {}",
            history.reads.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn expiry_far_in_the_future_does_not_overflow() {
        // Found from outside: `exp` >= 2^63 panicked the connection task.
        for exp in [u64::MAX, 1 << 63, (1 << 63) - 1, i64::MAX as u64 / 1000] {
            let left = until_epoch(exp);
            assert!(
                left > Duration::from_secs(50 * 365 * 24 * 3600),
                "{exp}: {left:?}"
            );
        }
        assert_eq!(
            until_epoch(0),
            Duration::ZERO,
            "an expired token has no time left"
        );
    }

    /// A waker that notes whether it was woken, so that a test polls only when an executor
    /// would.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Polls `subscriber` as an executor would (again only after a wake-up) until it waits
    /// with nothing to wake it; returns the ids it wrote.
    fn run_until_idle(subscriber: &mut Subscriber, flag: &Arc<Flag>) -> Vec<String> {
        let waker = std::task::Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut delivered = Vec::new();
        for _ in 0..10_000 {
            flag.0.store(false, Ordering::SeqCst);
            match subscriber.poll_next_chunk(&mut cx) {
                Poll::Ready(Some(chunk)) => delivered.extend(positions(&chunk)),
                Poll::Ready(None) => panic!("the stream ended"),
                Poll::Pending if flag.0.load(Ordering::SeqCst) => {}
                Poll::Pending => break,
            }
        }
        delivered
    }

    /// After a replay, the queue holds what was published meanwhile, already sent; behind
    /// more than a chunk's worth of those, a new update must still be written at once, not
    /// left until some later publish wakes the subscriber (found by `bench ticker`).
    #[test]
    fn a_new_update_behind_many_already_sent_is_written_at_once() {
        let history = Arc::new(GatedHistory::default());
        history.open.store(true, Ordering::SeqCst);
        let dispatcher = Dispatcher::new(1024, usize::MAX, Arc::default());
        dispatcher.starts_after(0);
        let filter = Arc::new(Filter {
            topics: SelectorSet::parse(["t"]).unwrap(),
            grants: None,
        });
        let registration = dispatcher.register(filter.clone());
        // Replays from the start while 1..=200 are published: stored, and queued too.
        let mut subscriber = Subscriber::new(
            registration,
            filter,
            history.clone(),
            Arc::default(),
            Some(0),
        );
        for position in 1..=200 {
            dispatcher.dispatch(history.store(position));
        }
        let flag = Arc::new(Flag::default());
        let replayed = run_until_idle(&mut subscriber, &flag);
        assert_eq!(replayed.len(), 200);
        // 201 is published after the replay ended, behind 200 queued updates already sent.
        dispatcher.dispatch(history.store(201));
        assert_eq!(run_until_idle(&mut subscriber, &flag), ["u201"]);
    }

    /// Superseded updates of a latest-value topic are skipped from the queue, however many
    /// there are before the current one: more than [`SKIP_BUDGET`] take several polls, each
    /// of which wakes the task again (a `Pending` without that wake-up would stall it).
    #[test]
    fn superseded_queued_updates_are_skipped() {
        const QUEUED: u64 = SKIP_BUDGET as u64 * 2 + 300;
        let history = Arc::new(GatedHistory::default());
        let dispatcher = Dispatcher::new(QUEUED as usize, usize::MAX, Arc::default());
        dispatcher.starts_after(0);
        let filter = Arc::new(Filter {
            topics: SelectorSet::parse(["t"]).unwrap(),
            grants: None,
        });
        let registration = dispatcher.register(filter.clone());
        let metrics = Arc::new(Metrics::default());
        let mut subscriber =
            Subscriber::new(registration, filter, history.clone(), metrics.clone(), None);
        let flag = Arc::new(Flag::default());
        assert!(run_until_idle(&mut subscriber, &flag).is_empty(), "opened");
        for position in 1..=QUEUED {
            let update = history.store(position);
            if position < QUEUED {
                update.mark_superseded();
            }
            dispatcher.dispatch(update);
        }
        let waker = std::task::Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        flag.0.store(false, Ordering::SeqCst);
        assert!(subscriber.poll_next_chunk(&mut cx).is_pending(), "yields");
        assert!(flag.0.load(Ordering::SeqCst), "and wakes itself");
        assert_eq!(
            run_until_idle(&mut subscriber, &flag),
            [format!("u{QUEUED}")]
        );
        assert_eq!(metrics.conflated.get(), QUEUED - 1);
    }
}
