//! What every worker does with one request, whichever way it arrived
//! (Majordomo or REP): read the header, skip it when its deadline has already
//! passed, run the [`Handler`], count it, build the reply body, and publish
//! the `requests.completed` event once the reply has left.
//!
//! A request with our header gets a header reply (status, request id); a
//! plain request gets a plain reply, with errors as `ERR <status> <message>`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use mensageria::{
    header::{is_header, Header},
    otel, ReplyHeader, RequestHeader, Status, TraceContext,
};
use tracing::{debug, Span};

use crate::{
    handler::{Handler, Request, Response},
    metrics::ServerMetrics,
    publisher::SharedPublisher,
};

/// What a worker needs to process requests.
#[derive(Clone)]
pub struct WorkerSettings {
    /// The request handler.
    pub handler: Arc<dyn Handler>,
    /// The server's metrics.
    pub metrics: ServerMetrics,
    /// The server's event publisher.
    pub events: SharedPublisher,
    /// This server's instance id (in events).
    pub instance: Arc<str>,
}

/// A processed request: the reply body to send, and what the event says.
#[derive(Debug)]
pub struct Reply {
    /// The reply header, when the request had one.
    head: Option<Vec<u8>>,
    /// The handler's frames (for a plain error, `ERR <status> <message>`).
    body: Vec<Vec<u8>>,
    status: Status,
    id: Option<u64>,
    trace: Option<TraceContext>,
    elapsed: Duration,
}

impl Reply {
    /// The reply body frames, header first when the request had one.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.head.iter().chain(&self.body).map(Vec::as_slice)
    }

    /// The outcome.
    pub fn status(&self) -> Status {
        self.status
    }
}

/// Processes requests for one worker thread.
pub struct Processor {
    settings: WorkerSettings,
    /// Reused buffer for event payloads.
    payload: String,
    /// The instance id as a JSON string body (escaped once).
    instance_json: String,
}

/// Calls `f` with the frames as byte slices, each looked at once (every
/// `Deref` of a `zmq::Message` is two calls into libzmq): on the stack for
/// the usual few frames.
pub fn with_slices<R>(frames: &[zmq::Message], f: impl FnOnce(&[&[u8]]) -> R) -> R {
    let mut few: [&[u8]; 8] = [&[]; 8];
    if frames.len() <= few.len() {
        for (s, m) in few.iter_mut().zip(frames) {
            *s = m;
        }
        f(&few[..frames.len()])
    } else {
        f(&frames.iter().map(|m| &m[..]).collect::<Vec<_>>())
    }
}

