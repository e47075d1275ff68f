//! The proxy loop: one thread owns XSUB (publishers connect) and XPUB
//! (subscribers connect), forwards events downstream and subscriptions
//! upstream, and keeps the [`SubscriptionTable`] for fan-out accounting.

use std::time::{Duration, Instant};

use mensageria::{
    header::{is_header, Header},
    health::Heartbeat,
    metrics::TopicCounters,
    otel,
    socket::{recv_frames_into, send_head_body},
};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::{
    metrics::ProxyMetrics,
    subscriptions::{decode, SubscriptionTable},
};

const BATCH: usize = 1024;

/// The forwarding loop's state.
pub struct Forwarder {
    /// Publishers' side.
    pub xsub: zmq::Socket,
    /// Subscribers' side.
    pub xpub: zmq::Socket,
    /// Metrics.
    pub metrics: ProxyMetrics,
    /// Liveness heartbeat.
    pub heartbeat: Heartbeat,
    /// Shutdown.
    pub shutdown: CancellationToken,
    table: SubscriptionTable,
    events_in: TopicCounters<Counter>,
    deliveries: TopicCounters<Counter>,
    subscriptions: TopicCounters<Gauge>,
    frames: Vec<zmq::Message>,
}

impl Forwarder {
    /// Builds the loop state around two bound sockets.
    pub fn new(
        xsub: zmq::Socket,
        xpub: zmq::Socket,
        metrics: ProxyMetrics,
        heartbeat: Heartbeat,
        shutdown: CancellationToken,
    ) -> Self {
        Forwarder {
            events_in: TopicCounters::new(metrics.events_in.clone()),
            deliveries: TopicCounters::new(metrics.deliveries.clone()),
            subscriptions: TopicCounters::new(metrics.subscriptions.clone()),
            xsub,
            xpub,
            metrics,
            heartbeat,
            shutdown,
            table: SubscriptionTable::default(),
            frames: Vec::with_capacity(4),
        }
    }

    /// Forwards until shutdown, then passes on what is already queued
    /// (bounded by a short quiet period) and returns.
    ///
    /// # Errors
    /// On a libzmq failure of the poll itself.
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut stop_at: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.heartbeat.beat_at(now);
            if stop_at.is_none() && self.shutdown.is_cancelled() {
                info!("Draining the proxy.");
                stop_at = Some(now + Duration::from_millis(200));
            }
            if stop_at.is_some_and(|t| now >= t) {
                break;
            }
            let mut items = [
                self.xsub.as_poll_item(zmq::POLLIN),
                self.xpub.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, 100) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(anyhow::anyhow!("proxy poll failed: {e}")),
            }
            let (events_ready, subs_ready) = (items[0].is_readable(), items[1].is_readable());
            if subs_ready {
                self.pump_subscriptions();
            }
            if events_ready {
                self.pump_events();
            }
        }
        info!(subscriptions = self.table.total(), "Proxy loop stopped.");
        Ok(())
    }

    /// Forwards up to [`BATCH`] waiting events. The subscription table does
    /// not change during a batch, so consecutive events of one topic share
    /// its fan-out, and the metrics are counted once per run of a topic and
    /// per batch rather than once per event.
    fn pump_events(&mut self) {
        let mut run = TopicRun::default();
        let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
        let mut frames = std::mem::take(&mut self.frames);
        for _ in 0..BATCH {
            let Ok(n) = recv_frames_into(&self.xsub, zmq::DONTWAIT, &mut frames) else {
                break;
            };
            let event = &mut frames[..n];
            // Each frame's bytes are looked up once (two libzmq calls each).
            let (mut bytes, mut topic) = (0, &[][..]);
            for (i, f) in event.iter().enumerate() {
                let f: &[u8] = f;
                if i == 0 {
                    topic = f;
                }
                bytes += f.len() as u64;
            }
            if !run.is(topic) {
                run.flush(&mut self.events_in, &mut self.deliveries);
                run.start(topic, self.table.matches(topic));
            }
            run.events += 1;
            bytes_in += bytes;
            bytes_out += bytes * run.fanout;
            // Only with trace export on is the header looked at at all.
            let _span = otel::enabled().then(|| forward_span(event)).flatten();
            // XPUB never blocks: a subscriber at its HWM misses the event,
            // which it sees as a sequence gap.
            let out = event
                .iter_mut()
                .map(|f| std::mem::replace(f, zmq::Message::new()));
            if let Err(e) = send_head_body(&self.xpub, [], out, zmq::DONTWAIT) {
                debug!(error.message = %e, "Event not forwarded.");
            }
        }
        self.frames = frames;
        run.flush(&mut self.events_in, &mut self.deliveries);
        if bytes_in > 0 {
            self.metrics.bytes_in.inc_by(bytes_in);
            self.metrics.bytes_out.inc_by(bytes_out);
        }
    }

    fn pump_subscriptions(&mut self) {
        for _ in 0..BATCH {
            let msg = match self.xpub.recv_msg(zmq::DONTWAIT) {
                Ok(m) => m,
                Err(_) => return,
            };
            if let Some(change) = decode(&msg) {
                let (prefix, delta) = match change {
                    crate::subscriptions::Change::Subscribe(p) => (p, 1),
                    crate::subscriptions::Change::Unsubscribe(p) => (p, -1),
                };
                let before = self.table.total();
                self.table.apply(&change);
                if self.table.total() != before {
                    self.subscriptions.get(prefix).inc_by(delta);
                }
                debug!(prefix = %String::from_utf8_lossy(prefix), delta, "Subscription changed.");
            }
            if let Err(e) = self.xsub.send(msg, zmq::DONTWAIT) {
                debug!(error.message = %e, "Subscription not forwarded upstream.");
            }
        }
    }
}

/// Consecutive events of one topic within a batch: their fan-out (looked up
/// once) and how many there were, counted in the metrics at [`TopicRun::flush`].
#[derive(Debug, Default)]
struct TopicRun {
    topic: Vec<u8>,
    fanout: u64,
    events: u64,
}

impl TopicRun {
    fn is(&self, topic: &[u8]) -> bool {
        self.events > 0 && self.topic == topic
    }

    fn start(&mut self, topic: &[u8], fanout: u64) {
        self.topic.clear();
        self.topic.extend_from_slice(topic);
        self.fanout = fanout;
    }

    /// Counts the run's events and deliveries, and empties it.
    fn flush(
        &mut self,
        events_in: &mut TopicCounters<Counter>,
        deliveries: &mut TopicCounters<Counter>,
    ) {
        if self.events == 0 {
            return;
        }
        events_in.get(&self.topic).inc_by(self.events);
        if self.fanout > 0 {
            deliveries
                .get(&self.topic)
                .inc_by(self.events * self.fanout);
        }
        self.events = 0;
    }
}

/// A `consumer` span for forwarding a sampled event, child of its producer.
fn forward_span(frames: &[zmq::Message]) -> Option<tracing::Span> {
    let (topic, head) = (frames.first()?, frames.get(1)?);
    if !is_header(head) {
        return None;
    }
    let Ok(Header::Event(h)) = Header::decode(head) else {
        return None;
    };
    let span = otel::child_span(
        "consumer",
        "forward",
        &String::from_utf8_lossy(topic),
        h.trace.as_ref(),
    );
    (!span.is_disabled()).then_some(span)
}
