//! The worker path: Majordomo worker commands (RFC 7/18) and our REQUEUE
//! and CREDIT extensions, as they arrive on the frontend.
//!
//! RFC 18: "The broker MUST respond to any valid but unexpected command by
//! sending DISCONNECT and then no further commands to that worker. The
//! broker SHOULD respond to invalid messages by dropping them and treating
//! that peer as invalid." So an unknown command, a reply for a request the
//! worker does not hold, a second READY, a bad service name or option frame
//! all end the same way: DISCONNECT, the worker removed (its requests
//! answered `unavailable`), the event counted and logged; nothing else is
//! touched.

use std::time::Instant;

use mensageria::{
    mdp::{self, Version, WorkerBody, WorkerCommand, WorkerOptions},
    socket::send_frames,
    Status,
};
use tracing::{debug, info, warn};

use crate::{
    metrics::DropReason,
    replies::Reply,
    requests::take,
    router::{hex, Router, State},
    services::{Queued, ServiceId},
    workers::{Worker, WorkerKey},
};

/// A reply, PARTIAL or REQUEUE from a worker for a request it holds: what
/// the broker does with the frames once their views are no longer borrowed.
pub(crate) struct Addressed {
    key: WorkerKey,
    corr: u64,
    command: WorkerCommand,
    /// Index of the first body frame.
    body_at: usize,
    /// The body's status and size.
    reply: Reply,
}

impl Router {
    /// Handles `[identity, command…]` from a worker, given its frames'
    /// views; a reply (or PARTIAL, REQUEUE) for a held request is returned
    /// for [`Router::on_addressed`] to move its body.
    pub(crate) fn on_worker(&mut self, frames: &[&[u8]], now: Instant) -> Option<Addressed> {
        let identity = frames[0];
        let key = self.workers.find(identity);
        if let Some(w) = key.and_then(|k| self.workers.get_mut(k)) {
            w.last_heard = now;
        }
        let msg = match mdp::parse_worker(&frames[1..]) {
            Ok(m) => m,
            Err(e) => {
                let (v, empty) = guess_version(&frames[1..]);
                let why = format!("invalid worker message: {e}");
                self.refuse(
                    &Peer {
                        identity,
                        version: v,
                        leading_empty: empty,
                    },
                    key,
                    DropReason::WorkerProtocol,
                    &why,
                    now,
                );
                return None;
            }
        };
        let (version, empty, command) = (msg.version, msg.leading_empty, msg.command);
        let peer = Peer {
            identity,
            version,
            leading_empty: empty,
        };
        let Some(key) = key else {
            match msg.body {
                WorkerBody::Ready { service, options } => {
                    self.register(&peer, service, options, now)
                }
                // RFC 18: a worker may send DISCONNECT at any time, even before READY.
                _ if command == WorkerCommand::Disconnect => {}
                _ => {
                    // A worker the broker does not know (lost, or from before a
                    // restart): DISCONNECT makes it reconnect and register again.
                    self.metrics.drop(DropReason::UnknownWorker);
                    debug!(worker = %hex(identity), command = command.name(), "Command from an unregistered worker; sent DISCONNECT.");
                    self.send_raw(&peer, WorkerCommand::Disconnect);
                }
            }
            return None;
        };
        match (command, msg.body) {
            (WorkerCommand::Heartbeat, _) => {}
            (WorkerCommand::Disconnect, _) => {
                info!(worker = %hex(identity), "Worker disconnected.");
                self.remove_worker(key, now, false, "worker disconnected");
            }
            (WorkerCommand::Credit, WorkerBody::Credit { options }) => {
                if let Some(w) = self.workers.get_mut(key) {
                    w.full = false;
                    w.credit = options.credit.unwrap_or(w.credit);
                    let service = w.service;
                    self.mark_ready(key);
                    self.dispatch(service, now);
                }
            }
            (
                c @ (WorkerCommand::Reply
                | WorkerCommand::Final
                | WorkerCommand::Partial
                | WorkerCommand::Requeue),
                WorkerBody::Addressed { address, body },
            ) => {
                let corr = <[u8; 8]>::try_from(address).ok().map(u64::from_le_bytes);
                let holds = corr
                    .is_some_and(|c| self.workers.get(key).is_some_and(|w| w.held.contains(&c)));
                let Some(corr) = corr.filter(|_| holds) else {
                    let why = format!("{} for a request this worker does not hold", c.name());
                    self.refuse(&peer, Some(key), DropReason::WorkerProtocol, &why, now);
                    return None;
                };
                return Some(Addressed {
                    key,
                    corr,
                    command: c,
                    body_at: frames.len() - body.len(),
                    reply: Reply::of(body),
                });
            }
            (c, _) => {
                let why = format!("unexpected {} from a registered worker", c.name());
                self.refuse(&peer, Some(key), DropReason::WorkerProtocol, &why, now);
            }
        }
        None
    }

