//! The tail driver both engines share: it keeps this node's dispatcher fed with every update
//! of the engine's stream, in stream order, for as long as the hub lives, and keeps `/readyz`
//! true to what the engine can do.
//!
//! An engine only says how to read what follows a position ([`Engine::read`]) and how to check
//! that publishes would work ([`Engine::check_commands`]); the driver owns what must be the
//! same for both: the position fed last (so that after an outage the tail resumes after it, no
//! gap and no duplicate), the reconnect backoff, the readiness flags and the log lines that
//! say when the engine went away and came back.

use herald_hub::history::StoreError;
use herald_hub::update::Update;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// The first wait after a failed read; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two reads while the engine is away: how late, at most, a node
/// notices that it is back.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Whether a node can serve: its tail reads, and its commands (publishes, reads) get answers.
/// Both start true: `open` has just talked to the engine.
#[derive(Debug)]
pub(crate) struct Readiness {
    tail: AtomicBool,
    commands: AtomicBool,
}

impl Readiness {
    pub(crate) fn new() -> Readiness {
        Readiness {
            tail: AtomicBool::new(true),
            commands: AtomicBool::new(true),
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.tail.load(Ordering::Acquire) && self.commands.load(Ordering::Acquire)
    }

    /// Records whether the last command got an answer.
    pub(crate) fn set_commands(&self, ok: bool) {
        self.commands.store(ok, Ordering::Release);
    }

    pub(crate) fn commands_ok(&self) -> bool {
        self.commands.load(Ordering::Acquire)
    }
}

/// Where the tail's updates go: the dispatcher's feed, and the position fed last.
#[derive(Debug)]
pub(crate) struct Feeder {
    after: u64,
    feed: mpsc::UnboundedSender<Arc<Update>>,
    /// The node's copy of the retained updates, kept up to date with what is fed.
    mirror: Option<Arc<crate::retained::Mirror>>,
}

impl Feeder {
    /// The position fed last: a read asks for what follows it.
    pub(crate) fn after(&self) -> u64 {
        self.after
    }

    /// Feeds `update` unless it was fed already (an engine may deliver again what preceded an
    /// outage). `false` when the hub is gone and reading can stop.
    pub(crate) fn feed(&mut self, update: Arc<Update>) -> bool {
        if update.position <= self.after {
            return true;
        }
        self.after = update.position;
        if let Some(mirror) = &self.mirror {
            mirror.offer(&update);
            mirror.fed(update.position);
        }
        self.feed.send(update).is_ok()
    }
}

/// A cluster engine, as the driver sees it.
pub(crate) trait Engine: Send + Sync + 'static {
    /// The engine's name in log lines.
    const NAME: &'static str;
    /// What the tail reads with (a connection, a consumer): kept while reads work, dropped
    /// after a failure so that the next read makes a new one.
    type Reader: Send;

    fn readiness(&self) -> &Readiness;

