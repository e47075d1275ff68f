//! The subscriber: a SUB socket connected to every proxy, tracking each
//! publisher's sequence numbers (per topic) to count lost events and each
//! event's timestamp to measure lag.

use std::{collections::HashMap, time::Duration};

use mensageria::{
    header::{is_header, now_us, Header},
    metrics::TopicCounters,
    otel,
    socket::recv_frames,
    EventHeader,
};
use prometheus_client::metrics::counter::Counter;

use crate::metrics::ClientMetrics;

/// Sequence streams tracked at most; beyond this, new streams are not
/// tracked for loss (bounded memory against a flood of publishers × topics).
const MAX_STREAMS: usize = 100_000;

/// One received event.
#[derive(Debug)]
pub struct Received {
    /// Topic frame.
    pub topic: Vec<u8>,
    /// Header, when the publisher sent one.
    pub header: Option<EventHeader>,
    /// Payload frames (after the header, if any).
    pub payload: Vec<Vec<u8>>,
    /// Events missed just before this one in its stream.
    pub gap: u64,
    /// Publish-to-receive lag, when known.
    pub lag: Option<Duration>,
}

/// Loss and lag bookkeeping, independent of sockets (unit-testable).
///
/// Streams are kept per publisher, then per topic, so an event is looked up
/// by reference (no key is built or allocated per event).
#[derive(Debug, Default)]
pub struct SequenceTracker {
    last: HashMap<u64, HashMap<Vec<u8>, u64>>,
    streams: usize,
}

impl SequenceTracker {
    /// Records `seq` of `(publisher, topic)`; returns how many events were
    /// skipped since the previous one of that stream.
    pub fn observe(&mut self, publisher: u64, topic: &[u8], seq: u64) -> u64 {
        if let Some(last) = self.last.get_mut(&publisher).and_then(|t| t.get_mut(topic)) {
            let gap = seq.saturating_sub(*last + 1);
            *last = (*last).max(seq);
            return gap;
        }
        if self.streams < MAX_STREAMS {
            self.streams += 1;
            self.last
                .entry(publisher)
                .or_default()
                .insert(topic.to_vec(), seq);
        }
        0
    }
}

/// Owns the SUB socket and the bookkeeping.
pub struct Subscriber {
    socket: zmq::Socket,
    tracker: SequenceTracker,
    metrics: ClientMetrics,
    received: TopicCounters<Counter>,
    /// The last topic's counter (events mostly come in runs of one topic).
    last_topic: Option<(Vec<u8>, Counter)>,
    frames: Vec<zmq::Message>,
}

impl Subscriber {
    /// Wraps a connected SUB socket and subscribes to `topics` (empty: all).
    ///
    /// # Errors
    /// If a subscription is refused.
    pub fn new(
        socket: zmq::Socket,
        topics: &[String],
        metrics: ClientMetrics,
    ) -> zmq::Result<Self> {
        if topics.is_empty() {
            socket.set_subscribe(b"")?;
        }
        for t in topics {
            socket.set_subscribe(t.as_bytes())?;
        }
        Ok(Subscriber {
            received: TopicCounters::new(metrics.events_received.clone()),
            socket,
            tracker: SequenceTracker::default(),
            metrics,
            last_topic: None,
            frames: Vec::new(),
        })
    }

    /// Whether another event is waiting (no blocking).
    pub fn has_more(&self) -> bool {
        self.socket
            .get_events()
            .is_ok_and(|e| e.contains(zmq::POLLIN))
    }

    /// Counts an event of `topic`.
    fn count(&mut self, topic: &[u8]) {
        match &self.last_topic {
            Some((t, c)) if t.as_slice() == topic => {
                c.inc();
            }
            _ => {
                let c = self.received.get(topic).clone();
                c.inc();
                self.last_topic = Some((topic.to_vec(), c));
            }
        }
    }

    /// Waits up to `timeout` for one event.
    pub fn next(&mut self, timeout: Duration) -> Option<Received> {
        if recv_frames(&self.socket, zmq::DONTWAIT, &mut self.frames).is_err() {
            let ms = timeout.as_millis().min(i64::MAX as u128) as i64;
            if self.socket.poll(zmq::POLLIN, ms).ok()? == 0 {
                return None;
            }
            recv_frames(&self.socket, zmq::DONTWAIT, &mut self.frames).ok()?;
        }
        let topic = self.frames.first()?.to_vec();
        self.count(&topic);
        let rest = &self.frames[1..];
        let header = rest
            .first()
            .filter(|f| is_header(f))
            .and_then(|f| match Header::decode(f) {
                Ok(Header::Event(h)) => Some(h),
                _ => None,
            });
        let skip = usize::from(header.is_some() || rest.first().is_some_and(|f| is_header(f)));
        let mut r = Received {
            payload: rest[skip.min(rest.len())..]
                .iter()
                .map(|f| f.to_vec())
                .collect(),
            topic,
            header,
            gap: 0,
            lag: None,
        };
        if let Some(h) = header {
            if let Some(t) = h.trace.as_ref().filter(|t| otel::should_trace(Some(t))) {
                let span = otel::child_span(
                    "consumer",
                    "receive",
                    &String::from_utf8_lossy(&r.topic),
                    Some(t),
                );
                otel::add_link(&span, t);
            }
            r.gap = self.tracker.observe(h.publisher, &r.topic, h.seq);
            if r.gap > 0 {
                self.metrics.events_lost.inc_by(r.gap);
            }
            let lag = Duration::from_micros(now_us().saturating_sub(h.published_at_us));
            self.metrics.event_lag.observe(lag);
            r.lag = Some(lag);
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_counted_per_publisher_and_topic() {
        let mut t = SequenceTracker::default();
        assert_eq!(t.observe(1, b"a", 1), 0);
        assert_eq!(t.observe(1, b"a", 2), 0);
        assert_eq!(t.observe(1, b"a", 5), 2);
        assert_eq!(
            t.observe(1, b"b", 9),
            0,
            "first event of a stream: nothing known missing"
        );
        assert_eq!(
            t.observe(2, b"a", 1),
            0,
            "another publisher is another stream"
        );
        assert_eq!(t.observe(1, b"a", 6), 0);
        assert_eq!(t.observe(1, b"a", 3), 0, "an old number is not a gap");
    }
}
