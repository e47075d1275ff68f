//! Liveness and readiness state shared by a service's threads and its ops
//! HTTP server.
//!
//! Readiness is a set of named [`Check`]s (socket bound, peers connected, …)
//! plus a draining flag that shutdown sets first. Liveness is a set of
//! [`Heartbeat`]s: every socket thread beats on each poll iteration, and a
//! thread that has not beaten for [`STALL_AFTER`] makes `/healthz` fail.
//!
//! Liveness means "stuck", not "busy": a thread about to run one piece of work
//! that may legitimately take long (a server's `work` request, capped by
//! `MAX_WORK`) declares it with [`Heartbeat::busy`]. Until that work's limit
//! plus [`STALL_AFTER`] has passed the thread counts as alive; past it, it is
//! stuck. The declaration ends when the returned [`Busy`] guard is dropped.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

/// A thread that has not beaten for this long is considered wedged.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// Shared health state of one service instance. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    draining: AtomicBool,
    checks: Mutex<Vec<Arc<CheckState>>>,
    beats: Mutex<Vec<Arc<BeatState>>>,
}

struct CheckState {
    name: String,
    ok: AtomicBool,
    probe: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for CheckState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckState")
            .field("name", &self.name)
            .finish()
    }
}

impl CheckState {
    fn holds(&self) -> bool {
        self.ok.load(Ordering::Acquire) && self.probe.as_ref().is_none_or(|p| p())
    }
}

#[derive(Debug)]
struct BeatState {
    name: String,
    last_ms: AtomicU64,
    /// While busy: the time (ms since start) until which the thread counts as
    /// alive without beating; 0 when not busy.
    busy_until_ms: AtomicU64,
    finished: AtomicBool,
}

/// One readiness condition; cloneable handle to flip it.
#[derive(Clone, Debug)]
pub struct Check(Arc<CheckState>);

impl Check {
    /// Sets whether this condition holds.
    pub fn set(&self, ok: bool) {
        self.0.ok.store(ok, Ordering::Release);
    }

    /// Whether this condition holds.
    pub fn get(&self) -> bool {
        self.0.holds()
    }
}

/// A thread's liveness heartbeat. Dropping it (thread ended) removes it from
/// the liveness verdict.
#[derive(Debug)]
pub struct Heartbeat {
    state: Arc<BeatState>,
    started: Instant,
    busy_limit: Duration,
}

/// A thread's declaration "busy with work allowed to take up to the
/// heartbeat's busy limit"; dropping it ends the declaration and counts as a
/// beat. See [`Heartbeat::busy`].
#[derive(Debug)]
#[must_use = "the thread counts as busy only while the guard lives"]
pub struct Busy {
    state: Arc<BeatState>,
    started: Instant,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let ms = ms_since(self.started, Instant::now());
        self.state.last_ms.store(ms, Ordering::Relaxed);
        self.state.busy_until_ms.store(0, Ordering::Release);
    }
}

fn ms_since(start: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(start).as_millis() as u64
}

impl Heartbeat {
    /// Sets the longest one piece of work declared with [`Heartbeat::busy`]
    /// may take on this thread (e.g. the server's `MAX_WORK`).
    pub fn with_busy_limit(mut self, limit: Duration) -> Self {
        self.busy_limit = limit;
        self
    }

    /// Declares that the thread is about to run one piece of work bounded by
    /// the busy limit: until that limit plus [`STALL_AFTER`] has passed, the
    /// thread is alive without beating. The declaration lasts as long as the
    /// returned guard.
    pub fn busy(&self) -> Busy {
        self.busy_at(Instant::now())
    }

    /// [`Heartbeat::busy`] at a time the caller already read.
    pub fn busy_at(&self, now: Instant) -> Busy {
        let until = now + self.busy_limit + STALL_AFTER;
        // Never 0 (the "not busy" value), even at the very first millisecond.
        let until_ms = ms_since(self.started, until).max(1);
        self.beat_at(now);
        self.state.busy_until_ms.store(until_ms, Ordering::Release);
        Busy {
            state: self.state.clone(),
            started: self.started,
        }
    }

