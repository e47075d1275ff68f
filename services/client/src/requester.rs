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
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    sync::Arc,
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

/// A request's payload frames, shared (a load generator sends the same
/// frames many times without copying them per request).
pub type Payload = Arc<[Vec<u8>]>;

#[derive(Debug)]
struct Pending {
    payload: Payload,
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

impl Pending {
    /// Whether `attempt` is the attempt running now (not a stale timer).
    fn runs(&self, attempt: u32) -> bool {
        self.attempts == attempt && self.begin_at.is_none()
    }
}

/// Bits of a request id that name its slot in the [`Slab`]; the bits above
/// are a serial number, so no id is ever reused and a stale reply can never
/// match a newer request that took the same slot.
const SLOT_BITS: u32 = 20;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// Most requests one requester keeps outstanding (slots a [`Slab`] can name).
pub const MAX_CONCURRENCY: usize = 1 << SLOT_BITS;

/// Outstanding requests indexed by the low bits of their id: insert, look
/// up and remove in O(1), no hashing.
#[derive(Debug)]
struct Slab<T> {
    entries: Vec<Option<(u64, T)>>,
    free: Vec<usize>,
    len: usize,
    serial: u64,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
            serial: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Stores `value` in a free slot; returns its new id (never 0).
    fn insert(&mut self, value: T) -> u64 {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.entries.push(None);
            self.entries.len() - 1
        });
        assert!(
            slot <= SLOT_MASK as usize,
            "more than {MAX_CONCURRENCY} outstanding"
        );
        self.serial += 1;
        let id = (self.serial << SLOT_BITS) | slot as u64;
        self.entries[slot] = Some((id, value));
        self.len += 1;
        id
    }

    fn get(&self, id: u64) -> Option<&T> {
        match self.entries.get((id & SLOT_MASK) as usize) {
            Some(Some((i, v))) if *i == id => Some(v),
            _ => None,
        }
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        match self.entries.get_mut((id & SLOT_MASK) as usize) {
            Some(Some((i, v))) if *i == id => Some(v),
            _ => None,
        }
    }

    fn remove(&mut self, id: u64) -> Option<T> {
        let slot = (id & SLOT_MASK) as usize;
        let e = self.entries.get_mut(slot)?;
        if e.as_ref().is_some_and(|(i, _)| *i == id) {
            self.free.push(slot);
            self.len -= 1;
            e.take().map(|(_, v)| v)
        } else {
            None
        }
    }
}

/// Deadlines of one fixed length, set in time order, so they expire in the
/// order they were set: a FIFO checked at its front. An entry names a
/// request and an attempt; entries whose attempt is over are skipped when
/// they come up, and swept out when they pile up.
#[derive(Debug, Default)]
struct DeadlineFifo {
    queue: VecDeque<(Instant, u64, u32)>,
}

impl DeadlineFifo {
    fn push(&mut self, at: Instant, id: u64, attempt: u32) {
        self.queue.push_back((at, id, attempt));
    }

    /// The earliest entry due at `now`, removed.
    fn pop_due(&mut self, now: Instant) -> Option<(u64, u32)> {
        match self.queue.front() {
            Some(&(at, id, attempt)) if at <= now => {
                self.queue.pop_front();
                Some((id, attempt))
            }
            _ => None,
        }
    }

    fn next(&self) -> Option<Instant> {
        self.queue.front().map(|e| e.0)
    }

    /// Drops the entries `live` rejects once they outnumber the live ones
    /// well (amortised O(1) per entry).
    fn sweep(&mut self, in_flight: usize, live: impl Fn(u64, u32) -> bool) {
        if self.queue.len() > 4 * in_flight + 1024 {
            self.queue.retain(|&(_, id, attempt)| live(id, attempt));
        }
    }
}

struct Lane {
    socket: zmq::Socket,
    /// Plain mode: the request on this lane.
    busy: Option<u64>,
}

