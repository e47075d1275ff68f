//! The broker's loop: one thread owns the ROUTER frontend (clients and
//! Majordomo workers) and the DEALER backend (plain REP workers) and polls
//! both; nothing else touches the routing state.
//!
//! - [`crate::requests`]: a client request is answered, queued for its
//!   service, handed to a ready worker ([`crate::dispatch`]), or sent to the
//!   REP backend ([`crate::rep`]); answers go out through [`crate::replies`];
//! - [`crate::worker_commands`]: READY, replies, REQUEUE, CREDIT,
//!   HEARTBEAT, DISCONNECT from workers, and refusal of bad input;
//! - here: the poll loop, deadlines, the periodic tick (heartbeats, lost
//!   workers, services without workers), the `/services` snapshot, the drain.

use std::time::{Duration, Instant};

use mensageria::{
    health::Heartbeat,
    mdp::{ServiceName, WorkerCommand},
    metrics::SocketMetrics,
    socket::recv_frames_into,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    client::ClientKind,
    inflight::InflightTable,
    metrics::BrokerMetrics,
    route::Route,
    services::{Registry, ServiceId},
    snapshot::SnapshotCell,
    workers::WorkerTable,
};

/// Most messages handled from one socket per poll wake-up, so neither side
/// can starve the other.
const BATCH: usize = 512;
/// Receive slots kept between messages: a Majordomo request or reply has
/// at most 7 frames, more with a longer route.
const KEEP_FRAMES: usize = 16;
/// How long a drained broker keeps its connections open after the last
/// reply, so clients can read it before the connection closes.
const DRAIN_LINGER: Duration = Duration::from_millis(200);
/// Longest poll wait: bounds how stale the heartbeat and cancellation check get.
const POLL_MS: i64 = 100;
/// How often the `/services` snapshot is refreshed.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(250);

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In its service's queue.
    Queued,
    /// Held by a Majordomo worker.
    Dispatched,
    /// Sent to the REP backend.
    Rep,
}

/// What the broker remembers about a request it accepted.
#[derive(Debug)]
pub struct Pending {
    /// The client's route frames.
    pub route: Route,
    /// How the client spoke.
    pub client: ClientKind,
    /// The service it is for.
    pub service: ServiceId,
    /// When the request entered the frontend.
    pub started: Instant,
    /// The client's own deadline (from the header budget), if earlier than
    /// the broker's.
    pub client_deadline: Option<Instant>,
    /// Where it is.
    pub state: State,
    /// The broker's span for a sampled request; disabled otherwise.
    pub span: tracing::Span,
}

/// The broker's settings (from [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// In-flight cap (queued + dispatched).
    pub max_inflight: usize,
    /// Queue cap per service.
    pub max_queue: usize,
    /// Service of requests that name none.
    pub default_service: ServiceName,
    /// Majordomo heartbeat interval.
    pub heartbeat_ivl: Duration,
    /// Missed intervals before a worker is lost.
    pub liveness: u32,
    /// How long requests wait for a worker of a service that just lost its last one.
    pub no_worker_grace: Duration,
    /// How long a drain may take.
    pub shutdown_grace: Duration,
}

/// Everything the loop is built from.
pub struct RouterParts {
    /// ROUTER socket clients and Majordomo workers connect to.
    pub frontend: zmq::Socket,
    /// DEALER socket REP workers connect to.
    pub backend: zmq::Socket,
    /// Settings.
    pub settings: Settings,
    /// Broker metrics.
    pub metrics: BrokerMetrics,
    /// Socket metrics (peers of the REP backend).
    pub sockets: SocketMetrics,
    /// Liveness heartbeat.
    pub heartbeat: Heartbeat,
    /// Shutdown signal.
    pub shutdown: CancellationToken,
    /// Where the `/services` view is published.
    pub snapshot: SnapshotCell,
    /// Most services registered at once.
    pub max_services: usize,
}

