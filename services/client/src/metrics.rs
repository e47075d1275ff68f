//! The client's metrics (docs/design.md §4).

use std::time::Duration;

use mensageria::{
    metrics::{AtomicHistogram, StatusCounters, TopicLabel},
    Status,
};
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Handles to every client metric.
#[derive(Clone, Debug)]
pub struct ClientMetrics {
    requests: StatusCounters,
    /// Retries sent.
    pub retries: Counter,
    /// Round trip, first send to final reply.
    pub duration: AtomicHistogram,
    /// Events received, by topic.
    pub events_received: Family<TopicLabel, Counter>,
    /// Events missed, from sequence gaps.
    pub events_lost: Counter,
    /// Publish-to-receive lag.
    pub event_lag: AtomicHistogram,
}

impl ClientMetrics {
    /// Registers every client metric in `r` (the `mensageria_` sub-registry).
    pub fn register(r: &mut Registry) -> Self {
        let requests =
            StatusCounters::register(r, "client_requests", "Requests finished, by final status");
        let retries = Counter::default();
        r.register("client_retries", "Retries sent", retries.clone());
        let duration = AtomicHistogram::default();
        r.register(
            "client_request_duration_seconds",
            "Round trip from the first send to the final reply, retries included",
            duration.clone(),
        );
        let events_received = Family::default();
        r.register(
            "client_events_received",
            "Events received, by topic",
            events_received.clone(),
        );
        let events_lost = Counter::default();
        r.register(
            "client_events_lost",
            "Events missed, from per-publisher sequence gaps",
            events_lost.clone(),
        );
        let event_lag = AtomicHistogram::default();
        r.register(
            "client_event_lag_seconds",
            "Time from publication to receipt",
            event_lag.clone(),
        );
        ClientMetrics {
            requests,
            retries,
            duration,
            events_received,
            events_lost,
            event_lag,
        }
    }

    /// Metrics that nobody scrapes (for the one-shot subcommands).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }

    /// Counts a finished request.
    pub fn request(&self, status: Status, latency: Duration) {
        self.requests.inc(status);
        self.duration.observe(latency);
    }
}
