//! The broker's routing loop: one thread owns the ROUTER frontend and the
//! DEALER backend and polls both.
//!
//! Request path: `[route…, "", body…]` arrives on the frontend; the broker
//! records it in the [`InflightTable`] and sends `[corr, route…, "", body…]`
//! to the backend without blocking (`unavailable` if no worker can take it).
//! REP workers echo the envelope, so the reply comes back as
//! `[corr, route…, "", reply…]`; the broker pops `corr`, completes the entry
//! and forwards the rest to the client. Deadlines, overload and malformed
//! input are answered or counted here; the loop never blocks on a peer.

use std::time::{Duration, Instant};

use mensageria::{
    header::{is_header, Header},
    health::Heartbeat,
    otel,
    socket::{recv_frames, send_frames},
    ReplyHeader, Status,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    inflight::InflightTable,
    metrics::{BrokerMetrics, DropReason},
    route::Route,
};

/// Most messages handled from one socket per poll wake-up, so neither side
/// can starve the other.
const BATCH: usize = 512;
/// How long a drained broker keeps its connections open after the last
/// reply, so clients can read it before the connection closes.
const DRAIN_LINGER: Duration = Duration::from_millis(200);
/// Longest poll wait: bounds how stale the heartbeat and cancellation check get.
const POLL_MS: i64 = 100;

/// What the broker remembers about a forwarded request.
#[derive(Debug)]
pub struct Pending {
    /// The client's route frames (everything before the empty delimiter).
    route: Route,
    /// The request id from the client's header; `None` for a plain client.
    request_id: Option<u64>,
    /// When the request entered the frontend.
    started: Instant,
    /// The broker's span for a sampled request; disabled otherwise.
    span: tracing::Span,
}

/// The routing loop's state.
pub struct Router {
    /// ROUTER socket clients connect to.
    pub frontend: zmq::Socket,
    /// DEALER socket workers connect to.
    pub backend: zmq::Socket,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// In-flight cap.
    pub max_inflight: usize,
    /// Metrics.
    pub metrics: BrokerMetrics,
    /// Liveness heartbeat.
    pub heartbeat: Heartbeat,
    /// Shutdown signal.
    pub shutdown: CancellationToken,
    /// How long a drain may take.
    pub grace: Duration,
    inflight: InflightTable<Pending>,
    frames: Vec<zmq::Message>,
}

impl Router {
    /// Builds the loop state around two bound sockets.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        frontend: zmq::Socket,
        backend: zmq::Socket,
        request_timeout: Duration,
        max_inflight: usize,
        metrics: BrokerMetrics,
        heartbeat: Heartbeat,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Self {
        Router {
            frontend,
            backend,
            request_timeout,
            max_inflight,
            metrics,
            heartbeat,
            shutdown,
            grace,
            inflight: InflightTable::new(),
            frames: Vec::with_capacity(8),
        }
    }

