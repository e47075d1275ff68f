//! The in-flight table: requests the broker has forwarded and not yet
//! answered, keyed by the correlation id it pushed onto the envelope.
//!
//! Correlation ids are consecutive, and every entry gets the same timeout, so
//! insertion order is deadline order. That makes the table a ring
//! (`VecDeque`) indexed by `id - base`: insert is a push, completion clears a
//! slot, expiry pops from the front. No hashing, no per-operation allocation
//! once the ring has grown to the working set.

use std::{collections::VecDeque, time::Instant};

/// A slot: the deadline and the caller's data.
#[derive(Debug)]
struct Slot<T> {
    deadline: Instant,
    value: T,
}

/// In-flight requests by correlation id.
#[derive(Debug)]
pub struct InflightTable<T> {
    slots: VecDeque<Option<Slot<T>>>,
    /// Correlation id of `slots[0]`.
    base: u64,
    live: usize,
}

impl<T> Default for InflightTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> InflightTable<T> {
    /// An empty table; the first id handed out is 1.
    pub fn new() -> Self {
        InflightTable {
            slots: VecDeque::new(),
            base: 1,
            live: 0,
        }
    }

    /// Number of requests in flight.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds an entry due at `deadline` and returns its correlation id.
    /// Deadlines must not decrease from one insert to the next (the broker
    /// uses one fixed timeout and a monotonic clock).
    pub fn insert(&mut self, deadline: Instant, value: T) -> u64 {
        let id = self.base + self.slots.len() as u64;
        self.slots.push_back(Some(Slot { deadline, value }));
        self.live += 1;
        id
    }

    /// Removes and returns the entry for `id`; `None` if it is unknown,
    /// already answered, or expired (a late reply).
    pub fn take(&mut self, id: u64) -> Option<T> {
        let idx = usize::try_from(id.checked_sub(self.base)?).ok()?;
        let slot = self.slots.get_mut(idx)?.take()?;
        self.live -= 1;
        self.compact_front();
        Some(slot.value)
    }

    /// The entry for `id`, if it is still in flight.
    pub fn get(&self, id: u64) -> Option<&T> {
        let idx = usize::try_from(id.checked_sub(self.base)?).ok()?;
        self.slots.get(idx)?.as_ref().map(|s| &s.value)
    }

    /// The entry for `id`, mutably.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        let idx = usize::try_from(id.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(idx)?.as_mut().map(|s| &mut s.value)
    }

    /// Whether `id` is still in flight.
    pub fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Removes and returns the next entry whose deadline is at or before
    /// `now`, if any. Call repeatedly to drain every expired entry.
    pub fn pop_expired(&mut self, now: Instant) -> Option<T> {
        self.compact_front();
        let due = matches!(self.slots.front(), Some(Some(s)) if s.deadline <= now);
        if !due {
            return None;
        }
        let slot = self.slots.pop_front().flatten()?;
        self.base += 1;
        self.live -= 1;
        self.compact_front();
        Some(slot.value)
    }

    /// Removes and returns the oldest entry regardless of its deadline (used
    /// to answer everything still pending when a drain runs out of time).
    pub fn pop_oldest(&mut self) -> Option<T> {
        self.compact_front();
        let slot = self.slots.pop_front().flatten()?;
        self.base += 1;
        self.live -= 1;
        self.compact_front();
        Some(slot.value)
    }

    /// The earliest deadline still pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots.iter().flatten().next().map(|s| s.deadline)
    }

    fn compact_front(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        if self.slots.is_empty() && self.slots.capacity() > 1 << 20 {
            // Give memory back after a burst much larger than usual.
            self.slots.shrink_to(1 << 16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn take_returns_each_entry_once() {
        let t0 = Instant::now();
        let mut t = InflightTable::new();
        let a = t.insert(at(t0, 10), "a");
        let b = t.insert(at(t0, 20), "b");
        assert_ne!(a, b);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(b), Some(&"b"));
        *t.get_mut(a).unwrap() = "A";
        assert_eq!(t.take(b), Some("b"));
        assert_eq!(t.take(b), None, "second reply for the same id is late");
        assert!(!t.contains(b));
        assert_eq!(t.get(a), Some(&"A"));
        *t.get_mut(a).unwrap() = "a";
        assert_eq!(t.take(a), Some("a"));
        assert!(t.is_empty());
        assert_eq!(t.take(999), None);
        assert_eq!(t.take(0), None);
    }

    #[test]
    fn expiry_follows_deadlines_and_late_reply_is_unknown() {
        let t0 = Instant::now();
        let mut t = InflightTable::new();
        let a = t.insert(at(t0, 10), "a");
        let b = t.insert(at(t0, 20), "b");
        let c = t.insert(at(t0, 30), "c");
        assert_eq!(t.pop_expired(at(t0, 5)), None);
        assert_eq!(t.next_deadline(), Some(at(t0, 10)));
        assert_eq!(t.take(b), Some("b"));
        assert_eq!(t.pop_expired(at(t0, 25)), Some("a"));
        assert_eq!(t.pop_expired(at(t0, 25)), None, "b was answered, c not due");
        assert_eq!(t.take(a), None, "a reply after expiry is late");
        assert_eq!(t.next_deadline(), Some(at(t0, 30)));
        assert_eq!(t.pop_expired(at(t0, 30)), Some("c"));
        assert_eq!(t.take(c), None);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn ids_stay_unique_across_wraparound_of_the_ring() {
        let t0 = Instant::now();
        let mut t = InflightTable::new();
        let mut seen = std::collections::HashSet::new();
        for round in 0..1000u64 {
            let id = t.insert(at(t0, round), round);
            assert!(seen.insert(id));
            if round % 3 == 0 {
                assert_eq!(t.take(id), Some(round));
            }
        }
        let mut expired = 0;
        while t.pop_expired(at(t0, 10_000)).is_some() {
            expired += 1;
        }
        assert_eq!(expired, 1000 - 334);
        assert!(t.is_empty());
    }

    #[test]
    fn pop_oldest_drains_everything() {
        let t0 = Instant::now();
        let mut t = InflightTable::new();
        let ids: Vec<_> = (0..5).map(|i| t.insert(at(t0, 1000), i)).collect();
        t.take(ids[0]);
        t.take(ids[3]);
        let drained: Vec<_> = std::iter::from_fn(|| t.pop_oldest()).collect();
        assert_eq!(drained, vec![1, 2, 4]);
        assert!(t.is_empty());
    }
}
