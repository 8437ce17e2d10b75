//! Retained (latest-value) updates, a Herald extension: for each topic, the newest update
//! published with `retain=on`, which a subscriber may ask to receive first (a ticker's current
//! price, a dashboard's current state). Kept by the history store beside history and updated
//! in the same commit as the update, so that a subscription's snapshot holds every retained
//! update acknowledged before it registered: with the live stream after that point, no value
//! is missed and none is sent twice.
//!
//! Bounded whatever publishers do: at most `max_topics` topics and `max_bytes` of encoded
//! updates (the oldest retained updates are dropped first), and none older than `max_age`.
//! Retained updates outlive history's own retention, since a symbol that rarely changes must
//! keep its price.

use crate::update::Update;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The bounds of the retained set (`--retained-topics`, `--retained-bytes`,
/// `--retained-age`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainedLimits {
    /// Topics with a retained update, at most.
    pub max_topics: usize,
    /// Bytes of retained updates (their SSE encoding and topic), at most.
    pub max_bytes: usize,
    /// A retained update older than this is dropped; `None`: kept until replaced or evicted.
    pub max_age: Option<Duration>,
}

impl Default for RetainedLimits {
    fn default() -> Self {
        RetainedLimits {
            max_topics: 10_000,
            max_bytes: 64 << 20,
            max_age: None,
        }
    }
}

/// One topic's retained update, and when it was accepted (ms since the epoch).
#[derive(Debug, Clone)]
struct Entry {
    update: Arc<Update>,
    time_ms: u64,
}

/// The newest retained update of each topic.
#[derive(Debug, Default)]
pub struct Retained {
    limits: RetainedLimits,
    by_topic: HashMap<String, Entry>,
    /// Topics by the position of their retained update: the oldest is evicted first.
    by_position: BTreeMap<u64, Vec<String>>,
    bytes: usize,
}

fn cost(topic: &str, update: &Update) -> usize {
    topic.len() + update.encoded.len()
}

impl Retained {
    /// An empty set with these bounds.
    pub fn new(limits: RetainedLimits) -> Retained {
        Retained {
            limits,
            ..Retained::default()
        }
    }

    /// Retains `update` for each of its topics if it was published to be retained, replacing
    /// older ones; then drops what the bounds no longer allow. Returns the topics whose
    /// retained update was dropped without a replacement (for a store to delete).
    pub fn offer(&mut self, update: &Arc<Update>, time_ms: u64) -> Vec<String> {
        if !update.fields.retain {
            return Vec::new();
        }
        for topic in update.topics() {
            if let Some(old) = self.by_topic.get(topic) {
                if old.update.position >= update.position {
                    continue; // a newer one is retained already (replayed out of order)
                }
                let old_position = old.update.position;
                self.unindex(topic, old_position);
            }
            self.insert(topic.clone(), update.clone(), time_ms);
        }
        self.enforce(time_ms)
    }

    /// Puts back an entry read from a store at start.
    pub fn restore(&mut self, topic: String, update: Arc<Update>, time_ms: u64) {
        if let Some(old) = self.by_topic.get(&topic) {
            if old.update.position >= update.position {
                return;
            }
            let old_position = old.update.position;
            self.unindex(&topic, old_position);
        }
        self.insert(topic, update, time_ms);
    }

    fn insert(&mut self, topic: String, update: Arc<Update>, time_ms: u64) {
        self.bytes += cost(&topic, &update);
        self.by_position
            .entry(update.position)
            .or_default()
            .push(topic.clone());
        self.by_topic.insert(topic, Entry { update, time_ms });
    }

    /// Forgets `topic`'s entry at `position`.
    fn unindex(&mut self, topic: &str, position: u64) {
        if let Some(entry) = self.by_topic.remove(topic) {
            self.bytes -= cost(topic, &entry.update);
        }
        if let Some(topics) = self.by_position.get_mut(&position) {
            topics.retain(|t| t != topic);
            if topics.is_empty() {
                self.by_position.remove(&position);
            }
        }
    }