    /// Runs until shutdown and drain are complete.
    ///
    /// # Errors
    /// Only on a libzmq failure of the poll itself (context terminated).
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut drain_deadline: Option<Instant> = None;
        let mut all_answered: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.heartbeat.beat_at(now);
            self.expire(now);
            if drain_deadline.is_none() && self.shutdown.is_cancelled() {
                info!(
                    inflight = self.inflight.len(),
                    "Draining: new requests get `unavailable`; waiting for replies."
                );
                drain_deadline = Some(now + self.grace);
            }
            if let Some(deadline) = drain_deadline {
                if self.inflight.is_empty() {
                    // Give clients a moment to read the last replies: a
                    // connect-side socket with ZMQ_IMMEDIATE discards what it
                    // has not read when the connection closes.
                    let linger_until = *all_answered.get_or_insert(now + DRAIN_LINGER);
                    if now >= linger_until.min(deadline) {
                        break;
                    }
                }
                if now >= deadline {
                    let left = self.inflight.len();
                    while let Some(p) = self.inflight.pop_oldest() {
                        self.reply_error(
                            &p,
                            Status::Unavailable,
                            "broker stopped before the reply arrived",
                        );
                    }
                    self.metrics.inflight.set(0);
                    warn!(
                        abandoned = left,
                        "Drain grace period over; answered the rest `unavailable`."
                    );
                    break;
                }
            }
            let timeout = self
                .inflight
                .next_deadline()
                .map(|d| d.saturating_duration_since(now).as_millis() as i64 + 1)
                .map_or(POLL_MS, |ms| ms.min(POLL_MS));
            let mut items = [
                self.frontend.as_poll_item(zmq::POLLIN),
                self.backend.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, timeout) {
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(anyhow::anyhow!("broker poll failed: {e}")),
            }
            let (front_ready, back_ready) = (items[0].is_readable(), items[1].is_readable());
            if back_ready {
                self.pump_backend();
            }
            if front_ready {
                self.pump_frontend(drain_deadline.is_some());
            }
        }
        info!("Broker loop stopped.");
        Ok(())
    }

    /// Answers every request whose deadline has passed with `timeout`.
    fn expire(&mut self, now: Instant) {
        let mut n = 0;
        while let Some(p) = self.inflight.pop_expired(now) {
            self.reply_error(
                &p,
                Status::Timeout,
                "no reply from a worker within the request timeout",
            );
            n += 1;
        }
        if n > 0 {
            self.metrics.inflight.set(self.inflight.len() as i64);
            debug!(expired = n, "Requests timed out.");
        }
    }

    fn pump_frontend(&mut self, draining: bool) {
        for _ in 0..BATCH {
            let mut frames = std::mem::take(&mut self.frames);
            match recv_frames(&self.frontend, zmq::DONTWAIT, &mut frames) {
                Ok(()) => self.on_request(&mut frames, draining),
                Err(zmq::Error::EAGAIN) => {
                    self.frames = frames;
                    return;
                }
                Err(e) => {
                    debug!(error.message = %e, "Frontend receive failed.");
                    self.frames = frames;
                    return;
                }
            }
            self.frames = frames;
        }
    }

    fn pump_backend(&mut self) {
        for _ in 0..BATCH {
            let mut frames = std::mem::take(&mut self.frames);
            match recv_frames(&self.backend, zmq::DONTWAIT, &mut frames) {
                Ok(()) => self.on_reply(&mut frames),
                Err(zmq::Error::EAGAIN) => {
                    self.frames = frames;
                    return;
                }
                Err(e) => {
                    debug!(error.message = %e, "Backend receive failed.");
                    self.frames = frames;
                    return;
                }
            }
            self.frames = frames;
        }
    }

    fn on_request(&mut self, frames: &mut Vec<zmq::Message>, draining: bool) {
        let now = Instant::now();
        let in_bytes: usize = frames.iter().map(|f| f.len()).sum();
        self.metrics.frontend_in.count(in_bytes);
        // [route…, "", body…]: the route is non-empty, the body has a frame.
        let Some(delim) = frames.iter().position(|f| f.is_empty()) else {
            self.metrics.drop(DropReason::Malformed);
            debug!("Request without an envelope delimiter dropped.");
            return;
        };
        if delim == 0 || delim + 1 >= frames.len() {
            self.metrics.drop(DropReason::Malformed);
            debug!(
                delim,
                frames = frames.len(),
                "Request with an empty route or body dropped."
            );
            return;
        }
        self.metrics.requests.inc();
        let body0 = &frames[delim + 1];
        let mut pending = Pending {
            route: Route::new(&frames[..delim]),
            request_id: None,
            started: now,
            span: tracing::Span::none(),
        };
        if is_header(body0) {
            match Header::decode(body0) {
                Ok(Header::Request(mut h)) => {
                    pending.request_id = Some(h.id);
                    // Parent-based: only a sampled request costs span work.
                    if otel::should_trace(h.trace.as_ref()) {
                        pending.span =
                            otel::child_span("server", "route", "requests", h.trace.as_ref());
                        h.trace = otel::trace_context(&pending.span).or(h.trace);
                        frames[delim + 1] = Header::Request(h).encode().into();
                    }
                }
                Ok(other) => {
                    self.reply_error(
                        &pending,
                        Status::BadRequest,
                        &format!("expected a request header, got {}", kind(&other)),
                    );
                    return;
                }
                Err(e) => {
                    self.reply_error(
                        &pending,
                        Status::BadRequest,
                        &format!("invalid header: {e}"),
                    );
                    return;
                }
            }
        }
        if draining {
            self.reply_error(&pending, Status::Unavailable, "broker is shutting down");
            return;
        }
        if self.inflight.len() >= self.max_inflight {
            self.reply_error(&pending, Status::Overloaded, "too many requests in flight");
            return;
        }
        // The header may have been rewritten (re-parented span): recount
        // only then.
        let bytes = if !pending.span.is_disabled() {
            frames.iter().map(|f| f.len()).sum::<usize>() + 8
        } else {
            in_bytes + 8
        };
        let corr = self.inflight.insert(now + self.request_timeout, pending);
        let corr_frame = zmq::Message::from(&corr.to_le_bytes()[..]);
        match send_frames(
            &self.backend,
            std::iter::once(corr_frame).chain(frames.drain(..)),
            zmq::DONTWAIT,
        ) {
            Ok(()) => {
                self.metrics.backend_out.count(bytes);
                self.metrics.inflight.set(self.inflight.len() as i64);
            }
            Err(e) => {
                // Nothing was queued: the first frame is where DEALER refuses.
                let pending = self.inflight.take(corr).expect("entry inserted just above");
                let why = if e == zmq::Error::EAGAIN {
                    "no worker available".to_owned()
                } else {
                    format!("backend send failed: {e}")
                };
                self.reply_error(&pending, Status::Unavailable, &why);
            }
        }
    }

    fn on_reply(&mut self, frames: &mut Vec<zmq::Message>) {
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        self.metrics.backend_in.count(bytes);
        let corr = frames
            .first()
            .and_then(|f| <[u8; 8]>::try_from(&f[..]).ok())
            .map(u64::from_le_bytes);
        let Some(corr) = corr else {
            self.metrics.drop(DropReason::Malformed);
            debug!("Reply without a correlation frame dropped.");
            return;
        };
        let Some(pending) = self.inflight.take(corr) else {
            self.metrics.drop(DropReason::LateReply);
            debug!(corr, "Late or unknown reply dropped.");
            return;
        };
        self.metrics.inflight.set(self.inflight.len() as i64);
        let status = frames
            .iter()
            .position(|f| f.is_empty())
            .and_then(|d| frames.get(d + 1))
            .filter(|f| is_header(f))
            .and_then(|f| match Header::decode(f) {
                Ok(Header::Reply(h)) => Some(h.status),
                _ => None,
            })
            .unwrap_or(Status::Ok);
        let out_bytes = bytes - 8;
        match send_frames(&self.frontend, frames.drain(1..), zmq::DONTWAIT) {
            Ok(()) => {
                self.metrics.frontend_out.count(out_bytes);
                self.metrics.reply(status);
                self.metrics.duration.observe(pending.started.elapsed());
            }
            Err(e) => {
                self.metrics.drop(DropReason::ClientGone);
                debug!(error.message = %e, "Reply for a client that is gone dropped.");
            }
        }
    }

    /// Sends an error reply to the client of `p`: a header reply for our
    /// clients, `ERR <status> <message>` for plain ones.
    fn reply_error(&self, p: &Pending, status: Status, message: &str) {
        otel::set_error(&p.span, status.as_str());
        let body: Vec<Vec<u8>> = match p.request_id {
            Some(id) => vec![
                Header::Reply(ReplyHeader {
                    id,
                    status,
                    trace: None,
                })
                .encode(),
                message.as_bytes().to_vec(),
            ],
            None => vec![format!("ERR {status} {message}").into_bytes()],
        };
        let bytes = p.route.byte_len() + body.iter().map(Vec::len).sum::<usize>();
        let frames = p
            .route
            .frames()
            .chain(std::iter::once(&b""[..]))
            .chain(body.iter().map(Vec::as_slice));
        match send_frames(&self.frontend, frames, zmq::DONTWAIT) {
            Ok(()) => {
                self.metrics.frontend_out.count(bytes);
                self.metrics.reply(status);
                self.metrics.duration.observe(p.started.elapsed());
            }
            Err(_) => self.metrics.drop(DropReason::ClientGone),
        }
    }
}

fn kind(h: &Header) -> &'static str {
    match h {
        Header::Request(_) => "request",
        Header::Reply(_) => "reply",
        Header::Event(_) => "event",
    }
}
