//! The worker table: every registered Majordomo worker, keyed by its ROUTER
//! identity, with its credit and the requests it holds.
//!
//! Workers live in a slab; a [`WorkerKey`] (slot and generation) names one
//! without borrowing, so a service's ready ring may keep keys of workers
//! that are gone since: they are skipped when popped ([`WorkerTable::get`]
//! returns `None`), which keeps removal O(1) instead of a scan of the ring.

use std::time::Instant;

use foldhash::HashMap;

use mensageria::mdp::Version;

use crate::services::ServiceId;

/// A worker's slot and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerKey {
    slot: u32,
    generation: u32,
}

/// One registered worker.
#[derive(Debug)]
pub struct Worker {
    /// Its ROUTER identity (the first frame of everything it sends).
    pub identity: Box<[u8]>,
    /// The service it registered for.
    pub service: ServiceId,
    /// Protocol version it spoke in READY.
    pub version: Version,
    /// Whether its 0.2 frames start with an empty frame (answered alike).
    pub leading_empty: bool,
    /// Requests it takes at once.
    pub credit: u32,
    /// Correlation ids of the requests it holds, answered or not by the
    /// broker: a request stays held until the worker replies or hands it back.
    pub held: Vec<u64>,
    /// Set by REQUEUE: no dispatch until its next reply or CREDIT.
    pub full: bool,
    /// Requests it answered.
    pub served: u64,
    /// When it last sent anything.
    pub last_heard: Instant,
    /// Its announced instance name.
    pub instance: Option<String>,
    /// Whether its key is in its service's ready ring.
    pub in_ring: bool,
}

impl Worker {
    /// Whether the broker may hand it one more request.
    pub fn has_room(&self) -> bool {
        !self.full && self.held.len() < self.credit as usize
    }

    /// Whether it holds any request.
    pub fn is_busy(&self) -> bool {
        !self.held.is_empty()
    }

    /// Forgets a held request; `false` if it did not hold `corr`.
    pub fn release(&mut self, corr: u64) -> bool {
        match self.held.iter().position(|&c| c == corr) {
            Some(i) => {
                self.held.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

/// Every registered worker.
#[derive(Debug, Default)]
pub struct WorkerTable {
    slots: Vec<(u32, Option<Worker>)>,
    free: Vec<u32>,
    /// By identity (looked up per message: a fast seeded hash, not SipHash).
    by_identity: HashMap<Box<[u8]>, WorkerKey>,
}

impl WorkerTable {
    /// Number of registered workers.
    pub fn len(&self) -> usize {
        self.by_identity.len()
    }

    /// Whether no worker is registered.
    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty()
    }

    /// The key of the worker with this identity.
    pub fn find(&self, identity: &[u8]) -> Option<WorkerKey> {
        self.by_identity.get(identity).copied()
    }

    /// Registers a worker (its identity must not be registered yet).
    pub fn insert(&mut self, worker: Worker) -> WorkerKey {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        let key = WorkerKey {
            slot,
            generation: entry.0,
        };
        self.by_identity.insert(worker.identity.clone(), key);
        entry.1 = Some(worker);
        key
    }

    /// The worker of `key`, if it is still registered.
    pub fn get(&self, key: WorkerKey) -> Option<&Worker> {
        match self.slots.get(key.slot as usize) {
            Some((g, Some(w))) if *g == key.generation => Some(w),
            _ => None,
        }
    }

    /// The worker of `key`, mutably.
    pub fn get_mut(&mut self, key: WorkerKey) -> Option<&mut Worker> {
        match self.slots.get_mut(key.slot as usize) {
            Some((g, Some(w))) if *g == key.generation => Some(w),
            _ => None,
        }
    }

    /// Unregisters a worker and returns it.
    pub fn remove(&mut self, key: WorkerKey) -> Option<Worker> {
        let (g, w) = self.slots.get_mut(key.slot as usize)?;
        if *g != key.generation || w.is_none() {
            return None;
        }
        let worker = w.take()?;
        *g = g.wrapping_add(1);
        self.free.push(key.slot);
        self.by_identity.remove(&worker.identity);
        Some(worker)
    }

    /// Keys of every registered worker (for the periodic liveness check
    /// and heartbeats, never per message).
    pub fn keys(&self) -> Vec<WorkerKey> {
        self.by_identity.values().copied().collect()
    }

    /// Every registered worker.
    pub fn iter(&self) -> impl Iterator<Item = &Worker> {
        self.slots.iter().filter_map(|(_, w)| w.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &[u8], credit: u32) -> Worker {
        Worker {
            identity: id.into(),
            service: ServiceId::for_tests(0),
            version: Version::V2,
            leading_empty: false,
            credit,
            held: Vec::new(),
            full: false,
            served: 0,
            last_heard: Instant::now(),
            instance: None,
            in_ring: false,
        }
    }

    #[test]
    fn stale_keys_do_not_reach_a_reused_slot() {
        let mut t = WorkerTable::default();
        let a = t.insert(worker(b"a", 1));
        assert_eq!(t.find(b"a"), Some(a));
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none(), "removed once");
        let b = t.insert(worker(b"b", 1));
        assert!(t.get(a).is_none(), "old key of the reused slot is stale");
        assert_eq!(t.get(b).unwrap().identity.as_ref(), b"b");
        assert_eq!(t.find(b"a"), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn room_follows_credit_held_requests_and_the_full_mark() {
        let mut w = worker(b"w", 2);
        assert!(w.has_room() && !w.is_busy());
        w.held.push(1);
        assert!(w.has_room() && w.is_busy());
        w.held.push(2);
        assert!(!w.has_room());
        assert!(w.release(1));
        assert!(!w.release(1), "released once");
        assert!(w.has_room());
        w.full = true;
        assert!(!w.has_room());
    }
}
