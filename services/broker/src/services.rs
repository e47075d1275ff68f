//! The service registry: per service, its FIFO queue of waiting requests,
//! its ring of workers with room (least recently used first) and its counts.
//!
//! Every request of one broker gets the same timeout, so a queue in arrival
//! order is also in deadline order: the in-flight table expires requests
//! oldest first, and an expired request's queue entry is dropped from the
//! front of its queue (or skipped when it reaches the front), never searched.

use std::{cell::Cell, collections::VecDeque, time::Instant};

use foldhash::{HashMap, HashMapExt as _};

use mensageria::mdp::ServiceName;

use crate::{metrics::ServiceMetrics, workers::WorkerKey};

/// Index of a service in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceId(u32);

impl ServiceId {
    /// An id for unit tests of other modules.
    #[cfg(test)]
    pub fn for_tests(i: u32) -> Self {
        ServiceId(i)
    }
}

/// A request waiting in a queue: its correlation id and body frames.
#[derive(Debug)]
pub struct Queued {
    /// Key of its in-flight entry.
    pub corr: u64,
    /// The body frames to hand to a worker.
    pub body: Vec<zmq::Message>,
    /// Their total size in bytes.
    pub bytes: usize,
    /// When it entered the queue.
    pub since: Instant,
}

/// One service.
#[derive(Debug)]
pub struct Service {
    /// Its name.
    pub name: ServiceName,
    /// Its metric handles.
    pub metrics: ServiceMetrics,
    /// Waiting requests, oldest first (may hold entries already answered).
    pub queue: VecDeque<Queued>,
    /// Entries of `queue` still waiting (the queue depth).
    pub waiting: usize,
    /// Workers that may have room, least recently used first (keys may be stale).
    pub ready: VecDeque<WorkerKey>,
    /// Registered workers.
    pub workers: usize,
    /// Registered workers holding at least one request.
    pub busy: usize,
    /// Since when it has had no worker (`None` while it has some).
    pub no_workers_since: Option<Instant>,
    /// Whether it stays registered without workers (the default service).
    pub pinned: bool,
    /// Requests received.
    pub requests: u64,
    /// Replies other than `ok` (a `Cell`: counted where the broker only
    /// reads the registry, while answering).
    pub errors: Cell<u64>,
    /// Requests expired in the queue.
    pub expired: u64,
    /// Workers lost.
    pub lost: u64,
}

impl Service {
    /// Adds a request at the back of the queue.
    pub fn enqueue(&mut self, q: Queued) {
        self.queue.push_back(q);
        self.waiting += 1;
        self.metrics.queue_depth.inc();
    }

    /// Puts a request handed back by a worker at the front of the queue.
    pub fn requeue_front(&mut self, q: Queued) {
        self.queue.push_front(q);
        self.waiting += 1;
        self.metrics.queue_depth.inc();
    }

    /// Takes the oldest request still waiting; entries for which
    /// `is_waiting` says no (answered while queued) are discarded on the way.
    pub fn pop_waiting(&mut self, is_waiting: impl Fn(u64) -> bool) -> Option<Queued> {
        while let Some(q) = self.queue.pop_front() {
            if is_waiting(q.corr) {
                self.waiting -= 1;
                self.metrics.queue_depth.dec();
                return Some(q);
            }
        }
        None
    }

    /// Accounts for a queued request answered without a dispatch (expired,
    /// or flushed): lowers the depth and drops answered entries at the front.
    pub fn forget_waiting(&mut self, is_waiting: impl Fn(u64) -> bool) {
        self.waiting -= 1;
        self.metrics.queue_depth.dec();
        while self.queue.front().is_some_and(|q| !is_waiting(q.corr)) {
            self.queue.pop_front();
        }
    }

    /// Whether no worker is registered, the queue is empty and the service
    /// is not pinned: nothing refers to it any more.
    pub fn is_unused(&self) -> bool {
        self.workers == 0 && self.waiting == 0 && !self.pinned
    }
}

/// Why a service cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many services (the cap is {0})")]
pub struct TooManyServices(pub usize);

/// Every service with workers, waiting requests or a pin.
#[derive(Debug)]
pub struct Registry {
    slots: Vec<Option<Service>>,
    free: Vec<u32>,
    /// By name (looked up per request: a fast seeded hash, not SipHash).
    by_name: HashMap<Box<[u8]>, ServiceId>,
    cap: usize,
}