    /// Moves the body of a reply, PARTIAL or REQUEUE on.
    pub(crate) fn on_addressed(&mut self, frames: &mut [zmq::Message], a: Addressed, now: Instant) {
        let body = &mut frames[a.body_at..];
        match a.command {
            WorkerCommand::Partial => self.on_partial(a.corr, body, a.reply, now),
            WorkerCommand::Requeue => self.on_requeue(a.key, a.corr, body, a.reply.bytes, now),
            _ => self.on_final(a.key, a.corr, body, a.reply, now),
        }
    }

    fn register(
        &mut self,
        peer: &Peer<'_>,
        service: mdp::ServiceName,
        options: WorkerOptions,
        now: Instant,
    ) {
        let added = if service.is_mmi() {
            let why = "the mmi. namespace belongs to the broker (RFC 8)";
            Err((DropReason::WorkerProtocol, why.to_owned()))
        } else {
            let labels = &mut self.metrics.services;
            self.services
                .find_or_add(service, || labels.get(service.as_str()), now)
                .map_err(|e| (DropReason::TooManyServices, e.to_string()))
        };
        let id = match added {
            Ok(id) => id,
            Err((reason, why)) => return self.refuse(peer, None, reason, &why, now),
        };
        let credit = options.credit.unwrap_or(1);
        info!(worker = %hex(peer.identity), %service, credit, instance = options.instance.as_deref().unwrap_or(""), "Worker registered.");
        let key = self.workers.insert(Worker {
            identity: peer.identity.into(),
            service: id,
            version: peer.version,
            leading_empty: peer.leading_empty,
            credit,
            held: Vec::with_capacity(credit as usize),
            full: false,
            served: 0,
            last_heard: now,
            instance: options.instance,
            in_ring: false,
        });
        let s = self.services.get_mut(id);
        s.workers += 1;
        s.no_workers_since = None;
        s.metrics.workers_idle.inc();
        self.mark_ready(key);
        self.dispatch(id, now);
    }

    /// FINAL (0.2) or REPLY (0.1): the worker is done with `corr`.
    fn on_final(
        &mut self,
        key: WorkerKey,
        corr: u64,
        body: &mut [zmq::Message],
        reply: Reply,
        now: Instant,
    ) {
        let service = self.release(key, corr);
        if let Some(w) = self.workers.get_mut(key) {
            w.served += 1;
            w.full = false;
        }
        match self.inflight.take(corr) {
            Some(p) => {
                self.forward_reply(&p, body, reply, true, now);
            }
            None => {
                self.metrics.drop(DropReason::LateReply);
                debug!(
                    corr,
                    "Late reply dropped (the client was answered `timeout`)."
                );
            }
        }
        self.mark_ready(key);
        self.dispatch(service, now);
    }

    /// PARTIAL (0.2): forwarded to 0.2 clients; others take one reply only.
    fn on_partial(&mut self, corr: u64, body: &mut [zmq::Message], reply: Reply, now: Instant) {
        let Some(p) = self.inflight.get(corr) else {
            return self.metrics.drop(DropReason::LateReply);
        };
        let streams = matches!(
            p.client,
            crate::client::ClientKind::Majordomo {
                version: Version::V2,
                ..
            }
        );
        if streams {
            self.forward_reply(p, body, reply, false, now);
        } else {
            self.metrics.drop(DropReason::PartialUnsupported);
        }
    }

    /// REQUEUE (extension): the worker hands `corr` back unrun; it goes to
    /// the front of its queue and the worker gets nothing until it replies
    /// or sends CREDIT.
    fn on_requeue(
        &mut self,
        key: WorkerKey,
        corr: u64,
        body: &mut [zmq::Message],
        bytes: usize,
        now: Instant,
    ) {
        let service = self.release(key, corr);
        if let Some(w) = self.workers.get_mut(key) {
            w.full = true;
        }
        let Some(p) = self.inflight.get_mut(corr) else {
            return self.metrics.drop(DropReason::LateReply);
        };
        p.state = State::Queued;
        let mut frames = self.spare.pop().unwrap_or_default();
        frames.extend(body.iter_mut().map(take));
        self.services.get_mut(service).requeue_front(Queued {
            corr,
            body: frames,
            bytes,
            since: now,
        });
        self.dispatch(service, now);
    }

