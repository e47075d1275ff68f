//! Metrics plumbing: the explicit registry each service builds, the metrics
//! every service has (build info, ZeroMQ socket peers and events, process),
//! a lock-free histogram, and per-topic counters with bounded cardinality.
//!
//! Names follow docs/design.md §4: the `mensageria_` prefix comes from the
//! sub-registry, counters get `_total` from the encoder, units are base units.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::header::Status;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, MetricType, TypedMetric},
    registry::Registry,
};

/// Latency buckets in seconds: 25 µs to 10 s, for ZeroMQ hops through
/// handlers that may sleep.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Maximum distinct `topic` label values per family; the rest become `other`.
pub const TOPIC_LABEL_CAP: usize = 64;

/// Builds a service's root registry: process metrics at the root, and the
/// `mensageria_` sub-registry (returned through `f`) with `build_info`.
pub fn new_registry(service: &str, f: impl FnOnce(&mut Registry)) -> Registry {
    let mut root = Registry::default();
    root.register_collector(Box::new(ProcessCollector));
    let sub = root.sub_registry_with_prefix("mensageria");
    let build: Family<BuildLabels, Gauge> = Family::default();
    build
        .get_or_create(&BuildLabels {
            service: service.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .set(1);
    sub.register("build_info", "Build information; value is always 1", build);
    f(sub);
    root
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    service: String,
    version: String,
}

/// A histogram whose observations are lock-free atomic adds.
///
/// Cloning shares the same series (like prometheus-client's metrics).
#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// One counter per bound plus the +Inf bucket (non-cumulative).
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum in nanoseconds (for seconds histograms) so it stays an integer add.
    sum_nanos: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self::new(&LATENCY_BUCKETS)
    }
}