/// The routing loop's state.
pub struct Router {
    pub(crate) frontend: zmq::Socket,
    pub(crate) backend: zmq::Socket,
    pub(crate) settings: Settings,
    pub(crate) metrics: BrokerMetrics,
    pub(crate) sockets: SocketMetrics,
    heartbeat: Heartbeat,
    shutdown: CancellationToken,
    snapshot: SnapshotCell,
    pub(crate) inflight: InflightTable<Pending>,
    pub(crate) services: Registry,
    pub(crate) workers: WorkerTable,
    pub(crate) default_service: ServiceId,
    /// Spare body buffers for queued requests (no allocation per request).
    pub(crate) spare: Vec<Vec<zmq::Message>>,
    /// Receive buffer, reused message by message.
    frames: Vec<zmq::Message>,
}

impl Router {
    /// Builds the loop state around two bound sockets.
    pub fn new(mut parts: RouterParts) -> Self {
        let mut services = Registry::new(parts.max_services);
        let name = parts.settings.default_service;
        let default_metrics = parts.metrics.services.get(name.as_str());
        let default_service = services
            .find_or_add(name, || default_metrics, Instant::now())
            .expect("an empty registry has room for the default service");
        services.get_mut(default_service).pinned = true;
        parts.sockets.declare("backend");
        Router {
            frontend: parts.frontend,
            backend: parts.backend,
            settings: parts.settings,
            metrics: parts.metrics,
            sockets: parts.sockets,
            heartbeat: parts.heartbeat,
            shutdown: parts.shutdown,
            snapshot: parts.snapshot,
            inflight: InflightTable::new(),
            services,
            workers: WorkerTable::default(),
            default_service,
            spare: Vec::new(),
            frames: Vec::with_capacity(8),
        }
    }