    /// Forgets that the worker holds `corr`; returns its service.
    fn release(&mut self, key: WorkerKey, corr: u64) -> ServiceId {
        let w = self
            .workers
            .get_mut(key)
            .expect("the caller checked the worker is registered");
        w.release(corr);
        let (service, now_idle) = (w.service, !w.is_busy());
        if now_idle {
            let s = self.services.get_mut(service);
            s.busy -= 1;
            s.metrics.workers_busy.dec();
            s.metrics.workers_idle.inc();
        }
        service
    }

    /// Unregisters a worker: the requests it holds are answered
    /// `unavailable` at once (the client's retry goes elsewhere). `lost`
    /// counts it in `workers_lost_total`.
    pub(crate) fn remove_worker(&mut self, key: WorkerKey, now: Instant, lost: bool, why: &str) {
        let Some(w) = self.workers.remove(key) else {
            return;
        };
        let s = self.services.get_mut(w.service);
        s.workers -= 1;
        if w.is_busy() {
            s.busy -= 1;
            s.metrics.workers_busy.dec();
        } else {
            s.metrics.workers_idle.dec();
        }
        if lost {
            s.lost += 1;
            s.metrics.workers_lost.inc();
        }
        if s.workers == 0 {
            s.no_workers_since = Some(now);
        }
        for corr in &w.held {
            if let Some(p) = self.inflight.take(*corr) {
                self.reply_error(&p, Status::Unavailable, why);
            }
        }
        if self.services.get(w.service).workers == 0 && self.settings.no_worker_grace.is_zero() {
            self.flush_queue(w.service, "no worker for this service");
        }
    }

    /// Answers every request queued for `id` `unavailable` (its last worker
    /// left and no other came back in time).
    pub(crate) fn flush_queue(&mut self, id: ServiceId, why: &str) {
        loop {
            let inflight = &self.inflight;
            let Some(q) = self
                .services
                .get_mut(id)
                .pop_waiting(|c| inflight.contains(c))
            else {
                break;
            };
            if let Some(p) = self.inflight.take(q.corr) {
                self.reply_error(&p, Status::Unavailable, why);
            }
            self.recycle(q.body);
        }
    }

    /// Refuses a worker: DISCONNECT, removal, a counted and logged drop.
    fn refuse(
        &mut self,
        peer: &Peer<'_>,
        key: Option<WorkerKey>,
        reason: DropReason,
        why: &str,
        now: Instant,
    ) {
        self.metrics.drop(reason);
        warn!(worker = %hex(peer.identity), reason = why, "Worker refused; sent DISCONNECT.");
        self.send_raw(peer, WorkerCommand::Disconnect);
        if let Some(key) = key {
            self.remove_worker(key, now, true, "worker lost (protocol error)");
        }
    }

    /// Sends a frameless command (HEARTBEAT, DISCONNECT) to a registered worker.
    pub(crate) fn send_to_worker(&self, key: WorkerKey, cmd: WorkerCommand) {
        if let Some(w) = self.workers.get(key) {
            let peer = Peer {
                identity: &w.identity,
                version: w.version,
                leading_empty: w.leading_empty,
            };
            self.send_raw(&peer, cmd);
        }
    }

    fn send_raw(&self, peer: &Peer<'_>, cmd: WorkerCommand) {
        let prefix = mdp::worker_prefix(peer.version, cmd, peer.leading_empty);
        let frames = std::iter::once(peer.identity).chain(prefix);
        if send_frames(&self.frontend, frames, zmq::DONTWAIT).is_ok() {
            self.metrics.frontend_out.count(peer.identity.len() + 8);
        }
    }
}

/// A worker as the frontend sees it: its identity and how it speaks.
struct Peer<'a> {
    identity: &'a [u8],
    version: Version,
    leading_empty: bool,
}

/// The version and form to answer an unparsable worker message in.
fn guess_version(frames: &[&[u8]]) -> (Version, bool) {
    let empty = frames.first().is_some_and(|f| f.is_empty());
    let proto = frames.get(usize::from(empty)).copied();
    match proto.and_then(Version::of_worker) {
        Some(v) => (v, empty && v == Version::V2),
        None => (Version::V2, empty),
    }
}
