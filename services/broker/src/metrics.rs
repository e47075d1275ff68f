//! The broker's metrics (design §4), pre-resolved so the routing loop only
//! does atomic adds.

use mensageria::{
    metrics::{AtomicHistogram, StatusCounters},
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

/// Why the broker dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A reply whose request had already timed out (or was never ours).
    LateReply,
    /// A message without a valid envelope or correlation frame.
    Malformed,
    /// A reply whose client is gone or not reading.
    ClientGone,
}

impl DropReason {
    const ALL: [DropReason; 3] = [
        DropReason::LateReply,
        DropReason::Malformed,
        DropReason::ClientGone,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DropReason::LateReply => "late_reply",
            DropReason::Malformed => "malformed",
            DropReason::ClientGone => "client_gone",
        }
    }
}

/// Traffic counters of one socket and direction.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// Messages.
    pub messages: Counter,
    /// Bytes (sum of frame sizes).
    pub bytes: Counter,
}

impl Traffic {
    /// Counts one message of `bytes` bytes.
    pub fn count(&self, bytes: usize) {
        self.messages.inc();
        self.bytes.inc_by(bytes as u64);
    }
}

/// Handles to every broker metric.
#[derive(Clone, Debug)]
pub struct BrokerMetrics {
    /// Requests received from clients.
    pub requests: Counter,
    replies: StatusCounters,
    /// Frontend in → reply out.
    pub duration: AtomicHistogram,
    /// Requests in flight.
    pub inflight: Gauge,
    dropped: [Counter; 3],
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
        let requests = Counter::default();
        r.register(
            "broker_requests",
            "Requests received from clients",
            requests.clone(),
        );
        let replies =
            StatusCounters::register(r, "broker_replies", "Replies sent to clients, by status");
        let duration = AtomicHistogram::default();
        r.register(
            "broker_request_duration_seconds",
            "Time from a request entering the frontend to its reply leaving it",
            duration.clone(),
        );
        let inflight = Gauge::default();
        r.register(
            "broker_inflight_requests",
            "Requests forwarded and not yet answered",
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
            Traffic {
                messages: messages.get_or_create(&l).clone(),
                bytes: bytes.get_or_create(&l).clone(),
            }
        };
        BrokerMetrics {
            requests,
            replies,
            duration,
            inflight,
            dropped,
            frontend_in: traffic("frontend", "in"),
            frontend_out: traffic("frontend", "out"),
            backend_in: traffic("backend", "in"),
            backend_out: traffic("backend", "out"),
        }
    }

    /// Counts a reply sent with `status`.
    pub fn reply(&self, status: Status) {
        self.replies.inc(status);
    }

    /// Counts a dropped message.
    pub fn drop(&self, reason: DropReason) {
        self.dropped[reason as usize].inc();
    }
}
