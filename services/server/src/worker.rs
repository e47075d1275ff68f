//! A worker: one thread owning a REP socket connected to every broker,
//! answering one request at a time through the [`Handler`].
//!
//! A request with our header gets a header reply (status, request id); a
//! plain request gets a plain reply, with errors as `ERR <status> <message>`.

use std::{
    fmt::Write as _,
    sync::Arc,
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
    publisher::SharedPublisher,
};

/// How long a draining worker waits for one more request already on the
/// wire before it disconnects.
const DRAIN_QUIET: Duration = Duration::from_millis(10);
/// The longest a draining worker stays connected refusing requests.
const DRAIN_REFUSE_MAX: Duration = Duration::from_millis(100);

/// A worker thread's state.
pub struct Worker {
    socket: zmq::Socket,
    brokers: Endpoints,
    handler: Arc<dyn Handler>,
    metrics: ServerMetrics,
    events: SharedPublisher,
    heartbeat: Heartbeat,
    shutdown: CancellationToken,
    grace: Duration,
    instance: Arc<str>,
    /// Reused buffer for event payloads.
    payload: String,
}

impl Worker {
    /// A worker around a REP socket connected to `brokers` (kept to
    /// disconnect from when draining) and its own event publisher.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        socket: zmq::Socket,
        brokers: Endpoints,
        handler: Arc<dyn Handler>,
        metrics: ServerMetrics,
        events: SharedPublisher,
        heartbeat: Heartbeat,
        shutdown: CancellationToken,
        grace: Duration,
        instance: Arc<str>,
    ) -> Self {
        Worker {
            socket,
            brokers,
            handler,
            metrics,
            events,
            heartbeat,
            shutdown,
            grace,
            instance,
            payload: String::with_capacity(160),
        }
    }

    /// Serves until shutdown; then disconnects from the brokers, answers what
    /// is still queued, and returns.
    ///
    /// # Errors
    /// On a libzmq failure that leaves the socket unusable.
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut frames = Vec::with_capacity(4);
        let mut drain_started: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.heartbeat.beat_at(now);
            if self.shutdown.is_cancelled() {
                // Draining. The request being handled at SIGTERM has finished
                // normally. Requests already queued at this socket are refused
                // with `unavailable` while the way back to the broker still
                // exists, so their clients retry elsewhere at once instead of
                // waiting for a timeout. Stop as soon as the queue is empty
                // for DRAIN_QUIET (requests already on the wire) or after
                // DRAIN_REFUSE_MAX at most: under steady load the queue is
                // never empty for long, and staying connected only draws
                // more requests to refuse.
                let started = *drain_started.get_or_insert(now);
                let limit = (started + DRAIN_REFUSE_MAX).min(started + self.grace);
                if now >= limit {
                    break;
                }
                let wait = DRAIN_QUIET.min(limit - now);
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
            // Try to receive first and poll only when nothing is queued: under
            // load this saves a system call per request.
            match recv_frames(&self.socket, zmq::DONTWAIT, &mut frames) {
                Ok(()) => self.serve(&frames)?,
                Err(zmq::Error::EAGAIN) => match self.socket.poll(zmq::POLLIN, 50) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(anyhow::anyhow!("worker poll failed: {e}")),
                },
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
    fn refuse(&mut self, frames: &[zmq::Message]) -> anyhow::Result<()> {
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

    fn serve(&mut self, frames: &[zmq::Message]) -> anyhow::Result<()> {
        let started = Instant::now();
        let _busy = self.heartbeat.busy_at(started);
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
        &mut self,
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
        // One `requests.completed` event per handled request. The payload is
        // written by hand into a reused buffer: this runs once per request.
        self.payload.clear();
        let _ = write!(
            self.payload,
            r#"{{"request_id":{},"status":"{}","duration_us":{},"server":"{}"}}"#,
            header.map_or_else(|| "null".to_owned(), |h| h.id.to_string()),
            status.as_str(),
            elapsed.as_micros(),
            crate::json_escape(&self.instance),
        );
        let publish = otel::child_span("producer", "publish", "requests.completed", trace.as_ref());
        let event_trace = otel::trace_context(&publish).or(trace);
        crate::publisher::lock(&self.events).publish(
            "requests.completed",
            self.payload.as_bytes(),
            event_trace,
        );
        Ok(())
    }
}
