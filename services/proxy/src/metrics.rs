//! The proxy's metrics (docs/design.md §4).

use mensageria::metrics::TopicLabel;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// Handles to every proxy metric.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// Events received from publishers, by topic.
    pub events_in: Family<TopicLabel, Counter>,
    /// Events × matching subscriptions, by topic.
    pub deliveries: Family<TopicLabel, Counter>,
    /// Live subscriptions, by topic prefix.
    pub subscriptions: Family<TopicLabel, Gauge>,
    /// Bytes received from publishers.
    pub bytes_in: Counter,
    /// Bytes sent to subscribers (event bytes × matching subscriptions).
    pub bytes_out: Counter,
}

impl ProxyMetrics {
    /// Registers every proxy metric in `r` (the `mensageria_` sub-registry).
    pub fn register(r: &mut Registry) -> Self {
        let events_in = Family::default();
        r.register(
            "proxy_events_in",
            "Events received from publishers, by topic",
            events_in.clone(),
        );
        let deliveries = Family::default();
        r.register(
            "proxy_deliveries",
            "Events times matching subscriptions, by topic (fan-out = deliveries / events in)",
            deliveries.clone(),
        );
        let subscriptions = Family::default();
        r.register(
            "proxy_subscriptions",
            "Live subscriptions, by topic prefix",
            subscriptions.clone(),
        );
        let bytes: Family<DirectionLabel, Counter> = Family::default();
        r.register(
            "proxy_bytes",
            "Event bytes through the proxy",
            bytes.clone(),
        );
        let bytes_in = bytes
            .get_or_create(&DirectionLabel { direction: "in" })
            .clone();
        let bytes_out = bytes
            .get_or_create(&DirectionLabel { direction: "out" })
            .clone();
        ProxyMetrics {
            events_in,
            deliveries,
            subscriptions,
            bytes_in,
            bytes_out,
        }
    }
}
