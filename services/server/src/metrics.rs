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
        ServerMetrics {
            requests,
            duration,
            events_published,
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
