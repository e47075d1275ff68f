//! The event publisher: one thread owning the PUB socket connected to every
//! proxy. Workers hand it events through a bounded channel; it stamps each
//! with the header (publisher id, sequence, time) and publishes it, and emits
//! the periodic `server.status` event.
//!
//! Sequence numbers run per publisher *and topic*, so a subscriber that
//! filters by topic prefix still sees every number of the topics it gets and
//! can tell loss from filtering.

use std::{
    collections::HashMap,
    sync::mpsc::{Receiver, RecvTimeoutError},
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
use tracing::{debug, info};

/// An event to publish.
#[derive(Debug)]
pub struct Event {
    /// Dotted topic, e.g. `requests.completed`.
    pub topic: &'static str,
    /// Payload (JSON for the built-in events).
    pub payload: Vec<u8>,
    /// Trace context of the span that caused it.
    pub trace: Option<TraceContext>,
}

/// The publisher thread's state.
pub struct Publisher {
    /// PUB socket, connected to the proxies.
    pub socket: zmq::Socket,
    /// Random id of this publisher.
    pub id: u64,
    /// Events from the workers.
    pub events: Receiver<Event>,
    /// Published-events counters by topic.
    pub published: TopicCounters<Counter>,
    /// Liveness heartbeat.
    pub heartbeat: Heartbeat,
    /// Shutdown.
    pub shutdown: CancellationToken,
    /// `server.status` period.
    pub status_interval: Duration,
    /// Builds the `server.status` payload.
    pub status: Box<dyn Fn() -> Vec<u8> + Send>,
    seqs: HashMap<&'static str, u64>,
}

impl Publisher {
    /// Builds the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        socket: zmq::Socket,
        id: u64,
        events: Receiver<Event>,
        published: TopicCounters<Counter>,
        heartbeat: Heartbeat,
        shutdown: CancellationToken,
        status_interval: Duration,
        status: Box<dyn Fn() -> Vec<u8> + Send>,
    ) -> Self {
        Publisher {
            socket,
            id,
            events,
            published,
            heartbeat,
            shutdown,
            status_interval,
            status,
            seqs: HashMap::new(),
        }
    }

    /// Publishes until shutdown, when every worker has hung up and the queue is empty.
    ///
    /// # Errors
    /// Never in practice; the signature matches the other socket threads.
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut next_status = Instant::now() + self.status_interval;
        loop {
            self.heartbeat.beat();
            if Instant::now() >= next_status {
                let payload = (self.status)();
                self.publish(Event {
                    topic: "server.status",
                    payload,
                    trace: None,
                });
                next_status += self.status_interval;
            }
            match self.events.recv_timeout(Duration::from_millis(100)) {
                Ok(e) => {
                    self.publish(e);
                    // Drain what is queued without waiting.
                    while let Ok(e) = self.events.try_recv() {
                        self.publish(e);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Every worker has stopped: nothing more will come.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        info!(publisher = self.id, "Publisher stopped.");
        Ok(())
    }

    fn publish(&mut self, e: Event) {
        let seq = self.seqs.entry(e.topic).or_insert(0);
        *seq += 1;
        let header = Header::Event(EventHeader {
            publisher: self.id,
            seq: *seq,
            published_at_us: now_us(),
            trace: e.trace,
        })
        .encode();
        // PUB never blocks: at the HWM it drops, which subscribers see as a
        // sequence gap and count.
        match send_frames(
            &self.socket,
            [e.topic.as_bytes(), &header, &e.payload],
            zmq::DONTWAIT,
        ) {
            Ok(()) => {
                self.published.get(e.topic.as_bytes()).inc();
            }
            Err(err) => debug!(error.message = %err, topic = e.topic, "Event not published."),
        }
    }
}