impl AtomicHistogram {
    /// A histogram over the given (ascending) bucket bounds, in seconds.
    pub fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            inner: Arc::new(HistogramInner {
                bounds,
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                count: AtomicU64::new(0),
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.inner.bounds.partition_point(|&b| b < secs);
        self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        self.inner.sum_nanos.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = Vec::with_capacity(self.inner.buckets.len());
        let mut total = 0;
        for (i, b) in self.inner.buckets.iter().enumerate() {
            let n = b.load(Ordering::Relaxed);
            total += n;
            let upper = self.inner.bounds.get(i).copied().unwrap_or(f64::MAX);
            buckets.push((upper, n));
        }
        // Count is derived from the buckets so a scrape racing an observe
        // never shows _count disagreeing with the +Inf bucket.
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Builds a service's registry (see [`new_registry`]) with the socket
/// metrics and the service's own, registered by `register`.
pub fn service_registry<M>(
    service: &str,
    register: impl FnOnce(&mut Registry) -> M,
) -> (Registry, SocketMetrics, M) {
    let mut registered = None;
    let registry = new_registry(service, |r| {
        registered = Some((SocketMetrics::register(r), register(r)));
    });
    // new_registry calls the closure exactly once.
    let (sockets, own) = registered.expect("new_registry runs the registration closure");
    (registry, sockets, own)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// A counter family labelled `{status}` with one pre-created series per
/// [`Status`], so counting is a plain atomic add.
#[derive(Clone, Debug)]
pub struct StatusCounters([Counter; 6]);

impl StatusCounters {
    /// Registers the family `name` in `r`.
    pub fn register(r: &mut Registry, name: &str, help: &str) -> Self {
        let family: Family<StatusLabel, Counter> = Family::default();
        r.register(name, help, family.clone());
        StatusCounters(Status::ALL.map(|s| {
            family
                .get_or_create(&StatusLabel { status: s.as_str() })
                .clone()
        }))
    }

    /// Counts one of `status`.
    pub fn inc(&self, status: Status) {
        self.0[status as usize].inc();
    }

    /// The count of `status` so far.
    pub fn get(&self, status: Status) -> u64 {
        self.0[status as usize].get()
    }
}

/// Label set `{socket}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketLabel {
    /// Socket role, e.g. `frontend`.
    pub socket: &'static str,
}

/// Label set `{socket, event}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SocketEventLabels {
    /// Socket role.
    pub socket: &'static str,
    /// Monitor event name.
    pub event: &'static str,
}

/// `mensageria_zmq_peers` and `mensageria_zmq_socket_events_total`.
#[derive(Clone, Debug, Default)]
pub struct SocketMetrics {
    /// Connected peers per socket.
    pub peers: Family<SocketLabel, Gauge>,
    /// Monitor events per socket and event.
    pub events: Family<SocketEventLabels, Counter>,
}

impl SocketMetrics {
    /// Registers both families in `registry` (the `mensageria_` sub-registry).
    pub fn register(registry: &mut Registry) -> Self {
        let m = SocketMetrics::default();
        registry.register(
            "zmq_peers",
            "Peers currently connected to a ZeroMQ socket (from its monitor)",
            m.peers.clone(),
        );
        registry.register(
            "zmq_socket_events",
            "ZeroMQ socket monitor events",
            m.events.clone(),
        );
        m
    }

    /// Current number of peers connected to sockets of this role.
    pub fn peer_count(&self, socket: &'static str) -> i64 {
        self.peers.get_or_create(&SocketLabel { socket }).get()
    }

    /// Pre-creates the peers series of a socket so it shows as 0 before any peer.
    pub fn declare(&self, socket: &'static str) {
        let _ = self.peers.get_or_create(&SocketLabel { socket });
    }
}

/// Label set `{topic}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// First dotted segment of the topic, or `other` / `none`.
    pub topic: String,
}

/// The `topic` label for a topic: its first dotted segment when that is a
/// short, label-safe string; `none` for an empty topic; `other` otherwise.
pub fn topic_segment(topic: &[u8]) -> &str {
    let seg = topic.split(|&b| b == b'.').next().unwrap_or_default();
    if seg.is_empty() {
        return "none";
    }
    if seg.len() > 32
        || !seg
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    {
        return "other";
    }
    // All bytes checked ASCII just above.
    std::str::from_utf8(seg).unwrap_or("other")
}

/// A per-thread cache in front of a `Family<TopicLabel, M>` that caps the
/// number of label values at [`TOPIC_LABEL_CAP`] (the rest count as `other`),
/// so a flood of topics cannot explode cardinality, and that looks a topic up
/// without taking the family's lock once it has been seen.
#[derive(Debug)]
pub struct TopicCounters<M: Clone + Default + prometheus_client::metrics::TypedMetric> {
    family: Family<TopicLabel, M>,
    cache: HashMap<Vec<u8>, M>,
    other: M,
}

impl<M> TopicCounters<M>
where
    M: Clone + Default + TypedMetric + EncodeMetric,
{
    /// Wraps a family (which should be registered already).
    pub fn new(family: Family<TopicLabel, M>) -> Self {
        let other = family
            .get_or_create(&TopicLabel {
                topic: "other".into(),
            })
            .clone();
        TopicCounters {
            family,
            cache: HashMap::new(),
            other,
        }
    }

    /// The metric for this topic's label.
    pub fn get(&mut self, topic: &[u8]) -> &M {
        let seg_len = topic.iter().position(|&b| b == b'.').unwrap_or(topic.len());
        let key = &topic[..seg_len];
        if !self.cache.contains_key(key) {
            let label = topic_segment(key);
            if label == "other" || self.cache.len() >= TOPIC_LABEL_CAP {
                return &self.other;
            }
            let m = self
                .family
                .get_or_create(&TopicLabel {
                    topic: label.to_owned(),
                })
                .clone();
            self.cache.insert(key.to_vec(), m);
        }
        &self.cache[key]
    }
}

/// Exposes `process_*` metrics from `/proc/self` (Linux; nothing elsewhere).
#[derive(Debug)]
struct ProcessCollector;

/// Kernel clock ticks per second used by /proc (USER_HZ; 100 on Linux ABIs).
const USER_HZ: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = read_process_stats() else {
            return Ok(());
        };
        let cpu = prometheus_client::metrics::counter::ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.rss_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.vsize_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds,
            ),
            ("process_threads", "Number of OS threads", p.threads),
            (
                "process_start_time_seconds",
                "Start time since the Unix epoch in seconds",
                p.start_time,
            ),
        ] {
            let g = prometheus_client::metrics::gauge::ConstGauge::new(value as i64);
            g.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        Ok(())
    }
}