/// Sends requests and collects their outcomes. Owned by one thread.
///
/// Every step is O(1) per request: requests live in a [`Slab`] named by
/// their id, attempt deadlines (all the same length) in a [`DeadlineFifo`],
/// backoffs (rare) in a heap, attempts not yet queued (no connection, full
/// socket) in a queue of their own.
pub struct Requester {
    factory: SocketFactory,
    cfg: RequesterConfig,
    lanes: Vec<Lane>,
    /// Plain mode: lanes with no request.
    free_lanes: Vec<usize>,
    pending: Slab<Pending>,
    deadlines: DeadlineFifo,
    /// Attempts waiting for their backoff: (begin at, id).
    backoffs: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Running attempts not yet queued on a socket: (id, attempt).
    unsent: VecDeque<(u64, u32)>,
    metrics: ClientMetrics,
    frames: Vec<zmq::Message>,
    /// Whether successful outcomes carry the reply payload.
    keep_payloads: bool,
}

impl Requester {
    /// Creates the socket(s) and connects them.
    ///
    /// # Errors
    /// If a socket cannot be created or connected, or the concurrency is
    /// above [`MAX_CONCURRENCY`].
    pub fn new(
        factory: SocketFactory,
        cfg: RequesterConfig,
        metrics: ClientMetrics,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cfg.concurrency <= MAX_CONCURRENCY,
            "concurrency {} is above the maximum {MAX_CONCURRENCY}",
            cfg.concurrency
        );
        let lanes = if cfg.plain { cfg.concurrency.max(1) } else { 1 };
        let mut r = Requester {
            factory,
            lanes: Vec::with_capacity(lanes),
            free_lanes: if cfg.plain {
                (0..lanes).rev().collect()
            } else {
                Vec::new()
            },
            pending: Slab::new(),
            deadlines: DeadlineFifo::default(),
            backoffs: BinaryHeap::new(),
            unsent: VecDeque::new(),
            metrics,
            frames: Vec::new(),
            keep_payloads: true,
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

    /// Successful outcomes from now on come without their payload (empty
    /// `frames`), saving a copy per reply for a caller that only counts
    /// them; error outcomes keep their message.
    pub fn discard_payloads(&mut self) {
        self.keep_payloads = false;
    }

    /// Requests outstanding.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether another request may be submitted now.
    pub fn has_capacity(&self) -> bool {
        self.pending.len() < self.cfg.concurrency
    }

    /// Submits a request (call only when [`Self::has_capacity`]); returns its
    /// id. The first attempt is sent at once. Takes the frames as a
    /// `Vec<Vec<u8>>` or a shared [`Payload`].
    pub fn submit(&mut self, payload: impl Into<Payload>) -> u64 {
        let payload = payload.into();
        let now = Instant::now();
        let lane = if self.cfg.plain {
            self.free_lanes.pop().unwrap_or(0)
        } else {
            0
        };
        let id = self.pending.insert(Pending {
            payload,
            attempts: 0,
            started: now,
            begin_at: Some(now),
            deadline: now,
            sent: false,
            lane,
            span: tracing::Span::none(),
            trace: None,
        });
        if self.cfg.plain {
            self.lanes[lane].busy = Some(id);
        }
        let span = otel::client_span("requests", id);
        if !span.is_disabled() {
            let p = self.pending.get_mut(id).expect("just inserted");
            p.trace = otel::trace_context(&span);
            p.span = span;
        }
        self.begin_attempt(id, now);
        id
    }

    /// Waits up to `max_wait` for outcomes, driving retries and timeouts;
    /// returns as soon as at least one request has finished.
    pub fn poll(&mut self, max_wait: Duration, out: &mut Vec<Outcome>) {
        let until = Instant::now() + max_wait;
        if self.lanes.len() > 1 {
            // Plain mode: replies already waiting need no poll(2).
            self.receive_all(out);
        }
        loop {
            let now = Instant::now();
            self.advance(now, out);
            if !out.is_empty() {
                return;
            }
            let wait = self.next_wake(now).map_or(until, |w| w.min(until));
            let ms = wait.saturating_duration_since(now).as_millis() as i64;
            if self.lanes.len() == 1 {
                self.wait_one(ms.max(0), out);
            } else {
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
            }
            if !out.is_empty() || Instant::now() >= until {
                return;
            }
        }
    }

    /// One socket: reads the replies waiting, or else sleeps up to `ms` on
    /// libzmq's signalling FD and reads again. A receive that finds nothing
    /// has taken in libzmq's pending commands, so the FD then wakes only for
    /// what comes after: one check fewer per reply than `zmq_poll`, which
    /// looks at the socket's events both before and after its own poll.
    fn wait_one(&mut self, ms: i64, out: &mut Vec<Outcome>) {
        self.receive(0, out);
        if !out.is_empty() {
            return;
        }
        let Ok(fd) = self.lanes[0].socket.get_fd() else {
            return;
        };
        let mut item = [zmq::PollItem::from_fd(fd, zmq::POLLIN)];
        if zmq::poll(&mut item, ms).is_ok() {
            self.receive(0, out);
        }
    }

    /// Reads whatever every lane has (no waiting).
    fn receive_all(&mut self, out: &mut Vec<Outcome>) {
        for lane in 0..self.lanes.len() {
            self.receive(lane, out);
        }
    }

    /// Starts attempts whose backoff is over, queues attempts not yet sent,
    /// expires attempts past their deadline. O(due entries).
    fn advance(&mut self, now: Instant, out: &mut Vec<Outcome>) {
        while let Some(&Reverse((at, id))) = self.backoffs.peek() {
            if at > now {
                break;
            }
            self.backoffs.pop();
            if self.pending.get(id).is_some_and(|p| p.begin_at == Some(at)) {
                self.begin_attempt(id, now);
            }
        }
        self.send_unsent();
        while let Some((id, attempt)) = self.deadlines.pop_due(now) {
            if self.pending.get(id).is_some_and(|p| p.runs(attempt)) {
                self.expire(id, now, out);
            }
        }
        let pending = &self.pending;
        self.deadlines.sweep(pending.len(), |id, attempt| {
            pending.get(id).is_some_and(|p| p.runs(attempt))
        });
    }

    /// Starts the next attempt of `id` now.
    fn begin_attempt(&mut self, id: u64, now: Instant) {
        let Some(p) = self.pending.get_mut(id) else {
            return;
        };
        p.begin_at = None;
        p.attempts += 1;
        p.deadline = now + self.cfg.timeout;
        p.sent = false;
        let (deadline, attempt) = (p.deadline, p.attempts);
        self.deadlines.push(deadline, id, attempt);
        // Keep the order of the send queue: behind earlier unsent attempts.
        if self.unsent.is_empty() && self.try_send(id) {
            return;
        }
        self.unsent.push_back((id, attempt));
    }

    /// Tries to queue the attempts not yet sent, oldest first.
    fn send_unsent(&mut self) {
        for _ in 0..self.unsent.len() {
            let Some((id, attempt)) = self.unsent.pop_front() else {
                return;
            };
            if !self.pending.get(id).is_some_and(|p| p.runs(attempt)) || self.try_send(id) {
                continue;
            }
            self.unsent.push_back((id, attempt));
            if !self.cfg.plain {
                // One socket: if this one cannot go, neither can the rest.
                self.unsent.rotate_right(1);
                return;
            }
        }
    }

    /// The running attempt of `id` is past its deadline: retry or give up.
    fn expire(&mut self, id: u64, now: Instant, out: &mut Vec<Outcome>) {
        let Some(p) = self.pending.get(id) else {
            return;
        };
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

    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let unsent = (!self.unsent.is_empty()).then(|| now + UNSENT_RETRY);
        let backoff = self.backoffs.peek().map(|Reverse((at, _))| *at);
        [self.deadlines.next(), backoff, unsent]
            .into_iter()
            .flatten()
            .min()
    }

    /// Queues the running attempt of `id`; whether it went.
    fn try_send(&mut self, id: u64) -> bool {
        let Some(p) = self.pending.get_mut(id) else {
            return false;
        };
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
        p.sent
    }

    /// Schedules another attempt of `id` after `backoff` (at once for none);
    /// in plain mode the lane's socket is replaced first so a stale reply
    /// cannot arrive on it.
    fn retry(&mut self, id: u64, now: Instant, backoff: Duration) {
        self.metrics.retries.inc();
        let Some(p) = self.pending.get_mut(id) else {
            return;
        };
        let at = now + backoff;
        p.begin_at = Some(at);
        p.sent = false;
        if self.cfg.plain {
            let lane = p.lane;
            match self.open_socket() {
                Ok(s) => self.lanes[lane].socket = s,
                Err(e) => debug!(error.message = %e, "Could not reopen a lane; reusing it."),
            }
        }
        if backoff.is_zero() {
            self.begin_attempt(id, now);
        } else {
            self.backoffs.push(Reverse((at, id)));
        }
    }

    fn finish(&mut self, id: u64, status: Status, frames: Vec<Vec<u8>>, out: &mut Vec<Outcome>) {
        let Some(p) = self.pending.remove(id) else {
            return;
        };
        if self.cfg.plain {
            self.lanes[p.lane].busy = None;
            self.free_lanes.push(p.lane);
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
                    Some(Ok(Header::Reply(h))) => {
                        let payload = if self.keep_payloads || h.status != Status::Ok {
                            body[1..].iter().map(|f| f.to_vec()).collect()
                        } else {
                            Vec::new()
                        };
                        (h.id, h.status, payload)
                    }
                    _ => {
                        debug!("Reply without a valid reply header ignored.");
                        continue;
                    }
                }
            };
            let Some(p) = self.pending.get(id) else {
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

    #[test]
    fn slab_ids_name_their_slot_and_are_never_reused() {
        let mut slab = Slab::new();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_ne!(a, 0);
        assert_eq!(
            (slab.get(a), slab.get(b), slab.len()),
            (Some(&"a"), Some(&"b"), 2)
        );
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.get(a), None);
        assert_eq!((slab.remove(a), slab.len()), (None, 1));
        let c = slab.insert("c");
        assert_eq!(
            c & SLOT_MASK,
            a & SLOT_MASK,
            "the freed slot is taken again"
        );
        assert_ne!(c, a, "with a new id");
        assert_eq!((slab.get(a), slab.get(c)), (None, Some(&"c")));
        *slab.get_mut(c).unwrap() = "c2";
        assert_eq!(slab.get(c), Some(&"c2"));
        assert!(slab.get_mut(a).is_none());
        assert_eq!(slab.entries.len(), 2, "no growth while slots are free");
        assert_eq!(slab.get(u64::MAX), None, "an id naming no slot is unknown");
    }

    #[test]
    fn deadlines_come_due_in_order_and_dead_entries_are_swept() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut f = DeadlineFifo::default();
        f.push(ms(10), 1, 1);
        f.push(ms(20), 2, 1);
        f.push(ms(20), 1, 2);
        assert_eq!(f.next(), Some(ms(10)));
        assert_eq!(f.pop_due(ms(5)), None, "nothing due yet");
        assert_eq!(f.pop_due(ms(20)), Some((1, 1)));
        assert_eq!(f.pop_due(ms(20)), Some((2, 1)));
        assert_eq!(f.pop_due(ms(20)), Some((1, 2)));
        assert_eq!((f.pop_due(ms(99)), f.next()), (None, None));
        for i in 0..2000 {
            f.push(ms(30), i, 1);
        }
        f.sweep(300, |id, _| id < 1000);
        assert_eq!(
            f.queue.len(),
            2000,
            "not swept while under 4 × in flight + 1024"
        );
        f.sweep(1, |id, _| id % 2 == 0);
        assert_eq!(f.queue.len(), 1000);
        assert!(f.queue.iter().all(|&(_, id, _)| id % 2 == 0));
        assert_eq!(f.pop_due(ms(30)), Some((0, 1)), "order kept");
    }
}
