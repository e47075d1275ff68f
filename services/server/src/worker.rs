//! A worker: one thread owning a REP socket connected to every broker,
//! answering one request at a time through the [`Handler`].
//!
//! A request with our header gets a header reply (status, request id); a
//! plain request gets a plain reply, with errors as `ERR <status> <message>`.

use std::{
    sync::{mpsc::SyncSender, Arc},
    time::{Duration, Instant},
};

use mensageria::{
    header::{is_header, Header},
    health::Heartbeat,
    otel,
    socket::{recv_frames, send_frames},
    Endpoints, ReplyHeader, Status,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Span};

use crate::{
    handler::{Handler, Request, Response},
    metrics::ServerMetrics,
    publisher::Event,
};

/// How long a draining worker waits for one more request before it
/// disconnects (requests already on the wire when it stopped reading).
/// Deliberately not a multiple of the client's retry backoff (25 ms × 2ⁿ).
const DRAIN_QUIET: Duration = Duration::from_millis(150);

/// A worker thread's state.
pub struct Worker {
    /// REP socket connected to the brokers.
    pub socket: zmq::Socket,
    /// Broker endpoints (to disconnect from when draining).
    pub brokers: Endpoints,
    /// The request handler.
    pub handler: Arc<dyn Handler>,
    /// Metrics.
    pub metrics: ServerMetrics,
    /// Events to publish.
    pub events: SyncSender<Event>,
    /// Liveness heartbeat.
    pub heartbeat: Heartbeat,
    /// Shutdown.
    pub shutdown: CancellationToken,
    /// Drain grace.
    pub grace: Duration,
    /// This server's instance id (in events).
    pub instance: Arc<str>,
}

impl Worker {
    /// Serves until shutdown; then disconnects from the brokers, answers what
    /// is still queued, and returns.
    ///
    /// # Errors
    /// On a libzmq failure that leaves the socket unusable.
    pub fn run(self) -> anyhow::Result<()> {
        let mut frames = Vec::with_capacity(4);
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.heartbeat.beat_at(now);
            if self.shutdown.is_cancelled() {
                // Draining. The request being handled at SIGTERM has finished
                // normally. Requests already queued at this socket are refused
                // with `unavailable` while the way back to the broker still
                // exists, so their clients retry elsewhere at once instead of
                // waiting for a timeout; stop at the first empty queue (or when
                // the grace period is over), after a short quiet period that
                // catches requests already on the wire.
                let deadline = *drain_deadline.get_or_insert(now + self.grace);
                let wait = DRAIN_QUIET.min(deadline.saturating_duration_since(now));
                match self.socket.poll(zmq::POLLIN, wait.as_millis() as i64) {
                    Ok(0) => break,
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(anyhow::anyhow!("worker poll failed: {e}")),
                }
                match recv_frames(&self.socket, zmq::DONTWAIT, &mut frames) {
                    Ok(()) => self.refuse(&frames)?,
                    Err(zmq::Error::EAGAIN) => {}
                    Err(e) => return Err(anyhow::anyhow!("worker receive failed: {e}")),
                }
                continue;
            }
            match self.socket.poll(zmq::POLLIN, 50) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(anyhow::anyhow!("worker poll failed: {e}")),
            }
            match recv_frames(&self.socket, zmq::DONTWAIT, &mut frames) {
                Ok(()) => self.serve(&frames)?,
                Err(zmq::Error::EAGAIN) => continue,
                Err(e) => return Err(anyhow::anyhow!("worker receive failed: {e}")),
            }
        }
        // Every request this worker read has been answered. Disconnecting now
        // stops new work; anything still in flight to us was never read, and
        // the broker times it out so the client retries elsewhere.
        for e in &self.brokers.0 {
            let _ = self.socket.disconnect(e);
        }
        debug!("Worker stopped.");
        Ok(())
    }

    /// Answers a request `unavailable` without handling it (draining).
    fn refuse(&self, frames: &[zmq::Message]) -> anyhow::Result<()> {
        let header = match frames.first() {
            Some(f) if is_header(f) => match Header::decode(f) {
                Ok(Header::Request(h)) => Some(h),
                _ => None,
            },
            _ => None,
        };
        let response = Response::error(Status::Unavailable, "server is shutting down");
        self.reply(header, response, Instant::now(), &Span::none())
    }

    fn serve(&self, frames: &[zmq::Message]) -> anyhow::Result<()> {
        let started = Instant::now();
        let (header, payload) = match frames.first() {
            Some(f) if is_header(f) => match Header::decode(f) {
                Ok(Header::Request(h)) => (Some(h), &frames[1..]),
                Ok(_) => {
                    return self.reply(
                        None,
                        Response::error(Status::BadRequest, "expected a request header"),
                        started,
                        &Span::none(),
                    )
                }
                Err(e) => {
                    return self.reply(
                        None,
                        Response::error(Status::BadRequest, format!("invalid header: {e}")),
                        started,
                        &Span::none(),
                    )
                }
            },
            _ => (None, frames),
        };
        let parent = header.and_then(|h| h.trace);
        let span = otel::child_span("server", "process", "requests", parent.as_ref());
        let slices: Vec<&[u8]> = payload.iter().map(|m| &m[..]).collect();
        let response = span.in_scope(|| self.handler.handle(&Request { frames: &slices }));
        self.reply(header, response, started, &span)
    }

    fn reply(
        &self,
        header: Option<mensageria::RequestHeader>,
        response: Response,
        started: Instant,
        span: &Span,
    ) -> anyhow::Result<()> {
        let status = response.status;
        // Replies and events continue this server's span when it exists.
        let trace = otel::trace_context(span).or(header.and_then(|h| h.trace));
        if status != Status::Ok {
            otel::set_error(span, status.as_str());
        }
        // Counted before the reply leaves, so whoever sees the reply sees it counted.
        let elapsed = started.elapsed();
        self.metrics.request(status);
        self.metrics.duration.observe(elapsed);
        let result = match header {
            Some(h) => {
                let head = Header::Reply(ReplyHeader {
                    id: h.id,
                    status,
                    trace,
                })
                .encode();
                send_frames(
                    &self.socket,
                    std::iter::once(head).chain(response.frames),
                    0,
                )
            }
            None if status == Status::Ok => send_frames(&self.socket, response.frames, 0),
            None => {
                let msg = response
                    .frames
                    .first()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .unwrap_or_default();
                send_frames(
                    &self.socket,
                    [format!("ERR {status} {msg}").into_bytes()],
                    0,
                )
            }
        };
        if let Err(e) = result {
            // REP cannot go on without sending its reply; this is fatal for the socket.
            return Err(anyhow::anyhow!("worker reply failed: {e}"));
        }
        let payload = serde_json::json!({
            "request_id": header.map(|h| h.id),
            "status": status.as_str(),
            "duration_us": elapsed.as_micros() as u64,
            "server": &*self.instance,
        })
        .to_string()
        .into_bytes();
        let event = Event {
            topic: "requests.completed",
            payload,
            trace: {
                let publish =
                    otel::child_span("producer", "publish", "requests.completed", trace.as_ref());
                otel::trace_context(&publish).or(trace)
            },
        };
        if self.events.try_send(event).is_err() {
            self.metrics.events_dropped.inc();
            debug!("Event queue full; event dropped.");
        }
        Ok(())
    }
}
