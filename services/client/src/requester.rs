//! The request engine: several outstanding requests, per-attempt timeouts,
//! retries with backoff, and a socket that can never wedge.
//!
//! With headers (the default), one DEALER socket carries every outstanding
//! request; replies are matched by the request id in their header, so a
//! reply that arrives after its request was retried or given up is simply
//! ignored. In `--plain` mode (no header to match on), each outstanding
//! request has its own DEALER "lane", and a lane whose request timed out is
//! closed and reopened before the retry: the Lazy Pirate pattern.
//!
//! An attempt that cannot even be queued (no broker connected:
//! `ZMQ_IMMEDIATE` refuses it) waits for a connection within the same
//! per-attempt timeout, so a request never hangs and never fails just
//! because the connection was still being made.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use mensageria::{
    header::{is_header, now_us, Header, ServiceName},
    otel,
    socket::{recv_frames, send_frames, SocketFactory},
    Endpoints, RequestHeader, Status,
};
use tracing::debug;

use crate::metrics::ClientMetrics;

/// Longest backoff before retrying an `unavailable`/`overloaded` reply.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often an attempt not yet queued (no connection) is tried again.
const UNSENT_RETRY: Duration = Duration::from_millis(5);

/// How to send requests.
#[derive(Debug, Clone)]
pub struct RequesterConfig {
    /// Broker frontends.
    pub endpoints: Endpoints,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// No header; one socket per outstanding request.
    pub plain: bool,
    /// Maximum outstanding requests.
    pub concurrency: usize,
    /// Service to call (in the header); `None` = the broker's default.
    pub service: Option<ServiceName>,
}

/// The final result of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Request id (local to this requester).
    pub id: u64,
    /// Final status.
    pub status: Status,
    /// Reply payload frames; for an error, one frame with the message.
    pub frames: Vec<Vec<u8>>,
    /// From the first send to the final reply.
    pub latency: Duration,
    /// Attempts made.
    pub attempts: u32,
}

#[derive(Debug)]
struct Pending {
    payload: Vec<Vec<u8>>,
    attempts: u32,
    started: Instant,
    /// When the next attempt begins (after a backoff); `None` while one runs.
    begin_at: Option<Instant>,
    /// Deadline of the running attempt.
    deadline: Instant,
    /// Whether the running attempt has been queued on a socket.
    sent: bool,
    /// Plain mode: the lane that carries it.
    lane: usize,
    /// The request's `client` span (disabled when tracing is off).
    span: tracing::Span,
    /// The span's context, sent in the header of every attempt.
    trace: Option<mensageria::TraceContext>,
}

struct Lane {
    socket: zmq::Socket,
    /// Plain mode: the request on this lane.
    busy: Option<u64>,
}

/// Sends requests and collects their outcomes. Owned by one thread.
pub struct Requester {
    factory: SocketFactory,
    cfg: RequesterConfig,
    lanes: Vec<Lane>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    metrics: ClientMetrics,
    frames: Vec<zmq::Message>,
    /// Reused list of pending ids for `advance` (called on every poll).
    ids: Vec<u64>,
}

impl Requester {
    /// Creates the socket(s) and connects them.
    ///
    /// # Errors
    /// If a socket cannot be created or connected.
    pub fn new(
        factory: SocketFactory,
        cfg: RequesterConfig,
        metrics: ClientMetrics,
    ) -> anyhow::Result<Self> {
        let lanes = if cfg.plain { cfg.concurrency.max(1) } else { 1 };
        let mut r = Requester {
            factory,
            lanes: Vec::with_capacity(lanes),
            pending: HashMap::new(),
            next_id: 1,
            metrics,
            frames: Vec::new(),
            ids: Vec::new(),
            cfg,
        };
        for _ in 0..lanes {
            let socket = r.open_socket()?;
            r.lanes.push(Lane { socket, busy: None });
        }
        Ok(r)
    }

    fn open_socket(&self) -> anyhow::Result<zmq::Socket> {
        let s = self.factory.socket(zmq::DEALER, "req")?;
        self.factory.connect_all(&s, &self.cfg.endpoints)?;
        Ok(s)
    }

    /// Requests outstanding.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether another request may be submitted now.
    pub fn has_capacity(&self) -> bool {
        self.pending.len() < self.cfg.concurrency
    }

