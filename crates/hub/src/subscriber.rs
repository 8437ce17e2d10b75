//! One subscriber connection: replays history, then streams live updates from its queue, with
//! heartbeats, until the client goes away or the hub shuts down.
//!
//! Replay and catch-up are one mechanism. The subscriber remembers `last`, the newest position it
//! has accounted for (sent, or skipped because it did not match). Catching up reads history after
//! `last` until it is exhausted; afterwards, queued updates at or before `last` are skipped. The
//! subscription is registered with the dispatcher *before* the first read, so every update after
//! the read is in the queue: the hand-over from history to live has no gap and no duplicate. A
//! full queue (a slow reader) triggers the same catch-up, so nothing owed is skipped; if history
//! no longer holds what is owed, the stream ends and the client resumes with `Last-Event-ID`.

use crate::dispatch::{Filter, Registration};
use crate::history::History;
use crate::metrics::Metrics;
use crate::subscriptions::SubscriptionGuard;
use crate::update::Update;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Updates read from history per step of a replay.
const REPLAY_BATCH: usize = 256;
/// Queued updates written together in one chunk: fewer, larger writes under load.
const COALESCE: usize = 64;

/// The state of one subscriber's stream.
pub struct Subscriber {
    registration: Registration,
    filter: Arc<Filter>,
    history: Arc<dyn History>,
    metrics: Arc<Metrics>,
    /// The newest position accounted for.
    last: u64,
    catching_up: bool,
    started: bool,
    heartbeat: Option<Interval>,
    /// The subscriber's token expires then; the stream ends so the client must re-authorize.
    expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    shutdown: watch::Receiver<bool>,
    /// Announces the end of the subscription when the connection goes away.
    _subscription: Option<SubscriptionGuard>,
}

impl Subscriber {
    /// A subscriber that first replays history after position `replay_after` (or, with `None`,
    /// starts with what is dispatched after its registration).
    pub fn new(
        registration: Registration,
        filter: Arc<Filter>,
        history: Arc<dyn History>,
        metrics: Arc<Metrics>,
        replay_after: Option<u64>,
        heartbeat: Option<Duration>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        metrics.subscribers.inc();
        let heartbeat = heartbeat.map(|period| {
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        let expiry = filter
            .grants
            .as_ref()
            .and_then(|g| g.expires_at)
            .map(|exp| Box::pin(tokio::time::sleep(until_epoch(exp))));
        Subscriber {
            expiry,
            last: replay_after.unwrap_or(registration.live_after),
            catching_up: replay_after.is_some(),
            registration,
            filter,
            history,
            metrics,
            started: false,
            heartbeat,
            shutdown,
            _subscription: None,
        }
    }

    /// Ties the subscription's registry entry to this connection's life.
    pub fn with_subscription(mut self, guard: SubscriptionGuard) -> Self {
        self._subscription = Some(guard);
        self
    }

    /// The next chunk of the response body; `None` ends the stream.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.started {
            self.started = true;
            // An initial comment makes proxies and clients see the response start at once.
            return Some(Bytes::from_static(b":\n"));
        }
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            if self
                .registration
                .signals
                .lagged
                .swap(false, Ordering::AcqRel)
            {
                self.catching_up = true;
            }
            if self.catching_up {
                match self.catch_up_step().await {
                    Step::Chunk(chunk) => return Some(self.sent(chunk)),
                    Step::Continue => continue,
                    Step::Done => {
                        self.catching_up = false;
                        continue;
                    }
                    Step::Close => return None,
                }
            }
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => return None,
                update = self.registration.rx.recv() => {
                    let update = update?;
                    if let Some(chunk) = self.coalesce(update) {
                        return Some(self.sent(chunk));
                    }
                }
                () = self.registration.signals.wake.notified() => {}
                () = until(&mut self.expiry) => {
                    tracing::debug!("subscriber token expired; closing");
                    return None;
                }
                _ = tick(&mut self.heartbeat) => return Some(Bytes::from_static(b":\n")),
            }
        }
    }

    /// Writes this update and whatever else is already queued as one chunk, skipping updates
    /// already sent by a catch-up.
    fn coalesce(&mut self, first: Arc<Update>) -> Option<Bytes> {
        let mut buf: Option<BytesMut> = None;
        let mut single: Option<Bytes> = None;
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(update) = next.take() {
            if update.position > self.last {
                self.last = update.position;
                self.metrics.delivered.inc();
                match (&mut buf, &single) {
                    (None, None) => single = Some(update.encoded.clone()),
                    (None, Some(s)) => {
                        let mut b = BytesMut::with_capacity(s.len() * 4 + update.encoded.len());
                        b.extend_from_slice(s);
                        b.extend_from_slice(&update.encoded);
                        buf = Some(b);
                    }
                    (Some(b), _) => b.extend_from_slice(&update.encoded),
                }
            }
            taken += 1;
            if taken < COALESCE {
                next = self.registration.rx.try_recv().ok();
            }
        }
        buf.map(BytesMut::freeze).or(single)
    }

    async fn catch_up_step(&mut self) -> Step {
        let batch = match self.history.read_after(self.last, REPLAY_BATCH).await {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(%err, "history read failed; closing subscriber so it resumes");
                return Step::Close;
            }
        };
        let Some(first) = batch.first() else {
            return Step::Done;
        };
        if first.position != self.last + 1 {
            // What this subscriber is owed has left history: end the stream rather than skip.
            self.metrics.closed_slow.inc();
            tracing::debug!(
                owed = self.last + 1,
                oldest = first.position,
                "subscriber fell behind history; closing"
            );
            return Step::Close;
        }
        let mut buf = BytesMut::new();
        for update in &batch {
            if self.filter.accepts(update) {
                buf.extend_from_slice(&update.encoded);
                self.metrics.delivered.inc();
            }
        }
        self.last = batch.last().map_or(self.last, |u| u.position);
        if buf.is_empty() {
            Step::Continue
        } else {
            Step::Chunk(buf.freeze())
        }
    }

    fn sent(&self, chunk: Bytes) -> Bytes {
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
    Chunk(Bytes),
    Continue,
    Done,
    Close,
}

/// How long from now until `epoch_secs` (zero if past).
fn until_epoch(epoch_secs: u64) -> Duration {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(epoch_secs);
    at.duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

async fn until(deadline: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
