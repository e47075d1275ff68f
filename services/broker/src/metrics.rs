//! The broker's metrics (docs/design.md §4 and §7), pre-resolved so the routing loop
//! only does atomic adds: per-service handles are looked up once, when a
//! service is registered, not per request.

use std::{cell::Cell, collections::HashMap};

use mensageria::{
    metrics::{AtomicHistogram, TOPIC_LABEL_CAP},
    Status,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SocketDirection {
    socket: &'static str,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceStatus {
    service: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceState {
    service: String,
    state: &'static str,
}

/// Why the broker dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A reply whose request had already timed out (or was never ours).
    LateReply,
    /// A message without a valid envelope or correlation frame.
    Malformed,
    /// A reply whose client is gone or not reading.
    ClientGone,
    /// A worker broke the Majordomo worker protocol (it was disconnected).
    WorkerProtocol,
    /// A READY for a new service past `MAX_SERVICES` (the worker was disconnected).
    TooManyServices,
    /// A PARTIAL reply for a client that can only take one reply.
    PartialUnsupported,
    /// A command from a worker that is not registered (answered DISCONNECT).
    UnknownWorker,
}

impl DropReason {
    const ALL: [DropReason; 7] = [
        DropReason::LateReply,
        DropReason::Malformed,
        DropReason::ClientGone,
        DropReason::WorkerProtocol,
        DropReason::TooManyServices,
        DropReason::PartialUnsupported,
        DropReason::UnknownWorker,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DropReason::LateReply => "late_reply",
            DropReason::Malformed => "malformed",
            DropReason::ClientGone => "client_gone",
            DropReason::WorkerProtocol => "worker_protocol",
            DropReason::TooManyServices => "too_many_services",
            DropReason::PartialUnsupported => "partial_unsupported",
            DropReason::UnknownWorker => "unknown_worker",
        }
    }
}

/// The label value of requests that name no registered service, and of
/// services beyond [`TOPIC_LABEL_CAP`].
pub const OTHER: &str = "other";

/// The metrics of one `service` label value.
#[derive(Clone, Debug)]
pub struct ServiceMetrics {
    /// Requests received for the service.
    pub requests: Counter,
    replies: [Counter; 6],
    /// Frontend in → reply out.
    pub duration: AtomicHistogram,
    /// Requests waiting in the service's queue.
    pub queue_depth: Gauge,
    /// Time from a request entering the queue to its dispatch.
    pub queue_wait: AtomicHistogram,
    /// Registered workers holding no request.
    pub workers_idle: Gauge,
    /// Registered workers holding at least one request.
    pub workers_busy: Gauge,
    /// Workers removed for silence or disconnection.
    pub workers_lost: Counter,
    /// Requests whose deadline passed while queued (never dispatched).
    pub expired_in_queue: Counter,
}

impl ServiceMetrics {
    /// Counts a reply sent with `status`.
    pub fn reply(&self, status: Status) {
        self.replies[status as usize].inc();
    }

    /// Replies sent with `status` so far.
    pub fn replies(&self, status: Status) -> u64 {
        self.replies[status as usize].get()
    }
}

/// The per-service families.
#[derive(Debug)]
struct Families {
    requests: Family<ServiceLabel, Counter>,
    replies: Family<ServiceStatus, Counter>,
    duration: Family<ServiceLabel, AtomicHistogram>,
    queue_depth: Family<ServiceLabel, Gauge>,
    queue_wait: Family<ServiceLabel, AtomicHistogram>,
    workers: Family<ServiceState, Gauge>,
    workers_lost: Family<ServiceLabel, Counter>,
    expired: Family<ServiceLabel, Counter>,
}

/// The capped map from service name to its metric handles.
#[derive(Debug)]
pub struct ServiceLabels {
    families: Families,
    by_name: HashMap<Box<[u8]>, ServiceMetrics>,
    /// Handles of the `other` label value.
    pub other: ServiceMetrics,
}

impl Families {
    fn register(r: &mut Registry) -> Self {
        let requests = Family::default();
        r.register(
            "broker_requests",
            "Requests received from clients, by service",
            requests.clone(),
        );
        let replies = Family::default();
        r.register(
            "broker_replies",
            "Replies sent to clients, by service and status",
            replies.clone(),
        );
        let duration = Family::default();
        r.register(
            "broker_request_duration_seconds",
            "Time from a request entering the frontend to its reply leaving it, by service",
            duration.clone(),
        );
        let queue_depth = Family::default();
        r.register(
            "broker_queue_depth",
            "Requests waiting in the broker for a worker of their service",
            queue_depth.clone(),
        );
        let queue_wait = Family::default();
        r.register(
            "broker_queue_wait_seconds",
            "Time requests spent queued in the broker before dispatch, by service",
            queue_wait.clone(),
        );
        let workers = Family::default();
        r.register(
            "broker_workers",
            "Registered Majordomo workers by service and state (idle: holds no request; busy: holds one or more)",
            workers.clone(),
        );
        let workers_lost = Family::default();
        r.register(
            "broker_workers_lost",
            "Workers removed because they went silent, disconnected or broke the protocol",
            workers_lost.clone(),
        );
        let expired = Family::default();
        r.register(
            "broker_expired_in_queue",
            "Requests answered `timeout` while still queued (never dispatched)",
            expired.clone(),
        );
        Families {
            requests,
            replies,
            duration,
            queue_depth,
            queue_wait,
            workers,
            workers_lost,
            expired,
        }
    }