    /// Runs until shutdown and drain are complete.
    ///
    /// # Errors
    /// Only on a libzmq failure of the poll itself (context terminated).
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut drain_deadline: Option<Instant> = None;
        let mut all_answered: Option<Instant> = None;
        let tick_every = self.settings.heartbeat_ivl.max(Duration::from_millis(10));
        let mut next_tick = Instant::now() + tick_every;
        let mut next_snapshot = Instant::now();
        loop {
            let now = Instant::now();
            self.heartbeat.beat_at(now);
            self.expire(now);
            if now >= next_tick {
                self.tick(now);
                next_tick = now + tick_every;
            }
            if now >= next_snapshot {
                self.snapshot.publish(crate::snapshot::build(&self, now));
                next_snapshot = now + SNAPSHOT_EVERY;
            }
            if drain_deadline.is_none() && self.shutdown.is_cancelled() {
                info!(
                    inflight = self.inflight.len(),
                    "Draining: new requests get `unavailable`; waiting for replies."
                );
                drain_deadline = Some(now + self.settings.shutdown_grace);
            }
            if let Some(deadline) = drain_deadline {
                if self.inflight.is_empty() {
                    // Give clients a moment to read the last replies: a
                    // connect-side socket with ZMQ_IMMEDIATE discards what it
                    // has not read when the connection closes.
                    let linger_until = *all_answered.get_or_insert(now + DRAIN_LINGER);
                    if now >= linger_until.min(deadline) {
                        break;
                    }
                }
                if now >= deadline {
                    self.abandon_all();
                    break;
                }
            }
            let wake = [
                self.inflight.next_deadline(),
                Some(next_tick),
                Some(next_snapshot),
            ]
            .into_iter()
            .flatten()
            .min()
            .map_or(POLL_MS, |d| {
                d.saturating_duration_since(now).as_millis() as i64 + 1
            });
            // Everything this wake-up did is visible to a scrape before the
            // loop sleeps.
            self.metrics.flush(self.inflight.len());
            let mut items = [
                self.frontend.as_poll_item(zmq::POLLIN),
                self.backend.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, wake.min(POLL_MS)) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(anyhow::anyhow!("broker poll failed: {e}")),
            }
            let (front_ready, back_ready) = (items[0].is_readable(), items[1].is_readable());
            if back_ready {
                self.pump(false, drain_deadline.is_some());
            }
            if front_ready {
                self.pump(true, drain_deadline.is_some());
            }
        }
        self.disconnect_all_workers();
        self.metrics.flush(self.inflight.len());
        info!("Broker loop stopped.");
        Ok(())
    }

    /// Receives up to [`BATCH`] messages from one socket.
    fn pump(&mut self, frontend: bool, draining: bool) {
        for _ in 0..BATCH {
            let mut frames = std::mem::take(&mut self.frames);
            let socket = if frontend {
                &self.frontend
            } else {
                &self.backend
            };
            let received = recv_frames_into(socket, zmq::DONTWAIT, &mut frames);
            match received {
                Ok(n) if frontend => self.on_frontend(&mut frames[..n], draining),
                Ok(n) => self.on_rep_reply(&mut frames[..n]),
                Err(e) => {
                    if e != zmq::Error::EAGAIN {
                        debug!(frontend, error.message = %e, "Receive failed.");
                    }
                    self.frames = frames;
                    return;
                }
            }
            // Frames that were not moved on keep their content until a later
            // message reuses the slot; an unusually long message (a deep relay
            // envelope, or junk) is not kept past this one.
            frames.truncate(KEEP_FRAMES);
            self.frames = frames;
        }
    }

    /// Answers every request whose deadline has passed with `timeout`.
    fn expire(&mut self, now: Instant) {
        let mut n = 0;
        while let Some(p) = self.inflight.pop_expired(now) {
            if p.state == State::Queued {
                self.count_expired_in_queue(&p);
            }
            self.reply_error(
                &p,
                mensageria::Status::Timeout,
                "no reply from a worker within the request timeout",
            );
            n += 1;
        }
        if n > 0 {
            debug!(expired = n, "Requests timed out.");
        }
    }

    /// Accounts for a queued request answered `timeout` without a dispatch.
    pub(crate) fn count_expired_in_queue(&mut self, p: &Pending) {
        let inflight = &self.inflight;
        let s = self.services.get_mut(p.service);
        s.forget_waiting(|c| inflight.contains(c));
        s.expired += 1;
        s.metrics.expired_in_queue.inc();
    }

    /// Once per heartbeat interval: heartbeats to every worker, removal of
    /// silent ones, `unavailable` for requests of services whose grace for
    /// a returning worker is over, and removal of unused services.
    fn tick(&mut self, now: Instant) {
        let silent_for = self.settings.heartbeat_ivl * self.settings.liveness;
        for key in self.workers.keys() {
            let Some(w) = self.workers.get(key) else {
                continue;
            };
            if now.saturating_duration_since(w.last_heard) > silent_for {
                warn!(worker = %hex(&w.identity), held = w.held.len(), "Worker silent for too long; removed.");
                self.send_to_worker(key, WorkerCommand::Disconnect);
                self.remove_worker(key, now, true, "worker lost (no heartbeat)");
            } else {
                self.send_to_worker(key, WorkerCommand::Heartbeat);
            }
        }
        let grace = self.settings.no_worker_grace;
        for id in self.services.ids() {
            let s = self.services.get(id);
            let grace_over = s
                .no_workers_since
                .is_some_and(|t| now.saturating_duration_since(t) >= grace);
            if grace_over {
                self.flush_queue(id, "no worker for this service");
                self.services.remove_if_unused(id);
            }
        }
    }

    /// Answers every request still pending `unavailable` (drain grace over).
    fn abandon_all(&mut self) {
        let left = self.inflight.len();
        while let Some(p) = self.inflight.pop_oldest() {
            self.reply_error(
                &p,
                mensageria::Status::Unavailable,
                "broker stopped before the reply arrived",
            );
        }
        warn!(
            abandoned = left,
            "Drain grace period over; answered the rest `unavailable`."
        );
    }

    /// Tells every worker the broker is going (RFC 7/18 DISCONNECT), so it
    /// reconnects and registers again with whatever broker comes back.
    fn disconnect_all_workers(&mut self) {
        for key in self.workers.keys() {
            self.send_to_worker(key, WorkerCommand::Disconnect);
        }
    }

    /// Number of peers of the REP backend.
    pub(crate) fn rep_peers(&self) -> i64 {
        self.sockets.peer_count("backend")
    }
}

/// Lower-case hex of an identity, for logs and the `/services` view.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
