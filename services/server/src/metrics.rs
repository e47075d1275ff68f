//! The server's metrics (docs/design.md §4).

use mensageria::{
    metrics::{AtomicHistogram, StatusCounters, TopicLabel},
    Status,
};
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Handles to every server metric.
#[derive(Clone, Debug)]
pub struct ServerMetrics {
    requests: StatusCounters,
    /// Handler time.
    pub duration: AtomicHistogram,
    /// Events published, by topic.
    pub events_published: Family<TopicLabel, Counter>,
    /// Requests skipped because their deadline had passed before they started.
    pub late_skipped: Counter,
    /// Requests handed back to a broker because this server was full or draining.
    pub requeued: Counter,
}

impl ServerMetrics {
    /// Registers every server metric in `r` (the `mensageria_` sub-registry).
    pub fn register(r: &mut Registry) -> Self {
        let requests =
            StatusCounters::register(r, "server_requests", "Requests handled, by status");
        let duration = AtomicHistogram::default();
        r.register(
            "server_request_duration_seconds",
            "Handler time per request",
            duration.clone(),
        );
        let events_published = Family::default();
        r.register(
            "server_events_published",
            "Events published, by topic",
            events_published.clone(),
        );
        let late_skipped = Counter::default();
        r.register(
            "server_late_skipped",
            "Requests not run because their deadline had passed when a worker got to them",
            late_skipped.clone(),
        );
        let requeued = Counter::default();
        r.register(
            "server_requeued",
            "Requests handed back to the broker unrun (server full or draining)",
            requeued.clone(),
        );
        ServerMetrics {
            requests,
            duration,
            events_published,
            late_skipped,
            requeued,
        }
    }

    /// Requests answered so far with `status`.
    pub fn answered(&self, status: Status) -> u64 {
        self.requests.get(status)
    }

    /// Counts a handled request.
    pub fn request(&self, status: Status) {
        self.requests.inc(status);
    }
}
