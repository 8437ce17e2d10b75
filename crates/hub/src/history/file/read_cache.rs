//! Updates read back from disk, decoded once and shared by every subscriber catching up through
//! the same range.
//!
//! Subscribers resuming from a position older than the tail cache read history from the store.
//! Without this cache each of them decodes its own copy of every update (and of its encoded
//! `text/event-stream` bytes): 500 slow readers resuming from the same place held 500 copies.
//! With it, the first reader's copies are handed to the others, so memory follows the cache's
//! bound and the few batches being written, not the number of readers.
//!
//! Eviction is first in, first out: catch-up walks forward, so readers behind the first one find
//! what it read as long as they are less than the cache's size behind it.

use super::super::footprint;
use crate::update::Update;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Decoded updates by position, at most `max_bytes` of them (as [`footprint`] counts).
pub(super) struct ReadCache {
    by_position: HashMap<u64, Arc<Update>>,
    /// Positions in the order they were kept, oldest first.
    order: VecDeque<u64>,
    bytes: usize,
    max_bytes: usize,
}

impl ReadCache {
    pub(super) fn new(max_bytes: usize) -> ReadCache {
        ReadCache {
            by_position: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Appends to `out` the cached updates right after `after`, in position order, stopping at
    /// the first position not cached or when `out` holds `limit`. Positions in the store are
    /// dense (lost ones hold placeholders), so a run of consecutive positions is exactly what
    /// the store would return.
    pub(super) fn run_after(&self, after: u64, limit: usize, out: &mut Vec<Arc<Update>>) {
        let mut next = after.saturating_add(1);
        while out.len() < limit {
            match self.by_position.get(&next) {
                Some(update) => out.push(update.clone()),
                None => break,
            }
            next += 1;
        }
    }

    /// Keeps `update`, read from disk, unless a copy of it is kept already; returns the kept one
    /// (so that the fresh copy is freed at once) or `update` if it does not fit.
    pub(super) fn share(&mut self, update: Arc<Update>) -> Arc<Update> {
        if let Some(kept) = self.by_position.get(&update.position) {
            return kept.clone();
        }
        let size = footprint(&update);
        if size > self.max_bytes {
            return update;
        }
        while self.bytes + size > self.max_bytes {
            self.evict_oldest();
        }
        self.bytes += size;
        self.order.push_back(update.position);
        self.by_position.insert(update.position, update.clone());
        update
    }

    /// Forgets every update at or below `position` (retention dropped them from the store).
    pub(super) fn drop_through(&mut self, position: u64) {
        self.order.retain(|&p| p > position);
        self.by_position.retain(|&p, _| p > position);
        self.bytes = self.by_position.values().map(|u| footprint(u)).sum();
    }

    fn evict_oldest(&mut self) {
        if let Some(position) = self.order.pop_front()
            && let Some(update) = self.by_position.remove(&position)
        {
            self.bytes -= footprint(&update);
        }
    }

    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::test_update as update;

    fn positions(v: &[Arc<Update>]) -> Vec<u64> {
        v.iter().map(|u| u.position).collect()
    }

    #[test]
    fn a_second_reader_gets_the_first_readers_copies() {
        let mut cache = ReadCache::new(1 << 20);
        let first: Vec<_> = (1..=5).map(|p| cache.share(update(p, 100))).collect();
        let mut second = Vec::new();
        cache.run_after(0, 10, &mut second);
        assert_eq!(positions(&second), [1, 2, 3, 4, 5]);
        assert!(first.iter().zip(&second).all(|(a, b)| Arc::ptr_eq(a, b)));
        // A copy decoded again by a concurrent reader is exchanged for the kept one.
        let again = cache.share(update(3, 100));
        assert!(Arc::ptr_eq(&again, &first[2]));
    }

    #[test]
    fn a_run_stops_at_the_first_missing_position_and_at_the_limit() {
        let mut cache = ReadCache::new(1 << 20);
        for p in [1, 2, 3, 5, 6] {
            cache.share(update(p, 10));
        }
        let mut out = Vec::new();
        cache.run_after(0, 10, &mut out);
        assert_eq!(positions(&out), [1, 2, 3]);
        let mut out = Vec::new();
        cache.run_after(4, 1, &mut out);
        assert_eq!(positions(&out), [5]);
        let mut out = Vec::new();
        cache.run_after(6, 10, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn bounded_by_bytes_oldest_first_and_trimmed_by_retention() {
        let one = footprint(&update(1, 1000));
        let mut cache = ReadCache::new(3 * one);
        for p in 1..=5 {
            cache.share(update(p, 1000));
        }
        assert!(cache.bytes() <= 3 * one);
        let mut out = Vec::new();
        cache.run_after(2, 10, &mut out);
        assert_eq!(positions(&out), [3, 4, 5]);
        let mut none = Vec::new();
        cache.run_after(0, 10, &mut none);
        assert!(none.is_empty(), "evicted: {:?}", positions(&none));

        cache.drop_through(4);
        let mut out = Vec::new();
        cache.run_after(2, 10, &mut out);
        assert!(out.is_empty());
        cache.run_after(4, 10, &mut out);
        assert_eq!(positions(&out), [5]);
        assert_eq!(cache.bytes(), one);

        // Larger than the whole cache: handed out, not kept.
        let big = cache.share(update(9, 10_000));
        assert_eq!(big.position, 9);
        assert_eq!(cache.bytes(), one);
    }
}