    fn resolve(&self, service: &str) -> ServiceMetrics {
        // Each `get_or_create` returns a read guard on its family: take one
        // handle per statement, or a second insert into the same family
        // (idle, then busy) would wait on the first guard forever.
        let l = ServiceLabel {
            service: service.to_owned(),
        };
        let state = |state| ServiceState {
            service: service.to_owned(),
            state,
        };
        let status = |s: Status| ServiceStatus {
            service: service.to_owned(),
            status: s.as_str(),
        };
        let replies = Status::ALL.map(|s| self.replies.get_or_create(&status(s)).clone());
        let requests = self.requests.get_or_create(&l).clone();
        let duration = self.duration.get_or_create(&l).clone();
        let queue_depth = self.queue_depth.get_or_create(&l).clone();
        let queue_wait = self.queue_wait.get_or_create(&l).clone();
        let workers_idle = self.workers.get_or_create(&state("idle")).clone();
        let workers_busy = self.workers.get_or_create(&state("busy")).clone();
        let workers_lost = self.workers_lost.get_or_create(&l).clone();
        let expired_in_queue = self.expired.get_or_create(&l).clone();
        ServiceMetrics {
            requests,
            replies,
            duration,
            queue_depth,
            queue_wait,
            workers_idle,
            workers_busy,
            workers_lost,
            expired_in_queue,
        }
    }
}

impl ServiceLabels {
    fn register(r: &mut Registry) -> Self {
        let families = Families::register(r);
        let other = families.resolve(OTHER);
        ServiceLabels {
            families,
            by_name: HashMap::new(),
            other,
        }
    }

    /// The handles of `service`: its own label for the first
    /// [`TOPIC_LABEL_CAP`] names seen, `other` after that. Called when a
    /// service is registered, not per request.
    pub fn get(&mut self, service: &str) -> ServiceMetrics {
        if let Some(m) = self.by_name.get(service.as_bytes()) {
            return m.clone();
        }
        if self.by_name.len() >= TOPIC_LABEL_CAP || service == OTHER {
            return self.other.clone();
        }
        let m = self.families.resolve(service);
        self.by_name.insert(service.as_bytes().into(), m.clone());
        m
    }
}

/// Traffic counters of one socket and direction. Messages are tallied
/// locally and added to the shared counters by [`Traffic::flush`], which
/// the loop calls once per poll wake-up: two atomic adds per wake-up instead
/// of two per message, and a scrape is never more than one wake-up behind.
#[derive(Debug)]
pub struct Traffic {
    /// Messages.
    pub messages: Counter,
    /// Bytes (sum of frame sizes).
    pub bytes: Counter,
    /// Messages and bytes counted since the last flush.
    unflushed: Cell<(u64, u64)>,
}

impl Traffic {
    fn new(messages: Counter, bytes: Counter) -> Self {
        Traffic {
            messages,
            bytes,
            unflushed: Cell::new((0, 0)),
        }
    }

    /// Counts one message of `bytes` bytes (visible after the next flush).
    pub fn count(&self, bytes: usize) {
        let (m, b) = self.unflushed.get();
        self.unflushed.set((m + 1, b + bytes as u64));
    }

    /// Adds what was counted since the last flush to the counters.
    pub fn flush(&self) {
        let (m, b) = self.unflushed.take();
        if m > 0 {
            self.messages.inc_by(m);
            self.bytes.inc_by(b);
        }
    }
}

/// Handles to every broker metric.
#[derive(Debug)]
pub struct BrokerMetrics {
    /// Per-service series.
    pub services: ServiceLabels,
    /// Requests in flight (queued or at a worker).
    pub inflight: Gauge,
    dropped: [Counter; 7],
    /// Frontend in.
    pub frontend_in: Traffic,
    /// Frontend out.
    pub frontend_out: Traffic,
    /// Backend in.
    pub backend_in: Traffic,
    /// Backend out.
    pub backend_out: Traffic,
}

impl BrokerMetrics {
    /// Registers every broker metric in `r` (the `mensageria_` sub-registry).
    pub fn register(r: &mut Registry) -> Self {
        let services = ServiceLabels::register(r);
        let inflight = Gauge::default();
        r.register(
            "broker_inflight_requests",
            "Requests accepted and not yet answered (queued or at a worker)",
            inflight.clone(),
        );
        let dropped_f: Family<ReasonLabel, Counter> = Family::default();
        r.register(
            "broker_dropped",
            "Messages dropped, by reason",
            dropped_f.clone(),
        );
        let dropped = DropReason::ALL.map(|d| {
            dropped_f
                .get_or_create(&ReasonLabel { reason: d.as_str() })
                .clone()
        });
        let messages: Family<SocketDirection, Counter> = Family::default();
        r.register(
            "broker_messages",
            "Messages through the broker's sockets",
            messages.clone(),
        );
        let bytes: Family<SocketDirection, Counter> = Family::default();
        r.register(
            "broker_bytes",
            "Bytes through the broker's sockets",
            bytes.clone(),
        );
        let traffic = |socket, direction| {
            let l = SocketDirection { socket, direction };
            Traffic::new(
                messages.get_or_create(&l).clone(),
                bytes.get_or_create(&l).clone(),
            )
        };
        BrokerMetrics {
            services,
            inflight,
            dropped,
            frontend_in: traffic("frontend", "in"),
            frontend_out: traffic("frontend", "out"),
            backend_in: traffic("backend", "in"),
            backend_out: traffic("backend", "out"),
        }
    }

    /// Counts a dropped message.
    pub fn drop(&self, reason: DropReason) {
        self.dropped[reason as usize].inc();
    }

    /// Publishes what the loop tallied locally during a poll wake-up: the
    /// traffic counts and the in-flight gauge (`inflight` requests now).
    pub fn flush(&self, inflight: usize) {
        for t in [
            &self.frontend_in,
            &self.frontend_out,
            &self.backend_in,
            &self.backend_out,
        ] {
            t.flush();
        }
        self.inflight.set(inflight as i64);
    }
}
