//! Dispatch: queued requests go to the least recently used worker of their
//! service that has room; the header budget is rewritten to what is left;
//! a request whose deadline passed while it waited never leaves the broker.

use std::time::Instant;

use mensageria::{header::set_request_budget, mdp::WorkerCommand, socket::send_head_body, Status};
use tracing::debug;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{
    client::ClientKind,
    router::{Router, State},
    services::ServiceId,
    workers::WorkerKey,
};

/// What became of an attempt to hand a request to a worker.
pub(crate) enum Sent {
    /// The worker has it.
    Ok,
    /// Its deadline passed before a worker was free: not dispatched.
    Expired,
    /// The worker is gone (unroutable); the body is intact.
    WorkerGone,
}

impl Router {
    /// Hands queued requests of `id` to its workers with room, oldest first.
    pub(crate) fn dispatch(&mut self, id: ServiceId, now: Instant) {
        while self.services.get(id).waiting > 0 {
            let Some(worker) = self.pop_ready(id) else {
                return;
            };
            let inflight = &self.inflight;
            let Some(mut q) = self
                .services
                .get_mut(id)
                .pop_waiting(|c| inflight.contains(c))
            else {
                self.put_back_ready(id, worker);
                return;
            };
            match self.send_request(worker, q.corr, &mut q.body, q.bytes, q.since, now) {
                Sent::Ok => self.recycle(q.body),
                Sent::Expired => {
                    self.put_back_ready(id, worker);
                    self.recycle(q.body);
                    self.expire_unsent(id, q.corr);
                }
                Sent::WorkerGone => {
                    self.services.get_mut(id).requeue_front(q);
                    self.remove_worker(worker, now, true, "worker unreachable");
                }
            }
        }
    }

    /// Answers `timeout` for a request whose deadline passed before any
    /// worker got it (it never runs anywhere).
    pub(crate) fn expire_unsent(&mut self, id: ServiceId, corr: u64) {
        if let Some(p) = self.inflight.take(corr) {
            let s = self.services.get_mut(id);
            s.expired += 1;
            s.metrics.expired_in_queue.inc();
            self.reply_error(
                &p,
                Status::Timeout,
                "deadline passed before a worker was free",
            );
        }
    }

    /// The least recently used worker of `id` with room, if any.
    pub(crate) fn pop_ready(&mut self, id: ServiceId) -> Option<WorkerKey> {
        let s = self.services.get_mut(id);
        while let Some(key) = s.ready.pop_front() {
            if let Some(w) = self.workers.get_mut(key) {
                w.in_ring = false;
                if w.service == id && w.has_room() {
                    return Some(key);
                }
            }
        }
        None
    }

    /// Puts an unused worker back at the front of its ring.
    pub(crate) fn put_back_ready(&mut self, id: ServiceId, key: WorkerKey) {
        if let Some(w) = self.workers.get_mut(key) {
            w.in_ring = true;
            self.services.get_mut(id).ready.push_front(key);
        }
    }

    /// Adds a worker at the back of its ring if it has room and is not there.
    pub(crate) fn mark_ready(&mut self, key: WorkerKey) {
        if let Some(w) = self.workers.get_mut(key) {
            if w.has_room() && !w.in_ring {
                w.in_ring = true;
                self.services.get_mut(w.service).ready.push_back(key);
            }
        }
    }

    /// Sends `[identity, (""), proto, REQUEST, corr, "", body…]` to a worker
    /// with the header budget rewritten to what is left (`body_bytes`: the
    /// body's size, for the traffic metrics).
    pub(crate) fn send_request(
        &mut self,
        key: WorkerKey,
        corr: u64,
        body: &mut Vec<zmq::Message>,
        body_bytes: usize,
        since: Instant,
        now: Instant,
    ) -> Sent {
        let timeout = self.settings.request_timeout;
        let Some(p) = self.inflight.get_mut(corr) else {
            return Sent::Expired;
        };
        let deadline = p
            .client_deadline
            .map_or(p.started + timeout, |d| d.min(p.started + timeout));
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Sent::Expired;
        }
        if matches!(p.client, ClientKind::Ours { .. }) {
            let ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX);
            set_request_budget(&mut body[0], Some(ms.max(1)));
        }
        let Some(w) = self.workers.get_mut(key) else {
            return Sent::WorkerGone;
        };
        if self
            .frontend
            .send(&w.identity[..], zmq::SNDMORE | zmq::DONTWAIT)
            .is_err()
        {
            return Sent::WorkerGone;
        }
        let bytes = w.identity.len() + 8 + body_bytes;
        let corr_bytes = corr.to_le_bytes();
        let head =
            mensageria::mdp::worker_prefix(w.version, WorkerCommand::Request, w.leading_empty)
                .chain([&corr_bytes[..], b""]);
        if let Err(e) = send_head_body(&self.frontend, head, body.drain(..), zmq::DONTWAIT) {
            // libzmq queues a multipart message atomically once its first
            // frame is accepted, so only a terminating context gets here; the
            // request's deadline answers the client then.
            debug!(error.message = %e, "Sending a request to a worker failed midway.");
        }
        self.metrics.frontend_out.count(bytes);
        let was_idle = !w.is_busy();
        w.held.push(corr);
        let service = w.service;
        p.state = State::Dispatched;
        let waited = now.saturating_duration_since(since);
        if !p.span.is_disabled() {
            // The time queued, on the broker's span (it is exported with it).
            let us = i64::try_from(waited.as_micros()).unwrap_or(i64::MAX);
            p.span.set_attribute("mensageria.queue_wait_us", us);
        }
        let s = self.services.get_mut(service);
        s.metrics.queue_wait.observe(waited);
        if was_idle {
            s.busy += 1;
            s.metrics.workers_idle.dec();
            s.metrics.workers_busy.inc();
        }
        self.mark_ready(key);
        Sent::Ok
    }

    /// Returns a body buffer to the pool.
    pub(crate) fn recycle(&mut self, mut body: Vec<zmq::Message>) {
        body.clear();
        if self.spare.len() < 1024 {
            self.spare.push(body);
        }
    }
}