    /// Feeds what follows `feeder.after()`, waiting at most about one block time when there
    /// is nothing new. Makes a reader if `reader` is `None`.
    fn read(
        &self,
        reader: &mut Option<Self::Reader>,
        feeder: &mut Feeder,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// After a read worked: makes sure commands work too, or records that they do not
    /// (through [`Readiness::set_commands`]). `recovered`: the tail has just come back from an
    /// outage, which the command connection may not have noticed yet.
    fn check_commands(
        &self,
        recovered: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Feeds the dispatcher with every update after position `after`, for as long as the engine's
/// node lives (the driver holds only a `Weak`) and the dispatcher listens. `reader`: one made
/// already, if any.
pub(crate) async fn drive<E: Engine>(
    engine: Weak<E>,
    after: u64,
    mut reader: Option<E::Reader>,
    feed: mpsc::UnboundedSender<Arc<Update>>,
    mirror: Option<Arc<crate::retained::Mirror>>,
) {
    let mut feeder = Feeder {
        after,
        feed,
        mirror,
    };
    let mut backoff = MIN_BACKOFF;
    let mut was_ready = true;
    loop {
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if feeder.feed.is_closed() {
            return;
        }
        let readiness = engine.readiness();
        match engine.read(&mut reader, &mut feeder).await {
            Ok(()) => {
                backoff = MIN_BACKOFF;
                // Commands are checked before the tail says it is back, so that `/readyz` never
                // says ready while the first publish would still fail.
                let recovered = !readiness.tail.load(Ordering::Acquire);
                let check = engine.check_commands(recovered).await;
                readiness.tail.store(true, Ordering::Release);
                let ready = readiness.is_ready();
                if ready && !was_ready {
                    tracing::info!(
                        "{} reachable again; the feed resumes after {}",
                        E::NAME,
                        feeder.after
                    );
                } else if !ready && was_ready {
                    let err = check
                        .err()
                        .map_or_else(|| "a command failed".to_owned(), |e| e.to_string());
                    tracing::error!(
                        %err,
                        "{} does not answer commands; publishes get 503 until it does",
                        E::NAME
                    );
                }
                was_ready = ready;
            }
            Err(err) => {
                reader = None;
                readiness.tail.store(false, Ordering::Release);
                if was_ready {
                    tracing::error!(
                        %err,
                        "{} unreachable; publishes get 503 until it is back",
                        E::NAME
                    );
                }
                was_ready = false;
                drop(engine);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_hub::update::NewUpdate;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// An engine whose reads are scripted: each gives some positions or fails.
    struct Scripted {
        readiness: Readiness,
        reads: Mutex<VecDeque<Result<Vec<u64>, &'static str>>>,
        readers_made: Mutex<u32>,
        checks: Mutex<Vec<bool>>,
        commands_fail: AtomicBool,
    }

    impl Engine for Scripted {
        const NAME: &'static str = "scripted";
        type Reader = u32;

        fn readiness(&self) -> &Readiness {
            &self.readiness
        }

        async fn read(
            &self,
            reader: &mut Option<u32>,
            feeder: &mut Feeder,
        ) -> Result<(), StoreError> {
            if reader.is_none() {
                let mut made = self.readers_made.lock().unwrap();
                *made += 1;
                *reader = Some(*made);
            }
            let next = self.reads.lock().unwrap().pop_front();
            match next {
                None => {
                    // The script is over: wait as an idle engine does.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(())
                }
                Some(Err(why)) => Err(StoreError::unavailable(why)),
                Some(Ok(positions)) => {
                    for position in positions {
                        let update = NewUpdate::placeholder(format!("u{position}"))
                            .into_update(position)
                            .unwrap();
                        if !feeder.feed(Arc::new(update)) {
                            break;
                        }
                    }
                    Ok(())
                }
            }
        }

        async fn check_commands(&self, recovered: bool) -> Result<(), StoreError> {
            self.checks.lock().unwrap().push(recovered);
            let ok = !self.commands_fail.load(Ordering::Acquire);
            self.readiness.set_commands(ok);
            if ok {
                Ok(())
            } else {
                Err(StoreError::unavailable("commands fail"))
            }
        }
    }

    fn scripted(reads: Vec<Result<Vec<u64>, &'static str>>) -> Arc<Scripted> {
        Arc::new(Scripted {
            readiness: Readiness::new(),
            reads: Mutex::new(reads.into()),
            readers_made: Mutex::new(0),
            checks: Mutex::new(Vec::new()),
            commands_fail: AtomicBool::new(false),
        })
    }

    async fn positions(rx: &mut mpsc::UnboundedReceiver<Arc<Update>>, n: usize) -> Vec<u64> {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(rx.recv().await.expect("fed").position);
        }
        got
    }

    #[tokio::test(start_paused = true)]
    async fn resumes_after_an_outage_with_no_gap_and_no_duplicate() {
        // After 3 the engine fails twice, then delivers again from before the outage.
        let engine = scripted(vec![
            Ok(vec![4, 5, 6]),
            Err("gone"),
            Err("still gone"),
            Ok(vec![5, 6, 7, 8]),
            Ok(vec![8, 9]),
        ]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(Arc::downgrade(&engine), 3, None, tx, None));
        assert_eq!(positions(&mut rx, 6).await, [4, 5, 6, 7, 8, 9]);
        // A reader for the first read, kept for the second; a new one after each failure.
        assert_eq!(*engine.readers_made.lock().unwrap(), 3);
        // The commands were checked after each read, as recovered once.
        let checks = engine.checks.lock().unwrap().clone();
        assert_eq!(checks.iter().filter(|r| **r).count(), 1, "{checks:?}");
        assert!(engine.readiness.is_ready());
        drop(engine);
        driver.await.unwrap();
        assert!(rx.recv().await.is_none(), "the driver ends with its engine");
    }

    #[tokio::test(start_paused = true)]
    async fn not_ready_while_the_tail_or_the_commands_fail() {
        let engine = scripted(vec![Err("gone")]);
        let (tx, _rx) = mpsc::unbounded_channel();
        assert!(engine.readiness.is_ready());
        engine.commands_fail.store(true, Ordering::Release);
        let driver = tokio::spawn(drive(Arc::downgrade(&engine), 0, None, tx, None));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!engine.readiness.is_ready(), "the tail failed");
        // The tail reads again, but commands still fail: still not ready.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(engine.readiness.tail.load(Ordering::Acquire));
        assert!(!engine.readiness.is_ready(), "commands fail");
        engine.commands_fail.store(false, Ordering::Release);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(engine.readiness.is_ready());
        driver.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_dispatcher_is_gone() {
        let engine = scripted(vec![Ok(vec![1, 2])]);
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        tokio::time::timeout(
            Duration::from_secs(5),
            drive(Arc::downgrade(&engine), 0, None, tx, None),
        )
        .await
        .expect("the driver returns");
    }
}