    /// Submits a request (call only when [`Self::has_capacity`]); returns its id.
    pub fn submit(&mut self, payload: Vec<Vec<u8>>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        let lane = if self.cfg.plain {
            let free = self
                .lanes
                .iter()
                .position(|l| l.busy.is_none())
                .unwrap_or(0);
            self.lanes[free].busy = Some(id);
            free
        } else {
            0
        };
        let span = otel::client_span("requests", id);
        let trace = otel::trace_context(&span);
        self.pending.insert(
            id,
            Pending {
                payload,
                attempts: 0,
                started: now,
                begin_at: Some(now),
                deadline: now,
                sent: false,
                lane,
                span,
                trace,
            },
        );
        self.advance(now, &mut Vec::new());
        id
    }

    /// Waits up to `max_wait` for outcomes, driving retries and timeouts;
    /// returns as soon as at least one request has finished.
    pub fn poll(&mut self, max_wait: Duration, out: &mut Vec<Outcome>) {
        let until = Instant::now() + max_wait;
        loop {
            let now = Instant::now();
            self.advance(now, out);
            // Always make one receive pass, even with nothing left to wait:
            // a caller polling with a zero wait must still get its replies.
            let wait = if out.is_empty() {
                self.next_wake(now).map_or(until, |w| w.min(until))
            } else {
                now
            };
            let ms = wait.saturating_duration_since(now).as_millis() as i64;
            let mut items: Vec<_> = self
                .lanes
                .iter()
                .map(|l| l.socket.as_poll_item(zmq::POLLIN))
                .collect();
            if zmq::poll(&mut items, ms.max(0)).is_err() {
                continue;
            }
            let ready: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, i)| i.is_readable())
                .map(|(n, _)| n)
                .collect();
            drop(items);
            for lane in ready {
                self.receive(lane, out);
            }
            if !out.is_empty() || Instant::now() >= until {
                return;
            }
        }
    }

    /// Starts due attempts, (re)tries unsent ones, expires overdue ones.
    fn advance(&mut self, now: Instant, out: &mut Vec<Outcome>) {
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        ids.extend(self.pending.keys().copied());
        for &id in &ids {
            let p = self
                .pending
                .get_mut(&id)
                .expect("id taken from the map just above");
            if p.begin_at.is_some_and(|t| t <= now) {
                p.begin_at = None;
                p.attempts += 1;
                p.deadline = now + self.cfg.timeout;
                p.sent = false;
            }
            if p.begin_at.is_some() {
                continue;
            }
            if !p.sent {
                self.try_send(id);
            }
            let p = &self.pending[&id];
            if p.deadline <= now {
                if p.attempts <= self.cfg.retries {
                    self.retry(id, now, Duration::ZERO);
                } else {
                    let attempts = p.attempts;
                    let msg = if p.sent {
                        "no reply within the timeout"
                    } else {
                        "no broker reachable within the timeout"
                    };
                    self.finish(
                        id,
                        Status::Timeout,
                        vec![format!("{msg} after {attempts} attempts").into_bytes()],
                        out,
                    );
                }
            }
        }
        self.ids = ids;
    }

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| match p.begin_at {
                Some(t) => t,
                None if !p.sent => now + UNSENT_RETRY,
                None => p.deadline,
            })
            .min()
    }

    fn try_send(&mut self, id: u64) {
        let p = self.pending.get_mut(&id).expect("caller checked");
        let socket = &self.lanes[p.lane].socket;
        let result = if self.cfg.plain {
            send_frames(
                socket,
                std::iter::once(&[][..]).chain(p.payload.iter().map(Vec::as_slice)),
                zmq::DONTWAIT,
            )
        } else {
            // The budget is what this attempt waits: past it the broker
            // answers `timeout` and no worker starts it.
            let header = Header::Request(RequestHeader {
                budget_ms: Some(u32::try_from(self.cfg.timeout.as_millis()).unwrap_or(u32::MAX)),
                id,
                sent_at_us: now_us(),
                trace: p.trace,
                service: self.cfg.service,
            })
            .encode();
            send_frames(
                socket,
                [&[][..], &header]
                    .into_iter()
                    .chain(p.payload.iter().map(Vec::as_slice)),
                zmq::DONTWAIT,
            )
        };
        match result {
            Ok(()) => p.sent = true,
            Err(zmq::Error::EAGAIN) => {}
            Err(e) => debug!(error.message = %e, "Request send failed."),
        }
    }

    /// Schedules another attempt of `id` after `backoff`; in plain mode the
    /// lane's socket is replaced first so a stale reply cannot arrive on it.
    fn retry(&mut self, id: u64, now: Instant, backoff: Duration) {
        self.metrics.retries.inc();
        let p = self.pending.get_mut(&id).expect("caller checked");
        p.begin_at = Some(now + backoff);
        p.sent = false;
        if self.cfg.plain {
            let lane = p.lane;
            match self.open_socket() {
                Ok(s) => self.lanes[lane].socket = s,
                Err(e) => debug!(error.message = %e, "Could not reopen a lane; reusing it."),
            }
        }
    }

    fn finish(&mut self, id: u64, status: Status, frames: Vec<Vec<u8>>, out: &mut Vec<Outcome>) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if self.cfg.plain {
            self.lanes[p.lane].busy = None;
        }
        let latency = p.started.elapsed();
        self.metrics.request(status, latency);
        if status != Status::Ok {
            otel::set_error(&p.span, status.as_str());
        }
        out.push(Outcome {
            id,
            status,
            frames,
            latency,
            attempts: p.attempts,
        });
    }

    fn receive(&mut self, lane: usize, out: &mut Vec<Outcome>) {
        let mut frames = std::mem::take(&mut self.frames);
        while recv_frames(&self.lanes[lane].socket, zmq::DONTWAIT, &mut frames).is_ok() {
            // DEALER replies arrive as ["", body…].
            let body = match frames.split_first() {
                Some((d, body)) if d.is_empty() => body,
                _ => {
                    debug!("Reply without the empty delimiter ignored.");
                    continue;
                }
            };
            let (id, status, payload) = if self.cfg.plain {
                let Some(id) = self.lanes[lane].busy else {
                    continue;
                };
                let (status, payload) = parse_plain(body);
                (id, status, payload)
            } else {
                match body
                    .first()
                    .filter(|f| is_header(f))
                    .map(|f| Header::decode(f))
                {
                    Some(Ok(Header::Reply(h))) => (
                        h.id,
                        h.status,
                        body[1..].iter().map(|f| f.to_vec()).collect(),
                    ),
                    _ => {
                        debug!("Reply without a valid reply header ignored.");
                        continue;
                    }
                }
            };
            let Some(p) = self.pending.get(&id) else {
                debug!(id, "Stale reply ignored.");
                continue;
            };
            if status.is_retryable() && p.begin_at.is_some() {
                continue; // an earlier attempt's failure; a retry is already scheduled
            }
            if status.is_retryable() && p.attempts <= self.cfg.retries {
                let backoff =
                    (Duration::from_millis(25) * 2u32.pow(p.attempts.min(6))).min(MAX_BACKOFF);
                self.retry(id, Instant::now(), backoff);
            } else {
                self.finish(id, status, payload, out);
            }
        }
        self.frames = frames;
    }
}

/// Reads a plain reply: `ERR <status> <message>` is an error, anything else success.
fn parse_plain(body: &[zmq::Message]) -> (Status, Vec<Vec<u8>>) {
    if let [only] = body {
        if let Some(rest) = only.strip_prefix(b"ERR ") {
            let text = String::from_utf8_lossy(rest);
            let (name, msg) = text.split_once(' ').unwrap_or((&text, ""));
            if let Some(status) = Status::parse(name) {
                return (status, vec![msg.as_bytes().to_vec()]);
            }
        }
    }
    (Status::Ok, body.iter().map(|f| f.to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_error_replies_are_recognised() {
        let m = |s: &str| zmq::Message::from(s.as_bytes());
        assert_eq!(
            parse_plain(&[m("ERR unavailable no worker")]),
            (Status::Unavailable, vec![b"no worker".to_vec()])
        );
        assert_eq!(parse_plain(&[m("ERR timeout")]).0, Status::Timeout);
        assert_eq!(
            parse_plain(&[m("ERR nonsense x")]).0,
            Status::Ok,
            "unknown status: a payload"
        );
        assert_eq!(parse_plain(&[m("hello"), m("x")]).1.len(), 2);
    }
}