/// Process figures read from /proc.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStats {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub rss_bytes: u64,
    /// Virtual size.
    pub vsize_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Soft limit on open file descriptors (`RLIMIT_NOFILE`; `i64::MAX` when unlimited).
    pub max_fds: u64,
    /// OS threads.
    pub threads: u64,
    /// Start time, seconds since the epoch.
    pub start_time: u64,
}

/// Reads this process's figures from /proc; `None` where /proc is absent.
pub fn read_process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name (which may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Indices are field numbers from proc(5) minus 3.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let utime = ticks(11)?;
    let stime = ticks(12)?;
    let threads = ticks(17)?;
    let start_ticks = ticks(19)?;
    let vsize = ticks(20)?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())?;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| max_open_files(&l))
        .unwrap_or(i64::MAX as u64);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        rss_bytes: rss_kb * 1024,
        vsize_bytes: vsize,
        open_fds,
        max_fds,
        threads,
        start_time: boot + (start_ticks as f64 / USER_HZ) as u64,
    })
}

/// The soft "Max open files" limit from `/proc/<pid>/limits` text
/// (`i64::MAX` for `unlimited`).
fn max_open_files(limits: &str) -> Option<u64> {
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(i64::MAX as u64)
    } else {
        soft.parse().ok()
    }
}

/// Renders a registry in the Prometheus/OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Encoding into a String cannot fail.
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("encoding metrics into a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_count_and_sum() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let mut reg = Registry::default();
        reg.register("lat_seconds", "x", h.clone());
        let text = render(&reg);
        assert!(text.contains("lat_seconds_count 3"), "{text}");
        assert!(
            text.contains("lat_seconds_bucket{le=\"2.5e-5\"} 1")
                || text.contains("lat_seconds_bucket{le=\"0.000025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn topic_segments() {
        assert_eq!(topic_segment(b"requests.completed"), "requests");
        assert_eq!(topic_segment(b"server"), "server");
        assert_eq!(topic_segment(b""), "none");
        assert_eq!(topic_segment(b".x"), "none");
        assert_eq!(topic_segment(b"caf\xc3\xa9.x"), "other");
        assert_eq!(topic_segment(&[b'a'; 40]), "other");
        assert_eq!(topic_segment(b"with space"), "other");
    }

    #[test]
    fn ten_thousand_topics_stay_bounded() {
        let family: Family<TopicLabel, Counter> = Family::default();
        let mut reg = Registry::default();
        reg.register("events", "x", family.clone());
        let mut counters = TopicCounters::new(family);
        for i in 0..10_000 {
            counters.get(format!("t{i}.x").as_bytes()).inc();
        }
        let text = render(&reg);
        let series = text
            .lines()
            .filter(|l| l.starts_with("events_total{"))
            .count();
        assert_eq!(series, TOPIC_LABEL_CAP + 1, "cap plus `other`");
        let total: u64 = text
            .lines()
            .filter(|l| l.starts_with("events_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(total, 10_000, "no event lost from the counts");
    }

    #[test]
    fn registry_has_build_info_and_process_metrics() {
        let reg = new_registry("broker", |_| {});
        let text = render(&reg);
        assert!(
            text.contains("mensageria_build_info{service=\"broker\",version=\""),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        let value = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        let (open, max) = (value("process_open_fds "), value("process_max_fds "));
        assert!(open > 0 && open <= max, "open {open}, max {max}");
    }

    #[test]
    fn max_open_files_is_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63883                63883                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), Some(i64::MAX as u64));
        assert_eq!(max_open_files("Max processes 10 10 processes\n"), None);
    }
}