    /// Drops the oldest entries until the bounds hold, and every entry past its age.
    pub fn enforce(&mut self, now_ms: u64) -> Vec<String> {
        let mut dropped = Vec::new();
        let too_old = |entry: &Entry, limits: &RetainedLimits| {
            limits.max_age.is_some_and(|age| {
                now_ms.saturating_sub(entry.time_ms)
                    > u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
            })
        };
        while let Some((&position, topics)) = self.by_position.iter().next() {
            let topic = topics[0].clone();
            let over = self.by_topic.len() > self.limits.max_topics
                || self.bytes > self.limits.max_bytes
                || self
                    .by_topic
                    .get(&topic)
                    .is_some_and(|entry| too_old(entry, &self.limits));
            if !over {
                break;
            }
            self.unindex(&topic, position);
            dropped.push(topic);
        }
        if self.limits.max_age.is_some() {
            // Ages follow positions only roughly (clocks, restores): check the rest too.
            let old: Vec<(String, u64)> = self
                .by_topic
                .iter()
                .filter(|(_, entry)| too_old(entry, &self.limits))
                .map(|(topic, entry)| (topic.clone(), entry.update.position))
                .collect();
            for (topic, position) in old {
                self.unindex(&topic, position);
                dropped.push(topic);
            }
        }
        dropped
    }

    /// The retained updates, each once (an update may be retained for several topics), in
    /// position order, none past its age.
    pub fn snapshot(&mut self, now_ms: u64) -> Vec<Arc<Update>> {
        self.enforce(now_ms);
        let mut updates: Vec<Arc<Update>> = Vec::new();
        for topics in self.by_position.values() {
            if let Some(entry) = topics.first().and_then(|t| self.by_topic.get(t)) {
                updates.push(entry.update.clone());
            }
        }
        updates
    }

    /// Whether `topic` has a retained update.
    pub fn contains(&self, topic: &str) -> bool {
        self.by_topic.contains_key(topic)
    }

    /// Topics with a retained update.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_topic.len()
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::NewUpdate;

    fn update(position: u64, topics: &[&str], data: &str, retain: bool) -> Arc<Update> {
        let mut new = NewUpdate::new(topics.iter().map(|t| t.to_string()).collect(), data);
        new.retain = retain;
        Arc::new(new.into_update(position).unwrap())
    }

    fn data(updates: &[Arc<Update>]) -> Vec<&str> {
        updates.iter().map(|u| u.data()).collect()
    }

    #[test]
    fn the_newest_retained_update_of_each_topic() {
        let mut r = Retained::new(RetainedLimits::default());
        r.offer(&update(1, &["a"], "a1", true), 0);
        r.offer(&update(2, &["b", "c"], "bc2", true), 0);
        r.offer(&update(3, &["a"], "a3 not retained", false), 0);
        r.offer(&update(4, &["a"], "a4", true), 0);
        assert_eq!(data(&r.snapshot(0)), ["bc2", "a4"], "once each, in order");
        r.offer(&update(5, &["b"], "b5", true), 0);
        assert_eq!(data(&r.snapshot(0)), ["bc2", "a4", "b5"], "c keeps bc2");
        r.offer(&update(6, &["c"], "c6", true), 0);
        assert_eq!(data(&r.snapshot(0)), ["a4", "b5", "c6"]);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn bounds_drop_the_oldest_first() {
        let mut r = Retained::new(RetainedLimits {
            max_topics: 2,
            ..RetainedLimits::default()
        });
        r.offer(&update(1, &["a"], "a", true), 0);
        r.offer(&update(2, &["b"], "b", true), 0);
        assert_eq!(r.offer(&update(3, &["c"], "c", true), 0), ["a"]);
        assert_eq!(data(&r.snapshot(0)), ["b", "c"]);

        let one = update(1, &["a"], &"x".repeat(100), true);
        let mut r = Retained::new(RetainedLimits {
            max_bytes: 2 * cost("a", &one) + 10,
            ..RetainedLimits::default()
        });
        r.offer(&one, 0);
        r.offer(&update(2, &["b"], &"x".repeat(100), true), 0);
        assert_eq!(
            r.offer(&update(3, &["c"], &"x".repeat(100), true), 0),
            ["a"]
        );
        assert!(r.bytes <= 2 * cost("a", &one) + 10);

        let mut r = Retained::new(RetainedLimits {
            max_age: Some(Duration::from_secs(10)),
            ..RetainedLimits::default()
        });
        r.offer(&update(1, &["a"], "old", true), 1_000);
        r.offer(&update(2, &["b"], "new", true), 9_000);
        assert_eq!(data(&r.snapshot(12_000)), ["new"]);
        assert_eq!(data(&r.snapshot(20_000)), Vec::<&str>::new());
        assert_eq!(r.bytes, 0);
    }
}
