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

/// One received event, borrowed from the subscriber until the next one
/// (nothing is copied for a caller that only counts).
#[derive(Debug)]
pub struct Received<'a> {
    /// Topic frame.
    pub topic: &'a [u8],
    /// Header, when the publisher sent one.
    pub header: Option<EventHeader>,
    /// Payload frames (after the header, if any).
    pub payload: &'a [zmq::Message],
    /// Events missed just before this one in its stream.
    pub gap: u64,
    /// Publish-to-receive lag, when known.
    pub lag: Option<Duration>,
}

/// Loss and lag bookkeeping, independent of sockets (unit-testable).
///
/// Streams live in a list, found through a map keyed by (publisher, topic)
/// only when they are not among the few used last: a subscriber mostly sees
/// the same handful of streams in turn, so most events cost a short scan and
/// no hashing.
#[derive(Debug, Default)]
pub struct SequenceTracker {
    streams: Vec<Stream>,
    /// Per publisher, per topic: the index in `streams` (looked up by
    /// reference, no key built).
    index: HashMap<u64, HashMap<Vec<u8>, usize>>,
    /// Indices into `streams`, most recently used first.
    recent: [Option<usize>; RECENT],
}

#[derive(Debug)]
struct Stream {
    publisher: u64,
    topic: Vec<u8>,
    last: u64,
}

/// Streams remembered as recently used.
const RECENT: usize = 4;

impl SequenceTracker {
    /// Records `seq` of `(publisher, topic)`; returns how many events were
    /// skipped since the previous one of that stream.
    pub fn observe(&mut self, publisher: u64, topic: &[u8], seq: u64) -> u64 {
        let found = self
            .recent
            .iter()
            .position(|r| {
                r.is_some_and(|i| {
                    let s = &self.streams[i];
                    s.publisher == publisher && s.topic == topic
                })
            })
            .map(|pos| (pos, self.recent[pos]))
            .or_else(|| {
                self.index
                    .get(&publisher)
                    .and_then(|t| t.get(topic))
                    .map(|&i| (RECENT - 1, Some(i)))
            });
        let (pos, i) = match found {
            Some((pos, Some(i))) => (pos, i),
            _ => {
                if self.streams.len() < MAX_STREAMS {
                    let i = self.streams.len();
                    self.streams.push(Stream {
                        publisher,
                        topic: topic.to_vec(),
                        last: seq,
                    });
                    self.index
                        .entry(publisher)
                        .or_default()
                        .insert(topic.to_vec(), i);
                    self.recent.rotate_right(1);
                    self.recent[0] = Some(i);
                }
                return 0;
            }
        };
        // Move to the front of the recent list.
        self.recent[..=pos].rotate_right(1);
        self.recent[0] = Some(i);
        let last = &mut self.streams[i].last;
        let gap = seq.saturating_sub(*last + 1);
        *last = (*last).max(seq);
        gap
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

    /// Waits up to `timeout` for one event.
    pub fn next(&mut self, timeout: Duration) -> Option<Received<'_>> {
        if recv_frames(&self.socket, zmq::DONTWAIT, &mut self.frames).is_err() {
            let ms = timeout.as_millis().min(i64::MAX as u128) as i64;
            if self.socket.poll(zmq::POLLIN, ms).ok()? == 0 {
                return None;
            }
            recv_frames(&self.socket, zmq::DONTWAIT, &mut self.frames).ok()?;
        }
        let (topic, rest) = self.frames.split_first()?;
        let topic: &[u8] = topic;
        count(&mut self.last_topic, &mut self.received, topic);
        let first: Option<&[u8]> = rest.first().map(|f| &f[..]);
        let header = first
            .filter(|f| is_header(f))
            .and_then(|f| match Header::decode(f) {
                Ok(Header::Event(h)) => Some(h),
                _ => None,
            });
        let skip = usize::from(first.is_some_and(is_header));
        let mut r = Received {
            payload: &rest[skip..],
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
                    &String::from_utf8_lossy(topic),
                    Some(t),
                );
                otel::add_link(&span, t);
            }
            r.gap = self.tracker.observe(h.publisher, topic, h.seq);
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

/// Counts an event of `topic` (the last topic's counter is kept: events
/// mostly come in runs of one topic).
fn count(
    last: &mut Option<(Vec<u8>, Counter)>,
    counters: &mut TopicCounters<Counter>,
    topic: &[u8],
) {
    match last {
        Some((t, c)) if t.as_slice() == topic => {
            c.inc();
        }
        _ => {
            let c = counters.get(topic).clone();
            c.inc();
            *last = Some((topic.to_vec(), c));
        }
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

    #[test]
    fn gaps_are_exact_with_more_streams_than_the_recent_list() {
        let mut t = SequenceTracker::default();
        let streams = 3 * RECENT as u64;
        for round in 1..=5u64 {
            for p in 0..streams {
                // Stream p skips one number in round 3 when p is odd.
                let seq = if p % 2 == 1 && round >= 3 {
                    round + 1
                } else {
                    round
                };
                let want = u64::from(p % 2 == 1 && round == 3);
                let topic: &[u8] = if p % 3 == 0 { b"a" } else { b"b" };
                assert_eq!(t.observe(p, topic, seq), want, "stream {p}, round {round}");
            }
        }
        assert_eq!(t.streams.len(), streams as usize);
    }
}
