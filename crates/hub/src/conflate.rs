//! Conflation for latest-value topics (`--conflate SELECTOR`, a Herald extension): a subscriber
//! that catches up (it fell behind, or resumes with `Last-Event-ID`) is sent, for topics the
//! selectors name, only the newest update of each topic it is owed, not every one it missed:
//! a ticker that reads again wants the current price. Other topics keep exact catch-up, and a
//! subscriber that keeps up receives every update.
//!
//! The hub notes the newest position of each conflated topic (by an update's first topic) as
//! updates are dispatched. A catch-up skips an update of such a topic when a newer one is
//! noted: that one is after it, so the subscriber gets it later in the same catch-up or from
//! its queue. An update newer than what was noted is sent (nothing is lost, at worst a value
//! is sent that a moment later would have been skipped). The notes are bounded: beyond
//! `MAX_TOPICS` the oldest topic is forgotten, and its updates are then caught up exactly.

use crate::topic::SelectorSet;
use crate::update::Update;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Topics whose newest position is noted, at most.
pub const MAX_TOPICS: usize = 100_000;

/// The conflated selectors and the newest position of each topic they matched.
#[derive(Debug)]
pub struct Conflation {
    selectors: SelectorSet,
    newest: Mutex<Newest>,
}

#[derive(Debug, Default)]
struct Newest {
    by_topic: HashMap<String, u64>,
    by_position: BTreeMap<u64, String>,
}

impl Conflation {
    /// Conflation of the topics `selectors` match.
    pub fn new(selectors: SelectorSet) -> Conflation {
        Conflation {
            selectors,
            newest: Mutex::new(Newest::default()),
        }
    }

    /// The topic `update` is conflated by, if its first topic is a conflated one.
    fn topic<'a>(&self, update: &'a Update) -> Option<&'a str> {
        let topic = update.topics().first()?;
        self.selectors.matches(topic).then_some(topic.as_str())
    }

    /// Notes `update` as its topic's newest, if it is conflated (called as updates are
    /// dispatched, in position order).
    pub fn observe(&self, update: &Update) {
        let Some(topic) = self.topic(update) else {
            return;
        };
        let mut newest = crate::lock(&self.newest);
        if let Some(old) = newest.by_topic.insert(topic.to_owned(), update.position) {
            newest.by_position.remove(&old);
        }
        newest.by_position.insert(update.position, topic.to_owned());
        while newest.by_topic.len() > MAX_TOPICS {
            let Some((_, oldest)) = newest.by_position.pop_first() else {
                break;
            };
            newest.by_topic.remove(&oldest);
        }
    }

    /// Whether a catch-up may skip `update`: its topic is conflated and has a newer update.
    pub fn superseded(&self, update: &Update) -> bool {
        self.topic(update).is_some_and(|topic| {
            crate::lock(&self.newest)
                .by_topic
                .get(topic)
                .is_some_and(|&newest| newest > update.position)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::NewUpdate;

    fn update(position: u64, topic: &str) -> Update {
        NewUpdate::new(vec![topic.into()], "x")
            .into_update(position)
            .unwrap()
    }

    #[test]
    fn only_the_newest_of_a_conflated_topic_survives() {
        let c = Conflation::new(SelectorSet::parse(["prices/{symbol}"]).unwrap());
        let (a1, b2, a3, n4) = (
            update(1, "prices/a"),
            update(2, "prices/b"),
            update(3, "prices/a"),
            update(4, "news"),
        );
        for u in [&a1, &b2, &a3, &n4] {
            c.observe(u);
        }
        assert!(c.superseded(&a1));
        assert!(!c.superseded(&b2));
        assert!(!c.superseded(&a3));
        assert!(!c.superseded(&n4), "not conflated");
        assert!(
            !c.superseded(&update(5, "prices/a")),
            "newer than noted: sent"
        );
    }
}