impl Registry {
    /// An empty registry for at most `cap` services.
    pub fn new(cap: usize) -> Self {
        Registry {
            slots: Vec::new(),
            free: Vec::new(),
            by_name: HashMap::new(),
            cap,
        }
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there is no service.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The id of a service by name (no allocation).
    pub fn find(&self, name: &[u8]) -> Option<ServiceId> {
        self.by_name.get(name).copied()
    }

    /// The id of `name`, adding it (with `metrics`) if it is new.
    ///
    /// # Errors
    /// [`TooManyServices`] if it is new and the registry is full.
    pub fn find_or_add(
        &mut self,
        name: ServiceName,
        metrics: impl FnOnce() -> ServiceMetrics,
        now: Instant,
    ) -> Result<ServiceId, TooManyServices> {
        if let Some(id) = self.find(name.as_bytes()) {
            return Ok(id);
        }
        if self.len() >= self.cap {
            return Err(TooManyServices(self.cap));
        }
        let service = Service {
            name,
            metrics: metrics(),
            queue: VecDeque::new(),
            waiting: 0,
            ready: VecDeque::new(),
            workers: 0,
            busy: 0,
            no_workers_since: Some(now),
            pinned: false,
            requests: 0,
            errors: Cell::new(0),
            expired: 0,
            lost: 0,
        };
        let id = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(service);
                ServiceId(i)
            }
            None => {
                self.slots.push(Some(service));
                ServiceId((self.slots.len() - 1) as u32)
            }
        };
        self.by_name.insert(name.as_bytes().into(), id);
        Ok(id)
    }

    /// The service of `id`.
    ///
    /// # Panics
    /// If `id` was removed: ids are only kept by workers, queued and
    /// in-flight requests, and a service is removed only when none is left.
    pub fn get(&self, id: ServiceId) -> &Service {
        self.slots[id.0 as usize]
            .as_ref()
            .expect("service ids outlive no reference (see Registry::remove_if_unused)")
    }

    /// The service of `id`, mutably (same invariant as [`Registry::get`]).
    pub fn get_mut(&mut self, id: ServiceId) -> &mut Service {
        self.slots[id.0 as usize]
            .as_mut()
            .expect("service ids outlive no reference (see Registry::remove_if_unused)")
    }

    /// Removes the service if it is unused ([`Service::is_unused`]); returns
    /// whether it was removed.
    pub fn remove_if_unused(&mut self, id: ServiceId) -> bool {
        let slot = &mut self.slots[id.0 as usize];
        if !slot.as_ref().is_some_and(Service::is_unused) {
            return false;
        }
        if let Some(s) = slot.take() {
            self.by_name.remove(s.name.as_bytes());
            self.free.push(id.0);
        }
        true
    }

    /// Ids of every service (for the periodic tick and the snapshot).
    pub fn ids(&self) -> Vec<ServiceId> {
        self.by_name.values().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::BrokerMetrics;

    fn metrics() -> ServiceMetrics {
        let mut r = prometheus_client::registry::Registry::default();
        BrokerMetrics::register(&mut r).services.other
    }

    fn queued(corr: u64) -> Queued {
        Queued {
            corr,
            body: Vec::new(),
            bytes: 0,
            since: Instant::now(),
        }
    }

    #[test]
    fn queue_is_fifo_with_requeue_at_the_front_and_skips_answered_entries() {
        let now = Instant::now();
        let mut reg = Registry::new(1);
        let id = reg.find_or_add("q".parse().unwrap(), metrics, now).unwrap();
        let s = reg.get_mut(id);
        for c in 1..=4 {
            s.enqueue(queued(c));
        }
        assert_eq!(s.waiting, 4);
        assert_eq!(s.metrics.queue_depth.get(), 4);
        let live = |c: u64| c != 2;
        assert_eq!(s.pop_waiting(live).map(|q| q.corr), Some(1));
        s.requeue_front(queued(1));
        assert_eq!(s.pop_waiting(live).map(|q| q.corr), Some(1));
        // 2 was answered while queued (say it expired): the caller forgets it.
        s.forget_waiting(live);
        assert_eq!(s.pop_waiting(live).map(|q| q.corr), Some(3));
        assert_eq!(s.pop_waiting(live).map(|q| q.corr), Some(4));
        assert_eq!(s.pop_waiting(live).map(|q| q.corr), None);
        assert_eq!((s.waiting, s.metrics.queue_depth.get()), (0, 0));
        assert!(s.queue.is_empty());
    }

    #[test]
    fn forgetting_trims_answered_entries_at_the_front() {
        let now = Instant::now();
        let mut reg = Registry::new(1);
        let id = reg.find_or_add("q".parse().unwrap(), metrics, now).unwrap();
        let s = reg.get_mut(id);
        for c in 1..=3 {
            s.enqueue(queued(c));
        }
        let live = |c: u64| c > 2;
        s.forget_waiting(live);
        s.forget_waiting(live);
        assert_eq!(s.queue.len(), 1, "entries 1 and 2 are gone at once");
        assert_eq!(s.waiting, 1);
    }

    #[test]
    fn names_map_to_stable_ids_and_the_cap_holds() {
        let now = Instant::now();
        let mut reg = Registry::new(2);
        let a = reg.find_or_add("a".parse().unwrap(), metrics, now).unwrap();
        assert_eq!(reg.find_or_add("a".parse().unwrap(), metrics, now), Ok(a));
        let b = reg.find_or_add("b".parse().unwrap(), metrics, now).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            reg.find_or_add("c".parse().unwrap(), metrics, now),
            Err(TooManyServices(2))
        );
        assert_eq!(reg.find(b"b"), Some(b));
        assert_eq!(reg.get(b).name.as_str(), "b");
    }

    #[test]
    fn only_unused_unpinned_services_are_removed_and_slots_are_reused() {
        let now = Instant::now();
        let mut reg = Registry::new(4);
        let a = reg.find_or_add("a".parse().unwrap(), metrics, now).unwrap();
        reg.get_mut(a).workers = 1;
        assert!(!reg.remove_if_unused(a), "has a worker");
        reg.get_mut(a).workers = 0;
        reg.get_mut(a).waiting = 1;
        assert!(!reg.remove_if_unused(a), "has a waiting request");
        reg.get_mut(a).waiting = 0;
        reg.get_mut(a).pinned = true;
        assert!(!reg.remove_if_unused(a), "pinned");
        reg.get_mut(a).pinned = false;
        assert!(reg.remove_if_unused(a));
        assert_eq!(reg.find(b"a"), None);
        assert!(reg.is_empty());
        let b = reg.find_or_add("b".parse().unwrap(), metrics, now).unwrap();
        assert_eq!(b, a, "the free slot is reused");
        assert_eq!(reg.ids(), vec![b]);
    }
}
