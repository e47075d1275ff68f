//! Event publishing. A server has one [`EventPublisher`]: a PUB socket
//! connected to every proxy, with a random publisher id. The workers share it
//! behind a mutex and publish on their own threads (no hand-off to another
//! thread: the lock is held for one send); a `server-status` thread
//! publishes the periodic `server.status` event through it too.
//!
//! Sequence numbers run per publisher *and topic*, so a subscriber that
//! filters by topic prefix still sees every number of the topics it gets and
//! can tell loss from filtering.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mensageria::{
    header::{now_us, EventHeader, Header},
    health::Heartbeat,
    metrics::TopicCounters,
    socket::send_frames,
    TraceContext,
};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The publisher shared by a server's threads.
pub type SharedPublisher = Arc<Mutex<EventPublisher>>;

/// Locks the shared publisher. A panic while holding the lock cannot leave
/// it inconsistent (a send either happened or not), so poisoning is ignored.
pub fn lock(p: &SharedPublisher) -> std::sync::MutexGuard<'_, EventPublisher> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// A PUB socket with its publisher id and per-topic sequence numbers.
pub struct EventPublisher {
    socket: zmq::Socket,
    id: u64,
    /// Per topic: its sequence number and its `events_published` counter.
    /// A server publishes a handful of fixed topics, so a short list scanned
    /// by string beats hashing the topic on every event.
    topics: Vec<TopicState>,
    published: TopicCounters<Counter>,
}

struct TopicState {
    topic: &'static str,
    seq: u64,
    published: Counter,
}

impl EventPublisher {
    /// Wraps a PUB socket connected to the proxies.
    pub fn new(socket: zmq::Socket, id: u64, published: TopicCounters<Counter>) -> Self {
        EventPublisher {
            socket,
            id,
            topics: Vec::new(),
            published,
        }
    }

    /// Publishes `[topic, header, payload]`. PUB never blocks: with no
    /// subscriber, or one at its HWM, the event is dropped, which subscribers
    /// see as a sequence gap.
    pub fn publish(&mut self, topic: &'static str, payload: &[u8], trace: Option<TraceContext>) {
        let i = match self.topics.iter().position(|t| t.topic == topic) {
            Some(i) => i,
            None => {
                let published = self.published.get(topic.as_bytes()).clone();
                self.topics.push(TopicState {
                    topic,
                    seq: 0,
                    published,
                });
                self.topics.len() - 1
            }
        };
        let t = &mut self.topics[i];
        t.seq += 1;
        let header = Header::Event(EventHeader {
            publisher: self.id,
            seq: t.seq,
            published_at_us: now_us(),
            trace,
        })
        .encode();
        // Counted before it leaves, so whoever receives it sees it counted.
        // (PUB never refuses a send short of the context ending.)
        t.published.inc();
        if let Err(err) = send_frames(
            &self.socket,
            [topic.as_bytes(), &header, payload],
            zmq::DONTWAIT,
        ) {
            debug!(error.message = %err, topic, "Event not published.");
        }
    }
}

/// Publishes `server.status` every `interval` until shutdown.
///
/// # Errors
/// Never in practice; the signature matches the other socket threads.
pub fn run_status(
    publisher: SharedPublisher,
    interval: Duration,
    status: impl Fn() -> Vec<u8>,
    heartbeat: Heartbeat,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut next = Instant::now() + interval;
    while !shutdown.is_cancelled() {
        let now = Instant::now();
        heartbeat.beat_at(now);
        if now >= next {
            lock(&publisher).publish("server.status", &status(), None);
            next += interval;
        }
        std::thread::sleep(
            next.saturating_duration_since(now)
                .min(Duration::from_millis(100)),
        );
    }
    Ok(())
}
