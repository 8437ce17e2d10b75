//! Conflation for latest-value topics (`--conflate SELECTOR`, a Herald extension): a subscriber
//! that falls behind (its socket takes less than is published, it resumes with
//! `Last-Event-ID`, or its queue overflowed) is sent, for topics the selectors name, only the
//! newest update of each topic it is owed, not every one it missed: a ticker that reads again
//! wants the current price. Other topics keep exact delivery, and a subscriber that takes each
//! update before the next of its topic is published receives every one.
//!
//! An update is conflated when its first topic matches the selectors; it is superseded by a
//! later update with the same topics and the same `private` flag, which therefore reaches
//! exactly the subscribers it would have reached. As updates are dispatched (in position
//! order) the hub notes the newest of each such key and marks the one it replaces
//! ([`Update::is_superseded`]): a subscriber draining its queue skips a marked update with one
//! load. A catch-up from history (whose updates may be other copies) asks for the key's newest
//! position instead, and within each read keeps only the newest update of each key, which
//! also conflates history this hub never dispatched (written before a restart, or by other
//! nodes of a cluster before this one joined). Either way the newer update is after the skipped one, so the subscriber
//! gets it later from its queue or from history: nothing newer is ever lost, and at worst a
//! value is sent that a moment later would have been skipped.
//!
//! The notes are bounded: beyond `MAX_TOPICS` keys the oldest is forgotten (its updates are
//! then delivered exactly). Each note holds the key and a weak reference to the newest update,
//! whose data is freed as soon as no queue or cache holds it.

use crate::topic::SelectorSet;
use crate::update::Update;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

/// Keys (topic sets) whose newest update is noted, at most.
pub const MAX_TOPICS: usize = 100_000;

/// What makes two updates the same latest-value stream: their topics and `private`, so that a
/// newer one reaches exactly the subscribers of the older.
type Key = (Vec<String>, bool);

/// The conflated selectors and the newest update of each key they matched.
#[derive(Debug)]
pub struct Conflation {
    selectors: SelectorSet,
    newest: Mutex<Newest>,
}

#[derive(Debug, Default)]
struct Newest {
    by_key: HashMap<Key, (u64, Weak<Update>)>,
    by_position: BTreeMap<u64, Key>,
}

impl Conflation {
    /// Conflation of the topics `selectors` match.
    pub fn new(selectors: SelectorSet) -> Conflation {
        Conflation {
            selectors,
            newest: Mutex::new(Newest::default()),
        }
    }

    /// The key `update` is conflated by, if its first topic is a conflated one.
    fn key(&self, update: &Update) -> Option<Key> {
        let topic = update.topics().first()?;
        self.selectors
            .matches(topic)
            .then(|| (update.topics().to_vec(), update.private()))
    }

    /// Notes `update` as its key's newest and marks the one it replaces, if it is conflated
    /// (called as updates are dispatched, in position order, before any queue holds it).
    pub fn observe(&self, update: &Arc<Update>) {
        let Some(key) = self.key(update) else {
            return;
        };
        let mut newest = crate::lock(&self.newest);
        let noted = (update.position, Arc::downgrade(update));
        if let Some((old, older)) = newest.by_key.insert(key.clone(), noted) {
            newest.by_position.remove(&old);
            if let Some(older) = older.upgrade() {
                older.mark_superseded();
            }
        }
        newest.by_position.insert(update.position, key);
        while newest.by_key.len() > MAX_TOPICS {
            let Some((_, oldest)) = newest.by_position.pop_first() else {
                break;
            };
            newest.by_key.remove(&oldest);
        }
    }

    /// Whether `update` may be skipped: a newer update of its key was dispatched.
    pub fn superseded(&self, update: &Update) -> bool {
        update.is_superseded()
            || self
                .key(update)
                .is_some_and(|key| self.noted_after(&key, update))
    }

    fn noted_after(&self, key: &Key, update: &Update) -> bool {
        crate::lock(&self.newest)
            .by_key
            .get(key)
            .is_some_and(|&(newest, _)| newest > update.position)
    }