/// Appends `v` in decimal.
fn push_u64(out: &mut String, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // ASCII digits only.
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

/// The remaining time budget a request header carries, if any.
fn budget(h: &RequestHeader) -> Option<Duration> {
    h.budget_ms.map(|ms| Duration::from_millis(u64::from(ms)))
}

impl Processor {
    /// A processor with its own event buffer.
    pub fn new(settings: WorkerSettings) -> Self {
        let instance_json = crate::json_escape(&settings.instance).into_owned();
        Processor {
            settings,
            payload: String::with_capacity(160),
            instance_json,
        }
    }

    /// Handles one request body (everything after the envelope). `received`
    /// is when this server read it: the header's time budget counts from then.
    pub fn process(&mut self, body: &[zmq::Message], received: Instant) -> Reply {
        with_slices(body, |body| self.process_if(body, received, false))
            .expect("every request is processed when not only quick ones")
    }

    /// [`Processor::process`] for a request that is quick
    /// ([`Handler::is_quick`], or answered without the handler: a bad
    /// header, a passed deadline); `None`, with nothing done, for the others.
    /// Takes the frames as slices: the caller has looked at them already.
    pub fn process_quick(&mut self, body: &[&[u8]], received: Instant) -> Option<Reply> {
        self.process_if(body, received, true)
    }

    fn process_if(&mut self, body: &[&[u8]], received: Instant, quick_only: bool) -> Option<Reply> {
        let (header, payload) = match body.first() {
            Some(f) if is_header(f) => match Header::decode(f) {
                Ok(Header::Request(h)) => (Some(h), &body[1..]),
                Ok(_) => {
                    return Some(self.answer(
                        None,
                        Response::error(Status::BadRequest, "expected a request header"),
                        received,
                        &Span::none(),
                    ))
                }
                Err(e) => {
                    return Some(self.answer(
                        None,
                        Response::error(Status::BadRequest, format!("invalid header: {e}")),
                        received,
                        &Span::none(),
                    ))
                }
            },
            _ => (None, body),
        };
        let deadline = header.as_ref().and_then(budget).map(|b| received + b);
        let request = Request {
            frames: payload,
            deadline,
        };
        if quick_only && !self.settings.handler.is_quick(&request) {
            return None;
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            // The client has been told `timeout` already: running it now
            // would be wasted work (and a duplicate if the client retried).
            self.settings.metrics.late_skipped.inc();
            debug!(id = header.as_ref().map(|h| h.id), "Late request skipped.");
            return Some(self.answer(
                header,
                Response::error(
                    Status::Timeout,
                    "deadline passed before a worker got to it; not run",
                ),
                received,
                &Span::none(),
            ));
        }
        let parent = header.as_ref().and_then(|h| h.trace);
        let span = otel::child_span("server", "process", "requests", parent.as_ref());
        let response = span.in_scope(|| self.settings.handler.handle(&request));
        Some(self.answer(header, response, received, &span))
    }

    /// Answers a request `status` without handling it (e.g. draining).
    pub fn refuse(&mut self, body: &[zmq::Message], status: Status, message: &str) -> Reply {
        let header = match body.first() {
            Some(f) if is_header(f) => match Header::decode(f) {
                Ok(Header::Request(h)) => Some(h),
                _ => None,
            },
            _ => None,
        };
        self.answer(
            header,
            Response::error(status, message),
            Instant::now(),
            &Span::none(),
        )
    }

    fn answer(
        &mut self,
        header: Option<RequestHeader>,
        response: Response,
        started: Instant,
        span: &Span,
    ) -> Reply {
        let status = response.status;
        // Replies and events continue this server's span when it exists.
        let trace = otel::trace_context(span).or(header.as_ref().and_then(|h| h.trace));
        if status != Status::Ok {
            otel::set_error(span, status.as_str());
        }
        // Counted before the reply leaves, so whoever sees the reply sees it counted.
        let elapsed = started.elapsed();
        self.settings.metrics.request(status);
        self.settings.metrics.duration.observe(elapsed);
        let id = header.as_ref().map(|h| h.id);
        // The header stays a frame of its own: no vector to build around it.
        let (head, body) = match id {
            Some(id) => (
                Some(Header::Reply(ReplyHeader { id, status, trace }).encode()),
                response.frames,
            ),
            None if status == Status::Ok => (None, response.frames),
            None => {
                let msg = response
                    .frames
                    .first()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .unwrap_or_default();
                (None, vec![format!("ERR {status} {msg}").into_bytes()])
            }
        };
        Reply {
            head,
            body,
            status,
            id,
            trace,
            elapsed,
        }
    }

    /// Publishes the `requests.completed` event of a reply that has left.
    pub fn completed(&mut self, reply: &Reply) {
        // The payload is written by hand into a reused buffer, numbers
        // without `core::fmt`: this runs once per request.
        let p = &mut self.payload;
        p.clear();
        p.push_str(r#"{"request_id":"#);
        match reply.id {
            Some(id) => push_u64(p, id),
            None => p.push_str("null"),
        }
        p.push_str(r#","status":""#);
        p.push_str(reply.status.as_str());
        p.push_str(r#"","duration_us":"#);
        push_u64(
            p,
            u64::try_from(reply.elapsed.as_micros()).unwrap_or(u64::MAX),
        );
        p.push_str(r#","server":""#);
        p.push_str(&self.instance_json);
        p.push_str(r#""}"#);
        let publish = otel::child_span(
            "producer",
            "publish",
            "requests.completed",
            reply.trace.as_ref(),
        );
        let event_trace = otel::trace_context(&publish).or(reply.trace);
        crate::publisher::lock(&self.settings.events).publish(
            "requests.completed",
            self.payload.as_bytes(),
            event_trace,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut s = String::from("x=");
        for v in [0, 7, 10, 1_234_567_890, u64::MAX] {
            s.truncate(2);
            push_u64(&mut s, v);
            assert_eq!(s, format!("x={v}"));
        }
    }

    #[test]
    fn frames_are_seen_as_slices_beyond_the_stack_array_too() {
        for n in [0, 1, 8, 9, 20] {
            let frames: Vec<zmq::Message> = (0..n)
                .map(|i: u8| zmq::Message::from(&[i, i][..]))
                .collect();
            let seen = with_slices(&frames, |s| {
                s.iter().map(|f| f.to_vec()).collect::<Vec<_>>()
            });
            let want: Vec<Vec<u8>> = (0..n).map(|i: u8| vec![i, i]).collect();
            assert_eq!(seen, want, "{n} frames");
        }
    }
}