    /// Records progress now.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// Records progress at a time the caller already read (saves a clock read).
    pub fn beat_at(&self, now: Instant) {
        self.state
            .last_ms
            .store(ms_since(self.started, now), Ordering::Relaxed);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.state.finished.store(true, Ordering::Release);
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// New state: not draining, no checks, no heartbeats.
    pub fn new() -> Self {
        Health {
            inner: Arc::new(Inner {
                started: Instant::now(),
                draining: AtomicBool::new(false),
                checks: Mutex::new(Vec::new()),
                beats: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Registers a readiness check, initially failing.
    pub fn check(&self, name: impl Into<String>) -> Check {
        let state = Arc::new(CheckState {
            name: name.into(),
            ok: AtomicBool::new(false),
            probe: None,
        });
        lock(&self.inner.checks).push(state.clone());
        Check(state)
    }

    /// Registers a readiness check evaluated on every probe by calling
    /// `probe` (e.g. "a peer is connected", read from a metric).
    pub fn check_with(
        &self,
        name: impl Into<String>,
        probe: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        let state = Arc::new(CheckState {
            name: name.into(),
            ok: AtomicBool::new(true),
            probe: Some(Box::new(probe)),
        });
        lock(&self.inner.checks).push(state);
    }

    /// Registers a liveness heartbeat for the calling thread.
    pub fn heartbeat(&self, name: impl Into<String>) -> Heartbeat {
        let state = Arc::new(BeatState {
            name: name.into(),
            last_ms: AtomicU64::new(0),
            busy_until_ms: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        });
        let hb = Heartbeat {
            state: state.clone(),
            started: self.inner.started,
            busy_limit: Duration::ZERO,
        };
        hb.beat();
        lock(&self.inner.beats).push(state);
        hb
    }

    /// Marks the service as draining: readiness fails from now on.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Readiness verdict and its JSON detail.
    pub fn readiness(&self) -> (bool, Value) {
        let draining = self.is_draining();
        let checks = lock(&self.inner.checks);
        let mut detail = serde_json::Map::new();
        let mut ready = !draining && !checks.is_empty();
        for c in checks.iter() {
            let ok = c.holds();
            ready &= ok;
            detail.insert(c.name.clone(), Value::Bool(ok));
        }
        detail.insert("not_draining".into(), Value::Bool(!draining));
        (ready, json!({ "ready": ready, "checks": detail }))
    }

    /// Liveness verdict and its JSON detail: every running thread beat
    /// within [`STALL_AFTER`], or is busy within its declared limit.
    pub fn liveness(&self) -> (bool, Value) {
        self.liveness_at(Instant::now(), STALL_AFTER)
    }

    fn liveness_at(&self, now: Instant, stall_after: Duration) -> (bool, Value) {
        let now_ms = ms_since(self.inner.started, now);
        let mut beats = lock(&self.inner.beats);
        beats.retain(|b| !b.finished.load(Ordering::Acquire));
        let mut alive = true;
        let mut detail = serde_json::Map::new();
        for b in beats.iter() {
            let age = now_ms.saturating_sub(b.last_ms.load(Ordering::Relaxed));
            let busy_until = b.busy_until_ms.load(Ordering::Acquire);
            let busy = busy_until != 0;
            let ok = age <= stall_after.as_millis() as u64 || (busy && now_ms <= busy_until);
            alive &= ok;
            detail.insert(
                b.name.clone(),
                json!({ "ok": ok, "last_progress_ms_ago": age, "busy": busy }),
            );
        }
        (alive, json!({ "alive": alive, "threads": detail }))
    }
}

/// Locks a mutex, recovering from poisoning (the data guarded with it in
/// this crate are plain values, valid whatever a panicking thread was doing).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_every_check_passes_and_not_when_draining() {
        let h = Health::new();
        assert!(!h.readiness().0, "no checks registered yet");
        let a = h.check("frontend_bound");
        let b = h.check("backend_bound");
        assert!(!h.readiness().0);
        a.set(true);
        assert!(!h.readiness().0);
        b.set(true);
        let (ready, body) = h.readiness();
        assert!(ready);
        assert_eq!(body["checks"]["backend_bound"], true);
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        h.check_with("peer_connected", move || f.load(Ordering::Relaxed));
        assert!(!h.readiness().0);
        flag.store(true, Ordering::Relaxed);
        assert!(h.readiness().0);
        h.set_draining();
        let (ready, body) = h.readiness();
        assert!(!ready);
        assert_eq!(body["checks"]["not_draining"], false);
    }

    #[test]
    fn stalled_thread_fails_liveness_and_finished_thread_is_forgotten() {
        let h = Health::new();
        let hb = h.heartbeat("router");
        let start = h.inner.started;
        hb.beat_at(start + Duration::from_secs(1));
        assert!(h.liveness_at(start + Duration::from_secs(2), STALL_AFTER).0);
        let (alive, body) = h.liveness_at(start + Duration::from_secs(10), STALL_AFTER);
        assert!(!alive);
        assert_eq!(body["threads"]["router"]["ok"], false);
        drop(hb);
        assert!(
            h.liveness_at(start + Duration::from_secs(10), STALL_AFTER)
                .0
        );
    }

    #[test]
    fn busy_thread_is_alive_within_its_limit_and_stuck_past_it() {
        let max_work = Duration::from_secs(10);
        let h = Health::new();
        let hb = h.heartbeat("server-worker-0").with_busy_limit(max_work);
        let start = h.inner.started;
        let at = |s: u64| start + Duration::from_secs(s);
        // A request starting at t=1 s may run until 11 s; the margin
        // (STALL_AFTER) keeps the thread alive until 16 s.
        let busy = hb.busy_at(at(1));
        for t in [2, 7, 11, 16] {
            let (alive, body) = h.liveness_at(at(t), STALL_AFTER);
            assert!(alive, "busy within its limit at {t} s: {body}");
            assert_eq!(body["threads"]["server-worker-0"]["busy"], true);
        }
        // Wedged: still inside the same request past MAX_WORK + margin.
        let (alive, body) = h.liveness_at(at(17), STALL_AFTER);
        assert!(!alive, "stuck past its limit: {body}");
        assert_eq!(body["threads"]["server-worker-0"]["ok"], false);
        drop(busy);
        // Finishing the request counts as progress ...
        assert!(h.liveness().0, "alive right after the request");
        // ... but a loop that then stops polling is stuck again after STALL_AFTER.
        let now = Instant::now();
        let (alive, body) = h.liveness_at(now + STALL_AFTER + Duration::from_secs(1), STALL_AFTER);
        assert!(!alive, "idle loop that stopped beating: {body}");
        assert_eq!(body["threads"]["server-worker-0"]["busy"], false);
    }

    #[test]
    fn a_thread_without_a_busy_limit_gets_only_the_margin() {
        let h = Health::new();
        let hb = h.heartbeat("router");
        let start = h.inner.started;
        let _busy = hb.busy_at(start + Duration::from_secs(1));
        assert!(h.liveness_at(start + Duration::from_secs(6), STALL_AFTER).0);
        assert!(!h.liveness_at(start + Duration::from_secs(7), STALL_AFTER).0);
    }
}