    /// Which updates of `batch` (read from history, in position order) may be skipped: those
    /// superseded by a dispatched update, and those with a newer update of their key later in
    /// the batch. The second rule conflates what this hub never dispatched (history written
    /// before a restart, or by another node of a cluster before this one joined).
    pub fn superseded_in(&self, batch: &[Arc<Update>]) -> Vec<bool> {
        let mut later = std::collections::HashSet::new();
        let mut skip: Vec<bool> = batch
            .iter()
            .rev()
            .map(|update| {
                if update.is_superseded() {
                    return true;
                }
                let Some(key) = self.key(update) else {
                    return false;
                };
                if later.contains(&key) || self.noted_after(&key, update) {
                    return true;
                }
                later.insert(key);
                false
            })
            .collect();
        skip.reverse();
        skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::NewUpdate;

    fn update(position: u64, topics: &[&str], private: bool) -> Arc<Update> {
        let mut new = NewUpdate::new(topics.iter().map(|t| t.to_string()).collect(), "x");
        new.private = private;
        Arc::new(new.into_update(position).unwrap())
    }

    #[test]
    fn only_the_newest_of_a_conflated_topic_survives() {
        let c = Conflation::new(SelectorSet::parse(["prices/{symbol}"]).unwrap());
        let (a1, b2, a3, n4) = (
            update(1, &["prices/a"], false),
            update(2, &["prices/b"], false),
            update(3, &["prices/a"], false),
            update(4, &["news"], false),
        );
        for u in [&a1, &b2, &a3, &n4] {
            c.observe(u);
        }
        assert!(a1.is_superseded(), "marked for queues");
        assert!(c.superseded(&a1));
        assert!(!c.superseded(&b2));
        assert!(!c.superseded(&a3));
        assert!(!c.superseded(&n4), "not conflated");
        // A copy read back from history carries no mark: the noted position decides.
        let copy = update(1, &["prices/a"], false);
        assert!(!copy.is_superseded() && c.superseded(&copy));
        assert!(
            !c.superseded(&update(5, &["prices/a"], false)),
            "newer than noted: sent"
        );
    }

    /// Updates this hub never dispatched (read back after a restart): within a read, only the
    /// newest of each key is kept.
    #[test]
    fn a_batch_from_history_keeps_the_newest_of_each_key() {
        let c = Conflation::new(SelectorSet::parse(["prices/{symbol}"]).unwrap());
        let batch = [
            update(1, &["prices/a"], false),
            update(2, &["news"], false),
            update(3, &["prices/b"], false),
            update(4, &["prices/a"], false),
            update(5, &["news"], false),
            update(6, &["prices/a"], true),
        ];
        assert_eq!(
            c.superseded_in(&batch),
            [true, false, false, false, false, false]
        );
        // A dispatched update newer than the whole batch supersedes its key's last one too.
        c.observe(&update(7, &["prices/b"], false));
        assert_eq!(
            c.superseded_in(&batch),
            [true, false, true, false, false, false]
        );
    }

    /// An update is only replaced by one that reaches the same subscribers: the same topics
    /// and the same `private`. Otherwise a subscriber of the older one could lose its value.
    #[test]
    fn only_an_update_for_the_same_subscribers_supersedes() {
        let c = Conflation::new(SelectorSet::parse(["prices/{symbol}"]).unwrap());
        let (public, private, both, again) = (
            update(1, &["prices/a"], false),
            update(2, &["prices/a"], true),
            update(3, &["prices/a", "alerts"], false),
            update(4, &["prices/a"], false),
        );
        for u in [&public, &private, &both] {
            c.observe(u);
        }
        for u in [&public, &private, &both] {
            assert!(!u.is_superseded() && !c.superseded(u), "{}", u.position);
        }
        c.observe(&again);
        assert!(public.is_superseded() && c.superseded(&public));
        assert!(!c.superseded(&private) && !c.superseded(&both));
    }
}
